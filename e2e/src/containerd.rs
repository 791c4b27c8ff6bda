//! Real components for tests of the containerd shim: a private OCI registry
//! (`docker-registry`) on 127.0.0.1, busybox images built from local files
//! and pushed to it, and a private `containerd` 1.6 with the CRI plugin, CNI
//! (`bridge` + `loopback`) and the `rauha` runtime handler.
//!
//! Everything lives in a fresh temp dir: registry storage, containerd's
//! root, state, sockets, CNI config and IPAM data, runc state of CRI pods,
//! network namespaces. Nothing uses the machine's own containerd or its
//! sockets. Dropping a harness (also while a test unwinds from a panic)
//! removes its pods, tasks and containers, stops the daemons and the shims
//! they started, unmounts what is still mounted under its dir, deletes its
//! CNI bridge and removes the dir (kept with `RAUHA_E2E_KEEP=1`).
//!
//! ```no_run
//! use rauha_e2e::containerd::{containerd_ready, Containerd, ContainerdOpts, Registry};
//! if containerd_ready() {
//!     let reg = Registry::start();
//!     let image = reg.push_busybox_image("busybox:e2e", &["sleep", "3600"]);
//!     let ctd = Containerd::start(
//!         ContainerdOpts::default()
//!             .path_dir("/path/holding/containerd-shim-rauha-v2")
//!             .env("RAUHA_SOCKET", "/run/rauha/rauhad.sock")
//!             .sandbox_image(&image)
//!             .plain_http_registry(&reg.host()),
//!     );
//!     ctd.ctr_ok(&["image", "pull", "--plain-http", &image]);
//! }
//! ```
//!
//! What containerd 1.6 still puts outside the dir: shim sockets in
//! `/run/containerd/s/<hash>` (the path is compiled in; shims remove them
//! when they exit), `ctr`'s stdio FIFOs in `/run/containerd/fifo`, and for
//! containers run with `ctr` (not CRI) runc's state in
//! `/run/containerd/runc/<namespace>` and cgroups `/<namespace>/<id>` in
//! each hierarchy. Names there carry the namespace, so use a namespace and
//! container IDs no other test uses at the same time.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{is_root, prerequisite};

/// The `ctr` namespace [`Containerd::ctr`] uses unless the options say
/// otherwise.
pub const DEFAULT_NAMESPACE: &str = "rauha-e2e";

/// The containerd 1.6/1.7 configuration of handler `rauha` that `deploy/`
/// ships; the harness uses it as is.
const DEPLOY_RAUHA_RUNTIME: &str = include_str!("../../deploy/containerd/config-v2.toml");
/// The same for containerd 2.x (config version 3).
const DEPLOY_RAUHA_RUNTIME_V3: &str = include_str!("../../deploy/containerd/config-v3.toml");

/// A deploy/containerd file's runtime table, without its `version` line
/// (the harness' config has its own).
fn deploy_table(file: &str) -> String {
    file.lines()
        .filter(|l| !l.starts_with("version"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Where scripts/build-containerd2.sh puts containerd 2.x and its ctr.
pub fn containerd2_dir() -> PathBuf {
    crate::bin_dir().join("../tools/containerd2")
}

/// Whether containerd 2.x is built (scripts/build-containerd2.sh), with
/// what [`containerd_ready`] checks; a missing one fails under
/// `RAUHA_E2E_REQUIRE=1`.
pub fn containerd2_ready() -> bool {
    containerd_ready()
        && ["containerd", "ctr"].iter().all(|b| {
            crate::prerequisite(
                containerd2_dir().join(b).is_file(),
                &format!(
                    "{} (run scripts/build-containerd2.sh)",
                    containerd2_dir().join(b).display()
                ),
            )
        })
}

/// Busybox applets linked into the images [`Registry::push_busybox_image`]
/// builds.
pub const APPLETS: &[&str] = &[
    "sh", "ls", "cat", "echo", "sleep", "ps", "id", "true", "false", "hostname", "head", "dd",
    "kill", "mkdir", "touch", "env", "top", "rm", "grep", "wc", "tail", "uname", "whoami", "pwd",
    "test", "[", "printf", "date", "stat", "mount", "cut", "seq", "ln", "cp", "mv", "chmod", "ip",
    "ifconfig", "nc", "wget", "nslookup", "ping", "tee", "sync", "uptime", "free", "readlink",
    "realpath", "basename", "dirname", "xargs", "find", "sed", "awk", "tr", "sort", "uniq", "yes",
    "timeout", "nproc", "df", "du", "mknod", "umount", "chown", "chroot", "pidof", "brctl",
    "netstat",
];

/// Skips (or fails under `RAUHA_E2E_REQUIRE=1`) unless root and every
/// program the containerd harness runs are here.
pub fn containerd_ready() -> bool {
    if !prerequisite(is_root(), "root (containerd, mounts, network namespaces)") {
        return false;
    }
    for (name, why) in [
        ("containerd", "containerd (apt-get install containerd)"),
        ("ctr", "ctr (apt-get install containerd)"),
        (
            "docker-registry",
            "docker-registry (apt-get install docker-registry)",
        ),
        ("skopeo", "skopeo (apt-get install skopeo)"),
        ("umoci", "umoci (apt-get install umoci)"),
    ] {
        if !prerequisite(find_bin(name).is_some(), why) {
            return false;
        }
    }
    if !prerequisite(
        busybox_path().is_some(),
        "/bin/busybox or /usr/bin/busybox (apt-get install busybox-static)",
    ) {
        return false;
    }
    for plugin in ["bridge", "host-local", "loopback"] {
        let p = Path::new(CNI_BIN_DIR).join(plugin);
        if !prerequisite(
            p.is_file(),
            &format!(
                "{} (apt-get install containernetworking-plugins)",
                p.display()
            ),
        ) {
            return false;
        }
    }
    true
}

/// Where Debian's containernetworking-plugins puts the CNI plugins.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";

/// A program from PATH or the usual system dirs.
pub fn find_bin(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .filter(|d| !d.is_empty())
        .chain([
            "/usr/local/sbin",
            "/usr/local/bin",
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
        ])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    found
}

pub fn bin(name: &str) -> PathBuf {
    find_bin(name).unwrap_or_else(|| PathBuf::from(name))
}

fn busybox_path() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// `n` random lowercase hex characters.
pub fn random_hex(n: usize) -> String {
    uuid::Uuid::new_v4().simple().to_string()[..n].to_string()
}

/// A fresh dir `<tmp>/<prefix><hex>`. When `short` and the temp dir's path
/// is long, `/tmp` is used instead, so that unix socket paths in it stay
/// below the 108-byte limit.
fn fresh_dir(prefix: &str, short: bool) -> PathBuf {
    let mut base = std::env::temp_dir();
    if short && base.as_os_str().len() > 60 {
        base = PathBuf::from("/tmp");
    }
    let dir = base.join(format!("{prefix}{}", random_hex(8)));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// Runs `cmd`, panicking with its stdout and stderr when it fails.
pub fn run_ok(cmd: &mut Command) -> Output {
    let what = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    if !out.status.success() {
        panic!(
            "{what} failed with {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// A free TCP port on 127.0.0.1 (bound and released: another process may
/// take it before the caller does).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// The HTTP status of `GET path` on `host`, if it answers.
fn http_status(host: &str, path: &str) -> Option<u16> {
    let addr = host.parse().ok()?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .ok()?;
    let mut buf = Vec::new();
    let _ = s.take(256).read_to_end(&mut buf);
    let line = String::from_utf8_lossy(&buf);
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Sends SIGTERM, waits up to `grace`, then SIGKILLs and reaps.
fn stop_child(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // SAFETY: kill takes plain integers.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Live (not zombie) processes other than this one whose command line
/// contains `needle`: pid and command line (arguments joined by spaces).
pub fn processes_mentioning(needle: &str) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat
            .rsplit_once(')')
            .map(|(_, r)| r.trim_start().starts_with('Z'))
            .unwrap_or(true)
        {
            continue;
        }
        let cmd = std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
            .unwrap_or_default()
            .replace('\0', " ");
        if cmd.contains(needle) {
            out.push((pid, cmd.trim_end().to_string()));
        }
    }
    out
}

/// Undoes the octal escapes (`\040` for a space) of /proc/self/mountinfo.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|o| u8::from_str_radix(o, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points in this mount namespace at or under `dir`, in mountinfo
/// order.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(|m| PathBuf::from(unescape_mountinfo(m)))
        .filter(|m| m.starts_with(dir))
        .collect()
}

/// Detaches every mount at or under `dir`, deepest first; true when none is
/// left.
fn unmount_all_under(dir: &Path) -> bool {
    for _ in 0..10 {
        let mut mounts = mounts_under(dir);
        if mounts.is_empty() {
            return true;
        }
        // Later mounts may sit on earlier ones: reverse mountinfo order,
        // then deepest path first.
        mounts.reverse();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
        for m in mounts {
            if let Ok(c) = std::ffi::CString::new(m.as_os_str().as_encoded_bytes()) {
                // SAFETY: umount2 with a NUL-terminated path we own.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
    }
    mounts_under(dir).is_empty()
}

fn keep() -> bool {
    std::env::var("RAUHA_E2E_KEEP").is_ok()
}

// ---------------------------------------------------------------------------
// Registry

/// A private OCI distribution registry (`docker-registry serve`) on
/// 127.0.0.1, storing under its own temp dir, plain HTTP, no auth.
pub struct Registry {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
    /// The user and password it requires (htpasswd), if any.
    creds: Option<(String, String)>,
}

impl Registry {
    /// A registry already serving at `host` (`127.0.0.1:PORT`, a
    /// cluster's), to push to; it is left running.
    pub fn attach(host: &str) -> Registry {
        let port = host
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or_else(|| panic!("{host:?} is not HOST:PORT"));
        Registry {
            dir: fresh_dir("rauha-reg-", false),
            port,
            child: None,
            creds: None,
        }
    }

    /// Starts the registry and waits until `GET /v2/` answers.
    pub fn start() -> Registry {
        Registry::start_inner(None)
    }

    /// [`Registry::start`], requiring `user` and `password` (HTTP basic
    /// auth from an htpasswd file; `htpasswd` from apache2-utils makes it).
    /// Pushes through [`Registry::push_image`] log in.
    pub fn start_with_auth(user: &str, password: &str) -> Registry {
        Registry::start_inner(Some((user.to_string(), password.to_string())))
    }

    fn start_inner(creds: Option<(String, String)>) -> Registry {
        let dir = fresh_dir("rauha-reg-", false);
        let auth = match &creds {
            None => String::new(),
            Some((user, password)) => {
                let out = run_ok(Command::new(bin("htpasswd")).args(["-Bbn", user, password]));
                let file = dir.join("htpasswd");
                std::fs::write(&file, &out.stdout).expect("write htpasswd");
                format!(
                    "auth:\n  htpasswd:\n    realm: rauha-e2e\n    path: {}\n",
                    file.display()
                )
            }
        };
        let mut reg = Registry {
            dir,
            port: 0,
            child: None,
            creds,
        };
        let mut last_log = String::new();
        // The port is free when picked but may be taken before the registry
        // binds it: pick again then.
        for _ in 0..5 {
            reg.port = free_port();
            let config = reg.dir.join("config.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\n\
                     log:\n  level: warn\n  accesslog:\n    disabled: true\n\
                     storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                     http:\n  addr: 127.0.0.1:{}\n\
                     health:\n  storagedriver:\n    enabled: false\n{auth}",
                    reg.dir.join("data").display(),
                    reg.port
                ),
            )
            .expect("write registry config");
            let log = std::fs::File::create(reg.dir.join("registry.log")).expect("registry log");
            let child = Command::new(bin("docker-registry"))
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log fd"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("start docker-registry: {e}"));
            reg.child = Some(child);
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                let want = if reg.creds.is_some() { 401 } else { 200 };
                if http_status(&reg.host(), "/v2/") == Some(want) {
                    return reg;
                }
                if let Some(Ok(Some(_))) = reg.child.as_mut().map(|c| c.try_wait()) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            last_log = reg.log();
            if let Some(mut c) = reg.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        panic!("docker-registry did not serve /v2/ on 127.0.0.1: {last_log}");
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// The registry's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }

    /// Builds an OCI image from local files: busybox-static with its
    /// applets ([`APPLETS`]) in `/bin`, `/etc/passwd` and `/etc/group` with
    /// root and nobody (65534), empty `/tmp` (1777), `/proc`, `/dev`,
    /// `/sys`, `/root`; config `Cmd` = `cmd`, `Env` = `PATH=/bin`,
    /// `WorkingDir` = `/`, for this machine's OS and architecture. Pushes it
    /// as `name_tag` (`name[:tag]`, tag `latest` when missing) and returns
    /// the full reference `127.0.0.1:PORT/name:tag`.
    pub fn push_busybox_image(&self, name_tag: &str, cmd: &[&str]) -> String {
        self.push_image(name_tag, &ImageSpec::busybox(cmd))
    }

    /// [`Self::push_busybox_image`] with what `spec` adds: files, users,
    /// groups, an entrypoint, a user.
    ///
    /// The same image (one manifest, one digest) is pushed as well under
    /// each of `spec.also_as`; the reference returned is `name_tag`'s.
    pub fn push_image(&self, name_tag: &str, spec: &ImageSpec) -> String {
        let split = |name_tag: &str| -> (String, String) {
            match name_tag.rsplit_once(':') {
                Some((n, t)) if !t.contains('/') => (n.to_string(), t.to_string()),
                _ => (name_tag.to_string(), "latest".to_string()),
            }
        };
        let (name, tag) = split(name_tag);
        let work = self.dir.join("build").join(random_hex(8));
        let rootfs = work.join("rootfs");
        let layout = work.join("layout");
        build_busybox_rootfs(&rootfs);
        spec.add_to(&rootfs);
        let image = format!("{}:{tag}", layout.display());
        run_ok(
            Command::new(bin("umoci"))
                .args(["init", "--layout"])
                .arg(&layout),
        );
        run_ok(Command::new(bin("umoci")).args(["new", "--image", &image]));
        run_ok(
            Command::new(bin("umoci"))
                .args(["insert", "--no-history", "--image", &image])
                .arg(&rootfs)
                .arg("/"),
        );
        let mut config = Command::new(bin("umoci"));
        config.args([
            "config",
            "--no-history",
            "--image",
            &image,
            "--config.env",
            "PATH=/bin:/usr/bin:/usr/sbin:/sbin",
            "--config.workingdir",
            spec.working_dir.as_deref().unwrap_or("/"),
            "--os",
            "linux",
            "--architecture",
            oci_arch(),
        ]);
        for e in &spec.env {
            config.arg("--config.env").arg(e);
        }
        for p in &spec.exposed_ports {
            config.arg("--config.exposedports").arg(p);
        }
        for l in &spec.labels {
            config.arg("--config.label").arg(l);
        }
        if let Some(signal) = &spec.stop_signal {
            config.arg("--config.stopsignal").arg(signal);
        }
        for c in &spec.cmd {
            config.arg("--config.cmd").arg(c);
        }
        for e in &spec.entrypoint {
            config.arg("--config.entrypoint").arg(e);
        }
        if let Some(user) = &spec.user {
            config.arg("--config.user").arg(user);
        }
        run_ok(&mut config);
        let reference = format!("{}/{name}:{tag}", self.host());
        let push = |reference: &str| self.skopeo_push(&format!("oci:{image}"), reference);
        push(&reference);
        for other in &spec.also_as {
            let (name, tag) = split(other);
            push(&format!("{}/{name}:{tag}", self.host()));
        }
        if !keep() {
            let _ = std::fs::remove_dir_all(&work);
        }
        reference
    }
}

impl Registry {
    /// `skopeo copy SOURCE docker://REFERENCE`, logged in when the
    /// registry requires it.
    pub fn skopeo_push(&self, source: &str, reference: &str) {
        let mut cmd = Command::new(bin("skopeo"));
        cmd.args([
            "--insecure-policy",
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
        ]);
        if let Some((user, password)) = &self.creds {
            cmd.arg("--dest-creds").arg(format!("{user}:{password}"));
        }
        cmd.arg(source).arg(format!("docker://{reference}"));
        run_ok(&mut cmd);
    }
}

/// What an image built by [`Registry::push_image`] holds beyond busybox.
#[derive(Debug, Clone, Default)]
pub struct ImageSpec {
    pub cmd: Vec<String>,
    pub entrypoint: Vec<String>,
    /// The config's `User` (`1002`, `www-data`, `1003:1003`).
    pub user: Option<String>,
    /// Files: path in the image, content, mode, and owner uid and gid.
    pub files: Vec<(String, Vec<u8>, u32, u32, u32)>,
    /// Lines added to `/etc/passwd` and `/etc/group`.
    pub passwd: Vec<String>,
    pub group: Vec<String>,
    /// Directories: path in the image, mode, and owner uid and gid
    /// (made before the files).
    pub dirs: Vec<(String, u32, u32, u32)>,
    /// `KEY=value` entries added to the config's `Env` (after `PATH`).
    pub env: Vec<String>,
    /// The config's `WorkingDir` (`/` when unset).
    pub working_dir: Option<String>,
    /// The config's `ExposedPorts` (`80/tcp`).
    pub exposed_ports: Vec<String>,
    /// The config's `Labels` (`key=value`).
    pub labels: Vec<String>,
    /// The config's `StopSignal` (`SIGQUIT`).
    pub stop_signal: Option<String>,
    /// Further `name[:tag]`s the same image is pushed as.
    pub also_as: Vec<String>,
}

impl ImageSpec {
    pub fn busybox(cmd: &[&str]) -> ImageSpec {
        ImageSpec {
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            ..ImageSpec::default()
        }
    }

    /// Adds a file owned by root.
    pub fn file(mut self, path: &str, data: impl Into<Vec<u8>>, mode: u32) -> ImageSpec {
        self.files.push((path.to_string(), data.into(), mode, 0, 0));
        self
    }

    /// Adds a file owned by `uid:gid`.
    pub fn file_owned(
        mut self,
        path: &str,
        data: impl Into<Vec<u8>>,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> ImageSpec {
        self.files
            .push((path.to_string(), data.into(), mode, uid, gid));
        self
    }

    /// Adds a directory (and its missing parents, root's, 0755).
    pub fn dir(mut self, path: &str, mode: u32, uid: u32, gid: u32) -> ImageSpec {
        self.dirs.push((path.to_string(), mode, uid, gid));
        self
    }

    /// Sets the config's `Entrypoint`.
    pub fn entrypoint(mut self, entrypoint: &[&str]) -> ImageSpec {
        self.entrypoint = entrypoint.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Sets the config's `User` (`1002`, `www-data`, `1003:1004`).
    pub fn user(mut self, user: &str) -> ImageSpec {
        self.user = Some(user.to_string());
        self
    }

    /// Adds a line to `/etc/passwd`.
    pub fn passwd(mut self, line: &str) -> ImageSpec {
        self.passwd.push(line.to_string());
        self
    }

    /// Adds a line to `/etc/group`.
    pub fn group(mut self, line: &str) -> ImageSpec {
        self.group.push(line.to_string());
        self
    }

    /// Adds `KEY=value` to the config's `Env`.
    pub fn env(mut self, key_value: &str) -> ImageSpec {
        self.env.push(key_value.to_string());
        self
    }

    /// Sets the config's `WorkingDir`.
    pub fn working_dir(mut self, dir: &str) -> ImageSpec {
        self.working_dir = Some(dir.to_string());
        self
    }

    /// Adds a port (`80/tcp`) to the config's `ExposedPorts`.
    pub fn exposed_port(mut self, port: &str) -> ImageSpec {
        self.exposed_ports.push(port.to_string());
        self
    }

    /// Adds `key=value` to the config's `Labels`.
    pub fn label(mut self, key_value: &str) -> ImageSpec {
        self.labels.push(key_value.to_string());
        self
    }

    /// Sets the config's `StopSignal` (`SIGQUIT`).
    pub fn stop_signal(mut self, signal: &str) -> ImageSpec {
        self.stop_signal = Some(signal.to_string());
        self
    }

    /// Pushes the same image as `name_tag` too.
    pub fn also_as(mut self, name_tag: &str) -> ImageSpec {
        self.also_as.push(name_tag.to_string());
        self
    }

    fn add_to(&self, rootfs: &Path) {
        use std::os::unix::fs::PermissionsExt;
        for (path, mode, uid, gid) in &self.dirs {
            let target = rootfs.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(&target)
                .unwrap_or_else(|e| panic!("mkdir {}: {e}", target.display()));
            std::os::unix::fs::chown(&target, Some(*uid), Some(*gid))
                .unwrap_or_else(|e| panic!("chown {}: {e}", target.display()));
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(*mode))
                .unwrap_or_else(|e| panic!("chmod {}: {e}", target.display()));
        }
        for (path, data, mode, uid, gid) in &self.files {
            let target = rootfs.join(path.trim_start_matches('/'));
            if let Some(dir) = target.parent() {
                std::fs::create_dir_all(dir)
                    .unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
            }
            std::fs::write(&target, data)
                .unwrap_or_else(|e| panic!("write {}: {e}", target.display()));
            std::os::unix::fs::chown(&target, Some(*uid), Some(*gid))
                .unwrap_or_else(|e| panic!("chown {}: {e}", target.display()));
            // After chown, which clears the setuid bit.
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(*mode))
                .unwrap_or_else(|e| panic!("chmod {}: {e}", target.display()));
        }
        for (file, lines) in [("etc/passwd", &self.passwd), ("etc/group", &self.group)] {
            if lines.is_empty() {
                continue;
            }
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(rootfs.join(file))
                .unwrap_or_else(|e| panic!("open {file}: {e}"));
            for l in lines.iter() {
                writeln!(f, "{l}").unwrap_or_else(|e| panic!("write {file}: {e}"));
            }
        }
    }
}

/// A small static program of `e2e/probes/NAME.c`, built once with the
/// C compiler (build-essential) into `target/e2e-probes/NAME`.
pub fn static_probe(name: &str) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("probes/{name}.c"));
    let out_dir = crate::bin_dir().join("../e2e-probes");
    let out = out_dir.join(name);
    let fresh = |o: &Path| -> bool {
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        matches!((modified(o), modified(&source)), (Some(b), Some(s)) if b >= s)
    };
    if !fresh(&out) {
        std::fs::create_dir_all(&out_dir)
            .unwrap_or_else(|e| panic!("mkdir {}: {e}", out_dir.display()));
        // Unique per call: tests of one binary (one pid) build in parallel.
        static BUILDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = BUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = out_dir.join(format!("{name}.tmp.{}.{n}", std::process::id()));
        run_ok(
            Command::new("cc")
                .args(["-static", "-Os", "-o"])
                .arg(&tmp)
                .arg(&source),
        );
        std::fs::rename(&tmp, &out).unwrap_or_else(|e| panic!("rename {}: {e}", tmp.display()));
    }
    out
}

/// The OCI name of this machine's architecture.
pub fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The busybox rootfs of [`Registry::push_busybox_image`].
pub fn build_busybox_rootfs(rootfs: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let busybox = busybox_path().expect("busybox-static (/bin/busybox or /usr/bin/busybox)");
    for d in ["bin", "etc", "tmp", "proc", "dev", "sys", "root"] {
        std::fs::create_dir_all(rootfs.join(d))
            .unwrap_or_else(|e| panic!("mkdir {}: {e}", rootfs.join(d).display()));
    }
    let set_mode = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
    };
    for d in ["", "bin", "etc", "proc", "dev", "sys"] {
        set_mode(&rootfs.join(d), 0o755);
    }
    set_mode(&rootfs.join("root"), 0o700);
    set_mode(&rootfs.join("tmp"), 0o1777);
    std::fs::copy(&busybox, rootfs.join("bin/busybox"))
        .unwrap_or_else(|e| panic!("copy {}: {e}", busybox.display()));
    set_mode(&rootfs.join("bin/busybox"), 0o755);
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))
            .unwrap_or_else(|e| panic!("symlink {applet}: {e}"));
    }
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .expect("write /etc/passwd");
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\nnobody:x:65534:\n")
        .expect("write /etc/group");
    for f in ["etc/passwd", "etc/group"] {
        set_mode(&rootfs.join(f), 0o644);
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if !keep() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

// ---------------------------------------------------------------------------
// Containerd

/// How to start a [`Containerd`].
#[derive(Clone, Debug)]
pub struct ContainerdOpts {
    /// Prepended to PATH in containerd's environment (and so its shims'):
    /// the dir holding `containerd-shim-rauha-v2`.
    pub path_dir: Option<PathBuf>,
    /// Set in containerd's environment, which its shims inherit.
    pub env: Vec<(String, String)>,
    /// The CRI `sandbox_image` (the pause image of pods).
    pub sandbox_image: Option<String>,
    /// Registries (`host:port`) containerd reaches over plain HTTP, through
    /// `hosts.toml` files in [`Containerd::hosts_dir`] (CRI `config_path`).
    pub plain_http_registries: Vec<String>,
    /// The namespace of [`Containerd::ctr`]; [`DEFAULT_NAMESPACE`] by
    /// default.
    pub namespace: String,
    /// A directory holding containerd 2.x and its ctr, to run instead of
    /// Debian's containerd 1.6 (with a version 3 config).
    pub containerd2: Option<PathBuf>,
    /// Registries (`registry.k8s.io`) whose pulls go to a local one
    /// (`127.0.0.1:PORT`, plain HTTP) instead: no traffic leaves the host.
    pub mirrors: Vec<(String, String)>,
    /// More `rauha` runtime handlers: a name and the shim config file its
    /// `options.ConfigPath` names (`shim-v2/src/config.rs`).
    pub rauha_handlers: Vec<(String, PathBuf)>,
    /// containerd's directory (root, state, sockets); a fresh one when
    /// `None`.
    pub dir: Option<PathBuf>,
}

impl Default for ContainerdOpts {
    fn default() -> Self {
        ContainerdOpts {
            path_dir: None,
            env: Vec::new(),
            sandbox_image: None,
            plain_http_registries: Vec::new(),
            namespace: DEFAULT_NAMESPACE.to_string(),
            containerd2: None,
            mirrors: Vec::new(),
            rauha_handlers: Vec::new(),
            dir: None,
        }
    }
}

impl ContainerdOpts {
    /// For the rauha shim: this build's `containerd-shim-rauha-v2` on
    /// containerd's PATH, its shims pointed at `daemon`, and `registry`
    /// reached over plain HTTP.
    pub fn for_rauha(daemon: &crate::Daemon, registry: &Registry) -> Self {
        ContainerdOpts {
            dir: Some(daemon.containerd_dir()),
            ..ContainerdOpts::default()
        }
        .path_dir(crate::bin_dir())
        .env("RAUHA_ADDR", &daemon.addr())
        .plain_http_registry(&registry.host())
    }

    pub fn path_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.path_dir = Some(dir.into());
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn sandbox_image(mut self, reference: &str) -> Self {
        self.sandbox_image = Some(reference.to_string());
        self
    }

    pub fn plain_http_registry(mut self, host: &str) -> Self {
        self.plain_http_registries.push(host.to_string());
        self
    }

    pub fn namespace(mut self, ns: &str) -> Self {
        self.namespace = ns.to_string();
        self
    }

    /// Pulls from `upstream` (`registry.k8s.io`) go to `local` instead.
    pub fn mirror(mut self, upstream: &str, local: &str) -> Self {
        self.mirrors.push((upstream.to_string(), local.to_string()));
        self
    }

    /// Another `rauha` runtime handler `name`, configured by `config`.
    pub fn rauha_handler(mut self, name: &str, config: impl Into<PathBuf>) -> Self {
        self.rauha_handlers.push((name.to_string(), config.into()));
        self
    }

    /// Runs containerd 2.x from `dir` (see [`containerd2_dir`]).
    pub fn containerd2(mut self, dir: impl Into<PathBuf>) -> Self {
        self.containerd2 = Some(dir.into());
        self
    }
}

/// Third octets of 10.88.X.0/24 subnets handed out in this process.
static SUBNETS: Mutex<Option<HashSet<u8>>> = Mutex::new(None);

/// A 10.88.X.0/24 subnet that no route or address of this host uses and no
/// other harness of this process has.
fn pick_subnet() -> u8 {
    let routes = Command::new(bin("ip"))
        .args(["-4", "route", "show", "table", "all"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let addrs = Command::new(bin("ip"))
        .args(["-4", "-o", "addr", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut taken = SUBNETS.lock().unwrap_or_else(|e| e.into_inner());
    let taken = taken.get_or_insert_with(HashSet::new);
    let start = uuid::Uuid::new_v4().as_bytes()[0];
    for i in 0..=255u16 {
        let x = ((start as u16 + i) % 254 + 1) as u8;
        let prefix = format!("10.88.{x}.");
        if taken.contains(&x) || routes.contains(&prefix) || addrs.contains(&prefix) {
            continue;
        }
        taken.insert(x);
        return x;
    }
    panic!("no free 10.88.X.0/24 subnet for CNI");
}

/// A private containerd 1.6 (CRI included) on a temp dir, with the runc
/// (default) and `rauha` runtime handlers and a CNI bridge network.
pub struct Containerd {
    dir: PathBuf,
    opts: ContainerdOpts,
    bridge: String,
    subnet: String,
    child: Option<Child>,
    crictl: Mutex<Option<PathBuf>>,
}

impl Containerd {
    /// Writes the config and starts containerd; waits (30 s at most) until
    /// `ctr version` answers.
    pub fn start(opts: ContainerdOpts) -> Containerd {
        let dir = match &opts.dir {
            Some(d) => {
                std::fs::create_dir_all(d)
                    .unwrap_or_else(|e| panic!("create {}: {e}", d.display()));
                d.clone()
            }
            None => fresh_dir("rctd-", true),
        };
        let tag = random_hex(6);
        let x = pick_subnet();
        let mut c = Containerd {
            dir,
            opts,
            bridge: format!("rcni{tag}"),
            subnet: format!("10.88.{x}.0/24"),
            child: None,
            crictl: Mutex::new(None),
        };
        c.write_config();
        c.spawn();
        c
    }

    fn write_config(&self) {
        let d = &self.dir;
        let net_d = d.join("cni/net.d");
        std::fs::create_dir_all(&net_d).expect("cni conf dir");
        std::fs::create_dir_all(self.hosts_dir()).expect("hosts dir");
        for host in &self.opts.plain_http_registries {
            let hd = self.hosts_dir().join(host);
            std::fs::create_dir_all(&hd).expect("hosts.toml dir");
            std::fs::write(
                hd.join("hosts.toml"),
                format!(
                    "server = \"http://{host}\"\n\n[host.\"http://{host}\"]\n  capabilities = [\"pull\", \"resolve\", \"push\"]\n"
                ),
            )
            .expect("write hosts.toml");
        }
        for (upstream, local) in &self.opts.mirrors {
            let hd = self.hosts_dir().join(upstream);
            std::fs::create_dir_all(&hd).expect("hosts.toml dir");
            // The local registry as the server itself: nothing falls back
            // to the real one.
            std::fs::write(
                hd.join("hosts.toml"),
                format!(
                    "server = \"http://{local}\"\n\n[host.\"http://{local}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
                ),
            )
            .expect("write hosts.toml");
        }
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": format!("rauha-e2e-{}", &self.bridge[4..]),
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": true,
                    "ipMasq": false,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": self.subnet}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": d.join("cni/ipam"),
                    },
                },
                {"type": "loopback"},
            ],
        });
        std::fs::write(
            net_d.join("10-rauha-e2e.conflist"),
            serde_json::to_string_pretty(&conflist).expect("json"),
        )
        .expect("write conflist");
        let config = if self.opts.containerd2.is_some() {
            self.config_v3(&net_d)
        } else {
            self.config_v2(&net_d)
        };
        std::fs::write(self.config_path(), config).expect("write containerd config");
        std::fs::write(
            d.join("crictl.yaml"),
            format!(
                "runtime-endpoint: {0}\nimage-endpoint: {0}\ntimeout: 60\ndebug: false\n",
                self.endpoint()
            ),
        )
        .expect("write crictl.yaml");
    }

    /// What both config versions start with: where containerd keeps its
    /// state and sockets (all under the harness' dir), and its log level.
    fn config_head(&self, version: u8, disabled_plugins: &[&str]) -> String {
        let p = |s: &str| toml_str(&self.dir.join(s).display().to_string());
        let disabled: Vec<String> = disabled_plugins.iter().map(|s| toml_str(s)).collect();
        format!(
            r#"version = {version}
root = {root}
state = {state}
disabled_plugins = [{disabled}]

[grpc]
  address = {sock}

[ttrpc]
  address = {ttrpc}

[debug]
  level = "info"

"#,
            root = p("root"),
            state = p("state"),
            disabled = disabled.join(", "),
            sock = toml_str(&self.address().display().to_string()),
            ttrpc = p("t.sock"),
        )
    }

    /// containerd 1.6's config (version 2): CRI with runc as the default
    /// runtime, the test's CNI network and registries, and deploy's `rauha`
    /// runtime table as shipped.
    fn config_v2(&self, net_d: &Path) -> String {
        let p = |s: &str| toml_str(&self.dir.join(s).display().to_string());
        let sandbox = self
            .opts
            .sandbox_image
            .as_deref()
            .map(|s| format!("    sandbox_image = {}\n", toml_str(s)))
            .unwrap_or_default();
        let head = self.config_head(
            2,
            &[
                "io.containerd.snapshotter.v1.aufs",
                "io.containerd.snapshotter.v1.btrfs",
                "io.containerd.snapshotter.v1.devmapper",
                "io.containerd.snapshotter.v1.zfs",
            ],
        );
        format!(
            r#"{head}[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = {opt}
  [plugins."io.containerd.grpc.v1.cri"]
{sandbox}    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    enable_selinux = false
    disable_apparmor = true
    netns_mounts_under_state_dir = true
    # Without CAP_SYS_RESOURCE (as on the CI VMs) the pause container's
    # oom_score_adj of -998 cannot be set and runc fails: clamp to >= ours.
    restrict_oom_score_adj = true
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          BinaryName = {runc}
          Root = {runc_root}
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = {cni_bin}
      conf_dir = {cni_conf}
    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = {hosts}

# The runtime handler `rauha` exactly as deploy/ ships it.
{deploy}
{handlers}"#,
            deploy = deploy_table(DEPLOY_RAUHA_RUNTIME),
            handlers =
                self.handler_tables("plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes"),
            opt = p("opt"),
            runc = toml_str(&bin("runc").display().to_string()),
            runc_root = p("runc"),
            cni_bin = toml_str(CNI_BIN_DIR),
            cni_conf = toml_str(&net_d.display().to_string()),
            hosts = toml_str(&self.hosts_dir().display().to_string()),
        )
    }

    /// containerd 2.x's config (version 3): the same set-up as version 2's,
    /// in its plugins' new names, and without NRI (whose socket is a host
    /// path).
    fn config_v3(&self, net_d: &Path) -> String {
        let p = |s: &str| toml_str(&self.dir.join(s).display().to_string());
        let sandbox = self
            .opts
            .sandbox_image
            .as_deref()
            .map(|s| {
                format!(
                    "    [plugins.'io.containerd.cri.v1.images'.pinned_images]\n      sandbox = {}\n",
                    toml_str(s)
                )
            })
            .unwrap_or_default();
        let head = self.config_head(3, &["io.containerd.nri.v1.nri"]);
        format!(
            r#"{head}[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = "overlayfs"
{sandbox}    [plugins.'io.containerd.cri.v1.images'.registry]
      config_path = {hosts}
  [plugins.'io.containerd.cri.v1.runtime']
    enable_selinux = false
    disable_apparmor = true
    netns_mounts_under_state_dir = true
    restrict_oom_score_adj = true
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = "runc"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = {runc}
          Root = {runc_root}
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = [{cni_bin}]
      conf_dir = {cni_conf}
  [plugins.'io.containerd.grpc.v1.cri']
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"

# The runtime handler `rauha` exactly as deploy/ ships it.
{deploy}
{handlers}"#,
            deploy = deploy_table(DEPLOY_RAUHA_RUNTIME_V3),
            handlers =
                self.handler_tables("plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes"),
            runc = toml_str(&bin("runc").display().to_string()),
            runc_root = p("runc"),
            cni_bin = toml_str(CNI_BIN_DIR),
            cni_conf = toml_str(&net_d.display().to_string()),
            hosts = toml_str(&self.hosts_dir().display().to_string()),
        )
    }

    /// The runtime tables of [`ContainerdOpts::rauha_handler`]s, under
    /// `prefix` (the config version's runtimes table).
    fn handler_tables(&self, prefix: &str) -> String {
        self.opts
            .rauha_handlers
            .iter()
            .map(|(name, config)| {
                format!(
                    "[{prefix}.{name}]\n  runtime_type = \"io.containerd.rauha.v2\"\n  pod_annotations = [\"rauha.dev/*\"]\n  container_annotations = [\"rauha.dev/*\"]\n  [{prefix}.{name}.options]\n    ConfigPath = {}\n",
                    toml_str(&config.display().to_string())
                )
            })
            .collect()
    }

    /// Starts the containerd process on this harness' config and waits
    /// until it answers (again, after `stop`).
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("containerd log");
        let mut path = Vec::new();
        if let Some(p) = &self.opts.path_dir {
            path.push(p.display().to_string());
        }
        // containerd 2.x's own runc shim before Debian's (from 1.6, which
        // containerd 2.x refuses).
        if let Some(d) = &self.opts.containerd2 {
            path.push(d.display().to_string());
        }
        let inherited = std::env::var("PATH").unwrap_or_default();
        path.extend(
            inherited
                .split(':')
                .filter(|s| !s.is_empty())
                .map(String::from),
        );
        for sys in [
            "/usr/local/sbin",
            "/usr/local/bin",
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
        ] {
            if !path.iter().any(|p| p == sys) {
                path.push(sys.to_string());
            }
        }
        let mut cmd = Command::new(self.containerd_bin());
        cmd.arg("--config")
            .arg(self.config_path())
            .env("PATH", path.join(":"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log);
        for (k, v) in &self.opts.env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start containerd: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "containerd exited with {status} at start; log tail:\n{}",
                    tail(&self.log(), 40)
                );
            }
            if self.address().exists() {
                let out = Command::new(self.ctr_bin())
                    .arg("--address")
                    .arg(self.address())
                    .args(["--connect-timeout", "2s", "--timeout", "5s", "version"])
                    .stdin(Stdio::null())
                    .output();
                if out.map(|o| o.status.success()).unwrap_or(false) {
                    return;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "containerd did not answer `ctr version` within 30 s; log tail:\n{}",
                    tail(&self.log(), 40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn containerd_bin(&self) -> PathBuf {
        match &self.opts.containerd2 {
            Some(d) => d.join("containerd"),
            None => bin("containerd"),
        }
    }

    fn ctr_bin(&self) -> PathBuf {
        match &self.opts.containerd2 {
            Some(d) => d.join("ctr"),
            None => bin("ctr"),
        }
    }

    /// The harness' temp dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// containerd's gRPC unix socket.
    pub fn address(&self) -> PathBuf {
        self.dir.join("c.sock")
    }

    /// `unix://` + [`Self::address`], as CRI clients take it.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.address().display())
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    /// The generated containerd config.
    pub fn config(&self) -> String {
        std::fs::read_to_string(self.config_path()).unwrap_or_default()
    }

    /// containerd's `root` (content, snapshots, metadata).
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// containerd's `state` (task bundles, CRI netns).
    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// The `hosts.toml` dir (`ctr ... --hosts-dir` takes it too).
    pub fn hosts_dir(&self) -> PathBuf {
        self.dir.join("certs.d")
    }

    /// The CNI bridge's name (it exists once the first pod is up).
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// The pods' subnet, `10.88.X.0/24`; the bridge is `10.88.X.1`.
    pub fn subnet(&self) -> &str {
        &self.subnet
    }

    pub fn namespace(&self) -> &str {
        &self.opts.namespace
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("containerd.log")
    }

    /// containerd's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `ctr --address SOCK --namespace NS args...`.
    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_ns(&self.opts.namespace, args)
    }

    /// `ctr args...` started with its stdin, stdout and stderr piped to
    /// this process (an attached `ctr run`).
    pub fn ctr_attached(&self, args: &[&str]) -> std::process::Child {
        Command::new(self.ctr_bin())
            .arg("--address")
            .arg(self.address())
            .args(["--namespace", &self.opts.namespace])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("run ctr: {e}"))
    }

    /// `ctr` in namespace `ns`.
    pub fn ctr_ns(&self, ns: &str, args: &[&str]) -> Output {
        Command::new(self.ctr_bin())
            .arg("--address")
            .arg(self.address())
            .args(["--namespace", ns])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run ctr: {e}"))
    }

    /// [`Self::ctr`]'s stdout; panics with its stderr when it fails.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        if !out.status.success() {
            panic!(
                "ctr {args:?} failed with {}\nstdout: {}\nstderr: {}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `crictl` against this containerd's CRI. The binary is remembered so
    /// that dropping the harness removes pods with it.
    pub fn crictl(&self, crictl_bin: &Path, args: &[&str]) -> Output {
        *self.crictl.lock().unwrap_or_else(|e| e.into_inner()) = Some(crictl_bin.to_path_buf());
        self.crictl_cmd(crictl_bin, args)
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", crictl_bin.display()))
    }

    /// [`Self::crictl`]'s stdout; panics with its stderr when it fails.
    pub fn crictl_ok(&self, crictl_bin: &Path, args: &[&str]) -> String {
        let out = self.crictl(crictl_bin, args);
        if !out.status.success() {
            panic!(
                "crictl {args:?} failed with {}\nstdout: {}\nstderr: {}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The `crictl` command line [`Self::crictl`] runs, to start in the background.
    pub fn crictl_cmd(&self, crictl_bin: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(crictl_bin);
        cmd.arg("--config")
            .arg(self.dir.join("crictl.yaml"))
            .args(["--runtime-endpoint", &self.endpoint()])
            .args(["--image-endpoint", &self.endpoint()])
            .args(["--timeout", "60s"])
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Live `containerd-shim-*` processes started by this containerd.
    pub fn shim_pids(&self) -> Vec<(i32, String)> {
        let addr = self.address().display().to_string();
        processes_mentioning(&addr)
            .into_iter()
            .filter(|(_, cmd)| cmd.contains("containerd-shim"))
            .collect()
    }

    /// Mounts still present under the harness' dir.
    pub fn mounts(&self) -> Vec<PathBuf> {
        mounts_under(&self.dir)
    }

    /// Stops containerd (SIGTERM; SIGKILL after 10 s). Shims and their
    /// containers keep running, as when containerd crashes or is upgraded.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c, Duration::from_secs(10));
        }
    }

    /// Whether the containerd process is running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Stops containerd and starts it again on the same config, root and
    /// state; waits until it answers.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Removes pods (when a crictl was used), then every task and container
    /// in every namespace.
    pub fn remove_workloads(&mut self) {
        if !self.running() {
            return;
        }
        let crictl = self
            .crictl
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(crictl) = crictl {
            let _ = self
                .crictl_cmd(&crictl, &["rmp", "--all", "--force"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let ctr = |args: &[&str]| -> String {
            Command::new(self.ctr_bin())
                .arg("--address")
                .arg(self.address())
                .args(["--connect-timeout", "5s", "--timeout", "30s"])
                .args(args)
                .stdin(Stdio::null())
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        let namespaces = ctr(&["namespaces", "ls", "-q"]);
        for ns in namespaces.lines().map(str::trim).filter(|s| !s.is_empty()) {
            let tasks = ctr(&["-n", ns, "tasks", "ls", "-q"]);
            for id in tasks.lines().map(str::trim).filter(|s| !s.is_empty()) {
                ctr(&["-n", ns, "tasks", "kill", "-a", "-s", "9", id]);
                ctr(&["-n", ns, "tasks", "delete", "-f", id]);
            }
            let containers = ctr(&["-n", ns, "containers", "ls", "-q"]);
            for id in containers.lines().map(str::trim).filter(|s| !s.is_empty()) {
                ctr(&["-n", ns, "containers", "delete", id]);
            }
            // ctr-run containers' cgroups are /<ns>/<id>: drop the parent
            // when empty (rmdir fails on a cgroup in use).
            for entry in std::fs::read_dir("/sys/fs/cgroup")
                .into_iter()
                .flatten()
                .flatten()
            {
                let _ = std::fs::remove_dir(entry.path().join(ns));
            }
            // So is runc's state dir of ctr-run containers (CRI ones use
            // the harness' own runc root).
            let _ = std::fs::remove_dir(Path::new("/run/containerd/runc").join(ns));
        }
    }
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.remove_workloads();
        self.stop();
        // Shims outlive containerd; they were started with `-address SOCK`.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let shims = self.shim_pids();
            if shims.is_empty() || Instant::now() > deadline {
                break;
            }
            for (pid, _) in &shims {
                // SAFETY: kill and waitpid take plain integers; waitpid
                // only reaps the shim when this process is its reaper.
                unsafe {
                    libc::kill(*pid, libc::SIGKILL);
                    libc::waitpid(*pid, std::ptr::null_mut(), libc::WNOHANG);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let unmounted = unmount_all_under(&self.dir);
        if Path::new("/sys/class/net").join(&self.bridge).exists() {
            let _ = Command::new(bin("ip"))
                .args(["link", "delete", &self.bridge])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        if let Some(set) = SUBNETS.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            if let Some(x) = self.subnet.split('.').nth(2).and_then(|s| s.parse().ok()) {
                set.remove(&x);
            }
        }
        if !unmounted {
            eprintln!(
                "containerd harness: mounts left under {}, not removing it: {:?}",
                self.dir.display(),
                mounts_under(&self.dir)
            );
        } else if !keep() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape_mountinfo(r"/tmp/plain"), "/tmp/plain");
        assert_eq!(unescape_mountinfo(r"/x\"), r"/x\");
    }

    #[test]
    fn toml_strings() {
        assert_eq!(toml_str(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}
