//! The Task API. Each handler looks up the container, makes one or two
//! calls to rauhad and publishes the event containerd expects.
//!
//! A container that owns its zone (a pod sandbox, or a container outside
//! any pod) creates the zone from its bundle; its init process and execs
//! are rauhad processes in that zone, with stdio on containerd's FIFOs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::shim_async::Events;
use containerd_shim::protos::shim_async::Task;
use containerd_shim::protos::topics;
use containerd_shim::protos::ttrpc::Code;
use containerd_shim::protos::types::task::{ProcessInfo, Status};
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{api, TtrpcContext, TtrpcResult};
use rauha_api::v1;
use rauha_api::v1::processes_client::ProcessesClient;
use rauha_api::v1::zones_client::ZonesClient;
use serde_json::Value;
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::convert::{self, error, ttrpc_error, Role};
use crate::rauhad::Rauhad;

/// The metadata key a replayed request carries (a request the dead shim
/// read and did not answer): handlers that make things treat "already
/// there" as their own earlier work.
pub const REPLAY_KEY: &str = "rauha-replay";

/// How a process ended: its exit status and when (ms since the epoch).
#[derive(Debug, Clone, Copy)]
struct Exit {
    status: u32,
    at_ms: u64,
}

struct Proc {
    spec: v1::ProcessSpec,
    stdio: v1::StdioPaths,
    /// The id chosen for rauhad's Run, kept before the call so that a
    /// restarted shim asks for the same process, never a second one.
    run_id: Option<String>,
    /// rauhad's process id, once started.
    rauha_id: Option<String>,
    pid: u32,
    exit: watch::Sender<Option<Exit>>,
    /// Write ends of its output FIFOs, held while it runs: rauhad writes
    /// its output, and when rauhad restarts the FIFO keeps a writer, so
    /// containerd's reader does not see the end of the output.
    held: Vec<std::fs::File>,
}

impl Proc {
    fn new(spec: v1::ProcessSpec, stdio: v1::StdioPaths) -> Proc {
        Proc {
            spec,
            stdio,
            run_id: None,
            rauha_id: None,
            pid: 0,
            exit: watch::channel(None).0,
            held: Vec::new(),
        }
    }

    fn exited(&self) -> Option<Exit> {
        *self.exit.borrow()
    }

    fn status(&self, paused: bool) -> Status {
        match (self.rauha_id.is_some(), self.exited()) {
            (_, Some(_)) => Status::STOPPED,
            (false, None) => Status::CREATED,
            (true, None) if paused => Status::PAUSED,
            (true, None) => Status::RUNNING,
        }
    }
}

struct Container {
    bundle: PathBuf,
    /// rauhad's zone id.
    zone: String,
    /// The container created the zone and deletes it with itself.
    owns_zone: bool,
    /// A pod's container: its processes run in this container root of the
    /// pod's zone (its own image).
    root: Option<String>,
    /// Its own limits as last applied (a pod's container); its memory limit
    /// also counts for the pod's total.
    limits: v1::RootLimits,
    /// The zone's OOM kill count when its init started.
    oom_before: u64,
    paused: bool,
    init: Proc,
    execs: HashMap<String, Proc>,
}

impl Container {
    fn proc(&self, exec_id: &str) -> TtrpcResult<&Proc> {
        if exec_id.is_empty() {
            return Ok(&self.init);
        }
        self.execs
            .get(exec_id)
            .ok_or_else(|| error(Code::NOT_FOUND, format!("exec {exec_id} not found")))
    }

    fn proc_mut(&mut self, exec_id: &str) -> TtrpcResult<&mut Proc> {
        if exec_id.is_empty() {
            return Ok(&mut self.init);
        }
        self.execs
            .get_mut(exec_id)
            .ok_or_else(|| error(Code::NOT_FOUND, format!("exec {exec_id} not found")))
    }
}

struct Inner {
    namespace: String,
    rauhad: Rauhad,
    /// containerd's event service; set once connected (a restarted shim
    /// may serve before containerd is back).
    publisher: tokio::sync::OnceCell<RemotePublisher>,
    exit: Arc<ExitSignal>,
    containers: Mutex<HashMap<String, Container>>,
    /// Where the containers' state is saved for a restarted shim
    /// (`rauha-shim.json` in the shim's directory, the sandbox's bundle).
    state_file: PathBuf,
    /// Saves happen one at a time, so an older one never lands last.
    saving: Mutex<()>,
    /// Pod memory totals are read, summed and written one at a time.
    pod_memory: tokio::sync::Mutex<()>,
}

#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

/// Reads `config.json` of an OCI bundle.
pub fn read_bundle_spec(bundle: &Path) -> Result<Value, String> {
    let path = bundle.join("config.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))
}

/// Whether `path` is on another filesystem than its parent.
fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (
        std::fs::metadata(path),
        path.parent().map(std::fs::metadata),
    ) {
        (Ok(m), Some(Ok(p))) => m.dev() != p.dev(),
        _ => false,
    }
}

/// Detaches the container's root filesystem mount, if any.
pub fn unmount_rootfs(bundle: &Path) {
    let rootfs = bundle.join("rootfs");
    if let Ok(c) = std::ffi::CString::new(rootfs.as_os_str().as_encoded_bytes()) {
        // SAFETY: umount2 with a NUL-terminated path we own; EINVAL (not a
        // mount point) and ENOENT are expected and ignored.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// The type URL containerd decodes an event by: its full protobuf name
/// (every task event is in package `containerd.events`).
fn event_type_url<E: Message>() -> String {
    format!("containerd.events.{}", E::NAME)
}

/// Opens the output paths that are FIFOs for writing, without waiting:
/// containerd opened their read ends before it asked for the start. A path
/// that is a file, or a FIFO nobody reads, is left alone.
fn hold_outputs(stdio: &v1::StdioPaths) -> Vec<std::fs::File> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    [&stdio.stdout, &stdio.stderr]
        .into_iter()
        .filter(|p| !p.is_empty())
        .filter(|p| {
            std::fs::metadata(p)
                .map(|m| m.file_type().is_fifo())
                .unwrap_or(false)
        })
        .filter_map(|p| {
            std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(p)
                .ok()
        })
        .collect()
}

/// A fresh process id (a UUID, from the kernel) for rauhad's Run.
fn fresh_id() -> TtrpcResult<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|s| s.trim().to_string())
        .map_err(|e| error(Code::INTERNAL, format!("cannot make a process id: {e}")))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn stdio(stdin: &str, stdout: &str, stderr: &str) -> v1::StdioPaths {
    v1::StdioPaths {
        stdin: stdin.to_string(),
        stdout: stdout.to_string(),
        stderr: stderr.to_string(),
    }
}

impl Service {
    /// rauhad's zone and process clients; an unreachable rauhad is one
    /// clear Unavailable error.
    async fn zones(&self) -> TtrpcResult<ZonesClient<Channel>> {
        self.inner.rauhad.zones().await.map_err(ttrpc_error)
    }

    async fn processes(&self) -> TtrpcResult<ProcessesClient<Channel>> {
        self.inner.rauhad.processes().await.map_err(ttrpc_error)
    }

    pub fn new(namespace: String, exit: Arc<ExitSignal>) -> Service {
        Service {
            inner: Arc::new(Inner {
                namespace,
                rauhad: Rauhad::from_env(),
                publisher: tokio::sync::OnceCell::new(),
                exit,
                containers: Mutex::new(HashMap::new()),
                state_file: std::env::current_dir().unwrap_or_default().join(STATE_FILE),
                saving: Mutex::new(()),
                pod_memory: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Events go out from now on.
    pub fn set_publisher(&self, publisher: RemotePublisher) {
        if self.inner.publisher.set(publisher).is_err() {
            log::warn!("the event publisher was set twice");
        }
    }

    fn with<T>(
        &self,
        id: &str,
        f: impl FnOnce(&mut Container) -> TtrpcResult<T>,
    ) -> TtrpcResult<T> {
        let mut all = self
            .inner
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let c = all
            .get_mut(id)
            .ok_or_else(|| error(Code::NOT_FOUND, format!("container {id} not found")))?;
        f(c)
    }

    /// Mounts what containerd prepared as the container's root filesystem.
    async fn mount_rootfs(&self, req: &api::CreateTaskRequest, replay: bool) -> TtrpcResult<()> {
        if req.rootfs.is_empty() {
            return Ok(());
        }
        let rootfs = Path::new(&req.bundle).join("rootfs");
        if replay && is_mount_point(&rootfs) {
            // Mounted by the shim that died before it answered.
            return Ok(());
        }
        std::fs::create_dir_all(&rootfs).map_err(|e| {
            error(
                Code::INTERNAL,
                format!("cannot create {}: {e}", rootfs.display()),
            )
        })?;
        for m in &req.rootfs {
            if let Err(e) = containerd_shim::util::mount_rootfs(m, &rootfs).await {
                unmount_rootfs(Path::new(&req.bundle));
                return Err(error(
                    Code::INTERNAL,
                    format!("cannot mount the root filesystem ({}): {e}", m.type_),
                ));
            }
        }
        Ok(())
    }

    async fn create_zone(
        &self,
        id: &str,
        bundle: &str,
        spec: &Value,
        replay: bool,
    ) -> TtrpcResult<String> {
        let policy = convert::policy(spec).map_err(|e| error(Code::INVALID_ARGUMENT, e))?;
        let name = convert::zone_name(&self.inner.namespace, id);
        let mut zones = self.zones().await?;
        let created = zones
            .create(v1::CreateZoneRequest {
                name: name.clone(),
                policy: Some(policy),
                bundle: bundle.to_string(),
                netns: convert::netns(spec).unwrap_or_default(),
                cgroup_parent: convert::cgroup_parent(spec).unwrap_or_default(),
            })
            .await;
        match created {
            Ok(z) => Ok(z.into_inner().id),
            // The same request, asked again of a restarted shim: the dead
            // shim made the zone (from this bundle) before it could answer.
            Err(s) if replay && s.code() == tonic::Code::AlreadyExists => {
                let z = zones
                    .get(v1::ZoneRef { zone: name })
                    .await
                    .map_err(ttrpc_error)?
                    .into_inner();
                if z.root == format!("bundle:{bundle}") {
                    Ok(z.id)
                } else {
                    Err(ttrpc_error(s))
                }
            }
            Err(s) => Err(ttrpc_error(s)),
        }
    }

    /// Publishes one event. The envelope is built here rather than by
    /// `RemotePublisher::publish`: that one serializes through
    /// `MessageDyn`, which makes rust-protobuf build the run-time
    /// descriptors of containerd's protos (with their comments) on the first
    /// event, about 300 KiB of heap kept for the pod's whole life.
    async fn publish<E: Message>(&self, topic: &str, event: E) {
        let envelope = match event.write_to_bytes() {
            Ok(value) => {
                let mut any = Any::new();
                any.type_url = event_type_url::<E>();
                any.value = value;
                let mut envelope = containerd_shim::protos::api::Envelope::new();
                envelope.set_topic(topic.to_string());
                envelope.set_namespace(self.inner.namespace.clone());
                envelope.set_timestamp(convert::now());
                envelope.set_event(any);
                envelope
            }
            Err(e) => {
                log::warn!("cannot encode the {topic} event: {e}");
                return;
            }
        };
        let mut req = containerd_shim::protos::shim::events::ForwardRequest::new();
        req.set_envelope(envelope);
        // `forward` queues the envelope on the publisher's retrying queue;
        // the context is not read.
        let ctx = TtrpcContext {
            fd: -1,
            mh: Default::default(),
            metadata: Default::default(),
            timeout_nano: 0,
        };
        let publisher = loop {
            match self.inner.publisher.get() {
                Some(p) => break p,
                None => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        if let Err(e) = publisher.forward(&ctx, req).await {
            log::warn!("cannot publish {topic}: {e}");
        }
    }

    /// Starts a process in rauhad, once. A call that broke in flight
    /// (rauhad died) may have started it: the same request, with the id the
    /// shim chose, is sent again once rauhad is back, and returns the
    /// process it started, or starts it (for 30 s at most).
    async fn run_once(&self, run: v1::RunRequest) -> TtrpcResult<v1::Process> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut broke = false;
        loop {
            let r = match self.inner.rauhad.processes().await {
                Ok(mut c) => c.run(run.clone()).await.map(|r| r.into_inner()),
                Err(s) => Err(s),
            };
            match r {
                Ok(p) => return Ok(p),
                Err(s)
                    if std::time::Instant::now() < deadline
                        && (matches!(s.code(), tonic::Code::Unknown | tonic::Code::Cancelled)
                            || (broke && s.code() == tonic::Code::Unavailable)) =>
                {
                    broke = true;
                    self.inner.rauhad.reset().await;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(s) => return Err(ttrpc_error(s)),
            }
        }
    }

    /// Waits in the background for a started process's end (across rauhad
    /// restarts), then records and publishes it.
    fn watch_exit(&self, container_id: String, exec_id: String, rauha_id: String, pid: u32) {
        let svc = self.clone();
        tokio::spawn(async move {
            let ended = loop {
                let r = match svc.inner.rauhad.processes().await {
                    Ok(mut c) => c
                        .wait(v1::ProcessRef {
                            id: rauha_id.clone(),
                        })
                        .await
                        .map(|r| r.into_inner()),
                    Err(s) => Err(s),
                };
                match r {
                    Ok(p) => break Some(p),
                    Err(s) if s.code() == tonic::Code::NotFound => break None,
                    Err(_) => {
                        svc.inner.rauhad.reset().await;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            };
            let exit = match &ended {
                Some(p) if p.has_exit_code => Exit {
                    status: p.exit_code as u32,
                    at_ms: if p.ended_ms > 0 { p.ended_ms } else { now_ms() },
                },
                _ => Exit {
                    status: 255,
                    at_ms: now_ms(),
                },
            };
            if exec_id.is_empty() {
                // A pod's container ends with its init, as a container with
                // a pid namespace of its own would: nothing it started stays.
                let root = svc.with(&container_id, |c| Ok((c.zone.clone(), c.root.clone())));
                if let Ok((zone, Some(name))) = root {
                    if let Err(e) = svc.signal_root(&zone, &name, libc::SIGKILL).await {
                        log::warn!("cannot end what container {container_id} left running: {e}");
                    }
                }
            }
            // The OOM killer sends SIGKILL: an init that ended otherwise was
            // not its victim, even when another container of the pod was.
            let sigkilled = exit.status == 128 + libc::SIGKILL as u32;
            if exec_id.is_empty() && sigkilled && svc.oom_killed(&container_id).await {
                let mut oom = TaskOOM::new();
                oom.container_id = container_id.clone();
                svc.publish(topics::TASK_OOM_EVENT_TOPIC, oom).await;
            }
            let sent = svc.with(&container_id, |c| {
                let p = c.proc_mut(&exec_id)?;
                // rauhad answered the wait after the last output byte:
                // the FIFOs may end now.
                p.held.clear();
                p.exit.send_replace(Some(exit));
                Ok(())
            });
            if sent.is_ok() {
                svc.persist();
                let mut ev = TaskExit::new();
                ev.container_id = container_id.clone();
                ev.id = if exec_id.is_empty() {
                    container_id
                } else {
                    exec_id
                };
                ev.pid = pid;
                ev.exit_status = exit.status;
                ev.exited_at = Some(convert::timestamp(exit.at_ms)).into();
                svc.publish(topics::TASK_EXIT_EVENT_TOPIC, ev).await;
            }
        });
    }

    /// Signals every process of a pod container's root.
    async fn signal_root(&self, zone: &str, name: &str, signal: i32) -> TtrpcResult<()> {
        self.zones()
            .await?
            .signal_root(v1::SignalRootRequest {
                zone: zone.to_string(),
                name: name.to_string(),
                signal,
            })
            .await
            .map_err(ttrpc_error)?;
        Ok(())
    }

    /// A container's resource use: a pod container's own cgroup's (rauhad
    /// gives the zone's where it has none), or its zone's.
    async fn usage_of(&self, container_id: &str) -> TtrpcResult<v1::Usage> {
        let (zone, root) = self.with(container_id, |c| Ok((c.zone.clone(), c.root.clone())))?;
        let mut zones = self.zones().await?;
        let usage = match root {
            Some(name) => zones
                .root_usage(v1::RootRef { zone, name })
                .await
                .map_err(ttrpc_error)?
                .into_inner(),
            None => zones
                .usage(v1::ZoneRef { zone })
                .await
                .map_err(ttrpc_error)?
                .into_inner()
                .usage
                .unwrap_or_default(),
        };
        Ok(usage)
    }

    /// The container's count of OOM kills so far (0 when unknown).
    async fn oom_kills(&self, container_id: &str) -> u64 {
        self.usage_of(container_id)
            .await
            .map(|u| u.oom_kills)
            .unwrap_or(0)
    }

    /// Whether the OOM killer acted in the container (its own cgroup, or
    /// its zone) since its init started (an earlier kill is not this
    /// container's).
    async fn oom_killed(&self, container_id: &str) -> bool {
        let Ok(before) = self.with(container_id, |c| Ok(c.oom_before)) else {
            return false;
        };
        self.oom_kills(container_id).await > before
    }

    /// Prepares the container's root in the pod's zone: its image and its
    /// bind and tmpfs mounts (the zone provides /proc, /sys, /dev).
    /// The container also gets a cgroup of its own with its limits, where
    /// the host allows (see rauhad's `RootResponse.own_cgroup`).
    async fn add_root(
        &self,
        zone: &str,
        id: &str,
        bundle: &Path,
        spec: &Value,
        replay: bool,
    ) -> TtrpcResult<()> {
        let rootfs = spec
            .get("root")
            .and_then(|r| r.get("path"))
            .and_then(Value::as_str)
            .map(|p| bundle.join(p))
            .unwrap_or_else(|| bundle.join("rootfs"));
        let added = self
            .zones()
            .await?
            .add_root(v1::AddRootRequest {
                zone: zone.to_string(),
                name: id.to_string(),
                rootfs: rootfs.display().to_string(),
                mounts: convert::mounts(spec),
                limits: Some(convert::root_limits(
                    spec.get("linux")
                        .and_then(|l| l.get("resources"))
                        .unwrap_or(&Value::Null),
                )),
                readonly: spec
                    .get("root")
                    .and_then(|r| r.get("readonly"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            })
            .await;
        let added = match added {
            Ok(a) => a.into_inner(),
            // The dead shim added it before it could answer.
            Err(s) if replay && s.code() == tonic::Code::AlreadyExists => return Ok(()),
            Err(s) => return Err(ttrpc_error(s)),
        };
        if !added.own_cgroup {
            log::info!(
                "container {id}: its pod's zone gives containers no cgroup of their own; the pod's limits hold for it"
            );
        }
        Ok(())
    }

    /// A pod's memory limit is the sum of its containers' limits when each
    /// container has one (as kubelet sizes a pod's cgroup); otherwise the
    /// pod's policy keeps its own.
    async fn update_pod_memory(&self, zone: &str) {
        let _one_at_a_time = self.inner.pod_memory.lock().await;
        let limits: Vec<Option<u64>> = {
            let all = self
                .inner
                .containers
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            all.values()
                .filter(|c| c.zone == zone && c.root.is_some())
                .map(|c| c.limits.memory_bytes)
                .collect()
        };
        let Some(total) = limits.iter().try_fold(0u64, |sum, l| l.map(|l| sum + l)) else {
            return;
        };
        if total == 0 {
            return;
        }
        let Ok(mut zones) = self.inner.rauhad.zones().await else {
            return;
        };
        let Ok(current) = zones
            .get(v1::ZoneRef {
                zone: zone.to_string(),
            })
            .await
        else {
            return;
        };
        let text = current
            .into_inner()
            .policy
            .map(|p| p.toml)
            .unwrap_or_default();
        let Ok(mut policy) = rauha_spec::policy::Policy::parse("zone policy", &text) else {
            return;
        };
        policy.resources.memory_limit = Some(total);
        let r = zones
            .update_policy(v1::UpdatePolicyRequest {
                zone: zone.to_string(),
                policy: Some(v1::PolicySource {
                    source: Some(v1::policy_source::Source::Inline(v1::InlinePolicy {
                        file: "pod memory".into(),
                        toml: policy.to_toml(),
                    })),
                }),
            })
            .await;
        if let Err(e) = r {
            log::warn!(
                "cannot set the pod's memory limit to {total}: {}",
                e.message()
            );
        }
    }

    /// Freezes or thaws the container's zone (a zone it owns).
    async fn set_paused(&self, id: &str, paused: bool) -> TtrpcResult<()> {
        let zone = self.owner_zone(id, if paused { "pause" } else { "resume" })?;
        let mut zones = self.zones().await?;
        let zone = v1::ZoneRef { zone };
        if paused {
            zones.pause(zone).await.map_err(ttrpc_error)?;
        } else {
            zones.resume(zone).await.map_err(ttrpc_error)?;
        }
        self.with(id, |c| {
            c.paused = paused;
            Ok(())
        })?;
        self.persist();
        Ok(())
    }

    fn owner_zone(&self, id: &str, what: &str) -> TtrpcResult<String> {
        self.with(id, |c| {
            if c.owns_zone {
                Ok(c.zone.clone())
            } else {
                Err(error(
                    Code::FAILED_PRECONDITION,
                    format!("container {id} shares its zone with its pod; {what} the pod's sandbox instead"),
                ))
            }
        })
    }
}

#[async_trait]
impl Task for Service {
    async fn create(
        &self,
        ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        let replay = ctx.metadata.contains_key(REPLAY_KEY);
        if !req.checkpoint.is_empty() {
            return Err(error(
                Code::UNIMPLEMENTED,
                "rauha cannot restore checkpoints; create the task without --checkpoint",
            ));
        }
        let bundle = PathBuf::from(&req.bundle);
        let spec = read_bundle_spec(&bundle).map_err(|e| error(Code::INVALID_ARGUMENT, e))?;
        let mut init = convert::process(spec.get("process").unwrap_or(&Value::Null))
            .map_err(|e| error(Code::INVALID_ARGUMENT, e))?;
        init.terminal = req.terminal;
        let mut root = None;
        let (zone, owns_zone) = match convert::role(&spec) {
            Role::Owner => {
                self.mount_rootfs(&req, replay).await?;
                match self.create_zone(&req.id, &req.bundle, &spec, replay).await {
                    Ok(zone) => (zone, true),
                    Err(e) => {
                        unmount_rootfs(&bundle);
                        return Err(e);
                    }
                }
            }
            Role::Named { zone } => {
                let z = self
                    .zones()
                    .await?
                    .get(v1::ZoneRef { zone })
                    .await
                    .map_err(ttrpc_error)?
                    .into_inner();
                (z.id, false)
            }
            Role::Member { sandbox_id } => {
                let zone = self
                    .with(&sandbox_id, |c| Ok(c.zone.clone()))
                    .map_err(|_| {
                        error(
                            Code::NOT_FOUND,
                            format!("pod sandbox {sandbox_id} of container {} is not served by this shim", req.id),
                        )
                    })?;
                self.mount_rootfs(&req, replay).await?;
                let added = self.add_root(&zone, &req.id, &bundle, &spec, replay).await;
                if let Err(e) = added {
                    unmount_rootfs(&bundle);
                    return Err(e);
                }
                root = Some(req.id.clone());
                init.root = req.id.clone();
                (zone, false)
            }
        };
        let limits = convert::root_limits(
            spec.get("linux")
                .and_then(|l| l.get("resources"))
                .unwrap_or(&Value::Null),
        );
        let io = stdio(&req.stdin, &req.stdout, &req.stderr);
        self.inner
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                req.id.clone(),
                Container {
                    bundle,
                    zone: zone.clone(),
                    owns_zone,
                    root: root.clone(),
                    limits,
                    oom_before: 0,
                    paused: false,
                    init: Proc::new(init, io),
                    execs: HashMap::new(),
                },
            );
        self.persist();
        if root.is_some() {
            self.update_pod_memory(&zone).await;
        }
        let mut ev = TaskCreate::new();
        ev.container_id = req.id.clone();
        ev.bundle = req.bundle.clone();
        ev.rootfs = req.rootfs.clone();
        let mut tio = TaskIO::new();
        tio.stdin = req.stdin.clone();
        tio.stdout = req.stdout.clone();
        tio.stderr = req.stderr.clone();
        tio.terminal = req.terminal;
        ev.io = Some(tio).into();
        self.publish(topics::TASK_CREATE_EVENT_TOPIC, ev).await;
        Ok(api::CreateTaskResponse::new())
    }

    async fn start(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        let started = self.with(&req.id, |c| {
            let zone = c.zone.clone();
            let p = c.proc_mut(&req.exec_id)?;
            if p.rauha_id.is_some() {
                // Asked again: a shim restarted before it answered.
                return Ok(Err(p.pid));
            }
            if p.exited().is_some() {
                return Err(error(
                    Code::FAILED_PRECONDITION,
                    format!("process {} was already started", req.id),
                ));
            }
            let run_id = match &p.run_id {
                Some(id) => id.clone(),
                None => fresh_id()?,
            };
            p.run_id = Some(run_id.clone());
            Ok(Ok((zone, p.spec.clone(), p.stdio.clone(), run_id)))
        })?;
        let (zone, spec, io, run_id) = match started {
            Ok(s) => s,
            Err(pid) => {
                let mut resp = api::StartResponse::new();
                resp.pid = pid;
                return Ok(resp);
            }
        };
        self.persist();
        if req.exec_id.is_empty() {
            let before = self.oom_kills(&req.id).await;
            self.with(&req.id, |c| {
                c.oom_before = before;
                Ok(())
            })?;
        }
        let held = hold_outputs(&io);
        let run = v1::RunRequest {
            zone,
            spec: Some(spec),
            stdio: Some(io),
            id: run_id,
        };
        let p = self.run_once(run).await?;
        let pid = if p.host_pid != 0 { p.host_pid } else { p.pid };
        self.with(&req.id, |c| {
            let proc = c.proc_mut(&req.exec_id)?;
            proc.rauha_id = Some(p.id.clone());
            proc.pid = pid;
            proc.held = held;
            Ok(())
        })?;
        self.persist();
        self.watch_exit(req.id.clone(), req.exec_id.clone(), p.id, pid);
        if req.exec_id.is_empty() {
            let mut ev = TaskStart::new();
            ev.container_id = req.id.clone();
            ev.pid = pid;
            self.publish(topics::TASK_START_EVENT_TOPIC, ev).await;
        } else {
            let mut ev = TaskExecStarted::new();
            ev.container_id = req.id.clone();
            ev.exec_id = req.exec_id.clone();
            ev.pid = pid;
            self.publish(topics::TASK_EXEC_STARTED_EVENT_TOPIC, ev)
                .await;
        }
        let mut resp = api::StartResponse::new();
        resp.pid = pid;
        Ok(resp)
    }

    async fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        let (rauha_id, pid, exit, zone, owns_zone, bundle) = self.with(&req.id, |c| {
            let p = c.proc(&req.exec_id)?;
            if p.rauha_id.is_some() && p.exited().is_none() {
                return Err(error(
                    Code::FAILED_PRECONDITION,
                    format!(
                        "process {} is running; kill it before deleting it",
                        if req.exec_id.is_empty() {
                            &req.id
                        } else {
                            &req.exec_id
                        }
                    ),
                ));
            }
            Ok((
                p.rauha_id.clone(),
                p.pid,
                p.exited(),
                c.zone.clone(),
                c.owns_zone,
                c.bundle.clone(),
            ))
        })?;
        let exit = exit.unwrap_or(Exit {
            status: 0,
            at_ms: now_ms(),
        });
        if let Some(id) = rauha_id {
            let r = self.processes().await?.delete(v1::ProcessRef { id }).await;
            if let Some(s) = r
                .as_ref()
                .err()
                .filter(|s| s.code() != tonic::Code::NotFound)
            {
                return Err(ttrpc_error(s.clone()));
            }
        }
        if req.exec_id.is_empty() {
            let root = self.with(&req.id, |c| Ok(c.root.clone()))?;
            if let Some(name) = root {
                self.zones()
                    .await?
                    .remove_root(v1::RootRef {
                        zone: zone.clone(),
                        name,
                    })
                    .await
                    .map_err(ttrpc_error)?;
                unmount_rootfs(&bundle);
                self.with(&req.id, |c| {
                    c.limits = v1::RootLimits::default();
                    c.root = None;
                    Ok(())
                })?;
                self.update_pod_memory(&zone).await;
            }
            if owns_zone {
                let r = self
                    .zones()
                    .await?
                    .delete(v1::DeleteZoneRequest { zone, force: true })
                    .await;
                if let Some(s) = r
                    .as_ref()
                    .err()
                    .filter(|s| s.code() != tonic::Code::NotFound)
                {
                    return Err(ttrpc_error(s.clone()));
                }
                unmount_rootfs(&bundle);
            }
            self.inner
                .containers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&req.id);
            self.persist();
            let mut ev = TaskDelete::new();
            ev.container_id = req.id.clone();
            ev.id = req.id.clone();
            ev.pid = pid;
            ev.exit_status = exit.status;
            ev.exited_at = Some(convert::timestamp(exit.at_ms)).into();
            self.publish(topics::TASK_DELETE_EVENT_TOPIC, ev).await;
        } else {
            self.with(&req.id, |c| {
                c.execs.remove(&req.exec_id);
                Ok(())
            })?;
            self.persist();
        }
        let mut resp = api::DeleteResponse::new();
        resp.pid = pid;
        resp.exit_status = exit.status;
        resp.exited_at = Some(convert::timestamp(exit.at_ms)).into();
        Ok(resp)
    }

    async fn pids(
        &self,
        _ctx: &TtrpcContext,
        req: api::PidsRequest,
    ) -> TtrpcResult<api::PidsResponse> {
        let (zone, mine) = self.with(&req.id, |c| {
            let mine: Vec<String> = std::iter::once(&c.init)
                .chain(c.execs.values())
                .filter_map(|p| p.rauha_id.clone())
                .collect();
            Ok((c.zone.clone(), mine))
        })?;
        let list = self
            .processes()
            .await?
            .ps(v1::PsRequest { zone })
            .await
            .map_err(ttrpc_error)?
            .into_inner();
        let mut resp = api::PidsResponse::new();
        for p in list
            .processes
            .iter()
            .filter(|p| p.state == "running" && mine.contains(&p.id))
        {
            let mut info = ProcessInfo::new();
            info.pid = if p.host_pid != 0 { p.host_pid } else { p.pid };
            resp.processes.push(info);
        }
        Ok(resp)
    }

    async fn pause(&self, _ctx: &TtrpcContext, req: api::PauseRequest) -> TtrpcResult<api::Empty> {
        self.set_paused(&req.id, true).await?;
        let mut ev = TaskPaused::new();
        ev.container_id = req.id.clone();
        self.publish(topics::TASK_PAUSED_EVENT_TOPIC, ev).await;
        Ok(api::Empty::new())
    }

    async fn resume(
        &self,
        _ctx: &TtrpcContext,
        req: api::ResumeRequest,
    ) -> TtrpcResult<api::Empty> {
        self.set_paused(&req.id, false).await?;
        let mut ev = TaskResumed::new();
        ev.container_id = req.id.clone();
        self.publish(topics::TASK_RESUMED_EVENT_TOPIC, ev).await;
        Ok(api::Empty::new())
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        let signal = req.signal as i32;
        let (rauha_id, exited, zone, owns_zone, root) = self.with(&req.id, |c| {
            let p = c.proc(&req.exec_id)?;
            Ok((
                p.rauha_id.clone(),
                p.exited(),
                c.zone.clone(),
                c.owns_zone,
                c.root.clone(),
            ))
        })?;
        if exited.is_some() {
            return Err(error(Code::NOT_FOUND, "process already finished"));
        }
        let Some(rauha_id) = rauha_id else {
            // Never started: it ends here, killed by the signal.
            let exit = Exit {
                status: 128 + req.signal,
                at_ms: now_ms(),
            };
            self.with(&req.id, |c| {
                c.proc(&req.exec_id)?.exit.send_replace(Some(exit));
                Ok(())
            })?;
            self.persist();
            let mut ev = TaskExit::new();
            ev.container_id = req.id.clone();
            ev.id = if req.exec_id.is_empty() {
                req.id.clone()
            } else {
                req.exec_id.clone()
            };
            ev.exit_status = exit.status;
            ev.exited_at = Some(convert::timestamp(exit.at_ms)).into();
            self.publish(topics::TASK_EXIT_EVENT_TOPIC, ev).await;
            return Ok(api::Empty::new());
        };
        if let (true, true, Some(name)) = (req.all, req.exec_id.is_empty(), &root) {
            // A pod's container: every process in its root, whatever group.
            self.signal_root(&zone, name, signal).await?;
            return Ok(api::Empty::new());
        }
        if req.all && req.exec_id.is_empty() && owns_zone && signal == libc::SIGKILL {
            // Every process of the container's zone, not only its init.
            self.zones()
                .await?
                .stop(v1::ZoneRef { zone })
                .await
                .map_err(ttrpc_error)?;
            return Ok(api::Empty::new());
        }
        self.processes()
            .await?
            .signal(v1::SignalRequest {
                id: rauha_id,
                signal,
            })
            .await
            .map_err(ttrpc_error)?;
        Ok(api::Empty::new())
    }

    async fn exec(
        &self,
        _ctx: &TtrpcContext,
        req: api::ExecProcessRequest,
    ) -> TtrpcResult<api::Empty> {
        let mut spec = req
            .spec
            .as_ref()
            .ok_or_else(|| {
                error(
                    Code::INVALID_ARGUMENT,
                    "the exec request has no process spec",
                )
            })
            .and_then(|s| convert::exec_process(s).map_err(|e| error(Code::INVALID_ARGUMENT, e)))?;
        spec.terminal = req.terminal;
        self.with(&req.id, |c| {
            spec.root = c.root.clone().unwrap_or_default();
            if c.init.exited().is_some() {
                return Err(error(
                    Code::FAILED_PRECONDITION,
                    format!("container {} is stopped; exec needs a running task", req.id),
                ));
            }
            if c.execs.contains_key(&req.exec_id) {
                return Err(error(
                    Code::ALREADY_EXISTS,
                    format!("exec {} already exists", req.exec_id),
                ));
            }
            c.execs.insert(
                req.exec_id.clone(),
                Proc::new(spec, stdio(&req.stdin, &req.stdout, &req.stderr)),
            );
            Ok(())
        })?;
        self.persist();
        let mut ev = TaskExecAdded::new();
        ev.container_id = req.id.clone();
        ev.exec_id = req.exec_id.clone();
        self.publish(topics::TASK_EXEC_ADDED_EVENT_TOPIC, ev).await;
        Ok(api::Empty::new())
    }

    async fn resize_pty(
        &self,
        _ctx: &TtrpcContext,
        req: api::ResizePtyRequest,
    ) -> TtrpcResult<api::Empty> {
        let Ok(id) = self.running_id(&req.id, &req.exec_id) else {
            // A process that already ended has no terminal to size.
            return Ok(api::Empty::new());
        };
        let r = self
            .processes()
            .await?
            .resize(v1::ResizeRequest {
                id,
                rows: req.height,
                cols: req.width,
            })
            .await;
        match r {
            Err(s) if s.code() != tonic::Code::FailedPrecondition => Err(ttrpc_error(s)),
            _ => Ok(api::Empty::new()),
        }
    }

    async fn close_io(
        &self,
        _ctx: &TtrpcContext,
        req: api::CloseIORequest,
    ) -> TtrpcResult<api::Empty> {
        if !req.stdin {
            return Ok(api::Empty::new());
        }
        let id = self.running_id(&req.id, &req.exec_id)?;
        self.processes()
            .await?
            .close_stdin(v1::ProcessRef { id })
            .await
            .map_err(ttrpc_error)?;
        Ok(api::Empty::new())
    }

    async fn update(
        &self,
        _ctx: &TtrpcContext,
        req: api::UpdateTaskRequest,
    ) -> TtrpcResult<api::Empty> {
        let resources: Value = req
            .resources
            .as_ref()
            .map(|r| serde_json::from_slice(&r.value))
            .transpose()
            .map_err(|e| {
                error(
                    Code::INVALID_ARGUMENT,
                    format!("resources are not OCI LinuxResources in JSON: {e}"),
                )
            })?
            .unwrap_or(Value::Null);
        // A pod's container: its own limits, and its new memory limit
        // changes the pod's total. As runc does, what the update leaves out
        // keeps its value.
        let member = self.with(&req.id, |c| {
            let Some(root) = c.root.clone() else {
                return Ok(None);
            };
            let merged = convert::merge_limits(&c.limits, &convert::root_limits(&resources));
            Ok(Some((c.zone.clone(), root, merged)))
        })?;
        if let Some((zone, name, merged)) = member {
            self.zones()
                .await?
                .update_root(v1::UpdateRootRequest {
                    zone: zone.clone(),
                    name,
                    limits: Some(merged.clone()),
                })
                .await
                .map_err(ttrpc_error)?;
            self.with(&req.id, |c| {
                c.limits = merged;
                Ok(())
            })?;
            self.persist();
            self.update_pod_memory(&zone).await;
            return Ok(api::Empty::new());
        }
        let zone = self.owner_zone(&req.id, "update")?;
        let mut zones = self.zones().await?;
        let current = zones
            .get(v1::ZoneRef { zone: zone.clone() })
            .await
            .map_err(ttrpc_error)?
            .into_inner();
        let text = current.policy.map(|p| p.toml).unwrap_or_default();
        let mut policy = rauha_spec::policy::Policy::parse("zone policy", &text)
            .map_err(|e| error(Code::INTERNAL, e.to_string()))?;
        convert::apply_resources(&mut policy.resources, &resources);
        zones
            .update_policy(v1::UpdatePolicyRequest {
                zone,
                policy: Some(v1::PolicySource {
                    source: Some(v1::policy_source::Source::Inline(v1::InlinePolicy {
                        file: "update".into(),
                        toml: policy.to_toml(),
                    })),
                }),
            })
            .await
            .map_err(ttrpc_error)?;
        Ok(api::Empty::new())
    }

    async fn wait(
        &self,
        _ctx: &TtrpcContext,
        req: api::WaitRequest,
    ) -> TtrpcResult<api::WaitResponse> {
        let mut rx = self.with(&req.id, |c| Ok(c.proc(&req.exec_id)?.exit.subscribe()))?;
        let exit = loop {
            if let Some(e) = *rx.borrow_and_update() {
                break e;
            }
            if rx.changed().await.is_err() {
                return Err(error(Code::NOT_FOUND, format!("{} was deleted", req.id)));
            }
        };
        let mut resp = api::WaitResponse::new();
        resp.exit_status = exit.status;
        resp.exited_at = Some(convert::timestamp(exit.at_ms)).into();
        Ok(resp)
    }

    async fn state(
        &self,
        _ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        self.with(&req.id, |c| {
            let p = c.proc(&req.exec_id)?;
            let mut resp = api::StateResponse::new();
            resp.id = req.id.clone();
            resp.exec_id = req.exec_id.clone();
            resp.bundle = c.bundle.display().to_string();
            resp.pid = p.pid;
            resp.status = p.status(c.paused).into();
            resp.stdin = p.stdio.stdin.clone();
            resp.stdout = p.stdio.stdout.clone();
            resp.stderr = p.stdio.stderr.clone();
            resp.terminal = p.spec.terminal;
            if let Some(e) = p.exited() {
                resp.exit_status = e.status;
                resp.exited_at = Some(convert::timestamp(e.at_ms)).into();
            }
            Ok(resp)
        })
    }

    async fn stats(
        &self,
        _ctx: &TtrpcContext,
        req: api::StatsRequest,
    ) -> TtrpcResult<api::StatsResponse> {
        let usage = self.usage_of(&req.id).await?;
        let mut resp = api::StatsResponse::new();
        resp.stats = Some(convert::metrics(&usage).map_err(|e| error(Code::INTERNAL, e))?).into();
        Ok(resp)
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        let task_pid = self.with(&req.id, |c| Ok(c.init.pid)).unwrap_or(0);
        let mut resp = api::ConnectResponse::new();
        resp.shim_pid = std::process::id();
        resp.task_pid = task_pid;
        resp.version = format!(
            "rauha {} ({})",
            env!("CARGO_PKG_VERSION"),
            self.inner.rauhad.addr()
        );
        Ok(resp)
    }

    async fn shutdown(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ShutdownRequest,
    ) -> TtrpcResult<api::Empty> {
        let empty = self
            .inner
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty();
        if empty {
            self.inner.exit.signal();
        }
        Ok(api::Empty::new())
    }
}

/// The state file's name, in the shim's directory.
const STATE_FILE: &str = "rauha-shim.json";

/// A process as saved for a restarted shim; rauhad's types as their
/// protobuf encoding, in hex.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedProc {
    spec: String,
    stdio: String,
    run_id: Option<String>,
    rauha_id: Option<String>,
    pid: u32,
    exit: Option<(u32, u64)>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SavedContainer {
    id: String,
    bundle: PathBuf,
    zone: String,
    owns_zone: bool,
    root: Option<String>,
    limits: String,
    oom_before: u64,
    paused: bool,
    init: SavedProc,
    execs: std::collections::BTreeMap<String, SavedProc>,
}

fn hex<M: prost::Message>(m: &M) -> String {
    m.encode_to_vec()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn unhex<M: prost::Message + Default>(s: &str) -> Result<M, String> {
    let bytes = (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
                .ok_or_else(|| format!("{s:?} is not hex"))
        })
        .collect::<Result<Vec<u8>, String>>()?;
    M::decode(bytes.as_slice()).map_err(|e| e.to_string())
}

impl SavedProc {
    fn of(p: &Proc) -> SavedProc {
        SavedProc {
            spec: hex(&p.spec),
            stdio: hex(&p.stdio),
            run_id: p.run_id.clone(),
            rauha_id: p.rauha_id.clone(),
            pid: p.pid,
            exit: p.exited().map(|e| (e.status, e.at_ms)),
        }
    }

    fn to_proc(&self) -> Result<Proc, String> {
        let mut p = Proc::new(unhex(&self.spec)?, unhex(&self.stdio)?);
        p.run_id = self.run_id.clone();
        p.rauha_id = self.rauha_id.clone();
        p.pid = self.pid;
        if let Some((status, at_ms)) = self.exit {
            p.exit.send_replace(Some(Exit { status, at_ms }));
        }
        Ok(p)
    }
}

impl SavedContainer {
    fn of(id: &str, c: &Container) -> SavedContainer {
        SavedContainer {
            id: id.to_string(),
            bundle: c.bundle.clone(),
            zone: c.zone.clone(),
            owns_zone: c.owns_zone,
            root: c.root.clone(),
            limits: hex(&c.limits),
            oom_before: c.oom_before,
            paused: c.paused,
            init: SavedProc::of(&c.init),
            execs: c
                .execs
                .iter()
                .map(|(k, p)| (k.clone(), SavedProc::of(p)))
                .collect(),
        }
    }

    fn to_container(&self) -> Result<Container, String> {
        Ok(Container {
            bundle: self.bundle.clone(),
            zone: self.zone.clone(),
            owns_zone: self.owns_zone,
            root: self.root.clone(),
            limits: unhex(&self.limits)?,
            oom_before: self.oom_before,
            paused: self.paused,
            init: self.init.to_proc()?,
            execs: self
                .execs
                .iter()
                .map(|(k, p)| Ok((k.clone(), p.to_proc()?)))
                .collect::<Result<_, String>>()?,
        })
    }
}

/// The zone id a shim saved for a container in `dir`'s state file: an
/// orphan names the zone by it, so that a later zone of the same name is
/// never taken for it.
pub fn saved_zone_id(dir: &Path, container_id: &str) -> Option<String> {
    let text = std::fs::read(dir.join(STATE_FILE)).ok()?;
    let saved: Vec<SavedContainer> = serde_json::from_slice(&text).ok()?;
    saved
        .into_iter()
        .find(|c| c.id == container_id)
        .map(|c| c.zone)
}

impl Service {
    /// Saves the containers' state for a shim started again after this
    /// one dies (written whole, then renamed over the last one).
    fn persist(&self) {
        let _one = self.inner.saving.lock().unwrap_or_else(|e| e.into_inner());
        let saved: Vec<SavedContainer> = self
            .inner
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(id, c)| SavedContainer::of(id, c))
            .collect();
        let path = &self.inner.state_file;
        let tmp = path.with_extension("json.tmp");
        let r = serde_json::to_vec(&saved)
            .map_err(std::io::Error::other)
            .and_then(|text| std::fs::write(&tmp, text))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = r {
            log::warn!(
                "cannot save the pod's state to {}: {e}; a restarted shim would not find it",
                path.display()
            );
        }
    }

    /// A shim started again by rauhad's keeper: takes the containers back
    /// from the state file, holds the running processes' output FIFOs
    /// again and waits for their ends (a process that ended meanwhile is
    /// reported now).
    pub async fn restore(&self) -> Result<(), String> {
        let path = &self.inner.state_file;
        let saved: Vec<SavedContainer> = match std::fs::read(path) {
            Ok(text) => serde_json::from_slice(&text)
                .map_err(|e| format!("{} is not a saved pod state: {e}", path.display()))?,
            // The shim died before its first container was made.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let mut watch = Vec::new();
        {
            let mut all = self
                .inner
                .containers
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for s in &saved {
                let mut c = s
                    .to_container()
                    .map_err(|e| format!("container {} in {}: {e}", s.id, path.display()))?;
                for (exec_id, p) in std::iter::once((String::new(), &mut c.init))
                    .chain(c.execs.iter_mut().map(|(k, p)| (k.clone(), p)))
                {
                    if let (Some(rid), None) = (&p.rauha_id, p.exited()) {
                        p.held = hold_outputs(&p.stdio);
                        watch.push((s.id.clone(), exec_id, rid.clone(), p.pid));
                    }
                }
                all.insert(s.id.clone(), c);
            }
        }
        log::info!(
            "found {} containers again, {} processes running",
            saved.len(),
            watch.len()
        );
        for (id, exec_id, rid, pid) in watch {
            self.watch_exit(id, exec_id, rid, pid);
        }
        Ok(())
    }

    /// rauhad's id of a running process of the container.
    fn running_id(&self, id: &str, exec_id: &str) -> TtrpcResult<String> {
        self.with(id, |c| {
            let p = c.proc(exec_id)?;
            match (&p.rauha_id, p.exited()) {
                (Some(r), None) => Ok(r.clone()),
                _ => Err(error(
                    Code::FAILED_PRECONDITION,
                    format!(
                        "process {} is not running",
                        if exec_id.is_empty() { id } else { exec_id }
                    ),
                )),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use containerd_shim::protos::protobuf::MessageFull;

    use super::*;

    /// The hand-built type URLs are the ones rust-protobuf's reflection
    /// gives (which the shim avoids at run time for its memory).
    #[test]
    fn event_type_urls_are_the_full_names() {
        fn check<E: MessageFull>() {
            assert_eq!(event_type_url::<E>(), E::descriptor().full_name());
        }
        check::<TaskCreate>();
        check::<TaskStart>();
        check::<TaskExit>();
        check::<TaskOOM>();
        check::<TaskExecAdded>();
        check::<TaskExecStarted>();
        check::<TaskPaused>();
        check::<TaskResumed>();
        check::<TaskDelete>();
    }
}
