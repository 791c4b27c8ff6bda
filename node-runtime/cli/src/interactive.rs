//! Interactive processes (`exec -it`, `run -it`, `attach`): the local
//! terminal in raw mode while the process has it (restored on every way
//! out), keystrokes (Ctrl-C and Ctrl-D included: the zone's terminal makes
//! them SIGINT and end of input) and window sizes to the process, its
//! output back. Without a terminal (`-i`), stdin is streamed and its end
//! is the process's end of input.

use std::io::{self, IsTerminal, Read};

use anyhow::bail;
use rauha_api::v1;
use rauha_api::v1::exec_event::Event as ExecEvent;
use rauha_api::v1::interact_input::Input;
use rauha_api::v1::processes_client::ProcessesClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// The terminal's settings before raw mode, put back when dropped.
struct RawMode {
    saved: libc::termios,
}

impl RawMode {
    fn enter() -> anyhow::Result<RawMode> {
        // SAFETY: tcgetattr fills the struct we own.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        if unsafe { libc::tcgetattr(0, &mut saved) } != 0 {
            bail!(
                "cannot read the terminal's settings: {}",
                io::Error::last_os_error()
            );
        }
        let mut raw = saved;
        // SAFETY: cfmakeraw and tcsetattr on structs we own, fd 0.
        unsafe {
            libc::cfmakeraw(&mut raw);
            if libc::tcsetattr(0, libc::TCSANOW, &raw) != 0 {
                bail!(
                    "cannot put the terminal in raw mode: {}",
                    io::Error::last_os_error()
                );
            }
        }
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores settings read from the same fd.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &self.saved) };
    }
}

/// The local terminal's size, if stdout or stdin is one.
fn window_size() -> Option<v1::WindowSize> {
    for fd in [1, 0, 2] {
        // SAFETY: TIOCGWINSZ fills the struct we own.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_row > 0 {
            return Some(v1::WindowSize {
                rows: u32::from(ws.ws_row),
                cols: u32::from(ws.ws_col),
            });
        }
    }
    None
}

fn message(input: Input) -> v1::InteractInput {
    v1::InteractInput { input: Some(input) }
}

/// Runs an interactive session; the process's exit code.
///
/// `first` starts or attaches; `tty`: the local terminal goes raw and its
/// size follows; `stdin`: local input is sent (its end closes the
/// process's stdin unless `tty`).
pub async fn session(
    processes: &mut ProcessesClient<Channel>,
    first: Input,
    tty: bool,
    stdin: bool,
) -> anyhow::Result<u8> {
    if tty && !io::stdin().is_terminal() {
        bail!("-t needs a terminal on stdin; drop -t (keep -i to stream stdin), or run it from a terminal");
    }
    let (tx, rx) = mpsc::channel::<v1::InteractInput>(64);
    tx.send(message(first)).await?;
    if tty {
        if let Some(size) = window_size() {
            tx.send(message(Input::Resize(size))).await?;
        }
    }
    let mut stream = processes
        .interact(ReceiverStream::new(rx))
        .await?
        .into_inner();
    // Raw only once rauhad took the request: an error before it is a line
    // on a terminal as it was.
    let raw = if tty { Some(RawMode::enter()?) } else { None };
    if stdin {
        // A thread of its own, not the runtime's blocking pool: a read
        // that never returns must not hold the exit.
        let input = tx.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut stdin = io::stdin().lock();
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = input.blocking_send(message(Input::CloseStdin(true)));
                        return;
                    }
                    Ok(n) => {
                        if input
                            .blocking_send(message(Input::Stdin(buf[..n].to_vec())))
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
        });
    }
    if tty {
        let resize = tx.clone();
        tokio::spawn(async move {
            let Ok(mut winch) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
            else {
                return;
            };
            while winch.recv().await.is_some() {
                if let Some(size) = window_size() {
                    if resize.send(message(Input::Resize(size))).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
    let mut started: Option<String> = None;
    let result = loop {
        let event = match stream.message().await {
            Ok(Some(e)) => e,
            Ok(None) => {
                break Err(anyhow::anyhow!(
                    "rauhad ended the session before the process exited; see it with `rauha ps`"
                ))
            }
            Err(s) if started.is_none() => break Err(s.into()),
            Err(s) => {
                break Err(anyhow::anyhow!(
                    "lost rauhad while process {} ran ({}); it goes on in its zone",
                    started.as_deref().unwrap_or("?"),
                    crate::error_line::status_line(&s)
                ))
            }
        };
        match event.event {
            Some(ExecEvent::Started(p)) => started = Some(p.id),
            Some(ExecEvent::Output(o)) => {
                if let Err(e) = crate::process_cmd::write_output(&o) {
                    break Err(e.into());
                }
            }
            Some(ExecEvent::Exited(p)) => break crate::process_cmd::ended(&p),
            None => {}
        }
    };
    drop(raw);
    result
}
