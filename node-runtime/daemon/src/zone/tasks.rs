//! Task history: listing stored results and enforcing retention.

use rauha_spec::event::EventKind;

use super::ZoneRegistry;
use crate::error::DaemonError;
use crate::events::now_ms;
use crate::store::TaskRecord;

impl ZoneRegistry {
    /// Tasks, newest first; at most `limit` when given.
    pub fn list_tasks(&self, limit: Option<usize>) -> Result<Vec<TaskRecord>, DaemonError> {
        let mut tasks = self.store.tasks()?;
        tasks.sort_by(|a, b| b.started_ms.cmp(&a.started_ms).then(b.id.cmp(&a.id)));
        if let Some(n) = limit {
            tasks.truncate(n);
        }
        Ok(tasks)
    }

    /// Applies the retention settings to finished tasks.
    pub fn prune_tasks(&self) -> Result<(), DaemonError> {
        let min_started = self
            .retention
            .max_age
            .map(|age| now_ms().saturating_sub(u64::try_from(age.as_millis()).unwrap_or(u64::MAX)));
        let removed = self.store.prune_tasks(
            self.retention.keep_last,
            min_started,
            self.retention.max_bytes,
        )?;
        if removed > 0 {
            self.events.emit(
                EventKind::TasksPruned,
                None,
                None,
                format!("{removed} finished task(s) removed by retention"),
            );
        }
        Ok(())
    }
}
