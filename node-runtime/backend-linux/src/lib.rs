//! `rauha-backend-linux`: the Linux isolation backend. A zone is a cgroup,
//! six namespaces, a root built by the zone agent (PID 1 of the zone), and
//! the per-process hardening the agent applies (capabilities,
//! `no_new_privs`, Landlock, seccomp), with BPF programs keyed by zone where
//! the kernel takes them.
//!
//! It implements `rauha_backend::IsolationBackend` and nothing above it: it
//! knows no store, no API and no registry.

mod bpf;
pub mod cgroup;
mod disk;
mod enforcement;

mod host;
mod image_root;
mod roots;
pub mod sealed;
mod spawn;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rauha_guest_agent::config::{Hardening, RootConfig, WorkspaceMount, ZoneConfig};
use rauha_spec::enforcement::{Enforcement, LayerStatus};
use rauha_spec::names::{capability_number, syscall_number};
use rauha_spec::policy::NetworkMode;
use rauha_spec::{Policy, RootSpec, WorkspaceSpec};
use tokio::net::UnixStream;
use uuid::Uuid;

use self::cgroup::CgroupDriver;
use self::sealed::SealedBinary;
use rauha_backend::{
    AgentStream, BackendError, Check, IsolationBackend, Usage, ZoneHandle, ZoneSetup,
};

/// A bundle zone's directory of container roots, in its state dir.
const CONTAINERS: &str = "containers";
/// Writable layers of container roots made from images, in a zone's
/// state dir (a real filesystem: the containers dir is a small tmpfs).
const ROOT_LAYERS: &str = "root-layers";

pub struct LinuxBackend {
    /// `RAUHA_ROOT`: zone state lives under `<root>/zones/<id>`.
    root: PathBuf,
    /// The zone agent, a sealed copy (see `sealed`).
    agent: SealedBinary,
    cgroups: Arc<dyn CgroupDriver>,
    node_layers: Vec<LayerStatus>,
    bpf: bpf::Bpf,
    /// Zones whose cgroup is not under rauhad's parent: its path from the
    /// hierarchy's root (learnt at creation, or from the handle again).
    cgroup_paths: std::sync::Mutex<std::collections::HashMap<Uuid, String>>,
    /// The cgroups made above such zones, removed with the last of them.
    made_parents: Arc<cgroup::made::MadeParents>,
    /// Container roots are added and removed one at a time.
    roots_lock: std::sync::Mutex<()>,
    /// The host id ranges of zones in a user namespace of their own.
    id_ranges: IdRanges,
}

impl LinuxBackend {
    /// `bpf_pin_dir`: where the BPF maps and links are pinned (on bpffs).
    pub fn new(
        root: &Path,
        agent: SealedBinary,
        cgroups: Arc<dyn CgroupDriver>,
        bpf_pin_dir: &Path,
    ) -> LinuxBackend {
        let bpf = bpf::Bpf::start(bpf_pin_dir, cgroups.unified_parent().as_deref());
        let mut node_layers = enforcement::probe_node(cgroups.layout());
        let [cgroup_bpf, bpf_lsm] = bpf.layers(&enforcement::bpf_lsm_reason());
        for l in node_layers.iter_mut() {
            if l.layer == cgroup_bpf.layer {
                *l = cgroup_bpf.clone();
            } else if l.layer == bpf_lsm.layer {
                *l = bpf_lsm.clone();
            }
        }
        LinuxBackend {
            root: root.to_path_buf(),
            agent,
            cgroups,
            node_layers,
            bpf,
            cgroup_paths: Default::default(),
            made_parents: Arc::new(cgroup::made::MadeParents::new(
                root.join("cgroup-parents-made"),
            )),
            roots_lock: Default::default(),
            id_ranges: IdRanges::default(),
        }
    }

    /// Detaches the BPF programs this start attached (rauhad refuses to
    /// run after all).
    pub fn detach_new_bpf(&self, pin_dir: &Path) {
        self.bpf.detach_new(pin_dir);
    }

    /// The cgroup driver's key of a zone: its id under rauhad's parent, or
    /// a path from the hierarchy's root.
    fn cgroup_key(&self, zone_id: Uuid) -> String {
        self.cgroup_paths
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&zone_id)
            .cloned()
            .unwrap_or_else(|| zone_id.to_string())
    }

    /// Remembers a live zone's cgroup path and id range from its handle.
    fn learn(&self, handle: &ZoneHandle) {
        if let Some(base) = handle.ready.user_namespace {
            self.id_ranges.hold(handle.zone_id, base);
        }
        if let Some(path) = &handle.cgroup {
            self.cgroup_paths
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(handle.zone_id, path.clone());
        }
    }

    /// The mount namespace of the zone's agent, where container roots are
    /// mounted; `None` once the agent is gone.
    fn zone_mount_ns(&self, zone: &ZoneHandle) -> Option<std::os::fd::OwnedFd> {
        let ns: std::os::fd::OwnedFd =
            std::fs::File::open(format!("/proc/{}/ns/mnt", zone.agent_pid))
                .ok()?
                .into();
        // Opened, then checked: the pid was still the agent's.
        (host::start_ticks(zone.agent_pid) == Some(zone.agent_start_ticks)).then_some(ns)
    }

    fn state_dir(&self, zone_id: Uuid) -> PathBuf {
        self.root.join("zones").join(zone_id.to_string())
    }

    fn root_config(
        &self,
        zone_id: Uuid,
        policy: &Policy,
        root: &RootSpec,
    ) -> Result<RootConfig, BackendError> {
        let fs = &policy.filesystem;
        Ok(match root {
            RootSpec::HostView => RootConfig::HostView {
                readable: fs.readable_paths.clone(),
                writable: fs.writable_paths.clone(),
                denied: fs.denied_paths.clone(),
            },
            RootSpec::Bundle { path } => {
                let (rootfs, readonly) = host::read_bundle(Path::new(path))?;
                RootConfig::Rootfs {
                    path: rootfs.display().to_string(),
                    readonly,
                    writable: fs.writable_paths.clone(),
                    denied: fs.denied_paths.clone(),
                }
            }
            // Its writable layer is made by create_zone once the state
            // dir is there; the agent mounts the overlay.
            RootSpec::Image { layers, .. } => {
                image_root::check(layers)?;
                RootConfig::Overlay {
                    layers: layers.iter().map(|l| l.path.clone()).collect(),
                    dir: self
                        .state_dir(zone_id)
                        .join(image_root::RW)
                        .display()
                        .to_string(),
                    writable: fs.writable_paths.clone(),
                    denied: fs.denied_paths.clone(),
                }
            }
        })
    }
}

#[async_trait::async_trait]
impl IsolationBackend for LinuxBackend {
    fn name(&self) -> &'static str {
        "linux"
    }

    fn layout(&self) -> &'static str {
        self.cgroups.layout()
    }

    fn node_layers(&self) -> Vec<LayerStatus> {
        self.node_layers.clone()
    }

    fn check_policy(&self, policy: &Policy) -> Result<(), BackendError> {
        // What the BPF maps cannot hold.
        rauha_ebpf::policy::ZoneRules::from_policy(policy)
            .map(drop)
            .map_err(|e| BackendError::Policy(Box::new(e)))
    }

    async fn create_zone(&self, setup: &ZoneSetup) -> Result<ZoneHandle, BackendError> {
        let root = self.root_config(setup.id, &setup.policy, &setup.root)?;
        let state_dir = self.state_dir(setup.id);
        // A host id range of its own, distinct from every live zone's, so
        // that no zone can touch another's files.
        let user_namespace = setup
            .policy
            .zone
            .user_namespace
            .unwrap_or(true)
            .then(|| self.id_ranges.allocate(setup.id))
            .transpose()?;
        let result = async {
            host::make_private_dir(&state_dir)?;
            if let RootSpec::Image { layers, .. } = &setup.root {
                image_root::prepare(
                    &state_dir,
                    layers,
                    setup.policy.resources.disk_limit_or_default(),
                )?;
            }
            let workspace = match &setup.workspace {
                Some(w) => {
                    disk::mount_limited(
                        &state_dir.join("workspace"),
                        &state_dir.join("workspace.img"),
                        setup.policy.resources.disk_limit_or_default(),
                    )?;
                    let upper = self.workspace_upper(setup.id);
                    let work = state_dir.join("workspace/work");
                    host::make_private_dir(&upper)?;
                    host::make_private_dir(&work)?;
                    // The workspace's root in the zone takes the upper
                    // layer's owner and mode: the repository's (the agent
                    // shifts the owner to the zone's ids when the zone's
                    // user namespace is in force).
                    host::like_repo_root(&upper, Path::new(&w.repo_path))?;
                    Some(WorkspaceMount {
                        lower: w.repo_path.clone(),
                        upper: upper.display().to_string(),
                        work: work.display().to_string(),
                        target: w.target.clone(),
                    })
                }
                None => None,
            };
            // Bundle and image zones can host containers with their own
            // roots.
            let containers_dir = match &setup.root {
                RootSpec::Bundle { .. } | RootSpec::Image { .. } => {
                    let dir = state_dir.join(CONTAINERS);
                    roots::make_shared_dir(&dir).map_err(|source| BackendError::Io {
                        what: format!("cannot share {}", dir.display()),
                        source,
                    })?;
                    Some(dir.display().to_string())
                }
                RootSpec::HostView => None,
            };
            let key = match &setup.cgroup_parent {
                Some(parent) => {
                    let key = format!("{parent}/{}", setup.id);
                    self.cgroup_paths
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(setup.id, key.clone());
                    key
                }
                None => setup.id.to_string(),
            };
            let cgroup = self
                .made_parents
                .create(&*self.cgroups, &key, &setup.policy.resources)?;
            let config = ZoneConfig {
                zone_id: setup.id.to_string(),
                hostname: setup
                    .policy
                    .zone
                    .hostname
                    .clone()
                    .unwrap_or_else(|| setup.name.clone()),
                state_dir: state_dir.display().to_string(),
                cgroup_procs: cgroup
                    .join
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect(),
                agent_cgroup_procs: cgroup.agent_procs.map(|p| p.display().to_string()),
                work_cgroup_procs: cgroup.work_procs.map(|p| p.display().to_string()),
                container_cgroups: cgroup
                    .containers
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect(),
                root,
                loopback: setup.policy.network.mode == NetworkMode::Loopback,
                netns: setup.netns.clone(),
                resolv_conf: setup.resolv_conf.clone(),
                host_ipc: setup.policy.zone.host_ipc,
                host_pid: setup.policy.zone.host_pid,
                workspace,
                containers_dir,
                user_namespace,
                sysctls: setup
                    .policy
                    .zone
                    .sysctls
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                hardening: self.hardening(&setup.policy, &setup.root, setup.workspace.as_ref()),
            };
            let mut handle = spawn::start_agent(&self.agent, &config, &state_dir).await?;
            // The agent is ready, out of the zone's own cgroup.
            self.cgroups.delegate(&key)?;
            handle.bpf_zone = self.bpf.allocate(setup.id);
            handle.cgroup = setup.cgroup_parent.as_ref().map(|_| key.clone());
            Ok(handle)
        }
        .await;
        match result {
            Ok(handle) => Ok(handle),
            Err(primary) => {
                let cleanup = self.destroy_zone(setup.id, None).await;
                Err(match cleanup {
                    Ok(()) => primary,
                    Err(c) => BackendError::Cleanup {
                        primary: Box::new(primary),
                        cleanup: Box::new(c),
                    },
                })
            }
        }
    }

    async fn destroy_zone(
        &self,
        zone_id: Uuid,
        handle: Option<&ZoneHandle>,
    ) -> Result<(), BackendError> {
        if let Some(h) = handle {
            if self.is_alive(h) {
                // SAFETY: kill takes plain integers; the pid was checked to
                // still be the zone's agent. Killing PID 1 of the zone's pid
                // namespace kills every process in it.
                unsafe { libc::kill(h.agent_pid as libc::pid_t, libc::SIGKILL) };
            }
        }
        if let Some(h) = handle {
            self.learn(h);
        }
        let cgroups = Arc::clone(&self.cgroups);
        let made = Arc::clone(&self.made_parents);
        let id = self.cgroup_key(zone_id);
        tokio::task::spawn_blocking(move || {
            cgroups.remove(&id)?;
            made.remove_unused(&*cgroups, &id)
        })
        .await
        .map_err(|e| BackendError::Task {
            what: "cgroup removal task",
            source: Box::new(e),
        })??;
        self.cgroup_paths
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&zone_id);
        host::remove_state_dir(&self.state_dir(zone_id))?;
        // Only once nothing of the zone is left may another zone have its
        // host ids.
        self.id_ranges.release(zone_id);
        Ok(())
    }

    fn is_alive(&self, handle: &ZoneHandle) -> bool {
        self.learn(handle);
        host::start_ticks(handle.agent_pid) == Some(handle.agent_start_ticks)
    }

    async fn connect(&self, handle: &ZoneHandle) -> Result<Box<dyn AgentStream>, BackendError> {
        let stream = UnixStream::connect(&handle.socket)
            .await
            .map_err(|source| BackendError::Connect {
                socket: handle.socket.clone(),
                source,
            })?;
        Ok(Box::new(stream))
    }

    fn update_limits(&self, zone_id: Uuid, policy: &Policy) -> Result<(), BackendError> {
        Ok(self
            .cgroups
            .set_limits(&self.cgroup_key(zone_id), &policy.resources)?)
    }

    fn workspace_upper(&self, zone_id: Uuid) -> PathBuf {
        self.state_dir(zone_id).join("workspace/upper")
    }

    fn set_paused(&self, zone_id: Uuid, paused: bool) -> Result<(), BackendError> {
        Ok(self.cgroups.set_frozen(&self.cgroup_key(zone_id), paused)?)
    }

    fn hardening(
        &self,
        policy: &Policy,
        root: &RootSpec,
        workspace: Option<&WorkspaceSpec>,
    ) -> Hardening {
        let fs = &policy.filesystem;
        let mut write: Vec<String> = vec!["/tmp".into(), "/dev".into()];
        write.extend(workspace.map(|w| w.target.clone()));
        write.extend(
            fs.writable_paths
                .iter()
                .filter(|p| p.as_str() != "/tmp")
                .cloned(),
        );
        let mut read = match root {
            RootSpec::HostView => {
                let mut r = fs.readable_paths.clone();
                r.push("/proc".into());
                r
            }
            RootSpec::Bundle { .. } | RootSpec::Image { .. } => vec!["/".into()],
        };
        if policy.pod.security.is_some() {
            // A pod policy: Landlock only where it lists paths. A pod's
            // container writes its image and volumes as under runc, and
            // a privileged one mounts (Landlock denies every mount).
            read = fs.readable_paths.clone();
            write = fs.writable_paths.clone();
        }
        Hardening {
            capabilities: policy
                .capabilities
                .allowed
                .iter()
                .filter_map(|c| capability_number(c))
                .collect(),
            deny_syscalls: policy
                .syscalls
                .deny
                .iter()
                .filter_map(|s| syscall_number(s))
                .collect(),
            landlock_read: read,
            landlock_write: write,
        }
    }

    fn usage(&self, zone_id: Uuid) -> Result<Usage, BackendError> {
        Ok(self.cgroups.usage(&self.cgroup_key(zone_id))?)
    }

    fn host_pid(&self, zone_id: Uuid, zone_pid: u32) -> Option<u32> {
        let pids = self.cgroups.pids(&self.cgroup_key(zone_id)).ok()?;
        pids.into_iter()
            .find(|p| host::innermost_pid(*p) == Some(zone_pid))
    }

    fn add_root(
        &self,
        zone: &ZoneHandle,
        name: &str,
        rootfs: &Path,
        flags: &rauha_backend::RootFlags,
        mounts: &[rauha_backend::RootMount],
        limits: &rauha_backend::RootLimits,
    ) -> Result<bool, BackendError> {
        let zone_id = zone.zone_id;
        let containers = self.state_dir(zone_id).join(CONTAINERS);
        if !containers.is_dir() {
            return Err(BackendError::NoContainerRoots);
        }
        let _one_at_a_time = self.roots_lock.lock().unwrap_or_else(|e| e.into_inner());
        let zone_ns = self.zone_mount_ns(zone).ok_or(BackendError::AgentGone)?;
        let image = if flags.image_layers.is_empty() {
            roots::RootImage::Dir(rootfs)
        } else {
            let rw = self.state_dir(zone_id).join(ROOT_LAYERS).join(name);
            roots::RootImage::Tree(image_root::container_tree(
                &rw,
                &flags.image_layers,
                flags.setuid,
            )?)
        };
        if let Err(e) = roots::add(&containers, &zone_ns, name, image, flags, mounts) {
            let _ = std::fs::remove_dir_all(self.state_dir(zone_id).join(ROOT_LAYERS).join(name));
            return Err(e);
        }
        // The cgroup last: the agent puts the container's processes in it
        // once it exists, and an added root is not used before this returns.
        match self
            .cgroups
            .create_root(&self.cgroup_key(zone_id), name, limits)
        {
            Ok(own) => Ok(own),
            Err(e) => {
                let _ = roots::remove(&containers, Some(&zone_ns), name);
                Err(e.into())
            }
        }
    }

    fn set_root_limits(
        &self,
        zone_id: Uuid,
        name: &str,
        limits: &rauha_backend::RootLimits,
    ) -> Result<bool, BackendError> {
        let containers = self.state_dir(zone_id).join(CONTAINERS);
        if !containers.join(name).is_dir() {
            return Err(BackendError::NoRoot(name.to_string()));
        }
        Ok(self
            .cgroups
            .set_root_limits(&self.cgroup_key(zone_id), name, limits)?)
    }

    fn root_cgroups_are_unified(&self) -> bool {
        // v1: a container's cgroups are in the v1 controllers only.
        self.cgroups.layout() == "v2"
    }

    fn root_usage(&self, zone_id: Uuid, name: &str) -> Result<Usage, BackendError> {
        let containers = self.state_dir(zone_id).join(CONTAINERS);
        if !containers.join(name).is_dir() {
            return Err(BackendError::NoRoot(name.to_string()));
        }
        Ok(self.cgroups.root_usage(&self.cgroup_key(zone_id), name)?)
    }

    fn remove_root(
        &self,
        zone_id: Uuid,
        live: Option<&ZoneHandle>,
        name: &str,
    ) -> Result<(), BackendError> {
        let _one_at_a_time = self.roots_lock.lock().unwrap_or_else(|e| e.into_inner());
        // What still runs in the container ends with its cgroup, first.
        self.cgroups.remove_root(&self.cgroup_key(zone_id), name)?;
        // No agent left: the zone's mount namespace, and the root's mounts
        // in it, went with it.
        let zone_ns = live.and_then(|h| self.zone_mount_ns(h));
        roots::remove(
            &self.state_dir(zone_id).join(CONTAINERS),
            zone_ns.as_ref(),
            name,
        )?;
        // An image root's writable layer (its overlay went with the mount).
        match std::fs::remove_dir_all(self.state_dir(zone_id).join(ROOT_LAYERS).join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(BackendError::Io {
                what: format!("cannot remove the writable layer of container root {name}"),
                source: e,
            }),
            _ => Ok(()),
        }
    }

    fn enforce(&self, zones: &[rauha_backend::EnforceZone<'_>]) -> Result<(), BackendError> {
        // The cgroup programs hang off rauhad's parent; a zone placed in
        // another cgroup gets them on its own.
        let outside: Vec<(Uuid, PathBuf)> = zones
            .iter()
            .filter_map(|z| {
                let path = z.handle.cgroup.as_ref()?;
                Some((z.id, self.cgroups.unified_dir(path)?))
            })
            .collect();
        self.bpf.attach_outside(&outside)?;
        self.bpf
            .sync(zones, |id| self.cgroups.unified_ids(&self.cgroup_key(id)))
    }

    fn denials(&self) -> Vec<rauha_backend::Denial> {
        self.bpf.denials()
    }

    fn zone_enforcement(&self, handle: &ZoneHandle, policy: &Policy) -> Enforcement {
        let outside = handle.cgroup.as_ref();
        let cgroup_programs = if outside.is_some() && !self.bpf.attached_outside(handle.zone_id) {
            Err(format!(
                "the cgroup programs are not attached to the zone's cgroup {} (outside rauhad's cgroup parent)",
                outside.map(String::as_str).unwrap_or_default()
            ))
        } else {
            // What is reported is what the kernel runs for this zone's
            // cgroup, not what rauhad believes it attached.
            match self.cgroups.unified_dir(&self.cgroup_key(handle.zone_id)) {
                Some(dir) => self
                    .bpf
                    .verify_attached(&dir, handle.zone_id, outside.is_some()),
                None => Ok(()),
            }
        };
        enforcement::for_zone(
            &self.node_layers,
            self.cgroups.layout(),
            handle,
            policy,
            cgroup_programs,
        )
    }

    fn verify(&self, handle: &ZoneHandle, policy: &Policy) -> Vec<Check> {
        let mut checks =
            enforcement::verify(self.cgroups.as_ref(), handle, policy, self.is_alive(handle));
        checks.extend(self.bpf.checks());
        checks
    }

    fn cleanup_orphans(&self, known: &[Uuid]) -> Result<Vec<String>, BackendError> {
        let mut removed = Vec::new();
        let known_names: Vec<String> = known.iter().map(Uuid::to_string).collect();
        for name in self.cgroups.list()? {
            // Not a zone's: the parent a client named for its zones by a
            // relative cgroup_parent (they go with their last zone).
            if Uuid::parse_str(&name).is_err() {
                continue;
            }
            if !known_names.contains(&name) {
                self.cgroups.remove(&name)?;
                removed.push(format!("cgroup {name}"));
            }
        }
        let zones_dir = self.root.join("zones");
        if let Ok(entries) = std::fs::read_dir(&zones_dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !known_names.contains(&name) {
                    host::remove_state_dir(&entry.path())?;
                    removed.push(format!("state dir {name}"));
                }
            }
        }
        for mount in host::mounts_under(&zones_dir) {
            let owner_known = known_names
                .iter()
                .any(|k| mount.starts_with(zones_dir.join(k)));
            if !owner_known {
                host::detach(&mount);
                removed.push(format!("mount {}", mount.display()));
            }
        }
        Ok(removed)
    }
}

/// Host id ranges of zones in a user namespace: zone ids 0-65535 map to
/// `FIRST_ID + slot * 65536` onwards, one slot per live zone. Above the
/// ranges `/etc/subuid` hands out in practice, below 2^31.
#[derive(Default)]
struct IdRanges {
    held: std::sync::Mutex<std::collections::HashMap<Uuid, u32>>,
}

const FIRST_ID: u32 = 1 << 30;
const ID_SLOTS: u32 = (1 << 30) / 65_536;

impl IdRanges {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<Uuid, u32>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The zone's range's first host id: its own if it has one, else the
    /// lowest free.
    fn allocate(&self, zone: Uuid) -> Result<u32, BackendError> {
        let mut held = self.lock();
        if let Some(base) = held.get(&zone) {
            return Ok(*base);
        }
        let used: std::collections::HashSet<u32> = held.values().copied().collect();
        let base = (0..ID_SLOTS)
            .map(|slot| FIRST_ID + slot * 65_536)
            .find(|b| !used.contains(b))
            .ok_or(BackendError::Incomplete("every host id range is in use"))?;
        held.insert(zone, base);
        Ok(base)
    }

    /// A live zone's range, learnt again (after a restart).
    fn hold(&self, zone: Uuid, base: u32) {
        self.lock().insert(zone, base);
    }

    fn release(&self, zone: Uuid) {
        self.lock().remove(&zone);
    }
}

#[cfg(test)]
mod id_range_tests {
    use super::*;

    #[test]
    fn each_live_zone_has_a_range_of_its_own() {
        let r = IdRanges::default();
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let ra = r.allocate(a).unwrap();
        let rb = r.allocate(b).unwrap();
        assert_eq!(ra, FIRST_ID);
        assert_eq!(rb, FIRST_ID + 65_536);
        assert_eq!(r.allocate(a).unwrap(), ra, "a zone keeps its range");
        r.release(a);
        assert_eq!(r.allocate(c).unwrap(), ra, "a released range is reused");
        // After a restart the ranges of live zones are learnt again first.
        let again = IdRanges::default();
        again.hold(b, rb);
        assert_eq!(again.allocate(a).unwrap(), FIRST_ID);
        assert_ne!(again.allocate(c).unwrap(), rb);
    }
}
