use std::sync::Arc;
use std::time::Duration;

use rauha_api::v1;
use rauha_api::v1::sandbox_server::Sandbox;
use tonic::{Request, Response, Status};

use super::zones::bundle_root;
use crate::backend::IsolationBackend;
use crate::error::DaemonError;
use crate::validate::{parse_id, process_spec};
use crate::zone::{resolve_policy, SandboxRun, ZoneRegistry};

pub struct SandboxService<B: IsolationBackend> {
    pub registry: Arc<ZoneRegistry<B>>,
}

#[tonic::async_trait]
impl<B: IsolationBackend> Sandbox for SandboxService<B> {
    async fn run_sandbox(
        &self,
        request: Request<v1::SandboxRequest>,
    ) -> Result<Response<v1::TaskResult>, Status> {
        let req = request.into_inner();
        let spec = req.spec.unwrap_or_default();
        let spec = process_spec("spec", &spec.args, &spec.env, &spec.cwd)?;
        let policy = resolve_policy(req.policy.as_ref())?;
        let root = bundle_root(&req.bundle)?;
        if req.timeout_ms > 7 * 24 * 3600 * 1000 {
            return Err(DaemonError::invalid(
                "timeout_ms",
                "is over a week; give a shorter timeout",
            )
            .into());
        }
        let timeout = (req.timeout_ms > 0).then(|| Duration::from_millis(req.timeout_ms));
        let result = self
            .registry
            .run_sandbox(SandboxRun {
                spec,
                policy,
                root,
                timeout,
                keep_zone: req.keep_zone,
            })
            .await?;
        Ok(Response::new((&result).into()))
    }

    async fn get_task(
        &self,
        request: Request<v1::TaskRef>,
    ) -> Result<Response<v1::TaskResult>, Status> {
        let id = parse_id(
            "task_id",
            &request.into_inner().task_id,
            "task ids are printed in each sandbox result",
        )?;
        let task = self.registry.get_task(&id)?;
        match task.result {
            Some(r) => Ok(Response::new((&r).into())),
            None => Err(DaemonError::FailedPrecondition(format!(
                "task {id} is still running; ask again when it ends"
            ))
            .into()),
        }
    }
}
