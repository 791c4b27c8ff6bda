//! `rauha-backend`: the `IsolationBackend` trait. Everything
//! platform-specific about a zone sits behind it, so the registry and the
//! API above never know which OS (or which kind of boundary: namespaces, a
//! VM) they run on.
//!
//! This crate holds the trait, what crosses it (the zone's set-up, its
//! handle, usage, checks, denials) and an OS-neutral [`BackendError`]. It
//! must not name a platform: a backend lives in a crate of its own
//! (`rauha-backend-linux`) and only the daemon's `main` constructs one.
//! The trait is dyn-compatible, so a node can hold zones of different
//! backends side by side (`Arc<dyn IsolationBackend>`). With the `testing`
//! feature, [`fake::FakeBackend`] runs zones in memory for unit tests.

#[cfg(any(test, feature = "testing"))]
pub mod fake;

use std::path::{Path, PathBuf};

use rauha_guest_agent::config::{Hardening, Ready};
use rauha_spec::enforcement::{Enforcement, LayerStatus};
use rauha_spec::policy::ResourcesSection;
use rauha_spec::{Policy, RootSpec, WorkspaceSpec};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use uuid::Uuid;

/// The byte stream to a zone's agent (a Unix socket, a vsock, an in-memory
/// pipe in tests).
pub trait AgentStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> AgentStream for T {}

/// What a zone is made from, as the backend needs it.
#[derive(Debug, Clone)]
pub struct ZoneSetup {
    pub id: Uuid,
    pub name: String,
    pub policy: Policy,
    pub root: RootSpec,
    pub workspace: Option<WorkspaceSpec>,
    /// A network namespace to join instead of a new one.
    pub netns: Option<String>,
    /// A host file to show at the zone's `/etc/resolv.conf`.
    pub resolv_conf: Option<String>,
    /// A cgroup path (from the hierarchy's root) to create the zone's in.
    pub cgroup_parent: Option<String>,
}

/// How to find a live zone again, persisted with its record so a restarted
/// daemon can re-adopt it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneHandle {
    pub zone_id: Uuid,
    /// Host pid of the zone agent (PID 1 inside the zone).
    pub agent_pid: u32,
    /// The agent's start time in clock ticks since boot (from
    /// `/proc/<pid>/stat`), to tell it from a later process with its pid.
    pub agent_start_ticks: u64,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    /// The layers the agent applies to each process it starts.
    pub ready: Ready,
    /// The zone's index in the BPF maps; 0 when it has none.
    #[serde(default)]
    pub bpf_zone: u32,
    /// The zone's cgroup, from the hierarchy's root, when it is not under
    /// rauhad's own parent.
    #[serde(default)]
    pub cgroup: Option<String>,
}

/// A live zone as the enforcement layers need it.
#[derive(Debug, Clone, Copy)]
pub struct EnforceZone<'a> {
    pub id: Uuid,
    pub name: &'a str,
    pub policy: &'a Policy,
    pub handle: &'a ZoneHandle,
}

/// A denial by a kernel enforcement layer, as the programs reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The caller's zone index (see [`ZoneHandle::bpf_zone`]).
    pub zone: u32,
    pub pid: u32,
    pub hook: String,
    pub target: String,
    /// The zone on the other side, 0 if none.
    pub target_zone: u32,
    pub errno: i32,
    pub comm: String,
}

/// A container root's own limits: the kinds a policy has, and cgroup v2
/// files by name (an OCI spec's `linux.resources.unified`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RootLimits {
    pub resources: ResourcesSection,
    pub unified: std::collections::BTreeMap<String, String>,
}

/// Resource use of a zone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    pub peak_memory_bytes: u64,
    pub cpu_time_us: u64,
    pub pids: u64,
    pub pids_max: u64,
    pub oom_kills: u64,
    /// Of `cpu_time_us`, in user and in kernel mode.
    pub cpu_user_us: u64,
    pub cpu_system_us: u64,
    /// CFS bandwidth control: periods that elapsed under a quota, those
    /// the cgroup was throttled in, and the time it was throttled.
    pub cpu_periods: u64,
    pub cpu_throttled_periods: u64,
    pub cpu_throttled_us: u64,
    /// Of `memory_bytes`: anonymous memory, page cache, mapped files and
    /// the kernel's; and swap used (beyond `memory_bytes`).
    pub memory_rss_bytes: u64,
    pub memory_cache_bytes: u64,
    pub memory_mapped_file_bytes: u64,
    pub memory_kernel_bytes: u64,
    pub memory_swap_bytes: u64,
}

/// One line of `zone verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The zone's agent could not set the zone up; `reason` is its own
    /// one-line report.
    #[error("zone set-up failed: {reason}")]
    AgentRefused { reason: String },
    /// The agent ended before it said it was ready; `log` is the last line
    /// of its log.
    #[error("zone set-up failed: the zone agent exited during set-up ({log})")]
    AgentExited { log: String },
    #[error("zone set-up failed: the zone agent was not ready within {secs}s")]
    AgentNotReady { secs: u64 },
    #[error("zone set-up failed: the zone agent ended right after set-up")]
    AgentGone,
    /// The start-up exchange with the agent broke.
    #[error("zone agent: {what}: {source}")]
    Handshake {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The agent's answer lacked something it must hold.
    #[error("zone agent: {0}")]
    Incomplete(&'static str),
    #[error("zone agent: cannot connect to {}: {source}", socket.display())]
    Connect {
        socket: PathBuf,
        source: std::io::Error,
    },
    /// Work moved off the async runtime ended without an answer.
    #[error("{what}: {source}")]
    Task {
        what: &'static str,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A failure, and the cleanup after it that failed too.
    #[error("{primary}; cleaning up after it also failed: {cleanup}")]
    Cleanup {
        primary: Box<BackendError>,
        cleanup: Box<BackendError>,
    },
    #[error(
        "zone set-up failed: this zone has no container roots: only zones made from a bundle do"
    )]
    NoContainerRoots,
    #[error("zone set-up failed: container root {0} already exists in the zone")]
    RootExists(String),
    /// Something at a container root's place that Rauha did not make.
    #[error("zone set-up failed: {} is not a container root directory; not removing it", .0.display())]
    NotARoot(PathBuf),
    #[error("zone set-up failed: container root {name}: {} still mounted; not removing its directory", mount.display())]
    StillMounted { name: String, mount: PathBuf },
    /// The kernel enforcement layer (the BPF maps) refused an update.
    #[error("zone set-up failed: {what}: {source}")]
    Enforcement {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The zone's resource controls (cgroups on Linux) failed; `kind`
    /// says whose fault it is.
    #[error("{layer}: {source}")]
    Resources {
        /// Which control, for the message (`cgroup`).
        layer: &'static str,
        kind: FailureKind,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("bundle {path}: {message}")]
    Bundle { path: String, message: String },
    /// A container root's mount (`mounts[index]`) that this backend
    /// cannot make as asked: the caller's to fix.
    #[error("mounts[{index}]: {message}")]
    BadMount { index: usize, message: String },
    #[error("container root {0:?} is not in this zone; it is added with AddRoot when its container is created")]
    NoRoot(String),
    /// A policy this backend cannot enforce as written.
    #[error("{0}")]
    Policy(Box<dyn std::error::Error + Send + Sync>),
}

/// Whose fault a backend failure is, for the caller's error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The node's: the kernel or the host refused.
    Node,
    /// The request asks for what this node cannot do (valid elsewhere).
    Unsupported,
    /// The request itself is wrong (a name the backend cannot take).
    InvalidInput,
}

/// How a container root's image is shown.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RootFlags {
    /// Read-only (OCI `root.readonly`); its mounts keep their own.
    pub readonly: bool,
    /// Set-id bits of its files take effect (a pod policy that lets a
    /// setuid binary raise its privileges); otherwise the image is `nosuid`.
    pub setuid: bool,
    /// Paths (in the container) hidden: OCI `linux.maskedPaths`.
    pub masked_paths: Vec<PathBuf>,
    /// Paths (in the container) made read-only: OCI `linux.readonlyPaths`.
    pub readonly_paths: Vec<PathBuf>,
    /// Its processes in a PID namespace of their own, not the zone's.
    pub own_pid_namespace: bool,
    /// Device nodes its spec gives it (OCI `linux.devices`), beyond the
    /// standard ones every container's /dev holds.
    pub devices: Vec<RootDevice>,
    /// An image's unpacked layers (bottom first): when set, the root is an
    /// overlay of them under a writable layer of its own (removed with the
    /// root), and the `rootfs` path given with these flags is not used.
    pub image_layers: Vec<rauha_spec::ImageLayer>,
}

/// A device node of a container root: where it appears (under /dev), its
/// type (`c`, `b` or `p`), numbers, mode and owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootDevice {
    pub path: PathBuf,
    pub kind: char,
    pub major: u32,
    pub minor: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// A mount of a container root: bind (a host source) or tmpfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootMount {
    pub destination: PathBuf,
    pub kind: String,
    pub source: PathBuf,
    pub options: Vec<String>,
}

#[async_trait::async_trait]
pub trait IsolationBackend: Send + Sync + 'static {
    fn name(&self) -> &'static str;

    /// The cgroup layout or boundary kind, for reports.
    fn layout(&self) -> &'static str;

    /// Which enforcement layers this node can apply at all.
    fn node_layers(&self) -> Vec<LayerStatus>;

    /// Refuses a policy this backend cannot hold (e.g. more rules than its
    /// kernel maps take), before anything is built.
    fn check_policy(&self, policy: &Policy) -> Result<(), BackendError>;

    /// Builds the zone's kernel objects and starts its agent.
    async fn create_zone(&self, setup: &ZoneSetup) -> Result<ZoneHandle, BackendError>;

    /// Kills everything in the zone and removes its kernel objects; works
    /// on half-made zones (no handle) too.
    async fn destroy_zone(
        &self,
        zone_id: Uuid,
        handle: Option<&ZoneHandle>,
    ) -> Result<(), BackendError>;

    /// Whether the zone's agent is the same live process the handle names.
    fn is_alive(&self, handle: &ZoneHandle) -> bool;

    /// A new connection to the zone's agent.
    async fn connect(&self, handle: &ZoneHandle) -> Result<Box<dyn AgentStream>, BackendError>;

    /// Applies a new policy's limits to a running zone.
    fn update_limits(&self, zone_id: Uuid, policy: &Policy) -> Result<(), BackendError>;

    /// The per-process hardening a policy asks for on this backend.
    fn hardening(
        &self,
        policy: &Policy,
        root: &RootSpec,
        workspace: Option<&WorkspaceSpec>,
    ) -> Hardening;

    /// Where a zone's workspace changes (the overlay's upper layer) are.
    fn workspace_upper(&self, zone_id: Uuid) -> PathBuf;

    /// Freezes (pauses) or thaws (resumes) every process a zone runs.
    fn set_paused(&self, zone_id: Uuid, paused: bool) -> Result<(), BackendError>;

    fn usage(&self, zone_id: Uuid) -> Result<Usage, BackendError>;

    /// The host's pid of a zone process known by its pid inside the zone.
    fn host_pid(&self, zone_id: Uuid, zone_pid: u32) -> Option<u32>;

    /// Prepares a container root in a bundle zone: `rootfs` (a host
    /// directory) with a fresh /dev and `mounts`, for processes started
    /// with `root = name`, and the container's own cgroup with `limits`.
    /// Returns whether the container got a cgroup of its own (see
    /// `CgroupDriver::create_root`). `zone`: the live zone's handle (its
    /// agent holds the namespaces the root is made in).
    fn add_root(
        &self,
        zone: &ZoneHandle,
        name: &str,
        rootfs: &Path,
        flags: &RootFlags,
        mounts: &[RootMount],
        limits: &RootLimits,
    ) -> Result<bool, BackendError>;

    /// Whether a container root's own cgroup is in the unified hierarchy,
    /// so that it is a cgroup id the BPF layers must learn.
    fn root_cgroups_are_unified(&self) -> bool;

    /// Sets a container root's own limits; `false` when it has no cgroup
    /// of its own to hold them.
    fn set_root_limits(
        &self,
        zone_id: Uuid,
        name: &str,
        limits: &RootLimits,
    ) -> Result<bool, BackendError>;

    /// A container root's use: its own cgroup's, or the zone's where it
    /// has none.
    fn root_usage(&self, zone_id: Uuid, name: &str) -> Result<Usage, BackendError>;

    /// Unmounts and removes a container root and its cgroup; nothing when
    /// it is absent. `live`: the zone's handle while its agent runs.
    fn remove_root(
        &self,
        zone_id: Uuid,
        live: Option<&ZoneHandle>,
        name: &str,
    ) -> Result<(), BackendError>;

    /// The enforcement really in force in a zone.
    fn zone_enforcement(&self, handle: &ZoneHandle, policy: &Policy) -> Enforcement;

    /// Observed facts about a live zone: namespaces, limits, hardening.
    fn verify(&self, handle: &ZoneHandle, policy: &Policy) -> Vec<Check>;

    /// Removes kernel state no known zone owns; returns what it removed.
    fn cleanup_orphans(&self, known: &[Uuid]) -> Result<Vec<String>, BackendError>;

    /// Makes the kernel enforcement layers hold exactly these live zones
    /// (their cgroups, rules and the pairs allowed to reach each other).
    fn enforce(&self, zones: &[EnforceZone<'_>]) -> Result<(), BackendError>;

    /// Denials reported since the last call.
    fn denials(&self) -> Vec<Denial>;
}
