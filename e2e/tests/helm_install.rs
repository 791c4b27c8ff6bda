//! charts/rauha's lifecycle on the one-node cluster, which `scripts/cluster.sh
//! up` installed through it (release `rauha` in `rauha-system`, with the
//! values it wrote to its state dir): `helm uninstall` refuses while a pod of
//! the RuntimeClass runs, then leaves the node as it was before Rauha;
//! `helm install` from there makes it a Rauha node again; `helm upgrade` of
//! the enforcement level rolls the node DaemonSet, the node's label dropping
//! while rauhad does not serve, and a task running across it keeps its
//! result. Runs after `kubernetes` in CI's Kubernetes stage, and leaves the
//! release installed.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

mod k8s;
use k8s::*;

const RELEASE: &str = "rauha";
/// `helm uninstall` of the release, waiting for everything to go.
const UNINSTALL: [&str; 7] = [
    "uninstall",
    RELEASE,
    "-n",
    NAMESPACE,
    "--wait",
    "--timeout",
    "5m",
];

fn helm_ok(args: &[&str]) -> String {
    let out = rauha_e2e::chart::run(args);
    assert!(
        out.status.success(),
        "helm {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `helm install|upgrade` of the release from the chart with the
/// cluster's values and `sets`; `wait` waits until it is Ready.
fn release(verb: &str, chart: &str, values: &str, sets: &[&str], wait: bool) {
    let mut args = vec![verb, RELEASE, chart, "-n", NAMESPACE, "-f", values];
    for s in sets {
        args.extend(["--set", s]);
    }
    if wait {
        args.extend(["--wait", "--timeout", "5m"]);
    }
    helm_ok(&args);
}

fn node_metadata() -> Value {
    let nodes: Value =
        serde_json::from_str(&kubectl_ok(&["get", "nodes", "-o", "json"])).expect("nodes JSON");
    nodes["items"][0]["metadata"].clone()
}

fn ready_label() -> Option<String> {
    node_metadata()["labels"]["rauha.dev/ready"]
        .as_str()
        .map(str::to_string)
}

fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A pod of the RuntimeClass that sleeps, once Ready.
fn plain_pod(name: &str, registry: &str) {
    apply_ok(&serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "runtimeClassName": "rauha",
            "automountServiceAccountToken": false,
            "containers": [{"name": "c", "image": image(registry), "command": ["sleep", "3600"]}],
        },
    }));
    kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        &format!("pod/{name}"),
        "-n",
        "default",
        "--timeout=120s",
    ]);
}

fn output(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Processes whose command line starts with `prefix`.
fn processes_of(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.starts_with(prefix))
        .collect()
}

#[test]
fn k8s_helm_uninstall_refuses_under_pods_then_restores_the_node_and_install_and_upgrade_work() {
    let Some(registry) = cluster() else { return };
    if !rauha_e2e::chart::helm_ready() {
        return;
    }
    let dir = cluster_dir();
    let chart = rauha_e2e::chart::chart();
    let chart = chart.to_str().expect("utf-8");
    let values = dir.join("values.yaml");
    let values = values.to_str().expect("utf-8");
    let config = dir.join("containerd/config.toml");
    let before = std::fs::read(dir.join("containerd/config.toml.before-rauha"))
        .expect("containerd's config before Rauha (cluster.sh keeps it)");
    let installed = dir.join("opt/rauha/bin");
    let shim = installed.join("containerd-shim-rauha-v2");
    let rauhad = installed.join("rauhad");
    assert_ne!(
        std::fs::read(&config).expect("config"),
        before,
        "cluster.sh installed Rauha"
    );
    assert_eq!(ready_label().as_deref(), Some("true"));

    // 0. Values of a wrong type or an unknown key: helm install fails with
    //    the schema's message, and installs nothing.
    let bad = dir.join("bad-values.yaml");
    for (text, key) in [
        ("node:\n  enforcement: always\n", "enforcement"),
        ("node:\n  installdir: /opt/x\n", "installdir"),
    ] {
        std::fs::write(&bad, text).expect("values");
        let out = rauha_e2e::chart::run(&[
            "install",
            "bad-values",
            chart,
            "-n",
            "default",
            "-f",
            bad.to_str().expect("utf-8"),
        ]);
        let said = output(&out);
        assert!(!out.status.success(), "{text:?} installed");
        assert!(
            said.contains("schema") && said.contains(key),
            "{text:?}: {said}"
        );
        assert!(
            !rauha_e2e::chart::run(&["status", "bad-values", "-n", "default"])
                .status
                .success()
        );
    }
    let _ = std::fs::remove_file(&bad);

    // 1. A pod under the class stops helm uninstall, which names it and
    //    changes nothing.
    let pod = unique("holds");
    plain_pod(&pod, &registry);
    let sandbox = sandbox_of(&pod);
    assert!(has_zone(&sandbox), "the pod is a zone of the node's rauhad");
    let refused = rauha_e2e::chart::run(&UNINSTALL);
    let said = output(&refused);
    assert!(
        !refused.status.success(),
        "uninstall went ahead under {pod}: {said}"
    );
    assert!(
        said.contains("refusing to uninstall Rauha") && said.contains(&format!("default/{pod}")),
        "the refusal names the pod: {said}"
    );
    assert_eq!(ready_label().as_deref(), Some("true"), "still a Rauha node");
    assert!(shim.exists() && has_zone(&sandbox));

    // 2. Once the pod is gone, helm uninstall takes Rauha away: containerd's
    //    config byte-identical to before, no binary, label, CRD, zone
    //    (including one made on the node directly), cgroup, mount or BPF pin.
    kubectl_ok(&[
        "delete",
        "pod",
        &pod,
        "-n",
        "default",
        "--wait=true",
        "--timeout=60s",
    ]);
    let own = unique("own");
    let made = Command::new(rauha_e2e::bin_dir().join("rauha"))
        .args(["zone", "create", &own])
        .output()
        .expect("rauha zone create");
    assert!(made.status.success(), "{}", output(&made));
    helm_ok(&UNINSTALL);
    assert!(
        std::fs::read(&config).expect("config") == before,
        "containerd's config differs from before install:\n{}",
        std::fs::read_to_string(&config).unwrap_or_default()
    );
    assert!(!installed.exists(), "{} is left", installed.display());
    let meta = node_metadata();
    assert!(meta["labels"]["rauha.dev/ready"].is_null(), "{meta}");
    assert!(
        meta["annotations"]["rauha.dev/enforcement"].is_null(),
        "{meta}"
    );
    for (kind, name) in [
        ("crd", "zones.rauha.dev"),
        ("crd", "sandboxtasks.rauha.dev"),
        ("runtimeclass", "rauha"),
        ("clusterrole", "rauha-node"),
    ] {
        let out = kubectl(&["get", kind, name]);
        assert!(!out.status.success(), "{kind} {name} is left");
    }
    let rauhad_cmd = rauhad.display().to_string();
    wait_until(Duration::from_secs(30), "rauhad gone", || {
        processes_of(&rauhad_cmd).is_empty()
    });
    assert!(!dir.join("rauha").exists(), "rauhad's state dir is left");
    assert!(!dir.join("rauhad.sock").exists(), "rauhad's socket is left");
    assert!(
        !Path::new("/sys/fs/bpf/rauha-cluster").exists(),
        "BPF pins are left"
    );
    let mut roots = vec![std::path::PathBuf::from("/sys/fs/cgroup")];
    roots.extend(
        std::fs::read_dir("/sys/fs/cgroup")
            .expect("cgroups")
            .flatten()
            .map(|e| e.path()),
    );
    for root in roots {
        for name in ["rauha-cluster", "rauha-cluster-daemon"] {
            let cg = root.join(name);
            assert!(!cg.exists(), "{} is left", cg.display());
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let state = format!(" {}/rauha/", dir.display());
    assert!(
        !mounts.contains(&state),
        "mounts under rauhad's state dir are left"
    );
    // containerd came back with its own config: the node stays Ready.
    wait_until(
        Duration::from_secs(60),
        "the node Ready after uninstall",
        || {
            kubectl_ok(&[
                "get",
                "nodes",
                "-o",
                "jsonpath={.items[0].status.conditions[?(@.type==\"Ready\")].status}",
            ]) == "True"
        },
    );

    // 3. helm install on that node, now a containerd 2.x node whose config
    //    imports a drop-in directory (as containerd 2.2's default does): the
    //    handler goes there and the main file stays as it is. The
    //    DaemonSet and the operator become Ready, the node gets the label;
    //    a SandboxTask succeeds and a plain pod runs as a zone.
    let conf_d = dir.join("containerd/conf.d");
    std::fs::create_dir_all(&conf_d).expect("conf.d");
    let imports = [
        format!("imports = [\"{}/*.toml\"]\n", conf_d.display()).into_bytes(),
        before.clone(),
    ]
    .concat();
    std::fs::write(&config, &imports).expect("config");
    restart_containerd(&dir);
    let dropin_set = format!("node.containerd.dropInDir={}", conf_d.display());
    let dropin = conf_d.join("rauha.toml");
    release("install", chart, values, &[&dropin_set], true);
    wait_until(Duration::from_secs(60), "the ready label", || {
        ready_label().as_deref() == Some("true")
    });
    assert!(node_metadata()["annotations"]["rauha.dev/enforcement"].is_string());
    assert!(
        std::fs::read(&config).expect("config") == imports,
        "the main config was edited"
    );
    let text = std::fs::read_to_string(&dropin).expect("the drop-in");
    assert!(text.contains("containerd.runtimes.rauha]"), "{text}");
    assert!(shim.exists());
    node_pods_change_only_their_own_node();
    let t = unique("installed");
    apply_ok(&task(
        &t,
        &image(&registry),
        "echo installed",
        serde_json::json!({}),
    ));
    let done = wait_finished(&t, Duration::from_secs(120));
    assert_eq!(phase(&done), "Succeeded", "{done}");
    assert_eq!(done["status"]["result"]["stdout"], "installed\n", "{done}");
    let pod = unique("runs");
    plain_pod(&pod, &registry);
    assert!(
        has_zone(&sandbox_of(&pod)),
        "the pod is a zone of the node's rauhad"
    );

    // 4. helm upgrade to enforcement=required rolls the DaemonSet: this
    //    kernel cannot load BPF-LSM, so the new rauhad refuses to serve and
    //    the node's label drops; back to preferred, it serves again, and a
    //    task that ran across both rolls ends with its own result.
    let across = unique("across");
    apply_ok(&task(
        &across,
        &image(&registry),
        "sleep 25; echo survived",
        serde_json::json!({}),
    ));
    wait_task(&across, Duration::from_secs(60), |t| phase(t) == "Running");
    release(
        "upgrade",
        chart,
        values,
        &[&dropin_set, "node.enforcement=required"],
        false,
    );
    wait_until(
        Duration::from_secs(90),
        "the label dropped under required",
        || ready_label().is_none(),
    );
    // What the pod said, in its current or its last run.
    wait_until(Duration::from_secs(60), "the node pod saying why", || {
        ["--previous", "--timestamps=false"].iter().any(|flag| {
            let logs = kubectl(&["logs", "-n", NAMESPACE, "daemonset/rauha-node", flag]);
            output(&logs).contains("rauhad exited")
        })
    });
    release("upgrade", chart, values, &[&dropin_set], true);
    wait_until(Duration::from_secs(60), "the ready label back", || {
        ready_label().as_deref() == Some("true")
    });
    let done = wait_finished(&across, Duration::from_secs(120));
    assert_eq!(phase(&done), "Succeeded", "{done}");
    assert_eq!(done["status"]["result"]["stdout"], "survived\n", "{done}");

    for (kind, name) in [("pod", &pod), ("sandboxtask", &t), ("sandboxtask", &across)] {
        kubectl_ok(&[
            "delete",
            kind,
            name,
            "-n",
            "default",
            "--wait=true",
            "--timeout=60s",
        ]);
    }

    // 5. Uninstalled again, the drop-in goes and the main file is as it
    //    was; then the cluster gets back what cluster.sh installed.
    helm_ok(&UNINSTALL);
    assert!(!dropin.exists(), "the drop-in is left");
    assert!(
        std::fs::read(&config).expect("config") == imports,
        "the main config was edited"
    );
    assert!(!installed.exists(), "{} is left", installed.display());
    std::fs::write(&config, &before).expect("config");
    restart_containerd(&dir);
    release("install", chart, values, &[], true);
    wait_until(Duration::from_secs(60), "the ready label", || {
        ready_label().as_deref() == Some("true")
    });
}

/// The cluster's containerd restarted (cluster.sh's supervisor starts it
/// again), as a node's `systemctl restart containerd`.
fn restart_containerd(dir: &Path) {
    let out = Command::new(dir.join("restart-containerd"))
        .output()
        .expect("restart-containerd");
    assert!(out.status.success(), "{}", output(&out));
}

/// The chart's admission policy: the node pods' account may change only
/// the node its token names, and only rauha.dev/ labels there.
fn node_pods_change_only_their_own_node() {
    let node = node_metadata()["name"].as_str().expect("name").to_string();
    let account = format!("system:serviceaccount:{NAMESPACE}:rauha-node");
    let on = |node_of_token: Option<&str>, label: &str| -> Output {
        let mut args = vec!["--as".to_string(), account.clone()];
        if let Some(n) = node_of_token {
            args.push(format!(
                "--as-user-extra=authentication.kubernetes.io/node-name={n}"
            ));
        }
        args.extend(["label", "node", &node, label, "--overwrite"].map(String::from));
        kubectl(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    // (Each a change: kubectl sends no request for a label it has.)
    let own = on(Some(&node), "rauha.dev/policy-check=1");
    assert!(
        own.status.success(),
        "its own node's label: {}",
        output(&own)
    );
    for (token, label, why) in [
        (Some(node.as_str()), "example.com/x=1", "only rauha.dev/"),
        (
            Some("another-node"),
            "rauha.dev/policy-check=2",
            "only the node it runs on",
        ),
        (None, "rauha.dev/policy-check=3", "only the node it runs on"),
    ] {
        let out = on(token, label);
        let said = output(&out);
        assert!(!out.status.success(), "{token:?} {label}: allowed");
        assert!(said.contains(why), "{token:?} {label}: {said}");
    }
    kubectl_ok(&["label", "node", &node, "rauha.dev/policy-check-"]);
}
