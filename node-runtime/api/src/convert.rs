//! Conversions between the gRPC wire types and `rauha-spec` domain types.

use rauha_spec::enforcement::{Enforcement, Layer, LayerStatus};
use rauha_spec::event::{EnforcementEvent, Event, EventKind};
use rauha_spec::result::{TaskResult, TaskStatus};
use uuid::Uuid;

use crate::v1;

/// A wire value that does not map to a domain value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("{field}: {value:?} is not a valid UUID")]
    Uuid { field: &'static str, value: String },
    #[error("{field}: unknown value {value:?}")]
    Unknown { field: &'static str, value: String },
}

fn uuid(field: &'static str, value: &str) -> Result<Uuid, ConvertError> {
    Uuid::parse_str(value).map_err(|_| ConvertError::Uuid {
        field,
        value: value.to_string(),
    })
}

fn opt_uuid(field: &'static str, value: &str) -> Result<Option<Uuid>, ConvertError> {
    if value.is_empty() {
        Ok(None)
    } else {
        uuid(field, value).map(Some)
    }
}

impl From<&Enforcement> for v1::Enforcement {
    fn from(e: &Enforcement) -> Self {
        v1::Enforcement {
            layers: e
                .layers
                .iter()
                .map(|l| v1::LayerStatus {
                    layer: l.layer.as_str().to_string(),
                    in_force: l.in_force,
                    detail: l.detail.clone(),
                })
                .collect(),
            score: u32::from(e.score),
            label: e.label.clone(),
        }
    }
}

impl TryFrom<&v1::Enforcement> for Enforcement {
    type Error = ConvertError;
    fn try_from(e: &v1::Enforcement) -> Result<Self, Self::Error> {
        let layers = e
            .layers
            .iter()
            .map(|l| {
                Ok(LayerStatus {
                    layer: Layer::parse(&l.layer).ok_or_else(|| ConvertError::Unknown {
                        field: "enforcement.layers.layer",
                        value: l.layer.clone(),
                    })?,
                    in_force: l.in_force,
                    detail: l.detail.clone(),
                })
            })
            .collect::<Result<Vec<_>, ConvertError>>()?;
        Ok(Enforcement {
            layers,
            score: u8::try_from(e.score.min(100)).unwrap_or(100),
            label: e.label.clone(),
        })
    }
}

impl From<&Event> for v1::Event {
    fn from(e: &Event) -> Self {
        v1::Event {
            time_ms: e.time_ms,
            kind: e.kind.as_str().to_string(),
            zone_id: e.zone_id.map(|u| u.to_string()).unwrap_or_default(),
            zone_name: e.zone_name.clone().unwrap_or_default(),
            subject_id: e.subject_id.map(|u| u.to_string()).unwrap_or_default(),
            message: e.message.clone(),
        }
    }
}

impl TryFrom<&v1::Event> for Event {
    type Error = ConvertError;
    fn try_from(e: &v1::Event) -> Result<Self, Self::Error> {
        Ok(Event {
            time_ms: e.time_ms,
            kind: EventKind::parse(&e.kind).ok_or_else(|| ConvertError::Unknown {
                field: "event.kind",
                value: e.kind.clone(),
            })?,
            zone_id: opt_uuid("event.zone_id", &e.zone_id)?,
            zone_name: (!e.zone_name.is_empty()).then(|| e.zone_name.clone()),
            subject_id: opt_uuid("event.subject_id", &e.subject_id)?,
            message: e.message.clone(),
        })
    }
}

impl From<&EnforcementEvent> for v1::EnforcementEvent {
    fn from(e: &EnforcementEvent) -> Self {
        v1::EnforcementEvent {
            time_ms: e.time_ms,
            zone_id: e.zone_id.to_string(),
            pid: e.pid,
            hook: e.hook.clone(),
            target: e.target.clone(),
            errno: e.errno,
        }
    }
}

impl TryFrom<&v1::EnforcementEvent> for EnforcementEvent {
    type Error = ConvertError;
    fn try_from(e: &v1::EnforcementEvent) -> Result<Self, Self::Error> {
        Ok(EnforcementEvent {
            time_ms: e.time_ms,
            zone_id: uuid("enforcement_event.zone_id", &e.zone_id)?,
            pid: e.pid,
            hook: e.hook.clone(),
            target: e.target.clone(),
            errno: e.errno,
        })
    }
}

impl From<&TaskResult> for v1::TaskResult {
    fn from(r: &TaskResult) -> Self {
        v1::TaskResult {
            task_id: r.task_id.to_string(),
            zone_id: r.zone_id.to_string(),
            command: r.command.clone(),
            status: r.status.as_str().to_string(),
            has_exit_code: r.exit_code.is_some(),
            exit_code: r.exit_code.unwrap_or_default(),
            signal: r.signal.unwrap_or_default(),
            duration_ms: r.duration_ms,
            stdout: r.stdout.clone(),
            stderr: r.stderr.clone(),
            stdout_truncated: r.stdout_truncated,
            stderr_truncated: r.stderr_truncated,
            stdout_dropped_bytes: r.stdout_dropped_bytes,
            stderr_dropped_bytes: r.stderr_dropped_bytes,
            has_peak_memory: r.peak_memory_bytes.is_some(),
            peak_memory_bytes: r.peak_memory_bytes.unwrap_or_default(),
            has_cpu_time: r.cpu_time_us.is_some(),
            cpu_time_us: r.cpu_time_us.unwrap_or_default(),
            events: r.events.iter().map(Into::into).collect(),
            enforcement_events: r.enforcement_events.iter().map(Into::into).collect(),
            enforcement: Some((&r.enforcement).into()),
            error: r.error.clone().unwrap_or_default(),
        }
    }
}

impl TryFrom<&v1::TaskResult> for TaskResult {
    type Error = ConvertError;
    fn try_from(r: &v1::TaskResult) -> Result<Self, Self::Error> {
        Ok(TaskResult {
            task_id: uuid("task_id", &r.task_id)?,
            zone_id: uuid("zone_id", &r.zone_id)?,
            command: r.command.clone(),
            status: TaskStatus::parse(&r.status).ok_or_else(|| ConvertError::Unknown {
                field: "status",
                value: r.status.clone(),
            })?,
            exit_code: r.has_exit_code.then_some(r.exit_code),
            signal: (r.signal != 0).then_some(r.signal),
            duration_ms: r.duration_ms,
            stdout: r.stdout.clone(),
            stderr: r.stderr.clone(),
            stdout_truncated: r.stdout_truncated,
            stderr_truncated: r.stderr_truncated,
            stdout_dropped_bytes: r.stdout_dropped_bytes,
            stderr_dropped_bytes: r.stderr_dropped_bytes,
            peak_memory_bytes: r.has_peak_memory.then_some(r.peak_memory_bytes),
            cpu_time_us: r.has_cpu_time.then_some(r.cpu_time_us),
            events: r
                .events
                .iter()
                .map(TryInto::try_into)
                .collect::<Result<_, _>>()?,
            enforcement_events: r
                .enforcement_events
                .iter()
                .map(TryInto::try_into)
                .collect::<Result<_, _>>()?,
            enforcement: r
                .enforcement
                .as_ref()
                .map(TryInto::try_into)
                .transpose()?
                .unwrap_or_default(),
            error: (!r.error.is_empty()).then(|| r.error.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TaskResult {
        TaskResult {
            task_id: Uuid::new_v4(),
            zone_id: Uuid::new_v4(),
            command: vec!["sh".into(), "-c".into(), "exit 3".into()],
            status: TaskStatus::Failed,
            exit_code: Some(3),
            signal: None,
            duration_ms: 12,
            stdout: "out\n".into(),
            stderr: "err\n".into(),
            stdout_truncated: false,
            stderr_truncated: true,
            stdout_dropped_bytes: 0,
            stderr_dropped_bytes: 10,
            peak_memory_bytes: Some(4096),
            cpu_time_us: None,
            events: vec![Event {
                time_ms: 1,
                kind: EventKind::TaskStarted,
                zone_id: Some(Uuid::new_v4()),
                zone_name: Some("z".into()),
                subject_id: None,
                message: "started".into(),
            }],
            enforcement_events: vec![EnforcementEvent {
                time_ms: 2,
                zone_id: Uuid::new_v4(),
                pid: 7,
                hook: "file_open".into(),
                target: "/x".into(),
                errno: 13,
            }],
            enforcement: Enforcement {
                layers: vec![LayerStatus {
                    layer: Layer::Seccomp,
                    in_force: true,
                    detail: "38 rules".into(),
                }],
                score: 55,
                label: "standard".into(),
            },
            error: None,
        }
    }

    #[test]
    fn task_result_round_trips() {
        let r = sample();
        let wire = v1::TaskResult::from(&r);
        assert_eq!(TaskResult::try_from(&wire).expect("valid"), r);
    }

    #[test]
    fn exit_code_zero_is_kept() {
        let mut r = sample();
        r.exit_code = Some(0);
        r.status = TaskStatus::Succeeded;
        let back = TaskResult::try_from(&v1::TaskResult::from(&r)).expect("valid");
        assert_eq!(back.exit_code, Some(0));
    }

    #[test]
    fn bad_wire_values_are_errors() {
        let mut wire = v1::TaskResult::from(&sample());
        wire.status = "bogus".into();
        assert!(matches!(
            TaskResult::try_from(&wire),
            Err(ConvertError::Unknown {
                field: "status",
                ..
            })
        ));
        wire.status = "failed".into();
        wire.task_id = "nope".into();
        assert!(matches!(
            TaskResult::try_from(&wire),
            Err(ConvertError::Uuid {
                field: "task_id",
                ..
            })
        ));
    }
}
