//! The launcher: the process rauhad starts. It joins the zone's cgroups,
//! unshares the namespaces and forks the zone's PID 1, then stays as its
//! parent (outside the zone's pid namespace, inside its cgroup) until PID 1
//! ends, so rauhad can tell when a zone dies.

use std::io;

use rauha_guest_agent::config::ZoneConfig;
use rauha_guest_agent::handshake::Report;

use crate::kernel::check;
use crate::report;

pub fn run(config: ZoneConfig) -> io::Result<i32> {
    let pid = std::process::id().to_string();
    for procs in &config.cgroup_procs {
        std::fs::write(procs, &pid)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot join cgroup {procs}: {e}")))?;
    }
    // Made here, in the host's pid namespace (its /proc names the helper
    // it forks), before the zone's pid namespace exists (the next fork
    // after that unshare is the zone's PID 1); PID 1 inherits it.
    let userns = config.user_namespace.map(|base| {
        crate::userns::create(base)
            .map(|fd| (fd, base))
            .map_err(|e| format!("user namespace: {e}"))
    });
    let mut flags = libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWCGROUP;
    if !config.host_ipc {
        flags |= libc::CLONE_NEWIPC;
    }
    if !config.host_pid {
        flags |= libc::CLONE_NEWPID;
    }
    match &config.netns {
        None => flags |= libc::CLONE_NEWNET,
        Some(path) => join_netns(path)?,
    }
    // SAFETY: unshare takes only flags.
    check(unsafe { libc::unshare(flags) }).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot create the zone's namespaces: {e}"),
        )
    })?;
    if let Some(procs) = &config.agent_cgroup_procs {
        std::fs::write(procs, &pid)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot join cgroup {procs}: {e}")))?;
    }
    // SAFETY: the launcher is single-threaded, so the child may run
    // arbitrary code after fork.
    let child = check(unsafe { libc::fork() })?;
    if child == 0 {
        let code = match crate::init::run(config, userns) {
            Ok(()) => 0,
            Err(e) => {
                let _ = report::send(&Report::Error(e.to_string()));
                1
            }
        };
        std::process::exit(code);
    }
    report::send(&Report::Pid(child as u32))?;
    report::release_stdio();
    let mut status = 0;
    loop {
        // Any child: the user namespace's helper is reaped here too.
        // SAFETY: status points to a valid c_int.
        let r = unsafe { libc::waitpid(-1, &mut status, 0) };
        if r == child {
            break;
        }
        if r < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    })
}

/// Enters an existing network namespace (CNI's, for a pod).
fn join_netns(path: &str) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let ns = std::fs::File::open(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot open network namespace {path}: {e}"),
        )
    })?;
    // SAFETY: setns on an fd we hold open.
    check(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) })
        .map(drop)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot join network namespace {path}: {e}"),
            )
        })
}
