//! The daemon's end of the zone agent protocol, over any byte stream.
//!
//! A reader task decodes the agent's messages: replies complete the
//! request waiting for them; `Output` and `Exited` go to the handler the
//! link was opened with. When the stream ends the handler hears `Closed`.
//! What the handler says it holds of a process's output is acknowledged to
//! the agent (batched: once no whole message is left to read), so that the
//! agent can drop it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rauha_guest_agent::frame;
use rauha_guest_agent::protocol::{
    ExitStatus, Message, Request, SpawnSpec, Stream, ZoneProcess, PROTOCOL_VERSION,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;

/// What the agent pushes on its own.
#[derive(Debug)]
pub enum AgentEvent {
    Output {
        id: String,
        stream: Stream,
        offset: u64,
        data: Vec<u8>,
    },
    Exited {
        id: String,
        status: ExitStatus,
    },
    /// The connection ended: the agent (and so the zone) is gone.
    Closed,
}

/// The handler holds a process's stream up to byte `upto` (for good: a
/// restarted rauhad finds it), so the agent need not keep it.
#[derive(Debug, PartialEq, Eq)]
pub struct Ack {
    pub id: String,
    pub stream: Stream,
    pub upto: u64,
}

pub type EventHandler = Arc<dyn Fn(AgentEvent) -> Option<Ack> + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("zone agent connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("zone agent protocol: {0}")]
    Frame(#[from] frame::FrameError),
    #[error("zone agent: {0}")]
    Agent(String),
    #[error("the zone agent is gone")]
    Gone,
}

type Writer = Box<dyn AsyncWrite + Send + Unpin>;

#[derive(Default)]
struct Pending {
    spawns: HashMap<String, oneshot::Sender<Result<u32, String>>>,
    lists: HashMap<u64, oneshot::Sender<Vec<ZoneProcess>>>,
    closed: bool,
}

pub struct AgentLink {
    writer: tokio::sync::Mutex<Writer>,
    pending: Arc<Mutex<Pending>>,
    next_request: AtomicU64,
}

/// What the agent reported when the link opened.
pub struct Greeting {
    pub running: Vec<String>,
    pub exited: Vec<(String, ExitStatus)>,
}

async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> Result<Option<Message>, LinkError> {
    loop {
        if let Some(m) = frame::decode_from(buf)? {
            return Ok(Some(m));
        }
        let mut chunk = [0u8; 64 * 1024];
        let n = r.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

impl AgentLink {
    /// Greets the agent and starts the reader task.
    pub async fn open<S>(
        stream: S,
        handler: EventHandler,
    ) -> Result<(Arc<AgentLink>, Greeting), LinkError>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (mut reader, mut writer) = tokio::io::split(stream);
        writer
            .write_all(&frame::encode(&Request::Hello {
                version: PROTOCOL_VERSION,
            })?)
            .await?;
        let mut buf = Vec::new();
        let greeting = match read_message(&mut reader, &mut buf).await? {
            Some(Message::Hello {
                version,
                running,
                exited,
            }) if version == PROTOCOL_VERSION => Greeting { running, exited },
            Some(Message::Error { message }) => return Err(LinkError::Agent(message)),
            Some(other) => {
                return Err(LinkError::Agent(format!(
                    "expected a greeting, got {other:?}"
                )))
            }
            None => return Err(LinkError::Gone),
        };
        let link = Arc::new(AgentLink {
            writer: tokio::sync::Mutex::new(Box::new(writer)),
            pending: Arc::new(Mutex::new(Pending::default())),
            next_request: AtomicU64::new(1),
        });
        let pending = Arc::clone(&link.pending);
        let weak = Arc::downgrade(&link);
        tokio::spawn(async move {
            let mut acks: HashMap<(String, bool), u64> = HashMap::new();
            loop {
                match frame::decode_from::<Message>(&mut buf) {
                    Ok(Some(msg)) => {
                        if let Some(ack) = dispatch(&pending, &handler, msg) {
                            let key = (ack.id, ack.stream == Stream::Stderr);
                            let upto = acks.entry(key).or_insert(0);
                            *upto = (*upto).max(ack.upto);
                        }
                        continue;
                    }
                    Ok(None) => {}
                    Err(_) => break,
                }
                // Nothing whole left to read: acknowledge what was handled
                // before waiting for more.
                if let Some(link) = weak.upgrade() {
                    for ((id, stderr), upto) in acks.drain() {
                        let stream = if stderr {
                            Stream::Stderr
                        } else {
                            Stream::Stdout
                        };
                        let _ = link.send(&Request::Ack { id, stream, upto }).await;
                    }
                }
                acks.clear();
                let mut chunk = [0u8; 64 * 1024];
                match reader.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
            p.closed = true;
            for (_, tx) in p.spawns.drain() {
                let _ = tx.send(Err("the zone agent is gone".into()));
            }
            p.lists.clear();
            drop(p);
            handler(AgentEvent::Closed);
        });
        Ok((link, greeting))
    }

    async fn send(&self, req: &Request) -> Result<(), LinkError> {
        let bytes = frame::encode(req)?;
        let mut w = self.writer.lock().await;
        w.write_all(&bytes).await?;
        w.flush().await?;
        Ok(())
    }

    /// Starts a process; returns its pid inside the zone.
    pub async fn spawn(&self, spec: SpawnSpec) -> Result<u32, LinkError> {
        let (tx, rx) = oneshot::channel();
        {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if p.closed {
                return Err(LinkError::Gone);
            }
            p.spawns.insert(spec.id.clone(), tx);
        }
        self.send(&Request::Spawn(spec)).await?;
        match rx.await {
            Ok(Ok(pid)) => Ok(pid),
            Ok(Err(e)) => Err(LinkError::Agent(e)),
            Err(_) => Err(LinkError::Gone),
        }
    }

    pub async fn signal(&self, id: &str, signal: i32) -> Result<(), LinkError> {
        self.send(&Request::Signal {
            id: id.to_string(),
            signal,
        })
        .await
    }

    pub async fn signal_all(&self, signal: i32) -> Result<(), LinkError> {
        self.send(&Request::SignalAll { signal }).await
    }

    pub async fn signal_root(&self, root: &str, signal: i32) -> Result<(), LinkError> {
        self.send(&Request::SignalRoot {
            root: root.to_string(),
            signal,
        })
        .await
    }

    pub async fn stdin(&self, id: &str, data: Vec<u8>) -> Result<(), LinkError> {
        self.send(&Request::Stdin {
            id: id.to_string(),
            data,
        })
        .await
    }

    pub async fn close_stdin(&self, id: &str) -> Result<(), LinkError> {
        self.send(&Request::CloseStdin { id: id.to_string() }).await
    }

    pub async fn resize(&self, id: &str, rows: u16, cols: u16) -> Result<(), LinkError> {
        self.send(&Request::Resize {
            id: id.to_string(),
            rows,
            cols,
        })
        .await
    }

    pub async fn forget(&self, id: &str) -> Result<(), LinkError> {
        self.send(&Request::Forget { id: id.to_string() }).await
    }

    pub async fn update_hardening(
        &self,
        h: rauha_guest_agent::config::Hardening,
    ) -> Result<(), LinkError> {
        self.send(&Request::UpdateHardening(h)).await
    }

    /// Every process of the zone, as the agent sees them.
    pub async fn list(&self) -> Result<Vec<ZoneProcess>, LinkError> {
        let request = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if p.closed {
                return Err(LinkError::Gone);
            }
            p.lists.insert(request, tx);
        }
        self.send(&Request::List { request }).await?;
        rx.await.map_err(|_| LinkError::Gone)
    }
}

fn dispatch(pending: &Mutex<Pending>, handler: &EventHandler, msg: Message) -> Option<Ack> {
    let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
    match msg {
        Message::Spawned { id, pid } => {
            if let Some(tx) = p.spawns.remove(&id) {
                let _ = tx.send(Ok(pid));
            }
        }
        Message::SpawnFailed { id, error } => {
            if let Some(tx) = p.spawns.remove(&id) {
                let _ = tx.send(Err(error));
            }
        }
        Message::Processes { request, list } => {
            if let Some(tx) = p.lists.remove(&request) {
                let _ = tx.send(list);
            }
        }
        Message::Output {
            id,
            stream,
            offset,
            data,
        } => {
            drop(p);
            return handler(AgentEvent::Output {
                id,
                stream,
                offset,
                data,
            });
        }
        Message::Exited { id, status } => {
            drop(p);
            handler(AgentEvent::Exited { id, status });
        }
        Message::Hello { .. } => {}
        Message::Error { message } => tracing::warn!(%message, "zone agent reported an error"),
    }
    None
}
