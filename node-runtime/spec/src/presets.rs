//! The policy presets shipped in `policies/`, compiled in so that a preset
//! name works wherever the binary runs.

use crate::policy::{Policy, PolicyError};

/// `(name, TOML text)` of each preset.
pub const PRESETS: &[(&str, &str)] = &[
    ("minimal", include_str!("../../../policies/minimal.toml")),
    ("standard", include_str!("../../../policies/standard.toml")),
    ("strict", include_str!("../../../policies/strict.toml")),
    // Pod policies: Kubernetes' Pod Security Standards (`[pod] security`).
    (
        "privileged",
        include_str!("../../../policies/privileged.toml"),
    ),
    ("baseline", include_str!("../../../policies/baseline.toml")),
    (
        "restricted",
        include_str!("../../../policies/restricted.toml"),
    ),
];

/// The default preset of a task or zone that names none.
pub const DEFAULT_PRESET: &str = "standard";

/// The default policy of a pod that names none (a node may set another).
pub const DEFAULT_POD_PRESET: &str = "baseline";

/// The names of the presets, for error messages.
pub fn names() -> Vec<&'static str> {
    PRESETS.iter().map(|(n, _)| *n).collect()
}

/// The pod policies among the presets: Kubernetes' Pod Security
/// Standards, for a pod's zone only.
pub const POD_PRESETS: &[&str] = &["privileged", "baseline", "restricted"];

/// The presets a zone or task may take (all but the pod policies).
pub fn zone_names() -> Vec<&'static str> {
    names()
        .into_iter()
        .filter(|n| !POD_PRESETS.contains(n))
        .collect()
}

/// The text of a preset by name.
pub fn text(name: &str) -> Option<&'static str> {
    PRESETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// A parsed preset.
pub fn load(name: &str) -> Option<Result<Policy, PolicyError>> {
    text(name).map(|t| Policy::parse(&format!("policies/{name}.toml"), t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_parses() {
        for (name, _) in PRESETS {
            let policy = load(name)
                .expect("listed")
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(policy.zone.name.as_deref(), Some(*name));
            // The pod presets are named after the level they hold pods to.
            assert_eq!(
                policy.pod.security.map(|l| l.name()),
                crate::pod_security::Level::parse(name).map(|l| l.name())
            );
        }
        let baseline = load(DEFAULT_POD_PRESET).expect("listed").expect("valid");
        let ceiling: Vec<&str> = baseline
            .capabilities
            .allowed
            .iter()
            .map(String::as_str)
            .collect();
        assert_eq!(ceiling, crate::pod_security::BASELINE_CAPABILITIES);
        let all = load("privileged").expect("listed").expect("valid");
        assert_eq!(
            all.capabilities.allowed.len(),
            crate::names::CAPABILITIES.len()
        );
        assert!(all.syscalls.deny.is_empty());
    }

    #[test]
    fn what_a_policy_leaves_out_is_standards() {
        let mut standard = load("standard").expect("listed").expect("valid");
        standard.zone.name = None;
        // Left out, the output limit is DEFAULT_MAX_OUTPUT: standard's 1Mi.
        assert_eq!(
            standard.task.max_output,
            Some(crate::policy::DEFAULT_MAX_OUTPUT)
        );
        standard.task.max_output = None;
        let empty = Policy::parse("empty.toml", "").expect("an empty policy is valid");
        assert_eq!(empty, standard, "an empty policy is the standard preset");
        assert_eq!(Policy::default(), standard);
        let partial = Policy::parse("p.toml", "[resources]\ncpu_limit = 2.0\n").expect("valid");
        assert_eq!(
            partial.resources.memory_limit,
            standard.resources.memory_limit
        );
        assert_eq!(partial.syscalls, standard.syscalls);
    }

    /// A pod's zone takes the pod's limits, as under runc: a pod policy
    /// that sets no memory or process limit gives the zone none of its own
    /// (not standard's 1Gi and 512), also once rendered and read again.
    #[test]
    fn pod_policies_leave_limits_to_the_pod() {
        for name in crate::presets::POD_PRESETS {
            let pod = load(name).expect("listed").expect("valid");
            assert_eq!(
                (pod.resources.memory_limit, pod.resources.pids_max),
                (None, None),
                "{name}"
            );
            let again = Policy::parse("again.toml", &pod.to_toml()).expect("valid");
            assert_eq!(again.resources, pod.resources, "{name}");
        }
        let capped = Policy::parse(
            "capped.toml",
            "[pod]\nsecurity = \"baseline\"\n[resources]\nmemory_limit = \"2Gi\"\n",
        )
        .expect("valid");
        assert_eq!(capped.resources.memory_limit, Some(2 << 30));
        assert_eq!(capped.resources.pids_max, None);
    }

    #[test]
    fn strict_is_stricter_than_standard() {
        let standard = load("standard").expect("listed").expect("valid");
        let strict = load("strict").expect("listed").expect("valid");
        assert!(strict.syscalls.deny.len() > standard.syscalls.deny.len());
        assert!(strict.resources.pids_max < standard.resources.pids_max);
    }
}
