//! The Helm chart (charts/rauha) and helm itself (scripts/build-helm.sh
//! builds it from e2e/go/helm): what the chart suite and the Kubernetes
//! suite render.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::{bin_dir, prerequisite, text};

pub fn helm() -> PathBuf {
    bin_dir().join("../tools/helm")
}

pub fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/rauha")
}

pub fn helm_ready() -> bool {
    prerequisite(
        helm().is_file(),
        "helm (run scripts/build-helm.sh, which builds it from e2e/go/helm/go.mod)",
    )
}

/// `helm args...`, with its cache, config and data in a temp dir of its own.
pub fn run(args: &[&str]) -> Output {
    let home = std::env::temp_dir().join(format!("rauha-helm-{}", std::process::id()));
    Command::new(helm())
        .args(args)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", helm().display()))
}

/// `helm template` of the chart as release `rauha` in `namespace`, with
/// `--set` pairs: the rendered YAML.
pub fn template(namespace: &str, sets: &[&str]) -> String {
    let chart = chart();
    let mut args = vec![
        "template",
        "rauha",
        chart.to_str().expect("utf-8"),
        "-n",
        namespace,
    ];
    for s in sets {
        args.extend(["--set", s]);
    }
    let out = run(&args);
    assert!(
        out.status.success(),
        "helm template {sets:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The documented switches, each rendered on its own by the chart suite
/// and sent to a real API server by the Kubernetes suite.
pub const SWITCHES: &[&[&str]] = &[
    &[],
    &["crds.keep=true"],
    &["crds.install=false", "aggregatedRoles.enabled=false"],
    &["operator.enabled=false"],
    &[
        "operator.replicas=1",
        "operator.podDisruptionBudget.enabled=false",
    ],
    &["apiServer=127.0.0.1:6443"],
    &["operator.digest=sha256:0000000000000000000000000000000000000000000000000000000000000000"],
    &["metrics.service.enabled=false"],
    &["runtimeClass.enabled=false"],
    &["node.enabled=false"],
    &[
        "node.enforcement=required",
        "node.podPolicy=restricted",
        "node.containerd.dropInDir=",
    ],
    &["node.excludeNodes={node-a,node-b}"],
    &["uninstall.force=true"],
    &["node.digest=sha256:1111111111111111111111111111111111111111111111111111111111111111"],
    &[
        "image.pullSecrets={regcred}",
        "image.pullPolicy=Always",
        "image.tag=v9",
    ],
];
