//! What the Kubernetes test binaries share: the cluster's kubectl, its
//! tasks, its node's zones.
#![allow(dead_code)]

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rauha_e2e::prerequisite;
use serde_json::Value;

pub fn cluster() -> Option<String> {
    let kubeconfig = std::env::var("KUBECONFIG")
        .ok()
        .filter(|k| std::path::Path::new(k).is_file());
    let registry = std::env::var("RAUHA_REGISTRY").ok();
    if !prerequisite(
        kubeconfig.is_some() && registry.is_some(),
        "a cluster: eval \"$(scripts/cluster.sh up)\" (sets KUBECONFIG, RAUHA_REGISTRY and kubectl's PATH)",
    ) {
        return None;
    }
    registry
}

pub fn kubectl(args: &[&str]) -> Output {
    Command::new("kubectl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("kubectl (scripts/cluster.sh up puts it on PATH)")
}

pub fn kubectl_ok(args: &[&str]) -> String {
    let out = kubectl(args);
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `kubectl apply -f -` of `doc`.
pub fn apply(doc: &Value) -> Output {
    apply_text(&[], &doc.to_string())
}

/// `kubectl apply [flags] -f -` of YAML or JSON text.
pub fn apply_text(flags: &[&str], text: &str) -> Output {
    let mut child = Command::new("kubectl")
        .arg("apply")
        .args(flags)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    child.wait_with_output().expect("kubectl apply")
}

/// [`apply`], which must succeed.
pub fn apply_ok(doc: &Value) {
    let out = apply(doc);
    assert!(
        out.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{:x}", nanos % 0xffff_ffff)
}

pub fn task(name: &str, image: &str, script: &str, extra: Value) -> Value {
    let mut spec = serde_json::json!({
        "image": image,
        "command": ["sh", "-c"],
        "args": [script],
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    serde_json::json!({
        "apiVersion": "rauha.dev/v1alpha1",
        "kind": "SandboxTask",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    })
}

pub fn get(kind: &str, name: &str) -> Option<Value> {
    let out = kubectl(&["get", kind, name, "-n", "default", "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).expect("JSON"))
}

/// Polls the task until `done` says so (at most `limit`).
pub fn wait_task(name: &str, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + limit;
    let mut last = Value::Null;
    while Instant::now() < deadline {
        if let Some(t) = get("sandboxtask", name) {
            if done(&t) {
                return t;
            }
            last = t;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!(
        "task {name} not there within {limit:?}: {}\nevents: {}",
        serde_json::to_string_pretty(&last).unwrap_or_default(),
        kubectl_ok(&[
            "get",
            "events",
            "-n",
            "default",
            "--field-selector",
            &format!("involvedObject.name={name}")
        ])
    );
}

/// The node's zones, through its rauhad (`RAUHA_ADDR` from cluster.sh).
pub fn node_zones() -> Vec<Value> {
    let out = Command::new(rauha_e2e::bin_dir().join("rauha"))
        .args(["zone", "list", "--json"])
        .output()
        .expect("rauha");
    assert!(
        out.status.success(),
        "rauha zone list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("zone list JSON")
}

/// The CRI sandbox id of a pod, from the node's containerd.
pub fn sandbox_of(pod: &str) -> String {
    let endpoint = format!(
        "unix://{}",
        std::path::Path::new(&std::env::var("KUBECONFIG").expect("KUBECONFIG"))
            .ancestors()
            .nth(2)
            .expect("the cluster's dir")
            .join("containerd/containerd.sock")
            .display()
    );
    let out = Command::new(rauha_e2e::bin_dir().join("../tools/crictl"))
        .args(["--runtime-endpoint", &endpoint, "pods", "--name", pod, "-q"])
        .output()
        .expect("crictl (scripts/build-crictl.sh)");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        !id.is_empty(),
        "no sandbox for pod {pod}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    id
}

/// Whether a zone of the node serves the CRI sandbox `id` (its root is
/// the sandbox's bundle).
pub fn has_zone(sandbox: &str) -> bool {
    node_zones()
        .iter()
        .any(|z| z["root"].as_str().is_some_and(|r| r.ends_with(sandbox)))
}

/// Waits until no zone of the node serves the sandbox (at most 30 s).
pub fn zone_gone(sandbox: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while has_zone(sandbox) {
        assert!(
            Instant::now() < deadline,
            "the zone of sandbox {sandbox} outlived its pod: {:?}",
            node_zones()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Polls the task until it has finished (at most `limit`).
pub fn wait_finished(name: &str, limit: Duration) -> Value {
    wait_task(name, limit, |t| {
        ["Succeeded", "Failed", "TimedOut"].contains(&phase(t))
    })
}

pub fn phase(t: &Value) -> &str {
    t["status"]["phase"].as_str().unwrap_or("")
}

pub fn image(registry: &str) -> String {
    format!("{registry}/rauha/busybox:latest")
}

/// The chart's release namespace (scripts/cluster.sh installs it there).
pub const NAMESPACE: &str = "rauha-system";

pub fn cluster_dir() -> std::path::PathBuf {
    std::path::Path::new(&std::env::var("KUBECONFIG").expect("KUBECONFIG"))
        .ancestors()
        .nth(2)
        .expect("the cluster's dir")
        .to_path_buf()
}
