//! The commit: applies a list of changes to the repository, all or nothing,
//! even when its process is killed half way.
//!
//! Two phases. `plan::checked` puts the changes in a safe order (deletions
//! deepest first, then additions and modifications parents first) and
//! checks every one against the repository as it will be when it runs,
//! without writing. Then a `Transaction` applies them one by one, recording
//! for each step how to undo it; a step that replaces or deletes something
//! moves it into the staging directory first, so undoing is a rename back. Every repository
//! directory is reached through `DirFd::walk` (one `O_NOFOLLOW` open per
//! component), so a symlink that appears between the check and the write
//! makes the write fail rather than land elsewhere.
//!
//! Each step is announced in a journal (`journal.rs`) before it is taken,
//! and the undo of a step checks what the step left rather than trusting
//! that it ran: the same undo serves a step that failed here and a commit
//! whose process was killed, which [`recover`] undoes from the journal.

use std::ffi::OsStr;
use std::fs::Permissions;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rauha_spec::result::{ChangeKind, FileChange, FileType};

use super::dirfd::{DirFd, EntryKind};
use super::journal::{self, Journal, Record};
use super::plan::{self, entry_kind, Step};
use super::scan::MAX_DEPTH;
use super::WorkspaceError;

/// The prefix of a commit's staging directory in the repository's root.
const STAGING_PREFIX: &str = ".rauha-commit-";

/// Applies `changes` (as `scan` of `repo` under `upper` listed them) to
/// `repo`, taking new content from `upper`; a change that is `held_back`
/// is listed in the journal but not applied. On error the repository is
/// as it was, unless the error is a [`WorkspaceError::Rollback`].
///
/// `journal` (a path outside the repository, which the caller owns) is
/// written before each step. It stays after a commit that succeeded, for
/// [`recover`] to answer from until the caller has recorded the outcome
/// and removes it; a commit that failed and was undone removes it.
pub fn commit(
    repo: &Path,
    upper: &Path,
    changes: &[FileChange],
    journal: &Path,
) -> Result<(), WorkspaceError> {
    let repo_root = DirFd::open(repo).map_err(|e| WorkspaceError::read(repo, e))?;
    let upper_root = DirFd::open(upper).map_err(|e| WorkspaceError::read(upper, e))?;
    let to_apply: Vec<FileChange> = changes
        .iter()
        .filter(|c| c.held_back.is_none())
        .cloned()
        .collect();
    let steps = plan::checked(&repo_root, repo, &to_apply)?;
    if steps.is_empty() {
        return Ok(());
    }

    let staging_name = format!("{STAGING_PREFIX}{}", uuid::Uuid::new_v4());
    let journal_err = |e| WorkspaceError::apply(&staging_name, "write the commit's journal", e);
    let mut log = Journal::create(journal).map_err(journal_err)?;
    log.append(&Record::Begin {
        staging: staging_name.clone(),
        changes: changes.to_vec(),
    })
    .and_then(|()| log.sync())
    .map_err(journal_err)?;
    kill_point();
    let staging_os = OsStr::new(&staging_name);
    let staging = repo_root
        .mkdir(staging_os, 0o700)
        .and_then(|()| repo_root.open_dir(staging_os));
    let staging = match staging {
        Ok(d) => d,
        Err(e) => {
            let _ = repo_root.unlink(staging_os, true);
            let _ = std::fs::remove_file(journal);
            return Err(WorkspaceError::apply(
                &staging_name,
                "create the staging directory",
                e,
            ));
        }
    };
    let mut tx = Transaction {
        repo: &repo_root,
        upper: &upper_root,
        staging,
        staging_name: &staging_name,
        journal: log,
        intended: Vec::new(),
        backups: 0,
    };
    let applied = steps.iter().try_for_each(|s| tx.apply(s)).and_then(|()| {
        // Whole: from here on a restart finishes the commit, not undoes it.
        tx.journal
            .append(&Record::Done)
            .and_then(|()| tx.journal.sync())
            .map_err(journal_err)
    });
    match applied {
        Ok(()) => {
            kill_point();
            if let Err(e) = tx.discard_backups() {
                // The changes are in place; only the backups are left over.
                tracing::warn!(
                    staging = %repo.join(&staging_name).display(),
                    error = %e,
                    "workspace committed, but its staging directory could not be removed"
                );
            }
            Ok(())
        }
        Err(primary) => match tx.rollback() {
            Ok(()) => {
                let _ = std::fs::remove_file(journal);
                Err(primary)
            }
            Err(rollback) => Err(WorkspaceError::Rollback {
                primary: Box::new(primary),
                rollback: Box::new(rollback),
                staging: repo.join(&staging_name),
            }),
        },
    }
}

/// What [`recover`] found of a commit cut short.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovered {
    /// No journal: no commit was under way (or it was undone already).
    Nothing,
    /// A commit was cut before it was whole: every step it took is undone,
    /// the repository is as it was, and the journal is removed.
    RolledBack,
    /// The commit was whole (its backups may not all have been removed):
    /// the staging directory is gone now. These are the changes it was
    /// given, held back ones included. The journal stays, for the caller
    /// to remove once it has recorded the outcome.
    Finished(Vec<FileChange>),
}

/// Brings the repository to a commit's before or after state from the
/// `journal` a cut commit left: undoes every step it took, or, when every
/// step was taken, removes what is left of its backups. Calling it again
/// gives the same answer and changes nothing.
pub fn recover(repo: &Path, journal: &Path) -> Result<Recovered, WorkspaceError> {
    let records = match journal::read(journal) {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(Recovered::Nothing),
        Err(e) => return Err(WorkspaceError::read(journal, e)),
    };
    let Some(Record::Begin { staging, changes }) = records.first() else {
        // Cut before its first line was whole: it had not started.
        std::fs::remove_file(journal).map_err(|e| WorkspaceError::read(journal, e))?;
        return Ok(Recovered::Nothing);
    };
    let staging_path = repo.join(staging);
    let failed = |source: WorkspaceError| WorkspaceError::Recover {
        journal: journal.to_path_buf(),
        staging: staging_path.clone(),
        source: Box::new(source),
    };
    if !staging.starts_with(STAGING_PREFIX) || staging.contains('/') {
        return Err(failed(WorkspaceError::unsafe_path(
            staging,
            "not a staging directory's name",
        )));
    }
    let repo_root = DirFd::open(repo).map_err(|e| WorkspaceError::read(repo, e))?;
    let staging_os = OsStr::new(staging.as_str());
    let staging_dir = match repo_root.open_dir(staging_os) {
        Ok(d) => Some(d),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(failed(WorkspaceError::apply(
                staging,
                "open the staging directory",
                e,
            )))
        }
    };
    let remove_staging = |dir: &DirFd| -> Result<(), WorkspaceError> {
        remove_tree(dir, 0)
            .and_then(|()| gone_ok(repo_root.unlink(staging_os, true)))
            .map_err(|e| WorkspaceError::apply(staging, "remove the staging directory", e))
    };
    if records.last() == Some(&Record::Done) {
        if let Some(dir) = &staging_dir {
            remove_staging(dir).map_err(failed)?;
        }
        return Ok(Recovered::Finished(changes.clone()));
    }
    let undo = Undo {
        repo: &repo_root,
        staging: staging_dir.as_ref(),
    };
    undo.all(records.iter().skip(1)).map_err(failed)?;
    if staging_dir.is_some() {
        // Empty now: every backup went back.
        gone_ok(repo_root.unlink(staging_os, true)).map_err(|e| {
            failed(WorkspaceError::apply(
                staging,
                "remove the staging directory",
                e,
            ))
        })?;
    }
    std::fs::remove_file(journal).map_err(|e| WorkspaceError::read(journal, e))?;
    Ok(Recovered::RolledBack)
}

/// The journal a caller keeps for a commit, by its own name for it.
pub fn journal_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("commit-{name}.journal"))
}

/// Where a test kills the commit, as a killed process would stop: between
/// two points, with nothing after it run (no undo, no clean-up).
#[cfg(test)]
pub(super) mod killer {
    use std::cell::Cell;

    thread_local! {
        /// The point to stop at, counted from 0.
        pub static AT: Cell<Option<usize>> = const { Cell::new(None) };
        /// The points passed so far.
        pub static PASSED: Cell<usize> = const { Cell::new(0) };
    }

    /// The payload of the unwinding that stands for the kill.
    pub struct Killed;

    pub fn point() {
        let n = PASSED.get();
        PASSED.set(n + 1);
        if AT.get() == Some(n) {
            std::panic::resume_unwind(Box::new(Killed));
        }
    }
}

#[cfg(test)]
fn kill_point() {
    killer::point();
}

#[cfg(not(test))]
fn kill_point() {}

/// `Ok` when what was to be removed is not there.
fn gone_ok(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

struct Transaction<'a> {
    repo: &'a DirFd,
    upper: &'a DirFd,
    staging: DirFd,
    staging_name: &'a str,
    journal: Journal,
    /// Every step announced in the journal, in order.
    intended: Vec<Record>,
    backups: u64,
}

fn temp_name() -> String {
    format!(".rauha-tmp-{}", uuid::Uuid::new_v4())
}

fn last(path: &str) -> &OsStr {
    OsStr::new(path.rsplit('/').next().unwrap_or(path))
}

impl Transaction<'_> {
    /// Opens the repository directory holding `path`, never through a
    /// symlink.
    fn parent_of(&self, path: &str) -> Result<DirFd, WorkspaceError> {
        let parents = path.rsplit_once('/').map(|(p, _)| p.split('/'));
        self.repo.walk(parents.into_iter().flatten()).map_err(|e| {
            WorkspaceError::apply(path, "open its directory without following symlinks", e)
        })
    }

    /// Writes `record` to the journal before its step is taken.
    fn intend(&mut self, path: &str, record: Record) -> Result<(), WorkspaceError> {
        kill_point();
        self.journal
            .append(&record)
            .map_err(|e| WorkspaceError::apply(path, "write the commit's journal", e))?;
        self.intended.push(record);
        kill_point();
        Ok(())
    }

    fn apply(&mut self, step: &Step<'_>) -> Result<(), WorkspaceError> {
        let c = step.change;
        let path = step.path();
        let parent = self.parent_of(path)?;
        if c.kind != ChangeKind::Added {
            let entry = parent.stat(step.name()).map_err(|e| {
                WorkspaceError::apply(path, "inspect the entry in the repository", e)
            })?;
            if entry.kind != entry_kind(c.file_type) {
                return Err(WorkspaceError::conflict(
                    path,
                    "the repository changed since the check",
                ));
            }
        }
        match (c.kind, c.file_type) {
            (ChangeKind::Deleted, t) => {
                if t == FileType::Dir {
                    let dir = parent
                        .open_dir(step.name())
                        .and_then(|d| d.entries())
                        .map_err(|e| {
                            WorkspaceError::apply(path, "list the directory to delete", e)
                        })?;
                    if !dir.is_empty() {
                        return Err(WorkspaceError::conflict(
                            path,
                            "the directory to delete is not empty",
                        ));
                    }
                }
                self.back_up(&parent, path, step.name())
            }
            (_, FileType::File) => self.put_file(&parent, step),
            (_, FileType::Symlink) => self.put_symlink(&parent, step),
            (ChangeKind::Added, FileType::Dir) => self.make_dir(&parent, step),
            (ChangeKind::Modified, FileType::Dir) => self.chmod_dir(&parent, step),
            // The plan refuses these before anything is written.
            (_, FileType::Special) => Err(WorkspaceError::unsafe_path(
                path,
                "a fifo, socket or device node is never committed",
            )),
        }
    }

    /// Moves `name` into the staging directory.
    fn back_up(&mut self, parent: &DirFd, path: &str, name: &OsStr) -> Result<(), WorkspaceError> {
        let backup = self.backups.to_string();
        self.backups += 1;
        self.intend(
            path,
            Record::Backup {
                path: path.to_string(),
                backup: backup.clone(),
            },
        )?;
        parent
            .rename_noreplace(name, &self.staging, OsStr::new(&backup))
            .map_err(|e| {
                WorkspaceError::apply(path, "move the old entry to the staging directory", e)
            })
    }

    /// The owner a new entry takes: the replaced entry's, or its directory's.
    fn owner(&self, parent: &DirFd, step: &Step<'_>) -> Result<(u32, u32), WorkspaceError> {
        let entry = match step.change.kind {
            ChangeKind::Modified => parent.stat(step.name()),
            _ => parent.stat_self(),
        };
        let entry = entry
            .map_err(|e| WorkspaceError::apply(step.path(), "read the owner to give it", e))?;
        Ok((entry.uid, entry.gid))
    }

    /// Announces the temporary entry made for `step`'s path; its name.
    fn temp_for(&mut self, step: &Step<'_>) -> Result<String, WorkspaceError> {
        let temp = temp_name();
        self.intend(
            step.path(),
            Record::Temp {
                path: step.path().to_string(),
                temp: temp.clone(),
            },
        )?;
        Ok(temp)
    }

    /// Puts the finished temporary entry `temp` in place of `step`'s path.
    /// On error the temporary entry stays, for the undo of its `Temp`.
    fn put_in_place(
        &mut self,
        parent: &DirFd,
        step: &Step<'_>,
        temp: &str,
    ) -> Result<(), WorkspaceError> {
        let path = step.path();
        if step.change.kind == ChangeKind::Modified {
            self.back_up(parent, path, step.name())?;
        }
        self.intend(
            path,
            Record::Place {
                path: path.to_string(),
                temp: temp.to_string(),
            },
        )?;
        parent
            .rename_noreplace(OsStr::new(temp), parent, step.name())
            .map_err(|e| WorkspaceError::apply(path, "move the new entry into place", e))
    }

    fn put_file(&mut self, parent: &DirFd, step: &Step<'_>) -> Result<(), WorkspaceError> {
        let path = step.path();
        let c = step.change;
        let mode = c.mode.unwrap_or(0o644);
        let (mut source, source_entry) = self
            .upper
            .walk(step.parents())
            .and_then(|d| d.open_regular(step.name()))
            .map_err(|e| {
                WorkspaceError::apply(path, "open the new content in the upper layer", e)
            })?;
        if c.size.is_some_and(|s| s != source_entry.size) {
            return Err(WorkspaceError::conflict(
                path,
                "the upper layer changed since the scan",
            ));
        }
        let (uid, gid) = self.owner(parent, step)?;
        let temp = self.temp_for(step)?;
        let mut out = parent
            .create_file(OsStr::new(&temp), 0o600)
            .map_err(|e| WorkspaceError::apply(path, "create a temporary file next to it", e))?;
        let copied = io::copy(&mut source, &mut out)
            .map_err(|e| WorkspaceError::apply(path, "copy the new content", e))?;
        if copied != source_entry.size {
            return Err(WorkspaceError::conflict(
                path,
                "the upper layer changed while it was copied",
            ));
        }
        std::os::unix::fs::fchown(&out, Some(uid), Some(gid))
            .map_err(|e| WorkspaceError::apply(path, "set the new file's owner", e))?;
        out.set_permissions(Permissions::from_mode(mode))
            .map_err(|e| WorkspaceError::apply(path, "set the new file's mode", e))?;
        drop(out);
        self.put_in_place(parent, step, &temp)
    }

    fn put_symlink(&mut self, parent: &DirFd, step: &Step<'_>) -> Result<(), WorkspaceError> {
        let path = step.path();
        let target = self
            .upper
            .walk(step.parents())
            .and_then(|d| d.read_link(step.name()))
            .map_err(|e| WorkspaceError::apply(path, "read the new link in the upper layer", e))?;
        if target.to_str() != step.change.link_target.as_deref() {
            return Err(WorkspaceError::conflict(
                path,
                "the upper layer changed since the scan",
            ));
        }
        let (uid, gid) = self.owner(parent, step)?;
        let temp = self.temp_for(step)?;
        parent
            .symlink(&target, OsStr::new(&temp))
            .map_err(|e| WorkspaceError::apply(path, "create the new symlink", e))?;
        parent
            .chown(OsStr::new(&temp), uid, gid)
            .map_err(|e| WorkspaceError::apply(path, "set the new symlink's owner", e))?;
        self.put_in_place(parent, step, &temp)
    }

    fn make_dir(&mut self, parent: &DirFd, step: &Step<'_>) -> Result<(), WorkspaceError> {
        let path = step.path();
        let (uid, gid) = self.owner(parent, step)?;
        self.intend(
            path,
            Record::Mkdir {
                path: path.to_string(),
            },
        )?;
        if let Err(e) = parent.mkdir(step.name(), 0o700) {
            // Nothing was made: the undo must not remove what is there.
            self.intended.pop();
            return Err(WorkspaceError::apply(path, "create the directory", e));
        }
        let dir = parent
            .open_dir(step.name())
            .map_err(|e| WorkspaceError::apply(path, "open the new directory", e))?;
        dir.chown_self(uid, gid)
            .map_err(|e| WorkspaceError::apply(path, "set the new directory's owner", e))?;
        dir.chmod_self(step.change.mode.unwrap_or(0o755))
            .map_err(|e| WorkspaceError::apply(path, "set the new directory's mode", e))
    }

    fn chmod_dir(&mut self, parent: &DirFd, step: &Step<'_>) -> Result<(), WorkspaceError> {
        let path = step.path();
        let err = |e| WorkspaceError::apply(path, "change the directory's mode", e);
        let dir = parent.open_dir(step.name()).map_err(err)?;
        let old = dir.stat_self().map_err(err)?.mode;
        self.intend(
            path,
            Record::Chmod {
                path: path.to_string(),
                mode: old,
            },
        )?;
        dir.chmod_self(step.change.mode.unwrap_or(old)).map_err(err)
    }

    /// Undoes every step announced, newest first, then removes the (now
    /// empty) staging directory. On error the staging directory stays, with
    /// whatever backups could not be put back.
    fn rollback(&mut self) -> Result<(), WorkspaceError> {
        let undo = Undo {
            repo: self.repo,
            staging: Some(&self.staging),
        };
        undo.all(self.intended.iter())?;
        self.repo
            .unlink(OsStr::new(self.staging_name), true)
            .map_err(|e| {
                WorkspaceError::apply(self.staging_name, "remove the staging directory", e)
            })
    }

    /// After success: removes the staging directory and the backups in it.
    fn discard_backups(&self) -> io::Result<()> {
        remove_tree(&self.staging, 0)?;
        kill_point();
        self.repo.unlink(OsStr::new(self.staging_name), true)
    }
}

/// Undoing announced steps. A step may not have been taken (the kill came
/// between its record and it, or it failed): each undo looks at what is
/// there and undoes only what the step left.
struct Undo<'a> {
    repo: &'a DirFd,
    /// `None` when the staging directory was never made.
    staging: Option<&'a DirFd>,
}

impl Undo<'_> {
    /// Undoes `records` newest first, all of them even when one fails; the
    /// first failure.
    fn all<'r>(
        &self,
        records: impl DoubleEndedIterator<Item = &'r Record>,
    ) -> Result<(), WorkspaceError> {
        let mut first_error = None;
        for r in records.rev() {
            if let Err(e) = self.one(r) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The repository directory holding `path`; `None` when it is not
    /// there, and so neither is anything a step made in it.
    fn parent(&self, path: &str) -> Result<Option<DirFd>, WorkspaceError> {
        let parents = path.rsplit_once('/').map(|(p, _)| p.split('/'));
        match self.repo.walk(parents.into_iter().flatten()) {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(WorkspaceError::apply(
                path,
                "open its directory without following symlinks",
                e,
            )),
        }
    }

    fn one(&self, record: &Record) -> Result<(), WorkspaceError> {
        match record {
            Record::Begin { .. } | Record::Done => Ok(()),
            Record::Temp { path, temp } => match self.parent(path)? {
                Some(parent) => gone_ok(parent.unlink(OsStr::new(temp), false))
                    .map_err(|e| WorkspaceError::apply(path, "remove the temporary entry", e)),
                None => Ok(()),
            },
            Record::Backup { path, backup } => {
                let err = |e| WorkspaceError::apply(path, "put the old entry back", e);
                let Some(staging) = self.staging else {
                    return Ok(());
                };
                if staging.stat_opt(OsStr::new(backup)).map_err(err)?.is_none() {
                    // Never moved, or already back.
                    return Ok(());
                }
                let parent = self
                    .parent(path)?
                    .ok_or_else(|| err(io::ErrorKind::NotFound.into()))?;
                staging
                    .rename_noreplace(OsStr::new(backup), &parent, last(path))
                    .map_err(err)
            }
            Record::Place { path, temp } => {
                let err = |e| WorkspaceError::apply(path, "remove the new entry", e);
                let Some(parent) = self.parent(path)? else {
                    return Ok(());
                };
                if parent.stat_opt(OsStr::new(temp)).map_err(err)?.is_some() {
                    // Never renamed: what is at `path` is not the commit's.
                    return Ok(());
                }
                gone_ok(parent.unlink(last(path), false)).map_err(err)
            }
            Record::Mkdir { path } => match self.parent(path)? {
                Some(parent) => gone_ok(parent.unlink(last(path), true))
                    .map_err(|e| WorkspaceError::apply(path, "remove the new entry", e)),
                None => Ok(()),
            },
            Record::Chmod { path, mode } => {
                let err = |e| WorkspaceError::apply(path, "set the directory's mode back", e);
                let Some(parent) = self.parent(path)? else {
                    return Ok(());
                };
                match parent.open_dir(last(path)) {
                    Ok(dir) => dir.chmod_self(*mode).map_err(err),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(err(e)),
                }
            }
        }
    }
}

/// Removes everything in `dir`, never following a symlink.
fn remove_tree(dir: &DirFd, depth: usize) -> io::Result<()> {
    if depth > MAX_DEPTH {
        return Err(io::Error::other("the staging directory is nested too deep"));
    }
    for name in dir.entries()? {
        if dir.stat(&name)?.kind == EntryKind::Dir {
            remove_tree(&dir.open_dir(&name)?, depth + 1)?;
            dir.unlink(&name, true)?;
        } else {
            dir.unlink(&name, false)?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "commit_tests.rs"]
mod tests;
