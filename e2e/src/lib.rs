//! The e2e harness: starts a real `rauhad` on a private root, socket and
//! cgroup parent, drives it through the real `rauha` CLI and over gRPC, and
//! removes everything it made when dropped, also when a test fails.
//!
//! Tests need root. Without it they report the missing prerequisite and
//! return, except under `RAUHA_E2E_REQUIRE=1` (set in CI), where a missing
//! prerequisite fails the test.

pub mod chart;
pub mod containerd;
pub mod critest;
pub mod vm;

use std::collections::BTreeMap;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rauha_api::v1;
use tonic::transport::{Channel, Endpoint, Uri};

/// Checks a prerequisite: `Ok(true)` to go on, `Ok(false)` to skip (with the
/// reason printed), a panic when CI requires it.
pub fn prerequisite(ok: bool, what: &str) -> bool {
    if ok {
        return true;
    }
    if std::env::var("RAUHA_E2E_REQUIRE").as_deref() == Ok("1") {
        panic!("prerequisite missing: {what} (RAUHA_E2E_REQUIRE=1 makes this a failure)");
    }
    eprintln!("SKIPPED: prerequisite missing: {what}");
    false
}

/// Root is needed for namespaces and cgroups.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The directory holding the built binaries.
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("RAUHA_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("debug")
}

/// Skips (or fails in CI) unless root and the binaries exist.
pub fn ready() -> bool {
    prerequisite(is_root(), "root (namespaces and cgroups)")
        && ["rauhad", "rauha", "rauha-guest-agent"].iter().all(|b| {
            prerequisite(
                bin_dir().join(b).is_file(),
                &format!(
                    "{} (run `cargo build --workspace` first)",
                    bin_dir().join(b).display()
                ),
            )
        })
}

/// Where the CRI tests' pods put their cgroups, as kubelet gives each pod
/// `linux.cgroup_parent`.
pub const PODS_CGROUP: &str = "rauha-e2e-kubepods";
/// The systemd-driver slice the CRI tests put a pod in.
pub const PODS_SLICE: &str = "rauhae2e.slice";

pub struct Daemon {
    pub dir: PathBuf,
    pub root: PathBuf,
    pub socket: PathBuf,
    pub cgroup_parent: String,
    /// A private bpffs mount; the daemon pins its BPF maps and links in
    /// `<bpffs>/rauha`, so each test's programs are its own.
    pub bpffs: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    /// Starts rauhad on a fresh temp root and waits until it serves.
    /// The cgroups the tests put zones under by absolute path (as the shim
    /// puts kubelet's pods): the CRI tests' pods and slices, and a tree of
    /// this daemon's own; kubelet's, rauhad's default; and the one the
    /// upstream CRI suite (critest) gives its pods, `/test.slice`.
    pub fn allowed_cgroup_roots(&self) -> Vec<String> {
        vec![
            "/kubepods".into(),
            "/kubepods.slice".into(),
            "/test.slice".into(),
            format!("/{PODS_CGROUP}"),
            format!("/{PODS_SLICE}"),
            format!("/{}-pods", self.cgroup_parent),
        ]
    }

    /// The directory of the containerd a test runs for this daemon
    /// ([`containerd::ContainerdOpts::for_rauha`]): its FIFOs are where
    /// this rauhad opens stdio (`--stdio-root`), as a node's rauhad does
    /// in `/run/containerd`. Short, for the unix sockets in it.
    pub fn containerd_dir(&self) -> PathBuf {
        let mut base = std::env::temp_dir();
        if base.as_os_str().len() > 60 {
            base = PathBuf::from("/tmp");
        }
        let tag = self.cgroup_parent.trim_start_matches("rauha-e2e-");
        base.join(format!("rctd-{}", &tag[..tag.len().min(8)]))
    }

    pub fn start() -> Daemon {
        Daemon::start_inheriting(&[])
    }

    /// [`Daemon::start`], with rauhad inheriting descriptors as a careless
    /// parent would leave them: `(ours, number in rauhad)`, open and not
    /// close-on-exec.
    pub fn start_inheriting(inherit: &[(RawFd, RawFd)]) -> Daemon {
        become_subreaper();
        let tag = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        let dir = std::env::temp_dir().join(format!("rauha-e2e-{tag}"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let bpffs = dir.join("bpffs");
        std::fs::create_dir_all(&bpffs).expect("bpffs dir");
        let target = std::ffi::CString::new(bpffs.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: mount with NUL-terminated strings we own.
        let r = unsafe {
            libc::mount(
                c"bpf".as_ptr(),
                target.as_ptr(),
                c"bpf".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        assert_eq!(
            r,
            0,
            "mount bpffs at {}: {}",
            bpffs.display(),
            std::io::Error::last_os_error()
        );
        let mut d = Daemon {
            root: dir.join("root"),
            socket: dir.join("rauhad.sock"),
            cgroup_parent: format!("rauha-e2e-{tag}"),
            bpffs,
            dir,
            child: None,
        };
        d.spawn_inheriting(&[], inherit);
        d
    }

    /// (Re)starts the daemon process on the same root.
    pub fn spawn(&mut self, extra: &[&str]) {
        self.spawn_inheriting(extra, &[]);
    }

    fn spawn_inheriting(&mut self, extra: &[&str], inherit: &[(RawFd, RawFd)]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("rauhad.log"))
            .expect("log");
        let mut command = Command::new(bin_dir().join("rauhad"));
        let inherit = inherit.to_vec();
        // SAFETY: dup2 and fcntl only: async-signal-safe in the forked child.
        unsafe {
            command.pre_exec(move || {
                // Out of the way first (1000 + i), so that no move
                // overwrites a later one's source.
                for (i, &(ours, _)) in inherit.iter().enumerate() {
                    if libc::dup2(ours, 1000 + i as RawFd) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                for (i, &(_, theirs)) in inherit.iter().enumerate() {
                    if libc::dup2(1000 + i as RawFd, theirs) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    libc::close(1000 + i as RawFd);
                }
                Ok(())
            })
        };
        let child = command
            .arg("--root")
            .arg(&self.root)
            .arg("--socket")
            .arg(&self.socket)
            .arg("--cgroup-parent")
            .arg(&self.cgroup_parent)
            .arg("--bpf-pin-dir")
            .arg(self.bpffs.join("rauha"))
            .args(
                self.allowed_cgroup_roots()
                    .iter()
                    .flat_map(|r| ["--allowed-cgroup-root".to_string(), r.clone()]),
            )
            .arg("--stdio-root")
            .arg(self.containerd_dir())
            .arg("--stdio-root")
            .arg(&self.dir)
            // rauhad's default: where a client's ctr makes its FIFOs
            // (`ctr --fifo-dir`) whatever containerd's state dir is.
            .args(["--stdio-root", "/run/containerd"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start rauhad");
        self.child = Some(child);
        // Readiness, not speed: under the VM suite's emulated CPU (QEMU
        // TCG) a debug rauhad loading its BPF programs has taken over 20 s.
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("rauhad exited with {status} at start: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("rauhad did not listen within 90 s: {}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("rauhad.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Deletes every zone the daemon has (with `--force`).
    pub fn delete_all_zones(&self) {
        let out = self.cli(&["zone", "list", "--json"]);
        let names: Vec<String> = serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|z| z["name"].as_str().map(str::to_string))
            .collect();
        for name in names {
            let _ = self.cli(&["zone", "delete", "--force", &name]);
        }
    }

    /// `kill -9` the daemon (zones keep running).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn addr(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Runs the CLI against this daemon.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(bin_dir().join("rauha"))
            .args(args)
            .env("RAUHA_ADDR", self.addr())
            .output()
            .expect("run rauha")
    }

    /// A gRPC channel to this daemon.
    pub async fn channel(&self) -> Channel {
        let path = self.socket.clone();
        Endpoint::try_from("http://[::]:50051")
            .expect("static uri")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let p = path.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(p).await?,
                    ))
                }
            }))
            .await
            .expect("connect to rauhad")
    }

    pub async fn sandbox_client(&self) -> v1::sandbox_client::SandboxClient<Channel> {
        v1::sandbox_client::SandboxClient::new(self.channel().await)
            .max_encoding_message_size(64 << 20)
            .max_decoding_message_size(64 << 20)
    }

    pub async fn zones_client(&self) -> v1::zones_client::ZonesClient<Channel> {
        v1::zones_client::ZonesClient::new(self.channel().await)
    }

    pub async fn processes_client(&self) -> v1::processes_client::ProcessesClient<Channel> {
        v1::processes_client::ProcessesClient::new(self.channel().await)
            .max_encoding_message_size(64 << 20)
    }

    /// The zone cgroup directories under this daemon's parent, in every
    /// hierarchy.
    pub fn zone_cgroups(&self) -> Vec<PathBuf> {
        cgroup_dirs(&self.cgroup_parent)
            .into_iter()
            .flat_map(|p| {
                std::fs::read_dir(p)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
            })
            .collect()
    }

    /// Host pids in this daemon's zones: each zone cgroup and its `work`
    /// child, in every hierarchy (v1 controllers or the unified one).
    pub fn zone_pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .zone_cgroups()
            .iter()
            .flat_map(|cg| cgroup_tree_pids(cg))
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// The entries of one of this daemon's pinned BPF maps, as bpftool
    /// formats them (`{"key": .., "value": ..}`); none when the map is not
    /// there (no BPF layer on this host).
    pub fn bpf_map(&self, name: &str) -> Vec<serde_json::Value> {
        let pinned = self.bpffs.join("rauha/maps").join(name);
        if !pinned.exists() {
            return Vec::new();
        }
        let out = std::process::Command::new("bpftool")
            .args(["-j", "map", "dump", "pinned"])
            .arg(&pinned)
            .output()
            .expect("bpftool (scripts/install-deps.sh installs it)");
        assert!(
            out.status.success(),
            "bpftool map dump {}: {}",
            pinned.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let all: Vec<serde_json::Value> =
            serde_json::from_slice(&out.stdout).expect("bpftool json");
        all.into_iter()
            .filter_map(|e| e.get("formatted").cloned())
            .collect()
    }

    /// BPF map entries that name no zone of this daemon: a zone index in
    /// `zone_policies` beyond the zones it lists, a `zone_cgroups` key
    /// that is no cgroup of a listed zone, and a value of `zone_cgroups` or
    /// `inode_owners` without a policy. Pods' zones have their cgroups
    /// under the pods' parent (kubelet's): every cgroup under
    /// `pod_parents` counts as a zone's.
    pub fn bpf_orphans(
        &self,
        zone_ids: &std::collections::BTreeSet<String>,
        pod_parents: &[&str],
    ) -> Vec<String> {
        use std::os::unix::fs::MetadataExt;
        let mut found = Vec::new();
        let indexes: std::collections::BTreeSet<u64> = self
            .bpf_map("zone_policies")
            .iter()
            .filter_map(|e| e["key"].as_u64())
            .collect();
        if indexes.len() > zone_ids.len() {
            found.push(format!(
                "zone_policies holds {} zones, rauhad lists {}",
                indexes.len(),
                zone_ids.len()
            ));
        }
        // The cgroup ids (cgroup2 inodes) of the listed zones' cgroups.
        let mut zone_cgroups = std::collections::BTreeSet::new();
        let mut stack: Vec<PathBuf> = cgroup_dirs(&self.cgroup_parent)
            .into_iter()
            .filter(|p| is_cgroup2(p))
            .flat_map(|p| std::fs::read_dir(p).into_iter().flatten().flatten())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| zone_ids.contains(n.to_string_lossy().as_ref()))
            })
            .chain(
                pod_parents
                    .iter()
                    .flat_map(|p| cgroup_dirs(p))
                    .filter(|p| is_cgroup2(p)),
            )
            .collect();
        while let Some(dir) = stack.pop() {
            if let Ok(meta) = std::fs::metadata(&dir) {
                zone_cgroups.insert(meta.ino());
            }
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
        for e in self.bpf_map("zone_cgroups") {
            let (key, value) = (e["key"].as_u64(), e["value"].as_u64());
            if !key.is_some_and(|k| zone_cgroups.contains(&k)) {
                found.push(format!("zone_cgroups entry of no zone's cgroup: {e}"));
            }
            if !value.is_some_and(|v| indexes.contains(&v)) {
                found.push(format!("zone_cgroups entry of no zone's policy: {e}"));
            }
        }
        for e in self.bpf_map("inode_owners") {
            if !e["value"].as_u64().is_some_and(|v| indexes.contains(&v)) {
                found.push(format!("inode_owners entry of no zone: {e}"));
            }
        }
        found
    }

    /// Mounts on the host under this daemon's root.
    pub fn host_mounts(&self) -> Vec<String> {
        let root = self.root.to_string_lossy().to_string();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4))
            .filter(|m| m.starts_with(&root))
            .map(String::from)
            .collect()
    }
}

/// Makes this test process the reaper of rauhad's orphans (zone launchers
/// outlive a `kill -9` of rauhad), as an init system would be in production;
/// [`reap_orphans`] then collects them.
fn become_subreaper() {
    // SAFETY: prctl with plain integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
}

/// Reaps ended children other than the ones a test still holds.
pub fn reap_orphans() {
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid status pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            break;
        }
    }
}

/// Live (not zombie) processes that are in a cgroup under `parent`, or run
/// the zone agent, found by scanning /proc.
pub fn processes_in(parent: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat
            .rsplit_once(')')
            .map(|(_, r)| r.trim_start().starts_with('Z'))
            .unwrap_or(true)
        {
            continue;
        }
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        if cgroup.contains(&format!("/{parent}/")) {
            let cmd = std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .unwrap_or_default()
                .replace('\0', " ");
            out.push((pid, cmd));
        }
    }
    out
}

/// A cgroup and every cgroup below it (a zone's agent, work and
/// containers have cgroups of their own).
pub fn cgroup_tree(dir: &Path) -> Vec<PathBuf> {
    let mut all = vec![dir.to_path_buf()];
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            all.extend(cgroup_tree(&e.path()));
        }
    }
    all
}

/// The pids in a cgroup and every cgroup below it.
pub fn cgroup_tree_pids(dir: &Path) -> Vec<u32> {
    cgroup_tree(dir)
        .iter()
        .flat_map(|cg| {
            std::fs::read_to_string(cg.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// `<hierarchy>/<parent>` for each cgroup hierarchy that has it.
/// Whether `path` is on the cgroup2 filesystem (where BPF's cgroup ids are
/// the directories' inodes).
fn is_cgroup2(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs fills a zeroed struct from a NUL-terminated path.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == CGROUP2_SUPER_MAGIC
    }
}

pub fn cgroup_dirs(parent: &str) -> Vec<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    let mut out = Vec::new();
    if base.join(parent).is_dir() {
        out.push(base.join(parent));
    }
    if let Ok(entries) = std::fs::read_dir(base) {
        for e in entries.flatten() {
            let p = e.path().join(parent);
            if p.is_dir() && !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Zones placed outside the daemon's cgroup parent (a pod cgroup)
        // are found only through the daemon: delete every zone first.
        if self.child.is_some() {
            self.delete_all_zones();
        }
        self.kill9();
        // Everything the daemon made lives under its cgroup parent and root.
        for _ in 0..200 {
            let mut left = false;
            for dir in cgroup_dirs(&self.cgroup_parent) {
                for zone in std::fs::read_dir(&dir)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                {
                    // Deepest first (agent, work, containers' own): a
                    // cgroup with a child cannot be removed.
                    let mut tree = cgroup_tree(&zone);
                    tree.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
                    for cg in &tree {
                        // Frozen tasks do not die of SIGKILL: thaw first.
                        let _ = std::fs::write(cg.join("freezer.state"), "THAWED");
                        let _ = std::fs::write(cg.join("cgroup.freeze"), "0");
                        if let Ok(procs) = std::fs::read_to_string(cg.join("cgroup.procs")) {
                            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                                // SAFETY: kill takes plain integers.
                                unsafe { libc::kill(pid, libc::SIGKILL) };
                            }
                        }
                    }
                    for cg in &tree {
                        if std::fs::remove_dir(cg).is_err() {
                            left = true;
                        }
                    }
                }
                if std::fs::remove_dir(&dir).is_err() {
                    left = true;
                }
            }
            if !left {
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        // Unpinning the links detaches this daemon's programs.
        let _ = std::fs::remove_dir_all(self.bpffs.join("rauha"));
        if let Ok(c) = std::ffi::CString::new(self.bpffs.as_os_str().as_encoded_bytes()) {
            // SAFETY: valid path string.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        for m in self.host_mounts().iter().rev() {
            if let Ok(c) = std::ffi::CString::new(m.as_str()) {
                // SAFETY: valid path string.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
        if std::env::var("RAUHA_E2E_KEEP").is_err() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Parses a CLI's stdout as JSON.
pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): stdout={} stderr={}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A block device of the host, as `(major, minor)` (from /sys/block): what
/// a workload must not reach through a device node it makes.
pub fn host_block_device() -> (String, String) {
    let dev = std::fs::read_dir("/sys/block")
        .expect("/sys/block")
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("dev")).ok())
        .map(|d| d.trim().to_string())
        .next()
        .expect("a block device");
    let (major, minor) = dev.split_once(':').expect("MAJ:MIN");
    (major.to_string(), minor.to_string())
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A sandbox request for `args`, with an optional inline policy.
pub fn sandbox_request(args: &[&str], policy: Option<&str>, timeout_ms: u64) -> v1::SandboxRequest {
    v1::SandboxRequest {
        spec: Some(v1::ProcessSpec {
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec![],
            cwd: String::new(),
            ..Default::default()
        }),
        policy: policy.map(|toml| v1::PolicySource {
            source: Some(v1::policy_source::Source::Inline(v1::InlinePolicy {
                file: "test.toml".into(),
                toml: toml.into(),
            })),
        }),
        timeout_ms,
        ..Default::default()
    }
}

/// Runs a sandbox over gRPC and returns its result.
pub async fn sandbox(
    d: &Daemon,
    args: &[&str],
    policy: Option<&str>,
    timeout_ms: u64,
) -> v1::TaskResult {
    d.sandbox_client()
        .await
        .run_sandbox(sandbox_request(args, policy, timeout_ms))
        .await
        .unwrap_or_else(|s| panic!("sandbox {args:?}: {s}"))
        .into_inner()
}

/// Runs `sh -c script` in a sandbox under `policy`.
pub async fn sh(d: &Daemon, script: &str, policy: Option<&str>) -> v1::TaskResult {
    sandbox(d, &["sh", "-c", script], policy, 30_000).await
}

/// Builds an OCI bundle (config.json + rootfs) holding busybox-static, as
/// runc takes it, under `dir`.
pub fn busybox_bundle(dir: &Path, readonly: bool) -> Option<PathBuf> {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())?;
    let rootfs = dir.join("bundle/rootfs");
    for d in ["bin", "proc", "dev", "tmp", "etc", "data"] {
        std::fs::create_dir_all(rootfs.join(d)).ok()?;
    }
    std::fs::copy(busybox, rootfs.join("bin/busybox")).ok()?;
    for applet in [
        "sh", "ls", "cat", "echo", "touch", "ps", "hostname", "id", "true",
    ] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).ok()?;
    }
    std::fs::write(rootfs.join("etc/os-release"), "NAME=rauha-test-bundle\n").ok()?;
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs", "readonly": readonly},
        "process": {"args": ["/bin/sh"], "cwd": "/", "env": ["PATH=/bin"]},
    });
    std::fs::write(dir.join("bundle/config.json"), config.to_string()).ok()?;
    Some(dir.join("bundle"))
}

/// Every entry of a directory tree, without following symlinks: path, type,
/// mode, and content or link target. Two equal snapshots are byte-identical
/// trees.
pub fn tree_snapshot(root: &Path) -> Vec<(String, String)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let rel = p
                .strip_prefix(root)
                .map(|r| r.display().to_string())
                .unwrap_or_default();
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            let mode = meta.permissions().mode() & 0o7777;
            let what = if meta.file_type().is_symlink() {
                format!("link {:?}", std::fs::read_link(&p).unwrap_or_default())
            } else if meta.is_dir() {
                stack.push(p.clone());
                format!("dir {mode:o}")
            } else {
                format!("file {mode:o} {:?}", std::fs::read(&p).unwrap_or_default())
            };
            out.push((rel, what));
        }
    }
    out.sort();
    out
}

/// A shell command that lists the descriptors of the shell running it
/// (`ls` reads the shell's table, not its own).
pub const LIST_OWN_FDS: &str = "ls -l /proc/$$/fd";

/// The descriptors in an `ls -l /proc/PID/fd` listing (GNU or busybox):
/// number -> target.
pub fn parse_fd_listing(listing: &str) -> BTreeMap<RawFd, String> {
    listing
        .lines()
        .filter_map(|l| l.split_once(" -> "))
        .filter_map(|(left, target)| {
            let fd = left.split_whitespace().last()?.parse().ok()?;
            Some((fd, target.trim().to_string()))
        })
        .collect()
}

/// The descriptors of host process `pid`: number -> target.
pub fn host_fds(pid: u32) -> BTreeMap<RawFd, String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let fd = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            Some((fd, target.to_string_lossy().into_owned()))
        })
        .collect()
}

/// Asserts that a zone process held exactly the descriptors `expected`
/// (by number), as [`LIST_OWN_FDS`] printed them in `listing`.
pub fn assert_only_fds(listing: &str, expected: &[RawFd], what: &str) {
    let found = parse_fd_listing(listing);
    let numbers: Vec<RawFd> = found.keys().copied().collect();
    assert_eq!(
        numbers, expected,
        "{what}: a zone process holds exactly {expected:?}; it held {found:?}\n{listing}"
    );
}

/// Descriptors a careless parent leaves open in rauhad: a writable host
/// file (rauhad's fd 7), a pipe's write end (8) and a socket (9), none
/// close-on-exec. [`Leaks::untouched`] checks that no zone wrote to them.
pub struct Leaks {
    pub file_path: PathBuf,
    file: std::fs::File,
    pipe_r: std::os::fd::OwnedFd,
    pipe_w: std::os::fd::OwnedFd,
    sock_ours: std::os::unix::net::UnixStream,
    sock_theirs: std::os::unix::net::UnixStream,
}

impl Leaks {
    /// The numbers rauhad gets them at.
    pub const NUMBERS: [RawFd; 3] = [7, 8, 9];

    pub fn new(dir: &Path) -> Leaks {
        use std::os::fd::FromRawFd;
        std::fs::create_dir_all(dir).expect("dir");
        let file_path = dir.join("host-file");
        let file = std::fs::File::create(&file_path).expect("host file");
        let mut ends = [0; 2];
        // SAFETY: pipe fills two fds we then own (not close-on-exec).
        assert_eq!(unsafe { libc::pipe(ends.as_mut_ptr()) }, 0);
        // SAFETY: both were just created.
        let (pipe_r, pipe_w) = unsafe {
            (
                std::os::fd::OwnedFd::from_raw_fd(ends[0]),
                std::os::fd::OwnedFd::from_raw_fd(ends[1]),
            )
        };
        let (sock_ours, sock_theirs) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        Leaks {
            file_path,
            file,
            pipe_r,
            pipe_w,
            sock_ours,
            sock_theirs,
        }
    }

    /// `(ours, number in rauhad)` for [`Daemon::start_inheriting`].
    pub fn inherit(&self) -> [(RawFd, RawFd); 3] {
        use std::os::fd::AsRawFd;
        [
            (self.file.as_raw_fd(), 7),
            (self.pipe_w.as_raw_fd(), 8),
            (self.sock_theirs.as_raw_fd(), 9),
        ]
    }

    /// What each leaked descriptor is, as `/proc/PID/fd` names it.
    pub fn targets(&self) -> Vec<String> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::MetadataExt;
        let ino = |fd: RawFd| {
            std::fs::metadata(format!("/proc/self/fd/{fd}"))
                .expect("fstat")
                .ino()
        };
        vec![
            self.file_path.to_string_lossy().into_owned(),
            format!("pipe:[{}]", ino(self.pipe_w.as_raw_fd())),
            format!("socket:[{}]", ino(self.sock_theirs.as_raw_fd())),
        ]
    }

    /// Asserts that nothing was written to any of them.
    pub fn untouched(&self) {
        use std::os::fd::AsRawFd;
        assert_eq!(
            std::fs::read_to_string(&self.file_path).expect("host file"),
            "",
            "a zone wrote to a host file it was never given"
        );
        for (fd, what) in [
            (self.pipe_r.as_raw_fd(), "pipe"),
            (self.sock_ours.as_raw_fd(), "socket"),
        ] {
            let mut buf = [0u8; 64];
            // SAFETY: a non-blocking read into our buffer.
            let n = unsafe {
                libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK);
                libc::read(fd, buf.as_mut_ptr().cast(), buf.len())
            };
            let e = std::io::Error::last_os_error();
            assert!(
                n < 0 && e.kind() == std::io::ErrorKind::WouldBlock,
                "inherited {what}: nothing came from a zone, got {n} bytes ({:?})",
                String::from_utf8_lossy(&buf[..n.max(0) as usize])
            );
        }
    }
}

impl Drop for Leaks {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file_path);
        if let Some(dir) = self.file_path.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}
