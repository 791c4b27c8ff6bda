//! The shim's server: containerd's ttrpc connections, answered by the Task
//! service, with a copy of everything needed to start again kept in rauhad
//! (`rauha_api::keeper`).
//!
//! The ttrpc crate's server cannot take over a connection that was already
//! accepted, nor say which requests are unanswered, so this module reads
//! and writes ttrpc frames itself (the Task API is unary: one request
//! frame, one response frame) and calls the generated method handlers.
//!
//! A request is handed to the keeper before it is taken off the socket
//! (read with `MSG_PEEK` first), and marked answered after its response is
//! written in one write. So a shim killed at any point leaves each request
//! either unread in the socket, or kept; a restarted shim answers the kept
//! ones and skips their copies still in the socket. A response written just
//! before the kill may be sent twice: containerd's client drops a response
//! for a stream it no longer waits on.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::protos::shim_async::create_task;
use containerd_shim::protos::ttrpc::asynchronous::{Service as TtrpcService, TtrpcContext};
use containerd_shim::protos::ttrpc::proto::Codec;
use containerd_shim::protos::ttrpc::{context, get_status, Code, MessageHeader, Request, Response};
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::Flags;
use rauha_api::keeper::{self, Resume, ToKeeper};
use tokio::io::Interest;
use tokio::net::{UnixListener, UnixStream};

use crate::rauhad::Rauhad;
use crate::service::{Service, REPLAY_KEY};

mod conn;
mod deposit;

use self::conn::*;
use self::deposit::*;

/// Why the shim cannot serve (printed on its stderr, which containerd logs).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0} is not set; the shim is started by containerd")]
    NotStartedByContainerd(&'static str),
    #[error("cannot open the shim's log: {0}")]
    Log(containerd_shim::Error),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("cannot connect to containerd at {address}: {source}")]
    Containerd {
        address: String,
        source: containerd_shim::Error,
    },
    /// What rauhad's keeper handed over does not hold together.
    #[error("{0}")]
    Resume(String),
    #[error("the inherited {what} (fd {fd}) is not open")]
    NotOpen { what: &'static str, fd: RawFd },
    #[error("{0}")]
    State(#[from] crate::error::StateError),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServeError {
    let what = what.into();
    move |source| ServeError::Io { what, source }
}

/// Serves the pod until containerd shuts the shim down.
/// `inherited`: the descriptors `main` found open and marked close-on-exec.
pub async fn serve(flags: Flags, inherited: Vec<rauha_fd::Inherited>) -> Result<(), ServeError> {
    let ttrpc_address = std::env::var("TTRPC_ADDRESS")
        .map_err(|_| ServeError::NotStartedByContainerd("TTRPC_ADDRESS"))?;
    if flags.socket.is_empty() {
        return Err(ServeError::NotStartedByContainerd("-socket"));
    }
    containerd_shim::logger::init(flags.debug, "info", &flags.namespace, &flags.id)
        .map_err(ServeError::Log)?;
    for fd in inherited {
        log::debug!(
            "inherited fd {} ({}) marked close-on-exec",
            fd.fd,
            fd.target.display()
        );
    }
    let resume = match std::env::var(keeper::RESUME_ENV) {
        Ok(v) => {
            std::env::remove_var(keeper::RESUME_ENV);
            Some(Resume::from_env(&v).map_err(ServeError::Resume)?)
        }
        Err(_) => None,
    };
    let (listener, inherited, replay) = match &resume {
        Some(r) => adopt(r)?,
        None => match bind(&flags.socket).await? {
            Some(l) => (l, Vec::new(), Vec::new()),
            // Another shim of this pod serves the address already.
            None => return Ok(()),
        },
    };
    // Deposited first: a restarted shim may wait below for containerd.
    let keeper = Keeper::new(Rauhad::from_env().addr(), listener.as_raw_fd());
    for (n, stream) in &inherited {
        keeper.conn(*n, stream.as_raw_fd());
    }
    for (n, frame) in &replay {
        if let Some(h) = header(frame) {
            keeper.pending(*n, h.stream_id, frame);
        }
    }
    tokio::spawn(Arc::clone(&keeper).maintain());
    // `start` waits for the end of our stdout: the socket is ready.
    // SAFETY: dup2 of two standard descriptors.
    if unsafe { libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO) } < 0 {
        return Err(io("cannot close stdout for `start`")(
            std::io::Error::last_os_error(),
        ));
    }
    let exit = Arc::new(ExitSignal::default());
    let service = Service::new(flags.namespace.clone(), Arc::clone(&exit));
    if resume.is_none() {
        service.set_publisher(publisher(&ttrpc_address, false).await?);
    } else {
        // A restarted shim serves at once: containerd, if it is starting,
        // asks its shims before it serves its own event socket.
        let (waiting, address) = (service.clone(), ttrpc_address.clone());
        tokio::spawn(async move {
            if let Ok(p) = publisher(&address, true).await {
                waiting.set_publisher(p);
            }
        });
        // A state that cannot be read ends this shim: restarted a few
        // times, then left dead, so containerd cleans the pod up.
        service.restore().await?;
        log::info!(
            "started again by rauhad's keeper: {} connections, {} unanswered requests",
            inherited.len(),
            replay.len()
        );
    }
    let services: Services = Arc::new(create_task(Arc::new(service)));
    let ignore = tokio::spawn(ignore_termination());
    let busy = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicU32::new(0));
    for (n, stream) in inherited {
        next.fetch_max(n + 1, Ordering::SeqCst);
        let frames: Vec<Vec<u8>> = replay
            .iter()
            .filter(|(c, _)| *c == n)
            .map(|(_, f)| f.clone())
            .collect();
        let conn = Conn::new(n, stream, &keeper, &services, &busy);
        tokio::spawn(conn.run(frames));
    }
    let accept = {
        let (keeper, services, busy) = (
            Arc::clone(&keeper),
            Arc::clone(&services),
            Arc::clone(&busy),
        );
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        let n = next.fetch_add(1, Ordering::SeqCst);
                        keeper.conn(n, stream.as_raw_fd());
                        let conn = Conn::new(n, stream, &keeper, &services, &busy);
                        tokio::spawn(conn.run(Vec::new()));
                    }
                    Err(e) => {
                        log::warn!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        })
    };
    exit.wait().await;
    // Goodbye first: nothing is deposited once the sockets start closing.
    keeper.bye();
    accept.abort();
    ignore.abort();
    // Let the Shutdown call's own answer go out.
    for _ in 0..100 {
        if busy.load(Ordering::SeqCst) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Some(path) = flags.socket.strip_prefix("unix://") {
        let _ = std::fs::remove_file(path);
    }
    log::info!("shim shut down");
    Ok(())
}

/// The event publisher on containerd's ttrpc socket. A restarted shim may
/// find containerd down (it died while containerd was stopped): it waits
/// for it, holding containerd's sockets, as the shim it replaces would.
async fn publisher(address: &str, wait: bool) -> Result<RemotePublisher, ServeError> {
    let mut warned = false;
    loop {
        match RemotePublisher::new(address).await {
            Ok(p) => return Ok(p),
            Err(source) if !wait => {
                return Err(ServeError::Containerd {
                    address: address.to_string(),
                    source,
                })
            }
            Err(e) => {
                if !warned {
                    log::warn!("containerd is not reachable at {address} ({e}); waiting for it");
                    warned = true;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// SIGTERM and SIGINT do not end a shim: containerd ends it with Shutdown.
async fn ignore_termination() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => log::debug!("SIGTERM ignored"),
            _ = int.recv() => log::debug!("SIGINT ignored"),
        }
    }
}

/// Binds the pod's socket; `None` when a live shim serves it already.
async fn bind(address: &str) -> Result<Option<UnixListener>, ServeError> {
    let path = address.strip_prefix("unix://").unwrap_or(address);
    if let Some(dir) = Path::new(path).parent() {
        std::fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
    }
    match UnixListener::bind(path) {
        Ok(l) => return Ok(Some(l)),
        Err(e) if e.kind() != std::io::ErrorKind::AddrInUse => {
            return Err(io(format!("cannot listen on {path}"))(e))
        }
        Err(_) => {}
    }
    for _ in 0..5 {
        if UnixStream::connect(path).await.is_ok() {
            std::fs::write("address", address)
                .map_err(io("cannot write the bundle's address file"))?;
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path)
        .map(Some)
        .map_err(io(format!("cannot listen on {path}")))
}

type Adopted = (UnixListener, Vec<(u32, UnixStream)>, Vec<(u32, Vec<u8>)>);

/// Takes over what the keeper handed a restarted shim.
fn adopt(r: &Resume) -> Result<Adopted, ServeError> {
    let mut all: Vec<RawFd> = std::iter::once(r.listener)
        .chain(r.conns.iter().map(|(_, fd)| *fd))
        .chain(std::iter::once(r.pending))
        .collect();
    let count = all.len();
    all.sort_unstable();
    all.dedup();
    if all.len() != count || all.first().is_some_and(|fd| *fd <= 2) {
        return Err(ServeError::Resume(format!(
            "{} names a descriptor twice or a standard one; it is set by rauhad's shim keeper",
            keeper::RESUME_ENV
        )));
    }
    let own = |fd: RawFd, what: &'static str| -> Result<OwnedFd, ServeError> {
        // SAFETY: F_GETFD only checks that the fd is open.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(ServeError::NotOpen { what, fd });
        }
        // SAFETY: the keeper passed this fd to us and nothing else owns it;
        // it must not leak into anything we start.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    let listener = std::os::unix::net::UnixListener::from(own(r.listener, "listener")?);
    listener.set_nonblocking(true).map_err(io("listener"))?;
    let listener = UnixListener::from_std(listener).map_err(io("listener"))?;
    let mut conns = Vec::new();
    for (n, fd) in &r.conns {
        let s = std::os::unix::net::UnixStream::from(own(*fd, "connection")?);
        s.set_nonblocking(true)
            .map_err(io(format!("connection {n}")))?;
        conns.push((
            *n,
            UnixStream::from_std(s).map_err(io(format!("connection {n}")))?,
        ));
    }
    let mut pending = Vec::new();
    let mut file = std::fs::File::from(own(r.pending, "list of unanswered requests")?);
    // The keeper's writes left the shared offset at the end.
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0))
        .and_then(|_| std::io::Read::read_to_end(&mut file, &mut pending))
        .map_err(io("cannot read the unanswered requests"))?;
    let replay = keeper::decode_pending(&pending).map_err(ServeError::Resume)?;
    Ok((listener, conns, replay))
}
