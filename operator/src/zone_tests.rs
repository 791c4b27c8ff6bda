//! The Zone reconcile, and a task's use of a shared Zone, against the
//! scripted API server of `task_tests`.

use serde_json::{json, Value};

use crate::crd::Zone;
use crate::task::apply_for_test;
use crate::task_tests::{called, cluster, list, not_found, task, written_status, Call};
use crate::zone::reconcile;

const HOLDER: &str = "/api/v1/namespaces/default/pods/z-zone-aaaaaaaa";

fn zone(mode: &str, status: Value) -> Zone {
    serde_json::from_value(json!({
        "apiVersion": "rauha.dev/v1alpha1",
        "kind": "Zone",
        "metadata": {
            "name": "z", "namespace": "default", "uid": "aaaaaaaa-2222-3333-4444-555555555555",
            "generation": 2,
        },
        "spec": {"mode": mode, "preset": "strict"},
        "status": status,
    }))
    .expect("zone")
}

fn node(name: &str, ready: bool) -> Value {
    json!({
        "metadata": {
            "name": name,
            "labels": {"rauha.dev/ready": "true"},
            "annotations": {"rauha.dev/enforcement": "landlock+seccomp", "rauha.dev/enforcement-score": "70"},
        },
        "status": {
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
            "allocatable": {"cpu": "2", "memory": "4Gi"},
        },
    })
}

fn holder(phase: &str, ready: bool) -> Value {
    json!({
        "metadata": {"name": "z-zone-aaaaaaaa", "namespace": "default"},
        "spec": {"nodeName": "n1", "containers": [{"name": "holder"}]},
        "status": {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
        },
    })
}

/// Answers the Zone's status patches (echoed as a Zone), events, node and
/// pod lists; the rest as `route` says, or 404.
fn zone_cluster(
    nodes: Vec<Value>,
    route: impl Fn(&str, &str, &Value) -> Option<(u16, Value)> + Send + Sync + 'static,
) -> (crate::task::Ctx, crate::task_tests::Calls) {
    cluster(move |m, p, b| {
        if let Some(r) = route(m, p, b) {
            return r;
        }
        match m {
            "PATCH" if p.contains("/zones/z/status") => {
                let mut z = serde_json::to_value(zone("shared", json!({}))).expect("zone");
                z["status"] = b["status"].clone();
                (200, z)
            }
            _ if p.contains("/events") => (201, b.clone()),
            "GET" if p.starts_with("/api/v1/nodes") => (200, list(nodes.clone())),
            "GET" if p.starts_with("/api/v1/pods") => (200, list(vec![])),
            _ => not_found(),
        }
    })
}

fn zone_status(calls: &[Call]) -> Value {
    calls
        .iter()
        .rev()
        .find(|(m, p, _)| m == "PATCH" && p.contains("/zones/z/status"))
        .map(|c| c.2["status"].clone())
        .unwrap_or(Value::Null)
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or(&Value::Null)
}

#[tokio::test]
async fn a_per_task_zone_is_ready_and_holds_no_pod() {
    let (ctx, calls) = zone_cluster(vec![node("n1", true)], |_, _, _| None);
    reconcile(zone("per-task", json!({})).into(), ctx.into())
        .await
        .expect("reconcile");
    let calls = calls.lock().expect("calls");
    assert!(!called(&calls, "POST", "/api/v1/namespaces/default/pods"));
    let status = zone_status(&calls);
    assert_eq!(condition(&status, "Ready")["status"], "True");
    assert_eq!(condition(&status, "Ready")["reason"], "PerTask");
    assert_eq!(condition(&status, "Degraded")["status"], "False");
    assert_eq!(status["observedGeneration"], 2);
}

#[tokio::test]
async fn a_shared_zone_gets_a_holder_pod_on_a_ready_node() {
    let (ctx, calls) = zone_cluster(vec![node("n0", false), node("n1", true)], |m, p, b| {
        (m == "POST" && p.starts_with("/api/v1/namespaces/default/pods")).then(|| (201, b.clone()))
    });
    reconcile(zone("shared", json!({})).into(), ctx.into())
        .await
        .expect("reconcile");
    let calls = calls.lock().expect("calls");
    let pod = &calls
        .iter()
        .find(|(m, p, _)| m == "POST" && p.starts_with("/api/v1/namespaces/default/pods"))
        .expect("a holder pod was made")
        .2;
    assert_eq!(pod["metadata"]["name"], "z-zone-aaaaaaaa");
    assert_eq!(pod["metadata"]["annotations"]["rauha.dev/zone-name"], "z");
    crate::task_tests::assert_preset_with_workspace(
        &pod["metadata"]["annotations"]["rauha.dev/policy"],
        "strict",
    );
    assert_eq!(pod["metadata"]["labels"]["rauha.dev/zone-holder"], "z");
    assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "Zone");
    assert_eq!(pod["spec"]["nodeName"], "n1");
    assert_eq!(pod["spec"]["runtimeClassName"], "rauha");
    assert_eq!(pod["spec"]["automountServiceAccountToken"], false);
    let status = zone_status(&calls);
    assert_eq!(status["node"], "n1");
    assert_eq!(status["pod"], "z-zone-aaaaaaaa");
    assert_eq!(status["enforcement"]["level"], "landlock+seccomp");
    assert_eq!(status["enforcement"]["score"], 70);
    assert_eq!(condition(&status, "Ready")["status"], "False");
    assert_eq!(condition(&status, "Ready")["reason"], "Starting");
}

#[tokio::test]
async fn a_running_holder_makes_the_zone_ready() {
    let (ctx, calls) = zone_cluster(vec![node("n1", true)], |m, p, _| {
        (m == "GET" && p.starts_with(HOLDER)).then(|| (200, holder("Running", true)))
    });
    reconcile(zone("shared", json!({})).into(), ctx.into())
        .await
        .expect("reconcile");
    let calls = calls.lock().expect("calls");
    let status = zone_status(&calls);
    assert_eq!(condition(&status, "Ready")["status"], "True", "{status}");
    assert_eq!(condition(&status, "Degraded")["status"], "False");
    // Its readiness changed: an event says so.
    assert!(calls
        .iter()
        .any(|(m, p, b)| m == "POST" && p.contains("/events") && b["reason"] == "Ready"));
}

#[tokio::test]
async fn an_ended_holder_is_deleted_and_the_zone_degraded() {
    let (ctx, calls) = zone_cluster(vec![node("n1", true)], |m, p, _| match m {
        "GET" if p.starts_with(HOLDER) => Some((200, holder("Failed", false))),
        "DELETE" if p.starts_with(HOLDER) => Some((200, holder("Failed", false))),
        _ => None,
    });
    reconcile(zone("shared", json!({})).into(), ctx.into())
        .await
        .expect("reconcile");
    let calls = calls.lock().expect("calls");
    assert!(called(&calls, "DELETE", HOLDER));
    let status = zone_status(&calls);
    assert_eq!(condition(&status, "Degraded")["status"], "True");
    assert_eq!(condition(&status, "Degraded")["reason"], "HolderEnded");
}

#[tokio::test]
async fn a_holder_on_a_node_gone_not_ready_degrades_the_zone() {
    let (ctx, calls) = zone_cluster(vec![node("n1", false)], |m, p, _| {
        (m == "GET" && p.starts_with(HOLDER)).then(|| (200, holder("Running", true)))
    });
    reconcile(zone("shared", json!({})).into(), ctx.into())
        .await
        .expect("reconcile");
    let calls = calls.lock().expect("calls");
    let status = zone_status(&calls);
    assert_eq!(condition(&status, "Ready")["status"], "False");
    assert_eq!(condition(&status, "Degraded")["reason"], "NodeNotReady");
}

#[tokio::test]
async fn a_shared_zone_with_no_node_says_why() {
    let (ctx, calls) = zone_cluster(vec![node("n1", false)], |_, _, _| None);
    reconcile(zone("shared", json!({})).into(), ctx.into())
        .await
        .expect("reconcile");
    let calls = calls.lock().expect("calls");
    assert!(!called(&calls, "POST", "/api/v1/namespaces/default/pods"));
    let status = zone_status(&calls);
    assert_eq!(condition(&status, "Degraded")["reason"], "Unschedulable");
    assert!(condition(&status, "Ready")["message"]
        .as_str()
        .is_some_and(|m| m.contains("1 not Ready")));
}

/// A task route that serves Zone `z` with `status` and accepts pods.
fn task_cluster(zone_status: Value) -> (crate::task::Ctx, crate::task_tests::Calls) {
    let z = serde_json::to_value(zone("shared", zone_status)).expect("zone");
    cluster(crate::task_tests::with_defaults(move |m, p, b| match m {
        "GET" if p.starts_with("/apis/rauha.dev/v1alpha1/namespaces/default/zones/z") => {
            Some((200, z.clone()))
        }
        "POST" if p.starts_with("/api/v1/namespaces/default/pods") => Some((201, b.clone())),
        _ => None,
    }))
}

#[tokio::test]
async fn a_task_waits_for_its_shared_zone_then_joins_it_on_its_node() {
    let (ctx, calls) = task_cluster(json!({"conditions": [
        {"type": "Ready", "status": "False", "reason": "Starting", "message": "", "lastTransitionTime": "2026-12-06T10:00:00Z"}
    ]}));
    apply_for_test(&task(json!({"zoneRef": "z"}), json!({})), &ctx)
        .await
        .expect("reconcile");
    {
        let calls = calls.lock().expect("calls");
        assert!(!called(&calls, "POST", "/api/v1/namespaces/default/pods"));
        let status = written_status(&calls);
        assert_eq!(status["phase"], "Pending");
        assert!(status["message"]
            .as_str()
            .is_some_and(|m| m.contains("not ready")));
    }
    let (ctx, calls) = task_cluster(json!({"node": "n7", "conditions": [
        {"type": "Ready", "status": "True", "reason": "Running", "message": "", "lastTransitionTime": "2026-12-06T10:00:00Z"}
    ]}));
    apply_for_test(&task(json!({"zoneRef": "z"}), json!({})), &ctx)
        .await
        .expect("reconcile");
    let calls = calls.lock().expect("calls");
    let pod = &calls
        .iter()
        .find(|(m, p, _)| m == "POST" && p.starts_with("/api/v1/namespaces/default/pods"))
        .expect("a pod was made")
        .2;
    // On the zone's node (no node was even listed), joining the zone.
    assert_eq!(pod["spec"]["nodeName"], "n7");
    assert_eq!(pod["metadata"]["annotations"]["rauha.dev/zone"], "z");
    assert!(pod["metadata"]["annotations"]["rauha.dev/policy"].is_null());
    assert!(!called(&calls, "GET", "/api/v1/nodes"));
    assert_eq!(written_status(&calls)["node"], "n7");
}
