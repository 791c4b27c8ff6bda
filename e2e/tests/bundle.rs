//! A zone whose root is an OCI bundle's root filesystem.

use rauha_e2e::{busybox_bundle, prerequisite, ready, sandbox_request, Daemon};

/// A daemon, and a read-only busybox bundle in its dir; None (after
/// `prerequisite` had its say) when either cannot be had.
fn daemon_with_bundle() -> Option<(Daemon, std::path::PathBuf)> {
    if !ready() {
        return None;
    }
    let d = Daemon::start();
    let Some(bundle) = busybox_bundle(&d.dir, true) else {
        assert!(!prerequisite(
            false,
            "busybox-static (apt-get install busybox-static)"
        ));
        return None;
    };
    Some((d, bundle))
}

#[tokio::test]
async fn a_bundle_rootfs_is_the_zones_root() {
    let Some((d, bundle)) = daemon_with_bundle() else {
        return;
    };
    let mut req = sandbox_request(
        &["/bin/sh", "-c", "cat /etc/os-release; ls /bin | wc -l; touch /etc/x 2>/dev/null && echo WROTE; touch /tmp/ok && echo tmp-ok; ps | wc -l"],
        None,
        10_000,
    );
    req.bundle = bundle.display().to_string();
    if let Some(spec) = req.spec.as_mut() {
        spec.env.push("PATH=/bin".into());
    }
    let r = d
        .sandbox_client()
        .await
        .run_sandbox(req)
        .await
        .expect("sandbox")
        .into_inner();
    assert_eq!(r.status, "succeeded", "stderr: {}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines[0], "NAME=rauha-test-bundle",
        "the bundle's /etc, not the host's: {}",
        r.stdout
    );
    assert_eq!(lines[1], "10", "busybox and its 9 links: {}", r.stdout);
    assert!(
        !r.stdout.contains("WROTE"),
        "a read-only bundle root is read-only: {}",
        r.stdout
    );
    assert!(
        r.stdout.contains("tmp-ok"),
        "/tmp is writable: {}",
        r.stdout
    );
    assert!(!bundle.join("rootfs/etc/x").exists());
}

#[tokio::test]
async fn a_bad_bundle_is_a_clear_error() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    let mut req = sandbox_request(&["/bin/true"], None, 0);
    req.bundle = d.dir.join("no-such-bundle").display().to_string();
    let e = d
        .sandbox_client()
        .await
        .run_sandbox(req)
        .await
        .expect_err("no bundle");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("config.json") && e.message().contains("as runc takes it"),
        "{}",
        e.message()
    );
    assert!(d.zone_cgroups().is_empty(), "nothing half-made is left");
}

/// A process's cgroup path in the hierarchy holding `controller` (v1), or
/// in the unified one (v2).
fn own_cgroup(pid: u32, controller: &str) -> Option<(String, String)> {
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let v1 = cg.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, c, path) = (parts.next()?, parts.next()?, parts.next()?);
        c.split(',')
            .any(|c| c == controller)
            .then(|| (format!("/sys/fs/cgroup/{controller}"), path.to_string()))
    });
    v1.or_else(|| {
        cg.lines()
            .find_map(|l| l.strip_prefix("0::"))
            .map(|p| ("/sys/fs/cgroup".to_string(), p.to_string()))
    })
}

#[tokio::test]
async fn a_container_root_has_a_cgroup_and_limits_of_its_own() {
    use rauha_api::v1;
    let Some((d, bundle)) = daemon_with_bundle() else {
        return;
    };
    let mut zones = d.zones_client().await;
    let mut procs = d.processes_client().await;
    zones
        .create(v1::CreateZoneRequest {
            name: "pod".into(),
            bundle: bundle.display().to_string(),
            ..Default::default()
        })
        .await
        .expect("create the zone");
    let limits = |memory: u64| v1::RootLimits {
        memory_bytes: Some(memory),
        pids_max: Some(16),
        ..Default::default()
    };
    let added = zones
        .add_root(v1::AddRootRequest {
            zone: "pod".into(),
            name: "c1".into(),
            rootfs: bundle.join("rootfs").display().to_string(),
            readonly: true,
            limits: Some(limits(32 << 20)),
            ..Default::default()
        })
        .await
        .expect("add the root")
        .into_inner();
    assert!(added.own_cgroup, "the container got no cgroup of its own");
    let run = |args: &[&str]| v1::RunRequest {
        zone: "pod".into(),
        spec: Some(v1::ProcessSpec {
            args: args.iter().map(|a| a.to_string()).collect(),
            env: vec!["PATH=/bin".into()],
            root: "c1".into(),
            ..Default::default()
        }),
        stdio: None,
        id: String::new(),
        open_stdin: false,
    };
    // With an id the caller chose, a repeated Run (its reply lost) returns
    // the process it started instead of starting another.
    let mut first = run(&["busybox", "sleep", "600"]);
    first.id = "5d1c0a8e-3f6b-4c1e-9a47-2b8f6e0d7c31".into();
    let sleeper = procs
        .run(first.clone())
        .await
        .expect("run in the root")
        .into_inner();
    let again = procs.run(first).await.expect("run again").into_inner();
    assert_eq!(
        (again.id.as_str(), again.pid),
        (sleeper.id.as_str(), sleeper.pid)
    );
    let listed = procs
        .ps(v1::PsRequest { zone: "pod".into() })
        .await
        .expect("ps")
        .into_inner()
        .processes;
    assert_eq!(listed.len(), 1, "one sleeper: {listed:?}");
    let mut bad = run(&["busybox", "true"]);
    bad.id = "not-a-uuid".into();
    let e = procs.run(bad).await.expect_err("a bad id");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{}", e.message());
    let (hierarchy, path) = own_cgroup(sleeper.host_pid, "memory").expect("its cgroup");
    assert!(
        path.ends_with("/work/c1"),
        "the container's own cgroup: {path}"
    );
    let limit_file = if hierarchy.ends_with("memory") {
        "memory.limit_in_bytes"
    } else {
        "memory.max"
    };
    let limit =
        std::fs::read_to_string(format!("{hierarchy}{path}/{limit_file}")).expect("limit file");
    assert_eq!(limit.trim(), (32u64 << 20).to_string());
    let usage = |zones: &mut v1::zones_client::ZonesClient<_>| {
        let mut zones = zones.clone();
        async move {
            zones
                .root_usage(v1::RootRef {
                    zone: "pod".into(),
                    name: "c1".into(),
                })
                .await
                .expect("root usage")
                .into_inner()
        }
    };
    let u = usage(&mut zones).await;
    assert_eq!((u.memory_limit_bytes, u.pids_max), (32 << 20, 16), "{u:?}");
    assert!(u.pids >= 1, "the sleeper counts: {u:?}");

    // New limits reach the same cgroup.
    zones
        .update_root(v1::UpdateRootRequest {
            zone: "pod".into(),
            name: "c1".into(),
            limits: Some(limits(48 << 20)),
        })
        .await
        .expect("update");
    assert_eq!(usage(&mut zones).await.memory_limit_bytes, 48 << 20);

    // cgroup v2 files by name (kubelet's memory.oom.group): written on a v2
    // host; on a v1 host, refused with a line that says why.
    let mut oom_group = limits(48 << 20);
    oom_group
        .unified
        .insert("memory.oom.group".into(), "1".into());
    let set = zones
        .update_root(v1::UpdateRootRequest {
            zone: "pod".into(),
            name: "c1".into(),
            limits: Some(oom_group),
        })
        .await;
    if hierarchy.ends_with("memory") {
        let e = set.expect_err("unified on v1");
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{}", e.message());
        assert!(e.message().contains("cgroup v2 host"), "{}", e.message());
    } else {
        set.expect("unified on v2");
        let v = std::fs::read_to_string(format!("{hierarchy}{path}/memory.oom.group"))
            .expect("memory.oom.group");
        assert_eq!(v.trim(), "1");
    }

    // Past its own limit (far below the zone's), the container's process
    // is OOM-killed, and the kill is counted as the container's.
    let hog = procs
        .run(run(&[
            "busybox",
            "sh",
            "-c",
            "busybox head -c 120000000 /dev/zero | busybox tail",
        ]))
        .await
        .expect("run the hog")
        .into_inner();
    let ended = procs
        .wait(v1::ProcessRef { id: hog.id })
        .await
        .expect("wait")
        .into_inner();
    // sh reports its pipeline's SIGKILL as 128 + 9.
    assert!(
        ended.signal == libc::SIGKILL || ended.exit_code == 128 + libc::SIGKILL,
        "{ended:?}"
    );
    assert!(usage(&mut zones).await.oom_kills >= 1);
    // The zone's count has it too (v1 counts a kill only in the victim's
    // cgroup; v2 up the tree).
    let zone_usage = zones
        .usage(v1::ZoneRef { zone: "pod".into() })
        .await
        .expect("zone usage")
        .into_inner()
        .usage
        .unwrap_or_default();
    assert!(zone_usage.oom_kills >= 1, "{zone_usage:?}");

    // Bad limits are refused with the field's name; nothing changes.
    let err = zones
        .update_root(v1::UpdateRootRequest {
            zone: "pod".into(),
            name: "c1".into(),
            limits: Some(v1::RootLimits {
                cpus: Some(-1.0),
                ..Default::default()
            }),
        })
        .await
        .expect_err("negative cores");
    assert!(err.message().contains("limits.cpus"), "{}", err.message());
    assert_eq!(usage(&mut zones).await.memory_limit_bytes, 48 << 20);

    // A container named as a cgroup file: one clear line, nothing made.
    let err = zones
        .add_root(v1::AddRootRequest {
            zone: "pod".into(),
            name: "cgroup.procs".into(),
            rootfs: bundle.join("rootfs").display().to_string(),
            readonly: true,
            ..Default::default()
        })
        .await
        .expect_err("a cgroup file's name");
    assert_eq!(
        err.code(),
        tonic::Code::InvalidArgument,
        "{}",
        err.message()
    );
    assert!(err.message().contains("cgroup file"), "{}", err.message());
    assert!(!d
        .root
        .join("zones")
        .read_dir()
        .is_ok_and(|mut z| z.any(|e| e
            .map(|e| e.path().join("containers/cgroup.procs").exists())
            .unwrap_or(false))));

    // Removing the root removes its cgroup, and what ran in it.
    zones
        .remove_root(v1::RootRef {
            zone: "pod".into(),
            name: "c1".into(),
        })
        .await
        .expect("remove the root");
    assert!(!std::path::Path::new(&format!("{hierarchy}{path}")).exists());
    let err = zones
        .root_usage(v1::RootRef {
            zone: "pod".into(),
            name: "c1".into(),
        })
        .await
        .expect_err("gone");
    assert_eq!(err.code(), tonic::Code::NotFound, "{}", err.message());
    zones
        .delete(v1::DeleteZoneRequest {
            zone: "pod".into(),
            force: true,
        })
        .await
        .expect("delete");
}
