//! Starting a process in rauhad once (a lost reply asks again), and
//! watching it to its end.

use super::*;

impl Service {
    /// Starts a process in rauhad, once. A call that broke in flight
    /// (rauhad died) may have started it: the same request, with the id the
    /// shim chose, is sent again once rauhad is back, and returns the
    /// process it started, or starts it (for 30 s at most).
    pub(super) async fn run_once(&self, run: v1::RunRequest) -> TtrpcResult<v1::Process> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut broke = false;
        loop {
            let r = match self.inner.rauhad.processes().await {
                Ok(mut c) => c.run(run.clone()).await.map(|r| r.into_inner()),
                Err(s) => Err(s),
            };
            match r {
                Ok(p) => return Ok(p),
                Err(s)
                    if std::time::Instant::now() < deadline
                        && (matches!(s.code(), tonic::Code::Unknown | tonic::Code::Cancelled)
                            || (broke && s.code() == tonic::Code::Unavailable)) =>
                {
                    broke = true;
                    self.inner.rauhad.reset().await;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(s) => return Err(ttrpc_error(s)),
            }
        }
    }

    /// Waits in the background for a started process's end (across rauhad
    /// restarts), then records and publishes it.
    pub(super) fn watch_exit(
        &self,
        container_id: String,
        exec_id: String,
        rauha_id: String,
        pid: u32,
    ) {
        let svc = self.clone();
        tokio::spawn(async move {
            let ended = loop {
                let r = match svc.inner.rauhad.processes().await {
                    Ok(mut c) => c
                        .wait(v1::ProcessRef {
                            id: rauha_id.clone(),
                        })
                        .await
                        .map(|r| r.into_inner()),
                    Err(s) => Err(s),
                };
                match r {
                    Ok(p) => break Some(p),
                    Err(s) if s.code() == tonic::Code::NotFound => break None,
                    Err(_) => {
                        svc.inner.rauhad.reset().await;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            };
            let exit = match &ended {
                Some(p) if p.has_exit_code => Exit {
                    status: p.exit_code as u32,
                    at_ms: if p.ended_ms > 0 { p.ended_ms } else { now_ms() },
                },
                _ => Exit {
                    status: 255,
                    at_ms: now_ms(),
                },
            };
            if exec_id.is_empty() {
                // A pod's container ends with its init, as a container with
                // a pid namespace of its own would: nothing it started stays.
                let root = svc.with(&container_id, |c| Ok((c.zone.clone(), c.root.clone())));
                if let Ok((zone, Some(name))) = root {
                    if let Err(e) = svc.signal_root(&zone, &name, libc::SIGKILL).await {
                        log::warn!("cannot end what container {container_id} left running: {e}");
                    }
                }
            }
            // The OOM killer sends SIGKILL: an init that ended otherwise was
            // not its victim, even when another container of the pod was.
            let sigkilled = exit.status == 128 + libc::SIGKILL as u32;
            let oom = exec_id.is_empty() && sigkilled && svc.oom_killed(&container_id).await;
            if oom {
                let mut oom = TaskOOM::new();
                oom.container_id = container_id.clone();
                svc.publish(topics::TASK_OOM_EVENT_TOPIC, oom).await;
            }
            // Before containerd hears of the exit: kubelet reads the
            // termination message once it sees the container ended.
            if exec_id.is_empty() {
                if let Some(ended) = &ended {
                    svc.report_result(&container_id, ended, oom).await;
                }
            }
            let sent = svc.with(&container_id, |c| {
                let p = c.proc_mut(&exec_id)?;
                // rauhad answered the wait after the last output byte:
                // the FIFOs may end now.
                p.held.clear();
                p.exit.send_replace(Some(exit));
                Ok(())
            });
            if sent.is_ok() {
                svc.persist();
                let mut ev = TaskExit::new();
                ev.container_id = container_id.clone();
                ev.id = if exec_id.is_empty() {
                    container_id
                } else {
                    exec_id
                };
                ev.pid = pid;
                ev.exit_status = exit.status;
                ev.exited_at = Some(convert::timestamp(exit.at_ms)).into();
                svc.publish(topics::TASK_EXIT_EVENT_TOPIC, ev).await;
            }
        });
    }
}

/// Most bytes of a termination message kubelet keeps (it reads the file's
/// last 4096 bytes): the result is made to fit, whole.
const TERMINATION_MESSAGE_MAX: usize = 4000;

impl Service {
    /// Writes a pod container's result envelope (the keys of `rauha
    /// sandbox --json`'s: exit, duration, output, the zone's enforcement)
    /// to its termination message file, where kubelet picks it up into the
    /// pod's status and the operator into its task's: the node reports
    /// results without any credential to the API server. Output is cut to
    /// fit; `kubectl logs` has it whole.
    pub(super) async fn report_result(&self, container_id: &str, ended: &v1::Process, oom: bool) {
        let Ok((bundle, zone, member)) = self.with(container_id, |c| {
            Ok((c.bundle.clone(), c.zone.clone(), c.root.is_some()))
        }) else {
            return;
        };
        // The pod's sandbox is no task of anyone's.
        if !member {
            return;
        }
        let Ok(spec) = read_bundle_spec(&bundle) else {
            return;
        };
        // kubelet's termination message file.
        let Some(path) = convert::host_path(&spec, std::path::Path::new("/dev/termination-log"))
        else {
            return;
        };
        let logs = match self.inner.rauhad.processes().await {
            Ok(mut c) => c
                .logs(v1::ProcessRef {
                    id: ended.id.clone(),
                })
                .await
                .map(|r| r.into_inner())
                .ok(),
            Err(_) => None,
        };
        let (enforcement, denials) = match self.inner.rauhad.zones().await {
            Ok(mut c) => {
                let enforcement = c
                    .get(v1::ZoneRef { zone: zone.clone() })
                    .await
                    .ok()
                    .and_then(|z| z.into_inner().enforcement);
                // What the kernel denied in the zone since the last result
                // (where BPF-LSM is in force: elsewhere there is none).
                let denials = c
                    .take_denials(v1::ZoneRef { zone: zone.clone() })
                    .await
                    .map(|d| d.into_inner().events)
                    .unwrap_or_default();
                (enforcement, denials)
            }
            Err(_) => (None, Vec::new()),
        };
        let Some(enforcement) = enforcement else {
            log::warn!("no result for container {container_id}: rauhad did not give its zone's enforcement");
            return;
        };
        // What leaves the node is redacted of the pod's secrets.
        let secrets = convert::secret_values(&spec).unwrap_or_default();
        let logs = logs.map(|mut l| {
            l.stdout = redact(&l.stdout, &secrets);
            l.stderr = redact(&l.stderr, &secrets);
            l
        });
        let denials: Vec<v1::EnforcementEvent> = denials
            .into_iter()
            .map(|mut d| {
                d.target = String::from_utf8_lossy(&redact(d.target.as_bytes(), &secrets)).into();
                d
            })
            .collect();
        // What the task changed in its workspace, its names redacted too.
        let files = workspace::of(&spec)
            .ok()
            .flatten()
            .and_then(|ws| workspace::changes(&ws, std::path::Path::new(&bundle), MAX_FILES))
            .map(|mut found| {
                for c in &mut found.changes {
                    c.path = String::from_utf8_lossy(&redact(c.path.as_bytes(), &secrets)).into();
                    c.link_target = c
                        .link_target
                        .take()
                        .map(|t| String::from_utf8_lossy(&redact(t.as_bytes(), &secrets)).into());
                }
                found
            });
        let message = result_envelope(
            ended,
            &zone,
            logs.as_ref(),
            &enforcement,
            &denials,
            files.as_ref(),
            oom,
        );
        if let Err(e) = std::fs::write(&path, message) {
            log::warn!(
                "cannot write container {container_id}'s result to {}: {e}",
                path.display()
            );
        }
    }
}

/// `bytes` with each secret's value replaced by `[REDACTED:NAME]`.
pub(super) fn redact(bytes: &[u8], secrets: &[(String, String)]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for (name, value) in secrets.iter().filter(|(_, v)| !v.is_empty()) {
        let marker = format!("[REDACTED:{name}]");
        let v = value.as_bytes();
        let mut next = Vec::with_capacity(out.len());
        let mut i = 0;
        while i < out.len() {
            if out[i..].starts_with(v) {
                next.extend_from_slice(marker.as_bytes());
                i += v.len();
            } else {
                next.push(out[i]);
                i += 1;
            }
        }
        out = next;
    }
    out
}

/// The most workspace changes a result lists (the rest are counted).
const MAX_FILES: usize = 64;

/// The most denials a result lists (the rest are counted), and the longest
/// target of one.
const MAX_DENIALS: usize = 8;
const MAX_DENIAL_TARGET: usize = 160;

/// The result as JSON of at most TERMINATION_MESSAGE_MAX bytes.
pub(super) fn result_envelope(
    p: &v1::Process,
    zone: &str,
    logs: Option<&v1::LogsResponse>,
    enforcement: &v1::Enforcement,
    denials: &[v1::EnforcementEvent],
    files: Option<&rauha_workspace::Scanned>,
    oom: bool,
) -> String {
    let signal = (p.signal > 0).then_some(p.signal);
    let code = if p.has_exit_code {
        Some(p.exit_code)
    } else {
        None
    };
    let status = rauha_spec::result::TaskStatus::classify(code, signal, false, oom);
    let text =
        |b: Option<&Vec<u8>>| String::from_utf8_lossy(b.map_or(&[][..], |b| &b[..])).into_owned();
    let mut stdout = text(logs.map(|l| &l.stdout));
    let mut stderr = text(logs.map(|l| &l.stderr));
    let truncated = logs.is_some_and(|l| l.truncated);
    // Listed while they fit; the rest counted.
    let mut listed = files.map_or(0, |f| f.changes.len());
    let render = |stdout: &str, stderr: &str, cut: bool, listed: usize| {
        let mut v = serde_json::json!({
            "task_id": p.id,
            "zone_id": zone,
            "command": p.args,
            "status": status,
            "exit_code": code,
            "duration_ms": p.ended_ms.saturating_sub(p.started_ms),
            "stdout": stdout,
            "stderr": stderr,
            "stdout_truncated": truncated || cut,
            "stderr_truncated": truncated || cut,
            "enforcement": {
                "layers": enforcement.layers.iter().map(|l| serde_json::json!({
                    "layer": l.layer, "in_force": l.in_force, "detail": l.detail,
                })).collect::<Vec<_>>(),
                "score": enforcement.score,
                "label": enforcement.label,
            },
            // At most MAX_DENIALS, each target cut: the message has 4 KiB.
            "enforcement_events": denials.iter().take(MAX_DENIALS).map(|d| serde_json::json!({
                "time_ms": d.time_ms,
                "zone_id": d.zone_id,
                "pid": d.pid,
                "hook": d.hook,
                "target": d.target.chars().take(MAX_DENIAL_TARGET).collect::<String>(),
                "errno": d.errno,
            })).collect::<Vec<_>>(),
        });
        if denials.len() > MAX_DENIALS {
            v["enforcement_events_unlisted"] = (denials.len() - MAX_DENIALS).into();
        }
        if let Some(f) = files {
            v["files_changed"] = serde_json::to_value(&f.changes[..listed]).unwrap_or_default();
            v["files_changed_unlisted"] = (f.unlisted + (f.changes.len() - listed) as u64).into();
        }
        if let Some(sig) = signal {
            v["signal"] = sig.into();
        }
        v.to_string()
    };
    let mut out = render(&stdout, &stderr, false, listed);
    // The changes' list gives way first, down to 8 entries, then the
    // streams.
    let keep = listed.min(8);
    while out.len() > TERMINATION_MESSAGE_MAX && listed > keep {
        listed -= 1;
        out = render(&stdout, &stderr, false, listed);
    }
    // Cut the longer stream (on a character boundary) until it fits; the
    // layers' details go last.
    while out.len() > TERMINATION_MESSAGE_MAX {
        let over = out.len() - TERMINATION_MESSAGE_MAX;
        let longer = if stdout.len() >= stderr.len() {
            &mut stdout
        } else {
            &mut stderr
        };
        if longer.is_empty() {
            break;
        }
        // Escaping can make a byte two in JSON: cut half the excess at a
        // time rather than overshoot.
        let mut keep = longer.len().saturating_sub((over / 2).max(64));
        while !longer.is_char_boundary(keep) {
            keep -= 1;
        }
        longer.truncate(keep);
        out = render(&stdout, &stderr, true, listed);
    }
    // Still too long (the streams are empty): fewer changes.
    while out.len() > TERMINATION_MESSAGE_MAX && listed > 0 {
        listed -= 1;
        out = render(&stdout, &stderr, true, listed);
    }
    out
}
