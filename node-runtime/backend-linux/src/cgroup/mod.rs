//! cgroups for zones, on a unified (v2) host and on a v1 or hybrid host.
//!
//! Every zone gets `<parent>/<zone-id>`: one directory in the unified
//! hierarchy ([`v2::V2Cgroups`]), or one per controller (memory, pids, cpu,
//! cpuacct, freezer) in v1 ([`v1::V1Cgroups`]). [`open`] picks the manager
//! for the host; both sit behind [`CgroupDriver`], so nothing above them
//! branches on the version. What each controller's files mean is in one
//! file per controller (`memory`, `pids`, `cpu`, `freezer`), and what both
//! versions do to a tree of cgroups (kill, remove, list pids) in
//! `hierarchy`. The cgroup root is a parameter, so tests run against a
//! temp dir (as youki's libcgroups tests do).
//!
//! The managers write cgroupfs themselves rather than through `cgroups-rs`:
//! a hybrid host's controller-less unified mount (the cgroup ids BPF keys
//! on), `cgroup.kill`, the v1 freezer's retry while tasks fork, and the
//! containers' own cgroups under a zone's `work` are each a few lines here
//! and outside what that crate's managers model (docs/dev/architecture.md).

mod cpu;
pub mod files;
mod freezer;
mod hierarchy;
pub mod made;
mod memory;
mod pids;
#[cfg(test)]
mod recording;
pub mod v1;
pub mod v2;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rauha_backend::{RootLimits, Usage};
use rauha_spec::policy::ResourcesSection;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no usable cgroup hierarchy under {root}: neither cgroup.controllers (v2) nor a v1 memory controller")]
    NoHierarchy { root: String },
    #[error("cgroup {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("cgroup {path} still has processes after {waited_ms} ms")]
    Busy { path: String, waited_ms: u128 },
    #[error("cgroup {path} did not reach the {state} state within {waited_ms} ms")]
    Freeze {
        path: String,
        state: &'static str,
        waited_ms: u128,
    },
    #[error("this host has no cgroup freezer (v1 freezer controller or v2 cgroup.freeze); zones cannot be paused")]
    NoFreezer,
    #[error("unified (cgroup v2) resources {keys:?} need a cgroup v2 host; this one runs the v1 controllers")]
    UnifiedOnV1 { keys: Vec<String> },
    #[error("container root name {name:?} is the name of a cgroup file ({path}); give the container another name")]
    NameTaken { name: String, path: String },
}

impl From<CgroupError> for rauha_backend::BackendError {
    fn from(e: CgroupError) -> Self {
        use rauha_backend::FailureKind;
        let kind = match &e {
            CgroupError::UnifiedOnV1 { .. } => FailureKind::Unsupported,
            CgroupError::NameTaken { .. } => FailureKind::InvalidInput,
            _ => FailureKind::Node,
        };
        rauha_backend::BackendError::Resources {
            layer: "cgroup",
            kind,
            source: Box::new(e),
        }
    }
}

/// A cgroup's use, from what each controller's files said; `pids`: the
/// current count and the limit.
fn usage(mem: memory::MemoryUse, cpu: cpu::CpuUse, pids: (u64, u64)) -> Usage {
    Usage {
        memory_bytes: mem.current,
        memory_limit_bytes: mem.limit,
        peak_memory_bytes: mem.peak,
        cpu_time_us: cpu.total_us,
        pids: pids.0,
        pids_max: pids.1,
        oom_kills: mem.oom_kills,
        cpu_user_us: cpu.user_us,
        cpu_system_us: cpu.system_us,
        cpu_periods: cpu.periods,
        cpu_throttled_periods: cpu.throttled_periods,
        cpu_throttled_us: cpu.throttled_us,
        memory_rss_bytes: mem.rss,
        memory_cache_bytes: mem.cache,
        memory_mapped_file_bytes: mem.mapped_file,
        memory_kernel_bytes: mem.kernel,
        memory_swap_bytes: mem.swap,
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A zone's cgroup: where its agent joins, and where the agent puts the
/// work it starts (a child cgroup, so pausing the work leaves the agent
/// able to answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneCgroup {
    /// `cgroup.procs` files the agent writes its pid to.
    pub join: Vec<PathBuf>,
    /// v2: the `cgroup.procs` of the agent's own leaf, which it moves to
    /// once it made its cgroup namespace.
    pub agent_procs: Option<PathBuf>,
    /// The work child's `cgroup.procs` (in the freezer hierarchy on v1).
    pub work_procs: Option<PathBuf>,
    /// Where containers' own cgroups are made (`DIR/NAME`), one per
    /// hierarchy.
    pub containers: Vec<PathBuf>,
}

const WORK: &str = "work";
/// The CPU quota's period, in microseconds.
const PERIOD_US: u64 = 100_000;

/// What the daemon needs from cgroups: [`v1::V1Cgroups`] or
/// [`v2::V2Cgroups`], chosen by [`open`].
pub trait CgroupDriver: Send + Sync {
    /// `"v2"` or `"v1"`, for reports.
    fn layout(&self) -> &'static str;
    /// Creates the zone's cgroup with limits; returns the `cgroup.procs`
    /// files a process writes its pid to in order to join it.
    fn create(&self, zone: &str, limits: &ResourcesSection) -> Result<ZoneCgroup, CgroupError>;
    /// Once the zone's agent left the zone's cgroup for its leaf (v2):
    /// enables the controllers below the zone and its work, so that
    /// containers can have limits of their own. Nothing on v1.
    fn delegate(&self, zone: &str) -> Result<(), CgroupError>;
    /// Freezes or thaws the zone's work (not its agent), and waits until
    /// the kernel reports the new state.
    fn set_frozen(&self, zone: &str, frozen: bool) -> Result<(), CgroupError>;
    fn set_limits(&self, zone: &str, limits: &ResourcesSection) -> Result<(), CgroupError>;
    fn usage(&self, zone: &str) -> Result<Usage, CgroupError>;
    /// The file operations the manager makes.
    fn files(&self) -> &dyn files::CgroupFiles;
    /// A container root's own directories (`work/NAME`, one per
    /// hierarchy); none when the zone gives containers no cgroups of
    /// their own (a zone made before they had them).
    fn root_dirs(&self, zone: &str, name: &str) -> Vec<PathBuf>;
    /// A container root's own cgroup in the zone, with its limits.
    /// `false`: this zone gives containers none, and they share the zone's.
    fn create_root(
        &self,
        zone: &str,
        name: &str,
        limits: &RootLimits,
    ) -> Result<bool, CgroupError> {
        let dirs = self.root_dirs(zone, name);
        if dirs.is_empty() {
            return Ok(false);
        }
        let made = make_root_dirs(self.files(), &dirs, name)
            .and_then(|()| self.set_root_limits(zone, name, limits));
        if made.is_err() {
            let _ = self.remove_root(zone, name);
        }
        made
    }
    /// `false`: the container has no cgroup of its own (see `create_root`).
    fn set_root_limits(
        &self,
        zone: &str,
        name: &str,
        limits: &RootLimits,
    ) -> Result<bool, CgroupError>;
    /// A container root's use: its own cgroup's, or the zone's where it
    /// has none.
    fn root_usage(&self, zone: &str, name: &str) -> Result<Usage, CgroupError> {
        if self.root_dirs(zone, name).is_empty() {
            return self.usage(zone);
        }
        self.usage(&root_key(zone, name))
    }
    /// Kills what is left in a container root's cgroup and removes it.
    fn remove_root(&self, zone: &str, name: &str) -> Result<(), CgroupError> {
        hierarchy::kill_and_remove(self.files(), &self.root_dirs(zone, name), |_| {})
    }
    /// Host pids in the zone's cgroup and the cgroups below it.
    fn pids(&self, zone: &str) -> Result<Vec<u32>, CgroupError>;
    /// Kills every process of the zone's cgroup and removes it.
    fn remove(&self, zone: &str) -> Result<(), CgroupError>;
    /// Names of the zone cgroups under the parent.
    fn list(&self) -> Result<Vec<String>, CgroupError>;
    /// The zone's cgroup ids in the unified (v2) hierarchy, which is what
    /// BPF programs see; empty when the host has no unified hierarchy.
    fn unified_ids(&self, zone: &str) -> Vec<u64>;
    /// The zone's directory in the unified (v2) hierarchy, if there is one.
    fn unified_dir(&self, zone: &str) -> Option<PathBuf>;
    /// The parent directory in the unified hierarchy, where cgroup-BPF
    /// programs attach to cover every zone.
    fn unified_parent(&self) -> Option<PathBuf>;
    /// The zone's directory in each hierarchy.
    fn zone_dirs(&self, zone: &str) -> Vec<PathBuf>;
}

/// The cgroup manager for the hierarchy mounted at `root` (normally
/// `/sys/fs/cgroup`), with rauhad's `parent` cgroup prepared in it.
pub fn open(root: &Path, parent: &str) -> Result<Arc<dyn CgroupDriver>, CgroupError> {
    open_with(root, parent, Arc::new(files::HostFiles))
}

/// [`open`], making its file operations through `fs`.
pub fn open_with(
    root: &Path,
    parent: &str,
    fs: Arc<dyn files::CgroupFiles>,
) -> Result<Arc<dyn CgroupDriver>, CgroupError> {
    if fs.exists(&root.join("cgroup.controllers")) {
        Ok(Arc::new(v2::V2Cgroups::new(root, parent, fs)?))
    } else if fs.exists(&root.join("memory").join("cgroup.procs")) {
        Ok(Arc::new(v1::V1Cgroups::new(root, parent, fs)?))
    } else {
        Err(CgroupError::NoHierarchy {
            root: root.display().to_string(),
        })
    }
}

/// A zone's cgroup below a hierarchy's root: `parent/ZONE`, or the key
/// itself when it is a path from the root (`/kubepods/.../ZONE`).
fn rel(parent: &str, zone: &str) -> PathBuf {
    match zone.strip_prefix('/') {
        Some(from_root) => PathBuf::from(from_root),
        None => Path::new(parent).join(zone),
    }
}

/// A container root's own cgroup, as a zone key (a path below the zone).
fn root_key(zone: &str, name: &str) -> String {
    format!("{zone}/{WORK}/{name}")
}

/// The names of the directories in `base` (none when it is missing), added
/// to `names` once each.
fn names_in(
    fs: &dyn files::CgroupFiles,
    base: &Path,
    names: &mut Vec<String>,
) -> Result<(), CgroupError> {
    let dirs = match fs.subdirs(base) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(base)(e)),
    };
    for d in dirs {
        let name = d
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !names.contains(&name) {
            names.push(name);
        }
    }
    Ok(())
}

/// The cgroup ids of `dir` and every cgroup below it: a cgroup2
/// directory's inode number is its id (the zone's, its agent's, its
/// work's and each container's), which is what BPF programs see.
fn ids_below(fs: &dyn files::CgroupFiles, dir: Option<PathBuf>) -> Vec<u64> {
    let Some(dir) = dir else {
        return Vec::new();
    };
    hierarchy::tree(fs, &[dir])
        .iter()
        .filter_map(|d| fs.ino(d))
        .collect()
}

/// Makes a container root's directories (one per hierarchy); a name that
/// is a cgroup file's (`tasks`, `cgroup.procs`) is refused.
fn make_root_dirs(
    fs: &dyn files::CgroupFiles,
    dirs: &[PathBuf],
    name: &str,
) -> Result<(), CgroupError> {
    for d in dirs {
        match fs.create_dir(d) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && fs.is_dir(d) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(CgroupError::NameTaken {
                    name: name.to_string(),
                    path: d.display().to_string(),
                })
            }
            other => other.map_err(io_err(d))?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
