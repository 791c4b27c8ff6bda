//! `rauha-node`, the node side of the Helm chart: from a DaemonSet pod
//! (privileged, `hostPID`) it installs Rauha's binaries onto the host,
//! registers the `rauha` handler with containerd, runs rauhad in the
//! host's namespaces, labels the node while rauhad answers, and undoes all
//! of it when the DaemonSet itself is deleted (`helm uninstall`).

pub mod containerd;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The node label the RuntimeClass selects: set while rauhad answers.
pub const READY_LABEL: &str = "rauha.dev/ready";
/// The enforcement rauhad reports (`rauha info`), for Zones' status.
pub const ENFORCEMENT_ANNOTATION: &str = "rauha.dev/enforcement";
pub const ENFORCEMENT_SCORE_ANNOTATION: &str = "rauha.dev/enforcement-score";
/// Why a node pod could not take Rauha off its node at uninstall (the
/// uninstall hook reports it).
pub const UNINSTALL_FAILED_ANNOTATION: &str = "rauha.dev/uninstall-failed";

/// The binaries the node image carries and the host gets.
pub const BINARIES: [&str; 4] = [
    "rauhad",
    "rauha",
    "rauha-guest-agent",
    "containerd-shim-rauha-v2",
];

/// Copies `name` from `from` into `to` unless the same bytes are there:
/// written beside it and renamed over it, so a running shim or rauhad
/// keeps its old file and a reader never sees half of one. Returns whether
/// it changed.
pub fn install_file(from: &Path, to: &Path, mode: u32) -> std::io::Result<bool> {
    write_if_changed(to, &std::fs::read(from)?, mode)
}

/// Writes `bytes` to `to` (atomically) unless it holds them already with
/// that mode. Returns whether it changed.
pub fn write_if_changed(to: &Path, bytes: &[u8], mode: u32) -> std::io::Result<bool> {
    if std::fs::read(to).ok().as_deref() == Some(bytes) {
        let perms = std::fs::metadata(to)?.permissions();
        if perms.mode() & 0o7777 == mode {
            return Ok(false);
        }
    }
    write_atomically(to, bytes, mode)?;
    Ok(true)
}

/// Writes `bytes` to `to` through a temporary file beside it (fsynced,
/// then renamed).
pub fn write_atomically(to: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = to.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir)?;
    let name = to
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.rauha-new"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, to)?;
    Ok(())
}

/// The shim's configuration file: the pod policy of a pod that names none.
pub fn shim_config(pod_policy: &str) -> String {
    format!(
        "# Written by Rauha's node DaemonSet (the chart's node.podPolicy).\npod_policy = {pod_policy:?}\n"
    )
}

/// The process whose namespaces are the host's: `init` (PID 1), or
/// `kubelet` (the kubelet runs in the host's namespaces on every node; a
/// host whose init holds capabilities the pod lacks, as a sandbox's init
/// may, refuses access to PID 1's namespaces).
pub fn host_process(of: &str) -> anyhow::Result<u32> {
    match of {
        "init" => Ok(1),
        "kubelet" => {
            let mut pids: Vec<u32> = std::fs::read_dir("/proc")?
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .filter(|pid: &u32| {
                    std::fs::read_to_string(format!("/proc/{pid}/comm"))
                        .is_ok_and(|c| c.trim_end() == "kubelet")
                })
                .collect();
            pids.sort();
            pids.first().copied().ok_or_else(|| {
                anyhow::anyhow!("no kubelet process is visible (the pod needs hostPID)")
            })
        }
        other => anyhow::bail!("{other:?} is neither init nor kubelet (node.hostNamespacesOf)"),
    }
}

/// Enters the cgroup, IPC, UTS, network and mount namespaces of `pid`
/// (the host's, from a `hostPID` pod); the caller must be single-threaded.
/// The user and PID namespaces are the host's already (no user namespace,
/// and `hostPID`): they are checked, not entered.
pub fn enter_host_namespaces(pid: u32) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;
    for ns in ["user", "pid"] {
        let host = std::fs::metadata(format!("/proc/{pid}/ns/{ns}"));
        let own = std::fs::metadata(format!("/proc/self/ns/{ns}"));
        match (host, own) {
            (Ok(h), Ok(o)) if std::os::unix::fs::MetadataExt::ino(&h) == std::os::unix::fs::MetadataExt::ino(&o) => {}
            (Err(e), _) => anyhow::bail!(
                "cannot read /proc/{pid}/ns/{ns}: {e} (the pod must be privileged; where the host's init refuses it, set node.hostNamespacesOf=kubelet)"
            ),
            _ => anyhow::bail!(
                "this pod is not in the host's {ns} namespace: the node DaemonSet needs hostPID and no user namespace (hostUsers: true)"
            ),
        }
    }
    // Open every one first: once in the host's mount namespace, /proc is
    // the host's (the same PID namespace, so the same paths).
    let mut files = Vec::new();
    for ns in ["cgroup", "ipc", "uts", "net", "mnt"] {
        let f = std::fs::File::open(format!("/proc/{pid}/ns/{ns}")).map_err(|e| {
            anyhow::anyhow!("cannot open /proc/{pid}/ns/{ns}: {e} (the pod must be privileged)")
        })?;
        files.push((ns, f));
    }
    for (ns, f) in &files {
        // SAFETY: setns on a descriptor this function owns.
        if unsafe { libc::setns(f.as_raw_fd(), 0) } != 0 {
            anyhow::bail!(
                "cannot enter the host's {ns} namespace: {} (the pod must be privileged)",
                std::io::Error::last_os_error()
            );
        }
    }
    std::env::set_current_dir("/")?;
    Ok(())
}

/// The cgroup rauhad runs in, beside its zones' parent: out of the node
/// pod's cgroups, so that stopping the pod (which kills what is left in
/// its cgroups, a `hostPID` container having no PID namespace to end)
/// leaves the zones' agents alone, as a host service's would be.
pub fn daemon_cgroup(cgroup_parent: &str) -> String {
    format!("{}-daemon", cgroup_parent.trim_end_matches('/'))
}

/// The cgroup hierarchies under `root`: `root` itself on a pure cgroup v2
/// host, else each mounted hierarchy below it (v1 controllers, the named
/// systemd one, and the unified one of a hybrid host).
pub fn hierarchies(root: &Path) -> Vec<std::path::PathBuf> {
    if root.join("cgroup.procs").exists() {
        return vec![root.to_path_buf()];
    }
    let mut v: Vec<_> = std::fs::read_dir(root)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .filter(|p| p.join("cgroup.procs").exists())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Moves this process into cgroup `path` (relative to each hierarchy's
/// root) in every hierarchy, making it where missing (a v1 cpuset cgroup
/// gets its parent's CPUs and memory nodes first, or it takes no task).
pub fn move_to_cgroup(root: &Path, path: &str) -> anyhow::Result<()> {
    for h in hierarchies(root) {
        let cg = h.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(&cg)
            .map_err(|e| anyhow::anyhow!("cannot make cgroup {}: {e}", cg.display()))?;
        for f in ["cpuset.cpus", "cpuset.mems"] {
            let own = std::fs::read_to_string(cg.join(f)).unwrap_or_default();
            if cg.join(f).exists()
                && own.trim().is_empty()
                && !h.join("cgroup.controllers").exists()
            {
                let parent = cg.parent().map(|p| p.join(f)).unwrap_or_default();
                let value = std::fs::read_to_string(&parent).unwrap_or_default();
                std::fs::write(cg.join(f), value.trim())
                    .map_err(|e| anyhow::anyhow!("cannot set {}: {e}", cg.join(f).display()))?;
            }
        }
        std::fs::write(cg.join("cgroup.procs"), "0")
            .map_err(|e| anyhow::anyhow!("cannot move into cgroup {}: {e}", cg.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_replaced_only_when_its_bytes_or_mode_differ() {
        let dir = std::env::temp_dir().join(format!("rauha-node-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (from, to) = (dir.join("from"), dir.join("sub/to"));
        std::fs::write(&from, b"one").unwrap();
        assert!(install_file(&from, &to, 0o755).unwrap());
        assert!(!install_file(&from, &to, 0o755).unwrap());
        assert!(install_file(&from, &to, 0o700).unwrap());
        std::fs::write(&from, b"two").unwrap();
        assert!(install_file(&from, &to, 0o700).unwrap());
        assert_eq!(std::fs::read(&to).unwrap(), b"two");
        assert_eq!(
            std::fs::metadata(&to).unwrap().permissions().mode() & 0o7777,
            0o700
        );
        let names: Vec<_> = std::fs::read_dir(dir.join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["to"], "no temporary file left");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rauhads_cgroup_is_a_sibling_of_the_zones_parent() {
        assert_eq!(daemon_cgroup("rauha"), "rauha-daemon");
        assert_eq!(daemon_cgroup("a/rauha/"), "a/rauha-daemon");
    }

    #[test]
    fn hierarchies_are_the_root_on_v2_and_each_mounted_one_on_v1() {
        let dir = std::env::temp_dir().join(format!("rauha-node-cg-{}", std::process::id()));
        for d in ["memory", "pids", "unified", "not-a-hierarchy"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        for d in ["memory", "pids", "unified"] {
            std::fs::write(dir.join(d).join("cgroup.procs"), "").unwrap();
        }
        assert_eq!(
            hierarchies(&dir),
            ["memory", "pids", "unified"].map(|d| dir.join(d))
        );
        std::fs::write(dir.join("cgroup.procs"), "").unwrap();
        assert_eq!(hierarchies(&dir), vec![dir.clone()]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_shim_config_names_the_pod_policy_as_toml() {
        let t: toml::Table = shim_config("restricted").parse().unwrap();
        assert_eq!(t["pod_policy"].as_str(), Some("restricted"));
    }
}
