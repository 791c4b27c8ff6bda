//! The task result envelope: the same object whether printed by
//! `rauha sandbox --json` or written to a `SandboxTask`'s status.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::enforcement::Enforcement;
use crate::event::{EnforcementEvent, Event};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Exited with code 0.
    Succeeded,
    /// Exited with a non-zero code.
    Failed,
    /// Killed by rauha when the task's timeout passed.
    TimedOut,
    /// Killed by the kernel's OOM killer inside the zone's memory limit.
    OomKilled,
    /// Ended by a signal (not a timeout, not OOM).
    Killed,
    /// Rauha could not run the task; `error` says why.
    Error,
    /// The task could not finish: rauhad was killed while its zone was
    /// being made, or the zone's agent died with rauhad; `error` says which.
    Interrupted,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
            TaskStatus::TimedOut => "timed_out",
            TaskStatus::OomKilled => "oom_killed",
            TaskStatus::Killed => "killed",
            TaskStatus::Error => "error",
            TaskStatus::Interrupted => "interrupted",
        }
    }

    pub fn parse(s: &str) -> Option<TaskStatus> {
        [
            TaskStatus::Succeeded,
            TaskStatus::Failed,
            TaskStatus::TimedOut,
            TaskStatus::OomKilled,
            TaskStatus::Killed,
            TaskStatus::Error,
            TaskStatus::Interrupted,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
    }

    /// Decides the status of a process that ended with `exit_code` or
    /// `signal`, given whether rauha timed it out and whether the zone's OOM
    /// counter moved while it ran.
    pub fn classify(
        exit_code: Option<i32>,
        signal: Option<i32>,
        timed_out: bool,
        oom: bool,
    ) -> TaskStatus {
        if timed_out {
            TaskStatus::TimedOut
        } else if oom && (signal == Some(9) || exit_code == Some(137)) {
            TaskStatus::OomKilled
        } else if signal.is_some() {
            TaskStatus::Killed
        } else if exit_code == Some(0) {
            TaskStatus::Succeeded
        } else {
            TaskStatus::Failed
        }
    }
}

/// How a file of the workspace changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// What a changed path is (for a deleted path: what it was).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileType {
    File,
    Dir,
    Symlink,
    /// A fifo, a socket or a device node: listed, never committed (its
    /// change is always `held_back`).
    Special,
}

/// One change a task made to its workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FileChange {
    /// Relative to the workspace root, `/`-separated.
    pub path: String,
    pub kind: ChangeKind,
    pub file_type: FileType,
    /// Size after the change (bytes; none for a deletion).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Permission bits after the change (`0o7777` part of the mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// Size and permission bits before (modified and deleted paths).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_mode: Option<u32>,
    /// A symlink's target after the change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
    /// Unified diff of a text file, up to the diff cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    #[serde(default)]
    pub diff_truncated: bool,
    /// Why a commit did not apply this change (the policy's
    /// `task.hold_back`); none when it was applied or could have been.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_back: Option<String>,
}

/// What happened to the workspace's changes after the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkspaceOutcome {
    /// Applied to the repository, all of them.
    Committed,
    /// Thrown away (the default, a dry run, or a task that did not succeed).
    Discarded,
    /// A commit was asked for and failed; nothing was applied.
    CommitFailed,
}

/// One task's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskResult {
    pub task_id: Uuid,
    pub zone_id: Uuid,
    pub command: Vec<String>,
    pub status: TaskStatus,
    /// Exit code; for a signal, 128 + the signal's number, as a shell reports it.
    pub exit_code: Option<i32>,
    /// The signal that ended the task, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    pub duration_ms: u64,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// Bytes produced beyond the cap, counted rather than kept.
    pub stdout_dropped_bytes: u64,
    pub stderr_dropped_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_memory_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_time_us: Option<u64>,
    pub events: Vec<Event>,
    pub enforcement_events: Vec<EnforcementEvent>,
    pub enforcement: Enforcement,
    /// Changes to the workspace (`--repo-path`), sorted by path: at most
    /// the policy's `task.max_changes`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files_changed: Vec<FileChange>,
    /// Changes beyond `task.max_changes`: counted, not listed (a commit
    /// is then refused).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub files_changed_unlisted: u64,
    /// What became of those changes; none without a workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<WorkspaceOutcome>,
    /// Set when `status` is `error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The image the task's root came from (`rauha sandbox --image`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<crate::zone::ImageUsed>,
}

impl TaskResult {
    /// A result with nothing run yet: status `error` until filled in, no
    /// output, no events.
    pub fn not_run(
        task_id: Uuid,
        zone_id: Uuid,
        command: Vec<String>,
        enforcement: Enforcement,
    ) -> TaskResult {
        TaskResult {
            task_id,
            zone_id,
            command,
            status: TaskStatus::Error,
            exit_code: None,
            signal: None,
            duration_ms: 0,
            stdout: String::new(),
            stderr: String::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            stdout_dropped_bytes: 0,
            stderr_dropped_bytes: 0,
            peak_memory_bytes: None,
            cpu_time_us: None,
            events: Vec::new(),
            enforcement_events: Vec::new(),
            enforcement,
            files_changed: Vec::new(),
            files_changed_unlisted: 0,
            workspace: None,
            error: None,
            image: None,
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_endings() {
        assert_eq!(
            TaskStatus::classify(Some(0), None, false, false),
            TaskStatus::Succeeded
        );
        assert_eq!(
            TaskStatus::classify(Some(3), None, false, false),
            TaskStatus::Failed
        );
        assert_eq!(
            TaskStatus::classify(Some(137), Some(9), true, false),
            TaskStatus::TimedOut
        );
        assert_eq!(
            TaskStatus::classify(Some(137), Some(9), false, true),
            TaskStatus::OomKilled
        );
        assert_eq!(
            TaskStatus::classify(Some(143), Some(15), false, false),
            TaskStatus::Killed
        );
        assert_eq!(
            TaskStatus::classify(Some(1), None, false, true),
            TaskStatus::Failed
        );
    }

    #[test]
    fn status_names_round_trip() {
        for s in [
            "succeeded",
            "failed",
            "timed_out",
            "oom_killed",
            "killed",
            "error",
        ] {
            assert_eq!(TaskStatus::parse(s).map(TaskStatus::as_str), Some(s));
        }
    }
}
