//! The zone agent's start-up report to rauhad: one line each on the
//! agent's stdout, encoded and parsed here only.
//!
//! Two processes write to that one pipe: the launcher (`pid`, the host pid
//! of the zone's PID 1) and PID 1 itself (`ready` with what it applied, or
//! `error` with why it could not set the zone up). Either may come first.
//! Lines are text so that an agent's report reads as-is in a log.

use crate::config::Ready;

/// One line of the report.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// The host pid of the zone's PID 1 (from the launcher).
    Pid(u32),
    /// The zone is set up; what was applied.
    Ready(Ready),
    /// Set-up failed; one line saying why.
    Error(String),
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum HandshakeError {
    #[error("bad pid line {0:?}")]
    Pid(String),
    #[error("bad ready line: {0}")]
    Ready(String),
}

impl Report {
    /// The line (without its newline).
    pub fn encode(&self) -> String {
        match self {
            Report::Pid(pid) => format!("pid {pid}"),
            Report::Ready(ready) => format!(
                "ready {}",
                serde_json::to_string(ready).unwrap_or_else(|_| "{}".into())
            ),
            // One line, whatever the reason held.
            Report::Error(reason) => format!("error {}", reason.replace('\n', " ")),
        }
    }

    /// A line of the report; `Ok(None)` for a line that is none of them
    /// (ignored, as before).
    pub fn parse(line: &str) -> Result<Option<Report>, HandshakeError> {
        if let Some(pid) = line.strip_prefix("pid ") {
            return pid
                .trim()
                .parse()
                .map(|p| Some(Report::Pid(p)))
                .map_err(|_| HandshakeError::Pid(pid.to_string()));
        }
        if let Some(json) = line.strip_prefix("ready ") {
            return serde_json::from_str(json)
                .map(|r| Some(Report::Ready(r)))
                .map_err(|e| HandshakeError::Ready(e.to_string()));
        }
        Ok(line
            .strip_prefix("error ")
            .map(|reason| Report::Error(reason.to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_report_round_trips() {
        let ready = Ready {
            landlock_abi: 4,
            seccomp: true,
            notes: vec!["a note".into()],
            user_namespace: Some(1 << 30),
        };
        for r in [
            Report::Pid(4242),
            Report::Ready(ready),
            Report::Error("cannot mount /proc: EPERM".into()),
        ] {
            assert_eq!(Report::parse(&r.encode()), Ok(Some(r.clone())));
        }
    }

    #[test]
    fn an_error_is_one_line() {
        let line = Report::Error("first\nsecond".into()).encode();
        assert!(!line.contains('\n'));
        assert_eq!(
            Report::parse(&line),
            Ok(Some(Report::Error("first second".into())))
        );
    }

    #[test]
    fn bad_lines_are_errors_and_others_are_ignored() {
        assert!(matches!(
            Report::parse("pid x"),
            Err(HandshakeError::Pid(_))
        ));
        assert!(matches!(
            Report::parse("ready {"),
            Err(HandshakeError::Ready(_))
        ));
        assert_eq!(Report::parse("warning: something"), Ok(None));
    }
}
