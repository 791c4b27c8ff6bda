//! The redb store: the node's source of truth for zones, processes and task
//! results. Values are JSON; every change is one transaction, so a crash at
//! any moment leaves either the old record or the new one.

use std::path::Path;

use rauha_spec::result::TaskResult;
use rauha_spec::{Policy, RootSpec, WorkspaceSpec, ZoneState};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use rauha_backend::ZoneHandle;

const ZONES: TableDefinition<&str, &[u8]> = TableDefinition::new("zones");
const PROCESSES: TableDefinition<&str, &[u8]> = TableDefinition::new("processes");
const TASKS: TableDefinition<&str, &[u8]> = TableDefinition::new("tasks");
/// Image records by name (`registry/repository:tag`).
const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("images");
/// Bridged zones' addresses: zone id -> IPv4 address.
const LEASES: TableDefinition<&str, &str> = TableDefinition::new("net_leases");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {source}")]
    Open {
        path: String,
        source: redb::DatabaseError,
    },
    #[error("store: {0}")]
    Db(#[from] redb::Error),
    #[error("store record {key} is corrupt: {source}")]
    Corrupt {
        key: String,
        source: serde_json::Error,
    },
    #[error("zone name {0:?} is taken")]
    NameTaken(String),
}

macro_rules! db_from {
    ($($t:ty),*) => {$(impl From<$t> for StoreError { fn from(e: $t) -> Self { StoreError::Db(e.into()) } })*};
}
db_from!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// A zone as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZoneRecord {
    pub id: Uuid,
    pub name: String,
    pub state: ZoneState,
    pub policy: Policy,
    pub root: RootSpec,
    pub created_ms: u64,
    /// Set for a zone made by a sandbox task.
    pub task_id: Option<Uuid>,
    /// Deleted when its task ends (a sandbox zone without `keep_zone`).
    pub ephemeral: bool,
    /// How to reach the zone's kernel objects; `None` until created.
    pub handle: Option<ZoneHandle>,
    /// The repository shown in the zone, if any.
    #[serde(default)]
    pub workspace: Option<WorkspaceSpec>,
    /// A kept zone's idle time-to-live (ms).
    #[serde(default)]
    pub ttl_ms: Option<u64>,
    /// The network namespace the zone joined instead of making its own.
    #[serde(default)]
    pub netns: Option<String>,
    /// Where the zone's cgroup is (from the hierarchy's root), when not
    /// under rauhad's own parent.
    #[serde(default)]
    pub cgroup_parent: Option<String>,
    /// The isolation backend that built the zone (`linux`, ...); empty in
    /// records from before backends were named: the node's default.
    #[serde(default)]
    pub backend: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessState {
    Running,
    Exited,
    /// Its zone went away (or rauhad restarted) before its exit was seen.
    Lost,
}

impl ProcessState {
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessState::Running => "running",
            ProcessState::Exited => "exited",
            ProcessState::Lost => "lost",
        }
    }
}

/// A process started with `run` or `exec`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    pub id: Uuid,
    pub zone_id: Uuid,
    pub args: Vec<String>,
    pub state: ProcessState,
    pub pid: u32,
    /// The pid on the host (0 when unknown).
    #[serde(default)]
    pub host_pid: u32,
    /// Host paths its output is written to (containerd's FIFOs), so that a
    /// restarted rauhad writes there again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_path: Option<String>,
    /// The host path its stdin is read from, reopened likewise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin_path: Option<String>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// The zone's agent killed it at its deadline (while no rauhad was
    /// there to).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deadline: bool,
    pub started_ms: u64,
    pub ended_ms: u64,
    /// Ports its zone publishes while it runs (normalized mappings).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Running,
    Finished,
}

/// A sandbox task: running, or finished with its result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub id: Uuid,
    pub zone_id: Uuid,
    pub command: Vec<String>,
    pub state: TaskState,
    pub started_ms: u64,
    pub result: Option<TaskResult>,
    /// While it runs: what a restarted rauhad needs to finish the task and
    /// store its one result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<TaskResume>,
}

/// A running task as a restarted rauhad takes it over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResume {
    /// The task's process in its zone (its output is spilled to the zone's
    /// state dir, `task/<id>.stdout` and `.stderr`).
    pub process_id: Uuid,
    /// 0: none. Counted from `started_ms`, across restarts.
    pub timeout_ms: u64,
    pub keep_zone: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<WorkspaceResume>,
    /// The names of its secrets (their values are read again from the
    /// secret store, to redact what the task printed).
    pub secret_names: Vec<String>,
    /// The zone's OOM kill count when the task started.
    pub oom_before: u64,
    /// The events of the task so far.
    pub events: Vec<rauha_spec::Event>,
}

/// A task's workspace settlement, as a restarted rauhad does it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkspaceResume {
    pub repo_path: String,
    pub target: String,
    pub commit: bool,
    pub diff_cap: u64,
    #[serde(default)]
    pub commit_git_metadata: bool,
}

pub struct Store {
    db: Database,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = Database::create(path).map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
        let txn = db.begin_write()?;
        txn.open_table(ZONES)?;
        txn.open_table(PROCESSES)?;
        txn.open_table(TASKS)?;
        txn.open_table(IMAGES)?;
        txn.open_table(LEASES)?;
        txn.commit()?;
        Ok(Store { db })
    }

    /// The zone's address: its lease if it has one, else the one `pick`
    /// chooses among the free ones, recorded in the same transaction (no
    /// address is handed out twice). `None`: `pick` found none free.
    pub fn lease_address(
        &self,
        zone: &Uuid,
        pick: impl FnOnce(&std::collections::BTreeSet<std::net::Ipv4Addr>) -> Option<std::net::Ipv4Addr>,
    ) -> Result<Option<std::net::Ipv4Addr>, StoreError> {
        let txn = self.db.begin_write()?;
        let got = {
            let mut table = txn.open_table(LEASES)?;
            let key = zone.to_string();
            if let Some(addr) = table
                .get(key.as_str())?
                .and_then(|v| v.value().parse().ok())
            {
                return Ok(Some(addr));
            }
            let mut held = std::collections::BTreeSet::new();
            for item in table.iter()? {
                let (_, v) = item?;
                if let Ok(a) = v.value().parse() {
                    held.insert(a);
                }
            }
            let got = pick(&held);
            if let Some(addr) = got {
                table.insert(key.as_str(), addr.to_string().as_str())?;
            }
            got
        };
        txn.commit()?;
        Ok(got)
    }

    pub fn release_address(&self, zone: &Uuid) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(LEASES)?.remove(zone.to_string().as_str())?;
        txn.commit()?;
        Ok(())
    }

    /// Every lease: (zone id, address).
    pub fn leases(&self) -> Result<Vec<(Uuid, std::net::Ipv4Addr)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(LEASES)?;
        let mut out = Vec::new();
        for item in table.iter()? {
            let (k, v) = item?;
            if let (Ok(id), Ok(addr)) = (k.value().parse(), v.value().parse()) {
                out.push((id, addr));
            }
        }
        Ok(out)
    }

    /// Records a new zone; fails if its name is taken.
    pub fn insert_zone(&self, zone: &ZoneRecord) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(ZONES)?;
            for item in table.iter()? {
                let (key, value) = item?;
                let other: ZoneRecord = decode(key.value(), value.value())?;
                if other.name == zone.name {
                    return Err(StoreError::NameTaken(zone.name.clone()));
                }
            }
            table.insert(zone.id.to_string().as_str(), encode(zone).as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    pub fn put_zone(&self, zone: &ZoneRecord) -> Result<(), StoreError> {
        self.put(ZONES, &zone.id, zone)
    }

    pub fn zone(&self, id: &Uuid) -> Result<Option<ZoneRecord>, StoreError> {
        self.get(ZONES, id)
    }

    pub fn zones(&self) -> Result<Vec<ZoneRecord>, StoreError> {
        self.all(ZONES)
    }

    /// Removes a zone and the records of its processes, in one transaction.
    pub fn remove_zone(&self, id: &Uuid) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            txn.open_table(ZONES)?.remove(id.to_string().as_str())?;
            txn.open_table(LEASES)?.remove(id.to_string().as_str())?;
            let mut procs = txn.open_table(PROCESSES)?;
            let mut doomed = Vec::new();
            for item in procs.iter()? {
                let (key, value) = item?;
                let p: ProcessRecord = decode(key.value(), value.value())?;
                if p.zone_id == *id {
                    doomed.push(key.value().to_string());
                }
            }
            for key in doomed {
                procs.remove(key.as_str())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Records an image under its name, replacing what the name meant.
    pub fn put_image(&self, image: &rauha_image::ImageRecord) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(IMAGES)?
            .insert(image.name.as_str(), encode(image).as_slice())?;
        txn.commit()?;
        Ok(())
    }

    pub fn images(&self) -> Result<Vec<rauha_image::ImageRecord>, StoreError> {
        self.all(IMAGES)
    }

    /// Removes image names, in one transaction.
    pub fn remove_images(&self, names: &[String]) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(IMAGES)?;
            for name in names {
                table.remove(name.as_str())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    pub fn put_process(&self, p: &ProcessRecord) -> Result<(), StoreError> {
        self.put(PROCESSES, &p.id, p)
    }

    pub fn process(&self, id: &Uuid) -> Result<Option<ProcessRecord>, StoreError> {
        self.get(PROCESSES, id)
    }

    pub fn processes(&self) -> Result<Vec<ProcessRecord>, StoreError> {
        self.all(PROCESSES)
    }

    pub fn remove_process(&self, id: &Uuid) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(PROCESSES)?.remove(id.to_string().as_str())?;
        txn.commit()?;
        Ok(())
    }

    pub fn put_task(&self, t: &TaskRecord) -> Result<(), StoreError> {
        self.put(TASKS, &t.id, t)
    }

    pub fn task(&self, id: &Uuid) -> Result<Option<TaskRecord>, StoreError> {
        self.get(TASKS, id)
    }

    pub fn tasks(&self) -> Result<Vec<TaskRecord>, StoreError> {
        self.all(TASKS)
    }

    /// Forgets finished tasks beyond the newest `keep_last`, older than
    /// `min_started_ms`, or beyond the newest that fit in `max_bytes`
    /// together; running tasks are never removed. Returns how many. Reads
    /// one record at a time, and of each only its id, state and start.
    pub fn prune_tasks(
        &self,
        keep_last: Option<usize>,
        min_started_ms: Option<u64>,
        max_bytes: Option<u64>,
    ) -> Result<usize, StoreError> {
        /// What pruning needs of a record (the rest is skipped unread).
        #[derive(Deserialize)]
        struct Head {
            id: Uuid,
            state: TaskState,
            started_ms: u64,
        }
        let mut finished: Vec<(Head, u64)> = Vec::new();
        {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(TASKS)?;
            for item in table.iter()? {
                let (key, value) = item?;
                let head: Head = decode(key.value(), value.value())?;
                if head.state == TaskState::Finished {
                    finished.push((head, value.value().len() as u64));
                }
            }
        }
        finished.sort_by(|(a, _), (b, _)| b.started_ms.cmp(&a.started_ms).then(b.id.cmp(&a.id)));
        let mut bytes = 0u64;
        let doomed: Vec<Uuid> = finished
            .iter()
            .enumerate()
            .filter(|(i, (t, size))| {
                bytes = bytes.saturating_add(*size);
                keep_last.is_some_and(|k| *i >= k)
                    || min_started_ms.is_some_and(|m| t.started_ms < m)
                    || max_bytes.is_some_and(|m| bytes > m)
            })
            .map(|(_, (t, _))| t.id)
            .collect();
        if doomed.is_empty() {
            return Ok(0);
        }
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(TASKS)?;
            for id in &doomed {
                table.remove(id.to_string().as_str())?;
            }
        }
        txn.commit()?;
        Ok(doomed.len())
    }

    fn put<T: Serialize>(
        &self,
        def: TableDefinition<&str, &[u8]>,
        id: &Uuid,
        value: &T,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(def)?
            .insert(id.to_string().as_str(), encode(value).as_slice())?;
        txn.commit()?;
        Ok(())
    }

    fn get<T: DeserializeOwned>(
        &self,
        def: TableDefinition<&str, &[u8]>,
        id: &Uuid,
    ) -> Result<Option<T>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(def)?;
        let key = id.to_string();
        match table.get(key.as_str())? {
            Some(v) => Ok(Some(decode(&key, v.value())?)),
            None => Ok(None),
        }
    }

    fn all<T: DeserializeOwned>(
        &self,
        def: TableDefinition<&str, &[u8]>,
    ) -> Result<Vec<T>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(def)?;
        let mut out = Vec::new();
        for item in table.iter()? {
            let (key, value) = item?;
            out.push(decode(key.value(), value.value())?);
        }
        Ok(out)
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records are plain data and always serialize")
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
        key: key.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store() -> (Store, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("rauha-store-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        (Store::open(&dir.join("db.redb")).expect("opens"), dir)
    }

    fn zone(name: &str) -> ZoneRecord {
        ZoneRecord {
            id: Uuid::new_v4(),
            name: name.into(),
            state: ZoneState::Running,
            policy: Policy::default(),
            root: RootSpec::HostView,
            created_ms: 1,
            task_id: None,
            ephemeral: false,
            handle: None,
            workspace: None,
            ttl_ms: None,
            netns: None,
            cgroup_parent: None,
            backend: String::new(),
        }
    }

    #[test]
    fn zone_names_are_unique() {
        let (store, dir) = temp_store();
        store.insert_zone(&zone("a")).expect("first");
        assert!(matches!(
            store.insert_zone(&zone("a")),
            Err(StoreError::NameTaken(_))
        ));
        store.insert_zone(&zone("b")).expect("other name");
        assert_eq!(store.zones().expect("lists").len(), 2);
        std::fs::remove_dir_all(dir).expect("cleanup");
    }

    #[test]
    fn removing_a_zone_removes_its_processes_only() {
        let (store, dir) = temp_store();
        let a = zone("a");
        let b = zone("b");
        store.insert_zone(&a).expect("a");
        store.insert_zone(&b).expect("b");
        for z in [&a, &b] {
            store
                .put_process(&ProcessRecord {
                    id: Uuid::new_v4(),
                    zone_id: z.id,
                    args: vec!["true".into()],
                    state: ProcessState::Running,
                    pid: 2,
                    host_pid: 0,
                    stdout_path: None,
                    stdin_path: None,
                    stderr_path: None,
                    exit_code: None,
                    signal: None,
                    deadline: false,
                    started_ms: 0,
                    ended_ms: 0,
                    publish: Vec::new(),
                })
                .expect("process");
        }
        store.remove_zone(&a.id).expect("removes");
        assert!(store.zone(&a.id).expect("reads").is_none());
        let left = store.processes().expect("lists");
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].zone_id, b.id);
        std::fs::remove_dir_all(dir).expect("cleanup");
    }

    #[test]
    fn pruning_keeps_the_newest_and_running_tasks() {
        let (store, dir) = temp_store();
        let task = |started_ms, state| TaskRecord {
            id: Uuid::new_v4(),
            zone_id: Uuid::new_v4(),
            command: vec![],
            state,
            started_ms,
            result: None,
            resume: None,
        };
        let old = task(100, TaskState::Finished);
        let mid = task(200, TaskState::Finished);
        let new = task(300, TaskState::Finished);
        let running = task(50, TaskState::Running);
        for t in [&old, &mid, &new, &running] {
            store.put_task(t).expect("put");
        }
        assert_eq!(store.prune_tasks(Some(2), None, None).expect("prune"), 1);
        assert!(store.task(&old.id).expect("read").is_none());
        assert_eq!(store.prune_tasks(None, Some(250), None).expect("prune"), 1);
        assert!(store.task(&mid.id).expect("read").is_none());
        assert!(store.task(&new.id).expect("read").is_some());
        assert!(
            store.task(&running.id).expect("read").is_some(),
            "a running task is never pruned"
        );
        std::fs::remove_dir_all(dir).expect("cleanup");
    }

    /// Records are bounded by bytes as well as count: a few large results
    /// push the oldest out.
    #[test]
    fn pruning_keeps_the_newest_that_fit_in_the_byte_budget() {
        let (store, dir) = temp_store();
        let task = |started_ms, bytes: usize| TaskRecord {
            id: Uuid::new_v4(),
            zone_id: Uuid::new_v4(),
            command: vec!["x".repeat(bytes)],
            state: TaskState::Finished,
            started_ms,
            result: None,
            resume: None,
        };
        let tasks: Vec<_> = (0..5).map(|i| task(100 + i, 100_000)).collect();
        for t in &tasks {
            store.put_task(t).expect("put");
        }
        // Room for two records of ~100 KB each, not three.
        assert_eq!(
            store.prune_tasks(None, None, Some(250_000)).expect("prune"),
            3
        );
        let kept: Vec<bool> = tasks
            .iter()
            .map(|t| store.task(&t.id).expect("read").is_some())
            .collect();
        assert_eq!(kept, [false, false, false, true, true]);
        std::fs::remove_dir_all(dir).expect("cleanup");
    }

    #[test]
    fn records_survive_reopening() {
        let (store, dir) = temp_store();
        let z = zone("keep");
        store.insert_zone(&z).expect("insert");
        drop(store);
        let again = Store::open(&dir.join("db.redb")).expect("reopens");
        assert_eq!(again.zone(&z.id).expect("reads"), Some(z));
        std::fs::remove_dir_all(dir).expect("cleanup");
    }
}
