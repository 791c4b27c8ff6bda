//! Container roots of a bundle zone: checked here, built by the backend.

use std::path::Path;

use rauha_guest_agent::config::valid_root_name;
use rauha_spec::message::quote;

use super::ZoneRegistry;
use crate::error::DaemonError;
use rauha_backend::{RootLimits, RootMount};

impl ZoneRegistry {
    pub fn add_root(
        &self,
        zone: &str,
        name: &str,
        rootfs: &str,
        mut flags: rauha_backend::RootFlags,
        mounts: Vec<RootMount>,
        limits: &RootLimits,
    ) -> Result<bool, DaemonError> {
        check_root_request(name, rootfs, &flags, &mounts, limits)?;
        let record = self.find_zone(zone)?;
        if !record.state.can_run() {
            return Err(DaemonError::ZoneState {
                zone: record.name.clone(),
                state: record.state.as_str(),
                rule: "container roots are added to a live zone".into(),
            });
        }
        let backend = self.backends.of(&record)?;
        // Set-id bits take effect only where the pod policy lets a setuid
        // binary raise privileges.
        flags.setuid = record
            .policy
            .pod
            .security
            .is_some_and(|l| l.allows_escalation());
        let handle = record
            .handle
            .as_ref()
            .ok_or_else(|| DaemonError::ZoneState {
                zone: record.name.clone(),
                state: record.state.as_str(),
                rule: "container roots are added to a live zone".into(),
            })?;
        let own = backend.add_root(handle, name, Path::new(rootfs), &flags, &mounts, limits)?;
        if own && backend.root_cgroups_are_unified() {
            // On a unified host the container's cgroup is a new cgroup id:
            // the BPF layers learn it as the zone's before any process of
            // the container runs in it. (On v1 it has none: nothing to learn.)
            if let Err(e) = self.sync_enforcement() {
                return Err(match backend.remove_root(record.id, Some(handle), name) {
                    Ok(()) => e,
                    Err(c) => DaemonError::Cleanup {
                        primary: Box::new(e),
                        cleanup: Box::new(c.into()),
                    },
                });
            }
        }
        Ok(own)
    }

    /// Sets a container root's own limits; returns whether it has a
    /// cgroup of its own to hold them.
    pub fn update_root(
        &self,
        zone: &str,
        name: &str,
        limits: &RootLimits,
    ) -> Result<bool, DaemonError> {
        existing_root_name(name)?;
        check_limits(limits)?;
        let record = self.find_zone(zone)?;
        Ok(self
            .backends
            .of(&record)?
            .set_root_limits(record.id, name, limits)?)
    }

    pub fn root_usage(&self, zone: &str, name: &str) -> Result<rauha_backend::Usage, DaemonError> {
        existing_root_name(name)?;
        let record = self.find_zone(zone)?;
        Ok(self.backends.of(&record)?.root_usage(record.id, name)?)
    }

    pub async fn signal_root(
        &self,
        zone: &str,
        name: &str,
        signal: i32,
    ) -> Result<(), DaemonError> {
        existing_root_name(name)?;
        if !(1..=64).contains(&signal) {
            return Err(DaemonError::invalid(
                "signal",
                format!("{signal} is not a signal number (1-64)"),
            ));
        }
        let record = self.find_zone(zone)?;
        let live = self
            .live_zone(&record.id)
            .ok_or_else(|| DaemonError::NoAgent {
                zone: record.name.clone(),
                hint: "",
            })?;
        live.link.signal_root(name, signal).await?;
        Ok(())
    }

    pub fn remove_root(&self, zone: &str, name: &str) -> Result<(), DaemonError> {
        existing_root_name(name)?;
        let record = self.find_zone(zone)?;
        if record.state == rauha_spec::ZoneState::Paused {
            // Frozen processes do not die of SIGKILL (cgroup v1).
            return Err(DaemonError::ZoneState {
                zone: record.name.clone(),
                state: record.state.as_str(),
                rule: format!("resume it before removing container root {name:?}"),
            });
        }
        Ok(self
            .backends
            .of(&record)?
            .remove_root(record.id, record.handle.as_ref(), name)?)
    }
}

/// The name of a root that was added (AddRoot checks new names).
fn existing_root_name(name: &str) -> Result<(), DaemonError> {
    if valid_root_name(name) {
        Ok(())
    } else {
        Err(DaemonError::invalid(
            "name",
            format!("{} is not a root name", quote(name)),
        ))
    }
}

/// A container's limits, as a user would get them wrong.
/// What an AddRoot request must be before any zone is looked up: its
/// paths, name, limits and mounts.
pub fn check_root_request(
    name: &str,
    rootfs: &str,
    flags: &rauha_backend::RootFlags,
    mounts: &[RootMount],
    limits: &RootLimits,
) -> Result<(), DaemonError> {
    for (field, paths) in [
        ("masked_paths", &flags.masked_paths),
        ("readonly_paths", &flags.readonly_paths),
    ] {
        for (i, p) in paths.iter().enumerate() {
            check_path(&format!("{field}[{i}]"), p)?;
        }
    }
    if !valid_root_name(name) {
        return Err(DaemonError::invalid(
            "name",
            format!(
                "{}: use 1-128 letters, digits, '-', '_' or '.'",
                quote(name)
            ),
        ));
    }
    check_limits(limits)?;
    if !Path::new(rootfs).is_absolute() || !Path::new(rootfs).is_dir() {
        return Err(DaemonError::invalid(
            "rootfs",
            format!("{} is not an absolute path to a directory", quote(rootfs)),
        ));
    }
    for (i, m) in mounts.iter().enumerate() {
        check_path(&format!("mounts[{i}].destination"), &m.destination)?;
        let bind = m.kind == "bind" || m.options.iter().any(|o| o == "bind" || o == "rbind");
        if bind {
            check_path(&format!("mounts[{i}].source"), &m.source)?;
        }
    }
    Ok(())
}

/// A path of a container root's request: absolute, one line, at most
/// PATH_MAX.
fn check_path(field: &str, path: &Path) -> Result<(), DaemonError> {
    let shown = path.to_string_lossy();
    let problem = if !path.is_absolute() {
        "is not absolute; start it with '/'"
    } else if shown.chars().any(char::is_control) {
        "holds a control character; give a plain path"
    } else if shown.len() > crate::validate::MAX_PATH_BYTES {
        "is longer than Linux allows for a path"
    } else {
        return Ok(());
    };
    Err(DaemonError::invalid(
        field,
        format!("{} {problem}", quote(&shown)),
    ))
}

fn check_limits(limits: &RootLimits) -> Result<(), DaemonError> {
    for (file, value) in &limits.unified {
        // Only a controller's own files, by a plain name: never one that
        // moves processes (cgroup.procs) or reaches another directory.
        let known = ["memory.", "pids.", "cpu."]
            .iter()
            .any(|c| file.strip_prefix(c).is_some_and(|rest| !rest.is_empty()));
        let plain = file.len() <= 64
            && file
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '_');
        if !known || !plain || file.contains("..") {
            return Err(DaemonError::invalid(
                "limits.unified",
                format!(
                    "{} is not a memory, pids or cpu file of a cgroup v2 cgroup",
                    quote(file)
                ),
            ));
        }
        if value.len() > 256 || value.contains('\n') {
            return Err(DaemonError::invalid(
                format!("limits.unified[{}]", quote(file)),
                "a value is one line of at most 256 bytes",
            ));
        }
    }
    let l = &limits.resources;
    if l.memory_limit == Some(0) {
        return Err(DaemonError::invalid(
            "limits.memory_bytes",
            "0 bytes; leave it unset for no limit of the container's own",
        ));
    }
    if l.pids_max == Some(0) {
        return Err(DaemonError::invalid(
            "limits.pids_max",
            "0 processes; leave it unset for no limit of the container's own",
        ));
    }
    if let Some(s) = l.cpu_shares {
        if !(2..=262_144).contains(&s) {
            return Err(DaemonError::invalid(
                "limits.cpu_shares",
                format!("{s} is outside 2-262144"),
            ));
        }
    }
    if let Some(c) = l.cpu_limit {
        // The kernel's smallest quota is 1 ms of the 100 ms period.
        if !c.is_finite() || !(0.01..=65_536.0).contains(&c) {
            return Err(DaemonError::invalid(
                "limits.cpus",
                format!("{c} is not a number of cores from 0.01 to 65536"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unified(file: &str, value: &str) -> RootLimits {
        let mut l = RootLimits::default();
        l.unified.insert(file.into(), value.into());
        l
    }

    #[test]
    fn unified_files_are_a_controllers_own() {
        assert!(check_limits(&unified("memory.oom.group", "1")).is_ok());
        assert!(check_limits(&unified("cpu.weight", "100")).is_ok());
        for bad in [
            "cgroup.procs",
            "cgroup.subtree_control",
            "memory.",
            "memory.max/../../cgroup.procs",
            "io.max",
            "Memory.max",
        ] {
            let e = check_limits(&unified(bad, "1")).expect_err(bad);
            assert!(e.to_string().contains("limits.unified"), "{e}");
        }
        assert!(check_limits(&unified("memory.high", "1\n2")).is_err());
    }
}
