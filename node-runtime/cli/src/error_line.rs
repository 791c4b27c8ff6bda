//! Every failure of `rauha` is one line on stderr: `rauha: <what went wrong
//! and what to do>`. A daemon error is its `Status` message, which rauhad
//! already writes as "what + fix"; nothing is ever printed with `Debug`.

use std::io;

/// The line to print for an error, without the trailing newline.
pub fn error_line(error: &anyhow::Error) -> String {
    let text = match error.downcast_ref::<tonic::Status>() {
        Some(status) => status_text(status),
        // `{:#}` joins any context with ": " on one line.
        None => format!("{error:#}"),
    };
    format!("rauha: {}", single_line(&text))
}

/// Whether the error is stdout or stderr being closed under us (`rauha ps |
/// head`): not a failure worth a message.
/// A connection to rauhad that broke is not one of those: it is a
/// failure, and says so.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    let from_rauhad = error.chain().any(|e| {
        e.downcast_ref::<tonic::Status>().is_some()
            || e.downcast_ref::<tonic::transport::Error>().is_some()
    });
    !from_rauhad
        && error
            .chain()
            .filter_map(|e| e.downcast_ref::<io::Error>())
            .any(|e| e.kind() == io::ErrorKind::BrokenPipe)
}

/// One line for a status of a stream that broke.
pub fn status_line(status: &tonic::Status) -> String {
    single_line(&status_text(status))
}

fn status_text(status: &tonic::Status) -> String {
    let message = status.message().trim();
    if message.is_empty() {
        format!(
            "rauhad answered \"{}\" without saying why; see rauhad's log",
            status.code().description()
        )
    } else {
        message.to_string()
    }
}

/// Folds a multi-line message onto one line.
fn single_line(text: &str) -> String {
    text.split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn a_status_prints_its_message_only() {
        let status =
            tonic::Status::not_found("zone \"nope\" not found; list zones with `rauha zone list`");
        assert_eq!(
            error_line(&anyhow::Error::new(status)),
            "rauha: zone \"nope\" not found; list zones with `rauha zone list`"
        );
    }

    #[test]
    fn a_broken_connection_to_rauhad_is_a_failure_not_a_closed_stdout() {
        let stdout = anyhow::Error::new(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(is_broken_pipe(&stdout), "`rauha ps | head`");
        // A stream from rauhad that broke: a Status whose source is the
        // connection's broken pipe.
        let status =
            tonic::Status::from_error(Box::new(io::Error::from(io::ErrorKind::BrokenPipe)));
        assert!(
            !is_broken_pipe(&anyhow::Error::new(status)),
            "a dropped connection exits 125"
        );
    }

    #[test]
    fn an_empty_status_still_says_something() {
        let line = error_line(&anyhow::Error::new(tonic::Status::internal("")));
        assert!(line.starts_with("rauha: rauhad answered "), "{line}");
        assert!(line.ends_with("see rauhad's log"), "{line}");
    }

    #[test]
    fn context_and_newlines_stay_on_one_line() {
        let error = Err::<(), _>(io::Error::other("first\nsecond"))
            .context("cannot read policy file \"p.toml\"")
            .expect_err("error");
        assert_eq!(
            error_line(&error),
            "rauha: cannot read policy file \"p.toml\": first; second"
        );
    }

    #[test]
    fn broken_pipes_are_recognised_through_context() {
        let error = Err::<(), _>(io::Error::from(io::ErrorKind::BrokenPipe))
            .context("writing")
            .expect_err("error");
        assert!(is_broken_pipe(&error));
        assert!(!is_broken_pipe(&anyhow::anyhow!("other")));
    }
}
