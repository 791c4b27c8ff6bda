//! Request validation that needs no state: ids, commands, environments.
//! Each error names the field and says what to do.

use std::os::fd::AsRawFd;

use rauha_spec::message::quote;
use rauha_spec::zone::ProcessSpec;
use uuid::Uuid;

use crate::error::DaemonError;

/// Linux's limit on one argument or environment string (MAX_ARG_STRLEN).
pub const MAX_ARG_BYTES: usize = 128 * 1024;
/// Our limit on a whole command line plus environment.
pub const MAX_SPEC_BYTES: usize = 1024 * 1024;
/// Linux's limit on a path (PATH_MAX, with its NUL).
pub const MAX_PATH_BYTES: usize = 4095;

pub fn parse_id(field: &str, value: &str, hint: &str) -> Result<Uuid, DaemonError> {
    Uuid::parse_str(value).map_err(|_| {
        DaemonError::invalid(
            field,
            format!("{} is not a valid UUID; {hint}", quote(value)),
        )
    })
}

pub fn process_spec(
    field: &str,
    args: &[String],
    env: &[String],
    cwd: &str,
) -> Result<ProcessSpec, DaemonError> {
    if args.is_empty() || args[0].is_empty() {
        return Err(DaemonError::invalid(
            format!("{field}.args"),
            "the command is empty; give a program to run, e.g. `-- sh -c 'echo hi'`",
        ));
    }
    let mut total = 0;
    for (i, a) in args.iter().enumerate() {
        check_string(&format!("{field}.args[{i}]"), a)?;
        total += a.len();
    }
    for (i, kv) in env.iter().enumerate() {
        let f = format!("{field}.env[{i}]");
        check_string(&f, kv)?;
        match kv.split_once('=') {
            Some((k, _)) if k.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                return Err(DaemonError::invalid(
                    f,
                    format!(
                        "the name {} holds a space or a control character; use letters, digits and '_'",
                        quote(k)
                    ),
                ))
            }
            Some((k, _)) if !k.is_empty() => {}
            _ => {
                return Err(DaemonError::invalid(
                    f,
                    format!("{} is not KEY=VALUE", quote(kv)),
                ))
            }
        }
        total += kv.len();
    }
    if total > MAX_SPEC_BYTES {
        return Err(DaemonError::invalid(
            field,
            format!("command and environment are {total} bytes, over the {MAX_SPEC_BYTES}-byte limit; pass large data through a file"),
        ));
    }
    if !cwd.is_empty() && !cwd.starts_with('/') {
        return Err(DaemonError::invalid(
            format!("{field}.cwd"),
            format!("{} is not absolute; start it with '/'", quote(cwd)),
        ));
    }
    if cwd.len() > MAX_PATH_BYTES {
        return Err(DaemonError::invalid(
            format!("{field}.cwd"),
            format!(
                "{} is longer than the {MAX_PATH_BYTES} bytes Linux allows for a path",
                quote(cwd)
            ),
        ));
    }
    if cwd.chars().any(char::is_control) {
        return Err(DaemonError::invalid(
            format!("{field}.cwd"),
            format!(
                "{} holds a control character; give a plain path",
                quote(cwd)
            ),
        ));
    }
    Ok(ProcessSpec {
        args: args.to_vec(),
        env: env.to_vec(),
        cwd: cwd.to_string(),
        ..ProcessSpec::default()
    })
}

fn check_string(field: &str, s: &str) -> Result<(), DaemonError> {
    if s.len() > MAX_ARG_BYTES {
        return Err(DaemonError::invalid(
            field,
            format!("{} bytes is longer than the {MAX_ARG_BYTES} bytes Linux allows for one argument; pass large data through a file", s.len()),
        ));
    }
    if s.contains('\0') {
        return Err(DaemonError::invalid(
            field,
            "contains a NUL byte, which no program can receive; remove it",
        ));
    }
    Ok(())
}

/// Where a client may put a zone's cgroup: below rauhad's own parent
/// (a relative `cgroup_parent`), or below one of the allowed roots (an
/// absolute one, such as kubelet's `/kubepods/burstable/pod<uid>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupParents {
    /// rauhad's `--cgroup-parent`: one plain name.
    pub own: String,
    /// `--allowed-cgroup-root`s, each `/name[/name...]`.
    pub allowed_roots: Vec<String>,
}

/// The cgroups kubelet makes pods' in: its cgroupfs and systemd drivers'.
pub const DEFAULT_ALLOWED_CGROUP_ROOTS: &[&str] = &["/kubepods", "/kubepods.slice"];

impl CgroupParents {
    /// A cgroup to put the zone's cgroup in, from the hierarchy's root:
    /// `None` for rauhad's own parent.
    pub fn check(&self, path: &str) -> Result<Option<String>, DaemonError> {
        if path.is_empty() {
            return Ok(None);
        }
        let bad = |why: String| {
            DaemonError::invalid(
                "cgroup_parent",
                format!("{} {why}; give a plain cgroup path", quote(path)),
            )
        };
        if path.len() > MAX_PATH_BYTES {
            return Err(bad("is longer than Linux allows for a path".into()));
        }
        let parts = components(path).ok_or_else(|| {
            bad("has an empty, '.' or '..' component or a control character".into())
        })?;
        if parts.is_empty() {
            return Err(bad("is the root of the hierarchy".into()));
        }
        if !path.starts_with('/') {
            return Ok(Some(format!("/{}/{}", self.own, parts.join("/"))));
        }
        let under = self.allowed_roots.iter().any(|root| {
            let root = components(root).unwrap_or_default();
            parts.len() >= root.len() && parts[..root.len()] == root[..]
        });
        if !under {
            return Err(DaemonError::invalid(
                "cgroup_parent",
                format!(
                    "{} is outside the cgroups clients may use; give a path below one of {}, or a relative one (below rauhad's {})",
                    quote(path),
                    self.allowed_roots.join(", "),
                    self.own
                ),
            ));
        }
        Ok(Some(format!("/{}", parts.join("/"))))
    }
}

/// The plain names of a cgroup path, or `None` when one is empty (other
/// than a leading or trailing '/'), '.', '..' or holds a control character.
fn components(path: &str) -> Option<Vec<&str>> {
    let inner = path.strip_prefix('/').unwrap_or(path);
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    if inner.is_empty() {
        return Some(Vec::new());
    }
    let parts: Vec<&str> = inner.split('/').collect();
    parts
        .iter()
        .all(|p| !p.is_empty() && *p != "." && *p != ".." && !p.chars().any(char::is_control))
        .then_some(parts)
}

/// A network namespace to join: empty for none, else an absolute path to a
/// network namespace (an nsfs file such as `/run/netns/NAME`).
pub fn netns(field: &str, path: &str) -> Result<Option<String>, DaemonError> {
    if path.is_empty() {
        return Ok(None);
    }
    let fix = "give a network namespace such as /run/netns/NAME (`ip netns add NAME` makes one)";
    if !path.starts_with('/') {
        return Err(DaemonError::invalid(
            field,
            format!("{} is not absolute; {fix}", quote(path)),
        ));
    }
    let file = std::fs::File::open(path)
        .map_err(|e| DaemonError::invalid(field, format!("{}: {e}; {fix}", quote(path))))?;
    // NS_GET_NSTYPE is _IO(0xb7, 0x3); it fails on anything but a namespace.
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
    // SAFETY: an ioctl without arguments on an fd we hold.
    let kind = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
    if kind != libc::CLONE_NEWNET {
        return Err(DaemonError::invalid(
            field,
            format!("{} is not a network namespace; {fix}", quote(path)),
        ));
    }
    Ok(Some(path.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn empty_command_is_refused() {
        let e = process_spec("spec", &[], &[], "").expect_err("empty");
        assert_eq!(
            e.to_string(),
            "spec.args: the command is empty; give a program to run, e.g. `-- sh -c 'echo hi'`"
        );
    }

    #[test]
    fn huge_argument_is_refused_with_its_size() {
        let big = "x".repeat(10 * 1024 * 1024);
        let e = process_spec("spec", &[String::from("echo"), big], &[], "").expect_err("huge");
        assert_eq!(
            e.to_string(),
            "spec.args[1]: 10485760 bytes is longer than the 131072 bytes Linux allows for one argument; pass large data through a file"
        );
    }

    #[test]
    fn env_must_be_key_value() {
        let e =
            process_spec("spec", &args(&["true"]), &args(&["NOVALUE"]), "").expect_err("bad env");
        assert_eq!(e.to_string(), "spec.env[0]: \"NOVALUE\" is not KEY=VALUE");
        assert!(process_spec("spec", &args(&["true"]), &args(&["A=", "B=c=d"]), "/").is_ok());
    }

    #[test]
    fn env_names_with_spaces_or_control_characters_are_refused() {
        for kv in ["A B=1", "A\tB=1", "A\nB=1", " =1"] {
            let e = process_spec("spec", &["true".into()], &[kv.into()], "")
                .expect_err(kv)
                .to_string();
            assert!(
                e.contains("spec.env[0]") && !e.contains('\n'),
                "{kv:?}: {e}"
            );
        }
        assert!(process_spec("spec", &["true".into()], &["A_1=x y".into()], "").is_ok());
    }

    #[test]
    fn relative_cwd_and_nul_bytes_are_refused() {
        assert!(process_spec("spec", &args(&["true"]), &[], "tmp").is_err());
        assert!(process_spec("spec", &args(&["a\0b"]), &[], "").is_err());
    }

    fn parents() -> CgroupParents {
        CgroupParents {
            own: "rauha".into(),
            allowed_roots: DEFAULT_ALLOWED_CGROUP_ROOTS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }

    #[test]
    fn a_cgroup_parent_is_below_an_allowed_root_or_rauhads_own() {
        let p = parents();
        assert_eq!(p.check("").expect("empty"), None);
        assert_eq!(
            p.check("/kubepods/burstable/pod1").expect("kubelet's"),
            Some("/kubepods/burstable/pod1".into())
        );
        assert_eq!(
            p.check("/kubepods.slice/kubepods-burstable.slice/")
                .expect("systemd's"),
            Some("/kubepods.slice/kubepods-burstable.slice".into())
        );
        assert_eq!(
            p.check("pods/a").expect("relative"),
            Some("/rauha/pods/a".into())
        );
        for bad in [
            "/etc/passwd",
            "/dev/null",
            "/proc/1/ns/net",
            "/kubepods-evil",
            "/kubepods/../etc",
            "/kubepods//x",
            "/",
            "a/../../b",
            "/kubepods/a\nb",
        ] {
            let e = p.check(bad).expect_err(bad).to_string();
            assert!(
                e.starts_with("cgroup_parent: ") && !e.contains('\n') && e.len() < 300,
                "{bad}: {e}"
            );
        }
        let outside = p.check("/etc/passwd").expect_err("outside").to_string();
        assert!(
            outside.contains("below one of /kubepods, /kubepods.slice"),
            "{outside}"
        );
        let long = format!("/kubepods/{}", "x".repeat(1 << 20));
        assert!(p.check(&long).expect_err("long").to_string().len() < 400);
    }

    #[test]
    fn ids_must_be_uuids() {
        let e = parse_id("id", "abc", "use the id from `rauha ps`").expect_err("bad");
        assert_eq!(
            e.to_string(),
            "id: \"abc\" is not a valid UUID; use the id from `rauha ps`"
        );
        assert!(parse_id("id", &Uuid::new_v4().to_string(), "").is_ok());
    }
}
