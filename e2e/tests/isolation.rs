//! What a process inside a zone can and cannot see or touch.

use rauha_e2e::{ready, sh, text, Daemon};

#[tokio::test]
async fn a_zone_sees_only_its_own_processes_and_hostname() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    let r = sh(&d, "ps -e -o pid=,comm=; echo host=$(hostname)", None).await;
    assert_eq!(r.status, "succeeded", "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    let procs: Vec<&str> = lines
        .iter()
        .filter(|l| !l.starts_with("host="))
        .copied()
        .collect();
    assert!(
        procs
            .iter()
            .any(|l| l.trim().starts_with("1 ") && l.contains("rauha-guest")),
        "the agent is PID 1: {procs:?}"
    );
    assert!(
        procs.len() <= 4,
        "only the agent, sh, ps (and hostname's subshell): {procs:?}"
    );
    assert!(
        !r.stdout.contains("rauhad"),
        "host processes are invisible: {}",
        r.stdout
    );
    let host = lines
        .iter()
        .find_map(|l| l.strip_prefix("host="))
        .expect("hostname line");
    assert!(
        host.starts_with("task-"),
        "the hostname is the zone's name, got {host}"
    );
    assert_ne!(
        host,
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .expect("host name")
            .trim()
    );
}

#[tokio::test]
async fn writes_outside_writable_paths_fail() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    let script = "for p in /etc/rauha-x /usr/rauha-x /rauha-x /bin/rauha-x; do \
                    if touch $p 2>/dev/null; then echo WROTE $p; else echo denied $p; fi; done; \
                  touch /tmp/ok && echo tmp-ok";
    let r = sh(&d, script, None).await;
    assert!(!r.stdout.contains("WROTE"), "{}", r.stdout);
    assert_eq!(r.stdout.matches("denied").count(), 4, "{}", r.stdout);
    assert!(
        r.stdout.contains("tmp-ok"),
        "/tmp is writable: {} {}",
        r.stdout,
        r.stderr
    );
    for p in ["/etc/rauha-x", "/usr/rauha-x", "/rauha-x"] {
        assert!(
            !std::path::Path::new(p).exists(),
            "{p} must not appear on the host"
        );
    }
}

#[tokio::test]
async fn shadow_is_unreadable_under_standard() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    let r = sh(&d, "cat /etc/shadow; echo rc=$?", None).await;
    assert!(!r.stdout.contains("root:"), "{}", r.stdout);
    assert!(r.stdout.contains("rc=1"), "{} {}", r.stdout, r.stderr);
    // The zone can still read the rest of /etc.
    let r = sh(&d, "grep -c root /etc/passwd", None).await;
    assert_eq!(r.status, "succeeded", "{}", r.stderr);
}

#[tokio::test]
async fn capabilities_are_dropped_and_no_new_privs_is_set() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    let r = sh(
        &d,
        "grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status",
        None,
    )
    .await;
    let field = |k: &str| {
        r.stdout
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    assert_eq!(field("CapEff:"), "0000000000000000", "{}", r.stdout);
    assert_eq!(field("CapBnd:"), "0000000000000000", "{}", r.stdout);
    assert_eq!(field("NoNewPrivs:"), "1");
    assert_eq!(field("Seccomp:"), "2", "a seccomp filter is installed");
    // And the filter denies what the policy lists.
    let r = sh(&d, "unshare -n true; echo rc=$?", None).await;
    assert!(
        r.stdout.contains("rc=1"),
        "unshare must fail: {} {}",
        r.stdout,
        r.stderr
    );
}

#[test]
fn zones_cannot_signal_trace_or_read_each_other() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    for z in ["zone-a", "zone-b"] {
        let out = d.cli(&["zone", "create", z]);
        assert!(out.status.success(), "create {z}: {}", text(&out.stderr));
    }
    let out = d.cli(&[
        "exec",
        "zone-b",
        "--",
        "sh",
        "-c",
        "echo secret > /tmp/b-secret",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let run = d.cli(&["run", "--zone", "zone-b", "--", "sleep", "300"]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    // The host pid of B's sleep, from B's cgroup.
    let b_pids: Vec<u32> = d
        .zone_pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .unwrap_or_default()
                .starts_with("sleep")
        })
        .collect();
    assert_eq!(b_pids.len(), 1, "one sleep in B: {b_pids:?}");
    let victim = b_pids[0];
    let script = format!(
        "kill -9 {victim}; echo kill=$?; ls /proc/{victim} >/dev/null 2>&1; echo proc=$?; \
         cat /tmp/b-secret 2>/dev/null; echo cat=$?; ls /tmp | wc -l"
    );
    let out = d.cli(&["exec", "zone-a", "--", "sh", "-c", &script]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("kill=1"),
        "A cannot signal B's process by host pid: {stdout}"
    );
    assert!(
        stdout.contains("proc=") && !stdout.contains("proc=0"),
        "A cannot see B's process: {stdout}"
    );
    assert!(stdout.contains("cat=1"), "A cannot read B's /tmp: {stdout}");
    // ptrace is denied (seccomp) and B's pid does not exist in A anyway.
    let out = d.cli(&[
        "exec",
        "zone-a",
        "--",
        "sh",
        "-c",
        &format!("cat /proc/{victim}/environ; echo rc=$?"),
    ]);
    assert!(text(&out.stdout).contains("rc=1"), "{}", text(&out.stdout));
    assert!(
        std::path::Path::new(&format!("/proc/{victim}")).exists(),
        "B's process survived A's attempts"
    );
    let out = d.cli(&["zone", "delete", "zone-b", "--force"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = d.cli(&["zone", "delete", "zone-a"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn the_zone_agent_reaps_orphans() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    assert!(d.cli(&["zone", "create", "reaper"]).status.success());
    // The shell exits at once; its background child is orphaned to PID 1.
    let out = d.cli(&["exec", "reaper", "--", "sh", "-c", "sleep 0.2 & exit 0"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    std::thread::sleep(std::time::Duration::from_millis(600));
    let out = d.cli(&[
        "exec",
        "reaper",
        "--",
        "sh",
        "-c",
        "ps -e -o stat=,comm= | grep -c '^Z' ; true",
    ]);
    assert_eq!(
        text(&out.stdout).trim(),
        "0",
        "no zombie in the zone: {}",
        text(&out.stdout)
    );
    assert!(d.cli(&["zone", "delete", "reaper"]).status.success());
}
