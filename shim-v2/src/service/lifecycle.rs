//! The container lifecycle handlers: create (zone or container root,
//! then its init process), start and delete.

use super::*;

impl Service {
    pub(super) async fn create_task(
        &self,
        ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        let replay = ctx.metadata.contains_key(REPLAY_KEY);
        if !req.checkpoint.is_empty() {
            return Err(Error::Checkpoint.into());
        }
        let bundle = PathBuf::from(&req.bundle);
        let spec = read_bundle_spec(&bundle).map_err(Error::from)?;
        let process = spec.get("process").unwrap_or(&Value::Null);
        let mut init = convert::process(process).map_err(Error::from)?;
        init.terminal = req.terminal;
        // Held to the pod policy's Pod Security level before anything is
        // made; its own capabilities and seccomp profile go with it.
        let config =
            crate::config::ShimConfig::from_options(req.options.as_ref()).map_err(Error::from)?;
        let chosen = convert::chosen_policy(&spec, config.pod_default()).map_err(Error::from)?;
        convert::check_pod_security(&spec, &chosen).map_err(Error::from)?;
        init.security = Some(convert::init_security(&spec));
        // Secrets reach the process's environment from the files the pod
        // mounts, never through the pod's spec. The pod's own sandbox (its
        // zone) runs no task and mounts no secret.
        let secrets = match convert::role(&spec) {
            Role::Owner => Vec::new(),
            _ => convert::secret_values(&spec).map_err(Error::from)?,
        };
        for (env, value) in secrets {
            init.env
                .retain(|e| e.split('=').next() != Some(env.as_str()));
            init.env.push(format!("{env}={value}"));
        }
        let mut root = None;
        let (zone, owns_zone) = match convert::role(&spec) {
            Role::Owner => {
                self.mount_rootfs(&req, replay).await?;
                match self
                    .create_zone(&req.id, &req.bundle, &spec, &chosen, replay)
                    .await
                {
                    Ok(zone) => (zone, true),
                    Err(e) => {
                        unmount_rootfs(&bundle);
                        return Err(e);
                    }
                }
            }
            Role::Named { zone } => {
                let z = self
                    .zones()
                    .await?
                    .get(v1::ZoneRef { zone })
                    .await
                    .map_err(ttrpc_error)?
                    .into_inner();
                (z.id, false)
            }
            Role::Member { sandbox_id } => {
                let zone = self
                    .with(&sandbox_id, |c| Ok(c.zone.clone()))
                    .map_err(|_| Error::SandboxNotServed {
                        sandbox: sandbox_id.clone(),
                        container: req.id.clone(),
                    })?;
                // A task pod's inputs, in its workspace before it starts.
                if let Some(ws) = workspace::of(&spec).map_err(Error::from)? {
                    workspace::prepare(&ws, std::path::Path::new(&bundle)).map_err(Error::from)?;
                }
                self.mount_rootfs(&req, replay).await?;
                let added = self.add_root(&zone, &req.id, &bundle, &spec, replay).await;
                if let Err(e) = added {
                    unmount_rootfs(&bundle);
                    return Err(e);
                }
                root = Some(req.id.clone());
                init.root = req.id.clone();
                (zone, false)
            }
        };
        let limits = convert::root_limits(
            spec.get("linux")
                .and_then(|l| l.get("resources"))
                .unwrap_or(&Value::Null),
        );
        let io = stdio(&req.stdin, &req.stdout, &req.stderr);
        self.inner
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                req.id.clone(),
                Container {
                    bundle,
                    zone: zone.clone(),
                    owns_zone,
                    root: root.clone(),
                    limits,
                    oom_before: 0,
                    paused: false,
                    init: Proc::new(init, io),
                    execs: HashMap::new(),
                },
            );
        self.persist();
        if root.is_some() {
            self.update_pod_memory(&zone).await;
        }
        let mut ev = TaskCreate::new();
        ev.container_id = req.id.clone();
        ev.bundle = req.bundle.clone();
        ev.rootfs = req.rootfs.clone();
        let mut tio = TaskIO::new();
        tio.stdin = req.stdin.clone();
        tio.stdout = req.stdout.clone();
        tio.stderr = req.stderr.clone();
        tio.terminal = req.terminal;
        ev.io = Some(tio).into();
        self.publish(topics::TASK_CREATE_EVENT_TOPIC, ev).await;
        Ok(api::CreateTaskResponse::new())
    }

    pub(super) async fn start_task(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        let started = self.with(&req.id, |c| {
            let zone = c.zone.clone();
            let p = c.proc_mut(&req.exec_id)?;
            if p.rauha_id.is_some() {
                // Asked again: a shim restarted before it answered.
                return Ok(Err(p.pid));
            }
            if p.exited().is_some() {
                return Err(Error::AlreadyStarted(req.id.clone()).into());
            }
            let run_id = match &p.run_id {
                Some(id) => id.clone(),
                None => fresh_id()?,
            };
            p.run_id = Some(run_id.clone());
            Ok(Ok((zone, p.spec.clone(), p.stdio.clone(), run_id)))
        })?;
        let (zone, spec, io, run_id) = match started {
            Ok(s) => s,
            Err(pid) => {
                let mut resp = api::StartResponse::new();
                resp.pid = pid;
                return Ok(resp);
            }
        };
        self.persist();
        if req.exec_id.is_empty() {
            let before = self.oom_kills(&req.id).await;
            self.with(&req.id, |c| {
                c.oom_before = before;
                Ok(())
            })?;
        }
        let held = hold_outputs(&io);
        let run = v1::RunRequest {
            zone,
            spec: Some(spec),
            stdio: Some(io),
            id: run_id,
            open_stdin: false,
        };
        let p = self.run_once(run).await?;
        let pid = if p.host_pid != 0 { p.host_pid } else { p.pid };
        self.with(&req.id, |c| {
            let proc = c.proc_mut(&req.exec_id)?;
            proc.rauha_id = Some(p.id.clone());
            proc.pid = pid;
            proc.held = held;
            Ok(())
        })?;
        self.persist();
        self.watch_exit(req.id.clone(), req.exec_id.clone(), p.id, pid);
        if req.exec_id.is_empty() {
            let mut ev = TaskStart::new();
            ev.container_id = req.id.clone();
            ev.pid = pid;
            self.publish(topics::TASK_START_EVENT_TOPIC, ev).await;
        } else {
            let mut ev = TaskExecStarted::new();
            ev.container_id = req.id.clone();
            ev.exec_id = req.exec_id.clone();
            ev.pid = pid;
            self.publish(topics::TASK_EXEC_STARTED_EVENT_TOPIC, ev)
                .await;
        }
        let mut resp = api::StartResponse::new();
        resp.pid = pid;
        Ok(resp)
    }

    pub(super) async fn delete_task(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        let (rauha_id, pid, exit, zone, owns_zone, bundle) = self.with(&req.id, |c| {
            let p = c.proc(&req.exec_id)?;
            if p.rauha_id.is_some() && p.exited().is_none() {
                let id = if req.exec_id.is_empty() {
                    &req.id
                } else {
                    &req.exec_id
                };
                return Err(Error::Running(id.clone()).into());
            }
            Ok((
                p.rauha_id.clone(),
                p.pid,
                p.exited(),
                c.zone.clone(),
                c.owns_zone,
                c.bundle.clone(),
            ))
        })?;
        let exit = exit.unwrap_or(Exit {
            status: 0,
            at_ms: now_ms(),
        });
        if let Some(id) = rauha_id {
            let r = self.processes().await?.delete(v1::ProcessRef { id }).await;
            if let Some(s) = r
                .as_ref()
                .err()
                .filter(|s| s.code() != tonic::Code::NotFound)
            {
                return Err(ttrpc_error(s.clone()));
            }
        }
        if req.exec_id.is_empty() {
            let root = self.with(&req.id, |c| Ok(c.root.clone()))?;
            if let Some(name) = root {
                self.zones()
                    .await?
                    .remove_root(v1::RootRef {
                        zone: zone.clone(),
                        name,
                    })
                    .await
                    .map_err(ttrpc_error)?;
                unmount_rootfs(&bundle);
                self.with(&req.id, |c| {
                    c.limits = v1::RootLimits::default();
                    c.root = None;
                    Ok(())
                })?;
                self.update_pod_memory(&zone).await;
            }
            if owns_zone {
                let r = self
                    .zones()
                    .await?
                    .delete(v1::DeleteZoneRequest { zone, force: true })
                    .await;
                if let Some(s) = r
                    .as_ref()
                    .err()
                    .filter(|s| s.code() != tonic::Code::NotFound)
                {
                    return Err(ttrpc_error(s.clone()));
                }
                unmount_rootfs(&bundle);
            }
            self.inner
                .containers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&req.id);
            self.persist();
            let mut ev = TaskDelete::new();
            ev.container_id = req.id.clone();
            ev.id = req.id.clone();
            ev.pid = pid;
            ev.exit_status = exit.status;
            ev.exited_at = Some(convert::timestamp(exit.at_ms)).into();
            self.publish(topics::TASK_DELETE_EVENT_TOPIC, ev).await;
        } else {
            self.with(&req.id, |c| {
                c.execs.remove(&req.exec_id);
                Ok(())
            })?;
            self.persist();
        }
        let mut resp = api::DeleteResponse::new();
        resp.pid = pid;
        resp.exit_status = exit.status;
        resp.exited_at = Some(convert::timestamp(exit.at_ms)).into();
        Ok(resp)
    }
}
