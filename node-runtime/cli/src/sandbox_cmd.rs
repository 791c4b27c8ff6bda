//! `rauha sandbox` and `rauha task get`: the Sandbox service.
//!
//! A sandbox run prints the task's own output (or, with `--json`, the
//! `rauha_spec::TaskResult` envelope) and exits with a code derived from the
//! task's status; see [`crate::exit_code`].

use std::io::{self, Write};

use anyhow::{anyhow, bail};
use clap::{Args, Subcommand};
use rauha_api::v1;
use rauha_spec::{TaskResult, TaskStatus};

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
    #[arg(long, value_name = "DIR")]
    bundle: Option<String>,
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
    /// Print the task result as JSON instead of the task's output.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    process: ProcessArgs,
}

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Show a finished task's result.
    Get {
        /// The task id printed by `rauha sandbox`.
        task_id: String,
        #[arg(long)]
        json: bool,
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
    };
    let mut sandbox = Connection::open(addr).await?.sandbox();
    let wire = sandbox.run_sandbox(request).await?.into_inner();
    let result = decode(TaskResult::try_from(&wire))?;
    if args.json {
        print_json(&result)?;
    } else {
        write_task_output(&result)?;
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
    let TaskCommand::Get { task_id, json } = command;
    let mut sandbox = Connection::open(addr).await?.sandbox();
    let wire = sandbox
        .get_task(v1::TaskRef { task_id })
        .await?
        .into_inner();
    let result = decode(TaskResult::try_from(&wire))?;
    if json {
        print_json(&result)?;
    } else {
        task_table(&result).write_to(&mut io::stdout().lock())?;
    }
    Ok(0)
}

/// `--timeout` as milliseconds; the API takes 0 as "the policy's".
fn timeout_ms(text: &str) -> anyhow::Result<u64> {
    let duration = rauha_spec::duration::parse_duration(text)
        .ok_or_else(|| anyhow!("--timeout {text:?} is not a duration; use 500ms, 30s or 10m"))?;
    if duration.is_zero() {
        bail!("--timeout {text:?} is zero; give a positive duration, or leave --timeout out for the policy's");
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

/// A task that rauha could not run says why, as any rauha error does.
fn report_error(result: &TaskResult) -> io::Result<()> {
    match (&result.status, &result.error) {
        (TaskStatus::Error, Some(error)) => {
            writeln!(io::stderr(), "rauha: {}", error.replace('\n', "; "))
        }
        _ => Ok(()),
    }
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
        TaskResult {
            task_id: Default::default(),
            zone_id: Default::default(),
            command: vec!["true".into()],
            status,
            exit_code,
            signal,
            duration_ms: 12,
            stdout: String::new(),
            stderr: String::new(),
            stdout_truncated: false,
            stderr_truncated: true,
            stdout_dropped_bytes: 0,
            stderr_dropped_bytes: 10,
            peak_memory_bytes: None,
            cpu_time_us: None,
            events: Vec::new(),
            enforcement_events: Vec::new(),
            enforcement: rauha_spec::Enforcement {
                layers: Vec::new(),
                score: 55,
                label: "standard".into(),
            },
            error: None,
        }
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
