//! containerd-shim-rauha-v2 under containerd 2.x (built from its Go module
//! by scripts/build-containerd2.sh, with a version 3 config and deploy's
//! `rauha` runtime table as shipped): containerd 2.x still drives shims
//! over the task v2 API. The other shim suites run Debian's containerd 1.6.

use std::path::PathBuf;

use rauha_e2e::containerd::{
    containerd2_dir, containerd2_ready, processes_mentioning, Containerd, ContainerdOpts, Registry,
};
use rauha_e2e::{bin_dir, prerequisite, ready, text, Daemon};

const RUNTIME: &str = "io.containerd.rauha.v2";

fn crictl_bin() -> PathBuf {
    bin_dir().join("../tools/crictl")
}

fn shim2_ready() -> bool {
    ready()
        && containerd2_ready()
        && prerequisite(
            bin_dir().join("containerd-shim-rauha-v2").is_file(),
            "containerd-shim-rauha-v2 (run `cargo build --workspace --bins` first)",
        )
        && prerequisite(
            crictl_bin().is_file(),
            "crictl (run scripts/build-crictl.sh, which builds it from e2e/go/go.mod)",
        )
}

fn zone_count(d: &Daemon) -> usize {
    let out = d.cli(&["zone", "list", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .expect("zone list JSON")
        .as_array()
        .map_or(0, Vec::len)
}

#[test]
fn containerd_2_runs_tasks_and_pods_through_the_shim() {
    if !shim2_ready() {
        return;
    }
    let d = Daemon::start();
    let reg = Registry::start();
    let pause = reg.push_busybox_image("e2e/pause:1", &["sleep", "3600"]);
    let app = reg.push_busybox_image("e2e/app:1", &["sh"]);
    let mut ctd = Containerd::start(
        ContainerdOpts::for_rauha(&d, &reg)
            .sandbox_image(&pause)
            .containerd2(containerd2_dir()),
    );
    let version = ctd.ctr_ok(&["version"]);
    assert!(
        version.contains("Version:  v2."),
        "not containerd 2.x: {version}"
    );

    // ctr: output, an exit code, exec; the zone is gone with the task.
    ctd.ctr_ok(&["image", "pull", "--plain-http", &app]);
    let out = ctd.ctr_ok(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        &app,
        "c1",
        "echo",
        "hi",
    ]);
    assert_eq!(out, "hi\n", "containerd log:\n{}", ctd.log());
    let out = ctd.ctr(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        &app,
        "c2",
        "sh",
        "-c",
        "exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    ctd.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        &app,
        "c3",
        "sleep",
        "600",
    ]);
    let out = ctd.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        "c3",
        "sh",
        "-c",
        "echo in; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "in\n");
    ctd.ctr_ok(&["task", "kill", "-s", "SIGKILL", "c3"]);
    for _ in 0..50 {
        if ctd.ctr_ok(&["task", "ls"]).contains("STOPPED") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    ctd.ctr_ok(&["task", "rm", "c3"]);
    ctd.ctr_ok(&["container", "rm", "c3"]);
    assert_eq!(zone_count(&d), 0);

    // CRI: a pod with a container, its own limit, exec, logs, stop, remove.
    let write = |name: &str, v: serde_json::Value| {
        let path = ctd.dir().join(name);
        std::fs::write(&path, v.to_string()).expect("write CRI config");
        path.display().to_string()
    };
    let pod_config = write(
        "pod.json",
        serde_json::json!({
            "metadata": {"name": "p2", "namespace": "default", "uid": "uid-p2", "attempt": 0},
            "log_directory": ctd.dir().join("logs").display().to_string(),
        }),
    );
    let crictl = |args: &[&str]| ctd.crictl_ok(&crictl_bin(), args);
    crictl(&["pull", &app]);
    let pod = crictl(&["runp", "--runtime", "rauha", &pod_config])
        .trim()
        .to_string();
    let ctr_config = write(
        "ctr.json",
        serde_json::json!({
            "metadata": {"name": "a"},
            "image": {"image": app},
            "command": ["sh", "-c", "echo hello from a; exec sleep 600"],
            "log_path": "a.log",
            "linux": {"resources": {"memory_limit_in_bytes": 33554432}},
        }),
    );
    let a = crictl(&["create", &pod, &ctr_config, &pod_config])
        .trim()
        .to_string();
    crictl(&["start", &a]);
    assert_eq!(zone_count(&d), 1, "one zone for the pod");
    let limit = crictl(&[
        "exec",
        &a,
        "sh",
        "-c",
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max",
    ]);
    assert_eq!(limit.trim(), (32u64 << 20).to_string(), "a's own limit");
    let mut logs = String::new();
    for _ in 0..50 {
        logs = crictl(&["logs", &a]);
        if logs.contains("hello from a") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(logs.contains("hello from a"), "{logs}");

    // containerd 2.x restarts: it finds the pod's shim again (from the
    // bundle's bootstrap.json, which 2.x writes), and exec works.
    ctd.restart();
    let crictl = |args: &[&str]| ctd.crictl_ok(&crictl_bin(), args);
    let inspect: serde_json::Value =
        serde_json::from_str(&crictl(&["inspect", &a])).expect("inspect JSON");
    assert_eq!(inspect["status"]["state"], "CONTAINER_RUNNING", "{inspect}");
    assert_eq!(
        crictl(&["exec", &a, "echo", "after restart"]),
        "after restart\n"
    );

    // The pod's shim is killed: rauhad's keeper starts it again on 2.x's
    // open connection, and the pod goes on.
    let shims_now = || -> Vec<i32> {
        processes_mentioning(&ctd.address().display().to_string())
            .into_iter()
            .filter(|(_, cmd)| cmd.contains("containerd-shim-rauha"))
            .map(|(pid, _)| pid)
            .collect()
    };
    let old = shims_now();
    assert_eq!(old.len(), 1, "one shim for the pod: {old:?}");
    // SAFETY: kill with plain integers.
    unsafe { libc::kill(old[0], libc::SIGKILL) };
    let mut new = Vec::new();
    for _ in 0..100 {
        new = shims_now();
        if new.len() == 1 && new[0] != old[0] {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        new.len() == 1 && new[0] != old[0],
        "shims after killing {}: {new:?}\n{}",
        old[0],
        d.log()
    );
    assert_eq!(
        crictl(&["exec", &a, "echo", "after the shim"]),
        "after the shim\n"
    );
    crictl(&["stop", "--timeout", "2", &a]);
    crictl(&["rm", &a]);
    crictl(&["stopp", &pod]);
    crictl(&["rmp", &pod]);
    assert_eq!(zone_count(&d), 0, "zones left");
    let shims: Vec<_> = processes_mentioning(&ctd.address().display().to_string())
        .into_iter()
        .filter(|(_, cmd)| cmd.contains("containerd-shim-rauha"))
        .collect();
    assert!(shims.is_empty(), "shims left: {shims:?}");
}
