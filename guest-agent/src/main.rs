//! `rauha-guest-agent`: started by rauhad as `rauha-guest-agent zone`, with
//! the zone's [`ZoneConfig`](rauha_guest_agent::config::ZoneConfig) as one
//! postcard frame on stdin. It joins the zone's cgroups, unshares the
//! namespaces and forks the zone's PID 1, which builds the root, reports
//! `ready <json>` (or `error <reason>`) on stdout and then serves the host.

mod container_root;
mod hardening;
mod init;
mod kernel;
mod landlock;
mod launch;
mod report;
mod rootfs;
mod supervisor;
mod userns;

use std::io::Read;
use std::process::ExitCode;

use rauha_guest_agent::config::ZoneConfig;
use rauha_guest_agent::frame;
use rauha_guest_agent::handshake::Report;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("zone") => {}
        Some("--version") => {
            println!("rauha-guest-agent {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("rauha-guest-agent: run by rauhad as `rauha-guest-agent zone` with the zone's configuration on stdin");
            return ExitCode::from(2);
        }
    }
    // rauhad starts the agent from a sealed copy (`/proc/self/fd/N`), so
    // the kernel named it `N`: its name in ps, and in what `zone verify`
    // tells apart from the zone's work, is its own again.
    // SAFETY: prctl with a NUL-terminated name of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"rauha-guest-agent".as_ptr(), 0, 0, 0) };
    // rauhad hands the agent stdin (its configuration), stdout (its report)
    // and stderr (its log). Anything else open here came by mistake; it is
    // closed, so it reaches neither the zone's PID 1 nor what it starts.
    if let Err(e) = rauha_fd::close_from(3) {
        fail(format!("cannot close inherited descriptors: {e}"));
        return ExitCode::from(1);
    }
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().lock().read_to_end(&mut input) {
        fail(format!("cannot read the zone configuration: {e}"));
        return ExitCode::from(1);
    }
    let config: ZoneConfig = match frame::decode_from(&mut input) {
        Ok(Some(c)) => c,
        Ok(None) => {
            fail("the zone configuration on stdin is incomplete".into());
            return ExitCode::from(1);
        }
        Err(e) => {
            fail(format!("the zone configuration on stdin is malformed: {e}"));
            return ExitCode::from(1);
        }
    };
    match launch::run(config) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            fail(e.to_string());
            ExitCode::from(1)
        }
    }
}

/// Reports a failed start to rauhad (one `error` line).
fn fail(reason: String) {
    let _ = report::send(&Report::Error(reason));
}
