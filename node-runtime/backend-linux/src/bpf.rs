//! The BPF layers on the Linux backend: the enforcer from `rauha-ebpf`,
//! zone indices, map syncs, and deny events.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rauha_ebpf::loader::{EnforcedZone, Enforcer, EventReader, HookLayer, HookStatus};
use rauha_ebpf::maps::{InodeKey, ZoneIndex};
use rauha_ebpf::policy::{zone_pairs, ZoneRef, ZoneRules};
use rauha_spec::enforcement::{Layer, LayerStatus};
use uuid::Uuid;

use rauha_backend::{BackendError, Check, Denial, EnforceZone};

pub struct Bpf {
    enforcer: Option<Mutex<Enforcer>>,
    events: Option<Mutex<EventReader>>,
    hooks: Vec<HookStatus>,
    /// Why nothing could be loaded, when so.
    unavailable: Option<String>,
    /// Indices handed out and not yet released, by zone.
    indices: Mutex<BTreeMap<Uuid, ZoneIndex>>,
}

impl Bpf {
    /// Loads and attaches what the kernel allows. Never fails: what did not
    /// load is reported as a missing layer.
    pub fn start(pin_dir: &Path, cgroup: Option<&Path>) -> Bpf {
        mount_bpffs_if_missing(pin_dir);
        match Enforcer::start(pin_dir, cgroup) {
            Ok(mut enforcer) => {
                let events = enforcer.take_events().ok().map(Mutex::new);
                let hooks = enforcer.hooks().to_vec();
                for h in &hooks {
                    tracing::info!(hook = h.name, live = h.live, "{}", h.detail);
                }
                Bpf {
                    enforcer: Some(Mutex::new(enforcer)),
                    events,
                    hooks,
                    unavailable: None,
                    indices: Mutex::new(BTreeMap::new()),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "no BPF programs loaded");
                Bpf {
                    enforcer: None,
                    events: None,
                    hooks: Vec::new(),
                    unavailable: Some(e.to_string()),
                    indices: Mutex::new(BTreeMap::new()),
                }
            }
        }
    }

    fn live(&self, layer: HookLayer) -> bool {
        let mut of_layer = self.hooks.iter().filter(|h| h.layer == layer).peekable();
        of_layer.peek().is_some() && of_layer.all(|h| h.live)
    }

    pub fn lsm_live(&self) -> bool {
        self.live(HookLayer::BpfLsm)
    }

    /// Why BPF-LSM is not in force, naming the hooks that are not
    /// attached, grouped by reason, on one line.
    pub fn lsm_reason(&self, kernel: &str) -> String {
        if let Some(why) = &self.unavailable {
            return format!("{kernel}; {why}");
        }
        let mut by_reason: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for h in self
            .hooks
            .iter()
            .filter(|h| h.layer == HookLayer::BpfLsm && !h.live)
        {
            by_reason.entry(h.detail.as_str()).or_default().push(h.name);
        }
        let parts: Vec<String> = by_reason
            .iter()
            .map(|(why, names)| format!("{} not attached: {why}", names.join(", ")))
            .collect();
        format!("{kernel}; {}", parts.join("; "))
    }

    /// Detaches what this run attached (not what an earlier run left
    /// pinned): used when rauhad refuses to start.
    pub fn detach_new(&self, pin_dir: &Path) {
        for h in self
            .hooks
            .iter()
            .filter(|h| h.live && !h.detail.starts_with("attached (kept"))
        {
            let _ = std::fs::remove_file(pin_dir.join("links").join(h.name));
        }
    }

    /// The two BPF layers as the node has them.
    pub fn layers(&self, kernel_lsm: &str) -> [LayerStatus; 2] {
        let names = |layer: HookLayer| {
            self.hooks
                .iter()
                .filter(|h| h.layer == layer && h.live)
                .map(|h| h.name)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let network = self
            .enforcer
            .as_ref()
            .is_some_and(|e| e.lock().map(|e| e.network_live()).unwrap_or(false));
        [
            LayerStatus {
                layer: Layer::CgroupBpf,
                in_force: network,
                detail: if network {
                    format!("attached: {}", names(HookLayer::CgroupBpf))
                } else if let Some(why) = &self.unavailable {
                    why.clone()
                } else {
                    self.hooks
                        .iter()
                        .filter(|h| h.layer == HookLayer::CgroupBpf && !h.live)
                        .map(|h| format!("{}: {}", h.name, h.detail))
                        .collect::<Vec<_>>()
                        .join("; ")
                },
            },
            LayerStatus {
                layer: Layer::BpfLsm,
                in_force: self.lsm_live(),
                detail: if self.lsm_live() {
                    format!("attached: {}", names(HookLayer::BpfLsm))
                } else {
                    self.lsm_reason(kernel_lsm)
                },
            },
        ]
    }

    /// One `zone verify` line per program.
    pub fn checks(&self) -> Vec<Check> {
        if let Some(why) = &self.unavailable {
            return vec![Check {
                name: "bpf programs".into(),
                ok: false,
                detail: why.clone(),
            }];
        }
        self.hooks
            .iter()
            .map(|h| Check {
                name: format!(
                    "{} {}",
                    match h.layer {
                        HookLayer::BpfLsm => "lsm",
                        HookLayer::CgroupBpf => "cgroup",
                    },
                    h.name
                ),
                ok: h.live,
                detail: h.detail.clone(),
            })
            .collect()
    }

    /// The lowest index no live zone has.
    pub fn allocate(&self, zone: Uuid) -> ZoneIndex {
        let mut indices = self.indices.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = indices.get(&zone) {
            return *i;
        }
        let used: BTreeSet<ZoneIndex> = indices.values().copied().collect();
        let index = (1..).find(|i| !used.contains(i)).unwrap_or(1);
        indices.insert(zone, index);
        index
    }

    /// Makes the maps hold exactly `zones`.
    pub fn sync(
        &self,
        zones: &[EnforceZone<'_>],
        cgroup_ids: impl Fn(Uuid) -> Vec<u64>,
    ) -> Result<(), BackendError> {
        {
            let mut indices = self.indices.lock().unwrap_or_else(|p| p.into_inner());
            indices.clear();
            for z in zones.iter().filter(|z| z.handle.bpf_zone != 0) {
                indices.insert(z.id, z.handle.bpf_zone);
            }
        }
        let Some(enforcer) = &self.enforcer else {
            return Ok(());
        };
        let mut entries = Vec::new();
        for z in zones.iter().filter(|z| z.handle.bpf_zone != 0) {
            let rules =
                ZoneRules::from_policy(z.policy).map_err(|e| BackendError::Enforcement {
                    what: format!("zone {}", z.name),
                    source: Box::new(e),
                })?;
            let owned = [z.handle.state_dir.as_path()]
                .iter()
                .filter_map(|p| std::fs::metadata(p).ok())
                .map(|m| InodeKey::from_metadata(&m))
                .collect();
            entries.push(EnforcedZone {
                index: z.handle.bpf_zone,
                cgroups: cgroup_ids(z.id),
                rules,
                owned,
            });
        }
        let refs: Vec<ZoneRef<'_>> = zones
            .iter()
            .filter(|z| z.handle.bpf_zone != 0)
            .map(|z| ZoneRef {
                index: z.handle.bpf_zone,
                name: z.name,
                allowed_zones: &z.policy.network.allowed_zones,
            })
            .collect();
        let pairs = zone_pairs(&refs);
        enforcer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .sync(&entries, &pairs)
            .map_err(|e| BackendError::Enforcement {
                what: "BPF maps".into(),
                source: Box::new(e),
            })
    }

    /// Attaches the cgroup programs to the cgroups of zones outside rauhad's
    /// parent (`(zone, unified cgroup dir)`), and detaches them from zones
    /// no longer listed.
    pub fn attach_outside(&self, zones: &[(Uuid, PathBuf)]) -> Result<(), BackendError> {
        let Some(enforcer) = &self.enforcer else {
            return Ok(());
        };
        let mut e = enforcer.lock().unwrap_or_else(|p| p.into_inner());
        let keep: Vec<String> = zones.iter().map(|(id, _)| id.to_string()).collect();
        e.detach_zones_except(&keep);
        for (id, dir) in zones {
            // One zone's failure (e.g. its pod cgroup was removed) must not
            // stop the others; the zone reports cgroup_bpf not in force.
            if let Err(err) = e.attach_zone(&id.to_string(), dir) {
                tracing::warn!(zone = %id, error = %err, "cgroup programs not attached to the zone's cgroup");
            }
        }
        Ok(())
    }

    /// Whether the node's cgroup programs run for the processes of the
    /// zone's cgroup (`dir`, on the unified hierarchy), by the kernel's
    /// list of its effective programs: `Err` says which do not.
    /// `own_links`: the zone is outside rauhad's parent, with links of
    /// its own.
    pub fn verify_attached(&self, dir: &Path, zone: Uuid, own_links: bool) -> Result<(), String> {
        let Some(enforcer) = &self.enforcer else {
            return Ok(());
        };
        let key = zone.to_string();
        let missing = enforcer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .missing_on(dir, own_links.then_some(key.as_str()))
            .map_err(|e| {
                format!(
                    "cannot list the programs attached to the zone's cgroup {}: {e}",
                    dir.display()
                )
            })?;
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "not attached to the zone's cgroup (the kernel does not run them for it): {}",
                missing.join(", ")
            ))
        }
    }

    /// Whether a zone outside rauhad's parent has the cgroup programs on
    /// its own cgroup.
    pub fn attached_outside(&self, zone: Uuid) -> bool {
        self.enforcer.as_ref().is_some_and(|e| {
            e.lock()
                .unwrap_or_else(|p| p.into_inner())
                .zone_attached(&zone.to_string())
        })
    }

    /// Deny events written since the last call.
    pub fn denials(&self) -> Vec<Denial> {
        let Some(events) = &self.events else {
            return Vec::new();
        };
        let raw = events.lock().unwrap_or_else(|p| p.into_inner()).drain();
        raw.into_iter()
            .map(|e| Denial {
                zone: e.zone,
                pid: e.pid,
                hook: e
                    .hook()
                    .map_or_else(|| format!("hook {}", e.hook), |h| h.name().to_string()),
                target: e.target().to_string(),
                target_zone: e.target_zone,
                errno: -e.err,
                comm: e.comm(),
            })
            .collect()
    }
}

/// systemd mounts bpffs at /sys/fs/bpf at boot; where nothing did, rauhad
/// does, so that pinned programs outlive it.
fn mount_bpffs_if_missing(pin_dir: &Path) {
    let base = Path::new("/sys/fs/bpf");
    if !pin_dir.starts_with(base) || rauha_ebpf::loader::on_bpffs(base) {
        return;
    }
    let Ok(target) = std::ffi::CString::new("/sys/fs/bpf") else {
        return;
    };
    // SAFETY: mount with NUL-terminated strings we own.
    let r = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        )
    };
    if r != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot mount bpffs at /sys/fs/bpf");
    }
}
