//! Test fixtures: scratch layers under the temp dir, overlayfs markers, and
//! a digest of a tree (or of the merged view of two layers) to compare
//! before and after a commit.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::hash::{DefaultHasher, Hasher};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rauha_spec::result::FileChange;

/// A scratch directory with `lower/` and `upper/`, removed on drop.
pub struct Scratch {
    pub root: PathBuf,
}

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let root = std::env::temp_dir().join(format!("rauha-ws-{tag}-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(root.join("lower")).unwrap();
        fs::create_dir_all(root.join("upper")).unwrap();
        Scratch { root }
    }

    pub fn lower(&self) -> PathBuf {
        self.root.join("lower")
    }

    pub fn upper(&self) -> PathBuf {
        self.root.join("upper")
    }

    /// Where a commit of these layers keeps its journal.
    pub fn journal(&self) -> PathBuf {
        self.root.join("commit.journal")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// Fails the test, saying why, when not run as root.
pub fn require_root(what: &str) {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root ({what}); run the workspace tests as root"
    );
}

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

/// Writes `content` at `path` with `mode`, creating the parents.
pub fn write(path: &Path, content: &[u8], mode: u32) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, content).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

pub fn mkdir(path: &Path, mode: u32) {
    fs::create_dir_all(path).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

pub fn symlink(target: &str, path: &Path) {
    std::os::unix::fs::symlink(target, path).unwrap();
}

/// An overlayfs whiteout (character device 0/0) at `path`; needs root.
pub fn whiteout(path: &Path) {
    require_root("creating a whiteout with mknod");
    let c = c_path(path);
    // SAFETY: `c` is a nul-terminated path.
    let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR, 0) };
    assert_eq!(
        rc,
        0,
        "mknod {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// Sets a `trusted.overlay.*` xattr; needs root.
pub fn set_trusted_xattr(path: &Path, name: &str, value: &[u8]) {
    require_root("setting trusted.overlay.* xattrs");
    let c = c_path(path);
    let n = CString::new(name).unwrap();
    // SAFETY: both strings are nul-terminated, `value` is readable for its
    // length.
    let rc = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "setxattr {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// Marks the upper directory `path` opaque; needs root.
pub fn set_opaque(path: &Path) {
    set_trusted_xattr(path, "trusted.overlay.opaque", b"y");
}

fn is_opaque(path: &Path) -> bool {
    let c = c_path(path);
    let name = c"trusted.overlay.opaque";
    let mut buf = [0u8; 8];
    // SAFETY: nul-terminated strings, `buf` writable for its length.
    let n = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    n == 1 && buf[0] == b'y'
}

/// Path -> what is there: `dir <mode>`, `file <mode> <size> <content hash>`,
/// `link <target>`, for every entry under a root.
pub type Digest = BTreeMap<String, String>;

fn describe(path: &Path) -> String {
    let meta = fs::symlink_metadata(path).unwrap();
    let mode = meta.mode() & 0o7777;
    let ft = meta.file_type();
    if ft.is_dir() {
        format!("dir {mode:o}")
    } else if ft.is_symlink() {
        format!("link {}", fs::read_link(path).unwrap().display())
    } else if ft.is_file() {
        let mut h = DefaultHasher::new();
        h.write(&fs::read(path).unwrap());
        format!("file {mode:o} {} {:016x}", meta.len(), h.finish())
    } else {
        format!("special {:o}", meta.mode())
    }
}

fn names(dir: Option<&Path>) -> Vec<String> {
    let Some(dir) = dir else { return Vec::new() };
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

fn is_real_dir(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

/// The digest of a plain tree.
pub fn tree_digest(root: &Path) -> Digest {
    let mut out = Digest::new();
    fn walk(dir: &Path, rel: &str, out: &mut Digest) {
        for name in names(Some(dir)) {
            let path = dir.join(&name);
            let rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            out.insert(rel.clone(), describe(&path));
            if is_real_dir(&path) {
                walk(&path, &rel, out);
            }
        }
    }
    walk(root, "", &mut out);
    out
}

/// The digest of what overlayfs shows for `lower` under `upper`, computed
/// straight from the rules with `std::fs` (a second, independent reading of
/// them to check the scan and the commit against).
pub fn merged_digest(lower: &Path, upper: &Path) -> Digest {
    let mut out = Digest::new();
    fn walk(lower: Option<&Path>, upper: Option<&Path>, rel: &str, out: &mut Digest) {
        let mut all = names(lower);
        all.extend(names(upper));
        all.sort();
        all.dedup();
        for name in all {
            let rel = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let l = lower
                .map(|d| d.join(&name))
                .filter(|p| fs::symlink_metadata(p).is_ok());
            let u = upper
                .map(|d| d.join(&name))
                .filter(|p| fs::symlink_metadata(p).is_ok());
            match (l, u) {
                (_, Some(u)) => {
                    let meta = fs::symlink_metadata(&u).unwrap();
                    if meta.file_type().is_char_device() && meta.rdev() == 0 {
                        continue;
                    }
                    out.insert(rel.clone(), describe(&u));
                    if meta.is_dir() {
                        let below = lower
                            .map(|d| d.join(&name))
                            .filter(|p| is_real_dir(p) && !is_opaque(&u));
                        walk(below.as_deref(), Some(&u), &rel, out);
                    }
                }
                (Some(l), None) => {
                    out.insert(rel.clone(), describe(&l));
                    if is_real_dir(&l) {
                        walk(Some(&l), None, &rel, out);
                    }
                }
                (None, None) => {}
            }
        }
    }
    walk(Some(lower), Some(upper), "", &mut out);
    out
}

/// `"<kind> <type> <path>"` for each change, for short assertions.
pub fn summary(changes: &[FileChange]) -> Vec<String> {
    changes
        .iter()
        .map(|c| format!("{:?} {:?} {}", c.kind, c.file_type, c.path))
        .collect()
}

/// Finds the one change of `path` (panics when there is not exactly one).
pub fn only<'a>(changes: &'a [FileChange], path: &str) -> &'a FileChange {
    let found: Vec<_> = changes.iter().filter(|c| c.path == path).collect();
    assert_eq!(found.len(), 1, "changes of {path}: {found:?}");
    found[0]
}
