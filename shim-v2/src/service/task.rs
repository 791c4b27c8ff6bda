//! containerd's Task API: one handler per request. The lifecycle ones
//! (create, start, delete) are in `lifecycle`; the rest make one or two
//! calls to rauhad each.

use super::*;

#[async_trait]
impl Task for Service {
    async fn create(
        &self,
        ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        self.create_task(ctx, req).await
    }

    async fn start(
        &self,
        ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        self.start_task(ctx, req).await
    }

    async fn delete(
        &self,
        ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        self.delete_task(ctx, req).await
    }

    async fn pids(
        &self,
        _ctx: &TtrpcContext,
        req: api::PidsRequest,
    ) -> TtrpcResult<api::PidsResponse> {
        let (zone, mine) = self.with(&req.id, |c| {
            let mine: Vec<String> = std::iter::once(&c.init)
                .chain(c.execs.values())
                .filter_map(|p| p.rauha_id.clone())
                .collect();
            Ok((c.zone.clone(), mine))
        })?;
        let list = self
            .processes()
            .await?
            .ps(v1::PsRequest { zone })
            .await
            .map_err(ttrpc_error)?
            .into_inner();
        let mut resp = api::PidsResponse::new();
        for p in list
            .processes
            .iter()
            .filter(|p| p.state == "running" && mine.contains(&p.id))
        {
            let mut info = ProcessInfo::new();
            info.pid = if p.host_pid != 0 { p.host_pid } else { p.pid };
            resp.processes.push(info);
        }
        Ok(resp)
    }

    async fn pause(&self, _ctx: &TtrpcContext, req: api::PauseRequest) -> TtrpcResult<api::Empty> {
        self.set_paused(&req.id, true).await?;
        let mut ev = TaskPaused::new();
        ev.container_id = req.id.clone();
        self.publish(topics::TASK_PAUSED_EVENT_TOPIC, ev).await;
        Ok(api::Empty::new())
    }

    async fn resume(
        &self,
        _ctx: &TtrpcContext,
        req: api::ResumeRequest,
    ) -> TtrpcResult<api::Empty> {
        self.set_paused(&req.id, false).await?;
        let mut ev = TaskResumed::new();
        ev.container_id = req.id.clone();
        self.publish(topics::TASK_RESUMED_EVENT_TOPIC, ev).await;
        Ok(api::Empty::new())
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        let signal = req.signal as i32;
        let (rauha_id, exited, zone, owns_zone, root) = self.with(&req.id, |c| {
            let p = c.proc(&req.exec_id)?;
            Ok((
                p.rauha_id.clone(),
                p.exited(),
                c.zone.clone(),
                c.owns_zone,
                c.root.clone(),
            ))
        })?;
        if exited.is_some() {
            return Err(Error::Finished.into());
        }
        let Some(rauha_id) = rauha_id else {
            // Never started: it ends here, killed by the signal.
            let exit = Exit {
                status: 128 + req.signal,
                at_ms: now_ms(),
            };
            self.with(&req.id, |c| {
                c.proc(&req.exec_id)?.exit.send_replace(Some(exit));
                Ok(())
            })?;
            self.persist();
            let mut ev = TaskExit::new();
            ev.container_id = req.id.clone();
            ev.id = if req.exec_id.is_empty() {
                req.id.clone()
            } else {
                req.exec_id.clone()
            };
            ev.exit_status = exit.status;
            ev.exited_at = Some(convert::timestamp(exit.at_ms)).into();
            self.publish(topics::TASK_EXIT_EVENT_TOPIC, ev).await;
            return Ok(api::Empty::new());
        };
        if let (true, true, Some(name)) = (req.all, req.exec_id.is_empty(), &root) {
            // A pod's container: every process in its root, whatever group.
            self.signal_root(&zone, name, signal).await?;
            return Ok(api::Empty::new());
        }
        if req.all && req.exec_id.is_empty() && owns_zone && signal == libc::SIGKILL {
            // Every process of the container's zone, not only its init.
            self.zones()
                .await?
                .stop(v1::ZoneRef { zone })
                .await
                .map_err(ttrpc_error)?;
            return Ok(api::Empty::new());
        }
        let signalled = self
            .processes()
            .await?
            .signal(v1::SignalRequest {
                id: rauha_id.clone(),
                signal,
            })
            .await;
        match signalled {
            Ok(_) => Ok(api::Empty::new()),
            // Ended before the signal came (its exit not yet seen here):
            // containerd takes "not found" as "already finished", as from
            // runc's shim; any other refusal stands.
            Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                let ended = self
                    .processes()
                    .await?
                    .ps(v1::PsRequest { zone })
                    .await
                    .map(|r| {
                        r.into_inner()
                            .processes
                            .iter()
                            .any(|p| p.id == rauha_id && p.state != "running")
                    })
                    .unwrap_or(false);
                if ended {
                    Err(Error::Finished.into())
                } else {
                    Err(ttrpc_error(s))
                }
            }
            Err(s) => Err(ttrpc_error(s)),
        }
    }

    async fn exec(
        &self,
        _ctx: &TtrpcContext,
        req: api::ExecProcessRequest,
    ) -> TtrpcResult<api::Empty> {
        let mut spec = req
            .spec
            .as_ref()
            .ok_or(Error::NoExecSpec)
            .and_then(|s| Ok(convert::exec_process(s)?))?;
        spec.terminal = req.terminal;
        self.with(&req.id, |c| {
            spec.root = c.root.clone().unwrap_or_default();
            if let (Some(own), Some(init)) = (spec.security.as_mut(), &c.init.spec.security) {
                own.seccomp_json = init.seccomp_json.clone();
            }
            if c.init.exited().is_some() {
                return Err(Error::Stopped(req.id.clone()).into());
            }
            if c.execs.contains_key(&req.exec_id) {
                return Err(Error::ExecExists(req.exec_id.clone()).into());
            }
            c.execs.insert(
                req.exec_id.clone(),
                Proc::new(spec, stdio(&req.stdin, &req.stdout, &req.stderr)),
            );
            Ok(())
        })?;
        self.persist();
        let mut ev = TaskExecAdded::new();
        ev.container_id = req.id.clone();
        ev.exec_id = req.exec_id.clone();
        self.publish(topics::TASK_EXEC_ADDED_EVENT_TOPIC, ev).await;
        Ok(api::Empty::new())
    }

    async fn resize_pty(
        &self,
        _ctx: &TtrpcContext,
        req: api::ResizePtyRequest,
    ) -> TtrpcResult<api::Empty> {
        let Ok(id) = self.running_id(&req.id, &req.exec_id) else {
            // A process that already ended has no terminal to size.
            return Ok(api::Empty::new());
        };
        let r = self
            .processes()
            .await?
            .resize(v1::ResizeRequest {
                id,
                rows: req.height,
                cols: req.width,
            })
            .await;
        match r {
            Err(s) if s.code() != tonic::Code::FailedPrecondition => Err(ttrpc_error(s)),
            _ => Ok(api::Empty::new()),
        }
    }

    async fn close_io(
        &self,
        _ctx: &TtrpcContext,
        req: api::CloseIORequest,
    ) -> TtrpcResult<api::Empty> {
        if !req.stdin {
            return Ok(api::Empty::new());
        }
        let id = self.running_id(&req.id, &req.exec_id)?;
        self.processes()
            .await?
            .close_stdin(v1::ProcessRef { id })
            .await
            .map_err(ttrpc_error)?;
        Ok(api::Empty::new())
    }

    async fn update(
        &self,
        _ctx: &TtrpcContext,
        req: api::UpdateTaskRequest,
    ) -> TtrpcResult<api::Empty> {
        let resources: Value = req
            .resources
            .as_ref()
            .map(|r| serde_json::from_slice(&r.value))
            .transpose()
            .map_err(Error::ResourcesNotJson)?
            .unwrap_or(Value::Null);
        // A pod's container: its own limits, and its new memory limit
        // changes the pod's total. As runc does, what the update leaves out
        // keeps its value.
        let member = self.with(&req.id, |c| {
            let Some(root) = c.root.clone() else {
                return Ok(None);
            };
            let merged = convert::merge_limits(&c.limits, &convert::root_limits(&resources));
            Ok(Some((c.zone.clone(), root, merged)))
        })?;
        if let Some((zone, name, merged)) = member {
            self.zones()
                .await?
                .update_root(v1::UpdateRootRequest {
                    zone: zone.clone(),
                    name,
                    limits: Some(merged.clone()),
                })
                .await
                .map_err(ttrpc_error)?;
            self.with(&req.id, |c| {
                c.limits = merged;
                Ok(())
            })?;
            self.persist();
            self.update_pod_memory(&zone).await;
            return Ok(api::Empty::new());
        }
        let zone = self.owner_zone(&req.id, "update")?;
        let mut zones = self.zones().await?;
        let current = zones
            .get(v1::ZoneRef { zone: zone.clone() })
            .await
            .map_err(ttrpc_error)?
            .into_inner();
        let text = current.policy.map(|p| p.toml).unwrap_or_default();
        let mut policy =
            rauha_spec::policy::Policy::parse("zone policy", &text).map_err(Error::from)?;
        convert::apply_resources(&mut policy.resources, &resources);
        zones
            .update_policy(v1::UpdatePolicyRequest {
                zone,
                policy: Some(v1::PolicySource {
                    source: Some(v1::policy_source::Source::Inline(v1::InlinePolicy {
                        file: "update".into(),
                        toml: policy.to_toml(),
                    })),
                }),
            })
            .await
            .map_err(ttrpc_error)?;
        Ok(api::Empty::new())
    }

    async fn wait(
        &self,
        _ctx: &TtrpcContext,
        req: api::WaitRequest,
    ) -> TtrpcResult<api::WaitResponse> {
        let mut rx = self.with(&req.id, |c| Ok(c.proc(&req.exec_id)?.exit.subscribe()))?;
        let exit = loop {
            if let Some(e) = *rx.borrow_and_update() {
                break e;
            }
            if rx.changed().await.is_err() {
                return Err(Error::Deleted(req.id.clone()).into());
            }
        };
        let mut resp = api::WaitResponse::new();
        resp.exit_status = exit.status;
        resp.exited_at = Some(convert::timestamp(exit.at_ms)).into();
        Ok(resp)
    }

    async fn state(
        &self,
        _ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        self.with(&req.id, |c| {
            let p = c.proc(&req.exec_id)?;
            let mut resp = api::StateResponse::new();
            resp.id = req.id.clone();
            resp.exec_id = req.exec_id.clone();
            resp.bundle = c.bundle.display().to_string();
            resp.pid = p.pid;
            resp.status = p.status(c.paused).into();
            resp.stdin = p.stdio.stdin.clone();
            resp.stdout = p.stdio.stdout.clone();
            resp.stderr = p.stdio.stderr.clone();
            resp.terminal = p.spec.terminal;
            if let Some(e) = p.exited() {
                resp.exit_status = e.status;
                resp.exited_at = Some(convert::timestamp(e.at_ms)).into();
            }
            Ok(resp)
        })
    }

    async fn stats(
        &self,
        _ctx: &TtrpcContext,
        req: api::StatsRequest,
    ) -> TtrpcResult<api::StatsResponse> {
        let usage = self.usage_of(&req.id).await?;
        let mut resp = api::StatsResponse::new();
        resp.stats = Some(convert::metrics(&usage)?).into();
        Ok(resp)
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        let task_pid = self.with(&req.id, |c| Ok(c.init.pid)).unwrap_or(0);
        let mut resp = api::ConnectResponse::new();
        resp.shim_pid = std::process::id();
        resp.task_pid = task_pid;
        resp.version = format!(
            "rauha {} ({})",
            env!("CARGO_PKG_VERSION"),
            self.inner.rauhad.addr()
        );
        Ok(resp)
    }

    async fn shutdown(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ShutdownRequest,
    ) -> TtrpcResult<api::Empty> {
        let empty = self
            .inner
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty();
        if empty {
            self.inner.exit.signal();
        }
        Ok(api::Empty::new())
    }
}
