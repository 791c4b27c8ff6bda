//! Unpacking one layer (a tar stream) into its own directory, in the form
//! overlayfs stacks: a whiteout (`.wh.NAME`) becomes a 0/0 character device
//! `NAME`, an opaque directory (`.wh..wh..opq`) gets `trusted.overlay.opaque`.
//!
//! Nothing in a layer can write outside its directory: names are taken
//! apart component by component (`..` and absolute names refused, a
//! leading `/` or `./` dropped), every parent is checked not to be a
//! symlink before anything is made under it (a layer's `a -> /etc` then
//! `a/passwd` is refused), files are created with `O_NOFOLLOW | O_EXCL`,
//! and a hard link must name a file of the same layer reached the same
//! way. Symlinks are made as written: they are never followed here, and in
//! a zone they resolve inside its root. Device nodes are not made (a zone
//! gets its devices from rauha); FIFOs are.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::manifest::Compression;

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// The few operations that need privilege, behind a trait so the logic is
/// tested without root.
pub trait LayerFs {
    /// Makes `path` a whiteout (hides the name in lower layers).
    fn whiteout(&self, path: &Path) -> io::Result<()>;
    /// Marks `dir` opaque (hides what lower layers have in it).
    fn opaque(&self, dir: &Path) -> io::Result<()>;
    /// Gives `path` (not following a symlink) its owner from the layer.
    fn chown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()>;
}

/// The real thing: overlayfs's own whiteouts and xattr, as root.
pub struct OverlayFs;

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path has a NUL byte"))
}

impl LayerFs for OverlayFs {
    fn whiteout(&self, path: &Path) -> io::Result<()> {
        let c = cpath(path)?;
        // SAFETY: mknod(2) with a NUL-terminated path we own.
        if unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn opaque(&self, dir: &Path) -> io::Result<()> {
        let c = cpath(dir)?;
        // SAFETY: lsetxattr(2) with NUL-terminated strings and a 1-byte value we own.
        let r = unsafe {
            libc::lsetxattr(
                c.as_ptr(),
                c"trusted.overlay.opaque".as_ptr(),
                b"y".as_ptr().cast(),
                1,
                0,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn chown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
    }
}

/// What an unpack made and what it left out.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UnpackStats {
    pub entries: u64,
    pub whiteouts: u64,
    pub devices_skipped: u64,
}

/// Decompresses and unpacks.
pub fn unpack_compressed(
    reader: impl io::BufRead,
    compression: Compression,
    dest: &Path,
    fs_ops: &dyn LayerFs,
) -> Result<UnpackStats, String> {
    match compression {
        Compression::None => unpack(reader, dest, fs_ops),
        Compression::Gzip => unpack(flate2::bufread::MultiGzDecoder::new(reader), dest, fs_ops),
        Compression::Zstd => {
            let decoder = ruzstd::decoding::StreamingDecoder::new(reader)
                .map_err(|e| crate::error::one_line(&format!("not zstd data: {e}")))?;
            unpack(decoder, dest, fs_ops)
        }
    }
}

/// A layer's name for an entry, as components below the layer's root;
/// empty for the root itself.
fn components(raw: &Path) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for c in raw.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(name) => out.push(PathBuf::from(name)),
            Component::ParentDir => {
                return Err(format!("entry {raw:?} goes up (..): refused"));
            }
            Component::Prefix(_) => return Err(format!("entry {raw:?} is not a unix path")),
        }
    }
    Ok(out)
}

/// Makes the directories of `parts` below `dest` (none of them may be a
/// symlink or, once made, anything but a directory); the full path.
fn parent_dirs(dest: &Path, parts: &[PathBuf], raw: &Path) -> Result<PathBuf, String> {
    let mut path = dest.to_path_buf();
    for part in parts {
        path.push(part);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "entry {raw:?} goes through the symlink {:?}: refused",
                    path.strip_prefix(dest).unwrap_or(&path)
                ))
            }
            Ok(_) => {
                return Err(format!(
                    "entry {raw:?} is below {:?}, which is not a directory",
                    path.strip_prefix(dest).unwrap_or(&path)
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::DirBuilder::new()
                .mode(0o755)
                .create(&path)
                .map_err(|e| format!("cannot create {path:?}: {e}"))?,
            Err(e) => return Err(format!("cannot inspect {path:?}: {e}")),
        }
    }
    Ok(path)
}

/// Removes what a later entry of the same layer replaces (not a directory
/// the entry is also a directory for).
fn clear(path: &Path, keep_dir: bool) -> Result<(), String> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() && keep_dir => Ok(()),
        Ok(m) if m.is_dir() => {
            fs::remove_dir_all(path).map_err(|e| format!("cannot replace {path:?}: {e}"))
        }
        Ok(_) => fs::remove_file(path).map_err(|e| format!("cannot replace {path:?}: {e}")),
        Err(_) => Ok(()),
    }
}

/// Unpacks a tar stream into `dest` (which exists); an error is one line
/// (a layer's bytes in it escaped).
pub fn unpack(reader: impl Read, dest: &Path, fs_ops: &dyn LayerFs) -> Result<UnpackStats, String> {
    unpack_entries(reader, dest, fs_ops).map_err(|e| crate::error::one_line(&e))
}

fn unpack_entries(
    reader: impl Read,
    dest: &Path,
    fs_ops: &dyn LayerFs,
) -> Result<UnpackStats, String> {
    let mut archive = tar::Archive::new(reader);
    let mut stats = UnpackStats::default();
    // Directory modes are set last: a 0555 directory must take its files.
    let mut dir_modes: BTreeMap<PathBuf, u32> = BTreeMap::new();
    let entries = archive
        .entries()
        .map_err(|e| format!("not a tar archive: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("a damaged tar entry: {e}"))?;
        let raw = entry
            .path()
            .map_err(|e| format!("an entry's name is not valid: {e}"))?
            .into_owned();
        let parts = components(&raw)?;
        let header = entry.header();
        let kind = header.entry_type();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let uid = header.uid().unwrap_or(0) as u32;
        let gid = header.gid().unwrap_or(0) as u32;
        stats.entries += 1;
        let Some((name, parents)) = parts.split_last() else {
            // The layer's root: its mode is the root's when on top.
            if kind.is_dir() {
                dir_modes.insert(dest.to_path_buf(), mode);
                fs_ops
                    .chown(dest, uid, gid)
                    .map_err(|e| format!("cannot chown the layer's root: {e}"))?;
            }
            continue;
        };
        let name_text = name.to_string_lossy();
        let parent = parent_dirs(dest, parents, &raw)?;
        if name_text == OPAQUE {
            fs_ops
                .opaque(&parent)
                .map_err(|e| format!("cannot mark {parent:?} opaque: {e}"))?;
            stats.whiteouts += 1;
            continue;
        }
        if let Some(hidden) = name_text.strip_prefix(WHITEOUT) {
            if hidden.is_empty() || hidden == "." || hidden == ".." || hidden.contains('/') {
                return Err(format!("entry {raw:?} is not a valid whiteout"));
            }
            let path = parent.join(hidden);
            clear(&path, false)?;
            fs_ops
                .whiteout(&path)
                .map_err(|e| format!("cannot make the whiteout {path:?}: {e}"))?;
            stats.whiteouts += 1;
            continue;
        }
        let path = parent.join(name);
        match kind {
            tar::EntryType::Directory => {
                clear(&path, true)?;
                if !path.is_dir() {
                    fs::DirBuilder::new()
                        .mode(0o755)
                        .create(&path)
                        .map_err(|e| format!("cannot create {path:?}: {e}"))?;
                }
                dir_modes.insert(path.clone(), mode);
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                clear(&path, false)?;
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .map_err(|e| format!("cannot create {path:?}: {e}"))?;
                io::copy(&mut entry, &mut file)
                    .map_err(|e| format!("cannot write {path:?}: {e}"))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| format!("entry {raw:?}: bad link target: {e}"))?
                    .ok_or_else(|| format!("entry {raw:?}: a symlink without a target"))?;
                clear(&path, false)?;
                std::os::unix::fs::symlink(&target, &path)
                    .map_err(|e| format!("cannot link {path:?}: {e}"))?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| format!("entry {raw:?}: bad link target: {e}"))?
                    .ok_or_else(|| format!("entry {raw:?}: a hard link without a target"))?;
                let tparts = components(&target)?;
                let Some((tname, tparents)) = tparts.split_last() else {
                    return Err(format!("entry {raw:?} links to the layer's root"));
                };
                let source = parent_dirs(dest, tparents, &target)?.join(tname);
                match fs::symlink_metadata(&source) {
                    Ok(m) if m.is_file() => {}
                    Ok(_) => {
                        return Err(format!(
                            "entry {raw:?} hard-links to {target:?}, which is not a regular file"
                        ))
                    }
                    Err(_) => {
                        return Err(format!(
                            "entry {raw:?} hard-links to {target:?}, which is not in this layer"
                        ))
                    }
                }
                clear(&path, false)?;
                fs::hard_link(&source, &path).map_err(|e| format!("cannot link {path:?}: {e}"))?;
                continue;
            }
            tar::EntryType::Fifo => {
                clear(&path, false)?;
                let c = cpath(&path).map_err(|e| e.to_string())?;
                // SAFETY: mkfifo(3) with a NUL-terminated path we own.
                if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
                    return Err(format!(
                        "cannot make the FIFO {path:?}: {}",
                        io::Error::last_os_error()
                    ));
                }
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                stats.devices_skipped += 1;
                continue;
            }
            // PAX and GNU headers are read by the tar crate; anything else
            // carries no file.
            _ => continue,
        }
        fs_ops
            .chown(&path, uid, gid)
            .map_err(|e| format!("cannot chown {path:?}: {e}"))?;
        if kind != tar::EntryType::Symlink && kind != tar::EntryType::Directory {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                .map_err(|e| format!("cannot chmod {path:?}: {e}"))?;
        }
    }
    // Deepest first, so a parent's mode never stops a child's chmod.
    for (dir, mode) in dir_modes.iter().rev() {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode & 0o7777))
            .map_err(|e| format!("cannot chmod {dir:?}: {e}"))?;
    }
    Ok(stats)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::cell::RefCell;

    /// Records whiteouts and opaque dirs as plain files, so the tests run
    /// without root.
    #[derive(Default)]
    pub struct Recorded {
        pub whiteouts: RefCell<Vec<PathBuf>>,
        pub opaque: RefCell<Vec<PathBuf>>,
    }

    impl LayerFs for Recorded {
        fn whiteout(&self, path: &Path) -> io::Result<()> {
            fs::write(path, b"")?;
            self.whiteouts.borrow_mut().push(path.to_path_buf());
            Ok(())
        }
        fn opaque(&self, dir: &Path) -> io::Result<()> {
            self.opaque.borrow_mut().push(dir.to_path_buf());
            Ok(())
        }
        fn chown(&self, _: &Path, _: u32, _: u32) -> io::Result<()> {
            Ok(())
        }
    }

    pub enum E<'a> {
        Dir(&'a str, u32),
        File(&'a str, &'a [u8], u32),
        Symlink(&'a str, &'a str),
        Hard(&'a str, &'a str),
        Char(&'a str),
    }

    /// A tar archive of `entries`, names written raw (`..` included).
    pub fn tar_of(entries: &[E]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_gnu();
            let (name, data): (&str, &[u8]) = match e {
                E::Dir(n, mode) => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(*mode);
                    (n, b"")
                }
                E::File(n, d, mode) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(*mode);
                    (n, d)
                }
                E::Symlink(n, t) | E::Hard(n, t) => {
                    h.set_entry_type(if matches!(e, E::Symlink(..)) {
                        tar::EntryType::Symlink
                    } else {
                        tar::EntryType::Link
                    });
                    h.set_mode(0o777);
                    set_raw(&mut h.as_old_mut().linkname, t);
                    (n, b"")
                }
                E::Char(n) => {
                    h.set_entry_type(tar::EntryType::Char);
                    h.set_mode(0o666);
                    (n, b"")
                }
            };
            set_raw(&mut h.as_old_mut().name, name);
            h.set_size(data.len() as u64);
            h.set_cksum();
            b.append(&h, data).expect("append");
        }
        b.into_inner().expect("tar")
    }

    fn set_raw(field: &mut [u8], text: &str) {
        field.fill(0);
        field[..text.len()].copy_from_slice(text.as_bytes());
    }

    fn temp() -> PathBuf {
        let d = std::env::temp_dir().join(format!("rauha-unpack-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(d.join("layer")).expect("dir");
        d
    }

    #[test]
    fn files_links_whiteouts_and_opaque_dirs() {
        let dir = temp();
        let dest = dir.join("layer");
        let fs_ops = Recorded::default();
        let stats = unpack(
            &tar_of(&[
                E::Dir("./", 0o755),
                E::Dir("etc/", 0o755),
                E::File("etc/os-release", b"ID=test\n", 0o644),
                E::File("bin/tool", b"#!/bin/sh\n", 0o4755),
                E::Symlink("bin/sh", "/bin/busybox"),
                E::Hard("bin/tool2", "bin/tool"),
                E::File("etc/.wh.motd", b"", 0o644),
                E::File("var/cache/.wh..wh..opq", b"", 0o644),
                E::Char("dev/sda"),
                E::Dir("ro/", 0o555),
                E::File("ro/inside", b"x", 0o444),
            ])[..],
            &dest,
            &fs_ops,
        )
        .expect("unpacks");
        assert_eq!(
            fs::read(dest.join("etc/os-release")).expect("file"),
            b"ID=test\n"
        );
        assert_eq!(
            fs::metadata(dest.join("bin/tool"))
                .expect("tool")
                .permissions()
                .mode()
                & 0o7777,
            0o4755
        );
        assert_eq!(
            fs::read_link(dest.join("bin/sh")).expect("link"),
            Path::new("/bin/busybox")
        );
        assert_eq!(
            fs::read(dest.join("bin/tool2")).expect("hard link"),
            b"#!/bin/sh\n"
        );
        assert_eq!(*fs_ops.whiteouts.borrow(), [dest.join("etc/motd")]);
        assert_eq!(*fs_ops.opaque.borrow(), [dest.join("var/cache")]);
        assert!(!dest.join("dev/sda").exists());
        assert_eq!(stats.devices_skipped, 1);
        assert_eq!(stats.whiteouts, 2);
        assert_eq!(
            fs::metadata(dest.join("ro"))
                .expect("ro")
                .permissions()
                .mode()
                & 0o777,
            0o555
        );
        let _ = fs::set_permissions(dest.join("ro"), fs::Permissions::from_mode(0o755));
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn nothing_is_written_outside_the_layer() {
        let attempts: Vec<(&str, Vec<u8>)> = vec![
            ("dot-dot", tar_of(&[E::File("../escaped", b"x", 0o644)])),
            (
                "deep dot-dot",
                tar_of(&[E::File("a/../../escaped", b"x", 0o644)]),
            ),
            (
                "through an absolute symlink",
                tar_of(&[E::Symlink("a", "/tmp"), E::File("a/escaped", b"x", 0o644)]),
            ),
            (
                "through a relative symlink",
                tar_of(&[E::Symlink("a", ".."), E::File("a/escaped", b"x", 0o644)]),
            ),
            (
                "a hard link to a host file",
                tar_of(&[E::Hard("passwd", "../../../../etc/passwd")]),
            ),
            (
                "a hard link through a symlink",
                tar_of(&[E::Symlink("a", "/etc"), E::Hard("passwd", "a/passwd")]),
            ),
            (
                "a whiteout through a symlink",
                tar_of(&[
                    E::Symlink("a", ".."),
                    E::File("a/.wh.escaped-target", b"", 0o644),
                ]),
            ),
        ];
        for (what, archive) in attempts {
            let dir = temp();
            fs::write(dir.join("escaped-target"), b"keep").expect("victim");
            let e = unpack(&archive[..], &dir.join("layer"), &Recorded::default()).expect_err(what);
            assert!(
                e.contains("refused") || e.contains("not in this layer"),
                "{what}: {e}"
            );
            assert!(!dir.join("escaped").exists(), "{what}");
            assert!(!Path::new("/tmp/escaped").exists(), "{what}");
            assert_eq!(
                fs::read(dir.join("escaped-target")).expect("victim"),
                b"keep",
                "{what}"
            );
            let _ = fs::remove_dir_all(dir);
        }
    }

    #[test]
    fn an_absolute_name_lands_inside_the_layer() {
        let dir = temp();
        unpack(
            &tar_of(&[E::File("/etc/x", b"in", 0o644)])[..],
            &dir.join("layer"),
            &Recorded::default(),
        )
        .expect("unpacks");
        assert_eq!(fs::read(dir.join("layer/etc/x")).expect("inside"), b"in");
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn a_later_entry_replaces_an_earlier_one() {
        let dir = temp();
        let dest = dir.join("layer");
        unpack(
            &tar_of(&[
                E::File("a", b"one", 0o644),
                E::Symlink("a", "/etc/passwd"),
                E::File("a", b"two", 0o600),
            ])[..],
            &dest,
            &Recorded::default(),
        )
        .expect("unpacks");
        assert_eq!(fs::read(dest.join("a")).expect("a"), b"two");
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn compressed_layers_unpack() {
        use std::io::Write;
        let archive = tar_of(&[E::File("hello", b"world", 0o644)]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&archive).expect("gzip");
        let gz = gz.finish().expect("gzip");
        let dir = temp();
        unpack_compressed(
            &gz[..],
            Compression::Gzip,
            &dir.join("layer"),
            &Recorded::default(),
        )
        .expect("gzip unpacks");
        assert_eq!(fs::read(dir.join("layer/hello")).expect("file"), b"world");
        let zst = ruzstd::encoding::compress_to_vec(
            &archive[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        let zdir = temp();
        unpack_compressed(
            &zst[..],
            Compression::Zstd,
            &zdir.join("layer"),
            &Recorded::default(),
        )
        .expect("zstd unpacks");
        assert_eq!(fs::read(zdir.join("layer/hello")).expect("file"), b"world");
        let _ = fs::remove_dir_all(zdir);
        let e = unpack_compressed(
            &b"not gzip"[..],
            Compression::Gzip,
            &dir.join("layer"),
            &Recorded::default(),
        )
        .expect_err("garbage");
        assert!(!e.contains('\n'), "{e}");
        let _ = fs::remove_dir_all(dir);
    }
}
