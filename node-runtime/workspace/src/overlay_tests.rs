//! A round trip through a real overlayfs mount: changes made through the
//! mount are what the scan reports, and the commit makes the repository
//! what the mount showed. Needs root.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::fixture::{
    merged_digest, mkdir, require_root, summary, symlink, tree_digest, write, Scratch,
};
use crate::{commit, scan};

/// A mounted overlay, unmounted on drop (also when the test fails).
struct OverlayMount {
    target: PathBuf,
}

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

impl OverlayMount {
    fn new(lower: &Path, upper: &Path, work: &Path, target: &Path) -> OverlayMount {
        require_root("mounting an overlay");
        let options = CString::new(format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        ))
        .unwrap();
        let c_target = c_path(target);
        // SAFETY: all strings are nul-terminated and outlive the call.
        let rc = unsafe {
            libc::mount(
                c"overlay".as_ptr(),
                c_target.as_ptr(),
                c"overlay".as_ptr(),
                0,
                options.as_ptr().cast(),
            )
        };
        assert_eq!(
            rc,
            0,
            "mount -t overlay on {}: {}",
            target.display(),
            std::io::Error::last_os_error()
        );
        OverlayMount {
            target: target.to_path_buf(),
        }
    }
}

impl Drop for OverlayMount {
    fn drop(&mut self) {
        let c = c_path(&self.target);
        // SAFETY: `c` is a nul-terminated path.
        let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        if rc != 0 {
            eprintln!(
                "umount {}: {}",
                self.target.display(),
                std::io::Error::last_os_error()
            );
        }
    }
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn changes_made_through_a_real_overlay_round_trip() {
    require_root("mounting an overlay");
    let s = Scratch::new("overlay");
    let (l, u) = (s.lower(), s.upper());
    let (work, m) = (s.root.join("work"), s.root.join("merged"));
    mkdir(&work, 0o700);
    mkdir(&m, 0o755);
    write(&l.join("a.txt"), b"one\ntwo\n", 0o644);
    write(&l.join("b.txt"), b"bee\n", 0o644);
    write(&l.join("same.txt"), b"same\n", 0o644);
    write(&l.join("script.sh"), b"echo hi\n", 0o644);
    write(&l.join("d/x"), b"x\n", 0o644);
    write(&l.join("d/y"), b"y\n", 0o644);
    write(&l.join("deep/er/f"), b"f\n", 0o644);
    write(&l.join("olddir/o1"), b"1\n", 0o644);
    write(&l.join("olddir/o2/z"), b"z\n", 0o644);
    symlink("a.txt", &l.join("link"));
    for d in ["d", "deep", "deep/er", "olddir", "olddir/o2"] {
        chmod(&l.join(d), 0o755);
    }
    let before = tree_digest(&l);

    let mount = OverlayMount::new(&l, &u, &work, &m);
    fs::write(m.join("a.txt"), b"one\nTWO\nthree\n").unwrap();
    fs::remove_file(m.join("b.txt")).unwrap();
    // Opened for writing, never written: a copy-up that changes nothing.
    drop(
        fs::OpenOptions::new()
            .write(true)
            .open(m.join("same.txt"))
            .unwrap(),
    );
    chmod(&m.join("script.sh"), 0o755);
    fs::rename(m.join("d/x"), m.join("d/x2")).unwrap();
    chmod(&m.join("d"), 0o700);
    fs::write(m.join("deep/er/f"), b"F\n").unwrap();
    fs::remove_file(m.join("link")).unwrap();
    write(&m.join("link"), b"a file now\n", 0o600);
    symlink("d/y", &m.join("link2"));
    fs::remove_dir_all(m.join("olddir")).unwrap();
    mkdir(&m.join("olddir"), 0o755);
    write(&m.join("olddir/fresh"), b"fresh\n", 0o644);
    mkdir(&m.join("newdir/sub"), 0o755);
    chmod(&m.join("newdir"), 0o755);
    write(&m.join("newdir/sub/f"), b"nf\n", 0o644);
    fs::rename(m.join("newdir"), m.join("newdir2")).unwrap();
    let shown = tree_digest(&m);
    drop(mount);

    // The lower layer was never written, and the fixture's reading of the
    // rules agrees with the kernel's.
    assert_eq!(tree_digest(&l), before);
    assert_eq!(merged_digest(&l, &u), shown);

    let changes = scan(&l, &u, 64 * 1024).unwrap();
    assert_eq!(
        summary(&changes),
        [
            "Modified File a.txt",
            "Deleted File b.txt",
            "Modified Dir d",
            "Deleted File d/x",
            "Added File d/x2",
            "Modified File deep/er/f",
            "Deleted Symlink link",
            "Added File link",
            "Added Symlink link2",
            "Added Dir newdir2",
            "Added Dir newdir2/sub",
            "Added File newdir2/sub/f",
            "Added File olddir/fresh",
            "Deleted File olddir/o1",
            "Deleted Dir olddir/o2",
            "Deleted File olddir/o2/z",
            "Modified File script.sh",
        ]
    );
    let a = changes.iter().find(|c| c.path == "a.txt").unwrap();
    assert_eq!(
        a.diff.as_deref(),
        Some("--- a/a.txt\n+++ b/a.txt\n@@ -1,2 +1,3 @@\n one\n-two\n+TWO\n+three\n")
    );

    commit(&l, &u, &changes, &s.journal()).unwrap();
    assert_eq!(tree_digest(&l), shown);
}
