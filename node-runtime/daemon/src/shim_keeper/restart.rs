//! Starting a dead shim again: what is known of it (from `/proc` at its
//! hello), whether it is gone, and the new process in its cgroups with its
//! sockets.

use super::*;

/// How to start the shim again: read from its process when it says hello.
pub(super) fn describe(pid: i32) -> anyhow::Result<Kept> {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    // SAFETY: pidfd_open has no memory arguments; the result is checked.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as RawFd;
    if pidfd < 0 {
        // Without it, the shim's end could not be told from pid reuse.
        return Err(std::io::Error::last_os_error()).context("pidfd_open");
    }
    // SAFETY: pidfd_open returned a fresh fd.
    let pidfd = Some(unsafe { OwnedFd::from_raw_fd(pidfd) });
    let exe = std::fs::read_link(proc.join("exe")).context("exe")?;
    // An upgraded binary: start the one now at the same path.
    let exe = PathBuf::from(
        exe.to_string_lossy()
            .trim_end_matches(" (deleted)")
            .to_string(),
    );
    if exe.file_name() != Some(std::ffi::OsStr::new(SHIM_BINARY)) {
        bail!("{} is not a {SHIM_BINARY}", exe.display());
    }
    let split = |b: Vec<u8>| -> Vec<OsString> {
        b.split(|c| *c == 0)
            .filter(|s| !s.is_empty())
            .map(|s| OsString::from_vec(s.to_vec()))
            .collect()
    };
    let args = split(std::fs::read(proc.join("cmdline")).context("cmdline")?);
    let env = split(std::fs::read(proc.join("environ")).context("environ")?)
        .into_iter()
        .filter_map(|kv| {
            let kv = kv.into_vec();
            let eq = kv.iter().position(|c| *c == b'=')?;
            let (k, v) = kv.split_at(eq);
            let k = OsString::from_vec(k.to_vec());
            // Nothing that would change what the loader runs.
            let loader = k.as_encoded_bytes().starts_with(b"LD_");
            (k != keeper::RESUME_ENV && !loader).then(|| (k, OsString::from_vec(v[1..].to_vec())))
        })
        .collect();
    let cwd = std::fs::read_link(proc.join("cwd")).context("cwd")?;
    let cgroups = std::fs::read_to_string(proc.join("cgroup"))
        .map(|t| cgroup_procs(&t, Path::new("/sys/fs/cgroup")))
        .unwrap_or_default();
    let address = args
        .iter()
        .skip_while(|a| a.as_os_str() != "-socket")
        .nth(1)
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Kept {
        pidfd,
        exe,
        args,
        env,
        cwd,
        cgroups,
        address,
        ..Kept::default()
    })
}

/// The `cgroup.procs` files of the cgroups in a `/proc/<pid>/cgroup`.
pub(super) fn cgroup_procs(text: &str, root: &Path) -> Vec<PathBuf> {
    let unified_only = root.join("cgroup.controllers").exists();
    text.lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
            let dir = match ctrls {
                "" if unified_only => root.to_path_buf(),
                "" => root.join("unified"),
                c => root.join(c.strip_prefix("name=").unwrap_or(c)),
            };
            Some(dir.join(path.trim_start_matches('/')).join("cgroup.procs"))
        })
        .filter(|p| p.exists())
        .collect()
}

/// Whether the shim is gone (waits a little for it).
pub(super) fn gone(kept: &Kept) -> bool {
    let Some(pidfd) = &kept.pidfd else {
        return false;
    };
    let mut p = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut p, 1, EXIT_GRACE.as_millis() as i32) };
    r > 0
}

/// Starts the shim again with what it left here.
pub(super) fn restart(kept: &Kept) -> anyhow::Result<std::process::Child> {
    let listener = kept.listener.as_ref().context("no listening socket")?;
    // SAFETY: memfd_create with a NUL-terminated name; the result is checked.
    let memfd = unsafe { libc::memfd_create(c"rauha-shim-unanswered".as_ptr(), libc::MFD_CLOEXEC) };
    if memfd < 0 {
        return Err(std::io::Error::last_os_error()).context("memfd_create");
    }
    // SAFETY: a fresh fd we own.
    let memfd = unsafe { OwnedFd::from_raw_fd(memfd) };
    let records = keeper::encode_pending(
        kept.pending
            .iter()
            .map(|((n, _), frame)| (*n, frame.as_slice())),
    );
    std::fs::File::from(memfd.try_clone().context("dup of the memfd")?)
        .write_all(&records)
        .context("writing the unanswered requests")?;
    let resume = Resume {
        listener: listener.as_raw_fd(),
        conns: kept
            .conns
            .iter()
            .map(|(n, fd)| (*n, fd.as_raw_fd()))
            .collect(),
        pending: memfd.as_raw_fd(),
    };
    let inherit: Vec<RawFd> = std::iter::once(resume.listener)
        .chain(resume.conns.iter().map(|(_, fd)| *fd))
        .chain(std::iter::once(resume.pending))
        .collect();
    let mut cmd = std::process::Command::new(&kept.exe);
    cmd.args(kept.args.iter().skip(1))
        .env_clear()
        .envs(kept.env.iter().map(|(k, v)| (k, v)))
        .env(keeper::RESUME_ENV, resume.to_env())
        .current_dir(&kept.cwd)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: between fork and exec only async-signal-safe calls: setsid
    // (the shim leads its own session, as containerd starts it) and fcntl
    // to let the kept sockets through exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            for fd in &inherit {
                if libc::fcntl(*fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", kept.exe.display()))?;
    let pid = child.id();
    for procs in &kept.cgroups {
        if let Err(e) = std::fs::write(procs, pid.to_string()) {
            tracing::warn!(
                pid,
                "shim keeper: cannot move the shim to {}: {e}",
                procs.display()
            );
        }
    }
    Ok(child)
}
