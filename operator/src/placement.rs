//! Which node a task goes to: pure, so every rule is unit-tested.
//!
//! A node qualifies when it carries `rauha.dev/ready=true`, is Ready and
//! schedulable, matches the zone's node selector, has no `NoSchedule` or
//! `NoExecute` taint the zone does not tolerate, and has room for the
//! task's requests in its allocatable CPU and memory minus what Rauha
//! placed there already. Of those, the one with the fewest tasks placed
//! wins (then the most free memory, then the name): load spreads.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;

/// What placement needs of a node.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeView {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// (What a Zone's status reads of its node: its enforcement.)
    pub annotations: BTreeMap<String, String>,
    pub ready: bool,
    pub unschedulable: bool,
    /// `(key, value, effect)`.
    pub taints: Vec<(String, Option<String>, String)>,
    pub allocatable_millicpu: u64,
    pub allocatable_memory: u64,
}

/// What Rauha already placed on a node (tasks not finished).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Load {
    pub tasks: u32,
    pub millicpu: u64,
    pub memory: u64,
}

/// What one task asks for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Request {
    pub millicpu: u64,
    pub memory: u64,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
}

/// The chosen node, or why none: one line for the task's condition.
pub fn choose(
    nodes: &[NodeView],
    load: &BTreeMap<String, Load>,
    req: &Request,
) -> Result<String, String> {
    let mut why: BTreeMap<&'static str, u32> = BTreeMap::new();
    let mut fits = Vec::new();
    for n in nodes {
        let reason =
            if n.labels.get(crate::crd::READY_LABEL).map(String::as_str) != Some("true") {
                Some("not labelled rauha.dev/ready=true")
            } else if !n.ready {
                Some("not Ready")
            } else if n.unschedulable {
                Some("cordoned")
            } else if req
                .node_selector
                .iter()
                .any(|(k, v)| n.labels.get(k) != Some(v))
            {
                Some("not matching the zone's nodeSelector")
            } else if n.taints.iter().any(|t| {
                (t.2 == "NoSchedule" || t.2 == "NoExecute") && !tolerated(t, &req.tolerations)
            }) {
                Some("tainted")
            } else {
                let used = load.get(&n.name).copied().unwrap_or_default();
                let free_cpu = n.allocatable_millicpu.saturating_sub(used.millicpu);
                let free_mem = n.allocatable_memory.saturating_sub(used.memory);
                if req.millicpu > free_cpu {
                    Some("short of CPU")
                } else if req.memory > free_mem {
                    Some("short of memory")
                } else {
                    fits.push((used.tasks, std::cmp::Reverse(free_mem), n.name.clone()));
                    None
                }
            };
        if let Some(r) = reason {
            *why.entry(r).or_default() += 1;
        }
    }
    fits.sort();
    match fits.into_iter().next() {
        Some((_, _, name)) => Ok(name),
        None if nodes.is_empty() => Err("no node in the cluster".into()),
        None => Err(format!(
            "no node can take it: {}",
            why.iter()
                .map(|(r, n)| format!("{n} {r}"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

fn tolerated(taint: &(String, Option<String>, String), tolerations: &[Toleration]) -> bool {
    tolerations.iter().any(|t| {
        let effect_ok = t
            .effect
            .as_deref()
            .is_none_or(|e| e.is_empty() || e == taint.2);
        let key_ok = t
            .key
            .as_deref()
            .is_none_or(|k| k.is_empty() || k == taint.0);
        let value_ok = match t.operator.as_deref() {
            Some("Exists") => true,
            _ => t.value.as_deref().unwrap_or("") == taint.1.as_deref().unwrap_or(""),
        };
        effect_ok && key_ok && value_ok
    })
}

/// A CPU quantity in millicores (`500m`, `2`, `1.5`).
pub fn millicpu(q: &str) -> Option<u64> {
    let q = q.trim();
    if let Some(m) = q.strip_suffix('m') {
        return m.parse().ok();
    }
    let v: f64 = q.parse().ok()?;
    (v >= 0.0).then_some((v * 1000.0).round() as u64)
}

/// A memory quantity in bytes (`256Mi`, `1Gi`, `1G`, `1000`).
pub fn bytes(q: &str) -> Option<u64> {
    let q = q.trim();
    const UNITS: &[(&str, u64)] = &[
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("K", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    for (suffix, mult) in UNITS {
        if let Some(n) = q.strip_suffix(suffix) {
            let v: f64 = n.parse().ok()?;
            return (v >= 0.0).then_some((v * *mult as f64) as u64);
        }
    }
    q.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> NodeView {
        NodeView {
            annotations: Default::default(),
            name: name.into(),
            labels: BTreeMap::from([(crate::crd::READY_LABEL.to_string(), "true".to_string())]),
            ready: true,
            unschedulable: false,
            taints: Vec::new(),
            allocatable_millicpu: 2000,
            allocatable_memory: 4 << 30,
        }
    }

    #[test]
    fn only_ready_labelled_schedulable_nodes_qualify() {
        let mut unlabelled = node("a");
        unlabelled.labels.clear();
        let mut not_ready = node("b");
        not_ready.ready = false;
        let mut cordoned = node("c");
        cordoned.unschedulable = true;
        let nodes = [unlabelled, not_ready, cordoned];
        let err = choose(&nodes, &BTreeMap::new(), &Request::default()).expect_err("none fits");
        assert!(err.contains("1 not labelled rauha.dev/ready=true"), "{err}");
        assert!(
            err.contains("1 not Ready") && err.contains("1 cordoned"),
            "{err}"
        );
        let mut ok = nodes.to_vec();
        ok.push(node("d"));
        assert_eq!(
            choose(&ok, &BTreeMap::new(), &Request::default()),
            Ok("d".into())
        );
        assert!(choose(&[], &BTreeMap::new(), &Request::default()).is_err());
    }

    #[test]
    fn load_spreads_to_the_node_with_fewest_tasks() {
        let nodes = [node("a"), node("b")];
        let load = BTreeMap::from([(
            "a".to_string(),
            Load {
                tasks: 2,
                millicpu: 0,
                memory: 0,
            },
        )]);
        assert_eq!(choose(&nodes, &load, &Request::default()), Ok("b".into()));
    }

    #[test]
    fn requests_must_fit_in_what_is_left() {
        let nodes = [node("a")];
        let load = BTreeMap::from([(
            "a".to_string(),
            Load {
                tasks: 1,
                millicpu: 1800,
                memory: 0,
            },
        )]);
        let req = Request {
            millicpu: 500,
            ..Default::default()
        };
        let err = choose(&nodes, &load, &req).expect_err("short of CPU");
        assert!(err.contains("short of CPU"), "{err}");
        let big = Request {
            memory: 5 << 30,
            ..Default::default()
        };
        assert!(choose(&nodes, &BTreeMap::new(), &big)
            .expect_err("short of memory")
            .contains("memory"));
    }

    #[test]
    fn selectors_and_taints_are_respected() {
        let mut gpu = node("gpu");
        gpu.labels.insert("pool".into(), "gpu".into());
        gpu.taints
            .push(("dedicated".into(), Some("gpu".into()), "NoSchedule".into()));
        let nodes = [node("plain"), gpu];
        let selector = Request {
            node_selector: BTreeMap::from([("pool".to_string(), "gpu".to_string())]),
            ..Default::default()
        };
        assert!(choose(&nodes, &BTreeMap::new(), &selector)
            .expect_err("tainted")
            .contains("1 tainted"));
        let tolerating = Request {
            tolerations: vec![Toleration {
                key: Some("dedicated".into()),
                operator: Some("Equal".into()),
                value: Some("gpu".into()),
                effect: Some("NoSchedule".into()),
                ..Default::default()
            }],
            ..selector
        };
        assert_eq!(
            choose(&nodes, &BTreeMap::new(), &tolerating),
            Ok("gpu".into())
        );
    }

    #[test]
    fn quantities_parse() {
        assert_eq!(millicpu("500m"), Some(500));
        assert_eq!(millicpu("2"), Some(2000));
        assert_eq!(millicpu("1.5"), Some(1500));
        assert_eq!(bytes("256Mi"), Some(256 << 20));
        assert_eq!(bytes("1G"), Some(1_000_000_000));
        assert_eq!(bytes("4096"), Some(4096));
        assert_eq!(bytes("lots"), None);
    }
}
