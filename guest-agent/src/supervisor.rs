//! The zone's PID 1 loop: one `poll(2)` over the listening socket, host
//! connections, the stdout/stderr pipes of every started process and a
//! signalfd for SIGCHLD/SIGTERM. Single-threaded by design: it forks, and
//! it reaps every process of the zone (`waitpid(-1)`), orphans included.
//!
//! A started process's exit is reported only after its pipes have been
//! drained, so a host always sees all output before the exit.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use rauha_guest_agent::frame;
use rauha_guest_agent::protocol::{
    ExitStatus, FdData, Message, Request, SpawnSpec, Stream, ZoneProcess, PROTOCOL_VERSION,
};

use crate::container_root;
use crate::hardening::Prepared;
use crate::kernel::{chdir_no_magic_links, check, open_dir_no_magic_links};

/// A host connection whose outgoing buffer grows past this is dropped.
const MAX_PENDING: usize = 64 << 20;
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

struct Client {
    stream: UnixStream,
    inbox: Vec<u8>,
    outbox: Vec<u8>,
    greeted: bool,
    closed: bool,
}

struct Tracked {
    id: String,
    stdout: Option<File>,
    stderr: Option<File>,
    /// Where `Request::Stdin` bytes go: the stdin pipe or the terminal.
    input: Option<Input>,
    /// The terminal's master side, for resizes.
    pty: Option<File>,
    /// When it runs out of time (ms since the epoch), and whether the
    /// agent killed it for that.
    deadline_ms: Option<u64>,
    out_of_time: bool,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A process's input, written without blocking the agent: what the
/// process does not take yet waits in `pending`.
struct Input {
    file: File,
    pending: Vec<u8>,
    /// Close once `pending` is written (the host closed stdin).
    closing: bool,
    /// A terminal is not closed on `CloseStdin`: its master is also the
    /// process's output.
    terminal: bool,
}

/// What the agent sent of one stream of a process and the host has not
/// acknowledged yet: sent again to a host that greets the agent after a
/// restart (the one it went to may have died before reading it).
#[derive(Default)]
struct Unacked {
    /// Where `data` starts in the stream.
    offset: u64,
    data: Vec<u8>,
}

impl Unacked {
    fn end(&self) -> u64 {
        self.offset + self.data.len() as u64
    }
}

/// Past this much unacknowledged output of one stream, its pipe is not read
/// until the host catches up (the process waits on a full pipe).
const MAX_UNACKED: usize = 8 << 20;

fn stream_index(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

struct Supervisor {
    listener: UnixListener,
    signals: OwnedFd,
    clients: Vec<Client>,
    /// Started processes by pid.
    tracked: HashMap<i32, Tracked>,
    /// Exits not yet forgotten by the host, by host id.
    exited: Vec<(String, ExitStatus)>,
    /// Processes that ended while no host was connected: their output is
    /// still in their pipes, read (and their exit reported) once a host
    /// greets the agent again, so that nothing of it is lost.
    held: Vec<(Tracked, ExitStatus)>,
    /// Output sent and not acknowledged, by host id, stdout then stderr.
    unacked: HashMap<String, [Unacked; 2]>,
    hardening: Prepared,
    /// The hardening as the host gave it: processes in a container root
    /// get it with its paths moved under that root.
    raw: rauha_guest_agent::config::Hardening,
    /// Container roots with a PID namespace of their own: the pid of the
    /// process that made it (whose children are there), by root name.
    pid_namespaces: HashMap<String, i32>,
}

pub fn run(
    listener: UnixListener,
    hardening: Prepared,
    raw: rauha_guest_agent::config::Hardening,
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    if !zone_pid_1() {
        // In the host's PID namespace (a privileged pod's hostPID): the
        // zone's orphans come to the agent, as to a PID 1, and stay its
        // descendants (what `signal_zone` reaches).
        // SAFETY: prctl with plain integers.
        check(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) })?;
    }
    let signals = signal_fd()?;
    let mut s = Supervisor {
        listener,
        signals,
        clients: Vec::new(),
        tracked: HashMap::new(),
        exited: Vec::new(),
        held: Vec::new(),
        unacked: HashMap::new(),
        hardening,
        raw,
        pid_namespaces: HashMap::new(),
    };
    loop {
        s.turn()?;
    }
}

/// Blocks SIGCHLD, SIGTERM and SIGINT and returns a signalfd for them.
fn signal_fd() -> io::Result<OwnedFd> {
    // SAFETY: sigset operations on a local, then signalfd creation.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGCHLD, libc::SIGTERM, libc::SIGINT] {
            libc::sigaddset(&mut set, sig);
        }
        check(libc::sigprocmask(
            libc::SIG_BLOCK,
            &set,
            std::ptr::null_mut(),
        ))?;
        let fd = check(libc::signalfd(
            -1,
            &set,
            libc::SFD_CLOEXEC | libc::SFD_NONBLOCK,
        ))?;
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

#[derive(Clone, Copy)]
enum Source {
    Signals,
    Listener,
    Client(usize),
    Pipe(i32, Stream),
    Input(i32),
}

impl Supervisor {
    fn turn(&mut self) -> io::Result<()> {
        let mut fds = Vec::new();
        let mut sources = Vec::new();
        let mut watch = |fd: RawFd, events: libc::c_short, src: Source| {
            fds.push(libc::pollfd {
                fd,
                events,
                revents: 0,
            });
            sources.push(src);
        };
        watch(self.signals.as_raw_fd(), libc::POLLIN, Source::Signals);
        watch(self.listener.as_raw_fd(), libc::POLLIN, Source::Listener);
        for (i, c) in self.clients.iter().enumerate() {
            let mut ev = libc::POLLIN;
            if !c.outbox.is_empty() {
                ev |= libc::POLLOUT;
            }
            watch(c.stream.as_raw_fd(), ev, Source::Client(i));
        }
        // With no host to send output to, the pipes are not read: output
        // waits in them (a process that fills its pipe waits too) until
        // rauhad is back.
        let host = self.clients.iter().any(|c| c.greeted && !c.closed);
        for (pid, t) in self.tracked.iter().filter(|_| host) {
            // Nor while the host is behind acknowledging what it was sent.
            let behind = |stream: Stream| {
                self.unacked
                    .get(&t.id)
                    .is_some_and(|u| u[stream_index(stream)].data.len() >= MAX_UNACKED)
            };
            if let Some(f) = t.stdout.as_ref().filter(|_| !behind(Stream::Stdout)) {
                watch(
                    f.as_raw_fd(),
                    libc::POLLIN,
                    Source::Pipe(*pid, Stream::Stdout),
                );
            }
            if let Some(f) = t.stderr.as_ref().filter(|_| !behind(Stream::Stderr)) {
                watch(
                    f.as_raw_fd(),
                    libc::POLLIN,
                    Source::Pipe(*pid, Stream::Stderr),
                );
            }
            if let Some(i) = t.input.as_ref().filter(|i| !i.pending.is_empty()) {
                watch(i.file.as_raw_fd(), libc::POLLOUT, Source::Input(*pid));
            }
        }
        // With no host, the agent keeps the deadlines: it wakes for the
        // first.
        let wait = if host {
            -1
        } else {
            self.tracked
                .values()
                .filter(|t| !t.out_of_time)
                .filter_map(|t| t.deadline_ms)
                .min()
                .map_or(-1, |d| {
                    libc::c_int::try_from(d.saturating_sub(now_ms())).unwrap_or(libc::c_int::MAX)
                })
        };
        // SAFETY: fds is a valid array of pollfd of the given length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            };
        }
        for (pfd, src) in fds.iter().zip(sources) {
            if pfd.revents == 0 {
                continue;
            }
            match src {
                Source::Signals => self.on_signals()?,
                Source::Listener => self.accept(),
                Source::Client(i) => self.on_client(i, pfd.revents),
                Source::Pipe(pid, stream) => self.on_pipe(pid, stream, false),
                Source::Input(pid) => self.write_input(pid, Vec::new()),
            }
        }
        self.clients.retain(|c| !c.closed);
        if !self.clients.iter().any(|c| c.greeted) {
            self.enforce_deadlines();
        }
        Ok(())
    }

    /// While no host is connected: a process past its deadline ends the
    /// way the host would end it, with every process of the zone killed.
    /// Its exit says so (`deadline`), for the host's result.
    fn enforce_deadlines(&mut self) {
        let now = now_ms();
        let mut expired = false;
        for t in self.tracked.values_mut() {
            if !t.out_of_time && t.deadline_ms.is_some_and(|d| d <= now) {
                t.out_of_time = true;
                expired = true;
            }
        }
        if expired {
            signal_zone(libc::SIGKILL);
        }
    }

    fn on_signals(&mut self) -> io::Result<()> {
        // SAFETY: signalfd_siginfo is plain data.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        loop {
            // SAFETY: reading into a buffer of exactly `size` bytes.
            let r = unsafe {
                libc::read(
                    self.signals.as_raw_fd(),
                    (&mut info as *mut libc::signalfd_siginfo).cast(),
                    size,
                )
            };
            if r != size as isize {
                break;
            }
            // Only the host may stop the zone: a signal from outside the
            // zone's pid namespace (rauhad, the launcher) has no pid here
            // (`ssi_pid` 0). A process of the zone that signals its PID 1
            // is ignored, as the kernel ignores its SIGKILL: otherwise any
            // task could end its zone and lose every result in it.
            let stop =
                info.ssi_signo == libc::SIGTERM as u32 || info.ssi_signo == libc::SIGINT as u32;
            if stop && from_outside(info.ssi_pid) {
                signal_zone(libc::SIGKILL);
                std::process::exit(0);
            }
        }
        self.reap();
        Ok(())
    }

    /// Reaps every ended process; reports the ones the host started.
    fn reap(&mut self) {
        loop {
            let mut status = 0;
            // SAFETY: status points to a valid c_int.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            // Its PID namespace ended with it (with the child it made,
            // that namespace's PID 1).
            self.pid_namespaces.retain(|_, holder| *holder != pid);
            if self.tracked.contains_key(&pid) {
                let host = self.clients.iter().any(|c| c.greeted && !c.closed);
                if host {
                    self.on_pipe(pid, Stream::Stdout, true);
                    self.on_pipe(pid, Stream::Stderr, true);
                }
                let Some(t) = self.tracked.remove(&pid) else {
                    continue;
                };
                let exit = if libc::WIFEXITED(status) {
                    ExitStatus {
                        code: Some(libc::WEXITSTATUS(status)),
                        signal: None,
                        deadline: t.out_of_time,
                    }
                } else {
                    ExitStatus {
                        code: None,
                        signal: Some(libc::WTERMSIG(status)),
                        deadline: t.out_of_time,
                    }
                };
                if !host {
                    self.held.push((t, exit));
                    continue;
                }
                self.exited.push((t.id.clone(), exit));
                self.broadcast(&Message::Exited {
                    id: t.id,
                    status: exit,
                });
            }
        }
    }

    /// A host is connected again: the output of processes that ended while
    /// none was goes to it, then their exits.
    fn release_held(&mut self) {
        for (mut t, exit) in std::mem::take(&mut self.held) {
            for (stream, file) in [
                (Stream::Stdout, t.stdout.take()),
                (Stream::Stderr, t.stderr.take()),
            ] {
                let Some(mut file) = file else { continue };
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match file.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => self.output(&t.id, stream, &buf[..n]),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
            }
            self.exited.push((t.id.clone(), exit));
            self.broadcast(&Message::Exited {
                id: t.id,
                status: exit,
            });
        }
    }

    /// Sends a chunk of a process's output to every host, and keeps it
    /// until acknowledged.
    fn output(&mut self, id: &str, stream: Stream, data: &[u8]) {
        let kept = &mut self.unacked.entry(id.to_string()).or_default()[stream_index(stream)];
        let offset = kept.end();
        kept.data.extend_from_slice(data);
        self.broadcast(&Message::Output {
            id: id.to_string(),
            stream,
            offset,
            data: data.to_vec(),
        });
    }

    /// Reads what a pipe holds; with `drain`, until it is empty, then closes it.
    fn on_pipe(&mut self, pid: i32, stream: Stream, drain: bool) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let Some(t) = self.tracked.get_mut(&pid) else {
                return;
            };
            let slot = match stream {
                Stream::Stdout => &mut t.stdout,
                Stream::Stderr => &mut t.stderr,
            };
            let Some(file) = slot.as_mut() else { return };
            match file.read(&mut buf) {
                Ok(0) => {
                    *slot = None;
                    return;
                }
                Ok(n) => {
                    let id = t.id.clone();
                    self.output(&id, stream, &buf[..n]);
                    if !drain {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A terminal's master reads EIO once no process holds the
                // other side: its end of output.
                Err(e) if drain || e.raw_os_error() == Some(libc::EIO) => {
                    *slot = None;
                    return;
                }
                Err(_) => return,
            }
        }
    }

    /// Appends `data` to a process's input and writes what the process
    /// takes now; closes the input when asked to and all is written.
    fn write_input(&mut self, pid: i32, data: Vec<u8>) {
        let Some(t) = self.tracked.get_mut(&pid) else {
            return;
        };
        let Some(input) = t.input.as_mut() else {
            return;
        };
        input.pending.extend_from_slice(&data);
        while !input.pending.is_empty() {
            match input.file.write(&input.pending) {
                Ok(n) => {
                    input.pending.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    // The process closed its stdin: drop what it will not read.
                    input.pending.clear();
                    if !input.terminal {
                        t.input = None;
                    }
                    return;
                }
            }
        }
        if input.closing && !input.terminal {
            t.input = None;
        }
    }

    fn tracked_pid(&self, id: &str) -> Option<i32> {
        self.tracked
            .iter()
            .find(|(_, t)| t.id == id)
            .map(|(pid, _)| *pid)
    }

    fn accept(&mut self) {
        while let Ok((stream, _)) = self.listener.accept() {
            if stream.set_nonblocking(true).is_ok() {
                self.clients.push(Client {
                    stream,
                    inbox: Vec::new(),
                    outbox: Vec::new(),
                    greeted: false,
                    closed: false,
                });
            }
        }
    }

    fn on_client(&mut self, i: usize, revents: libc::c_short) {
        if revents & libc::POLLOUT != 0 {
            flush(&mut self.clients[i]);
        }
        if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            let mut buf = [0u8; 64 * 1024];
            loop {
                match self.clients[i].stream.read(&mut buf) {
                    Ok(0) => {
                        self.clients[i].closed = true;
                        break;
                    }
                    Ok(n) => self.clients[i].inbox.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        self.clients[i].closed = true;
                        break;
                    }
                }
            }
            loop {
                match frame::decode_from::<Request>(&mut self.clients[i].inbox) {
                    Ok(Some(req)) => self.handle(i, req),
                    Ok(None) => break,
                    Err(e) => {
                        self.send(
                            i,
                            &Message::Error {
                                message: format!("closing connection: {e}"),
                            },
                        );
                        flush(&mut self.clients[i]);
                        self.clients[i].closed = true;
                        break;
                    }
                }
            }
        }
    }

    fn handle(&mut self, i: usize, req: Request) {
        match req {
            Request::Hello { version } => {
                if version != PROTOCOL_VERSION {
                    self.send(i, &Message::Error { message: format!("protocol version {version} is not {PROTOCOL_VERSION}; use matching rauhad and agent builds") });
                    return;
                }
                self.clients[i].greeted = true;
                // Held processes are running still, as far as the host is
                // told: their output and exit follow the greeting. So are
                // ended ones with output the host has not acknowledged: it
                // is sent again, then their exit.
                let unacked = |id: &str| {
                    self.unacked
                        .get(id)
                        .is_some_and(|u| u.iter().any(|s| !s.data.is_empty()))
                };
                let (exits_after, exited): (Vec<_>, Vec<_>) =
                    self.exited.iter().cloned().partition(|(id, _)| unacked(id));
                let running = self
                    .tracked
                    .values()
                    .map(|t| t.id.clone())
                    .chain(self.held.iter().map(|(t, _)| t.id.clone()))
                    .chain(exits_after.iter().map(|(id, _)| id.clone()))
                    .collect();
                self.send(
                    i,
                    &Message::Hello {
                        version: PROTOCOL_VERSION,
                        running,
                        exited,
                    },
                );
                self.send_unacked(i);
                for (id, status) in exits_after {
                    self.send(i, &Message::Exited { id, status });
                }
                self.release_held();
            }
            Request::Spawn(spec) => {
                let id = spec.id.clone();
                let reply = match self.spawn(spec) {
                    Ok(pid) => Message::Spawned {
                        id,
                        pid: pid as u32,
                    },
                    Err(e) => Message::SpawnFailed {
                        id,
                        error: e.to_string(),
                    },
                };
                self.send(i, &reply);
            }
            Request::Signal { id, signal } => {
                if let Some((pid, _)) = self.tracked.iter().find(|(_, t)| t.id == id) {
                    // SAFETY: signals the process group the child leads.
                    unsafe {
                        if libc::kill(-*pid, signal) < 0 {
                            libc::kill(*pid, signal);
                        }
                    }
                }
            }
            Request::SignalAll { signal } => signal_zone(signal),
            Request::SignalRoot { root, signal } => {
                if let Err(e) = container_root::signal_all(&root, signal) {
                    self.send(
                        i,
                        &Message::Error {
                            message: format!("cannot signal container root {root}: {e}"),
                        },
                    );
                }
            }
            Request::List { request } => {
                let list = self.list();
                self.send(i, &Message::Processes { request, list });
            }
            Request::Forget { id } => {
                self.exited.retain(|(e, _)| *e != id);
                self.unacked.remove(&id);
            }
            Request::Ack { id, stream, upto } => {
                if let Some(u) = self.unacked.get_mut(&id) {
                    let kept = &mut u[stream_index(stream)];
                    let n = upto.saturating_sub(kept.offset).min(kept.data.len() as u64);
                    kept.data.drain(..n as usize);
                    kept.offset += n;
                }
            }
            Request::Stdin { id, data } => {
                if let Some(pid) = self.tracked_pid(&id) {
                    self.write_input(pid, data);
                }
            }
            Request::CloseStdin { id } => {
                if let Some(pid) = self.tracked_pid(&id) {
                    if let Some(input) = self.tracked.get_mut(&pid).and_then(|t| t.input.as_mut()) {
                        input.closing = true;
                    }
                    self.write_input(pid, Vec::new());
                }
            }
            Request::Resize { id, rows, cols } => {
                if let Some(pty) = self
                    .tracked_pid(&id)
                    .and_then(|pid| self.tracked[&pid].pty.as_ref())
                {
                    let size = libc::winsize {
                        ws_row: rows,
                        ws_col: cols,
                        ws_xpixel: 0,
                        ws_ypixel: 0,
                    };
                    // SAFETY: TIOCSWINSZ reads a winsize we own.
                    unsafe { libc::ioctl(pty.as_raw_fd(), libc::TIOCSWINSZ, &size) };
                }
            }
            Request::UpdateHardening(h) => match Prepared::new(&h) {
                Ok(p) => {
                    self.hardening = p.with_cgroups(self.hardening.cgroups());
                    self.raw = h;
                }
                Err(e) => self.send(
                    i,
                    &Message::Error {
                        message: format!("hardening not updated: {e}"),
                    },
                ),
            },
        }
    }

    /// Sends client `i` (a host that just greeted the agent) what no host
    /// acknowledged, each chunk at its offset.
    fn send_unacked(&mut self, i: usize) {
        let mut chunks = Vec::new();
        for (id, streams) in &self.unacked {
            for (stream, kept) in [Stream::Stdout, Stream::Stderr].into_iter().zip(streams) {
                for (k, data) in kept.data.chunks(64 * 1024).enumerate() {
                    chunks.push(Message::Output {
                        id: id.clone(),
                        stream,
                        offset: kept.offset + (k * 64 * 1024) as u64,
                        data: data.to_vec(),
                    });
                }
            }
        }
        for msg in chunks {
            self.send(i, &msg);
        }
    }

    fn spawn(&mut self, spec: SpawnSpec) -> io::Result<i32> {
        let Some(program) = spec.args.first() else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty command"));
        };
        // A container root: the program, cwd and hardening are its own.
        let root = spec.root.as_deref().map(container_root::path).transpose()?;
        // Paths are checked as the process will see them: inside a
        // container root, symlinks resolve within that root.
        let root_dir = root.as_deref().map(std::fs::File::open).transpose()?;
        let stat = |p: &str| -> Option<std::fs::Metadata> {
            match &root_dir {
                Some(dir) => container_root::stat_in(dir, p),
                None => std::fs::metadata(p).ok(),
            }
        };
        let path_var = spec
            .env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH);
        let resolved = resolve(program, path_var, &stat).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{program:?} is not found in the zone (PATH={path_var})"),
            )
        })?;
        let cwd = if spec.cwd.is_empty() {
            "/"
        } else {
            spec.cwd.as_str()
        };
        match stat(cwd) {
            Some(m) if m.is_dir() => {}
            Some(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    format!("working directory {cwd:?} is a file in the zone, not a directory"),
                ))
            }
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("working directory {cwd:?} does not exist in the zone"),
                ))
            }
        }
        let cwd_c = std::ffi::CString::new(cwd)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "cwd has a NUL byte"))?;
        if root.is_none() {
            if let Err(e) = open_dir_no_magic_links(&cwd_c) {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    if e.raw_os_error() == Some(libc::ELOOP) {
                        format!("working directory {cwd:?} goes through a /proc magic link (a descriptor's target); give a plain path in the zone")
                    } else {
                        format!("working directory {cwd:?}: {e}")
                    },
                ));
            }
        }
        let mut cmd = Command::new(resolved);
        cmd.arg0(program).args(&spec.args[1..]).env_clear();
        for kv in &spec.env {
            if let Some((k, v)) = kv.split_once('=') {
                cmd.env(k, v);
            }
        }
        // The child changes directory itself (after it pivots into a
        // container root), never through a magic link.
        let enter = root
            .as_ref()
            .map(|r| container_root::EnterRoot::new(r, cwd))
            .transpose()?;
        let pty = if spec.terminal {
            Some(open_pty()?)
        } else {
            None
        };
        match &pty {
            Some((_, slave)) => {
                cmd.stdin(Stdio::from(slave.try_clone()?))
                    .stdout(Stdio::from(slave.try_clone()?))
                    .stderr(Stdio::from(slave.try_clone()?));
            }
            None => {
                cmd.stdin(if spec.stdin {
                    Stdio::piped()
                } else {
                    Stdio::null()
                })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            }
        }
        let pid_ns = match (&spec.root, &enter) {
            (Some(name), Some(e)) if e.own_pid_namespace => {
                Some(match self.pid_namespaces.get(name) {
                    Some(holder) => container_root::PidNamespace::Join(
                        File::open(format!("/proc/{holder}/ns/pid_for_children")).map_err(|e| {
                            io::Error::new(
                                e.kind(),
                                format!("the PID namespace of container root {name:?}: {e}"),
                            )
                        })?,
                    ),
                    None => container_root::PidNamespace::New,
                })
            }
            _ => None,
        };
        let new_pid_ns = matches!(pid_ns, Some(container_root::PidNamespace::New));
        let hardening = match &root {
            Some(r) => Prepared::new_in(&self.raw, Some(r))?
                .with_cgroups(self.hardening.cgroups())
                .with_userns(self.hardening.userns())
                .in_root_cgroup(spec.root.as_deref().unwrap_or_default())?,
            None => self.hardening.clone(),
        }
        .with_security(spec.security.as_deref())?;
        // The spec's resource limits and OOM score, set before any
        // capability is dropped (raising a limit or lowering the score
        // needs CAP_SYS_RESOURCE); the score's text made before the fork.
        let rlimits: Vec<(u32, u64, u64)> = spec
            .security
            .as_ref()
            .map(|s| s.rlimits.clone())
            .unwrap_or_default();
        let oom_score_adj = spec
            .security
            .as_ref()
            .and_then(|s| s.oom_score_adj)
            .map(|a| a.to_string());
        let user = spec.user.clone();
        let tty = spec.terminal;
        let pipes = filled_pipes(&spec.fds)?;
        let moves: Vec<(RawFd, RawFd)> = pipes.iter().map(|(r, fd)| (r.as_raw_fd(), *fd)).collect();
        // SAFETY: the agent is single-threaded, and `join_cgroups`,
        // `enter`, the chdir, `apply`, `cloexec_from` and `dup2` only make
        // system calls. The sources sit above every target (see
        // `filled_pipes`), so no move overwrites another's source.
        unsafe {
            cmd.pre_exec(move || {
                hardening.join_cgroups()?;
                for &(resource, soft, hard) in &rlimits {
                    let limit = libc::rlimit {
                        rlim_cur: soft,
                        rlim_max: hard,
                    };
                    check(libc::setrlimit(resource as _, &limit))?;
                }
                if let Some(adj) = &oom_score_adj {
                    let fd = check(libc::open(
                        c"/proc/self/oom_score_adj".as_ptr(),
                        libc::O_WRONLY | libc::O_CLOEXEC,
                    ))?;
                    let wrote = libc::write(fd, adj.as_ptr().cast(), adj.len());
                    let error = io::Error::last_os_error();
                    libc::close(fd);
                    if wrote < 0 {
                        return Err(error);
                    }
                }
                if let Some(ns) = &pid_ns {
                    container_root::enter_pid_namespace(ns)?;
                }
                match &enter {
                    Some(e) => e.enter()?,
                    None => chdir_no_magic_links(&cwd_c)?,
                }
                hardening.enter_userns(user.as_ref())?;
                // The process gets stdin, stdout and stderr (or the
                // terminal), and the pipes of its `fd:N` secrets: nothing
                // else of the agent's crosses the exec. Marked before
                // seccomp (which may deny close_range) and before the
                // moves (dup2 clears the mark on its target).
                rauha_fd::cloexec_from(3)?;
                hardening.apply(user.as_ref(), tty)?;
                for &(from, to) in &moves {
                    check(libc::dup2(from, to))?;
                }
                Ok(())
            })
        };
        let mut child = cmd
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start {program:?}: {e}")))?;
        let pid = child.id() as i32;
        if let (true, Some(name)) = (new_pid_ns, &spec.root) {
            self.pid_namespaces.insert(name.clone(), pid);
        }
        // Only the child holds the terminal's other side now.
        drop(cmd);
        let (stdout, stderr, input, pty) = match pty {
            Some((master, _slave)) => {
                let master = nonblocking(master);
                let input = Input {
                    file: master.try_clone()?,
                    pending: Vec::new(),
                    closing: false,
                    terminal: true,
                };
                (Some(master.try_clone()?), None, Some(input), Some(master))
            }
            None => (
                child.stdout.take().map(nonblocking),
                child.stderr.take().map(nonblocking),
                child.stdin.take().map(|s| Input {
                    file: nonblocking(s),
                    pending: Vec::new(),
                    closing: false,
                    terminal: false,
                }),
                None,
            ),
        };
        self.tracked.insert(
            pid,
            Tracked {
                id: spec.id,
                stdout,
                stderr,
                input,
                pty,
                deadline_ms: spec.deadline_ms,
                out_of_time: false,
            },
        );
        Ok(pid)
    }

    fn list(&self) -> Vec<ZoneProcess> {
        let mut out = Vec::new();
        for pid in crate::kernel::proc_pids() {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let ppid = parent_in(&stat).unwrap_or(0);
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let mut command = cmdline
                .split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect::<Vec<_>>()
                .join(" ");
            if command.is_empty() {
                command = stat
                    .split_once('(')
                    .and_then(|(_, r)| r.rsplit_once(')'))
                    .map(|(c, _)| format!("[{c}]"))
                    .unwrap_or_default();
            }
            let id = self.tracked.get(&(pid as i32)).map(|t| t.id.clone());
            out.push(ZoneProcess {
                pid,
                ppid,
                command,
                id,
            });
        }
        out.sort_by_key(|p| p.pid);
        out
    }

    fn send(&mut self, i: usize, msg: &Message) {
        if let Ok(bytes) = frame::encode(msg) {
            let c = &mut self.clients[i];
            c.outbox.extend_from_slice(&bytes);
            flush(c);
        }
    }

    fn broadcast(&mut self, msg: &Message) {
        let Ok(bytes) = frame::encode(msg) else {
            return;
        };
        for c in self.clients.iter_mut().filter(|c| c.greeted && !c.closed) {
            if c.outbox.len() + bytes.len() > MAX_PENDING {
                c.closed = true;
                continue;
            }
            c.outbox.extend_from_slice(&bytes);
            flush(c);
        }
    }
}

fn flush(c: &mut Client) {
    while !c.outbox.is_empty() {
        match c.stream.write(&c.outbox) {
            Ok(0) => {
                c.closed = true;
                return;
            }
            Ok(n) => {
                c.outbox.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                c.closed = true;
                return;
            }
        }
    }
}

fn nonblocking<T: Into<OwnedFd>>(pipe: T) -> File {
    let fd: OwnedFd = pipe.into();
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    File::from(fd)
}

/// A new pseudo-terminal from the zone's /dev/pts: (master, slave).
fn open_pty() -> io::Result<(OwnedFd, OwnedFd)> {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty fills two fds we then own; the other arguments may be null.
    check(unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    })
    .map_err(|e| io::Error::new(e.kind(), format!("cannot open a terminal in the zone: {e}")))?;
    // SAFETY: both were just created and are owned here only.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    for fd in [&master, &slave] {
        // SAFETY: fcntl on an fd we own.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok((master, slave))
}

/// Finds a program the way a shell does: as given when it has a '/',
/// else in each directory of PATH.
/// `stat` looks a path of the process's root up (following links);
/// returns the path as the process will see it.
fn resolve(
    program: &str,
    path_var: &str,
    stat: &dyn Fn(&str) -> Option<std::fs::Metadata>,
) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let executable =
        |p: &str| stat(p).is_some_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if program.contains('/') {
        return executable(program).then(|| program.to_string());
    }
    path_var
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| {
            std::path::Path::new(d)
                .join(program)
                .to_string_lossy()
                .into_owned()
        })
        .find(|p| executable(p))
}

/// The lowest fd a pipe's read end is moved to before the fork: above any
/// fd number a process may ask for (3..=255), so moving them into place in
/// the child never overwrites another pipe.
const PIPE_FD_FLOOR: RawFd = 256;

/// One pipe per entry, holding its data and closed for writing; returns
/// the read ends (close-on-exec) with the fd number each must get.
fn filled_pipes(fds: &[FdData]) -> io::Result<Vec<(OwnedFd, RawFd)>> {
    let mut out = Vec::with_capacity(fds.len());
    for f in fds {
        if !(3..PIPE_FD_FLOOR).contains(&f.fd) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("fd {} is outside 3..=255", f.fd),
            ));
        }
        let mut ends = [0; 2];
        // SAFETY: pipe2 fills two fds we then own.
        check(unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) })?;
        // SAFETY: both fds were just created and are owned here only.
        let (read, write) =
            unsafe { (OwnedFd::from_raw_fd(ends[0]), OwnedFd::from_raw_fd(ends[1])) };
        // Non-blocking: data over the pipe's capacity (64 KiB, the most a
        // secret holds) is an error, never a hang of the agent.
        File::from(write).write_all(&f.data)?;
        // SAFETY: F_DUPFD_CLOEXEC returns a new fd we own.
        let high =
            check(unsafe { libc::fcntl(read.as_raw_fd(), libc::F_DUPFD_CLOEXEC, PIPE_FD_FLOOR) })?;
        // SAFETY: `high` was just created.
        out.push((unsafe { OwnedFd::from_raw_fd(high) }, f.fd));
    }
    Ok(out)
}

/// Whether the agent is the zone's PID 1 (its own PID namespace), not a
/// process of the host's (a privileged pod's hostPID).
fn zone_pid_1() -> bool {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() == 1 }
}

/// Signals every other process of the zone: from the zone's PID 1,
/// kill(-1) is exactly that and nothing outside it. In the host's PID
/// namespace it would be every process of the host: there, the agent's
/// descendants (its subreaping keeps the zone's orphans among them), a
/// few rounds over, for what forked during a round.
fn signal_zone(signal: i32) {
    if zone_pid_1() {
        // SAFETY: from the zone's PID 1, -1 is every other process of the
        // zone and nothing outside it.
        unsafe { libc::kill(-1, signal) };
        return;
    }
    let rounds = if signal == libc::SIGKILL { 3 } else { 1 };
    for _ in 0..rounds {
        let all = descendants(std::process::id());
        if all.is_empty() {
            break;
        }
        for pid in all {
            // SAFETY: kill with plain integers, a descendant of the agent.
            unsafe { libc::kill(pid as libc::pid_t, signal) };
        }
    }
}

/// Whether a signal's sender (`ssi_pid`) is outside the zone: no pid in
/// the zone's PID namespace, or, in the host's, not the agent's
/// descendant.
fn from_outside(sender: u32) -> bool {
    if zone_pid_1() {
        return sender == 0;
    }
    let me = std::process::id();
    let mut pid = sender;
    // The chain of parents, up to the host's init.
    for _ in 0..4096 {
        if pid == me {
            return false;
        }
        match parent_of(pid) {
            Some(p) if p != 0 && p != pid => pid = p,
            _ => return true,
        }
    }
    true
}

/// A process's parent, from `/proc/PID/stat`.
fn parent_of(pid: u32) -> Option<u32> {
    parent_in(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The parent's pid in a `/proc/PID/stat` line (after the command's `)`).
fn parent_in(stat: &str) -> Option<u32> {
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Every process below `of` in the process tree.
fn descendants(of: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for pid in crate::kernel::proc_pids() {
        if let Some(parent) = parent_of(pid) {
            children.entry(parent).or_default().push(pid);
        }
    }
    let mut out = Vec::new();
    let mut next = vec![of];
    while let Some(p) = next.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or_default() {
            out.push(c);
            next.push(c);
        }
    }
    out
}
