//! The shim's process model: a container, its processes (init and execs),
//! and how each ended.

use super::*;

/// How a process ended: its exit status and when (ms since the epoch).
#[derive(Debug, Clone, Copy)]
pub(super) struct Exit {
    pub(super) status: u32,
    pub(super) at_ms: u64,
}

pub(super) struct Proc {
    pub(super) spec: v1::ProcessSpec,
    pub(super) stdio: v1::StdioPaths,
    /// The id chosen for rauhad's Run, kept before the call so that a
    /// restarted shim asks for the same process, never a second one.
    pub(super) run_id: Option<String>,
    /// rauhad's process id, once started.
    pub(super) rauha_id: Option<String>,
    pub(super) pid: u32,
    pub(super) exit: watch::Sender<Option<Exit>>,
    /// Write ends of its output FIFOs, held while it runs: rauhad writes
    /// its output, and when rauhad restarts the FIFO keeps a writer, so
    /// containerd's reader does not see the end of the output.
    pub(super) held: Vec<std::fs::File>,
}

impl Proc {
    pub(super) fn new(spec: v1::ProcessSpec, stdio: v1::StdioPaths) -> Proc {
        Proc {
            spec,
            stdio,
            run_id: None,
            rauha_id: None,
            pid: 0,
            exit: watch::channel(None).0,
            held: Vec::new(),
        }
    }

    pub(super) fn exited(&self) -> Option<Exit> {
        *self.exit.borrow()
    }

    pub(super) fn status(&self, paused: bool) -> Status {
        match (self.rauha_id.is_some(), self.exited()) {
            (_, Some(_)) => Status::STOPPED,
            (false, None) => Status::CREATED,
            (true, None) if paused => Status::PAUSED,
            (true, None) => Status::RUNNING,
        }
    }
}

pub(super) struct Container {
    pub(super) bundle: PathBuf,
    /// rauhad's zone id.
    pub(super) zone: String,
    /// The container created the zone and deletes it with itself.
    pub(super) owns_zone: bool,
    /// A pod's container: its processes run in this container root of the
    /// pod's zone (its own image).
    pub(super) root: Option<String>,
    /// Its own limits as last applied (a pod's container); its memory limit
    /// also counts for the pod's total.
    pub(super) limits: v1::RootLimits,
    /// The zone's OOM kill count when its init started.
    pub(super) oom_before: u64,
    pub(super) paused: bool,
    pub(super) init: Proc,
    pub(super) execs: HashMap<String, Proc>,
}

impl Container {
    pub(super) fn proc(&self, exec_id: &str) -> TtrpcResult<&Proc> {
        if exec_id.is_empty() {
            return Ok(&self.init);
        }
        self.execs
            .get(exec_id)
            .ok_or_else(|| Error::exec(exec_id).into())
    }

    pub(super) fn proc_mut(&mut self, exec_id: &str) -> TtrpcResult<&mut Proc> {
        if exec_id.is_empty() {
            return Ok(&mut self.init);
        }
        self.execs
            .get_mut(exec_id)
            .ok_or_else(|| Error::exec(exec_id).into())
    }
}
