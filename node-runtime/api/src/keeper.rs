//! The shim keeper's wire format: how a `containerd-shim-rauha-v2` process
//! hands rauhad what it needs to be started again if it dies, and how the
//! restarted shim is told what it inherits.
//!
//! containerd drops a pod's tasks the moment the connection to its shim
//! closes. A shim therefore deposits with rauhad (which outlives it) a copy
//! of its listening socket and of each containerd connection it accepts,
//! plus every request it has read and not yet answered. While rauhad holds
//! those copies, a shim that dies (killed, crashed, upgraded) does not close
//! containerd's connection; rauhad starts the shim again with them, and it
//! answers what was left unanswered.
//!
//! Messages go over a `SOCK_SEQPACKET` Unix socket, one per datagram, with
//! file descriptors as `SCM_RIGHTS`. Only the encoding lives here; nothing
//! here does I/O.

use std::path::{Path, PathBuf};

/// The environment variable that tells a restarted shim what it inherits.
pub const RESUME_ENV: &str = "RAUHA_SHIM_RESUME";

/// The largest request a shim deposits (bigger ones are answered but not
/// kept: a Task request is a few KiB).
pub const MAX_KEPT_FRAME: usize = 128 << 10;

/// The keeper's socket, beside rauhad's API socket (`<api socket>.shims`).
pub fn socket_path(api_socket: &Path) -> PathBuf {
    beside(api_socket, ".shims")
}

/// Where `shim delete` leaves what it could not remove while rauhad was
/// down (`<api socket>.orphans/`), for rauhad to remove when it is back.
pub fn orphans_dir(api_socket: &Path) -> PathBuf {
    beside(api_socket, ".orphans")
}

fn beside(api_socket: &Path, suffix: &str) -> PathBuf {
    let mut name = api_socket
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(suffix);
    api_socket.with_file_name(name)
}

/// A zone, or a container root of a zone, to remove: its file's name and
/// text (`zone`, or `zone` and `root` on two lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    pub zone: String,
    pub root: Option<String>,
}

impl Orphan {
    /// `None` for names that cannot be a file's name.
    pub fn file_name(&self) -> Option<String> {
        let ok = |s: &str| !s.is_empty() && !s.contains(['/', '\n', '\0']) && s != "." && s != "..";
        match &self.root {
            None if ok(&self.zone) => Some(self.zone.clone()),
            Some(r) if ok(&self.zone) && ok(r) => Some(format!("{}+{r}", self.zone)),
            _ => None,
        }
    }

    pub fn encode(&self) -> String {
        match &self.root {
            None => format!("{}\n", self.zone),
            Some(r) => format!("{}\n{r}\n", self.zone),
        }
    }

    pub fn decode(text: &str) -> Result<Orphan, String> {
        let mut lines = text.lines();
        let zone = lines
            .next()
            .filter(|z| !z.is_empty())
            .ok_or("an orphan without a zone")?
            .to_string();
        let root = lines.next().filter(|r| !r.is_empty()).map(str::to_string);
        if lines.next().is_some() {
            return Err("an orphan of more than two lines".into());
        }
        Ok(Orphan { zone, root })
    }
}

/// One message from a shim to the keeper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToKeeper {
    /// The shim serves; its listening socket comes with it.
    Hello,
    /// containerd connection `n` was accepted; its socket comes with it.
    Conn { n: u32 },
    /// containerd connection `n` ended.
    Closed { n: u32 },
    /// A request read on connection `n` (the whole ttrpc frame), not yet
    /// answered.
    Pending { n: u32, stream: u32, frame: Vec<u8> },
    /// The request `stream` on connection `n` was answered.
    Done { n: u32, stream: u32 },
    /// Everything is deposited (sent last after a hello): from now on this
    /// connection answers for the shim.
    Ready,
    /// The shim ends on purpose (containerd asked it to): do not start it
    /// again.
    Bye,
}

const HEAD: usize = 9;

impl ToKeeper {
    pub fn encode(&self) -> Vec<u8> {
        let (tag, n, stream, frame): (u8, u32, u32, &[u8]) = match self {
            ToKeeper::Hello => (b'H', 0, 0, &[]),
            ToKeeper::Conn { n } => (b'C', *n, 0, &[]),
            ToKeeper::Closed { n } => (b'X', *n, 0, &[]),
            ToKeeper::Pending { n, stream, frame } => (b'R', *n, *stream, frame),
            ToKeeper::Done { n, stream } => (b'D', *n, *stream, &[]),
            ToKeeper::Ready => (b'Y', 0, 0, &[]),
            ToKeeper::Bye => (b'B', 0, 0, &[]),
        };
        let mut out = Vec::with_capacity(HEAD + frame.len());
        out.push(tag);
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&stream.to_le_bytes());
        out.extend_from_slice(frame);
        out
    }

    pub fn decode(buf: &[u8]) -> Result<ToKeeper, String> {
        if buf.len() < HEAD {
            return Err(format!(
                "a keeper message of {} bytes is too short",
                buf.len()
            ));
        }
        let n = u32::from_le_bytes([buf[1], buf[2], buf[3], buf[4]]);
        let stream = u32::from_le_bytes([buf[5], buf[6], buf[7], buf[8]]);
        let rest = &buf[HEAD..];
        let m = match buf[0] {
            b'H' => ToKeeper::Hello,
            b'C' => ToKeeper::Conn { n },
            b'X' => ToKeeper::Closed { n },
            b'R' => ToKeeper::Pending {
                n,
                stream,
                frame: rest.to_vec(),
            },
            b'D' => ToKeeper::Done { n, stream },
            b'Y' => ToKeeper::Ready,
            b'B' => ToKeeper::Bye,
            t => return Err(format!("unknown keeper message {t:#x}")),
        };
        Ok(m)
    }
}

/// What a restarted shim inherits: its listening socket, containerd's
/// connections (numbered as before), and a memfd with the requests left
/// unanswered (see [`encode_pending`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    pub listener: i32,
    pub conns: Vec<(u32, i32)>,
    pub pending: i32,
}

impl Resume {
    /// `listener=3;conns=0:4,1:5;pending=6`
    pub fn to_env(&self) -> String {
        let conns: Vec<String> = self
            .conns
            .iter()
            .map(|(n, fd)| format!("{n}:{fd}"))
            .collect();
        format!(
            "listener={};conns={};pending={}",
            self.listener,
            conns.join(","),
            self.pending
        )
    }

    pub fn from_env(s: &str) -> Result<Resume, String> {
        let bad = || format!("{RESUME_ENV}={s:?} is not listener=N;conns=N:FD,...;pending=FD");
        let mut listener = None;
        let mut conns = Vec::new();
        let mut pending = None;
        for part in s.split(';') {
            let (k, v) = part.split_once('=').ok_or_else(bad)?;
            match k {
                "listener" => listener = Some(v.parse().map_err(|_| bad())?),
                "pending" => pending = Some(v.parse().map_err(|_| bad())?),
                "conns" => {
                    for c in v.split(',').filter(|c| !c.is_empty()) {
                        let (n, fd) = c.split_once(':').ok_or_else(bad)?;
                        conns.push((
                            n.parse().map_err(|_| bad())?,
                            fd.parse().map_err(|_| bad())?,
                        ));
                    }
                }
                _ => return Err(bad()),
            }
        }
        Ok(Resume {
            listener: listener.ok_or_else(bad)?,
            conns,
            pending: pending.ok_or_else(bad)?,
        })
    }
}

/// The unanswered requests, as records `[n u32 LE][len u32 LE][frame]`.
pub fn encode_pending<'a>(frames: impl IntoIterator<Item = (u32, &'a [u8])>) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, frame) in frames {
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(frame);
    }
    out
}

pub fn decode_pending(mut buf: &[u8]) -> Result<Vec<(u32, Vec<u8>)>, String> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        if buf.len() < 8 {
            return Err("the pending requests end in a cut record".into());
        }
        let n = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let len = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
        let rest = &buf[8..];
        if rest.len() < len {
            return Err("the pending requests end in a cut record".into());
        }
        out.push((n, rest[..len].to_vec()));
        buf = &rest[len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        for m in [
            ToKeeper::Hello,
            ToKeeper::Conn { n: 7 },
            ToKeeper::Closed { n: 7 },
            ToKeeper::Pending {
                n: 1,
                stream: 0x8000_0001,
                frame: vec![1, 2, 3],
            },
            ToKeeper::Done { n: 1, stream: 3 },
            ToKeeper::Ready,
            ToKeeper::Bye,
        ] {
            assert_eq!(ToKeeper::decode(&m.encode()).unwrap(), m);
        }
        assert!(ToKeeper::decode(b"H").is_err());
        assert!(ToKeeper::decode(b"Q12345678").is_err());
    }

    #[test]
    fn resume_round_trips_and_rejects_junk() {
        let r = Resume {
            listener: 3,
            conns: vec![(0, 4), (2, 5)],
            pending: 6,
        };
        assert_eq!(r.to_env(), "listener=3;conns=0:4,2:5;pending=6");
        assert_eq!(Resume::from_env(&r.to_env()).unwrap(), r);
        let none = Resume {
            listener: 3,
            conns: vec![],
            pending: 4,
        };
        assert_eq!(Resume::from_env(&none.to_env()).unwrap(), none);
        for bad in ["", "listener=3", "listener=x;conns=;pending=4", "what=1"] {
            assert!(Resume::from_env(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pending_records_round_trip() {
        let buf = encode_pending([(0, &b"abc"[..]), (3, &b""[..])]);
        assert_eq!(
            decode_pending(&buf).unwrap(),
            vec![(0, b"abc".to_vec()), (3, vec![])]
        );
        assert!(decode_pending(&buf[..buf.len() - 1 - 8]).is_err());
    }

    #[test]
    fn orphans_round_trip_and_refuse_path_names() {
        for o in [
            Orphan {
                zone: "ns-pod".into(),
                root: None,
            },
            Orphan {
                zone: "ns-pod".into(),
                root: Some("c1".into()),
            },
        ] {
            assert_eq!(Orphan::decode(&o.encode()).unwrap(), o);
            assert!(o.file_name().is_some());
        }
        let bad = Orphan {
            zone: "../x".into(),
            root: None,
        };
        assert!(bad.file_name().is_none());
        assert!(Orphan::decode("").is_err());
        assert!(Orphan::decode("a\nb\nc\n").is_err());
    }

    #[test]
    fn keeper_socket_sits_beside_the_api_socket() {
        assert_eq!(
            socket_path(Path::new("/run/rauha/rauhad.sock")),
            PathBuf::from("/run/rauha/rauhad.sock.shims")
        );
        assert_eq!(
            orphans_dir(Path::new("/run/rauha/rauhad.sock")),
            PathBuf::from("/run/rauha/rauhad.sock.orphans")
        );
    }
}
