//! The agent's side of the start-up report
//! ([`rauha_guest_agent::handshake`]): lines on stdout, then stdout let go.

use std::io::{self, Write};

use rauha_guest_agent::handshake::Report;

/// Writes one line of the report and flushes it.
pub fn send(report: &Report) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{}", report.encode())?;
    out.flush()
}

/// Points stdin and stdout at /dev/null so that rauhad's pipe closes when
/// the zone has said what it had to say.
pub fn release_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        use std::os::fd::AsRawFd;
        // SAFETY: dup2 on valid descriptors.
        unsafe {
            libc::dup2(null.as_raw_fd(), 0);
            libc::dup2(null.as_raw_fd(), 1);
        }
    }
}
