//! `rauha sandbox` and `rauha task get`: the Sandbox service.
//!
//! A sandbox run prints the task's own output (or, with `--json`, the
//! `rauha_spec::TaskResult` envelope) and exits with a code derived from the
//! task's status; see [`crate::exit_code`].

use std::io::{self, Write};

use anyhow::{anyhow, bail};
use clap::{Args, Subcommand};
use rauha_api::v1;
use rauha_spec::TaskResult;

use crate::connect::Connection;
use crate::exit_code;
use crate::json_view::{decode, print_json};
use crate::policy_source::wire_policy;
use crate::process_args::ProcessArgs;
use crate::table::{size_cell, Table};
use crate::zone_cmd::bundle_path;

#[derive(Debug, Args)]
#[command(after_help = exit_code::SANDBOX_HELP)]
pub struct SandboxArgs {
    /// An OCI bundle directory as the zone's root [default: a read-only view
    /// of the host].
    #[arg(long, value_name = "DIR", conflicts_with = "image")]
    bundle: Option<String>,
    /// An image as the zone's root (pulled when missing, see --pull); its
    /// Entrypoint, Env, WorkingDir and User apply as under docker.
    #[arg(long, value_name = "IMAGE")]
    image: Option<String>,
    /// When to pull --image: always, missing (when not stored) or never.
    #[arg(long, value_enum, default_value = "missing", requires = "image")]
    pull: crate::image_cmd::PullPolicy,
    /// Join this network namespace (e.g. /run/netns/NAME) instead of a new
    /// one; the policy's network.mode must be "joined".
    #[arg(long, value_name = "PATH")]
    netns: Option<String>,
    /// The zone's network, over the policy's network.mode: loopback,
    /// none, bridged (an address on rauhad's bridge, which -p needs),
    /// joined (with --netns) or host (a privileged pod policy only).
    #[arg(long, value_name = "MODE", value_parser = ["loopback", "none", "bridged", "joined", "host"])]
    network: Option<String>,
    /// Publish a port of the zone on the host: [HOST_IP:]HOST_PORT:ZONE_PORT[/tcp|udp]
    /// (repeatable). On 127.0.0.1 unless a host address is given (docker's
    /// -p publishes on every address). The zone must be bridged.
    #[arg(long, short = 'p', value_name = "[HOST_IP:]HOST_PORT:ZONE_PORT")]
    publish: Vec<String>,
    /// A policy TOML file or a preset (minimal, standard, strict)
    /// [default: standard].
    #[arg(long, value_name = "FILE|PRESET")]
    policy: Option<String>,
    /// Kill the task after this long: 500ms, 30s, 10m [default: the
    /// policy's task timeout, if any].
    #[arg(long, value_name = "DURATION")]
    timeout: Option<String>,
    /// Keep the task's zone after it ends (delete it with `rauha zone delete`).
    #[arg(long)]
    keep_zone: bool,
    /// With --keep-zone: delete the zone after this much idle time (2s, 10m).
    #[arg(long, value_name = "DURATION", requires = "keep_zone")]
    ttl: Option<String>,
    /// A host directory shown in the zone through a copy-on-write overlay;
    /// the result lists what the task changed in it.
    #[arg(long, value_name = "DIR")]
    repo_path: Option<String>,
    /// Where the repository appears in the zone [default: /workspace].
    #[arg(long, value_name = "PATH", requires = "repo_path")]
    workspace_path: Option<String>,
    /// After a task that succeeded: commit (apply every change to the
    /// repository, all or nothing) or discard.
    #[arg(long, value_name = "commit|discard", default_value = "discard", value_parser = ["commit", "discard"], requires = "repo_path")]
    on_success: String,
    /// Commit changes under .git/ too: hooks, config and the like are code
    /// that git on the host runs, and a commit holds them back by default.
    /// Review them first (--dry-run lists them).
    #[arg(long, requires = "repo_path")]
    commit_git_metadata: bool,
    /// Never commit; print the changes.
    #[arg(long, requires = "repo_path", conflicts_with = "on_success")]
    dry_run: bool,
    /// Cap of one file's diff in the result (64Ki by default).
    #[arg(long, value_name = "SIZE", requires = "repo_path")]
    diff_cap: Option<String>,
    /// A stored secret for the task, in its environment as ENV_VAR (the
    /// secret's name by default) or on a pipe at fd N (`NAME=fd:N`);
    /// redacted from everything that leaves the zone.
    #[arg(long = "secret", value_name = "NAME[=ENV_VAR|fd:N]")]
    secrets: Vec<String>,
    /// Print the task's output as it comes (with --json: on stderr), then
    /// the result.
    #[arg(long)]
    stream: bool,
    /// Print the task result as JSON instead of the task's output.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    process: ProcessArgs,
}

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// List stored tasks, newest first.
    List {
        /// Show at most this many.
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    /// Show a finished task's result.
    Get {
        /// The task id printed by `rauha sandbox`.
        task_id: String,
        #[arg(long)]
        json: bool,
        /// Wait until the task has its result (also through a restart of
        /// rauhad), then show it and exit with the task's code.
        #[arg(long)]
        wait: bool,
    },
}

pub async fn sandbox(args: SandboxArgs, addr: &str) -> anyhow::Result<u8> {
    let request = v1::SandboxRequest {
        spec: Some(args.process.to_spec()?),
        policy: wire_policy(args.policy.as_deref())?,
        bundle: args
            .bundle
            .as_deref()
            .map(bundle_path)
            .transpose()?
            .unwrap_or_default(),
        timeout_ms: args
            .timeout
            .as_deref()
            .map(timeout_ms)
            .transpose()?
            .unwrap_or(0),
        keep_zone: args.keep_zone,
        netns: args.netns.clone().unwrap_or_default(),
        publish: args.publish.clone(),
        network: args.network.clone().unwrap_or_default(),
        repo_path: args
            .repo_path
            .as_deref()
            .map(|p| crate::zone_cmd::host_path("--repo-path", p))
            .transpose()?
            .unwrap_or_default(),
        workspace_path: args.workspace_path.clone().unwrap_or_default(),
        on_success: if args.dry_run {
            String::new()
        } else {
            args.on_success.clone()
        },
        dry_run: args.dry_run,
        commit_git_metadata: args.commit_git_metadata,
        diff_cap_bytes: args
            .diff_cap
            .as_deref()
            .map(size_bytes)
            .transpose()?
            .unwrap_or(0),
        secrets: args
            .secrets
            .iter()
            .map(|s| secret_ref(s))
            .collect::<anyhow::Result<_>>()?,
        ttl_ms: args
            .ttl
            .as_deref()
            .map(|t| duration_ms("--ttl", t))
            .transpose()?
            .unwrap_or(0),
        image: args.image.clone().unwrap_or_default(),
    };
    let conn = Connection::open(addr).await?;
    if let Some(image) = &args.image {
        crate::image_cmd::ensure(&conn, image, args.pull).await?;
    }
    let mut sandbox = conn.sandbox();
    let wire = match stream_task(&mut sandbox, request, args.stream, args.json).await? {
        Streamed::Result(wire) => wire,
        Streamed::Lost { task_id, reason } => return Ok(report_lost(&task_id, &reason, args.json)),
    };
    let result = decode(TaskResult::try_from(&*wire))?;
    if args.json {
        print_json(&result)?;
    } else {
        if !args.stream {
            write_task_output(&result)?;
        }
        write_changes(&result)?;
    }
    report_error(&result)?;
    if !args.json {
        writeln!(io::stderr(), "{}", summary_line(&result, args.keep_zone))?;
    }
    Ok(exit_code::for_task(
        result.status,
        result.exit_code,
        result.signal,
    ))
}

pub async fn task(command: TaskCommand, addr: &str) -> anyhow::Result<u8> {
    let (task_id, json, wait) = match command {
        TaskCommand::Get {
            task_id,
            json,
            wait,
        } => (task_id, json, wait),
        TaskCommand::List { limit, json } => return list_tasks(limit, json, addr).await,
    };
    let wire = if wait {
        wait_for_result(&task_id, addr).await?
    } else {
        let mut sandbox = Connection::open(addr).await?.sandbox();
        sandbox
            .get_task(v1::TaskRef { task_id })
            .await?
            .into_inner()
    };
    let result = decode(TaskResult::try_from(&wire))?;
    if json {
        print_json(&result)?;
    } else {
        task_table(&result).write_to(&mut io::stdout().lock())?;
    }
    Ok(if wait {
        exit_code::for_task(result.status, result.exit_code, result.signal)
    } else {
        0
    })
}

/// Polls until the task has its result. A rauhad that is away (restarting)
/// is waited for as well: the task's result outlives it.
async fn wait_for_result(task_id: &str, addr: &str) -> anyhow::Result<v1::TaskResult> {
    let mut announced = false;
    loop {
        let answer = match Connection::open(addr).await {
            Ok(connection) => connection
                .sandbox()
                .get_task(v1::TaskRef {
                    task_id: task_id.to_string(),
                })
                .await
                .map(tonic::Response::into_inner),
            Err(e) => {
                if !announced {
                    writeln!(io::stderr(), "rauha: waiting for rauhad ({e})")?;
                    announced = true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                continue;
            }
        };
        match answer {
            Ok(result) => return Ok(result),
            // Still running, or the daemon went away between two calls.
            Err(s)
                if s.code() == tonic::Code::FailedPrecondition
                    || s.code() == tonic::Code::Unavailable
                    || s.code() == tonic::Code::Unknown =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await
            }
            Err(s) => return Err(s.into()),
        }
    }
}

/// What came of a task's stream.
enum Streamed {
    Result(Box<v1::TaskResult>),
    /// The stream broke after the task was recorded: its result is kept.
    Lost {
        task_id: String,
        reason: String,
    },
}

/// The one line (or, with `--json`, the JSON object) of a task whose
/// stream broke; the exit code of "rauha could not run it".
fn report_lost(task_id: &str, reason: &str, json: bool) -> u8 {
    let line = format!(
        "lost rauhad while task {task_id} ran ({reason}); the task goes on: run `rauha task get {task_id} --wait` once rauhad is back"
    );
    if json {
        let _ = print_json(&serde_json::json!({
            "task_id": task_id,
            "status": "unknown",
            "error": line,
        }));
    } else {
        let _ = writeln!(io::stderr(), "rauha: {line}");
    }
    exit_code::RAUHA_ERROR
}

async fn list_tasks(limit: Option<u32>, json: bool, addr: &str) -> anyhow::Result<u8> {
    let mut sandbox = Connection::open(addr).await?.sandbox();
    let tasks = sandbox
        .list_tasks(v1::ListTasksRequest {
            limit: limit.unwrap_or(0),
        })
        .await?
        .into_inner()
        .tasks;
    if json {
        let list: Vec<serde_json::Value> = tasks
            .iter()
            .map(|t| {
                serde_json::json!({
                    "task_id": t.task_id,
                    "zone_id": t.zone_id,
                    "command": t.command,
                    "status": t.status,
                    "started_ms": t.started_ms,
                    "duration_ms": t.duration_ms,
                    "exit_code": if t.has_exit_code { serde_json::json!(t.exit_code) } else { serde_json::Value::Null },
                })
            })
            .collect();
        print_json(&list)?;
        return Ok(0);
    }
    let mut table = Table::new(&["TASK", "STATUS", "EXIT", "DURATION", "STARTED", "COMMAND"]);
    for t in &tasks {
        table.row([
            t.task_id.clone(),
            t.status.clone(),
            if t.has_exit_code {
                t.exit_code.to_string()
            } else {
                "-".into()
            },
            format!("{} ms", t.duration_ms),
            crate::timestamp::format_utc(t.started_ms),
            t.command.join(" "),
        ]);
    }
    table.write_to(&mut io::stdout().lock())?;
    Ok(0)
}

/// `--timeout` as milliseconds; the API takes 0 as "the policy's".
fn timeout_ms(text: &str) -> anyhow::Result<u64> {
    duration_ms("--timeout", text)
}

/// A duration flag (`--timeout`, `--ttl`) as milliseconds, the flag named
/// in its error; 0 is refused (leaving the flag out means the default).
fn duration_ms(flag: &str, text: &str) -> anyhow::Result<u64> {
    let shown = rauha_spec::message::quote(text);
    let duration = rauha_spec::duration::parse_duration(text)
        .ok_or_else(|| anyhow!("{flag} {shown} is not a duration; use 500ms, 30s or 10m"))?;
    if duration.is_zero() {
        bail!(
            "{flag} {shown} is zero; give a positive duration, or leave {flag} out for the default"
        );
    }
    Ok(u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1))
}

fn write_task_output(result: &TaskResult) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(result.stdout.as_bytes())?;
    out.flush()?;
    let mut err = io::stderr().lock();
    err.write_all(result.stderr.as_bytes())?;
    err.flush()
}

/// A task that rauha could not run (or whose changes could not be
/// committed) says why, as any rauha error does.
fn report_error(result: &TaskResult) -> io::Result<()> {
    match &result.error {
        Some(error) => writeln!(io::stderr(), "rauha: {}", error.replace('\n', "; ")),
        None => Ok(()),
    }
}

/// Runs the task, its output printed as it comes when `live`; returns the
/// result, or, once the task is recorded, that the stream was lost.
async fn stream_task(
    sandbox: &mut rauha_api::v1::sandbox_client::SandboxClient<tonic::transport::Channel>,
    request: v1::SandboxRequest,
    live: bool,
    json: bool,
) -> anyhow::Result<Streamed> {
    use tokio_stream::StreamExt;
    let mut events = sandbox.run_sandbox_stream(request).await?.into_inner();
    let mut task_id: Option<String> = None;
    loop {
        let event = match (events.next().await, &task_id) {
            (Some(Ok(event)), _) => event,
            // Before the task is recorded, an error is the request's own.
            (Some(Err(status)), None) => return Err(status.into()),
            (Some(Err(status)), Some(id)) => {
                return Ok(Streamed::Lost {
                    task_id: id.clone(),
                    reason: crate::error_line::status_line(&status),
                })
            }
            (None, Some(id)) => {
                return Ok(Streamed::Lost {
                    task_id: id.clone(),
                    reason: "the stream ended without the result".into(),
                })
            }
            (None, None) => {
                bail!("rauhad ended the stream before the task started; see rauhad's log")
            }
        };
        match event.event {
            Some(v1::sandbox_event::Event::Started(s)) => task_id = Some(s.task_id),
            Some(v1::sandbox_event::Event::Output(_)) if !live => {}
            Some(v1::sandbox_event::Event::Output(o)) => {
                if o.stream == 2 || json {
                    let mut err = io::stderr().lock();
                    err.write_all(&o.data)?;
                    err.flush()?;
                } else {
                    let mut out = io::stdout().lock();
                    out.write_all(&o.data)?;
                    out.flush()?;
                }
            }
            Some(v1::sandbox_event::Event::Result(r)) => return Ok(Streamed::Result(Box::new(r))),
            None => {}
        }
    }
}

/// The workspace's changes, for people: one line each, then the diffs of a
/// dry run.
fn write_changes(r: &TaskResult) -> io::Result<()> {
    let Some(outcome) = r.workspace else {
        return Ok(());
    };
    let mut err = io::stderr().lock();
    let outcome = match outcome {
        rauha_spec::result::WorkspaceOutcome::Committed => "committed",
        rauha_spec::result::WorkspaceOutcome::Discarded => "discarded",
        rauha_spec::result::WorkspaceOutcome::CommitFailed => "commit failed, nothing applied",
    };
    let unlisted = match r.files_changed_unlisted {
        0 => String::new(),
        n => format!(" ({n} more not listed: past the policy's task.max_changes)"),
    };
    writeln!(
        err,
        "rauha: {} change(s) in the workspace{unlisted}, {outcome}",
        r.files_changed.len()
    )?;
    for c in &r.files_changed {
        let mark = match c.kind {
            rauha_spec::result::ChangeKind::Added => 'A',
            rauha_spec::result::ChangeKind::Modified => 'M',
            rauha_spec::result::ChangeKind::Deleted => 'D',
        };
        match &c.held_back {
            Some(why) => writeln!(err, "  {mark} {} (held back: {why})", c.path.escape_debug())?,
            None => writeln!(err, "  {mark} {}", c.path.escape_debug())?,
        }
    }
    if outcome == "discarded" {
        for d in r.files_changed.iter().filter_map(|c| c.diff.as_deref()) {
            err.write_all(d.as_bytes())?;
        }
    }
    Ok(())
}

/// `NAME`, `NAME=ENV_VAR` or `NAME=fd:N`.
fn secret_ref(text: &str) -> anyhow::Result<v1::SecretRef> {
    let (name, to) = text.split_once('=').unwrap_or((text, ""));
    if name.is_empty() {
        bail!("--secret {text:?} has no name; use NAME, NAME=ENV_VAR or NAME=fd:N");
    }
    let (env, fd) = match to.strip_prefix("fd:") {
        None => (to.to_string(), 0),
        Some(n) => match n.parse::<i32>() {
            Ok(fd) if (3..=255).contains(&fd) => (String::new(), fd),
            _ => bail!("--secret {text:?}: {n:?} is not an fd from 3 to 255; use NAME=fd:3"),
        },
    };
    Ok(v1::SecretRef {
        name: name.to_string(),
        env,
        fd,
    })
}

fn size_bytes(text: &str) -> anyhow::Result<u64> {
    rauha_spec::size::parse_size(text)
        .ok_or_else(|| anyhow!("--diff-cap {text:?} is not a size; use 64Ki or 1Mi"))
}

/// `rauha: task <id> <status> (exit N) in <ms> ms; enforcement <label> <score>/100`,
/// with what was cut from the output and the kept zone appended.
fn summary_line(r: &TaskResult, keep_zone: bool) -> String {
    let mut line = format!("rauha: task {} {}", r.task_id, r.status.as_str());
    match (r.exit_code, r.signal) {
        (Some(code), Some(signal)) => line.push_str(&format!(" (exit {code}, signal {signal})")),
        (Some(code), None) => line.push_str(&format!(" (exit {code})")),
        (None, Some(signal)) => line.push_str(&format!(" (signal {signal})")),
        (None, None) => {}
    }
    line.push_str(&format!(
        " in {} ms; enforcement {} {}/100",
        r.duration_ms, r.enforcement.label, r.enforcement.score
    ));
    for (name, truncated, dropped) in [
        ("stdout", r.stdout_truncated, r.stdout_dropped_bytes),
        ("stderr", r.stderr_truncated, r.stderr_dropped_bytes),
    ] {
        if truncated {
            line.push_str(&format!("; {name} truncated ({dropped} bytes dropped)"));
        }
    }
    if keep_zone {
        line.push_str(&format!("; zone {} kept", r.zone_id));
    }
    line
}

/// The short human summary of `rauha task get`.
fn task_table(r: &TaskResult) -> Table {
    let mut table = Table::plain();
    table.row(["task".to_string(), r.task_id.to_string()]);
    table.row(["zone".to_string(), r.zone_id.to_string()]);
    table.row(["command".to_string(), r.command.join(" ")]);
    table.row(["status".to_string(), r.status.as_str().to_string()]);
    if let Some(code) = r.exit_code {
        table.row(["exit code".to_string(), code.to_string()]);
    }
    if let Some(signal) = r.signal {
        table.row(["signal".to_string(), signal.to_string()]);
    }
    table.row(["duration".to_string(), format!("{} ms", r.duration_ms)]);
    if let Some(peak) = r.peak_memory_bytes {
        table.row(["peak memory".to_string(), size_cell(peak)]);
    }
    if let Some(cpu) = r.cpu_time_us {
        table.row(["cpu time".to_string(), format!("{} ms", cpu / 1000)]);
    }
    for (name, text, truncated) in [
        ("stdout", &r.stdout, r.stdout_truncated),
        ("stderr", &r.stderr, r.stderr_truncated),
    ] {
        let note = if truncated { " (truncated)" } else { "" };
        table.row([name.to_string(), format!("{} bytes{note}", text.len())]);
    }
    table.row([
        "enforcement".to_string(),
        format!("{} {}/100", r.enforcement.label, r.enforcement.score),
    ]);
    table.row([
        "denials".to_string(),
        r.enforcement_events.len().to_string(),
    ]);
    if let Some(error) = &r.error {
        table.row(["error".to_string(), error.clone()]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use rauha_spec::TaskStatus;

    #[test]
    fn timeouts_are_durations_with_units() {
        assert_eq!(timeout_ms("500ms").expect("ms"), 500);
        assert_eq!(timeout_ms("30s").expect("s"), 30_000);
        assert_eq!(timeout_ms("10m").expect("m"), 600_000);
        assert_eq!(timeout_ms("0.1ms").expect("rounded up"), 1);
        assert!(timeout_ms("0s")
            .expect_err("zero")
            .to_string()
            .contains("is zero"));
        for bad in ["x", "10", "-1s"] {
            assert_eq!(
                timeout_ms(bad).expect_err(bad).to_string(),
                format!("--timeout {bad:?} is not a duration; use 500ms, 30s or 10m")
            );
        }
    }

    fn result(status: TaskStatus, exit_code: Option<i32>, signal: Option<i32>) -> TaskResult {
        let mut r = TaskResult::not_run(
            Default::default(),
            Default::default(),
            vec!["true".into()],
            rauha_spec::Enforcement {
                layers: Vec::new(),
                score: 55,
                label: "standard".into(),
            },
        );
        r.status = status;
        r.exit_code = exit_code;
        r.signal = signal;
        r.duration_ms = 12;
        r.stderr_truncated = true;
        r.stderr_dropped_bytes = 10;
        r
    }

    #[test]
    fn the_summary_is_one_line_with_status_exit_and_enforcement() {
        let line = summary_line(&result(TaskStatus::Failed, Some(3), None), false);
        assert_eq!(
            line,
            "rauha: task 00000000-0000-0000-0000-000000000000 failed (exit 3) in 12 ms; \
             enforcement standard 55/100; stderr truncated (10 bytes dropped)"
        );
        let killed = summary_line(&result(TaskStatus::TimedOut, Some(137), Some(9)), true);
        assert!(
            killed.contains("timed_out (exit 137, signal 9)"),
            "{killed}"
        );
        assert!(killed.ends_with("; zone 00000000-0000-0000-0000-000000000000 kept"));
    }
}
