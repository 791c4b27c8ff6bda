//! The SandboxTask controller: places a task on a node as a pod under
//! RuntimeClass `rauha`, follows the pod, and ends the task with the
//! result its node reported.
//!
//! The reconcile is thin and idempotent: the pod's name comes from the
//! task's (a restarted operator finds the pod it made, never makes a
//! second), every status write is a server-side apply of the whole status,
//! and what the task's pod says decides the phase.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvVar as PodEnvVar, KeyToPath, Node,
    Pod, PodSpec, ResourceRequirements, SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::finalizer::{finalizer, Event as Finalized};
use kube::{Api, Client, Resource, ResourceExt};

use crate::crd::{
    Phase, SandboxTask, SandboxTaskStatus, Zone, INPUTS_DIR, POLICY_ANNOTATION, SECRETS_DIR,
    SECRET_ENV_ANNOTATION, TASK_LABEL, WORKSPACE_ANNOTATION, WORKSPACE_DIR, ZONE_ANNOTATION,
};
use crate::metrics::Metrics;
use crate::placement::{self, Load, NodeView, Request};

pub const FINALIZER: &str = "rauha.dev/cleanup";
pub const MANAGER: &str = "rauha-operator";
/// The most a task's workspace may hold (kubelet evicts the pod past it):
/// the `standard` policy's disk limit.
pub const WORKSPACE_SIZE_LIMIT: &str = "4Gi";
/// Longest stdout or stderr a status keeps; `kubectl logs` has the rest.
pub const MAX_STATUS_OUTPUT: usize = 1024;

/// The operator's watch caches of nodes and of task pods.
pub struct Caches {
    pub nodes: kube::runtime::reflector::Store<Node>,
    pub pods: kube::runtime::reflector::Store<Pod>,
}

pub struct Ctx {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// None in the tests against a scripted API server.
    pub caches: Option<Caches>,
    /// Failed reconciles in a row, by task (namespace/name): the backoff.
    pub failures: std::sync::Mutex<BTreeMap<String, u32>>,
    /// The image of a shared zone's holder pod (one that sleeps).
    pub holder_image: String,
}

/// The holder image when none is given: Kubernetes' own pause image.
pub const DEFAULT_HOLDER_IMAGE: &str = "registry.k8s.io/pause:3.10";

impl Ctx {
    pub fn new(client: Client, recorder: Recorder, metrics: Arc<Metrics>) -> Ctx {
        Ctx {
            client,
            recorder,
            metrics,
            caches: None,
            failures: Default::default(),
            holder_image: DEFAULT_HOLDER_IMAGE.into(),
        }
    }

    pub fn with_holder_image(mut self, image: String) -> Ctx {
        self.holder_image = image;
        self
    }

    pub fn with_caches(mut self, caches: Caches) -> Ctx {
        self.caches = Some(caches);
        self
    }
}

/// How long after its `n`th failure in a row a task is tried again: 1 s,
/// doubling, at most 5 minutes.
pub fn backoff(n: u32) -> Duration {
    Duration::from_secs(1u64 << n.saturating_sub(1).min(9)).min(Duration::from_secs(300))
}

fn key(task: &SandboxTask) -> String {
    format!(
        "{}/{}",
        task.namespace().unwrap_or_default(),
        task.name_any()
    )
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Invalid(String),
}

pub async fn reconcile(
    task: Arc<SandboxTask>,
    ctx: Arc<Ctx>,
) -> Result<Action, kube::runtime::finalizer::Error<Error>> {
    ctx.metrics.reconciled("sandboxtask");
    let ns = task.namespace().unwrap_or_else(|| "default".into());
    let api: Api<SandboxTask> = Api::namespaced(ctx.client.clone(), &ns);
    let k = key(&task);
    let r = finalizer(&api, FINALIZER, task, |event| async {
        match event {
            Finalized::Apply(task) => apply(&task, &ctx).await,
            Finalized::Cleanup(task) => cleanup(&task, &ctx).await,
        }
    })
    .await;
    if r.is_ok() {
        ctx.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&k);
    }
    r
}

pub fn error_policy(
    task: Arc<SandboxTask>,
    err: &kube::runtime::finalizer::Error<Error>,
    ctx: Arc<Ctx>,
) -> Action {
    ctx.metrics.failed("sandboxtask");
    let n = {
        let mut failures = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(key(&task)).or_default();
        *n += 1;
        *n
    };
    let wait = backoff(n);
    tracing::warn!(task = %key(&task), error = %err, failures = n, retry_in = ?wait, "reconcile failed");
    Action::requeue(wait)
}

/// The pod a task runs in: its name is the task's, so a restarted
/// operator finds it again.
pub fn pod_name(task: &SandboxTask) -> String {
    let name = task.name_any();
    let uid = task.uid().unwrap_or_default();
    let short: String = uid.chars().filter(|c| *c != '-').take(8).collect();
    let mut base: String = name.chars().take(240).collect();
    while base.ends_with('-') || base.ends_with('.') {
        base.pop();
    }
    format!("{base}-{short}")
}

async fn cleanup(task: &SandboxTask, ctx: &Ctx) -> Result<Action, Error> {
    let ns = task.namespace().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    match pods
        .delete(&pod_name(task), &DeleteParams::default().grace_period(0))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}

pub(crate) fn now() -> Timestamp {
    Timestamp::now()
}

pub(crate) fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: Time(now()),
        observed_generation: generation,
    }
}

/// Sets a condition, keeping its transition time when its status holds.
pub(crate) fn set_condition(conditions: &mut Vec<Condition>, new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(c) if c.status == new.status && c.reason == new.reason => {
            c.message = new.message;
            c.observed_generation = new.observed_generation;
        }
        Some(c) => *c = new,
        None => conditions.push(new),
    }
}

async fn write_status(
    task: &SandboxTask,
    ctx: &Ctx,
    status: &SandboxTaskStatus,
) -> Result<(), Error> {
    let ns = task.namespace().unwrap_or_default();
    let api: Api<SandboxTask> = Api::namespaced(ctx.client.clone(), &ns);
    let patch = serde_json::json!({
        "apiVersion": "rauha.dev/v1alpha1",
        "kind": "SandboxTask",
        "status": status,
    });
    api.patch_status(
        &task.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

pub(crate) async fn event<K: Resource<DynamicType = ()>>(
    object: &K,
    ctx: &Ctx,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &object.object_ref(&())).await {
        tracing::warn!(error = %e, "cannot publish an event");
    }
}

/// Moves the task to `phase` (status written, event and metric on a change).
async fn transition(
    task: &SandboxTask,
    ctx: &Ctx,
    mut status: SandboxTaskStatus,
    phase: Phase,
    reason: &str,
    message: String,
) -> Result<(), Error> {
    let changed = status.phase != Some(phase);
    status.phase = Some(phase);
    status.message = Some(message.clone());
    status.observed_generation = task.metadata.generation;
    if phase.finished() && status.completion_time.is_none() {
        status.completion_time = Some(Time(now()));
    }
    set_condition(
        &mut status.conditions,
        condition(
            "Finished",
            phase.finished(),
            reason,
            &message,
            task.metadata.generation,
        ),
    );
    // Nothing new (a pod seen again in the same phase): no write.
    if task.status.as_ref() == Some(&status) {
        return Ok(());
    }
    write_status(task, ctx, &status).await?;
    if changed {
        let warn = matches!(phase, Phase::Failed | Phase::TimedOut);
        event(
            task,
            ctx,
            if warn {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason,
            message,
        )
        .await;
        ctx.metrics.phase(phase);
    }
    Ok(())
}

/// One reconcile of a task that holds its finalizer (what `reconcile`
/// runs), for the tests against a scripted API server.
#[cfg(test)]
pub(crate) async fn apply_for_test(task: &SandboxTask, ctx: &Ctx) -> Result<Action, Error> {
    apply(task, ctx).await
}

async fn apply(task: &SandboxTask, ctx: &Ctx) -> Result<Action, Error> {
    let status = task.status.clone().unwrap_or_default();
    let phase = status.phase;
    let ns = task.namespace().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let name = pod_name(task);

    // A finished task waits for its TTL.
    if let Some(p) = phase.filter(|p| p.finished()) {
        let _ = p;
        return ttl(task, ctx, &status).await;
    }
    // Its time is up: the pod (and with it the zone) goes.
    if let Some(limit) = task.spec.timeout_seconds {
        let since = status
            .start_time
            .as_ref()
            .map(|t| t.0)
            .or_else(|| task.metadata.creation_timestamp.as_ref().map(|t| t.0));
        if let Some(since) = since {
            let deadline = since + Duration::from_secs(limit as u64);
            if now() >= deadline {
                delete_pod(&pods, &name).await?;
                transition(
                    task,
                    ctx,
                    status,
                    Phase::TimedOut,
                    "TimedOut",
                    format!("killed after its timeout of {limit}s"),
                )
                .await?;
                return Ok(Action::requeue(Duration::from_secs(1)));
            }
        }
    }
    let requeue = requeue_for_timeout(task, &status);
    let pod = match pods.get_opt(&name).await? {
        Some(pod) => pod,
        None if matches!(phase, Some(Phase::Scheduled | Phase::Running)) => {
            transition(
                task,
                ctx,
                status,
                Phase::Failed,
                "PodGone",
                format!("its pod {name} was deleted before the task ended"),
            )
            .await?;
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        None => return place(task, ctx, status, &pods, &name).await,
    };
    follow(task, ctx, status, &pod, &pods, &name, requeue).await
}

fn requeue_for_timeout(task: &SandboxTask, status: &SandboxTaskStatus) -> Action {
    let Some(limit) = task.spec.timeout_seconds else {
        return Action::await_change();
    };
    let since = status
        .start_time
        .as_ref()
        .map(|t| t.0)
        .or_else(|| task.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or_else(now);
    let left = (since + Duration::from_secs(limit as u64)).duration_since(now());
    let secs = left.as_secs_f64().max(0.0);
    Action::requeue(Duration::from_secs_f64(secs + 0.05))
}

pub(crate) async fn delete_pod(pods: &Api<Pod>, name: &str) -> Result<(), Error> {
    match pods
        .delete(name, &DeleteParams::default().grace_period(0))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn ttl(task: &SandboxTask, ctx: &Ctx, status: &SandboxTaskStatus) -> Result<Action, Error> {
    let (Some(ttl), Some(done)) = (
        task.spec.ttl_seconds_after_finished,
        &status.completion_time,
    ) else {
        return Ok(Action::await_change());
    };
    let expiry = done.0 + Duration::from_secs(ttl as u64);
    if now() >= expiry {
        let api: Api<SandboxTask> =
            Api::namespaced(ctx.client.clone(), &task.namespace().unwrap_or_default());
        match api.delete(&task.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
        return Ok(Action::await_change());
    }
    let left = expiry.duration_since(now()).as_secs_f64().max(0.0);
    Ok(Action::requeue(Duration::from_secs_f64(left + 0.05)))
}

/// Where a task's pod runs, as its zone says.
#[derive(Debug, Clone, PartialEq)]
pub enum PodZone {
    /// A zone of its own, made with this policy (a preset's name or the
    /// policy TOML), on a node placement chooses.
    Own {
        policy: String,
        placement: crate::crd::Placement,
    },
    /// The shared zone of this Zone, on its node.
    Shared { zone: String, node: String },
}

/// The zone a task's pod uses: its Zone's, or its preset's. `Ok(Err(why))`
/// when it must wait (a shared zone not ready yet).
async fn zone_of(task: &SandboxTask, ctx: &Ctx) -> Result<Result<PodZone, String>, Error> {
    let Some(zone_name) = &task.spec.zone_ref else {
        return Ok(Ok(PodZone::Own {
            policy: pod_policy(task.spec.preset, None)?,
            placement: Default::default(),
        }));
    };
    let zones: Api<Zone> =
        Api::namespaced(ctx.client.clone(), &task.namespace().unwrap_or_default());
    let zone = zones.get_opt(zone_name).await?.ok_or_else(|| {
        Error::Invalid(format!(
            "its zoneRef names Zone {zone_name:?}, which does not exist in this namespace; create it or fix zoneRef"
        ))
    })?;
    if zone.spec.mode == crate::crd::ZoneMode::Shared {
        let status = zone.status.clone().unwrap_or_default();
        let ready = status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        return Ok(match (ready, status.node) {
            (true, Some(node)) => Ok(PodZone::Shared {
                zone: zone_name.clone(),
                node,
            }),
            _ => Err(format!("its shared Zone {zone_name:?} is not ready yet")),
        });
    }
    Ok(Ok(PodZone::Own {
        policy: pod_policy(zone.spec.preset, zone.spec.policy.as_ref())?,
        placement: zone.spec.placement.clone(),
    }))
}

/// The policy a task's pod runs under, as the shim's annotation takes it
/// (TOML): the Zone's policy, or else the preset (`standard` when none),
/// with the task's workspace writable.
pub fn pod_policy(
    preset: Option<crate::crd::Preset>,
    policy: Option<&rauha_spec::Policy>,
) -> Result<String, Error> {
    let mut policy = match policy {
        Some(p) => p.clone(),
        None => {
            let name = preset.map_or("standard", |p| p.name());
            rauha_spec::presets::load(name)
                .ok_or_else(|| Error::Invalid(format!("no preset {name:?}")))?
                .map_err(|e| Error::Invalid(e.to_string()))?
        }
    };
    let ws = WORKSPACE_DIR.to_string();
    if !policy.filesystem.writable_paths.contains(&ws) {
        policy.filesystem.writable_paths.push(ws);
    }
    Ok(policy.to_toml())
}

async fn place(
    task: &SandboxTask,
    ctx: &Ctx,
    mut status: SandboxTaskStatus,
    pods: &Api<Pod>,
    name: &str,
) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let pod_zone = match zone_of(task, ctx).await {
        Ok(Ok(z)) => z,
        Ok(Err(wait)) => {
            set_condition(
                &mut status.conditions,
                condition(
                    "Scheduled",
                    false,
                    "ZoneNotReady",
                    &wait,
                    task.metadata.generation,
                ),
            );
            transition(task, ctx, status, Phase::Pending, "ZoneNotReady", wait).await?;
            return Ok(Action::requeue(Duration::from_secs(2)));
        }
        Err(Error::Invalid(why)) => {
            transition(task, ctx, status, Phase::Failed, "InvalidZone", why).await?;
            return Ok(Action::await_change());
        }
        Err(e) => return Err(e),
    };
    let zone_placement = match &pod_zone {
        PodZone::Own { placement, .. } => placement.clone(),
        PodZone::Shared { .. } => Default::default(),
    };
    let resources = task.spec.resources.clone().unwrap_or_default();
    let req = Request {
        millicpu: resources
            .cpu
            .as_deref()
            .and_then(placement::millicpu)
            .unwrap_or(0),
        memory: resources
            .memory
            .as_deref()
            .and_then(placement::bytes)
            .unwrap_or(0),
        node_selector: zone_placement.node_selector.clone(),
        tolerations: zone_placement.tolerations.clone(),
    };
    let chosen = match &pod_zone {
        // A shared zone's tasks go where it is.
        PodZone::Shared { node, .. } => Ok(node.clone()),
        PodZone::Own { .. } => {
            let views = node_views(ctx).await?;
            let load = node_load(ctx).await?;
            placement::choose(&views, &load, &req)
        }
    };
    let node = match chosen {
        Ok(node) => node,
        Err(why) => {
            set_condition(
                &mut status.conditions,
                condition(
                    "Scheduled",
                    false,
                    "Unschedulable",
                    &why,
                    task.metadata.generation,
                ),
            );
            transition(task, ctx, status, Phase::Pending, "Unschedulable", why).await?;
            return Ok(Action::requeue(Duration::from_secs(5)));
        }
    };
    let pod = task_pod(task, name, &node, &pod_zone)?;
    match pods.create(&PostParams::default(), &pod).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    ctx.metrics.placed(started.elapsed());
    status.node = Some(node.clone());
    status.pod = Some(name.to_string());
    set_condition(
        &mut status.conditions,
        condition(
            "Scheduled",
            true,
            "Placed",
            &format!("pod {name} on node {node}"),
            task.metadata.generation,
        ),
    );
    transition(
        task,
        ctx,
        status,
        Phase::Scheduled,
        "Scheduled",
        format!("placed on node {node} as pod {name}"),
    )
    .await?;
    Ok(requeue_for_timeout(
        task,
        &task.status.clone().unwrap_or_default(),
    ))
}

/// Every node, as placement sees it: from the watch cache when the
/// operator runs (no list per task), from the API server otherwise.
pub(crate) async fn node_views(ctx: &Ctx) -> Result<Vec<NodeView>, Error> {
    Ok(match &ctx.caches {
        Some(c) => c.nodes.state().iter().map(|n| node_view(n)).collect(),
        None => {
            let nodes: Api<Node> = Api::all(ctx.client.clone());
            nodes
                .list(&ListParams::default())
                .await?
                .items
                .iter()
                .map(node_view)
                .collect()
        }
    })
}

/// What the task pods not yet finished take of each node.
pub(crate) async fn node_load(ctx: &Ctx) -> Result<BTreeMap<String, Load>, Error> {
    let task_pods: Vec<Arc<Pod>> = match &ctx.caches {
        Some(c) => c.pods.state(),
        None => {
            let all_pods: Api<Pod> = Api::all(ctx.client.clone());
            all_pods
                .list(&ListParams::default().labels(TASK_LABEL))
                .await?
                .items
                .into_iter()
                .map(Arc::new)
                .collect()
        }
    };
    let mut load: BTreeMap<String, Load> = BTreeMap::new();
    for p in task_pods {
        let done = matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        if let (false, Some(node)) = (done, p.spec.as_ref().and_then(|s| s.node_name.clone())) {
            let l = load.entry(node).or_default();
            l.tasks += 1;
            for c in p.spec.iter().flat_map(|s| s.containers.iter()) {
                let limits = c.resources.as_ref().and_then(|r| r.limits.as_ref());
                l.millicpu += limits
                    .and_then(|m| m.get("cpu"))
                    .and_then(|q| placement::millicpu(&q.0))
                    .unwrap_or(0);
                l.memory += limits
                    .and_then(|m| m.get("memory"))
                    .and_then(|q| placement::bytes(&q.0))
                    .unwrap_or(0);
            }
        }
    }
    Ok(load)
}

pub(crate) fn node_view(n: &Node) -> NodeView {
    let status = n.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True");
    let alloc = status.and_then(|s| s.allocatable.as_ref());
    NodeView {
        name: n.name_any(),
        labels: n.labels().clone(),
        annotations: n.annotations().clone(),
        ready,
        unschedulable: n
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false),
        taints: n
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .map(|t| {
                t.iter()
                    .map(|t| (t.key.clone(), t.value.clone(), t.effect.clone()))
                    .collect()
            })
            .unwrap_or_default(),
        allocatable_millicpu: alloc
            .and_then(|a| a.get("cpu"))
            .and_then(|q| placement::millicpu(&q.0))
            .unwrap_or(0),
        allocatable_memory: alloc
            .and_then(|a| a.get("memory"))
            .and_then(|q| placement::bytes(&q.0))
            .unwrap_or(0),
    }
}

/// The task's pod: on `node`, under RuntimeClass `rauha`, owned by the
/// task, with no service-account token and its zone in the shim's
/// annotations (its policy, or the shared zone it joins).
pub fn task_pod(task: &SandboxTask, name: &str, node: &str, zone: &PodZone) -> Result<Pod, Error> {
    let owner = task
        .controller_owner_ref(&())
        .ok_or_else(|| Error::Invalid("the task has no uid yet".into()))?;
    let mut limits = BTreeMap::new();
    if let Some(r) = &task.spec.resources {
        if let Some(cpu) = &r.cpu {
            limits.insert("cpu".to_string(), Quantity(cpu.clone()));
        }
        if let Some(mem) = &r.memory {
            limits.insert("memory".to_string(), Quantity(mem.clone()));
        }
    }
    // Each secret: a Secret volume of its one key, mounted read-only, and
    // the path the shim reads it from in the annotation. No value here.
    let (mut annotations, tolerations) = match zone {
        PodZone::Own { policy, placement } => (
            BTreeMap::from([(POLICY_ANNOTATION.to_string(), policy.clone())]),
            placement.tolerations.clone(),
        ),
        PodZone::Shared { zone, .. } => (
            BTreeMap::from([(ZONE_ANNOTATION.to_string(), zone.clone())]),
            Vec::new(),
        ),
    };
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    let mut secret_env = BTreeMap::new();
    for (i, s) in task.spec.secret_refs.iter().enumerate() {
        let volume = format!("rauha-secret-{i}");
        volumes.push(Volume {
            name: volume.clone(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(s.name.clone()),
                items: Some(vec![KeyToPath {
                    key: s.key.clone(),
                    path: "value".into(),
                    mode: None,
                }]),
                default_mode: Some(0o400),
                optional: Some(false),
            }),
            ..Default::default()
        });
        let dir = format!("{SECRETS_DIR}/{}", s.env);
        mounts.push(VolumeMount {
            name: volume,
            mount_path: dir.clone(),
            read_only: Some(true),
            ..Default::default()
        });
        secret_env.insert(s.env.clone(), format!("{dir}/value"));
    }
    if !secret_env.is_empty() {
        annotations.insert(
            SECRET_ENV_ANNOTATION.to_string(),
            serde_json::to_string(&secret_env).unwrap_or_default(),
        );
    }
    // The workspace: an emptyDir the task starts in; the shim puts each
    // input ConfigMap's files (mounted read-only) in it before the task
    // starts, and lists what the task changed there in its result.
    volumes.push(Volume {
        name: "rauha-workspace".into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: None,
            size_limit: Some(Quantity(WORKSPACE_SIZE_LIMIT.into())),
        }),
        ..Default::default()
    });
    mounts.push(VolumeMount {
        name: "rauha-workspace".into(),
        mount_path: WORKSPACE_DIR.into(),
        ..Default::default()
    });
    let mut inputs = Vec::new();
    for (i, input) in task.spec.inputs.iter().enumerate() {
        let volume = format!("rauha-input-{i}");
        volumes.push(Volume {
            name: volume.clone(),
            config_map: Some(ConfigMapVolumeSource {
                name: input.config_map.clone(),
                optional: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        });
        let from = format!("{INPUTS_DIR}/{i}");
        mounts.push(VolumeMount {
            name: volume,
            mount_path: from.clone(),
            read_only: Some(true),
            ..Default::default()
        });
        inputs.push(serde_json::json!({"from": from, "to": input.path}));
    }
    annotations.insert(
        WORKSPACE_ANNOTATION.to_string(),
        serde_json::json!({"dir": WORKSPACE_DIR, "inputs": inputs}).to_string(),
    );
    let pod = Pod {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_string()),
            namespace: task.namespace(),
            labels: Some(BTreeMap::from([(TASK_LABEL.to_string(), task.name_any())])),
            annotations: Some(annotations),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(PodSpec {
            runtime_class_name: Some("rauha".into()),
            node_name: Some(node.to_string()),
            restart_policy: Some("Never".into()),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            // A shared zone is one PID namespace: its tasks see each
            // other's processes (a container of its own PID namespace,
            // Kubernetes' default, would not).
            share_process_namespace: matches!(zone, PodZone::Shared { .. }).then_some(true),
            tolerations: (!tolerations.is_empty()).then_some(tolerations),
            containers: vec![Container {
                name: "task".into(),
                image: Some(task.spec.image.clone()),
                command: (!task.spec.command.is_empty()).then(|| task.spec.command.clone()),
                args: (!task.spec.args.is_empty()).then(|| task.spec.args.clone()),
                env: (!task.spec.env.is_empty()).then(|| {
                    task.spec
                        .env
                        .iter()
                        .map(|e| PodEnvVar {
                            name: e.name.clone(),
                            value: Some(e.value.clone()),
                            ..Default::default()
                        })
                        .collect()
                }),
                resources: (!limits.is_empty()).then(|| ResourceRequirements {
                    limits: Some(limits.clone()),
                    requests: Some(limits),
                    ..Default::default()
                }),
                termination_message_policy: Some("File".into()),
                working_dir: Some(WORKSPACE_DIR.into()),
                volume_mounts: Some(mounts),
                ..Default::default()
            }],
            volumes: Some(volumes),
            ..Default::default()
        }),
        status: None,
    };
    Ok(pod)
}

/// Follows a placed task's pod to its end.
async fn follow(
    task: &SandboxTask,
    ctx: &Ctx,
    mut status: SandboxTaskStatus,
    pod: &Pod,
    pods: &Api<Pod>,
    name: &str,
    requeue: Action,
) -> Result<Action, Error> {
    let pod_status = pod.status.clone().unwrap_or_default();
    let container = pod_status
        .container_statuses
        .as_ref()
        .and_then(|c| c.iter().find(|c| c.name == "task"));
    let terminated = container
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref());
    if let Some(t) = terminated {
        status.start_time = status.start_time.or_else(|| t.started_at.clone());
        status.completion_time = t.finished_at.clone().or_else(|| Some(Time(now())));
        let result = t
            .message
            .as_deref()
            .and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok())
            .filter(|v| v.get("exit_code").is_some() && v.get("enforcement").is_some());
        let code = t.exit_code;
        let (phase, reason, message) = match result.as_ref().and_then(|r| r["status"].as_str()) {
            Some("timed_out") => (
                Phase::TimedOut,
                "TimedOut",
                format!("timed out (exit code {code})"),
            ),
            _ if code == 0 => (Phase::Succeeded, "Succeeded", "exited with 0".to_string()),
            _ => (
                Phase::Failed,
                "Failed",
                format!(
                    "exited with {code}{}",
                    t.reason
                        .as_deref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                ),
            ),
        };
        match result {
            Some(mut r) => {
                cap(&mut r, "stdout");
                cap(&mut r, "stderr");
                status.result = Some(r);
            }
            None => {
                set_condition(
                    &mut status.conditions,
                    condition(
                        "ResultReported",
                        false,
                        "NoResult",
                        "the node reported no result envelope (is its containerd handler `rauha` Rauha's shim?): the phase and exit code are the pod's",
                        task.metadata.generation,
                    ),
                );
            }
        }
        transition(task, ctx, status, phase, reason, message).await?;
        let _ = pods;
        let _ = name;
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    // The node it was placed on stopped answering: the task fails.
    if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) {
        let nodes: Api<Node> = Api::all(ctx.client.clone());
        let gone = match nodes.get_opt(&node).await? {
            None => true,
            Some(n) => {
                let ready = n
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .and_then(|c| c.iter().find(|c| c.type_ == "Ready").cloned());
                ready.is_some_and(|c| c.status != "True")
            }
        };
        if gone {
            delete_pod(pods, name).await?;
            set_condition(
                &mut status.conditions,
                condition(
                    "NodeReady",
                    false,
                    "NodeNotReady",
                    &format!("node {node} is not Ready"),
                    task.metadata.generation,
                ),
            );
            transition(
                task,
                ctx,
                status,
                Phase::Failed,
                "NodeNotReady",
                format!("its node {node} went NotReady while it ran"),
            )
            .await?;
            return Ok(Action::await_change());
        }
    }
    let running = container
        .and_then(|c| c.state.as_ref())
        .is_some_and(|s| s.running.is_some());
    if running && status.phase != Some(Phase::Running) {
        status.start_time = container
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.running.as_ref())
            .and_then(|r| r.started_at.clone())
            .or_else(|| Some(Time(now())));
        let node = status.node.clone().unwrap_or_default();
        transition(
            task,
            ctx,
            status,
            Phase::Running,
            "Running",
            format!("running on node {node}"),
        )
        .await?;
    }
    Ok(requeue)
}

/// Keeps at most MAX_STATUS_OUTPUT bytes of a result's stream, on a
/// character boundary, and says it was cut.
fn cap(result: &mut serde_json::Value, stream: &str) {
    let Some(text) = result
        .get(stream)
        .and_then(|s| s.as_str())
        .map(str::to_string)
    else {
        return;
    };
    if text.len() <= MAX_STATUS_OUTPUT {
        return;
    }
    let mut end = MAX_STATUS_OUTPUT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    result[stream] = serde_json::Value::String(text[..end].to_string());
    result[format!("{stream}_truncated")] = serde_json::Value::Bool(true);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::SandboxTaskSpec;

    fn own(policy: &str) -> PodZone {
        PodZone::Own {
            policy: policy.into(),
            placement: Default::default(),
        }
    }

    #[test]
    fn inputs_are_mounted_configmaps_the_shim_copies_into_the_workspace() {
        let mut t = task();
        t.spec.inputs = vec![
            crate::crd::TaskInput {
                config_map: "conf".into(),
                path: String::new(),
            },
            crate::crd::TaskInput {
                config_map: "data".into(),
                path: "in/data".into(),
            },
        ];
        let pod = task_pod(&t, "p", "n", &own("standard")).expect("pod");
        let spec = pod.spec.clone().expect("spec");
        let c = &spec.containers[0];
        assert_eq!(c.working_dir.as_deref(), Some("/workspace"));
        let mounts: Vec<(String, String, bool)> = c
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| {
                (
                    m.name.clone(),
                    m.mount_path.clone(),
                    m.read_only == Some(true),
                )
            })
            .collect();
        assert!(mounts.contains(&("rauha-workspace".into(), "/workspace".into(), false)));
        assert!(mounts.contains(&("rauha-input-1".into(), "/run/rauha/inputs/1".into(), true)));
        let volumes = spec.volumes.expect("volumes");
        let data = volumes
            .iter()
            .find(|v| v.name == "rauha-input-1")
            .expect("input");
        assert_eq!(
            data.config_map.as_ref().map(|c| c.name.as_str()),
            Some("data")
        );
        let ws = volumes
            .iter()
            .find(|v| v.name == "rauha-workspace")
            .expect("ws");
        assert!(ws
            .empty_dir
            .as_ref()
            .is_some_and(|e| e.size_limit.is_some()));
        let a = pod.metadata.annotations.expect("annotations");
        let w: serde_json::Value =
            serde_json::from_str(&a[WORKSPACE_ANNOTATION]).expect("workspace JSON");
        assert_eq!(w["dir"], "/workspace");
        assert_eq!(
            w["inputs"][0],
            serde_json::json!({"from": "/run/rauha/inputs/0", "to": ""})
        );
        assert_eq!(w["inputs"][1]["to"], "in/data");
    }

    #[test]
    fn a_task_in_a_shared_zone_joins_it_and_carries_no_policy() {
        let t = task();
        let shared = PodZone::Shared {
            zone: "builds".into(),
            node: "node-a".into(),
        };
        let pod = task_pod(&t, "p", "node-a", &shared).expect("pod");
        let a = pod.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(a.get(ZONE_ANNOTATION).map(String::as_str), Some("builds"));
        assert!(!a.contains_key(POLICY_ANNOTATION), "{a:?}");
        let spec = pod.spec.expect("spec");
        assert_eq!(spec.node_name.as_deref(), Some("node-a"));
        assert_eq!(spec.runtime_class_name.as_deref(), Some("rauha"));
        assert_eq!(spec.automount_service_account_token, Some(false));
        assert_eq!(
            spec.share_process_namespace,
            Some(true),
            "one pid namespace"
        );
    }

    fn task() -> SandboxTask {
        let mut t = SandboxTask::new(
            "hello",
            SandboxTaskSpec {
                image: "127.0.0.1:15000/rauha/busybox:latest".into(),
                command: vec!["sh".into(), "-c".into()],
                args: vec!["echo hi".into()],
                env: vec![crate::crd::EnvVar {
                    name: "A".into(),
                    value: "1".into(),
                }],
                zone_ref: None,
                preset: None,
                resources: Some(crate::crd::TaskResources {
                    cpu: Some("500m".into()),
                    memory: Some("64Mi".into()),
                }),
                timeout_seconds: Some(30),
                ttl_seconds_after_finished: None,
                secret_refs: Vec::new(),
                inputs: Vec::new(),
            },
        );
        t.metadata.namespace = Some("default".into());
        t.metadata.uid = Some("0f8e2a1c-aaaa-bbbb-cccc-000000000000".into());
        t
    }

    #[test]
    fn the_pod_runs_under_rauha_with_no_token_and_the_policy() {
        let t = task();
        let name = pod_name(&t);
        assert_eq!(name, "hello-0f8e2a1c");
        let pod = task_pod(&t, &name, "node-a", &own("strict")).expect("pod");
        let spec = pod.spec.expect("spec");
        assert_eq!(spec.runtime_class_name.as_deref(), Some("rauha"));
        assert_eq!(spec.node_name.as_deref(), Some("node-a"));
        assert_eq!(spec.automount_service_account_token, Some(false));
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        let owner = &pod.metadata.owner_references.expect("owner")[0];
        assert_eq!(owner.kind, "SandboxTask");
        assert_eq!(owner.controller, Some(true));
        assert_eq!(
            pod.metadata.annotations.expect("annotations")[POLICY_ANNOTATION],
            "strict"
        );
        let c = &spec.containers[0];
        assert_eq!(c.args.as_deref(), Some(&["echo hi".to_string()][..]));
        let limits = c
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .expect("limits");
        assert_eq!(limits["memory"].0, "64Mi");
    }

    #[test]
    fn secrets_reach_the_pod_as_mounted_files_never_as_values() {
        let mut t = task();
        t.spec.secret_refs = vec![crate::crd::SecretRef {
            name: "gh".into(),
            key: "token".into(),
            env: "GH_TOKEN".into(),
        }];
        let pod = task_pod(&t, "p", "n", &own("standard")).expect("pod");
        let annotations = pod.metadata.annotations.expect("annotations");
        assert_eq!(
            annotations[SECRET_ENV_ANNOTATION],
            r#"{"GH_TOKEN":"/run/rauha/secrets/GH_TOKEN/value"}"#
        );
        let spec = pod.spec.expect("spec");
        let volume = &spec.volumes.as_ref().expect("volumes")[0];
        let secret = volume.secret.as_ref().expect("a Secret volume");
        assert_eq!(secret.secret_name.as_deref(), Some("gh"));
        assert_eq!(secret.items.as_ref().expect("items")[0].key, "token");
        let c = &spec.containers[0];
        let mount = &c.volume_mounts.as_ref().expect("mounts")[0];
        assert_eq!(mount.mount_path, "/run/rauha/secrets/GH_TOKEN");
        assert_eq!(mount.read_only, Some(true));
        assert!(
            c.env
                .iter()
                .flatten()
                .all(|e| e.name != "GH_TOKEN" && e.value_from.is_none()),
            "no secret in the pod's env"
        );
    }

    #[test]
    fn failures_back_off_exponentially_to_a_bound() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(9), Duration::from_secs(256));
        assert_eq!(backoff(10), Duration::from_secs(300));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn long_output_is_capped_in_the_status() {
        let mut r = serde_json::json!({"stdout": "é".repeat(MAX_STATUS_OUTPUT), "stderr": "short"});
        cap(&mut r, "stdout");
        cap(&mut r, "stderr");
        assert!(r["stdout"].as_str().expect("text").len() <= MAX_STATUS_OUTPUT);
        assert_eq!(r["stdout_truncated"], true);
        assert_eq!(r["stderr"], "short");
        assert!(r.get("stderr_truncated").is_none());
    }

    #[test]
    fn conditions_keep_their_transition_time_while_they_hold() {
        let mut cs = Vec::new();
        set_condition(
            &mut cs,
            condition("Scheduled", false, "Unschedulable", "a", None),
        );
        let first = cs[0].last_transition_time.clone();
        set_condition(
            &mut cs,
            condition("Scheduled", false, "Unschedulable", "b", None),
        );
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].last_transition_time, first);
        assert_eq!(cs[0].message, "b");
        set_condition(&mut cs, condition("Scheduled", true, "Placed", "c", None));
        assert_eq!(cs[0].status, "True");
    }
}
