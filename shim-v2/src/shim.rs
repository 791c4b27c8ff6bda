//! The shim process's life: `start` (spawn or reuse the pod's shim),
//! `delete` (clean up after a shim that died), and serving the Task API.

use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim::asynchronous::{spawn, ExitSignal, Shim};
use containerd_shim::protos::api::DeleteResponse;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Config, Error, Flags, StartOpts};

use crate::convert;
use crate::rauhad::Rauhad;
use crate::service::{read_bundle_spec, unmount_rootfs, Service};

pub struct RauhaShim {
    namespace: String,
    id: String,
    exit: Arc<ExitSignal>,
}

#[async_trait]
impl Shim for RauhaShim {
    type T = Service;

    async fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        RauhaShim {
            namespace: args.namespace.clone(),
            id: args.id.clone(),
            exit: Arc::new(ExitSignal::default()),
        }
    }

    /// containerd runs `start` in the bundle directory; every container of
    /// a pod shares the shim of its sandbox.
    async fn start_shim(&mut self, opts: StartOpts) -> Result<String, Error> {
        // containerd 1.x passes runtime options on stdin (runc's `Options`,
        // which the crate's `spawn` reads for a shim cgroup); 2.3 and later
        // pass their bootstrap parameters there instead, which the crate
        // cannot parse ("WireError(UnexpectedEof)"). Rauha takes neither: it
        // has no runtime options, and 2.x still gives its addresses in the
        // environment. Reading stdin to its end leaves `spawn` none to parse.
        use std::io::Read;
        let mut ignored = Vec::new();
        std::io::stdin()
            .read_to_end(&mut ignored)
            .map_err(|e| Error::Other(format!("cannot read the start parameters: {e}")))?;
        let spec = read_bundle_spec(std::path::Path::new(".")).map_err(Error::InvalidArgument)?;
        let grouping = convert::grouping(&spec, &opts.id);
        let address = spawn(opts, &grouping, Vec::new()).await?;
        // containerd finds the shim of a task again (after it restarts) by
        // the `address` file in the task's bundle.
        std::fs::write("address", &address)
            .map_err(|e| Error::Other(format!("cannot write the bundle's address file: {e}")))?;
        Ok(address)
    }

    /// containerd runs `delete` when a shim is gone: remove what the
    /// container left (its zone if it owned one, its root filesystem).
    async fn delete_shim(&mut self) -> Result<DeleteResponse, Error> {
        let bundle = std::env::current_dir().map_err(|e| Error::Other(e.to_string()))?;
        if let Ok(spec) = read_bundle_spec(&bundle) {
            if let convert::Role::Member { sandbox_id } = convert::role(&spec) {
                // A pod's container: its root in the pod's zone goes.
                let rauhad = Rauhad::from_env();
                if let Ok(mut zones) = rauhad.zones().await {
                    let r = zones
                        .remove_root(rauha_api::v1::RootRef {
                            zone: convert::zone_name(&self.namespace, &sandbox_id),
                            name: self.id.clone(),
                        })
                        .await;
                    if let Some(s) = r
                        .as_ref()
                        .err()
                        .filter(|s| s.code() != tonic::Code::NotFound)
                    {
                        log::warn!("cannot remove container root {}: {}", self.id, s.message());
                    }
                }
            }
            if convert::role(&spec) == convert::Role::Owner {
                let rauhad = Rauhad::from_env();
                let name = convert::zone_name(&self.namespace, &self.id);
                if let Ok(mut zones) = rauhad.zones().await {
                    let r = zones
                        .delete(rauha_api::v1::DeleteZoneRequest {
                            zone: name.clone(),
                            force: true,
                        })
                        .await;
                    if let Some(s) = r
                        .as_ref()
                        .err()
                        .filter(|s| s.code() != tonic::Code::NotFound)
                    {
                        log::warn!("cannot delete zone {name}: {}", s.message());
                    }
                }
            }
        }
        unmount_rootfs(&bundle);
        let mut resp = DeleteResponse::new();
        resp.exit_status = 137;
        resp.exited_at = Some(convert::now()).into();
        Ok(resp)
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> Self::T {
        Service::new(self.namespace.clone(), publisher, Arc::clone(&self.exit))
    }
}
