//! The commit's checks, before anything is written: the changes in a safe
//! order, each path well formed, and each change fitting the repository as
//! it will be when that change runs (earlier changes included).
//!
//! `Plan` keeps what the changes checked so far do to each path; a path no
//! change touched, below no new or deleted directory, is looked up in the
//! repository itself, through `DirFd` walks that never follow a symlink.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;

use rauha_spec::result::{ChangeKind, FileChange, FileType};

use super::dirfd::{DirFd, Entry, EntryKind};
use super::scan::MAX_DEPTH;
use super::WorkspaceError;

/// `changes` in the order to apply them, once every one is checked against
/// the repository; the first problem otherwise, naming its path.
pub(super) fn checked<'a>(
    repo: &DirFd,
    repo_path: &Path,
    changes: &'a [FileChange],
) -> Result<Vec<Step<'a>>, WorkspaceError> {
    let steps = order(changes)?;
    let mut plan = Plan {
        repo,
        repo_path,
        state: HashMap::new(),
    };
    for step in &steps {
        plan.check(step)?;
    }
    Ok(steps)
}

/// One change with its path split into components.
pub(super) struct Step<'a> {
    pub change: &'a FileChange,
    pub parts: Vec<&'a str>,
}

impl Step<'_> {
    pub fn path(&self) -> &str {
        &self.change.path
    }

    pub fn name(&self) -> &OsStr {
        OsStr::new(self.parts[self.parts.len() - 1])
    }

    pub fn parents(&self) -> impl Iterator<Item = &str> + '_ {
        self.parts[..self.parts.len() - 1].iter().copied()
    }
}

/// The components of a change's path, if it is a safe relative path.
fn components(path: &str) -> Result<Vec<&str>, WorkspaceError> {
    let reason = if path.is_empty() {
        "the path is empty"
    } else if path.starts_with('/') {
        "the path is absolute"
    } else if path.contains('\0') {
        "the path contains a nul byte"
    } else {
        let parts: Vec<&str> = path.split('/').collect();
        match parts
            .iter()
            .find(|p| p.is_empty() || **p == "." || **p == "..")
        {
            None if parts.len() > MAX_DEPTH => "the path is too deep",
            None => return Ok(parts),
            Some(&"") => "the path has an empty component",
            Some(_) => "the path has a `.` or `..` component",
        }
    };
    Err(WorkspaceError::unsafe_path(path, reason))
}

/// Deletions deepest first, then additions and modifications parents first.
fn order(changes: &[FileChange]) -> Result<Vec<Step<'_>>, WorkspaceError> {
    let mut deletions = Vec::new();
    let mut others = Vec::new();
    for change in changes {
        let step = Step {
            change,
            parts: components(&change.path)?,
        };
        match change.kind {
            ChangeKind::Deleted => deletions.push(step),
            ChangeKind::Added | ChangeKind::Modified => others.push(step),
        }
    }
    deletions.sort_by(|a, b| b.parts.cmp(&a.parts));
    others.sort_by(|a, b| a.parts.cmp(&b.parts));
    deletions.extend(others);
    Ok(deletions)
}

pub(super) fn entry_kind(t: FileType) -> EntryKind {
    match t {
        FileType::File => EntryKind::File,
        FileType::Dir => EntryKind::Dir,
        FileType::Symlink => EntryKind::Symlink,
        FileType::Special => EntryKind::Other,
    }
}

fn describe(kind: Option<EntryKind>) -> &'static str {
    match kind {
        None => "missing",
        Some(EntryKind::File) => "a file",
        Some(EntryKind::Dir) => "a directory",
        Some(EntryKind::Symlink) => "a symlink",
        Some(EntryKind::Whiteout | EntryKind::Other) => "a special file",
    }
}

/// What the changes checked so far do to a path.
#[derive(Debug, Clone, Copy)]
enum Planned {
    Deleted,
    Created(EntryKind),
    Kept(EntryKind),
}

/// The repository as it will be, change after change; nothing is written.
struct Plan<'a> {
    repo: &'a DirFd,
    repo_path: &'a Path,
    state: HashMap<String, Planned>,
}

impl Plan<'_> {
    /// What `parts` will be when the next change runs.
    fn kind_at(&self, parts: &[&str]) -> Result<Option<EntryKind>, WorkspaceError> {
        match self.state.get(&parts.join("/")) {
            Some(Planned::Deleted) => return Ok(None),
            Some(Planned::Created(k) | Planned::Kept(k)) => return Ok(Some(*k)),
            None => {}
        }
        // Below a deleted or a new directory, nothing of the repository is
        // left but what the changes create.
        for i in 1..parts.len() {
            if let Some(Planned::Deleted | Planned::Created(_)) =
                self.state.get(&parts[..i].join("/"))
            {
                return Ok(None);
            }
        }
        Ok(self.real(parts)?.map(|e| e.kind))
    }

    /// The entry at `parts` in the repository now. The directories above it
    /// have been checked to be real directories.
    fn real(&self, parts: &[&str]) -> Result<Option<Entry>, WorkspaceError> {
        let Some((name, parents)) = parts.split_last() else {
            return Ok(None);
        };
        let err = |e| WorkspaceError::read(self.repo_path.join(parts.join("/")), e);
        let dir = self.repo.walk(parents.iter().copied()).map_err(err)?;
        dir.stat_opt(OsStr::new(name)).map_err(err)
    }

    fn check(&mut self, step: &Step<'_>) -> Result<(), WorkspaceError> {
        let path = step.path();
        for i in 1..step.parts.len() {
            let prefix = &step.parts[..i];
            let reason = match self.kind_at(prefix)? {
                Some(EntryKind::Dir) => continue,
                Some(EntryKind::Symlink) => "is a symlink",
                None => "does not exist",
                Some(_) => "is not a directory",
            };
            return Err(WorkspaceError::unsafe_path(
                path,
                format!("{} {reason} in the repository", prefix.join("/")),
            ));
        }
        let c = step.change;
        let expected = entry_kind(c.file_type);
        let found = self.kind_at(&step.parts)?;
        let planned = match c.kind {
            ChangeKind::Added => {
                if found.is_some() {
                    return Err(WorkspaceError::conflict(path, "it already exists"));
                }
                check_new(c)?;
                Planned::Created(expected)
            }
            ChangeKind::Modified | ChangeKind::Deleted => {
                if self.state.contains_key(path) {
                    return Err(WorkspaceError::conflict(path, "it is changed twice"));
                }
                if found != Some(expected) {
                    return Err(WorkspaceError::conflict(
                        path,
                        format!(
                            "it is {} in the repository, not {}",
                            describe(found),
                            describe(Some(expected))
                        ),
                    ));
                }
                // Not changed before and its parents are real: it is real.
                if let Some(entry) = self.real(&step.parts)? {
                    check_unchanged(c, &entry)?;
                }
                if c.kind == ChangeKind::Modified {
                    check_new(c)?;
                    Planned::Kept(expected)
                } else {
                    if expected == EntryKind::Dir {
                        self.check_emptied(step)?;
                    }
                    Planned::Deleted
                }
            }
        };
        self.state.insert(path.to_string(), planned);
        Ok(())
    }

    /// A directory is deleted only after everything in it was.
    fn check_emptied(&self, step: &Step<'_>) -> Result<(), WorkspaceError> {
        let err = |e| WorkspaceError::read(self.repo_path.join(step.path()), e);
        let dir = self.repo.walk(step.parts.iter().copied()).map_err(err)?;
        for name in dir.entries().map_err(err)? {
            let child = format!("{}/{}", step.path(), name.to_string_lossy());
            if !matches!(self.state.get(&child), Some(Planned::Deleted)) {
                return Err(WorkspaceError::conflict(
                    step.path(),
                    format!("the directory holds {child:?}, which the changes do not delete"),
                ));
            }
        }
        Ok(())
    }
}

/// The entry is still what the scan saw before the change.
fn check_unchanged(c: &FileChange, entry: &Entry) -> Result<(), WorkspaceError> {
    let mode_moved = c.old_mode.is_some_and(|m| m != entry.mode);
    let size_moved = entry.kind == EntryKind::File && c.old_size.is_some_and(|s| s != entry.size);
    if mode_moved || size_moved {
        return Err(WorkspaceError::conflict(
            &c.path,
            "the repository changed since the scan",
        ));
    }
    Ok(())
}

/// The change says everything needed to create its entry, safely.
fn check_new(c: &FileChange) -> Result<(), WorkspaceError> {
    match c.file_type {
        FileType::File | FileType::Dir => {
            let Some(mode) = c.mode else {
                return Err(WorkspaceError::conflict(&c.path, "the change has no mode"));
            };
            if mode & !0o7777 != 0 {
                return Err(WorkspaceError::conflict(
                    &c.path,
                    "the mode has bits beyond 0o7777",
                ));
            }
            if c.file_type == FileType::File && mode & (libc::S_ISUID | libc::S_ISGID) != 0 {
                return Err(WorkspaceError::unsafe_path(
                    &c.path,
                    "it would be a setuid or setgid file",
                ));
            }
        }
        FileType::Symlink => match c.link_target.as_deref() {
            None | Some("") => {
                return Err(WorkspaceError::conflict(
                    &c.path,
                    "the change has no link target",
                ))
            }
            Some(t) if t.contains('\0') => {
                return Err(WorkspaceError::conflict(
                    &c.path,
                    "the link target contains a nul byte",
                ))
            }
            Some(_) => {}
        },
        FileType::Special => {
            return Err(WorkspaceError::unsafe_path(
                &c.path,
                "a fifo, socket or device node is never committed",
            ))
        }
    }
    Ok(())
}
