//! A throwaway VM for tests that need a kernel this host does not give:
//! Debian's 6.1 kernel (BPF-LSM, `lsm=...,bpf`) on QEMU TCG, booting a
//! busybox initramfs built here, with a pure cgroup v2 hierarchy. The
//! kernel comes from `scripts/vm-kernel.sh`, run on first use.
//!
//! ```no_run
//! use rauha_e2e::vm::{vm_ready, VmSpec};
//! if vm_ready() {
//!     let out = VmSpec::new()
//!         .script("cat /sys/kernel/security/lsm")
//!         .run();
//!     out.assert_success();
//!     assert!(out.output.contains("bpf"));
//! }
//! ```
//!
//! The guest's `/init` copies the initramfs onto a tmpfs and `switch_root`s
//! into it (`pivot_root`, which zones use, does not work on the initramfs'
//! rootfs), mounts proc, sysfs, devtmpfs, cgroup2 alone at `/sys/fs/cgroup`
//! (`nsdelegate,memory_recursiveprot`, as systemd mounts it, with
//! `+cpu +memory +pids` in its `cgroup.subtree_control`), bpffs, securityfs,
//! tmpfs `/tmp` and `/run`, brings up `lo`, loads the requested kernel
//! modules and runs the script with `sh -e`, its stdout and stderr on a
//! second serial port (`/dev/ttyS1`, raw) that the host reads into
//! [`VmOutput::output`], apart from kernel messages. It then kills what is
//! left, drains the port, prints `RAUHA_VM_EXIT=<status>` on the console
//! and powers off.
//!
//! QEMU is killed on timeout, when the [`VmSpec::run`] that started it
//! unwinds, and when the thread that started it dies (`PR_SET_PDEATHSIG`);
//! the temp dir holding the initramfs is removed (kept with
//! `RAUHA_E2E_KEEP=1`). `RAUHA_VM_VERBOSE=1` echoes the console to stderr
//! as it comes.

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{is_root, prerequisite};

/// Printed by the guest's init on the console when the script is about to
/// run.
pub const READY_MARKER: &str = "RAUHA_VM_READY";
/// Printed by the guest's init on the console with the script's exit
/// status: `RAUHA_VM_EXIT=<status>`.
pub const EXIT_MARKER: &str = "RAUHA_VM_EXIT=";
/// Written after the script's output on `/dev/ttyS1`; its absence means the
/// output was cut (timeout, crash).
const OUTPUT_END: &str = "RAUHA_VM_OUTPUT_END";

/// Where the guest's own helper files live.
const VM_DIR: &str = "/rauha-vm";

/// The directory `scripts/vm-kernel.sh` fills: `$RAUHA_VM_KERNEL_DIR`, else
/// `<target>/vm/kernel`.
pub fn kernel_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("RAUHA_VM_KERNEL_DIR") {
        return PathBuf::from(dir);
    }
    target_dir().join("vm/kernel")
}

fn target_dir() -> PathBuf {
    std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// The kernel QEMU boots, once [`ensure_kernel`] has fetched it: the
/// uncompressed `vmlinux` (PVH entry), which boots ~3 s sooner under TCG
/// than `vmlinuz`, whose XZ decompression runs emulated.
pub fn kernel_image() -> PathBuf {
    kernel_dir().join("vmlinux")
}

/// The kernel's release (`6.1.0-N-amd64`), if fetched.
pub fn kernel_version() -> Option<String> {
    std::fs::read_to_string(kernel_dir().join("version"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn in_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

fn tools_present() -> bool {
    kernel_image().is_file()
        && kernel_version().is_some()
        && in_path("qemu-system-x86_64").is_some()
        && Path::new("/bin/busybox").is_file()
}

/// Makes sure the kernel, QEMU and busybox are there, running
/// `scripts/vm-kernel.sh` (as root, under a lock) when something is
/// missing. Returns the kernel image.
pub fn ensure_kernel() -> Result<PathBuf, String> {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if tools_present() {
        return Ok(kernel_image());
    }
    if !is_root() {
        return Err("scripts/vm-kernel.sh needs root to install packages".into());
    }
    let dir = kernel_dir();
    let parent = dir.parent().unwrap_or(Path::new("/tmp")).to_path_buf();
    std::fs::create_dir_all(&parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    // Other test binaries may run at the same time: one fetch at a time.
    let lock_path = parent.join(".vm-kernel.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("{}: {e}", lock_path.display()))?;
    // SAFETY: flock on an open descriptor; released when `lock` closes.
    unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
    if tools_present() {
        return Ok(kernel_image());
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/vm-kernel.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(&dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} {} failed ({}): {}",
            script.display(),
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    if !tools_present() {
        return Err(format!(
            "{} ran but {} or qemu-system-x86_64 or /bin/busybox is still missing",
            script.display(),
            kernel_image().display()
        ));
    }
    Ok(kernel_image())
}

/// Skips (or, under `RAUHA_E2E_REQUIRE=1`, fails) unless VM tests can run:
/// root, the kernel from `scripts/vm-kernel.sh` (fetched here when
/// missing), `qemu-system-x86_64` and busybox-static at `/bin/busybox`.
pub fn vm_ready() -> bool {
    if !prerequisite(is_root(), "root (to fetch the VM kernel and run QEMU)") {
        return false;
    }
    if let Err(e) = ensure_kernel() {
        return prerequisite(false, &format!("the VM kernel ({e})"));
    }
    prerequisite(
        kernel_image().is_file(),
        &format!("{} (run scripts/vm-kernel.sh)", kernel_image().display()),
    ) && prerequisite(
        in_path("qemu-system-x86_64").is_some(),
        "qemu-system-x86_64 (apt-get install qemu-system-x86)",
    ) && prerequisite(
        Path::new("/bin/busybox").is_file(),
        "busybox-static at /bin/busybox (apt-get install busybox-static)",
    )
}

/// What a VM run gave.
#[derive(Debug, Clone)]
pub struct VmOutput {
    /// The serial console (ttyS0): kernel messages and init's markers, with
    /// `\r` removed.
    pub serial: String,
    /// The script's stdout and stderr (ttyS1), complete: no size limit.
    pub output: String,
    /// Whether `output` ends with the script's end (not cut by a timeout or
    /// crash).
    pub output_complete: bool,
    /// The script's exit status, or -1 when the VM stopped without
    /// reporting one (timeout, kernel panic, init failure).
    pub exit_code: i32,
    /// QEMU's whole run, from spawn to exit.
    pub duration: Duration,
    /// From QEMU's spawn to the guest's init being ready to run the script.
    pub boot: Option<Duration>,
    /// The run hit [`VmSpec::timeout`] and QEMU was killed.
    pub timed_out: bool,
    /// QEMU's own stderr.
    pub qemu_stderr: String,
}

impl VmOutput {
    pub fn success(&self) -> bool {
        self.exit_code == 0 && !self.timed_out
    }

    /// Panics, showing the console and the output, unless the script exited
    /// 0.
    pub fn assert_success(&self) {
        assert!(self.success(), "VM script failed: {}", self.describe());
    }

    /// A report for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "exit_code={} timed_out={} duration={:?} boot={:?}\n--- console ---\n{}\n--- output ---\n{}\n--- qemu stderr ---\n{}",
            self.exit_code,
            self.timed_out,
            self.duration,
            self.boot,
            self.serial,
            self.output,
            self.qemu_stderr
        )
    }

    /// The text a guest `section NAME cmd...` printed, without its markers.
    pub fn section(&self, name: &str) -> Option<&str> {
        let begin = format!("@@RAUHA_SECTION_BEGIN {name}@@\n");
        let end = format!("@@RAUHA_SECTION_END {name}@@");
        let start = self.output.find(&begin)? + begin.len();
        let len = self.output[start..].find(&end)?;
        let mut text = &self.output[start..start + len];
        // The end marker is printed on a line of its own.
        if let Some(t) = text.strip_suffix('\n') {
            text = t;
        }
        Some(text)
    }
}

/// The initramfs's contents and the VM's settings.
#[derive(Debug, Clone)]
pub struct VmSpec {
    binaries: Vec<(PathBuf, String)>,
    files: Vec<(String, Vec<u8>, u32)>,
    modules: Vec<String>,
    script: String,
    memory_mb: u32,
    cpus: u32,
    timeout: Duration,
    kernel_args: Vec<String>,
    strip: bool,
}

impl Default for VmSpec {
    fn default() -> Self {
        Self::new()
    }
}

impl VmSpec {
    /// 1 GiB, one CPU, a 120 s timeout, an empty script.
    pub fn new() -> VmSpec {
        VmSpec {
            binaries: Vec::new(),
            files: Vec::new(),
            modules: Vec::new(),
            script: String::new(),
            memory_mb: 1024,
            cpus: 1,
            timeout: Duration::from_secs(120),
            kernel_args: Vec::new(),
            strip: true,
        }
    }

    /// Copies a host executable to `guest_path`, with the shared libraries
    /// and the dynamic loader `ldd` reports (at their host paths). The copy
    /// has its debug info stripped (symbols stay) unless
    /// [`VmSpec::strip`]`(false)`.
    pub fn binary(mut self, host_path: impl AsRef<Path>, guest_path: impl Into<String>) -> Self {
        self.binaries
            .push((host_path.as_ref().to_path_buf(), guest_path.into()));
        self
    }

    /// What a zone's workspace needs in the guest: overlayfs, and the
    /// disk-limited ext4 on a loop device made with mkfs.ext4 (6.1's ext4
    /// always loads crc32c).
    pub fn workspace_support(self) -> Self {
        ["overlay", "ext4", "crc32c_generic", "loop"]
            .iter()
            .fold(self, |spec, m| spec.kernel_module(*m))
            .binary("/usr/sbin/mkfs.ext4", "/usr/sbin/mkfs.ext4")
    }

    /// `rauha`, `rauhad`, `rauha-guest-agent` and `rauha-probe` from
    /// [`crate::bin_dir`], in `/usr/local/bin` (rauhad finds the agent
    /// beside itself).
    pub fn rauha_binaries(self) -> Self {
        ["rauha", "rauhad", "rauha-guest-agent", "rauha-probe"]
            .iter()
            .fold(self, |spec, name| {
                spec.binary(
                    crate::bin_dir().join(name),
                    format!("/usr/local/bin/{name}"),
                )
            })
    }

    /// A file with these bytes and permission bits (e.g. `0o644`).
    pub fn file(
        mut self,
        guest_path: impl Into<String>,
        bytes: impl Into<Vec<u8>>,
        mode: u32,
    ) -> Self {
        self.files.push((guest_path.into(), bytes.into(), mode));
        self
    }

    /// The shell script the guest runs with `sh -e`, from `/`, with PATH
    /// covering `/usr/local/bin`. It may call `section NAME cmd [args]`,
    /// which frames the command's output for [`VmOutput::section`]; with
    /// `-e`, a failing command ends the script with its status.
    pub fn script(mut self, sh_text: impl Into<String>) -> Self {
        self.script = sh_text.into();
        self
    }

    pub fn memory_mb(mut self, n: u32) -> Self {
        self.memory_mb = n;
        self
    }

    /// Virtual CPUs (TCG: each is a host thread).
    pub fn cpus(mut self, n: u32) -> Self {
        self.cpus = n.max(1);
        self
    }

    /// The whole run's limit, boot included; QEMU is killed past it.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Loads a module of the VM kernel (e.g. `overlay`, `veth`) and those
    /// it depends on, before the script runs.
    pub fn kernel_module(mut self, name: impl Into<String>) -> Self {
        self.modules.push(name.into());
        self
    }

    /// Appends to the kernel command line.
    pub fn kernel_arg(mut self, arg: impl Into<String>) -> Self {
        self.kernel_args.push(arg.into());
        self
    }

    /// Whether to strip debug info from binaries (default true).
    pub fn strip(mut self, strip: bool) -> Self {
        self.strip = strip;
        self
    }

    /// Builds the initramfs, boots the VM, waits for it to power off (or
    /// kills it at the timeout) and returns what it printed. Panics when
    /// the VM cannot be started at all (no kernel, unreadable binary).
    pub fn run(&self) -> VmOutput {
        let kernel = ensure_kernel().unwrap_or_else(|e| panic!("VM kernel: {e}"));
        let dir = TempDir::new();
        let initrd = dir.path.join("initrd.cpio");
        self.build_initramfs(&initrd, &dir.path)
            .unwrap_or_else(|e| panic!("cannot build the initramfs: {e}"));
        let output_path = dir.path.join("ttyS1.out");
        let stderr_path = dir.path.join("qemu.stderr");
        let mut append = vec![
            "console=ttyS0".to_string(),
            "quiet".into(),
            "panic=-1".into(),
            "lsm=lockdown,capability,landlock,bpf".into(),
            "rdinit=/init".into(),
        ];
        append.extend(self.kernel_args.iter().cloned());
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-machine", "q35,accel=tcg", "-cpu", "max"])
            .args(["-m", &self.memory_mb.to_string()])
            .args(["-smp", &self.cpus.to_string()])
            .args(["-nodefaults", "-no-user-config", "-display", "none"])
            .args(["-serial", "stdio"])
            .arg("-serial")
            .arg(format!("file:{}", output_path.display()))
            .arg("-no-reboot")
            .arg("-kernel")
            .arg(&kernel)
            .arg("-initrd")
            .arg(&initrd)
            .arg("-append")
            .arg(append.join(" "))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(
                std::fs::File::create(&stderr_path)
                    .unwrap_or_else(|e| panic!("{}: {e}", stderr_path.display())),
            );
        // SAFETY: prctl with integer arguments is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                // QEMU dies with the thread that started it.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                Ok(())
            });
        }
        let started = Instant::now();
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start qemu-system-x86_64: {e}"));
        let mut qemu = Qemu(Some(child));
        let stdout = qemu.0.as_mut().and_then(|c| c.stdout.take());
        let console = Arc::new(Mutex::new(Vec::<u8>::new()));
        let ready_at = Arc::new(Mutex::new(None::<Instant>));
        let reader = {
            let console = Arc::clone(&console);
            let ready_at = Arc::clone(&ready_at);
            let verbose = std::env::var("RAUHA_VM_VERBOSE").as_deref() == Ok("1");
            std::thread::spawn(move || {
                let Some(mut stdout) = stdout else { return };
                let mut buf = [0u8; 8192];
                loop {
                    match stdout.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if verbose {
                                let _ = io::stderr().write_all(&buf[..n]);
                            }
                            let mut all = console.lock().unwrap_or_else(|e| e.into_inner());
                            let from = all.len().saturating_sub(READY_MARKER.len());
                            all.extend_from_slice(&buf[..n]);
                            let mut r = ready_at.lock().unwrap_or_else(|e| e.into_inner());
                            if r.is_none()
                                && all[from..]
                                    .windows(READY_MARKER.len())
                                    .any(|w| w == READY_MARKER.as_bytes())
                            {
                                *r = Some(Instant::now());
                            }
                        }
                    }
                }
            })
        };
        let deadline = started + self.timeout;
        let mut timed_out = false;
        loop {
            match qemu.0.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(_))) | Some(Err(_)) | None => break,
                Some(Ok(None)) => {}
            }
            if Instant::now() >= deadline {
                timed_out = true;
                qemu.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        qemu.kill();
        let duration = started.elapsed();
        let _ = reader.join();
        let serial = String::from_utf8_lossy(&console.lock().unwrap_or_else(|e| e.into_inner()))
            .replace('\r', "");
        let raw_output = std::fs::read(&output_path).unwrap_or_default();
        let raw_output = String::from_utf8_lossy(&raw_output).into_owned();
        let (output, output_complete) = match raw_output.rfind(OUTPUT_END) {
            Some(at) => (raw_output[..at].to_string(), true),
            None => (raw_output, false),
        };
        let exit_code = parse_exit(&serial).unwrap_or(-1);
        let boot = ready_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|t| t.duration_since(started));
        VmOutput {
            serial,
            output,
            output_complete,
            exit_code: if timed_out { -1 } else { exit_code },
            duration,
            boot,
            timed_out,
            qemu_stderr: std::fs::read_to_string(&stderr_path).unwrap_or_default(),
        }
    }

    fn build_initramfs(&self, out: &Path, tmp: &Path) -> Result<(), String> {
        let mut img = Image::default();
        img.add(Path::new("/dev"), Node::Dir(0o755));
        img.add(
            Path::new("/dev/console"),
            Node::CharDev {
                mode: 0o600,
                major: 5,
                minor: 1,
            },
        );
        // The host's merged-/usr links, so paths look as on the host.
        for top in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
            if let Ok(target) = std::fs::read_link(top) {
                img.add(
                    Path::new(top),
                    Node::Symlink(target.to_string_lossy().into_owned()),
                );
            }
        }
        img.mirror_host(Path::new("/bin/busybox"), 0)?;
        let list = Command::new("/bin/busybox")
            .arg("--list-full")
            .output()
            .map_err(|e| format!("/bin/busybox --list-full: {e}"))?;
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            let path = Path::new("/").join(applet.trim());
            if applet.trim().is_empty() || img.get(&path).is_some() {
                continue;
            }
            img.add(&path, Node::Symlink("/bin/busybox".into()));
        }
        for dir in [
            "/proc",
            "/sys",
            "/tmp",
            "/run",
            "/root",
            "/etc",
            "/var/tmp",
            "/usr/local/bin",
            VM_DIR,
        ] {
            img.add(Path::new(dir), Node::Dir(0o755));
        }
        for (path, text) in [
            ("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"),
            ("/etc/group", "root:x:0:\nnogroup:x:65534:\n"),
            ("/etc/hostname", "rauha-vm\n"),
            ("/etc/hosts", "127.0.0.1 localhost rauha-vm\n::1 localhost\n"),
            ("/etc/nsswitch.conf", "passwd: files\ngroup: files\nhosts: files\n"),
        ] {
            img.add(Path::new(path), Node::bytes(text.as_bytes().to_vec(), 0o644));
        }

        let strip_dir = target_dir().join("vm/stripped");
        for (host, guest) in &self.binaries {
            let meta = std::fs::metadata(host).map_err(|e| format!("{}: {e}", host.display()))?;
            if !meta.is_file() {
                return Err(format!("{} is not a file", host.display()));
            }
            for lib in shared_libraries(host)? {
                img.mirror_host(&lib, 0)?;
            }
            let source = if self.strip {
                stripped(host, &strip_dir, tmp)
            } else {
                host.clone()
            };
            img.add(
                Path::new(guest),
                Node::File {
                    source: Source::Host(source),
                    mode: meta.permissions().mode() & 0o7777 | 0o500,
                },
            );
        }

        let modules = self.resolve_modules()?;
        let mut order = String::new();
        for (name, path) in &modules {
            img.add(
                &Path::new(VM_DIR).join(format!("modules/{name}.ko")),
                Node::File {
                    source: Source::Host(path.clone()),
                    mode: 0o644,
                },
            );
            order.push_str(name);
            order.push('\n');
        }
        img.add(
            &Path::new(VM_DIR).join("modules.order"),
            Node::bytes(order.into_bytes(), 0o644),
        );

        img.add(
            Path::new("/init"),
            Node::bytes(STAGE1.as_bytes().to_vec(), 0o755),
        );
        img.add(
            &Path::new(VM_DIR).join("init"),
            Node::bytes(STAGE2.as_bytes().to_vec(), 0o755),
        );
        let mut script = String::from(SCRIPT_PRELUDE);
        script.push_str(&self.script);
        script.push('\n');
        img.add(
            &Path::new(VM_DIR).join("script"),
            Node::bytes(script.into_bytes(), 0o755),
        );
        for (path, bytes, mode) in &self.files {
            img.add(Path::new(path), Node::bytes(bytes.clone(), *mode));
        }
        img.write_newc(out)
            .map_err(|e| format!("{}: {e}", out.display()))
    }

    /// The requested modules and their dependencies, dependencies first.
    fn resolve_modules(&self) -> Result<Vec<(String, PathBuf)>, String> {
        if self.modules.is_empty() {
            return Ok(Vec::new());
        }
        let version = kernel_version().ok_or("the VM kernel's version file is missing")?;
        let root = kernel_dir().join("tree/lib/modules").join(&version);
        let mut index = BTreeMap::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir)
                .map_err(|e| format!("{}: {e}", dir.display()))?
                .flatten()
            {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if let Some(name) = p.file_name().and_then(|n| n.to_str()) {
                    if let Some(stem) = name.strip_suffix(".ko") {
                        index.insert(stem.replace('-', "_"), p.clone());
                    }
                }
            }
        }
        let mut out: Vec<(String, PathBuf)> = Vec::new();
        fn visit(
            name: &str,
            index: &BTreeMap<String, PathBuf>,
            out: &mut Vec<(String, PathBuf)>,
            depth: usize,
        ) -> Result<(), String> {
            let key = name.replace('-', "_");
            if out.iter().any(|(n, _)| *n == key) {
                return Ok(());
            }
            if depth > 32 {
                return Err(format!("module dependency loop at {name}"));
            }
            let path = index.get(&key).ok_or_else(|| {
                format!("no module {name}.ko in the VM kernel package (built in, or not built?)")
            })?;
            let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            for dep in modinfo_depends(&bytes) {
                visit(&dep, index, out, depth + 1)?;
            }
            out.push((key, path.clone()));
            Ok(())
        }
        for m in &self.modules {
            visit(m, &index, &mut out, 0)?;
        }
        Ok(out)
    }
}

/// `depends=a,b` from a module's `.modinfo` strings.
fn modinfo_depends(ko: &[u8]) -> Vec<String> {
    ko.split(|b| *b == 0)
        .filter_map(|s| s.strip_prefix(b"depends="))
        .flat_map(|s| {
            String::from_utf8_lossy(s)
                .split(',')
                .filter(|d| !d.is_empty())
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn parse_exit(serial: &str) -> Option<i32> {
    let at = serial.rfind(EXIT_MARKER)? + EXIT_MARKER.len();
    let digits: String = serial[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// The libraries and loader `ldd` lists for a binary (none for a static
/// one).
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, String> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| format!("ldd {}: {e}", binary.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // "not a dynamic executable" / "statically linked".
        return Ok(Vec::new());
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.contains("not found") {
            return Err(format!("ldd {}: {line}", binary.display()));
        }
        let path = match line.split_once("=>") {
            Some((_, right)) => right.trim(),
            None => line,
        };
        let path = path.split(" (").next().unwrap_or("").trim();
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// A copy of `host` without debug info, cached under `cache` by size and
/// mtime; the original when `strip` is missing or fails.
fn stripped(host: &Path, cache: &Path, tmp: &Path) -> PathBuf {
    let Ok(meta) = std::fs::metadata(host) else {
        return host.to_path_buf();
    };
    let name = host
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "bin".into());
    let key = format!(
        "{name}@{}-{}.{}",
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec()
    );
    let cached = cache.join(&key);
    if cached.is_file() {
        return cached;
    }
    let dir = if std::fs::create_dir_all(cache).is_ok() {
        cache
    } else {
        tmp
    };
    let partial = dir.join(format!(".{key}.{}", uuid::Uuid::new_v4().simple()));
    let ok = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&partial)
        .arg(host)
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        let _ = std::fs::remove_file(&partial);
        return host.to_path_buf();
    }
    let target = dir.join(&key);
    if std::fs::rename(&partial, &target).is_err() {
        return host.to_path_buf();
    }
    // Older copies of the same binary are of no further use.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n != key && n.starts_with(&format!("{name}@")) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    target
}

/// The temp dir of one run, removed on drop.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new() -> TempDir {
        sweep_stale_dirs();
        let tag = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        let pid = std::process::id();
        let path = std::env::temp_dir().join(format!("rauha-vm-{pid}-{tag}"));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        TempDir { path }
    }
}

/// Removes the temp dirs of test processes that were killed (a `kill -9`
/// runs no `Drop`): `rauha-vm-<pid>-<tag>` whose pid is gone.
fn sweep_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("rauha-vm-")
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var("RAUHA_E2E_KEEP").is_err() {
            let _ = std::fs::remove_dir_all(&self.path);
        } else {
            eprintln!("RAUHA_E2E_KEEP: kept {}", self.path.display());
        }
    }
}

/// The QEMU process, killed and reaped on drop.
struct Qemu(Option<Child>);

impl Qemu {
    fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        self.kill();
    }
}

#[derive(Debug, Clone)]
enum Source {
    Bytes(Vec<u8>),
    Host(PathBuf),
}

#[derive(Debug, Clone)]
enum Node {
    Dir(u32),
    File { source: Source, mode: u32 },
    Symlink(String),
    CharDev { mode: u32, major: u32, minor: u32 },
}

impl Node {
    fn bytes(bytes: Vec<u8>, mode: u32) -> Node {
        Node::File {
            source: Source::Bytes(bytes),
            mode,
        }
    }
}

/// An initramfs tree: absolute paths (symlinked directories resolved) to
/// nodes, written as a newc cpio archive.
#[derive(Default)]
struct Image {
    nodes: BTreeMap<PathBuf, Node>,
}

/// `path` without `.` and `..` (lexically; `..` of `/` is `/`).
/// The names along `path` once normalized (`/a/./b/../c` gives `a`, `c`).
fn normal_components(path: &Path) -> Vec<std::ffi::OsString> {
    normalize(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            _ => None,
        })
        .collect()
}

fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

impl Image {
    fn get(&self, path: &Path) -> Option<&Node> {
        self.nodes.get(&self.resolve(path, 0))
    }

    /// `path` with symlinks of the image among its parents followed (the
    /// last component is kept as is).
    fn resolve(&self, path: &Path, depth: usize) -> PathBuf {
        let comps = normal_components(path);
        let mut cur = PathBuf::from("/");
        for (i, comp) in comps.iter().enumerate() {
            let next = cur.join(comp);
            if i + 1 < comps.len() && depth < 40 {
                if let Some(Node::Symlink(target)) = self.nodes.get(&next) {
                    let mut joined = cur.join(target);
                    for rest in &comps[i + 1..] {
                        joined.push(rest);
                    }
                    return self.resolve(&joined, depth + 1);
                }
            }
            cur = next;
        }
        cur
    }

    /// Puts a node at `path`, creating the missing parent directories.
    fn add(&mut self, path: &Path, node: Node) {
        let path = self.resolve(path, 0);
        let mut parent = path.parent().map(Path::to_path_buf);
        let mut missing = Vec::new();
        while let Some(p) = parent {
            if p == Path::new("/") || self.nodes.contains_key(&p) {
                break;
            }
            parent = p.parent().map(Path::to_path_buf);
            missing.push(p);
        }
        for p in missing {
            self.nodes.insert(p, Node::Dir(0o755));
        }
        if matches!(node, Node::Dir(_)) && matches!(self.nodes.get(&path), Some(Node::Dir(_))) {
            return;
        }
        self.nodes.insert(path, node);
    }

    /// Copies a host file to the same path, recreating the host's symlinks
    /// on the way (`/lib64 -> usr/lib64`, `libfoo.so.1 -> libfoo.so.1.2`).
    fn mirror_host(&mut self, host: &Path, depth: usize) -> Result<(), String> {
        if depth > 40 {
            return Err(format!("too many symlinks at {}", host.display()));
        }
        let comps = normal_components(host);
        let mut cur = PathBuf::from("/");
        for (i, comp) in comps.iter().enumerate() {
            let next = cur.join(comp);
            let meta =
                std::fs::symlink_metadata(&next).map_err(|e| format!("{}: {e}", next.display()))?;
            if meta.file_type().is_symlink() {
                let target =
                    std::fs::read_link(&next).map_err(|e| format!("{}: {e}", next.display()))?;
                if !self.nodes.contains_key(&next) {
                    self.nodes.insert(
                        next.clone(),
                        Node::Symlink(target.to_string_lossy().into_owned()),
                    );
                }
                let mut joined = cur.join(&target);
                for rest in &comps[i + 1..] {
                    joined.push(rest);
                }
                return self.mirror_host(&joined, depth + 1);
            } else if meta.is_dir() {
                self.nodes
                    .entry(next.clone())
                    .or_insert(Node::Dir(meta.permissions().mode() & 0o7777));
            } else {
                self.add(
                    &next,
                    Node::File {
                        source: Source::Host(next.clone()),
                        mode: meta.permissions().mode() & 0o7777,
                    },
                );
                return Ok(());
            }
            cur = next;
        }
        Ok(())
    }

    /// The tree as a newc ("070701") cpio archive, parents before children.
    fn write_newc(&self, out: &Path) -> io::Result<()> {
        let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(out)?);
        let mut ino = 1u32;
        for (path, node) in &self.nodes {
            let name = path.to_string_lossy();
            let name = name.trim_start_matches('/');
            if name.is_empty() {
                continue;
            }
            ino += 1;
            match node {
                Node::Dir(mode) => {
                    header(&mut w, ino, 0o040000 | mode, 2, 0, (0, 0), name)?;
                }
                Node::Symlink(target) => {
                    let data = target.as_bytes();
                    header(&mut w, ino, 0o120777, 1, data.len() as u32, (0, 0), name)?;
                    w.write_all(data)?;
                    pad(&mut w, data.len())?;
                }
                Node::CharDev { mode, major, minor } => {
                    header(&mut w, ino, 0o020000 | mode, 1, 0, (*major, *minor), name)?;
                }
                Node::File { source, mode } => match source {
                    Source::Bytes(data) => {
                        header(
                            &mut w,
                            ino,
                            0o100000 | mode,
                            1,
                            data.len() as u32,
                            (0, 0),
                            name,
                        )?;
                        w.write_all(data)?;
                        pad(&mut w, data.len())?;
                    }
                    Source::Host(p) => {
                        let mut f = std::fs::File::open(p).map_err(|e| {
                            io::Error::new(e.kind(), format!("{}: {e}", p.display()))
                        })?;
                        let len = f.metadata()?.len();
                        let len32 = u32::try_from(len).map_err(|_| {
                            io::Error::other(format!("{} is over 4 GiB", p.display()))
                        })?;
                        header(&mut w, ino, 0o100000 | mode, 1, len32, (0, 0), name)?;
                        let copied = io::copy(&mut (&mut f).take(len), &mut w)?;
                        if copied != len {
                            return Err(io::Error::other(format!(
                                "{} changed while being copied",
                                p.display()
                            )));
                        }
                        pad(&mut w, len as usize)?;
                    }
                },
            }
        }
        header(&mut w, 0, 0, 1, 0, (0, 0), "TRAILER!!!")?;
        w.flush()
    }
}

/// One newc header and its name, padded to 4 bytes.
fn header(
    w: &mut impl Write,
    ino: u32,
    mode: u32,
    nlink: u32,
    size: u32,
    rdev: (u32, u32),
    name: &str,
) -> io::Result<()> {
    let namesize = name.len() + 1;
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        size,
        0, // devmajor
        0, // devminor
        rdev.0,
        rdev.1,
        namesize as u32,
        0, // check
    ];
    let mut h = String::with_capacity(110);
    h.push_str("070701");
    for f in fields {
        h.push_str(&format!("{f:08x}"));
    }
    w.write_all(h.as_bytes())?;
    w.write_all(name.as_bytes())?;
    w.write_all(&[0])?;
    pad(w, 110 + namesize)
}

fn pad(w: &mut impl Write, len: usize) -> io::Result<()> {
    let n = (4 - len % 4) % 4;
    w.write_all(&[0u8; 3][..n])
}

/// `/init` on the initramfs: the rootfs cannot be `pivot_root`ed away from
/// (zones need that), so copy everything onto a tmpfs and switch to it.
const STAGE1: &str = r#"#!/bin/busybox sh
B=/bin/busybox
fail() { echo "RAUHA_VM_INIT_FAILED: $*"; $B poweroff -f; }
$B mkdir -p /newroot
$B mount -t tmpfs -o mode=0755,size=90% rootfs /newroot || fail "tmpfs root"
for e in /*; do
  [ "$e" = /newroot ] && continue
  $B cp -a "$e" /newroot/ || fail "copy $e"
done
$B mkdir -p /newroot/dev
$B mount -t devtmpfs devtmpfs /newroot/dev || fail devtmpfs
exec $B switch_root /newroot /rauha-vm/init
"#;

/// PID 1 after `switch_root`: mounts, then the script, then power off.
const STAGE2: &str = r#"#!/bin/sh
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
fail() { echo "RAUHA_VM_INIT_FAILED: $*"; poweroff -f; sleep 10; }
mount -t proc proc /proc || fail proc
mount -t sysfs sysfs /sys || fail sysfs
[ -c /dev/null ] || mount -t devtmpfs devtmpfs /dev || fail devtmpfs
mkdir -p /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts || fail devpts
mount -t tmpfs -o mode=1777 shm /dev/shm || fail /dev/shm
mount -t cgroup2 -o nsdelegate,memory_recursiveprot cgroup2 /sys/fs/cgroup || fail cgroup2
echo "+cpu +memory +pids" > /sys/fs/cgroup/cgroup.subtree_control || fail "cgroup.subtree_control"
mount -t bpf bpf /sys/fs/bpf || fail bpffs
mount -t securityfs securityfs /sys/kernel/security || fail securityfs
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
mount -t tmpfs -o mode=1777 tmpfs /tmp || fail /tmp
mount -t tmpfs -o mode=0755 tmpfs /run || fail /run
ip link set lo up || fail "lo up"
hostname rauha-vm
while read -r m; do
  [ -n "$m" ] || continue
  insmod "/rauha-vm/modules/$m.ko" || fail "insmod $m"
done < /rauha-vm/modules.order
stty -F /dev/ttyS1 raw -echo || fail "stty ttyS1"
exec 3>/dev/ttyS1
echo "RAUHA_VM_READY uptime=$(cut -d' ' -f1 /proc/uptime)"
cd /
sh -e /rauha-vm/script </dev/null >&3 2>&3
rc=$?
# Nothing the script started outlives it; the port is then drained by us.
kill -KILL -1 2>/dev/null
sleep 0.05
echo "RAUHA_VM_OUTPUT_END" >&3
stty -F /dev/ttyS1 raw -echo
exec 3>&-
echo "RAUHA_VM_EXIT=$rc uptime=$(cut -d' ' -f1 /proc/uptime)"
stty -F /dev/console opost onlcr 2>/dev/null
poweroff -f
sleep 10
"#;

/// Helpers for the test script.
const SCRIPT_PRELUDE: &str = r#"# section NAME cmd [args]: frames cmd's output for VmOutput::section.
section() {
  _n=$1; shift
  echo "@@RAUHA_SECTION_BEGIN $_n@@"
  _rc=0; "$@" || _rc=$?
  echo "@@RAUHA_SECTION_END $_n@@"
  return $_rc
}
"#;

/// A guest script fragment: starts rauhad (with `extra` flags) on
/// `/var/lib/rauha`, its log in /tmp/rauhad.log, waits for its socket, and
/// points the CLI at it. `$rauhad` is its pid.
pub fn start_rauhad(extra: &str) -> String {
    format!(
        r#"
mkdir -p /var/lib/rauha /run/rauha
rm -f /run/rauha/rauhad.sock
rauhad --root /var/lib/rauha --socket /run/rauha/rauhad.sock --cgroup-parent rauha-vm {extra} 2>>/tmp/rauhad.log &
rauhad=$!
i=0
while [ ! -S /run/rauha/rauhad.sock ]; do
  i=$((i+1))
  if [ $i -gt 600 ] || ! kill -0 $rauhad 2>/dev/null; then
    echo "rauhad did not listen"
    section rauhad_log cat /tmp/rauhad.log
    exit 1
  fi
  sleep 0.1
done
export RAUHA_ADDR=unix:///run/rauha/rauhad.sock
"#
    )
}
