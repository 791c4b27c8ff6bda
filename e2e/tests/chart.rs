//! The Helm chart (charts/rauha) with helm itself (built from its Go module
//! by scripts/build-helm.sh): it lints, renders for the default values and
//! each documented switch, and a values file with a wrong type or an
//! unknown key fails with the schema's message. The Kubernetes suite sends
//! what it renders to a real API server (server-side dry run).

use std::path::Path;
use std::process::Command;

use rauha_e2e::chart::{chart, helm_ready, run, SWITCHES};
use rauha_e2e::text;

fn template(sets: &[&str]) -> String {
    rauha_e2e::chart::template("rauha-system", sets)
}

/// The kinds (and names) of a rendered stream.
fn kinds(yaml: &str) -> Vec<String> {
    yaml.split("\n---")
        .filter_map(|doc| {
            let kind = doc.lines().find_map(|l| l.strip_prefix("kind: "))?;
            Some(kind.trim().to_string())
        })
        .collect()
}

#[test]
fn the_chart_lints_and_renders_for_each_switch() {
    if !helm_ready() {
        return;
    }
    let lint = run(&["lint", "--strict", chart().to_str().expect("utf-8")]);
    assert!(
        lint.status.success(),
        "helm lint: {}{}",
        text(&lint.stdout),
        text(&lint.stderr)
    );
    let all = template(&[]);
    let k = kinds(&all);
    for want in [
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "DaemonSet",
        "Job",
        "PodDisruptionBudget",
        "Service",
        "RuntimeClass",
    ] {
        assert!(k.iter().any(|x| x == want), "{want} in {k:?}");
    }
    assert_eq!(
        k.iter()
            .filter(|x| *x == "CustomResourceDefinition")
            .count(),
        2
    );
    assert!(all.contains("replicas: 2"), "two operator replicas");
    assert!(
        all.contains("rauha.dev/ready: \"true\""),
        "the RuntimeClass selects ready nodes"
    );
    assert!(
        all.contains("ghcr.io/rauha-dev/rauha/operator:0.1.0"),
        "the image from appVersion"
    );
    assert!(
        !all.contains("helm.sh/resource-policy"),
        "CRDs go with the release by default"
    );
    for sets in SWITCHES {
        let out = template(sets);
        let k = kinds(&out);
        match sets.first().copied() {
            Some("crds.keep=true") => assert!(out.contains("helm.sh/resource-policy: keep")),
            Some("crds.install=false") => {
                assert!(!k.iter().any(|x| x == "CustomResourceDefinition"))
            }
            Some("operator.enabled=false") => assert!(!k.iter().any(|x| x == "Deployment")),
            Some("apiServer=127.0.0.1:6443") => {
                // The operator's pods and the uninstall hook's go to the
                // node's network (the node pods are there anyway).
                assert_eq!(out.matches("hostNetwork: true").count(), 3, "{out}");
                assert_eq!(out.matches("value: \"6443\"").count(), 3, "{out}");
            }
            Some("node.enabled=false") => {
                assert!(!k.iter().any(|x| x == "DaemonSet" || x == "Job"), "{out}")
            }
            Some("node.enforcement=required") => {
                assert!(
                    out.contains("--enforcement=required")
                        && out.contains("--pod-policy=restricted")
                        && !out.contains("--containerd-dropin-dir"),
                    "{out}"
                )
            }
            Some("node.excludeNodes={node-a,node-b}") => {
                assert!(
                    out.matches("operator: NotIn").count() == 2
                        && out.contains("values: [\"node-b\"]"),
                    "{out}"
                )
            }
            Some("uninstall.force=true") => assert!(out.contains("- --force"), "{out}"),
            Some(d) if d.starts_with("node.digest=") => {
                assert!(out.contains("rauha/node@sha256:1111"), "{out}")
            }
            Some(d) if d.starts_with("operator.digest=") => {
                assert!(out.contains("rauha/operator@sha256:0000"), "{out}")
            }
            Some("runtimeClass.enabled=false") => assert!(!k.iter().any(|x| x == "RuntimeClass")),
            Some("image.pullSecrets={regcred}") => {
                assert!(
                    out.contains("- name: regcred") && out.contains(":v9"),
                    "{out}"
                )
            }
            _ => {}
        }
    }
    // The ServiceMonitor needs the Prometheus Operator's CRD: rendered only.
    let monitored = template(&["metrics.serviceMonitor.enabled=true"]);
    assert!(kinds(&monitored).iter().any(|x| x == "ServiceMonitor"));
}

#[test]
fn wrong_values_fail_with_the_schemas_message() {
    if !helm_ready() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("rauha-chart-values-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let chart = chart();
    for (values, expect) in [
        ("operator:\n  replicas: two\n", "replicas"),
        ("operator:\n  replica: 2\n", "replica"),
        ("image:\n  pullPolicy: Sometimes\n", "pullPolicy"),
        ("runtimeClass:\n  name: Not_A_Name\n", "name"),
        ("bogus: true\n", "bogus"),
        ("node:\n  enforcement: strict\n", "enforcement"),
        ("node:\n  podPolicy: lax\n", "podPolicy"),
        ("node:\n  installDir: opt/rauha\n", "installDir"),
        (
            "node:\n  containerd:\n    restartCommand: []\n",
            "restartCommand",
        ),
        ("uninstall:\n  force: \"yes\"\n", "force"),
    ] {
        let file = dir.join("values.yaml");
        std::fs::write(&file, values).expect("write values");
        let out = run(&[
            "template",
            "rauha",
            chart.to_str().expect("utf-8"),
            "-f",
            file.to_str().expect("utf-8"),
        ]);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{values:?} was accepted");
        assert!(
            err.contains("schema") && err.contains(expect),
            "{values:?}: {err}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// deploy/kubernetes/rauha.yaml is the chart rendered with its defaults
/// (scripts/render-deploy.sh): a changed chart without it fails here.
#[test]
fn the_plain_manifests_are_the_chart_rendered() {
    if !helm_ready() {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(root.join("scripts/render-deploy.sh"))
        .arg("--stdout")
        .current_dir(&root)
        .output()
        .expect("render-deploy.sh");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let on_disk =
        std::fs::read_to_string(root.join("deploy/kubernetes/rauha.yaml")).unwrap_or_default();
    assert!(
        text(&out.stdout) == on_disk,
        "deploy/kubernetes/rauha.yaml is stale: run scripts/render-deploy.sh"
    );
}
