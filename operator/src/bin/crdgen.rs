//! Writes the operator's CRDs, one YAML file each, into each directory
//! given, or into both places they live when none is: `crds/` (plain
//! manifests) and the Helm chart's `charts/rauha/files/crds/`:
//! `cargo run -p rauha-operator --bin crdgen`.

const DEFAULT_DIRS: &[&str] = &["crds", "charts/rauha/files/crds"];

fn main() {
    let mut dirs: Vec<String> = std::env::args().skip(1).collect();
    if let Some(flag) = dirs.iter().find(|d| d.starts_with('-')) {
        eprintln!(
            "crdgen: {flag:?} is not a directory; usage: crdgen [DIR...] (default: {})",
            DEFAULT_DIRS.join(" ")
        );
        std::process::exit(2);
    }
    if dirs.is_empty() {
        dirs = DEFAULT_DIRS.iter().map(|d| d.to_string()).collect();
    }
    for dir in &dirs {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("crdgen: cannot create {dir}: {e}");
            std::process::exit(1);
        }
        for crd in rauha_operator::crd::crds() {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let path = format!("{dir}/{name}.yaml");
            let text = rauha_operator::crd::to_yaml(&crd);
            if let Err(e) = std::fs::write(&path, text) {
                eprintln!("crdgen: cannot write {path}: {e}");
                std::process::exit(1);
            }
            println!("{path}");
        }
    }
}
