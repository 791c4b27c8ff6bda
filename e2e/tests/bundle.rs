//! A zone whose root is an OCI bundle's root filesystem.

use rauha_e2e::{busybox_bundle, prerequisite, ready, sandbox_request, Daemon};

#[tokio::test]
async fn a_bundle_rootfs_is_the_zones_root() {
    if !ready() {
        return;
    }
    let d = Daemon::start();
    let Some(bundle) = busybox_bundle(&d.dir, true) else {
        assert!(!prerequisite(
            false,
            "busybox-static (apt-get install busybox-static)"
        ));
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
