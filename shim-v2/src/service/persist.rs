//! The pod's state saved for a restarted shim (`rauha-shim.json` in the
//! shim's directory): its containers, zone, roots, limits, processes and
//! exits.

use super::*;

/// The state file's name, in the shim's directory.
pub(super) const STATE_FILE: &str = "rauha-shim.json";

/// A process as saved for a restarted shim; rauhad's types as their
/// protobuf encoding, in hex.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct SavedProc {
    pub(super) spec: String,
    pub(super) stdio: String,
    pub(super) run_id: Option<String>,
    pub(super) rauha_id: Option<String>,
    pub(super) pid: u32,
    pub(super) exit: Option<(u32, u64)>,
}

#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct SavedContainer {
    pub(super) id: String,
    pub(super) bundle: PathBuf,
    pub(super) zone: String,
    pub(super) owns_zone: bool,
    pub(super) root: Option<String>,
    pub(super) limits: String,
    pub(super) oom_before: u64,
    pub(super) paused: bool,
    pub(super) init: SavedProc,
    pub(super) execs: std::collections::BTreeMap<String, SavedProc>,
}

pub(super) fn hex<M: prost::Message>(m: &M) -> String {
    m.encode_to_vec()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Why a saved field does not decode (placed in a [`StateError`] by the
/// caller, which knows the container and the file).
#[derive(Debug)]
pub(super) enum FieldError {
    NotHex(String),
    Decode(prost::DecodeError),
}

impl FieldError {
    fn at(self, id: &str, path: &Path) -> StateError {
        let (id, path) = (id.to_string(), path.to_path_buf());
        match self {
            FieldError::NotHex(field) => StateError::NotHex { id, path, field },
            FieldError::Decode(source) => StateError::Decode { id, path, source },
        }
    }
}

pub(super) fn unhex<M: prost::Message + Default>(s: &str) -> Result<M, FieldError> {
    let bytes = (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
                .ok_or_else(|| FieldError::NotHex(s.to_string()))
        })
        .collect::<Result<Vec<u8>, FieldError>>()?;
    M::decode(bytes.as_slice()).map_err(FieldError::Decode)
}

impl SavedProc {
    pub(super) fn of(p: &Proc) -> SavedProc {
        SavedProc {
            spec: hex(&p.spec),
            stdio: hex(&p.stdio),
            run_id: p.run_id.clone(),
            rauha_id: p.rauha_id.clone(),
            pid: p.pid,
            exit: p.exited().map(|e| (e.status, e.at_ms)),
        }
    }

    pub(super) fn to_proc(&self) -> Result<Proc, FieldError> {
        let mut p = Proc::new(unhex(&self.spec)?, unhex(&self.stdio)?);
        p.run_id = self.run_id.clone();
        p.rauha_id = self.rauha_id.clone();
        p.pid = self.pid;
        if let Some((status, at_ms)) = self.exit {
            p.exit.send_replace(Some(Exit { status, at_ms }));
        }
        Ok(p)
    }
}

impl SavedContainer {
    pub(super) fn of(id: &str, c: &Container) -> SavedContainer {
        SavedContainer {
            id: id.to_string(),
            bundle: c.bundle.clone(),
            zone: c.zone.clone(),
            owns_zone: c.owns_zone,
            root: c.root.clone(),
            limits: hex(&c.limits),
            oom_before: c.oom_before,
            paused: c.paused,
            init: SavedProc::of(&c.init),
            execs: c
                .execs
                .iter()
                .map(|(k, p)| (k.clone(), SavedProc::of(p)))
                .collect(),
        }
    }

    pub(super) fn to_container(&self) -> Result<Container, FieldError> {
        Ok(Container {
            bundle: self.bundle.clone(),
            zone: self.zone.clone(),
            owns_zone: self.owns_zone,
            root: self.root.clone(),
            limits: unhex(&self.limits)?,
            oom_before: self.oom_before,
            paused: self.paused,
            init: self.init.to_proc()?,
            execs: self
                .execs
                .iter()
                .map(|(k, p)| Ok((k.clone(), p.to_proc()?)))
                .collect::<Result<_, FieldError>>()?,
        })
    }
}

/// The zone id a shim saved for a container in `dir`'s state file: an
/// orphan names the zone by it, so that a later zone of the same name is
/// never taken for it.
pub fn saved_zone_id(dir: &Path, container_id: &str) -> Option<String> {
    let text = std::fs::read(dir.join(STATE_FILE)).ok()?;
    let saved: Vec<SavedContainer> = serde_json::from_slice(&text).ok()?;
    saved
        .into_iter()
        .find(|c| c.id == container_id)
        .map(|c| c.zone)
}

impl Service {
    /// Saves the containers' state for a shim started again after this
    /// one dies (written whole, then renamed over the last one).
    pub(super) fn persist(&self) {
        let _one = self.inner.saving.lock().unwrap_or_else(|e| e.into_inner());
        let saved: Vec<SavedContainer> = self
            .inner
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(id, c)| SavedContainer::of(id, c))
            .collect();
        let path = &self.inner.state_file;
        let tmp = path.with_extension("json.tmp");
        let r = serde_json::to_vec(&saved)
            .map_err(std::io::Error::other)
            .and_then(|text| std::fs::write(&tmp, text))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = r {
            log::warn!(
                "cannot save the pod's state to {}: {e}; a restarted shim would not find it",
                path.display()
            );
        }
    }

    /// A shim started again by rauhad's keeper: takes the containers back
    /// from the state file, holds the running processes' output FIFOs
    /// again and waits for their ends (a process that ended meanwhile is
    /// reported now).
    pub async fn restore(&self) -> Result<(), StateError> {
        let path = &self.inner.state_file;
        let saved: Vec<SavedContainer> = match std::fs::read(path) {
            Ok(text) => serde_json::from_slice(&text).map_err(|source| StateError::NotState {
                path: path.clone(),
                source,
            })?,
            // The shim died before its first container was made.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(StateError::Read {
                    path: path.clone(),
                    source,
                })
            }
        };
        let mut watch = Vec::new();
        {
            let mut all = self
                .inner
                .containers
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for s in &saved {
                let mut c = s.to_container().map_err(|e| e.at(&s.id, path))?;
                for (exec_id, p) in std::iter::once((String::new(), &mut c.init))
                    .chain(c.execs.iter_mut().map(|(k, p)| (k.clone(), p)))
                {
                    if let (Some(rid), None) = (&p.rauha_id, p.exited()) {
                        p.held = hold_outputs(&p.stdio);
                        watch.push((s.id.clone(), exec_id, rid.clone(), p.pid));
                    }
                }
                all.insert(s.id.clone(), c);
            }
        }
        log::info!(
            "found {} containers again, {} processes running",
            saved.len(),
            watch.len()
        );
        for (id, exec_id, rid, pid) in watch {
            self.watch_exit(id, exec_id, rid, pid);
        }
        Ok(())
    }

    /// rauhad's id of a running process of the container.
    pub(super) fn running_id(&self, id: &str, exec_id: &str) -> TtrpcResult<String> {
        self.with(id, |c| {
            let p = c.proc(exec_id)?;
            match (&p.rauha_id, p.exited()) {
                (Some(r), None) => Ok(r.clone()),
                _ => Err(Error::NotRunning(
                    (if exec_id.is_empty() { id } else { exec_id }).to_string(),
                )
                .into()),
            }
        })
    }
}
