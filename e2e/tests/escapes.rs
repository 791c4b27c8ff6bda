//! The ways out that real runtimes have been bitten by, tried from inside
//! a zone under each preset (docs/security.md): writes to the host through
//! `/proc` and `/sys`, device nodes, `open_by_handle_at`, keyrings,
//! `userfaultfd`, `perf_event_open`, `bpf`; signals, ptrace and
//! `/proc/PID/mem` against the zone's agent and rauhad. Each must fail, and
//! the host must be as it was. (Pods default to `standard`: docs/shim.md.)

use rauha_e2e::{json, ready, text, Daemon};

/// The probe's operations, each of which must not print `: ok`.
fn attempts(rauhad: u32) -> Vec<String> {
    let mut a: Vec<String> = [
        "write /proc/sysrq-trigger",
        "write /proc/sys/kernel/core_pattern",
        "write /proc/sys/kernel/modprobe",
        "read /proc/kcore",
        "read /proc/kmsg",
        "write /sys/kernel/mm/ksm/run",
        "write /sys/fs/cgroup/cgroup.procs",
        "write /sys/fs/cgroup/memory/release_agent",
        "read /sys/firmware/dmi/tables/DMI",
        "mknod /tmp/null2",
        "syscall open_by_handle_at",
        "syscall keyctl",
        "syscall userfaultfd",
        "syscall perf_event_open",
        "syscall bpf",
        "syscall clone_newuser",
        "syscall clone_newnet",
        "syscall clone3",
        "syscall unshare_user",
        "ptrace 1",
        "mem 1",
        "read /proc/1/environ",
    ]
    .map(String::from)
    .to_vec();
    // rauhad's host pid names nothing in the zone's pid namespace.
    a.extend([
        format!("kill {rauhad}"),
        format!("ptrace {rauhad}"),
        format!("mem {rauhad}"),
    ]);
    a
}

#[test]
fn nothing_of_the_host_is_reached_from_a_zone_under_each_preset() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    let ws = d.dir.join("probe");
    std::fs::create_dir_all(&ws).expect("workspace");
    std::fs::copy(
        rauha_e2e::bin_dir().join("rauha-probe"),
        ws.join("rauha-probe"),
    )
    .expect("copy rauha-probe (cargo build -p rauha-e2e)");
    let core_pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").expect("read");
    // Absent on a kernel without modules.
    let modprobe = std::fs::read_to_string("/proc/sys/kernel/modprobe").ok();
    let tries = attempts(d.pid());
    let script: String = tries
        .iter()
        .map(|t| format!("/workspace/rauha-probe {t}; "))
        .chain(["ls /dev; echo end; /workspace/rauha-probe thread".to_string()])
        .collect();
    for preset in ["standard", "strict"] {
        let out = d.cli(&[
            "sandbox",
            "--policy",
            preset,
            "--repo-path",
            &ws.to_string_lossy(),
            "--",
            "sh",
            "-c",
            &script,
        ]);
        let stdout = text(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("\nend\n"),
            "{preset}: the probe ran: {stdout}{}",
            text(&out.stderr)
        );
        for t in &tries {
            let line = stdout
                .lines()
                .find(|l| l.starts_with(&format!("{t}:")))
                .unwrap_or_else(|| panic!("{preset}: no answer for {t}: {stdout}"));
            assert!(!line.ends_with(": ok"), "{preset}: {line}");
        }
        // Threads still start: libc falls back from clone3 (ENOSYS) to clone.
        assert!(
            stdout.contains("thread: ok"),
            "{preset}: threads start: {stdout}"
        );
        assert!(
            stdout.contains("syscall clone3: ENOSYS"),
            "{preset}: clone3 says ENOSYS so libc falls back: {stdout}"
        );
        // Device nodes: the default set only.
        let devices: Vec<&str> = stdout
            .lines()
            .skip(tries.len())
            .take_while(|l| *l != "end")
            .collect();
        for dev in &devices {
            assert!(
                [
                    "fd", "full", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin",
                    "stdout", "tty", "urandom", "zero"
                ]
                .contains(dev),
                "{preset}: /dev/{dev} is beyond the default set: {devices:?}"
            );
        }
    }
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/core_pattern").expect("read"),
        core_pattern
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/modprobe").ok(),
        modprobe
    );
}

/// A task that signals its zone's PID 1 (the agent) does not end the zone:
/// SIGKILL is ignored by the kernel, SIGTERM and SIGINT by the agent unless
/// they come from the host. Before, `kill -TERM 1` lost every result of
/// the zone ("the zone's agent died before the task ended").
#[test]
fn a_task_cannot_end_its_zones_agent() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    for preset in ["standard", "strict"] {
        let out = d.cli(&[
            "sandbox",
            "--policy",
            preset,
            "--json",
            "--",
            "sh",
            "-c",
            "for s in TERM INT KILL HUP QUIT USR1 STOP; do kill -$s 1; done; sleep 0.2; echo alive",
        ]);
        let result = rauha_e2e::json(&out);
        assert_eq!(
            result["status"],
            "succeeded",
            "{preset}: {result}\n{}",
            text(&out.stderr)
        );
        assert_eq!(result["stdout"], "alive\n", "{preset}: {result}");
    }
    // A kept zone answers after its task signalled PID 1.
    let out = d.cli(&["zone", "create", "sig"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Refused (EPERM: the agent is host root, the zone's root is not) or
    // ignored (a zone without a user namespace): either way PID 1 stays.
    let out = d.cli(&[
        "exec",
        "sig",
        "--",
        "sh",
        "-c",
        "kill -TERM 1 2>/dev/null; kill -INT 1 2>/dev/null; true",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = d.cli(&["exec", "sig", "--", "echo", "still-here"]);
    assert_eq!(text(&out.stdout), "still-here\n", "{}", text(&out.stderr));
    // The host still stops it.
    let out = d.cli(&["zone", "delete", "--force", "sig"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// Removes a file when dropped (a test's host fixture).
struct HostFile(std::path::PathBuf);

impl Drop for HostFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Zone processes are not host root: a host file readable only by root is
/// unreadable in a zone under every preset (and `/etc/shadow-`, where the
/// host has one and the preset shows `/etc`), each zone's root is a host uid range of its own, and the
/// workspace stays writable by the zone's root. A policy's
/// `zone.user_namespace = false` is the explicit way back.
#[test]
fn a_zones_root_is_not_host_root() {
    use std::os::unix::fs::PermissionsExt;
    if !ready() {
        return;
    }
    let d = Daemon::start();
    // In /usr, which every preset shows.
    let secret = HostFile(format!("/usr/local/rauha-e2e-root-only-{}", std::process::id()).into());
    std::fs::write(&secret.0, "s3cret\n").expect("write");
    std::fs::set_permissions(&secret.0, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let path = secret.0.to_str().expect("utf8");
    let mut files = vec![path];
    if std::path::Path::new("/etc/shadow-").exists() {
        files.push("/etc/shadow-");
    }
    let repo = d.dir.join("repo");
    std::fs::create_dir_all(&repo).expect("repo");
    std::fs::write(repo.join("f"), "a\n").expect("f");
    // Linux idmaps tmpfs from 6.3 on; the repository is on tmpfs in the VM.
    let tmpfs_idmaps = !on_tmpfs(&repo) || kernel_at_least(6, 3);
    for preset in ["minimal", "standard", "strict"] {
        // strict shows no /etc at all.
        for file in files
            .iter()
            .filter(|f| preset != "strict" || !f.starts_with("/etc"))
        {
            let out = d.cli(&[
                "sandbox",
                "--json",
                "--policy",
                preset,
                "--repo-path",
                repo.to_str().expect("utf8"),
                "--",
                "sh",
                "-c",
                &format!("cat {file}; echo more >> /workspace/f && echo wrote"),
            ]);
            let r = json(&out);
            let layer = r["enforcement"]["layers"]
                .as_array()
                .expect("layers")
                .iter()
                .find(|l| l["layer"] == "user_namespace")
                .cloned()
                .expect("a user_namespace layer");
            if layer["in_force"] != true && !tmpfs_idmaps {
                // The 6.1 VM: the repository is on tmpfs, which that kernel
                // cannot idmap. The zone's root is host root, and the
                // result says so rather than claiming the layer.
                assert!(
                    layer["detail"]
                        .as_str()
                        .is_some_and(|d| d.contains("cannot be shown idmapped")),
                    "{preset}: {layer}"
                );
                assert_eq!(r["stdout"], "s3cret\nwrote\n", "{preset}: {r}");
                continue;
            }
            assert_eq!(layer["in_force"], true, "{preset}: {layer}");
            let stderr = r["stderr"].as_str().expect("stderr");
            assert!(
                stderr.contains("Permission denied")
                    && !r["stdout"].as_str().unwrap_or("").contains("s3cret"),
                "{preset}: {file} is readable in the zone: {r}"
            );
            assert_eq!(
                r["stdout"], "wrote\n",
                "{preset}: the workspace is writable: {r}"
            );
        }
    }
    // Two live zones: two ranges.
    let map = |zone: &str| {
        assert!(d.cli(&["zone", "create", zone]).status.success());
        let out = d.cli(&["exec", zone, "--", "cat", "/proc/self/uid_map"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let (a, b) = (map("ua"), map("ub"));
    assert_ne!(a, b, "each zone has host ids of its own");
    for m in [&a, &b] {
        let fields: Vec<&str> = m.split_whitespace().collect();
        assert_eq!(fields[0], "0");
        assert_ne!(fields[1], "0", "the zone's root is not host root: {m}");
        assert_eq!(fields[2], "65536");
    }
    // Asked for explicitly, the zone's root is host root again (without
    // capabilities): the file reads.
    let policy = d.dir.join("host-users.toml");
    std::fs::write(&policy, "[zone]\nuser_namespace = false\n").expect("policy");
    let out = d.cli(&[
        "sandbox",
        "--json",
        "--policy",
        policy.to_str().expect("utf8"),
        "--",
        "cat",
        path,
    ]);
    assert_eq!(json(&out)["stdout"], "s3cret\n");
}

/// Whether `path` is on a tmpfs.
fn on_tmpfs(path: &std::path::Path) -> bool {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: statfs writes into the zeroed struct we own.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type == libc::TMPFS_MAGIC
    }
}

/// Whether the running kernel is at least `major.minor`.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    found >= (major, minor)
}

/// A zone whose policy grants CAP_MKNOD and runs with the host's users
/// (`user_namespace = false`): a device node it makes, of the host's disk,
/// opens nothing. Its /dev is `nodev` and holds the host's six standard
/// nodes bound in alone; every other writable mount is `nodev` too.
#[test]
fn a_device_node_a_task_makes_opens_nothing() {
    if !ready() {
        return;
    }
    let (major, minor) = rauha_e2e::host_block_device();
    let dir = std::env::temp_dir().join(format!("rauha-mknod-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let policy = dir.join("mknod.toml");
    std::fs::write(
        &policy,
        "[zone]\nuser_namespace = false\n[capabilities]\nallowed = [\"CAP_MKNOD\"]\n",
    )
    .expect("policy");
    let d = Daemon::start();
    let out = d.cli(&[
        "sandbox",
        "--policy",
        policy.to_str().expect("utf-8"),
        "--json",
        "--",
        "sh",
        "-c",
        &format!(
            "for at in /dev /tmp; do mknod $at/disk b {major} {minor} && echo made-$at; \
             head -c 512 $at/disk >/dev/null 2>&1 && echo READ-$at; done; \
             head -c 1 /dev/zero | wc -c"
        ),
    ]);
    let result = rauha_e2e::json(&out);
    let stdout = result["stdout"].as_str().unwrap_or_default();
    assert!(
        stdout.contains("made-/dev"),
        "CAP_MKNOD is in force: {result}"
    );
    assert!(!stdout.contains("READ"), "a node it made opened: {result}");
    assert!(stdout.ends_with("1\n"), "/dev/zero works: {result}");
    let _ = std::fs::remove_dir_all(&dir);
}
