//! Conversions between the gRPC wire types and `rauha-spec` domain types.

use rauha_spec::enforcement::{Enforcement, Layer, LayerStatus};
use rauha_spec::event::{EnforcementEvent, Event, EventKind};
use rauha_spec::result::{
    ChangeKind, FileChange, FileType, TaskResult, TaskStatus, WorkspaceOutcome,
};
use uuid::Uuid;

use crate::v1;

/// A wire value that does not map to a domain value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("{field}: {} is not a valid UUID", rauha_spec::message::quote(.value))]
    Uuid { field: &'static str, value: String },
    #[error("{field}: unknown value {}", rauha_spec::message::quote(.value))]
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

fn kind_str(k: ChangeKind) -> &'static str {
    match k {
        ChangeKind::Added => "added",
        ChangeKind::Modified => "modified",
        ChangeKind::Deleted => "deleted",
    }
}

fn type_str(t: FileType) -> &'static str {
    match t {
        FileType::File => "file",
        FileType::Dir => "dir",
        FileType::Symlink => "symlink",
        FileType::Special => "special",
    }
}

fn outcome_str(o: WorkspaceOutcome) -> &'static str {
    match o {
        WorkspaceOutcome::Committed => "committed",
        WorkspaceOutcome::Discarded => "discarded",
        WorkspaceOutcome::CommitFailed => "commit_failed",
    }
}

impl From<&FileChange> for v1::FileChange {
    fn from(c: &FileChange) -> Self {
        v1::FileChange {
            path: c.path.clone(),
            kind: kind_str(c.kind).to_string(),
            file_type: type_str(c.file_type).to_string(),
            size: c.size,
            mode: c.mode,
            old_size: c.old_size,
            old_mode: c.old_mode,
            link_target: c.link_target.clone(),
            diff: c.diff.clone(),
            diff_truncated: c.diff_truncated,
            held_back: c.held_back.clone().unwrap_or_default(),
        }
    }
}

impl TryFrom<&v1::FileChange> for FileChange {
    type Error = ConvertError;
    fn try_from(c: &v1::FileChange) -> Result<Self, Self::Error> {
        let kind = [ChangeKind::Added, ChangeKind::Modified, ChangeKind::Deleted]
            .into_iter()
            .find(|k| kind_str(*k) == c.kind)
            .ok_or_else(|| ConvertError::Unknown {
                field: "files_changed.kind",
                value: c.kind.clone(),
            })?;
        let file_type = [
            FileType::File,
            FileType::Dir,
            FileType::Symlink,
            FileType::Special,
        ]
        .into_iter()
        .find(|t| type_str(*t) == c.file_type)
        .ok_or_else(|| ConvertError::Unknown {
            field: "files_changed.file_type",
            value: c.file_type.clone(),
        })?;
        Ok(FileChange {
            path: c.path.clone(),
            kind,
            file_type,
            size: c.size,
            mode: c.mode,
            old_size: c.old_size,
            old_mode: c.old_mode,
            link_target: c.link_target.clone(),
            diff: c.diff.clone(),
            diff_truncated: c.diff_truncated,
            held_back: (!c.held_back.is_empty()).then(|| c.held_back.clone()),
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
            files_changed: r.files_changed.iter().map(Into::into).collect(),
            files_changed_unlisted: r.files_changed_unlisted,
            workspace: r.workspace.map(outcome_str).unwrap_or_default().to_string(),
            image: r
                .image
                .as_ref()
                .map(|i| i.reference.clone())
                .unwrap_or_default(),
            image_digest: r
                .image
                .as_ref()
                .map(|i| i.digest.clone())
                .unwrap_or_default(),
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
            files_changed: r
                .files_changed
                .iter()
                .map(TryInto::try_into)
                .collect::<Result<_, _>>()?,
            files_changed_unlisted: r.files_changed_unlisted,
            workspace: match r.workspace.as_str() {
                "" => None,
                w => Some(
                    [
                        WorkspaceOutcome::Committed,
                        WorkspaceOutcome::Discarded,
                        WorkspaceOutcome::CommitFailed,
                    ]
                    .into_iter()
                    .find(|o| outcome_str(*o) == w)
                    .ok_or_else(|| ConvertError::Unknown {
                        field: "workspace",
                        value: w.to_string(),
                    })?,
                ),
            },
            image: (!r.image.is_empty()).then(|| rauha_spec::ImageUsed {
                reference: r.image.clone(),
                digest: r.image_digest.clone(),
            }),
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
            files_changed: vec![FileChange {
                path: "src/a.rs".into(),
                kind: ChangeKind::Modified,
                file_type: FileType::File,
                size: Some(10),
                mode: Some(0o644),
                old_size: Some(0),
                old_mode: Some(0o600),
                link_target: None,
                diff: Some("@@ -0,0 +1 @@\n+x\n".into()),
                diff_truncated: false,
                held_back: Some("under .git".into()),
            }],
            files_changed_unlisted: 7,
            workspace: Some(WorkspaceOutcome::Discarded),
            error: None,
            image: Some(rauha_spec::ImageUsed {
                reference: "127.0.0.1:5000/bb:1".into(),
                digest: format!("sha256:{}", "a".repeat(64)),
            }),
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
