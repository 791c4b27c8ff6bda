//! Keeping the kernel enforcement layers in step with the zones, and
//! turning their denials into events and task results.

use std::sync::Arc;
use std::time::Duration;

use rauha_spec::event::EventKind;
use rauha_spec::EnforcementEvent;
use uuid::Uuid;

use super::ZoneRegistry;
use crate::error::DaemonError;
use crate::events::now_ms;
use rauha_backend::EnforceZone;

/// How often deny events are collected (reading the ring is a memory read).
const DENIAL_TICK: Duration = Duration::from_millis(100);
/// Denials kept per zone for its task result.
const MAX_DENIALS_PER_ZONE: usize = 1000;

impl ZoneRegistry {
    /// Gives the enforcement layers every zone that has kernel objects.
    pub fn sync_enforcement(&self) -> Result<(), DaemonError> {
        let zones = self.store.zones()?;
        let leases = self.store.leases()?;
        let policies: Vec<_> = zones
            .iter()
            .map(|z| self.enforced_policy(z, &leases, &zones))
            .collect();
        for backend in self.backends.all() {
            let live: Vec<EnforceZone<'_>> = zones
                .iter()
                .filter(|z| {
                    self.backends
                        .of(z)
                        .is_ok_and(|b| std::sync::Arc::ptr_eq(b, backend))
                })
                .filter_map(|z| {
                    let i = zones.iter().position(|o| o.id == z.id)?;
                    z.handle.as_ref().map(|handle| EnforceZone {
                        id: z.id,
                        name: &z.name,
                        policy: &policies[i],
                        handle,
                    })
                })
                .collect();
            backend.enforce(&live)?;
        }
        Ok(())
    }

    /// Collects the denials reported so far: one event each on the watch
    /// stream, and kept for the zone's task result.
    pub fn collect_denials(&self) {
        let denials: Vec<_> = self.backends.all().flat_map(|b| b.denials()).collect();
        if denials.is_empty() {
            return;
        }
        let zones = self.store.zones().unwrap_or_default();
        let by_index = |index: u32| {
            zones
                .iter()
                .find(|z| index != 0 && z.handle.as_ref().is_some_and(|h| h.bpf_zone == index))
        };
        for d in denials {
            let Some(zone) = by_index(d.zone) else {
                tracing::warn!(zone = d.zone, hook = %d.hook, "denial in a zone rauhad does not know");
                continue;
            };
            let mut other = by_index(d.target_zone)
                .map(|z| format!(" (zone {})", z.name))
                .unwrap_or_default();
            // A bridged zone's destination: the name it came from, if any.
            if let (Some(net), Ok(to)) = (
                self.network(),
                d.target.to_string().parse::<std::net::SocketAddr>(),
            ) {
                if other.is_empty() && super::network::is_bridged(&zone.policy) {
                    other = net.describe(zone.id, to.ip());
                }
            }
            let event = EnforcementEvent {
                time_ms: now_ms(),
                zone_id: zone.id,
                pid: d.pid,
                hook: d.hook.clone(),
                target: format!("{}{other}", d.target),
                errno: d.errno,
            };
            self.events.emit(
                EventKind::EnforcementDenied,
                Some((zone.id, &zone.name)),
                None,
                format!(
                    "{} denied {}[{}]: {} (errno {})",
                    event.hook, d.comm, d.pid, event.target, d.errno
                ),
            );
            let mut kept = self.denied.lock().unwrap_or_else(|p| p.into_inner());
            let list = kept.entry(zone.id).or_default();
            if list.len() < MAX_DENIALS_PER_ZONE {
                list.push(event);
            }
        }
    }

    /// A name the zones' resolver refused to a zone: an enforcement event
    /// like a kernel denial (hook `dns`, the name as the target, errno
    /// EPERM: what the policy said), so a task's result says which names
    /// its work asked for and did not get.
    pub fn record_dns_refusal(&self, zone: Uuid, name: &str) {
        let Ok(Some(record)) = self.store.zone(&zone) else {
            return;
        };
        let event = EnforcementEvent {
            time_ms: now_ms(),
            zone_id: zone,
            pid: 0,
            hook: "dns".into(),
            target: format!("{name} (not in network.allowed_egress_domains)"),
            errno: 1,
        };
        {
            let mut kept = self.denied.lock().unwrap_or_else(|p| p.into_inner());
            let list = kept.entry(zone).or_default();
            // One event per name (a resolver asks again and again), and
            // none past the zone's cap: a flood of names is not a flood of
            // events.
            if list.len() >= MAX_DENIALS_PER_ZONE
                || list
                    .iter()
                    .any(|e| e.hook == "dns" && e.target == event.target)
            {
                return;
            }
            list.push(event.clone());
        }
        self.events.emit(
            EventKind::EnforcementDenied,
            Some((zone, &record.name)),
            None,
            format!("dns refused {}", event.target),
        );
    }

    /// The denials of a zone collected so far, removed from the registry.
    pub fn take_denials(&self, zone: &Uuid) -> Vec<EnforcementEvent> {
        self.collect_denials();
        self.denied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(zone)
            .unwrap_or_default()
    }

    /// Collects denials until the registry is dropped.
    pub fn spawn_denial_collector(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(DENIAL_TICK).await;
                let Some(registry) = me.upgrade() else { return };
                registry.collect_denials();
            }
        });
    }
}
