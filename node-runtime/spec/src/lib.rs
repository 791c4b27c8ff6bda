//! `rauha-spec` is Rauha's contract and nothing else: the TOML policy, zone and
//! task specs, the task result envelope, events, enforcement layers and the
//! strength score, with validation that names the file, line, key and fix.
//!
//! It performs no I/O (callers hand it text and get typed values or precise
//! errors back) so that the daemon, the CLI, the zone agent, the shim and the
//! operator's CRDs all share one definition of every object.

pub mod duration;
pub mod enforcement;
pub mod event;
pub mod names;
pub mod policy;
pub mod presets;
pub mod result;
pub mod size;
pub mod syscall_table;
pub mod zone;

pub use enforcement::{Enforcement, EnforcementMode, Layer, LayerStatus};
pub use event::{EnforcementEvent, Event, EventKind};
pub use policy::{Policy, PolicyError};
pub use result::{TaskResult, TaskStatus};
pub use zone::{RootSpec, ZoneSpec, ZoneState};
