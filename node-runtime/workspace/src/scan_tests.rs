//! Tests of the scan, on hand-built layers.

use std::fs;

use rauha_spec::result::{ChangeKind, FileType};

use super::*;
use crate::fixture::{
    mkdir, only, set_opaque, set_trusted_xattr, summary, symlink, whiteout, write, Scratch,
};

const CAP: usize = 64 * 1024;

#[test]
fn added_and_modified_files_are_reported() {
    let s = Scratch::new("scan-basic");
    let (l, u) = (s.lower(), s.upper());
    write(&l.join("a.txt"), b"one\n", 0o644);
    write(&l.join("keep.txt"), b"keep\n", 0o644);
    write(&u.join("a.txt"), b"two\n", 0o644);
    write(&u.join("n.txt"), b"new\n", 0o600);

    let changes = scan(&l, &u, CAP).unwrap();
    assert_eq!(
        summary(&changes),
        ["Modified File a.txt", "Added File n.txt"]
    );
    let a = only(&changes, "a.txt");
    assert_eq!(
        (a.size, a.mode, a.old_size, a.old_mode),
        (Some(4), Some(0o644), Some(4), Some(0o644))
    );
    assert_eq!(
        a.diff.as_deref(),
        Some("--- a/a.txt\n+++ b/a.txt\n@@ -1 +1 @@\n-one\n+two\n")
    );
    let n = only(&changes, "n.txt");
    assert_eq!(
        (n.size, n.mode, n.old_size, n.old_mode),
        (Some(4), Some(0o600), None, None)
    );
    assert_eq!(
        n.diff.as_deref(),
        Some("--- /dev/null\n+++ b/n.txt\n@@ -0,0 +1 @@\n+new\n")
    );
    assert!(!n.diff_truncated);
}

#[test]
fn identical_copy_up_is_not_a_change() {
    let s = Scratch::new("scan-copyup");
    let (l, u) = (s.lower(), s.upper());
    write(&l.join("d/x.txt"), b"same\n", 0o644);
    mkdir(&l.join("d"), 0o755);
    symlink("x.txt", &l.join("d/l"));
    mkdir(&u.join("d"), 0o755);
    write(&u.join("d/x.txt"), b"same\n", 0o644);
    symlink("x.txt", &u.join("d/l"));
    assert_eq!(scan(&l, &u, CAP).unwrap(), []);
}

#[test]
fn mode_only_change_is_modified_without_diff() {
    let s = Scratch::new("scan-mode");
    let (l, u) = (s.lower(), s.upper());
    write(&l.join("run.sh"), b"echo hi\n", 0o644);
    write(&u.join("run.sh"), b"echo hi\n", 0o755);
    mkdir(&l.join("d"), 0o755);
    mkdir(&u.join("d"), 0o700);
    let changes = scan(&l, &u, CAP).unwrap();
    assert_eq!(
        summary(&changes),
        ["Modified Dir d", "Modified File run.sh"]
    );
    let f = only(&changes, "run.sh");
    assert_eq!(
        (f.mode, f.old_mode, f.diff.as_deref()),
        (Some(0o755), Some(0o644), None)
    );
    let d = only(&changes, "d");
    assert_eq!(
        (d.mode, d.old_mode, d.size, d.old_size),
        (Some(0o700), Some(0o755), None, None)
    );
}

#[test]
fn symlinks_added_and_retargeted() {
    let s = Scratch::new("scan-symlink");
    let (l, u) = (s.lower(), s.upper());
    symlink("a", &l.join("link"));
    symlink("b/c", &u.join("link"));
    symlink("../outside", &u.join("new"));
    let changes = scan(&l, &u, CAP).unwrap();
    assert_eq!(
        summary(&changes),
        ["Modified Symlink link", "Added Symlink new"]
    );
    let link = only(&changes, "link");
    assert_eq!(link.link_target.as_deref(), Some("b/c"));
    assert_eq!((link.size, link.old_size), (Some(3), Some(1)));
    assert_eq!(link.diff, None);
    assert_eq!(
        only(&changes, "new").link_target.as_deref(),
        Some("../outside")
    );
}

#[test]
fn whiteout_deletes_a_file() {
    let s = Scratch::new("scan-whiteout");
    let (l, u) = (s.lower(), s.upper());
    write(&l.join("gone.txt"), b"bye\n", 0o640);
    whiteout(&u.join("gone.txt"));
    // A whiteout over nothing deletes nothing.
    whiteout(&u.join("never.txt"));
    let changes = scan(&l, &u, CAP).unwrap();
    assert_eq!(summary(&changes), ["Deleted File gone.txt"]);
    let c = &changes[0];
    assert_eq!(
        (c.size, c.mode, c.old_size, c.old_mode),
        (None, None, Some(4), Some(0o640))
    );
    assert_eq!(
        c.diff.as_deref(),
        Some("--- a/gone.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-bye\n")
    );
}

#[test]
fn whiteout_of_a_directory_deletes_its_tree() {
    let s = Scratch::new("scan-whiteout-dir");
    let (l, u) = (s.lower(), s.upper());
    write(&l.join("d/a"), b"a\n", 0o644);
    write(&l.join("d/e/b"), b"b\n", 0o644);
    symlink("a", &l.join("d/l"));
    write(&l.join("other"), b"o\n", 0o644);
    whiteout(&u.join("d"));
    let changes = scan(&l, &u, CAP).unwrap();
    assert_eq!(
        summary(&changes),
        [
            "Deleted Dir d",
            "Deleted File d/a",
            "Deleted Dir d/e",
            "Deleted File d/e/b",
            "Deleted Symlink d/l",
        ]
    );
}

#[test]
fn opaque_directory_hides_the_lower_tree() {
    let s = Scratch::new("scan-opaque");
    let (l, u) = (s.lower(), s.upper());
    write(&l.join("d/keep"), b"k\n", 0o644);
    write(&l.join("d/gone"), b"g\n", 0o644);
    write(&l.join("d/sub/x"), b"x\n", 0o644);
    fs::set_permissions(
        l.join("d"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    fs::set_permissions(
        l.join("d/sub"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    mkdir(&u.join("d"), 0o755);
    set_opaque(&u.join("d"));
    write(&u.join("d/keep"), b"k\n", 0o644);
    write(&u.join("d/new"), b"n\n", 0o644);
    // Not opaque itself, but below an opaque directory: still hides d/sub/x.
    mkdir(&u.join("d/sub"), 0o755);
    let changes = scan(&l, &u, CAP).unwrap();
    assert_eq!(
        summary(&changes),
        [
            "Deleted File d/gone",
            "Added File d/new",
            "Deleted File d/sub/x"
        ]
    );
}

#[test]
fn nested_new_directory_is_added_with_its_contents() {
    let s = Scratch::new("scan-nested");
    let (l, u) = (s.lower(), s.upper());
    write(&u.join("new/a/b/c.txt"), b"c\n", 0o644);
    mkdir(&u.join("new/a/e"), 0o750);
    let changes = scan(&l, &u, CAP).unwrap();
    assert_eq!(
        summary(&changes),
        [
            "Added Dir new",
            "Added Dir new/a",
            "Added Dir new/a/b",
            "Added File new/a/b/c.txt",
            "Added Dir new/a/e",
        ]
    );
    let e = only(&changes, "new/a/e");
    assert_eq!((e.size, e.mode), (None, Some(0o750)));
}

#[test]
fn type_change_is_a_deletion_and_an_addition() {
    let s = Scratch::new("scan-type");
    let (l, u) = (s.lower(), s.upper());
    write(&l.join("f"), b"file\n", 0o644);
    write(&u.join("f/x"), b"x\n", 0o644);
    write(&l.join("g/y"), b"y\n", 0o644);
    write(&u.join("g"), b"now a file\n", 0o644);
    let changes = scan(&l, &u, CAP).unwrap();
    assert_eq!(
        summary(&changes),
        [
            "Deleted File f",
            "Added Dir f",
            "Added File f/x",
            "Deleted Dir g",
            "Added File g",
            "Deleted File g/y",
        ]
    );
}

#[test]
fn never_follows_a_symlink_of_either_layer() {
    let s = Scratch::new("scan-nofollow");
    let (l, u) = (s.lower(), s.upper());
    let outside = s.root.join("outside");
    write(&outside.join("passwd"), b"secret\n", 0o644);
    // The lower `a` points outside; the task replaced it with a directory
    // holding a file of the same name and content as the one outside.
    symlink(outside.to_str().unwrap(), &l.join("a"));
    write(&u.join("a/passwd"), b"secret\n", 0o644);
    // The upper `s` points outside; its target is never read.
    write(&l.join("s"), b"x\n", 0o644);
    symlink(outside.join("passwd").to_str().unwrap(), &u.join("s"));
    let changes = scan(&l, &u, CAP).unwrap();
    assert_eq!(
        summary(&changes),
        [
            "Deleted Symlink a",
            "Added Dir a",
            "Added File a/passwd",
            "Deleted File s",
            "Added Symlink s",
        ]
    );
    let s_link = changes
        .iter()
        .find(|c| c.path == "s" && c.kind == ChangeKind::Added)
        .unwrap();
    assert_eq!(s_link.diff, None);
}

#[test]
fn binary_and_large_files_have_no_diff() {
    let s = Scratch::new("scan-binary");
    let (l, u) = (s.lower(), s.upper());
    write(&u.join("bin"), b"\x7fELF\0\0\x01", 0o755);
    let big = vec![b'a'; 2 << 20];
    let mut big2 = big.clone();
    big2[(2 << 20) - 1] = b'b';
    write(&l.join("big"), &big, 0o644);
    write(&u.join("big"), &big2, 0o644);
    write(&l.join("big-same"), &big, 0o644);
    write(&u.join("big-same"), &big, 0o644);
    let changes = scan(&l, &u, CAP).unwrap();
    assert_eq!(summary(&changes), ["Modified File big", "Added File bin"]);
    assert!(changes
        .iter()
        .all(|c| c.diff.is_none() && !c.diff_truncated));
    assert_eq!(only(&changes, "big").size, Some(2 << 20));
}

#[test]
fn diff_cap_applies_to_each_file() {
    let s = Scratch::new("scan-cap");
    let (l, u) = (s.lower(), s.upper());
    let long: String = (0..100).map(|i| format!("line {i}\n")).collect();
    write(&u.join("long.txt"), long.as_bytes(), 0o644);
    write(&u.join("short.txt"), b"s\n", 0o644);
    let changes = scan(&l, &u, 60).unwrap();
    let long = only(&changes, "long.txt");
    assert!(long.diff_truncated);
    let text = long.diff.as_deref().unwrap();
    assert_eq!(text.len(), 60);
    assert!(text.starts_with("--- /dev/null\n+++ b/long.txt\n@@ -0,0 +1,100 @@\n+line 0\n"));
    let short = only(&changes, "short.txt");
    assert!(!short.diff_truncated);
    assert_eq!(
        short.diff.as_deref(),
        Some("--- /dev/null\n+++ b/short.txt\n@@ -0,0 +1 @@\n+s\n")
    );
}

#[test]
fn fifos_are_listed_held_back_after_what_they_replace() {
    let s = Scratch::new("scan-fifo");
    let (l, u) = (s.lower(), s.upper());
    write(&l.join("q"), b"q\n", 0o644);
    for name in ["q", "p"] {
        let c = std::ffi::CString::new(u.join(name).to_str().unwrap()).unwrap();
        // SAFETY: `c` is a nul-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    }
    let changes = scan(&l, &u, CAP).unwrap();
    assert_eq!(
        summary(&changes),
        ["Added Special p", "Deleted File q", "Added Special q"]
    );
    for c in changes.iter().filter(|c| c.file_type == FileType::Special) {
        assert_eq!(c.mode, Some(0o644));
        assert!(c
            .held_back
            .as_deref()
            .is_some_and(|r| r.contains("never committed")));
    }
    // Held back, a commit skips it; handed to a commit as if it were not,
    // it is refused.
    let special: Vec<_> = changes
        .into_iter()
        .filter(|c| c.file_type == FileType::Special && c.path == "p")
        .collect();
    let repo = s.root.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    crate::commit(&repo, &u, &special, &s.journal()).unwrap();
    assert!(!repo.join("p").exists());
    let special: Vec<_> = special
        .into_iter()
        .map(|c| FileChange {
            held_back: None,
            ..c
        })
        .collect();
    let err = crate::commit(&repo, &u, &special, &s.journal()).unwrap_err();
    assert!(err.to_string().contains("never committed"), "{err}");
}

#[test]
fn a_name_that_is_not_utf8_fails_the_scan() {
    use std::os::unix::ffi::OsStrExt;
    let s = Scratch::new("scan-utf8");
    let (l, u) = (s.lower(), s.upper());
    write(
        &u.join(std::ffi::OsStr::from_bytes(b"bad\xff")),
        b"x",
        0o644,
    );
    let err = scan(&l, &u, CAP).unwrap_err();
    assert!(matches!(err, WorkspaceError::NotUtf8 { .. }), "{err}");
}

#[test]
fn redirect_and_metacopy_are_refused() {
    let s = Scratch::new("scan-unsupported");
    let (l, u) = (s.lower(), s.upper());
    write(&l.join("f"), b"old\n", 0o644);
    write(&u.join("f"), b"", 0o644);
    set_trusted_xattr(&u.join("f"), "trusted.overlay.metacopy", b"");
    let err = scan(&l, &u, CAP).unwrap_err();
    assert!(
        matches!(
            err,
            WorkspaceError::UnsupportedOverlay {
                feature: "metacopy",
                ..
            }
        ),
        "{err}"
    );

    let s = Scratch::new("scan-unsupported");
    let (l, u) = (s.lower(), s.upper());
    mkdir(&u.join("moved"), 0o755);
    set_trusted_xattr(&u.join("moved"), "trusted.overlay.redirect", b"/orig");
    let err = scan(&l, &u, CAP).unwrap_err();
    assert!(
        matches!(
            err,
            WorkspaceError::UnsupportedOverlay {
                feature: "redirect_dir",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_missing_layer_is_a_read_error() {
    let s = Scratch::new("scan-missing");
    let err = scan(&s.root.join("nope"), &s.upper(), CAP).unwrap_err();
    assert!(matches!(err, WorkspaceError::Read { .. }), "{err}");
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn a_capped_scan_lists_the_first_changes_and_counts_the_rest() {
    let s = Scratch::new("scan-cap");
    let (l, u) = (s.lower(), s.upper());
    for i in 0..10 {
        write(&u.join(format!("f{i}")), b"0123456789\n", 0o644);
    }
    let limits = crate::Limits {
        diff_cap: 1 << 10,
        diff_total: 100,
        max_changes: 4,
    };
    let scanned = crate::scan_capped(&l, &u, &limits).unwrap();
    assert_eq!(scanned.changes.len(), 4);
    assert_eq!(scanned.unlisted, 6);
    // Each diff is ~45 bytes: two fit in the 100-byte budget, the third is
    // cut, the fourth has none left.
    let spent: usize = scanned
        .changes
        .iter()
        .filter_map(|c| c.diff.as_ref().map(String::len))
        .sum();
    assert!(spent <= 100, "{spent}");
    assert!(scanned.changes.iter().any(|c| c.diff_truncated));
}

#[test]
fn two_plain_trees_compare_whole_and_never_through_a_symlink() {
    let s = Scratch::new("compare");
    let (before, after) = (s.lower(), s.upper());
    write(&before.join("kept"), b"same\n", 0o644);
    write(&before.join("edited"), b"one\n", 0o644);
    write(&before.join("gone/a"), b"a\n", 0o644);
    write(&after.join("kept"), b"same\n", 0o644);
    write(&after.join("edited"), b"two\n", 0o644);
    write(&after.join("new/b"), b"b\n", 0o600);
    // A symlink out of the tree is listed as itself, never followed.
    let outside = Scratch::new("compare-outside");
    write(&outside.lower().join("secret"), b"s\n", 0o600);
    symlink(outside.lower().to_str().unwrap(), &after.join("out"));
    let limits = crate::Limits::default();
    let found = crate::compare_capped(&before, &after, &limits).unwrap();
    assert_eq!(
        summary(&found.changes),
        [
            "Modified File edited",
            "Deleted Dir gone",
            "Deleted File gone/a",
            "Added Dir new",
            "Added File new/b",
            "Added Symlink out",
        ]
    );
    let edited = only(&found.changes, "edited");
    assert!(edited.diff.as_deref().is_some_and(|d| d.contains("+two")));
    // Capped like a scan: the rest counted.
    let capped = crate::compare_capped(
        &before,
        &after,
        &crate::Limits {
            max_changes: 2,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!((capped.changes.len(), capped.unlisted), (2, 4));
}
