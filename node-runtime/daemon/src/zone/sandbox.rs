//! `RunSandbox`: a task zone, one command, one result.
//!
//! Order at the end of a task matters: the output is redacted, the
//! workspace's changes are scanned (and committed, when asked and the task
//! succeeded), the result is written to the store, and only then is the
//! zone torn down, so a daemon killed during clean-up still has the result.

use std::path::PathBuf;
use std::time::Duration;

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
use crate::store::{TaskRecord, TaskResume, TaskState, WorkspaceResume, ZoneRecord};
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
    /// Told the task's and its zone's ids once the task is recorded.
    pub started: Option<tokio::sync::oneshot::Sender<(Uuid, Uuid)>>,
}

/// What the end of a task needs, whether it started in this rauhad or was
/// taken over after a restart.
struct Ending {
    task: TaskRecord,
    zone: ZoneRecord,
    /// What is left of its timeout.
    timeout: Option<Duration>,
    keep_zone: bool,
    workspace: Option<WorkspaceRun>,
    redactor: Redactor,
    oom_before: u64,
    events: Vec<rauha_spec::Event>,
    /// Taken over after a restart of rauhad.
    resumed: bool,
    /// Taken over: what the killed rauhad left of the task's commit.
    cut_commit: Option<Result<rauha_workspace::Recovered, String>>,
    /// Taken over past its timeout: a process found killed (SIGKILL) was
    /// killed by it, by the rauhad that was killed before it said so.
    overdue: bool,
}

/// The task's process, and the forwarder of its live output (with the
/// sender that tells it the process ended).
struct Live {
    process: std::sync::Arc<super::LiveProcess>,
    forwarder: Option<(
        tokio::task::JoinHandle<()>,
        tokio::sync::oneshot::Sender<()>,
    )>,
}

/// Where a task's output is spilled: the zone's state dir.
pub(super) fn task_output_dir(zone: &ZoneRecord) -> Option<PathBuf> {
    zone.handle.as_ref().map(|h| h.state_dir.join("task"))
}

/// The journal of a task's workspace commit, beside its output: outside
/// the repository and out of the zone's sight. It stays until the task's
/// result is stored, so that a rauhad killed between the two can tell what
/// the commit did.
fn commit_journal(zone: &ZoneRecord, task: Uuid) -> Option<PathBuf> {
    task_output_dir(zone).map(|d| rauha_workspace::journal_path(&d, &task.to_string()))
}

impl ZoneRegistry {
    pub async fn run_sandbox(&self, run: SandboxRun) -> Result<TaskResult, DaemonError> {
        let task_id = Uuid::new_v4();
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
        let process_id = Uuid::new_v4();
        let started_ms = now_ms();
        let mut task = TaskRecord {
            id: task_id,
            zone_id: zone.id,
            command: command.clone(),
            state: TaskState::Running,
            started_ms,
            result: None,
            resume: Some(TaskResume {
                process_id,
                timeout_ms: timeout.map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
                keep_zone: run.keep_zone,
                workspace: run.workspace.as_ref().map(|w| WorkspaceResume {
                    repo_path: w.spec.repo_path.clone(),
                    target: w.spec.target.clone(),
                    commit: w.commit,
                    diff_cap: w.diff_cap as u64,
                    commit_git_metadata: w.commit_git_metadata,
                }),
                secret_names: run.secrets.iter().map(|s| s.name.clone()).collect(),
                oom_before: 0,
                events: Vec::new(),
            }),
        };
        let started_event = self.events.emit(
            EventKind::TaskStarted,
            Some((zone.id, &zone.name)),
            Some(task_id),
            command.join(" "),
        );
        let oom_before = self
            .backends
            .of(&zone)?
            .usage(zone.id)
            .map(|u| u.oom_kills)
            .unwrap_or(0);
        if let Some(r) = task.resume.as_mut() {
            r.oom_before = oom_before;
            r.events = vec![started_event.clone()];
        }
        self.store.put_task(&task)?;
        if let Some(started) = run.started {
            let _ = started.send((task_id, zone.id));
        }
        let mut result = TaskResult::not_run(
            task_id,
            zone.id,
            command.clone(),
            self.enforcement_of(&zone),
        );
        result.image = zone.root.image();
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
        let ending = Ending {
            task,
            zone,
            timeout,
            keep_zone: run.keep_zone,
            workspace: run.workspace,
            redactor,
            oom_before,
            events: vec![started_event],
            resumed: false,
            cut_commit: None,
            overdue: false,
        };
        // What the task prints is kept in the zone's state dir as well, from
        // its first byte: a restarted rauhad finishes the task with it.
        let spill = task_output_dir(&ending.zone);
        let deadline_ms = timeout.map(|t| {
            ending
                .task
                .started_ms
                .saturating_add(u64::try_from(t.as_millis()).unwrap_or(u64::MAX))
        });
        match self
            .start_process_spilled(
                &ending.zone,
                spec,
                fds,
                &ending.redactor,
                &Default::default(),
                Some(process_id),
                spill.as_deref(),
                deadline_ms,
            )
            .await
        {
            Err(e) => {
                result.error = Some(ending.redactor.text(&e.to_string()));
                self.conclude(ending, None, result).await
            }
            Ok((process, output)) => {
                let (done_tx, done_rx) = tokio::sync::oneshot::channel();
                let forwarder = run.live_output.map(|sink| {
                    tokio::spawn(forward(output, sink, ending.redactor.clone(), done_rx))
                });
                let live = Live {
                    process,
                    forwarder: forwarder.map(|f| (f, done_tx)),
                };
                self.conclude(ending, Some(live), result).await
            }
        }
    }

    /// The redactor of a task taken over: its secrets read again from the
    /// store. Err names a secret that is gone.
    pub(super) fn task_redactor(&self, resume: &TaskResume) -> Result<Redactor, String> {
        let mut secrets = Vec::new();
        for name in &resume.secret_names {
            match self.secrets.get(name, Delivery::Env(String::new())) {
                Ok(s) => secrets.push(s),
                Err(_) => return Err(name.clone()),
            }
        }
        Ok(Redactor::new(&secrets))
    }

    /// Takes over a task that was running when rauhad stopped: its zone
    /// was adopted with its process, whose output (what came before, from
    /// the spill files, and since, from the agent) and exit make the
    /// task's one result; its timeout counts from its start. A task whose
    /// process is gone ends `interrupted`.
    pub async fn resume_task(&self, mut task: TaskRecord) -> Result<TaskResult, DaemonError> {
        let Some(resume) = task.resume.clone() else {
            return self
                .interrupt(task, "rauhad stopped while the task ran")
                .map(|r| *r);
        };
        let Some(zone) = self.store.zone(&task.zone_id)? else {
            return self
                .interrupt(task, "its zone was gone when rauhad started again")
                .map(|r| *r);
        };
        // A commit the killed rauhad was making is undone (or, if whole,
        // finished) before anything else looks at the repository.
        let cut_commit = match &resume.workspace {
            Some(w) => Some(self.recover_commit(&zone, task.id, &w.repo_path).await),
            None => None,
        };
        let redactor = match self.task_redactor(&resume) {
            Ok(redactor) => redactor,
            Err(name) => {
                // Its output cannot be redacted any more: none of it is
                // kept, and the zone goes.
                let zone_record = zone.clone();
                let r = self.interrupt(task, &format!("its secret {name:?} was removed while rauhad was away, so its output could not be redacted and was dropped"))?;
                if !resume.keep_zone {
                    let _ = self.destroy(zone_record).await;
                }
                return Ok(*r);
            }
        };
        let process = self.live_process(&resume.process_id);
        let mut events = resume.events.clone();
        events.push(self.events.emit(
            EventKind::TaskResumed,
            Some((zone.id, &zone.name)),
            Some(task.id),
            "rauhad started again and took the task over",
        ));
        let mut result = TaskResult::not_run(
            task.id,
            zone.id,
            task.command.clone(),
            self.enforcement_of(&zone),
        );
        result.image = zone.root.image();
        let elapsed = now_ms().saturating_sub(task.started_ms);
        let timeout = (resume.timeout_ms > 0)
            .then(|| Duration::from_millis(resume.timeout_ms.saturating_sub(elapsed).max(1)));
        task.resume = Some(resume.clone());
        let ending = Ending {
            task,
            zone: zone.clone(),
            timeout,
            keep_zone: resume.keep_zone,
            workspace: resume.workspace.map(|w| WorkspaceRun {
                spec: WorkspaceSpec {
                    repo_path: w.repo_path,
                    target: w.target,
                },
                commit: w.commit,
                diff_cap: usize::try_from(w.diff_cap).unwrap_or(usize::MAX),
                commit_git_metadata: w.commit_git_metadata,
            }),
            redactor,
            oom_before: resume.oom_before,
            events,
            resumed: true,
            cut_commit,
            overdue: resume.timeout_ms > 0 && elapsed >= resume.timeout_ms,
        };
        let live = match process {
            Some(process) => {
                // Adopting the zone spilled it already, unless a secret was
                // missing then.
                if let Some(dir) = task_output_dir(&zone).filter(|_| !process.spilled()) {
                    if let Err(e) = process.spill_to(&dir, &ending.redactor) {
                        tracing::warn!(task = %ending.task.id, error = %e, "cannot read back the task's output");
                    }
                }
                Some(Live {
                    process,
                    forwarder: None,
                })
            }
            None => None,
        };
        if live.is_none() {
            result.status = TaskStatus::Interrupted;
            result.error = Some(
                "the task's process was gone when rauhad started again (its zone's agent died too)"
                    .into(),
            );
        }
        self.conclude(ending, live, result).await
    }

    /// Stores `reason` as the result of a task that could not finish.
    pub(super) fn interrupt(
        &self,
        mut task: TaskRecord,
        reason: &str,
    ) -> Result<Box<TaskResult>, DaemonError> {
        let mut result = TaskResult::not_run(
            task.id,
            task.zone_id,
            task.command.clone(),
            Default::default(),
        );
        result.status = TaskStatus::Interrupted;
        result.error = Some(reason.to_string());
        result.duration_ms = now_ms().saturating_sub(task.started_ms);
        task.state = TaskState::Finished;
        task.result = Some(result.clone());
        task.resume = None;
        self.store.put_task(&task)?;
        Ok(Box::new(result))
    }

    /// The end of a task, started here or taken over after a restart:
    /// waits for its process (within what is left of its timeout), fills
    /// the result, settles the workspace, stores the one result, and
    /// removes the zone unless it is kept.
    async fn conclude(
        &self,
        ending: Ending,
        live: Option<Live>,
        mut result: TaskResult,
    ) -> Result<TaskResult, DaemonError> {
        let Ending {
            mut task,
            zone,
            timeout,
            keep_zone,
            workspace,
            redactor,
            oom_before,
            mut events,
            resumed,
            cut_commit,
            overdue,
        } = ending;
        let task_id = task.id;
        if let Some(Live { process, forwarder }) = live {
            let (end, timed_out) = self.wait_with_timeout(&zone, &process, timeout).await;
            // Or the agent killed it at its deadline while no rauhad was
            // there to.
            let timed_out = timed_out
                || matches!(end, ProcessEnd::Exited(s)
                    if s.deadline || (overdue && s.signal == Some(libc::SIGKILL)));
            if let Some((f, done_tx)) = forwarder {
                let _ = done_tx.send(());
                let _ = f.await;
            }
            if timed_out {
                let limit = task
                    .resume
                    .as_ref()
                    .filter(|r| r.timeout_ms > 0)
                    .map(|r| {
                        rauha_spec::duration::format_duration(Duration::from_millis(r.timeout_ms))
                    })
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
                // Taken over, the agent did not know the process: rauhad
                // stopped between recording it and the agent starting it.
                ProcessEnd::Lost if resumed => {
                    result.status = TaskStatus::Interrupted;
                    result.error = Some(
                        "rauhad stopped while the task's process was being started; it did not run"
                            .into(),
                    )
                }
                ProcessEnd::Lost => {
                    result.error = Some(
                        "the zone's agent died before the task ended; see the zone's agent.log"
                            .into(),
                    )
                }
            }
            let cut = result.status != TaskStatus::Succeeded && result.status != TaskStatus::Failed;
            fill_output(
                &mut result,
                &process.stdout(),
                &process.stderr(),
                &redactor,
                cut,
            );
        }
        if let Some(w) = &workspace {
            if let Some(full) = self.workspace_full(&zone) {
                events.push(self.events.emit(
                    EventKind::DiskLimitReached,
                    Some((zone.id, &zone.name)),
                    Some(task_id),
                    full,
                ));
            }
            match cut_commit {
                // Whole before rauhad was killed: what it committed.
                Some(Ok(rauha_workspace::Recovered::Finished(changes))) => {
                    result.files_changed = redacted_changes(changes, &redactor);
                    result.workspace = Some(WorkspaceOutcome::Committed);
                }
                Some(Err(e)) => {
                    result.error = Some(redactor.text(&e));
                    result.workspace = Some(WorkspaceOutcome::CommitFailed);
                    if result.status != TaskStatus::Interrupted {
                        result.status = TaskStatus::Failed;
                    }
                }
                _ if result.status == TaskStatus::Interrupted => {
                    result.workspace = Some(WorkspaceOutcome::Discarded);
                }
                _ => {
                    self.settle_workspace(&zone, w, keep_zone, &redactor, &mut result)
                        .await
                }
            }
        }
        result.duration_ms = now_ms().saturating_sub(task.started_ms);
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
        task.resume = None;
        self.store.put_task(&task)?;
        if workspace.is_some() {
            if let Some(journal) = commit_journal(&zone, task_id) {
                if let Err(e) = std::fs::remove_file(&journal) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        tracing::warn!(journal = %journal.display(), error = %e, "cannot remove a stored commit's journal");
                    }
                }
            }
        }
        if let Err(e) = self.prune_tasks() {
            tracing::error!(error = %e, "task retention failed");
        }
        if !keep_zone {
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
            let journal = commit_journal(zone, result.task_id);
            let all = changes.clone();
            let committed = tokio::task::spawn_blocking(move || {
                let journal =
                    journal.ok_or("the zone has no state directory for the commit's journal")?;
                if let Some(dir) = journal.parent() {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
                }
                rauha_workspace::commit(&repo, &upper, &all, &journal).map_err(|e| e.to_string())
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
        result.files_changed = redacted_changes(changes, redactor);
        if outcome == WorkspaceOutcome::CommitFailed {
            // What was asked of the task did not happen: it failed, whatever
            // its own exit code (the CLI exits non-zero).
            result.status = TaskStatus::Failed;
        }
        result.workspace = Some(outcome);
    }

    /// Brings the repository of a task taken over after a restart back to
    /// before or after the commit the killed rauhad was making, if any.
    pub(super) async fn recover_commit(
        &self,
        zone: &ZoneRecord,
        task: Uuid,
        repo: &str,
    ) -> Result<rauha_workspace::Recovered, String> {
        let Some(journal) = commit_journal(zone, task) else {
            return Ok(rauha_workspace::Recovered::Nothing);
        };
        let repo = PathBuf::from(repo);
        let recovered =
            tokio::task::spawn_blocking(move || rauha_workspace::recover(&repo, &journal))
                .await
                .map_err(|e| format!("the commit's recovery failed: {e}"))?
                .map_err(|e| e.to_string());
        match &recovered {
            Ok(rauha_workspace::Recovered::Nothing) => {}
            Ok(r) => {
                let what = if matches!(r, rauha_workspace::Recovered::RolledBack) {
                    "undone; the task's commit is made again"
                } else {
                    "whole; its clean-up finished"
                };
                tracing::info!(%task, "a commit cut by rauhad's stop was {what}");
            }
            Err(e) => {
                tracing::error!(%task, error = %e, "cannot recover a commit cut by rauhad's stop")
            }
        }
        recovered
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

/// The changes as a result shows them. A task may write a secret into a
/// name as well as into content: nothing of a change leaves unredacted.
fn redacted_changes(
    changes: Vec<rauha_spec::result::FileChange>,
    redactor: &Redactor,
) -> Vec<rauha_spec::result::FileChange> {
    changes
        .into_iter()
        .map(|mut c| {
            c.path = redactor.text(&c.path);
            c.diff = c.diff.map(|d| redactor.text(&d));
            c.link_target = c.link_target.map(|t| redactor.text(&t));
            c
        })
        .collect()
}
