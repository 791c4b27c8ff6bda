use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rauha_api::v1;
use rauha_api::v1::sandbox_server::Sandbox;
use rauha_guest_agent::protocol::Stream;
use rauha_spec::message::quote;
use rauha_spec::{RootSpec, WorkspaceSpec, DEFAULT_WORKSPACE_TARGET};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::zones::chosen_root;
use crate::error::DaemonError;
use crate::secrets::{Delivery, Secret};
use crate::validate::{netns, parse_id, process_spec};
use crate::zone::{SandboxRun, WorkspaceRun, ZoneRegistry};

const DEFAULT_DIFF_CAP: u64 = 64 * 1024;
const MAX_DIFF_CAP: u64 = 16 << 20;
const WEEK_MS: u64 = 7 * 24 * 3600 * 1000;

pub struct SandboxService {
    pub registry: Arc<ZoneRegistry>,
    pub images: Arc<crate::images::Images>,
}

impl SandboxService {
    /// Checks a request and turns it into a run; the image lease is held
    /// until the run's zone is recorded.
    async fn prepare(
        &self,
        req: v1::SandboxRequest,
    ) -> Result<(SandboxRun, Option<crate::images::Lease>), DaemonError> {
        let workspace = workspace(&req)?;
        let (root, image) = chosen_root(&self.images, &req.bundle, &req.image).await?;
        let mut wire = req.spec.clone().unwrap_or_default();
        if let (Some((image, _)), RootSpec::Image { layers, .. }) = (&image, &root) {
            apply_image_config(&mut wire, &image.config, &image.name, layers)?;
        }
        let mut spec = process_spec("spec", &wire.args, &wire.env, &wire.cwd)?;
        if let Some(u) = &wire.user {
            spec.user = Some(rauha_spec::zone::ProcessUser {
                uid: u.uid,
                gid: u.gid,
                groups: u.groups.clone(),
            });
        }
        let policy = self
            .registry
            .resolve_policy(req.policy.as_ref(), root == RootSpec::HostView)?;
        let policy = crate::zone::ZoneRegistry::with_network(policy, &req.network)?;
        let policy = crate::zone::ZoneRegistry::with_publish(policy, &req.publish)?;
        if req.timeout_ms > WEEK_MS {
            return Err(DaemonError::invalid(
                "timeout_ms",
                "is over a week; give a shorter timeout",
            ));
        }
        if req.ttl_ms > 0 && !req.keep_zone {
            return Err(DaemonError::invalid(
                "ttl_ms",
                "applies to a kept zone; add keep_zone (--keep-zone) or drop the TTL",
            ));
        }
        if req.ttl_ms > WEEK_MS {
            return Err(DaemonError::invalid(
                "ttl_ms",
                "is over a week; give a shorter TTL",
            ));
        }
        let mut secrets: Vec<Secret> = Vec::new();
        for (i, s) in req.secrets.iter().enumerate() {
            let delivery = match (s.fd, s.env.as_str()) {
                (0, "") => Delivery::Env(s.name.clone()),
                (0, env) => Delivery::Env(env.to_string()),
                (fd, "") => Delivery::Fd(fd),
                (_, _) => {
                    return Err(DaemonError::invalid(
                        format!("secrets[{i}]"),
                        "gives both env and fd; a secret arrives one way, pick one",
                    ))
                }
            };
            if secrets.iter().any(|o| o.delivery == delivery) {
                return Err(DaemonError::invalid(
                    format!("secrets[{i}]"),
                    format!("{delivery:?} is given twice; give each secret its own variable or fd"),
                ));
            }
            secrets.push(self.registry.secrets.get(&s.name, delivery)?);
        }
        let run = SandboxRun {
            spec,
            policy,
            root,
            timeout: (req.timeout_ms > 0).then(|| Duration::from_millis(req.timeout_ms)),
            keep_zone: req.keep_zone,
            ttl: (req.ttl_ms > 0).then(|| Duration::from_millis(req.ttl_ms)),
            workspace,
            secrets,
            netns: netns("netns", &req.netns)?,
            live_output: None,
            started: None,
        };
        Ok((run, image.map(|(_, lease)| lease)))
    }
}

/// An image's config applied to a process as docker applies it: the
/// entrypoint before the command (the image's Cmd when none is given), the
/// image's environment under the request's, its working directory and
/// user unless the request names them.
pub(super) fn apply_image_config(
    spec: &mut v1::ProcessSpec,
    config: &rauha_image::config::RunConfig,
    name: &str,
    layers: &[rauha_spec::ImageLayer],
) -> Result<(), DaemonError> {
    spec.args = config.command(&spec.args);
    if spec.args.is_empty() {
        return Err(DaemonError::invalid(
            "spec.args",
            format!("is empty and image {name} has no Entrypoint or Cmd; give a command"),
        ));
    }
    spec.env = config.environment(&spec.env);
    if spec.cwd.is_empty() {
        spec.cwd = config.working_dir.clone();
    }
    if spec.user.is_none() && !config.user.is_empty() {
        // Names from the image's own /etc/passwd and /etc/group.
        let paths: Vec<&std::path::Path> = layers
            .iter()
            .map(|l| std::path::Path::new(&l.path))
            .collect();
        let ids = rauha_image::users::resolve(&paths, &config.user).map_err(|why| {
            DaemonError::invalid(
                "image",
                format!("{name} runs as user {}, which {why}", quote(&config.user)),
            )
        })?;
        spec.user = Some(v1::ProcessUser {
            uid: ids.uid,
            gid: ids.gid,
            groups: ids.groups,
        });
    }
    Ok(())
}

pub(super) fn workspace(req: &v1::SandboxRequest) -> Result<Option<WorkspaceRun>, DaemonError> {
    let commit = match req.on_success.as_str() {
        "" | "discard" => false,
        "commit" => true,
        other => {
            return Err(DaemonError::invalid(
                "on_success",
                format!("{} is not commit or discard", quote(other)),
            ))
        }
    };
    if req.repo_path.is_empty() {
        if commit || req.dry_run || !req.workspace_path.is_empty() {
            return Err(DaemonError::invalid(
                "repo_path",
                "is empty, but a workspace option was given; add --repo-path DIR",
            ));
        }
        return Ok(None);
    }
    if commit && req.dry_run {
        return Err(DaemonError::invalid(
            "dry_run",
            "contradicts on_success = commit: a dry run never commits; drop one of them",
        ));
    }
    let repo = std::path::Path::new(&req.repo_path);
    if !repo.is_absolute() || !repo.is_dir() {
        return Err(DaemonError::invalid(
            "repo_path",
            format!(
                "{} is not an absolute path to a directory",
                quote(&req.repo_path)
            ),
        ));
    }
    if req.repo_path.contains([',', ':', '\\']) || req.repo_path.chars().any(char::is_control) {
        return Err(DaemonError::invalid("repo_path", format!("{} has ',' ':' '\\\\' or a control character, which overlayfs options cannot carry; use another path", quote(&req.repo_path))));
    }
    if let Some(fs) = pseudo_filesystem(repo) {
        return Err(DaemonError::invalid(
            "repo_path",
            format!(
                "{} is on {fs}, which a workspace cannot be made from; give a project directory",
                quote(&req.repo_path)
            ),
        ));
    }
    let target = if req.workspace_path.is_empty() {
        DEFAULT_WORKSPACE_TARGET.to_string()
    } else {
        req.workspace_path.clone()
    };
    if !target.starts_with('/') || target == "/" || target.split('/').any(|c| c == ".." || c == ".")
    {
        return Err(DaemonError::invalid(
            "workspace_path",
            format!("{} is not a clean absolute path below /", quote(&target)),
        ));
    }
    // A sandbox's zone shows the host's tree: the workspace replaces a
    // directory there, or makes a new one; it cannot replace a file, nor
    // go into the kernel's trees.
    let on_host = std::path::Path::new(&target);
    if target.len() > crate::validate::MAX_PATH_BYTES || target.chars().any(char::is_control) {
        return Err(DaemonError::invalid(
            "workspace_path",
            format!(
                "{} is not a plain path of at most 4095 bytes",
                quote(&target)
            ),
        ));
    }
    if ["/proc", "/sys", "/dev"]
        .iter()
        .any(|k| on_host.starts_with(k))
    {
        return Err(DaemonError::invalid(
            "workspace_path",
            format!(
                "{} is in a kernel filesystem of the zone; give a directory such as /workspace",
                quote(&target)
            ),
        ));
    }
    if on_host
        .symlink_metadata()
        .is_ok_and(|m| !m.file_type().is_dir())
    {
        return Err(DaemonError::invalid(
            "workspace_path",
            format!(
                "{} is a file, not a directory, in the zone's view of the host; give a directory such as /workspace",
                quote(&target)
            ),
        ));
    }
    if req.diff_cap_bytes > MAX_DIFF_CAP {
        return Err(DaemonError::invalid(
            "diff_cap_bytes",
            format!("is over {MAX_DIFF_CAP}"),
        ));
    }
    let diff_cap = if req.diff_cap_bytes == 0 {
        DEFAULT_DIFF_CAP
    } else {
        req.diff_cap_bytes
    };
    Ok(Some(WorkspaceRun {
        spec: WorkspaceSpec {
            repo_path: req.repo_path.clone(),
            target,
        },
        commit,
        diff_cap: usize::try_from(diff_cap).unwrap_or(usize::MAX),
        commit_git_metadata: req.commit_git_metadata,
    }))
}

/// The kernel's own filesystem `path` is on (proc, sysfs, cgroup, ...),
/// which overlayfs cannot take as a lower layer; `None` for a real one.
fn pseudo_filesystem(path: &std::path::Path) -> Option<&'static str> {
    const KINDS: &[(i64, &str)] = &[
        (0x9fa0, "proc"),
        (0x6265_6572, "sysfs"),
        (0x0027_e0eb, "cgroup"),
        (0x6367_7270, "cgroup2"),
        (0x1cd1, "devpts"),
        (0x6462_6720, "debugfs"),
        (0x7472_6163, "tracefs"),
        (0x7363_6673, "securityfs"),
        (0xcafe_4a11, "bpf"),
        (0x6e73_6673, "nsfs"),
        (0x1980_0202, "mqueue"),
        (0x6265_6570, "configfs"),
        (0xde5e_81e4, "efivarfs"),
    ];
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statfs writes into the struct we own; the path is a C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast)]
    let kind = st.f_type as i64;
    KINDS.iter().find(|(k, _)| *k == kind).map(|(_, n)| *n)
}

type EventStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<v1::SandboxEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Sandbox for SandboxService {
    async fn run_sandbox(
        &self,
        request: Request<v1::SandboxRequest>,
    ) -> Result<Response<v1::TaskResult>, Status> {
        let (run, _lease) = self.prepare(request.into_inner()).await?;
        let result = self.registry.run_sandbox(run).await?;
        Ok(Response::new((&result).into()))
    }

    type RunSandboxStreamStream = EventStream;

    async fn run_sandbox_stream(
        &self,
        request: Request<v1::SandboxRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let (mut run, lease) = self.prepare(request.into_inner()).await?;
        let (chunks_tx, mut chunks_rx) = mpsc::channel(256);
        run.live_output = Some(chunks_tx);
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        run.started = Some(started_tx);
        let (tx, rx) = mpsc::channel(256);
        let registry = Arc::clone(&self.registry);
        tokio::spawn(async move {
            let task = tokio::spawn(async move {
                let _lease = lease;
                registry.run_sandbox(run).await
            });
            // The id first: a client that loses this stream still knows
            // where the result is kept. (No output comes before it.)
            if let Ok((task_id, zone_id)) = started_rx.await {
                let _ = tx
                    .send(Ok(v1::SandboxEvent {
                        event: Some(v1::sandbox_event::Event::Started(v1::TaskStarted {
                            task_id: task_id.to_string(),
                            zone_id: zone_id.to_string(),
                        })),
                    }))
                    .await;
            }
            while let Some(c) = chunks_rx.recv().await {
                let output = v1::Output {
                    stream: match c.stream {
                        Stream::Stdout => 1,
                        Stream::Stderr => 2,
                    },
                    data: c.data,
                };
                // A gone client does not stop the task: its result is stored.
                let _ = tx
                    .send(Ok(v1::SandboxEvent {
                        event: Some(v1::sandbox_event::Event::Output(output)),
                    }))
                    .await;
            }
            let event = match task.await {
                Ok(Ok(result)) => Ok(v1::SandboxEvent {
                    event: Some(v1::sandbox_event::Event::Result((&result).into())),
                }),
                Ok(Err(e)) => Err(Status::from(e)),
                Err(source) => Err(DaemonError::Aborted {
                    what: "the sandbox task",
                    source,
                }
                .into()),
            };
            let _ = tx.send(event).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
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
            None => Err(DaemonError::TaskRunning { id }.into()),
        }
    }

    async fn list_tasks(
        &self,
        request: Request<v1::ListTasksRequest>,
    ) -> Result<Response<v1::ListTasksResponse>, Status> {
        let limit = request.into_inner().limit;
        let tasks = self
            .registry
            .list_tasks((limit > 0).then_some(limit as usize))?;
        let tasks = tasks
            .iter()
            .map(|t| {
                let r = t.result.as_ref();
                v1::TaskSummary {
                    task_id: t.id.to_string(),
                    zone_id: t.zone_id.to_string(),
                    command: r
                        .map(|r| r.command.clone())
                        .unwrap_or_else(|| t.command.clone()),
                    status: r.map_or("running", |r| r.status.as_str()).to_string(),
                    started_ms: t.started_ms,
                    duration_ms: r.map_or(0, |r| r.duration_ms),
                    has_exit_code: r.is_some_and(|r| r.exit_code.is_some()),
                    exit_code: r.and_then(|r| r.exit_code).unwrap_or_default(),
                }
            })
            .collect();
        Ok(Response::new(v1::ListTasksResponse { tasks }))
    }
}
