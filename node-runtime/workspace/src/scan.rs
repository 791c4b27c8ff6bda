//! The scan: the changes a task made, read from the overlay's upper layer
//! against its lower layer (the rules are in the module doc).
//!
//! Both layers are walked together, one directory at a time, through
//! [`DirFd`] handles, so no symlink of either layer is ever followed. A
//! directory is "merged" while overlayfs would show the lower layer's
//! entries through it: it exists as a directory in both layers, and neither
//! it nor any directory above it is opaque. In a merged directory an entry
//! missing from the upper layer is unchanged; elsewhere it is gone.

use std::collections::BTreeSet;
use std::ffi::{CStr, OsStr};
use std::fs::File;
use std::io::{self, Read, Seek};
use std::path::Path;

use rauha_spec::result::{ChangeKind, FileChange, FileType};

use super::diff::{self, Side, TEXT_LIMIT};
use super::dirfd::{fd_xattr, DirFd, Entry, EntryKind};
use super::WorkspaceError;

const OPAQUE: &CStr = c"trusted.overlay.opaque";
const REDIRECT: &CStr = c"trusted.overlay.redirect";
const METACOPY: &CStr = c"trusted.overlay.metacopy";

/// Why a fifo, socket or device node the task made is not committed.
pub(super) const SPECIAL_HELD_BACK: &str = "a fifo, socket or device node: listed, never committed";

/// The deepest directory the scan enters. The walk is recursive and holds
/// two descriptors per level, so a task must not be able to make it
/// arbitrarily deep.
pub(super) const MAX_DEPTH: usize = 256;

/// The changes recorded in `upper` against `lower`, sorted by path (and, for
/// a path whose type changed, its deletion before its addition). Each text
/// diff is cut at `diff_cap` bytes.
pub fn scan(
    lower: &Path,
    upper: &Path,
    diff_cap: usize,
) -> Result<Vec<FileChange>, WorkspaceError> {
    let limits = Limits {
        diff_cap,
        ..Limits::default()
    };
    Ok(scan_capped(lower, upper, &limits)?.changes)
}

/// How much of a scan is kept: a task may change any number of files, and
/// what it changed is held in memory, stored and sent.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most bytes of one file's diff.
    pub diff_cap: usize,
    /// Most bytes of all diffs together; past it, files get no diff (and
    /// `diff_truncated`).
    pub diff_total: usize,
    /// Most changes listed; past it they are counted, not kept.
    pub max_changes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            diff_cap: 64 << 10,
            diff_total: usize::MAX,
            max_changes: usize::MAX,
        }
    }
}

/// What a capped scan found.
#[derive(Debug, Clone, Default)]
pub struct Scanned {
    /// The first `max_changes` changes in walk order, sorted by path.
    pub changes: Vec<FileChange>,
    /// Changes found beyond `max_changes`: counted, not listed.
    pub unlisted: u64,
}

/// [`scan`] within `limits`: memory stays bounded whatever the task made.
pub fn scan_capped(lower: &Path, upper: &Path, limits: &Limits) -> Result<Scanned, WorkspaceError> {
    walk(lower, upper, limits, true)
}

/// What a task changed in a plain directory `after`, given a copy of it
/// as it was before (`before`): every entry missing from `after` was
/// deleted, every one missing from `before` added (no overlay rules: a
/// character device is a special entry like any other). Neither tree's
/// symlinks are followed; the limits are [`scan_capped`]'s.
pub fn compare_capped(
    before: &Path,
    after: &Path,
    limits: &Limits,
) -> Result<Scanned, WorkspaceError> {
    walk(before, after, limits, false)
}

fn walk(
    lower: &Path,
    upper: &Path,
    limits: &Limits,
    overlay: bool,
) -> Result<Scanned, WorkspaceError> {
    let lower_root = DirFd::open(lower).map_err(|e| WorkspaceError::read(lower, e))?;
    let upper_root = DirFd::open(upper).map_err(|e| WorkspaceError::read(upper, e))?;
    let mut scan = Scan {
        lower,
        upper,
        limits,
        diff_spent: 0,
        changes: Vec::new(),
        unlisted: 0,
        overlay,
    };
    // A plain tree is compared whole: nothing of `before` shows through.
    let merged = overlay && !scan.opaque(&upper_root, "")?;
    scan.dir(Some(&lower_root), Some(&upper_root), merged, "")?;
    let mut changes = scan.changes;
    changes.sort_by(|a, b| {
        a.path
            .cmp(&b.path)
            .then(kind_rank(a.kind).cmp(&kind_rank(b.kind)))
    });
    Ok(Scanned {
        changes,
        unlisted: scan.unlisted,
    })
}

fn kind_rank(kind: ChangeKind) -> u8 {
    match kind {
        ChangeKind::Deleted => 0,
        ChangeKind::Modified => 1,
        ChangeKind::Added => 2,
    }
}

#[derive(Debug, Clone, Copy)]
enum Layer {
    Lower,
    Upper,
}

/// A file's content as far as the scan needs it.
enum Content {
    /// At most [`TEXT_LIMIT`] bytes, read whole.
    Small(Vec<u8>),
    /// Larger: kept open, positioned at the start, for a streamed compare.
    Large(File),
}

impl Content {
    fn side(&self) -> Side<'_> {
        match self {
            Content::Small(b) => Side::Bytes(b),
            Content::Large(_) => Side::TooLarge,
        }
    }
}

struct Scan<'a> {
    lower: &'a Path,
    upper: &'a Path,
    limits: &'a Limits,
    /// Bytes of diffs kept so far.
    diff_spent: usize,
    changes: Vec<FileChange>,
    unlisted: u64,
    /// An overlay's upper layer (a character device 0/0 is a whiteout), or
    /// a plain tree (it is a device like any other).
    overlay: bool,
}

fn join(rel: &str, name: &str) -> String {
    if rel.is_empty() {
        name.to_string()
    } else {
        format!("{rel}/{name}")
    }
}

fn change(path: &str, kind: ChangeKind, file_type: FileType) -> FileChange {
    FileChange {
        path: path.to_string(),
        kind,
        file_type,
        size: None,
        mode: None,
        old_size: None,
        old_mode: None,
        link_target: None,
        diff: None,
        diff_truncated: false,
        held_back: None,
    }
}

/// Whether a `FileChange` can describe an entry of this kind.
fn described(kind: EntryKind) -> bool {
    matches!(kind, EntryKind::File | EntryKind::Dir | EntryKind::Symlink)
}

impl Scan<'_> {
    fn err(&self, layer: Layer, rel: &str) -> impl FnOnce(io::Error) -> WorkspaceError {
        let root = match layer {
            Layer::Lower => self.lower,
            Layer::Upper => self.upper,
        };
        let path = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(rel)
        };
        move |e| WorkspaceError::read(path, e)
    }

    fn opaque(&self, dir: &DirFd, rel: &str) -> Result<bool, WorkspaceError> {
        let value = dir.xattr(OPAQUE).map_err(self.err(Layer::Upper, rel))?;
        Ok(value.as_deref() == Some(b"y"))
    }

    /// Refuses an upper-layer entry whose content lives elsewhere.
    fn supported(&self, fd: &impl std::os::fd::AsRawFd, rel: &str) -> Result<(), WorkspaceError> {
        for (xattr, feature) in [(REDIRECT, "redirect_dir"), (METACOPY, "metacopy")] {
            if fd_xattr(fd, xattr)
                .map_err(self.err(Layer::Upper, rel))?
                .is_some()
            {
                return Err(WorkspaceError::UnsupportedOverlay {
                    path: rel.to_string(),
                    feature,
                });
            }
        }
        Ok(())
    }

    /// Compares one directory of each layer (either may be missing).
    fn dir(
        &mut self,
        lower: Option<&DirFd>,
        upper: Option<&DirFd>,
        merged: bool,
        rel: &str,
    ) -> Result<(), WorkspaceError> {
        if !rel.is_empty() && rel.split('/').count() > MAX_DEPTH {
            return Err(WorkspaceError::TooDeep {
                path: rel.to_string(),
                limit: MAX_DEPTH,
            });
        }
        let mut names = BTreeSet::new();
        if let Some(l) = lower {
            names.extend(l.entries().map_err(self.err(Layer::Lower, rel))?);
        }
        if let Some(u) = upper {
            names.extend(u.entries().map_err(self.err(Layer::Upper, rel))?);
        }
        for name in names {
            let Some(name_str) = name.to_str() else {
                return Err(WorkspaceError::NotUtf8 {
                    path: join(rel, &name.to_string_lossy()),
                });
            };
            let path = join(rel, name_str);
            let old = match lower {
                Some(l) => l
                    .stat_opt(&name)
                    .map_err(self.err(Layer::Lower, &path))?
                    .filter(|e| described(e.kind))
                    .map(|e| (l, e)),
                None => None,
            };
            let new = match upper {
                Some(u) => u
                    .stat_opt(&name)
                    .map_err(self.err(Layer::Upper, &path))?
                    .map(|e| (u, e)),
                None => None,
            };
            match (old, new) {
                (None, None) => {}
                // Shown through from the lower layer: unchanged.
                (Some(_), None) if merged => {}
                (Some((l, o)), None) => self.deleted(l, &name, &path, o)?,
                // A whiteout, or a fifo/socket/device: the old entry is gone;
                // a fifo, socket or device node is listed in its place, held
                // back (a commit never makes one).
                (old, Some((_, n))) if !described(n.kind) => {
                    if let Some((l, o)) = old {
                        self.deleted(l, &name, &path, o)?;
                    }
                    if n.kind == EntryKind::Other
                        || (!self.overlay && n.kind == EntryKind::Whiteout)
                    {
                        let mut c = change(&path, ChangeKind::Added, FileType::Special);
                        c.mode = Some(n.mode);
                        c.held_back = Some(SPECIAL_HELD_BACK.to_string());
                        self.push(c);
                    }
                }
                (None, Some((u, n))) => self.added(u, &name, &path, n)?,
                (Some((l, o)), Some((u, n))) => self.compared(l, u, &name, &path, o, n, merged)?,
            }
        }
        Ok(())
    }

    /// Reports a lower-layer entry (and, for a directory, all it holds) as
    /// deleted.
    fn deleted(
        &mut self,
        dir: &DirFd,
        name: &OsStr,
        path: &str,
        old: Entry,
    ) -> Result<(), WorkspaceError> {
        let file_type = match old.kind {
            EntryKind::Dir => FileType::Dir,
            EntryKind::Symlink => FileType::Symlink,
            _ => FileType::File,
        };
        let mut c = change(path, ChangeKind::Deleted, file_type);
        c.old_mode = Some(old.mode);
        match old.kind {
            EntryKind::Dir => {
                self.push(c);
                let sub = dir.open_dir(name).map_err(self.err(Layer::Lower, path))?;
                return self.dir(Some(&sub), None, false, path);
            }
            EntryKind::File => {
                let (entry, content) = self.read_file(Layer::Lower, dir, name, path)?;
                c.old_size = Some(entry.size);
                c.old_mode = Some(entry.mode);
                self.set_diff(&mut c, content.side(), Side::Absent);
            }
            _ => c.old_size = Some(old.size),
        }
        self.push(c);
        Ok(())
    }

    /// Reports an upper-layer entry (and, for a directory, all it holds) as
    /// added.
    fn added(
        &mut self,
        dir: &DirFd,
        name: &OsStr,
        path: &str,
        new: Entry,
    ) -> Result<(), WorkspaceError> {
        match new.kind {
            EntryKind::Dir => {
                let sub = dir.open_dir(name).map_err(self.err(Layer::Upper, path))?;
                self.supported(&sub, path)?;
                let mut c = change(path, ChangeKind::Added, FileType::Dir);
                c.mode = Some(new.mode);
                self.push(c);
                self.dir(None, Some(&sub), false, path)
            }
            EntryKind::Symlink => {
                let mut c = change(path, ChangeKind::Added, FileType::Symlink);
                c.size = Some(new.size);
                c.mode = Some(new.mode);
                c.link_target = Some(self.link_target(dir, name, path)?);
                self.push(c);
                Ok(())
            }
            _ => {
                let (entry, content) = self.read_file(Layer::Upper, dir, name, path)?;
                let mut c = change(path, ChangeKind::Added, FileType::File);
                c.size = Some(entry.size);
                c.mode = Some(entry.mode);
                self.set_diff(&mut c, Side::Absent, content.side());
                self.push(c);
                Ok(())
            }
        }
    }

    /// Compares an entry present in both layers.
    #[allow(clippy::too_many_arguments)]
    fn compared(
        &mut self,
        lower: &DirFd,
        upper: &DirFd,
        name: &OsStr,
        path: &str,
        old: Entry,
        new: Entry,
        merged: bool,
    ) -> Result<(), WorkspaceError> {
        if old.kind != new.kind {
            // A changed type is reported as the old entry deleted and the
            // new one added, under the same path.
            self.deleted(lower, name, path, old)?;
            return self.added(upper, name, path, new);
        }
        match new.kind {
            EntryKind::Dir => {
                let upper_sub = upper.open_dir(name).map_err(self.err(Layer::Upper, path))?;
                self.supported(&upper_sub, path)?;
                let opaque = self.opaque(&upper_sub, path)?;
                if old.mode != new.mode {
                    let mut c = change(path, ChangeKind::Modified, FileType::Dir);
                    c.mode = Some(new.mode);
                    c.old_mode = Some(old.mode);
                    self.push(c);
                }
                let lower_sub = lower.open_dir(name).map_err(self.err(Layer::Lower, path))?;
                self.dir(Some(&lower_sub), Some(&upper_sub), merged && !opaque, path)
            }
            EntryKind::Symlink => {
                let old_target = lower
                    .read_link(name)
                    .map_err(self.err(Layer::Lower, path))?;
                let new_target = self.link_target(upper, name, path)?;
                if old_target != OsStr::new(&new_target) || old.mode != new.mode {
                    let mut c = change(path, ChangeKind::Modified, FileType::Symlink);
                    c.size = Some(new.size);
                    c.mode = Some(new.mode);
                    c.old_size = Some(old.size);
                    c.old_mode = Some(old.mode);
                    c.link_target = Some(new_target);
                    self.push(c);
                }
                Ok(())
            }
            _ => {
                let (old_entry, mut old_content) =
                    self.read_file(Layer::Lower, lower, name, path)?;
                let (new_entry, mut new_content) =
                    self.read_file(Layer::Upper, upper, name, path)?;
                let same = same_content(&mut old_content, &mut new_content)
                    .map_err(self.err(Layer::Upper, path))?;
                if same && old_entry.mode == new_entry.mode {
                    // A copy-up (e.g. an open for writing) that changed nothing.
                    return Ok(());
                }
                let mut c = change(path, ChangeKind::Modified, FileType::File);
                c.size = Some(new_entry.size);
                c.mode = Some(new_entry.mode);
                c.old_size = Some(old_entry.size);
                c.old_mode = Some(old_entry.mode);
                if !same {
                    self.set_diff(&mut c, old_content.side(), new_content.side());
                }
                self.push(c);
                Ok(())
            }
        }
    }

    /// Lists a change, or counts it past the cap.
    fn push(&mut self, c: FileChange) {
        if self.changes.len() < self.limits.max_changes {
            self.changes.push(c);
        } else {
            self.unlisted += 1;
        }
    }

    fn set_diff(&mut self, c: &mut FileChange, old: Side<'_>, new: Side<'_>) {
        if self.changes.len() >= self.limits.max_changes {
            // Counted, not listed: no diff to make.
            return;
        }
        let left = self.limits.diff_total.saturating_sub(self.diff_spent);
        let d = diff::unified(&c.path, old, new, self.limits.diff_cap.min(left));
        self.diff_spent += d.text.as_ref().map_or(0, String::len);
        c.diff = d.text;
        c.diff_truncated = d.truncated;
    }

    fn link_target(&self, dir: &DirFd, name: &OsStr, path: &str) -> Result<String, WorkspaceError> {
        let target = dir.read_link(name).map_err(self.err(Layer::Upper, path))?;
        target.into_string().map_err(|_| WorkspaceError::NotUtf8 {
            path: path.to_string(),
        })
    }

    /// Opens a regular file (never through a symlink) and reads it whole
    /// when it is small enough to be text.
    fn read_file(
        &self,
        layer: Layer,
        dir: &DirFd,
        name: &OsStr,
        path: &str,
    ) -> Result<(Entry, Content), WorkspaceError> {
        let (mut file, entry) = dir.open_regular(name).map_err(self.err(layer, path))?;
        if let Layer::Upper = layer {
            self.supported(&file, path)?;
        }
        let content = read_content(&mut file, entry.size).map_err(self.err(layer, path))?;
        let content = match content {
            Some(bytes) => Content::Small(bytes),
            None => Content::Large(file),
        };
        Ok((entry, content))
    }
}

/// The whole content of `file` if it holds at most [`TEXT_LIMIT`] bytes;
/// otherwise `None`, with the file rewound.
fn read_content(file: &mut File, size: u64) -> io::Result<Option<Vec<u8>>> {
    if size > TEXT_LIMIT as u64 {
        return Ok(None);
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(TEXT_LIMIT as u64 + 1).read_to_end(&mut bytes)?;
    if bytes.len() > TEXT_LIMIT {
        // It grew since the stat.
        file.rewind()?;
        return Ok(None);
    }
    Ok(Some(bytes))
}

fn same_content(a: &mut Content, b: &mut Content) -> io::Result<bool> {
    match (a, b) {
        (Content::Small(a), Content::Small(b)) => Ok(a == b),
        (Content::Large(a), Content::Large(b)) => same_stream(a, b),
        _ => Ok(false),
    }
}

fn same_stream(a: &mut File, b: &mut File) -> io::Result<bool> {
    let mut buf_a = vec![0u8; 64 * 1024];
    let mut buf_b = vec![0u8; 64 * 1024];
    loop {
        let n = fill(a, &mut buf_a)?;
        let m = fill(b, &mut buf_b)?;
        if n != m || buf_a[..n] != buf_b[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or the file ends; the bytes read.
fn fill(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
#[path = "scan_tests.rs"]
mod tests;
