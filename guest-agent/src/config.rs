//! What the host tells the agent when it starts a zone: where the zone's
//! root comes from, its hostname and network, the cgroups to join, and the
//! hardening applied to every process it starts.

use serde::{Deserialize, Serialize};

/// Where the host's container roots appear inside a zone: a process started
/// with `root = NAME` runs in `CONTAINERS_DIR/NAME/rootfs`.
pub const CONTAINERS_DIR: &str = "/.rauha/containers";

/// Whether a container root's name is safe as one path component.
pub fn valid_root_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The whole set-up of one zone, sent once on the agent's stdin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneConfig {
    pub zone_id: String,
    pub hostname: String,
    /// Host directory for the zone's socket and root mount point.
    pub state_dir: String,
    /// `cgroup.procs` files (host paths) the agent joins before unsharing.
    pub cgroup_procs: Vec<String>,
    /// A `cgroup.procs` (host path) the agent moves to once it unshared
    /// (its cgroup namespace stays rooted at the zone's cgroup): on cgroup
    /// v2, a leaf of its own, which leaves the zone's cgroup free to hand
    /// controllers down.
    #[serde(default)]
    pub agent_cgroup_procs: Option<String>,
    /// The work cgroup's `cgroup.procs` (host path): every started process
    /// moves there, so that freezing the work leaves the agent running.
    pub work_cgroup_procs: Option<String>,
    /// Directories (host paths, one per hierarchy) in which rauhad makes a
    /// container root's own cgroup, `DIR/NAME`: a process of that root
    /// joins it instead of the work cgroup.
    #[serde(default)]
    pub container_cgroups: Vec<String>,
    pub root: RootConfig,
    /// Bring loopback up in the zone's network namespace.
    pub loopback: bool,
    /// Join this network namespace (a path on nsfs) instead of a new one.
    pub netns: Option<String>,
    /// A host file shown read-only at the zone's `/etc/resolv.conf` (a
    /// bridged zone's: rauhad's resolver), where the root has that file.
    #[serde(default)]
    pub resolv_conf: Option<String>,
    /// Stay in the host's IPC namespace instead of a new one (a
    /// privileged pod's `hostIPC`).
    #[serde(default)]
    pub host_ipc: bool,
    /// Stay in the host's PID namespace instead of a new one (a
    /// privileged pod's `hostPID`): the agent is not the zone's PID 1.
    #[serde(default)]
    pub host_pid: bool,
    /// A host directory shown in the zone through a copy-on-write overlay.
    pub workspace: Option<WorkspaceMount>,
    /// A host directory, a shared mount, shown at `/.rauha/containers` as
    /// its slave: the root filesystems the host prepares there for the
    /// zone's containers appear in the zone (see `CONTAINERS_DIR`).
    #[serde(default)]
    pub containers_dir: Option<String>,
    /// Run the zone's processes in a user namespace mapping its ids
    /// 0-65535 to host ids from this one on (uid and gid alike).
    #[serde(default)]
    pub user_namespace: Option<u32>,
    /// Sysctls (`net.ipv4.ip_forward`) set in the zone's namespaces.
    #[serde(default)]
    pub sysctls: Vec<(String, String)>,
    pub hardening: Hardening,
}

/// An overlay: `lower` (the repository, never written) under `upper` (the
/// zone's changes), mounted at `target` inside the zone. All host paths but
/// `target`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceMount {
    pub lower: String,
    pub upper: String,
    pub work: String,
    pub target: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RootConfig {
    /// Read-only binds of host paths, a private `/tmp`, writable binds.
    HostView {
        readable: Vec<String>,
        writable: Vec<String>,
        denied: Vec<String>,
    },
    /// An OCI bundle's root filesystem (host path), with writable and
    /// denied paths inside it.
    Rootfs {
        path: String,
        readonly: bool,
        writable: Vec<String>,
        denied: Vec<String>,
    },
    /// An image: its unpacked layers (host paths, bottom first, never
    /// written) under the `upper` and `work` directories of `dir`, the
    /// zone's own disk-limited filesystem. The agent mounts the overlay,
    /// each layer bound at `dir/lower/N` (idmapped when the zone has a
    /// user namespace: overlayfs takes idmapped layers, not an idmapped
    /// overlay).
    Overlay {
        layers: Vec<String>,
        dir: String,
        writable: Vec<String>,
        denied: Vec<String>,
    },
}

/// Applied to each process between fork and exec.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Hardening {
    /// Capability numbers kept; every other capability is dropped.
    pub capabilities: Vec<u32>,
    /// System call numbers that fail with EPERM.
    pub deny_syscalls: Vec<u32>,
    /// Landlock: paths (inside the zone) readable and executable.
    pub landlock_read: Vec<String>,
    /// Landlock: paths (inside the zone) fully writable.
    pub landlock_write: Vec<String>,
}

/// The agent's line on stdout once the zone is up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    /// Landlock ABI version in force for new processes; 0 when absent.
    pub landlock_abi: u32,
    /// Whether the seccomp filter is installed for new processes.
    pub seccomp: bool,
    /// Detail for layers that could not be applied.
    pub notes: Vec<String>,
    /// The host uid (and gid) the zone's root maps to, when its processes
    /// run in a user namespace of their own.
    #[serde(default)]
    pub user_namespace: Option<u32>,
}
