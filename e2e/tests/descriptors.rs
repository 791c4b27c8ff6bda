//! A zone holds no descriptor of the host that it was not given
//! (docs/security.md): not what rauhad inherited from whoever started it,
//! not the agent's own; no working directory through a `/proc` magic link
//! (CVE-2024-21626); and the zone's PID 1 is no writable view of a host
//! binary (CVE-2019-5736).

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rauha_e2e::{assert_only_fds, host_fds, ready, text, Daemon, Leaks, LIST_OWN_FDS};

/// Tries to write to each of rauhad's inherited numbers from the zone.
const WRITE_INHERITED: &str =
    "for n in 7 8 9; do (echo injected >&$n) 2>/dev/null && echo wrote-$n; done; true";

/// The zone agents' host pids (launcher and PID 1) of this daemon.
fn agent_pids(d: &Daemon) -> Vec<u32> {
    d.zone_pids()
        .into_iter()
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
            argv0.ends_with(b"rauha-guest-agent")
        })
        .collect()
}

/// `rauha logs ID` once the process printed its fd listing (its last line
/// lists fd 2).
fn logs_when_listed(d: &Daemon, id: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = text(&d.cli(&["logs", id]).stdout);
        if rauha_e2e::parse_fd_listing(&out).contains_key(&2) || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_zone_holds_no_descriptor_that_rauhad_inherited() {
    if !ready() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("rauha-fds-{}", std::process::id()));
    let leaks = Leaks::new(&dir);
    let d = Daemon::start_inheriting(&leaks.inherit());

    // rauhad keeps them (they are not its to close) but marks them
    // close-on-exec: O_CLOEXEC is 02000000 in fdinfo's octal flags.
    for n in Leaks::NUMBERS {
        let info = std::fs::read_to_string(format!("/proc/{}/fdinfo/{n}", d.pid()))
            .expect("rauhad's fdinfo");
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
            .expect("flags");
        assert_ne!(
            flags & 0o2000000,
            0,
            "rauhad's fd {n} is close-on-exec: {info}"
        );
    }

    let script = format!("{LIST_OWN_FDS}; {WRITE_INHERITED}");
    // A sandbox task.
    let out = d.cli(&["sandbox", "--", "sh", "-c", &script]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_only_fds(&text(&out.stdout), &[0, 1, 2], "rauha sandbox");
    assert!(
        !text(&out.stdout).contains("wrote-"),
        "{}",
        text(&out.stdout)
    );

    // `rauha exec` and `rauha run` in a zone, and its agent.
    let out = d.cli(&["zone", "create", "fds"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = d.cli(&["exec", "fds", "--", "sh", "-c", &script]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_only_fds(&text(&out.stdout), &[0, 1, 2], "rauha exec");
    assert!(
        !text(&out.stdout).contains("wrote-"),
        "{}",
        text(&out.stdout)
    );
    let out = d.cli(&["run", "--zone", "fds", "--", "sh", "-c", &script]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let logs = logs_when_listed(&d, text(&out.stdout).trim());
    assert_only_fds(&logs, &[0, 1, 2], "rauha run");
    assert!(!logs.contains("wrote-"), "{logs}");

    // The agent (launcher and PID 1) holds none of them either.
    let agents = agent_pids(&d);
    assert_eq!(agents.len(), 2, "launcher and PID 1: {agents:?}");
    let leaked = leaks.targets();
    for pid in &agents {
        let fds = host_fds(*pid);
        for target in fds.values() {
            assert!(
                !leaked.contains(target),
                "agent {pid} holds an inherited descriptor: {fds:?}"
            );
        }
    }

    d.cli(&["zone", "delete", "--force", "fds"]);
    leaks.untouched();
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_secret_on_a_pipe_is_the_one_descriptor_added() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    let mut set = std::process::Command::new(rauha_e2e::bin_dir().join("rauha"))
        .args(["secret", "set", "TOKEN"])
        .env("RAUHA_ADDR", d.addr())
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("rauha secret set");
    use std::io::Write;
    set.stdin
        .take()
        .expect("stdin")
        .write_all(b"value")
        .expect("write");
    assert!(set.wait().expect("wait").success());
    let out = d.cli(&[
        "sandbox",
        "--secret",
        "TOKEN=fd:5",
        "--",
        "sh",
        "-c",
        LIST_OWN_FDS,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_only_fds(&text(&out.stdout), &[0, 1, 2, 5], "a task given fd:5");
}

#[test]
fn a_working_directory_through_a_proc_magic_link_is_refused() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    let out = d.cli(&["zone", "create", "cwd"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The agent holds directories of the host open (its cgroups, opened
    // before pivot_root): what runc's CVE-2024-21626 reached through
    // `/proc/self/fd/N` as a working directory.
    let agent_dirs: Vec<RawFd> = agent_pids(&d)
        .into_iter()
        .flat_map(|pid| {
            host_fds(pid)
                .into_keys()
                .filter(move |fd| Path::new(&format!("/proc/{pid}/fd/{fd}")).is_dir())
        })
        .collect();
    assert!(
        !agent_dirs.is_empty(),
        "the agent holds a host directory (the test's premise)"
    );
    let mut paths: Vec<String> = (0..24).map(|n| format!("/proc/self/fd/{n}")).collect();
    paths.extend(["/proc/self/cwd", "/proc/1/cwd", "/proc/1/root"].map(String::from));
    for cwd in &paths {
        let out = d.cli(&[
            "exec",
            "--cwd",
            cwd,
            "cwd",
            "--",
            "sh",
            "-c",
            "pwd; ls .. | head -3",
        ]);
        assert_eq!(
            out.status.code(),
            Some(125),
            "--cwd {cwd} is refused; it ran in {:?}",
            text(&out.stdout)
        );
        let err = text(&out.stderr);
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
    let out = d.cli(&["exec", "--cwd", "/proc/self/fd/5", "cwd", "--", "pwd"]);
    let err = text(&out.stderr);
    assert!(
        err.contains("magic link")
            || err.contains("does not exist")
            || err.contains("not a directory"),
        "{err}"
    );
    // A plain directory still works.
    let out = d.cli(&["exec", "--cwd", "/usr", "cwd", "--", "pwd"]);
    assert_eq!(text(&out.stdout), "/usr\n", "{}", text(&out.stderr));
    d.cli(&["zone", "delete", "--force", "cwd"]);
}

#[test]
fn the_zone_agent_is_no_writable_view_of_a_host_binary() {
    if !ready() {
        return;
    }
    let agent_bin: PathBuf = rauha_e2e::bin_dir().join("rauha-guest-agent");
    let before = std::fs::read(&agent_bin).expect("agent binary");
    let d = Daemon::start();
    let out = d.cli(&["zone", "create", "exe"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let agents = agent_pids(&d);
    assert_eq!(agents.len(), 2, "launcher and PID 1: {agents:?}");
    for pid in &agents {
        let exe = format!("/proc/{pid}/exe");
        let link = std::fs::read_link(&exe).expect("exe link");
        assert!(
            link.to_string_lossy()
                .starts_with("/memfd:rauha-guest-agent"),
            "agent {pid} runs from {}, not a sealed copy",
            link.display()
        );
        let f = File::open(&exe).expect("open exe");
        // SAFETY: fcntl on an fd we own.
        let seals = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GET_SEALS) };
        assert!(
            seals >= 0 && seals & libc::F_SEAL_WRITE != 0 && seals & libc::F_SEAL_SEAL != 0,
            "agent {pid}'s binary is sealed against writes: seals {seals:#x}"
        );
        // Not even host root can change it.
        let w = std::fs::OpenOptions::new()
            .write(true)
            .open(&exe)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"x"));
        assert!(w.is_err(), "host root wrote agent {pid}'s binary");
    }
    // From the zone: neither its PID 1's binary nor its own (a host binary
    // through the read-only view) can be opened for writing.
    let out = d.cli(&[
        "exec",
        "exe",
        "--",
        "sh",
        "-c",
        "(: >> /proc/1/exe) 2>/dev/null && echo wrote-1; \
         (: >> /proc/$$/exe) 2>/dev/null && echo wrote-self; echo done",
    ]);
    assert_eq!(text(&out.stdout), "done\n", "{}", text(&out.stderr));
    d.cli(&["zone", "delete", "--force", "exe"]);
    assert_eq!(
        std::fs::read(&agent_bin).expect("agent binary"),
        before,
        "the agent binary on the host is unchanged"
    );
}
