//! Every branch of the SandboxTask reconcile against a scripted API
//! server (the pattern of kube-rs's controller-rs verifier): each test
//! says what the cluster holds, runs one reconcile, and checks the calls
//! it made and what it wrote.

use std::sync::{Arc, Mutex};

use kube::runtime::events::{Recorder, Reporter};
use kube::Client;
use serde_json::{json, Value};

use crate::crd::SandboxTask;
use crate::metrics::Metrics;
use crate::task::{apply_for_test, Ctx};

/// One call the reconcile made: method, path (with query), body.
pub(crate) type Call = (String, String, Value);
pub(crate) type Calls = Arc<Mutex<Vec<Call>>>;

/// Answers by `route`; records every call.
pub(crate) fn cluster(
    route: impl Fn(&str, &str, &Value) -> (u16, Value) + Send + Sync + 'static,
) -> (Ctx, Calls) {
    let calls: Calls = Arc::default();
    let log = Arc::clone(&calls);
    let route = Arc::new(route);
    let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let log = Arc::clone(&log);
        let route = Arc::clone(&route);
        async move {
            let method = req.method().to_string();
            let path = req
                .uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default();
            let bytes = req.into_body().collect_bytes().await.unwrap_or_default();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let (status, answer) = route(&method, &path, &body);
            log.lock().expect("log").push((method, path, body));
            Ok::<_, std::convert::Infallible>(
                http::Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(kube::client::Body::from(answer.to_string().into_bytes()))
                    .expect("response"),
            )
        }
    });
    let client = Client::new(service, "default");
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "rauha-operator".into(),
            instance: None,
        },
    );
    (
        Ctx::new(client, recorder, Arc::new(Metrics::default())),
        calls,
    )
}

pub(crate) fn not_found() -> (u16, Value) {
    (
        404,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
    )
}

pub(crate) fn task(spec: Value, status: Value) -> SandboxTask {
    let mut full =
        json!({"image": "reg/rauha/busybox:latest", "command": ["sh", "-c"], "args": ["echo hi"]});
    for (k, v) in spec.as_object().expect("spec") {
        full[k] = v.clone();
    }
    serde_json::from_value(json!({
        "apiVersion": "rauha.dev/v1alpha1",
        "kind": "SandboxTask",
        "metadata": {
            "name": "t", "namespace": "default", "uid": "11111111-2222-3333-4444-555555555555",
            "generation": 1, "creationTimestamp": "2026-12-06T10:00:00Z",
            "finalizers": ["rauha.dev/cleanup"],
        },
        "spec": full,
        "status": status,
    }))
    .expect("task")
}

const POD: &str = "/api/v1/namespaces/default/pods/t-11111111";

fn node(ready: bool) -> Value {
    json!({
        "metadata": {"name": "n1", "labels": {"rauha.dev/ready": "true"}},
        "status": {
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
            "allocatable": {"cpu": "2", "memory": "4Gi"},
        },
    })
}

pub(crate) fn list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items})
}

/// The pod's policy is the preset `name` with the workspace writable, and
/// nothing else changed.
pub(crate) fn assert_preset_with_workspace(annotation: &Value, name: &str) {
    let text = annotation.as_str().expect("a policy annotation");
    let got = rauha_spec::Policy::parse("pod", text).expect("the pod's policy parses");
    let mut want = rauha_spec::presets::load(name)
        .expect("preset")
        .expect("parses");
    want.filesystem.writable_paths.push("/workspace".into());
    assert_eq!(got, want, "{text}");
}

/// The status the reconcile wrote last (server-side apply on /status).
pub(crate) fn written_status(calls: &[Call]) -> Value {
    calls
        .iter()
        .rev()
        .find(|(m, p, _)| m == "PATCH" && p.contains("/sandboxtasks/t/status"))
        .map(|c| c.2["status"].clone())
        .unwrap_or(Value::Null)
}

pub(crate) fn called(calls: &[Call], method: &str, path: &str) -> bool {
    calls
        .iter()
        .any(|(m, p, _)| m == method && p.starts_with(path))
}

/// Echoes status patches and accepts events; the rest as `route` says,
/// or 404.
pub(crate) fn with_defaults(
    route: impl Fn(&str, &str, &Value) -> Option<(u16, Value)> + Send + Sync + 'static,
) -> impl Fn(&str, &str, &Value) -> (u16, Value) + Send + Sync + 'static {
    move |m: &str, p: &str, b: &Value| {
        if let Some(r) = route(m, p, b) {
            return r;
        }
        if m == "PATCH" && p.contains("/status") {
            let mut t = serde_json::to_value(task(json!({}), json!({}))).expect("task");
            t["status"] = b["status"].clone();
            return (200, t);
        }
        if p.contains("/events") {
            return (201, b.clone());
        }
        not_found()
    }
}

#[tokio::test]
async fn no_node_that_can_take_it_leaves_it_pending_with_the_reason() {
    let (ctx, calls) = cluster(with_defaults(|m, p, _| match m {
        "GET" if p.starts_with("/api/v1/nodes") => Some((200, list(vec![node(false)]))),
        "GET" if p.starts_with("/api/v1/pods") => Some((200, list(vec![]))),
        _ => None,
    }));
    apply_for_test(&task(json!({}), json!({})), &ctx)
        .await
        .expect("reconcile");
    let calls = calls.lock().expect("calls");
    assert!(
        !called(&calls, "POST", "/api/v1/namespaces/default/pods"),
        "no pod: {calls:?}"
    );
    let status = written_status(&calls);
    assert_eq!(status["phase"], "Pending");
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.contains("1 not Ready")),
        "{status}"
    );
}

#[tokio::test]
async fn a_new_task_gets_its_pod_on_a_ready_node() {
    let (ctx, calls) = cluster(with_defaults(|m, p, b| match m {
        "GET" if p.starts_with("/api/v1/nodes") => Some((200, list(vec![node(true)]))),
        "GET" if p.starts_with("/api/v1/pods") => Some((200, list(vec![]))),
        "POST" if p.starts_with("/api/v1/namespaces/default/pods") => Some((201, b.clone())),
        _ => None,
    }));
    apply_for_test(&task(json!({}), json!({})), &ctx)
        .await
        .expect("reconcile");
    let calls = calls.lock().expect("calls");
    let pod = &calls
        .iter()
        .find(|(m, p, _)| m == "POST" && p.starts_with("/api/v1/namespaces/default/pods"))
        .expect("a pod was made")
        .2;
    assert_eq!(pod["spec"]["nodeName"], "n1");
    assert_eq!(pod["spec"]["runtimeClassName"], "rauha");
    assert_preset_with_workspace(
        &pod["metadata"]["annotations"]["rauha.dev/policy"],
        "standard",
    );
    let status = written_status(&calls);
    assert_eq!(status["phase"], "Scheduled");
    assert_eq!(status["node"], "n1");
    assert_eq!(status["pod"], "t-11111111");
}

fn pod(state: Value) -> Value {
    json!({
        "metadata": {"name": "t-11111111", "namespace": "default"},
        "spec": {"nodeName": "n1", "containers": [{"name": "task"}]},
        "status": {"containerStatuses": [{"name": "task", "image": "i", "imageID": "", "ready": false, "restartCount": 0, "state": state}]},
    })
}

#[tokio::test]
async fn a_running_pod_makes_the_task_running() {
    let (ctx, calls) = cluster(with_defaults(|m, p, _| match (m, p) {
        ("GET", POD) => Some((
            200,
            pod(json!({"running": {"startedAt": "2026-12-06T10:00:01Z"}})),
        )),
        ("GET", "/api/v1/nodes/n1") => Some((200, node(true))),
        _ => None,
    }));
    let t = task(
        json!({}),
        json!({"phase": "Scheduled", "pod": "t-11111111", "node": "n1"}),
    );
    apply_for_test(&t, &ctx).await.expect("reconcile");
    let status = written_status(&calls.lock().expect("calls"));
    assert_eq!(status["phase"], "Running");
    assert_eq!(status["startTime"], "2026-12-06T10:00:01Z");
}

#[tokio::test]
async fn a_pod_seen_again_with_nothing_new_writes_nothing() {
    let route = || {
        with_defaults(|m, p, _| match (m, p) {
            ("GET", POD) => Some((
                200,
                pod(json!({"running": {"startedAt": "2026-12-06T10:00:01Z"}})),
            )),
            ("GET", "/api/v1/nodes/n1") => Some((200, node(true))),
            _ => None,
        })
    };
    let (ctx, calls) = cluster(route());
    let t = task(
        json!({}),
        json!({"phase": "Scheduled", "pod": "t-11111111", "node": "n1"}),
    );
    apply_for_test(&t, &ctx).await.expect("reconcile");
    let written = written_status(&calls.lock().expect("calls"));
    assert_eq!(written["phase"], "Running");
    // The same pod again, the task holding what was written: no write,
    // no event.
    let (ctx, calls) = cluster(route());
    apply_for_test(&task(json!({}), written), &ctx)
        .await
        .expect("reconcile");
    let calls = calls.lock().expect("calls");
    assert!(
        !calls.iter().any(|(m, _, _)| m == "PATCH" || m == "POST"),
        "{calls:?}"
    );
}

#[tokio::test]
async fn an_ended_pod_ends_the_task_with_the_nodes_result_or_says_there_is_none() {
    let result = json!({"exit_code": 0, "status": "succeeded", "stdout": "hi\n", "enforcement": {"score": 51}});
    let message = result.to_string();
    let (ctx, calls) = cluster(with_defaults(move |m, p, _| match (m, p) {
        ("GET", POD) => Some((
            200,
            pod(
                json!({"terminated": {"exitCode": 0, "message": message, "finishedAt": "2026-12-06T10:00:03Z"}}),
            ),
        )),
        _ => None,
    }));
    let running = task(json!({}), json!({"phase": "Running", "pod": "t-11111111"}));
    apply_for_test(&running, &ctx).await.expect("reconcile");
    let status = written_status(&calls.lock().expect("calls"));
    assert_eq!(status["phase"], "Succeeded");
    assert_eq!(status["result"]["stdout"], "hi\n");
    assert_eq!(status["completionTime"], "2026-12-06T10:00:03Z");

    let (ctx, calls) = cluster(with_defaults(|m, p, _| match (m, p) {
        ("GET", POD) => Some((
            200,
            pod(json!({"terminated": {"exitCode": 3, "reason": "Error"}})),
        )),
        _ => None,
    }));
    apply_for_test(&running, &ctx).await.expect("reconcile");
    let status = written_status(&calls.lock().expect("calls"));
    assert_eq!(status["phase"], "Failed");
    assert!(status["result"].is_null(), "no result is made up: {status}");
    let reported = status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "ResultReported").cloned())
        .expect("ResultReported");
    assert_eq!(reported["status"], "False");
}

#[tokio::test]
async fn a_task_past_its_timeout_loses_its_pod_and_times_out() {
    let (ctx, calls) = cluster(with_defaults(|m, p, _| match m {
        "DELETE" if p.starts_with(POD) => {
            Some((200, json!({"kind": "Status", "status": "Success"})))
        }
        _ => None,
    }));
    // Started long ago, with a 2 s timeout.
    let t = task(
        json!({"timeoutSeconds": 2}),
        json!({"phase": "Running", "pod": "t-11111111", "startTime": "2026-12-06T10:00:00Z"}),
    );
    apply_for_test(&t, &ctx).await.expect("reconcile");
    let calls = calls.lock().expect("calls");
    assert!(called(&calls, "DELETE", POD), "{calls:?}");
    assert_eq!(written_status(&calls)["phase"], "TimedOut");
}

#[tokio::test]
async fn a_finished_task_past_its_ttl_is_deleted() {
    const TASK: &str = "/apis/rauha.dev/v1alpha1/namespaces/default/sandboxtasks/t";
    let (ctx, calls) = cluster(with_defaults(|m, p, _| match m {
        "DELETE" if p.starts_with(TASK) => {
            Some((200, json!({"kind": "Status", "status": "Success"})))
        }
        _ => None,
    }));
    let t = task(
        json!({"ttlSecondsAfterFinished": 1}),
        json!({"phase": "Succeeded", "completionTime": "2026-12-06T10:00:00Z"}),
    );
    apply_for_test(&t, &ctx).await.expect("reconcile");
    let calls = calls.lock().expect("calls");
    assert!(called(&calls, "DELETE", TASK), "{calls:?}");
    assert!(
        !called(&calls, "PATCH", "/apis"),
        "a finished task's status is left alone"
    );
}

#[tokio::test]
async fn a_pod_gone_or_a_node_not_ready_fails_a_running_task() {
    let running = task(json!({}), json!({"phase": "Running", "pod": "t-11111111"}));
    // Its pod was deleted under it.
    let (ctx, calls) = cluster(with_defaults(|_, _, _| None));
    apply_for_test(&running, &ctx).await.expect("reconcile");
    let status = written_status(&calls.lock().expect("calls"));
    assert_eq!(status["phase"], "Failed");
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.contains("deleted")),
        "{status}"
    );

    // Its node went NotReady.
    let (ctx, calls) = cluster(with_defaults(|m, p, _| match (m, p) {
        ("GET", POD) => Some((200, pod(json!({"running": {}})))),
        ("GET", "/api/v1/nodes/n1") => Some((200, node(false))),
        ("DELETE", p) if p.starts_with(POD) => {
            Some((200, json!({"kind": "Status", "status": "Success"})))
        }
        _ => None,
    }));
    apply_for_test(&running, &ctx).await.expect("reconcile");
    let calls = calls.lock().expect("calls");
    assert!(called(&calls, "DELETE", POD));
    let status = written_status(&calls);
    assert_eq!(status["phase"], "Failed");
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.contains("NotReady")),
        "{status}"
    );
}

#[tokio::test]
async fn a_zone_ref_to_no_zone_fails_the_task_with_the_reason() {
    let (ctx, calls) = cluster(with_defaults(|_, _, _| None));
    apply_for_test(&task(json!({"zoneRef": "absent"}), json!({})), &ctx)
        .await
        .expect("reconcile");
    let status = written_status(&calls.lock().expect("calls"));
    assert_eq!(status["phase"], "Failed");
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.contains("\"absent\"")),
        "{status}"
    );
}
