//! `rauha-operator`: runs the SandboxTask controller against the cluster
//! its kubeconfig (or its pod's service account) names, once it holds the
//! leader lease.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::core::v1::Pod;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{reflector, watcher, Controller, WatchStreamExt};
use kube::{Api, Client, Config};
use rauha_operator::crd::{SandboxTask, Zone, TASK_LABEL, ZONE_LABEL};
use rauha_operator::lease::Elector;
use rauha_operator::metrics::Metrics;
use rauha_operator::task::{self, Caches, Ctx};
use rauha_operator::zone;

#[derive(Parser)]
#[command(
    version,
    about = "Rauha's Kubernetes operator: places SandboxTasks on nodes running Rauha"
)]
struct Args {
    /// A kubeconfig to use instead of the pod's service account.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, default_value = "0.0.0.0:8080")]
    metrics_address: String,
    /// The namespace of the leader lease.
    #[arg(long, default_value = "default", env = "RAUHA_OPERATOR_NAMESPACE")]
    lease_namespace: String,
    /// This replica's name in the lease (default: host name and pid).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// The image of the pod that holds a shared Zone (one that sleeps).
    #[arg(long, default_value = rauha_operator::task::DEFAULT_HOLDER_IMAGE)]
    zone_holder_image: String,
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt().with_target(false).init();
    if let Err(e) = run(Args::parse()).await {
        eprintln!("rauha-operator: {e:#}");
        std::process::exit(1);
    }
}

async fn client(args: &Args) -> anyhow::Result<Client> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| anyhow::anyhow!("cannot read kubeconfig {}: {e}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?
        }
        None => Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let client = client(&args).await?;
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(&args.metrics_address)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.metrics_address))?;
    tokio::spawn(rauha_operator::http::serve(
        listener,
        Arc::clone(&metrics),
        Arc::clone(&ready),
    ));

    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let elector = Elector::new(
        client.clone(),
        &args.lease_namespace,
        "rauha-operator",
        identity.clone(),
        Duration::from_secs(15),
    );
    // A standby is ready too: it serves its endpoints and waits.
    ready.store(true, Ordering::Relaxed);
    loop {
        match elector.try_hold().await {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the leader lease"),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    tracing::info!(%identity, "holding the leader lease; starting the controllers");
    // Renew; a leader that cannot renew within the lease's time stops, so
    // that a standby takes over and two never act at once.
    tokio::spawn(async move {
        let mut last = std::time::Instant::now();
        loop {
            tokio::time::sleep(elector.duration / 3).await;
            match elector.try_hold().await {
                Ok(true) => last = std::time::Instant::now(),
                Ok(false) => {
                    eprintln!(
                        "rauha-operator: another replica holds the leader lease now; stopping"
                    );
                    std::process::exit(1);
                }
                Err(e) => tracing::warn!(error = %e, "cannot renew the leader lease"),
            }
            if last.elapsed() > elector.duration {
                eprintln!(
                    "rauha-operator: the leader lease could not be renewed in time; stopping"
                );
                std::process::exit(1);
            }
        }
    });

    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "rauha-operator".into(),
            instance: Some(identity),
        },
    );
    // Watch caches of nodes and task pods: placement reads them rather
    // than listing the cluster for every task.
    let (nodes, nodes_writer) = reflector::store::<Node>();
    let (pods, pods_writer) = reflector::store::<Pod>();
    tokio::spawn(
        reflector(
            nodes_writer,
            watcher(Api::<Node>::all(client.clone()), watcher::Config::default()),
        )
        .default_backoff()
        .for_each(|_| std::future::ready(())),
    );
    tokio::spawn(
        reflector(
            pods_writer,
            watcher(
                Api::<Pod>::all(client.clone()),
                watcher::Config::default().labels(TASK_LABEL),
            ),
        )
        .default_backoff()
        .for_each(|_| std::future::ready(())),
    );
    nodes.wait_until_ready().await?;
    pods.wait_until_ready().await?;
    let ctx = Arc::new(
        Ctx::new(client.clone(), recorder, metrics)
            .with_caches(Caches { nodes, pods })
            .with_holder_image(args.zone_holder_image.clone()),
    );
    let tasks = Controller::new(
        Api::<SandboxTask>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default().labels(TASK_LABEL),
    )
    .shutdown_on_signal()
    .run(task::reconcile, task::error_policy, Arc::clone(&ctx))
    .for_each(|r| async move {
        if let Err(e) = r {
            tracing::debug!(error = %e, "task reconcile");
        }
    });
    let zones = Controller::new(Api::<Zone>::all(client.clone()), watcher::Config::default())
        .owns(
            Api::<Pod>::all(client),
            watcher::Config::default().labels(ZONE_LABEL),
        )
        .shutdown_on_signal()
        .run(zone::reconcile, zone::error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "zone reconcile");
            }
        });
    futures::join!(tasks, zones);
    tracing::info!("stopped");
    Ok(())
}
