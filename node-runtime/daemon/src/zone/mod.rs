//! The zone registry: zone and process lifecycles on top of the store (the
//! source of truth) and the isolation backend. One file per operation.

mod backends;
mod create;
mod delete;
mod enforce;
mod lifecycle;
pub mod network;
mod orphans;
pub mod output;
mod policy;
mod process;
pub mod recovery;
pub mod roots;
mod sandbox;
mod security;
pub mod stdio;
mod tasks;
mod ttl;
mod verify;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use rauha_guest_agent::protocol::{ExitStatus, Stream};
use rauha_spec::enforcement::EnforcementMode;
use rauha_spec::event::EventKind;
use rauha_spec::names::validate_zone_name;
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

pub use self::backends::Backends;
pub use self::create::NewZone;
use self::output::Capture;
pub use self::sandbox::{SandboxRun, WorkspaceRun};
use crate::agent_link::{Ack, AgentEvent, AgentLink, EventHandler};
use crate::error::DaemonError;
use crate::events::{now_ms, EventBus};
use crate::secrets::SecretStore;
use crate::store::{ProcessRecord, ProcessState, Store, ZoneRecord};
use rauha_backend::{IsolationBackend, ZoneHandle};

/// A zone whose agent the daemon is connected to.
pub struct LiveZone {
    pub id: Uuid,
    pub name: String,
    pub link: Arc<AgentLink>,
}

/// How a process ended, as waiters see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessEnd {
    Exited(ExitStatus),
    /// Its zone went away before its exit was seen.
    Lost,
}

/// A chunk of a process's live output.
#[derive(Debug, Clone)]
pub struct OutputChunk {
    pub stream: Stream,
    pub data: Vec<u8>,
}

pub struct LiveProcess {
    pub id: Uuid,
    pub zone_id: Uuid,
    record: Mutex<ProcessRecord>,
    stdout: Mutex<Capture>,
    stderr: Mutex<Capture>,
    end: watch::Sender<Option<ProcessEnd>>,
    live: broadcast::Sender<OutputChunk>,
    /// Output for the process's host stdio paths, while it runs.
    sink: Mutex<Option<tokio::sync::mpsc::UnboundedSender<OutputChunk>>>,
    /// False while output is still being written to host stdio paths.
    relayed: Arc<watch::Sender<bool>>,
    /// Bytes handed to the relay and not yet written: past
    /// `stdio::MAX_PENDING` (a reader that stopped reading) output for the
    /// paths is dropped, never held without bound.
    sink_pending: Arc<std::sync::atomic::AtomicUsize>,
    /// Set while a relay feeds its stdin from a host path: a close of stdin
    /// is then the relay's to do (`stdin_close`), after the bytes already
    /// in the path, so that it never overtakes them.
    pub(super) stdin_relay: std::sync::atomic::AtomicBool,
    pub(super) stdin_close: tokio::sync::Notify,
    /// A task's kept output, also written to files as it comes (stdout,
    /// stderr), redacted, so that a restarted rauhad has what came before.
    spill: Mutex<Option<Spill>>,
    /// How far the host has each stream (stdout, stderr), in the agent's
    /// offsets: output sent again after a restart is placed by them.
    received: Mutex<[Received; 2]>,
}

/// How many bytes of a stream the host has (raw, before redaction).
#[derive(Debug, Clone, Copy)]
struct Received {
    end: u64,
    /// False for a process taken over without a record of its position:
    /// the first chunk that comes sets it.
    known: bool,
}

/// Where a task's output is spilled, one file and one redactor per stream,
/// and beside each file its position: how many raw bytes of the stream
/// the file holds, redacted, and its length then (`<id>.stdout.pos`,
/// sixteen bytes, rewritten in place after each write). A restarted rauhad
/// cuts the file back to that length and has the agent send again what
/// follows, so that no byte is lost or written twice.
struct Spill {
    files: [std::fs::File; 2],
    redactors: [crate::redact::StreamRedactor; 2],
    positions: [std::fs::File; 2],
    written: [u64; 2],
}

fn stream_index(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

/// A spill file's position record: `(raw bytes, file length)`.
fn read_position(path: &std::path::Path) -> Option<(u64, u64)> {
    let bytes = std::fs::read(path).ok()?;
    let raw = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let len = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?);
    Some((raw, len))
}

fn write_position(file: &std::fs::File, raw: u64, len: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&raw.to_le_bytes());
    bytes[8..].copy_from_slice(&len.to_le_bytes());
    file.write_all_at(&bytes, 0)
}

impl LiveProcess {
    pub fn record(&self) -> ProcessRecord {
        self.record
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A process taken over after a restart: where its streams stand is
    /// learnt from its spill's positions, or else from the agent.
    fn taken_over(&self) {
        for r in self
            .received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter_mut()
        {
            r.known = false;
        }
    }

    /// Places a chunk the agent sent at `offset`: returns what of it is
    /// new (none when the host has it all), the stream's end after it.
    fn place(&self, stream: Stream, offset: u64, mut data: Vec<u8>) -> (Vec<u8>, u64) {
        let mut all = self.received.lock().unwrap_or_else(|e| e.into_inner());
        let r = &mut all[stream_index(stream)];
        if !r.known {
            *r = Received {
                end: offset,
                known: true,
            };
        }
        let end = offset + data.len() as u64;
        if end <= r.end {
            return (Vec::new(), r.end);
        }
        if offset > r.end {
            tracing::warn!(process = %self.id, missing = offset - r.end, "output lost before this chunk");
        }
        data.drain(..r.end.saturating_sub(offset) as usize);
        r.end = end;
        (data, end)
    }

    /// Whether its output is spilled already.
    pub fn spilled(&self) -> bool {
        self.spill
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Writes the output kept from now on, redacted, to `dir/<id>.stdout`
    /// and `.stderr` as well, after what they hold, which is read back
    /// first (a task taken over after a restart: each file cut back to its
    /// recorded position, from where the agent sends the rest again).
    pub fn spill_to(
        &self,
        dir: &std::path::Path,
        redactor: &crate::redact::Redactor,
    ) -> std::io::Result<()> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let mut files = Vec::new();
        let mut redactors = Vec::new();
        let mut positions = Vec::new();
        let mut lengths = Vec::new();
        for (suffix, capture) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            use std::io::Write;
            let path = dir.join(format!("{}.{suffix}", self.id));
            let pos_path = dir.join(format!("{}.{suffix}.pos", self.id));
            let i = files.len();
            let recorded = read_position(&pos_path);
            if let Some((raw, len)) = recorded {
                // Written after the position was: the agent sends it again.
                if let Ok(f) = std::fs::OpenOptions::new().write(true).open(&path) {
                    f.set_len(len)?;
                }
                let mut r = self.received.lock().unwrap_or_else(|e| e.into_inner());
                if r[i].end == 0 {
                    r[i] = Received {
                        end: raw,
                        known: true,
                    };
                }
            }
            let before = std::fs::read(&path).unwrap_or_default();
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&path)?;
            let position = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .open(&pos_path)?;
            let mut stream = crate::redact::StreamRedactor::new(redactor.clone());
            let mut c = capture.lock().unwrap_or_else(|e| e.into_inner());
            // What came before the restart, then what came since.
            let mut restored = Capture::new(c.cap);
            restored.push(&before);
            // The head of the stream is kept: what came past the cap
            // before the restart was dropped.
            restored.dropped += recorded.map_or(0, |(raw, _)| raw.saturating_sub(c.cap as u64));
            let kept = restored.push(&c.data);
            let safe = stream.push(&c.data[..kept]);
            file.write_all(&safe)?;
            let written = before.len() as u64 + safe.len() as u64;
            let raw = self.received.lock().unwrap_or_else(|e| e.into_inner())[i].end;
            write_position(&position, raw.saturating_sub(stream.held() as u64), written)?;
            restored.dropped += c.dropped;
            *c = restored;
            files.push(file);
            redactors.push(stream);
            positions.push(position);
            lengths.push(written);
        }
        let files: [std::fs::File; 2] = files
            .try_into()
            .map_err(|_| std::io::Error::other("two files"))?;
        let redactors: [crate::redact::StreamRedactor; 2] = redactors
            .try_into()
            .map_err(|_| std::io::Error::other("two redactors"))?;
        let positions: [std::fs::File; 2] = positions
            .try_into()
            .map_err(|_| std::io::Error::other("two files"))?;
        let written: [u64; 2] = lengths
            .try_into()
            .map_err(|_| std::io::Error::other("two lengths"))?;
        *self.spill.lock().unwrap_or_else(|e| e.into_inner()) = Some(Spill {
            files,
            redactors,
            positions,
            written,
        });
        Ok(())
    }

    pub fn stdout(&self) -> Capture {
        self.stdout
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn stderr(&self) -> Capture {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until the process ends.
    pub async fn wait(&self) -> ProcessEnd {
        let mut rx = self.end.subscribe();
        loop {
            if let Some(end) = *rx.borrow_and_update() {
                return end;
            }
            if rx.changed().await.is_err() {
                return ProcessEnd::Lost;
            }
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<OutputChunk> {
        self.live.subscribe()
    }

    /// Marks output as being relayed to host paths; the relay sends `true`
    /// on the returned sender once it wrote everything.
    fn relay_started(&self) -> Arc<watch::Sender<bool>> {
        self.relayed.send_replace(false);
        Arc::clone(&self.relayed)
    }

    /// Waits until all output reached the host stdio paths (at most
    /// `limit`: a reader that stopped reading must not hold up an exit).
    pub async fn wait_relayed(&self, limit: std::time::Duration) {
        let mut rx = self.relayed.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|done| *done)).await;
    }
}

pub struct ZoneRegistry {
    pub backends: Backends,
    pub store: Arc<Store>,
    pub events: EventBus,
    pub mode: EnforcementMode,
    pub retention: Retention,
    pub secrets: SecretStore,
    live: Mutex<HashMap<Uuid, Arc<LiveZone>>>,
    processes: Mutex<HashMap<Uuid, Arc<LiveProcess>>>,
    /// Kept zones with a TTL: since when each has been idle (ms).
    idle_since: Mutex<HashMap<Uuid, u64>>,
    /// Kernel denials per zone, until its task result takes them.
    denied: Mutex<HashMap<Uuid, Vec<rauha_spec::EnforcementEvent>>>,
    /// One lifecycle operation (create, delete) at a time per zone name.
    lifecycle: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The bridged network, once rauhad set it up (`set_network`).
    network: std::sync::OnceLock<network::NetCtx>,
    me: Weak<ZoneRegistry>,
}

/// Held while a zone's create or delete runs (`ZoneRegistry::lifecycle`);
/// the name's entry goes with the last holder.
pub(crate) struct LifecycleGuard<'a> {
    registry: &'a ZoneRegistry,
    name: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for LifecycleGuard<'_> {
    fn drop(&mut self) {
        let mut map = self
            .registry
            .lifecycle
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // The map's Arc and this guard's: nobody waits (a waiter clones
        // the Arc under this same lock).
        let idle = map
            .get(&self.name)
            .is_some_and(|m| Arc::strong_count(m) == 2);
        self.guard.take();
        if idle {
            map.remove(&self.name);
        }
    }
}

/// How much task history the daemon keeps.
#[derive(Debug, Clone, Copy, Default)]
pub struct Retention {
    /// Keep at most this many finished tasks (the newest).
    pub keep_last: Option<usize>,
    /// Forget finished tasks older than this.
    pub max_age: Option<std::time::Duration>,
    /// Keep only the newest finished tasks whose records fit in this many
    /// bytes together.
    pub max_bytes: Option<u64>,
}

impl ZoneRegistry {
    pub fn new(
        backends: Backends,
        store: Arc<Store>,
        events: EventBus,
        mode: EnforcementMode,
        retention: Retention,
        secrets: SecretStore,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| ZoneRegistry {
            backends,
            store,
            events,
            mode,
            retention,
            secrets,
            live: Mutex::new(HashMap::new()),
            processes: Mutex::new(HashMap::new()),
            idle_since: Mutex::new(HashMap::new()),
            denied: Mutex::new(HashMap::new()),
            lifecycle: Mutex::new(HashMap::new()),
            network: std::sync::OnceLock::new(),
            me: me.clone(),
        })
    }

    /// Waits for, then holds, the zone name's lifecycle lock: a create and
    /// a delete of one zone, or two deletes, never interleave.
    pub(crate) async fn lifecycle(&self, name: &str) -> LifecycleGuard<'_> {
        let m = Arc::clone(
            self.lifecycle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(name.to_string())
                .or_default(),
        );
        let guard = m.lock_owned().await;
        LifecycleGuard {
            registry: self,
            name: name.to_string(),
            guard: Some(guard),
        }
    }

    /// A zone by id or name.
    pub fn find_zone(&self, zone: &str) -> Result<ZoneRecord, DaemonError> {
        if zone.is_empty() {
            return Err(DaemonError::invalid(
                "zone",
                "is empty; give a zone name or id",
            ));
        }
        if let Ok(id) = Uuid::parse_str(zone) {
            return self
                .store
                .zone(&id)?
                .ok_or_else(|| DaemonError::zone_not_found(zone));
        }
        validate_zone_name(zone)
            .map_err(|e| DaemonError::invalid("zone", format!("{e}; or give a zone id (UUID)")))?;
        self.store
            .zones()?
            .into_iter()
            .find(|z| z.name == zone)
            .ok_or_else(|| DaemonError::zone_not_found(zone))
    }

    pub fn live_zone(&self, id: &Uuid) -> Option<Arc<LiveZone>> {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    fn set_live(&self, zone: Arc<LiveZone>) {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(zone.id, zone);
    }

    fn take_live(&self, id: &Uuid) -> Option<Arc<LiveZone>> {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
    }

    pub fn live_process(&self, id: &Uuid) -> Option<Arc<LiveProcess>> {
        self.processes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// Live processes of a zone that have not ended.
    pub fn running_in(&self, zone_id: &Uuid) -> Vec<Arc<LiveProcess>> {
        self.processes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|p| p.zone_id == *zone_id && p.end.borrow().is_none())
            .cloned()
            .collect()
    }

    fn track(&self, record: ProcessRecord, max_output: usize) -> Arc<LiveProcess> {
        let (end, _) = watch::channel(None);
        let (live, _) = broadcast::channel(1024);
        let p = Arc::new(LiveProcess {
            id: record.id,
            zone_id: record.zone_id,
            record: Mutex::new(record),
            stdout: Mutex::new(Capture::new(max_output)),
            stderr: Mutex::new(Capture::new(max_output)),
            end,
            live,
            sink: Mutex::new(None),
            relayed: Arc::new(watch::channel(true).0),
            sink_pending: Default::default(),
            stdin_relay: Default::default(),
            stdin_close: Default::default(),
            spill: Mutex::new(None),
            received: Mutex::new(
                [Received {
                    end: 0,
                    known: true,
                }; 2],
            ),
        });
        self.processes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(p.id, Arc::clone(&p));
        p
    }

    fn untrack(&self, id: &Uuid) {
        self.processes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// Opens the link to a zone's agent, routing its events here.
    /// Returns the zone and the host ids of the processes the agent still runs.
    async fn connect(
        &self,
        backend: &dyn IsolationBackend,
        zone_id: Uuid,
        name: &str,
        handle: &ZoneHandle,
    ) -> Result<(Arc<LiveZone>, Vec<String>), DaemonError> {
        let stream = backend.connect(handle).await?;
        let me = self.me.clone();
        let handler: EventHandler = Arc::new(move |event| {
            me.upgrade()
                .and_then(|registry| registry.on_agent_event(zone_id, event))
        });
        let (link, greeting) = AgentLink::open(stream, handler).await?;
        // Exits the agent saw while no daemon listened.
        for (id, status) in greeting.exited {
            if let Ok(pid) = Uuid::parse_str(&id) {
                self.finish_process(pid, ProcessEnd::Exited(status));
            }
            let _ = link.forget(&id).await;
        }
        let zone = Arc::new(LiveZone {
            id: zone_id,
            name: name.to_string(),
            link,
        });
        self.set_live(Arc::clone(&zone));
        Ok((zone, greeting.running))
    }

    fn on_agent_event(&self, zone_id: Uuid, event: AgentEvent) -> Option<Ack> {
        match event {
            AgentEvent::Output {
                id,
                stream,
                offset,
                data,
            } => {
                let p = Uuid::parse_str(&id)
                    .ok()
                    .and_then(|u| self.live_process(&u))?;
                let (data, end) = p.place(stream, offset, data);
                // Acknowledged: what is in the spill file and its position
                // (a task's), or else what was handed on.
                let mut upto = end;
                if data.is_empty() {
                    if let Some(spill) = p.spill.lock().unwrap_or_else(|e| e.into_inner()).as_ref()
                    {
                        upto = end - spill.redactors[stream_index(stream)].held() as u64;
                    }
                    return Some(Ack { id, stream, upto });
                }
                let capture = match stream {
                    Stream::Stdout => &p.stdout,
                    Stream::Stderr => &p.stderr,
                };
                let kept = capture
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_at(&data, Some(crate::events::now_ms()));
                if let Some(spill) = p.spill.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                    use std::io::Write;
                    let i = stream_index(stream);
                    let safe = spill.redactors[i].push(&data[..kept]);
                    let spilled = spill.files[i].write_all(&safe).and_then(|()| {
                        spill.written[i] += safe.len() as u64;
                        upto = end - spill.redactors[i].held() as u64;
                        write_position(&spill.positions[i], upto, spill.written[i])
                    });
                    if let Err(e) = spilled {
                        tracing::warn!(process = %p.id, error = %e, "cannot spill a task's output");
                    }
                }
                if let Some(tx) = p.sink.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                    use std::sync::atomic::Ordering;
                    let pending = p.sink_pending.load(Ordering::Relaxed);
                    if pending + data.len() <= stdio::MAX_PENDING {
                        p.sink_pending.fetch_add(data.len(), Ordering::Relaxed);
                        let _ = tx.send(OutputChunk {
                            stream,
                            data: data.clone(),
                        });
                    } else {
                        tracing::warn!(process = %p.id, bytes = data.len(), "output dropped: its stdio path is not being read");
                    }
                }
                let _ = p.live.send(OutputChunk { stream, data });
                Some(Ack { id, stream, upto })
            }
            AgentEvent::Exited { id, status } => {
                if let Ok(pid) = Uuid::parse_str(&id) {
                    self.finish_process(pid, ProcessEnd::Exited(status));
                }
                if let Some(zone) = self.live_zone(&zone_id) {
                    tokio::spawn(async move {
                        let _ = zone.link.forget(&id).await;
                    });
                }
                None
            }
            AgentEvent::Closed => {
                let gone = self.take_live(&zone_id);
                let doomed: Vec<Uuid> = self
                    .processes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .values()
                    .filter(|p| p.zone_id == zone_id)
                    .map(|p| p.id)
                    .collect();
                for id in doomed {
                    self.finish_process(id, ProcessEnd::Lost);
                }
                if let Some(zone) = gone {
                    tracing::info!(zone = %zone.name, "zone agent connection closed");
                }
                None
            }
        }
    }

    /// Records a process's end (once) and wakes its waiters.
    fn finish_process(&self, id: Uuid, end: ProcessEnd) {
        let Some(p) = self.live_process(&id) else {
            // Not tracked in memory (e.g. after a restart): update the record.
            if let Ok(Some(mut rec)) = self.store.process(&id) {
                if rec.state == ProcessState::Running {
                    apply_end(&mut rec, end);
                    let _ = self.store.put_process(&rec);
                    self.unpublish(&rec);
                }
            }
            return;
        };
        if p.end.borrow().is_some() {
            return;
        }
        let rec = {
            let mut rec = p.record.lock().unwrap_or_else(|e| e.into_inner());
            apply_end(&mut rec, end);
            rec.clone()
        };
        if let Err(e) = self.store.put_process(&rec) {
            tracing::error!(error = %e, "cannot record a process exit");
        }
        let zone_name = self
            .store
            .zone(&rec.zone_id)
            .ok()
            .flatten()
            .map(|z| z.name)
            .unwrap_or_default();
        let message = match end {
            ProcessEnd::Exited(s) => format!(
                "{} exited with {}",
                rec.args.first().cloned().unwrap_or_default(),
                s.shell_code()
            ),
            ProcessEnd::Lost => "lost with its zone".to_string(),
        };
        self.events.emit(
            EventKind::ProcessExited,
            Some((rec.zone_id, &zone_name)),
            Some(id),
            message,
        );
        self.unpublish(&rec);
        // The relay to host stdio paths ends once it wrote what it has.
        p.sink.lock().unwrap_or_else(|e| e.into_inner()).take();
        // send_replace stores the value even when nobody waits yet.
        p.end.send_replace(Some(end));
    }
}

impl ZoneRegistry {
    /// An ended process's published ports leave its zone's rules.
    fn unpublish(&self, rec: &ProcessRecord) {
        if rec.publish.is_empty() {
            return;
        }
        let (Ok(rt), Some(me)) = (tokio::runtime::Handle::try_current(), self.me.upgrade()) else {
            return;
        };
        let (zone, process) = (rec.zone_id, rec.id);
        rt.spawn(async move {
            if let Err(e) = me.renew_ports(zone).await {
                tracing::error!(%process, error = %e, "cannot take an ended process's published ports off its zone");
            }
        });
    }
}

fn apply_end(rec: &mut ProcessRecord, end: ProcessEnd) {
    rec.ended_ms = now_ms();
    match end {
        ProcessEnd::Exited(s) => {
            rec.state = ProcessState::Exited;
            rec.exit_code = Some(s.shell_code());
            rec.signal = s.signal;
            rec.deadline = s.deadline;
        }
        ProcessEnd::Lost => rec.state = ProcessState::Lost,
    }
}
