//! Daemon records to wire types.

use rauha_api::v1;
use rauha_spec::RootSpec;

use crate::error::DaemonError;

use crate::store::{ProcessRecord, ProcessState, ZoneRecord};
use rauha_backend::{Check, Usage};

pub fn zone(z: &ZoneRecord, running: usize, enforcement: &rauha_spec::Enforcement) -> v1::Zone {
    v1::Zone {
        id: z.id.to_string(),
        name: z.name.clone(),
        state: z.state.as_str().to_string(),
        policy: Some(v1::Policy {
            toml: z.policy.to_toml(),
        }),
        root: match &z.root {
            RootSpec::HostView => "host_view".into(),
            RootSpec::Bundle { path } => format!("bundle:{path}"),
            RootSpec::Image {
                reference, digest, ..
            } => format!("image:{reference}@{digest}"),
        },
        created_ms: z.created_ms,
        task_id: z.task_id.map(|t| t.to_string()).unwrap_or_default(),
        running_processes: u32::try_from(running).unwrap_or(u32::MAX),
        enforcement: Some(enforcement.into()),
        ttl_ms: z.ttl_ms,
        ttl_remaining_ms: None,
        workspace_repo: z
            .workspace
            .as_ref()
            .map(|w| w.repo_path.clone())
            .unwrap_or_default(),
        workspace_path: z
            .workspace
            .as_ref()
            .map(|w| w.target.clone())
            .unwrap_or_default(),
        address: String::new(),
        published: Vec::new(),
    }
}

pub fn image(i: &rauha_image::ImageRecord, zones: &[String]) -> v1::Image {
    let c = &i.config;
    v1::Image {
        name: i.name.clone(),
        digest: i.digest.clone(),
        id: i.short_id().to_string(),
        size: i.size,
        created_ms: i.created_ms,
        platform: i.platform.clone(),
        config: Some(v1::ImageConfig {
            entrypoint: c.entrypoint.clone(),
            cmd: c.cmd.clone(),
            env: c.env.clone(),
            working_dir: c.working_dir.clone(),
            user: c.user.clone(),
            exposed_ports: c.exposed_ports.clone(),
            labels: c.labels.clone().into_iter().collect(),
        }),
        layers: i
            .layers
            .iter()
            .map(|l| v1::ImageLayer {
                digest: l.digest.clone(),
                media_type: l.media_type.clone(),
                size: l.size,
            })
            .collect(),
        index_digest: i.index_digest.clone().unwrap_or_default(),
        config_digest: i.config_digest.clone(),
        zones: zones.to_vec(),
    }
}

pub fn process(p: &ProcessRecord, zone_name: &str) -> v1::Process {
    v1::Process {
        id: p.id.to_string(),
        zone_id: p.zone_id.to_string(),
        zone_name: zone_name.to_string(),
        args: p.args.clone(),
        state: p.state.as_str().to_string(),
        pid: p.pid,
        host_pid: if p.state == ProcessState::Running {
            p.host_pid
        } else {
            0
        },
        has_exit_code: p.exit_code.is_some(),
        exit_code: p.exit_code.unwrap_or_default(),
        signal: p.signal.unwrap_or_default(),
        started_ms: p.started_ms,
        ended_ms: p.ended_ms,
        published: if p.state == ProcessState::Running {
            p.publish.clone()
        } else {
            Vec::new()
        },
    }
}

/// The parts of a wire process spec beyond command, environment and cwd
/// (which `validate::process_spec` checks).
pub fn process_extras(
    mut spec: rauha_spec::zone::ProcessSpec,
    wire: &v1::ProcessSpec,
) -> Result<rauha_spec::zone::ProcessSpec, DaemonError> {
    spec.user = wire.user.as_ref().map(|u| rauha_spec::zone::ProcessUser {
        uid: u.uid,
        gid: u.gid,
        groups: u.groups.clone(),
    });
    spec.terminal = wire.terminal;
    spec.root = Some(wire.root.clone()).filter(|r| !r.is_empty());
    spec.security = wire.security.as_ref().map(process_security).transpose()?;
    spec.publish = wire.publish.clone();
    Ok(spec)
}

fn process_security(
    s: &v1::ProcessSecurity,
) -> Result<rauha_spec::zone::ProcessSecurity, DaemonError> {
    let seccomp = if s.seccomp_json.is_empty() {
        None
    } else {
        let value: serde_json::Value = serde_json::from_str(&s.seccomp_json).map_err(|e| {
            DaemonError::invalid("spec.security.seccomp_json", format!("not JSON: {e}"))
        })?;
        Some(
            rauha_spec::seccomp::SeccompProfile::from_oci(&value)
                .map_err(|m| DaemonError::invalid("spec.security.seccomp_json", m))?,
        )
    };
    Ok(rauha_spec::zone::ProcessSecurity {
        bounding: s.bounding.clone(),
        effective: s.effective.clone(),
        permitted: s.permitted.clone(),
        inheritable: s.inheritable.clone(),
        ambient: s.ambient.clone(),
        no_new_privileges: s.no_new_privileges,
        seccomp,
        rlimits: s
            .rlimits
            .iter()
            .map(|r| rauha_spec::zone::Rlimit {
                kind: r.r#type.clone(),
                soft: r.soft,
                hard: r.hard,
            })
            .collect(),
        oom_score_adj: s.oom_score_adj,
    })
}

/// A container root's device nodes, each under /dev, of a device type.
pub fn root_devices(
    wire: &[v1::RootDevice],
) -> Result<Vec<rauha_backend::RootDevice>, DaemonError> {
    wire.iter()
        .enumerate()
        .map(|(i, d)| {
            let field = || format!("devices[{i}]");
            let path = std::path::PathBuf::from(&d.path);
            let under_dev = path.strip_prefix("/dev").is_ok_and(|rest| {
                !rest.as_os_str().is_empty()
                    && rest
                        .components()
                        .all(|c| matches!(c, std::path::Component::Normal(_)))
            });
            if !under_dev {
                return Err(DaemonError::invalid(
                    field(),
                    format!(
                        "{} is not a path under /dev",
                        rauha_spec::message::quote(&d.path)
                    ),
                ));
            }
            let kind = match d.r#type.as_str() {
                "c" | "u" => 'c',
                "b" => 'b',
                "p" => 'p',
                other => {
                    return Err(DaemonError::invalid(
                        field(),
                        format!(
                            "type {} is not a device type (c, b, u or p)",
                            rauha_spec::message::quote(other)
                        ),
                    ))
                }
            };
            Ok(rauha_backend::RootDevice {
                path,
                kind,
                major: d.major,
                minor: d.minor,
                mode: d.file_mode & 0o777,
                uid: d.uid,
                gid: d.gid,
            })
        })
        .collect()
}

/// A container root's wire limits as policy resources (checked by the
/// registry).
pub fn root_limits(l: Option<&v1::RootLimits>) -> rauha_backend::RootLimits {
    let Some(l) = l else {
        return Default::default();
    };
    rauha_backend::RootLimits {
        resources: rauha_spec::policy::ResourcesSection {
            cpu_shares: l.cpu_shares,
            cpu_limit: l.cpus,
            memory_limit: l.memory_bytes,
            pids_max: l.pids_max,
            disk_limit: None,
        },
        unified: l
            .unified
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

pub fn usage(u: &Usage) -> v1::Usage {
    v1::Usage {
        memory_bytes: u.memory_bytes,
        memory_limit_bytes: u.memory_limit_bytes,
        peak_memory_bytes: u.peak_memory_bytes,
        cpu_time_us: u.cpu_time_us,
        pids: u.pids,
        pids_max: u.pids_max,
        oom_kills: u.oom_kills,
        cpu_user_us: u.cpu_user_us,
        cpu_system_us: u.cpu_system_us,
        cpu_periods: u.cpu_periods,
        cpu_throttled_periods: u.cpu_throttled_periods,
        cpu_throttled_us: u.cpu_throttled_us,
        memory_rss_bytes: u.memory_rss_bytes,
        memory_cache_bytes: u.memory_cache_bytes,
        memory_mapped_file_bytes: u.memory_mapped_file_bytes,
        memory_kernel_bytes: u.memory_kernel_bytes,
        memory_swap_bytes: u.memory_swap_bytes,
    }
}

pub fn check(c: &Check) -> v1::Check {
    v1::Check {
        name: c.name.clone(),
        ok: c.ok,
        detail: c.detail.clone(),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_root_device_is_under_dev_and_of_a_device_type() {
        let dev = |path: &str, kind: &str| v1::RootDevice {
            path: path.into(),
            r#type: kind.into(),
            major: 1,
            minor: 3,
            file_mode: 0o100666,
            ..Default::default()
        };
        let ok = root_devices(&[dev("/dev/given/null", "u")]).expect("valid");
        assert_eq!((ok[0].kind, ok[0].mode), ('c', 0o666));
        for (bad, says) in [
            (dev("/etc/shadow", "c"), "not a path under /dev"),
            (dev("/dev/../etc/x", "c"), "not a path under /dev"),
            (dev("/dev", "c"), "not a path under /dev"),
            (dev("/dev/x", "q"), "not a device type"),
        ] {
            let e = root_devices(&[bad]).expect_err(says);
            assert!(
                e.to_string().contains(says) && e.to_string().contains("devices[0]"),
                "{e}"
            );
        }
    }

    use super::*;
    use crate::store::ProcessState;
    use uuid::Uuid;

    #[test]
    fn process_exit_code_zero_is_present() {
        let p = ProcessRecord {
            id: Uuid::new_v4(),
            zone_id: Uuid::new_v4(),
            args: vec!["true".into()],
            state: ProcessState::Exited,
            pid: 2,
            host_pid: 0,
            stdout_path: None,
            stdin_path: None,
            stderr_path: None,
            exit_code: Some(0),
            signal: None,
            deadline: false,
            started_ms: 1,
            ended_ms: 2,
            publish: Vec::new(),
        };
        let w = process(&p, "z");
        assert!(w.has_exit_code);
        assert_eq!(
            (w.exit_code, w.state.as_str(), w.zone_name.as_str()),
            (0, "exited", "z")
        );
    }

    #[test]
    fn zone_carries_its_policy_as_toml() {
        let z = ZoneRecord {
            id: Uuid::new_v4(),
            name: "web".into(),
            state: rauha_spec::ZoneState::Running,
            policy: rauha_spec::Policy::default(),
            root: RootSpec::Bundle { path: "/b".into() },
            created_ms: 5,
            task_id: None,
            ephemeral: false,
            handle: None,
            workspace: None,
            ttl_ms: None,
            netns: None,
            cgroup_parent: None,
            backend: String::new(),
        };
        let w = zone(&z, 3, &rauha_spec::Enforcement::default());
        assert_eq!(w.root, "bundle:/b");
        assert_eq!(w.running_processes, 3);
        let back =
            rauha_spec::Policy::parse("wire", &w.policy.expect("policy").toml).expect("parses");
        assert_eq!(back, z.policy);
    }
}
