//! The zone agent and its protocol.
//!
//! The agent is PID 1 of every zone: it builds the zone's root, then forks
//! and execs work on request, relays stdio, reports exits and reaps orphans.
//! On Linux it runs inside the zone's namespaces and is reached over a Unix
//! socket; inside a VM the same program is reached over vsock.
//!
//! This library holds what both ends share and nothing that does I/O on
//! its own: the messages ([`protocol`]), their framing over any byte stream
//! ([`frame`]), the zone's set-up description ([`config`]) and the start-up
//! report to rauhad ([`handshake`]). The transport
//! is the caller's: the framing works on `Read`/`Write` and on byte buffers.

pub mod config;
pub mod frame;
pub mod handshake;
pub mod mount_api;
pub mod protocol;
