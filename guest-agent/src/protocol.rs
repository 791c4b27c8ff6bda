//! Messages between rauhad (the host) and the zone agent.
//!
//! One connection carries requests from the host and a stream of messages
//! from the agent. Replies that answer a request carry its `id`; `Output`
//! and `Exited` are pushed to every connected host as they happen, so a
//! host that reconnects after a restart keeps receiving them.
//!
//! Output is delivered at least once and placed exactly: each chunk
//! carries its offset in its stream, the agent keeps what it sent until
//! the host acknowledges it (`Ack`), and sends what is unacknowledged
//! again to a host that greets it after a restart; the host skips what it
//! already has. Bytes written to a host that died are not lost.

use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change; both ends refuse other versions.
pub const PROTOCOL_VERSION: u32 = 5;

/// A process the host asks the agent to start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpawnSpec {
    /// The host's id for the process (a UUID in text form).
    pub id: String,
    pub args: Vec<String>,
    /// `KEY=VALUE`: the whole environment.
    pub env: Vec<String>,
    /// Working directory inside the zone.
    pub cwd: String,
    /// Bytes the process reads from an inherited pipe at a given fd number
    /// (secrets handed over outside the environment).
    pub fds: Vec<FdData>,
    /// Run as this user instead of the zone's root.
    pub user: Option<User>,
    /// Give the process a stdin pipe fed by `Request::Stdin` (else /dev/null).
    pub stdin: bool,
    /// Give the process a terminal: stdin, stdout and stderr are its
    /// pseudo-terminal, and everything it prints comes back as `Stdout`.
    pub terminal: bool,
    /// Wall-clock time (ms since the Unix epoch) past which the process
    /// has run out of time: while no host is connected, the agent then
    /// kills every process of the zone, as the host would (a connected
    /// host enforces it itself).
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    /// Run in the container root of this name (under
    /// `config::CONTAINERS_DIR`), with its own mount namespace and /proc,
    /// instead of the zone's root.
    pub root: Option<String>,
    /// A pod container's own capabilities, privileges and seccomp profile
    /// (from its OCI spec, already held to the pod policy by the host);
    /// `None`: the zone's hardening decides.
    pub security: Option<Box<Security>>,
}

/// A process's capability sets (bit N is capability N) and privileges.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Security {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
    pub no_new_privileges: bool,
    pub seccomp: SeccompChoice,
    /// Resource limits: `(RLIMIT_ number, soft, hard)`.
    #[serde(default)]
    pub rlimits: Vec<(u32, u64, u64)>,
    /// The process's `oom_score_adj`.
    #[serde(default)]
    pub oom_score_adj: Option<i32>,
}

/// Which seccomp filter a process gets.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SeccompChoice {
    /// The zone's own (its policy's `syscalls.deny`).
    #[default]
    Zone,
    /// None at all.
    Unconfined,
    /// This profile instead of the zone's.
    Profile(Seccomp),
}

/// A seccomp profile by number: what an unnamed call gets, and the rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seccomp {
    pub default: SeccompAct,
    pub rules: Vec<SeccompRule>,
}

/// One call's action when every comparison holds (several rules of one
/// call: any may match).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeccompRule {
    pub nr: u32,
    pub action: SeccompAct,
    pub args: Vec<SeccompCmp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SeccompAct {
    Allow,
    Errno(u32),
    KillThread,
    KillProcess,
    Trap,
    Trace(u32),
    Log,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeccompCmp {
    pub index: u8,
    pub op: SeccompCmpOp,
    pub value: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeccompCmpOp {
    Ne,
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
    /// `(arg & mask) == value`.
    MaskedEq(u64),
}

/// Who a process runs as, inside the zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups; none when empty.
    pub groups: Vec<u32>,
}

/// A pipe the process inherits at `fd`, already holding `data` and closed
/// for writing.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdData {
    pub fd: i32,
    pub data: Vec<u8>,
}

impl std::fmt::Debug for FdData {
    // Never print what is in the pipe: it is a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FdData {{ fd: {}, {} bytes }}", self.fd, self.data.len())
    }
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Host -> agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// First message of a connection.
    Hello { version: u32 },
    /// Start a process; answered by `Spawned` or `SpawnFailed`.
    Spawn(SpawnSpec),
    /// Send a signal to one process (by host id).
    Signal { id: String, signal: i32 },
    /// Send a signal to every process of the zone but the agent.
    SignalAll { signal: i32 },
    /// Send a signal to every process running in a container root (whose
    /// `/` is that root), whatever its process group or session.
    SignalRoot { root: String, signal: i32 },
    /// List every process of the zone; answered by `Processes`.
    List { request: u64 },
    /// Forget a finished process's exit record.
    Forget { id: String },
    /// Replace the hardening applied to processes started from now on.
    UpdateHardening(crate::config::Hardening),
    /// Bytes for a process's stdin (or terminal).
    Stdin { id: String, data: Vec<u8> },
    /// Close a process's stdin once what was sent is written.
    CloseStdin { id: String },
    /// Set a process's terminal size.
    Resize { id: String, rows: u16, cols: u16 },
    /// The host holds a process's stream up to byte `upto`: the agent
    /// may drop what it kept of it before there.
    Ack {
        id: String,
        stream: Stream,
        upto: u64,
    },
}

/// One process as seen from inside the zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneProcess {
    /// PID inside the zone.
    pub pid: u32,
    pub ppid: u32,
    pub command: String,
    /// The host id when the process was started by the host.
    pub id: Option<String>,
}

/// How a tracked process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// The agent killed it (and the zone's other processes) at its
    /// deadline, while no host was connected to do so.
    #[serde(default)]
    pub deadline: bool,
}

impl ExitStatus {
    /// The shell convention: the exit code, or 128 + the signal.
    pub fn shell_code(self) -> i32 {
        match (self.code, self.signal) {
            (Some(c), _) => c,
            (None, Some(s)) => 128 + s,
            (None, None) => 255,
        }
    }
}

/// Agent -> host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    Hello {
        version: u32,
        /// Host ids of processes whose end the host has not been told:
        /// running ones, and ended ones whose output (sent again) and
        /// `Exited` follow the greeting.
        running: Vec<String>,
        /// Processes that ended and whose exit the host has not forgotten.
        exited: Vec<(String, ExitStatus)>,
    },
    Spawned {
        id: String,
        pid: u32,
    },
    SpawnFailed {
        id: String,
        error: String,
    },
    Output {
        id: String,
        stream: Stream,
        /// Where `data` starts in the stream (bytes since the process
        /// started).
        offset: u64,
        data: Vec<u8>,
    },
    Exited {
        id: String,
        status: ExitStatus,
    },
    Processes {
        request: u64,
        list: Vec<ZoneProcess>,
    },
    /// A request the agent could not act on.
    Error {
        message: String,
    },
}
