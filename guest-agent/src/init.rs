//! PID 1 of the zone: sets the zone up from inside its namespaces, says
//! `ready`, then hands over to the supervisor.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::Path;

use rauha_guest_agent::config::ZoneConfig;
use rauha_guest_agent::handshake::Report;

use std::os::fd::{AsRawFd, OwnedFd};

use crate::hardening::{Prepared, ZoneCgroups};
use crate::kernel::{check, mount};
use crate::{report, rootfs, supervisor, userns};

/// `userns`: the zone's user namespace, made by the launcher when rauhad
/// asked for one (or why it could not be).
pub fn run(config: ZoneConfig, userns: Option<Result<(OwnedFd, u32), String>>) -> io::Result<()> {
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
    // Written from inside the zone's network and IPC namespaces: each
    // applies there only.
    for (key, value) in &config.sysctls {
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        std::fs::write(&path, value).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot set sysctl {key} = {value}: {e}"))
        })?;
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
    let (userns, userns_note) = user_namespace(&config, userns);
    // The zone's own network namespace belongs to the host's user
    // namespace, where a process of the zone's has no capability: what
    // CAP_NET_BIND_SERVICE would allow, the namespace allows everyone.
    const CAP_NET_BIND_SERVICE: u32 = 10;
    if userns.is_some()
        && config.netns.is_none()
        && config
            .hardening
            .capabilities
            .contains(&CAP_NET_BIND_SERVICE)
    {
        std::fs::write("/proc/sys/net/ipv4/ip_unprivileged_port_start", "0").map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open the zone's low ports to its root: {e}"),
            )
        })?;
    }
    let root = state.join("root");
    rootfs::build(
        &config.root,
        config.workspace.as_ref(),
        config.containers_dir.as_deref(),
        config.resolv_conf.as_deref(),
        &root,
        userns.as_ref().map(|(fd, base)| rootfs::Idmap {
            userns: fd.as_raw_fd(),
            base: *base,
        }),
    )?;
    rootfs::pivot(&root)?;
    let prepared = Prepared::new(&config.hardening)?
        .with_cgroups(cgroups)
        .with_userns(userns.map(|(fd, base)| (std::sync::Arc::new(fd), base)))
        .with_note(userns_note);
    report::send(&Report::Ready(prepared.ready()))?;
    report::release_stdio();
    supervisor::run(listener, prepared, config.hardening)
}

/// The zone's user namespace, when rauhad asked for one and the kernel can
/// have it: every path the zone must write has to allow an idmapped mount.
/// Otherwise none, and the note that says why.
fn user_namespace(
    config: &ZoneConfig,
    made: Option<Result<(OwnedFd, u32), String>>,
) -> (Option<(OwnedFd, u32)>, Option<String>) {
    let (fd, base) = match made {
        None => return (None, Some("user namespace: not asked for (the zone's root is host root, without capabilities the policy does not give)".into())),
        Some(Err(why)) => return (None, Some(why)),
        Some(Ok(made)) => made,
    };
    for (source, recursive) in rootfs::idmapped_sources(&config.root, config.workspace.as_ref()) {
        if let Err(e) = userns::can_idmap(Path::new(&source), fd.as_raw_fd(), recursive) {
            userns::forget_probed();
            return (
                None,
                Some(format!(
                    "user namespace: not in force: {source} cannot be shown idmapped ({e}; its filesystem or this kernel has no idmapped mounts), so the zone's root is host root"
                )),
            );
        }
    }
    // The workspace's root shows the upper layer's owner: the zone's ids
    // for the repository root's (rauhad gave it the repository's).
    if let Some(w) = &config.workspace {
        use std::os::unix::fs::MetadataExt;
        if let Ok(meta) = std::fs::metadata(&w.upper) {
            let shift = |id: u32| if id < userns::SIZE { base + id } else { id };
            if let Err(e) =
                std::os::unix::fs::chown(&w.upper, Some(shift(meta.uid())), Some(shift(meta.gid())))
            {
                userns::forget_probed();
                return (None, Some(format!("user namespace: not in force: cannot give the workspace to the zone's root ({e})")));
            }
        }
    }
    (Some((fd, base)), None)
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
