//! Zones and processes through the CLI: create, list, verify, update,
//! run, ps, exec, logs, stop, delete, events, top, policy show.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use rauha_e2e::{bin_dir, json, ready, text, Daemon};

#[test]
fn zone_and_process_lifecycle() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    // Watch events from the start.
    let mut watcher = Command::new(bin_dir().join("rauha"))
        .args(["events", "--json"])
        .env("RAUHA_ADDR", d.addr())
        .stdout(Stdio::piped())
        .spawn()
        .expect("rauha events");
    std::thread::sleep(Duration::from_millis(300));

    let out = d.cli(&["zone", "create", "web", "--policy", "strict", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let zone = json(&out);
    assert_eq!(zone["name"], "web");
    assert_eq!(zone["state"], "created");

    let out = d.cli(&["zone", "list", "--json"]);
    assert!(text(&out.stdout).contains("\"web\""));
    let table = d.cli(&["zone", "list"]);
    assert!(
        text(&table.stdout).contains("web"),
        "{}",
        text(&table.stdout)
    );

    let out = d.cli(&["zone", "verify", "web", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v = text(&out.stdout);
    for ns in [
        "pid namespace",
        "mnt namespace",
        "net namespace",
        "uts namespace",
        "ipc namespace",
        "cgroup namespace",
    ] {
        assert!(v.contains(ns), "verify lists {ns}: {v}");
    }
    let verify = json(&out);
    let checks = verify["checks"].as_array().expect("checks");
    let is_hook = |c: &serde_json::Value| {
        let name = c["name"].as_str().unwrap_or_default();
        name.starts_with("lsm ") || name.starts_with("cgroup ")
    };
    assert!(
        checks
            .iter()
            .filter(|c| !is_hook(c))
            .all(|c| c["ok"] == true),
        "every check of the zone passes: {v}"
    );
    // Each BPF program is listed with whether it is live, in agreement
    // with the layers reported (on these machines the kernel refuses the
    // LSM programs and takes the cgroup ones).
    let hook = |name: &str| {
        checks
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("verify lists {name}: {v}"))["ok"]
            .clone()
    };
    let layer = |name: &str| {
        verify["zone"]["enforcement"]["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .find(|l| l["layer"] == name)
            .expect("layer")["in_force"]
            .clone()
    };
    assert_eq!(hook("lsm file_open"), layer("bpf_lsm"), "{v}");
    assert_eq!(hook("cgroup post_bind4"), layer("cgroup_bpf"), "{v}");

    let out = d.cli(&["policy", "show", "--zone", "web"]);
    assert!(
        text(&out.stdout).contains("pids_max = 128"),
        "{}",
        text(&out.stdout)
    );

    // A detached process, its logs, ps, stop and delete.
    let out = d.cli(&[
        "run",
        "--zone",
        "web",
        "--",
        "sh",
        "-c",
        "echo started; sleep 300",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    uuid::Uuid::parse_str(&id).expect("run prints the process id");
    std::thread::sleep(Duration::from_millis(300));
    let out = d.cli(&["logs", &id]);
    assert_eq!(text(&out.stdout), "started\n");
    let out = d.cli(&["ps", "--zone", "web", "--json"]);
    assert!(text(&out.stdout).contains(&id));
    let out = d.cli(&["zone", "delete", "web"]);
    assert_eq!(
        out.status.code(),
        Some(125),
        "a zone with running work is not deleted without --force"
    );
    assert!(
        text(&out.stderr).contains("running process"),
        "{}",
        text(&out.stderr)
    );
    let out = d.cli(&["delete", &id]);
    assert_eq!(
        out.status.code(),
        Some(125),
        "a running process is not deleted"
    );
    let out = d.cli(&["stop", &id, "--grace", "1", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(json(&out)["state"], "exited");
    let out = d.cli(&["delete", &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // exec streams output and passes the exit code through.
    let out = d.cli(&[
        "exec",
        "web",
        "--",
        "sh",
        "-c",
        "echo from-exec; echo to-err >&2; exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(text(&out.stdout), "from-exec\n");
    assert_eq!(text(&out.stderr), "to-err\n");

    // Policy update in place: a new pids limit applies without a restart.
    let policy = d.dir.join("more.toml");
    std::fs::write(
        &policy,
        include_str!("../../policies/strict.toml").replace("pids_max = 128", "pids_max = 99"),
    )
    .expect("w");
    let out = d.cli(&[
        "zone",
        "update",
        "web",
        "--policy",
        policy.to_str().expect("utf8"),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = d.cli(&["zone", "verify", "web", "--json"]);
    assert!(
        text(&out.stdout).contains("\"99\""),
        "{}",
        text(&out.stdout)
    );

    let out = d.cli(&["top", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("web"));

    let out = d.cli(&["zone", "delete", "web"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(d.zone_cgroups().is_empty());

    // The watcher saw the zone's life, up to its deletion (read until that
    // event arrives: the stream may still be on its way when delete returns).
    let stdout = watcher.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let kind = serde_json::from_str::<serde_json::Value>(&line)
                .ok()
                .and_then(|e| e["kind"].as_str().map(String::from));
            if let Some(k) = kind {
                if tx.send(k).is_err() {
                    return;
                }
            }
        }
    });
    let mut kinds: Vec<String> = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !kinds.iter().any(|k| k == "zone_deleted") {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(k) => kinds.push(k),
            Err(_) => break,
        }
    }
    let _ = watcher.kill();
    let _ = watcher.wait();
    for k in [
        "zone_created",
        "process_started",
        "process_exited",
        "zone_policy_updated",
        "zone_deleted",
    ] {
        assert!(kinds.iter().any(|x| x == k), "event {k} in {kinds:?}");
    }
}

#[test]
fn policy_show_prints_presets() {
    if !rauha_e2e::prerequisite(
        bin_dir().join("rauha").is_file(),
        "the rauha binary (cargo build --workspace)",
    ) {
        return;
    }
    let out = Command::new(bin_dir().join("rauha"))
        .args(["policy", "show", "standard"])
        .output()
        .expect("rauha");
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("memory_limit = \"1Gi\""),
        "{}",
        text(&out.stdout)
    );
}

/// `--enforcement required` starts only with every BPF-LSM program
/// attached: it refuses on these machines' kernel, and starts (naming the
/// hooks) in the e2e VM's.
#[test]
fn enforcement_required_starts_only_with_bpf_lsm() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    // preferred (the default) started, and reports the layer as it is.
    let info = json(&d.cli(&["info", "--json"]));
    assert_eq!(info["enforcement_mode"], "preferred");
    let lsm = info["enforcement"]["layers"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["layer"] == "bpf_lsm"))
        .cloned()
        .expect("bpf_lsm layer");
    let mut required = Command::new(bin_dir().join("rauhad"))
        .args(["--enforcement", "required", "--root"])
        .arg(d.dir.join("other-root"))
        .arg("--socket")
        .arg(d.dir.join("other.sock"))
        .args(["--cgroup-parent", &format!("{}-req", d.cgroup_parent)])
        .arg("--bpf-pin-dir")
        .arg(d.bpffs.join("required"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("rauhad");
    if lsm["in_force"] == true {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !d.dir.join("other.sock").exists() && std::time::Instant::now() < deadline {
            assert!(
                required.try_wait().expect("wait").is_none(),
                "required exited although BPF-LSM is in force"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = required.kill();
        let out = required.wait_with_output().expect("rauhad");
        let err = text(&out.stderr);
        assert!(
            d.dir.join("other.sock").exists(),
            "required serves with BPF-LSM: {err}"
        );
        assert!(
            err.contains("file_open") && err.contains("attached"),
            "{err}"
        );
    } else {
        let out = required.wait_with_output().expect("rauhad");
        assert_eq!(out.status.code(), Some(1));
        let err = text(&out.stderr);
        let line = err.lines().last().unwrap_or_default();
        assert!(
            line.starts_with(
                "rauhad: --enforcement required refuses to start: BPF-LSM is not in force"
            ),
            "{err}"
        );
        assert!(
            line.contains("file_open"),
            "one line naming the hooks that are not attached: {line}"
        );
        assert!(!d.dir.join("other.sock").exists());
        assert!(
            std::fs::read_dir(d.bpffs.join("required/links"))
                .map(|mut l| l.next().is_none())
                .unwrap_or(true),
            "nothing stays attached after a refusal"
        );
    }
    for dir in rauha_e2e::cgroup_dirs(&format!("{}-req", d.cgroup_parent)) {
        let _ = std::fs::remove_dir(dir);
    }
}

#[test]
fn the_socket_is_root_only() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(&d.socket).expect("socket");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), 0);
}

#[test]
fn tcp_is_served_only_on_loopback_and_only_when_asked() {
    if !ready() {
        return;
    }
    let mut d = Daemon::start();
    // Not asked: nothing listens on TCP (the CLI cannot reach it there).
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        l.local_addr().expect("addr").port()
    };
    let http = format!("http://127.0.0.1:{port}");
    let out = Command::new(bin_dir().join("rauha"))
        .args(["info"])
        .env("RAUHA_ADDR", &http)
        .output()
        .expect("rauha");
    assert_eq!(out.status.code(), Some(125));
    // A non-loopback address is refused with one line.
    let refused = Command::new(bin_dir().join("rauhad"))
        .args(["--listen-tcp", "0.0.0.0:7700", "--root"])
        .arg(d.dir.join("tcp-root"))
        .arg("--socket")
        .arg(d.dir.join("tcp.sock"))
        .args(["--cgroup-parent", &d.cgroup_parent])
        .output()
        .expect("rauhad");
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("is not a loopback address"),
        "{}",
        text(&refused.stderr)
    );
    // Asked, on loopback: served there too.
    d.kill9();
    d.spawn(&["--listen-tcp", &format!("127.0.0.1:{port}")]);
    let mut served = false;
    for _ in 0..50 {
        let out = Command::new(bin_dir().join("rauha"))
            .args(["info", "--json"])
            .env("RAUHA_ADDR", &http)
            .output()
            .expect("rauha");
        if out.status.success() {
            served = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(served, "rauha info over {http}");
}

#[test]
fn a_missing_working_directory_is_named() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    let out = d.cli(&["sandbox", "--cwd", "/no/such/dir", "--", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("working directory \"/no/such/dir\" does not exist in the zone"),
        "{}",
        text(&out.stderr)
    );
}
