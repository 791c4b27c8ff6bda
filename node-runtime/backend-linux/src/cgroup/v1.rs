//! The cgroup v1 manager: one directory per zone in each controller's
//! hierarchy (memory, pids, cpu, cpuacct, freezer), and, on a hybrid host,
//! in the controller-less unified mount, which gives each zone the cgroup
//! id BPF programs key on. Containers' own cgroups are `work/NAME` in each
//! controller; the work outside them is the freezer's `work`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rauha_backend::{RootLimits, Usage};
use rauha_spec::policy::ResourcesSection;

use super::files::CgroupFiles;
use super::freezer::Freezer;
use super::hierarchy::{kill_and_remove, pids_in};
use super::{
    cpu, ids_below, io_err, memory, names_in, pids, rel, root_key, CgroupDriver, CgroupError,
    ZoneCgroup, WORK,
};

/// The controllers used, each by the directory names it may be mounted at.
const CONTROLLERS: &[&[&str]] = &[
    &["memory"],
    &["pids"],
    &["cpu", "cpu,cpuacct"],
    &["cpuacct", "cpu,cpuacct"],
    &["freezer"],
    // The controller-less cgroup2 mount of a hybrid host: no limits, but it
    // gives each zone a cgroup id the BPF programs key on.
    &["unified"],
];

/// cgroup v1 (or a hybrid host) under `root` (normally `/sys/fs/cgroup`).
pub struct V1Cgroups {
    root: PathBuf,
    parent: String,
    fs: Arc<dyn CgroupFiles>,
    /// The controller directories in use, e.g. `memory`, `cpu,cpuacct`.
    controllers: Vec<String>,
}

impl V1Cgroups {
    /// Finds the mounted controllers and makes rauhad's parent in each.
    pub fn new(
        root: &Path,
        parent: &str,
        fs: Arc<dyn CgroupFiles>,
    ) -> Result<V1Cgroups, CgroupError> {
        let mut controllers: Vec<String> = Vec::new();
        for choices in CONTROLLERS {
            if let Some(dir) = choices
                .iter()
                .find(|c| fs.exists(&root.join(c).join("cgroup.procs")))
            {
                if !controllers.iter().any(|c| c == dir) {
                    controllers.push(dir.to_string());
                }
            }
        }
        for c in &controllers {
            let dir = root.join(c).join(parent);
            fs.create_dir_all(&dir).map_err(io_err(&dir))?;
        }
        Ok(V1Cgroups {
            root: root.to_path_buf(),
            parent: parent.to_string(),
            fs,
            controllers,
        })
    }

    fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }

    /// The zone's directory in each controller.
    fn dirs(&self, zone: &str) -> Vec<PathBuf> {
        self.controllers
            .iter()
            .map(|c| self.root.join(c).join(rel(&self.parent, zone)))
            .collect()
    }

    /// The zone's directory in the hierarchy holding `controller` (a
    /// co-mounted `cpu,cpuacct` holds both).
    fn dir(&self, zone: &str, controller: &str) -> PathBuf {
        let mount = self
            .controllers
            .iter()
            .find(|c| c.split(',').any(|part| part == controller))
            .cloned()
            .unwrap_or_else(|| controller.to_string());
        self.root.join(mount).join(rel(&self.parent, zone))
    }

    /// The work child, in the freezer hierarchy: where the zone's work is
    /// paused. None without a freezer.
    fn work_dir(&self, zone: &str) -> Option<PathBuf> {
        self.has("freezer")
            .then(|| self.dir(zone, "freezer").join(WORK))
    }

    /// Where containers' own cgroups are made: `work` in each controller
    /// (not the controller-less unified mount, which keeps BPF's cgroup id
    /// the zone's).
    fn container_parents(&self, zone: &str) -> Vec<PathBuf> {
        self.controllers
            .iter()
            .filter(|c| *c != "unified")
            .map(|c| self.root.join(c).join(rel(&self.parent, zone)).join(WORK))
            .collect()
    }
}

impl CgroupDriver for V1Cgroups {
    fn files(&self) -> &dyn CgroupFiles {
        &*self.fs
    }

    /// A container root's own directories; none for a zone made before
    /// containers had cgroups of their own (no `work` in every controller,
    /// and its agent was told of none).
    fn root_dirs(&self, zone: &str, name: &str) -> Vec<PathBuf> {
        let parents = self.container_parents(zone);
        if !parents.iter().all(|p| self.fs.is_dir(p)) {
            return Vec::new();
        }
        parents.into_iter().map(|p| p.join(name)).collect()
    }

    fn layout(&self) -> &'static str {
        "v1"
    }

    fn unified_dir(&self, zone: &str) -> Option<PathBuf> {
        self.has("unified")
            .then(|| self.root.join("unified").join(rel(&self.parent, zone)))
    }

    fn unified_ids(&self, zone: &str) -> Vec<u64> {
        ids_below(&*self.fs, self.unified_dir(zone))
    }

    fn unified_parent(&self) -> Option<PathBuf> {
        self.has("unified")
            .then(|| self.root.join("unified").join(&self.parent))
    }

    fn zone_dirs(&self, zone: &str) -> Vec<PathBuf> {
        self.dirs(zone)
    }

    fn create(&self, zone: &str, limits: &ResourcesSection) -> Result<ZoneCgroup, CgroupError> {
        let dirs = self.dirs(zone);
        for d in &dirs {
            self.fs.create_dir_all(d).map_err(io_err(d))?;
        }
        self.set_limits(zone, limits)?;
        let work = self.work_dir(zone);
        let containers = self.container_parents(zone);
        for d in work.iter().chain(&containers) {
            self.fs.create_dir_all(d).map_err(io_err(d))?;
        }
        Ok(ZoneCgroup {
            join: dirs.iter().map(|d| d.join("cgroup.procs")).collect(),
            agent_procs: None,
            work_procs: work.map(|w| w.join("cgroup.procs")),
            containers,
        })
    }

    fn delegate(&self, _zone: &str) -> Result<(), CgroupError> {
        // Every v1 hierarchy takes children with processes beside them.
        Ok(())
    }

    fn set_frozen(&self, zone: &str, frozen: bool) -> Result<(), CgroupError> {
        let work = self.work_dir(zone).ok_or(CgroupError::NoFreezer)?;
        Freezer::V1.set(&*self.fs, &work, frozen)
    }

    fn set_limits(&self, zone: &str, limits: &ResourcesSection) -> Result<(), CgroupError> {
        memory::set_v1(&*self.fs, &self.dir(zone, "memory"), limits.memory_limit)?;
        pids::set(&*self.fs, &self.dir(zone, "pids"), limits.pids_max)?;
        cpu::set_v1(
            &*self.fs,
            &self.dir(zone, "cpu"),
            limits.cpu_shares,
            limits.cpu_limit,
        )
    }

    fn usage(&self, zone: &str) -> Result<Usage, CgroupError> {
        let probe = self.dirs(zone).into_iter().next().unwrap_or_default();
        if !self.fs.exists(&probe) {
            return Err(io_err(&probe)(std::io::ErrorKind::NotFound.into()));
        }
        let mem = memory::use_v1(&*self.fs, &self.dir(zone, "memory"));
        let pids = pids::current_and_max(&*self.fs, &self.dir(zone, "pids"));
        let cpu = cpu::use_v1(
            &*self.fs,
            &self.dir(zone, "cpuacct"),
            &self.dir(zone, "cpu"),
        );
        Ok(super::usage(mem, cpu, pids))
    }

    fn pids(&self, zone: &str) -> Result<Vec<u32>, CgroupError> {
        pids_in(&*self.fs, &self.dirs(zone))
    }

    fn set_root_limits(
        &self,
        zone: &str,
        name: &str,
        limits: &RootLimits,
    ) -> Result<bool, CgroupError> {
        if !limits.unified.is_empty() {
            return Err(CgroupError::UnifiedOnV1 {
                keys: limits.unified.keys().cloned().collect(),
            });
        }
        if self.root_dirs(zone, name).is_empty() {
            return Ok(false);
        }
        // v1 refuses a child CPU quota above its parent's: the zone's
        // quota is the ceiling (it throttles the container anyway). No
        // quota of its own stays none (-1: the zone's holds).
        let mut resources = limits.resources.clone();
        if let (Some(zone_cores), Some(c)) = (
            cpu::quota_v1(&*self.fs, &self.dir(zone, "cpu")),
            resources.cpu_limit,
        ) {
            resources.cpu_limit = Some(c.min(zone_cores));
        }
        self.set_limits(&root_key(zone, name), &resources)?;
        Ok(true)
    }

    fn remove(&self, zone: &str) -> Result<(), CgroupError> {
        let dirs = self.dirs(zone);
        if dirs.iter().all(|d| !self.fs.exists(d)) {
            return Ok(());
        }
        // Frozen processes cannot fork while they are killed. Thawing also
        // thaws a paused work cgroup: a v1 child frozen on its own stays
        // frozen when its parent thaws, and frozen tasks do not die of
        // SIGKILL.
        let freezer = self.dir(zone, "freezer");
        let work = self.work_dir(zone);
        kill_and_remove(&*self.fs, &dirs, |frozen| {
            Freezer::V1.ask(&*self.fs, &freezer, frozen);
            if let (false, Some(w)) = (frozen, &work) {
                Freezer::V1.ask(&*self.fs, w, false);
            }
        })
    }

    fn list(&self) -> Result<Vec<String>, CgroupError> {
        let mut names = Vec::new();
        match self.controllers.first() {
            Some(_) => {
                for c in &self.controllers {
                    names_in(&*self.fs, &self.root.join(c).join(&self.parent), &mut names)?;
                }
            }
            None => names_in(
                &*self.fs,
                &self.root.join("memory").join(&self.parent),
                &mut names,
            )?,
        }
        names.sort();
        Ok(names)
    }
}
