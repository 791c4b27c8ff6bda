//! The commit: applies a list of changes to the repository, all or nothing.
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

use std::ffi::OsStr;
use std::fs::Permissions;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rauha_spec::result::{ChangeKind, FileChange, FileType};

use super::dirfd::{DirFd, EntryKind};
use super::plan::{self, entry_kind, Step};
use super::scan::MAX_DEPTH;
use super::WorkspaceError;

/// Applies `changes` (as `scan` of `repo` under `upper` listed them) to
/// `repo`, taking new content from `upper`. On error the repository is as
/// it was, unless the error is a [`WorkspaceError::Rollback`].
pub fn commit(repo: &Path, upper: &Path, changes: &[FileChange]) -> Result<(), WorkspaceError> {
    let repo_root = DirFd::open(repo).map_err(|e| WorkspaceError::read(repo, e))?;
    let upper_root = DirFd::open(upper).map_err(|e| WorkspaceError::read(upper, e))?;
    let steps = plan::checked(&repo_root, repo, changes)?;
    if steps.is_empty() {
        return Ok(());
    }

    let staging_name = format!(".rauha-commit-{}", uuid::Uuid::new_v4());
    let staging_os = OsStr::new(&staging_name);
    repo_root
        .mkdir(staging_os, 0o700)
        .map_err(|e| WorkspaceError::apply(&staging_name, "create the staging directory", e))?;
    let staging = match repo_root.open_dir(staging_os) {
        Ok(d) => d,
        Err(e) => {
            let _ = repo_root.unlink(staging_os, true);
            return Err(WorkspaceError::apply(
                &staging_name,
                "open the staging directory",
                e,
            ));
        }
    };
    let mut tx = Transaction {
        repo: &repo_root,
        upper: &upper_root,
        staging,
        staging_name: &staging_name,
        undo: Vec::new(),
        backups: 0,
    };
    match steps.iter().try_for_each(|s| tx.apply(s)) {
        Ok(()) => {
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
            Ok(()) => Err(primary),
            Err(rollback) => Err(WorkspaceError::Rollback {
                primary: Box::new(primary),
                rollback: Box::new(rollback),
                staging: repo.join(&staging_name),
            }),
        },
    }
}

/// How to undo one applied step.
#[derive(Debug)]
enum Undo {
    /// Move `staging/<backup>` back to `path`.
    Restore { path: String, backup: String },
    /// Remove the entry the step created at `path`.
    Remove { path: String, dir: bool },
    /// Set the directory at `path` back to `mode`.
    Chmod { path: String, mode: u32 },
}

struct Transaction<'a> {
    repo: &'a DirFd,
    upper: &'a DirFd,
    staging: DirFd,
    staging_name: &'a str,
    undo: Vec<Undo>,
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
        parent
            .rename_noreplace(name, &self.staging, OsStr::new(&backup))
            .map_err(|e| {
                WorkspaceError::apply(path, "move the old entry to the staging directory", e)
            })?;
        self.undo.push(Undo::Restore {
            path: path.to_string(),
            backup,
        });
        Ok(())
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

    /// Puts the finished temporary entry `tmp` in place of `step`'s path.
    fn put_in_place(
        &mut self,
        parent: &DirFd,
        step: &Step<'_>,
        tmp: &OsStr,
    ) -> Result<(), WorkspaceError> {
        let path = step.path();
        let placed = (|| {
            if step.change.kind == ChangeKind::Modified {
                self.back_up(parent, path, step.name())?;
            }
            parent
                .rename_noreplace(tmp, parent, step.name())
                .map_err(|e| WorkspaceError::apply(path, "move the new entry into place", e))
        })();
        match placed {
            Ok(()) => {
                self.undo.push(Undo::Remove {
                    path: path.to_string(),
                    dir: false,
                });
                Ok(())
            }
            Err(e) => {
                let _ = parent.unlink(tmp, false);
                Err(e)
            }
        }
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
        let tmp = temp_name();
        let tmp = OsStr::new(&tmp);
        let mut out = parent
            .create_file(tmp, 0o600)
            .map_err(|e| WorkspaceError::apply(path, "create a temporary file next to it", e))?;
        let written = (|| {
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
                .map_err(|e| WorkspaceError::apply(path, "set the new file's mode", e))
        })();
        drop(out);
        if let Err(e) = written {
            let _ = parent.unlink(tmp, false);
            return Err(e);
        }
        self.put_in_place(parent, step, tmp)
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
        let tmp = temp_name();
        let tmp = OsStr::new(&tmp);
        parent
            .symlink(&target, tmp)
            .map_err(|e| WorkspaceError::apply(path, "create the new symlink", e))?;
        if let Err(e) = parent.chown(tmp, uid, gid) {
            let _ = parent.unlink(tmp, false);
            return Err(WorkspaceError::apply(
                path,
                "set the new symlink's owner",
                e,
            ));
        }
        self.put_in_place(parent, step, tmp)
    }

    fn make_dir(&mut self, parent: &DirFd, step: &Step<'_>) -> Result<(), WorkspaceError> {
        let path = step.path();
        let (uid, gid) = self.owner(parent, step)?;
        parent
            .mkdir(step.name(), 0o700)
            .map_err(|e| WorkspaceError::apply(path, "create the directory", e))?;
        self.undo.push(Undo::Remove {
            path: path.to_string(),
            dir: true,
        });
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
        dir.chmod_self(step.change.mode.unwrap_or(old))
            .map_err(err)?;
        self.undo.push(Undo::Chmod {
            path: path.to_string(),
            mode: old,
        });
        Ok(())
    }

    fn undo_one(&self, undo: &Undo) -> Result<(), WorkspaceError> {
        match undo {
            Undo::Restore { path, backup } => {
                let parent = self.parent_of(path)?;
                self.staging
                    .rename_noreplace(OsStr::new(backup), &parent, last(path))
                    .map_err(|e| WorkspaceError::apply(path, "put the old entry back", e))
            }
            Undo::Remove { path, dir } => self
                .parent_of(path)?
                .unlink(last(path), *dir)
                .map_err(|e| WorkspaceError::apply(path, "remove the new entry", e)),
            Undo::Chmod { path, mode } => self
                .parent_of(path)?
                .open_dir(last(path))
                .and_then(|d| d.chmod_self(*mode))
                .map_err(|e| WorkspaceError::apply(path, "set the directory's mode back", e)),
        }
    }

    /// Undoes every applied step, newest first, then removes the (now
    /// empty) staging directory. On error the staging directory stays, with
    /// whatever backups could not be put back.
    fn rollback(&mut self) -> Result<(), WorkspaceError> {
        let mut first_error = None;
        while let Some(undo) = self.undo.pop() {
            if let Err(e) = self.undo_one(&undo) {
                first_error.get_or_insert(e);
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        self.repo
            .unlink(OsStr::new(self.staging_name), true)
            .map_err(|e| {
                WorkspaceError::apply(self.staging_name, "remove the staging directory", e)
            })
    }

    /// After success: removes the staging directory and the backups in it.
    fn discard_backups(&self) -> io::Result<()> {
        remove_tree(&self.staging, 0)?;
        self.repo.unlink(OsStr::new(self.staging_name), true)
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
