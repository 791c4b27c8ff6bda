//! `rauha run`, `ps`, `exec`, `logs`, `stop`, `delete` and `wait`: the
//! Processes service.
//!
//! `exec` and `wait` exit with the process's own code (128 + signal when a
//! signal ended it), so that `rauha exec z -- make` can stand in for `make`.

use std::io::{self, Write};

use anyhow::bail;
use clap::Args;
use rauha_api::v1;
use rauha_api::v1::exec_event::Event as ExecEvent;

use crate::connect::Connection;
use crate::exit_code;
use crate::json_view::{print_json, LogsView, ProcessView};
use crate::process_args::ProcessArgs;
use crate::table::{short_id, Table};

#[derive(Debug, Args)]
#[command(
    after_help = "Forms:\n  rauha run --zone Z [--env K=V] [--cwd DIR] -- CMD [ARGS...]\n      start CMD in zone Z's own root, detached; prints the process id\n  rauha run --zone Z [-d] IMAGE [CMD [ARGS...]]\n      run CMD (or the image's Entrypoint/Cmd) in a container root of zone Z\n      made from IMAGE, as docker run does: in the foreground, exiting with\n      its code (-d: detached, prints the process id); the root is removed\n      when the process ends. Zone Z must hold container roots (made with\n      --bundle or --image).\n  Either form with -p 8080:80: the zone's port 80 answers on 127.0.0.1:8080\n  while the process runs (zone Z must be bridged)."
)]
pub struct RunArgs {
    /// The zone (name or id) to start the process in.
    #[arg(long)]
    zone: String,
    /// An environment variable for the process (repeatable); the process
    /// sees only these (and, with an image, the image's).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Working directory inside the zone [default: /, or the image's].
    #[arg(long, value_name = "DIR")]
    cwd: Option<String>,
    /// With an image: start detached and print the process id.
    #[arg(long, short = 'd')]
    detach: bool,
    /// Keep stdin open: streamed from here (in the foreground), or for
    /// `rauha attach` (with -d).
    #[arg(long, short = 'i')]
    interactive: bool,
    /// Give the process a terminal (in the foreground: this one, raw).
    #[arg(long, short = 't')]
    tty: bool,
    /// When to pull the image: always, missing (when not stored) or never.
    #[arg(long, value_enum, default_value = "missing")]
    pull: crate::image_cmd::PullPolicy,
    /// Publish a port of the zone on the host while the process runs:
    /// [HOST_IP:]HOST_PORT:ZONE_PORT[/tcp|udp] (repeatable). On 127.0.0.1
    /// unless a host address is given (docker's -p publishes on every
    /// address). The zone must be bridged.
    #[arg(long, short = 'p', value_name = "[HOST_IP:]HOST_PORT:ZONE_PORT")]
    publish: Vec<String>,
    /// Run in a container root of the zone made from this image.
    #[arg(value_name = "IMAGE")]
    image: Option<String>,
    /// The command in the image and its arguments [default: the image's
    /// Entrypoint and Cmd].
    #[arg(value_name = "CMD", allow_hyphen_values = true, requires = "image")]
    image_command: Vec<String>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
    #[arg(long)]
    json: bool,
}

impl RunArgs {
    /// The image, if the first word names one, and the process.
    fn split(&self) -> anyhow::Result<(Option<String>, ProcessArgs)> {
        let image = self.image.clone();
        let mut command = self.image_command.clone();
        command.extend(self.command.iter().cloned());
        if image.is_none() && command.is_empty() {
            bail!("give a command after `--` (rauha run --zone Z -- CMD), or an image (rauha run --zone Z IMAGE [CMD])");
        }
        Ok((
            image,
            ProcessArgs {
                env: self.env.clone(),
                cwd: self.cwd.clone(),
                command,
            },
        ))
    }
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Only this zone's processes (name or id).
    #[arg(long)]
    zone: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The zone (name or id) to run the command in.
    zone: String,
    /// Send stdin to the process (its end is the process's end of input).
    #[arg(long, short = 'i')]
    interactive: bool,
    /// Give the process a terminal: this one, in raw mode, its size
    /// followed (Ctrl-C and Ctrl-D go to the process).
    #[arg(long, short = 't')]
    tty: bool,
    #[command(flatten)]
    process: ProcessArgs,
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// A running process's id (`rauha run -d -it ...` prints it).
    id: String,
    /// Only show its output; send nothing to its stdin.
    #[arg(long)]
    no_stdin: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// A process id printed by `rauha run` or `rauha ps`.
    id: String,
    #[arg(long, conflicts_with = "follow")]
    json: bool,
    /// Keep printing output as it comes until the process ends, then exit
    /// with its code.
    #[arg(long, short = 'f')]
    follow: bool,
    /// Only the last N lines of each stream kept so far.
    #[arg(long, short = 'n', value_name = "N", conflicts_with = "json")]
    tail: Option<usize>,
    /// Begin each line with the time it came (UTC, ms).
    #[arg(long, conflicts_with = "json")]
    timestamps: bool,
}

/// The lines of `data[from..to]`, each after the time its first byte came
/// (the last mark at or before it; `-` for output kept without times).
fn stamped(data: &[u8], from: usize, to: usize, marks: &[v1::OutputMark]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut start = from;
    while start < to {
        let end = data[start..to]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(to, |i| start + i + 1);
        let time = marks
            .iter()
            .take_while(|m| m.offset <= start as u64)
            .last()
            .map_or(0, |m| m.time_ms);
        out.extend_from_slice(crate::timestamp::format_utc(time).as_bytes());
        out.push(b' ');
        out.extend_from_slice(&data[start..end]);
        start = end;
    }
    out
}

/// Where what may be printed of `data` ends: the whole of it once the
/// process ended, else (with timestamps) its last full line.
fn printable_end(data: &[u8], from: usize, whole_lines: bool) -> usize {
    if !whole_lines {
        return data.len();
    }
    data.get(from..)
        .and_then(|rest| rest.iter().rposition(|b| *b == b'\n'))
        .map_or(from, |i| from + i + 1)
}

/// Where the last `n` lines of `data` start.
fn tail_start(data: &[u8], n: usize) -> usize {
    if n == 0 {
        return data.len();
    }
    let body = data.strip_suffix(b"\n").unwrap_or(data);
    let mut seen = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == n {
                return i + 1;
            }
        }
    }
    0
}

#[derive(Debug, Args)]
pub struct StopArgs {
    id: String,
    /// Seconds between SIGTERM and SIGKILL [default: 10].
    #[arg(long, value_name = "SECONDS")]
    grace: Option<u32>,
    #[arg(long)]
    json: bool,
}

/// `rauha delete` and `rauha wait`: a process id.
#[derive(Debug, Args)]
pub struct ProcessIdArgs {
    id: String,
    #[arg(long)]
    json: bool,
}

pub async fn run(args: RunArgs, addr: &str) -> anyhow::Result<u8> {
    let (image, process) = args.split()?;
    let mut spec = process.to_spec()?;
    let conn = Connection::open(addr).await?;
    if let Some(image) = &image {
        crate::image_cmd::ensure(&conn, image, args.pull).await?;
        spec.image = image.clone();
    }
    spec.terminal = args.tty;
    spec.publish = args.publish;
    let mut processes = conn.processes();
    let in_foreground = !args.detach && (image.is_some() || args.interactive || args.tty);
    if in_foreground {
        let request = v1::ExecRequest {
            zone: args.zone,
            spec: Some(spec),
        };
        return foreground(&mut processes, request, args.interactive, args.tty).await;
    }
    let request = v1::RunRequest {
        zone: args.zone,
        spec: Some(spec),
        stdio: None,
        id: String::new(),
        open_stdin: args.interactive,
    };
    let process = processes.run(request).await?.into_inner();
    if args.json {
        print_json(&ProcessView::from(&process))?;
    } else {
        writeln!(io::stdout(), "{}", process.id)?;
    }
    Ok(0)
}

pub async fn ps(args: PsArgs, addr: &str) -> anyhow::Result<u8> {
    let mut processes = Connection::open(addr).await?.processes();
    let request = v1::PsRequest {
        zone: args.zone.unwrap_or_default(),
    };
    let list = processes.ps(request).await?.into_inner().processes;
    print_process_list(&list, args.json)?;
    Ok(0)
}

pub async fn exec(args: ExecArgs, addr: &str) -> anyhow::Result<u8> {
    let spec = args.process.to_spec()?;
    let mut spec = spec;
    spec.terminal = args.tty;
    let mut processes = Connection::open(addr).await?.processes();
    let request = v1::ExecRequest {
        zone: args.zone,
        spec: Some(spec),
    };
    foreground(&mut processes, request, args.interactive, args.tty).await
}

/// Runs a process in the foreground: an interactive session with `-i` or
/// `-t`, else its output streamed; its exit code.
async fn foreground(
    processes: &mut rauha_api::v1::processes_client::ProcessesClient<tonic::transport::Channel>,
    request: v1::ExecRequest,
    interactive: bool,
    tty: bool,
) -> anyhow::Result<u8> {
    if interactive || tty {
        return crate::interactive::session(
            processes,
            rauha_api::v1::interact_input::Input::Start(request),
            tty,
            interactive,
        )
        .await;
    }
    stream_exec(processes, request).await
}

pub async fn attach(args: AttachArgs, addr: &str) -> anyhow::Result<u8> {
    use std::io::IsTerminal;
    let mut processes = Connection::open(addr).await?.processes();
    let stdin = !args.no_stdin;
    let tty = stdin && io::stdin().is_terminal();
    crate::interactive::session(
        &mut processes,
        rauha_api::v1::interact_input::Input::Attach(args.id),
        tty,
        stdin,
    )
    .await
}

/// Streams an exec's output; the process's exit code.
async fn stream_exec(
    processes: &mut rauha_api::v1::processes_client::ProcessesClient<tonic::transport::Channel>,
    request: v1::ExecRequest,
) -> anyhow::Result<u8> {
    let mut stream = processes.exec(request).await?.into_inner();
    let mut started: Option<String> = None;
    loop {
        let event = match (stream.message().await, &started) {
            (Ok(Some(event)), _) => event,
            // Before the process started, an error is the request's own.
            (Err(status), None) => return Err(status.into()),
            (Err(status), Some(id)) => bail!(
                "lost rauhad while process {id} ran ({}); it goes on in its zone: see it with `rauha ps` once rauhad is back",
                crate::error_line::status_line(&status)
            ),
            (Ok(None), Some(id)) => bail!(
                "rauhad ended the exec stream before process {id} exited (did it stop?); see it with `rauha ps` once rauhad is back"
            ),
            (Ok(None), None) => {
                bail!("rauhad ended the exec stream before the process started; see rauhad's log")
            }
        };
        match event.event {
            Some(ExecEvent::Output(output)) => write_output(&output)?,
            Some(ExecEvent::Exited(process)) => return ended(&process),
            Some(ExecEvent::Started(process)) => started = Some(process.id),
            None => {}
        }
    }
}

pub async fn logs(args: LogsArgs, addr: &str) -> anyhow::Result<u8> {
    if args.follow {
        return follow(&args.id, args.tail, args.timestamps, addr).await;
    }
    let mut processes = Connection::open(addr).await?.processes();
    let logs = processes
        .logs(v1::ProcessRef {
            id: args.id.clone(),
        })
        .await?
        .into_inner();
    if args.json {
        print_json(&LogsView::from(&logs))?;
        return Ok(0);
    }
    let from = |data: &[u8]| args.tail.map_or(0, |n| tail_start(data, n));
    let shown = |data: &[u8], marks: &[v1::OutputMark]| -> Vec<u8> {
        if args.timestamps {
            stamped(data, from(data), data.len(), marks)
        } else {
            data[from(data)..].to_vec()
        }
    };
    write_flushed(
        &mut io::stdout().lock(),
        &shown(&logs.stdout, &logs.stdout_marks),
    )?;
    let mut err = io::stderr().lock();
    write_flushed(&mut err, &shown(&logs.stderr, &logs.stderr_marks))?;
    if logs.truncated {
        writeln!(
            err,
            "rauha: the output of {} was longer than rauhad keeps; some of it is missing",
            args.id
        )?;
    }
    Ok(0)
}

pub async fn stop(args: StopArgs, addr: &str) -> anyhow::Result<u8> {
    let mut processes = Connection::open(addr).await?.processes();
    let request = v1::StopRequest {
        id: args.id,
        // The API reads 0 as its default of 10 seconds.
        grace_seconds: args.grace.unwrap_or(0),
    };
    let process = processes.stop(request).await?.into_inner();
    print_process(&process, args.json)?;
    Ok(0)
}

pub async fn delete(args: ProcessIdArgs, addr: &str) -> anyhow::Result<u8> {
    let mut processes = Connection::open(addr).await?.processes();
    processes
        .delete(v1::ProcessRef {
            id: args.id.clone(),
        })
        .await?;
    if args.json {
        print_json(&serde_json::json!({ "deleted": args.id }))?;
    } else {
        writeln!(io::stdout(), "deleted process {}", args.id)?;
    }
    Ok(0)
}

pub async fn wait(args: ProcessIdArgs, addr: &str) -> anyhow::Result<u8> {
    let mut processes = Connection::open(addr).await?.processes();
    let process = processes
        .wait(v1::ProcessRef { id: args.id })
        .await?
        .into_inner();
    let code = ended(&process)?;
    if args.json {
        print_json(&ProcessView::from(&process))?;
    } else {
        writeln!(io::stdout(), "{code}")?;
    }
    Ok(code)
}

/// The exit code of a process that ended, or the error saying why it has none.
pub(crate) fn ended(process: &v1::Process) -> anyhow::Result<u8> {
    match exit_code::for_process(process) {
        Some(code) => Ok(code),
        None if process.state == "lost" => bail!(
            "process {} was lost (rauhad restarted while it ran); its exit code is unknown",
            process.id
        ),
        None => bail!(
            "rauhad reported process {} as {} without an exit code; check `rauha ps`",
            process.id,
            process.state
        ),
    }
}

/// Writes one chunk of exec output where the process wrote it.
pub(crate) fn write_output(output: &v1::Output) -> io::Result<()> {
    if output.stream == 2 {
        write_flushed(&mut io::stderr().lock(), &output.data)
    } else {
        write_flushed(&mut io::stdout().lock(), &output.data)
    }
}

fn write_flushed(out: &mut impl Write, data: &[u8]) -> io::Result<()> {
    out.write_all(data)?;
    out.flush()
}

/// Processes as a table, or as a JSON array.
fn print_process_list(list: &[v1::Process], json: bool) -> anyhow::Result<()> {
    if json {
        let views: Vec<ProcessView> = list.iter().map(ProcessView::from).collect();
        return print_json(&views);
    }
    process_table(list).write_to(&mut io::stdout().lock())?;
    Ok(())
}

/// One process as a table row, or as a JSON object.
fn print_process(process: &v1::Process, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&ProcessView::from(process));
    }
    process_table(std::slice::from_ref(process)).write_to(&mut io::stdout().lock())?;
    Ok(())
}

/// With a PORTS column when a process publishes any (`rauha run -p`).
fn process_table(list: &[v1::Process]) -> Table {
    let ports = list.iter().any(|p| !p.published.is_empty());
    let mut table = if ports {
        Table::new(&["ID", "ZONE", "PID", "STATE", "EXIT", "PORTS", "COMMAND"])
    } else {
        Table::new(&["ID", "ZONE", "PID", "STATE", "EXIT", "COMMAND"])
    };
    for p in list {
        let mut row = vec![
            short_id(&p.id).to_string(),
            p.zone_name.clone(),
            p.pid.to_string(),
            p.state.clone(),
            exit_cell(p),
        ];
        if ports {
            row.push(p.published.join(", "));
        }
        row.push(p.args.join(" "));
        table.row(row);
    }
    table
}

/// `0`, `3`, `sig 9` or `-` while running.
fn exit_cell(p: &v1::Process) -> String {
    if p.signal != 0 {
        format!("sig {}", p.signal)
    } else if p.has_exit_code {
        p.exit_code.to_string()
    } else {
        "-".to_string()
    }
}

/// `logs --follow`: prints what is new in the process's output until it
/// ends, then the rest, and exits with its code. A rauhad that goes away
/// is a failure that says what to do, never a quiet end.
async fn follow(id: &str, tail: Option<usize>, timestamps: bool, addr: &str) -> anyhow::Result<u8> {
    let connection = Connection::open(addr).await?;
    let mut processes = connection.processes();
    let mut waiter = connection.processes();
    let wait_id = id.to_string();
    let mut waiting = tokio::spawn(async move {
        waiter
            .wait(v1::ProcessRef { id: wait_id })
            .await
            .map(tonic::Response::into_inner)
    });
    let (mut out_at, mut err_at) = (0usize, 0usize);
    let mut first = true;
    let lost = |status: &tonic::Status| {
        anyhow::anyhow!(
            "lost rauhad while following process {id} ({}); it goes on in its zone: run `rauha logs {id} --follow` again once rauhad is back",
            crate::error_line::status_line(status)
        )
    };
    loop {
        let done = tokio::select! {
            r = &mut waiting => Some(r),
            _ = tokio::time::sleep(std::time::Duration::from_millis(250)) => None,
        };
        let logs = processes
            .logs(v1::ProcessRef { id: id.to_string() })
            .await
            .map_err(|s| lost(&s))?
            .into_inner();
        if std::mem::take(&mut first) {
            if let Some(n) = tail {
                out_at = tail_start(&logs.stdout, n);
                err_at = tail_start(&logs.stderr, n);
            }
        }
        // With timestamps, a line is printed once whole (or at the end).
        let whole_lines = timestamps && done.is_none();
        let out_to = printable_end(&logs.stdout, out_at, whole_lines).max(out_at);
        let err_to = printable_end(&logs.stderr, err_at, whole_lines).max(err_at);
        let piece = |data: &[u8], at: usize, to: usize, marks: &[v1::OutputMark]| -> Vec<u8> {
            let to = to.min(data.len());
            if at >= to {
                Vec::new()
            } else if timestamps {
                stamped(data, at, to, marks)
            } else {
                data[at..to].to_vec()
            }
        };
        write_flushed(
            &mut io::stdout().lock(),
            &piece(&logs.stdout, out_at, out_to, &logs.stdout_marks),
        )?;
        write_flushed(
            &mut io::stderr().lock(),
            &piece(&logs.stderr, err_at, err_to, &logs.stderr_marks),
        )?;
        out_at = out_at.max(out_to.min(logs.stdout.len()));
        err_at = err_at.max(err_to.min(logs.stderr.len()));
        if let Some(r) = done {
            let process = r
                .map_err(|e| anyhow::anyhow!("the wait for process {id} failed: {e}"))?
                .map_err(|s| lost(&s))?;
            if logs.truncated {
                writeln!(
                    io::stderr(),
                    "rauha: the output of {id} was longer than rauhad keeps; some of it is missing"
                )?;
            }
            return ended(&process);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_line_gets_the_time_its_first_byte_came() {
        let marks = [
            v1::OutputMark {
                offset: 0,
                time_ms: 1_000,
            },
            v1::OutputMark {
                offset: 5,
                time_ms: 2_000,
            },
        ];
        let out = String::from_utf8(stamped(b"a\nbcdef\ng", 0, 9, &marks)).expect("utf8");
        assert_eq!(
            out,
            "1970-01-01T00:00:01.000Z a\n1970-01-01T00:00:01.000Z bcdef\n1970-01-01T00:00:02.000Z g"
        );
        assert_eq!(
            String::from_utf8(stamped(b"x\n", 0, 2, &[])).expect("utf8"),
            "- x\n"
        );
        assert_eq!(printable_end(b"a\nbc", 0, true), 2);
        assert_eq!(printable_end(b"a\nbc", 0, false), 4);
        assert_eq!(printable_end(b"abc", 1, true), 1);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail_start(b"a\nb\nc\n", 2), 2);
        assert_eq!(tail_start(b"a\nb\nc", 1), 4);
        assert_eq!(tail_start(b"a\nb\n", 5), 0);
        assert_eq!(tail_start(b"a\n", 0), 2);
    }
}
