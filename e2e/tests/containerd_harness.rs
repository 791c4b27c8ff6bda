//! Proves the containerd harness itself, with runc (not the rauha shim): a
//! busybox image built from local files goes through the private registry
//! into a private containerd, runs, and everything is gone afterwards.

use rauha_e2e::containerd::{
    containerd_ready, find_bin, mounts_under, processes_mentioning, Containerd, ContainerdOpts,
    Registry,
};
use rauha_e2e::prerequisite;

#[test]
fn runc_container_runs_from_local_registry_and_leaves_nothing() {
    if !containerd_ready()
        || !prerequisite(find_bin("runc").is_some(), "runc (apt-get install runc)")
    {
        return;
    }
    let (ctd_dir, reg_dir, address);
    {
        let reg = Registry::start();
        reg_dir = reg.dir().to_path_buf();
        let image = reg.push_busybox_image("e2e/busybox:hi", &["echo", "hi"]);
        assert_eq!(image, format!("{}/e2e/busybox:hi", reg.host()));

        let ctd = Containerd::start(
            ContainerdOpts::default()
                .sandbox_image(&image)
                .plain_http_registry(&reg.host()),
        );
        ctd_dir = ctd.dir().to_path_buf();
        address = ctd.address().display().to_string();
        eprintln!("containerd config:\n{}", ctd.config());

        ctd.ctr_ok(&["image", "pull", "--plain-http", &image]);
        // The image is linux/<this machine's arch>, with the config given.
        let config = ctd.ctr_ok(&["image", "ls"]);
        assert!(
            config.contains("linux/amd64") || !cfg!(target_arch = "x86_64"),
            "{config}"
        );

        // The image's Cmd, then an explicit one.
        let out = ctd.ctr_ok(&["run", "--rm", &image, "t0"]);
        assert_eq!(out.trim(), "hi");
        let out = ctd.ctr_ok(&["run", "--rm", &image, "t1", "echo", "hi"]);
        assert_eq!(out.trim(), "hi");
        let script = "id -u; grep ':65534:65534:' /etc/passwd; pwd; echo $PATH";
        let out = ctd.ctr_ok(&["run", "--rm", &image, "t2", "sh", "-c", script]);
        eprintln!("t2: {out}");
        assert!(out.starts_with("0\n"), "{out}");
        assert!(out.contains("nobody"), "{out}");
        assert!(out.contains("/\n/bin"), "{out}");

        // A task left running when the harness drops is killed and removed.
        ctd.ctr_ok(&["run", "-d", &image, "left", "sleep", "3600"]);
        assert!(
            !ctd.shim_pids().is_empty(),
            "a shim serves the running task"
        );
        assert!(
            !ctd.mounts().is_empty(),
            "the running task's rootfs is mounted"
        );
    }
    // Nothing of it is left: processes, mounts, dirs.
    for needle in [
        ctd_dir.display().to_string(),
        reg_dir.display().to_string(),
        address,
    ] {
        let left = processes_mentioning(&needle);
        assert!(
            left.is_empty(),
            "processes left mentioning {needle}: {left:?}"
        );
    }
    assert!(
        mounts_under(&ctd_dir).is_empty(),
        "{:?}",
        mounts_under(&ctd_dir)
    );
    assert!(!ctd_dir.exists(), "{} left", ctd_dir.display());
    assert!(!reg_dir.exists(), "{} left", reg_dir.display());
}
