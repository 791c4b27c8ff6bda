//! `RunSandbox`: a task zone, one command, one result.
//!
//! Order at the end of a task matters: the output is redacted, the
//! workspace's changes are scanned (and committed, when asked and the task
//! succeeded), the result is written to the store, and only then is the
//! zone torn down, so a daemon killed during clean-up still has the result.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rauha_spec::event::EventKind;
use rauha_spec::result::{TaskResult, TaskStatus, WorkspaceOutcome};
use rauha_spec::zone::ProcessSpec;
use rauha_spec::{Policy, RootSpec, WorkspaceSpec};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::create::NewZone;
use super::output::Capture;
use super::{OutputChunk, ProcessEnd, ZoneRegistry};
use crate::error::DaemonError;
use crate::events::now_ms;
use crate::redact::{Redactor, StreamRedactor};
use crate::secrets::{Delivery, Secret};
use crate::store::{TaskRecord, TaskState, ZoneRecord};
use rauha_guest_agent::protocol::FdData;

/// Most bytes of all the diffs of one result together (each file's is also
/// cut at the task's diff cap): the rest of the files get none.
const DIFF_TOTAL: usize = 4 << 20;

/// After a timeout, how long the zone's processes get to die.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// What to do with a workspace after the task.
#[derive(Debug, Clone)]
pub struct WorkspaceRun {
    pub spec: WorkspaceSpec,
    /// Apply the changes to the repository if the task succeeded.
    pub commit: bool,
    /// Cap of one file's diff in the result.
    pub diff_cap: usize,
    /// Commit changes under `.git/` too (asked for explicitly).
    pub commit_git_metadata: bool,
}

pub struct SandboxRun {
    pub spec: ProcessSpec,
    pub policy: Policy,
    pub root: RootSpec,
    pub timeout: Option<Duration>,
    pub keep_zone: bool,
    pub ttl: Option<Duration>,
    pub workspace: Option<WorkspaceRun>,
    pub secrets: Vec<Secret>,
    /// A network namespace for the zone to join.
    pub netns: Option<String>,
    /// Receives the task's (redacted) output as it comes.
    pub live_output: Option<mpsc::Sender<OutputChunk>>,
}

impl ZoneRegistry {
    pub async fn run_sandbox(&self, run: SandboxRun) -> Result<TaskResult, DaemonError> {
        let task_id = Uuid::new_v4();
        let started = Instant::now();
        let timeout = run.timeout.or(run.policy.task.timeout);
        let redactor = Redactor::new(&run.secrets);
        // The command as it is recorded and reported: without secret values.
        let command: Vec<String> = run.spec.args.iter().map(|a| redactor.text(a)).collect();
        let zone = self
            .create_zone(NewZone {
                name: format!("task-{}", task_id.simple()),
                cgroup_parent: None,
                policy: run.policy,
                root: run.root,
                task_id: Some(task_id),
                ephemeral: !run.keep_zone,
                workspace: run.workspace.as_ref().map(|w| w.spec.clone()),
                ttl_ms: run
                    .ttl
                    .filter(|_| run.keep_zone)
                    .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
                netns: run.netns.clone(),
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
            .backends
            .of(&zone)?
            .usage(zone.id)
            .map(|u| u.oom_kills)
            .unwrap_or(0);
        let mut spec = run.spec;
        let mut fds = Vec::new();
        for s in &run.secrets {
            match &s.delivery {
                Delivery::Env(env) => spec
                    .env
                    .push(format!("{env}={}", String::from_utf8_lossy(&s.value))),
                Delivery::Fd(fd) => fds.push(FdData {
                    fd: *fd,
                    data: s.value.clone(),
                }),
            }
        }
        if spec.cwd.is_empty() {
            if let Some(w) = &run.workspace {
                spec.cwd = w.spec.target.clone();
            }
        }
        match self
            .start_process_streamed(&zone, spec, fds, &redactor, &Default::default(), None)
            .await
        {
            Err(e) => result.error = Some(redactor.text(&e.to_string())),
            Ok((process, output)) => {
                let (done_tx, done_rx) = tokio::sync::oneshot::channel();
                let forwarder = run
                    .live_output
                    .map(|sink| tokio::spawn(forward(output, sink, redactor.clone(), done_rx)));
                let (end, timed_out) = self.wait_with_timeout(&zone, &process, timeout).await;
                let _ = done_tx.send(());
                if let Some(f) = forwarder {
                    let _ = f.await;
                }
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
                let usage = self.backends.of(&zone)?.usage(zone.id).ok();
                let oom = usage.is_some_and(|u| u.oom_kills > oom_before);
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
                let cut =
                    result.status != TaskStatus::Succeeded && result.status != TaskStatus::Failed;
                fill_output(
                    &mut result,
                    &process.stdout(),
                    &process.stderr(),
                    &redactor,
                    cut,
                );
            }
        }
        if let Some(w) = &run.workspace {
            if let Some(full) = self.workspace_full(&zone) {
                events.push(self.events.emit(
                    EventKind::DiskLimitReached,
                    Some((zone.id, &zone.name)),
                    Some(task_id),
                    full,
                ));
            }
            self.settle_workspace(&zone, w, run.keep_zone, &redactor, &mut result)
                .await;
        }
        result.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        result.enforcement_events = self.take_denials(&zone.id);
        for d in &mut result.enforcement_events {
            d.target = redactor.text(&d.target);
        }
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
        if let Err(e) = self.prune_tasks() {
            tracing::error!(error = %e, "task retention failed");
        }
        if !run.keep_zone {
            if let Err(e) = self.destroy(zone).await {
                tracing::error!(task = %task_id, error = %e, "cannot remove a task zone; it will be removed at the next start");
            }
        }
        Ok(result)
    }

    /// Whether the zone's workspace filled its disk limit (under 1 MiB or
    /// no inode left), and if so the line that says it.
    fn workspace_full(&self, zone: &ZoneRecord) -> Option<String> {
        let upper = self.backends.of(zone).ok()?.workspace_upper(zone.id);
        let dir = std::ffi::CString::new(upper.parent()?.as_os_str().as_encoded_bytes()).ok()?;
        // SAFETY: statvfs writes into the zeroed struct we own.
        let st = unsafe {
            let mut st: libc::statvfs = std::mem::zeroed();
            (libc::statvfs(dir.as_ptr(), &mut st) == 0).then_some(st)
        }?;
        let free = st.f_bavail.saturating_mul(st.f_frsize);
        (free < 1 << 20 || st.f_favail == 0).then(|| {
            format!(
                "the workspace reached its disk limit ({}): writes failed with ENOSPC; raise resources.disk_limit",
                rauha_spec::size::format_size(zone.policy.resources.disk_limit_or_default())
            )
        })
    }

    /// Scans the workspace's changes into the result and commits them when
    /// asked and the task succeeded; a failed commit changes nothing.
    async fn settle_workspace(
        &self,
        zone: &ZoneRecord,
        w: &WorkspaceRun,
        keep_zone: bool,
        redactor: &Redactor,
        result: &mut TaskResult,
    ) {
        let backend = match self.backends.of(zone) {
            Ok(backend) => backend,
            Err(e) => {
                result.workspace = Some(WorkspaceOutcome::Discarded);
                result.error.get_or_insert(e.to_string());
                return;
            }
        };
        // No process of the task may write while its changes are read and
        // committed, so that what the result lists is what lands: the
        // zone's work is frozen (a background process the task left behind
        // included) until the commit is done, and thawed after it when the
        // zone is kept.
        let frozen = match backend.set_paused(zone.id, true) {
            Ok(()) => true,
            Err(e) if !keep_zone => {
                tracing::warn!(zone = %zone.id, error = %e, "cannot freeze the zone for its scan; killing its processes instead");
                if let Some(live) = self.live_zone(&zone.id) {
                    let _ = live.link.signal_all(libc::SIGKILL).await;
                }
                false
            }
            Err(e) => {
                result.workspace = Some(WorkspaceOutcome::Discarded);
                result.error.get_or_insert(format!(
                    "cannot freeze the zone's processes to read its changes ({e}); nothing was committed"
                ));
                if w.commit && result.status == TaskStatus::Succeeded {
                    result.workspace = Some(WorkspaceOutcome::CommitFailed);
                    result.status = TaskStatus::Failed;
                }
                return;
            }
        };
        self.settle_frozen_workspace(zone, w, redactor, result)
            .await;
        if frozen && keep_zone {
            let paused_by_user = self
                .store
                .zone(&zone.id)
                .ok()
                .flatten()
                .is_some_and(|z| z.state == rauha_spec::zone::ZoneState::Paused);
            if !paused_by_user {
                if let Err(e) = backend.set_paused(zone.id, false) {
                    tracing::error!(zone = %zone.id, error = %e, "cannot thaw a kept zone after its scan");
                }
            }
        }
    }

    /// [`Self::settle_workspace`] once nothing in the zone can write.
    async fn settle_frozen_workspace(
        &self,
        zone: &ZoneRecord,
        w: &WorkspaceRun,
        redactor: &Redactor,
        result: &mut TaskResult,
    ) {
        let lower = PathBuf::from(&w.spec.repo_path);
        let upper = match self.backends.of(zone) {
            Ok(backend) => backend.workspace_upper(zone.id),
            Err(e) => {
                result.workspace = Some(WorkspaceOutcome::Discarded);
                result.error.get_or_insert(e.to_string());
                return;
            }
        };
        let limits = rauha_workspace::Limits {
            diff_cap: w.diff_cap,
            diff_total: DIFF_TOTAL,
            max_changes: usize::try_from(zone.policy.task.max_changes_or_default())
                .unwrap_or(usize::MAX),
        };
        let scan_upper = upper.clone();
        let scanned = tokio::task::spawn_blocking(move || {
            rauha_workspace::scan_capped(&lower, &scan_upper, &limits).map_err(|e| e.to_string())
        })
        .await;
        let (mut changes, unlisted) = match scanned {
            Ok(Ok(s)) => (s.changes, s.unlisted),
            Ok(Err(e)) => {
                result.workspace = Some(WorkspaceOutcome::Discarded);
                result.error.get_or_insert(
                    redactor.text(&format!("cannot read the workspace's changes: {e}")),
                );
                return;
            }
            Err(e) => {
                result.workspace = Some(WorkspaceOutcome::Discarded);
                result
                    .error
                    .get_or_insert(format!("workspace scan task failed: {e}"));
                return;
            }
        };
        // What a commit must not apply: code the host would run (a git
        // hook, `core.fsmonitor`), or whatever else the policy names.
        let mut hold_back = zone.policy.task.hold_back();
        if w.commit_git_metadata {
            hold_back.retain(|e| !rauha_spec::policy::under(e, ".git"));
        }
        for c in &mut changes {
            if let Some(entry) = hold_back
                .iter()
                .find(|e| rauha_spec::policy::under(&c.path, e))
            {
                c.held_back = Some(format!(
                    "under {entry:?}, which a commit holds back (policy task.hold_back)"
                ));
            }
        }
        let to_apply: Vec<_> = changes
            .iter()
            .filter(|c| c.held_back.is_none())
            .cloned()
            .collect();
        result.files_changed_unlisted = unlisted;
        let mut outcome = WorkspaceOutcome::Discarded;
        if w.commit && result.status == TaskStatus::Succeeded && unlisted > 0 {
            result.error = Some(format!(
                "the commit was refused and changed nothing: the task changed {} paths, more than the {} a result lists (policy task.max_changes)",
                changes.len() as u64 + unlisted,
                changes.len()
            ));
            outcome = WorkspaceOutcome::CommitFailed;
        } else if w.commit && result.status == TaskStatus::Succeeded && !to_apply.is_empty() {
            let repo = PathBuf::from(&w.spec.repo_path);
            let upper = upper.clone();
            let committed = tokio::task::spawn_blocking(move || {
                rauha_workspace::commit(&repo, &upper, &to_apply).map_err(|e| e.to_string())
            })
            .await;
            outcome = match committed {
                Ok(Ok(())) => WorkspaceOutcome::Committed,
                Ok(Err(e)) => {
                    result.error =
                        Some(redactor.text(&format!("the commit failed and changed nothing: {e}")));
                    WorkspaceOutcome::CommitFailed
                }
                Err(e) => {
                    result.error = Some(format!("the commit task failed: {e}"));
                    WorkspaceOutcome::CommitFailed
                }
            };
        } else if w.commit && result.status == TaskStatus::Succeeded {
            outcome = WorkspaceOutcome::Committed;
        }
        result.files_changed = changes
            .into_iter()
            .map(|mut c| {
                // A task may write a secret into a name as well as into
                // content: nothing of a change leaves unredacted.
                c.path = redactor.text(&c.path);
                c.diff = c.diff.map(|d| redactor.text(&d));
                c.link_target = c.link_target.map(|t| redactor.text(&t));
                c
            })
            .collect();
        if outcome == WorkspaceOutcome::CommitFailed {
            // What was asked of the task did not happen: it failed, whatever
            // its own exit code (the CLI exits non-zero).
            result.status = TaskStatus::Failed;
        }
        result.workspace = Some(outcome);
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
                    if let Ok(backend) = self.backends.of(zone) {
                        let _ = backend.destroy_zone(zone.id, Some(h)).await;
                    }
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

/// Puts the captured output into the result, redacted; `cut` when the
/// output may end in the middle of a secret (a killed task).
fn fill_output(
    result: &mut TaskResult,
    out: &Capture,
    err: &Capture,
    redactor: &Redactor,
    cut: bool,
) {
    let clean = |c: &Capture| {
        let bytes = if cut || c.truncated() {
            redactor.cut(&c.data)
        } else {
            redactor.bytes(&c.data)
        };
        String::from_utf8_lossy(&bytes).into_owned()
    };
    result.stdout = clean(out);
    result.stderr = clean(err);
    result.stdout_truncated = out.truncated();
    result.stderr_truncated = err.truncated();
    result.stdout_dropped_bytes = out.dropped;
    result.stderr_dropped_bytes = err.dropped;
}

/// Forwards live output, redacted per stream, until the process has
/// ended (`done`; its output is all broadcast by then) or the receiver
/// goes away.
async fn forward(
    mut output: tokio::sync::broadcast::Receiver<OutputChunk>,
    sink: mpsc::Sender<OutputChunk>,
    redactor: Redactor,
    mut done: tokio::sync::oneshot::Receiver<()>,
) {
    use rauha_guest_agent::protocol::Stream;
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};
    let mut out = StreamRedactor::new(redactor.clone());
    let mut err = StreamRedactor::new(redactor);
    let mut ended = false;
    loop {
        let chunk = if ended {
            match output.try_recv() {
                Ok(c) => c,
                Err(TryRecvError::Lagged(_)) => continue,
                Err(_) => break,
            }
        } else {
            tokio::select! {
                c = output.recv() => match c {
                    Ok(c) => c,
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => break,
                },
                _ = &mut done => { ended = true; continue; }
            }
        };
        let data = match chunk.stream {
            Stream::Stdout => out.push(&chunk.data),
            Stream::Stderr => err.push(&chunk.data),
        };
        if !data.is_empty()
            && sink
                .send(OutputChunk {
                    stream: chunk.stream,
                    data,
                })
                .await
                .is_err()
        {
            return;
        }
    }
    for (stream, r) in [(Stream::Stdout, &mut out), (Stream::Stderr, &mut err)] {
        let data = r.finish();
        if !data.is_empty() {
            let _ = sink.send(OutputChunk { stream, data }).await;
        }
    }
}
