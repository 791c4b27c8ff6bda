//! The result envelope through the real CLI and over gRPC.

use rauha_e2e::{json, ready, sh, text, Daemon};

#[test]
fn cli_sandbox_json_reports_exit_code_output_and_status() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    let out = d.cli(&[
        "sandbox",
        "--json",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "CLI exit code; stderr: {}",
        text(&out.stderr)
    );
    let r = json(&out);
    assert_eq!(r["exit_code"], 3);
    assert_eq!(r["stdout"], "out\n");
    assert_eq!(r["stderr"], "err\n");
    assert_eq!(r["status"], "failed");
    assert_eq!(
        r["command"],
        serde_json::json!(["sh", "-c", "echo out; echo err >&2; exit 3"])
    );
    assert!(r["duration_ms"].as_u64().is_some());
    uuid::Uuid::parse_str(r["task_id"].as_str().expect("task_id")).expect("task_id is a UUID");
    uuid::Uuid::parse_str(r["zone_id"].as_str().expect("zone_id")).expect("zone_id is a UUID");
    let layers = r["enforcement"]["layers"].as_array().expect("layers");
    let in_force = |name: &str| {
        layers
            .iter()
            .find(|l| l["layer"] == name)
            .map(|l| l["in_force"].as_bool().unwrap_or(false))
    };
    assert_eq!(in_force("namespaces_cgroups"), Some(true));
    assert_eq!(
        in_force("seccomp"),
        Some(true),
        "standard denies system calls"
    );
    // BPF-LSM is reported as the node has it: refused by these machines'
    // kernel, attached in the e2e VM's.
    let info = json(&d.cli(&["info", "--json"]));
    let node_lsm = info["enforcement"]["layers"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["layer"] == "bpf_lsm"))
        .map(|l| l["in_force"].as_bool().unwrap_or(false));
    assert_eq!(
        in_force("bpf_lsm"),
        node_lsm,
        "the result says what the node has: {info}"
    );
    assert!(r["enforcement"]["score"].as_u64().expect("score") > 0);

    // The same result is stored and can be fetched again.
    let again = d.cli(&["task", "get", r["task_id"].as_str().expect("id"), "--json"]);
    assert!(again.status.success(), "task get: {}", text(&again.stderr));
    assert_eq!(json(&again), r);
}

#[test]
fn cli_exit_codes_follow_the_task() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    let ok = d.cli(&["sandbox", "--", "true"]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    let timed_out = d.cli(&["sandbox", "--timeout", "300ms", "--", "sleep", "30"]);
    assert_eq!(
        timed_out.status.code(),
        Some(124),
        "{}",
        text(&timed_out.stderr)
    );
    let missing = d.cli(&["sandbox", "--", "/no/such/program"]);
    assert_eq!(
        missing.status.code(),
        Some(125),
        "{}",
        text(&missing.stderr)
    );
    let err = text(&missing.stderr);
    assert!(err.contains("/no/such/program"), "names what failed: {err}");
}

#[tokio::test]
async fn env_is_only_what_was_given() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    let out = d.cli(&[
        "sandbox",
        "--json",
        "--env",
        "GREETING=hi",
        "--",
        "sh",
        "-c",
        "env | sort",
    ]);
    let r = json(&out);
    let env = r["stdout"].as_str().expect("stdout");
    assert!(env.contains("GREETING=hi"), "{env}");
    assert!(
        !env.contains("RAUHA_ADDR"),
        "the caller's environment must not leak in: {env}"
    );
    let r = sh(&d, "echo $HOME-$USER-$CARGO", None).await;
    assert_eq!(r.stdout, "--\n");
}

#[tokio::test]
async fn output_past_the_cap_is_counted() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    let policy = "[task]\nmax_output = \"1Ki\"\n";
    let r = sh(&d, "head -c 5000 /dev/zero | tr '\\0' x", Some(policy)).await;
    assert_eq!(r.status, "succeeded");
    assert_eq!(r.stdout.len(), 1024);
    assert!(r.stdout_truncated);
    assert_eq!(r.stdout_dropped_bytes, 5000 - 1024);
}
