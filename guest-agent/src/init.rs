//! PID 1 of the zone: sets the zone up from inside its namespaces, says
//! `ready`, then hands over to the supervisor.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::Path;

use rauha_guest_agent::config::ZoneConfig;
use rauha_guest_agent::handshake::Report;

use crate::hardening::{Prepared, ZoneCgroups};
use crate::kernel::{check, mount};
use crate::{report, rootfs, supervisor};

pub fn run(config: ZoneConfig) -> io::Result<()> {
    // Not dumpable: no process of the zone can ptrace the agent or read its
    // /proc files, whatever its policy allows.
    // SAFETY: prctl with integer arguments.
    check(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) })?;
    // Nothing mounted from here on propagates back to the host. Slave, not
    // private: the host's mounts in the zone's container directory must
    // still reach the zone (rootfs::build makes the rest of the root private).
    mount("", Path::new("/"), "", libc::MS_REC | libc::MS_SLAVE, "")?;
    let name = config.hostname.as_bytes();
    // SAFETY: pointer and length describe a valid buffer.
    check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) })?;
    if config.loopback {
        loopback_up()?;
    }
    let state = Path::new(&config.state_dir);
    let socket = state.join("agent.sock");
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot listen on {}: {e}", socket.display()),
        )
    })?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
    // Opened before pivot_root: the host paths are out of reach after it.
    let cgroups = std::sync::Arc::new(ZoneCgroups::open(
        config.work_cgroup_procs.as_deref(),
        &config.container_cgroups,
    )?);
    let root = state.join("root");
    rootfs::build(
        &config.root,
        config.workspace.as_ref(),
        config.containers_dir.as_deref(),
        &root,
    )?;
    rootfs::pivot(&root)?;
    let prepared = Prepared::new(&config.hardening)?.with_cgroups(cgroups);
    report::send(&Report::Ready(prepared.ready()))?;
    report::release_stdio();
    supervisor::run(listener, prepared, config.hardening)
}

/// Brings `lo` up in the zone's fresh network namespace.
fn loopback_up() -> io::Result<()> {
    // SAFETY: plain socket creation.
    let fd =
        check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: fd is a socket and req a valid ifreq for these ioctls.
    let result = unsafe {
        check(libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req)).and_then(|_| {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            check(libc::ioctl(fd, libc::SIOCSIFFLAGS, &req))
        })
    };
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    result
        .map(drop)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bring loopback up: {e}")))
}
