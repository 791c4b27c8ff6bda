//! Starts a zone's agent and waits for it to say `ready`.
//!
//! The agent's launcher reads the zone's configuration (one frame) on
//! stdin and reports on stdout (`rauha_guest_agent::handshake`): the host
//! pid of the zone's PID 1, then ready or an error. Its stderr goes to the
//! zone's `agent.log`, which outlives this daemon.

use std::path::Path;

use super::sealed::SealedBinary;
use std::process::Stdio;
use std::time::Duration;

use rauha_guest_agent::config::ZoneConfig;
use rauha_guest_agent::frame;
use rauha_guest_agent::handshake::Report;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::host;
use rauha_backend::{BackendError, ZoneHandle};

const READY_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn start_agent(
    agent: &SealedBinary,
    config: &ZoneConfig,
    state_dir: &Path,
) -> Result<ZoneHandle, BackendError> {
    let log_path = state_dir.join("agent.log");
    let log = std::fs::File::create(&log_path).map_err(|source| BackendError::Io {
        what: format!("cannot create {}", log_path.display()),
        source,
    })?;
    let mut command = tokio::process::Command::new(agent.exec_path());
    command
        .arg0("rauha-guest-agent")
        .arg("zone")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log)
        .env_clear();
    // The agent gets stdin (its configuration), stdout (its report) and
    // stderr (its log), and nothing of rauhad's: rauhad's own descriptors
    // are close-on-exec (what it inherited is marked so at start), and the
    // agent closes everything above stdio before it reads its
    // configuration. No `pre_exec` here on purpose: it would make the
    // spawn a fork of all of rauhad (its page tables copied, milliseconds
    // per zone) instead of a vfork-style posix_spawn.
    let mut child = command.spawn().map_err(|source| BackendError::Io {
        what: format!(
            "cannot start the zone agent (sealed copy of {})",
            agent.source().display()
        ),
        source,
    })?;
    let bytes = frame::encode(config).map_err(|e| BackendError::Handshake {
        what: "cannot encode the zone configuration",
        source: Box::new(e),
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(&bytes)
            .await
            .map_err(|e| BackendError::Handshake {
                what: "cannot send the zone configuration",
                source: Box::new(e),
            })?;
    }
    let stdout = child
        .stdout
        .take()
        .ok_or(BackendError::Incomplete("no stdout pipe"))?;
    let mut lines = BufReader::new(stdout).lines();
    let mut agent_pid = None;
    let outcome = tokio::time::timeout(READY_TIMEOUT, async {
        // The launcher writes `pid`, the agent `ready`: two processes on one
        // pipe, so either may come first (under load `ready` often does).
        let mut ready = None;
        while let Some(line) = lines
            .next_line()
            .await
            .map_err(|e| BackendError::Handshake {
                what: "cannot read the report",
                source: Box::new(e),
            })?
        {
            let report = Report::parse(&line).map_err(|e| BackendError::Handshake {
                what: "bad report",
                source: Box::new(e),
            })?;
            match report {
                Some(Report::Pid(pid)) => agent_pid = Some(pid),
                Some(Report::Ready(r)) => ready = Some(r),
                Some(Report::Error(reason)) => return Err(BackendError::AgentRefused { reason }),
                None => {}
            }
            if let (Some(r), Some(_)) = (&ready, agent_pid) {
                return Ok(r.clone());
            }
        }
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail = log.lines().last().unwrap_or("no output");
        Err(BackendError::AgentExited {
            log: tail.to_string(),
        })
    })
    .await;
    // The launcher lives as long as the zone; reap it when it ends.
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    let ready = match outcome {
        Ok(r) => r?,
        Err(_) => {
            return Err(BackendError::AgentNotReady {
                secs: READY_TIMEOUT.as_secs(),
            })
        }
    };
    let agent_pid =
        agent_pid.ok_or(BackendError::Incomplete("the agent did not report its pid"))?;
    let agent_start_ticks = host::start_ticks(agent_pid).ok_or(BackendError::AgentGone)?;
    Ok(ZoneHandle {
        zone_id: config
            .zone_id
            .parse()
            .map_err(|_| BackendError::Incomplete("zone id is not a UUID"))?,
        agent_pid,
        agent_start_ticks,
        socket: state_dir.join("agent.sock"),
        state_dir: state_dir.to_path_buf(),
        ready,
        bpf_zone: 0,
        cgroup: None,
    })
}
