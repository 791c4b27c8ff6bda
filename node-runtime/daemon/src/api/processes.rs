use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rauha_api::v1;
use rauha_api::v1::processes_server::Processes;
use rauha_guest_agent::protocol::Stream;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::convert;
use crate::error::DaemonError;
use crate::validate::{parse_id, process_spec};
use crate::zone::stdio::HostStdio;
use crate::zone::{OutputChunk, ZoneRegistry};

const ID_HINT: &str = "use an id printed by `rauha run` or `rauha ps`";

pub struct ProcessesService {
    pub registry: Arc<ZoneRegistry>,
    pub images: Arc<crate::images::Images>,
    /// Where stdio paths may be (`--stdio-root`s and rauhad's state dir).
    pub stdio_roots: Vec<std::path::PathBuf>,
}

/// A container root made from an image for one process: removed (and its
/// layers' lease dropped) when the process ends.
struct ImageRoot {
    zone: String,
    name: String,
    _lease: crate::images::Lease,
}

impl ImageRoot {
    fn remove_now(self, registry: &ZoneRegistry) {
        if let Err(e) = registry.remove_root(&self.zone, &self.name) {
            tracing::warn!(zone = %self.zone, root = %self.name, "cannot remove an image's container root: {e}");
        }
    }

    fn remove_after(self, registry: Arc<ZoneRegistry>, process: Arc<crate::zone::LiveProcess>) {
        tokio::spawn(async move {
            process.wait().await;
            tokio::task::block_in_place(|| self.remove_now(&registry));
        });
    }
}

/// What starts a process for the API, apart from the call (a spawned
/// task holds a clone): the spec checked, the image's container root made
/// and, once the process ends, removed.
#[derive(Clone)]
struct Starter {
    registry: Arc<ZoneRegistry>,
    images: Arc<crate::images::Images>,
}

impl Starter {
    /// Starts `wire` in `zone`; the process, its output from the start,
    /// and the zone.
    async fn start(
        &self,
        zone: &str,
        mut wire: v1::ProcessSpec,
        stdio: HostStdio,
        id: Option<uuid::Uuid>,
    ) -> Result<
        (
            Arc<crate::zone::LiveProcess>,
            broadcast::Receiver<OutputChunk>,
            crate::store::ZoneRecord,
        ),
        DaemonError,
    > {
        let image_root = self.image_root(zone, &mut wire).await?;
        let started = async {
            let spec = convert::process_extras(
                process_spec("spec", &wire.args, &wire.env, &wire.cwd)?,
                &wire,
            )?;
            let zone = self.registry.find_zone(zone)?;
            let (process, output) = self
                .registry
                .start_process_streamed(&zone, spec, Vec::new(), &Default::default(), &stdio, id)
                .await?;
            Ok((process, output, zone))
        }
        .await;
        match (started, image_root) {
            (Ok(started), Some(root)) => {
                root.remove_after(Arc::clone(&self.registry), Arc::clone(&started.0));
                Ok(started)
            }
            (Err(e), Some(root)) => {
                root.remove_now(&self.registry);
                Err(e)
            }
            (started, None) => started,
        }
    }

    /// For a spec naming an image: a container root of the zone made from
    /// it, the spec pointed at it with the image's config applied.
    async fn image_root(
        &self,
        zone: &str,
        wire: &mut v1::ProcessSpec,
    ) -> Result<Option<ImageRoot>, DaemonError> {
        if wire.image.is_empty() {
            return Ok(None);
        }
        if !wire.root.is_empty() {
            return Err(DaemonError::invalid(
                "spec.image",
                "and spec.root are both given; a process runs in one root",
            ));
        }
        let record = self.registry.find_zone(zone)?;
        if matches!(record.root, rauha_spec::RootSpec::HostView) {
            return Err(DaemonError::invalid(
                "spec.image",
                format!(
                    "zone {:?} shows the host's files and holds no container roots; make one that does: rauha zone create NAME --image IMAGE",
                    record.name
                ),
            ));
        }
        let (root, image, lease) = self.images.root(&wire.image).await?;
        let layers = match root {
            rauha_spec::RootSpec::Image { layers, .. } => layers,
            _ => Vec::new(),
        };
        super::sandbox::apply_image_config(wire, &image.config, &image.name, &layers)?;
        let name = format!(
            "image-{}-{}",
            image.short_id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let registry = Arc::clone(&self.registry);
        let (zone_name, root_name) = (record.name.clone(), name.clone());
        tokio::task::spawn_blocking(move || {
            registry.add_root(
                &zone_name,
                &root_name,
                "/",
                rauha_backend::RootFlags {
                    image_layers: layers,
                    ..Default::default()
                },
                Vec::new(),
                &Default::default(),
            )
        })
        .await
        .map_err(|source| DaemonError::Aborted {
            what: "making the image's container root",
            source,
        })??;
        wire.root = name.clone();
        wire.image.clear();
        Ok(Some(ImageRoot {
            zone: record.name,
            name,
            _lease: lease,
        }))
    }
}

impl ProcessesService {
    fn starter(&self) -> Starter {
        Starter {
            registry: Arc::clone(&self.registry),
            images: Arc::clone(&self.images),
        }
    }

    fn wire(&self, p: &crate::store::ProcessRecord) -> v1::Process {
        let name = self
            .registry
            .store
            .zone(&p.zone_id)
            .ok()
            .flatten()
            .map(|z| z.name)
            .unwrap_or_default();
        convert::process(p, &name)
    }
}

fn chunk(c: OutputChunk) -> v1::ExecEvent {
    v1::ExecEvent {
        event: Some(v1::exec_event::Event::Output(v1::Output {
            stream: match c.stream {
                Stream::Stdout => 1,
                Stream::Stderr => 2,
            },
            data: c.data,
        })),
    }
}

type ExecStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<v1::ExecEvent, Status>> + Send>>;

/// Sends a process's `started` event, its output as it comes, and its end.
async fn forward(
    process: Arc<crate::zone::LiveProcess>,
    mut output: broadcast::Receiver<crate::zone::OutputChunk>,
    started: v1::Process,
    zone_name: String,
    tx: mpsc::Sender<Result<v1::ExecEvent, Status>>,
) {
    let _ = tx
        .send(Ok(v1::ExecEvent {
            event: Some(v1::exec_event::Event::Started(started)),
        }))
        .await;
    let mut ended = false;
    loop {
        tokio::select! {
            c = output.recv() => match c {
                Ok(c) => { if tx.send(Ok(chunk(c))).await.is_err() { return; } }
                Err(broadcast::error::RecvError::Lagged(n)) => tracing::warn!(lost = n, "exec stream fell behind"),
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = process.wait(), if !ended => ended = true,
        }
        if ended {
            while let Ok(c) = output.try_recv() {
                if tx.send(Ok(chunk(c))).await.is_err() {
                    return;
                }
            }
            break;
        }
    }
    let rec = process.record();
    let _ = tx
        .send(Ok(v1::ExecEvent {
            event: Some(v1::exec_event::Event::Exited(convert::process(
                &rec, &zone_name,
            ))),
        }))
        .await;
}

#[tonic::async_trait]
impl Processes for ProcessesService {
    async fn run(&self, request: Request<v1::RunRequest>) -> Result<Response<v1::Process>, Status> {
        let req = request.into_inner();
        let wire = req.spec.unwrap_or_default();
        if wire.image.is_empty() {
            // Checked before anything else (an image's command is known
            // once its config is applied, when it starts).
            convert::process_extras(
                process_spec("spec", &wire.args, &wire.env, &wire.cwd)?,
                &wire,
            )?;
        }
        let stdio = req.stdio.unwrap_or_default();
        let mut stdio = HostStdio::parse(
            &self.stdio_roots,
            &stdio.stdin,
            &stdio.stdout,
            &stdio.stderr,
        )?;
        if req.open_stdin {
            if stdio.stdin.is_some() {
                return Err(DaemonError::invalid(
                    "open_stdin",
                    "and stdio.stdin are both given; stdin comes from one place",
                )
                .into());
            }
            stdio.api_stdin = true;
        }
        let zone = self.registry.find_zone(&req.zone)?;
        let id = if req.id.is_empty() {
            None
        } else {
            Some(parse_id(
                "id",
                &req.id,
                "a process id the caller chose is a UUID",
            )?)
        };
        // The same Run again (its reply was lost): the process it started,
        // once it is started (a first Run may still be on its way).
        if let Some(id) = id {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while let Ok(existing) = self.registry.find_process(&id) {
                if existing.zone_id != zone.id {
                    return Err(DaemonError::ProcessIdTaken { id: existing.id }.into());
                }
                let starting = existing.pid == 0
                    && existing.state == crate::store::ProcessState::Running
                    && std::time::Instant::now() < deadline;
                if !starting {
                    return Ok(Response::new(self.wire(&existing)));
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
        // Started apart from this call: a caller that goes away (a shim
        // killed mid-call) does not leave a half-started process behind.
        let starter = self.starter();
        let zone_id = zone.id.to_string();
        let started = tokio::spawn(async move {
            starter
                .start(&zone_id, wire, stdio, id)
                .await
                .map(|(process, _, _)| process.record())
        })
        .await
        .map_err(|source| DaemonError::Aborted {
            what: "starting the process",
            source,
        })??;
        Ok(Response::new(self.wire(&started)))
    }

    async fn ps(
        &self,
        request: Request<v1::PsRequest>,
    ) -> Result<Response<v1::PsResponse>, Status> {
        let req = request.into_inner();
        let zone = if req.zone.is_empty() {
            None
        } else {
            Some(self.registry.find_zone(&req.zone)?)
        };
        let list = self.registry.list_processes(zone.as_ref())?;
        Ok(Response::new(v1::PsResponse {
            processes: list.iter().map(|p| self.wire(p)).collect(),
        }))
    }

    type ExecStream = ExecStream;
    type InteractStream = ExecStream;

    async fn interact(
        &self,
        request: Request<tonic::Streaming<v1::InteractInput>>,
    ) -> Result<Response<ExecStream>, Status> {
        use v1::interact_input::Input;
        let mut input = request.into_inner();
        let first = input
            .message()
            .await?
            .and_then(|m| m.input)
            .ok_or_else(|| {
                DaemonError::invalid("input", "is empty; the first message starts or attaches")
            })?;
        let (process, output, zone_name, started_here) = match first {
            Input::Start(req) => {
                let stdio = HostStdio {
                    api_stdin: true,
                    ..HostStdio::default()
                };
                let (process, output, zone) = self
                    .starter()
                    .start(&req.zone, req.spec.unwrap_or_default(), stdio, None)
                    .await?;
                (process, output, zone.name, true)
            }
            Input::Attach(id) => {
                let id = parse_id("attach", &id, "process ids are printed by `rauha run` and `rauha ps`")?;
                let record = self.registry.find_process(&id)?;
                let process = self
                    .registry
                    .live_process(&id)
                    .filter(|_| record.state == crate::store::ProcessState::Running)
                    .ok_or(DaemonError::ProcessEnded {
                        id,
                        state: record.state.as_str(),
                    })?;
                let output = process.subscribe();
                let zone_name = self
                    .registry
                    .store
                    .zone(&record.zone_id)
                    .ok()
                    .flatten()
                    .map(|z| z.name)
                    .unwrap_or_default();
                (process, output, zone_name, false)
            }
            _ => {
                return Err(DaemonError::invalid(
                    "input",
                    "starts with stdin, a resize or a signal; the first message starts a process or attaches to one",
                )
                .into())
            }
        };
        let id = process.id;
        let registry = Arc::clone(&self.registry);
        // The client's input, until it ends; a process started here reads
        // EOF then (as under `docker run -i`); an attached one keeps its
        // stdin for the next client.
        tokio::spawn(async move {
            while let Ok(Some(message)) = input.message().await {
                let result = match message.input {
                    Some(Input::Stdin(data)) => registry.write_stdin(&id, data).await,
                    Some(Input::CloseStdin(true)) => registry.close_stdin(&id).await.map(drop),
                    Some(Input::Resize(w)) => registry
                        .resize(
                            &id,
                            u16::try_from(w.rows).unwrap_or(u16::MAX),
                            u16::try_from(w.cols).unwrap_or(u16::MAX),
                        )
                        .await
                        .map(drop),
                    Some(Input::Signal(s)) => registry.signal_process(&id, s).await.map(drop),
                    _ => Ok(()),
                };
                if let Err(e) = result {
                    tracing::debug!(process = %id, "interactive input not delivered: {e}");
                }
            }
            if started_here {
                let _ = registry.close_stdin(&id).await;
            }
        });
        let (tx, rx) = mpsc::channel(256);
        let started = self.wire(&process.record());
        tokio::spawn(forward(process, output, started, zone_name, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn exec(
        &self,
        request: Request<v1::ExecRequest>,
    ) -> Result<Response<ExecStream>, Status> {
        let req = request.into_inner();
        let (process, output, zone) = self
            .starter()
            .start(
                &req.zone,
                req.spec.unwrap_or_default(),
                HostStdio::default(),
                None,
            )
            .await?;
        let (tx, rx) = mpsc::channel(256);
        let started = self.wire(&process.record());
        tokio::spawn(forward(process, output, started, zone.name.clone(), tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn logs(
        &self,
        request: Request<v1::ProcessRef>,
    ) -> Result<Response<v1::LogsResponse>, Status> {
        let id = parse_id("id", &request.into_inner().id, ID_HINT)?;
        let record = self.registry.find_process(&id)?;
        let Some(p) = self.registry.live_process(&id) else {
            return Err(DaemonError::OutputGone { id: record.id }.into());
        };
        let (out, err) = (p.stdout(), p.stderr());
        let marks = |c: &crate::zone::output::Capture| -> Vec<v1::OutputMark> {
            c.marks
                .iter()
                .map(|&(offset, time_ms)| v1::OutputMark { offset, time_ms })
                .collect()
        };
        Ok(Response::new(v1::LogsResponse {
            truncated: out.truncated() || err.truncated(),
            stdout_marks: marks(&out),
            stderr_marks: marks(&err),
            stdout: out.data,
            stderr: err.data,
        }))
    }

    async fn stop(
        &self,
        request: Request<v1::StopRequest>,
    ) -> Result<Response<v1::Process>, Status> {
        let req = request.into_inner();
        let id = parse_id("id", &req.id, ID_HINT)?;
        let grace = Duration::from_secs(if req.grace_seconds == 0 {
            10
        } else {
            u64::from(req.grace_seconds)
        });
        let record = self.registry.stop_process(&id, grace).await?;
        Ok(Response::new(self.wire(&record)))
    }

    async fn delete(
        &self,
        request: Request<v1::ProcessRef>,
    ) -> Result<Response<v1::DeleteProcessResponse>, Status> {
        let id = parse_id("id", &request.into_inner().id, ID_HINT)?;
        self.registry.delete_process(&id)?;
        Ok(Response::new(v1::DeleteProcessResponse {}))
    }

    async fn wait(
        &self,
        request: Request<v1::ProcessRef>,
    ) -> Result<Response<v1::Process>, Status> {
        let id = parse_id("id", &request.into_inner().id, ID_HINT)?;
        let record = self.registry.wait_process(&id).await?;
        Ok(Response::new(self.wire(&record)))
    }

    async fn signal(
        &self,
        request: Request<v1::SignalRequest>,
    ) -> Result<Response<v1::Process>, Status> {
        let req = request.into_inner();
        let id = parse_id("id", &req.id, ID_HINT)?;
        let record = self.registry.signal_process(&id, req.signal).await?;
        Ok(Response::new(self.wire(&record)))
    }

    async fn close_stdin(
        &self,
        request: Request<v1::ProcessRef>,
    ) -> Result<Response<v1::Process>, Status> {
        let id = parse_id("id", &request.into_inner().id, ID_HINT)?;
        let record = self.registry.close_stdin(&id).await?;
        Ok(Response::new(self.wire(&record)))
    }

    async fn resize(
        &self,
        request: Request<v1::ResizeRequest>,
    ) -> Result<Response<v1::Process>, Status> {
        let req = request.into_inner();
        let id = parse_id("id", &req.id, ID_HINT)?;
        let rows = u16::try_from(req.rows).unwrap_or(u16::MAX);
        let cols = u16::try_from(req.cols).unwrap_or(u16::MAX);
        let record = self.registry.resize(&id, rows, cols).await?;
        Ok(Response::new(self.wire(&record)))
    }
}
