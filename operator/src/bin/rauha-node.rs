//! `rauha-node`: the Helm chart's node DaemonSet (docs/kubernetes.md,
//! "Installing with Helm").
//!
//! `rauha-node run` installs the binaries into the host directory mounted
//! at `--install-dir`, adds the `rauha` handler to containerd's config
//! (restarting containerd only when the config changed), runs the host's
//! copy of rauhad in the host's namespaces, and labels the node
//! `rauha.dev/ready=true` while rauhad answers. On SIGTERM it drops the
//! label and stops rauhad; when its DaemonSet is gone (helm uninstall) it
//! also deletes every zone and takes everything it installed away again.
//!
//! Everything done on the host goes through `rauha-node host ...`, a child
//! that enters the host's namespaces while single-threaded: this process stays
//! in its container, where its service account token is.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client};
use rauha_operator::node::{self, containerd};

#[derive(Parser)]
#[command(
    name = "rauha-node",
    version,
    about = "Rauha's node DaemonSet: installs and runs Rauha on this node"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install Rauha on this node, run rauhad and label the node while it answers.
    Run(Box<RunArgs>),
    /// In the host's namespaces (PID 1's, or the kubelet's): a command, or one of the steps
    /// `run` takes there.
    Host {
        /// Whose namespaces are the host's: init (PID 1) or kubelet.
        #[arg(long, env = "RAUHA_HOST_NAMESPACES_OF", default_value = "init")]
        namespaces_of: String,
        #[command(subcommand)]
        action: HostAction,
    },
    /// helm uninstall's first step: fails, naming them, while pods of the
    /// RuntimeClass run; then deletes the node DaemonSet in the foreground
    /// and waits until each node pod has taken Rauha off its node.
    Uninstall {
        #[arg(long, default_value = "rauha")]
        runtime_class: String,
        #[arg(long, env = "POD_NAMESPACE")]
        namespace: String,
        #[arg(long)]
        daemonset: String,
        /// Uninstall even under running pods (their zones are deleted).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Enforcement {
    Preferred,
    Required,
}

#[derive(clap::Args, Clone)]
struct RunArgs {
    /// This node's name (the downward API's spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// The namespace and name of the DaemonSet this pod belongs to: when
    /// it is gone at SIGTERM, Rauha is being uninstalled.
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: String,
    #[arg(long)]
    daemonset: String,
    /// Where the node image's binaries are.
    #[arg(long, default_value = "/usr/local/bin")]
    image_bin: PathBuf,
    /// The host directory Rauha is installed in (mounted at the same path).
    #[arg(long, default_value = "/opt/rauha")]
    install_dir: PathBuf,
    /// containerd's main config file on the host.
    #[arg(long, default_value = "/etc/containerd/config.toml")]
    containerd_config: PathBuf,
    /// containerd's state directory on the host: the FIFOs of the pods'
    /// stdio are in it, and rauhad opens stdio nowhere else (`--stdio-root`).
    #[arg(long, default_value = "/run/containerd")]
    containerd_state_dir: PathBuf,
    /// A directory the config's imports cover, for a drop-in (containerd 2.x).
    #[arg(long)]
    containerd_dropin_dir: Option<PathBuf>,
    /// The command that restarts containerd on the host (repeat for each word).
    #[arg(long = "restart-containerd", num_args = 1.., required = true)]
    restart_containerd: Vec<String>,
    /// The runtime handler's name.
    #[arg(long, default_value = "rauha")]
    handler: String,
    /// The policy of a pod that names none.
    #[arg(long, default_value = "baseline")]
    pod_policy: String,
    /// rauhad's state directory, socket, cgroup parent and BPF pin directory.
    #[arg(long, default_value = "/var/lib/rauha")]
    state_dir: PathBuf,
    #[arg(long, default_value = "/run/rauha/rauhad.sock")]
    socket: PathBuf,
    #[arg(long, default_value = "rauha")]
    cgroup_parent: String,
    #[arg(long, default_value = "/sys/fs/bpf/rauha")]
    bpf_pin_dir: PathBuf,
    #[arg(long, value_enum, default_value = "preferred")]
    enforcement: Enforcement,
}

#[derive(Subcommand)]
enum HostAction {
    /// Runs a command (it ends with this process's parent).
    Exec {
        #[arg(long)]
        die_with_parent: bool,
        /// Run it in this cgroup (from each hierarchy's root), out of the pod's.
        #[arg(long)]
        cgroup: Option<String>,
        #[arg(trailing_var_arg = true, required = true)]
        argv: Vec<String>,
    },
    /// Adds the handler to containerd's config; prints `changed` or `unchanged`.
    AddHandler(HandlerArgs),
    /// Takes the handler out of containerd's config; prints `changed` or `unchanged`.
    RemoveHandler(HandlerArgs),
    /// Removes what rauhad leaves on the host: these paths and the cgroup.
    Cleanup {
        #[arg(long)]
        cgroup_parent: String,
        /// A file to remove (rauhad's socket).
        #[arg(long)]
        file: Vec<PathBuf>,
        /// A directory to remove only when it is empty once the rest is gone.
        #[arg(long)]
        if_empty: Vec<PathBuf>,
        /// Trees to remove, whole.
        paths: Vec<PathBuf>,
    },
}

#[derive(clap::Args)]
struct HandlerArgs {
    #[arg(long)]
    config: PathBuf,
    #[arg(long)]
    dropin_dir: Option<PathBuf>,
    #[arg(long)]
    handler: String,
    #[arg(long)]
    install_dir: PathBuf,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.cmd {
        // Before any thread: setns into a mount namespace needs one.
        Cmd::Host {
            namespaces_of,
            action,
        } => node::host_process(&namespaces_of)
            .and_then(node::enter_host_namespaces)
            .and_then(|()| host(action)),
        Cmd::Run(args) => runtime().block_on(run(*args)),
        Cmd::Uninstall {
            runtime_class,
            namespace,
            daemonset,
            force,
        } => runtime().block_on(uninstall(&runtime_class, &namespace, &daemonset, force)),
    };
    if let Err(e) = result {
        eprintln!("rauha-node: {e:#}");
        std::process::exit(1);
    }
}

fn runtime() -> tokio::runtime::Runtime {
    use std::io::IsTerminal;
    // Pod logs: plain text, no colour codes.
    tracing_subscriber::fmt()
        .with_target(false)
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

// ---- on the host ----

fn host(action: HostAction) -> anyhow::Result<()> {
    match action {
        HostAction::Exec {
            die_with_parent,
            cgroup,
            argv,
        } => {
            use std::os::unix::process::CommandExt;
            if let Some(cg) = cgroup {
                node::move_to_cgroup(Path::new("/sys/fs/cgroup"), &cg)?;
            }
            if die_with_parent {
                // SAFETY: prctl with plain integers; it survives the exec.
                unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) };
            }
            let e = std::process::Command::new(&argv[0]).args(&argv[1..]).exec();
            bail!("cannot run {} on the host: {e}", argv[0])
        }
        HostAction::AddHandler(a) => {
            let h = handler(&a);
            let text = read_config(&a.config)?;
            let changed = match containerd::place(&a.config, &text, a.dropin_dir.as_deref(), &h)? {
                containerd::Placement::DropIn { path, text: dropin } => {
                    node::write_if_changed(&path, dropin.as_bytes(), 0o644)?
                }
                containerd::Placement::Block { text: ours } => {
                    let saved = saved_config(&a.install_dir);
                    if ours == text {
                        false
                    } else {
                        // The original once (a second install keeps the first one's).
                        if !saved.0.exists() {
                            node::write_atomically(&saved.0, text.as_bytes(), 0o600)?;
                        }
                        node::write_atomically(&saved.1, ours.as_bytes(), 0o600)?;
                        write_like(&a.config, ours.as_bytes())?;
                        true
                    }
                }
            };
            println!("{}", if changed { "changed" } else { "unchanged" });
            Ok(())
        }
        HostAction::RemoveHandler(a) => {
            let mut changed = false;
            if let Some(dir) = &a.dropin_dir {
                let path = dir.join(containerd::DROP_IN);
                if path.exists() {
                    std::fs::remove_file(&path)
                        .with_context(|| format!("removing {}", path.display()))?;
                    changed = true;
                }
            }
            let text = read_config(&a.config)?;
            let (original, ours) = saved_config(&a.install_dir);
            let ours_text = std::fs::read_to_string(&ours).ok();
            match containerd::removal(&a.config, &text, ours_text.as_deref())? {
                containerd::Removal::Restore => {
                    let bytes = std::fs::read(&original).with_context(|| {
                        format!("the saved original config {}", original.display())
                    })?;
                    write_like(&a.config, &bytes)?;
                    changed = true;
                }
                containerd::Removal::Edit(t) => {
                    write_like(&a.config, t.as_bytes())?;
                    changed = true;
                }
                containerd::Removal::Nothing => {}
            }
            let _ = std::fs::remove_file(original);
            let _ = std::fs::remove_file(ours);
            println!("{}", if changed { "changed" } else { "unchanged" });
            Ok(())
        }
        HostAction::Cleanup {
            cgroup_parent,
            file,
            if_empty,
            paths,
        } => {
            let remove = |p: &Path, how: fn(&Path) -> std::io::Result<()>| match how(p) {
                Ok(()) => {
                    eprintln!("rauha-node: removed {}", p.display());
                    Ok(())
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(anyhow::anyhow!("cannot remove {}: {e}", p.display())),
            };
            for p in &paths {
                remove(p, |p| std::fs::remove_dir_all(p))?;
            }
            for f in &file {
                remove(f, |f| std::fs::remove_file(f))?;
            }
            for d in if_empty {
                // ENOTEMPTY: something else lives there; it stays.
                if std::fs::remove_dir(&d).is_ok() {
                    eprintln!("rauha-node: removed {}", d.display());
                }
            }
            // The zones' parent cgroup and rauhad's own, in each hierarchy
            // (hybrid hosts have several).
            for h in node::hierarchies(Path::new("/sys/fs/cgroup")) {
                for name in [cgroup_parent.clone(), node::daemon_cgroup(&cgroup_parent)] {
                    let cg = h.join(name.trim_start_matches('/'));
                    if cg.is_dir() {
                        remove_cgroup(&cg);
                    }
                }
            }
            Ok(())
        }
    }
}

fn handler(a: &HandlerArgs) -> containerd::Handler {
    containerd::Handler {
        name: a.handler.clone(),
        shim: a.install_dir.join("bin/containerd-shim-rauha-v2"),
        shim_config: a.install_dir.join("etc/shim.toml"),
    }
}

/// Where the config's original bytes and Rauha's version of it are kept.
fn saved_config(install_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = install_dir.join("state");
    (
        dir.join("containerd-config.original"),
        dir.join("containerd-config.rauha"),
    )
}

fn read_config(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read containerd's config {} (set node.containerd.config to where it is)",
            path.display()
        )
    })
}

/// Writes over `path` keeping its mode.
fn write_like(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).map(|m| m.permissions().mode() & 0o7777)?;
    node::write_atomically(path, bytes, mode).with_context(|| format!("writing {}", path.display()))
}

/// Removes a cgroup directory tree, deepest first (a cgroup is removed
/// with rmdir once empty).
fn remove_cgroup(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&e.path());
            }
        }
    }
    if let Err(e) = std::fs::remove_dir(dir) {
        eprintln!("rauha-node: cannot remove cgroup {}: {e}", dir.display());
    }
}

// ---- in the pod ----

/// `rauha-node host ARGS...` as a child of this process.
fn host_command<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new("/proc/self/exe");
    c.arg("host").args(args);
    c
}

/// Runs a host step, returning its stdout; fails with its stderr.
async fn host_step<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> anyhow::Result<String> {
    let out = host_command(args)
        .stdin(Stdio::null())
        .output()
        .await
        .context("cannot start rauha-node host")?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

struct NodeSide {
    args: RunArgs,
    nodes: Api<Node>,
}

impl NodeSide {
    fn bin(&self, name: &str) -> String {
        self.args
            .install_dir
            .join("bin")
            .join(name)
            .display()
            .to_string()
    }

    fn handler_args(&self) -> Vec<String> {
        let mut v = vec![
            "--config".to_string(),
            self.args.containerd_config.display().to_string(),
            "--handler".into(),
            self.args.handler.clone(),
            "--install-dir".into(),
            self.args.install_dir.display().to_string(),
        ];
        if let Some(d) = &self.args.containerd_dropin_dir {
            v.extend(["--dropin-dir".into(), d.display().to_string()]);
        }
        v
    }

    /// `rauha-node host add-handler|remove-handler`, then a restart of
    /// containerd when the config changed, or when an earlier pod changed
    /// it and failed to restart containerd.
    async fn edit_config(&self, verb: &str) -> anyhow::Result<()> {
        let mut argv = vec![verb.to_string()];
        argv.extend(self.handler_args());
        let out = host_step(&argv).await?;
        if out.trim() == "changed" || self.restart_pending().exists() {
            self.restart_containerd().await?;
        }
        Ok(())
    }

    /// Marks a restart of containerd as owed until one succeeds.
    fn restart_pending(&self) -> PathBuf {
        self.args
            .install_dir
            .join("state/containerd-restart-pending")
    }

    async fn restart_containerd(&self) -> anyhow::Result<()> {
        let pending = self.restart_pending();
        node::write_atomically(&pending, b"", 0o600)?;
        let mut args = vec!["exec", "--"];
        args.extend(self.args.restart_containerd.iter().map(String::as_str));
        tracing::info!(command = ?self.args.restart_containerd, "restarting containerd");
        host_step(&args)
            .await
            .context("restarting containerd (node.containerd.restartCommand)")?;
        let _ = std::fs::remove_file(&pending);
        Ok(())
    }

    /// `rauha ARGS` against this node's rauhad, on the host.
    async fn rauha(&self, args: &[&str]) -> anyhow::Result<String> {
        let rauha = self.bin("rauha");
        let addr = format!("unix://{}", self.args.socket.display());
        let mut v = vec!["exec", "--", &rauha, "--addr", &addr];
        v.extend(args);
        host_step(&v).await
    }

    /// The enforcement rauhad reports, once it answers.
    async fn enforcement(&self) -> anyhow::Result<(String, String)> {
        let info: serde_json::Value =
            serde_json::from_str(&self.rauha(&["info", "--json"]).await?)?;
        let e = &info["enforcement"];
        Ok((
            e["label"].as_str().unwrap_or("unknown").to_string(),
            e["score"].to_string(),
        ))
    }

    async fn label(&self, ready: Option<(String, String)>) -> anyhow::Result<()> {
        let patch = match ready {
            Some((level, score)) => serde_json::json!({"metadata": {
                "labels": {node::READY_LABEL: "true"},
                "annotations": {node::ENFORCEMENT_ANNOTATION: level, node::ENFORCEMENT_SCORE_ANNOTATION: score},
            }}),
            None => serde_json::json!({"metadata": {
                "labels": {node::READY_LABEL: null},
                "annotations": {
                    node::ENFORCEMENT_ANNOTATION: null,
                    node::ENFORCEMENT_SCORE_ANNOTATION: null,
                    node::UNINSTALL_FAILED_ANNOTATION: null,
                },
            }}),
        };
        self.patch_node(&patch).await
    }

    /// A merge patch of this pod's node.
    async fn patch_node(&self, patch: &serde_json::Value) -> anyhow::Result<()> {
        self.nodes
            .patch(
                &self.args.node_name,
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await
            .with_context(|| format!("patching node {}", self.args.node_name))?;
        Ok(())
    }

    fn install(&self) -> anyhow::Result<()> {
        let bin = self.args.install_dir.join("bin");
        for name in node::BINARIES {
            if node::install_file(&self.args.image_bin.join(name), &bin.join(name), 0o755)
                .with_context(|| format!("installing {name} into {}", bin.display()))?
            {
                tracing::info!("installed {}", bin.join(name).display());
            }
        }
        node::write_if_changed(
            &self.args.install_dir.join("etc/shim.toml"),
            node::shim_config(&self.args.pod_policy).as_bytes(),
            0o644,
        )?;
        Ok(())
    }

    fn spawn_rauhad(&self) -> anyhow::Result<tokio::process::Child> {
        let a = &self.args;
        let rauhad = self.bin("rauhad");
        let enforcement = match a.enforcement {
            Enforcement::Preferred => "preferred",
            Enforcement::Required => "required",
        };
        let cgroup = node::daemon_cgroup(&a.cgroup_parent);
        let mut c = host_command(&[
            "exec",
            "--die-with-parent",
            "--cgroup",
            &cgroup,
            "--",
            &rauhad,
        ]);
        c.arg("--root")
            .arg(&a.state_dir)
            .arg("--socket")
            .arg(&a.socket)
            .args([
                "--cgroup-parent",
                &a.cgroup_parent,
                "--enforcement",
                enforcement,
            ])
            .arg("--bpf-pin-dir")
            .arg(&a.bpf_pin_dir)
            .arg("--stdio-root")
            .arg(&a.containerd_state_dir)
            .stdin(Stdio::null())
            .kill_on_drop(false);
        c.spawn().context("starting rauhad")
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("the API server (in-cluster config)")?;
    let n = NodeSide {
        nodes: Api::all(client.clone()),
        args,
    };
    let daemonsets: Api<DaemonSet> = Api::namespaced(client, &n.args.namespace);
    // Taken now: a SIGTERM while installing waits for the loop below.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // A node that was ready before this pod (an upgrade) is not until this rauhad answers.
    n.label(None).await?;
    n.install()?;
    n.edit_config("add-handler")
        .await
        .context("adding the rauha handler to containerd's config")?;
    let mut rauhad = n.spawn_rauhad()?;
    let started = Instant::now();
    let ready = loop {
        if let Some(status) = rauhad.try_wait()? {
            bail!("rauhad exited ({status}) before it answered; its log is above");
        }
        match n.enforcement().await {
            Ok(e) => break e,
            Err(e) if started.elapsed() > Duration::from_secs(60) => {
                bail!("rauhad does not answer after 60s: {e:#}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    };
    tracing::info!(enforcement = %ready.0, score = %ready.1, "rauhad answers; node labelled {}=true", node::READY_LABEL);
    n.label(Some(ready)).await?;

    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut labelled = true;
    let mut failures = 0;
    let exited = loop {
        tokio::select! {
            status = rauhad.wait() => break Some(status?),
            _ = term.recv() => break None,
            _ = tick.tick() => {
                match n.enforcement().await {
                    Ok(e) => {
                        failures = 0;
                        if !labelled { labelled = n.label(Some(e)).await.is_ok(); }
                    }
                    Err(e) => {
                        failures += 1;
                        if failures >= 2 && labelled {
                            tracing::warn!("rauhad does not answer ({e:#}); node unlabelled");
                            labelled = n.label(None).await.is_err();
                        }
                    }
                }
            }
        }
    };
    // From here the node is not ready, whatever happens next.
    if let Err(e) = n.label(None).await {
        tracing::warn!("{e:#}");
    }
    if let Some(status) = exited {
        bail!("rauhad exited ({status}); the pod restarts it");
    }
    let uninstall = match daemonsets.get_opt(&n.args.daemonset).await {
        Ok(None) => true,
        Ok(Some(ds)) => ds.metadata.deletion_timestamp.is_some(),
        Err(e) => {
            tracing::warn!(
                "cannot tell whether the DaemonSet is being deleted ({e}); leaving Rauha installed"
            );
            false
        }
    };
    if uninstall {
        tracing::info!("the DaemonSet is gone: removing Rauha from this node");
        match n.rauha(&["zone", "list", "--json"]).await {
            Ok(list) => {
                let zones: Vec<serde_json::Value> = serde_json::from_str(&list).unwrap_or_default();
                for z in zones.iter().filter_map(|z| z["name"].as_str()) {
                    // --force: a forced uninstall deletes zones that run work.
                    match n.rauha(&["zone", "delete", "--force", z]).await {
                        Ok(_) => tracing::info!("deleted zone {z}"),
                        Err(e) => tracing::warn!("deleting zone {z}: {e:#}"),
                    }
                }
            }
            Err(e) => tracing::warn!("listing zones: {e:#}"),
        }
    }
    stop(&mut rauhad).await;
    if uninstall {
        if let Err(e) = n.remove().await {
            // Said on the node, where helm uninstall's hook looks.
            let patch = serde_json::json!({"metadata": {"annotations": {
                node::UNINSTALL_FAILED_ANNOTATION: format!("{e:#}"),
            }}});
            let _ = n.patch_node(&patch).await;
            return Err(e);
        }
        tracing::info!("Rauha is removed from node {}", n.args.node_name);
    }
    Ok(())
}

impl NodeSide {
    /// What `rauha-node run` put on the node, taken away: the handler out
    /// of containerd's config (containerd restarted), the binaries, the
    /// state, the socket, the BPF pins and the cgroups.
    async fn remove(&self) -> anyhow::Result<()> {
        self.edit_config("remove-handler")
            .await
            .context("taking the rauha handler out of containerd's config")?;
        let a = &self.args;
        let mut argv = vec![
            "cleanup".to_string(),
            "--cgroup-parent".into(),
            a.cgroup_parent.clone(),
            "--file".into(),
            a.socket.display().to_string(),
        ];
        // The socket's directory and the install dir go only when nothing
        // else is in them (the socket may sit in /run itself).
        for d in [a.socket.parent(), Some(a.install_dir.as_path())]
            .into_iter()
            .flatten()
        {
            argv.extend(["--if-empty".into(), d.display().to_string()]);
        }
        argv.push("--".into());
        for p in [
            a.install_dir.join("bin"),
            a.install_dir.join("etc"),
            a.install_dir.join("state"),
            a.state_dir.clone(),
            a.bpf_pin_dir.clone(),
        ] {
            argv.push(p.display().to_string());
        }
        host_step(&argv).await?;
        Ok(())
    }
}

/// SIGTERM to rauhad, SIGKILL after 20 s.
async fn stop(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        // SAFETY: kill with plain integers, on our own child.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    if tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

async fn uninstall(
    runtime_class: &str,
    namespace: &str,
    daemonset: &str,
    force: bool,
) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("the API server (in-cluster config)")?;
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::all(client.clone());
    // Forced by the value, or afterwards by an annotation on the DaemonSet
    // (a refused uninstall leaves the release unable to take an upgrade).
    let annotated = daemonsets
        .get_opt(daemonset)
        .await
        .context("reading the node DaemonSet")?
        .and_then(|ds| ds.metadata.annotations)
        .is_some_and(|a| a.get(FORCE_ANNOTATION).map(String::as_str) == Some("true"));
    if !(force || annotated) {
        let hint = format!(
            "kubectl -n {namespace} annotate daemonset {daemonset} {FORCE_ANNOTATION}=true"
        );
        refuse_while_pods_run(pods, runtime_class, &hint).await?;
    }
    match daemonsets
        .delete(daemonset, &DeleteParams::foreground())
        .await
    {
        Ok(_) => println!(
            "deleting DaemonSet {namespace}/{daemonset}: each node pod removes Rauha from its node"
        ),
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e).context(format!("deleting DaemonSet {namespace}/{daemonset}")),
    }
    let started = Instant::now();
    let mut said = Instant::now();
    while daemonsets.get_opt(daemonset).await?.is_some() {
        if said.elapsed() > Duration::from_secs(15) {
            println!(
                "waiting for the node pods to finish ({}s)",
                started.elapsed().as_secs()
            );
            said = Instant::now();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // A node pod that could not take Rauha away said so on its node.
    let nodes: Api<Node> = Api::all(client);
    let failed: Vec<String> = nodes
        .list(&ListParams::default())
        .await
        .context("listing nodes")?
        .items
        .iter()
        .filter_map(|n| {
            let why = n
                .metadata
                .annotations
                .as_ref()?
                .get(node::UNINSTALL_FAILED_ANNOTATION)?;
            Some(format!(
                "{}: {why}",
                n.metadata.name.as_deref().unwrap_or("")
            ))
        })
        .collect();
    if !failed.is_empty() {
        bail!(
            "Rauha could not be removed from {} node(s): {}; fix that by hand on the node (see the chart's README, \"On each node\")",
            failed.len(),
            failed.join("; ")
        );
    }
    println!("Rauha is removed from every node");
    Ok(())
}

/// The annotation on the node DaemonSet that lets helm uninstall go on
/// under running pods.
const FORCE_ANNOTATION: &str = "rauha.dev/force-uninstall";

async fn refuse_while_pods_run(
    pods: Api<Pod>,
    runtime_class: &str,
    force_hint: &str,
) -> anyhow::Result<()> {
    let list = pods
        .list(&ListParams::default())
        .await
        .context("listing pods")?;
    let running: Vec<String> = list
        .items
        .iter()
        .filter(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.runtime_class_name.as_deref())
                == Some(runtime_class)
        })
        .filter(|p| {
            matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Pending" | "Running") | None
            )
        })
        .map(|p| {
            format!(
                "{}/{}",
                p.metadata.namespace.as_deref().unwrap_or(""),
                p.metadata.name.as_deref().unwrap_or("")
            )
        })
        .collect();
    if running.is_empty() {
        println!("no pod runs under RuntimeClass {runtime_class}");
        return Ok(());
    }
    let names = running
        .iter()
        .take(20)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    let more = if running.len() > 20 {
        format!(" and {} more", running.len() - 20)
    } else {
        String::new()
    };
    bail!(
        "refusing to uninstall Rauha: {} pod(s) still run under RuntimeClass {runtime_class}: {names}{more}; \
         delete them (or their SandboxTasks and Zones) and run helm uninstall again, or, to \
         uninstall under them (their zones are deleted), `{force_hint}` first",
        running.len()
    )
}
