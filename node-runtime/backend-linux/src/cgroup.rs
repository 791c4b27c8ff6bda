//! cgroups for zones, on a unified (v2) host and on a v1 or hybrid host.
//!
//! Every zone gets `<parent>/<zone-id>`: one directory in the unified
//! hierarchy, or one per controller (memory, pids, cpu, cpuacct, freezer) in
//! v1. The cgroup root is a parameter so tests run against a temp dir.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rauha_spec::policy::ResourcesSection;

use rauha_backend::{RootLimits, Usage};

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
/// v2: the zone agent's leaf, and the leaf in `work` for the work outside
/// containers (a name no container root can have).
const AGENT: &str = "agent";
const ZONE_WORK: &str = "@zone";

/// The file to write, its value, the file that reports the state, and the
/// test that the state was reached.
type FreezeSteps<'a> = (&'a str, &'a str, &'a str, &'a dyn Fn(&str) -> bool);

/// What the daemon needs from cgroups; the real one is [`CgroupFs`].
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
    /// A container root's own cgroup in the zone (`work/NAME`), with its
    /// limits. `false`: this zone gives containers none (a v2 zone made
    /// before they had them), and they share the zone's.
    fn create_root(&self, zone: &str, name: &str, limits: &RootLimits)
        -> Result<bool, CgroupError>;
    /// `false`: the container has no cgroup of its own (see `create_root`).
    fn set_root_limits(
        &self,
        zone: &str,
        name: &str,
        limits: &RootLimits,
    ) -> Result<bool, CgroupError>;
    /// A container root's use, from its own cgroup.
    fn root_usage(&self, zone: &str, name: &str) -> Result<Usage, CgroupError>;
    /// Kills what is left in a container root's cgroup and removes it.
    fn remove_root(&self, zone: &str, name: &str) -> Result<(), CgroupError>;
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// cgroupfs under a root (normally `/sys/fs/cgroup`).
pub struct CgroupFs {
    root: PathBuf,
    parent: String,
    version: Version,
    /// v1: the controller directories in use, e.g. `memory`, `cpu,cpuacct`.
    controllers: Vec<String>,
}

const V1_CONTROLLERS: &[&[&str]] = &[
    &["memory"],
    &["pids"],
    &["cpu", "cpu,cpuacct"],
    &["cpuacct", "cpu,cpuacct"],
    &["freezer"],
    // The controller-less cgroup2 mount of a hybrid host: no limits, but it
    // gives each zone a cgroup id the BPF programs key on.
    &["unified"],
];
const V2_CONTROLLERS: &str = "+memory +pids +cpu";
const PERIOD_US: u64 = 100_000;

impl CgroupFs {
    pub fn new(root: &Path, parent: &str) -> Result<CgroupFs, CgroupError> {
        let version = if root.join("cgroup.controllers").exists() {
            Version::V2
        } else if root.join("memory").join("cgroup.procs").exists() {
            Version::V1
        } else {
            return Err(CgroupError::NoHierarchy {
                root: root.display().to_string(),
            });
        };
        let mut controllers = Vec::new();
        if version == Version::V1 {
            for choices in V1_CONTROLLERS {
                if let Some(dir) = choices
                    .iter()
                    .find(|c| root.join(c).join("cgroup.procs").exists())
                {
                    if !controllers.iter().any(|c: &String| c == dir) {
                        controllers.push(dir.to_string());
                    }
                }
            }
        }
        let fs = CgroupFs {
            root: root.to_path_buf(),
            parent: parent.to_string(),
            version,
            controllers,
        };
        fs.prepare_parent()?;
        Ok(fs)
    }

    fn prepare_parent(&self) -> Result<(), CgroupError> {
        match self.version {
            Version::V2 => {
                let parent = self.root.join(&self.parent);
                std::fs::create_dir_all(&parent).map_err(io_err(&parent))?;
                let _ = std::fs::write(self.root.join("cgroup.subtree_control"), V2_CONTROLLERS);
                let ctl = parent.join("cgroup.subtree_control");
                std::fs::write(&ctl, V2_CONTROLLERS).map_err(io_err(&ctl))?;
            }
            Version::V1 => {
                for c in &self.controllers {
                    let dir = self.root.join(c).join(&self.parent);
                    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
                }
            }
        }
        Ok(())
    }

    /// A zone's cgroup below each hierarchy's root: `parent/ZONE`, or the
    /// key itself when it is a path from the root (`/kubepods/.../ZONE`).
    fn rel(&self, zone: &str) -> PathBuf {
        match zone.strip_prefix('/') {
            Some(from_root) => PathBuf::from(from_root),
            None => Path::new(&self.parent).join(zone),
        }
    }

    /// The zone's directories: one (v2) or one per controller (v1).
    fn dirs(&self, zone: &str) -> Vec<PathBuf> {
        match self.version {
            Version::V2 => vec![self.root.join(self.rel(zone))],
            Version::V1 => self
                .controllers
                .iter()
                .map(|c| self.root.join(c).join(self.rel(zone)))
                .collect(),
        }
    }

    /// A container root's own cgroup, as a zone key (a path below the zone).
    fn root_key(zone: &str, name: &str) -> String {
        format!("{zone}/{WORK}/{name}")
    }

    /// Where containers' own cgroups are made: `work` in each v1
    /// controller (not the controller-less unified hierarchy of a hybrid
    /// host, which keeps BPF's cgroup id the zone's), or the v2 `work`.
    fn container_parents(&self, zone: &str) -> Vec<PathBuf> {
        let rel = self.rel(zone).join(WORK);
        match self.version {
            Version::V2 => vec![self.root.join(rel)],
            Version::V1 => self
                .controllers
                .iter()
                .filter(|c| *c != "unified")
                .map(|c| self.root.join(c).join(&rel))
                .collect(),
        }
    }

    /// A container root's own directories; none for a zone made before
    /// containers had cgroups of their own: on v1 it has no `work` in
    /// every controller (and its agent was told of none); on v2 its agent
    /// is in the zone's cgroup, so its work has no controllers to hand down.
    fn root_dirs(&self, zone: &str, name: &str) -> Vec<PathBuf> {
        let parents = self.container_parents(zone);
        if !parents.iter().all(|p| p.is_dir()) {
            return Vec::new();
        }
        if self.version == Version::V2 {
            let ctl = parents.iter().map(|p| p.join("cgroup.subtree_control"));
            let delegated = ctl
                .filter_map(|c| std::fs::read_to_string(c).ok())
                .any(|c| c.contains("memory"));
            if !delegated {
                return Vec::new();
            }
        }
        parents.into_iter().map(|p| p.join(name)).collect()
    }

    /// `tops` and every cgroup below them, deepest first.
    fn tree(tops: &[PathBuf]) -> Vec<PathBuf> {
        let mut all = Vec::new();
        let mut next: Vec<PathBuf> = tops.iter().filter(|d| d.is_dir()).cloned().collect();
        while let Some(d) = next.pop() {
            if let Ok(entries) = std::fs::read_dir(&d) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        next.push(e.path());
                    }
                }
            }
            all.push(d);
        }
        all.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        all.dedup();
        all
    }

    /// Kills every process in `dirs` and the cgroups below them, and
    /// removes those cgroups deepest first; waits (10 s at most) for the
    /// killed to leave. v2 kills a whole cgroup at once with `cgroup.kill`
    /// (a forking process cannot outrun it); otherwise pid by pid, with
    /// `freeze(true)` before each pass and `freeze(false)` after it.
    fn kill_and_remove(dirs: &[PathBuf], freeze: impl Fn(bool)) -> Result<(), CgroupError> {
        for d in dirs {
            let kill = d.join("cgroup.kill");
            if kill.exists() {
                let _ = std::fs::write(&kill, "1");
            }
        }
        let started = Instant::now();
        let mut pause = Duration::from_micros(500);
        loop {
            freeze(true);
            for pid in Self::pids_in(dirs)? {
                // SAFETY: kill takes plain integers.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
            freeze(false);
            let mut left = false;
            for d in Self::tree(dirs) {
                match std::fs::remove_dir(&d) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(_) => left = true,
                }
            }
            if !left {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(10) {
                return Err(CgroupError::Busy {
                    path: dirs[0].display().to_string(),
                    waited_ms: started.elapsed().as_millis(),
                });
            }
            // Killed processes take a moment to leave the cgroup.
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// Host pids in the cgroups of `tops` and below them.
    fn pids_in(tops: &[PathBuf]) -> Result<Vec<u32>, CgroupError> {
        let mut all = Vec::new();
        for d in Self::tree(tops) {
            let path = d.join("cgroup.procs");
            match std::fs::read_to_string(&path) {
                Ok(s) => all.extend(s.lines().filter_map(|l| l.trim().parse::<u32>().ok())),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
        all.sort_unstable();
        all.dedup();
        Ok(all)
    }

    /// The directory holding `file` for this zone (v1: the controller's).
    fn file(&self, zone: &str, controller: &str, file: &str) -> PathBuf {
        match self.version {
            Version::V2 => self.root.join(self.rel(zone)).join(file),
            Version::V1 => {
                let dir = self
                    .controllers
                    .iter()
                    .find(|c| c.split(',').any(|part| part == controller))
                    .cloned()
                    .unwrap_or_else(|| controller.to_string());
                self.root.join(dir).join(self.rel(zone)).join(file)
            }
        }
    }

    fn write(
        &self,
        zone: &str,
        controller: &str,
        file: &str,
        value: &str,
    ) -> Result<(), CgroupError> {
        let path = self.file(zone, controller, file);
        std::fs::write(&path, value).map_err(io_err(&path))
    }

    fn read(&self, zone: &str, controller: &str, file: &str) -> Option<String> {
        std::fs::read_to_string(self.file(zone, controller, file)).ok()
    }

    fn read_u64(&self, zone: &str, controller: &str, file: &str) -> Option<u64> {
        self.read(zone, controller, file)
            .and_then(|s| s.trim().parse().ok())
    }

    fn keyed(&self, zone: &str, controller: &str, file: &str, key: &str) -> Option<u64> {
        self.read(zone, controller, file)?.lines().find_map(|l| {
            l.strip_prefix(key)
                .and_then(|r| r.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
    }

    /// The work child's directory, where it can be frozen.
    fn work_dir(&self, zone: &str) -> Option<PathBuf> {
        match self.version {
            Version::V2 => Some(self.root.join(self.rel(zone)).join(WORK)),
            Version::V1 => self
                .controllers
                .iter()
                .any(|c| c == "freezer")
                .then(|| self.root.join("freezer").join(self.rel(zone)).join(WORK)),
        }
    }

    /// Freezes or thaws the whole zone for a teardown; thawing also thaws
    /// a paused work cgroup (a v1 child frozen on its own stays frozen when
    /// its parent thaws, and frozen tasks do not die of SIGKILL).
    fn freeze(&self, zone: &str, frozen: bool) {
        let (file, value) = match (self.version, frozen) {
            (Version::V2, true) => ("cgroup.freeze", "1"),
            (Version::V2, false) => ("cgroup.freeze", "0"),
            (Version::V1, true) => ("freezer.state", "FROZEN"),
            (Version::V1, false) => ("freezer.state", "THAWED"),
        };
        let _ = self.write(
            zone,
            if self.version == Version::V1 {
                "freezer"
            } else {
                ""
            },
            file,
            value,
        );
        if !frozen {
            if let Some(work) = self.work_dir(zone) {
                let _ = std::fs::write(work.join(file), value);
            }
        }
    }
}

impl CgroupDriver for CgroupFs {
    fn unified_dir(&self, zone: &str) -> Option<PathBuf> {
        match self.version {
            Version::V2 => Some(self.root.join(self.rel(zone))),
            Version::V1 if self.controllers.iter().any(|c| c == "unified") => {
                Some(self.root.join("unified").join(self.rel(zone)))
            }
            Version::V1 => None,
        }
    }

    fn unified_ids(&self, zone: &str) -> Vec<u64> {
        use std::os::unix::fs::MetadataExt;
        let Some(dir) = self.unified_dir(zone) else {
            return Vec::new();
        };
        // A cgroup2 directory's inode number is its cgroup id: the zone's,
        // its agent's, its work's and each container's.
        Self::tree(&[dir])
            .iter()
            .filter_map(|d| std::fs::metadata(d).ok())
            .map(|m| m.ino())
            .collect()
    }

    fn unified_parent(&self) -> Option<PathBuf> {
        match self.version {
            Version::V2 => Some(self.root.join(&self.parent)),
            Version::V1 => self
                .controllers
                .iter()
                .any(|c| c == "unified")
                .then(|| self.root.join("unified").join(&self.parent)),
        }
    }

    fn layout(&self) -> &'static str {
        match self.version {
            Version::V1 => "v1",
            Version::V2 => "v2",
        }
    }

    fn create(&self, zone: &str, limits: &ResourcesSection) -> Result<ZoneCgroup, CgroupError> {
        let dirs = self.dirs(zone);
        for d in &dirs {
            std::fs::create_dir_all(d).map_err(io_err(d))?;
        }
        if self.version == Version::V2 && zone.starts_with('/') {
            // Under a parent rauhad did not prepare: the controllers must be
            // enabled on the way down (kubelet's pod cgroups already are).
            let mut dir = self.root.clone();
            for part in self
                .rel(zone)
                .parent()
                .into_iter()
                .flat_map(|p| p.components())
            {
                dir = dir.join(part);
                let _ = std::fs::write(dir.join("cgroup.subtree_control"), V2_CONTROLLERS);
            }
        }
        self.set_limits(zone, limits)?;
        let work = self.work_dir(zone);
        if let Some(w) = &work {
            std::fs::create_dir_all(w).map_err(io_err(w))?;
        }
        let containers = self.container_parents(zone);
        for d in &containers {
            std::fs::create_dir_all(d).map_err(io_err(d))?;
        }
        let procs = |d: &Path| d.join("cgroup.procs");
        let join = dirs.iter().map(|d| procs(d)).collect();
        match (self.version, &work) {
            (Version::V2, Some(work)) => {
                // cgroup v2 hands controllers down only from a cgroup
                // without processes: the agent moves to a leaf of its own
                // (after it made its cgroup namespace at the zone's
                // cgroup), and the work outside containers has one too,
                // so that the zone and its work can give each container
                // its own limits (`delegate`).
                let agent = self.root.join(self.rel(zone)).join(AGENT);
                let plain = work.join(ZONE_WORK);
                for d in [&agent, &plain] {
                    std::fs::create_dir_all(d).map_err(io_err(d))?;
                }
                Ok(ZoneCgroup {
                    join,
                    agent_procs: Some(procs(&agent)),
                    work_procs: Some(procs(&plain)),
                    containers,
                })
            }
            _ => Ok(ZoneCgroup {
                join,
                agent_procs: None,
                work_procs: work.as_deref().map(procs),
                containers,
            }),
        }
    }

    fn delegate(&self, zone: &str) -> Result<(), CgroupError> {
        if self.version == Version::V1 {
            return Ok(());
        }
        let zone_dir = self.root.join(self.rel(zone));
        for d in [zone_dir.clone(), zone_dir.join(WORK)] {
            let ctl = d.join("cgroup.subtree_control");
            std::fs::write(&ctl, V2_CONTROLLERS).map_err(io_err(&ctl))?;
        }
        Ok(())
    }

    fn set_frozen(&self, zone: &str, frozen: bool) -> Result<(), CgroupError> {
        let work = self.work_dir(zone).ok_or(CgroupError::NoFreezer)?;
        let (file, value, state_file, done): FreezeSteps = match (self.version, frozen) {
            (Version::V2, true) => ("cgroup.freeze", "1", "cgroup.events", &|s: &str| {
                s.lines().any(|l| l == "frozen 1")
            }),
            (Version::V2, false) => ("cgroup.freeze", "0", "cgroup.events", &|s: &str| {
                s.lines().any(|l| l == "frozen 0")
            }),
            (Version::V1, true) => ("freezer.state", "FROZEN", "freezer.state", &|s: &str| {
                s.trim() == "FROZEN"
            }),
            (Version::V1, false) => ("freezer.state", "THAWED", "freezer.state", &|s: &str| {
                s.trim() == "THAWED"
            }),
        };
        let path = work.join(file);
        std::fs::write(&path, value).map_err(io_err(&path))?;
        let started = Instant::now();
        let mut tried = Instant::now();
        loop {
            let state = std::fs::read_to_string(work.join(state_file)).unwrap_or_default();
            if done(&state) {
                return Ok(());
            }
            // A v1 freezer can stay in FREEZING while tasks fork (the new
            // child escapes the pass); as runc does, thaw and freeze again.
            if self.version == Version::V1 && frozen && tried.elapsed() > Duration::from_millis(200)
            {
                let _ = std::fs::write(&path, "THAWED");
                std::thread::sleep(Duration::from_millis(2));
                std::fs::write(&path, value).map_err(io_err(&path))?;
                tried = Instant::now();
            }
            if started.elapsed() > Duration::from_secs(5) {
                if frozen {
                    // Never leave the work half-frozen behind an error.
                    let _ = std::fs::write(
                        &path,
                        if self.version == Version::V1 {
                            "THAWED"
                        } else {
                            "0"
                        },
                    );
                }
                return Err(CgroupError::Freeze {
                    path: work.display().to_string(),
                    state: if frozen { "frozen" } else { "thawed" },
                    waited_ms: started.elapsed().as_millis(),
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn set_limits(&self, zone: &str, limits: &ResourcesSection) -> Result<(), CgroupError> {
        match self.version {
            Version::V2 => {
                let mem = limits
                    .memory_limit
                    .map_or("max".to_string(), |m| m.to_string());
                self.write(zone, "memory", "memory.max", &mem)?;
                if self.file(zone, "memory", "memory.swap.max").exists() {
                    self.write(zone, "memory", "memory.swap.max", "0")?;
                }
                let pids = limits.pids_max.map_or("max".to_string(), |p| p.to_string());
                self.write(zone, "pids", "pids.max", &pids)?;
                if let Some(shares) = limits.cpu_shares {
                    let weight = 1 + (shares.saturating_sub(2) * 9999) / 262_142;
                    self.write(zone, "cpu", "cpu.weight", &weight.to_string())?;
                }
                let max = limits.cpu_limit.map_or("max".to_string(), |c| {
                    format!("{}", (c * PERIOD_US as f64) as u64)
                });
                self.write(zone, "cpu", "cpu.max", &format!("{max} {PERIOD_US}"))?;
            }
            Version::V1 => {
                let mem = limits
                    .memory_limit
                    .map_or("-1".to_string(), |m| m.to_string());
                // memsw must stay >= memory: lift it first, then set both.
                let memsw = self
                    .file(zone, "memory", "memory.memsw.limit_in_bytes")
                    .exists();
                if memsw {
                    self.write(zone, "memory", "memory.memsw.limit_in_bytes", "-1")?;
                }
                self.write(zone, "memory", "memory.limit_in_bytes", &mem)?;
                if memsw {
                    self.write(zone, "memory", "memory.memsw.limit_in_bytes", &mem)?;
                }
                let pids = limits.pids_max.map_or("max".to_string(), |p| p.to_string());
                self.write(zone, "pids", "pids.max", &pids)?;
                self.write(
                    zone,
                    "cpu",
                    "cpu.shares",
                    &limits.cpu_shares.unwrap_or(1024).to_string(),
                )?;
                self.write(zone, "cpu", "cpu.cfs_period_us", &PERIOD_US.to_string())?;
                let quota = limits
                    .cpu_limit
                    .map_or(-1, |c| (c * PERIOD_US as f64) as i64);
                // A quota below a container's is refused while the
                // container's stands: lower theirs first.
                if quota > 0 {
                    let cpu_dir = self.file(zone, "cpu", "");
                    for d in Self::tree(std::slice::from_ref(&cpu_dir)) {
                        let file = d.join("cpu.cfs_quota_us");
                        let theirs = std::fs::read_to_string(&file)
                            .ok()
                            .and_then(|q| q.trim().parse::<i64>().ok());
                        if d != cpu_dir && theirs.is_some_and(|t| t > quota) {
                            std::fs::write(&file, quota.to_string()).map_err(io_err(&file))?;
                        }
                    }
                }
                self.write(zone, "cpu", "cpu.cfs_quota_us", &quota.to_string())?;
            }
        }
        Ok(())
    }

    fn usage(&self, zone: &str) -> Result<Usage, CgroupError> {
        let probe = self.dirs(zone).into_iter().next().unwrap_or_default();
        if !probe.exists() {
            return Err(CgroupError::Io {
                path: probe.display().to_string(),
                source: io::Error::from(io::ErrorKind::NotFound),
            });
        }
        let u = match self.version {
            Version::V2 => Usage {
                memory_bytes: self.read_u64(zone, "memory", "memory.current").unwrap_or(0),
                memory_limit_bytes: self.read_u64(zone, "memory", "memory.max").unwrap_or(0),
                peak_memory_bytes: self.read_u64(zone, "memory", "memory.peak").unwrap_or(0),
                cpu_time_us: self
                    .keyed(zone, "cpu", "cpu.stat", "usage_usec")
                    .unwrap_or(0),
                pids: self.read_u64(zone, "pids", "pids.current").unwrap_or(0),
                pids_max: self.read_u64(zone, "pids", "pids.max").unwrap_or(0),
                oom_kills: self
                    .keyed(zone, "memory", "memory.events", "oom_kill")
                    .unwrap_or(0),
            },
            Version::V1 => Usage {
                memory_bytes: self
                    .read_u64(zone, "memory", "memory.usage_in_bytes")
                    .unwrap_or(0),
                memory_limit_bytes: self
                    .read_u64(zone, "memory", "memory.limit_in_bytes")
                    .unwrap_or(0),
                peak_memory_bytes: self
                    .read_u64(zone, "memory", "memory.max_usage_in_bytes")
                    .unwrap_or(0),
                cpu_time_us: self.read_u64(zone, "cpuacct", "cpuacct.usage").unwrap_or(0) / 1000,
                pids: self.read_u64(zone, "pids", "pids.current").unwrap_or(0),
                pids_max: self.read_u64(zone, "pids", "pids.max").unwrap_or(0),
                // v1 counts a kill only in the victim's own cgroup (v2's
                // memory.events counts it up the tree): add the containers'.
                oom_kills: Self::tree(&[self.file(zone, "memory", "")])
                    .iter()
                    .filter_map(|d| std::fs::read_to_string(d.join("memory.oom_control")).ok())
                    .filter_map(|s| {
                        s.lines().find_map(|l| {
                            l.strip_prefix("oom_kill ")
                                .and_then(|v| v.trim().parse::<u64>().ok())
                        })
                    })
                    .sum(),
            },
        };
        Ok(u)
    }

    fn pids(&self, zone: &str) -> Result<Vec<u32>, CgroupError> {
        Self::pids_in(&self.dirs(zone))
    }

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
        for d in &dirs {
            let made = match std::fs::create_dir(d) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && d.is_dir() => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(CgroupError::NameTaken {
                    name: name.to_string(),
                    path: d.display().to_string(),
                }),
                other => other.map_err(io_err(d)),
            };
            if let Err(e) = made {
                let _ = self.remove_root(zone, name);
                return Err(e);
            }
        }
        match self.set_root_limits(zone, name, limits) {
            Ok(own) => Ok(own),
            Err(e) => {
                let _ = self.remove_root(zone, name);
                Err(e)
            }
        }
    }

    fn set_root_limits(
        &self,
        zone: &str,
        name: &str,
        limits: &RootLimits,
    ) -> Result<bool, CgroupError> {
        let dirs = self.root_dirs(zone, name);
        if self.version == Version::V1 && !limits.unified.is_empty() {
            return Err(CgroupError::UnifiedOnV1 {
                keys: limits.unified.keys().cloned().collect(),
            });
        }
        if dirs.is_empty() {
            return Ok(false);
        }
        let unified = &limits.unified;
        let limits = &limits.resources;
        // v1 refuses a child CPU quota above its parent's: the zone's
        // quota is the ceiling (it throttles the container anyway). No
        // quota of its own stays none (-1: the zone's holds).
        let mut limits = limits.clone();
        let zone_quota = self
            .read(zone, "cpu", "cpu.cfs_quota_us")
            .and_then(|q| q.trim().parse::<i64>().ok())
            .filter(|q| *q > 0);
        if let (Some(q), Some(c)) = (zone_quota, limits.cpu_limit) {
            limits.cpu_limit = Some(c.min(q as f64 / PERIOD_US as f64));
        }
        self.set_limits(&Self::root_key(zone, name), &limits)?;
        // Last, as runc does: a unified file has the final word. The
        // registry checked the names: files of the memory, pids and cpu
        // controllers only (never cgroup.procs and its kind).
        for (file, value) in unified {
            for d in &dirs {
                let path = d.join(file);
                std::fs::write(&path, value).map_err(io_err(&path))?;
            }
        }
        Ok(true)
    }

    fn root_usage(&self, zone: &str, name: &str) -> Result<Usage, CgroupError> {
        if self.root_dirs(zone, name).is_empty() {
            return self.usage(zone);
        }
        self.usage(&Self::root_key(zone, name))
    }

    fn remove_root(&self, zone: &str, name: &str) -> Result<(), CgroupError> {
        Self::kill_and_remove(&self.root_dirs(zone, name), |_| {})
    }

    fn remove(&self, zone: &str) -> Result<(), CgroupError> {
        let dirs = self.dirs(zone);
        if dirs.iter().all(|d| !d.exists()) {
            return Ok(());
        }
        // Frozen processes cannot fork while they are killed.
        Self::kill_and_remove(&dirs, |frozen| self.freeze(zone, frozen))
    }

    fn list(&self) -> Result<Vec<String>, CgroupError> {
        let base = match self.version {
            Version::V2 => self.root.join(&self.parent),
            Version::V1 => self
                .root
                .join(
                    self.controllers
                        .first()
                        .map(String::as_str)
                        .unwrap_or("memory"),
                )
                .join(&self.parent),
        };
        let mut names = Vec::new();
        let mut seen_in = |base: PathBuf| -> Result<(), CgroupError> {
            let entries = match std::fs::read_dir(&base) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(io_err(&base)(e)),
            };
            for entry in entries.flatten() {
                if entry.path().is_dir() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
            }
            Ok(())
        };
        seen_in(base)?;
        if self.version == Version::V1 {
            for c in self.controllers.iter().skip(1) {
                seen_in(self.root.join(c).join(&self.parent))?;
            }
        }
        names.sort();
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rl(r: &ResourcesSection) -> RootLimits {
        RootLimits {
            resources: r.clone(),
            ..Default::default()
        }
    }

    fn fake_v1() -> PathBuf {
        let root = std::env::temp_dir().join(format!("rauha-cg-{}", uuid::Uuid::new_v4()));
        for c in ["memory", "pids", "cpu", "cpuacct", "freezer"] {
            std::fs::create_dir_all(root.join(c)).expect("dir");
            std::fs::write(root.join(c).join("cgroup.procs"), "").expect("procs");
        }
        root
    }

    #[test]
    fn v1_limits_land_in_each_controller() {
        let root = fake_v1();
        let fs = CgroupFs::new(&root, "rauha").expect("v1");
        assert_eq!(fs.layout(), "v1");
        let limits = ResourcesSection {
            cpu_shares: Some(512),
            cpu_limit: Some(0.5),
            memory_limit: Some(64 << 20),
            pids_max: Some(32),
        };
        let cg = fs.create("z1", &limits).expect("create");
        assert_eq!(cg.join.len(), 5);
        assert_eq!(
            cg.work_procs,
            Some(root.join("freezer/rauha/z1/work/cgroup.procs"))
        );
        let read = |p: &str| std::fs::read_to_string(root.join(p)).expect(p);
        assert_eq!(
            read("memory/rauha/z1/memory.limit_in_bytes"),
            (64u64 << 20).to_string()
        );
        assert_eq!(read("pids/rauha/z1/pids.max"), "32");
        assert_eq!(read("cpu/rauha/z1/cpu.shares"), "512");
        assert_eq!(read("cpu/rauha/z1/cpu.cfs_quota_us"), "50000");
        assert_eq!(fs.list().expect("list"), vec!["z1".to_string()]);
        std::fs::remove_dir_all(root).expect("cleanup");
    }

    #[test]
    fn v1_container_roots_get_cgroups_of_their_own() {
        let root = fake_v1();
        let fs = CgroupFs::new(&root, "rauha").expect("v1");
        let zone = ResourcesSection {
            cpu_limit: Some(1.0),
            ..Default::default()
        };
        fs.create("z", &zone).expect("create");
        let own = ResourcesSection {
            cpu_limit: Some(2.0),
            memory_limit: Some(32 << 20),
            pids_max: Some(16),
            cpu_shares: None,
        };
        assert!(fs.create_root("z", "c1", &rl(&own)).expect("create root"));
        let read = |p: &str| std::fs::read_to_string(root.join(p)).expect(p);
        assert_eq!(
            read("memory/rauha/z/work/c1/memory.limit_in_bytes"),
            (32u64 << 20).to_string()
        );
        assert_eq!(read("pids/rauha/z/work/c1/pids.max"), "16");
        // Above the zone's quota: the zone's is the ceiling (v1 refuses more).
        assert_eq!(read("cpu/rauha/z/work/c1/cpu.cfs_quota_us"), "100000");
        assert!(root.join("freezer/rauha/z/work/c1").is_dir());
        // No quota of its own stays none; a lower zone quota lowers the
        // container's first (v1 would refuse it otherwise).
        let plain = ResourcesSection {
            memory_limit: Some(16 << 20),
            ..Default::default()
        };
        assert!(fs.create_root("z", "c2", &rl(&plain)).expect("create root"));
        assert_eq!(read("cpu/rauha/z/work/c2/cpu.cfs_quota_us"), "-1");
        // A name that is a cgroup file's: a clear error, nothing made.
        std::fs::write(root.join("memory/rauha/z/work/tasks"), "").expect("w");
        assert!(matches!(
            fs.create_root("z", "tasks", &rl(&plain)),
            Err(CgroupError::NameTaken { .. })
        ));
        assert!(!root.join("pids/rauha/z/work/tasks").exists());
        // unified (v2) files on a v1 host: refused, naming them.
        let mut with_unified = rl(&plain);
        with_unified
            .unified
            .insert("memory.oom.group".into(), "1".into());
        assert!(matches!(
            fs.set_root_limits("z", "c2", &with_unified),
            Err(CgroupError::UnifiedOnV1 { .. })
        ));
        let lower = ResourcesSection {
            cpu_limit: Some(0.5),
            ..Default::default()
        };
        fs.set_limits("z", &lower).expect("lower the zone's quota");
        assert_eq!(read("cpu/rauha/z/work/c1/cpu.cfs_quota_us"), "50000");
        assert_eq!(read("cpu/rauha/z/work/c2/cpu.cfs_quota_us"), "-1");
        assert_eq!(read("cpu/rauha/z/cpu.cfs_quota_us"), "50000");
        // A zone made before containers had cgroups (no `work` in memory):
        // its containers share the zone's.
        std::fs::create_dir_all(root.join("memory/rauha/old")).expect("dir");
        std::fs::create_dir_all(root.join("freezer/rauha/old/work")).expect("dir");
        assert!(!fs.create_root("old", "c1", &rl(&plain)).expect("old zone"));
        // The zone's pids include its containers' cgroups.
        std::fs::write(root.join("memory/rauha/z/work/c1/cgroup.procs"), "4242\n").expect("w");
        // A kill in a container counts for the zone too (v1 counts it only
        // in the victim's cgroup).
        std::fs::write(
            root.join("memory/rauha/z/work/c1/memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        )
        .expect("w");
        assert_eq!(fs.usage("z").expect("usage").oom_kills, 1);
        assert!(fs.pids("z").expect("pids").contains(&4242));
        std::fs::write(
            root.join("memory/rauha/z/work/c1/memory.usage_in_bytes"),
            "8192\n",
        )
        .expect("w");
        assert_eq!(fs.root_usage("z", "c1").expect("usage").memory_bytes, 8192);
        std::fs::remove_dir_all(root).expect("cleanup");
    }

    #[test]
    fn v2_zones_leave_their_cgroup_free_to_hand_down_limits() {
        let root = std::env::temp_dir().join(format!("rauha-cg2r-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&root).expect("dir");
        std::fs::write(root.join("cgroup.controllers"), "cpu memory pids").expect("w");
        let fs = CgroupFs::new(&root, "rauha").expect("v2");
        let cg = fs
            .create("z", &ResourcesSection::default())
            .expect("create");
        // The agent makes its namespace in the zone's cgroup, then moves
        // to a leaf; the work outside containers is in a leaf too; then the
        // zone and its work hand the controllers down.
        assert_eq!(cg.join, vec![root.join("rauha/z/cgroup.procs")]);
        assert_eq!(
            cg.agent_procs,
            Some(root.join("rauha/z/agent/cgroup.procs"))
        );
        assert_eq!(
            cg.work_procs,
            Some(root.join("rauha/z/work/@zone/cgroup.procs"))
        );
        assert_eq!(cg.containers, vec![root.join("rauha/z/work")]);
        let read = |p: &str| std::fs::read_to_string(root.join(p)).expect(p);
        let own = ResourcesSection {
            memory_limit: Some(32 << 20),
            cpu_limit: Some(0.5),
            ..Default::default()
        };
        assert!(!fs.create_root("z", "early", &rl(&own)).expect("before"));
        fs.delegate("z").expect("delegate");
        assert_eq!(read("rauha/z/cgroup.subtree_control"), V2_CONTROLLERS);
        assert_eq!(read("rauha/z/work/cgroup.subtree_control"), V2_CONTROLLERS);
        assert!(fs.create_root("z", "c1", &rl(&own)).expect("create root"));
        assert_eq!(
            read("rauha/z/work/c1/memory.max"),
            (32u64 << 20).to_string()
        );
        assert_eq!(read("rauha/z/work/c1/cpu.max"), "50000 100000");
        // unified files land in the container's cgroup (kubelet's
        // memory.oom.group).
        let mut with_unified = rl(&own);
        with_unified
            .unified
            .insert("memory.oom.group".into(), "1".into());
        assert!(fs
            .set_root_limits("z", "c1", &with_unified)
            .expect("unified"));
        assert_eq!(read("rauha/z/work/c1/memory.oom.group"), "1");
        // BPF learns every cgroup of the zone as the zone's.
        assert_eq!(fs.unified_ids("z").len(), 5, "z, agent, work, @zone, c1");

        // A zone made before (its agent in the zone's cgroup): containers
        // share the zone's cgroup, as they did.
        std::fs::create_dir_all(root.join("rauha/old/work")).expect("dir");
        assert!(!fs.create_root("old", "c1", &rl(&own)).expect("create root"));
        assert!(!root.join("rauha/old/work/c1").exists());
        assert!(!fs.set_root_limits("old", "c1", &rl(&own)).expect("set"));
        std::fs::remove_dir_all(root).expect("cleanup");
    }

    #[test]
    fn v1_usage_reads_back() {
        let root = fake_v1();
        let fs = CgroupFs::new(&root, "rauha").expect("v1");
        fs.create("z", &ResourcesSection::default())
            .expect("create");
        std::fs::write(root.join("memory/rauha/z/memory.usage_in_bytes"), "4096\n").expect("w");
        std::fs::write(
            root.join("memory/rauha/z/memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .expect("w");
        std::fs::write(root.join("cpuacct/rauha/z/cpuacct.usage"), "5000000\n").expect("w");
        std::fs::write(root.join("pids/rauha/z/pids.current"), "3\n").expect("w");
        let u = fs.usage("z").expect("usage");
        assert_eq!(
            (u.memory_bytes, u.oom_kills, u.cpu_time_us, u.pids),
            (4096, 2, 5000, 3)
        );
        std::fs::remove_dir_all(root).expect("cleanup");
    }

    #[test]
    fn v2_writes_unified_files() {
        let root = std::env::temp_dir().join(format!("rauha-cg2-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&root).expect("dir");
        std::fs::write(root.join("cgroup.controllers"), "cpu memory pids").expect("w");
        let fs = CgroupFs::new(&root, "rauha").expect("v2");
        assert_eq!(fs.layout(), "v2");
        let limits = ResourcesSection {
            cpu_shares: Some(1024),
            cpu_limit: Some(2.0),
            memory_limit: Some(1 << 30),
            pids_max: None,
        };
        fs.create("z", &limits).expect("create");
        let read = |p: &str| std::fs::read_to_string(root.join(p)).expect(p);
        assert_eq!(read("rauha/z/memory.max"), (1u64 << 30).to_string());
        assert_eq!(read("rauha/z/pids.max"), "max");
        assert_eq!(read("rauha/z/cpu.max"), "200000 100000");
        assert_eq!(read("rauha/cgroup.subtree_control"), V2_CONTROLLERS);
        std::fs::remove_dir_all(root).expect("cleanup");
    }

    #[test]
    fn no_hierarchy_is_a_clear_error() {
        let root = std::env::temp_dir().join(format!("rauha-cg0-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&root).expect("dir");
        assert!(matches!(
            CgroupFs::new(&root, "rauha"),
            Err(CgroupError::NoHierarchy { .. })
        ));
        std::fs::remove_dir_all(root).expect("cleanup");
    }
}
