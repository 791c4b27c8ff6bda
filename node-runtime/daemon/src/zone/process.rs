//! Work inside a zone: run (detached), exec (streamed), ps, logs, stop,
//! delete, wait.

use std::sync::Arc;
use std::time::Duration;

use rauha_guest_agent::protocol::{FdData, SpawnSpec, User};
use rauha_spec::event::EventKind;
use rauha_spec::zone::ProcessSpec;
use uuid::Uuid;

use tokio::sync::broadcast;

use super::stdio::{self, HostStdio};
use super::{LiveProcess, OutputChunk, ProcessEnd, ZoneRegistry};
use crate::error::DaemonError;
use crate::events::now_ms;
use crate::redact::Redactor;
use crate::store::{ProcessRecord, ProcessState, ZoneRecord};

impl ZoneRegistry {
    /// Starts a process and returns, with it, a receiver of its output that
    /// was subscribed before the process could write anything.
    pub async fn start_process_streamed(
        &self,
        zone: &ZoneRecord,
        spec: ProcessSpec,
        fds: Vec<FdData>,
        redactor: &Redactor,
        stdio: &HostStdio,
        id: Option<Uuid>,
    ) -> Result<(Arc<LiveProcess>, broadcast::Receiver<OutputChunk>), DaemonError> {
        self.start_process_spilled(zone, spec, fds, redactor, stdio, id, None, None)
            .await
    }

    /// [`Self::start_process_streamed`], its kept output also written,
    /// redacted, under `spill` from its first byte on (a task's: see
    /// `LiveProcess::spill_to`); the agent kills the zone's processes at
    /// `deadline_ms` if no rauhad is connected then to do it.
    #[allow(clippy::too_many_arguments)]
    pub async fn start_process_spilled(
        &self,
        zone: &ZoneRecord,
        spec: ProcessSpec,
        fds: Vec<FdData>,
        redactor: &Redactor,
        stdio: &HostStdio,
        id: Option<Uuid>,
        spill: Option<&std::path::Path>,
        deadline_ms: Option<u64>,
    ) -> Result<(Arc<LiveProcess>, broadcast::Receiver<OutputChunk>), DaemonError> {
        if !zone.state.can_run() {
            return Err(DaemonError::ZoneState {
                zone: zone.name.clone(),
                state: zone.state.as_str(),
                rule: format!(
                    "work starts only in a created, running or stopped zone{}",
                    if zone.state == rauha_spec::ZoneState::Paused {
                        " (resume it first)"
                    } else {
                        ""
                    }
                ),
            });
        }
        let live = self
            .live_zone(&zone.id)
            .ok_or_else(|| DaemonError::NoAgent {
                zone: zone.name.clone(),
                hint: "; delete and re-create it",
            })?;
        let security =
            super::security::for_process(&zone.name, &zone.policy, spec.security.as_ref())?;
        // Its ports are checked, recorded and published as one step (no
        // other start or end rebuilds the rules in between), before it
        // starts: it may be reached as soon as it listens.
        let rules = if spec.publish.is_empty() {
            None
        } else {
            self.rules_guard().await
        };
        let publish = self.process_publish(zone, &spec.publish)?;
        let record = ProcessRecord {
            id: id.unwrap_or_else(Uuid::new_v4),
            zone_id: zone.id,
            // Records and events keep the command without secret values.
            args: spec.args.iter().map(|a| redactor.text(a)).collect(),
            state: ProcessState::Running,
            pid: 0,
            host_pid: 0,
            stdout_path: stdio.stdout.as_ref().map(|p| p.display().to_string()),
            stdin_path: stdio.stdin.as_ref().map(|p| p.display().to_string()),
            stderr_path: stdio.stderr.as_ref().map(|p| p.display().to_string()),
            exit_code: None,
            signal: None,
            deadline: false,
            started_ms: now_ms(),
            ended_ms: 0,
            publish: publish.clone(),
        };
        let max_output = usize::try_from(zone.policy.max_output()).unwrap_or(usize::MAX);
        let process = self.track(record.clone(), max_output);
        let output = process.subscribe();
        if let Some(dir) = spill {
            if let Err(e) = process.spill_to(dir, redactor) {
                tracing::warn!(process = %record.id, error = %e, "cannot keep the task's output beside its zone");
            }
        }
        if stdio.stdout.is_some() || stdio.stderr.is_some() {
            match stdio::open_outputs(stdio, &process) {
                Ok(tx) => *process.sink.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx),
                Err(e) => {
                    self.untrack(&record.id);
                    return Err(e);
                }
            }
        }
        let spawn = SpawnSpec {
            id: record.id.to_string(),
            args: spec.args,
            env: spec.env,
            cwd: spec.cwd,
            fds,
            user: spec.user.map(|u| User {
                uid: u.uid,
                gid: u.gid,
                groups: u.groups,
            }),
            stdin: stdio.stdin.is_some() || stdio.api_stdin,
            terminal: spec.terminal,
            deadline_ms,
            root: spec.root,
            security: security.map(Box::new),
        };
        // Recorded before the agent starts it: a rauhad killed between the
        // two finds the process again when it adopts the zone (or learns
        // from the agent that it never started).
        if let Err(e) = self.store.put_process(&record) {
            self.untrack(&record.id);
            return Err(e.into());
        }
        if !publish.is_empty() {
            // A rebuild the kernel refused leaves the zone's rules as they
            // were (Network::update): only the record goes.
            if let Err(e) = self.renew_stored(zone.id).await {
                self.untrack(&record.id);
                let _ = self.store.remove_process(&record.id);
                return Err(e);
            }
        }
        drop(rules);
        match live.link.spawn(spawn).await {
            Ok(pid) => {
                let host_pid = self
                    .backends
                    .of(zone)
                    .ok()
                    .and_then(|b| b.host_pid(zone.id, pid))
                    .unwrap_or(0);
                let rec = {
                    let mut r = process.record.lock().unwrap_or_else(|e| e.into_inner());
                    r.pid = pid;
                    r.host_pid = host_pid;
                    r.clone()
                };
                if let Some(path) = stdio.stdin.clone() {
                    stdio::feed_stdin(path, Arc::clone(&process), Arc::clone(&live.link));
                }
                self.store.put_process(&rec)?;
                if let Some(mut current) = self.store.zone(&zone.id)? {
                    if current.state != rauha_spec::ZoneState::Running {
                        self.transition(&mut current, rauha_spec::ZoneState::Running)?;
                    }
                }
                self.events.emit(
                    EventKind::ProcessStarted,
                    Some((zone.id, &zone.name)),
                    Some(rec.id),
                    rec.args.join(" "),
                );
                Ok((process, output))
            }
            Err(e) => {
                // Ends the output relay, which closes the stdio paths.
                process
                    .sink
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take();
                self.untrack(&record.id);
                if let Err(e) = self.store.remove_process(&record.id) {
                    tracing::warn!(process = %record.id, error = %e, "cannot forget a process that did not start");
                }
                if !publish.is_empty() {
                    if let Err(e) = self.renew_ports(zone.id).await {
                        tracing::warn!(process = %record.id, error = %e, "cannot take back the ports of a process that did not start");
                    }
                }
                Err(DaemonError::Start {
                    zone: zone.name.clone(),
                    source: e,
                })
            }
        }
    }

    /// A process record, live or stored.
    pub fn find_process(&self, id: &Uuid) -> Result<ProcessRecord, DaemonError> {
        if let Some(p) = self.live_process(id) {
            return Ok(p.record());
        }
        self.store
            .process(id)?
            .ok_or_else(|| DaemonError::process_not_found(&id.to_string()))
    }

    pub fn list_processes(
        &self,
        zone: Option<&ZoneRecord>,
    ) -> Result<Vec<ProcessRecord>, DaemonError> {
        let mut out: Vec<ProcessRecord> = self
            .store
            .processes()?
            .into_iter()
            .filter(|p| zone.is_none_or(|z| z.id == p.zone_id))
            .map(|p| self.live_process(&p.id).map(|l| l.record()).unwrap_or(p))
            .collect();
        out.sort_by_key(|p| p.started_ms);
        Ok(out)
    }

    /// Signals a process's group with SIGTERM, then SIGKILL after `grace`.
    pub async fn stop_process(
        &self,
        id: &Uuid,
        grace: Duration,
    ) -> Result<ProcessRecord, DaemonError> {
        let record = self.find_process(id)?;
        let Some(process) = self.live_process(id) else {
            return Ok(record);
        };
        if process.end.borrow().is_some() {
            return Ok(process.record());
        }
        let zone = self
            .live_zone(&record.zone_id)
            .ok_or_else(|| DaemonError::ProcessZoneGone)?;
        zone.link.signal(&id.to_string(), libc::SIGTERM).await?;
        if tokio::time::timeout(grace, process.wait()).await.is_err() {
            zone.link.signal(&id.to_string(), libc::SIGKILL).await?;
            let _ = tokio::time::timeout(Duration::from_secs(5), process.wait()).await;
        }
        Ok(process.record())
    }

    /// Sends one signal to a running process (its process group).
    pub async fn signal_process(
        &self,
        id: &Uuid,
        signal: i32,
    ) -> Result<ProcessRecord, DaemonError> {
        let (process, zone) = self.running_process(id)?;
        if !(1..=64).contains(&signal) {
            return Err(DaemonError::invalid(
                "signal",
                format!("{signal} is not a signal number (1-64)"),
            ));
        }
        zone.link.signal(&id.to_string(), signal).await?;
        Ok(process.record())
    }

    pub async fn close_stdin(&self, id: &Uuid) -> Result<ProcessRecord, DaemonError> {
        let (process, zone) = self.running_process(id)?;
        if process
            .stdin_relay
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            // Its relay closes it once it has passed on what was written.
            process.stdin_close.notify_one();
        } else {
            zone.link.close_stdin(&id.to_string()).await?;
        }
        Ok(process.record())
    }

    /// Bytes for a running process's stdin (or terminal).
    pub async fn write_stdin(&self, id: &Uuid, data: Vec<u8>) -> Result<(), DaemonError> {
        let (_, zone) = self.running_process(id)?;
        zone.link.stdin(&id.to_string(), data).await?;
        Ok(())
    }

    pub async fn resize(
        &self,
        id: &Uuid,
        rows: u16,
        cols: u16,
    ) -> Result<ProcessRecord, DaemonError> {
        let (process, zone) = self.running_process(id)?;
        zone.link.resize(&id.to_string(), rows, cols).await?;
        Ok(process.record())
    }

    fn running_process(
        &self,
        id: &Uuid,
    ) -> Result<(Arc<LiveProcess>, Arc<super::LiveZone>), DaemonError> {
        let record = self.find_process(id)?;
        let process = self
            .live_process(id)
            .filter(|p| p.end.borrow().is_none())
            .ok_or_else(|| DaemonError::ProcessEnded {
                id: *id,
                state: record.state.as_str(),
            })?;
        let zone = self
            .live_zone(&record.zone_id)
            .ok_or_else(|| DaemonError::ProcessZoneGone)?;
        Ok((process, zone))
    }

    pub fn delete_process(&self, id: &Uuid) -> Result<(), DaemonError> {
        let record = self.find_process(id)?;
        if record.state == ProcessState::Running {
            return Err(DaemonError::ProcessRunning { id: *id });
        }
        self.untrack(id);
        self.store.remove_process(id)?;
        Ok(())
    }

    pub async fn wait_process(&self, id: &Uuid) -> Result<ProcessRecord, DaemonError> {
        let record = self.find_process(id)?;
        match self.live_process(id) {
            Some(p) => {
                let _: ProcessEnd = p.wait().await;
                p.wait_relayed(Duration::from_secs(10)).await;
                Ok(p.record())
            }
            None => Ok(record),
        }
    }
}
