//! Kept zones with a TTL are deleted after that much idle time (no running
//! process). Idleness is measured by this daemon: after a restart a kept
//! zone's idle time starts again.

use std::sync::Arc;
use std::time::Duration;

use rauha_spec::event::EventKind;

use super::ZoneRegistry;
use crate::events::now_ms;
use crate::store::ZoneRecord;

const TICK: Duration = Duration::from_millis(200);

impl ZoneRegistry {
    /// Time left before an idle kept zone is deleted (the whole TTL while
    /// it is busy); `None` without a TTL.
    pub fn ttl_remaining_ms(&self, zone: &ZoneRecord) -> Option<u64> {
        let ttl = zone.ttl_ms?;
        let idle = self
            .idle_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&zone.id)
            .copied();
        Some(match idle {
            Some(since) => ttl.saturating_sub(now_ms().saturating_sub(since)),
            None => ttl,
        })
    }

    /// One pass: updates idleness and deletes zones whose TTL ran out.
    async fn reap_idle(&self) {
        let Ok(zones) = self.store.zones() else {
            return;
        };
        let now = now_ms();
        let mut expired = Vec::new();
        {
            let mut idle = self.idle_since.lock().unwrap_or_else(|e| e.into_inner());
            idle.retain(|id, _| zones.iter().any(|z| z.id == *id));
            for z in zones
                .iter()
                .filter(|z| z.ttl_ms.is_some() && z.state.is_live())
            {
                if !self.running_in(&z.id).is_empty() {
                    idle.remove(&z.id);
                    continue;
                }
                let since = *idle.entry(z.id).or_insert(now);
                if now.saturating_sub(since) >= z.ttl_ms.unwrap_or(u64::MAX) {
                    expired.push(z.clone());
                }
            }
        }
        for z in expired {
            let ttl = z.ttl_ms.unwrap_or_default();
            let (id, name) = (z.id, z.name.clone());
            match self.destroy(z).await {
                Ok(()) => {
                    self.events.emit(
                        EventKind::ZoneExpired,
                        Some((id, &name)),
                        None,
                        format!("deleted after {ttl} ms idle"),
                    );
                }
                Err(e) => {
                    tracing::error!(zone = %name, error = %e, "cannot delete an expired zone")
                }
            }
        }
    }

    /// Runs the TTL reaper until the registry is dropped.
    pub fn spawn_ttl_reaper(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(TICK).await;
                let Some(registry) = me.upgrade() else { return };
                registry.reap_idle().await;
            }
        });
    }
}
