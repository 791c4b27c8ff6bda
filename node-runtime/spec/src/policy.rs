//! The zone policy: a TOML document with `[zone]`, `[capabilities]`,
//! `[resources]`, `[network]`, `[filesystem]`, `[syscalls]` and `[task]`.
//!
//! Parsing happens in two passes over one serde shape. serde rejects unknown
//! keys, wrong types and malformed sizes or durations (each error carries the
//! byte span of the offending value); [`Policy::validate`] then checks the
//! combinations. Both passes report `file:line: key: what is wrong; the fix`.

use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::names::{self, capability_number, syscall_number, FORBIDDEN_CAPABILITIES};

/// A whole policy. Every section is optional in the file; an omitted section
/// takes the defaults below, which are the `standard` preset's safe values.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    pub zone: ZoneSection,
    pub capabilities: CapabilitiesSection,
    pub resources: ResourcesSection,
    pub network: NetworkSection,
    pub filesystem: FilesystemSection,
    pub syscalls: SyscallsSection,
    pub task: TaskSection,
    /// For a pod's zone: how its OCI spec is held (absent in zone and task
    /// policies).
    #[serde(skip_serializing_if = "PodSection::is_empty")]
    pub pod: PodSection,
}

/// `[pod]`: a pod policy. Its containers get what their OCI spec asks
/// (capabilities, `noNewPrivileges`, seccomp profile), held to the Pod
/// Security Standard `security` names; `capabilities.allowed` is then the
/// ceiling of what a spec may ask, and `syscalls.deny` applies to a
/// container whose spec gives no seccomp profile (under `baseline` and
/// `restricted`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PodSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security: Option<crate::pod_security::Level>,
}

impl PodSection {
    pub fn is_empty(&self) -> bool {
        self.security.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ZoneSection {
    /// The policy's own name (presets set it); not the zone's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub zone_type: ZoneType,
    /// Hostname inside the zone; defaults to the zone's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Run the zone's processes in a user namespace of their own, whose
    /// root is an unprivileged host uid (true when omitted). A pod's zone
    /// follows the pod's `hostUsers` instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_namespace: Option<bool>,
    /// Sysctls set in the zone's own namespaces (`net.*`, the IPC ones,
    /// `fs.mqueue.*`): a pod's `securityContext.sysctls`.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub sysctls: std::collections::BTreeMap<String, String>,
    /// Share the host's IPC namespace (its System V objects and POSIX
    /// message queues) instead of one of the zone's own: a pod's
    /// `hostIPC`, which only the `privileged` pod policy lets through.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub host_ipc: bool,
    /// Share the host's PID namespace (the zone's processes see, and are
    /// seen by, every process of the host; the zone's agent is not its
    /// PID 1): a pod's `hostPID`, which only the `privileged` pod policy
    /// lets through.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub host_pid: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ZoneType {
    #[default]
    NonGlobal,
    /// The host itself: named so a policy that asks for it gets a clear error.
    Global,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CapabilitiesSection {
    /// Capabilities kept by the zone's processes; all others are dropped.
    pub allowed: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ResourcesSection {
    /// Relative CPU weight (cgroup v1 `cpu.shares` scale, 2-262144).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_shares: Option<u64>,
    /// Hard CPU limit in cores (`0.5`, `2`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_limit: Option<f64>,
    /// Memory limit (`512Mi`, `4Gi`).
    #[serde(with = "size_serde", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub memory_limit: Option<u64>,
    /// Most processes and threads the zone may hold at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids_max: Option<u64>,
    /// Most bytes the zone's workspace may hold on the host's disk (its
    /// copy-on-write layer: `512Mi`, `4Gi`); past it a write fails with
    /// ENOSPC in the zone. [`DEFAULT_DISK_LIMIT`] when unset.
    #[serde(with = "size_serde", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub disk_limit: Option<u64>,
}

/// An omitted `[resources]` section, or key, takes the `standard`
/// preset's value: a policy that says nothing of memory or processes
/// still gets a limit.
impl Default for ResourcesSection {
    fn default() -> Self {
        Self {
            cpu_shares: Some(1024),
            cpu_limit: None,
            memory_limit: Some(1 << 30),
            pids_max: Some(512),
            disk_limit: Some(DEFAULT_DISK_LIMIT),
        }
    }
}

/// A zone's disk limit when its policy sets none.
pub const DEFAULT_DISK_LIMIT: u64 = 4 << 30;
/// The least disk limit a workspace's filesystem can be made with.
pub const MIN_DISK_LIMIT: u64 = 16 << 20;

impl ResourcesSection {
    /// No value set at all (not even the defaults): what a container
    /// inside a zone starts from, its limits only those its spec gives.
    pub fn unset() -> Self {
        Self {
            cpu_shares: None,
            cpu_limit: None,
            memory_limit: None,
            pids_max: None,
            disk_limit: None,
        }
    }

    /// The disk limit in force: the policy's, or [`DEFAULT_DISK_LIMIT`].
    pub fn disk_limit_or_default(&self) -> u64 {
        self.disk_limit.unwrap_or(DEFAULT_DISK_LIMIT)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkMode {
    /// A network namespace with only loopback, up.
    #[default]
    Loopback,
    /// A network namespace with no interface up at all.
    None,
    /// An address on the node's bridge (rauhad's `--bridge`), a veth of
    /// its own, egress masqueraded and limited to `allowed_egress` and
    /// `allowed_egress_domains`, names resolved by rauhad.
    Bridged,
    /// The network namespace named when the zone is created (a pod's,
    /// set up by CNI); egress is limited to `allowed_egress`.
    Joined,
    /// The host's network namespace: every interface of the host and
    /// everything listening on its loopback. Only under a pod policy of
    /// the privileged level (as Kubernetes' hostNetwork), and reported as
    /// a weaker namespaces layer; `allowed_egress` still holds connects.
    Host,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkSection {
    pub mode: NetworkMode,
    /// Zones this zone may connect to.
    pub allowed_zones: Vec<String>,
    /// Egress destinations as `CIDR:port` (`0.0.0.0/0:443`).
    pub allowed_egress: Vec<String>,
    /// Domains the zone may resolve (through rauhad's resolver only) and
    /// then reach, for the answer's TTL: `pypi.org`, `*.pythonhosted.org:443`.
    /// Bridged zones only.
    pub allowed_egress_domains: Vec<String>,
    /// Zone ports reachable from the host: `[HOST_IP:]HOST_PORT:ZONE_PORT[/tcp|udp]`,
    /// on 127.0.0.1 unless an address is given. Bridged zones only.
    pub publish: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct FilesystemSection {
    /// Host paths the zone sees read-only (host-view zones).
    pub readable_paths: Vec<String>,
    /// Host paths the zone may change. `/tmp` is always a private, empty tmpfs.
    pub writable_paths: Vec<String>,
    /// Paths hidden inside the zone even when a readable path contains them.
    pub denied_paths: Vec<String>,
}

/// What a host-view zone reads when its policy lists nothing.
pub const DEFAULT_READABLE_PATHS: &[&str] = &["/usr", "/bin", "/sbin", "/lib", "/lib64", "/etc"];

impl Default for FilesystemSection {
    fn default() -> Self {
        Self {
            readable_paths: DEFAULT_READABLE_PATHS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            writable_paths: vec!["/tmp".into()],
            denied_paths: vec![
                "/etc/shadow".into(),
                "/etc/gshadow".into(),
                "/etc/sudoers".into(),
                "/etc/ssh".into(),
                "/etc/ssl/private".into(),
            ],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SyscallsSection {
    /// System calls that fail with EPERM inside the zone.
    pub deny: Vec<String>,
}

/// What a policy denies when it has no `[syscalls]` section: the
/// `standard` preset's list (`unshare` in it also denies `clone`'s
/// namespace flags). A policy that wants none says `deny = []`.
pub const STANDARD_DENIED_SYSCALLS: &[&str] = &[
    "mount",
    "umount2",
    "pivot_root",
    "swapon",
    "swapoff",
    "reboot",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "bpf",
    "perf_event_open",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "keyctl",
    "add_key",
    "request_key",
    "unshare",
    "setns",
    "open_by_handle_at",
    "name_to_handle_at",
    "userfaultfd",
    "acct",
    "settimeofday",
    "clock_settime",
    "adjtimex",
    "syslog",
    "quotactl",
    "lookup_dcookie",
    "fanotify_init",
    "fsopen",
    "fsmount",
    "fsconfig",
    "move_mount",
    "open_tree",
    "mount_setattr",
];

impl Default for SyscallsSection {
    fn default() -> Self {
        Self {
            deny: STANDARD_DENIED_SYSCALLS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TaskSection {
    /// Wall-clock limit of a task (`30s`, `10m`); none when omitted.
    #[serde(
        with = "duration_serde",
        skip_serializing_if = "Option::is_none",
        default
    )]
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Duration>,
    /// Most bytes of stdout and of stderr kept in a result (default 1Mi each).
    #[serde(with = "size_serde", skip_serializing_if = "Option::is_none", default)]
    #[schemars(with = "Option<String>")]
    pub max_output: Option<u64>,
    /// Workspace paths a commit holds back (relative, `/`-separated; a
    /// directory holds back everything under it): they are listed in the
    /// result, marked held back, and never applied. `[".git"]` when
    /// omitted (a hook or a `core.fsmonitor` is code the host runs);
    /// `[]` commits everything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_back: Option<Vec<String>>,
    /// Most workspace changes a result lists (and a commit applies);
    /// beyond, they are counted in `files_changed_unlisted` and a commit
    /// is refused. [`DEFAULT_MAX_CHANGES`] when omitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_changes: Option<u64>,
}

/// What a commit holds back when the policy says nothing.
pub const DEFAULT_HOLD_BACK: &[&str] = &[".git"];
/// Most changes a result lists when the policy says nothing.
pub const DEFAULT_MAX_CHANGES: u64 = 10_000;

impl TaskSection {
    /// Most changes a result lists.
    pub fn max_changes_or_default(&self) -> u64 {
        self.max_changes.unwrap_or(DEFAULT_MAX_CHANGES)
    }

    /// The paths a commit holds back.
    pub fn hold_back(&self) -> Vec<String> {
        match &self.hold_back {
            Some(list) => list.clone(),
            None => DEFAULT_HOLD_BACK.iter().map(|p| p.to_string()).collect(),
        }
    }
}

/// Whether workspace path `path` is `entry` or below it.
pub fn under(path: &str, entry: &str) -> bool {
    let entry = entry.trim_end_matches('/');
    path == entry
        || path
            .strip_prefix(entry)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Default cap on each of stdout and stderr in a result.
pub const DEFAULT_MAX_OUTPUT: u64 = 1 << 20;
/// The largest policy file, in bytes: a policy is a page of TOML.
pub const MAX_POLICY_BYTES: usize = 1 << 20;

/// System calls a policy may not deny: without them no program starts or ends.
const ESSENTIAL_SYSCALLS: &[&str] = &["execve", "exit", "exit_group", "rt_sigreturn", "wait4"];

/// The least memory a zone can start with.
const MIN_MEMORY: u64 = 4 << 20;
/// The least `pids_max`: the zone agent and its launcher, plus room for work.
const MIN_PIDS: u64 = 4;

/// A policy that cannot be used, located in its file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyError {
    pub file: String,
    /// 1-based; 0 when the problem has no line (an empty file).
    pub line: usize,
    /// Dotted key (`resources.memory_limit`); empty for a syntax error.
    pub key: String,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl Policy {
    /// Parses and validates a policy; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Policy, PolicyError> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(PolicyError {
                file: file.to_string(),
                line: 0,
                key: String::new(),
                message: format!(
                    "is {} bytes, over the {MAX_POLICY_BYTES} bytes a policy may be; a policy is a short TOML file",
                    text.len()
                ),
            });
        }
        let mut policy: Policy =
            toml::from_str(text).map_err(|e| from_toml_error(file, text, &e))?;
        if policy.pod.security.is_some() {
            // A pod's zone is held by the pod's limits (its spec's, and
            // the kubelet's pod cgroup it is made in), as under runc: a
            // memory or process limit the pod policy leaves out is none of
            // the zone's own, not `standard`'s.
            let given = toml::from_str::<toml::Table>(text)
                .ok()
                .and_then(|t| t.get("resources").and_then(|r| r.as_table()).cloned())
                .unwrap_or_default();
            if !given.contains_key("memory_limit") {
                policy.resources.memory_limit = None;
            }
            if !given.contains_key("pids_max") {
                policy.resources.pids_max = None;
            }
        }
        policy.validate().map_err(|(key, message)| PolicyError {
            file: file.to_string(),
            line: locate_key(text, &key),
            key,
            message,
        })?;
        Ok(policy)
    }

    /// For a zone that shows the host's tree: each writable path (other
    /// than /tmp, which the zone gets its own of) is bound from the host,
    /// so it must be there; `exists` asks the host. `file` and `text` are
    /// what the policy was parsed from, to name the line.
    pub fn check_host_paths(
        &self,
        file: &str,
        text: &str,
        exists: impl Fn(&str) -> bool,
    ) -> Result<(), PolicyError> {
        let key = "filesystem.writable_paths";
        match self
            .filesystem
            .writable_paths
            .iter()
            .find(|p| p.as_str() != "/tmp" && !exists(p))
        {
            None => Ok(()),
            Some(missing) => Err(PolicyError {
                file: file.to_string(),
                line: locate_key(text, key),
                key: key.to_string(),
                message: format!(
                    "{} does not exist on the host; create it, or remove it from the list",
                    crate::message::quote(missing)
                ),
            }),
        }
    }

    /// Renders the policy as TOML that [`Policy::parse`] accepts again.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# policy cannot be shown as TOML: {e}\n"))
    }

    /// Checks combinations serde cannot: returns the dotted key and the message.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |key: &str, message: String| Err((key.to_string(), message));
        if self.zone.zone_type == ZoneType::Global {
            return err(
                "zone.type",
                "\"global\" is the host itself and cannot be created; use \"non-global\"".into(),
            );
        }
        if let Some(hostname) = &self.zone.hostname {
            if let Err(e) = names::validate_zone_name(hostname) {
                return err(
                    "zone.hostname",
                    e.to_string().replace("zone name", "hostname"),
                );
            }
        }
        if let Some(n) = self.task.max_changes {
            if !(1..=1_000_000).contains(&n) {
                return err(
                    "task.max_changes",
                    format!("{n} is out of range; use 1 to 1000000 (default 10000)"),
                );
            }
        }
        for entry in self.task.hold_back.iter().flatten() {
            let clean = entry.trim_end_matches('/');
            if clean.is_empty()
                || clean.starts_with('/')
                || clean
                    .split('/')
                    .any(|p| p.is_empty() || p == "." || p == "..")
            {
                return err(
                    "task.hold_back",
                    format!("{} is not a relative path in the workspace; give one such as \".git\" or \".vscode\"", crate::message::quote(entry)),
                );
            }
        }
        for (key, value) in &self.zone.sysctls {
            if !crate::pod_security::namespaced_sysctl(key) {
                return err(
                    "zone.sysctls",
                    format!("{} is not a sysctl of the zone's own namespaces; only net.*, kernel.shm*, kernel.msg*, kernel.sem and fs.mqueue.* can be set", crate::message::quote(key)),
                );
            }
            if key.contains('/') || key.contains("..") || value.contains('\n') {
                return err(
                    "zone.sysctls",
                    format!(
                        "{} = {} is not a sysctl setting",
                        crate::message::quote(key),
                        crate::message::quote(value)
                    ),
                );
            }
        }
        let mut seen = Vec::new();
        for cap in &self.capabilities.allowed {
            let full = if cap.to_ascii_uppercase().starts_with("CAP_") {
                cap.to_ascii_uppercase()
            } else {
                format!("CAP_{}", cap.to_ascii_uppercase())
            };
            if capability_number(&full).is_none() {
                return err(
                    "capabilities.allowed",
                    format!(
                        "{} is not a Linux capability; use a name such as \"CAP_NET_BIND_SERVICE\"",
                        crate::message::quote(cap)
                    ),
                );
            }
            let privileged_pod = self.pod.security == Some(crate::pod_security::Level::Privileged);
            if FORBIDDEN_CAPABILITIES.contains(&full.as_str()) && !privileged_pod {
                return err(
                    "capabilities.allowed",
                    format!("{full} lets a process leave its zone and is granted only to privileged pods ([pod] security = \"privileged\"); remove it"),
                );
            }
            if seen.contains(&full) {
                return err(
                    "capabilities.allowed",
                    format!("{full} is listed twice; list it once"),
                );
            }
            seen.push(full);
        }
        let r = &self.resources;
        if let Some(shares) = r.cpu_shares {
            if !(2..=262_144).contains(&shares) {
                return err(
                    "resources.cpu_shares",
                    format!(
                        "{shares} is out of range; use 2 to 262144 (1024 is one share of the host)"
                    ),
                );
            }
        }
        if let Some(cores) = r.cpu_limit {
            if !(cores > 0.0 && cores <= 1024.0) || cores * 1000.0 < 10.0 {
                return err("resources.cpu_limit", format!("{cores} cores is out of range; use a number of cores from 0.01 to 1024, e.g. 0.5 or 2"));
            }
        }
        if let Some(mem) = r.memory_limit {
            if mem < MIN_MEMORY {
                return err(
                    "resources.memory_limit",
                    format!(
                        "{} is below 4Mi, the least a zone can start with; use 4Mi or more",
                        crate::size::format_size(mem)
                    ),
                );
            }
        }
        if let Some(disk) = r.disk_limit {
            if !(MIN_DISK_LIMIT..=(16u64 << 40)).contains(&disk) {
                return err(
                    "resources.disk_limit",
                    format!(
                        "{} is out of range; use 16Mi to 16Ti, e.g. 512Mi or 4Gi",
                        crate::size::format_size(disk)
                    ),
                );
            }
        }
        if let Some(pids) = r.pids_max {
            if !(MIN_PIDS..=4_194_304).contains(&pids) {
                return err("resources.pids_max", format!("{pids} is out of range; use {MIN_PIDS} to 4194304 (the zone agent counts as 2)"));
            }
        }
        let n = &self.network;
        let routed = matches!(
            n.mode,
            NetworkMode::Joined | NetworkMode::Bridged | NetworkMode::Host
        );
        if !routed && !n.allowed_egress.is_empty() {
            return err("network.allowed_egress", format!("lists destinations but network.mode = {:?} gives the zone no route out; remove allowed_egress or use mode = \"bridged\"", mode_name(n.mode)));
        }
        for (key, list) in [
            ("network.allowed_egress_domains", &n.allowed_egress_domains),
            ("network.publish", &n.publish),
        ] {
            if n.mode != NetworkMode::Bridged && !list.is_empty() {
                let why = if n.mode == NetworkMode::Joined {
                    "needs rauhad's bridge (its resolver and NAT), which a joined namespace (a pod's, made by CNI) does not reach"
                } else {
                    "needs a route out of the zone"
                };
                return err(key, format!("is set but network.mode = {:?}: it {why}; use mode = \"bridged\" or remove {}", mode_name(n.mode), &key["network.".len()..]));
            }
        }
        for rule in &n.allowed_egress_domains {
            if let Err(e) = crate::netrules::DomainRule::parse(rule) {
                return err("network.allowed_egress_domains", e);
            }
        }
        let mut published = std::collections::BTreeSet::new();
        for text in &n.publish {
            match crate::netrules::PortMapping::parse(text) {
                Err(e) => return err("network.publish", e),
                Ok(p) if !published.insert((p.host_ip, p.host_port, p.proto)) => {
                    return err(
                        "network.publish",
                        format!(
                            "{} publishes {}:{}/{} a second time; give each host port once",
                            crate::message::quote(text),
                            p.host_ip,
                            p.host_port,
                            p.proto.as_str()
                        ),
                    );
                }
                Ok(_) => {}
            }
        }
        for rule in &n.allowed_egress {
            if let Err(e) = crate::egress::EgressRule::parse(rule) {
                return err("network.allowed_egress", e);
            }
        }
        for zone in &n.allowed_zones {
            if let Err(e) = names::validate_zone_name(zone) {
                return err("network.allowed_zones", e.to_string());
            }
        }
        let fs = &self.filesystem;
        for (key, paths) in [
            ("filesystem.readable_paths", &fs.readable_paths),
            ("filesystem.writable_paths", &fs.writable_paths),
            ("filesystem.denied_paths", &fs.denied_paths),
        ] {
            for path in paths {
                if let Some(problem) = path_problem(path) {
                    return err(key, format!("{} {problem}", crate::message::quote(path)));
                }
            }
        }
        for path in &fs.writable_paths {
            if path == "/" {
                return err("filesystem.writable_paths", "\"/\" would make the whole host writable; list only the directories the task writes".into());
            }
            if fs.denied_paths.iter().any(|d| d == path) {
                return err(
                    "filesystem.writable_paths",
                    format!(
                        "{} is also in denied_paths; remove it from one of them",
                        crate::message::quote(path)
                    ),
                );
            }
        }
        if fs.readable_paths.iter().any(|p| p == "/") {
            return err(
                "filesystem.readable_paths",
                "\"/\" would show the zone the whole host; list the directories the task reads"
                    .into(),
            );
        }
        for name in &self.syscalls.deny {
            if syscall_number(name).is_none() {
                return err("syscalls.deny", format!("{} is not a system call of this architecture; check the spelling (e.g. \"umount2\")", crate::message::quote(name)));
            }
            if ESSENTIAL_SYSCALLS.contains(&name.as_str()) {
                return err(
                    "syscalls.deny",
                    format!(
                        "{} would stop every program in the zone; remove it",
                        crate::message::quote(name)
                    ),
                );
            }
        }
        if self.task.timeout == Some(Duration::ZERO) {
            return err(
                "task.timeout",
                "0s would end every task at once; use a duration such as 30s".into(),
            );
        }
        if let Some(max) = self.task.max_output {
            if max == 0 || max > 64 << 20 {
                return err(
                    "task.max_output",
                    format!(
                        "{} is out of range; use 1 to 64Mi",
                        crate::size::format_size(max)
                    ),
                );
            }
        }
        Ok(())
    }

    /// The output cap per stream in force for tasks of this policy.
    pub fn max_output(&self) -> u64 {
        self.task.max_output.unwrap_or(DEFAULT_MAX_OUTPUT)
    }
}

fn mode_name(mode: NetworkMode) -> &'static str {
    match mode {
        NetworkMode::Loopback => "loopback",
        NetworkMode::None => "none",
        NetworkMode::Bridged => "bridged",
        NetworkMode::Joined => "joined",
        NetworkMode::Host => "host",
    }
}

fn path_problem(path: &str) -> Option<&'static str> {
    if !path.starts_with('/') {
        return Some("is not absolute; start it with '/'");
    }
    if path.split('/').any(|c| c == ".." || c == ".") {
        return Some("has '.' or '..' in it; write the plain absolute path");
    }
    if path.len() > 1 && path.ends_with('/') {
        return Some("ends with '/'; drop the trailing slash");
    }
    if path.contains("//") || path.contains('\0') {
        return Some("is not a clean path; write it without '//' or NUL");
    }
    None
}

/// Turns serde/TOML's error into a located one, naming the key when the
/// error points at a `key = value` line.
fn from_toml_error(file: &str, text: &str, e: &toml::de::Error) -> PolicyError {
    let raw = e.message().trim().to_string();
    let Some(span) = e.span() else {
        return PolicyError {
            file: file.into(),
            line: 0,
            key: String::new(),
            message: crate::message::within(&raw, 300),
        };
    };
    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
    let line_text = text.lines().nth(line - 1).unwrap_or("");
    let table = table_before(text, line);
    let message;
    let key;
    if let Some(field) = raw
        .strip_prefix("unknown field `")
        .and_then(|r| r.split('`').next())
    {
        let expected = raw.split_once(", expected ").map(|(_, e)| e).unwrap_or("");
        key = if line_text.trim_start().starts_with('[') {
            table.clone()
        } else {
            join_key(&table, field)
        };
        message = if expected.is_empty() {
            "is not a policy key; remove it".into()
        } else {
            format!("is not a policy key; expected {expected}")
        };
    } else if let Some((k, _)) = line_text.split_once('=') {
        key = join_key(&table, k.trim().trim_matches('"'));
        message = humanize(&raw);
    } else {
        key = String::new();
        message = humanize(&raw);
    }
    PolicyError {
        file: file.into(),
        line,
        key,
        // TOML's words may quote a value of the file whole.
        message: crate::message::within(&message, 300),
    }
}

fn humanize(raw: &str) -> String {
    // serde's words for a number out of its type's range: `invalid value:
    // integer `-1`, expected u64` (or `... as i128, ...`).
    if let Some(rest) = raw.strip_prefix("invalid value: integer `") {
        let number = rest.split('`').next().unwrap_or("");
        let shown = crate::message::quote(number);
        let shown = shown.trim_matches('"');
        return if number.starts_with('-') {
            format!("{shown} is negative; give a number of 0 or more")
        } else {
            format!("{shown} is too large; see docs/policy.md for this key's range")
        };
    }
    if raw == "integer number overflowed" || raw.starts_with("number too large") {
        return "the number is too large for any setting; see docs/policy.md for this key's range"
            .into();
    }
    if let Some(rest) = raw.strip_prefix("unknown variant ") {
        return rest
            .replace("expected one of", "; use one of")
            .replace(", ;", ";");
    }
    if raw.starts_with("invalid type") {
        return format!("{raw}; check the value's type in docs/policy.md");
    }
    raw.to_string()
}

/// `table.key`, when both are plain dotted keys (what a policy's keys
/// are); empty otherwise, so that a line of garbage is not shown as a key.
fn join_key(table: &str, key: &str) -> String {
    let plain = |k: &str| {
        k.len() <= 100
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    if !plain(table) || !plain(key) || key.is_empty() {
        return String::new();
    }
    if table.is_empty() {
        key.to_string()
    } else {
        format!("{table}.{key}")
    }
}

/// The `[table]` header in force at 1-based `line`.
fn table_before(text: &str, line: usize) -> String {
    text.lines()
        .take(line)
        .filter_map(|l| {
            let l = l.trim();
            (l.starts_with('[') && l.ends_with(']'))
                .then(|| l.trim_matches(|c| c == '[' || c == ']').trim().to_string())
        })
        .last()
        .unwrap_or_default()
}

/// The 1-based line where dotted `key` is set, or the line of its table, or 0.
fn locate_key(text: &str, key: &str) -> usize {
    let (table, field) = key.rsplit_once('.').unwrap_or(("", key));
    let mut current = String::new();
    let mut table_line = 0;
    for (i, l) in text.lines().enumerate() {
        let t = l.trim();
        if t.starts_with('[') && t.ends_with(']') {
            current = t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
            if current == table {
                table_line = i + 1;
            }
            continue;
        }
        if current == table {
            if let Some((k, _)) = t.split_once('=') {
                if k.trim().trim_matches('"') == field {
                    return i + 1;
                }
            }
        }
    }
    table_line
}

mod size_serde {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_str(&crate::size::format_size(*b)),
            None => s.serialize_none(),
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Bytes(u64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        match Option::<Raw>::deserialize(d)? {
            None => Ok(None),
            Some(Raw::Bytes(b)) => Ok(Some(b)),
            Some(Raw::Text(t)) => crate::size::parse_size(&t).map(Some).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "{} is not a size; use 512Mi or 4Gi",
                    crate::message::quote(&t)
                ))
            }),
        }
    }
}

mod duration_serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => s.serialize_str(&crate::duration::format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(t) => crate::duration::parse_duration(&t)
                .map(Some)
                .ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "{} is not a duration; use 30s, 10m or 1h",
                        crate::message::quote(&t)
                    ))
                }),
        }
    }
}

#[cfg(test)]
mod tests;
