//! The Zone controller.
//!
//! A `per-task` Zone is a policy and a placement that each of its tasks'
//! pods gets a zone of its own with: it is Ready as soon as it exists.
//!
//! A `shared` Zone is one long-lived zone on one node. The operator holds
//! it with a pod of its own (the *holder*: one container that sleeps, on a
//! node placement chooses, under RuntimeClass `rauha`, with annotation
//! `rauha.dev/zone-name`): the shim names that pod's zone after the Zone,
//! within the pod's namespace. A task that names the Zone is placed on the
//! holder's node, and its pod's annotation `rauha.dev/zone` makes the shim
//! put its containers in that zone rather than in one of their own. The
//! holder is owned by the Zone, so deleting the Zone deletes it (and the
//! zone with it); a holder that ends or is deleted is made again, on the
//! same node or, if that one is gone, another.
//!
//! Status: `Ready` (the holder runs and is ready, or the Zone is per-task),
//! `Degraded` (its node is not Ready, or the holder ended), the node and
//! holder pod, and the enforcement the node's rauhad applies (the node's
//! `rauha.dev/enforcement` annotations, which the node side sets).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};

use crate::crd::{
    NodeEnforcement, Zone, ZoneMode, ZoneStatus, ENFORCEMENT_ANNOTATION,
    ENFORCEMENT_SCORE_ANNOTATION, POLICY_ANNOTATION, ZONE_LABEL, ZONE_NAME_ANNOTATION,
};
use crate::placement::{self, Request};
use crate::task::{
    condition, delete_pod, event, node_load, node_views, set_condition, Ctx, Error, MANAGER,
};

/// The holder pod of a shared Zone: named from the Zone, so a restarted
/// operator finds it again.
pub fn holder_name(zone: &Zone) -> String {
    let uid = zone.uid().unwrap_or_default();
    let short: String = uid.chars().filter(|c| *c != '-').take(8).collect();
    let mut base: String = zone.name_any().chars().take(230).collect();
    while base.ends_with('-') || base.ends_with('.') {
        base.pop();
    }
    format!("{base}-zone-{short}")
}

/// The holder pod of a shared Zone, on `node`.
pub fn holder_pod(zone: &Zone, node: &str, image: &str) -> Result<Pod, Error> {
    let owner = zone
        .controller_owner_ref(&())
        .ok_or_else(|| Error::Invalid("the zone has no uid yet".into()))?;
    Ok(Pod {
        metadata: kube::api::ObjectMeta {
            name: Some(holder_name(zone)),
            namespace: zone.namespace(),
            labels: Some(BTreeMap::from([(ZONE_LABEL.to_string(), zone.name_any())])),
            annotations: Some(BTreeMap::from([
                (
                    POLICY_ANNOTATION.to_string(),
                    crate::task::pod_policy(zone.spec.preset, zone.spec.policy.as_ref())?,
                ),
                (ZONE_NAME_ANNOTATION.to_string(), zone.name_any()),
            ])),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(PodSpec {
            runtime_class_name: Some("rauha".into()),
            node_name: Some(node.to_string()),
            restart_policy: Some("Always".into()),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            tolerations: (!zone.spec.placement.tolerations.is_empty())
                .then(|| zone.spec.placement.tolerations.clone()),
            containers: vec![Container {
                name: "holder".into(),
                image: Some(image.to_string()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    })
}

pub async fn reconcile(zone: Arc<Zone>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    ctx.metrics.reconciled("zone");
    let old = zone.status.clone().unwrap_or_default();
    let mut status = old.clone();
    status.observed_generation = zone.metadata.generation;
    let generation = zone.metadata.generation;
    let action = match zone.spec.mode {
        ZoneMode::PerTask => {
            status.node = None;
            status.pod = None;
            status.enforcement = None;
            set(
                &mut status,
                (true, false),
                "PerTask",
                "each task gets a zone of its own with this policy",
                generation,
            );
            Action::await_change()
        }
        ZoneMode::Shared => shared(&zone, &ctx, &mut status).await?,
    };
    if status != old {
        write_status(&zone, &ctx, &status).await?;
        let was = ready(&old);
        let is = ready(&status);
        if was != is {
            let (t, reason, note) = if is {
                (
                    EventType::Normal,
                    "Ready",
                    format!(
                        "the zone is ready{}",
                        status
                            .node
                            .as_ref()
                            .map(|n| format!(" on node {n}"))
                            .unwrap_or_default()
                    ),
                )
            } else {
                let why = status
                    .conditions
                    .iter()
                    .find(|c| c.type_ == "Ready")
                    .map(|c| c.message.clone())
                    .unwrap_or_default();
                (EventType::Warning, "NotReady", why)
            };
            event(zone.as_ref(), &ctx, t, reason, note).await;
        }
    }
    Ok(action)
}

pub fn error_policy(zone: Arc<Zone>, err: &Error, ctx: Arc<Ctx>) -> Action {
    ctx.metrics.failed("zone");
    tracing::warn!(zone = %zone.name_any(), error = %err, "zone reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

fn ready(status: &ZoneStatus) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Sets `Ready` and `Degraded` for one reason: the message goes with
/// `Ready`, and with `Degraded` when it holds.
fn set(
    status: &mut ZoneStatus,
    (ready, degraded): (bool, bool),
    reason: &str,
    message: &str,
    generation: Option<i64>,
) {
    set_condition(
        &mut status.conditions,
        condition("Ready", ready, reason, message, generation),
    );
    let why = if degraded { message } else { "" };
    set_condition(
        &mut status.conditions,
        condition("Degraded", degraded, reason, why, generation),
    );
}

/// Keeps a shared Zone's holder pod, and says how it is.
async fn shared(zone: &Zone, ctx: &Ctx, status: &mut ZoneStatus) -> Result<Action, Error> {
    let generation = zone.metadata.generation;
    let ns = zone.namespace().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let name = holder_name(zone);
    let views = node_views(ctx).await?;
    let Some(pod) = pods.get_opt(&name).await? else {
        // Its node as before while that one can take it, else another.
        let req = Request {
            millicpu: 0,
            memory: 0,
            node_selector: zone.spec.placement.node_selector.clone(),
            tolerations: zone.spec.placement.tolerations.clone(),
        };
        let load = node_load(ctx).await?;
        let node = match status.node.as_ref().filter(|n| {
            let one: Vec<_> = views.iter().filter(|v| &v.name == *n).cloned().collect();
            placement::choose(&one, &load, &req).is_ok()
        }) {
            Some(n) => Ok(n.clone()),
            None => placement::choose(&views, &load, &req),
        };
        let node = match node {
            Ok(node) => node,
            Err(why) => {
                status.node = None;
                status.pod = None;
                status.enforcement = None;
                set(status, (false, true), "Unschedulable", &why, generation);
                return Ok(Action::requeue(Duration::from_secs(5)));
            }
        };
        let pod = holder_pod(zone, &node, &ctx.holder_image)?;
        match pods.create(&PostParams::default(), &pod).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        status.node = Some(node.clone());
        status.pod = Some(name.clone());
        status.enforcement = enforcement(&views, &node);
        set(
            status,
            (false, false),
            "Starting",
            &format!("its holder pod {name} is starting on node {node}"),
            generation,
        );
        return Ok(Action::requeue(Duration::from_secs(2)));
    };
    let node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default();
    status.node = Some(node.clone());
    status.pod = Some(name.clone());
    status.enforcement = enforcement(&views, &node);
    let pod_status = pod.status.clone().unwrap_or_default();
    let phase = pod_status.phase.as_deref().unwrap_or("Pending");
    if pod.metadata.deletion_timestamp.is_some() || matches!(phase, "Succeeded" | "Failed") {
        // Ended (or going): made again once it is gone.
        let why = format!("its holder pod {name} ended ({phase}); it is made again");
        delete_pod(&pods, &name).await?;
        set(status, (false, true), "HolderEnded", &why, generation);
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    let node_ready = views.iter().any(|v| v.name == node && v.ready);
    let pod_ready = pod_status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    if !node_ready {
        let why = format!("its node {node} is not Ready");
        set(status, (false, true), "NodeNotReady", &why, generation);
        return Ok(Action::requeue(Duration::from_secs(10)));
    }
    if !pod_ready {
        set(
            status,
            (false, false),
            "Starting",
            &format!("its holder pod {name} is {phase} on node {node}"),
            generation,
        );
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    set(
        status,
        (true, false),
        "Running",
        &format!("held by pod {name} on node {node}"),
        generation,
    );
    // The node's readiness is watched through the nodes cache, not this
    // Zone's events: look again now and then.
    Ok(Action::requeue(Duration::from_secs(30)))
}

/// The enforcement `node` reports.
fn enforcement(views: &[placement::NodeView], node: &str) -> Option<NodeEnforcement> {
    let v = views.iter().find(|v| v.name == node)?;
    let level = v.annotations.get(ENFORCEMENT_ANNOTATION)?.clone();
    let score = v
        .annotations
        .get(ENFORCEMENT_SCORE_ANNOTATION)
        .and_then(|s| s.parse().ok());
    Some(NodeEnforcement { level, score })
}

async fn write_status(zone: &Zone, ctx: &Ctx, status: &ZoneStatus) -> Result<(), Error> {
    let api: Api<Zone> = Api::namespaced(ctx.client.clone(), &zone.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": "rauha.dev/v1alpha1",
        "kind": "Zone",
        "status": status,
    });
    api.patch_status(
        &zone.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}
