//! The one watch stream of zone and task events.

use rauha_spec::event::{Event, EventKind};
use tokio::sync::broadcast;
use uuid::Uuid;

#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Event>,
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl EventBus {
    pub fn new() -> EventBus {
        let (tx, _) = broadcast::channel(4096);
        EventBus { tx }
    }

    /// Publishes an event and returns it (for results that embed events).
    pub fn emit(
        &self,
        kind: EventKind,
        zone: Option<(Uuid, &str)>,
        subject: Option<Uuid>,
        message: impl Into<String>,
    ) -> Event {
        let event = Event {
            time_ms: now_ms(),
            kind,
            zone_id: zone.map(|(id, _)| id),
            zone_name: zone.map(|(_, n)| n.to_string()),
            subject_id: subject,
            message: message.into(),
        };
        tracing::info!(kind = kind.as_str(), zone = ?event.zone_name, "{}", event.message);
        let _ = self.tx.send(event.clone());
        event
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}
