//! Events of the watch stream, and kernel enforcement (deny) events.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    ZoneCreated,
    ZoneDeleted,
    ZonePolicyUpdated,
    ZoneRecovered,
    /// A lifecycle transition; the message says `from -> to`.
    ZoneStateChanged,
    ProcessStarted,
    ProcessExited,
    TaskStarted,
    TaskFinished,
    OomKilled,
    TimedOut,
    OrphanRemoved,
    /// A kept zone's TTL ran out and it was deleted.
    ZoneExpired,
    /// Task history retention removed old results.
    TasksPruned,
    /// A kernel enforcement layer denied an operation in the zone.
    EnforcementDenied,
    /// The zone's workspace filled its disk limit (writes failed with
    /// ENOSPC).
    DiskLimitReached,
    /// A restarted rauhad took over a task that ran while it was away.
    TaskResumed,
}

impl EventKind {
    pub const ALL: [EventKind; 17] = [
        EventKind::ZoneCreated,
        EventKind::ZoneDeleted,
        EventKind::ZonePolicyUpdated,
        EventKind::ZoneRecovered,
        EventKind::ZoneStateChanged,
        EventKind::ProcessStarted,
        EventKind::ProcessExited,
        EventKind::TaskStarted,
        EventKind::TaskFinished,
        EventKind::OomKilled,
        EventKind::TimedOut,
        EventKind::OrphanRemoved,
        EventKind::ZoneExpired,
        EventKind::TasksPruned,
        EventKind::EnforcementDenied,
        EventKind::DiskLimitReached,
        EventKind::TaskResumed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::ZoneCreated => "zone_created",
            EventKind::ZoneDeleted => "zone_deleted",
            EventKind::ZonePolicyUpdated => "zone_policy_updated",
            EventKind::ZoneRecovered => "zone_recovered",
            EventKind::ZoneStateChanged => "zone_state_changed",
            EventKind::ProcessStarted => "process_started",
            EventKind::ProcessExited => "process_exited",
            EventKind::TaskStarted => "task_started",
            EventKind::TaskFinished => "task_finished",
            EventKind::OomKilled => "oom_killed",
            EventKind::TimedOut => "timed_out",
            EventKind::OrphanRemoved => "orphan_removed",
            EventKind::ZoneExpired => "zone_expired",
            EventKind::TasksPruned => "tasks_pruned",
            EventKind::EnforcementDenied => "enforcement_denied",
            EventKind::DiskLimitReached => "disk_limit_reached",
            EventKind::TaskResumed => "task_resumed",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One zone or task event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Event {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub kind: EventKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone_name: Option<String>,
    /// The process or task the event is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject_id: Option<Uuid>,
    pub message: String,
}

/// A denial by a kernel enforcement layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EnforcementEvent {
    pub time_ms: u64,
    pub zone_id: Uuid,
    pub pid: u32,
    /// The hook that denied (`file_open`, `task_kill`, ...).
    pub hook: String,
    /// What was denied: a path, a pid, an address.
    pub target: String,
    pub errno: i32,
}
