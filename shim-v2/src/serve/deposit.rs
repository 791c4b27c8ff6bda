//! The shim's side of rauhad's shim keeper: its listening socket, each
//! containerd connection and each unanswered request are deposited
//! (`SCM_RIGHTS` over `SOCK_SEQPACKET`), so a killed shim is started again
//! with them (wire format: `rauha_api::keeper`).

use super::*;

#[derive(Debug, thiserror::Error)]
pub(super) enum KeeperError {
    #[error("not reachable at {}: {source}", path.display())]
    Unreachable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("depositing: {0}")]
    Deposit(std::io::Error),
}

/// The shim's side of the keeper: what was deposited, so that it can all
/// be deposited again on a new connection (after rauhad restarts, or a
/// failed send).
pub(super) struct Keeper {
    path: PathBuf,
    state: Mutex<Deposit>,
}

pub(super) struct Deposit {
    sock: Option<OwnedFd>,
    /// The shim is ending: nothing is deposited any more.
    closing: bool,
    listener: RawFd,
    conns: BTreeMap<u32, RawFd>,
    pending: BTreeMap<(u32, u32), Vec<u8>>,
}

impl Keeper {
    pub(super) fn new(rauhad_addr: &str, listener: RawFd) -> Arc<Keeper> {
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

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Deposit> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends one message. When the send fails, deposits everything again
    /// on a new connection (once): a request is never taken off
    /// containerd's socket while the keeper lacks it, if rauhad is there.
    pub(super) fn send(&self, d: &mut Deposit, m: &ToKeeper, fd: Option<RawFd>) {
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
    pub(super) fn deposit_all(&self, d: &mut Deposit) -> Result<(), KeeperError> {
        if d.closing {
            return Ok(());
        }
        let s = connect(&self.path).map_err(|source| KeeperError::Unreachable {
            path: self.path.clone(),
            source,
        })?;
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
            send(&s, &m.encode(), fd).map_err(KeeperError::Deposit)?;
        }
        d.sock = Some(s);
        Ok(())
    }

    pub(super) fn conn(&self, n: u32, fd: RawFd) {
        let mut d = self.lock();
        d.conns.insert(n, fd);
        self.send(&mut d, &ToKeeper::Conn { n }, Some(fd));
    }

    pub(super) fn closed(&self, n: u32) {
        let mut d = self.lock();
        d.conns.remove(&n);
        d.pending.retain(|(c, _), _| *c != n);
        self.send(&mut d, &ToKeeper::Closed { n }, None);
    }

    pub(super) fn pending(&self, n: u32, stream: u32, frame: &[u8]) {
        let mut d = self.lock();
        d.pending.insert((n, stream), frame.to_vec());
        let m = ToKeeper::Pending {
            n,
            stream,
            frame: frame.to_vec(),
        };
        self.send(&mut d, &m, None);
    }

    pub(super) fn done(&self, n: u32, stream: u32) {
        let mut d = self.lock();
        if d.pending.remove(&(n, stream)).is_some() {
            self.send(&mut d, &ToKeeper::Done { n, stream }, None);
        }
    }

    /// Tells the keeper not to start this shim again (connecting for it
    /// if need be: a restarted shim's restarter waits to hear from it).
    /// Nothing is deposited after this.
    pub(super) fn bye(&self) {
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
    pub(super) async fn maintain(self: Arc<Keeper>) {
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

pub(super) fn connect(path: &Path) -> std::io::Result<OwnedFd> {
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
pub(super) fn peer_closed(s: &OwnedFd) -> bool {
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
pub(super) fn send(s: &OwnedFd, data: &[u8], fd: Option<RawFd>) -> std::io::Result<()> {
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
