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

const HEADER: usize = 10;
const MAX_MESSAGE: usize = 4 << 20;
const TYPE_REQUEST: u8 = 1;
const TYPE_RESPONSE: u8 = 2;

type Services = Arc<HashMap<String, TtrpcService>>;

/// Serves the pod until containerd shuts the shim down.
/// `inherited`: the descriptors `main` found open and marked close-on-exec.
pub async fn serve(flags: Flags, inherited: Vec<rauha_fd::Inherited>) -> Result<(), String> {
    let ttrpc_address = std::env::var("TTRPC_ADDRESS")
        .map_err(|_| "TTRPC_ADDRESS is not set; the shim is started by containerd".to_string())?;
    if flags.socket.is_empty() {
        return Err("-socket is empty; the shim is started by containerd".into());
    }
    containerd_shim::logger::init(flags.debug, "info", &flags.namespace, &flags.id)
        .map_err(|e| format!("cannot open the shim's log: {e}"))?;
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
            Some(Resume::from_env(&v)?)
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
        return Err(format!(
            "cannot close stdout for `start`: {}",
            std::io::Error::last_os_error()
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
async fn publisher(address: &str, wait: bool) -> Result<RemotePublisher, String> {
    let mut warned = false;
    loop {
        match RemotePublisher::new(address).await {
            Ok(p) => return Ok(p),
            Err(e) if !wait => {
                return Err(format!("cannot connect to containerd at {address}: {e}"))
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
async fn bind(address: &str) -> Result<Option<UnixListener>, String> {
    let path = address.strip_prefix("unix://").unwrap_or(address);
    if let Some(dir) = Path::new(path).parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    match UnixListener::bind(path) {
        Ok(l) => return Ok(Some(l)),
        Err(e) if e.kind() != std::io::ErrorKind::AddrInUse => {
            return Err(format!("cannot listen on {path}: {e}"))
        }
        Err(_) => {}
    }
    for _ in 0..5 {
        if UnixStream::connect(path).await.is_ok() {
            std::fs::write("address", address)
                .map_err(|e| format!("cannot write the bundle's address file: {e}"))?;
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path)
        .map(Some)
        .map_err(|e| format!("cannot listen on {path}: {e}"))
}

type Adopted = (UnixListener, Vec<(u32, UnixStream)>, Vec<(u32, Vec<u8>)>);

/// Takes over what the keeper handed a restarted shim.
fn adopt(r: &Resume) -> Result<Adopted, String> {
    let mut all: Vec<RawFd> = std::iter::once(r.listener)
        .chain(r.conns.iter().map(|(_, fd)| *fd))
        .chain(std::iter::once(r.pending))
        .collect();
    let count = all.len();
    all.sort_unstable();
    all.dedup();
    if all.len() != count || all.first().is_some_and(|fd| *fd <= 2) {
        return Err(format!(
            "{} names a descriptor twice or a standard one; it is set by rauhad's shim keeper",
            keeper::RESUME_ENV
        ));
    }
    let own = |fd: RawFd, what: &str| -> Result<OwnedFd, String> {
        // SAFETY: F_GETFD only checks that the fd is open.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(format!("the inherited {what} (fd {fd}) is not open"));
        }
        // SAFETY: the keeper passed this fd to us and nothing else owns it;
        // it must not leak into anything we start.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    let listener = std::os::unix::net::UnixListener::from(own(r.listener, "listener")?);
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("listener: {e}"))?;
    let listener = UnixListener::from_std(listener).map_err(|e| format!("listener: {e}"))?;
    let mut conns = Vec::new();
    for (n, fd) in &r.conns {
        let s = std::os::unix::net::UnixStream::from(own(*fd, "connection")?);
        s.set_nonblocking(true)
            .map_err(|e| format!("connection {n}: {e}"))?;
        conns.push((
            *n,
            UnixStream::from_std(s).map_err(|e| format!("connection {n}: {e}"))?,
        ));
    }
    let mut pending = Vec::new();
    let mut file = std::fs::File::from(own(r.pending, "list of unanswered requests")?);
    // The keeper's writes left the shared offset at the end.
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0))
        .and_then(|_| std::io::Read::read_to_end(&mut file, &mut pending))
        .map_err(|e| format!("cannot read the unanswered requests: {e}"))?;
    let replay = keeper::decode_pending(&pending)?;
    Ok((listener, conns, replay))
}

/// The shim's side of the keeper: what was deposited, so that it can all
/// be deposited again on a new connection (after rauhad restarts, or a
/// failed send).
struct Keeper {
    path: PathBuf,
    state: Mutex<Deposit>,
}

struct Deposit {
    sock: Option<OwnedFd>,
    /// The shim is ending: nothing is deposited any more.
    closing: bool,
    listener: RawFd,
    conns: BTreeMap<u32, RawFd>,
    pending: BTreeMap<(u32, u32), Vec<u8>>,
}

impl Keeper {
    fn new(rauhad_addr: &str, listener: RawFd) -> Arc<Keeper> {
        let api = rauhad_addr.strip_prefix("unix://").unwrap_or(rauhad_addr);
        Arc::new(Keeper {
            path: keeper::socket_path(Path::new(api)),
            state: Mutex::new(Deposit {
                sock: None,
                closing: false,
                listener,
                conns: BTreeMap::new(),
                pending: BTreeMap::new(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Deposit> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends one message. When the send fails, deposits everything again
    /// on a new connection (once): a request is never taken off
    /// containerd's socket while the keeper lacks it, if rauhad is there.
    fn send(&self, d: &mut Deposit, m: &ToKeeper, fd: Option<RawFd>) {
        let Some(s) = &d.sock else { return };
        if let Err(e) = send(s, &m.encode(), fd) {
            log::warn!("rauhad's shim keeper: {e}; depositing everything again");
            d.sock = None;
            if let Err(e) = self.deposit_all(d) {
                log::warn!("rauhad's shim keeper: {e}");
            }
        }
    }

    /// Connects and deposits everything, ending with Ready.
    fn deposit_all(&self, d: &mut Deposit) -> Result<(), String> {
        if d.closing {
            return Ok(());
        }
        let s = connect(&self.path)
            .map_err(|e| format!("not reachable at {}: {e}", self.path.display()))?;
        let mut all = vec![(ToKeeper::Hello, Some(d.listener))];
        all.extend(
            d.conns
                .iter()
                .map(|(n, fd)| (ToKeeper::Conn { n: *n }, Some(*fd))),
        );
        all.extend(d.pending.iter().map(|((n, stream), frame)| {
            (
                ToKeeper::Pending {
                    n: *n,
                    stream: *stream,
                    frame: frame.clone(),
                },
                None,
            )
        }));
        all.push((ToKeeper::Ready, None));
        for (m, fd) in all {
            send(&s, &m.encode(), fd).map_err(|e| format!("depositing: {e}"))?;
        }
        d.sock = Some(s);
        Ok(())
    }

    fn conn(&self, n: u32, fd: RawFd) {
        let mut d = self.lock();
        d.conns.insert(n, fd);
        self.send(&mut d, &ToKeeper::Conn { n }, Some(fd));
    }

    fn closed(&self, n: u32) {
        let mut d = self.lock();
        d.conns.remove(&n);
        d.pending.retain(|(c, _), _| *c != n);
        self.send(&mut d, &ToKeeper::Closed { n }, None);
    }

    fn pending(&self, n: u32, stream: u32, frame: &[u8]) {
        let mut d = self.lock();
        d.pending.insert((n, stream), frame.to_vec());
        let m = ToKeeper::Pending {
            n,
            stream,
            frame: frame.to_vec(),
        };
        self.send(&mut d, &m, None);
    }

    fn done(&self, n: u32, stream: u32) {
        let mut d = self.lock();
        if d.pending.remove(&(n, stream)).is_some() {
            self.send(&mut d, &ToKeeper::Done { n, stream }, None);
        }
    }

    /// Tells the keeper not to start this shim again (connecting for it
    /// if need be: a restarted shim's restarter waits to hear from it).
    /// Nothing is deposited after this.
    fn bye(&self) {
        let mut d = self.lock();
        d.closing = true;
        if d.sock.is_none() {
            d.sock = connect(&self.path).ok();
        }
        if let Some(s) = &d.sock {
            if let Err(e) = send(s, &ToKeeper::Bye.encode(), None) {
                log::warn!("rauhad's shim keeper: cannot say goodbye: {e}");
            }
        }
        d.sock = None;
    }

    /// Connects to the keeper (again) whenever there is none, and
    /// deposits everything. The keeper never writes to a shim: its socket
    /// turns readable only when rauhad is gone, and the shim then deposits
    /// everything with the next rauhad, as soon as it listens.
    async fn maintain(self: Arc<Keeper>) {
        let mut warned = false;
        let mut first = true;
        loop {
            if !first {
                let watch = self
                    .lock()
                    .sock
                    .as_ref()
                    .and_then(|s| s.try_clone().ok())
                    // SAFETY: the AsyncFd owns this fresh duplicate, which
                    // stays open and the same until the AsyncFd is dropped.
                    .and_then(|s| unsafe { tokio::io::unix::AsyncFd::register(s) }.ok());
                match watch {
                    Some(w) => {
                        let _ = tokio::time::timeout(Duration::from_secs(5), w.readable()).await;
                    }
                    None => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
            first = false;
            let mut d = self.lock();
            if d.closing {
                return;
            }
            if d.sock.as_ref().is_some_and(peer_closed) {
                d.sock = None;
            }
            if d.sock.is_some() {
                continue;
            }
            match self.deposit_all(&mut d) {
                Ok(()) => {
                    log::info!("deposited with rauhad's shim keeper");
                    warned = false;
                }
                Err(e) if !warned => {
                    log::warn!(
                        "rauhad's shim keeper: {e}; until it is back, a shim that dies ends its pod's tasks"
                    );
                    warned = true;
                }
                Err(_) => {}
            }
        }
    }
}

fn connect(path: &Path) -> std::io::Result<OwnedFd> {
    let bytes = path.as_os_str().as_encoded_bytes();
    // SAFETY: a zeroed sockaddr_un is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() {
        return Err(std::io::Error::other("socket path too long"));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: plain socket(2); checked.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: addr is a valid sockaddr_un of the given size.
    let r = unsafe {
        libc::connect(
            sock.as_raw_fd(),
            std::ptr::addr_of!(addr).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // Room for a few whole requests, and a send that waits for the keeper
    // (which only reads) for a second at most.
    let timeout = libc::timeval {
        tv_sec: 1,
        tv_usec: 0,
    };
    let sndbuf: libc::c_int = 1 << 20;
    // SAFETY: setsockopt with values of the sizes given.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            std::ptr::addr_of!(timeout).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            std::ptr::addr_of!(sndbuf).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    Ok(sock)
}

/// Whether the keeper's end is gone (rauhad stopped).
fn peer_closed(s: &OwnedFd) -> bool {
    let mut b = [0u8; 1];
    // SAFETY: a one-byte buffer for a non-blocking peek.
    let n = unsafe {
        libc::recv(
            s.as_raw_fd(),
            b.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n == 0
}

/// One datagram, with at most one descriptor; blocks for at most the
/// socket's send timeout (see `connect`).
fn send(s: &OwnedFd, data: &[u8], fd: Option<RawFd>) -> std::io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // u64 keeps the control buffer aligned for cmsghdr.
    let mut control = [0u64; 4];
    // SAFETY: a zeroed msghdr is valid; its pointers are set below and
    // live for the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(fd) = fd {
        // SAFETY: the control buffer holds one cmsghdr with one fd.
        unsafe {
            let space = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as usize;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = space as _;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<RawFd>(), fd);
        }
    }
    // SAFETY: msg points at live buffers.
    let n = unsafe { libc::sendmsg(s.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// One containerd connection (cloned for each request it answers).
#[derive(Clone)]
struct Conn {
    n: u32,
    stream: Arc<UnixStream>,
    write: Arc<tokio::sync::Mutex<()>>,
    keeper: Arc<Keeper>,
    services: Services,
    busy: Arc<AtomicUsize>,
}

impl Conn {
    fn new(
        n: u32,
        stream: UnixStream,
        keeper: &Arc<Keeper>,
        services: &Services,
        busy: &Arc<AtomicUsize>,
    ) -> Conn {
        Conn {
            n,
            stream: Arc::new(stream),
            write: Arc::default(),
            keeper: Arc::clone(keeper),
            services: Arc::clone(services),
            busy: Arc::clone(busy),
        }
    }

    /// Answers `replay` (requests a dead shim left unanswered), then serves
    /// the connection until containerd closes it.
    async fn run(self, replay: Vec<Vec<u8>>) {
        // Kept requests may still be in the socket too (the shim died
        // between keeping and taking them): containerd's stream ids only
        // grow, so a request up to the last kept one is a copy.
        let mut seen = 0u32;
        for frame in replay {
            // Kept again at start-up (`serve`), in case this shim dies too.
            if let Some(h) = header(&frame) {
                seen = seen.max(h.stream_id);
                tokio::spawn(self.clone().answer(frame, true));
            }
        }
        loop {
            let frame = match self.read_frame(seen).await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    log::warn!("connection {}: {e}", self.n);
                    break;
                }
            };
            let Some(h) = header(&frame) else { continue };
            if h.type_ != TYPE_REQUEST || h.stream_id <= seen {
                continue;
            }
            seen = h.stream_id;
            tokio::spawn(self.clone().answer(frame, false));
        }
        self.keeper.closed(self.n);
    }

    /// The next frame. A request that fits is first peeked and kept, then
    /// taken off the socket.
    async fn read_frame(&self, seen: u32) -> std::io::Result<Option<Vec<u8>>> {
        let mut head = [0u8; HEADER];
        if self.peek(&mut head).await? < HEADER {
            return Ok(None);
        }
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if len > MAX_MESSAGE {
            return Err(std::io::Error::other(format!(
                "a frame of {len} bytes is over ttrpc's {MAX_MESSAGE}"
            )));
        }
        let mut frame = vec![0u8; HEADER + len];
        if frame.len() <= keeper::MAX_KEPT_FRAME {
            if self.peek(&mut frame).await? < frame.len() {
                return Ok(None);
            }
            let stream_id = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
            // A copy of a replayed request is skipped, not kept again.
            if head[8] == TYPE_REQUEST && stream_id > seen {
                self.keeper.pending(self.n, stream_id, &frame);
            }
            let mut sink = vec![0u8; frame.len()];
            self.read_exact(&mut sink).await?;
        } else {
            self.read_exact(&mut frame).await?;
        }
        Ok(Some(frame))
    }

    /// Peeks until `buf` is full or the connection ends; returns how much
    /// was there.
    async fn peek(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        let fd = self.stream.as_raw_fd();
        loop {
            self.stream.readable().await?;
            let r = self.stream.try_io(Interest::READABLE, || {
                // SAFETY: recv into a buffer we own, without taking data.
                let n =
                    unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_PEEK) };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match r {
                Ok(0) => return Ok(0),
                Ok(n) if n == buf.len() => return Ok(n),
                // Part of a frame: the rest is on its way.
                Ok(_) => tokio::time::sleep(Duration::from_millis(1)).await,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }

    async fn read_exact(&self, buf: &mut [u8]) -> std::io::Result<()> {
        let mut off = 0;
        while off < buf.len() {
            self.stream.readable().await?;
            match self.stream.try_read(&mut buf[off..]) {
                Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => off += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn write_all(&self, buf: &[u8]) -> std::io::Result<()> {
        let _one = self.write.lock().await;
        let mut off = 0;
        while off < buf.len() {
            self.stream.writable().await?;
            match self.stream.try_write(&buf[off..]) {
                Ok(n) => off += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Answers one request and marks it answered.
    async fn answer(self, frame: Vec<u8>, replay: bool) {
        self.busy.fetch_add(1, Ordering::SeqCst);
        if let Some(h) = header(&frame) {
            let resp = call(
                &self.services,
                self.stream.as_raw_fd(),
                h,
                &frame[HEADER..],
                replay,
            )
            .await;
            match resp.encode() {
                Ok(payload) => {
                    let mut out = Vec::with_capacity(HEADER + payload.len());
                    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
                    out.extend_from_slice(&h.stream_id.to_be_bytes());
                    out.push(TYPE_RESPONSE);
                    out.push(0);
                    out.extend_from_slice(&payload);
                    match self.write_all(&out).await {
                        Ok(()) => self.keeper.done(self.n, h.stream_id),
                        Err(e) => log::warn!("connection {}: cannot answer: {e}", self.n),
                    }
                }
                Err(e) => log::warn!("cannot encode a response: {e}"),
            }
        }
        self.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

fn header(frame: &[u8]) -> Option<MessageHeader> {
    (frame.len() >= HEADER).then(|| MessageHeader {
        length: u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]),
        stream_id: u32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]),
        type_: frame[8],
        flags: frame[9],
    })
}

/// Calls the method a request names, as ttrpc's server does (its timeout
/// included), and always gives a response.
async fn call(
    services: &Services,
    fd: RawFd,
    h: MessageHeader,
    payload: &[u8],
    replay: bool,
) -> Response {
    let fail = |code: Code, msg: String| {
        let mut r = Response::new();
        r.set_status(get_status(code, msg));
        r
    };
    let req = match Request::decode(payload) {
        Ok(r) => r,
        Err(e) => {
            return fail(
                Code::INVALID_ARGUMENT,
                format!("a request that is not ttrpc: {e}"),
            )
        }
    };
    let Some(method) = services
        .get(&req.service)
        .and_then(|s| s.methods.get(&req.method))
    else {
        return fail(
            Code::UNIMPLEMENTED,
            format!("{}/{} is not served", req.service, req.method),
        );
    };
    let timeout_nano = req.timeout_nano;
    let mut metadata = context::from_pb(&req.metadata);
    if replay {
        metadata.insert(REPLAY_KEY.to_string(), vec!["1".to_string()]);
    } else {
        // Only the shim says a request is replayed.
        metadata.remove(REPLAY_KEY);
    }
    let ctx = TtrpcContext {
        fd,
        mh: h,
        metadata,
        timeout_nano,
    };
    let r = if timeout_nano > 0 {
        match tokio::time::timeout(
            Duration::from_nanos(timeout_nano as u64),
            method.handler(ctx, req),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => return fail(Code::DEADLINE_EXCEEDED, "timeout".into()),
        }
    } else {
        method.handler(ctx, req).await
    };
    r.unwrap_or_else(|e| fail(Code::UNKNOWN, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_reads_ttrpc_big_endian() {
        let f = [0, 0, 0, 5, 0, 0, 0, 3, 1, 0, 9, 9, 9, 9, 9];
        let h = header(&f).unwrap();
        assert_eq!((h.length, h.stream_id, h.type_, h.flags), (5, 3, 1, 0));
        assert!(header(&f[..9]).is_none());
    }

    /// Answers which way it was called.
    struct Echo;

    #[async_trait::async_trait]
    impl containerd_shim::protos::ttrpc::asynchronous::MethodHandler for Echo {
        async fn handler(
            &self,
            ctx: TtrpcContext,
            _req: Request,
        ) -> containerd_shim::protos::ttrpc::Result<Response> {
            let mut r = Response::new();
            r.payload = if ctx.metadata.contains_key(REPLAY_KEY) {
                b"replay".to_vec()
            } else {
                b"fresh".to_vec()
            };
            Ok(r)
        }
    }

    #[tokio::test]
    async fn only_the_shim_marks_a_request_replayed() {
        let mut methods: HashMap<
            String,
            Box<dyn containerd_shim::protos::ttrpc::asynchronous::MethodHandler + Send + Sync>,
        > = HashMap::new();
        methods.insert("Echo".into(), Box::new(Echo));
        let services: Services = Arc::new(HashMap::from([(
            "t.S".to_string(),
            TtrpcService {
                methods,
                streams: HashMap::new(),
            },
        )]));
        let mut req = Request::new();
        req.service = "t.S".into();
        req.method = "Echo".into();
        // A client that claims the mark gets no replay treatment.
        let mut kv = containerd_shim::protos::ttrpc::proto::KeyValue::new();
        kv.key = REPLAY_KEY.into();
        kv.value = "1".into();
        req.metadata.push(kv);
        let payload = req.encode().unwrap();
        let h = MessageHeader {
            length: payload.len() as u32,
            stream_id: 1,
            type_: TYPE_REQUEST,
            flags: 0,
        };
        assert_eq!(
            call(&services, -1, h, &payload, false).await.payload,
            b"fresh"
        );
        assert_eq!(
            call(&services, -1, h, &payload, true).await.payload,
            b"replay"
        );
        req.method = "Nope".into();
        let payload = req.encode().unwrap();
        let r = call(&services, -1, h, &payload, false).await;
        assert_eq!(r.status().code(), Code::UNIMPLEMENTED);
        let r = call(&services, -1, h, b"\xff\xff", false).await;
        assert_eq!(r.status().code(), Code::INVALID_ARGUMENT);
    }
}
