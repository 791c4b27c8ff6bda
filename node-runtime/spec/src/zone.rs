//! Zone and task specs, and the zone lifecycle state.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::policy::Policy;

/// Where a zone's root filesystem comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum RootSpec {
    /// Read-only binds of the host paths the policy lets the zone read.
    #[default]
    HostView,
    /// An OCI bundle: a directory with `config.json` and its `root.path`.
    Bundle { path: String },
}

/// What a zone is made from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ZoneSpec {
    pub name: String,
    pub policy: Policy,
    pub root: RootSpec,
}

/// Where a zone is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ZoneState {
    /// Recorded; kernel objects being made.
    Creating,
    /// The zone agent is up and accepts work.
    Running,
    /// Being torn down.
    Deleting,
}

impl ZoneState {
    pub fn as_str(self) -> &'static str {
        match self {
            ZoneState::Creating => "creating",
            ZoneState::Running => "running",
            ZoneState::Deleting => "deleting",
        }
    }

    /// Work can be started only in a running zone.
    pub fn can_run(self) -> bool {
        self == ZoneState::Running
    }

    /// A zone can be deleted in any state: a half-made zone must be removable.
    pub fn can_delete(self) -> bool {
        true
    }
}

/// One piece of work: the command, its environment and working directory.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct ProcessSpec {
    pub args: Vec<String>,
    /// `KEY=VALUE` pairs: the whole environment (nothing is inherited).
    pub env: Vec<String>,
    /// Working directory inside the zone; `/` when empty.
    pub cwd: String,
}
