//! Zones that join an existing network namespace (a pod's, in a cluster).

use std::process::Command;

use rauha_e2e::{json, ready, text, Daemon};

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
