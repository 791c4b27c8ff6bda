//! Zone lifecycle transitions: pause, resume, stop, and the move to
//! `running` when work starts. Each is checked against the current state,
//! persisted, and published as a `zone_state_changed` event.

use rauha_spec::event::EventKind;
use rauha_spec::ZoneState;

use super::{ProcessEnd, ZoneRegistry};
use crate::error::DaemonError;
use crate::store::ZoneRecord;

impl ZoneRegistry {
    /// Persists a new state and publishes the transition.
    pub(crate) fn transition(
        &self,
        record: &mut ZoneRecord,
        to: ZoneState,
    ) -> Result<(), DaemonError> {
        let from = record.state;
        if from == to {
            return Ok(());
        }
        record.state = to;
        self.store.put_zone(record)?;
        self.events.emit(
            EventKind::ZoneStateChanged,
            Some((record.id, &record.name)),
            record.task_id,
            format!("{} -> {}", from.as_str(), to.as_str()),
        );
        Ok(())
    }

    fn refuse(record: &ZoneRecord, action: &str, allowed: &str) -> DaemonError {
        DaemonError::ZoneState {
            zone: record.name.clone(),
            state: record.state.as_str(),
            rule: format!("only a {allowed} zone can be {action}"),
        }
    }

    /// Freezes every process of the zone's work; the agent keeps answering.
    pub async fn pause_zone(&self, zone: &str) -> Result<ZoneRecord, DaemonError> {
        let mut record = self.find_zone(zone)?;
        if !record.state.can_pause() {
            return Err(Self::refuse(&record, "paused", "running"));
        }
        self.backends.of(&record)?.set_paused(record.id, true)?;
        self.transition(&mut record, ZoneState::Paused)?;
        Ok(record)
    }

    pub async fn resume_zone(&self, zone: &str) -> Result<ZoneRecord, DaemonError> {
        let mut record = self.find_zone(zone)?;
        if !record.state.can_resume() {
            return Err(Self::refuse(&record, "resumed", "paused"));
        }
        self.backends.of(&record)?.set_paused(record.id, false)?;
        self.transition(&mut record, ZoneState::Running)?;
        Ok(record)
    }

    /// Kills every process of the zone's work; the zone stays, and new work
    /// may start in it again.
    pub async fn stop_zone(&self, zone: &str) -> Result<ZoneRecord, DaemonError> {
        let mut record = self.find_zone(zone)?;
        if !record.state.can_stop() {
            return Err(Self::refuse(
                &record,
                "stopped",
                "created, running or paused",
            ));
        }
        let live = self
            .live_zone(&record.id)
            .ok_or_else(|| DaemonError::NoAgent {
                zone: record.name.clone(),
                hint: "; delete it",
            })?;
        if record.state == ZoneState::Paused {
            self.backends.of(&record)?.set_paused(record.id, false)?;
        }
        live.link.signal_all(libc::SIGKILL).await?;
        for p in self.running_in(&record.id) {
            if tokio::time::timeout(std::time::Duration::from_secs(5), p.wait())
                .await
                .is_err()
            {
                self.finish_process(p.id, ProcessEnd::Lost);
            }
        }
        self.transition(&mut record, ZoneState::Stopped)?;
        Ok(record)
    }
}
