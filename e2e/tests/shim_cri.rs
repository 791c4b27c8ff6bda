//! The CRI path the way kubelet drives it, with crictl built from its Go
//! module: a pod sandbox with runtime handler `rauha` is a zone of the real
//! rauhad, in the network namespace CNI made for the pod.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use rauha_e2e::containerd::{
    containerd_ready, static_probe, Containerd, ContainerdOpts, ImageSpec, Registry,
};
use rauha_e2e::{
    assert_only_fds, bin_dir, host_fds, prerequisite, ready, text, Daemon, Leaks, LIST_OWN_FDS,
};

/// Where the tests' pods put their cgroups, as kubelet gives each pod
/// `linux.cgroup_parent` (removed by `Cri`'s drop; the test daemon lets
/// clients use it, as rauhad does kubelet's `/kubepods`).
use rauha_e2e::PODS_CGROUP;

fn crictl() -> PathBuf {
    bin_dir().join("../tools/crictl")
}

fn zones(d: &Daemon) -> Vec<serde_json::Value> {
    let out = d.cli(&["zone", "list", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .expect("zone list JSON")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn cri_ready() -> bool {
    ready()
        && containerd_ready()
        && prerequisite(
            bin_dir().join("containerd-shim-rauha-v2").is_file(),
            "containerd-shim-rauha-v2 (run `cargo build --workspace --bins` first)",
        )
        && prerequisite(
            crictl().is_file(),
            "crictl (run scripts/build-crictl.sh, which builds it from e2e/go/go.mod)",
        )
}

struct Cri {
    // Dropped in this order: containerd (and its pods) before rauhad.
    ctd: Containerd,
    _reg: Registry,
    d: Daemon,
    app: String,
    /// What rauhad inherited by mistake (its fds 7-9).
    leaks: Leaks,
}

impl Cri {
    fn crictl(&self, args: &[&str]) -> String {
        self.ctd.crictl_ok(&crictl(), args)
    }

    fn write(&self, name: &str, v: serde_json::Value) -> String {
        let path = self.ctd.dir().join(name);
        std::fs::write(&path, v.to_string()).expect("write CRI config");
        path.display().to_string()
    }

    fn pod(&self, name: &str) -> (String, String) {
        self.pod_with(name, serde_json::json!({}))
    }

    fn pod_with(&self, name: &str, annotations: serde_json::Value) -> (String, String) {
        self.pod_in(name, annotations, serde_json::json!({}))
    }

    /// A pod with `annotations` and the sandbox's `security_context`.
    fn pod_in(
        &self,
        name: &str,
        annotations: serde_json::Value,
        security: serde_json::Value,
    ) -> (String, String) {
        let config = self.write(
            &format!("{name}.json"),
            serde_json::json!({
                "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "attempt": 0},
                "annotations": annotations,
                "log_directory": self.ctd.dir().join("logs").join(name).display().to_string(),
                "linux": {
                    "cgroup_parent": format!("/{PODS_CGROUP}/pod-{name}"),
                    "security_context": security
                }
            }),
        );
        let id = self
            .crictl(&["runp", "--runtime", "rauha", &config])
            .trim()
            .to_string();
        (id, config)
    }

    fn container(
        &self,
        pod: &(String, String),
        name: &str,
        command: &[&str],
        memory: Option<u64>,
    ) -> String {
        let mut linux = serde_json::json!({});
        if let Some(m) = memory {
            linux = serde_json::json!({"resources": {"memory_limit_in_bytes": m}});
        }
        self.container_with(pod, name, command, linux)
    }

    /// A container whose config's `linux` is `linux`.
    fn container_with(
        &self,
        pod: &(String, String),
        name: &str,
        command: &[&str],
        linux: serde_json::Value,
    ) -> String {
        let config = self.write(
            &format!("{}-{name}.json", pod.0),
            serde_json::json!({
                "metadata": {"name": name},
                "image": {"image": self.app},
                "command": command,
                "log_path": format!("{name}.log"),
                "linux": linux
            }),
        );
        let id = self
            .crictl(&["create", &pod.0, &config, &pod.1])
            .trim()
            .to_string();
        self.crictl(&["start", &id]);
        id
    }

    fn zone_of_pod(&self, pod: &str) -> String {
        let inspect: serde_json::Value =
            serde_json::from_str(&self.crictl(&["inspectp", pod])).expect("inspectp JSON");
        let pid = inspect["info"]["pid"].as_u64().expect("sandbox pid");
        zone_of_pid(pid as u32)
    }
}

impl Drop for Cri {
    fn drop(&mut self) {
        // Pods a test left go first, while rauhad runs: a shim killed with
        // its pod still there would be started again by rauhad's keeper.
        self.ctd.remove_workloads();
        // The pods' parents (kubelet would own them): deepest first, in
        // every hierarchy, once containerd and rauhad removed the zones.
        self.ctd.stop();
        self.d.delete_all_zones();
        remove_cgroup_trees(PODS_CGROUP);
    }
}

/// Removes `/sys/fs/cgroup[/HIERARCHY]/NAME` and the directories in it
/// from every hierarchy, deepest first (the parents kubelet would own,
/// once containerd and rauhad removed the zones in them).
fn remove_cgroup_trees(name: &str) {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join(name))
        .chain([PathBuf::from("/sys/fs/cgroup").join(name)])
        .filter(|d| d.is_dir())
        .flat_map(|d| {
            let mut all = vec![d.clone()];
            all.extend(
                std::fs::read_dir(&d)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_dir()),
            );
            all
        })
        .collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for d in dirs {
        let _ = std::fs::remove_dir(&d);
    }
}

/// A zone's memory limit, from its cgroup (v1 or v2).
fn zone_memory_limit(zone: &str) -> Option<u64> {
    let mut found = None;
    for (root, file) in [
        ("/sys/fs/cgroup/memory", "memory.limit_in_bytes"),
        ("/sys/fs/cgroup", "memory.max"),
    ] {
        let dir = PathBuf::from(root).join(PODS_CGROUP);
        for pod in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if let Ok(v) = std::fs::read_to_string(pod.path().join(zone).join(file)) {
                found = v.trim().parse().ok();
            }
        }
    }
    found
}

/// A container's host pid.
fn inspect_pid(cri: &Cri, id: &str) -> u32 {
    let inspect: serde_json::Value =
        serde_json::from_str(&cri.crictl(&["inspect", id])).expect("inspect JSON");
    inspect["info"]["pid"].as_u64().expect("pid") as u32
}

/// A host process's cgroup in the v1 hierarchy of a controller (`memory`,
/// `cpu`), which `/sys/fs/cgroup/CONTROLLER` reaches.
/// A host process's cgroup directory for a controller (`memory`, `cpu`):
/// in its v1 hierarchy, or in the unified one on a v2 host.
fn cgroup_of(pid: u32, controller: &str) -> PathBuf {
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    let v1 = cg.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, c, path) = (parts.next()?, parts.next()?, parts.next()?);
        c.split(',')
            .any(|c| c == controller)
            .then(|| format!("/sys/fs/cgroup/{controller}{path}"))
    });
    let v2 = || {
        cg.lines()
            .find_map(|l| l.strip_prefix("0::"))
            .map(|p| format!("/sys/fs/cgroup{p}"))
    };
    PathBuf::from(
        v1.or_else(v2)
            .unwrap_or_else(|| panic!("pid {pid} has no {controller} cgroup: {cg}")),
    )
}

/// The zone cgroup a host process is in (the cgroup path names the zone).
fn zone_of_pid(pid: u32) -> String {
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    cg.lines()
        .filter_map(|l| l.rsplit(':').next())
        .find(|p| p.contains(PODS_CGROUP))
        .and_then(|p| {
            p.split('/')
                .find(|c| c.len() == 36 && c.matches('-').count() == 4)
        })
        .unwrap_or_else(|| panic!("pid {pid} is in no zone cgroup: {cg}"))
        .to_string()
}

fn start() -> Option<Cri> {
    if !cri_ready() {
        return None;
    }
    // rauhad inherits descriptors it was never meant to have: no container
    // may see them (docs/security.md).
    let leaks = Leaks::new(&std::env::temp_dir().join(format!("rauha-cri-{}", std::process::id())));
    let d = Daemon::start_inheriting(&leaks.inherit());
    let reg = Registry::start();
    let pause = reg.push_busybox_image("e2e/pause:1", &["sleep", "3600"]);
    // The app image also holds a setuid-root probe printing its euid.
    let probe = std::fs::read(static_probe("setuid_probe")).expect("read the probe");
    let app = reg.push_image(
        "e2e/app:1",
        &ImageSpec::busybox(&["sh"]).file("/bin/setuid-probe", probe, 0o4755),
    );
    let ctd = Containerd::start(ContainerdOpts::for_rauha(&d, &reg).sandbox_image(&pause));
    ctd.crictl_ok(&crictl(), &["pull", &app]);
    Some(Cri {
        ctd,
        _reg: reg,
        d,
        app,
        leaks,
    })
}

#[test]
fn cri_pod_sandbox_is_a_zone_in_the_cni_netns() {
    let Some(cri) = start() else { return };
    let (ctd, d, c) = (&cri.ctd, &cri.d, crictl());

    let pod_json = ctd.dir().join("pod.json");
    std::fs::write(
        &pod_json,
        serde_json::json!({
            "metadata": {"name": "p1", "namespace": "default", "uid": "uid-p1", "attempt": 0},
            "log_directory": ctd.dir().join("logs").display().to_string(),
            "linux": {"cgroup_parent": format!("/{PODS_CGROUP}/pod-p1")}
        })
        .to_string(),
    )
    .expect("pod.json");
    let pod = ctd
        .crictl_ok(
            &c,
            &[
                "runp",
                "--runtime",
                "rauha",
                &pod_json.display().to_string(),
            ],
        )
        .trim()
        .to_string();

    // The sandbox is one zone, running its pause process.
    let z = zones(d);
    assert_eq!(z.len(), 1, "{z:?}");
    let name = z[0]["name"].as_str().unwrap_or_default().to_string();
    assert!(name.starts_with("k8s-io-"), "{name}");
    let inspect: serde_json::Value =
        serde_json::from_str(&ctd.crictl_ok(&c, &["inspectp", &pod])).expect("inspectp JSON");
    assert_eq!(inspect["status"]["state"], "SANDBOX_READY", "{inspect}");

    // It lives in the network namespace CNI set up: the pod's IP is on the
    // CNI bridge's subnet, and the pause process's netns is CNI's.
    let ip = inspect["status"]["network"]["ip"]
        .as_str()
        .unwrap_or_default();
    let prefix = ctd.subnet().rsplit_once('.').map(|(p, _)| p).unwrap_or("");
    assert!(
        !ip.is_empty() && ip.starts_with(prefix),
        "pod ip {ip:?}, subnet {}",
        ctd.subnet()
    );
    let netns = inspect["info"]["runtimeSpec"]["linux"]["namespaces"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|n| n["type"] == "network")
                .and_then(|n| n["path"].as_str())
        })
        .expect("the sandbox spec names CNI's netns")
        .to_string();
    let pid = inspect["info"]["pid"].as_u64().expect("sandbox pid");
    let ns_of = |p: &str| std::fs::metadata(p).map(|m| m.ino()).expect(p);
    assert_eq!(
        ns_of(&format!("/proc/{pid}/ns/net")),
        ns_of(&netns),
        "the pause process is in CNI's network namespace"
    );
    // The zone's cgroup is in the pod's cgroup kubelet named, so the pod's
    // accounting (and eviction) sees it.
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    assert!(
        cgroups.contains(&format!("/{PODS_CGROUP}/pod-p1/")),
        "{cgroups}"
    );
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("pause cmdline");
    assert!(text(&cmdline).starts_with("sleep"), "{}", text(&cmdline));

    // Stopping the pod ends its zone's work; removing it removes the zone.
    ctd.crictl_ok(&c, &["stopp", &pod]);
    let inspect: serde_json::Value =
        serde_json::from_str(&ctd.crictl_ok(&c, &["inspectp", &pod])).expect("inspectp JSON");
    assert_eq!(inspect["status"]["state"], "SANDBOX_NOTREADY", "{inspect}");
    ctd.crictl_ok(&c, &["rmp", &pod]);
    assert!(zones(d).is_empty(), "zones left: {:?}", zones(d));
    assert!(
        ctd.crictl_ok(&c, &["pods", "-q"]).trim().is_empty(),
        "pods left"
    );
}

/// Removes a test's systemd-style slices from every hierarchy (deepest
/// first) when dropped, after the zones in them are gone.
struct SliceCleanup(&'static str);

impl Drop for SliceCleanup {
    fn drop(&mut self) {
        remove_cgroup_trees(self.0);
    }
}

#[test]
fn cri_pod_under_a_systemd_slice_gets_its_zone_in_that_slice() {
    // Dropped last: after containerd and rauhad removed the zones.
    let _slices = SliceCleanup("rauhae2e.slice");
    let Some(cri) = start() else { return };
    // kubelet's systemd cgroup driver names the pod's parent as a slice;
    // containerd then gives the sandbox `SLICE:cri-containerd:ID`.
    let config = cri.write(
        "slice-pod.json",
        serde_json::json!({
            "metadata": {"name": "sd", "namespace": "default", "uid": "uid-sd", "attempt": 0},
            "log_directory": cri.ctd.dir().join("logs").join("sd").display().to_string(),
            "linux": {"cgroup_parent": "/rauhae2e.slice/rauhae2e-podsd.slice"}
        }),
    );
    let pod = cri
        .crictl(&["runp", "--runtime", "rauha", &config])
        .trim()
        .to_string();
    let inspect: serde_json::Value =
        serde_json::from_str(&cri.crictl(&["inspectp", &pod])).expect("inspectp JSON");
    let path = inspect["info"]["runtimeSpec"]["linux"]["cgroupsPath"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        path.starts_with("rauhae2e-podsd.slice:cri-containerd:"),
        "cgroupsPath {path:?}"
    );
    // The zone's cgroup is in that slice, where systemd's layout puts it.
    let pid = inspect["info"]["pid"].as_u64().expect("sandbox pid");
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    let memory = cgroups
        .lines()
        .find(|l| {
            l.split(':')
                .nth(1)
                .is_some_and(|c| c.split(',').any(|c| c == "memory"))
        })
        .or_else(|| cgroups.lines().find(|l| l.starts_with("0::")))
        .unwrap_or_default();
    assert!(
        memory.contains("/rauhae2e.slice/rauhae2e-podsd.slice/"),
        "{cgroups}"
    );
    cri.crictl(&["stopp", &pod]);
    cri.crictl(&["rmp", &pod]);
    assert!(zones(&cri.d).is_empty(), "zones left: {:?}", zones(&cri.d));
}

#[test]
fn cri_containers_of_a_pod_share_its_zone() {
    let Some(mut cri) = start() else { return };
    let p1 = cri.pod("p1");
    let zone1 = cri.zone_of_pod(&p1.0);
    let a = cri.container(
        &p1,
        "a",
        &["sh", "-c", "echo hello from a; exec sleep 600"],
        None,
    );
    let b = cri.container(&p1, "b", &["sleep", "601"], None);

    // Both run in the pod's zone (one zone in rauhad), each on its image.
    assert_eq!(zones(&cri.d).len(), 1, "{:?}", zones(&cri.d));
    for id in [&a, &b] {
        let inspect: serde_json::Value =
            serde_json::from_str(&cri.crictl(&["inspect", id])).expect("inspect JSON");
        assert_eq!(inspect["status"]["state"], "CONTAINER_RUNNING", "{inspect}");
        let pid = inspect["info"]["pid"].as_u64().expect("pid") as u32;
        assert_eq!(
            zone_of_pid(pid),
            zone1,
            "container {id} is in the pod's zone"
        );
    }
    // Each container's process holds its stdio and nothing else: not the
    // container's init, not an exec (docs/security.md).
    for id in [&a, &b] {
        let inspect: serde_json::Value =
            serde_json::from_str(&cri.crictl(&["inspect", id])).expect("inspect JSON");
        let pid = inspect["info"]["pid"].as_u64().expect("pid") as u32;
        let fds: Vec<i32> = host_fds(pid).into_keys().collect();
        assert_eq!(fds, [0, 1, 2], "container {id}'s init: {:?}", host_fds(pid));
    }
    let listing = cri.crictl(&["exec", &b, "sh", "-c", LIST_OWN_FDS]);
    assert_only_fds(&listing, &[0, 1, 2], "crictl exec");
    cri.leaks.untouched();
    // They see each other's processes: one pid namespace, the zone's.
    let ps = cri.crictl(&["exec", &a, "ps"]);
    assert!(ps.contains("sleep 601"), "a sees b: {ps}");
    // Its own image and mounts: CRI's /etc/hosts bind, a fresh /dev.
    let out = cri.crictl(&[
        "exec",
        &b,
        "sh",
        "-c",
        "cat /etc/hostname; ls /dev/null; echo x > /tmp/ok && cat /tmp/ok",
    ]);
    assert!(out.contains("/dev/null") && out.ends_with("x\n"), "{out}");
    // A read-only /sys of the pod's network namespace (CNI's eth0), with
    // /sys/firmware hidden.
    let net = cri.crictl(&["exec", &b, "ls", "/sys/class/net"]);
    assert!(net.contains("eth0") && net.contains("lo"), "{net}");
    let firmware = cri
        .ctd
        .crictl(&crictl(), &["exec", &b, "ls", "-A", "/sys/firmware"]);
    // (Empty, as under runc's masked paths; a root holding
    // CAP_DAC_OVERRIDE, baseline's default, may list the empty mask.)
    assert!(
        text(&firmware.stdout).trim().is_empty(),
        "/sys/firmware is masked: {}",
        text(&firmware.stdout)
    );
    let out = cri.ctd.crictl(&crictl(), &["exec", &b, "touch", "/sys/x"]);
    assert!(!out.status.success(), "/sys is read-only");
    // Logs go through CRI's log file.
    let logs = cri.crictl(&["logs", &a]);
    assert!(logs.contains("hello from a"), "{logs}");

    // Resource updates reach each container's own cgroup (below the
    // zone's), and the pod's zone: its memory limit is the sum of its
    // containers' limits once each has one.
    cri.crictl(&["update", "--memory", "67108864", &a]);
    cri.crictl(&["update", "--memory", "33554432", "--cpu-quota", "50000", &b]);
    let limit = zone_memory_limit(&zone1);
    assert_eq!(limit, Some(96 << 20), "zone {zone1}");
    let b_pid = inspect_pid(&cri, &b);
    let own = cgroup_of(b_pid, "memory");
    assert!(
        own.ends_with(format!("{zone1}/work/{b}")),
        "b's own memory cgroup: {}",
        own.display()
    );
    // v1 files, or v2's.
    let host_file = |controller: &str, files: [&str; 2]| {
        let dir = cgroup_of(b_pid, controller);
        files
            .iter()
            .find_map(|f| std::fs::read_to_string(dir.join(f)).ok())
            .unwrap_or_else(|| panic!("{files:?} in {}", dir.display()))
            .trim()
            .to_string()
    };
    assert_eq!(
        host_file("memory", ["memory.limit_in_bytes", "memory.max"]),
        (32u64 << 20).to_string()
    );
    let quota = host_file("cpu", ["cpu.cfs_quota_us", "cpu.max"]);
    assert!(quota == "50000" || quota == "50000 100000", "{quota}");
    let a_own = cgroup_of(inspect_pid(&cri, &a), "memory");
    assert!(a_own.ends_with(format!("work/{a}")), "{}", a_own.display());
    // A container's /sys/fs/cgroup is its own cgroups, read-only (CRI
    // mounts cgroup there), in a cgroup namespace rooted there as under
    // runc: a runtime that reads its limit (the JVM) finds the
    // container's, and no hierarchy shows the host's tree.
    let ns = cri.crictl(&["exec", &b, "cat", "/proc/self/cgroup"]);
    assert!(
        ns.lines().any(|l| l.ends_with(":memory:/") || l == "0::/"),
        "b's cgroup namespace: {ns}"
    );
    let inside = cri.crictl(&[
        "exec",
        &b,
        "sh",
        "-c",
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max",
    ]);
    assert_eq!(
        inside.trim(),
        (32u64 << 20).to_string(),
        "limit seen inside"
    );
    let listed = cri.crictl(&["exec", &b, "ls", "/sys/fs/cgroup"]);
    for absent in ["devices", "blkio", "systemd"] {
        assert!(!listed.lines().any(|l| l == absent), "{absent} in {listed}");
    }
    let out = cri.ctd.crictl(
        &crictl(),
        &[
            "exec",
            &b,
            "sh",
            "-c",
            "echo 1 > /sys/fs/cgroup/memory/memory.limit_in_bytes || echo 1 > /sys/fs/cgroup/memory.max",
        ],
    );
    assert!(
        !out.status.success(),
        "the container's cgroups are read-only"
    );
    assert_eq!(zone_memory_limit(&zone1), Some(96 << 20));

    // containerd restarts: the pod and its containers are found again.
    cri.ctd.restart();
    let inspect: serde_json::Value =
        serde_json::from_str(&cri.crictl(&["inspect", &b])).expect("inspect JSON");
    assert_eq!(inspect["status"]["state"], "CONTAINER_RUNNING", "{inspect}");
    let out = cri.crictl(&["exec", &b, "echo", "after restart"]);
    assert_eq!(out, "after restart\n");

    // rauhad restarts: the container log goes on (the shim holds the
    // output FIFOs' write ends, so containerd's log reader sees no end).
    let t = cri.container(
        &p1,
        "t",
        &[
            "sh",
            "-c",
            "i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.1; done",
        ],
        None,
    );
    let ticks = |cri: &Cri| cri.crictl(&["logs", &t]).lines().count();
    std::thread::sleep(std::time::Duration::from_millis(500));
    cri.d.kill9();
    let before = ticks(&cri);
    cri.d.spawn(&[]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let after = ticks(&cri);
    assert!(
        before > 0 && after >= before + 5,
        "log lines {before} before rauhad's restart, {after} after"
    );

    // The pod's shim is killed: rauhad's keeper starts it again on
    // containerd's open connection; the pod, its containers and their log
    // go on (b's stop below reaches CRI through the new shim).
    let shims = cri.ctd.shim_pids();
    assert_eq!(shims.len(), 1, "one shim per pod: {shims:?}");
    // SAFETY: kill with plain integers.
    unsafe { libc::kill(shims[0].0, libc::SIGKILL) };
    let mut again = Vec::new();
    for _ in 0..100 {
        again = cri.ctd.shim_pids();
        if again.len() == 1 && again[0].0 != shims[0].0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        again.len() == 1 && again[0].0 != shims[0].0,
        "shims after killing {}: {again:?}\n{}",
        shims[0].0,
        cri.d.log()
    );
    let pod: serde_json::Value =
        serde_json::from_str(&cri.crictl(&["inspectp", &p1.0])).expect("inspectp JSON");
    assert_eq!(pod["status"]["state"], "SANDBOX_READY", "{pod}");
    let out = cri.crictl(&["exec", &b, "echo", "after the shim"]);
    assert_eq!(out, "after the shim\n");
    let before = ticks(&cri);
    std::thread::sleep(std::time::Duration::from_millis(1000));
    assert!(
        ticks(&cri) >= before + 5,
        "the log after the shim's restart"
    );

    // A second pod is another zone, and sees none of the first's processes.
    let p2 = cri.pod("p2");
    let zone2 = cri.zone_of_pod(&p2.0);
    assert_ne!(zone1, zone2);
    let c = cri.container(&p2, "c", &["sleep", "602"], None);
    let ps = cri.crictl(&["exec", &c, "ps"]);
    assert!(
        !ps.contains("sleep 601") && !ps.contains("sleep 600"),
        "{ps}"
    );
    assert_eq!(zones(&cri.d).len(), 2);

    // What a container started in another session (an exec's background
    // job) ends with the container.
    cri.crictl(&["exec", &b, "sh", "-c", "sleep 700 >/dev/null 2>&1 &"]);
    assert!(cri.crictl(&["exec", &a, "ps"]).contains("sleep 700"));
    cri.crictl(&["stop", "--timeout", "2", &b]);
    let mut gone = false;
    for _ in 0..30 {
        if !cri.crictl(&["exec", &a, "ps"]).contains("sleep 700") {
            gone = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(gone, "{}", cri.crictl(&["exec", &a, "ps"]));

    // stop, rm; stopp, rmp: nothing is left.
    for id in [&a, &b] {
        cri.crictl(&["stop", "--timeout", "2", id]);
        cri.crictl(&["rm", id]);
    }
    cri.crictl(&["stop", "--timeout", "2", &c]);
    cri.crictl(&["rm", &c]);
    for p in [&p1.0, &p2.0] {
        cri.crictl(&["stopp", p]);
        cri.crictl(&["rmp", p]);
    }
    assert!(zones(&cri.d).is_empty(), "zones left: {:?}", zones(&cri.d));
}

#[test]
fn cri_container_over_its_memory_limit_is_oomkilled() {
    let Some(cri) = start() else { return };
    let p = cri.pod("oom");
    // The pod's total is 288 MiB; the hog's own limit is 32 MiB.
    let calm = cri.container(&p, "calm", &["sleep", "600"], Some(256 << 20));
    // `tail` keeps the one line in memory: 64 MB, past the hog's own
    // limit and far below the pod's.
    let id = cri.container(
        &p,
        "hog",
        &["sh", "-c", "head -c 64000000 /dev/zero | tail"],
        Some(32 << 20),
    );
    let mut status = serde_json::Value::Null;
    for _ in 0..100 {
        let inspect: serde_json::Value =
            serde_json::from_str(&cri.crictl(&["inspect", &id])).expect("inspect JSON");
        status = inspect["status"].clone();
        if status["state"] == "CONTAINER_EXITED" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(status["state"], "CONTAINER_EXITED", "{status}");
    assert_eq!(status["reason"], "OOMKilled", "{status}");
    // Its neighbour in the pod is not touched, and not reported OOMKilled.
    let inspect: serde_json::Value =
        serde_json::from_str(&cri.crictl(&["inspect", &calm])).expect("inspect JSON");
    assert_eq!(inspect["status"]["state"], "CONTAINER_RUNNING", "{inspect}");
    // Stats are the container's own (CRI's working set is below the
    // pod's 64 MB the hog held; a fresh `sleep` needs well under 8 MiB).
    let stats: serde_json::Value =
        serde_json::from_str(&cri.crictl(&["stats", "-o", "json", "--id", &calm]))
            .expect("stats JSON");
    let value = &stats["stats"][0]["memory"]["workingSetBytes"]["value"];
    let ws = value
        .as_u64()
        .or_else(|| value.as_str().and_then(|v| v.parse().ok()))
        .unwrap_or_else(|| panic!("no working set in {stats}"));
    assert!(ws > 0 && ws < 8 << 20, "calm's working set {ws}");
    cri.crictl(&["stop", "--timeout", "2", &calm]);
    cri.crictl(&["rm", &calm]);
    cri.crictl(&["rm", &id]);
    cri.crictl(&["stopp", &p.0]);
    cri.crictl(&["rmp", &p.0]);
    assert!(zones(&cri.d).is_empty(), "zones left: {:?}", zones(&cri.d));
}

/// A pod's sandbox config, as kubelet gives it: `extra` merged into
/// `linux` (hostname at the top).
fn pod_config(cri: &Cri, name: &str, hostname: &str, linux: serde_json::Value) -> String {
    let mut l = serde_json::json!({"cgroup_parent": format!("/{PODS_CGROUP}/pod-{name}")});
    if let (Some(l), Some(extra)) = (l.as_object_mut(), linux.as_object()) {
        l.extend(extra.clone());
    }
    cri.write(
        &format!("{name}.json"),
        serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "attempt": 0},
            "hostname": hostname,
            "log_directory": cri.ctd.dir().join("logs").join(name).display().to_string(),
            "linux": l
        }),
    )
}

/// A container's log once it holds `want` (at most 30 s).
fn log_with(cri: &Cri, id: &str, want: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let out = cri.ctd.crictl(&crictl(), &["logs", id]);
        let log = format!("{}{}", text(&out.stdout), text(&out.stderr));
        if log.contains(want) || std::time::Instant::now() > deadline {
            return log;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Under the pod default, `baseline`, a pod runs as on runc: a root web
/// server binds :80 with the capability its spec gives, the pod has its
/// hostname and its safe sysctl, and a setuid binary raises its uid unless
/// the spec sets no_new_privs. A spec asking beyond baseline (a capability
/// outside the default set, the host's network) fails with the field and
/// the policy that would allow it; `privileged` allows the capability.
#[test]
fn cri_pods_run_as_on_runc_under_baseline_and_are_refused_beyond_it() {
    let Some(cri) = start() else { return };
    let config = pod_config(
        &cri,
        "web",
        "web-host",
        serde_json::json!({"sysctls": {"net.ipv4.ip_local_port_range": "32768 32800"}}),
    );
    let pod = cri
        .crictl(&["runp", "--runtime", "rauha", &config])
        .trim()
        .to_string();
    let p = (pod.clone(), config);
    let web = cri.container(
        &p,
        "web",
        &[
            "sh",
            "-c",
            "hostname; cat /proc/sys/net/ipv4/ip_local_port_range; \
            nc -l -p 80 & sleep 1; kill -0 $! && echo bound :80; exec sleep 3600",
        ],
        None,
    );
    let log = log_with(&cri, &web, "bound :80");
    assert!(log.contains("bound :80"), "{log}");
    assert!(log.contains("web-host"), "the pod's hostname: {log}");
    assert!(
        log.contains("32768\t32800") || log.contains("32768 32800"),
        "the sysctl: {log}"
    );

    let user = |name: &str, nnp: bool| {
        let config = cri.write(
            &format!("{pod}-{name}.json"),
            serde_json::json!({
                "metadata": {"name": name},
                "image": {"image": cri.app},
                "command": ["/bin/setuid-probe"],
                "log_path": format!("{name}.log"),
                "linux": {"security_context": {"run_as_user": {"value": 1000}, "no_new_privs": nnp}}
            }),
        );
        let id = cri
            .crictl(&["create", &pod, &config, &p.1])
            .trim()
            .to_string();
        cri.crictl(&["start", &id]);
        log_with(&cri, &id, "Effective uid")
    };
    // The spec's masked and read-only paths, and a read-only root.
    let paths = cri.write(
        &format!("{pod}-paths.json"),
        serde_json::json!({
            "metadata": {"name": "paths"},
            "image": {"image": cri.app},
            "command": ["sh", "-c", "echo group:$(cat /etc/group | wc -c); touch /tmp/x; touch /x; echo done; sleep 60"],
            "log_path": "paths.log",
            "linux": {"security_context": {"masked_paths": ["/etc/group"],
                "readonly_paths": ["/tmp"], "readonly_rootfs": true}}
        }),
    );
    let id = cri
        .crictl(&["create", &pod, &paths, &p.1])
        .trim()
        .to_string();
    cri.crictl(&["start", &id]);
    let log = log_with(&cri, &id, "done");
    assert!(log.contains("group:0"), "/etc/group masked: {log}");
    assert_eq!(
        log.matches("Read-only file system").count(),
        2,
        "/tmp and the root read-only: {log}"
    );
    let log = user("escalates", false);
    assert!(
        log.contains("Effective uid: 0"),
        "setuid works under baseline: {log}"
    );
    let log = user("no-escalation", true);
    assert!(
        log.contains("Effective uid: 1000"),
        "no_new_privs holds: {log}"
    );

    // A capability beyond baseline's: refused, with the reason.
    let admin = cri.write(
        &format!("{pod}-admin.json"),
        serde_json::json!({
            "metadata": {"name": "admin"},
            "image": {"image": cri.app},
            "command": ["sleep", "60"],
            "log_path": "admin.log",
            "linux": {"security_context": {"capabilities": {"add_capabilities": ["SYS_ADMIN"]}}}
        }),
    );
    // (CRI's create only records the container; its task, and the
    // refusal, come at start, as kubelet's RunContainerError.)
    let id = cri
        .crictl(&["create", &pod, &admin, &p.1])
        .trim()
        .to_string();
    let out = cri.ctd.crictl(&crictl(), &["start", &id]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "SYS_ADMIN under baseline: {err}");
    assert!(
        err.contains("CAP_SYS_ADMIN") && err.contains("rauha.dev/policy: privileged"),
        "{err}"
    );
    // The host's network: refused before any zone is made.
    let zones_before = zones(&cri.d).len();
    let host = pod_config(
        &cri,
        "hostnet",
        "hostnet",
        serde_json::json!({"security_context": {"namespace_options": {"network": 2}}}),
    );
    let out = cri
        .ctd
        .crictl(&crictl(), &["runp", "--runtime", "rauha", &host]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "hostNetwork under baseline: {err}");
    assert!(
        err.contains("spec.hostNetwork") && err.contains("baseline"),
        "{err}"
    );
    assert_eq!(
        zones(&cri.d).len(),
        zones_before,
        "no zone for a refused pod"
    );

    // restricted: a non-root user without escalation and one capability
    // runs; root is refused with the field.
    let (restricted, config) = cri.pod_with(
        "strict",
        serde_json::json!({"rauha.dev/policy": "restricted"}),
    );
    let in_restricted = |name: &str, uid: u64| {
        let c = cri.write(
            &format!("restricted-{name}.json"),
            serde_json::json!({
                "metadata": {"name": name},
                "image": {"image": cri.app},
                "command": ["sh", "-c", "grep CapEff /proc/self/status; id -u; sleep 60"],
                "log_path": format!("{name}.log"),
                "linux": {"security_context": {"run_as_user": {"value": uid}, "no_new_privs": true,
                    "capabilities": {"drop_capabilities": ["ALL"], "add_capabilities": ["NET_BIND_SERVICE"]}}}
            }),
        );
        let id = cri
            .crictl(&["create", &restricted, &c, &config])
            .trim()
            .to_string();
        (id.clone(), cri.ctd.crictl(&crictl(), &["start", &id]))
    };
    let (id, out) = in_restricted("user", 1000);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log = log_with(&cri, &id, "1000");
    // What containerd's spec gives a non-root user: at most that one.
    let eff = log
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or_else(|| panic!("CapEff in {log}"));
    assert_eq!(eff & !(1 << 10), 0, "CAP_NET_BIND_SERVICE at most: {log}");
    let (_, out) = in_restricted("root", 0);
    let err = text(&out.stderr);
    assert!(
        !out.status.success() && err.contains("securityContext.runAsNonRoot"),
        "{err}"
    );

    // The privileged policy gives the capability the spec asks for.
    let (privileged, config) = cri.pod_with(
        "priv",
        serde_json::json!({"rauha.dev/policy": "privileged"}),
    );
    let admin = cri.write(
        "priv-admin.json",
        serde_json::json!({
            "metadata": {"name": "admin"},
            "image": {"image": cri.app},
            "command": ["sh", "-c", "mount -t tmpfs none /tmp && echo mounted; sleep 60"],
            "log_path": "admin.log",
            "linux": {"security_context": {"capabilities": {"add_capabilities": ["SYS_ADMIN"]}}}
        }),
    );
    let id = cri
        .crictl(&["create", &privileged, &admin, &config])
        .trim()
        .to_string();
    cri.crictl(&["start", &id]);
    let log = log_with(&cri, &id, "mounted");
    assert!(
        log.contains("mounted"),
        "CAP_SYS_ADMIN under privileged: {log}"
    );
}

#[test]
fn cri_pod_annotations_carry_rauhas_policy() {
    let Some(cri) = start() else { return };
    // containerd passes rauha.dev/* pod annotations to the shim (the
    // deploy/ config says so): the zone runs the named preset.
    let p = cri.pod_with("strict", serde_json::json!({"rauha.dev/policy": "strict"}));
    let z = zones(&cri.d);
    assert_eq!(z.len(), 1, "{z:?}");
    let policy = z[0]["policy"].to_string();
    assert!(policy.contains("strict"), "{policy}");
    cri.crictl(&["stopp", &p.0]);
    cri.crictl(&["rmp", &p.0]);
    // An invalid inline policy fails the pod with the parser's message.
    let config = cri.write(
        "bad.json",
        serde_json::json!({
            "metadata": {"name": "bad", "namespace": "default", "uid": "uid-bad", "attempt": 0},
            "annotations": {"rauha.dev/policy": "[network]\nmode = \"warp\"\n"},
            "log_directory": cri.ctd.dir().join("logs").join("bad").display().to_string(),
            "linux": {"cgroup_parent": format!("/{PODS_CGROUP}/pod-bad")}
        }),
    );
    let out = cri
        .ctd
        .crictl(&crictl(), &["runp", "--runtime", "rauha", &config]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("mode"), "{}", text(&out.stderr));
    assert!(zones(&cri.d).is_empty(), "zones left: {:?}", zones(&cri.d));
}

/// The pod part of the kill -9 suite (`bench/kill_cycles.sh` runs it
/// longer: `RAUHA_POD_KILL_CYCLES`): rauhad is killed at a random point
/// while a container of the pod is created and started and another is
/// exec'd into. After each restart the pod is ready, its long-running
/// container runs on and logs, an exec works, the container whose creation
/// the kill may have cut either runs or is removed cleanly with its
/// processes, the node has one zone and no BPF map entry of no zone.
#[test]
fn cri_pod_survives_kill_nine_cycles_of_rauhad() {
    let Some(mut cri) = start() else { return };
    let cycles: usize = std::env::var("RAUHA_POD_KILL_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let pod = cri.pod("cycles");
    let tick = cri.container(
        &pod,
        "tick",
        &[
            "sh",
            "-c",
            "i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.1; done",
        ],
        None,
    );
    let random_below = |n: u64| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::from(d.subsec_nanos()))
            .unwrap_or(0);
        (nanos / 1000) % n.max(1)
    };
    for cycle in 0..cycles {
        let name = format!("c{cycle}");
        let config = cri.write(
            &format!("{name}.json"),
            serde_json::json!({
                "metadata": {"name": name},
                "image": {"image": cri.app},
                "command": ["sleep", format!("{}", 900 + cycle)],
                "log_path": format!("{name}.log")
            }),
        );
        let load = [
            vec!["run_in".to_string()],
            vec!["exec".into(), tick.clone(), "echo".into(), "in".into()],
        ];
        let children: Vec<std::process::Child> = load
            .iter()
            .map(|args| {
                let args: Vec<&str> = if args[0] == "run_in" {
                    vec!["create", &pod.0, &config, &pod.1]
                } else {
                    args.iter().map(String::as_str).collect()
                };
                cri.ctd
                    .crictl_cmd(&crictl(), &args)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("crictl")
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(random_below(600)));
        cri.d.kill9();
        // rauhad comes back before the clients are waited for: an exec
        // whose process started waits (in the shim) for its exit, which
        // only a rauhad can report.
        cri.d.spawn(&[]);
        let mut waited = Vec::new();
        for mut c in children {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
            while c.try_wait().expect("crictl").is_none() {
                if std::time::Instant::now() > deadline {
                    let _ = c.kill();
                    panic!(
                        "cycle {cycle}: a crictl call did not end within 90 s of rauhad's restart"
                    );
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            waited.push(c.wait_with_output().expect("crictl"));
        }
        let created = waited.remove(0);
        // The pod and its running container went on.
        let inspect: serde_json::Value =
            serde_json::from_str(&cri.crictl(&["inspectp", &pod.0])).expect("inspectp JSON");
        assert_eq!(
            inspect["status"]["state"], "SANDBOX_READY",
            "cycle {cycle}: {inspect}"
        );
        let ticks = |cri: &Cri| cri.crictl(&["logs", &tick]).lines().count();
        let before = ticks(&cri);
        std::thread::sleep(std::time::Duration::from_millis(1000));
        assert!(
            ticks(&cri) >= before + 5,
            "cycle {cycle}: the log stopped at {before} lines"
        );
        assert_eq!(
            cri.crictl(&["exec", &tick, "echo", "after"]),
            "after\n",
            "cycle {cycle}"
        );
        // The cut container: started if its creation got through, and
        // removed either way, its processes with it.
        if created.status.success() {
            let id = String::from_utf8_lossy(&created.stdout).trim().to_string();
            let _ = cri.ctd.crictl(&crictl(), &["start", &id]);
            cri.crictl(&["rm", "--force", &id]);
        }
        let ps = cri.crictl(&["ps", "-a", "-q"]);
        assert_eq!(
            ps.split_whitespace().collect::<Vec<_>>(),
            vec![tick.as_str()],
            "cycle {cycle}: containers left"
        );
        let zone_procs = cri.crictl(&["exec", &tick, "ps"]);
        assert!(
            !zone_procs.contains(&format!("sleep {}", 900 + cycle)),
            "cycle {cycle}: {zone_procs}"
        );
        let listed = zones(&cri.d);
        assert_eq!(listed.len(), 1, "cycle {cycle}: {listed:?}");
        let ids = listed
            .iter()
            .filter_map(|z| z["id"].as_str().map(str::to_string))
            .collect();
        let orphans = cri.d.bpf_orphans(&ids, &[PODS_CGROUP]);
        assert!(orphans.is_empty(), "cycle {cycle}: {orphans:?}");
    }
    cri.crictl(&["stopp", &pod.0]);
    cri.crictl(&["rmp", &pod.0]);
    assert!(zones(&cri.d).is_empty(), "zones left: {:?}", zones(&cri.d));
    eprintln!("{cycles} kill -9 cycles with a pod: the pod and its container went on through each");
}

/// Kubernetes' default (no `shareProcessNamespace`): each container has a
/// PID namespace of its own, its init PID 1 there, apart from the other
/// containers and from the zone's agent; the process the agent leaves as
/// its parent (the pid containerd knows) holds no descriptor.
#[test]
fn cri_a_container_has_its_own_pid_namespace_when_its_spec_asks() {
    let Some(cri) = start() else { return };
    let p = cri.pod("own-pid");
    // CRI's NamespaceMode: 1 is CONTAINER.
    let own = serde_json::json!({"security_context": {"namespace_options": {"pid": 1}}});
    let a = cri.container_with(&p, "a", &["sleep", "602"], own.clone());
    let b = cri.container_with(&p, "b", &["sleep", "603"], own);
    let first = cri.crictl(&["exec", &a, "cat", "/proc/1/cmdline"]);
    assert_eq!(first.replace('\0', " ").trim(), "sleep 602", "a's PID 1");
    let ps = cri.crictl(&["exec", &a, "ps", "-o", "pid,args"]);
    assert!(!ps.contains("sleep 603"), "a does not see b: {ps}");
    let ps = cri.crictl(&["exec", &b, "ps", "-o", "pid,args"]);
    assert!(
        ps.contains("sleep 603") && !ps.contains("sleep 602"),
        "{ps}"
    );
    for id in [&a, &b] {
        let pid = inspect_pid(&cri, id);
        assert!(
            host_fds(pid).is_empty(),
            "container {id}'s parent in the zone holds {:?}",
            host_fds(pid)
        );
    }
    // The container's init ends: its namespace, and its exec, go too.
    cri.crictl(&["stop", "--timeout", "1", &a]);
    let inspect: serde_json::Value =
        serde_json::from_str(&cri.crictl(&["inspect", &a])).expect("inspect JSON");
    assert_eq!(inspect["status"]["state"], "CONTAINER_EXITED", "{inspect}");
    cri.crictl(&["exec", &b, "true"]);
}

/// `hostPID` under the privileged pod policy: the zone stays in the host's
/// PID namespace (its container sees a process of the host), and ending
/// the pod ends the zone's processes only, never the host's (the agent,
/// not PID 1 there, signals its descendants instead of `kill(-1)`).
#[test]
fn cri_a_privileged_host_pid_pod_sees_the_host_and_ends_only_its_own() {
    let Some(cri) = start() else { return };
    // A process of the host's, which must outlive the pod.
    let mut sentinel = std::process::Command::new("sleep")
        .arg("605")
        .spawn()
        .expect("sleep");
    // CRI's NamespaceMode: 2 is NODE.
    let host_pid = serde_json::json!({"namespace_options": {"pid": 2}});
    let p = cri.pod_in(
        "host-pid",
        serde_json::json!({"rauha.dev/policy": "privileged"}),
        host_pid.clone(),
    );
    let c = cri.container_with(
        &p,
        "c",
        &["sleep", "604"],
        serde_json::json!({"security_context": {"namespace_options": {"pid": 2}}}),
    );
    let ps = cri.crictl(&["exec", &c, "ps", "-o", "pid,args"]);
    assert!(
        ps.lines()
            .any(|l| l.trim_start().starts_with(&format!("{} ", sentinel.id()))),
        "the host's sleep (pid {}) is seen: {ps}",
        sentinel.id()
    );
    // The same pid on both sides: the container's init by its host pid.
    let init = inspect_pid(&cri, &c);
    assert!(
        ps.lines()
            .any(|l| l.trim_start().starts_with(&format!("{init} sleep 604"))),
        "the container's init (host pid {init}) is seen by it: {ps}"
    );
    cri.crictl(&["stopp", &p.0]);
    cri.crictl(&["rmp", &p.0]);
    assert!(
        sentinel.try_wait().expect("wait").is_none(),
        "the host's process outlived the pod"
    );
    let _ = sentinel.kill();
    let _ = sentinel.wait();

    // Under baseline (the default), hostPID is refused with its reason.
    let config = cri.write(
        "host-pid-baseline.json",
        serde_json::json!({
            "metadata": {"name": "host-pid-baseline", "namespace": "default", "uid": "uid-hpb", "attempt": 0},
            "linux": {"cgroup_parent": format!("/{PODS_CGROUP}/pod-hpb"), "security_context": host_pid}
        }),
    );
    let out = cri
        .ctd
        .crictl(&crictl(), &["runp", "--runtime", "rauha", config.as_str()]);
    assert!(!out.status.success(), "refused under baseline");
    let err = text(&out.stderr);
    assert!(err.contains("spec.hostPID"), "{err}");
}

/// A pod's container holds CAP_MKNOD under `baseline` (the runtime's
/// default set, as under runc), but a device node it makes gives it no
/// device: only those the spec lists (and /dev's own) can be opened, as
/// runc's device cgroup allows only those. Not the host's disk.
#[test]
fn cri_a_device_node_a_container_makes_opens_nothing() {
    let Some(cri) = start() else { return };
    let (major, minor) = rauha_e2e::host_block_device();
    let p = cri.pod("mknod");
    // A device the spec gives (CRI's devices, as a device plugin's): it
    // is there and opens.
    let config = cri.write(
        "mknod-c.json",
        serde_json::json!({
            "metadata": {"name": "c"},
            "image": {"image": cri.app},
            "command": ["sleep", "606"],
            "log_path": "c.log",
            "devices": [{"container_path": "/dev/given/zero", "host_path": "/dev/zero", "permissions": "rwm"}],
            "linux": {"resources": {"oom_score_adj": 500}}
        }),
    );
    let c = cri
        .crictl(&["create", &p.0, &config, &p.1])
        .trim()
        .to_string();
    cri.crictl(&["start", &c]);
    let given = cri.crictl(&["exec", &c, "sh", "-c", "head -c 4 /dev/given/zero | wc -c"]);
    assert_eq!(given.trim(), "4", "the spec's device opens");
    // The spec's OOM score (the kubelet's by QoS class), set as runc sets
    // it (with the spec's resource limits, which CRI gives no field for).
    let init = inspect_pid(&cri, &c);
    let adj =
        std::fs::read_to_string(format!("/proc/{init}/oom_score_adj")).expect("oom_score_adj");
    assert_eq!(adj.trim(), "500", "the container's OOM score");
    let out = cri.ctd.crictl(
        &crictl(),
        &[
            "exec",
            &c,
            "sh",
            "-c",
            &format!(
                "mknod /dev/hostdisk b {major} {minor} && echo made; \
                 head -c 512 /dev/hostdisk >/dev/null && echo READ; \
                 mknod /tmp/mem c 1 1 && echo made-tmp; head -c 1 /tmp/mem >/dev/null && echo READ-MEM; \
                 echo x > /dev/null && echo null-ok"
            ),
        ],
    );
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        !said.contains("READ"),
        "a device the container made was read: {said}"
    );
    assert!(said.contains("null-ok"), "/dev/null still works: {said}");
}
