//! `rauha-workspace`: what a task changed in a repository, and applying
//! those changes to it.
//!
//! The repository is shown in the zone through overlayfs: `lowerdir` is the
//! repository (never written while the task runs), `upperdir` a private
//! directory of the daemon that receives every write. This crate reads the
//! upper layer against the lower one ([`scan`]) and applies a list of
//! changes to the repository ([`commit`]). It never mounts anything and
//! never reads outside the two layers.
//!
//! # The upper layer, on disk
//!
//! - An entry absent from the lower layer was added. A new directory is
//!   reported, then everything in it, each as added.
//! - A file or symlink present in both layers was copied up; it is modified
//!   only if its content (or target), type or permission bits
//!   (`mode & 0o7777`) differ. A copy-up that changed nothing is no change.
//! - A directory present in both layers is modified only if its permission
//!   bits changed; what it holds is compared entry by entry.
//! - A whiteout (a character device 0/0) deletes the lower entry: for a
//!   directory, the directory and everything under it.
//! - An opaque directory (xattr `trusted.overlay.opaque` = `y`) hides the
//!   lower directory's entries: below it, whatever the lower layer holds and
//!   the upper layer does not was deleted. This holds for the whole subtree.
//! - A path whose type changed (a file became a directory, a symlink a
//!   file, ...) is reported twice under the same path: `Deleted` with the
//!   old type (with, for a directory, everything under it), then `Added`
//!   with the new type.
//! - A fifo, socket or device node (other than a whiteout) in the upper
//!   layer is reported as an added `special` entry, `held_back` (a commit
//!   refuses one); one that replaces a lower entry reports that entry
//!   deleted first. Those of the lower layer are not reported.
//! - Redirected directories (`redirect_dir`) and metadata-only copy-ups
//!   (`metacopy`) are refused with an error rather than misread.
//!
//! A reported `size` is in bytes (for a symlink, the target's length) and is
//! `None` for directories and deleted entries; `mode` is `mode & 0o7777`;
//! `old_size`/`old_mode` describe what was there before (modified and
//! deleted entries). A text file (UTF-8, no NUL byte, at most 1 MiB on each
//! side) that was added, modified or deleted carries a unified diff, cut at
//! the diff cap; others carry none. Names and link targets must be UTF-8,
//! and directories at most 256 deep, or the scan fails.
//!
//! # The commit
//!
//! [`commit`] applies exactly the listed changes to the repository, all or
//! nothing:
//!
//! - Every change is checked before anything is written: its path is
//!   relative with no empty, `.` or `..` component, and every directory
//!   above it is, when the change is applied (after the changes before it),
//!   a real directory of the repository, never a symlink. A path that exists
//!   must still be what the scan saw (type, mode, size). The upper layer's
//!   entry is checked (size, link target) when it is copied; a mismatch
//!   fails the commit, which is then undone.
//! - Deletions go first, deepest first; then additions and modifications,
//!   parents first. A new file is copied from the upper layer (opened with
//!   `O_NOFOLLOW`) into a temporary file created with
//!   `O_CREAT | O_EXCL | O_NOFOLLOW` in the same repository directory, and
//!   renamed into place. Every directory is reached by opening one
//!   component at a time with `O_DIRECTORY | O_NOFOLLOW`, so no write goes
//!   through a symlink. A symlink's target is data: it is created as is and
//!   never followed.
//! - Whatever is replaced or deleted is moved into a staging directory
//!   (`<repo>/.rauha-commit-<uuid>/`). If a step fails, the steps done are
//!   undone in reverse order and the backups put back; the staging directory
//!   is then removed. If undoing fails too, both errors are returned and the
//!   staging directory is kept, with the backups in it.
//! - New entries take the owner of the entry they replace, or else of their
//!   directory. Setuid and setgid bits on files are refused. A change that
//!   is `held_back` is not applied.
//!
//! The guarantee holds against the death of the process too. Before each
//! step the commit appends what it is about to do to a journal, a file the
//! caller names outside the repository (the first line, synced, names the
//! staging directory and the changes; a last line, `done`, synced, says
//! every step was taken). [`recover`], run by whoever starts next, reads
//! it: a commit without `done` is undone step by step (each undo checks
//! what its step left, so a step the kill came before is no harm) and the
//! journal removed; a commit with `done` only has its backups removed, and
//! its changes are returned, so the caller can report what was committed.
//! Steps between the two synced lines are not synced one by one: a power
//! loss (not a killed process) can lose the record of the last steps.

mod commit;
mod diff;
mod dirfd;
mod error;
mod journal;
mod place;
mod plan;
mod scan;

#[cfg(test)]
mod fixture;
#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod overlay_tests;

pub use commit::{commit, journal_path, recover, Recovered};
pub use error::WorkspaceError;
pub use place::{place_file, read_files_beneath, relative_components};
pub use scan::{compare_capped, scan, scan_capped, Limits, Scanned};
