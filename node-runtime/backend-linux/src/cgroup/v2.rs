//! The cgroup v2 manager: one directory per zone in the unified hierarchy.
//!
//! cgroup v2 hands controllers down only from a cgroup without processes:
//! the zone's agent moves to a leaf of its own (`agent`, after it made its
//! cgroup namespace at the zone's cgroup), and the work outside containers
//! has one too (`work/@zone`), so that the zone and its work can give each
//! container (`work/NAME`) its own limits ([`CgroupDriver::delegate`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rauha_backend::{RootLimits, Usage};
use rauha_spec::policy::ResourcesSection;

use super::files::CgroupFiles;
use super::freezer::Freezer;
use super::hierarchy::{kill_and_remove, pids_in, write};
use super::{
    cpu, ids_below, io_err, memory, names_in, pids, rel, root_key, CgroupDriver, CgroupError,
    ZoneCgroup, WORK,
};

/// The controllers enabled for zones and below them.
pub(super) const CONTROLLERS: &str = "+memory +pids +cpu";
/// The zone agent's leaf, and the leaf in `work` for the work outside
/// containers (a name no container root can have).
const AGENT: &str = "agent";
const ZONE_WORK: &str = "@zone";

/// cgroup v2 under `root` (normally `/sys/fs/cgroup`).
pub struct V2Cgroups {
    root: PathBuf,
    parent: String,
    fs: Arc<dyn CgroupFiles>,
}

impl V2Cgroups {
    /// Makes rauhad's parent cgroup with the controllers enabled for zones.
    pub fn new(
        root: &Path,
        parent: &str,
        fs: Arc<dyn CgroupFiles>,
    ) -> Result<V2Cgroups, CgroupError> {
        let dir = root.join(parent);
        fs.create_dir_all(&dir).map_err(io_err(&dir))?;
        let _ = fs.write(&root.join("cgroup.subtree_control"), CONTROLLERS);
        write(&*fs, &dir, "cgroup.subtree_control", CONTROLLERS)?;
        Ok(V2Cgroups {
            root: root.to_path_buf(),
            parent: parent.to_string(),
            fs,
        })
    }

    fn dir(&self, zone: &str) -> PathBuf {
        self.root.join(rel(&self.parent, zone))
    }
}

impl CgroupDriver for V2Cgroups {
    fn files(&self) -> &dyn CgroupFiles {
        &*self.fs
    }

    /// A container root's own directory; none for a zone made before
    /// containers had cgroups of their own (its agent is in the zone's
    /// cgroup, so its work has no controllers to hand down).
    fn root_dirs(&self, zone: &str, name: &str) -> Vec<PathBuf> {
        let work = self.dir(zone).join(WORK);
        let delegated = self
            .fs
            .read(&work.join("cgroup.subtree_control"))
            .is_ok_and(|c| c.contains("memory"));
        if self.fs.is_dir(&work) && delegated {
            vec![work.join(name)]
        } else {
            Vec::new()
        }
    }

    fn layout(&self) -> &'static str {
        "v2"
    }

    fn unified_dir(&self, zone: &str) -> Option<PathBuf> {
        Some(self.dir(zone))
    }

    fn unified_parent(&self) -> Option<PathBuf> {
        Some(self.root.join(&self.parent))
    }

    fn zone_dirs(&self, zone: &str) -> Vec<PathBuf> {
        vec![self.dir(zone)]
    }

    fn unified_ids(&self, zone: &str) -> Vec<u64> {
        ids_below(&*self.fs, self.unified_dir(zone))
    }

    fn create(&self, zone: &str, limits: &ResourcesSection) -> Result<ZoneCgroup, CgroupError> {
        let dir = self.dir(zone);
        self.fs.create_dir_all(&dir).map_err(io_err(&dir))?;
        if zone.starts_with('/') {
            // Under a parent rauhad did not prepare: the controllers must be
            // enabled on the way down (kubelet's pod cgroups already are).
            let mut on_the_way = self.root.clone();
            for part in rel(&self.parent, zone)
                .parent()
                .into_iter()
                .flat_map(|p| p.components())
            {
                on_the_way = on_the_way.join(part);
                let _ = self
                    .fs
                    .write(&on_the_way.join("cgroup.subtree_control"), CONTROLLERS);
            }
        }
        self.set_limits(zone, limits)?;
        let work = dir.join(WORK);
        let agent = dir.join(AGENT);
        let plain = work.join(ZONE_WORK);
        for d in [&work, &agent, &plain] {
            self.fs.create_dir_all(d).map_err(io_err(d))?;
        }
        Ok(ZoneCgroup {
            join: vec![dir.join("cgroup.procs")],
            agent_procs: Some(agent.join("cgroup.procs")),
            work_procs: Some(plain.join("cgroup.procs")),
            containers: vec![work],
        })
    }

    fn delegate(&self, zone: &str) -> Result<(), CgroupError> {
        let dir = self.dir(zone);
        for d in [dir.clone(), dir.join(WORK)] {
            write(&*self.fs, &d, "cgroup.subtree_control", CONTROLLERS)?;
        }
        Ok(())
    }

    fn set_frozen(&self, zone: &str, frozen: bool) -> Result<(), CgroupError> {
        Freezer::V2.set(&*self.fs, &self.dir(zone).join(WORK), frozen)
    }

    fn set_limits(&self, zone: &str, limits: &ResourcesSection) -> Result<(), CgroupError> {
        let dir = self.dir(zone);
        memory::set_v2(&*self.fs, &dir, limits.memory_limit)?;
        pids::set(&*self.fs, &dir, limits.pids_max)?;
        cpu::set_v2(&*self.fs, &dir, limits.cpu_shares, limits.cpu_limit)
    }

    fn usage(&self, zone: &str) -> Result<Usage, CgroupError> {
        let dir = self.dir(zone);
        if !self.fs.exists(&dir) {
            return Err(io_err(&dir)(std::io::ErrorKind::NotFound.into()));
        }
        let mem = memory::use_v2(&*self.fs, &dir);
        let pids = pids::current_and_max(&*self.fs, &dir);
        let cpu = cpu::use_v2(&*self.fs, &dir);
        Ok(super::usage(mem, cpu, pids))
    }

    fn pids(&self, zone: &str) -> Result<Vec<u32>, CgroupError> {
        pids_in(&*self.fs, &[self.dir(zone)])
    }

    fn set_root_limits(
        &self,
        zone: &str,
        name: &str,
        limits: &RootLimits,
    ) -> Result<bool, CgroupError> {
        let dirs = self.root_dirs(zone, name);
        if dirs.is_empty() {
            return Ok(false);
        }
        self.set_limits(&root_key(zone, name), &limits.resources)?;
        // Last, as runc does: a unified file has the final word. The
        // registry checked the names: files of the memory, pids and cpu
        // controllers only (never cgroup.procs and its kind).
        for (file, value) in &limits.unified {
            for d in &dirs {
                write(&*self.fs, d, file, value)?;
            }
        }
        Ok(true)
    }

    fn remove(&self, zone: &str) -> Result<(), CgroupError> {
        let dir = self.dir(zone);
        if !self.fs.exists(&dir) {
            return Ok(());
        }
        // Frozen processes cannot fork while they are killed; thawing
        // thaws a paused work cgroup too.
        kill_and_remove(&*self.fs, std::slice::from_ref(&dir), |frozen| {
            Freezer::V2.ask(&*self.fs, &dir, frozen);
            if !frozen {
                Freezer::V2.ask(&*self.fs, &dir.join(WORK), false);
            }
        })
    }

    fn list(&self) -> Result<Vec<String>, CgroupError> {
        let mut names = Vec::new();
        names_in(&*self.fs, &self.root.join(&self.parent), &mut names)?;
        names.sort();
        Ok(names)
    }
}
