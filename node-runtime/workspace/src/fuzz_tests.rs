//! The commit's planner under the fuzzer (`rauha-fuzz`), against a small
//! repository: whatever changes a task's diff lists, the plan refuses them
//! with one line naming the path, or orders them (deletions deepest first,
//! then the rest parents first) with every path a plain relative one that
//! goes through no symlink of the repository. Nothing is written.
//!
//! An input is one change per line: a kind (`a`dded, `m`odified,
//! `d`eleted), a type (`f`ile, `d`ir, `l`ink, `s`pecial), a space, the
//! path, and for a link ` -> target`.

use std::path::Path;

use rauha_spec::result::{ChangeKind, FileChange, FileType};

use super::dirfd::DirFd;
use super::place::relative_components;

const WORDS: &[&[u8]] = &[
    b"af ",
    b"mf ",
    b"df ",
    b"ad ",
    b"dd ",
    b"al ",
    b"as ",
    b"src/",
    b"src/main.rs",
    b"docs/a.md",
    b"README",
    b"link/",
    b"link",
    b".git/hooks/pre-commit",
    b"..",
    b"./",
    b"//",
    b" -> ",
    b"../../etc/passwd",
    b"\n",
    b"\x00",
];

fn changes_of(text: &str) -> Vec<FileChange> {
    text.lines()
        .filter_map(|line| {
            let (head, rest) = line.split_once(' ')?;
            let mut h = head.chars();
            let kind = match h.next()? {
                'a' => ChangeKind::Added,
                'm' => ChangeKind::Modified,
                _ => ChangeKind::Deleted,
            };
            let file_type = match h.next().unwrap_or('f') {
                'd' => FileType::Dir,
                'l' => FileType::Symlink,
                's' => FileType::Special,
                _ => FileType::File,
            };
            let (path, target) = match rest.split_once(" -> ") {
                Some((p, t)) => (p, Some(t.to_string())),
                None => (rest, None),
            };
            Some(FileChange {
                path: path.to_string(),
                kind,
                file_type,
                size: Some(3),
                mode: Some(if file_type == FileType::Dir {
                    0o755
                } else {
                    0o644
                }),
                old_size: None,
                old_mode: None,
                link_target: target,
                diff: None,
                diff_truncated: false,
                held_back: None,
            })
        })
        .collect()
}

fn check(repo: &Path, root: &DirFd, data: &[u8]) -> String {
    let changes = changes_of(&String::from_utf8_lossy(data));
    match super::plan::checked(root, repo, &changes) {
        Ok(steps) => {
            let mut seen_other = false;
            let mut last_deleted: Option<Vec<&str>> = None;
            for step in &steps {
                let path = step.path();
                let parts = relative_components(path)
                    .unwrap_or_else(|e| panic!("a planned path is not plain: {e}"));
                // `link` itself may be changed; nothing below it may.
                assert!(
                    parts.len() == 1 || parts[0] != "link",
                    "a planned path goes through the repository's symlink: {path:?}"
                );
                if step.change.kind == ChangeKind::Deleted {
                    assert!(!seen_other, "a deletion after an addition: {path:?}");
                    if let Some(prev) = &last_deleted {
                        assert!(*prev >= parts, "deletions not deepest first at {path:?}");
                    }
                    last_deleted = Some(parts);
                } else {
                    seen_other = true;
                }
            }
            format!("planned {}", steps.len())
        }
        Err(e) => {
            let line = e.to_string();
            rauha_fuzz::assert_one_line(&line, usize::MAX);
            let reason: String = line
                .rsplit(": ")
                .next()
                .unwrap_or("")
                .chars()
                .filter(|c| c.is_ascii_alphabetic() || *c == ' ')
                .collect();
            reason
        }
    }
}

#[test]
fn fuzz_commit_plan() {
    let repo = std::env::temp_dir().join(format!("rauha-fuzz-plan-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&repo);
    for d in ["src", "docs", ".git/hooks"] {
        std::fs::create_dir_all(repo.join(d)).expect("repo dir");
    }
    for f in ["src/main.rs", "docs/a.md", "README", ".git/HEAD"] {
        std::fs::write(repo.join(f), b"abc").expect("repo file");
    }
    std::os::unix::fs::symlink("src", repo.join("link")).expect("repo symlink");
    let root = DirFd::open(&repo).expect("open the repository");
    let seeds = [
        "mf src/main.rs\naf src/new.rs\nad src/sub\naf src/sub/x.rs\ndf docs/a.md\ndd docs\n",
        "al src/l -> ../README\ndf README\n",
        "af link/escape.rs\n",
        "af ../outside\naf /abs\naf a//b\n",
        "as dev/node\nmf src\n",
        "df .git/HEAD\naf .git/hooks/pre-commit\n",
    ];
    rauha_fuzz::run_seeded(
        "workspace_plan",
        seeds.iter().map(|s| s.as_bytes().to_vec()).collect(),
        WORDS,
        |data| check(&repo, &root, data),
    );
    std::fs::remove_dir_all(&repo).expect("remove the repository");
}
