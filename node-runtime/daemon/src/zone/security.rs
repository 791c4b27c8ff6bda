//! A pod container's own capabilities, privileges and seccomp profile (its
//! OCI spec's, through the shim), held to its zone's pod policy and put in
//! the form the zone agent applies.

use rauha_guest_agent::protocol::{
    SeccompAct, SeccompChoice, SeccompCmp, SeccompCmpOp, SeccompRule, Security,
};
use rauha_spec::names::{capability_number, rlimit_number, syscall_number, CAPABILITIES, RLIMITS};
use rauha_spec::policy::Policy;
use rauha_spec::seccomp::{SeccompAction, SeccompOp, SeccompProfile, DEFAULT_ERRNO};
use rauha_spec::zone::ProcessSecurity;

use crate::error::DaemonError;

/// What the agent applies to a process that asks for `asked` in a zone
/// under `policy`. A policy without `[pod]` (a task's or a zone's, or a
/// pod given a zone preset) holds every process to itself: `None`.
pub fn for_process(
    zone: &str,
    policy: &Policy,
    asked: Option<&ProcessSecurity>,
) -> Result<Option<Security>, DaemonError> {
    let (Some(asked), Some(level)) = (asked, policy.pod.security) else {
        return Ok(None);
    };
    let mask = |set: &[String]| -> Result<u64, DaemonError> {
        set.iter().try_fold(0u64, |m, c| {
            capability_number(c)
                .filter(|n| *n < 64)
                .map(|n| m | (1u64 << n))
                .ok_or_else(|| {
                    DaemonError::invalid(
                        "spec.security",
                        format!(
                            "{} is not a Linux capability",
                            rauha_spec::message::quote(c)
                        ),
                    )
                })
        })
    };
    let sets = [
        mask(&asked.bounding)?,
        mask(&asked.effective)?,
        mask(&asked.permitted)?,
        mask(&asked.inheritable)?,
        mask(&asked.ambient)?,
    ];
    // The policy was validated: its names are capabilities.
    let ceiling = mask(&policy.capabilities.allowed)?;
    let beyond = sets.iter().fold(0, |all, s| all | s) & !ceiling;
    if beyond != 0 {
        let names: Vec<&str> = CAPABILITIES
            .iter()
            .enumerate()
            .filter(|(n, _)| beyond & (1u64 << n) != 0)
            .map(|(_, name)| *name)
            .collect();
        return Err(DaemonError::PodPolicy {
            zone: zone.to_string(),
            message: format!(
                "pod policy {:?} does not allow {} (its capabilities.allowed)",
                level.name(),
                names.join(", ")
            ),
        });
    }
    let seccomp = match &asked.seccomp {
        Some(profile) => SeccompChoice::Profile(by_number(profile)),
        None if level.filters_unconfined() => SeccompChoice::Zone,
        None => SeccompChoice::Unconfined,
    };
    let mut rlimits = Vec::new();
    for r in &asked.rlimits {
        let Some(number) = rlimit_number(&r.kind) else {
            return Err(DaemonError::invalid(
                "spec.security.rlimits",
                format!(
                    "{} is not a resource limit ({})",
                    rauha_spec::message::quote(&r.kind),
                    RLIMITS.join(", ")
                ),
            ));
        };
        if r.soft > r.hard {
            return Err(DaemonError::invalid(
                "spec.security.rlimits",
                format!("{}: soft {} is above hard {}", r.kind, r.soft, r.hard),
            ));
        }
        rlimits.push((number, r.soft, r.hard));
    }
    if let Some(adj) = asked.oom_score_adj.filter(|a| !(-1000..=1000).contains(a)) {
        return Err(DaemonError::invalid(
            "spec.security.oom_score_adj",
            format!("{adj} is outside -1000..1000"),
        ));
    }
    let [bounding, effective, permitted, inheritable, ambient] = sets;
    Ok(Some(Security {
        rlimits,
        oom_score_adj: asked.oom_score_adj,
        bounding,
        effective,
        permitted,
        inheritable,
        ambient,
        no_new_privileges: asked.no_new_privileges || !level.allows_escalation(),
        seccomp,
    }))
}

fn act(action: SeccompAction, errno: Option<u32>) -> SeccompAct {
    match action {
        SeccompAction::Allow => SeccompAct::Allow,
        SeccompAction::Errno => SeccompAct::Errno(errno.unwrap_or(DEFAULT_ERRNO)),
        SeccompAction::KillThread => SeccompAct::KillThread,
        SeccompAction::KillProcess => SeccompAct::KillProcess,
        SeccompAction::Trap => SeccompAct::Trap,
        SeccompAction::Trace => SeccompAct::Trace(errno.unwrap_or(DEFAULT_ERRNO)),
        SeccompAction::Log => SeccompAct::Log,
    }
}

/// The profile by system call number. Calls this architecture does not
/// have are left out, as runc leaves them out.
fn by_number(profile: &SeccompProfile) -> rauha_guest_agent::protocol::Seccomp {
    let mut rules = Vec::new();
    for s in &profile.syscalls {
        let args: Vec<SeccompCmp> = s
            .args
            .iter()
            .map(|a| match a.op {
                SeccompOp::MaskedEqual => SeccompCmp {
                    index: a.index,
                    op: SeccompCmpOp::MaskedEq(a.value),
                    value: a.value_two,
                },
                op => SeccompCmp {
                    index: a.index,
                    op: match op {
                        SeccompOp::NotEqual => SeccompCmpOp::Ne,
                        SeccompOp::LessThan => SeccompCmpOp::Lt,
                        SeccompOp::LessOrEqual => SeccompCmpOp::Le,
                        SeccompOp::Equal => SeccompCmpOp::Eq,
                        SeccompOp::GreaterOrEqual => SeccompCmpOp::Ge,
                        SeccompOp::GreaterThan | SeccompOp::MaskedEqual => SeccompCmpOp::Gt,
                    },
                    value: a.value,
                },
            })
            .collect();
        for name in &s.names {
            if let Some(nr) = syscall_number(name) {
                rules.push(SeccompRule {
                    nr,
                    action: act(s.action, s.errno_ret),
                    args: args.clone(),
                });
            }
        }
    }
    rauha_guest_agent::protocol::Seccomp {
        default: act(profile.default_action, profile.default_errno_ret),
        rules,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> Policy {
        rauha_spec::presets::load(name)
            .expect("preset")
            .expect("valid")
    }

    fn default_caps() -> ProcessSecurity {
        let caps: Vec<String> = rauha_spec::pod_security::BASELINE_CAPABILITIES
            .iter()
            .map(|s| s.to_string())
            .collect();
        ProcessSecurity {
            bounding: caps.clone(),
            effective: caps.clone(),
            permitted: caps,
            ..ProcessSecurity::default()
        }
    }

    #[test]
    fn resource_limits_and_the_oom_score_go_to_the_agent_by_number() {
        let asked = ProcessSecurity {
            rlimits: vec![rauha_spec::zone::Rlimit {
                kind: "RLIMIT_NOFILE".into(),
                soft: 1024,
                hard: 4096,
            }],
            oom_score_adj: Some(-997),
            ..default_caps()
        };
        let s = for_process("z", &pod("baseline"), Some(&asked))
            .expect("valid")
            .expect("a pod policy");
        assert_eq!(s.rlimits, vec![(7, 1024, 4096)]);
        assert_eq!(s.oom_score_adj, Some(-997));
        for (bad, field) in [
            (
                ProcessSecurity {
                    rlimits: vec![rauha_spec::zone::Rlimit {
                        kind: "RLIMIT_WHATEVER".into(),
                        soft: 1,
                        hard: 1,
                    }],
                    ..default_caps()
                },
                "RLIMIT_WHATEVER",
            ),
            (
                ProcessSecurity {
                    rlimits: vec![rauha_spec::zone::Rlimit {
                        kind: "RLIMIT_NOFILE".into(),
                        soft: 10,
                        hard: 1,
                    }],
                    ..default_caps()
                },
                "soft 10 is above hard 1",
            ),
            (
                ProcessSecurity {
                    oom_score_adj: Some(5000),
                    ..default_caps()
                },
                "5000",
            ),
        ] {
            let e = for_process("z", &pod("baseline"), Some(&bad)).expect_err(field);
            assert!(e.to_string().contains(field), "{e}");
        }
    }

    #[test]
    fn a_pod_policy_takes_the_specs_sets_and_refuses_more() {
        let s = for_process("z", &pod("baseline"), Some(&default_caps()))
            .expect("within baseline")
            .expect("a pod policy");
        assert_ne!(s.effective & (1 << 10), 0, "CAP_NET_BIND_SERVICE");
        assert_eq!(s.ambient, 0);
        assert!(!s.no_new_privileges, "baseline lets setuid binaries work");
        assert_eq!(s.seccomp, SeccompChoice::Zone);
        let mut admin = default_caps();
        admin.bounding.push("CAP_SYS_ADMIN".into());
        let e = for_process("z", &pod("baseline"), Some(&admin)).expect_err("beyond");
        assert!(e.to_string().contains("CAP_SYS_ADMIN"), "{e}");
        let s = for_process("z", &pod("privileged"), Some(&admin))
            .expect("privileged")
            .expect("a pod policy");
        assert_eq!(s.seccomp, SeccompChoice::Unconfined);
        // Restricted: no escalation, whatever the spec says.
        let s = for_process("z", &pod("restricted"), Some(&ProcessSecurity::default()))
            .expect("nothing asked")
            .expect("a pod policy");
        assert!(s.no_new_privileges);
        // A zone policy holds the process to itself.
        assert!(for_process("z", &pod("standard"), Some(&admin))
            .expect("ignored")
            .is_none());
    }

    #[test]
    fn a_profile_goes_by_number() {
        let profile = SeccompProfile::from_oci(&serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                {"names": ["read", "no_such_call"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
                {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]}))
        .expect("valid");
        let p = by_number(&profile);
        assert_eq!(p.default, SeccompAct::Errno(1));
        assert_eq!(p.rules.len(), 3, "the unknown call is left out");
        assert_eq!(p.rules[0].nr, 0);
        assert_eq!(p.rules[1].args[0].op, SeccompCmpOp::MaskedEq(2114060288));
        assert_eq!(p.rules[2].action, SeccompAct::Errno(38));
    }
}
