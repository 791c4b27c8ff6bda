//! Start-up reconciliation: the store is the truth; kernel state follows.
//!
//! [`plan`] decides, from the records and from which zone agents are still
//! alive, what to do with each zone and task; it is pure and unit-tested.
//! [`ZoneRegistry::recover`] carries the plan out, then removes kernel state
//! (cgroups, state dirs, mounts) that no remaining record owns.

use std::collections::HashSet;
use std::sync::Arc;

use rauha_spec::event::EventKind;
use rauha_spec::ZoneState;
use uuid::Uuid;

use super::{ProcessEnd, ZoneRegistry};
use crate::error::DaemonError;
use crate::store::{ProcessState, TaskRecord, TaskState, ZoneRecord};
use rauha_backend::ZoneSetup;
use rauha_guest_agent::protocol::ExitStatus;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The agent is alive: reconnect to it.
    Adopt(Uuid),
    /// A persistent zone whose agent is gone: build it again.
    Rebuild(Uuid),
    /// A zone that cannot continue (a task zone, or half made or deleted).
    Remove(Uuid),
    /// A task that was running and cannot go on: it ends `interrupted`.
    FailTask(Uuid),
    /// A task that was running in a zone that is adopted: the restarted
    /// rauhad waits for it and stores its real result.
    ResumeTask(Uuid),
}

pub fn plan(zones: &[ZoneRecord], tasks: &[TaskRecord], alive: &HashSet<Uuid>) -> Vec<Action> {
    // A task goes on where it was running, in a zone whose agent lives.
    let resumable = |t: &TaskRecord| {
        t.state == TaskState::Running
            && t.resume.is_some()
            && alive.contains(&t.zone_id)
            && zones.iter().any(|z| {
                z.id == t.zone_id && !matches!(z.state, ZoneState::Creating | ZoneState::Deleting)
            })
    };
    let mut actions = Vec::new();
    for z in zones {
        let runs_a_task = tasks.iter().any(|t| t.zone_id == z.id && resumable(t));
        let action = match z.state {
            ZoneState::Creating | ZoneState::Deleting => Action::Remove(z.id),
            _ if z.ephemeral && !runs_a_task => Action::Remove(z.id),
            _ if alive.contains(&z.id) => Action::Adopt(z.id),
            _ => Action::Rebuild(z.id),
        };
        actions.push(action);
    }
    for t in tasks.iter().filter(|t| t.state == TaskState::Running) {
        actions.push(if resumable(t) {
            Action::ResumeTask(t.id)
        } else {
            Action::FailTask(t.id)
        });
    }
    actions
}

impl ZoneRegistry {
    pub async fn recover(&self) -> Result<(), DaemonError> {
        let zones = self.store.zones()?;
        let tasks = self.store.tasks()?;
        let alive: HashSet<Uuid> = zones
            .iter()
            .filter(|z| {
                let backend = self.backends.of(z);
                z.handle
                    .as_ref()
                    .is_some_and(|h| backend.is_ok_and(|b| b.is_alive(h)))
            })
            .map(|z| z.id)
            .collect();
        // The maps (kept pinned across the restart) get the recorded zones
        // back, each under its recorded index, and lose everything else.
        if let Err(e) = self.sync_enforcement() {
            tracing::error!(error = %e, "cannot bring the BPF maps in step with the store");
        }
        let actions = plan(&zones, &tasks, &alive);
        // A commit the killed rauhad was making for a task that cannot go
        // on is brought back first, while its zone's state dir (and the
        // journal in it) is still there: the zone is removed below.
        for action in &actions {
            let Action::FailTask(id) = action else {
                continue;
            };
            let Some(task) = tasks.iter().find(|t| t.id == *id) else {
                continue;
            };
            if let (Some(w), Some(zone)) = (
                task.resume.as_ref().and_then(|r| r.workspace.as_ref()),
                zones.iter().find(|z| z.id == task.zone_id),
            ) {
                let _ = self.recover_commit(zone, task.id, &w.repo_path).await;
            }
        }
        let mut resumed = Vec::new();
        for action in actions {
            let outcome = match &action {
                Action::ResumeTask(id) => {
                    resumed.extend(tasks.iter().find(|t| t.id == *id).cloned());
                    Ok(())
                }
                Action::Adopt(id) => {
                    self.adopt(zones.iter().find(|z| z.id == *id).cloned())
                        .await
                }
                Action::Rebuild(id) => {
                    self.rebuild(zones.iter().find(|z| z.id == *id).cloned())
                        .await
                }
                Action::Remove(id) => match zones.iter().find(|z| z.id == *id) {
                    Some(z) => self.destroy(z.clone()).await,
                    None => Ok(()),
                },
                Action::FailTask(id) => self.fail_task(tasks.iter().find(|t| t.id == *id).cloned()),
            };
            if let Err(e) = outcome {
                tracing::error!(?action, error = %e, "recovery step failed");
            }
        }
        let known: Vec<Uuid> = self.store.zones()?.iter().map(|z| z.id).collect();
        for backend in self.backends.all() {
            for removed in backend.cleanup_orphans(&known)? {
                self.events
                    .emit(EventKind::OrphanRemoved, None, None, removed);
            }
        }
        self.sync_enforcement()?;
        // Each taken-over task ends on its own, once its process does.
        if let Some(me) = self.me.upgrade() {
            for task in resumed {
                let me = Arc::clone(&me);
                tokio::spawn(async move {
                    let id = task.id;
                    if let Err(e) = me.resume_task(task).await {
                        tracing::error!(task = %id, error = %e, "cannot finish a task taken over after a restart");
                    }
                });
            }
        }
        Ok(())
    }

    async fn adopt(&self, zone: Option<ZoneRecord>) -> Result<(), DaemonError> {
        let Some(zone) = zone else { return Ok(()) };
        let Some(handle) = zone.handle.clone() else {
            return Ok(());
        };
        // Tracked before the link opens: an exit the agent reports the
        // moment it is connected must find its process to end.
        let max_output = usize::try_from(zone.policy.max_output()).unwrap_or(usize::MAX);
        // A task's process gets its spill back before the agent sends
        // again what no rauhad acknowledged: it is placed after what the
        // spill holds.
        let resumed: Vec<(Uuid, crate::store::TaskResume)> = self
            .store
            .tasks()?
            .into_iter()
            .filter(|t| t.zone_id == zone.id)
            .filter_map(|t| t.resume.map(|r| (t.id, r)))
            .collect();
        let resumes: Vec<&crate::store::TaskResume> = resumed.iter().map(|(_, r)| r).collect();
        let output_dir = super::sandbox::task_output_dir(&zone);
        let mut tracked = Vec::new();
        for p in self
            .store
            .processes()?
            .into_iter()
            .filter(|p| p.zone_id == zone.id)
        {
            // A task's process that ended before the kill, its exit
            // recorded but its task not yet concluded (rauhad was killed
            // while it settled the workspace or stored the result): taken
            // over as ended, with its output from the spill.
            let ended = match p.state {
                ProcessState::Running => None,
                ProcessState::Exited if resumes.iter().any(|r| r.process_id == p.id) => {
                    Some(ExitStatus {
                        code: p.exit_code.filter(|_| p.signal.is_none()),
                        signal: p.signal,
                        deadline: p.deadline,
                    })
                }
                _ => continue,
            };
            let stdio = super::stdio::HostStdio {
                stdin: None,
                stdout: p.stdout_path.as_ref().map(Into::into),
                stderr: p.stderr_path.as_ref().map(Into::into),
                api_stdin: false,
            };
            let stdin = p.stdin_path.clone();
            let process = self.track(p, max_output);
            process.taken_over();
            if let Some(status) = ended {
                process.end.send_replace(Some(ProcessEnd::Exited(status)));
            }
            let resume = resumes.iter().find(|r| r.process_id == process.id);
            if let (Some(dir), Some(resume)) = (&output_dir, resume) {
                if let Ok(redactor) = self.task_redactor(resume) {
                    if let Err(e) = process.spill_to(dir, &redactor) {
                        tracing::warn!(process = %process.id, error = %e, "cannot read back the task's output");
                    }
                }
            }
            // Output goes on to the paths it went to before the restart.
            if stdio.stdout.is_some() || stdio.stderr.is_some() {
                match super::stdio::open_outputs(&stdio, &process) {
                    Ok(tx) => *process.sink.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx),
                    Err(e) => {
                        tracing::warn!(process = %process.id, error = %e, "cannot reopen the process's output paths")
                    }
                }
            }
            tracked.push((process, stdin));
        }
        let backend = std::sync::Arc::clone(self.backends.of(&zone)?);
        let (live, running) = match self
            .connect(backend.as_ref(), zone.id, &zone.name, &handle)
            .await
        {
            Ok(connected) => connected,
            Err(e) => {
                for (p, _) in &tracked {
                    if p.end.borrow().is_some() {
                        // Ended before: but the rebuild below wipes the
                        // zone's workspace, so its task cannot be settled
                        // as it ran; it ends `interrupted`.
                        self.untrack(&p.id);
                    }
                    self.finish_process(p.id, ProcessEnd::Lost);
                }
                tracing::warn!(zone = %zone.name, error = %e, "cannot reconnect to a live zone; rebuilding it");
                // A commit the killed rauhad was making is brought back
                // first: the rebuild wipes the zone's state dir, and its
                // journal with it.
                for (task, r) in &resumed {
                    if let Some(w) = &r.workspace {
                        let _ = self.recover_commit(&zone, *task, &w.repo_path).await;
                    }
                }
                return self.rebuild(Some(zone)).await;
            }
        };
        // The greeting ended the ones that exited; the agent knows nothing
        // of the rest.
        for (p, stdin) in tracked {
            if !running.contains(&p.id.to_string()) {
                self.finish_process(p.id, ProcessEnd::Lost);
            } else if let Some(path) = stdin {
                // Stdin is read on from its path: the agent kept the
                // process's end open, and the writer (containerd) still
                // holds its own. Bytes written while no rauhad read are
                // the writer's to lose (EPIPE).
                super::stdio::feed_stdin(path.into(), p, Arc::clone(&live.link));
            }
        }
        self.events.emit(
            EventKind::ZoneRecovered,
            Some((zone.id, &zone.name)),
            None,
            "reconnected to the running zone",
        );
        Ok(())
    }

    async fn rebuild(&self, zone: Option<ZoneRecord>) -> Result<(), DaemonError> {
        let Some(mut zone) = zone else { return Ok(()) };
        let backend = std::sync::Arc::clone(self.backends.of(&zone)?);
        backend.destroy_zone(zone.id, zone.handle.as_ref()).await?;
        for mut p in self
            .store
            .processes()?
            .into_iter()
            .filter(|p| p.zone_id == zone.id && p.state == ProcessState::Running)
        {
            p.state = ProcessState::Lost;
            self.store.put_process(&p)?;
        }
        let setup = ZoneSetup {
            id: zone.id,
            name: zone.name.clone(),
            policy: zone.policy.clone(),
            root: zone.root.clone(),
            workspace: zone.workspace.clone(),
            netns: zone.netns.clone(),
            resolv_conf: self.network().and_then(|n| {
                let f = n.netns_path(zone.id).with_extension("resolv.conf");
                (super::network::is_bridged(&zone.policy) && f.is_file())
                    .then(|| f.display().to_string())
            }),
            cgroup_parent: zone.cgroup_parent.clone(),
        };
        let handle = backend.create_zone(&setup).await?;
        zone.handle = Some(handle.clone());
        zone.state = ZoneState::Created;
        self.store.put_zone(&zone)?;
        self.connect(backend.as_ref(), zone.id, &zone.name, &handle)
            .await?;
        self.events.emit(
            EventKind::ZoneRecovered,
            Some((zone.id, &zone.name)),
            None,
            "zone rebuilt after its agent was found dead",
        );
        Ok(())
    }

    fn fail_task(&self, task: Option<TaskRecord>) -> Result<(), DaemonError> {
        let Some(task) = task else { return Ok(()) };

        let reason = if task.resume.is_none() {
            "rauhad stopped while the task's zone was being made; nothing of it ran"
        } else {
            "rauhad stopped while the task ran, and its zone's agent did not outlive it; its output is lost"
        };
        self.interrupt(task, reason).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rauha_spec::{Policy, RootSpec};

    fn zone(state: ZoneState, ephemeral: bool) -> ZoneRecord {
        ZoneRecord {
            id: Uuid::new_v4(),
            name: "z".into(),
            state,
            policy: Policy::default(),
            root: RootSpec::HostView,
            created_ms: 0,
            task_id: None,
            ephemeral,
            handle: None,
            workspace: None,
            ttl_ms: None,
            netns: None,
            cgroup_parent: None,
            backend: String::new(),
        }
    }

    #[test]
    fn plans_each_kind_of_zone() {
        let live = zone(ZoneState::Running, false);
        let dead = zone(ZoneState::Running, false);
        let task_zone = zone(ZoneState::Running, true);
        let half = zone(ZoneState::Creating, false);
        let going = zone(ZoneState::Deleting, false);
        let alive: HashSet<Uuid> = [live.id, task_zone.id].into_iter().collect();
        let zones = vec![
            live.clone(),
            dead.clone(),
            task_zone.clone(),
            half.clone(),
            going.clone(),
        ];
        let got = plan(&zones, &[], &alive);
        assert_eq!(
            got,
            vec![
                Action::Adopt(live.id),
                Action::Rebuild(dead.id),
                Action::Remove(task_zone.id),
                Action::Remove(half.id),
                Action::Remove(going.id)
            ]
        );
    }

    #[test]
    fn a_running_task_in_a_live_zone_is_resumed_and_its_zone_adopted() {
        let task_zone = zone(ZoneState::Running, true);
        let dead_zone = zone(ZoneState::Running, true);
        let resume = crate::store::TaskResume {
            process_id: Uuid::new_v4(),
            timeout_ms: 0,
            keep_zone: false,
            workspace: None,
            secret_names: vec![],
            oom_before: 0,
            events: vec![],
        };
        let task = |zone_id| TaskRecord {
            id: Uuid::new_v4(),
            zone_id,
            command: vec![],
            state: TaskState::Running,
            started_ms: 0,
            result: None,
            resume: Some(resume.clone()),
        };
        let (live, dead) = (task(task_zone.id), task(dead_zone.id));
        let alive = HashSet::from([task_zone.id]);
        assert_eq!(
            plan(
                &[task_zone.clone(), dead_zone.clone()],
                &[live.clone(), dead.clone()],
                &alive
            ),
            vec![
                Action::Adopt(task_zone.id),
                Action::Remove(dead_zone.id),
                Action::ResumeTask(live.id),
                Action::FailTask(dead.id),
            ]
        );
    }

    #[test]
    fn running_tasks_fail_and_finished_ones_stay() {
        let running = TaskRecord {
            id: Uuid::new_v4(),
            zone_id: Uuid::new_v4(),
            command: vec![],
            state: TaskState::Running,
            started_ms: 0,
            result: None,
            resume: None,
        };
        let done = TaskRecord {
            state: TaskState::Finished,
            id: Uuid::new_v4(),
            ..running.clone()
        };
        assert_eq!(
            plan(&[], &[running.clone(), done], &HashSet::new()),
            vec![Action::FailTask(running.id)]
        );
    }
}
