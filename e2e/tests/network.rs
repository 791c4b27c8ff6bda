//! Zones that join an existing network namespace (a pod's, in a cluster).

use std::process::Command;

use rauha_e2e::{cgroup_dirs, json, ready, text, Daemon};

/// `busybox nc` from inside a zone: the host's /bin is in the zone's view.
const NC: &str = "/bin/busybox nc";

/// A named network namespace with a veth pair inside, removed on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("rauha-e2e-{tag}-{}", std::process::id());
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("ip");
            assert!(out.status.success(), "ip {args:?}: {}", text(&out.stderr));
        };
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ip(&[
            "-n", &ns.name, "link", "add", "rauha0", "type", "veth", "peer", "name", "rauha1",
        ]);
        ip(&[
            "-n",
            &ns.name,
            "addr",
            "add",
            "10.99.0.1/24",
            "dev",
            "rauha0",
        ]);
        ip(&["-n", &ns.name, "link", "set", "rauha0", "up"]);
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

const JOINED: &str = "[network]\nmode = \"joined\"\nallowed_egress = [\"10.99.0.0/24:8080\"]\n";

#[test]
fn a_zone_joins_the_given_network_namespace() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    let ns = Netns::new("join");
    let policy = d.dir.join("joined.toml");
    std::fs::write(&policy, JOINED).expect("policy");
    let policy = policy.to_str().expect("utf8");
    let out = d.cli(&[
        "sandbox",
        "--json",
        "--policy",
        policy,
        "--netns",
        &ns.path(),
        "--",
        "cat",
        "/proc/net/dev",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r = json(&out);
    assert!(
        r["stdout"].as_str().expect("stdout").contains("rauha0:"),
        "the zone sees the namespace's interfaces: {}",
        r["stdout"]
    );
    // Without --netns a zone has its own namespace: no rauha0 there.
    let out = d.cli(&["sandbox", "--json", "--", "cat", "/proc/net/dev"]);
    assert!(!json(&out)["stdout"]
        .as_str()
        .expect("stdout")
        .contains("rauha0:"));
}

#[test]
fn a_wrong_namespace_or_mode_is_refused_with_the_fix() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    let ns = Netns::new("bad");
    let policy = d.dir.join("joined.toml");
    std::fs::write(&policy, JOINED).expect("policy");
    let policy = policy.to_str().expect("utf8");
    for (args, says) in [
        (
            vec!["sandbox", "--netns", ns.path().leak(), "--", "true"],
            "network.mode is not \"joined\"",
        ),
        (
            vec!["sandbox", "--policy", policy, "--", "true"],
            "give the namespace to join",
        ),
        (
            vec![
                "sandbox",
                "--policy",
                policy,
                "--netns",
                "/etc/hostname",
                "--",
                "true",
            ],
            "is not a network namespace",
        ),
        (
            vec![
                "sandbox",
                "--policy",
                policy,
                "--netns",
                "/nonexistent",
                "--",
                "true",
            ],
            "No such file",
        ),
    ] {
        let out = d.cli(&args);
        assert_eq!(out.status.code(), Some(125), "{args:?}");
        assert!(
            text(&out.stderr).contains(says),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    // The daemon keeps serving.
    assert!(d.cli(&["sandbox", "--", "true"]).status.success());
}

fn write_policy(d: &Daemon, name: &str, toml: &str) -> String {
    let path = d.dir.join(name);
    std::fs::write(&path, toml).expect("policy");
    path.to_str().expect("utf8").to_string()
}

/// On this host BPF-LSM does not load, but the cgroup-BPF connect programs
/// do: they alone keep a zone's egress to its allow-list.
#[test]
fn egress_outside_the_allow_list_is_refused_and_reported() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    let ns = Netns::new("egress");
    let policy = write_policy(&d, "joined.toml", JOINED);
    // 10.99.0.1 is a local address of the namespace with nothing listening:
    // an allowed connect is refused by the peer, a denied one never leaves.
    let script = format!(
        "{NC} -w 2 10.99.0.1 8080 </dev/null; echo allowed=$?; {NC} -w 2 10.99.0.1 9090 </dev/null; echo denied=$?"
    );
    let out = d.cli(&[
        "sandbox",
        "--json",
        "--policy",
        &policy,
        "--netns",
        &ns.path(),
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r = json(&out);
    let stderr = r["stderr"].as_str().expect("stderr");
    assert!(
        stderr.contains("10.99.0.1:8080") || stderr.contains("Connection refused"),
        "the allowed port reaches the network stack: {stderr}"
    );
    assert!(
        stderr.contains("Operation not permitted"),
        "the other port is refused by the BPF layer: {stderr}"
    );
    let denials = r["enforcement_events"]
        .as_array()
        .expect("enforcement_events");
    assert_eq!(
        denials.len(),
        1,
        "one denial, the second connect: {denials:?}"
    );
    assert_eq!(denials[0]["hook"], "connect4");
    assert_eq!(denials[0]["target"], "10.99.0.1:9090");
    assert_eq!(denials[0]["errno"], 1);
    let layers = r["enforcement"]["layers"].as_array().expect("layers");
    let cgroup_bpf = layers
        .iter()
        .find(|l| l["layer"] == "cgroup_bpf")
        .expect("cgroup_bpf layer");
    assert_eq!(cgroup_bpf["in_force"], true, "{cgroup_bpf}");
}

/// The cgroup_bpf layer as the result reports it.
fn cgroup_bpf(r: &serde_json::Value) -> serde_json::Value {
    r["enforcement"]["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .find(|l| l["layer"] == "cgroup_bpf")
        .expect("cgroup_bpf layer")
        .clone()
}

/// Reported enforcement is verified enforcement. A rauhad started on the
/// pin dir of an earlier rauhad that had another cgroup parent does not
/// adopt that rauhad's links (they run for the other parent): its zone's
/// egress outside the allow-list is refused. Then, with the node's cgroup
/// links unpinned under the running rauhad (the kernel no longer runs the
/// programs), a new zone reports cgroup_bpf not in force, naming them.
#[test]
fn reported_cgroup_bpf_is_what_the_kernel_runs_for_the_zone() {
    if !ready() {
        return;
    }
    let mut d = Daemon::start();
    let first_parent = d.cgroup_parent.clone();
    d.kill9();
    d.cgroup_parent = format!("{first_parent}-b");
    d.spawn(&[]);
    for dir in cgroup_dirs(&first_parent) {
        let _ = std::fs::remove_dir(dir);
    }
    let ns = Netns::new("adopt");
    let policy = write_policy(&d, "joined.toml", JOINED);
    let script = format!("{NC} -w 2 10.99.0.1 9090 </dev/null; echo denied=$?");
    let out = d.cli(&[
        "sandbox",
        "--json",
        "--policy",
        &policy,
        "--netns",
        &ns.path(),
        "--",
        "sh",
        "-c",
        &script,
    ]);
    let r = json(&out);
    assert!(
        r["stderr"]
            .as_str()
            .is_some_and(|e| e.contains("Operation not permitted")),
        "egress outside the allow-list is refused under the second rauhad: {r}"
    );
    assert_eq!(cgroup_bpf(&r)["in_force"], true, "{r}");

    for name in ["post_bind4", "post_bind6", "connect4", "connect6"] {
        let _ = std::fs::remove_file(d.bpffs.join("rauha/links").join(name));
    }
    let out = d.cli(&["sandbox", "--json", "--", "true"]);
    let layer = cgroup_bpf(&json(&out));
    assert_eq!(layer["in_force"], false, "{layer}");
    assert!(
        layer["detail"].as_str().is_some_and(
            |t| t.contains("not attached to the zone's cgroup") && t.contains("connect4")
        ),
        "{layer}"
    );
}

#[test]
fn a_zone_reaches_another_zones_listener_only_once_its_policy_allows_it() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    let ns = Netns::new("zones");
    let closed = write_policy(&d, "closed.toml", "[network]\nmode = \"joined\"\n");
    let open = write_policy(
        &d,
        "open.toml",
        "[network]\nmode = \"joined\"\nallowed_zones = [\"zb\"]\n",
    );
    for (zone, policy) in [("za", &closed), ("zb", &closed)] {
        let out = d.cli(&[
            "zone",
            "create",
            zone,
            "--policy",
            policy,
            "--netns",
            &ns.path(),
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let out = d.cli(&[
        "run",
        "--zone",
        "zb",
        "--",
        "/bin/busybox",
        "nc",
        "-l",
        "-p",
        "7000",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let connect = format!("echo hello | {NC} -w 2 127.0.0.1 7000");
    let out = d.cli(&["exec", "za", "--", "sh", "-c", &connect]);
    assert_ne!(out.status.code(), Some(0), "denied while zb is not allowed");
    assert!(
        text(&out.stdout).contains("Operation not permitted")
            || text(&out.stderr).contains("Operation not permitted"),
        "{} {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // A policy update is a map update: zb's listener keeps running.
    let out = d.cli(&["zone", "update", "za", "--policy", &open]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = d.cli(&["exec", "za", "--", "sh", "-c", &connect]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "allowed now: {} {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    for zone in ["za", "zb"] {
        assert!(d.cli(&["zone", "delete", "--force", zone]).status.success());
    }
}

/// Removes a cgroup tree in every hierarchy when dropped, deepest first
/// (the zones in it are gone by then: the daemon drops before this guard).
struct RemoveCgroups(String);

impl Drop for RemoveCgroups {
    fn drop(&mut self) {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    walk(&e.path(), out);
                    out.push(e.path());
                }
            }
        }
        let mut dirs = Vec::new();
        for root in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .chain([std::path::PathBuf::from("/sys/fs/cgroup")])
        {
            let top = root.join(&self.0);
            if top.is_dir() {
                walk(&top, &mut dirs);
                dirs.push(top);
            }
        }
        for d in dirs {
            let _ = std::fs::remove_dir(&d);
        }
    }
}

#[test]
fn a_zone_in_another_cgroup_parent_keeps_its_egress_rules() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    let ns = Netns::new("podcg");
    let policy = write_policy(&d, "joined.toml", JOINED);
    // As kubelet's pod cgroup: outside rauhad's own cgroup parent.
    let parent = format!("/{}-pods/pod-a", d.cgroup_parent);
    let _cleanup = RemoveCgroups(format!("{}-pods", d.cgroup_parent));
    let out = d.cli(&[
        "zone",
        "create",
        "pz",
        "--policy",
        &policy,
        "--netns",
        &ns.path(),
        "--cgroup-parent",
        &parent,
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let zone = json(&out);
    let cgroup_bpf = zone["enforcement"]["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .find(|l| l["layer"] == "cgroup_bpf")
        .cloned()
        .expect("cgroup_bpf");
    assert_eq!(cgroup_bpf["in_force"], true, "{cgroup_bpf}");
    let script = format!(
        "{NC} -w 2 10.99.0.1 8080 </dev/null; echo allowed=$?; {NC} -w 2 10.99.0.1 9090 </dev/null; echo denied=$?"
    );
    let out = d.cli(&["exec", "pz", "--", "sh", "-c", &script]);
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        all.contains("Operation not permitted"),
        "the denied port is refused by the cgroup programs on the zone's own cgroup: {all}"
    );
    // The zone's cgroup is in the given parent.
    let id = zone["id"].as_str().expect("zone id");
    assert!(
        ["/sys/fs/cgroup/memory", "/sys/fs/cgroup"]
            .iter()
            .any(|root| std::path::Path::new(&format!("{root}{parent}/{id}")).is_dir()),
        "no cgroup {parent}/{id}"
    );
    let out = d.cli(&["zone", "delete", "--force", "pz"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}
