//! Deleting a zone: refuse while work runs unless forced, then tear down.

use rauha_spec::event::EventKind;
use rauha_spec::ZoneState;

use super::{ProcessEnd, ZoneRegistry};
use crate::error::DaemonError;
use crate::store::ZoneRecord;

impl ZoneRegistry {
    pub async fn delete_zone(&self, zone: &str, force: bool) -> Result<(), DaemonError> {
        let found = self.find_zone(zone)?;
        let _one = self.lifecycle(&found.name).await;
        // A delete that ran while this one waited removed the zone named:
        // done, as asked (the shim retries deletes). Only that one tore it
        // down.
        let Some(record) = self.store.zone(&found.id)? else {
            return Ok(());
        };
        let running = self.running_in(&record.id);
        if !running.is_empty() && !force {
            return Err(DaemonError::ZoneBusy {
                zone: record.name.clone(),
                count: running.len(),
            });
        }
        self.destroy(record).await
    }

    /// Tears a zone down whatever its state, and forgets it.
    pub(crate) async fn destroy(&self, mut record: ZoneRecord) -> Result<(), DaemonError> {
        record.state = ZoneState::Deleting;
        self.store.put_zone(&record)?;
        self.take_live(&record.id);
        self.backends
            .of(&record)?
            .destroy_zone(record.id, record.handle.as_ref())
            .await?;
        for p in self.running_in(&record.id) {
            self.finish_process(p.id, ProcessEnd::Lost);
        }
        self.detach_network(&record).await?;
        let ids: Vec<_> = self
            .store
            .processes()?
            .into_iter()
            .filter(|p| p.zone_id == record.id)
            .map(|p| p.id)
            .collect();
        for id in &ids {
            self.untrack(id);
        }
        self.store.remove_zone(&record.id)?;
        self.denied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&record.id);
        if let Err(e) = self.sync_enforcement() {
            tracing::error!(zone = %record.name, error = %e, "cannot drop a deleted zone from the BPF maps");
        }
        self.events.emit(
            EventKind::ZoneDeleted,
            Some((record.id, &record.name)),
            record.task_id,
            "zone deleted",
        );
        Ok(())
    }
}
