//! An image's `User` (`name`, `uid`, `name:group`, `uid:gid`...) as ids,
//! read from the image's own `/etc/passwd` and `/etc/group`, as docker
//! resolves it: the file of the topmost layer that has it (a whiteout
//! hides lower ones), and the user's supplementary groups from
//! `/etc/group`.
//!
//! The files come from an image, read on the host: neither `etc` nor the
//! file may be a symlink (an image's `/etc/passwd -> /etc/shadow` must not
//! make rauhad read the host's), nothing over 1 MiB is read, and an error
//! never quotes the files.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

const MAX_FILE: u64 = 1 << 20;

/// The ids a process of the image runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// `etc/NAME` of the topmost layer (bottom first in `layers`) that has it.
fn etc_file(layers: &[&Path], name: &str) -> Result<Option<String>, String> {
    for layer in layers.iter().rev() {
        let etc = layer.join("etc");
        match fs::symlink_metadata(&etc) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "the image's /etc is a symlink, so its /etc/{name} is not read"
                ))
            }
            Ok(m) if m.file_type().is_char_device() => return Ok(None), // whiteout
            Ok(m) if m.is_dir() => {}
            _ => continue,
        }
        let path = etc.join(name);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "the image's /etc/{name} is a symlink, so it is not read"
                ))
            }
            Ok(m) if m.file_type().is_char_device() => return Ok(None),
            Ok(m) if m.is_file() => {
                let mut text = String::new();
                fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .and_then(|f| f.take(MAX_FILE).read_to_string(&mut text))
                    .map_err(|e| format!("the image's /etc/{name} cannot be read: {}", e.kind()))?;
                return Ok(Some(text));
            }
            _ => continue,
        }
    }
    Ok(None)
}

fn field(line: &str, i: usize) -> Option<&str> {
    line.split(':').nth(i)
}

/// Resolves `user` (an image config's `User`) against the image's layers.
pub fn resolve(layers: &[&Path], user: &str) -> Result<Ids, String> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    if u.is_empty() || g.is_some_and(str::is_empty) {
        return Err("is not user[:group]".into());
    }
    let numeric = |s: &str| s.parse::<u32>().ok();
    // Both numbers: nothing to look up; a number alone still takes its
    // group and supplementary groups from /etc/passwd, as docker's does.
    let passwd = if numeric(u).is_some() && g.is_some_and(|g| numeric(g).is_some()) {
        None
    } else {
        etc_file(layers, "passwd")?
    };
    let entry = passwd.as_deref().and_then(|p| {
        p.lines()
            .find(|l| field(l, 0) == Some(u) || (numeric(u).is_some() && field(l, 2) == Some(u)))
    });
    let (uid, primary, name) = match (numeric(u), entry) {
        (Some(uid), Some(e)) => (
            uid,
            field(e, 3).and_then(numeric),
            field(e, 0).map(str::to_string),
        ),
        (Some(uid), None) => (uid, None, None),
        (None, Some(e)) => (
            field(e, 2)
                .and_then(numeric)
                .ok_or("has a malformed /etc/passwd line in the image")?,
            field(e, 3).and_then(numeric),
            Some(u.to_string()),
        ),
        (None, None) => {
            return Err(format!(
                "names user {u:?}, which the image's /etc/passwd does not have"
            ))
        }
    };
    let groups_file = match (g, &name) {
        (Some(g), _) if numeric(g).is_none() => etc_file(layers, "group")?,
        (_, Some(_)) => etc_file(layers, "group")?,
        _ => None,
    };
    let gid = match g {
        Some(g) => match numeric(g) {
            Some(gid) => gid,
            None => groups_file
                .as_deref()
                .and_then(|f| f.lines().find(|l| field(l, 0) == Some(g)))
                .and_then(|l| field(l, 2))
                .and_then(numeric)
                .ok_or_else(|| {
                    format!("names group {g:?}, which the image's /etc/group does not have")
                })?,
        },
        None => primary.unwrap_or(uid),
    };
    let mut groups: Vec<u32> = match (&name, &groups_file) {
        (Some(n), Some(f)) => f
            .lines()
            .filter(|l| field(l, 3).is_some_and(|m| m.split(',').any(|x| x == n)))
            .filter_map(|l| field(l, 2).and_then(numeric))
            .filter(|id| *id != gid)
            .collect(),
        _ => Vec::new(),
    };
    groups.sort_unstable();
    groups.dedup();
    Ok(Ids { uid, gid, groups })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(files: &[(&str, &str)]) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("rauha-users-{}", uuid::Uuid::new_v4()));
        for (path, text) in files {
            let p = d.join(path);
            fs::create_dir_all(p.parent().expect("parent")).expect("dir");
            fs::write(p, text).expect("file");
        }
        d
    }

    #[test]
    fn names_and_numbers_resolve_as_docker_does() {
        let base = image(&[
            (
                "etc/passwd",
                "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
            ),
            (
                "etc/group",
                "root:x:0:\napp:x:1001:\nwheel:x:10:app,root\ndocker:x:999:app\n",
            ),
        ]);
        let l = [base.as_path()];
        let r = |u: &str| resolve(&l, u);
        assert_eq!(
            r("app"),
            Ok(Ids {
                uid: 1000,
                gid: 1001,
                groups: vec![10, 999]
            })
        );
        assert_eq!(
            r("1000"),
            Ok(Ids {
                uid: 1000,
                gid: 1001,
                groups: vec![10, 999]
            })
        );
        assert_eq!(
            r("app:wheel"),
            Ok(Ids {
                uid: 1000,
                gid: 10,
                groups: vec![999]
            })
        );
        assert_eq!(
            r("5:6"),
            Ok(Ids {
                uid: 5,
                gid: 6,
                groups: vec![]
            })
        );
        assert_eq!(r("4242").map(|i| i.gid), Ok(4242));
        assert!(r("nobody").expect_err("unknown").contains("does not have"));
        assert!(r("app:nogroup")
            .expect_err("unknown group")
            .contains("/etc/group"));
        assert!(r(":1").is_err());
        let _ = fs::remove_dir_all(base);
    }

    #[test]
    fn the_top_layer_wins_and_symlinks_are_not_followed() {
        let lower = image(&[("etc/passwd", "app:x:1:1::/:/bin/sh\n")]);
        let upper = image(&[("etc/passwd", "app:x:2:2::/:/bin/sh\n")]);
        assert_eq!(resolve(&[&lower, &upper], "app").map(|i| i.uid), Ok(2));
        let evil = image(&[]);
        fs::create_dir_all(evil.join("etc")).expect("etc");
        std::os::unix::fs::symlink("/etc/shadow", evil.join("etc/passwd")).expect("link");
        let e = resolve(&[&lower, &evil], "app").expect_err("symlink");
        assert!(e.contains("symlink"), "{e}");
        for d in [lower, upper, evil] {
            let _ = fs::remove_dir_all(d);
        }
    }
}
