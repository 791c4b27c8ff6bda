//! `FakeBackend`: zones in memory, for unit tests of what sits above the
//! trait (the registry, the API) without root.
//!
//! Each zone has a scripted agent that speaks the real agent protocol
//! (`rauha_guest_agent::protocol`, framed as on a socket) over an in-memory
//! pipe, so the daemon's agent link is exercised as it is against a zone.
//! A process's first argument says what it does:
//!
//! | command | outcome |
//! |---|---|
//! | `echo WORDS..` | prints the words and a newline, exits 0 |
//! | `warn WORDS..` | the same on stderr |
//! | `exit N` | exits with code N |
//! | `sleep ..` | runs until it is signalled (or its zone destroyed) |
//! | `cat` | echoes its stdin, exits 0 when stdin is closed |
//! | `oom` | the zone's OOM count goes up; killed by signal 9 |
//! | anything else | the spawn fails: not found in the zone |
//!
//! Each step of the trait can be made to fail once ([`Step`],
//! [`FakeBackend::fail_next`]), a zone's agent can die
//! ([`FakeBackend::kill_agent`]), and every call is recorded
//! ([`FakeBackend::calls`]).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rauha_guest_agent::config::{Hardening, Ready};
use rauha_guest_agent::frame;
use rauha_guest_agent::protocol::{
    ExitStatus, Message, Request, SpawnSpec, Stream, ZoneProcess, PROTOCOL_VERSION,
};
use rauha_spec::enforcement::{Enforcement, Layer, LayerStatus};
use rauha_spec::{Policy, RootSpec, WorkspaceSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::{
    AgentStream, BackendError, Check, Denial, EnforceZone, FailureKind, IsolationBackend,
    RootLimits, RootMount, Usage, ZoneHandle, ZoneSetup,
};

/// A step of the trait that a test can make fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    Create,
    Destroy,
    Connect,
    UpdateLimits,
    Pause,
    AddRoot,
    Enforce,
}

/// An in-memory backend; see the module's documentation.
#[derive(Default)]
pub struct FakeBackend {
    /// `fake` unless made with [`FakeBackend::named`].
    name: Option<&'static str>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    zones: HashMap<Uuid, Arc<FakeZone>>,
    failing: HashSet<Step>,
    calls: Vec<String>,
    next_pid: u32,
}

/// A zone: its agent's processes and what the backend did to it.
struct FakeZone {
    agent: Mutex<Agent>,
    /// Every connection's view of the agent's pushed messages.
    pushed: broadcast::Sender<Message>,
}

#[derive(Default)]
struct Agent {
    alive: bool,
    paused: bool,
    usage: Usage,
    roots: BTreeSet<String>,
    next_pid: u32,
    /// Running processes by host id: (pid in the zone, command, stdin so far).
    running: HashMap<String, (u32, String, Vec<u8>)>,
    exited: Vec<(String, ExitStatus)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl FakeBackend {
    pub fn new() -> Arc<FakeBackend> {
        Arc::new(FakeBackend::default())
    }

    /// A fake backend of another name (a node with two backends).
    pub fn named(name: &'static str) -> Arc<FakeBackend> {
        Arc::new(FakeBackend {
            name: Some(name),
            ..FakeBackend::default()
        })
    }

    /// The next call of `step` fails (once).
    pub fn fail_next(&self, step: Step) {
        lock(&self.state).failing.insert(step);
    }

    /// Every trait call so far, as `name zone-id`.
    pub fn calls(&self) -> Vec<String> {
        lock(&self.state).calls.clone()
    }

    /// Zones the backend holds (made and not destroyed).
    pub fn zones(&self) -> Vec<Uuid> {
        let mut z: Vec<Uuid> = lock(&self.state).zones.keys().copied().collect();
        z.sort();
        z
    }

    /// The zone's agent dies: its connections close, `is_alive` is false.
    pub fn kill_agent(&self, zone: Uuid) {
        if let Some(z) = self.zone(zone) {
            lock(&z.agent).alive = false;
            let _ = z.pushed.send(Message::Error {
                message: "agent killed".into(),
            });
        }
    }

    /// Sets what `usage` reports for a zone.
    pub fn set_usage(&self, zone: Uuid, usage: Usage) {
        if let Some(z) = self.zone(zone) {
            lock(&z.agent).usage = usage;
        }
    }

    /// Whether the zone is paused.
    pub fn is_paused(&self, zone: Uuid) -> bool {
        self.zone(zone).is_some_and(|z| lock(&z.agent).paused)
    }

    /// Host ids of the zone's running processes.
    pub fn running(&self, zone: Uuid) -> Vec<String> {
        let mut ids: Vec<String> = self
            .zone(zone)
            .map(|z| lock(&z.agent).running.keys().cloned().collect())
            .unwrap_or_default();
        ids.sort();
        ids
    }

    fn zone(&self, id: Uuid) -> Option<Arc<FakeZone>> {
        lock(&self.state).zones.get(&id).cloned()
    }

    /// Records a call; fails it when the test asked for that.
    fn step(&self, step: Option<Step>, call: String) -> Result<(), BackendError> {
        let mut s = lock(&self.state);
        s.calls.push(call.clone());
        if step.is_some_and(|st| s.failing.remove(&st)) {
            return Err(BackendError::Resources {
                layer: "fake",
                kind: FailureKind::Node,
                source: format!("{call} failed (injected)").into(),
            });
        }
        Ok(())
    }

    fn live(&self, zone: Uuid) -> Result<Arc<FakeZone>, BackendError> {
        self.zone(zone).ok_or(BackendError::AgentGone)
    }
}

/// What a scripted process does when it starts; `None` keeps it running.
mod agent;

use self::agent::serve;

#[async_trait::async_trait]
impl IsolationBackend for FakeBackend {
    fn name(&self) -> &'static str {
        self.name.unwrap_or("fake")
    }

    fn layout(&self) -> &'static str {
        "in memory"
    }

    fn node_layers(&self) -> Vec<LayerStatus> {
        vec![LayerStatus {
            layer: Layer::NamespacesCgroups,
            in_force: true,
            detail: "fake".into(),
        }]
    }

    fn check_policy(&self, _policy: &Policy) -> Result<(), BackendError> {
        Ok(())
    }

    async fn create_zone(&self, setup: &ZoneSetup) -> Result<ZoneHandle, BackendError> {
        self.step(Some(Step::Create), format!("create {}", setup.id))?;
        let (pushed, _) = broadcast::channel(1024);
        let zone = Arc::new(FakeZone {
            agent: Mutex::new(Agent {
                alive: true,
                ..Agent::default()
            }),
            pushed,
        });
        let agent_pid = {
            let mut s = lock(&self.state);
            s.next_pid += 1;
            s.zones.insert(setup.id, zone);
            100_000 + s.next_pid
        };
        Ok(ZoneHandle {
            zone_id: setup.id,
            agent_pid,
            agent_start_ticks: 1,
            socket: PathBuf::from(format!("/fake/{}/agent.sock", setup.id)),
            state_dir: PathBuf::from(format!("/fake/{}", setup.id)),
            ready: Ready {
                landlock_abi: 0,
                seccomp: false,
                notes: Vec::new(),
                user_namespace: None,
            },
            bpf_zone: 0,
            cgroup: None,
        })
    }

    async fn destroy_zone(
        &self,
        zone_id: Uuid,
        _handle: Option<&ZoneHandle>,
    ) -> Result<(), BackendError> {
        self.step(Some(Step::Destroy), format!("destroy {zone_id}"))?;
        if let Some(z) = lock(&self.state).zones.remove(&zone_id) {
            lock(&z.agent).alive = false;
            let _ = z.pushed.send(Message::Error {
                message: "zone destroyed".into(),
            });
        }
        Ok(())
    }

    fn is_alive(&self, handle: &ZoneHandle) -> bool {
        self.zone(handle.zone_id)
            .is_some_and(|z| lock(&z.agent).alive)
    }

    async fn connect(&self, handle: &ZoneHandle) -> Result<Box<dyn AgentStream>, BackendError> {
        self.step(Some(Step::Connect), format!("connect {}", handle.zone_id))?;
        let zone = self.live(handle.zone_id)?;
        if !lock(&zone.agent).alive {
            return Err(BackendError::AgentGone);
        }
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        tokio::spawn(serve(zone, theirs));
        Ok(Box::new(ours))
    }

    fn update_limits(&self, zone_id: Uuid, _policy: &Policy) -> Result<(), BackendError> {
        self.step(Some(Step::UpdateLimits), format!("update_limits {zone_id}"))
    }

    fn hardening(
        &self,
        _policy: &Policy,
        _root: &RootSpec,
        _workspace: Option<&WorkspaceSpec>,
    ) -> Hardening {
        Hardening::default()
    }

    fn workspace_upper(&self, zone_id: Uuid) -> PathBuf {
        PathBuf::from(format!("/fake/{zone_id}/upper"))
    }

    fn set_paused(&self, zone_id: Uuid, paused: bool) -> Result<(), BackendError> {
        self.step(Some(Step::Pause), format!("set_paused {zone_id} {paused}"))?;
        lock(&self.live(zone_id)?.agent).paused = paused;
        Ok(())
    }

    fn usage(&self, zone_id: Uuid) -> Result<Usage, BackendError> {
        Ok(lock(&self.live(zone_id)?.agent).usage)
    }

    fn host_pid(&self, _zone_id: Uuid, zone_pid: u32) -> Option<u32> {
        Some(200_000 + zone_pid)
    }

    fn add_root(
        &self,
        zone: &ZoneHandle,
        name: &str,
        _rootfs: &Path,
        _flags: &crate::RootFlags,
        _mounts: &[RootMount],
        _limits: &RootLimits,
    ) -> Result<bool, BackendError> {
        let zone_id = zone.zone_id;
        self.step(Some(Step::AddRoot), format!("add_root {zone_id} {name}"))?;
        lock(&self.live(zone_id)?.agent)
            .roots
            .insert(name.to_string());
        Ok(true)
    }

    fn root_cgroups_are_unified(&self) -> bool {
        false
    }

    fn set_root_limits(
        &self,
        zone_id: Uuid,
        name: &str,
        _limits: &RootLimits,
    ) -> Result<bool, BackendError> {
        let z = self.live(zone_id)?;
        let has = lock(&z.agent).roots.contains(name);
        if has {
            Ok(true)
        } else {
            Err(BackendError::NoRoot(name.to_string()))
        }
    }

    fn root_usage(&self, zone_id: Uuid, _name: &str) -> Result<Usage, BackendError> {
        self.usage(zone_id)
    }

    fn remove_root(
        &self,
        zone_id: Uuid,
        _live: Option<&ZoneHandle>,
        name: &str,
    ) -> Result<(), BackendError> {
        self.step(None, format!("remove_root {zone_id} {name}"))?;
        if let Some(z) = self.zone(zone_id) {
            lock(&z.agent).roots.remove(name);
        }
        Ok(())
    }

    fn zone_enforcement(&self, _handle: &ZoneHandle, policy: &Policy) -> Enforcement {
        Enforcement::new(self.node_layers(), policy)
    }

    fn verify(&self, handle: &ZoneHandle, _policy: &Policy) -> Vec<Check> {
        vec![Check {
            name: "fake zone".into(),
            ok: self.is_alive(handle),
            detail: "in memory".into(),
        }]
    }

    fn cleanup_orphans(&self, known: &[Uuid]) -> Result<Vec<String>, BackendError> {
        let mut s = lock(&self.state);
        let orphans: Vec<Uuid> = s
            .zones
            .keys()
            .filter(|z| !known.contains(z))
            .copied()
            .collect();
        for z in &orphans {
            s.zones.remove(z);
        }
        Ok(orphans.iter().map(|z| format!("fake zone {z}")).collect())
    }

    fn enforce(&self, zones: &[EnforceZone<'_>]) -> Result<(), BackendError> {
        self.step(
            Some(Step::Enforce),
            format!("enforce {} zones", zones.len()),
        )
    }

    fn denials(&self) -> Vec<Denial> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> ZoneSetup {
        ZoneSetup {
            id: Uuid::new_v4(),
            name: "z".into(),
            policy: Policy::default(),
            root: RootSpec::HostView,
            workspace: None,
            netns: None,
            resolv_conf: None,
            cgroup_parent: None,
        }
    }

    /// A host's end of a connection: what it read and has not decoded yet
    /// stays for the next message.
    struct Host {
        stream: Box<dyn AgentStream>,
        buf: Vec<u8>,
    }

    impl Host {
        async fn send(&mut self, req: &Request) -> Message {
            self.stream
                .write_all(&frame::encode(req).expect("encode"))
                .await
                .expect("write");
            self.next().await
        }

        async fn next(&mut self) -> Message {
            let mut chunk = [0u8; 4096];
            loop {
                if let Some(m) = frame::decode_from(&mut self.buf).expect("frame") {
                    return m;
                }
                let n = self.stream.read(&mut chunk).await.expect("read");
                assert!(n > 0, "the fake agent closed the connection");
                self.buf.extend_from_slice(&chunk[..n]);
            }
        }
    }

    #[tokio::test]
    async fn the_fake_agent_speaks_the_protocol() {
        let backend = FakeBackend::new();
        let handle = backend.create_zone(&setup()).await.expect("create");
        let mut host = Host {
            stream: backend.connect(&handle).await.expect("connect"),
            buf: Vec::new(),
        };
        let hello = host
            .send(&Request::Hello {
                version: PROTOCOL_VERSION,
            })
            .await;
        assert!(matches!(hello, Message::Hello { .. }), "{hello:?}");
        let spec = SpawnSpec {
            id: "p1".into(),
            args: vec!["echo".into(), "hi".into()],
            env: Vec::new(),
            cwd: String::new(),
            fds: Vec::new(),
            user: None,
            stdin: false,
            terminal: false,
            deadline_ms: None,
            root: None,
            security: None,
        };
        // The output and exit may be pushed before or after `Spawned`.
        let mut seen = vec![host.send(&Request::Spawn(spec)).await];
        while seen.len() < 3 {
            seen.push(host.next().await);
        }
        assert!(seen.contains(&Message::Spawned {
            id: "p1".into(),
            pid: 2
        }));
        assert!(seen.contains(&Message::Output {
            id: "p1".into(),
            stream: Stream::Stdout,
            offset: 0,
            data: b"hi\n".to_vec()
        }));
        assert!(seen
            .iter()
            .any(|m| matches!(m, Message::Exited { status, .. } if status.code == Some(0))));
    }

    #[tokio::test]
    async fn an_injected_failure_fails_once() {
        let backend = FakeBackend::new();
        backend.fail_next(Step::Create);
        assert!(backend.create_zone(&setup()).await.is_err());
        assert!(backend.zones().is_empty());
        let handle = backend.create_zone(&setup()).await.expect("second try");
        assert_eq!(backend.zones(), vec![handle.zone_id]);
        backend.kill_agent(handle.zone_id);
        assert!(!backend.is_alive(&handle));
        assert!(backend.connect(&handle).await.is_err());
    }
}
