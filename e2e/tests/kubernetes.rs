//! The Kubernetes path against a real one-node cluster (`scripts/cluster.sh
//! up`: etcd, kube-apiserver, controller-manager, scheduler, kubelet,
//! containerd 2.x with the `rauha` handler, rauhad and the operator). The
//! tests share one cluster: CI's stage brings it up once, exports its
//! KUBECONFIG, PATH (kubectl) and RAUHA_REGISTRY, runs these, and takes it
//! down.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod k8s;
use k8s::*;

#[test]
fn k8s_a_sandbox_task_succeeds_with_the_nodes_result() {
    let Some(registry) = cluster() else { return };
    let name = unique("hello");
    apply_ok(&task(
        &name,
        &image(&registry),
        "echo hi; exit 0",
        serde_json::json!({}),
    ));
    // While it runs (or once it is placed) its pod is under RuntimeClass
    // rauha, with no service-account token.
    let placed = wait_task(&name, Duration::from_secs(60), |t| {
        t["status"]["pod"].is_string()
    });
    let pod_name = placed["status"]["pod"].as_str().expect("pod");
    let pod = get("pod", pod_name).expect("the task's pod");
    assert_eq!(pod["spec"]["runtimeClassName"], "rauha");
    assert_eq!(pod["spec"]["automountServiceAccountToken"], false);
    assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "SandboxTask");
    let t = wait_finished(&name, Duration::from_secs(90));
    assert_eq!(phase(&t), "Succeeded", "{t}");
    let r = &t["status"]["result"];
    assert_eq!(r["exit_code"], 0, "{t}");
    assert_eq!(r["stdout"], "hi\n", "{t}");
    assert_eq!(r["status"], "succeeded", "{t}");
    assert!(
        r["enforcement"]["score"].as_u64().is_some(),
        "the node's enforcement: {t}"
    );
    assert!(t["status"]["completionTime"].is_string(), "{t}");
    kubectl_ok(&[
        "delete",
        "sandboxtask",
        &name,
        "-n",
        "default",
        "--wait=true",
    ]);
    assert!(get("pod", pod_name).is_none(), "the pod goes with its task");
}

#[test]
fn k8s_a_failing_task_fails_with_its_exit_code() {
    let Some(registry) = cluster() else { return };
    let name = unique("fails");
    apply_ok(&task(
        &name,
        &image(&registry),
        "echo no >&2; exit 3",
        serde_json::json!({}),
    ));
    let t = wait_finished(&name, Duration::from_secs(90));
    assert_eq!(phase(&t), "Failed", "{t}");
    assert_eq!(t["status"]["result"]["exit_code"], 3, "{t}");
    assert_eq!(t["status"]["result"]["stderr"], "no\n", "{t}");
    kubectl_ok(&["delete", "sandboxtask", &name, "-n", "default"]);
}

#[test]
fn k8s_a_task_past_its_timeout_ends_timed_out_and_its_pod_goes() {
    let Some(registry) = cluster() else { return };
    let name = unique("slow");
    apply_ok(&task(
        &name,
        &image(&registry),
        "sleep 600",
        serde_json::json!({"timeoutSeconds": 2}),
    ));
    let running = wait_task(&name, Duration::from_secs(60), |t| {
        ["Running", "TimedOut"].contains(&phase(t))
    });
    let pod = running["status"]["pod"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let sandbox = (phase(&running) == "Running").then(|| sandbox_of(&pod));
    wait_task(&name, Duration::from_secs(60), |t| phase(t) == "TimedOut");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pod.is_empty() && get("pod", &pod).is_some() {
        assert!(
            Instant::now() < deadline,
            "pod {pod} outlived its task's timeout"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    if let Some(sandbox) = sandbox {
        zone_gone(&sandbox);
    }
    kubectl_ok(&["delete", "sandboxtask", &name, "-n", "default"]);
}

#[test]
fn k8s_deleting_a_running_task_removes_its_pod_and_ttl_deletes_finished_ones() {
    let Some(registry) = cluster() else { return };
    let name = unique("deleted");
    apply_ok(&task(
        &name,
        &image(&registry),
        "sleep 600",
        serde_json::json!({}),
    ));
    let t = wait_task(&name, Duration::from_secs(90), |t| phase(t) == "Running");
    let pod = t["status"]["pod"].as_str().expect("pod").to_string();
    // The pod is a zone of the node's rauhad while it runs.
    let sandbox = sandbox_of(&pod);
    assert!(
        has_zone(&sandbox),
        "no zone serves pod {pod}: {:?}",
        node_zones()
    );
    kubectl_ok(&[
        "delete",
        "sandboxtask",
        &name,
        "-n",
        "default",
        "--wait=true",
        "--timeout=60s",
    ]);
    assert!(get("pod", &pod).is_none(), "its pod is gone with it");
    zone_gone(&sandbox);

    let short = unique("short-lived");
    apply_ok(&task(
        &short,
        &image(&registry),
        "true",
        serde_json::json!({"ttlSecondsAfterFinished": 1}),
    ));
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if get("sandboxtask", &short).is_none() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the finished task outlived its TTL"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn k8s_bad_tasks_and_edits_are_refused_by_the_schema() {
    let Some(registry) = cluster() else { return };
    let name = unique("bad");
    let out = apply(&task(
        &name,
        &image(&registry),
        "true",
        serde_json::json!({"timeoutSeconds": 0}),
    ));
    assert!(!out.status.success(), "a zero timeout is refused");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("timeoutSeconds"), "{err}");

    let name = unique("fixed");
    apply_ok(&task(
        &name,
        &image(&registry),
        "sleep 30",
        serde_json::json!({}),
    ));
    let edited = apply(&task(
        &name,
        &image(&registry),
        "echo changed",
        serde_json::json!({}),
    ));
    assert!(
        !edited.status.success(),
        "an edit of a task's spec is refused"
    );
    let err = String::from_utf8_lossy(&edited.stderr);
    assert!(err.contains("cannot change once it is created"), "{err}");
    kubectl_ok(&["delete", "sandboxtask", &name, "-n", "default"]);
}

#[test]
fn k8s_a_plain_pod_under_runtimeclass_rauha_runs_with_logs_and_exec() {
    let Some(registry) = cluster() else { return };
    let name = unique("plain");
    let pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "runtimeClassName": "rauha",
            "automountServiceAccountToken": false,
            "containers": [{
                "name": "app",
                "image": image(&registry),
                "command": ["sh", "-c", "echo up; sleep 600"],
            }],
        },
    });
    apply_ok(&pod);
    kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        &format!("pod/{name}"),
        "-n",
        "default",
        "--timeout=90s",
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let logs = kubectl_ok(&["logs", &name, "-n", "default"]);
        if logs == "up\n" {
            break;
        }
        assert!(Instant::now() < deadline, "logs: {logs:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
    let out = kubectl_ok(&["exec", &name, "-n", "default", "--", "echo", "inside"]);
    assert_eq!(out, "inside\n");
    kubectl_ok(&[
        "delete",
        "pod",
        &name,
        "-n",
        "default",
        "--grace-period=1",
        "--wait=true",
    ]);
}

#[test]
fn k8s_twenty_tasks_at_once_each_end_with_their_own_result() {
    let Some(registry) = cluster() else { return };
    let prefix = unique("many");
    let names: Vec<String> = (0..20).map(|i| format!("{prefix}-{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        apply_ok(&task(
            name,
            &image(&registry),
            &format!("echo task-{i}"),
            serde_json::json!({}),
        ));
    }
    for (i, name) in names.iter().enumerate() {
        let t = wait_finished(name, Duration::from_secs(180));
        assert_eq!(phase(&t), "Succeeded", "{t}");
        assert_eq!(
            t["status"]["result"]["stdout"],
            format!("task-{i}\n"),
            "{t}"
        );
    }
    for name in &names {
        kubectl_ok(&[
            "delete",
            "sandboxtask",
            name,
            "-n",
            "default",
            "--wait=false",
        ]);
    }
}

/// The cluster's state dir (scripts/cluster.sh), from KUBECONFIG.

#[test]
fn k8s_a_task_in_a_strict_zone_cannot_write_outside_its_paths() {
    let Some(registry) = cluster() else { return };
    let zone = unique("strict");
    apply_ok(&serde_json::json!({
        "apiVersion": "rauha.dev/v1alpha1",
        "kind": "Zone",
        "metadata": {"name": zone, "namespace": "default"},
        "spec": {"preset": "strict"},
    }));
    let name = unique("writer");
    apply_ok(&task(
        &name,
        &image(&registry),
        "echo ok > /tmp/fine && echo owned > /etc/owned",
        serde_json::json!({"zoneRef": zone}),
    ));
    let t = wait_finished(&name, Duration::from_secs(90));
    assert_eq!(phase(&t), "Failed", "{t}");
    let stderr = t["status"]["result"]["stderr"].as_str().unwrap_or_default();
    assert!(
        stderr.contains("/etc/owned")
            && (stderr.contains("denied") || stderr.contains("Read-only")),
        "the denial is in the task's stderr: {t}"
    );
    // A task naming a zone that does not exist fails with the reason.
    let orphan = unique("no-zone");
    apply_ok(&task(
        &orphan,
        &image(&registry),
        "true",
        serde_json::json!({"zoneRef": "absent"}),
    ));
    let t = wait_task(&orphan, Duration::from_secs(30), |t| phase(t) == "Failed");
    assert!(
        t["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("\"absent\"")),
        "{t}"
    );
    for (kind, n) in [
        ("sandboxtask", &name),
        ("sandboxtask", &orphan),
        ("zone", &zone),
    ] {
        kubectl_ok(&["delete", kind, n, "-n", "default"]);
    }
}

/// The pid of the chart's operator (its pod's process, seen from the
/// host).
fn operator_pid() -> i32 {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.starts_with(b"/usr/local/bin/rauha-operator\0"))
        })
        .expect("the operator's process (the chart's Deployment)")
}

/// Who holds the operator's leader lease.
fn lease_holder() -> String {
    kubectl_ok(&[
        "get",
        "lease",
        "rauha-operator",
        "-n",
        NAMESPACE,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ])
}

/// kill -9 of the operator's process while tasks run (the kubelet starts
/// it again, and it resumes its own lease): every task ends with its own
/// result and has exactly one pod. A second replica waits while the first
/// holds the lease, and takes over once the Deployment is scaled to none.
#[test]
fn k8s_the_operator_killed_loses_no_task_and_a_standby_takes_over() {
    let Some(registry) = cluster() else { return };
    let dir = cluster_dir();
    let prefix = unique("survives");
    let names: Vec<String> = (0..5).map(|i| format!("{prefix}-{i}")).collect();
    for (i, n) in names.iter().enumerate() {
        apply_ok(&task(
            n,
            &image(&registry),
            &format!("sleep 2; echo done-{i}"),
            serde_json::json!({}),
        ));
    }
    std::thread::sleep(Duration::from_millis(700));
    // SAFETY: kill with plain integers.
    unsafe { libc::kill(operator_pid(), libc::SIGKILL) };
    // A standby, started while the killed leader's lease has not expired:
    // it must wait.
    let mut standby = Command::new(rauha_e2e::bin_dir().join("rauha-operator"))
        .args(["--kubeconfig"])
        .arg(dir.join("pki/operator.kubeconfig"))
        .args([
            "--metrics-address",
            "127.0.0.1:18081",
            "--identity",
            "e2e-standby",
            "--lease-namespace",
            NAMESPACE,
            "--zone-holder-image",
            &format!("{registry}/rauha/pause:latest"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("rauha-operator");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _ = standby.try_wait();
    let standby = Kill(standby);
    for (i, n) in names.iter().enumerate() {
        let t = wait_finished(n, Duration::from_secs(120));
        assert_eq!(phase(&t), "Succeeded", "{t}");
        assert_eq!(
            t["status"]["result"]["stdout"],
            format!("done-{i}\n"),
            "{t}"
        );
        let pods = kubectl_ok(&[
            "get",
            "pods",
            "-n",
            "default",
            "-l",
            &format!("rauha.dev/task={n}"),
            "-o",
            "name",
        ]);
        assert_eq!(pods.lines().count(), 1, "one pod for task {n}: {pods}");
    }
    let holder = lease_holder();
    assert_ne!(holder, "e2e-standby", "the standby waited: {holder}");
    // The chart's operator goes (scaled to none, back to one at the end
    // even when this test fails): the standby takes over.
    struct Scale;
    impl Drop for Scale {
        fn drop(&mut self) {
            let _ = kubectl(&[
                "scale",
                "deployment/rauha-operator",
                "-n",
                NAMESPACE,
                "--replicas=1",
            ]);
        }
    }
    kubectl_ok(&[
        "scale",
        "deployment/rauha-operator",
        "-n",
        NAMESPACE,
        "--replicas=0",
    ]);
    let scaled = Scale;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let holder = lease_holder();
        if holder == "e2e-standby" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the standby did not take the lease over from {holder}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let n = unique("after");
    apply_ok(&task(
        &n,
        &image(&registry),
        "echo after",
        serde_json::json!({}),
    ));
    let t = wait_task(&n, Duration::from_secs(60), |t| phase(t) == "Succeeded");
    assert_eq!(t["status"]["result"]["stdout"], "after\n");
    // The chart's operator is back and the standby goes: it takes the
    // lease again.
    drop(scaled);
    kubectl_ok(&[
        "rollout",
        "status",
        "deployment/rauha-operator",
        "-n",
        NAMESPACE,
        "--timeout=120s",
    ]);
    drop(standby);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let holder = lease_holder();
        if holder != "e2e-standby" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cluster's operator did not take the lease back"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    for name in names.iter().chain([&n]) {
        kubectl_ok(&[
            "delete",
            "sandboxtask",
            name,
            "-n",
            "default",
            "--wait=false",
        ]);
    }
}

/// A task's `secretRefs` entry: the process sees the Secret's value in its
/// environment, the pod's spec never holds it, and the result is redacted.
#[test]
fn k8s_a_tasks_secret_reaches_it_and_is_redacted_from_its_result() {
    let Some(registry) = cluster() else { return };
    let secret = unique("token");
    let value = format!("s3cret-{}", unique("v"));
    kubectl_ok(&[
        "create",
        "secret",
        "generic",
        &secret,
        "-n",
        "default",
        &format!("--from-literal=token={value}"),
    ]);
    let name = unique("with-secret");
    apply_ok(&task(
        &name,
        &image(&registry),
        "echo \"token is $GH_TOKEN\"; test \"${#GH_TOKEN}\" -gt 10 && echo long",
        serde_json::json!({"secretRefs": [{"name": secret, "key": "token", "env": "GH_TOKEN"}]}),
    ));
    let t = wait_finished(&name, Duration::from_secs(90));
    assert_eq!(phase(&t), "Succeeded", "{t}");
    assert_eq!(
        t["status"]["result"]["stdout"], "token is [REDACTED:GH_TOKEN]\nlong\n",
        "{t}"
    );
    assert!(
        !t.to_string().contains(&value),
        "the value is nowhere in the task"
    );
    let pod = get("pod", t["status"]["pod"].as_str().expect("pod")).expect("pod");
    assert!(
        !pod.to_string().contains(&value),
        "the value is not in the pod: {pod}"
    );
    kubectl_ok(&["delete", "sandboxtask", &name, "-n", "default"]);
    kubectl_ok(&["delete", "secret", &secret, "-n", "default"]);
}

/// A `shared` Zone is one zone on one node, held by a pod of its own, with
/// the node's enforcement in its status; tasks that name it run in that
/// zone (one sees the other's process), make no zone of their own, and
/// the zone goes with the Zone.
#[test]
fn k8s_tasks_of_a_shared_zone_run_together_in_its_one_zone() {
    let Some(registry) = cluster() else { return };
    let zone = unique("shared");
    apply_ok(&serde_json::json!({
        "apiVersion": "rauha.dev/v1alpha1",
        "kind": "Zone",
        "metadata": {"name": zone, "namespace": "default"},
        "spec": {"mode": "shared", "preset": "standard"},
    }));
    let ready = |z: &Value| {
        z["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    let z = loop {
        let z = get("zone", &zone).expect("the zone");
        if ready(&z) {
            break z;
        }
        assert!(Instant::now() < deadline, "the zone is not ready: {z}");
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(
        z["status"]["node"].as_str().is_some_and(|n| !n.is_empty()),
        "{z}"
    );
    assert!(
        z["status"]["enforcement"]["level"]
            .as_str()
            .is_some_and(|l| !l.is_empty()),
        "the node's enforcement: {z}"
    );
    let in_rauhad = format!("shared-default-{zone}");
    let named = |name: &str| {
        node_zones()
            .iter()
            .filter(|z| z["name"].as_str() == Some(name))
            .count()
    };
    assert_eq!(named(&in_rauhad), 1, "{:?}", node_zones());

    // One task holds a process; the other sees it (one pid namespace:
    // one zone), then ends.
    let holder = unique("holds");
    apply_ok(&task(
        &holder,
        &image(&registry),
        "sleep 37",
        serde_json::json!({"zoneRef": zone}),
    ));
    let seer = unique("sees");
    apply_ok(&task(
        &seer,
        &image(&registry),
        "for i in $(seq 120); do ps | grep -q '[s]leep 37' && { echo seen; exit 0; }; sleep 0.5; done; ps; exit 1",
        serde_json::json!({"zoneRef": zone}),
    ));
    let t = wait_finished(&seer, Duration::from_secs(120));
    assert_eq!(phase(&t), "Succeeded", "{t}");
    assert_eq!(t["status"]["result"]["stdout"], "seen\n", "{t}");
    assert_eq!(
        t["status"]["node"], z["status"]["node"],
        "on the zone's node"
    );
    // Neither task pod made a zone of its own.
    let h = get("sandboxtask", &holder).expect("holder task");
    let pod = h["status"]["pod"].as_str().expect("the holder task's pod");
    assert!(!has_zone(&sandbox_of(pod)), "{:?}", node_zones());
    assert_eq!(named(&in_rauhad), 1);
    kubectl_ok(&["delete", "sandboxtask", &holder, &seer, "-n", "default"]);

    // The Zone deleted: its holder pod, and the zone, go.
    kubectl_ok(&["delete", "zone", &zone, "-n", "default"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while named(&in_rauhad) > 0 {
        assert!(
            Instant::now() < deadline,
            "the shared zone outlived its Zone: {:?}",
            node_zones()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A task's inputs (a ConfigMap's files) are in its workspace when it
/// starts, and what it changed there is listed in its result.
#[test]
fn k8s_a_tasks_inputs_are_in_its_workspace_and_its_changes_in_its_result() {
    let Some(registry) = cluster() else { return };
    let cm = unique("inputs");
    apply_ok(&serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": cm, "namespace": "default"},
        "data": {"greeting.txt": "hello\n", "keep.txt": "same\n"},
    }));
    let name = unique("workspace");
    apply_ok(&task(
        &name,
        &image(&registry),
        "pwd; cat in/greeting.txt; echo bye > out.txt; echo more >> in/greeting.txt",
        serde_json::json!({"inputs": [{"configMap": cm, "path": "in"}]}),
    ));
    let t = wait_finished(&name, Duration::from_secs(90));
    assert_eq!(phase(&t), "Succeeded", "{t}");
    let r = &t["status"]["result"];
    assert_eq!(r["stdout"], "/workspace\nhello\n", "{t}");
    let changed: Vec<(String, String)> = r["files_changed"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["kind"].as_str().unwrap_or_default().to_string(),
                c["path"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        changed,
        [
            ("modified".to_string(), "in/greeting.txt".to_string()),
            ("added".to_string(), "out.txt".to_string()),
        ],
        "{r}"
    );
    assert_eq!(r["files_changed_unlisted"], 0);
    kubectl_ok(&["delete", "sandboxtask", &name, "-n", "default"]);
    kubectl_ok(&["delete", "configmap", &cm, "-n", "default"]);
}

/// `GET /` of `addr` over plain HTTP: the status line and body.
fn http_get(addr: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(
        &addr.parse().expect("an address"),
        Duration::from_secs(5),
    )?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// An ordinary image runs under RuntimeClass `rauha` as on runc: a
/// Deployment of the nginx stand-in (root, binding :80) serves through its
/// pod IP and `kubectl port-forward`; a pod asking for the host's network
/// under the default pod policy, `baseline`, does not start, and says why.
#[test]
fn k8s_a_web_server_deployment_serves_on_80_and_host_network_is_refused_under_baseline() {
    let Some(registry) = cluster() else { return };
    let reg = rauha_e2e::containerd::Registry::attach(&registry);
    let web = rauha_e2e::critest::push_nginx(&reg, "e2e/nginx:stand-in");
    let name = unique("web");
    let deployment = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "runtimeClassName": "rauha",
                    "automountServiceAccountToken": false,
                    "containers": [{"name": "nginx", "image": web,
                        "ports": [{"containerPort": 80}]}],
                },
            },
        },
    });
    apply_ok(&deployment);
    kubectl_ok(&[
        "rollout",
        "status",
        &format!("deployment/{name}"),
        "-n",
        "default",
        "--timeout=120s",
    ]);
    let pod = kubectl_ok(&[
        "get",
        "pods",
        "-n",
        "default",
        "-l",
        &format!("app={name}"),
        "-o",
        "jsonpath={.items[0].metadata.name} {.items[0].status.podIP}",
    ]);
    let (pod, ip) = pod.split_once(' ').expect("name and IP");
    let page = http_get(&format!("{ip}:80")).expect("GET the pod IP");
    assert!(
        page.starts_with("HTTP/1.") && page.contains(" 200 ") && page.contains("Welcome to nginx!"),
        "{page}"
    );
    // kubectl port-forward, on a port of its choosing.
    let mut forward = Command::new("kubectl")
        .args([
            "port-forward",
            "-n",
            "default",
            &format!("pod/{pod}"),
            ":80",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl port-forward");
    let mut line = String::new();
    {
        use std::io::BufRead;
        let stdout = forward.stdout.take().expect("stdout");
        let mut reader = std::io::BufReader::new(stdout);
        reader
            .read_line(&mut line)
            .expect("port-forward's first line");
        // Read on: a closed pipe would end kubectl at its next line.
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    }
    // "Forwarding from 127.0.0.1:PORT -> 80"
    let local = line
        .split_whitespace()
        .nth(2)
        .filter(|a| a.starts_with("127.0.0.1:"))
        .map(str::to_string);
    let forwarded = local.as_deref().map(http_get);
    let _ = forward.kill();
    let _ = forward.wait();
    let page = forwarded
        .unwrap_or_else(|| panic!("port-forward said {line:?}"))
        .expect("GET through port-forward");
    assert!(page.contains("Welcome to nginx!"), "{page}");
    kubectl_ok(&[
        "delete",
        "deployment",
        &name,
        "-n",
        "default",
        "--wait=false",
    ]);

    // hostNetwork under baseline: the sandbox is refused, with the reason.
    let host = unique("hostnet");
    apply_ok(&serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": host, "namespace": "default"},
        "spec": {
            "runtimeClassName": "rauha",
            "hostNetwork": true,
            "automountServiceAccountToken": false,
            "containers": [{"name": "app", "image": image(&registry),
                "command": ["sleep", "600"]}],
        },
    }));
    let deadline = Instant::now() + Duration::from_secs(60);
    let events = loop {
        let events = kubectl_ok(&[
            "get",
            "events",
            "-n",
            "default",
            "--field-selector",
            &format!("involvedObject.name={host}"),
            "-o",
            "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
        ]);
        if events.contains("spec.hostNetwork") || Instant::now() > deadline {
            break events;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        events.contains("FailedCreatePodSandBox")
            && events.contains("pod policy \"baseline\" refuses spec.hostNetwork"),
        "{events}"
    );
    let phase = kubectl_ok(&[
        "get",
        "pod",
        &host,
        "-n",
        "default",
        "-o",
        "jsonpath={.status.phase}",
    ]);
    assert_eq!(phase, "Pending", "a refused pod never runs");
    kubectl_ok(&[
        "delete",
        "pod",
        &host,
        "-n",
        "default",
        "--grace-period=0",
        "--force",
        "--wait=true",
    ]);
}

/// Every object the Helm chart renders, for its default values and for
/// each documented switch, is accepted by the cluster's real API server
/// (a server-side dry run: validated, defaulted, admitted, not stored).
#[test]
fn k8s_the_charts_objects_are_accepted_by_the_api_server() {
    if cluster().is_none() || !rauha_e2e::chart::helm_ready() {
        return;
    }
    let ns = unique("chart");
    kubectl_ok(&["create", "namespace", &ns]);
    struct Gone(String);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = kubectl(&["delete", "namespace", &self.0, "--wait=false"]);
        }
    }
    let _gone = Gone(ns.clone());
    for sets in rauha_e2e::chart::SWITCHES {
        let yaml = rauha_e2e::chart::template(&ns, sets);
        let out = apply_text(&["--dry-run=server"], &yaml);
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "the API server refused the chart with {sets:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(said.contains("(server dry run)"), "{said}");
        if sets.is_empty() {
            for kind in [
                "deployment.apps",
                "runtimeclass.node.k8s.io",
                "customresourcedefinition",
            ] {
                assert!(said.contains(kind), "{kind} in: {said}");
            }
        }
    }
}
