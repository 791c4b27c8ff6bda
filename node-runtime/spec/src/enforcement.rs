//! Enforcement layers and the strength score.
//!
//! A zone's enforcement is reported as the list of layers with, for each,
//! whether it is in force and why not. The score (0-100) is computed from
//! that list and from the policy actually applied, never from what was asked.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::policy::{NetworkMode, Policy};

/// The layers of enforcement, from the always-present base to BPF-LSM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// pid, mount, uts, ipc, cgroup and net namespaces, cgroup limits,
    /// capabilities dropped to the policy and `no_new_privs`.
    NamespacesCgroups,
    /// The zone's processes in a user namespace of their own, whose root
    /// is an unprivileged host uid.
    UserNamespace,
    /// The policy's system call filter.
    Seccomp,
    /// The policy's filesystem rules as Landlock rules.
    Landlock,
    /// cgroup-BPF socket programs for egress and cross-zone connects.
    CgroupBpf,
    /// BPF-LSM programs keyed by zone.
    BpfLsm,
}

impl Layer {
    pub const ALL: [Layer; 6] = [
        Layer::NamespacesCgroups,
        Layer::UserNamespace,
        Layer::Seccomp,
        Layer::Landlock,
        Layer::CgroupBpf,
        Layer::BpfLsm,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Layer::NamespacesCgroups => "namespaces_cgroups",
            Layer::UserNamespace => "user_namespace",
            Layer::Seccomp => "seccomp",
            Layer::Landlock => "landlock",
            Layer::CgroupBpf => "cgroup_bpf",
            Layer::BpfLsm => "bpf_lsm",
        }
    }

    pub fn parse(s: &str) -> Option<Layer> {
        Layer::ALL.into_iter().find(|l| l.as_str() == s)
    }

    /// Points this layer adds to the strength score when in force.
    fn weight(self) -> u8 {
        match self {
            Layer::NamespacesCgroups => 30,
            Layer::UserNamespace => 10,
            Layer::Seccomp => 15,
            Layer::Landlock => 10,
            Layer::CgroupBpf => 5,
            Layer::BpfLsm => 20,
        }
    }
}

/// Whether one layer is in force, and the reason when it is not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LayerStatus {
    pub layer: Layer,
    pub in_force: bool,
    /// What is applied, or why the layer is missing.
    pub detail: String,
}

/// The enforcement really in force for a zone or task.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Enforcement {
    pub layers: Vec<LayerStatus>,
    /// 0-100, from [`Enforcement::score_for`].
    pub score: u8,
    /// `minimal`, `basic`, `standard`, `hardened` or `fortress`.
    pub label: String,
}

impl Enforcement {
    /// Builds the report from the layers in force and the applied policy.
    pub fn new(layers: Vec<LayerStatus>, policy: &Policy) -> Enforcement {
        let score = Self::score_for(&layers, policy);
        Enforcement {
            layers,
            score,
            label: label(score).to_string(),
        }
    }

    /// Whether a layer is in force.
    pub fn has(&self, layer: Layer) -> bool {
        self.layers.iter().any(|l| l.layer == layer && l.in_force)
    }

    /// Layer weights of the layers in force, plus up to 10 points for what the
    /// policy locks down: no network (3), no capabilities (3), a memory and a
    /// pids limit (2), a task timeout (2).
    pub fn score_for(layers: &[LayerStatus], policy: &Policy) -> u8 {
        let mut score: u32 = layers
            .iter()
            .filter(|l| l.in_force)
            .map(|l| u32::from(l.layer.weight()))
            .sum();
        if !layers
            .iter()
            .any(|l| l.layer == Layer::NamespacesCgroups && l.in_force)
        {
            return 0;
        }
        if !matches!(
            policy.network.mode,
            NetworkMode::Bridged | NetworkMode::Host
        ) {
            score += 3;
        }
        if policy.capabilities.allowed.is_empty() {
            score += 3;
        }
        if policy.resources.memory_limit.is_some() && policy.resources.pids_max.is_some() {
            score += 2;
        }
        if policy.task.timeout.is_some() {
            score += 2;
        }
        u8::try_from(score.min(100)).unwrap_or(100)
    }
}

/// The score's band, as Kavach names them.
pub fn label(score: u8) -> &'static str {
    match score {
        0..=29 => "minimal",
        30..=49 => "basic",
        50..=69 => "standard",
        70..=84 => "hardened",
        _ => "fortress",
    }
}

/// What the daemon does when BPF-LSM cannot be loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EnforcementMode {
    /// Refuse to start without BPF-LSM.
    Required,
    /// Start with what the kernel allows, and report it.
    #[default]
    Preferred,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(layer: Layer, in_force: bool) -> LayerStatus {
        LayerStatus {
            layer,
            in_force,
            detail: String::new(),
        }
    }

    #[test]
    fn score_counts_only_layers_in_force() {
        let policy = Policy::default();
        let base = vec![
            status(Layer::NamespacesCgroups, true),
            status(Layer::BpfLsm, false),
        ];
        let with_seccomp = vec![
            status(Layer::NamespacesCgroups, true),
            status(Layer::Seccomp, true),
            status(Layer::BpfLsm, false),
        ];
        let a = Enforcement::score_for(&base, &policy);
        let b = Enforcement::score_for(&with_seccomp, &policy);
        assert_eq!(b - a, 15);
    }

    #[test]
    fn no_base_layer_means_zero() {
        let layers = vec![
            status(Layer::NamespacesCgroups, false),
            status(Layer::Seccomp, true),
        ];
        assert_eq!(Enforcement::score_for(&layers, &Policy::default()), 0);
    }

    #[test]
    fn full_stack_is_a_fortress() {
        let mut policy = Policy::default();
        policy.resources.memory_limit = Some(1 << 30);
        policy.resources.pids_max = Some(100);
        policy.task.timeout = Some(std::time::Duration::from_secs(1));
        let layers = Layer::ALL.iter().map(|l| status(*l, true)).collect();
        let e = Enforcement::new(layers, &policy);
        assert_eq!(e.score, 100);
        assert_eq!(e.label, "fortress");
    }
}
