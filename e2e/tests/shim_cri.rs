//! The CRI path the way kubelet drives it, with crictl built from its Go
//! module: a pod sandbox with runtime handler `rauha` is a zone of the real
//! rauhad, in the network namespace CNI made for the pod.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use rauha_e2e::containerd::{containerd_ready, Containerd, ContainerdOpts, Registry};
use rauha_e2e::{bin_dir, prerequisite, ready, text, Daemon};

fn crictl() -> PathBuf {
    bin_dir().join("../tools/crictl")
}

fn zones(d: &Daemon) -> Vec<serde_json::Value> {
    let out = d.cli(&["zone", "list", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .expect("zone list JSON")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn cri_pod_sandbox_is_a_zone_in_the_cni_netns() {
    if !(ready()
        && containerd_ready()
        && prerequisite(
            bin_dir().join("containerd-shim-rauha-v2").is_file(),
            "containerd-shim-rauha-v2 (run `cargo build --workspace --bins` first)",
        )
        && prerequisite(
            crictl().is_file(),
            "crictl (run scripts/build-crictl.sh, which builds it from e2e/go/go.mod)",
        ))
    {
        return;
    }
    let d = Daemon::start();
    let reg = Registry::start();
    let pause = reg.push_busybox_image("e2e/pause:1", &["sleep", "3600"]);
    let app = reg.push_busybox_image("e2e/app:1", &["sh"]);
    let ctd = Containerd::start(
        ContainerdOpts::default()
            .path_dir(bin_dir())
            .env("RAUHA_ADDR", &format!("unix://{}", d.socket.display()))
            .sandbox_image(&pause)
            .plain_http_registry(&reg.host()),
    );
    let c = crictl();
    ctd.crictl_ok(&c, &["pull", &app]);

    let pod_json = ctd.dir().join("pod.json");
    std::fs::write(
        &pod_json,
        serde_json::json!({
            "metadata": {"name": "p1", "namespace": "default", "uid": "uid-p1", "attempt": 0},
            "log_directory": ctd.dir().join("logs").display().to_string(),
            "linux": {}
        })
        .to_string(),
    )
    .expect("pod.json");
    let pod = ctd
        .crictl_ok(
            &c,
            &[
                "runp",
                "--runtime",
                "rauha",
                &pod_json.display().to_string(),
            ],
        )
        .trim()
        .to_string();

    // The sandbox is one zone, running its pause process.
    let z = zones(&d);
    assert_eq!(z.len(), 1, "{z:?}");
    let name = z[0]["name"].as_str().unwrap_or_default().to_string();
    assert!(name.starts_with("k8s-io-"), "{name}");
    let inspect: serde_json::Value =
        serde_json::from_str(&ctd.crictl_ok(&c, &["inspectp", &pod])).expect("inspectp JSON");
    assert_eq!(inspect["status"]["state"], "SANDBOX_READY", "{inspect}");

    // It lives in the network namespace CNI set up: the pod's IP is on the
    // CNI bridge's subnet, and the pause process's netns is CNI's.
    let ip = inspect["status"]["network"]["ip"]
        .as_str()
        .unwrap_or_default();
    let prefix = ctd.subnet().rsplit_once('.').map(|(p, _)| p).unwrap_or("");
    assert!(
        !ip.is_empty() && ip.starts_with(prefix),
        "pod ip {ip:?}, subnet {}",
        ctd.subnet()
    );
    let netns = inspect["info"]["runtimeSpec"]["linux"]["namespaces"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|n| n["type"] == "network")
                .and_then(|n| n["path"].as_str())
        })
        .expect("the sandbox spec names CNI's netns")
        .to_string();
    let pid = inspect["info"]["pid"].as_u64().expect("sandbox pid");
    let ns_of = |p: &str| std::fs::metadata(p).map(|m| m.ino()).expect(p);
    assert_eq!(
        ns_of(&format!("/proc/{pid}/ns/net")),
        ns_of(&netns),
        "the pause process is in CNI's network namespace"
    );
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("pause cmdline");
    assert!(text(&cmdline).starts_with("sleep"), "{}", text(&cmdline));

    // Stopping the pod ends its zone's work; removing it removes the zone.
    ctd.crictl_ok(&c, &["stopp", &pod]);
    let inspect: serde_json::Value =
        serde_json::from_str(&ctd.crictl_ok(&c, &["inspectp", &pod])).expect("inspectp JSON");
    assert_eq!(inspect["status"]["state"], "SANDBOX_NOTREADY", "{inspect}");
    ctd.crictl_ok(&c, &["rmp", &pod]);
    assert!(zones(&d).is_empty(), "zones left: {:?}", zones(&d));
    assert!(
        ctd.crictl_ok(&c, &["pods", "-q"]).trim().is_empty(),
        "pods left"
    );
}
