//! Limits that bite: pids, memory, time.

use std::time::{Duration, Instant};

use rauha_e2e::{ready, sandbox, sh, Daemon};

#[tokio::test]
async fn a_fork_bomb_is_held_by_pids_max_and_the_host_stays_responsive() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    let policy = "[resources]\npids_max = 64\nmemory_limit = \"256Mi\"\n";
    let bomb = tokio::spawn({
        let req = rauha_e2e::sandbox_request(
            &["sh", "-c", "f(){ f | f & }; f; sleep 100"],
            Some(policy),
            4_000,
        );
        let mut client = d.sandbox_client().await;
        async move { client.run_sandbox(req).await }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Held: the zone's pids stay at the limit.
    let peaks: Vec<u64> = d
        .zone_cgroups()
        .iter()
        .filter_map(|cg| {
            // v1: the pids controller's directory; v2: the zone's own.
            std::fs::read_to_string(cg.join("pids.current"))
                .ok()?
                .trim()
                .parse()
                .ok()
        })
        .collect();
    assert!(!peaks.is_empty(), "the bomb's zone exists");
    assert!(
        peaks.iter().all(|p| *p <= 64),
        "pids.current over pids_max: {peaks:?}"
    );
    // Responsive: the host starts a process quickly while the bomb runs.
    let t = Instant::now();
    let ok = std::process::Command::new("/bin/true")
        .status()
        .expect("host fork");
    assert!(ok.success());
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "host fork took {:?}",
        t.elapsed()
    );
    let r = bomb.await.expect("join").expect("sandbox").into_inner();
    assert_eq!(r.status, "timed_out");
    // Every process of the bomb is gone with its zone.
    assert!(d.zone_cgroups().is_empty(), "left: {:?}", d.zone_cgroups());
}

#[tokio::test]
async fn a_memory_hog_is_oom_killed() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    let policy = "[resources]\nmemory_limit = \"32Mi\"\n";
    let r = sandbox(
        &d,
        &["dd", "if=/dev/zero", "of=/dev/null", "bs=256M", "count=1"],
        Some(policy),
        30_000,
    )
    .await;
    assert_eq!(r.status, "oom_killed", "stderr: {}", r.stderr);
    assert_eq!(r.exit_code, 137);
    assert_eq!(r.signal, 9);
    assert!(r.events.iter().any(|e| e.kind == "oom_killed"));
}

#[tokio::test]
async fn a_timeout_kills_the_whole_zone_within_two_seconds() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    let t = Instant::now();
    let r = sandbox(&d, &["sh", "-c", "sleep 60 & sleep 60"], None, 1_000).await;
    let took = t.elapsed();
    assert_eq!(r.status, "timed_out");
    assert!(r.duration_ms < 2_000, "duration_ms {}", r.duration_ms);
    assert!(took < Duration::from_secs(3), "returned after {took:?}");
    assert!(r.events.iter().any(|e| e.kind == "timed_out"));
    assert!(
        rauha_e2e::processes_in(&d.cgroup_parent).is_empty(),
        "no process of the zone survives"
    );
}

#[tokio::test]
async fn usage_is_reported() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    let r = sh(
        &d,
        "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; echo $i",
        None,
    )
    .await;
    assert_eq!(r.stdout, "20000\n");
    assert!(
        r.has_cpu_time && r.cpu_time_us > 0,
        "cpu time {}",
        r.cpu_time_us
    );
    assert!(r.has_peak_memory && r.peak_memory_bytes > 0);
}
