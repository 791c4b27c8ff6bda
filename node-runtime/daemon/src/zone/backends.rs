//! The isolation backends a node runs zones on, by name. Each zone records
//! the backend that built it (`ZoneRecord::backend`), and every operation
//! on it goes to that one: a node can hold Linux zones and VM zones side by
//! side. `main.rs` constructs the backends; nothing else names one.

use std::collections::BTreeMap;
use std::sync::Arc;

use rauha_backend::IsolationBackend;

use crate::error::DaemonError;
use crate::store::ZoneRecord;

#[derive(Clone)]
pub struct Backends {
    /// Where new zones go unless they ask for another.
    default: Arc<dyn IsolationBackend>,
    by_name: BTreeMap<&'static str, Arc<dyn IsolationBackend>>,
}

impl Backends {
    /// The default backend, and `others` beside it (each by its name).
    pub fn new(
        default: Arc<dyn IsolationBackend>,
        others: Vec<Arc<dyn IsolationBackend>>,
    ) -> Backends {
        let mut by_name = BTreeMap::new();
        for b in others {
            by_name.insert(b.name(), b);
        }
        by_name.insert(default.name(), Arc::clone(&default));
        Backends { default, by_name }
    }

    pub fn default_backend(&self) -> &Arc<dyn IsolationBackend> {
        &self.default
    }

    /// The backend of this name (empty: the default).
    pub fn named(&self, name: &str) -> Option<&Arc<dyn IsolationBackend>> {
        if name.is_empty() {
            return Some(&self.default);
        }
        self.by_name.get(name)
    }

    /// The backend that holds `zone`; a zone recorded by a backend this
    /// rauhad no longer runs is an error that names it.
    pub fn of(&self, zone: &ZoneRecord) -> Result<&Arc<dyn IsolationBackend>, DaemonError> {
        self.named(&zone.backend)
            .ok_or_else(|| DaemonError::UnknownBackend {
                zone: zone.name.clone(),
                backend: zone.backend.clone(),
            })
    }

    /// Every backend, the default first.
    pub fn all(&self) -> impl Iterator<Item = &Arc<dyn IsolationBackend>> {
        std::iter::once(&self.default).chain(
            self.by_name
                .values()
                .filter(move |b| !Arc::ptr_eq(b, &self.default)),
        )
    }
}
