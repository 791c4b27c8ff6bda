//! Many sandboxes at once.

use rauha_e2e::{ready, Daemon};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_sandboxes_at_once_have_correct_unmixed_output() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let mut client = d.sandbox_client().await;
        let mut req = rauha_e2e::sandbox_request(
            &["sh", "-c", "echo out-$N; echo err-$N >&2; exit $((N % 7))"],
            None,
            60_000,
        );
        if let Some(spec) = req.spec.as_mut() {
            spec.env.push(format!("N={i}"));
        }
        tasks.push(tokio::spawn(
            async move { (i, client.run_sandbox(req).await) },
        ));
    }
    let mut zones = std::collections::HashSet::new();
    for t in tasks {
        let (i, r) = t.await.expect("join");
        let r = r
            .unwrap_or_else(|s| panic!("sandbox {i}: {s}"))
            .into_inner();
        assert_eq!(r.stdout, format!("out-{i}\n"));
        assert_eq!(r.stderr, format!("err-{i}\n"));
        assert_eq!(r.exit_code, i % 7);
        assert_eq!(r.status, if i % 7 == 0 { "succeeded" } else { "failed" });
        assert!(
            zones.insert(r.zone_id.clone()),
            "each task has its own zone"
        );
    }
    assert!(d.zone_cgroups().is_empty(), "every task zone was removed");
}
