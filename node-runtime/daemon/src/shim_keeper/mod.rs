//! The shim keeper: rauhad holds, for each `containerd-shim-rauha-v2`, a
//! copy of its listening socket, of containerd's connections to it and of
//! the requests it has not answered yet (wire format in
//! `rauha_api::keeper`). When a shim dies without saying goodbye, containerd
//! sees nothing (its connection is still open here); the keeper starts the
//! shim again, in the dead shim's cgroups, with the same binary path,
//! arguments, environment and directory, hands it those sockets, and the
//! new shim answers what was left unanswered and finds its pod's state in
//! rauhad and in its state file.
//!
//! One thread per shim, blocking on its socket: a shim sends a few small
//! messages per request, and most of its life nothing.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rauha_api::keeper::{self, Resume, ToKeeper};

mod restart;

use self::restart::*;

/// A shim started again more often than this in `RESTART_WINDOW` is left
/// dead: it would only crash again, and containerd then cleans up its tasks.
const RESTART_BURST: usize = 5;
const RESTART_WINDOW: Duration = Duration::from_secs(60);
/// How long after its socket closed a shim may take to be gone.
const EXIT_GRACE: Duration = Duration::from_secs(5);
/// The only binary the keeper starts again.
const SHIM_BINARY: &str = "containerd-shim-rauha-v2";

/// Restarts per shim socket address, for the burst limit; and the pids of
/// restarted shims waited for.
#[derive(Default)]
struct Shared {
    restarts: Mutex<HashMap<String, Vec<Instant>>>,
    /// Restarted shims not heard from yet: told when one deposits or says
    /// goodbye.
    waiting: Mutex<HashMap<i32, std::sync::mpsc::Sender<()>>>,
    /// Which keeper connection answers for each shim (by socket address):
    /// the last to have deposited everything.
    owners: Mutex<HashMap<String, u64>>,
    generation: std::sync::atomic::AtomicU64,
}
type Restarts = Arc<Shared>;

/// Binds the keeper's socket (root only) and serves it on a thread.
pub fn spawn(api_socket: &Path) -> anyhow::Result<PathBuf> {
    let path = keeper::socket_path(api_socket);
    let listener = bind(&path)?;
    let restarts: Restarts = Arc::default();
    std::thread::Builder::new()
        .name("shim-keeper".into())
        .spawn(move || loop {
            // SAFETY: accept4 on our listening socket; the result is a new
            // fd we own.
            let fd = unsafe {
                libc::accept4(
                    listener.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    tracing::warn!("shim keeper: accept: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
                continue;
            }
            // SAFETY: accept4 returned a fresh fd.
            let conn = unsafe { OwnedFd::from_raw_fd(fd) };
            let restarts = Arc::clone(&restarts);
            let spawned = std::thread::Builder::new()
                .name("shim-keeper-conn".into())
                .spawn(move || keep(conn, &restarts));
            if let Err(e) = spawned {
                tracing::warn!("shim keeper: cannot start a thread: {e}");
            }
        })
        .context("cannot start the shim keeper's thread")?;
    Ok(path)
}

fn bind(path: &Path) -> anyhow::Result<OwnedFd> {
    let bytes = path.as_os_str().as_encoded_bytes();
    // SAFETY: a zeroed sockaddr_un is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() {
        bail!(
            "the shim keeper's socket path {} is too long for a Unix socket; use a shorter --socket",
            path.display()
        );
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let _ = std::fs::remove_file(path);
    // SAFETY: plain socket(2); the result is checked.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("shim keeper: socket");
    }
    // SAFETY: socket returned a fresh fd.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: addr is a valid sockaddr_un of the given size.
    let r = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            std::ptr::addr_of!(addr).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot listen on {}", path.display()));
    }
    // Root only before it listens: until then no one can connect.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot make {} root only", path.display()))?;
    // SAFETY: listen on our bound socket.
    if unsafe { libc::listen(sock.as_raw_fd(), 64) } != 0 {
        return Err(std::io::Error::last_os_error()).context("shim keeper: listen");
    }
    Ok(sock)
}

/// What the keeper knows of one shim.
#[derive(Default)]
struct Kept {
    pidfd: Option<OwnedFd>,
    exe: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    cwd: PathBuf,
    /// `cgroup.procs` files of the shim's cgroups.
    cgroups: Vec<PathBuf>,
    /// The `-socket` address, for the restart limit.
    address: String,
    listener: Option<OwnedFd>,
    conns: BTreeMap<u32, OwnedFd>,
    pending: BTreeMap<(u32, u32), Vec<u8>>,
    bye: bool,
}

/// Serves one shim's socket until it closes, then restarts the shim if it
/// died.
fn keep(sock: OwnedFd, restarts: &Restarts) {
    let (pid, uid) = match peer(&sock) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("shim keeper: {e}");
            return;
        }
    };
    if uid != 0 {
        tracing::warn!(pid, uid, "shim keeper: refused a peer that is not root");
        return;
    }
    // The keeper starts what it is given as host root: only a process of
    // the host's own namespaces (as containerd starts shims), never one in
    // a zone, even a zone's root, may deposit.
    if let Err(e) = host_peer(pid) {
        tracing::warn!(pid, "shim keeper: refused a peer: {e}");
        return;
    }
    let gen = restarts
        .generation
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let mut kept = Kept::default();
    let mut buf = vec![0u8; keeper::MAX_KEPT_FRAME + 64];
    loop {
        let (n, fds) = match recv(&sock, &mut buf) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(pid, "shim keeper: {e}");
                break;
            }
        };
        if n == 0 {
            break;
        }
        let msg = match ToKeeper::decode(&buf[..n]) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(pid, "shim keeper: {e}");
                continue;
            }
        };
        let mut fds = fds.into_iter();
        match msg {
            ToKeeper::Hello => match describe(pid) {
                Ok(k) => {
                    kept = Kept {
                        listener: fds.next(),
                        ..k
                    };
                }
                Err(e) => {
                    tracing::warn!(pid, "shim keeper: refused a shim: {e:#}");
                    return;
                }
            },
            ToKeeper::Ready => {
                // Everything deposited: this connection now answers for the
                // shim (an older one of the same shim no longer restarts it).
                restarts
                    .owners
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(kept.address.clone(), gen);
                heard_from(restarts, pid);
            }
            ToKeeper::Conn { n } => {
                if let Some(fd) = fds.next() {
                    kept.conns.insert(n, fd);
                }
            }
            ToKeeper::Closed { n } => {
                kept.conns.remove(&n);
                kept.pending.retain(|(c, _), _| *c != n);
            }
            ToKeeper::Pending { n, stream, frame } => {
                kept.pending.insert((n, stream), frame);
            }
            ToKeeper::Done { n, stream } => {
                kept.pending.remove(&(n, stream));
            }
            ToKeeper::Bye => {
                kept.bye = true;
                heard_from(restarts, pid);
            }
        }
    }
    if kept.bye || kept.listener.is_none() {
        return;
    }
    // A shim deposited again on a newer connection: that one answers for it.
    let still_owner = || {
        restarts
            .owners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&kept.address)
            .copied()
            == Some(gen)
    };
    if !gone(&kept) || !still_owner() {
        // Its socket closed but it runs on: it will come back on its own.
        tracing::warn!(
            pid,
            "shim keeper: a shim closed its keeper socket and still runs"
        );
        return;
    }
    // Started again until one deposits (this thread holds the sockets until
    // then), within the burst limit.
    let mut old = pid;
    loop {
        {
            let mut all = restarts.restarts.lock().unwrap_or_else(|e| e.into_inner());
            let times = all.entry(kept.address.clone()).or_default();
            times.retain(|t| t.elapsed() < RESTART_WINDOW);
            let burst = times.len();
            if burst >= RESTART_BURST {
                tracing::error!(
                    pid = old,
                    address = %kept.address,
                    "shim keeper: the shim died {RESTART_BURST} times in {RESTART_WINDOW:?}; not starting it again (containerd ends its tasks)"
                );
                return;
            }
            times.push(Instant::now());
            drop(all);
            if burst > 0 {
                // Backing off: 100, 200, 400, 800 ms.
                std::thread::sleep(Duration::from_millis(100 << (burst - 1).min(4)));
            }
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let started = {
            // Registered before the new shim can say hello.
            let mut waiting = restarts.waiting.lock().unwrap_or_else(|e| e.into_inner());
            let started = restart(&kept);
            if let Ok(c) = &started {
                waiting.insert(c.id() as i32, tx);
            }
            started
        };
        let mut child = match started {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(pid = old, "shim keeper: cannot start the shim again: {e:#}");
                return;
            }
        };
        let new = child.id() as i32;
        tracing::info!(
            old,
            new,
            conns = kept.conns.len(),
            unanswered = kept.pending.len(),
            "shim keeper: a shim died; started it again"
        );
        loop {
            if rx.recv_timeout(Duration::from_millis(20)).is_ok() {
                let reaper = std::thread::Builder::new()
                    .name("shim-reaper".into())
                    .spawn(move || {
                        let _ = child.wait();
                    });
                if let Err(e) = reaper {
                    tracing::warn!("shim keeper: cannot start a reaper thread: {e}");
                }
                return;
            }
            if let Ok(Some(status)) = child.try_wait() {
                restarts
                    .waiting
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&new);
                tracing::warn!(pid = new, %status, "shim keeper: the restarted shim died before it deposited");
                break;
            }
        }
        old = new;
    }
}

/// A restarted shim deposited or said goodbye: its restarter lets go.
fn heard_from(shared: &Shared, pid: i32) {
    let waiting = shared
        .waiting
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&pid);
    if let Some(tx) = waiting {
        let _ = tx.send(());
    }
}

/// Whether a peer shares rauhad's mount, pid and user namespaces (a
/// host process, as containerd's shims are; never a zone's).
fn host_peer(pid: i32) -> Result<(), String> {
    for ns in ["mnt", "pid", "user"] {
        let mine = std::fs::metadata(format!("/proc/self/ns/{ns}"));
        let theirs = std::fs::metadata(format!("/proc/{pid}/ns/{ns}"));
        match (mine, theirs) {
            (Ok(a), Ok(b)) if a.ino() == b.ino() && a.dev() == b.dev() => {}
            _ => return Err(format!("it is not in rauhad's {ns} namespace")),
        }
    }
    Ok(())
}

/// The peer's pid and uid.
fn peer(sock: &OwnedFd) -> anyhow::Result<(i32, u32)> {
    // SAFETY: a zeroed ucred is valid; getsockopt fills it.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred and len are valid for the call.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            std::ptr::addr_of_mut!(cred).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).context("SO_PEERCRED");
    }
    Ok((cred.pid, cred.uid))
}

/// Receives one datagram and the descriptors that came with it.
fn recv(sock: &OwnedFd, buf: &mut [u8]) -> anyhow::Result<(usize, Vec<OwnedFd>)> {
    // u64 keeps the control buffer aligned for cmsghdr.
    let mut control = [0u64; 32];
    loop {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: a zeroed msghdr is valid; its pointers are set below.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: msg points at live buffers for the call.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("recvmsg");
        }
        let mut fds = Vec::new();
        // SAFETY: walking the control messages recvmsg filled in.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(c).cast::<RawFd>();
                    let count = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                        / std::mem::size_of::<RawFd>();
                    // All of them owned, so that any beyond what the
                    // message uses are closed, not leaked.
                    for i in 0..count {
                        fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                    }
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        if msg.msg_flags & libc::MSG_TRUNC != 0 {
            bail!("a keeper message was cut (longer than {} bytes)", buf.len());
        }
        return Ok((n as usize, fds));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process in a mount namespace of its own (as every zone process
    /// is) may not deposit; rauhad's own namespaces may. Needs root, as
    /// the unit tests run in CI.
    #[test]
    fn only_host_processes_may_deposit() {
        assert_eq!(host_peer(std::process::id() as i32), Ok(()));
        let mut child = std::process::Command::new("unshare")
            .args(["--mount", "sleep", "30"])
            .spawn()
            .expect("unshare (util-linux) runs");
        let pid = child.id() as i32;
        let own_ns = |p: i32| std::fs::read_link(format!("/proc/{p}/ns/mnt")).ok();
        for _ in 0..100 {
            if own_ns(pid) != own_ns(std::process::id() as i32) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let r = host_peer(pid);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(r, Err("it is not in rauhad's mnt namespace".to_string()));
    }

    #[test]
    fn cgroup_procs_maps_each_hierarchy_to_its_mount() {
        let root = std::env::temp_dir().join(format!("rauha-keeper-cg-{}", std::process::id()));
        for d in [
            "memory/system.slice/containerd.service",
            "cpu,cpuacct/system.slice/containerd.service",
            "systemd/system.slice/containerd.service",
            "unified/system.slice/containerd.service",
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
            std::fs::write(root.join(d).join("cgroup.procs"), "").unwrap();
        }
        let text = "12:memory:/system.slice/containerd.service\n\
                    4:cpu,cpuacct:/system.slice/containerd.service\n\
                    1:name=systemd:/system.slice/containerd.service\n\
                    3:pids:/gone\n\
                    0::/system.slice/containerd.service\n";
        let got = cgroup_procs(text, &root);
        let want: Vec<PathBuf> = ["memory", "cpu,cpuacct", "systemd", "unified"]
            .iter()
            .map(|c| {
                root.join(c)
                    .join("system.slice/containerd.service/cgroup.procs")
            })
            .collect();
        assert_eq!(got, want);
        // A pure v2 host: the unified tree is the root itself.
        std::fs::write(root.join("cgroup.controllers"), "memory").unwrap();
        std::fs::create_dir_all(root.join("system.slice/containerd.service")).unwrap();
        std::fs::write(
            root.join("system.slice/containerd.service/cgroup.procs"),
            "",
        )
        .unwrap();
        let got = cgroup_procs("0::/system.slice/containerd.service\n", &root);
        assert_eq!(
            got,
            vec![root.join("system.slice/containerd.service/cgroup.procs")]
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}
