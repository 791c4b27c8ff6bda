//! `rauha`, Rauha's command line, is a thin client of rauhad's gRPC API and
//! owns no state: every command is one call (or one stream) to rauhad, whose
//! answer is printed as an aligned table or, with `--json`, as JSON. It must
//! not decide anything the daemon decides (names, policies, limits are
//! validated by rauhad); it only checks its own flags, reads policy files the
//! user names, and turns results into output and exit codes.
//!
//! Every error is one line on stderr, `rauha: <what went wrong and what to
//! do>`, and exits 125; clap's usage errors keep code 2.

mod connect;
mod error_line;
mod events_cmd;
mod exit_code;
mod image_cmd;
mod info_cmd;
mod interactive;
mod json_view;
mod policy_cmd;
mod policy_source;
mod process_args;
mod process_cmd;
mod sandbox_cmd;
mod secret_cmd;
mod table;
mod timestamp;
mod zone_cmd;

use std::io::{self, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::connect::DEFAULT_ADDR;
use crate::error_line::{error_line, is_broken_pipe};
use crate::events_cmd::EventsArgs;
use crate::info_cmd::InfoArgs;
use crate::policy_cmd::PolicyCommand;
use crate::process_cmd::{ExecArgs, LogsArgs, ProcessIdArgs, PsArgs, RunArgs, StopArgs};
use crate::sandbox_cmd::{SandboxArgs, TaskCommand};
use crate::zone_cmd::{TopArgs, ZoneCommand};

#[derive(Debug, Parser)]
#[command(
    name = "rauha",
    version,
    about = "Run untrusted work in isolated zones, through rauhad"
)]
struct Cli {
    /// rauhad's address: unix:///PATH or http://HOST:PORT.
    #[arg(long, global = true, env = "RAUHA_ADDR", default_value = DEFAULT_ADDR)]
    addr: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create, list, show, verify, update and delete zones.
    #[command(subcommand)]
    Zone(ZoneCommand),
    /// Start a command in a zone, detached; prints its process id.
    Run(RunArgs),
    /// List the processes started in zones.
    Ps(PsArgs),
    /// Run a command in a zone, streaming its output; exits with its code.
    Exec(ExecArgs),
    /// Connect to a running process: its output, and your keystrokes to it.
    Attach(process_cmd::AttachArgs),
    /// Print a process's captured stdout and stderr.
    Logs(LogsArgs),
    /// Stop a process: SIGTERM, then SIGKILL after the grace period.
    Stop(StopArgs),
    /// Forget a process that has ended.
    Delete(ProcessIdArgs),
    /// Wait for a process to end; prints and exits with its exit code.
    Wait(ProcessIdArgs),
    /// Run one command in a fresh zone, then delete the zone.
    Sandbox(Box<SandboxArgs>),
    /// Results of sandbox tasks.
    #[command(subcommand)]
    Task(TaskCommand),
    /// Pull, list, inspect, tag and remove images; free unused content.
    #[command(subcommand)]
    Image(image_cmd::ImageCommand),
    /// Store, list and remove secrets for tasks.
    #[command(subcommand)]
    Secret(secret_cmd::SecretCommand),
    /// Follow zone, process and task events until Ctrl-C.
    Events(EventsArgs),
    /// Show each zone's memory, CPU and pids use.
    Top(TopArgs),
    /// Show policies: presets, files, or a zone's.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Show rauhad's version and the enforcement this node can apply.
    Info(InfoArgs),
}

/// Runs one command; the result is the exit code.
async fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    let addr = cli.addr.as_str();
    match cli.command {
        Command::Zone(command) => zone_cmd::run(command, addr).await,
        Command::Run(args) => process_cmd::run(args, addr).await,
        Command::Ps(args) => process_cmd::ps(args, addr).await,
        Command::Exec(args) => process_cmd::exec(args, addr).await,
        Command::Logs(args) => process_cmd::logs(args, addr).await,
        Command::Attach(args) => process_cmd::attach(args, addr).await,
        Command::Stop(args) => process_cmd::stop(args, addr).await,
        Command::Delete(args) => process_cmd::delete(args, addr).await,
        Command::Wait(args) => process_cmd::wait(args, addr).await,
        Command::Sandbox(args) => sandbox_cmd::sandbox(*args, addr).await,
        Command::Task(command) => sandbox_cmd::task(command, addr).await,
        Command::Image(command) => image_cmd::run(command, addr).await,
        Command::Secret(command) => secret_cmd::run(command, addr).await,
        Command::Events(args) => events_cmd::events(args, addr).await,
        Command::Top(args) => zone_cmd::top(args, addr).await,
        Command::Policy(command) => policy_cmd::run(command, addr).await,
        Command::Info(args) => info_cmd::info(args, addr).await,
    }
}

fn main() -> ExitCode {
    // Usage errors, --help and --version exit here, with clap's codes.
    let cli = Cli::parse();
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))
        .and_then(|runtime| runtime.block_on(dispatch(cli)));
    let code = match result {
        Ok(code) => code,
        // The reader went away (`rauha ps | head`): nothing left to say.
        Err(e) if is_broken_pipe(&e) => 0,
        Err(e) => {
            let _ = writeln!(io::stderr(), "{}", error_line(&e));
            exit_code::RAUHA_ERROR
        }
    };
    let _ = io::stdout().flush();
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn commands_take_their_argv_after_a_double_dash() {
        let cli = Cli::try_parse_from([
            "rauha",
            "sandbox",
            "--timeout",
            "5s",
            "--env",
            "A=1",
            "--",
            "sh",
            "-c",
            "exit 3",
        ])
        .expect("valid");
        let Command::Sandbox(_) = cli.command else {
            panic!("parsed as {:?}", cli.command);
        };
        let missing = Cli::try_parse_from(["rauha", "exec", "web"]).expect_err("no command");
        assert_eq!(missing.exit_code(), 2);
    }

    #[test]
    fn sandbox_help_lists_the_exit_codes() {
        let help = Cli::command()
            .find_subcommand_mut("sandbox")
            .expect("sandbox")
            .render_long_help()
            .to_string();
        assert!(help.contains("124    timed out"), "{help}");
        assert!(help.contains("125    rauha error"), "{help}");
    }

    #[test]
    fn run_takes_an_image_and_its_command_or_a_command_after_a_double_dash() {
        let parse = |args: &[&str]| {
            let mut argv = vec!["rauha", "run"];
            argv.extend_from_slice(args);
            match Cli::try_parse_from(argv).expect("valid").command {
                Command::Run(r) => format!("{r:?}"),
                other => panic!("{other:?}"),
            }
        };
        let old = parse(&["--zone", "z", "--", "echo", "-n", "hi"]);
        assert!(
            old.contains("image: None") && old.contains(r#"command: ["echo", "-n", "hi"]"#),
            "{old}"
        );
        let img = parse(&["--zone", "z", "reg/bb:1", "sh", "-c", "exit 3"]);
        assert!(
            img.contains(r#"image: Some("reg/bb:1")"#)
                && img.contains(r#"image_command: ["sh", "-c", "exit 3"]"#),
            "{img}"
        );
        let detached = parse(&["-d", "--zone", "z", "reg/bb:1"]);
        assert!(
            detached.contains("detach: true") && detached.contains("image_command: []"),
            "{detached}"
        );
    }

    #[test]
    fn policy_show_takes_a_preset_or_a_zone_not_both() {
        assert!(Cli::try_parse_from(["rauha", "policy", "show", "strict"]).is_ok());
        let both = Cli::try_parse_from(["rauha", "policy", "show", "strict", "--zone", "web"]);
        assert_eq!(both.expect_err("conflict").exit_code(), 2);
    }
}
