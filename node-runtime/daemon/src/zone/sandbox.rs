//! `RunSandbox`: a task zone, one command, one result.
//!
//! The result is written to the store before the zone is torn down, so a
//! daemon killed during clean-up still has it after restart.

use std::time::{Duration, Instant};

use rauha_spec::event::EventKind;
use rauha_spec::result::{TaskResult, TaskStatus};
use rauha_spec::zone::ProcessSpec;
use rauha_spec::{Policy, RootSpec};
use uuid::Uuid;

use super::create::NewZone;
use super::{ProcessEnd, ZoneRegistry};
use crate::backend::IsolationBackend;
use crate::error::DaemonError;
use crate::events::now_ms;
use crate::store::{TaskRecord, TaskState, ZoneRecord};

/// After a timeout, how long the zone's processes get to die.
const KILL_GRACE: Duration = Duration::from_secs(2);

pub struct SandboxRun {
    pub spec: ProcessSpec,
    pub policy: Policy,
    pub root: RootSpec,
    pub timeout: Option<Duration>,
    pub keep_zone: bool,
}

impl<B: IsolationBackend> ZoneRegistry<B> {
    pub async fn run_sandbox(&self, run: SandboxRun) -> Result<TaskResult, DaemonError> {
        let task_id = Uuid::new_v4();
        let started = Instant::now();
        let timeout = run.timeout.or(run.policy.task.timeout);
        let command = run.spec.args.clone();
        let zone = self
            .create_zone(NewZone {
                name: format!("task-{}", task_id.simple()),
                policy: run.policy,
                root: run.root,
                task_id: Some(task_id),
                ephemeral: !run.keep_zone,
            })
            .await?;
        let mut task = TaskRecord {
            id: task_id,
            zone_id: zone.id,
            command: command.clone(),
            state: TaskState::Running,
            started_ms: now_ms(),
            result: None,
        };
        self.store.put_task(&task)?;
        let mut events = vec![self.events.emit(
            EventKind::TaskStarted,
            Some((zone.id, &zone.name)),
            Some(task_id),
            command.join(" "),
        )];
        let mut result = TaskResult::not_run(task_id, zone.id, command, self.enforcement_of(&zone));
        let oom_before = self
            .backend
            .usage(zone.id)
            .map(|u| u.oom_kills)
            .unwrap_or(0);
        match self.start_process(&zone, run.spec).await {
            Err(e) => result.error = Some(e.to_string()),
            Ok(process) => {
                let (end, timed_out) = self.wait_with_timeout(&zone, &process, timeout).await;
                if timed_out {
                    let limit = timeout
                        .map(rauha_spec::duration::format_duration)
                        .unwrap_or_default();
                    events.push(self.events.emit(
                        EventKind::TimedOut,
                        Some((zone.id, &zone.name)),
                        Some(task_id),
                        format!("killed after {limit}"),
                    ));
                }
                let usage = self.backend.usage(zone.id).ok();
                let oom = usage.is_some_and(|u| u.oom_kills > oom_before);
                let (out, err) = (process.stdout(), process.stderr());
                result.stdout = out.text();
                result.stderr = err.text();
                result.stdout_truncated = out.truncated();
                result.stderr_truncated = err.truncated();
                result.stdout_dropped_bytes = out.dropped;
                result.stderr_dropped_bytes = err.dropped;
                result.peak_memory_bytes = usage.map(|u| u.peak_memory_bytes).filter(|p| *p > 0);
                result.cpu_time_us = usage.map(|u| u.cpu_time_us);
                match end {
                    ProcessEnd::Exited(s) => {
                        result.exit_code = Some(s.shell_code());
                        result.signal = s.signal;
                        result.status =
                            TaskStatus::classify(result.exit_code, s.signal, timed_out, oom);
                        if result.status == TaskStatus::OomKilled {
                            events.push(self.events.emit(
                                EventKind::OomKilled,
                                Some((zone.id, &zone.name)),
                                Some(task_id),
                                "killed by the zone's memory limit",
                            ));
                        }
                    }
                    ProcessEnd::Lost => {
                        result.error = Some(
                            "the zone's agent died before the task ended; see the zone's agent.log"
                                .into(),
                        )
                    }
                }
            }
        }
        result.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        events.push(self.events.emit(
            EventKind::TaskFinished,
            Some((zone.id, &zone.name)),
            Some(task_id),
            format!("{} in {} ms", result.status.as_str(), result.duration_ms),
        ));
        result.events = events;
        task.state = TaskState::Finished;
        task.result = Some(result.clone());
        self.store.put_task(&task)?;
        if !run.keep_zone {
            if let Err(e) = self.destroy(zone).await {
                tracing::error!(task = %task_id, error = %e, "cannot remove a task zone; it will be removed at the next start");
            }
        }
        Ok(result)
    }

    /// Waits for the process; on timeout kills every process of the zone.
    async fn wait_with_timeout(
        &self,
        zone: &ZoneRecord,
        process: &super::LiveProcess,
        timeout: Option<Duration>,
    ) -> (ProcessEnd, bool) {
        let Some(limit) = timeout else {
            return (process.wait().await, false);
        };
        if let Ok(end) = tokio::time::timeout(limit, process.wait()).await {
            return (end, false);
        }
        if let Some(live) = self.live_zone(&zone.id) {
            let _ = live.link.signal_all(libc::SIGKILL).await;
        }
        match tokio::time::timeout(KILL_GRACE, process.wait()).await {
            Ok(end) => (end, true),
            Err(_) => {
                // The agent did not answer: take the whole zone down.
                if let Some(h) = &zone.handle {
                    let _ = self.backend.destroy_zone(zone.id, Some(h)).await;
                }
                (process.wait().await, true)
            }
        }
    }

    pub fn get_task(&self, id: &Uuid) -> Result<TaskRecord, DaemonError> {
        self.store
            .task(id)?
            .ok_or_else(|| DaemonError::task_not_found(&id.to_string()))
    }
}
