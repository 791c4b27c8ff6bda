//! A process's stdio connected to host paths, as containerd hands them to
//! a shim: FIFOs it reads and writes, or log files (`file://`).
//!
//! Output goes from the agent's `Output` messages to the paths in order,
//! without loss (an unbounded channel, not the lossy broadcast of `exec`);
//! the paths are closed once the process ended and all of it is written,
//! which is the end of output a reader waits for. Stdin is read from its
//! path once a writer opened it, until that writer closes it.

use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rauha_guest_agent::protocol::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;

use super::{LiveProcess, OutputChunk};
use crate::agent_link::AgentLink;
use crate::error::DaemonError;

/// Output waiting for a stdio path that is not being read, at most.
pub const MAX_PENDING: usize = 16 << 20;

/// Host paths for a process's stdio; `None` leaves that stream alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostStdio {
    pub stdin: Option<PathBuf>,
    pub stdout: Option<PathBuf>,
    pub stderr: Option<PathBuf>,
    /// Stdin kept open and fed over the API (Interact), not from a path.
    pub api_stdin: bool,
}

impl HostStdio {
    /// From the wire: empty strings are absent; `file://` names a log file.
    /// Each must be a FIFO or a regular file (or a new file in a directory
    /// that exists) below one of `roots` (containerd's state dir, where its
    /// FIFOs are, and rauhad's own): rauhad opens nothing else of the host
    /// for a client, and makes no directory for it.
    pub fn parse(
        roots: &[PathBuf],
        stdin: &str,
        stdout: &str,
        stderr: &str,
    ) -> Result<HostStdio, DaemonError> {
        let one = |field: &str, value: &str| -> Result<Option<PathBuf>, DaemonError> {
            if value.is_empty() {
                return Ok(None);
            }
            let field = format!("stdio.{field}");
            let quoted = rauha_spec::message::quote(value);
            let bad = |why: String| {
                Err(DaemonError::invalid(
                    field.clone(),
                    format!("{quoted} {why}"),
                ))
            };
            if value.contains("://") && !value.starts_with("file://") {
                return bad("is not a path or a file:// URI; only those are supported".into());
            }
            let path = Path::new(value.strip_prefix("file://").unwrap_or(value));
            if !path.is_absolute() {
                return bad("is not an absolute path".into());
            }
            if value.len() > crate::validate::MAX_PATH_BYTES || value.chars().any(char::is_control)
            {
                return bad("is not a plain path of at most 4095 bytes".into());
            }
            if path
                .components()
                .any(|c| c == std::path::Component::ParentDir)
            {
                return bad("has a '..' component; give the plain path".into());
            }
            let Some(dir) = path.parent().filter(|p| p.is_dir()) else {
                return bad("is in a directory that does not exist; create it first (rauhad makes no directory for it)".into());
            };
            // The directory as the kernel resolves it, so that a symlink
            // cannot lead out of the roots.
            let real = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
            if !roots
                .iter()
                .any(|r| real.starts_with(r.canonicalize().unwrap_or_else(|_| r.clone())))
            {
                let shown: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
                return bad(format!(
                    "is outside the directories rauhad opens stdio in ({}); put it there, or start rauhad with --stdio-root DIR",
                    shown.join(", ")
                ));
            }
            match std::fs::symlink_metadata(path) {
                Ok(m) if m.file_type().is_fifo() || m.file_type().is_file() => {}
                Ok(m) if m.is_dir() => return bad("is a directory; give a FIFO or a file".into()),
                Ok(_) => return bad("is not a FIFO or a regular file (a link, device or socket); give a FIFO or a file".into()),
                Err(_) if field == "stdio.stdin" => {
                    return bad("does not exist; give an existing FIFO or file".into())
                }
                Err(_) => {}
            }
            Ok(Some(path.to_path_buf()))
        };
        Ok(HostStdio {
            stdin: one("stdin", stdin)?,
            stdout: one("stdout", stdout)?,
            stderr: one("stderr", stderr)?,
            api_stdin: false,
        })
    }
}

/// Where output is written: a FIFO (opened read-write, so opening never
/// waits for a reader and a reader that comes and goes loses nothing
/// written before it left) or a regular file, appended to.
enum Sink {
    Pipe(pipe::Sender),
    File(tokio::fs::File),
}

impl Sink {
    fn open(path: &Path) -> io::Result<Sink> {
        let is_fifo = std::fs::metadata(path)
            .map(|m| m.file_type().is_fifo())
            .unwrap_or(false);
        if is_fifo {
            let tx = pipe::OpenOptions::new()
                .read_write(true)
                .open_sender(path)?;
            return Ok(Sink::Pipe(tx));
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        Ok(Sink::File(tokio::fs::File::from_std(f)))
    }

    async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Sink::Pipe(p) => p.write_all(data).await,
            Sink::File(f) => f.write_all(data).await,
        }
    }

    async fn finish(self) {
        if let Sink::File(mut f) = self {
            let _ = f.flush().await;
        }
    }
}

/// Opens the output paths (so a bad one fails the start) and returns the
/// channel the agent's output for this process goes into.
pub fn open_outputs(
    stdio: &HostStdio,
    process: &Arc<LiveProcess>,
) -> Result<mpsc::UnboundedSender<OutputChunk>, DaemonError> {
    let open = |field: &str, p: &Option<PathBuf>| -> Result<Option<Sink>, DaemonError> {
        p.as_deref()
            .map(|path| {
                Sink::open(path).map_err(|e| {
                    DaemonError::invalid(
                        format!("stdio.{field}"),
                        format!("cannot open {}: {e}", path.display()),
                    )
                })
            })
            .transpose()
    };
    let mut stdout = open("stdout", &stdio.stdout)?;
    let mut stderr = if stdio.stderr.is_some() && stdio.stderr == stdio.stdout {
        None
    } else {
        open("stderr", &stdio.stderr)?
    };
    let same = stdio.stderr.is_some() && stdio.stderr == stdio.stdout;
    let (tx, mut rx) = mpsc::unbounded_channel::<OutputChunk>();
    let done = process.relay_started();
    let pending = std::sync::Arc::clone(&process.sink_pending);
    tokio::spawn(async move {
        while let Some(chunk) = rx.recv().await {
            pending.fetch_sub(chunk.data.len(), std::sync::atomic::Ordering::Relaxed);
            let sink = match chunk.stream {
                Stream::Stderr if !same => stderr.as_mut(),
                _ => stdout.as_mut(),
            };
            if let Some(s) = sink {
                if let Err(e) = s.write_all(&chunk.data).await {
                    tracing::debug!(error = %e, "a process's output path stopped taking output");
                }
            }
        }
        for s in [stdout, stderr].into_iter().flatten() {
            s.finish().await;
        }
        done.send_replace(true);
    });
    Ok(tx)
}

/// Feeds the process's stdin from `path` once a writer opens it, and
/// closes the process's stdin when that writer closes it.
pub fn feed_stdin(path: PathBuf, process: Arc<LiveProcess>, link: Arc<AgentLink>) {
    let id = process.id.to_string();
    process.stdin_relay.store(true, Ordering::SeqCst);
    tokio::spawn(async move {
        // However the relay ends, a close of stdin goes straight to the
        // agent again.
        let _relay = RelayFlag(Arc::clone(&process));
        let open_path = path.clone();
        // Opening a FIFO for reading waits for a writer; on a thread of its
        // own, so that the wait costs no runtime worker.
        let mut opening = tokio::task::spawn_blocking(move || {
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(&open_path)
        });
        let file = tokio::select! {
            // An open that returned wins over a close asked at the same
            // time: what was written is read first.
            biased;
            r = &mut opening => r,
            _ = process.stdin_close.notified() => {
                // Closed while the open had not been seen to return: it may
                // have returned just now with bytes waiting (a writer's
                // bytes come before its close). Pass them on, then close.
                if let Some(Ok(file)) = release_open(&path, &mut opening).await {
                    for chunk in drain(file) {
                        if link.stdin(&id, chunk).await.is_err() {
                            return;
                        }
                    }
                }
                let _ = link.close_stdin(&id).await;
                return;
            }
            _ = process.wait() => {
                // Nobody ever wrote: the waiting open must not keep its
                // thread.
                if release_open(&path, &mut opening).await.is_none() {
                    tracing::warn!(path = %path.display(), "an open of stdin that no writer came for is still waiting");
                }
                return;
            }
        };
        let file = match file {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot open stdin");
                return;
            }
            Err(_) => return,
        };
        let is_fifo = file
            .metadata()
            .map(|m| m.file_type().is_fifo())
            .unwrap_or(false);
        let mut buf = vec![0u8; 32 * 1024];
        if is_fifo {
            let Ok(mut rx) = pipe::Receiver::from_file(file) else {
                return;
            };
            loop {
                tokio::select! {
                    biased;
                    r = rx.read(&mut buf) => match r {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if link.stdin(&id, buf[..n].to_vec()).await.is_err() {
                                return;
                            }
                        }
                    },
                    _ = process.wait() => return,
                    _ = process.stdin_close.notified() => {
                        // What the writer wrote before it asked for the
                        // close is in the FIFO: pass it on, then close.
                        // Read with the system call itself: tokio's
                        // readiness for the pipe may not have seen those
                        // bytes arrive yet.
                        for chunk in drain_fd(&rx) {
                            if link.stdin(&id, chunk).await.is_err() {
                                return;
                            }
                        }
                        break;
                    }
                }
            }
        } else {
            let mut f = tokio::fs::File::from_std(file);
            while let Ok(n) = f.read(&mut buf).await {
                if n == 0 || link.stdin(&id, buf[..n].to_vec()).await.is_err() {
                    break;
                }
            }
        }
        let _ = link.close_stdin(&id).await;
    });
}

/// What can be read from `file` now, without waiting.
fn drain(file: std::fs::File) -> Vec<Vec<u8>> {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on a descriptor this function owns.
    unsafe {
        let flags = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    drain_fd(&file)
}

/// What can be read now from a non-blocking descriptor, by `read(2)`
/// until it would block or reaches the end.
fn drain_fd(fd: &impl std::os::fd::AsRawFd) -> Vec<Vec<u8>> {
    let mut chunks = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        // SAFETY: read into a buffer we own, of its length.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        chunks.push(buf[..n as usize].to_vec());
    }
    chunks
}

/// Clears `LiveProcess::stdin_relay` when the relay ends.
struct RelayFlag(Arc<LiveProcess>);

impl Drop for RelayFlag {
    fn drop(&mut self) {
        self.0.stdin_relay.store(false, Ordering::SeqCst);
    }
}

/// How often (every 50 ms) an ended process's unopened stdin is released.
const RELEASE_TRIES: usize = 200;

/// Wakes `opening`, an open of FIFO `path` for reading that waits for a
/// writer, by opening it for writing, again until the open returned: it may
/// not have begun yet, and a writer that comes and goes before it does
/// wakes nothing. What the open returned, if it did.
async fn release_open<T>(path: &Path, opening: &mut tokio::task::JoinHandle<T>) -> Option<T> {
    for _ in 0..RELEASE_TRIES {
        release_reader(path);
        tokio::select! {
            r = &mut *opening => return r.ok(),
            _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
        }
    }
    None
}

/// Opens a FIFO for writing without blocking and closes it again, which
/// wakes an open for reading that waits for a writer.
fn release_reader(path: &Path) {
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The open of an ended process's stdin is released even when it
    /// begins after the process ended (one release then wakes nothing).
    #[tokio::test]
    async fn a_late_open_of_stdin_is_released_too() {
        let dir = std::env::temp_dir().join(format!("rauha-stdin-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("stdin");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo with a NUL-terminated path we own.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let path = fifo.clone();
        let mut opening = tokio::task::spawn_blocking(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            std::fs::OpenOptions::new().read(true).open(&path)
        });
        let released = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            release_open(&fifo, &mut opening),
        )
        .await;
        if !matches!(released, Ok(Some(_))) {
            // A writer held open, so that the open returns and the runtime
            // can shut down: the test fails instead of hanging.
            let _writer = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&fifo)
                .unwrap();
            let _ = opening.await;
        }
        assert!(
            matches!(released, Ok(Some(Ok(_)))),
            "the late open still waits"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn paths_and_file_uris_parse() {
        let dir = std::env::temp_dir();
        let roots = [dir.clone()];
        let out = dir.join(format!("rauha-stdio-{}", std::process::id()));
        let s = HostStdio::parse(
            &roots,
            "",
            &out.display().to_string(),
            &format!("file://{}/x", dir.display()),
        )
        .expect("valid");
        assert_eq!(s.stdin, None);
        assert_eq!(s.stdout.as_deref(), Some(out.as_path()));
        assert_eq!(s.stderr, Some(dir.join("x")));
        assert_eq!(
            HostStdio::parse(&roots, "", "", "").expect("empty"),
            HostStdio::default()
        );
    }

    #[test]
    fn other_schemes_and_relative_paths_are_refused() {
        let roots = [std::env::temp_dir()];
        let e = HostStdio::parse(&roots, "", "binary:///usr/bin/logger", "")
            .expect_err("binary")
            .to_string();
        assert!(e.contains("stdio.stdout") && e.contains("file://"), "{e}");
        let e = HostStdio::parse(&roots, "fifo", "", "")
            .expect_err("relative")
            .to_string();
        assert!(e.contains("not an absolute path"), "{e}");
    }

    #[test]
    fn no_directory_is_made_and_stdin_must_exist() {
        let roots = [PathBuf::from("/")];
        let e = HostStdio::parse(&roots, "", "/nonexistent/dir/x", "")
            .expect_err("no dir")
            .to_string();
        assert!(
            e.contains("stdio.stdout") && e.contains("create it first"),
            "{e}"
        );
        assert!(!Path::new("/nonexistent").exists());
        let e = HostStdio::parse(&roots, "/nonexistent-stdin", "", "")
            .expect_err("no stdin")
            .to_string();
        assert!(
            e.contains("stdio.stdin") && e.contains("does not exist"),
            "{e}"
        );
        let e = HostStdio::parse(&roots, "", "", "/tmp")
            .expect_err("a directory")
            .to_string();
        assert!(e.contains("is a directory"), "{e}");
    }

    #[test]
    fn only_fifos_and_files_below_the_roots_are_opened() {
        let roots = [PathBuf::from("/run/containerd"), std::env::temp_dir()];
        for (path, says) in [
            (
                "/etc/shadow",
                "is outside the directories rauhad opens stdio in",
            ),
            ("/dev/null", "is outside"),
            ("/run/containerd/../../etc/x", "has a '..' component"),
        ] {
            let e = HostStdio::parse(&roots, "", path, "")
                .expect_err(path)
                .to_string();
            assert!(
                e.starts_with("stdio.stdout: ") && e.contains(says),
                "{path}: {e}"
            );
        }
        // A symlink in a root to a device is not followed.
        let dir = std::env::temp_dir().join(format!("rauha-stdio-link-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let link = dir.join("out");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("/dev/null", &link).expect("symlink");
        let e = HostStdio::parse(&roots, "", &link.display().to_string(), "")
            .expect_err("a link")
            .to_string();
        assert!(e.contains("is not a FIFO or a regular file"), "{e}");
        // Nor does a directory symlink lead out of the roots.
        let out_link = dir.join("etc");
        let _ = std::fs::remove_file(&out_link);
        std::os::unix::fs::symlink("/etc", &out_link).expect("symlink");
        let e = HostStdio::parse(&roots, "", &out_link.join("x").display().to_string(), "")
            .expect_err("through a link")
            .to_string();
        assert!(e.contains("is outside"), "{e}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
