//! The workspace's one error type: what went wrong, on which path, at which
//! step.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    /// A layer (or an entry in it) could not be opened, listed or read.
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    /// A name or symlink target is not UTF-8; a `FileChange` carries strings.
    #[error("{path:?} is not valid utf-8; workspace names and link targets must be")]
    NotUtf8 { path: String },
    /// A directory is nested deeper than the scan goes.
    #[error("{path:?} is nested more than {limit} directories deep")]
    TooDeep { path: String, limit: usize },
    /// The upper layer uses an overlayfs feature whose on-disk format the
    /// scan does not read (redirected directories, metadata-only copy-up).
    #[error("{path:?} in the upper layer uses overlayfs {feature}, which the workspace scan does not support; mount without it")]
    UnsupportedOverlay { path: String, feature: &'static str },
    /// A change's path is malformed or would be written through a symlink.
    #[error("refusing to commit {path:?}: {reason}")]
    UnsafePath { path: String, reason: String },
    /// A change does not fit the repository as it is now (it changed since
    /// the scan, or the list contradicts itself).
    #[error("cannot commit {path:?}: {reason}")]
    Conflict { path: String, reason: String },
    /// One step of a commit failed.
    #[error("commit failed to {step} for {path:?}: {source}")]
    Apply {
        path: String,
        step: &'static str,
        source: io::Error,
    },
    /// A commit failed, and undoing its first steps failed too.
    #[error("{primary}; undoing it also failed: {rollback}; backups of the replaced entries are kept in {staging}")]
    Rollback {
        primary: Box<WorkspaceError>,
        rollback: Box<WorkspaceError>,
        staging: PathBuf,
    },
    #[error("cannot bring back the repository a commit left half done (journal {journal}): {source}; what the commit replaced is kept in {staging}")]
    Recover {
        journal: PathBuf,
        staging: PathBuf,
        source: Box<WorkspaceError>,
    },
}

impl WorkspaceError {
    pub(super) fn read(path: impl Into<PathBuf>, source: io::Error) -> Self {
        WorkspaceError::Read {
            path: path.into(),
            source,
        }
    }

    pub(super) fn apply(path: &str, step: &'static str, source: io::Error) -> Self {
        WorkspaceError::Apply {
            path: path.to_string(),
            step,
            source,
        }
    }

    pub(super) fn unsafe_path(path: &str, reason: impl Into<String>) -> Self {
        WorkspaceError::UnsafePath {
            path: path.to_string(),
            reason: reason.into(),
        }
    }

    pub(super) fn conflict(path: &str, reason: impl Into<String>) -> Self {
        WorkspaceError::Conflict {
            path: path.to_string(),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_lowercase_line() {
        let errors = [
            WorkspaceError::read("/repo/a", io::Error::from(io::ErrorKind::NotFound)),
            WorkspaceError::NotUtf8 {
                path: "a/\u{fffd}".into(),
            },
            WorkspaceError::UnsupportedOverlay {
                path: "d".into(),
                feature: "redirect_dir",
            },
            WorkspaceError::TooDeep {
                path: "a/a".into(),
                limit: 1,
            },
            WorkspaceError::unsafe_path("link/evil", "link is a symlink"),
            WorkspaceError::conflict("a", "it already exists"),
            WorkspaceError::apply("a", "copy the new content", io::Error::other("boom")),
            WorkspaceError::Rollback {
                primary: Box::new(WorkspaceError::conflict("a", "x")),
                rollback: Box::new(WorkspaceError::conflict("b", "y")),
                staging: "/repo/.rauha-commit-1".into(),
            },
            WorkspaceError::Recover {
                journal: "/state/commit-1.journal".into(),
                staging: "/repo/.rauha-commit-1".into(),
                source: Box::new(WorkspaceError::conflict("b", "y")),
            },
        ];
        for e in errors {
            let m = e.to_string();
            assert!(!m.contains('\n'), "{m}");
            assert!(m.starts_with(|c: char| !c.is_uppercase()), "{m}");
            assert!(!m.ends_with('.'), "{m}");
        }
    }
}
