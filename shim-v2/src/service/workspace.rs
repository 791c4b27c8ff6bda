//! A task pod's workspace (annotation `rauha.dev/workspace`, set by the
//! operator): the directory the task starts in, which the pod mounts (an
//! emptyDir), the input files put in it before the task starts (each
//! input a directory the pod mounts, a ConfigMap), and what the task
//! changed there, listed in its result.
//!
//! The shim places the inputs on the host, in the workspace's host
//! directory, never through a symlink, and keeps a copy beside the
//! container's bundle: what the workspace was before the task. The
//! changes are the workspace against that copy.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::convert;
use crate::error::SpecError;

pub const WORKSPACE_ANNOTATION: &str = "rauha.dev/workspace";
/// Beside the container's bundle: the workspace as it was before the task.
const BEFORE: &str = "rauha-workspace-before";
/// The most the inputs may hold together.
const INPUT_LIMIT: u64 = 16 << 20;

/// A container's workspace, in host paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    /// The workspace's host directory.
    pub dir: PathBuf,
    /// Each input: the host directory its files come from, and the
    /// relative directory of the workspace they go to.
    pub inputs: Vec<(PathBuf, String)>,
}

fn bad(why: impl Into<String>) -> SpecError {
    SpecError::Workspace(why.into())
}

/// The container's workspace, if its pod has one.
pub fn of(spec: &Value) -> Result<Option<Workspace>, SpecError> {
    let Some(text) = convert::annotation(spec, WORKSPACE_ANNOTATION) else {
        return Ok(None);
    };
    let v: Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON ({e})")))?;
    let mounted = |key: &str, path: &str| -> Result<PathBuf, SpecError> {
        if !path.starts_with('/') {
            return Err(bad(format!("{key} {path:?} is not an absolute path")));
        }
        convert::host_path(spec, Path::new(path))
            .filter(|h| h.is_absolute())
            .ok_or_else(|| bad(format!("no mount of the pod holds {key} {path}")))
    };
    let dir = v["dir"]
        .as_str()
        .ok_or_else(|| bad("no \"dir\""))
        .and_then(|d| mounted("dir", d))?;
    let mut inputs = Vec::new();
    for input in v["inputs"].as_array().into_iter().flatten() {
        let from = input["from"]
            .as_str()
            .ok_or_else(|| bad("an input has no \"from\""))
            .and_then(|f| mounted("input", f))?;
        let to = input["to"].as_str().unwrap_or_default().to_string();
        rauha_workspace::relative_components(&to).map_err(|e| bad(e.to_string()))?;
        inputs.push((from, to));
    }
    Ok(Some(Workspace { dir, inputs }))
}

/// Where the copy of the workspace before the task is kept.
pub fn before(bundle: &Path) -> PathBuf {
    bundle.join(BEFORE)
}

/// Puts each input's files in the workspace and in the copy beside the
/// bundle. Done once: a create asked again of a restarted shim finds the
/// copy and does nothing.
pub fn prepare(ws: &Workspace, bundle: &Path) -> Result<(), SpecError> {
    let done = before(bundle);
    if done.is_dir() {
        return Ok(());
    }
    let staging = bundle.join(format!("{BEFORE}.new"));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir(&staging)
        .map_err(|e| bad(format!("cannot make {}: {e}", staging.display())))?;
    let mut total = 0u64;
    for (from, to) in &ws.inputs {
        let files = rauha_workspace::read_files_beneath(from, INPUT_LIMIT - total.min(INPUT_LIMIT))
            .map_err(|e| bad(format!("cannot read the input {}: {e}", from.display())))?;
        for (name, content) in files {
            total += content.len() as u64;
            let name = name
                .to_str()
                .ok_or_else(|| bad(format!("an input file's name is not UTF-8: {name:?}")))?;
            let rel = if to.is_empty() {
                name.to_string()
            } else {
                format!("{to}/{name}")
            };
            for root in [&staging, &ws.dir] {
                rauha_workspace::place_file(root, &rel, &content, 0o644)
                    .map_err(|e| bad(format!("cannot place {rel} in {}: {e}", root.display())))?;
            }
        }
    }
    std::fs::rename(&staging, &done)
        .map_err(|e| bad(format!("cannot keep {}: {e}", done.display())))
}

/// What the task changed in its workspace: at most `max` changes listed
/// (the rest counted), no diffs (the result has 4 KiB).
pub fn changes(ws: &Workspace, bundle: &Path, max: usize) -> Option<rauha_workspace::Scanned> {
    let limits = rauha_workspace::Limits {
        diff_cap: 0,
        diff_total: 0,
        max_changes: max,
    };
    match rauha_workspace::compare_capped(&before(bundle), &ws.dir, &limits) {
        Ok(mut s) => {
            for c in &mut s.changes {
                c.diff = None;
                c.diff_truncated = false;
            }
            Some(s)
        }
        Err(e) => {
            log::warn!("cannot list the workspace's changes: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(annotation: &str, root: &Path) -> Value {
        json!({
            "annotations": {WORKSPACE_ANNOTATION: annotation},
            "mounts": [
                {"destination": "/workspace", "source": root.join("ws")},
                {"destination": "/run/rauha/inputs/0", "source": root.join("cm")},
            ],
        })
    }

    #[test]
    fn inputs_are_placed_once_and_changes_are_listed_against_them() {
        let root = std::env::temp_dir().join(format!("rauha-shim-ws-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for d in ["ws", "cm/..2026_1", "bundle"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("cm/..2026_1/conf.txt"), "a=1\n").unwrap();
        std::os::unix::fs::symlink("..2026_1", root.join("cm/..data")).unwrap();
        std::os::unix::fs::symlink("..data/conf.txt", root.join("cm/conf.txt")).unwrap();
        let s = spec(
            r#"{"dir": "/workspace", "inputs": [{"from": "/run/rauha/inputs/0", "to": "in"}]}"#,
            &root,
        );
        let ws = of(&s).unwrap().expect("a workspace");
        assert_eq!(ws.dir, root.join("ws"));
        let bundle = root.join("bundle");
        prepare(&ws, &bundle).unwrap();
        assert_eq!(
            std::fs::read(root.join("ws/in/conf.txt")).unwrap(),
            b"a=1\n"
        );
        // Asked again (a restarted shim): nothing moves.
        prepare(&ws, &bundle).unwrap();
        // The task edits the input and writes a file.
        std::fs::write(root.join("ws/in/conf.txt"), "a=2\n").unwrap();
        std::fs::write(root.join("ws/out.txt"), "done\n").unwrap();
        let found = changes(&ws, &bundle, 10).expect("changes");
        let listed: Vec<_> = found
            .changes
            .iter()
            .map(|c| format!("{:?} {}", c.kind, c.path))
            .collect();
        assert_eq!(listed, ["Modified in/conf.txt", "Added out.txt"]);
        assert!(found.changes.iter().all(|c| c.diff.is_none()));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_bad_workspace_annotation_is_refused_with_the_reason() {
        let root = Path::new("/nonexistent");
        for (a, why) in [
            ("nope", "not JSON"),
            (r#"{"dir": "workspace"}"#, "not an absolute path"),
            (
                r#"{"dir": "/elsewhere"}"#,
                "no mount of the pod holds dir /elsewhere",
            ),
            (
                r#"{"dir": "/workspace", "inputs": [{"from": "/run/rauha/inputs/0", "to": "../x"}]}"#,
                "not a relative path",
            ),
        ] {
            let err = of(&spec(a, root)).unwrap_err().to_string();
            assert!(err.contains(why), "{a}: {err}");
            assert!(err.starts_with("annotation rauha.dev/workspace:"), "{err}");
        }
    }
}
