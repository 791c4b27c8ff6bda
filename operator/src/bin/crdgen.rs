//! Writes the operator's CRDs, one YAML file each, into the directory given
//! (`crds/`): `cargo run -p rauha-operator --bin crdgen -- crds`.

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "crds".into());
    if let Err(e) = std::fs::create_dir_all(&dir) {
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
