//! Every conversion at the shim's edge, in one place: the OCI bundle's
//! `config.json` and containerd's wire types to rauhad's, and zone usage
//! to containerd's cgroup metrics. (Errors map to ttrpc in `error`.)

use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::Message;
use rauha_api::v1;

use crate::error::SpecError;
use rauha_spec::pod_security::{Ask, HostNamespace};
use rauha_spec::policy::{NetworkMode, Policy, ResourcesSection};
use serde_json::Value;
use std::path::PathBuf;

/// Pod annotations (CRI passes them when containerd's runtime config lists
/// them in `pod_annotations` / `container_annotations`).
pub const POLICY_ANNOTATION: &str = "rauha.dev/policy";
pub const ZONE_ANNOTATION: &str = "rauha.dev/zone";
/// On a pod: its zone is a shared one of its namespace, by this name, which
/// other pods of the namespace join with `rauha.dev/zone`.
pub const ZONE_NAME_ANNOTATION: &str = "rauha.dev/zone-name";
const CRI_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
const CRI_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
const CRI_SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";

/// The rauhad name of the shared zone `name` of the Kubernetes namespace
/// `pod_namespace`: a pod names a shared zone within its own namespace
/// only, so no pod can join (or take the name of) another namespace's.
pub fn shared_zone_name(pod_namespace: &str, name: &str) -> String {
    zone_name(&format!("shared-{pod_namespace}"), name)
}

/// The name of the zone a sandbox (or a container outside any pod) makes:
/// its pod's shared zone when it names one, else one of its own.
pub fn own_zone_name(spec: &Value, containerd_namespace: &str, id: &str) -> String {
    match (
        annotation(spec, ZONE_NAME_ANNOTATION).filter(|n| !n.is_empty()),
        annotation(spec, CRI_SANDBOX_NAMESPACE),
    ) {
        (Some(name), Some(pod_namespace)) => shared_zone_name(pod_namespace, name),
        _ => zone_name(containerd_namespace, id),
    }
}

/// A zone name (lowercase letters, digits, '-', at most 63) for a
/// container of a containerd namespace; long ids keep a hash of the whole.
pub fn zone_name(namespace: &str, id: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                let c = c.to_ascii_lowercase();
                if c.is_ascii_lowercase() || c.is_ascii_digit() {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    };
    let full = format!("{}-{}", clean(namespace), clean(id));
    let exact = full == format!("{namespace}-{id}");
    if full.len() <= 63 && exact && !full.starts_with('-') && !full.ends_with('-') {
        return full;
    }
    // Cut, or changed by the cleaning (`My_app` and `my-app` both clean to
    // `my-app`): FNV-1a over the exact namespace and id tells them apart.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in namespace.bytes().chain([0]).chain(id.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let head = full[..full.len().min(46)].trim_matches('-');
    if head.is_empty() {
        format!("c-{h:016x}")
    } else {
        format!("{head}-{h:016x}")
    }
}

/// What the bundle's `config.json` says about the container's place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Its own zone: a pod sandbox, or a container outside any pod.
    Owner,
    /// A container of the pod whose sandbox has this id.
    Member { sandbox_id: String },
    /// Placed into an existing zone by name: a pod's sandbox into a shared
    /// zone of its namespace, or a container outside any pod into any.
    Named { zone: String },
}

/// Secrets a container's process gets as environment variables, its value
/// read from a file the pod mounts (a Kubernetes Secret volume): JSON
/// `{"ENV": "/path/in/the/container"}`. The operator sets it; the values
/// are never in the pod's spec, and the result envelope is redacted of them.
pub const SECRET_ENV_ANNOTATION: &str = "rauha.dev/secret-env";

/// The secrets of [`SECRET_ENV_ANNOTATION`]: each variable's name and the
/// host file its container path is mounted from.
pub fn secret_env(spec: &Value) -> Result<Vec<(String, PathBuf)>, SpecError> {
    let Some(text) = annotation(spec, SECRET_ENV_ANNOTATION) else {
        return Ok(Vec::new());
    };
    let map: std::collections::BTreeMap<String, String> = serde_json::from_str(text)
        .map_err(|e| SpecError::SecretEnv(format!("not a JSON object of strings ({e})")))?;
    map.into_iter()
        .map(|(env, path)| {
            if env.is_empty() || env.contains('=') {
                return Err(SpecError::SecretEnv(format!("{env:?} is no variable name")));
            }
            host_path(spec, std::path::Path::new(&path))
                .map(|s| (env.clone(), s))
                .ok_or_else(|| SpecError::SecretEnv(format!("{env}: no mount holds {path}")))
        })
        .collect()
}

/// The host path a container path comes from, through the spec's mounts:
/// a mount's source, or a file under a mounted directory (a Secret
/// volume's item).
/// The mount that covers it most closely wins (`/dev/termination-log`'s own
/// bind, not the `/dev` tmpfs); only binds (an absolute source) count.
pub fn host_path(spec: &Value, path: &std::path::Path) -> Option<PathBuf> {
    spec.get("mounts")?
        .as_array()?
        .iter()
        .filter_map(|m| {
            let dest = std::path::Path::new(m.get("destination")?.as_str()?);
            let src = std::path::Path::new(m.get("source")?.as_str()?);
            let rest = path.strip_prefix(dest).ok()?;
            // (`join` of an empty rest would add a trailing slash.)
            let host = if rest.as_os_str().is_empty() {
                src.to_path_buf()
            } else {
                src.join(rest)
            };
            src.is_absolute()
                .then_some((dest.components().count(), host))
        })
        .max_by_key(|(depth, _)| *depth)
        .map(|(_, p)| p)
}

/// The secrets' names and values, read from their files.
pub fn secret_values(spec: &Value) -> Result<Vec<(String, String)>, SpecError> {
    secret_env(spec)?
        .into_iter()
        .map(|(env, file)| {
            std::fs::read_to_string(&file)
                .map(|v| (env.clone(), v))
                .map_err(|e| {
                    SpecError::SecretEnv(format!("{env}: cannot read {}: {e}", file.display()))
                })
        })
        .collect()
}

pub fn annotation<'a>(spec: &'a Value, key: &str) -> Option<&'a str> {
    spec.get("annotations")?.get(key)?.as_str()
}

pub fn role(spec: &Value) -> Role {
    // A pod's container goes where its sandbox went, a joined zone too.
    if let (Some("container"), Some(sandbox)) = (
        annotation(spec, CRI_CONTAINER_TYPE),
        annotation(spec, CRI_SANDBOX_ID),
    ) {
        return Role::Member {
            sandbox_id: sandbox.to_string(),
        };
    }
    match annotation(spec, ZONE_ANNOTATION).filter(|z| !z.is_empty()) {
        Some(zone) => Role::Named {
            zone: match annotation(spec, CRI_SANDBOX_NAMESPACE) {
                Some(pod_namespace) => shared_zone_name(pod_namespace, zone),
                None => zone.to_string(),
            },
        },
        None => Role::Owner,
    }
}

/// The shim grouping containerd uses: one shim per pod.
pub fn grouping(spec: &Value, id: &str) -> String {
    annotation(spec, CRI_SANDBOX_ID)
        .filter(|s| !s.is_empty())
        .unwrap_or(id)
        .to_string()
}

/// The network namespace the container must join (CNI's, for a pod).
pub fn netns(spec: &Value) -> Option<String> {
    spec.get("linux")?
        .get("namespaces")?
        .as_array()?
        .iter()
        .find(|n| n.get("type").and_then(Value::as_str) == Some("network"))?
        .get("path")?
        .as_str()
        .filter(|p| !p.is_empty())
        .map(str::to_string)
}

/// The node's network namespace: rauhad's own, as rauhad (which checks
/// it) and the zone's launcher (which rauhad starts, and which joins it
/// before it makes the zone's other namespaces) each open it. (Opening
/// PID 1's takes ptrace rights over init, which a node may not grant.)
pub const HOST_NETNS: &str = "/proc/self/ns/net";

/// The network namespace a new zone joins: the spec's (CNI's, for a pod),
/// or the host's for a spec that shares it (`hostNetwork`) under a pod
/// policy that allows it (`check_pod_security` refused it under others).
pub fn zone_netns(spec: &Value, chosen: &ChosenPolicy) -> Option<String> {
    if let Some(path) = netns(spec) {
        return Some(path);
    }
    let host = ask(spec).host_namespaces.contains(&HostNamespace::Network);
    (host && chosen.policy.pod.security == Some(rauha_spec::pod_security::Level::Privileged))
        .then(|| HOST_NETNS.to_string())
}

/// The cgroup the container's cgroup belongs in, from the spec's
/// `linux.cgroupsPath`: its parent for the cgroupfs form
/// (`/kubepods/burstable/podUID/ID`), the slice's path for the systemd form
/// (`kubepods-burstable-podUID.slice:cri-containerd:ID`). Only a CRI pod's:
/// kubelet's pod cgroup is what rauhad lets a client choose
/// (`--allowed-cgroup-root`); another container's zone (`ctr run`'s
/// `/NAMESPACE/ID`) goes below rauhad's own parent, as does a pod given no
/// parent (containerd's default is the `namespace`'s).
pub fn cgroup_parent(spec: &Value, namespace: &str) -> Option<String> {
    annotation(spec, CRI_SANDBOX_ID)?;
    let path = spec.get("linux")?.get("cgroupsPath")?.as_str()?;
    if path.is_empty() {
        return None;
    }
    let parts: Vec<&str> = path.split(':').collect();
    if parts.len() == 3 && !path.starts_with('/') {
        let slice = parts[0];
        let name = slice.strip_suffix(".slice")?;
        // kubepods-burstable-podX.slice lives in kubepods.slice/kubepods-burstable.slice.
        let mut dir = String::new();
        let mut prefix = String::new();
        for word in name.split('-') {
            if !prefix.is_empty() {
                prefix.push('-');
            }
            prefix.push_str(word);
            dir.push('/');
            dir.push_str(&prefix);
            dir.push_str(".slice");
        }
        return Some(dir);
    }
    let parent = std::path::Path::new(path).parent()?.to_str()?;
    (parent.starts_with('/') && parent != "/" && parent.trim_start_matches('/') != namespace)
        .then(|| parent.to_string())
}

/// An OCI `process` object as rauhad's process spec.
pub fn process(p: &Value) -> Result<v1::ProcessSpec, SpecError> {
    let args = strings(p.get("args"));
    if args.is_empty() {
        return Err(SpecError::NoArgs);
    }
    let user = p.get("user").map(|u| {
        let num = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0) as u32;
        v1::ProcessUser {
            uid: num("uid"),
            gid: num("gid"),
            groups: u
                .get("additionalGids")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|g| g.as_u64())
                        .map(|g| g as u32)
                        .collect()
                })
                .unwrap_or_default(),
        }
    });
    Ok(v1::ProcessSpec {
        image: String::new(),
        args,
        env: strings(p.get("env")),
        cwd: p
            .get("cwd")
            .and_then(Value::as_str)
            .unwrap_or("/")
            .to_string(),
        user,
        terminal: p.get("terminal").and_then(Value::as_bool).unwrap_or(false),
        root: String::new(),
        security: None,
        // A pod's ports are the pod network's (CNI), not the zone's.
        publish: Vec::new(),
    })
}

/// An `Any` holding a JSON-encoded OCI process (ExecProcessRequest.spec).
/// Its capability sets and privileges are its own; the seccomp profile is
/// its container's (see `security`).
pub fn exec_process(spec: &Any) -> Result<v1::ProcessSpec, SpecError> {
    let value: Value = serde_json::from_slice(&spec.value).map_err(SpecError::ExecNotJson)?;
    let mut p = process(&value)?;
    p.security = Some(security(&value, None));
    Ok(p)
}

/// The policy a container's spec names, parsed once per create: the
/// Pod Security check, the zone's network and its policy all read it.
pub struct ChosenPolicy {
    /// Where it came from (a preset's file, the annotation, the handler).
    file: String,
    policy: Policy,
}

/// The pod policy a spec names: the annotation's preset or inline TOML,
/// else `default`, the handler's default for pods (`baseline` unless its
/// configuration says otherwise, see `config`).
pub fn chosen_policy(spec: &Value, default: &str) -> Result<ChosenPolicy, SpecError> {
    let named = annotation(spec, POLICY_ANNOTATION)
        .map(str::trim)
        .filter(|n| !n.is_empty());
    let (file, text) = match named.unwrap_or(default) {
        name if rauha_spec::presets::text(name).is_some() => (
            format!("policies/{name}.toml"),
            rauha_spec::presets::text(name)
                .unwrap_or_default()
                .to_string(),
        ),
        inline if inline.contains('\n') || inline.contains('=') => (
            match named {
                Some(_) => format!("annotation {POLICY_ANNOTATION}"),
                None => "the handler's pod_policy".to_string(),
            },
            inline.to_string(),
        ),
        other if named.is_none() => {
            return Err(SpecError::Config(format!(
                "pod_policy {other:?} is neither a preset ({}) nor a TOML policy",
                rauha_spec::presets::names().join(", ")
            )))
        }
        other => {
            return Err(SpecError::NotAPolicy {
                annotation: POLICY_ANNOTATION,
                value: other.to_string(),
            })
        }
    };
    let policy = Policy::parse(&file, &text)?;
    Ok(ChosenPolicy { file, policy })
}

/// The zone's policy: the pod policy the spec names, with the container's
/// resource limits, its hostname and sysctls, and the pod's network
/// namespace joined when CNI made one.
pub fn policy(spec: &Value, chosen: &ChosenPolicy) -> v1::PolicySource {
    let mut policy = chosen.policy.clone();
    if let Some(r) = spec.get("linux").and_then(|l| l.get("resources")) {
        apply_resources(&mut policy.resources, r);
    }
    if zone_netns(spec, chosen).is_some() {
        policy.network.mode = NetworkMode::Joined;
    }
    // A pod's zone follows Kubernetes' switch, `hostUsers`: a user
    // namespace only when the pod asks for one (`hostUsers: false` puts a
    // `user` namespace in the spec). With the host's users, a pod keeps
    // binding its ports in the network namespace CNI made.
    policy.zone.user_namespace = Some(wants_user_namespace(spec));
    if let Some(hostname) = spec.get("hostname").and_then(Value::as_str) {
        if !hostname.is_empty() {
            policy.zone.hostname = Some(hostname.to_string());
        }
    }
    policy.zone.sysctls.extend(sysctls(spec));
    // `hostIPC`, where the pod policy lets it through (check_pod_security
    // refused it under the others).
    let privileged =
        chosen.policy.pod.security == Some(rauha_spec::pod_security::Level::Privileged);
    let host = ask(spec).host_namespaces;
    policy.zone.host_ipc = privileged && host.contains(&HostNamespace::Ipc);
    policy.zone.host_pid = privileged && host.contains(&HostNamespace::Pid);
    v1::PolicySource {
        source: Some(v1::policy_source::Source::Inline(v1::InlinePolicy {
            file: chosen.file.clone(),
            toml: policy.to_toml(),
        })),
    }
}

/// `linux.sysctl`.
fn sysctls(spec: &Value) -> Vec<(String, String)> {
    spec.get("linux")
        .and_then(|l| l.get("sysctl"))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// What a spec asks that a Pod Security level may refuse.
pub fn ask(spec: &Value) -> Ask {
    let process = spec.get("process").unwrap_or(&Value::Null);
    let namespaces: Vec<&str> = spec
        .get("linux")
        .and_then(|l| l.get("namespaces"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|n| n.get("type").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    let shared_mounts = spec
        .get("mounts")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter(|m| {
                    m.get("options").and_then(Value::as_array).is_some_and(|o| {
                        o.iter()
                            .any(|x| matches!(x.as_str(), Some("rshared") | Some("shared")))
                    })
                })
                .filter_map(|m| m.get("destination")?.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Ask {
        capabilities: all_caps(&security(process, None)),
        host_namespaces: [
            HostNamespace::Network,
            HostNamespace::Pid,
            HostNamespace::Ipc,
        ]
        .into_iter()
        .filter(|ns| !namespaces.contains(&ns.oci_type()))
        .collect(),
        sysctls: sysctls(spec).into_iter().map(|(k, _)| k).collect(),
        uid: process
            .get("user")
            .and_then(|u| u.get("uid"))
            .and_then(Value::as_u64)
            .unwrap_or(0) as u32,
        no_new_privileges: process
            .get("noNewPrivileges")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        shared_mounts,
        sandbox: is_sandbox(spec),
    }
}

/// Whether the container asks for a PID namespace of its own: a `pid`
/// namespace with no path to join (CRI's `NamespaceMode::CONTAINER`,
/// Kubernetes' default); a pod that shares one (`shareProcessNamespace`)
/// gives the sandbox's path. The sandbox's own is the zone's.
pub fn own_pid_namespace(spec: &Value) -> bool {
    !is_sandbox(spec)
        && spec
            .get("linux")
            .and_then(|l| l.get("namespaces"))
            .and_then(Value::as_array)
            .is_some_and(|all| {
                all.iter().any(|n| {
                    n.get("type").and_then(Value::as_str) == Some("pid")
                        && n.get("path")
                            .and_then(Value::as_str)
                            .is_none_or(str::is_empty)
                })
            })
}

/// The spec's `linux.devices`: device nodes its /dev holds beyond the
/// standard ones (rauhad checks each is under /dev).
pub fn devices(spec: &Value) -> Vec<v1::RootDevice> {
    let num = |d: &Value, k: &str| d.get(k).and_then(Value::as_u64).unwrap_or(0) as u32;
    spec.get("linux")
        .and_then(|l| l.get("devices"))
        .and_then(Value::as_array)
        .map(|all| {
            all.iter()
                .map(|d| v1::RootDevice {
                    path: d
                        .get("path")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    r#type: d
                        .get("type")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    major: num(d, "major"),
                    minor: num(d, "minor"),
                    file_mode: d
                        .get("fileMode")
                        .and_then(Value::as_u64)
                        .map_or(0o666, |m| m as u32),
                    uid: num(d, "uid"),
                    gid: num(d, "gid"),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A CRI pod's sandbox (its pause container).
pub fn is_sandbox(spec: &Value) -> bool {
    annotation(spec, CRI_CONTAINER_TYPE) == Some("sandbox")
}

/// What a process of `spec` gets: its spec's capability sets and
/// privileges; a pod sandbox's pause process, which only waits, none at
/// all (whatever its pod's level: it is the runtime's, not the user's).
pub fn init_security(spec: &Value) -> v1::ProcessSecurity {
    let process = spec.get("process").unwrap_or(&Value::Null);
    let mut s = security(process, seccomp(spec));
    if is_sandbox(spec) {
        s = v1::ProcessSecurity {
            no_new_privileges: true,
            seccomp_json: s.seccomp_json,
            ..Default::default()
        };
    }
    s
}

/// Holds the spec to its pod policy's Pod Security level: a spec that
/// asks for more fails with the field and the policy that would allow it.
/// A zone policy (no `[pod]`) holds the zone to itself instead.
pub fn check_pod_security(spec: &Value, chosen: &ChosenPolicy) -> Result<(), SpecError> {
    let ask = ask(spec);
    if let Some(level) = chosen.policy.pod.security {
        rauha_spec::pod_security::check(level, &ask)?;
    }
    Ok(())
}

/// An OCI process's capability sets and privileges, and the container's
/// seccomp profile (`linux.seccomp`, the same for its every process).
pub fn security(process: &Value, seccomp: Option<&Value>) -> v1::ProcessSecurity {
    let caps = process.get("capabilities");
    let set = |key: &str| strings(caps.and_then(|c| c.get(key)));
    v1::ProcessSecurity {
        bounding: set("bounding"),
        effective: set("effective"),
        permitted: set("permitted"),
        inheritable: set("inheritable"),
        ambient: set("ambient"),
        no_new_privileges: process
            .get("noNewPrivileges")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        seccomp_json: seccomp
            .filter(|s| !s.is_null())
            .map(Value::to_string)
            .unwrap_or_default(),
        rlimits: process
            .get("rlimits")
            .and_then(Value::as_array)
            .map(|all| {
                all.iter()
                    .map(|r| v1::Rlimit {
                        r#type: r
                            .get("type")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                        soft: r.get("soft").and_then(Value::as_u64).unwrap_or(0),
                        hard: r.get("hard").and_then(Value::as_u64).unwrap_or(0),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        oom_score_adj: process
            .get("oomScoreAdj")
            .and_then(Value::as_i64)
            .map(|a| a.clamp(i32::MIN as i64, i32::MAX as i64) as i32),
    }
}

/// The container's seccomp profile, for its processes (`exec` too).
pub fn seccomp(spec: &Value) -> Option<&Value> {
    spec.get("linux")?.get("seccomp")
}

/// Every capability of a process's sets, once.
fn all_caps(s: &v1::ProcessSecurity) -> Vec<String> {
    let mut all: Vec<String> = [
        &s.bounding,
        &s.effective,
        &s.permitted,
        &s.inheritable,
        &s.ambient,
    ]
    .into_iter()
    .flatten()
    .cloned()
    .collect();
    all.sort();
    all.dedup();
    all
}

/// A JSON array's strings (nothing when it is not an array).
fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the spec asks for a user namespace (`linux.namespaces` holds
/// one of type `user`).
fn wants_user_namespace(spec: &Value) -> bool {
    spec.get("linux")
        .and_then(|l| l.get("namespaces"))
        .and_then(Value::as_array)
        .is_some_and(|ns| {
            ns.iter()
                .any(|n| n.get("type").and_then(Value::as_str) == Some("user"))
        })
}

/// OCI `linux.resources` onto a policy's resources: what the container
/// sets replaces the preset's value.
pub fn apply_resources(to: &mut ResourcesSection, r: &Value) {
    let num = |v: Option<&Value>| v.and_then(Value::as_i64).filter(|n| *n > 0);
    if let Some(limit) = num(r.get("memory").and_then(|m| m.get("limit"))) {
        to.memory_limit = Some(limit as u64);
    }
    let cpu = r.get("cpu");
    // A quota without a period is over the kernel's default period.
    if let Some(quota) = num(cpu.and_then(|c| c.get("quota"))) {
        let period = num(cpu.and_then(|c| c.get("period"))).unwrap_or(100_000);
        to.cpu_limit = Some(quota as f64 / period as f64);
    }
    if let Some(shares) = num(cpu.and_then(|c| c.get("shares"))) {
        to.cpu_shares = Some((shares as u64).clamp(2, 262_144));
    }
    if let Some(pids) = num(r.get("pids").and_then(|p| p.get("limit"))) {
        to.pids_max = Some(pids as u64);
    }
}

/// OCI LinuxResources as a container root's own limits.
pub fn root_limits(r: &Value) -> v1::RootLimits {
    let mut section = ResourcesSection::unset();
    apply_resources(&mut section, r);
    v1::RootLimits {
        memory_bytes: section.memory_limit,
        pids_max: section.pids_max,
        cpu_shares: section.cpu_shares,
        cpus: section.cpu_limit,
        // cgroup v2 files by name (kubelet sets memory.oom.group there).
        unified: r
            .get("unified")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// An update's limits over the current ones: what it leaves out keeps its
/// value (runc's update changes only what it is given).
pub fn merge_limits(current: &v1::RootLimits, update: &v1::RootLimits) -> v1::RootLimits {
    v1::RootLimits {
        memory_bytes: update.memory_bytes.or(current.memory_bytes),
        pids_max: update.pids_max.or(current.pids_max),
        cpu_shares: update.cpu_shares.or(current.cpu_shares),
        cpus: update.cpus.or(current.cpus),
        unified: current
            .unified
            .iter()
            .chain(&update.unified)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// A `linux` list of paths (`maskedPaths`, `readonlyPaths`).
pub fn linux_paths(spec: &Value, key: &str) -> Vec<String> {
    strings(spec.get("linux").and_then(|l| l.get(key)))
}

/// The OCI spec's mounts as rauhad's container-root mounts.
pub fn mounts(spec: &Value) -> Vec<v1::RootMount> {
    spec.get("mounts")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|m| {
                    let s = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                    v1::RootMount {
                        destination: s("destination"),
                        r#type: s("type"),
                        source: s("source"),
                        options: m
                            .get("options")
                            .and_then(Value::as_array)
                            .map(|o| {
                                o.iter()
                                    .filter_map(|x| x.as_str().map(str::to_string))
                                    .collect()
                            })
                            .unwrap_or_default(),
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn timestamp(ms: u64) -> Timestamp {
    let mut t = Timestamp::new();
    t.seconds = (ms / 1000) as i64;
    t.nanos = ((ms % 1000) * 1_000_000) as i32;
    t
}

pub fn now() -> Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    timestamp(ms)
}

/// A zone's usage as containerd's cgroup v1 metrics (what `ctr task
/// metrics` and the CRI stats read).
pub fn metrics(u: &v1::Usage) -> Result<Any, crate::error::Error> {
    use containerd_shim::protos::cgroups::metrics::{
        CPUStat, CPUUsage, MemoryEntry, MemoryOomControl, MemoryStat, Metrics, PidsStat, Throttle,
    };
    // The cgroup v1 message (nanoseconds for times), as runc's shim sends
    // it on such a host; containerd 2.x's CRI turns it into cAdvisor's
    // metric names for ListPodSandboxMetrics.
    let ns = |us: u64| us.saturating_mul(1000);
    let mut m = Metrics::new();
    let mut pids = PidsStat::new();
    pids.current = u.pids;
    pids.limit = u.pids_max;
    m.pids = Some(pids).into();
    let mut usage = CPUUsage::new();
    usage.total = ns(u.cpu_time_us);
    usage.user = ns(u.cpu_user_us);
    usage.kernel = ns(u.cpu_system_us);
    let mut throttling = Throttle::new();
    throttling.periods = u.cpu_periods;
    throttling.throttled_periods = u.cpu_throttled_periods;
    throttling.throttled_time = ns(u.cpu_throttled_us);
    let mut cpu = CPUStat::new();
    cpu.usage = Some(usage).into();
    cpu.throttling = Some(throttling).into();
    m.cpu = Some(cpu).into();
    let mut entry = MemoryEntry::new();
    entry.usage = u.memory_bytes;
    entry.limit = u.memory_limit_bytes;
    entry.max = u.peak_memory_bytes;
    entry.failcnt = u.oom_kills;
    let mut kernel = MemoryEntry::new();
    kernel.usage = u.memory_kernel_bytes;
    let mut swap = MemoryEntry::new();
    swap.usage = u.memory_swap_bytes;
    let mut mem = MemoryStat::new();
    mem.usage = Some(entry).into();
    mem.kernel = Some(kernel).into();
    mem.swap = Some(swap).into();
    (mem.rss, mem.total_rss) = (u.memory_rss_bytes, u.memory_rss_bytes);
    (mem.cache, mem.total_cache) = (u.memory_cache_bytes, u.memory_cache_bytes);
    (mem.mapped_file, mem.total_mapped_file) =
        (u.memory_mapped_file_bytes, u.memory_mapped_file_bytes);
    m.memory = Some(mem).into();
    let mut oom = MemoryOomControl::new();
    oom.oom_kill = u.oom_kills;
    m.memory_oom_control = Some(oom).into();
    let mut any = Any::new();
    any.type_url = "io.containerd.cgroups.v1.Metrics".to_string();
    any.value = m
        .write_to_bytes()
        .map_err(|source| crate::error::Error::Encode {
            what: "metrics",
            source,
        })?;
    Ok(any)
}

#[cfg(test)]
mod secret_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_env_maps_each_variable_to_its_mounted_file() {
        let dir = std::env::temp_dir().join(format!("rauha-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("token"), "s3cret").expect("write");
        let spec = json!({
            "annotations": {SECRET_ENV_ANNOTATION: r#"{"GH_TOKEN": "/run/rauha/secrets/gh/token"}"#},
            "mounts": [{"destination": "/run/rauha/secrets/gh", "source": dir.display().to_string()}],
        });
        assert_eq!(
            secret_values(&spec).expect("values"),
            vec![("GH_TOKEN".to_string(), "s3cret".to_string())]
        );
        let unmounted = json!({"annotations": {SECRET_ENV_ANNOTATION: r#"{"A": "/nowhere"}"#}});
        assert!(secret_env(&unmounted).is_err());
        let bad = json!({"annotations": {SECRET_ENV_ANNOTATION: "not json"}});
        let err = secret_env(&bad).expect_err("refused").to_string();
        assert!(err.contains("rauha.dev/secret-env"), "{err}");
        assert!(secret_env(&json!({})).expect("none").is_empty());
        std::fs::remove_dir_all(&dir).ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DEFAULT: &str = rauha_spec::presets::DEFAULT_POD_PRESET;

    // The create path chooses the policy once; these choose and use it.
    fn policy(spec: &Value, default: &str) -> Result<v1::PolicySource, SpecError> {
        Ok(super::policy(spec, &chosen_policy(spec, default)?))
    }

    fn check_pod_security(spec: &Value, default: &str) -> Result<(), SpecError> {
        super::check_pod_security(spec, &chosen_policy(spec, default)?)
    }

    fn zone_netns(spec: &Value, default: &str) -> Result<Option<String>, SpecError> {
        Ok(super::zone_netns(spec, &chosen_policy(spec, default)?))
    }

    #[test]
    fn zone_names_are_valid_and_distinct() {
        assert_eq!(zone_name("default", "c1"), "default-c1");
        let short = zone_name("default", "My_Ctr.1");
        assert!(short.starts_with("default-my-ctr-1-"), "{short}");
        assert_ne!(short, zone_name("default", "my-ctr-1"));
        assert!(zone_name("default", "__").starts_with("default-"));
        let long_a = zone_name("k8s.io", &"a".repeat(64));
        let long_b = zone_name("k8s.io", &format!("{}b", "a".repeat(63)));
        for n in [&short, &long_a, &long_b] {
            rauha_spec::names::validate_zone_name(n).expect(n);
        }
        assert_ne!(long_a, long_b);
    }

    #[test]
    fn oci_resources_become_a_containers_own_limits() {
        let r = json!({"memory": {"limit": 33554432},
            "cpu": {"shares": 512, "quota": 50000, "period": 100000},
            "pids": {"limit": 64}});
        let l = root_limits(&r);
        assert_eq!(l.memory_bytes, Some(32 << 20));
        assert_eq!(l.cpu_shares, Some(512));
        assert_eq!(l.cpus, Some(0.5));
        assert_eq!(l.pids_max, Some(64));
        let oom_group = root_limits(&json!({"unified": {"memory.oom.group": "1"}}));
        assert_eq!(oom_group.unified["memory.oom.group"], "1");
        let no_period = root_limits(&json!({"cpu": {"quota": 25000}}));
        assert_eq!(no_period.cpus, Some(0.25));
        // An update of the memory keeps the rest.
        let merged = merge_limits(&l, &root_limits(&json!({"memory": {"limit": 1024}})));
        assert_eq!(
            (merged.memory_bytes, merged.cpus, merged.pids_max),
            (Some(1024), Some(0.5), Some(64))
        );
        // None set (a BestEffort container's quota of -1): none of its own.
        let none = root_limits(&json!({"cpu": {"quota": -1, "period": 100000}}));
        assert_eq!(none, v1::RootLimits::default());
    }

    #[test]
    fn cri_annotations_decide_the_role() {
        let sandbox = json!({"annotations": {
            "io.kubernetes.cri.container-type": "sandbox",
            "io.kubernetes.cri.sandbox-id": "s1"}});
        assert_eq!(role(&sandbox), Role::Owner);
        assert_eq!(grouping(&sandbox, "s1"), "s1");
        let member = json!({"annotations": {
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.sandbox-id": "s1"}});
        assert_eq!(
            role(&member),
            Role::Member {
                sandbox_id: "s1".into()
            }
        );
        assert_eq!(grouping(&member, "c1"), "s1");
        assert_eq!(role(&json!({})), Role::Owner);
    }

    #[test]
    fn a_pod_joins_and_names_shared_zones_of_its_own_namespace_only() {
        // The holder pod of Zone "builds" in namespace "team-a".
        let holder = json!({"annotations": {
            "io.kubernetes.cri.container-type": "sandbox",
            "io.kubernetes.cri.sandbox-id": "s1",
            "io.kubernetes.cri.sandbox-namespace": "team-a",
            "rauha.dev/zone-name": "builds"}});
        assert_eq!(role(&holder), Role::Owner);
        let shared = own_zone_name(&holder, "k8s.io", "s1");
        assert_eq!(shared, "shared-team-a-builds");
        assert_eq!(shared, shared_zone_name("team-a", "builds"));
        // A task pod of the same namespace joins it, its sandbox by name
        // and its containers as members of that sandbox, as in any pod.
        let joiner = |ns: &str| {
            json!({"annotations": {
                "io.kubernetes.cri.container-type": "sandbox",
                "io.kubernetes.cri.sandbox-id": "s2",
                "io.kubernetes.cri.sandbox-namespace": ns,
                "rauha.dev/zone": "builds"}})
        };
        assert_eq!(
            role(&joiner("team-a")),
            Role::Named {
                zone: shared.clone()
            }
        );
        let container = json!({"annotations": {
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.sandbox-id": "s2",
            "io.kubernetes.cri.sandbox-namespace": "team-a",
            "rauha.dev/zone": "builds"}});
        assert_eq!(
            role(&container),
            Role::Member {
                sandbox_id: "s2".into()
            }
        );
        // Another namespace's pod asking for the same name, or for the
        // rauhad name of team-a's zone or of another pod's zone, gets a
        // zone of its own namespace's, never theirs.
        for asked in ["builds", "shared-team-a-builds", "k8s-io-s1"] {
            let mut other = joiner("team-b");
            other["annotations"]["rauha.dev/zone"] = json!(asked);
            match role(&other) {
                Role::Named { zone } => {
                    assert!(zone.starts_with("shared-team-b-"), "{asked}: {zone}")
                }
                r => panic!("{r:?}"),
            }
        }
        // Without a pod (`ctr run`, root on the node): any zone, by its name.
        let plain = json!({"annotations": {"rauha.dev/zone": "k8s-io-s1"}});
        assert_eq!(
            role(&plain),
            Role::Named {
                zone: "k8s-io-s1".into()
            }
        );
        assert_eq!(
            own_zone_name(&json!({}), "k8s.io", "s1"),
            zone_name("k8s.io", "s1")
        );
    }

    #[test]
    fn cgroups_path_gives_the_parent() {
        let spec =
            |p: &str| json!({"linux": {"cgroupsPath": p}, "annotations": {CRI_SANDBOX_ID: "s1"}});
        assert_eq!(
            cgroup_parent(
                &json!({"linux": {"cgroupsPath": "/default/abc"}}),
                "default"
            ),
            None,
            "not a CRI pod's"
        );
        assert_eq!(
            cgroup_parent(&spec("/kubepods/burstable/pod1/abc"), "k8s.io").as_deref(),
            Some("/kubepods/burstable/pod1")
        );
        assert_eq!(
            cgroup_parent(
                &spec("kubepods-burstable-pod1.slice:cri-containerd:abc"),
                "k8s.io"
            )
            .as_deref(),
            Some("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice")
        );
        assert_eq!(cgroup_parent(&spec("/abc"), "k8s.io"), None);
        assert_eq!(cgroup_parent(&json!({}), "k8s.io"), None);
        assert_eq!(
            cgroup_parent(&spec("/k8s.io/abc"), "k8s.io"),
            None,
            "no parent given"
        );
    }

    #[test]
    fn oci_process_converts() {
        let p = process(&json!({"args": ["sh", "-c", "id"], "env": ["PATH=/bin"],
            "cwd": "/tmp", "terminal": true,
            "user": {"uid": 1000, "gid": 100, "additionalGids": [5, 6]}}))
        .expect("valid");
        assert_eq!(p.args, ["sh", "-c", "id"]);
        assert_eq!(p.cwd, "/tmp");
        assert!(p.terminal);
        let u = p.user.expect("user");
        assert_eq!((u.uid, u.gid, u.groups), (1000, 100, vec![5, 6]));
        assert!(process(&json!({"args": []})).is_err());
    }

    #[test]
    fn policy_takes_limits_and_joins_the_pods_netns() {
        let spec = json!({"linux": {
            "resources": {"memory": {"limit": 33554432}, "cpu": {"quota": 50000, "period": 100000},
                "pids": {"limit": 64}},
            "namespaces": [{"type": "pid"}, {"type": "network", "path": "/var/run/netns/cni-1"}]}});
        let Some(v1::policy_source::Source::Inline(p)) = policy(&spec, DEFAULT).expect("ok").source
        else {
            panic!("inline")
        };
        let parsed = Policy::parse("x", &p.toml).expect("renders valid TOML");
        assert_eq!(parsed.resources.memory_limit, Some(32 << 20));
        assert_eq!(parsed.resources.cpu_limit, Some(0.5));
        assert_eq!(parsed.resources.pids_max, Some(64));
        assert_eq!(parsed.network.mode, NetworkMode::Joined);
        assert_eq!(netns(&spec).as_deref(), Some("/var/run/netns/cni-1"));
        assert_eq!(
            parsed.zone.user_namespace,
            Some(false),
            "a pod with the host's users (hostUsers' default) gets no user namespace"
        );
    }

    #[test]
    fn a_pod_without_the_hosts_users_gets_a_user_namespace() {
        let spec = json!({"linux": {"namespaces": [{"type": "pid"}, {"type": "user"}]}});
        let Some(v1::policy_source::Source::Inline(p)) = policy(&spec, DEFAULT).expect("ok").source
        else {
            panic!("inline")
        };
        let parsed = Policy::parse("x", &p.toml).expect("renders valid TOML");
        assert_eq!(parsed.zone.user_namespace, Some(true));
    }

    /// A spec as containerd's CRI makes it for a pod's container.
    fn cri_spec(caps: &[&str], namespaces: &[&str]) -> Value {
        json!({
            "hostname": "web-1",
            "process": {"args": ["httpd"], "user": {"uid": 0, "gid": 0},
                "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
                "noNewPrivileges": false},
            "linux": {
                "namespaces": namespaces.iter().map(|t| json!({"type": t})).collect::<Vec<_>>(),
                "sysctl": {"net.ipv4.ip_unprivileged_port_start": "0"},
                "seccomp": {"defaultAction": "SCMP_ACT_ERRNO",
                    "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}}})
    }

    #[test]
    fn pods_are_held_to_their_pod_security_level() {
        let all = ["pid", "network", "ipc", "uts", "mount"];
        let default_caps = rauha_spec::pod_security::BASELINE_CAPABILITIES;
        let ordinary = cri_spec(default_caps, &all);
        check_pod_security(&ordinary, DEFAULT)
            .expect("an ordinary pod runs under baseline, the default");
        let s = security(&ordinary["process"], seccomp(&ordinary));
        assert_eq!(s.effective.len(), default_caps.len());
        assert!(!s.no_new_privileges);
        assert!(s.seccomp_json.contains("SCMP_ACT_ERRNO"));
        // The zone takes the pod's hostname and sysctls.
        let Some(v1::policy_source::Source::Inline(p)) =
            policy(&ordinary, DEFAULT).expect("ok").source
        else {
            panic!("inline")
        };
        let parsed = Policy::parse("x", &p.toml).expect("valid");
        assert_eq!(parsed.zone.hostname.as_deref(), Some("web-1"));
        assert_eq!(
            parsed.zone.sysctls["net.ipv4.ip_unprivileged_port_start"],
            "0"
        );
        assert_eq!(parsed.pod.security.map(|l| l.name()), Some("baseline"));

        let host_network = cri_spec(default_caps, &["pid", "ipc", "uts", "mount"]);
        let e = check_pod_security(&host_network, DEFAULT).expect_err("hostNetwork");
        assert!(e.to_string().contains("spec.hostNetwork"), "{e}");
        let mut privileged = cri_spec(&["CAP_SYS_ADMIN", "CAP_NET_ADMIN"], &all);
        let e = check_pod_security(&privileged, DEFAULT).expect_err("privileged");
        assert!(
            e.to_string().contains("CAP_NET_ADMIN, CAP_SYS_ADMIN"),
            "{e}"
        );
        privileged["annotations"] = json!({"rauha.dev/policy": "privileged"});
        check_pod_security(&privileged, DEFAULT).expect("the privileged policy allows it");
        // Under privileged, the host's network, IPC and PID namespaces are
        // joined.
        let mut host_ipc = cri_spec(default_caps, &["pid", "network", "uts", "mount"]);
        let e = check_pod_security(&host_ipc, DEFAULT).expect_err("hostIPC");
        assert!(e.to_string().contains("spec.hostIPC"), "{e}");
        host_ipc["annotations"] = json!({"rauha.dev/policy": "privileged"});
        check_pod_security(&host_ipc, DEFAULT).expect("hostIPC under privileged");
        let Some(v1::policy_source::Source::Inline(p)) =
            policy(&host_ipc, DEFAULT).expect("ok").source
        else {
            panic!("inline")
        };
        assert!(Policy::parse("x", &p.toml).expect("valid").zone.host_ipc);
        assert!(!parsed.zone.host_ipc, "only where the spec asks");
        let mut host_net = host_network.clone();
        host_net["annotations"] = json!({"rauha.dev/policy": "privileged"});
        check_pod_security(&host_net, DEFAULT).expect("hostNetwork under privileged");
        assert_eq!(
            zone_netns(&host_net, DEFAULT).expect("ok").as_deref(),
            Some(HOST_NETNS)
        );
        assert_eq!(zone_netns(&host_network, DEFAULT).expect("ok"), None);
        let mut host_pid = cri_spec(default_caps, &["network", "ipc", "uts", "mount"]);
        let e = check_pod_security(&host_pid, DEFAULT).expect_err("hostPID");
        assert!(e.to_string().contains("spec.hostPID"), "{e}");
        host_pid["annotations"] = json!({"rauha.dev/policy": "privileged"});
        check_pod_security(&host_pid, DEFAULT).expect("hostPID under privileged");
        let Some(v1::policy_source::Source::Inline(p)) =
            policy(&host_pid, DEFAULT).expect("ok").source
        else {
            panic!("inline")
        };
        let zone = Policy::parse("x", &p.toml).expect("valid").zone;
        assert!(zone.host_pid && !zone.host_ipc);
        // A zone preset holds the zone to itself, whatever the spec asks.
        let mut zone_preset = host_network.clone();
        zone_preset["annotations"] = json!({"rauha.dev/policy": "standard"});
        check_pod_security(&zone_preset, DEFAULT).expect("no [pod] section, no level");
    }

    #[test]
    fn bad_policy_annotation_fails_with_the_parsers_message() {
        let spec = json!({"annotations": {"rauha.dev/policy": "[network]\nmode = \"warp\"\n"}});
        let e = policy(&spec, DEFAULT).expect_err("bad mode");
        assert!(e.to_string().contains("mode"), "{e}");
        let e = policy(
            &json!({"annotations": {"rauha.dev/policy": "nope"}}),
            DEFAULT,
        )
        .expect_err("name");
        assert!(e.to_string().contains("neither a preset"), "{e}");
    }
}

#[cfg(test)]
mod metrics_tests {
    use super::*;

    #[test]
    fn rlimits_oom_score_and_devices_come_from_the_spec() {
        let process = json!({"rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 4096}],
            "oomScoreAdj": 1000});
        let s = security(&process, None);
        assert_eq!(s.rlimits.len(), 1);
        assert_eq!(
            (
                s.rlimits[0].r#type.as_str(),
                s.rlimits[0].soft,
                s.rlimits[0].hard
            ),
            ("RLIMIT_NOFILE", 1024, 4096)
        );
        assert_eq!(s.oom_score_adj, Some(1000));
        assert_eq!(security(&json!({}), None).oom_score_adj, None);
        let spec = json!({"linux": {"devices": [
            {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 438, "uid": 0, "gid": 0},
            {"path": "/dev/sda", "type": "b", "major": 8, "minor": 0}
        ]}});
        let d = devices(&spec);
        assert_eq!(d.len(), 2);
        assert_eq!(
            (d[0].path.as_str(), d[0].major, d[0].minor, d[0].file_mode),
            ("/dev/fuse", 10, 229, 0o666)
        );
        assert_eq!((d[1].r#type.as_str(), d[1].file_mode), ("b", 0o666));
    }

    #[test]
    fn a_container_gets_its_own_pid_namespace_unless_it_joins_the_pods() {
        let with = |ns: Value, kind: &str| {
            json!({"annotations": {"io.kubernetes.cri.container-type": kind},
                "linux": {"namespaces": [ns, {"type": "mount"}]}})
        };
        assert!(own_pid_namespace(&with(
            json!({"type": "pid"}),
            "container"
        )));
        assert!(!own_pid_namespace(&with(
            json!({"type": "pid", "path": "/proc/42/ns/pid"}),
            "container"
        )));
        assert!(!own_pid_namespace(&with(json!({"type": "pid"}), "sandbox")));
        assert!(!own_pid_namespace(&with(
            json!({"type": "ipc"}),
            "container"
        )));
    }
    use containerd_shim::protos::cgroups::metrics::Metrics;
    use containerd_shim::protos::protobuf::Message;
    use serde_json::json;

    /// What containerd 2.x's ListPodSandboxMetrics needs present: every
    /// section it reads (throttling, kernel, swap, OOM control), in ns.
    #[test]
    fn task_metrics_carry_every_section_containerd_reads() {
        let u = v1::Usage {
            cpu_time_us: 900,
            cpu_user_us: 600,
            cpu_system_us: 300,
            cpu_periods: 10,
            cpu_throttled_periods: 4,
            cpu_throttled_us: 77,
            memory_bytes: 4096,
            memory_kernel_bytes: 50,
            memory_swap_bytes: 64,
            memory_rss_bytes: 100,
            oom_kills: 2,
            ..Default::default()
        };
        let any = metrics(&u).expect("encode");
        assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
        let m = Metrics::parse_from_bytes(&any.value).expect("decode");
        let cpu = m.cpu.as_ref().expect("cpu");
        assert_eq!(cpu.usage.user, 600_000);
        assert_eq!(cpu.usage.kernel, 300_000);
        let t = cpu.throttling.as_ref().expect("throttling");
        assert_eq!(
            (t.periods, t.throttled_periods, t.throttled_time),
            (10, 4, 77_000)
        );
        let mem = m.memory.as_ref().expect("memory");
        assert_eq!(mem.kernel.as_ref().expect("kernel").usage, 50);
        assert_eq!(mem.swap.as_ref().expect("swap").usage, 64);
        assert_eq!(mem.total_rss, 100);
        assert_eq!(m.memory_oom_control.as_ref().expect("oom").oom_kill, 2);
    }
}
