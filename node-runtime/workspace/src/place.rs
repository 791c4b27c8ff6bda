//! Files put into a directory that a task controls (or will), and read
//! from one that someone else may have filled: never through a symlink
//! out of it. The shim places a task pod's inputs in its workspace with
//! these.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::path::Path;

use super::dirfd::DirFd;
use super::scan::MAX_DEPTH;

/// The components of a relative path with no empty, `.` or `..` one; an
/// error otherwise. `""` is no component at all.
pub fn relative_components(rel: &str) -> io::Result<Vec<&str>> {
    if rel.is_empty() {
        return Ok(Vec::new());
    }
    let parts: Vec<&str> = rel.split('/').collect();
    if parts.len() > MAX_DEPTH
        || parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == ".." || p.contains('\0'))
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{rel:?} is not a relative path of plain names"),
        ));
    }
    Ok(parts)
}

/// Writes `content` as the new file `rel` below `root` with `mode`, making
/// its missing directories (0755). Every component is opened without
/// following a symlink, and the file must not exist yet.
pub fn place_file(root: &Path, rel: &str, content: &[u8], mode: u32) -> io::Result<()> {
    let parts = relative_components(rel)?;
    let Some((name, dirs)) = parts.split_last() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no file name"));
    };
    let mut dir = DirFd::open(root)?;
    for d in dirs {
        let d = OsStr::new(d);
        match dir.mkdir(d, 0o755) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        dir = dir.open_dir(d)?;
    }
    let mut file = dir.create_file(OsStr::new(name), mode)?;
    file.write_all(content)?;
    // The mode as asked, whatever the umask took.
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
}

/// The regular files directly in `dir` (names starting with `..` left
/// out: kubelet's own entries in a ConfigMap volume), each read whole, at
/// most `limit` bytes in all. A symlink is followed only while it stays
/// beneath `dir` (a ConfigMap's keys are symlinks into its `..data`);
/// anything else is left out.
pub fn read_files_beneath(dir: &Path, limit: u64) -> io::Result<Vec<(OsString, Vec<u8>)>> {
    let root = DirFd::open(dir)?;
    let mut files = Vec::new();
    let mut total = 0u64;
    for name in root.entries()? {
        if name.as_encoded_bytes().starts_with(b"..") {
            continue;
        }
        let mut file = match root.open_beneath(&name) {
            Ok(f) => f,
            // A directory, a fifo, a link out: not an input file.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EXDEV | libc::ELOOP | libc::ENOENT)
                ) || e.kind() == io::ErrorKind::InvalidInput =>
            {
                continue
            }
            Err(e) => return Err(e),
        };
        let mut content = Vec::new();
        (&mut file)
            .take(limit.saturating_sub(total) + 1)
            .read_to_end(&mut content)?;
        total += content.len() as u64;
        if total > limit {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!("{} holds more than {limit} bytes", dir.display()),
            ));
        }
        files.push((name, content));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::{symlink, write, Scratch};

    #[test]
    fn placing_never_goes_through_a_symlink() {
        let s = Scratch::new("place");
        let root = s.lower();
        place_file(&root, "a/b/c.txt", b"hi\n", 0o644).unwrap();
        assert_eq!(std::fs::read(root.join("a/b/c.txt")).unwrap(), b"hi\n");
        // A directory planted as a symlink out of the root: refused.
        let outside = Scratch::new("place-outside");
        symlink(outside.lower().to_str().unwrap(), &root.join("link"));
        assert!(place_file(&root, "link/x", b"x", 0o644).is_err());
        assert!(!outside.lower().join("x").exists());
        // A file that is there already (or a symlink in its place): refused.
        symlink("/etc/passwd", &root.join("a/b/evil"));
        assert!(place_file(&root, "a/b/evil", b"x", 0o644).is_err());
        assert!(place_file(&root, "a/b/c.txt", b"again", 0o644).is_err());
        for bad in ["", "../x", "a/../x", "/x", "a//x", "./x"] {
            assert!(place_file(&root, bad, b"x", 0o644).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_configmaps_layout_is_read_and_links_out_are_not() {
        let s = Scratch::new("beneath");
        let dir = s.lower();
        // kubelet's AtomicWriter: ..2026_x/key, ..data -> ..2026_x, key -> ..data/key.
        write(&dir.join("..2026_x/greeting"), b"hello\n", 0o644);
        symlink("..2026_x", &dir.join("..data"));
        symlink("..data/greeting", &dir.join("greeting"));
        // Planted by someone else: a link out, and a plain file.
        symlink("/etc/hostname", &dir.join("host"));
        write(&dir.join("plain"), b"p", 0o644);
        let files = read_files_beneath(&dir, 1 << 20).unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|(n, _)| n.to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["greeting", "plain"]);
        assert_eq!(files[0].1, b"hello\n");
        assert!(read_files_beneath(&dir, 3).is_err(), "the limit holds");
    }
}
