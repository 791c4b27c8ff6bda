//! The crate table of docs/dev/architecture.md, enforced: each crate of the
//! workspace depends only on the workspace crates its row allows, and the
//! daemon names a platform backend only where it wires one (`main.rs`).
//! Needs no root; it reads `cargo metadata` and the daemon's sources.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// crate -> the workspace crates it may depend on (normal and build
/// dependencies; dev-dependencies may add test doubles).
const ALLOWED: &[(&str, &[&str])] = &[
    ("rauha-spec", &[]),
    ("rauha-fd", &[]),
    ("rauha-api", &["rauha-spec"]),
    ("rauha-guest-agent", &["rauha-fd"]),
    ("rauha-ebpf", &["rauha-spec"]),
    ("rauha-workspace", &["rauha-spec"]),
    ("rauha-image", &[]),
    ("rauha-net", &["rauha-spec"]),
    ("rauha-backend", &["rauha-spec", "rauha-guest-agent"]),
    (
        "rauha-backend-linux",
        &[
            "rauha-backend",
            "rauha-spec",
            "rauha-guest-agent",
            "rauha-ebpf",
            "rauha-fd",
        ],
    ),
    (
        "rauhad",
        &[
            "rauha-api",
            "rauha-spec",
            "rauha-backend",
            "rauha-backend-linux",
            "rauha-workspace",
            "rauha-image",
            "rauha-net",
            "rauha-guest-agent",
            "rauha-fd",
        ],
    ),
    ("rauha-cli", &["rauha-api", "rauha-spec"]),
    (
        "rauha-shim-v2",
        &["rauha-api", "rauha-spec", "rauha-fd", "rauha-workspace"],
    ),
    ("rauha-operator", &["rauha-spec"]),
    ("rauha-fuzz", &[]),
];

/// Crates that may depend on anything (they test or measure the rest).
const UNRESTRICTED: &[&str] = &["rauha-e2e", "rauha-bench"];

fn workspace_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn each_crate_depends_only_on_what_its_row_allows() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(workspace_root())
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let packages = meta["packages"].as_array().expect("packages");
    let members: BTreeSet<String> = packages
        .iter()
        .filter_map(|p| p["name"].as_str().map(String::from))
        .collect();
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut wrong = Vec::new();
    for p in packages {
        let name = p["name"].as_str().expect("name");
        if UNRESTRICTED.contains(&name) {
            continue;
        }
        let Some(may) = allowed.get(name) else {
            wrong.push(format!(
                "{name} has no row in the table (docs/dev/architecture.md, and ALLOWED here)"
            ));
            continue;
        };
        for dep in p["dependencies"].as_array().expect("dependencies") {
            let dep_name = dep["name"].as_str().expect("dependency name");
            let dev = dep["kind"].as_str() == Some("dev");
            if members.contains(dep_name) && !dev && !may.contains(&dep_name) {
                wrong.push(format!("{name} depends on {dep_name}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "dependencies the crate table forbids:\n  {}",
        wrong.join("\n  ")
    );
}

#[test]
fn only_the_daemons_main_names_a_platform_backend() {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let src = workspace_root().join("node-runtime/daemon/src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    let naming: Vec<String> = files
        .iter()
        .filter(|f| !f.ends_with("main.rs"))
        .filter(|f| {
            std::fs::read_to_string(f)
                .expect("source")
                .contains("rauha_backend_linux")
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        naming.is_empty(),
        "the daemon names the Linux backend outside main.rs: {naming:?}"
    );
}
