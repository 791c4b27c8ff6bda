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
            if exec_id.is_empty() && sigkilled && svc.oom_killed(&container_id).await {
                let mut oom = TaskOOM::new();
                oom.container_id = container_id.clone();
                svc.publish(topics::TASK_OOM_EVENT_TOPIC, oom).await;
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
