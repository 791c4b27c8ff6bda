//! The VM harness itself, and the node runtime on a pure cgroup v2 host:
//! Debian's 6.1 kernel under QEMU TCG, with BPF-LSM in the LSM list.

use std::time::Duration;

use rauha_e2e::vm::{kernel_version, start_rauhad, vm_ready, VmSpec};
use rauha_e2e::{bin_dir, ready};

#[test]
fn vm_boots_with_bpf_lsm_pure_cgroup_v2_and_host_binaries() {
    if !(vm_ready() && ready()) {
        return;
    }
    let out = VmSpec::new()
        .binary(bin_dir().join("rauha"), "/usr/local/bin/rauha")
        .binary(bin_dir().join("rauhad"), "/usr/local/bin/rauhad")
        .file("/etc/rauha-test", "written by the host\n", 0o600)
        .kernel_module("overlay")
        .memory_mb(768)
        .timeout(Duration::from_secs(120))
        .script(
            r#"
section lsm cat /sys/kernel/security/lsm
section controllers cat /sys/fs/cgroup/cgroup.controllers
section subtree cat /sys/fs/cgroup/cgroup.subtree_control
section cgroup_mounts sh -c 'grep cgroup /proc/self/mounts'
section uname uname -r
section version rauha --version
section rauhad_help rauhad --help
section file sh -c 'cat /etc/rauha-test; stat -c %a /etc/rauha-test'
section overlay grep -w overlay /proc/filesystems
section long seq 1 20000
"#,
        )
        .run();
    eprintln!(
        "VM: boot {:?}, whole run {:?}",
        out.boot.unwrap_or_default(),
        out.duration
    );
    out.assert_success();
    assert!(out.output_complete, "{}", out.describe());
    let section = |name: &str| {
        out.section(name)
            .unwrap_or_else(|| panic!("no section {name}: {}", out.describe()))
            .to_string()
    };
    assert!(
        section("lsm").trim().split(',').any(|l| l == "bpf"),
        "BPF-LSM is active: {}",
        section("lsm")
    );
    let controllers = section("controllers");
    let controllers: Vec<&str> = controllers.split_whitespace().collect();
    for c in ["memory", "pids", "cpu"] {
        assert!(controllers.contains(&c), "{c} in {controllers:?}");
    }
    let subtree = section("subtree");
    for c in ["memory", "pids", "cpu"] {
        assert!(
            subtree.split_whitespace().any(|s| s == c),
            "{c} enabled: {subtree}"
        );
    }
    // Pure v2: a single cgroup2 mount and no v1 hierarchy.
    let mounts = section("cgroup_mounts");
    let kinds: Vec<(&str, &str)> = mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((*f.get(1)?, *f.get(2)?))
        })
        .collect();
    assert_eq!(kinds, vec![("/sys/fs/cgroup", "cgroup2")], "{mounts}");
    assert_eq!(
        Some(section("uname").trim().to_string()),
        kernel_version(),
        "the guest runs the fetched kernel"
    );
    assert!(
        section("version").starts_with("rauha "),
        "the host-built CLI runs in the guest: {}",
        section("version")
    );
    assert!(
        section("rauhad_help").contains("--cgroup-parent"),
        "{}",
        section("rauhad_help")
    );
    assert_eq!(section("file"), "written by the host\n600");
    assert!(section("overlay").contains("overlay"), "the module loaded");
    let long = section("long");
    assert_eq!(long.lines().count(), 20000, "long output is not cut");
    assert_eq!(long.lines().last(), Some("20000"));
}

#[test]
fn vm_script_failure_and_timeout_are_reported() {
    if !vm_ready() {
        return;
    }
    let out = VmSpec::new()
        .memory_mb(512)
        .script("echo before; false; echo after")
        .run();
    assert_eq!(out.exit_code, 1, "{}", out.describe());
    assert_eq!(out.output, "before\n", "sh -e stops at the failure");

    let out = VmSpec::new()
        .memory_mb(512)
        .timeout(Duration::from_secs(4))
        .script("sleep 600")
        .run();
    assert!(out.timed_out, "{}", out.describe());
    assert_eq!(out.exit_code, -1);
}

#[test]
fn rauhad_runs_a_sandbox_on_pure_cgroup_v2() {
    if !(vm_ready() && ready()) {
        return;
    }
    let script = format!(
        "{}{}",
        start_rauhad(""),
        r#"
rc=0
rauha sandbox --json -- /bin/echo hi >/tmp/result.json 2>/tmp/cli.err || rc=$?
echo "cli_exit=$rc"
section result cat /tmp/result.json
section cli_stderr cat /tmp/cli.err

# Limits land in the zone's v2 files while a limited task runs.
printf '[resources]\npids_max = 32\nmemory_limit = "64Mi"\n' >/tmp/limits.toml
lrc=0
rauha sandbox --json --policy /tmp/limits.toml -- sh -c 'sleep 3' >/tmp/limited.json 2>/tmp/limited.err &
lpid=$!
zone=
for i in $(seq 1 200); do
  zone=$(find /sys/fs/cgroup/rauha-vm -mindepth 1 -maxdepth 1 -type d | head -n1)
  [ -n "$zone" ] && grep -q . "$zone/work/@zone/cgroup.procs" 2>/dev/null && break
  sleep 0.05
done
section limits sh -c "cat $zone/memory.max $zone/pids.max; wc -l < $zone/agent/cgroup.procs; wc -l < $zone/work/@zone/cgroup.procs; cat /sys/fs/cgroup/rauha-vm/cgroup.subtree_control; wc -l < $zone/cgroup.procs; cat $zone/cgroup.subtree_control" || true
zone_procs() {
  for d in "$zone" "$zone/agent" "$zone/work/@zone"; do
    for p in $(cat "$d/cgroup.procs"); do echo "${d##*/} $p $(tr '\0' ' ' </proc/$p/cmdline)"; done
  done
}
section zone_procs zone_procs || true
wait $lpid || lrc=$?
section limited cat /tmp/limited.json /tmp/limited.err

# The copy-on-write workspace (overlayfs) on the guest's tmpfs.
mkdir -p /tmp/repo && echo hello >/tmp/repo/README
wrc=0
rauha sandbox --json --repo-path /tmp/repo --dry-run -- sh -c 'echo new > /workspace/added.txt' >/tmp/ws.json 2>/tmp/ws.err || wrc=$?
section workspace cat /tmp/ws.json
section workspace_stderr cat /tmp/ws.err
section leftover find /sys/fs/cgroup/rauha-vm -mindepth 1 -type d
section rauhad_log cat /tmp/rauhad.log
echo "limited_exit=$lrc workspace_exit=$wrc"
exit $rc
"#
    );
    let out = VmSpec::new()
        .rauha_binaries()
        .workspace_support()
        .memory_mb(1024)
        .timeout(Duration::from_secs(240))
        .script(script)
        .run();
    eprintln!(
        "VM: boot {:?}, whole run {:?}",
        out.boot.unwrap_or_default(),
        out.duration
    );
    let diag = || {
        format!(
            "\n--- rauha stderr ---\n{}\n--- rauhad log ---\n{}\n--- all ---\n{}",
            out.section("cli_stderr").unwrap_or(""),
            out.section("rauhad_log").unwrap_or(""),
            out.describe()
        )
    };
    assert!(out.success(), "the sandbox failed in the VM:{}", diag());
    let raw = out
        .section("result")
        .unwrap_or_else(|| panic!("no result:{}", diag()));
    let r: serde_json::Value =
        serde_json::from_str(raw).unwrap_or_else(|e| panic!("result is not JSON ({e}): {raw}"));
    assert_eq!(r["status"], "succeeded", "{r:#}{}", diag());
    assert_eq!(r["stdout"], "hi\n", "{r:#}");
    assert_eq!(r["exit_code"], 0, "{r:#}");
    assert!(
        out.section("rauhad_log")
            .is_some_and(|l| l.contains("cgroups=\"v2\"")),
        "rauhad took the unified layout:{}",
        diag()
    );

    // memory.max, pids.max, processes in the agent's leaf and in the work
    // outside containers, the parent's subtree_control; none in the zone's
    // own cgroup, which hands its controllers down (to containers' own
    // cgroups).
    let limits = out.section("limits").unwrap_or_default();
    let lines: Vec<&str> = limits.lines().map(str::trim).collect();
    assert_eq!(
        lines.get(..2),
        Some(&["67108864", "32"][..]),
        "limits in the zone's v2 files:\n{limits}{}",
        diag()
    );
    assert!(
        lines.get(2).and_then(|n| n.parse::<u32>().ok()) >= Some(1),
        "the agent in its leaf:\n{limits}"
    );
    assert!(
        lines.get(3).and_then(|n| n.parse::<u32>().ok()) >= Some(1),
        "the work in the work cgroup:\n{limits}"
    );
    assert_eq!(
        lines.get(5),
        Some(&"0"),
        "nothing in the zone's own cgroup:\n{limits}"
    );
    assert!(
        lines
            .get(6)
            .is_some_and(|c| c.contains("memory") && c.contains("pids")),
        "the zone hands down its controllers:\n{limits}"
    );
    let limited = out.section("limited").unwrap_or_default();
    assert!(
        limited.contains("\"status\": \"succeeded\"")
            || limited.contains("\"status\":\"succeeded\""),
        "the limited task:\n{limited}{}",
        diag()
    );

    let ws = out.section("workspace").unwrap_or_default();
    let w: serde_json::Value = serde_json::from_str(ws).unwrap_or_else(|e| {
        panic!(
            "workspace result is not JSON ({e}):\n{ws}\n{}{}",
            out.section("workspace_stderr").unwrap_or(""),
            diag()
        )
    });
    assert_eq!(w["status"], "succeeded", "{w:#}{}", diag());
    assert_eq!(w["files_changed"][0]["path"], "added.txt", "{w:#}");
    assert_eq!(w["files_changed"][0]["kind"], "added", "{w:#}");

    assert_eq!(
        out.section("leftover"),
        Some(""),
        "zone cgroups are removed:{}",
        diag()
    );
    eprintln!(
        "in the guest: limits\n{limits}\nprocesses:\n{}\nrauhad:\n{}",
        out.section("zone_procs").unwrap_or(""),
        out.section("rauhad_log").unwrap_or("")
    );
}
