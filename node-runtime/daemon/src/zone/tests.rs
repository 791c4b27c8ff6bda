//! The registry against `FakeBackend`: every branch of zone and process
//! life, without root (the real backend is tested as root in `e2e/`).

use std::sync::Arc;
use std::time::Duration;

use rauha_backend::fake::{FakeBackend, Step};
use rauha_backend::IsolationBackend;
use rauha_spec::enforcement::EnforcementMode;
use rauha_spec::result::TaskStatus;
use rauha_spec::zone::ProcessSpec;
use rauha_spec::{Policy, RootSpec, ZoneState};
use uuid::Uuid;

use super::{Backends, LiveProcess, NewZone, ProcessEnd, Retention, SandboxRun, ZoneRegistry};
use crate::error::DaemonError;
use crate::events::EventBus;
use crate::redact::Redactor;
use crate::secrets::SecretStore;
use crate::store::{ProcessState, Store};

/// A registry on a fresh store in a temp dir, over a fake backend.
struct Node {
    registry: Arc<ZoneRegistry>,
    backend: Arc<FakeBackend>,
    dir: std::path::PathBuf,
}

impl Node {
    fn new() -> Node {
        let dir = std::env::temp_dir().join(format!("rauhad-unit-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let backend = FakeBackend::new();
        let registry = Node::registry_on(&dir, &backend);
        Node {
            registry,
            backend,
            dir,
        }
    }

    fn registry_on(dir: &std::path::Path, backend: &Arc<FakeBackend>) -> Arc<ZoneRegistry> {
        let store = Arc::new(Store::open(&dir.join("rauhad.redb")).expect("store"));
        let secrets = SecretStore::open(dir).expect("secrets");
        let backend: Arc<dyn IsolationBackend> = backend.clone();
        ZoneRegistry::new(
            Backends::new(backend, Vec::new()),
            store,
            EventBus::new(),
            EnforcementMode::Preferred,
            Retention::default(),
            secrets,
        )
    }

    /// The daemon starts again on the same store and the same zones. redb
    /// opens a file once per process, so the old registry (and its store)
    /// goes first: it is swapped for one on a scratch directory.
    fn restart(&mut self) {
        let scratch = self.dir.join("scratch");
        std::fs::create_dir_all(&scratch).expect("scratch");
        let old = std::mem::replace(
            &mut self.registry,
            Node::registry_on(&scratch, &self.backend),
        );
        drop(old);
        self.registry = Node::registry_on(&self.dir, &self.backend);
    }

    async fn zone(&self, name: &str) -> Result<crate::store::ZoneRecord, DaemonError> {
        self.registry.create_zone(plain_zone(name)).await
    }

    /// Starts `args` in zone `name`.
    async fn start(&self, name: &str, args: &[&str]) -> Result<Arc<LiveProcess>, DaemonError> {
        let zone = self.registry.find_zone(name)?;
        let (process, _rx) = self
            .registry
            .start_process_streamed(
                &zone,
                spec(args),
                Vec::new(),
                &Redactor::new(&[]),
                &Default::default(),
                None,
            )
            .await?;
        Ok(process)
    }

    /// Starts `args` in zone `name` and waits for its end.
    async fn exec(&self, name: &str, args: &[&str]) -> (ProcessEnd, String) {
        let process = self.start(name, args).await.expect("start");
        let end = tokio::time::timeout(Duration::from_secs(5), process.wait())
            .await
            .expect("the process ends");
        process.wait_relayed(Duration::from_secs(1)).await;
        let out = String::from_utf8_lossy(&process.stdout().data).into_owned();
        (end, out)
    }

    async fn sandbox(&self, args: &[&str], timeout: Option<Duration>) -> rauha_spec::TaskResult {
        self.registry
            .run_sandbox(SandboxRun {
                spec: spec(args),
                policy: Policy::default(),
                root: RootSpec::HostView,
                timeout,
                keep_zone: false,
                ttl: None,
                workspace: None,
                secrets: Vec::new(),
                netns: None,
                live_output: None,
                started: None,
            })
            .await
            .expect("a sandbox result")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A kept zone on the host view with the default policy.
fn plain_zone(name: &str) -> NewZone {
    NewZone {
        name: name.into(),
        policy: Policy::default(),
        root: RootSpec::HostView,
        task_id: None,
        ephemeral: false,
        workspace: None,
        ttl_ms: None,
        netns: None,
        cgroup_parent: None,
    }
}

fn spec(args: &[&str]) -> ProcessSpec {
    ProcessSpec {
        args: args.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    }
}

fn code(end: &ProcessEnd) -> Option<i32> {
    match end {
        ProcessEnd::Exited(s) => Some(s.shell_code()),
        ProcessEnd::Lost => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_deletes_of_one_zone_all_succeed_and_one_tears_it_down() {
    let node = Node::new();
    let zone = node.zone("web").await.expect("create");
    // All fifty arrive while the zone is still there (a create of its
    // name holds it meanwhile), then race.
    let held = node.registry.lifecycle("web").await;
    let deletes: Vec<_> = (0..50)
        .map(|_| {
            let r = Arc::clone(&node.registry);
            tokio::spawn(async move { r.delete_zone("web", false).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(held);
    for d in deletes {
        if let Err(e) = d.await.expect("join") {
            panic!("a concurrent delete failed: {e}");
        }
    }
    let destroys = node
        .backend
        .calls()
        .iter()
        .filter(|c| c.starts_with("destroy "))
        .count();
    assert_eq!(destroys, 1, "{:?}", node.backend.calls());
    assert!(node.registry.store.zone(&zone.id).expect("store").is_none());
    // Once it is gone, a delete of it is NotFound again.
    assert!(matches!(
        node.registry.delete_zone("web", false).await,
        Err(DaemonError::NotFound { .. })
    ));
    assert!(
        node.registry.lifecycle.lock().expect("lock").is_empty(),
        "the name's lock went with its last holder"
    );
}

#[tokio::test]
async fn a_zone_is_made_recorded_and_removed() {
    let node = Node::new();
    let zone = node.zone("web").await.expect("create");
    assert_eq!(zone.state, ZoneState::Created);
    assert_eq!(node.backend.zones(), vec![zone.id]);
    assert!(node.registry.live_zone(&zone.id).is_some(), "connected");
    assert!(matches!(
        node.zone("web").await,
        Err(DaemonError::AlreadyExists(_))
    ));
    node.registry
        .delete_zone("web", false)
        .await
        .expect("delete");
    assert!(node.backend.zones().is_empty());
    assert!(node.registry.store.zones().expect("zones").is_empty());
    assert!(matches!(
        node.registry.delete_zone("web", false).await,
        Err(DaemonError::NotFound { .. })
    ));
}

#[tokio::test]
async fn a_failure_at_each_step_of_create_leaves_no_half_made_zone() {
    let node = Node::new();
    for step in [Step::Create, Step::Enforce, Step::Connect] {
        node.backend.fail_next(step);
        let err = node.zone("half").await.expect_err("injected failure");
        assert!(err.to_string().contains("injected"), "{step:?}: {err}");
        assert!(
            node.registry.store.zones().expect("zones").is_empty(),
            "{step:?}: no record left"
        );
        assert!(node.backend.zones().is_empty(), "{step:?}: no zone left");
    }
    // The name is free again.
    node.zone("half").await.expect("create after failures");
}

#[tokio::test]
async fn a_failed_cleanup_after_a_failed_create_reports_both() {
    let node = Node::new();
    node.backend.fail_next(Step::Connect);
    node.backend.fail_next(Step::Destroy);
    let err = node.zone("twice").await.expect_err("injected failures");
    match &err {
        DaemonError::Cleanup { primary, cleanup } => {
            assert!(primary.to_string().contains("connect"), "{err}");
            assert!(cleanup.to_string().contains("destroy"), "{err}");
        }
        other => panic!("both failures are reported: {other}"),
    }
    assert_eq!(
        tonic::Status::from(err).code(),
        tonic::Code::Internal,
        "the primary failure's code"
    );
    assert!(node.registry.store.zones().expect("zones").is_empty());
}

#[tokio::test]
async fn processes_start_exit_and_are_stopped() {
    let node = Node::new();
    node.zone("p").await.expect("create");
    let (end, out) = node.exec("p", &["echo", "hello"]).await;
    assert_eq!((code(&end), out.as_str()), (Some(0), "hello\n"));
    let (end, _) = node.exec("p", &["exit", "3"]).await;
    assert_eq!(code(&end), Some(3));
    // A program that is not there: a clear error, no record left running.
    let zone = node.registry.find_zone("p").expect("zone");
    let Err(err) = node.start("p", &["nope"]).await else {
        panic!("a program that is not in the zone started");
    };
    assert!(err.to_string().contains("not found"), "{err}");
    // A long one, stopped: SIGTERM first.
    let process = node.start("p", &["sleep", "600"]).await.expect("start");
    let id = process.record().id;
    assert_eq!(node.backend.running(zone.id).len(), 1);
    node.registry
        .stop_process(&id, Duration::from_secs(1))
        .await
        .expect("stop");
    let end = process.wait().await;
    assert_eq!(code(&end), Some(128 + libc::SIGTERM));
    assert_eq!(
        node.registry.find_process(&id).expect("record").state,
        ProcessState::Exited
    );
    node.registry.delete_process(&id).expect("delete");
}

#[tokio::test]
async fn a_busy_zone_is_deleted_only_with_force() {
    let node = Node::new();
    let zone = node.zone("busy").await.expect("create");
    let process = node.start("busy", &["sleep", "600"]).await.expect("start");
    let err = node
        .registry
        .delete_zone("busy", false)
        .await
        .expect_err("busy");
    assert!(
        matches!(err, DaemonError::ZoneBusy { count: 1, .. }),
        "{err}"
    );
    assert_eq!(node.backend.zones(), vec![zone.id], "nothing removed");
    node.registry
        .delete_zone("busy", true)
        .await
        .expect("force");
    assert!(node.backend.zones().is_empty());
    let end = tokio::time::timeout(Duration::from_secs(5), process.wait())
        .await
        .expect("the process ends with its zone");
    assert!(matches!(end, ProcessEnd::Exited(_) | ProcessEnd::Lost));
}

#[tokio::test]
async fn a_sandbox_reports_success_failure_timeout_and_oom() {
    let node = Node::new();
    let r = node.sandbox(&["echo", "out"], None).await;
    assert_eq!(r.status, TaskStatus::Succeeded, "{r:?}");
    assert_eq!(r.stdout, "out\n");
    let r = node.sandbox(&["exit", "7"], None).await;
    assert_eq!((r.status, r.exit_code), (TaskStatus::Failed, Some(7)));
    let r = node
        .sandbox(&["sleep", "600"], Some(Duration::from_millis(100)))
        .await;
    assert_eq!(r.status, TaskStatus::TimedOut, "{r:?}");
    let r = node.sandbox(&["oom"], None).await;
    assert_eq!(r.status, TaskStatus::OomKilled, "{r:?}");
    // Each task's zone is gone; each task is recorded.
    assert!(node.backend.zones().is_empty());
    assert_eq!(node.registry.list_tasks(None).expect("tasks").len(), 4);
}

#[tokio::test]
async fn a_sandbox_whose_agent_dies_is_an_error_not_a_success() {
    let node = Node::new();
    let registry = Arc::clone(&node.registry);
    let backend = Arc::clone(&node.backend);
    let task = tokio::spawn(async move {
        registry
            .run_sandbox(SandboxRun {
                spec: spec(&["sleep", "600"]),
                policy: Policy::default(),
                root: RootSpec::HostView,
                timeout: None,
                keep_zone: false,
                ttl: None,
                workspace: None,
                secrets: Vec::new(),
                netns: None,
                live_output: None,
                started: None,
            })
            .await
    });
    // Wait for the task's zone, then kill its agent.
    let zone = loop {
        if let Some(z) = backend.zones().first().copied() {
            if !backend.running(z).is_empty() {
                break z;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    backend.kill_agent(zone);
    let r = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the sandbox ends")
        .expect("joined")
        .expect("a result");
    assert_eq!(r.status, TaskStatus::Error, "{r:?}");
    assert!(r.error.is_some_and(|e| e.contains("agent died")));
}

#[tokio::test]
async fn pause_and_resume_reach_the_backend_and_a_failure_changes_nothing() {
    let node = Node::new();
    let zone = node.zone("pz").await.expect("create");
    let err = node.registry.pause_zone("pz").await.expect_err("idle");
    assert!(err.to_string().contains("only a running zone"), "{err}");
    node.start("pz", &["sleep", "600"]).await.expect("start");
    let paused = node.registry.pause_zone("pz").await.expect("pause");
    assert_eq!(paused.state, ZoneState::Paused);
    assert!(node.backend.is_paused(zone.id));
    node.backend.fail_next(Step::Pause);
    assert!(node.registry.resume_zone("pz").await.is_err());
    assert_eq!(
        node.registry.find_zone("pz").expect("zone").state,
        ZoneState::Paused,
        "a failed resume leaves the zone as it was"
    );
    let resumed = node.registry.resume_zone("pz").await.expect("resume");
    assert_ne!(resumed.state, ZoneState::Paused);
    assert!(!node.backend.is_paused(zone.id));
}

#[tokio::test]
async fn a_kept_zone_counts_down_its_ttl() {
    let node = Node::new();
    let zone = node
        .registry
        .create_zone(NewZone {
            ttl_ms: Some(60_000),
            ..plain_zone("kept")
        })
        .await
        .expect("create");
    let left = node.registry.ttl_remaining_ms(&zone).expect("a TTL");
    assert!(left <= 60_000 && left > 50_000, "{left}");
    let other = node.zone("no-ttl").await.expect("create");
    assert_eq!(node.registry.ttl_remaining_ms(&other), None);
}

#[tokio::test]
async fn recovery_adopts_live_zones_and_rebuilds_dead_ones() {
    let mut node = Node::new();
    let live = node.zone("live").await.expect("create");
    let dead = node.zone("dead").await.expect("create");
    node.backend.kill_agent(dead.id);
    node.restart();
    node.registry.recover().await.expect("recover");
    // The live zone is adopted: the same zone in the backend, and it runs work.
    assert!(node.backend.zones().contains(&live.id));
    let (end, out) = node.exec("live", &["echo", "again"]).await;
    assert_eq!((code(&end), out.as_str()), (Some(0), "again\n"));
    // The dead one is built again under its id, and runs work too.
    let calls = node.backend.calls();
    assert!(
        calls
            .iter()
            .filter(|c| *c == &format!("create {}", dead.id))
            .count()
            == 2,
        "{calls:?}"
    );
    let (end, _) = node.exec("dead", &["exit", "0"]).await;
    assert_eq!(code(&end), Some(0));
}

#[tokio::test]
async fn each_zone_stays_with_the_backend_that_made_it() {
    let dir = std::env::temp_dir().join(format!("rauhad-unit-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (first, second) = (FakeBackend::named("first"), FakeBackend::named("second"));
    let registry_with = |default: &Arc<FakeBackend>, other: &Arc<FakeBackend>| {
        let store = Arc::new(Store::open(&dir.join("rauhad.redb")).expect("store"));
        let (default, other): (Arc<dyn IsolationBackend>, Arc<dyn IsolationBackend>) =
            (default.clone(), other.clone());
        ZoneRegistry::new(
            Backends::new(default, vec![other]),
            store,
            EventBus::new(),
            EnforcementMode::Preferred,
            Retention::default(),
            SecretStore::open(&dir).expect("secrets"),
        )
    };
    // A zone made while `first` is the default...
    let registry = registry_with(&first, &second);
    let a = registry.create_zone(plain_zone("a")).await.expect("create");
    assert_eq!(a.backend, "first");
    drop(registry);
    // ...is run by `first` after a restart that made `second` the default;
    // a new zone goes to `second`.
    let registry = registry_with(&second, &first);
    registry.recover().await.expect("recover");
    let b = registry.create_zone(plain_zone("b")).await.expect("create");
    assert_eq!(b.backend, "second");
    assert_eq!(first.zones(), vec![a.id]);
    assert_eq!(second.zones(), vec![b.id]);
    registry.delete_zone("a", false).await.expect("delete a");
    assert!(
        first.zones().is_empty(),
        "deleted by the backend that made it"
    );
    assert_eq!(second.zones(), vec![b.id]);
    // A zone of a backend this rauhad does not run: one clear error.
    let mut orphan = registry.find_zone("b").expect("b");
    orphan.backend = "vm".into();
    registry.store.put_zone(&orphan).expect("put");
    let Err(err) = registry.verify_zone("b").await else {
        panic!("a zone of an unknown backend is verified");
    };
    assert!(matches!(err, DaemonError::UnknownBackend { .. }), "{err}");
    assert!(err.to_string().contains("\"vm\""), "{err}");
    drop(registry);
    let _ = std::fs::remove_dir_all(&dir);
}

fn workspace_run(commit: bool) -> super::sandbox::WorkspaceRun {
    super::sandbox::WorkspaceRun {
        spec: rauha_spec::WorkspaceSpec {
            repo_path: "/nonexistent-repo".into(),
            target: "/workspace".into(),
        },
        commit,
        diff_cap: 1024,
        commit_git_metadata: false,
    }
}

fn sandbox_with_workspace(keep_zone: bool) -> SandboxRun {
    SandboxRun {
        spec: spec(&["echo", "done"]),
        policy: Policy::default(),
        root: RootSpec::HostView,
        timeout: None,
        keep_zone,
        ttl: None,
        workspace: Some(workspace_run(true)),
        secrets: Vec::new(),
        netns: None,
        live_output: None,
        started: None,
    }
}

/// The workspace is read with the zone's work frozen, and a kept zone is
/// thawed after it: nothing of the task writes between the scan and the
/// commit.
#[tokio::test]
async fn the_workspace_is_read_with_the_zone_frozen() {
    let node = Node::new();
    let r = node
        .registry
        .run_sandbox(sandbox_with_workspace(true))
        .await
        .expect("a result");
    let calls = node.backend.calls();
    let zone = r.zone_id;
    let frozen = calls
        .iter()
        .position(|c| *c == format!("set_paused {zone} true"))
        .unwrap_or_else(|| panic!("frozen before the scan: {calls:?}"));
    let thawed = calls
        .iter()
        .position(|c| *c == format!("set_paused {zone} false"))
        .unwrap_or_else(|| panic!("a kept zone is thawed: {calls:?}"));
    assert!(frozen < thawed, "{calls:?}");
}

/// A kept zone that cannot be frozen commits nothing: the task fails and
/// says why, rather than committing what may be changing under the scan.
#[tokio::test]
async fn a_zone_that_cannot_be_frozen_commits_nothing() {
    let node = Node::new();
    node.backend.fail_next(Step::Pause);
    let r = node
        .registry
        .run_sandbox(sandbox_with_workspace(true))
        .await
        .expect("a result");
    assert_eq!(r.status, TaskStatus::Failed, "{r:?}");
    assert_eq!(
        r.workspace,
        Some(rauha_spec::result::WorkspaceOutcome::CommitFailed)
    );
    assert!(
        r.error
            .as_deref()
            .is_some_and(|e| e.contains("cannot freeze")),
        "{r:?}"
    );
}

/// Output the agent sends again (to a rauhad that died before reading it,
/// or before its spill recorded it) lands once: placed by its offset, the
/// spill cut back to its recorded position after a restart.
#[test]
fn output_sent_again_lands_once() {
    use crate::agent_link::{Ack, AgentEvent};
    use rauha_guest_agent::protocol::Stream;
    let node = Node::new();
    let zone = Uuid::new_v4();
    let record = crate::store::ProcessRecord {
        id: Uuid::new_v4(),
        zone_id: zone,
        args: vec!["sh".into()],
        state: ProcessState::Running,
        pid: 2,
        host_pid: 0,
        stdout_path: None,
        stderr_path: None,
        stdin_path: None,
        exit_code: None,
        signal: None,
        deadline: false,
        started_ms: 0,
        ended_ms: 0,
        publish: Vec::new(),
    };
    let id = record.id.to_string();
    let dir = node.dir.join("task");
    let secret = crate::secrets::Secret {
        name: "TOKEN".into(),
        delivery: crate::secrets::Delivery::Env("TOKEN".into()),
        value: b"sk-123".to_vec(),
    };
    let redactor = Redactor::new(&[secret]);
    let send = |r: &ZoneRegistry, offset: u64, data: &str| {
        r.on_agent_event(
            zone,
            AgentEvent::Output {
                id: id.clone(),
                stream: Stream::Stdout,
                offset,
                data: data.as_bytes().to_vec(),
            },
        )
        .map(|a: Ack| a.upto)
    };
    let p = node.registry.track(record.clone(), 1 << 20);
    p.spill_to(&dir, &redactor).expect("spill");
    assert_eq!(send(&node.registry, 0, "hello "), Some(6));
    assert_eq!(send(&node.registry, 6, "world\n"), Some(12));
    // All of it again, then a chunk that overlaps: only what is new lands.
    assert_eq!(send(&node.registry, 0, "hello world\n"), Some(12));
    assert_eq!(send(&node.registry, 9, "ld\nmore sk-"), Some(17));
    // "sk-" may start the secret: held back, not acknowledged.
    assert_eq!(p.stdout().data, b"hello world\nmore sk-");
    let spill = dir.join(format!("{id}.stdout"));
    assert_eq!(std::fs::read(&spill).expect("spill"), b"hello world\nmore ");
    // rauhad dies after writing more to the spill than its position says
    // (a write, then the kill before the position's): the restarted one
    // cuts it back and takes the rest as the agent sends it again.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&spill)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"half-writ"))
        .expect("append");
    node.registry.untrack(&record.id);
    let again = node.registry.track(record, 1 << 20);
    again.taken_over();
    again.spill_to(&dir, &redactor).expect("spill again");
    assert_eq!(send(&node.registry, 17, "sk-123 bye\n"), Some(28));
    assert_eq!(
        std::fs::read(&spill).expect("spill"),
        b"hello world\nmore [REDACTED:TOKEN] bye\n"
    );
    assert_eq!(again.stdout().data, b"hello world\nmore sk-123 bye\n"[..]);
}

#[tokio::test]
async fn the_hosts_ipc_namespace_is_a_privileged_pods_only() {
    let node = Node::new();
    let bundle = RootSpec::Bundle {
        path: node.dir.join("bundle").display().to_string(),
    };
    let mut policy = rauha_spec::presets::load("baseline")
        .expect("preset")
        .expect("parses");
    policy.zone.host_ipc = true;
    let e = node
        .registry
        .create_zone(NewZone {
            policy: policy.clone(),
            root: bundle.clone(),
            ..plain_zone("ipc")
        })
        .await
        .expect_err("baseline");
    assert!(e.to_string().contains("host_ipc"), "{e}");
    let mut pid = policy.clone();
    (pid.zone.host_ipc, pid.zone.host_pid) = (false, true);
    let e = node
        .registry
        .create_zone(NewZone {
            policy: pid,
            root: bundle.clone(),
            ..plain_zone("pid")
        })
        .await
        .expect_err("baseline");
    assert!(e.to_string().contains("host_pid"), "{e}");
    policy.pod.security = Some(rauha_spec::pod_security::Level::Privileged);
    policy
        .zone
        .sysctls
        .insert("kernel.shmmax".into(), "1".into());
    let e = node
        .registry
        .create_zone(NewZone {
            policy,
            root: bundle,
            ..plain_zone("ipc")
        })
        .await
        .expect_err("the host's sysctls");
    assert!(e.to_string().contains("kernel.shmmax"), "{e}");
}

/// `rauha run -p` in a zone that is not bridged: refused in one line
/// naming the field and the zone, nothing started or recorded.
#[tokio::test]
async fn a_process_publishes_ports_only_in_a_bridged_zone() {
    let node = Node::new();
    let zone = node.zone("lo").await.expect("create");
    let mut with_ports = spec(&["sleep", "600"]);
    with_ports.publish = vec!["8080:80".into()];
    let Err(err) = node
        .registry
        .start_process_streamed(
            &zone,
            with_ports,
            Vec::new(),
            &Redactor::new(&[]),
            &Default::default(),
            None,
        )
        .await
    else {
        panic!("a loopback zone published a port");
    };
    assert!(
        err.to_string()
            .starts_with("spec.publish: needs a bridged zone, and zone lo's"),
        "{err}"
    );
    assert!(node.backend.running(zone.id).is_empty());
    assert!(node.registry.list_processes(None).expect("ps").is_empty());
}
