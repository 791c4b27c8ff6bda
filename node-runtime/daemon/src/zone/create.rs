//! Creating a zone: record it, build it, connect to its agent.

use rauha_spec::enforcement::{EnforcementMode, Layer};
use rauha_spec::event::EventKind;
use rauha_spec::names::validate_zone_name;
use rauha_spec::{Policy, RootSpec, WorkspaceSpec, ZoneState};
use uuid::Uuid;

use super::ZoneRegistry;
use crate::error::DaemonError;
use crate::events::now_ms;
use crate::store::{StoreError, ZoneRecord};
use rauha_backend::ZoneSetup;

/// The host's network namespace, as a path the zone's agent (rauhad's child,
/// in rauhad's namespace until it joins) opens as its own.
const HOST_NETNS: &str = "/proc/self/ns/net";

/// What a new zone is for.
pub struct NewZone {
    pub name: String,
    pub policy: Policy,
    pub root: RootSpec,
    pub task_id: Option<Uuid>,
    pub ephemeral: bool,
    pub workspace: Option<WorkspaceSpec>,
    pub ttl_ms: Option<u64>,
    /// A network namespace to join (checked: it is one).
    pub netns: Option<String>,
    /// A cgroup path (from the hierarchy's root) to create the zone's in.
    pub cgroup_parent: Option<String>,
}

impl ZoneRegistry {
    pub async fn create_zone(&self, new: NewZone) -> Result<ZoneRecord, DaemonError> {
        validate_zone_name(&new.name).map_err(|e| DaemonError::invalid("name", e.to_string()))?;
        // A delete of this name waits until the zone is whole (or refused).
        let _one = self.lifecycle(&new.name).await;
        let joined = new.policy.network.mode == rauha_spec::policy::NetworkMode::Joined;
        if joined != new.netns.is_some() {
            return Err(DaemonError::invalid(
                "netns",
                if joined {
                    "is empty, but the policy's network.mode is \"joined\"; give the namespace to join (--netns /run/netns/NAME)"
                } else {
                    "is given, but the policy's network.mode is not \"joined\"; set mode = \"joined\" or drop --netns"
                },
            ));
        }
        if let (Some(level), RootSpec::HostView) = (new.policy.pod.security, &new.root) {
            return Err(DaemonError::invalid(
                "policy",
                format!(
                    "{:?} is a pod policy (its [pod] section holds a pod's containers to the {level} Pod Security level) and shows a zone none of the host; give a zone or task a zone preset ({})",
                    new.policy.zone.name.as_deref().unwrap_or(level.name()),
                    rauha_spec::presets::zone_names().join(", ")
                ),
            ));
        }
        let privileged =
            new.policy.pod.security == Some(rauha_spec::pod_security::Level::Privileged);
        for (asked, key, what) in [
            (new.policy.zone.host_ipc, "host_ipc", "IPC"),
            (new.policy.zone.host_pid, "host_pid", "PID"),
        ] {
            if asked && !privileged {
                return Err(DaemonError::invalid(
                    "policy",
                    format!("zone.{key} = true shares the host's {what} namespace, which only a pod policy of the privileged level allows ([pod] security = \"privileged\"); drop {key}"),
                ));
            }
        }
        let host_network = new.policy.network.mode == rauha_spec::policy::NetworkMode::Host;
        if host_network && !privileged {
            return Err(DaemonError::invalid(
                "policy",
                "network.mode = \"host\" shares the host's network namespace (its interfaces, and every service listening on its 127.0.0.1), which only a pod policy of the privileged level allows ([pod] security = \"privileged\"); use mode = \"bridged\" to reach the network",
            ));
        }
        let mut new = new;
        if host_network {
            // rauhad's own namespace, the host's: the zone's agent joins it.
            new.netns = Some(HOST_NETNS.to_string());
        }
        if new.policy.zone.host_ipc {
            // They would be the host's (Kubernetes refuses them with hostIPC).
            let ipc = ["kernel.shm", "kernel.msg", "kernel.sem", "fs.mqueue."];
            if let Some(k) = new
                .policy
                .zone
                .sysctls
                .keys()
                .find(|k| ipc.iter().any(|p| k.starts_with(p)))
            {
                return Err(DaemonError::invalid(
                    "policy",
                    format!("zone.sysctls sets {k}, an IPC sysctl, with zone.host_ipc = true: it would change the host's; drop one of them"),
                ));
            }
        }
        // New zones go to the node's default backend; the record names it,
        // so every later operation reaches the same one.
        let backend = std::sync::Arc::clone(self.backends.default_backend());
        if self.mode == EnforcementMode::Required {
            let node = backend.node_layers();
            if let Some(missing) = node
                .iter()
                .find(|l| l.layer == Layer::BpfLsm && !l.in_force)
            {
                return Err(DaemonError::EnforcementMissing {
                    detail: missing.detail.clone(),
                });
            }
        }
        let mut record = ZoneRecord {
            id: Uuid::new_v4(),
            name: new.name,
            state: ZoneState::Creating,
            policy: new.policy,
            root: new.root,
            created_ms: now_ms(),
            task_id: new.task_id,
            ephemeral: new.ephemeral,
            handle: None,
            workspace: new.workspace,
            ttl_ms: new.ttl_ms,
            netns: new.netns,
            cgroup_parent: new.cgroup_parent,
            backend: backend.name().to_string(),
        };
        match self.store.insert_zone(&record) {
            Ok(()) => {}
            Err(StoreError::NameTaken(name)) => return Err(DaemonError::AlreadyExists(name)),
            Err(e) => return Err(e.into()),
        }
        let built = async {
            // A bridged zone's namespace is made (and on the bridge) before
            // the zone: its agent joins it as it would a pod's.
            let mut resolv_conf = None;
            if super::network::is_bridged(&record.policy) {
                let rules = self.rules_guard().await;
                self.check_published(&record, &[])?;
                let (netns, resolv) = self.attach_network(&record).await?;
                drop(rules);
                record.netns = Some(netns);
                resolv_conf = Some(resolv);
                self.store.put_zone(&record)?;
            }
            let setup = ZoneSetup {
                id: record.id,
                name: record.name.clone(),
                policy: record.policy.clone(),
                root: record.root.clone(),
                workspace: record.workspace.clone(),
                netns: record.netns.clone(),
                resolv_conf,
                cgroup_parent: record.cgroup_parent.clone(),
            };
            let handle = backend.create_zone(&setup).await?;
            record.handle = Some(handle.clone());
            self.store.put_zone(&record)?;
            // In the maps before any work starts in the zone.
            self.sync_enforcement()?;
            self.connect(backend.as_ref(), record.id, &record.name, &handle)
                .await?;
            Ok::<_, DaemonError>(())
        }
        .await;
        if let Err(e) = built {
            // Undo everything; report the failure and, if undoing failed
            // too, that as well. Kernel objects a failed destroy leaves are
            // orphans that the next start removes.
            let destroyed = backend
                .destroy_zone(record.id, record.handle.as_ref())
                .await
                .map_err(DaemonError::from);
            let destroyed = match self.detach_network(&record).await {
                Ok(()) => destroyed,
                Err(e) => destroyed.and(Err(e)),
            };
            self.take_live(&record.id);
            let removed = self
                .store
                .remove_zone(&record.id)
                .map_err(DaemonError::from);
            let cleanup = destroyed.and(removed).and(self.sync_enforcement());
            return Err(match cleanup {
                Ok(()) => e,
                Err(c) => {
                    tracing::error!(zone = %record.name, error = %c, "cleanup after a failed create also failed");
                    DaemonError::Cleanup {
                        primary: Box::new(e),
                        cleanup: Box::new(c),
                    }
                }
            });
        }
        record.state = ZoneState::Created;
        self.store.put_zone(&record)?;
        self.events.emit(
            EventKind::ZoneCreated,
            Some((record.id, &record.name)),
            record.task_id,
            "zone created",
        );
        Ok(record)
    }
}
