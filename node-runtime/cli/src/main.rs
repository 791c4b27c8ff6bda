//! `rauha`, the command line of Rauha: a thin client of rauhad's gRPC API.
//! It owns no state; every command is one or a few API calls, and every
//! error is one line on stderr saying what went wrong and what to do.

mod connect;
mod exit_code;
mod node_cmd;
mod policy_source;
mod process_cmd;
mod render;
mod sandbox_cmd;
mod table;
mod zone_cmd;

use clap::{Parser, Subcommand};

use crate::connect::DEFAULT_ADDR;

#[derive(Debug, Parser)]
#[command(
    name = "rauha",
    version,
    about = "Run untrusted work in zones, through rauhad"
)]
struct Cli {
    /// rauhad's address: unix:///path or http://host:port.
    #[arg(long, global = true, env = "RAUHA_ADDR", default_value = DEFAULT_ADDR)]
    addr: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Policies (no daemon needed, except for --zone).
    #[command(subcommand)]
    Policy(PolicyCommand),
    #[command(flatten)]
    Daemon(DaemonCommand),
}

/// Commands that talk to rauhad.
#[derive(Debug, Subcommand)]
enum DaemonCommand {
    /// Create, list, inspect, verify, update and delete zones.
    #[command(subcommand)]
    Zone(ZoneCommand),
    /// Start a command in a zone, detached; prints its process id.
    Run {
        #[arg(long)]
        zone: String,
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        #[arg(long)]
        cwd: Option<String>,
        #[arg(long)]
        json: bool,
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// List processes started in zones.
    Ps {
        #[arg(long)]
        zone: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Run a command in a zone, streaming its output; exits with its code.
    Exec {
        zone: String,
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        #[arg(long)]
        cwd: Option<String>,
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Print a process's captured stdout and stderr.
    Logs { id: String },
    /// Stop a process: SIGTERM, then SIGKILL after the grace period.
    Stop {
        id: String,
        #[arg(long, default_value_t = 10)]
        grace: u32,
        #[arg(long)]
        json: bool,
    },
    /// Forget a finished process.
    Delete { id: String },
    /// Wait for a process to end; exits with its code.
    Wait {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Run one command in a fresh zone and print its result.
    #[command(after_help = exit_code::SANDBOX_HELP)]
    Sandbox {
        /// An OCI bundle directory (config.json + rootfs) as the zone's root.
        #[arg(long)]
        bundle: Option<String>,
        /// A policy file or preset (minimal, standard, strict).
        #[arg(long)]
        policy: Option<String>,
        /// Kill the task and its zone after this long (500ms, 30s, 10m).
        #[arg(long)]
        timeout: Option<String>,
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        #[arg(long)]
        cwd: Option<String>,
        /// Keep the zone after the task.
        #[arg(long)]
        keep_zone: bool,
        #[arg(long)]
        json: bool,
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Stored task results.
    #[command(subcommand)]
    Task(TaskCommand),
    /// Stream zone and task events.
    Events {
        #[arg(long)]
        zone: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Resource use of every zone.
    Top {
        #[arg(long)]
        json: bool,
    },
    /// The daemon's version and the enforcement this node can apply.
    Info {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ZoneCommand {
    Create {
        name: String,
        /// A policy file or preset (minimal, standard, strict); standard when omitted.
        #[arg(long)]
        policy: Option<String>,
        #[arg(long)]
        bundle: Option<String>,
        #[arg(long)]
        json: bool,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    Get {
        zone: String,
        #[arg(long)]
        json: bool,
    },
    Delete {
        zone: String,
        /// Kill running work instead of refusing.
        #[arg(long)]
        force: bool,
    },
    /// The enforcement in force and observed facts; exits 1 if a check fails.
    Verify {
        zone: String,
        #[arg(long)]
        json: bool,
    },
    /// Replace a running zone's policy in place.
    Update {
        zone: String,
        #[arg(long)]
        policy: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum TaskCommand {
    Get {
        task_id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Parse and print a preset, a policy file, or a zone's policy.
    Show {
        what: Option<String>,
        #[arg(long)]
        zone: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rauha: cannot start: {e}");
            std::process::exit(i32::from(exit_code::RAUHA_ERROR));
        }
    };
    let code = match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rauha: {}", format!("{e:#}").replace('\n', " "));
            i32::from(exit_code::RAUHA_ERROR)
        }
    };
    std::process::exit(code);
}

async fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    let addr = cli.addr;
    let command = match cli.command {
        Command::Policy(PolicyCommand::Show { what, zone, json }) => {
            return node_cmd::policy_show(&addr, what, zone, json).await
        }
        Command::Daemon(command) => command,
    };
    let mut c = connect::connect(&addr).await?;
    match command {
        DaemonCommand::Zone(cmd) => zone_cmd::run(&mut c, cmd).await,
        DaemonCommand::Run {
            zone,
            env,
            cwd,
            json,
            command,
        } => process_cmd::run(&mut c, zone, process_cmd::spec(command, env, cwd)?, json).await,
        DaemonCommand::Ps { zone, json } => process_cmd::ps(&mut c, zone, json).await,
        DaemonCommand::Exec {
            zone,
            env,
            cwd,
            command,
        } => process_cmd::exec(&mut c, zone, process_cmd::spec(command, env, cwd)?).await,
        DaemonCommand::Logs { id } => process_cmd::logs(&mut c, id).await,
        DaemonCommand::Stop { id, grace, json } => process_cmd::stop(&mut c, id, grace, json).await,
        DaemonCommand::Delete { id } => process_cmd::delete(&mut c, id).await,
        DaemonCommand::Wait { id, json } => process_cmd::wait(&mut c, id, json).await,
        DaemonCommand::Sandbox {
            bundle,
            policy,
            timeout,
            env,
            cwd,
            keep_zone,
            json,
            command,
        } => {
            let spec = process_cmd::spec(command, env, cwd)?;
            sandbox_cmd::sandbox(
                &mut c,
                sandbox_cmd::SandboxArgs {
                    spec,
                    policy,
                    bundle,
                    timeout,
                    keep_zone,
                    json,
                },
            )
            .await
        }
        DaemonCommand::Task(TaskCommand::Get { task_id, json }) => {
            sandbox_cmd::task_get(&mut c, task_id, json).await
        }
        DaemonCommand::Events { zone, json } => node_cmd::events(&mut c, zone, json).await,
        DaemonCommand::Top { json } => zone_cmd::top(&mut c, json).await,
        DaemonCommand::Info { json } => node_cmd::info(&mut c, json).await,
    }
}
