//! Tests of the commit, on hand-built layers.

use std::fs;
use std::os::unix::fs::MetadataExt;

use rauha_spec::result::{ChangeKind, FileChange, FileType};

use super::*;
use crate::fixture::{
    merged_digest, mkdir, require_root, set_opaque, summary, symlink, tree_digest, whiteout, write,
    Scratch,
};
use crate::scan;

const CAP: usize = 64 * 1024;

fn added_file(path: &str, size: u64) -> FileChange {
    FileChange {
        path: path.to_string(),
        kind: ChangeKind::Added,
        file_type: FileType::File,
        size: Some(size),
        mode: Some(0o644),
        old_size: None,
        old_mode: None,
        link_target: None,
        diff: None,
        diff_truncated: false,
        held_back: None,
    }
}

/// Commits `changes` expecting an error; checks that the repository did
/// not move.
fn refused(s: &Scratch, changes: &[FileChange]) -> WorkspaceError {
    let before = tree_digest(&s.lower());
    let err = commit(&s.lower(), &s.upper(), changes, &s.journal()).unwrap_err();
    assert_eq!(
        tree_digest(&s.lower()),
        before,
        "the repository changed after: {err}"
    );
    err
}

#[test]
fn commit_applies_exactly_the_scanned_changes() {
    let s = Scratch::new("commit-all");
    let (l, u) = (s.lower(), s.upper());
    // The repository.
    write(&l.join("README"), b"hello\n", 0o644);
    write(&l.join("src/main.rs"), b"fn main() {}\n", 0o644);
    write(&l.join("src/old.rs"), b"old\n", 0o644);
    write(&l.join("run.sh"), b"echo\n", 0o644);
    write(&l.join("gone/a"), b"a\n", 0o644);
    write(&l.join("gone/deep/b"), b"b\n", 0o600);
    write(&l.join("opaque/keep"), b"k\n", 0o644);
    write(&l.join("opaque/drop"), b"d\n", 0o644);
    write(&l.join("was-file"), b"f\n", 0o644);
    write(&l.join("was-dir/x"), b"x\n", 0o644);
    symlink("README", &l.join("link"));
    let outside = s.root.join("outside");
    mkdir(&outside, 0o755);
    symlink(outside.to_str().unwrap(), &l.join("escape"));
    mkdir(&l.join("modes"), 0o755);
    for d in ["src", "gone", "gone/deep", "opaque", "was-dir"] {
        fs::set_permissions(
            l.join(d),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
    }
    // What the task did, as overlayfs records it.
    write(&u.join("README"), b"hello\nworld\n", 0o644);
    mkdir(&u.join("src"), 0o755);
    whiteout(&u.join("src/old.rs"));
    write(&u.join("src/new/mod.rs"), b"pub mod x;\n", 0o644);
    write(&u.join("run.sh"), b"echo\n", 0o755);
    whiteout(&u.join("gone"));
    mkdir(&u.join("opaque"), 0o755);
    set_opaque(&u.join("opaque"));
    write(&u.join("opaque/keep"), b"k\n", 0o644);
    write(&u.join("opaque/fresh"), b"new\n", 0o644);
    write(&u.join("was-file/inner"), b"i\n", 0o644);
    write(&u.join("was-dir"), b"now a file\n", 0o640);
    symlink("src/main.rs", &u.join("link"));
    write(&u.join("escape/inside"), b"stays in the repo\n", 0o644);
    mkdir(&u.join("modes"), 0o700);
    write(&u.join("bin.dat"), &[0, 1, 2, 255], 0o644);

    let merged = merged_digest(&l, &u);
    let changes = scan(&l, &u, CAP).unwrap();
    assert_eq!(
        summary(&changes),
        [
            "Modified File README",
            "Added File bin.dat",
            "Deleted Symlink escape",
            "Added Dir escape",
            "Added File escape/inside",
            "Deleted Dir gone",
            "Deleted File gone/a",
            "Deleted Dir gone/deep",
            "Deleted File gone/deep/b",
            "Modified Symlink link",
            "Modified Dir modes",
            "Deleted File opaque/drop",
            "Added File opaque/fresh",
            "Modified File run.sh",
            "Added Dir src/new",
            "Added File src/new/mod.rs",
            "Deleted File src/old.rs",
            "Deleted Dir was-dir",
            "Added File was-dir",
            "Deleted File was-dir/x",
            "Deleted File was-file",
            "Added Dir was-file",
            "Added File was-file/inner",
        ]
    );
    commit(&l, &u, &changes, &s.journal()).unwrap();
    assert_eq!(tree_digest(&l), merged);
    assert!(
        fs::read_dir(&outside).unwrap().next().is_none(),
        "wrote outside the repository"
    );
    // The repository now is what the task saw: nothing is left to commit.
    assert_eq!(scan(&l, &u, CAP).unwrap(), []);
}

#[test]
fn commit_refuses_malformed_paths() {
    let s = Scratch::new("commit-paths");
    write(&s.lower().join("a/b"), b"b\n", 0o644);
    write(&s.upper().join("x"), b"x\n", 0o644);
    for path in [
        "../x", "a/../x", "a/./x", "./x", "/x", "", "a//x", "a/", "x\0y",
    ] {
        let err = refused(&s, &[added_file(path, 2)]);
        match &err {
            WorkspaceError::UnsafePath { path: p, .. } => assert_eq!(p, path),
            other => panic!("{path:?}: {other}"),
        }
    }
    // A bad path anywhere in the list stops the whole commit.
    let err = refused(&s, &[added_file("x", 2), added_file("a/../../x", 2)]);
    assert!(matches!(err, WorkspaceError::UnsafePath { .. }), "{err}");
}

#[test]
fn commit_refuses_to_write_below_a_symlink() {
    let s = Scratch::new("commit-symlink");
    let (l, u) = (s.lower(), s.upper());
    // A directory outside the repository (removed on drop, even on failure).
    let outside_dir = Scratch::new("outside");
    let outside = outside_dir.lower();
    symlink(outside.to_str().unwrap(), &l.join("link"));
    write(&l.join("real/f"), b"f\n", 0o644);
    symlink("real", &l.join("real-link"));
    write(&u.join("link/evil"), b"evil\n", 0o644);
    write(&u.join("real-link/g"), b"g\n", 0o644);

    let err = refused(&s, &[added_file("link/evil", 5)]);
    assert!(err.to_string().contains("\"link/evil\""), "{err}");
    assert!(err.to_string().contains("link is a symlink"), "{err}");
    // Also when the symlink points inside the repository.
    let err = refused(&s, &[added_file("real-link/g", 2)]);
    assert!(matches!(err, WorkspaceError::UnsafePath { .. }), "{err}");
    // And when the same list also modifies something legitimate first.
    write(&u.join("real/f2"), b"2\n", 0o644);
    refused(&s, &[added_file("real/f2", 2), added_file("link/evil", 5)]);
    assert!(
        fs::read_dir(&outside).unwrap().next().is_none(),
        "wrote outside the repository"
    );
}

#[test]
fn a_failed_step_rolls_everything_back() {
    let s = Scratch::new("commit-rollback");
    let (l, u) = (s.lower(), s.upper());
    write(&l.join("a.txt"), b"one\n", 0o644);
    write(&l.join("b.txt"), b"bee\n", 0o644);
    mkdir(&l.join("d"), 0o755);
    symlink("a.txt", &l.join("link"));
    write(&u.join("a.txt"), b"two, longer\n", 0o644);
    write(&u.join("c/f"), b"f\n", 0o644);
    mkdir(&u.join("d"), 0o700);
    symlink("b.txt", &u.join("link"));
    let mut changes = scan(&l, &u, CAP).unwrap();
    assert_eq!(
        summary(&changes),
        [
            "Modified File a.txt",
            "Added Dir c",
            "Added File c/f",
            "Modified Dir d",
            "Modified Symlink link",
        ]
    );
    // A deletion (done first) and an addition whose content is missing
    // from the upper layer (done last, so it fails after all the others).
    changes.push(FileChange {
        kind: ChangeKind::Deleted,
        size: None,
        mode: None,
        old_size: Some(4),
        old_mode: Some(0o644),
        ..added_file("b.txt", 0)
    });
    changes.push(added_file("zzz.txt", 3));

    let before = tree_digest(&l);
    let err = commit(&l, &u, &changes, &s.journal()).unwrap_err();
    match &err {
        WorkspaceError::Apply { path, step, .. } => {
            assert_eq!(
                (path.as_str(), *step),
                ("zzz.txt", "open the new content in the upper layer")
            );
        }
        other => panic!("unexpected error: {other}"),
    }
    // Byte for byte, mode for mode, with no staging or temporary file left.
    assert_eq!(tree_digest(&l), before);
}

#[test]
fn commit_refuses_changes_that_do_not_fit_the_repository() {
    let s = Scratch::new("commit-conflict");
    let (l, u) = (s.lower(), s.upper());
    write(&l.join("exists"), b"e\n", 0o644);
    write(&l.join("d/child"), b"c\n", 0o644);
    write(&u.join("exists"), b"new\n", 0o644);
    write(&u.join("suid"), b"#!/bin/sh\n", 0o755);

    let err = refused(&s, &[added_file("exists", 4)]);
    assert!(err.to_string().contains("already exists"), "{err}");

    let modified_missing = FileChange {
        kind: ChangeKind::Modified,
        old_size: Some(1),
        old_mode: Some(0o644),
        ..added_file("missing", 4)
    };
    let err = refused(&s, &[modified_missing]);
    assert!(
        err.to_string().contains("missing in the repository"),
        "{err}"
    );

    let stale = FileChange {
        kind: ChangeKind::Modified,
        old_size: Some(2),
        old_mode: Some(0o600),
        ..added_file("exists", 4)
    };
    let err = refused(&s, &[stale]);
    assert!(err.to_string().contains("changed since the scan"), "{err}");

    let setuid = FileChange {
        mode: Some(0o4755),
        ..added_file("suid", 10)
    };
    let err = refused(&s, &[setuid]);
    assert!(matches!(err, WorkspaceError::UnsafePath { .. }), "{err}");

    // Deleting a directory whose child the list does not delete.
    let delete_dir = FileChange {
        kind: ChangeKind::Deleted,
        file_type: FileType::Dir,
        size: None,
        mode: None,
        old_mode: None,
        ..added_file("d", 0)
    };
    let err = refused(&s, &[delete_dir]);
    assert!(err.to_string().contains("d/child"), "{err}");

    // Twice the same path.
    let err = refused(&s, &[added_file("new", 4), added_file("new", 4)]);
    assert!(matches!(err, WorkspaceError::Conflict { .. }), "{err}");
}

#[test]
fn commit_checks_the_upper_layer_still_matches_the_scan() {
    let s = Scratch::new("commit-upper");
    let (l, u) = (s.lower(), s.upper());
    write(&l.join("a"), b"a\n", 0o644);
    symlink("target-now", &u.join("l"));
    write(&u.join("f"), b"four", 0o644);
    write(&u.join("a2"), b"x", 0o644);
    let link = FileChange {
        file_type: FileType::Symlink,
        link_target: Some("target-scanned".into()),
        ..added_file("l", 14)
    };
    let err = refused(&s, &[link]);
    assert!(err.to_string().contains("upper layer changed"), "{err}");
    let err = refused(&s, &[added_file("a2", 1), added_file("f", 3)]);
    assert!(err.to_string().contains("upper layer changed"), "{err}");
}

#[test]
fn commit_of_nothing_writes_nothing() {
    let s = Scratch::new("commit-empty");
    write(&s.lower().join("a"), b"a\n", 0o644);
    let before = tree_digest(&s.lower());
    commit(&s.lower(), &s.upper(), &[], &s.journal()).unwrap();
    assert_eq!(tree_digest(&s.lower()), before);
}

#[test]
fn new_entries_take_the_owner_they_replace_or_their_directory() {
    require_root("changing file owners");
    let s = Scratch::new("commit-owner");
    let (l, u) = (s.lower(), s.upper());
    mkdir(&l.join("d"), 0o755);
    write(&l.join("d/mine"), b"m\n", 0o644);
    std::os::unix::fs::lchown(l.join("d"), Some(1234), Some(2345)).unwrap();
    std::os::unix::fs::lchown(l.join("d/mine"), Some(4321), Some(5432)).unwrap();
    mkdir(&u.join("d"), 0o755);
    std::os::unix::fs::lchown(u.join("d"), Some(1234), Some(2345)).unwrap();
    write(&u.join("d/mine"), b"changed\n", 0o644);
    write(&u.join("d/new"), b"n\n", 0o644);
    symlink("new", &u.join("d/link"));
    write(&u.join("d/sub/f"), b"f\n", 0o644);
    let changes = scan(&l, &u, CAP).unwrap();
    commit(&l, &u, &changes, &s.journal()).unwrap();
    let owner = |p: &str| {
        let m = fs::symlink_metadata(l.join(p)).unwrap();
        (m.uid(), m.gid())
    };
    assert_eq!(owner("d/mine"), (4321, 5432));
    for p in ["d/new", "d/link", "d/sub", "d/sub/f"] {
        assert_eq!(owner(p), (1234, 2345), "{p}");
    }
}

#[test]
fn a_failed_undo_keeps_going_and_keeps_the_staging_directory() {
    let s = Scratch::new("commit-undo");
    let l = s.lower();
    let staging_name = ".rauha-commit-test";
    write(&l.join(staging_name).join("0"), b"old a\n", 0o644);
    write(&l.join(staging_name).join("1"), b"old b\n", 0o644);
    // Something took b's place: its backup cannot go back.
    write(&l.join("b"), b"someone else's\n", 0o644);
    let repo = DirFd::open(&l).unwrap();
    let upper = DirFd::open(&s.upper()).unwrap();
    let mut tx = Transaction {
        repo: &repo,
        upper: &upper,
        staging: repo.open_dir(std::ffi::OsStr::new(staging_name)).unwrap(),
        staging_name,
        journal: crate::journal::Journal::create(&s.journal()).unwrap(),
        intended: vec![
            Record::Backup {
                path: "a".into(),
                backup: "0".into(),
            },
            // Undone first, and fails.
            Record::Backup {
                path: "b".into(),
                backup: "1".into(),
            },
        ],
        backups: 2,
    };
    let err = tx.rollback().unwrap_err();
    assert!(
        matches!(&err, WorkspaceError::Apply { path, step: "put the old entry back", .. } if path == "b"),
        "{err}"
    );
    // The undo after the failed one still ran, and the staging directory
    // stays for whatever could not be put back.
    assert_eq!(fs::read(l.join("a")).unwrap(), b"old a\n");
    assert_eq!(fs::read(l.join("b")).unwrap(), b"someone else's\n");
    assert!(l.join(staging_name).join("1").is_file());
}

/// The repository of [`a_commit_killed_at_any_point_is_undone_or_finished`]
/// and what its task did: every kind of step (backups, temporary files and
/// symlinks put in place, new and chmodded directories, deletions).
fn kill_layers(s: &Scratch) -> Vec<FileChange> {
    let (l, u) = (s.lower(), s.upper());
    write(&l.join("README"), b"hello\n", 0o644);
    write(&l.join("src/old.rs"), b"old\n", 0o644);
    write(&l.join("gone/a"), b"a\n", 0o644);
    symlink("README", &l.join("link"));
    mkdir(&l.join("modes"), 0o755);
    write(&u.join("README"), b"hello\nworld\n", 0o644);
    mkdir(&u.join("src"), 0o755);
    whiteout(&u.join("src/old.rs"));
    write(&u.join("src/new/mod.rs"), b"pub mod x;\n", 0o644);
    whiteout(&u.join("gone"));
    symlink("src", &u.join("link"));
    mkdir(&u.join("modes"), 0o700);
    symlink("README", &u.join("new-link"));
    let changes = scan(&l, &u, CAP).unwrap();
    assert_eq!(changes.len(), 9, "{:?}", summary(&changes));
    changes
}

/// A killed commit, at each point where the kill can fall: `recover`
/// brings the repository back to exactly before (then the commit, run
/// again, makes exactly after) or, once the commit is whole, exactly
/// after, and nothing of the commit is left in the repository.
#[test]
fn a_commit_killed_at_any_point_is_undone_or_finished() {
    require_root("making whiteouts");
    let (before, after) = {
        let s = Scratch::new("commit-kill-ref");
        let changes = kill_layers(&s);
        let before = tree_digest(&s.lower());
        commit(&s.lower(), &s.upper(), &changes, &s.journal()).unwrap();
        (before, tree_digest(&s.lower()))
    };
    assert_ne!(before, after);
    let (mut finished, mut undone) = (0, 0);
    for at in 0.. {
        let s = Scratch::new("commit-kill");
        let (l, u, j) = (s.lower(), s.upper(), s.journal());
        let changes = kill_layers(&s);
        killer::PASSED.set(0);
        killer::AT.set(Some(at));
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            commit(&l, &u, &changes, &j)
        }));
        killer::AT.set(None);
        match run {
            Ok(done) => {
                // Past the last point: the commit ran whole.
                done.unwrap();
                assert_eq!(tree_digest(&l), after);
                // Before the staging directory is made, then before and
                // after each of the 15 steps' records; once whole, before
                // the clean-up and half way through it.
                assert_eq!((undone, finished), (31, 2), "at {at}");
                break;
            }
            Err(payload) => assert!(payload.is::<killer::Killed>(), "at {at}: a real panic"),
        }
        let recovered = recover(&l, &j).unwrap();
        // Again, as a second restart would: no change, and the same answer
        // (nothing left to undo, once undone).
        let digest = tree_digest(&l);
        let again = match &recovered {
            Recovered::Finished(_) => recovered.clone(),
            _ => Recovered::Nothing,
        };
        assert_eq!(recover(&l, &j).unwrap(), again, "at {at}");
        assert_eq!(tree_digest(&l), digest, "at {at}");
        match recovered {
            Recovered::Finished(listed) => {
                finished += 1;
                assert_eq!(listed, changes, "at {at}");
                assert_eq!(digest, after, "at {at}: finished");
            }
            Recovered::RolledBack | Recovered::Nothing => {
                undone += 1;
                assert_eq!(finished, 0, "at {at}: undone after a whole one");
                assert_eq!(digest, before, "at {at}: undone");
                assert!(
                    !j.exists(),
                    "at {at}: the journal of an undone commit stays"
                );
                commit(&l, &u, &changes, &j).unwrap();
                assert_eq!(tree_digest(&l), after, "at {at}: committed again");
            }
        }
        let left: Vec<_> = fs::read_dir(&l)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".rauha-"))
            .collect();
        assert!(left.is_empty(), "at {at}: {left:?} left");
    }
}

#[test]
fn held_back_changes_are_journaled_but_not_applied() {
    let s = Scratch::new("commit-held");
    let (l, u) = (s.lower(), s.upper());
    write(&u.join("a"), b"a\n", 0o644);
    write(&u.join(".git/hooks/post-commit"), b"#!/bin/sh\n", 0o755);
    let mut changes = scan(&l, &u, CAP).unwrap();
    for c in &mut changes {
        if c.path.starts_with(".git") {
            c.held_back = Some("policy".into());
        }
    }
    commit(&l, &u, &changes, &s.journal()).unwrap();
    assert!(l.join("a").is_file());
    assert!(!l.join(".git").exists());
    // Until the caller removes the journal, a restart finishes nothing
    // more and answers with every change.
    assert_eq!(
        recover(&l, &s.journal()).unwrap(),
        Recovered::Finished(changes)
    );
}
