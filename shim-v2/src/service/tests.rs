//! The Task handlers against a fake rauhad: a gRPC server on a Unix socket
//! in a temp dir, holding zones and processes in memory, so each handler's
//! calls to rauhad, its answers to containerd and the events it publishes
//! are checked without root, containerd or a kernel.
//!
//! The fake's processes are scripted by their first argument: `true`
//! exits 0 at once, `false` exits 1, anything else runs until signalled.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Mutex as StdMutex;

use containerd_shim::protos::shim::events::ForwardRequest;
use containerd_shim::protos::ttrpc;
use rauha_api::v1::processes_server::{Processes, ProcessesServer};
use rauha_api::v1::zones_server::{Zones, ZonesServer};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use super::*;

/// What the fake rauhad holds, and every call it took (`Method arg`).
#[derive(Default)]
struct Model {
    zones: BTreeMap<String, v1::Zone>,
    processes: BTreeMap<String, v1::Process>,
    calls: Vec<String>,
    next_pid: u32,
}

#[derive(Clone)]
struct FakeRauhad {
    model: Arc<StdMutex<Model>>,
    /// Bumped whenever a process ends (waiters look again).
    ended: Arc<watch::Sender<u64>>,
}

impl FakeRauhad {
    fn new() -> FakeRauhad {
        FakeRauhad {
            model: Arc::default(),
            ended: Arc::new(watch::channel(0).0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn call(&self, what: String) {
        self.lock().calls.push(what);
    }

    fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    fn end(&self, id: &str, code: i32, signal: i32) -> Option<v1::Process> {
        let p = {
            let mut m = self.lock();
            let p = m.processes.get_mut(id)?;
            if p.state == "running" {
                p.state = "exited".into();
                p.has_exit_code = true;
                p.exit_code = code;
                p.signal = signal;
                p.ended_ms = 1;
            }
            p.clone()
        };
        self.ended.send_modify(|n| *n += 1);
        Some(p)
    }

    fn zone(&self, zone: &str) -> Result<v1::Zone, Status> {
        let m = self.lock();
        m.zones
            .values()
            .find(|z| z.name == zone || z.id == zone)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("zone {zone:?} not found")))
    }
}

type Rpc<T> = Result<Response<T>, Status>;

fn unused<T>(what: &str) -> Rpc<T> {
    Err(Status::unimplemented(format!(
        "{what} is not called by the shim"
    )))
}

#[tonic::async_trait]
impl Zones for FakeRauhad {
    async fn create(&self, r: Request<v1::CreateZoneRequest>) -> Rpc<v1::Zone> {
        let r = r.into_inner();
        self.call(format!("Create {}", r.name));
        let mut m = self.lock();
        if m.zones.contains_key(&r.name) {
            return Err(Status::already_exists(format!("zone {:?} exists", r.name)));
        }
        let zone = v1::Zone {
            id: format!("id-{}", r.name),
            name: r.name.clone(),
            state: "created".into(),
            policy: None,
            ..Default::default()
        };
        m.zones.insert(r.name, zone.clone());
        Ok(Response::new(zone))
    }

    async fn get(&self, r: Request<v1::ZoneRef>) -> Rpc<v1::Zone> {
        Ok(Response::new(self.zone(&r.into_inner().zone)?))
    }

    async fn list(&self, _: Request<v1::ListZonesRequest>) -> Rpc<v1::ListZonesResponse> {
        unused("Zones.List")
    }

    async fn delete(&self, r: Request<v1::DeleteZoneRequest>) -> Rpc<v1::DeleteZoneResponse> {
        let r = r.into_inner();
        self.call(format!("Delete {}", r.zone));
        let zone = self.zone(&r.zone)?;
        self.lock().zones.remove(&zone.name);
        Ok(Response::new(v1::DeleteZoneResponse::default()))
    }

    async fn verify(&self, _: Request<v1::ZoneRef>) -> Rpc<v1::VerifyZoneResponse> {
        unused("Zones.Verify")
    }

    async fn update_policy(&self, _: Request<v1::UpdatePolicyRequest>) -> Rpc<v1::Zone> {
        unused("Zones.UpdatePolicy")
    }

    async fn top(&self, _: Request<v1::TopRequest>) -> Rpc<v1::TopResponse> {
        unused("Zones.Top")
    }

    async fn take_denials(&self, r: Request<v1::ZoneRef>) -> Rpc<v1::Denials> {
        self.zone(&r.into_inner().zone)?;
        Ok(Response::new(v1::Denials::default()))
    }
    async fn usage(&self, r: Request<v1::ZoneRef>) -> Rpc<v1::ZoneUsage> {
        let zone = self.zone(&r.into_inner().zone)?;
        Ok(Response::new(v1::ZoneUsage {
            zone: Some(zone),
            usage: Some(v1::Usage {
                memory_bytes: 4096,
                pids: 1,
                ..Default::default()
            }),
        }))
    }

    async fn add_root(&self, _: Request<v1::AddRootRequest>) -> Rpc<v1::RootResponse> {
        unused("Zones.AddRoot")
    }

    async fn remove_root(&self, _: Request<v1::RootRef>) -> Rpc<v1::RootResponse> {
        unused("Zones.RemoveRoot")
    }

    async fn update_root(&self, _: Request<v1::UpdateRootRequest>) -> Rpc<v1::RootResponse> {
        unused("Zones.UpdateRoot")
    }

    async fn root_usage(&self, _: Request<v1::RootRef>) -> Rpc<v1::Usage> {
        unused("Zones.RootUsage")
    }

    async fn signal_root(&self, _: Request<v1::SignalRootRequest>) -> Rpc<v1::RootResponse> {
        unused("Zones.SignalRoot")
    }

    async fn pause(&self, r: Request<v1::ZoneRef>) -> Rpc<v1::Zone> {
        let zone = r.into_inner().zone;
        self.call(format!("Pause {zone}"));
        Ok(Response::new(self.zone(&zone)?))
    }

    async fn resume(&self, r: Request<v1::ZoneRef>) -> Rpc<v1::Zone> {
        let zone = r.into_inner().zone;
        self.call(format!("Resume {zone}"));
        Ok(Response::new(self.zone(&zone)?))
    }

    async fn stop(&self, _: Request<v1::ZoneRef>) -> Rpc<v1::Zone> {
        unused("Zones.Stop")
    }
}

type ExecStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<v1::ExecEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Processes for FakeRauhad {
    type ExecStream = ExecStream;
    type InteractStream = ExecStream;

    async fn interact(&self, _: Request<tonic::Streaming<v1::InteractInput>>) -> Rpc<ExecStream> {
        unused("Processes.Interact")
    }

    async fn run(&self, r: Request<v1::RunRequest>) -> Rpc<v1::Process> {
        let r = r.into_inner();
        let zone = self.zone(&r.zone)?;
        let args = r.spec.map(|s| s.args).unwrap_or_default();
        self.call(format!("Run {}", args.join(" ")));
        let process = {
            let mut m = self.lock();
            if let Some(p) = m.processes.get(&r.id) {
                return Ok(Response::new(p.clone()));
            }
            m.next_pid += 1;
            let p = v1::Process {
                id: r.id.clone(),
                zone_id: zone.id,
                zone_name: zone.name,
                args: args.clone(),
                state: "running".into(),
                pid: m.next_pid + 1,
                host_pid: 40_000 + m.next_pid,
                ..Default::default()
            };
            m.processes.insert(r.id.clone(), p.clone());
            p
        };
        match args.first().map(String::as_str) {
            Some("true") => {
                self.end(&r.id, 0, 0);
            }
            Some("false") => {
                self.end(&r.id, 1, 0);
            }
            _ => {}
        }
        Ok(Response::new(process))
    }

    async fn ps(&self, _: Request<v1::PsRequest>) -> Rpc<v1::PsResponse> {
        let processes = self
            .lock()
            .processes
            .values()
            .filter(|p| p.state == "running")
            .cloned()
            .collect();
        Ok(Response::new(v1::PsResponse { processes }))
    }

    async fn exec(&self, _: Request<v1::ExecRequest>) -> Rpc<ExecStream> {
        unused("Processes.Exec")
    }

    async fn logs(&self, _: Request<v1::ProcessRef>) -> Rpc<v1::LogsResponse> {
        unused("Processes.Logs")
    }

    async fn stop(&self, _: Request<v1::StopRequest>) -> Rpc<v1::Process> {
        unused("Processes.Stop")
    }

    async fn delete(&self, r: Request<v1::ProcessRef>) -> Rpc<v1::DeleteProcessResponse> {
        let id = r.into_inner().id;
        self.call("Delete process".into());
        self.lock().processes.remove(&id);
        Ok(Response::new(v1::DeleteProcessResponse::default()))
    }

    async fn wait(&self, r: Request<v1::ProcessRef>) -> Rpc<v1::Process> {
        let id = r.into_inner().id;
        let mut ended = self.ended.subscribe();
        loop {
            match self.lock().processes.get(&id) {
                None => return Err(Status::not_found(format!("process {id} not found"))),
                Some(p) if p.state != "running" => return Ok(Response::new(p.clone())),
                Some(_) => {}
            }
            if ended.changed().await.is_err() {
                return Err(Status::unavailable("the fake rauhad is gone"));
            }
        }
    }

    async fn signal(&self, r: Request<v1::SignalRequest>) -> Rpc<v1::Process> {
        let r = r.into_inner();
        self.call(format!("Signal {}", r.signal));
        self.end(&r.id, 128 + r.signal, r.signal)
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("process {} not found", r.id)))
    }

    async fn close_stdin(&self, _: Request<v1::ProcessRef>) -> Rpc<v1::Process> {
        unused("Processes.CloseStdin")
    }

    async fn resize(&self, _: Request<v1::ResizeRequest>) -> Rpc<v1::Process> {
        unused("Processes.Resize")
    }
}

/// Records the topics of the events the shim publishes.
#[derive(Clone, Default)]
struct Recorder(Arc<StdMutex<Vec<String>>>);

#[async_trait]
impl EventSink for Recorder {
    async fn forward(&self, req: ForwardRequest) -> Result<(), String> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(req.envelope.topic.clone());
        Ok(())
    }
}

/// A shim's service on a fake rauhad, with a bundle for container `c1`.
struct Bench {
    dir: PathBuf,
    rauhad: FakeRauhad,
    events: Recorder,
    service: Service,
    server: tokio::task::JoinHandle<()>,
}

impl Bench {
    async fn new(init: &[&str]) -> Bench {
        let dir = std::env::temp_dir().join(format!(
            "rauha-shim-unit-{}",
            std::fs::read_to_string("/proc/sys/kernel/random/uuid")
                .expect("uuid")
                .trim()
        ));
        std::fs::create_dir_all(dir.join("bundle/rootfs")).expect("bundle");
        let spec = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": { "args": init, "cwd": "/", "env": ["PATH=/bin"] },
            "root": { "path": "rootfs" },
            "linux": { "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                {"type": "uts"}, {"type": "mount"}] },
        });
        std::fs::write(dir.join("bundle/config.json"), spec.to_string()).expect("spec");
        let socket = dir.join("rauhad.sock");
        let listener = tokio::net::UnixListener::bind(&socket).expect("bind");
        let rauhad = FakeRauhad::new();
        let server = {
            let rauhad = rauhad.clone();
            tokio::spawn(async move {
                let _ = tonic::transport::Server::builder()
                    .add_service(ZonesServer::new(rauhad.clone()))
                    .add_service(ProcessesServer::new(rauhad))
                    .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
                    .await;
            })
        };
        let service = Service::on(
            "k8s.io".into(),
            Arc::new(ExitSignal::default()),
            Rauhad::at(format!("unix://{}", socket.display())),
            dir.join(STATE_FILE),
        );
        let events = Recorder::default();
        service.set_publisher(events.clone());
        Bench {
            dir,
            rauhad,
            events,
            service,
            server,
        }
    }

    fn ctx() -> TtrpcContext {
        TtrpcContext {
            fd: -1,
            mh: Default::default(),
            metadata: Default::default(),
            timeout_nano: 0,
        }
    }

    async fn create(&self, id: &str) -> TtrpcResult<api::CreateTaskResponse> {
        let mut req = api::CreateTaskRequest::new();
        req.id = id.into();
        req.bundle = self.dir.join("bundle").display().to_string();
        self.service.create(&Bench::ctx(), req).await
    }

    async fn start(&self, id: &str, exec_id: &str) -> TtrpcResult<api::StartResponse> {
        let mut req = api::StartRequest::new();
        req.id = id.into();
        req.exec_id = exec_id.into();
        self.service.start(&Bench::ctx(), req).await
    }

    async fn wait(&self, id: &str) -> api::WaitResponse {
        let mut req = api::WaitRequest::new();
        req.id = id.into();
        tokio::time::timeout(
            Duration::from_secs(5),
            self.service.wait(&Bench::ctx(), req),
        )
        .await
        .expect("the wait ends")
        .expect("wait")
    }

    fn topics(&self) -> Vec<String> {
        self.events
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        self.server.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn code(r: &ttrpc::Error) -> ttrpc::Code {
    match r {
        ttrpc::Error::RpcStatus(s) => s.code(),
        other => panic!("not a status: {other:?}"),
    }
}

#[tokio::test]
async fn a_container_runs_as_a_zone_from_create_to_delete() {
    let b = Bench::new(&["true"]).await;
    b.create("c1").await.expect("create");
    let zone = convert::zone_name("k8s.io", "c1");
    assert_eq!(b.rauhad.calls(), vec![format!("Create {zone}")]);
    let started = b.start("c1", "").await.expect("start");
    assert_eq!(started.pid, 40_001, "the host pid rauhad reported");
    let waited = b.wait("c1").await;
    assert_eq!(waited.exit_status, 0);
    let mut req = api::DeleteRequest::new();
    req.id = "c1".into();
    let deleted = b.service.delete(&Bench::ctx(), req).await.expect("delete");
    assert_eq!(deleted.exit_status, 0);
    let calls = b.rauhad.calls();
    assert!(calls.contains(&"Run true".to_string()), "{calls:?}");
    assert!(
        calls.contains(&format!("Delete id-{zone}")),
        "the zone is deleted by its id: {calls:?}"
    );
    assert!(
        b.rauhad.lock().zones.is_empty(),
        "the zone went with the container"
    );
    // containerd saw create, start, exit and delete, in that order.
    let topics = b.topics();
    let order: Vec<&str> = [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exit",
        "/tasks/delete",
    ]
    .into_iter()
    .filter(|t| topics.iter().any(|x| x == t))
    .collect();
    assert_eq!(order.len(), 4, "{topics:?}");
    let at = |t: &str| topics.iter().position(|x| x == t).unwrap_or(usize::MAX);
    assert!(at("/tasks/create") < at("/tasks/start") && at("/tasks/start") < at("/tasks/exit"));
}

#[tokio::test]
async fn kill_reaches_the_process_and_its_exit_code_reaches_wait() {
    let b = Bench::new(&["sleep", "600"]).await;
    b.create("c1").await.expect("create");
    b.start("c1", "").await.expect("start");
    // A running task is not deleted.
    let mut req = api::DeleteRequest::new();
    req.id = "c1".into();
    let err = b
        .service
        .delete(&Bench::ctx(), req)
        .await
        .expect_err("running");
    assert_eq!(code(&err), ttrpc::Code::FAILED_PRECONDITION);
    let mut kill = api::KillRequest::new();
    kill.id = "c1".into();
    kill.signal = libc::SIGTERM as u32;
    b.service.kill(&Bench::ctx(), kill).await.expect("kill");
    assert_eq!(b.wait("c1").await.exit_status, 128 + libc::SIGTERM as u32);
    assert!(b
        .rauhad
        .calls()
        .contains(&format!("Signal {}", libc::SIGTERM)));
}

#[tokio::test]
async fn bad_requests_get_containerds_codes() {
    let b = Bench::new(&["true"]).await;
    // An unknown container.
    let mut state = api::StateRequest::new();
    state.id = "nope".into();
    let err = b
        .service
        .state(&Bench::ctx(), state)
        .await
        .expect_err("unknown");
    assert_eq!(code(&err), ttrpc::Code::NOT_FOUND);
    // A bundle without config.json.
    std::fs::remove_file(b.dir.join("bundle/config.json")).expect("rm");
    let err = b.create("c2").await.expect_err("no spec");
    assert_eq!(code(&err), ttrpc::Code::INVALID_ARGUMENT);
    assert!(b.rauhad.calls().is_empty(), "nothing reached rauhad");
    // A checkpoint.
    let mut req = api::CreateTaskRequest::new();
    req.id = "c3".into();
    req.checkpoint = "/tmp/cp".into();
    let err = b
        .service
        .create(&Bench::ctx(), req)
        .await
        .expect_err("checkpoint");
    assert_eq!(code(&err), ttrpc::Code::UNIMPLEMENTED);
}

#[tokio::test]
async fn an_exec_needs_a_running_task_and_a_fresh_id() {
    let b = Bench::new(&["sleep", "600"]).await;
    b.create("c1").await.expect("create");
    b.start("c1", "").await.expect("start");
    let exec = |id: &str| {
        let mut req = api::ExecProcessRequest::new();
        req.id = "c1".into();
        req.exec_id = id.into();
        let mut any = Any::new();
        any.value = serde_json::json!({ "args": ["true"], "cwd": "/" })
            .to_string()
            .into_bytes();
        req.spec = Some(any).into();
        req
    };
    b.service
        .exec(&Bench::ctx(), exec("e1"))
        .await
        .expect("exec");
    let err = b
        .service
        .exec(&Bench::ctx(), exec("e1"))
        .await
        .expect_err("taken");
    assert_eq!(code(&err), ttrpc::Code::ALREADY_EXISTS);
    b.start("c1", "e1").await.expect("start the exec");
    assert!(b.rauhad.calls().contains(&"Run true".to_string()));
    assert!(b.topics().iter().any(|t| t == "/tasks/exec-started"));
}

#[tokio::test]
async fn rauhad_down_is_unavailable() {
    let b = Bench::new(&["true"]).await;
    b.server.abort();
    let _ = std::fs::remove_file(b.dir.join("rauhad.sock"));
    let err = b.create("c1").await.expect_err("rauhad is down");
    assert_eq!(code(&err), ttrpc::Code::UNAVAILABLE);
}

/// A pod container's result fits kubelet's termination message whole,
/// valid JSON with the envelope's keys, its output cut to fit.
#[test]
fn a_result_envelope_fits_a_termination_message() {
    let p = v1::Process {
        id: "p1".into(),
        args: vec!["sh".into(), "-c".into(), "yes".into()],
        has_exit_code: true,
        exit_code: 3,
        started_ms: 1_000,
        ended_ms: 1_250,
        ..Default::default()
    };
    let logs = v1::LogsResponse {
        stdout: "y\n".repeat(10_000).into_bytes(),
        stderr: b"oops\n".to_vec(),
        truncated: false,
        ..Default::default()
    };
    let enforcement = v1::Enforcement {
        layers: vec![v1::LayerStatus {
            layer: "seccomp".into(),
            in_force: true,
            detail: "38 system calls fail with EPERM".into(),
        }],
        score: 51,
        label: "standard".into(),
    };
    // Many changes in the workspace: some listed, the rest counted.
    let files = rauha_workspace::Scanned {
        changes: (0..64)
            .map(|i| rauha_spec::result::FileChange {
                path: format!("out/file-{i:03}.txt"),
                kind: rauha_spec::result::ChangeKind::Added,
                file_type: rauha_spec::result::FileType::File,
                size: Some(3),
                mode: Some(0o644),
                old_size: None,
                old_mode: None,
                link_target: None,
                diff: None,
                diff_truncated: false,
                held_back: None,
            })
            .collect(),
        unlisted: 10,
    };
    // More denials than a result lists, one with a long target.
    let denials: Vec<v1::EnforcementEvent> = (0..12)
        .map(|i| v1::EnforcementEvent {
            time_ms: 5,
            zone_id: "z1".into(),
            pid: 40 + i,
            hook: "file_open".into(),
            target: format!("/etc/{}", "x".repeat(if i == 0 { 1000 } else { 3 })),
            errno: 13,
        })
        .collect();
    let text = super::processes::result_envelope(
        &p,
        "z1",
        Some(&logs),
        &enforcement,
        &denials,
        Some(&files),
        false,
    );
    assert!(text.len() <= 4000, "{} bytes", text.len());
    let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(v["status"], "failed");
    assert_eq!(v["exit_code"], 3);
    assert_eq!(v["duration_ms"], 250);
    assert_eq!(v["stderr"], "oops\n");
    assert_eq!(v["stdout_truncated"], true);
    assert!(v["stdout"].as_str().expect("stdout").starts_with("y\ny\n"));
    assert_eq!(v["enforcement"]["score"], 51);
    let listed = v["enforcement_events"].as_array().expect("denials");
    assert_eq!(listed.len(), 8);
    assert_eq!(v["enforcement_events_unlisted"], 4);
    assert_eq!(listed[1]["hook"], "file_open");
    assert_eq!(listed[1]["target"], "/etc/xxx");
    assert_eq!(listed[1]["errno"], 13);
    assert_eq!(listed[0]["target"].as_str().map(str::len), Some(160));
    let changed = v["files_changed"].as_array().expect("files_changed");
    assert!(changed.len() >= 8, "{}", changed.len());
    assert_eq!(changed[0]["path"], "out/file-000.txt");
    assert_eq!(changed[0]["kind"], "added");
    assert_eq!(
        v["files_changed_unlisted"].as_u64(),
        Some(74 - changed.len() as u64)
    );
}

#[test]
fn a_pods_secrets_are_redacted_from_its_result() {
    let secrets = vec![("GH_TOKEN".to_string(), "s3cret".to_string())];
    assert_eq!(
        super::processes::redact(b"token=s3cret; again s3cret", &secrets),
        b"token=[REDACTED:GH_TOKEN]; again [REDACTED:GH_TOKEN]".to_vec()
    );
    assert_eq!(
        super::processes::redact(b"nothing", &secrets),
        b"nothing".to_vec()
    );
}

#[test]
fn the_termination_log_is_its_own_bind_not_the_dev_tmpfs() {
    let spec = serde_json::json!({"mounts": [
        {"destination": "/dev", "source": "tmpfs", "type": "tmpfs"},
        {"destination": "/dev/termination-log", "source": "/var/lib/kubelet/pods/u/containers/c/1"},
        {"destination": "/", "source": "/rootfs"},
    ]});
    let found = crate::convert::host_path(&spec, std::path::Path::new("/dev/termination-log"))
        .expect("found");
    // As text: PathBuf's == ignores a trailing slash, which makes a file
    // path unwritable.
    assert_eq!(found.as_os_str(), "/var/lib/kubelet/pods/u/containers/c/1");
}
