//! The `rauha` runtime handler in a node's containerd configuration, added
//! so that it can be taken out again leaving the file byte-identical.
//!
//! Two ways, chosen from the file itself:
//! - **a drop-in** (`rauha.toml` in a directory the config's `imports`
//!   already covers) where containerd merges imports into the plugin
//!   tables: config version 3 (containerd 2.x). The main file is not
//!   touched.
//! - **a marked block** appended to the main file otherwise: containerd
//!   1.x (config version 2) replaces a whole plugin section with an
//!   import's, so a drop-in there would erase the node's CRI settings. The
//!   block sits between [`BEGIN`] and [`END`] lines; removing it gives back
//!   the original bytes (the caller also keeps them, [`Removal`]).
//!
//! Version 1 files (containerd 1.4 and older) are refused with the command
//! that migrates them.

use std::path::{Path, PathBuf};

/// The first line of Rauha's block in a main config.
pub const BEGIN: &str =
    "# BEGIN rauha: the rauha runtime handler (added by Rauha's node DaemonSet, removed on helm uninstall)";
/// The last line of Rauha's block.
pub const END: &str = "# END rauha";
/// The drop-in's file name.
pub const DROP_IN: &str = "rauha.toml";

/// What the handler runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handler {
    /// The handler's name (`rauha`), the RuntimeClass's `handler`.
    pub name: String,
    /// The installed `containerd-shim-rauha-v2`.
    pub shim: PathBuf,
    /// The shim's configuration file (`ConfigPath`, the pod default).
    pub shim_config: PathBuf,
}

/// Where the handler goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// A file of its own, which the config's imports already cover.
    DropIn { path: PathBuf, text: String },
    /// The main config with Rauha's block appended (or brought up to date).
    Block { text: String },
}

/// Why a config cannot take the handler.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{path} is not valid TOML ({reason}); fix it, then the node pod retries")]
    NotToml { path: String, reason: String },
    #[error(
        "{path} is containerd's config version 1 (containerd 1.4 or older); migrate it with \
         `containerd config migrate` or upgrade containerd"
    )]
    VersionOne { path: String },
    #[error("{path} has config version {version}, which no containerd this chart knows reads")]
    UnknownVersion { path: String, version: i64 },
    #[error(
        "{path} already defines a runtime named {name:?} outside Rauha's block; remove it, or \
         install the chart with runtimeClass.handler set to another name"
    )]
    Taken { path: String, name: String },
    #[error("{path} has a BEGIN rauha line without its END line; restore the file from a backup")]
    Unterminated { path: String },
}

/// The CRI plugin's table of runtimes for a config version.
fn runtimes_table(version: i64) -> &'static str {
    if version >= 3 {
        "plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes"
    } else {
        "plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes"
    }
}

/// The handler's TOML tables for a config version.
pub fn handler_tables(version: i64, h: &Handler) -> String {
    let t = format!("{}.{}", runtimes_table(version), h.name);
    format!(
        "[{t}]\n  runtime_type = \"io.containerd.rauha.v2\"\n  runtime_path = {shim:?}\n  \
         pod_annotations = [\"rauha.dev/*\"]\n  container_annotations = [\"rauha.dev/*\"]\n\
         [{t}.options]\n  ConfigPath = {config:?}\n",
        shim = h.shim.display().to_string(),
        config = h.shim_config.display().to_string(),
    )
}

/// The config's `version` (1 when it names none, as containerd reads it).
fn version(path: &Path, table: &toml::Table) -> Result<i64, ConfigError> {
    match table.get("version") {
        None => Err(ConfigError::VersionOne {
            path: path.display().to_string(),
        }),
        Some(toml::Value::Integer(1)) => Err(ConfigError::VersionOne {
            path: path.display().to_string(),
        }),
        Some(toml::Value::Integer(v @ (2 | 3))) => Ok(*v),
        Some(v) => Err(ConfigError::UnknownVersion {
            path: path.display().to_string(),
            version: v.as_integer().unwrap_or(-1),
        }),
    }
}

fn parse(path: &Path, text: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>()
        .map_err(|e| ConfigError::NotToml {
            path: path.display().to_string(),
            reason: e.message().to_string(),
        })
}

/// Whether the config defines a runtime `name` (through its tables).
fn defines(table: &toml::Table, version: i64, name: &str) -> bool {
    let cri = if version >= 3 {
        "io.containerd.cri.v1.runtime"
    } else {
        "io.containerd.grpc.v1.cri"
    };
    table
        .get("plugins")
        .and_then(|p| p.get(cri))
        .and_then(|c| c.get("containerd"))
        .and_then(|c| c.get("runtimes"))
        .and_then(|r| r.get(name))
        .is_some()
}

/// `text` without Rauha's block (and the newline put before it when the
/// file had no final one); `None` when it holds none.
pub fn without_block(path: &Path, text: &str) -> Result<Option<String>, ConfigError> {
    let Some(begin) = find_line(text, BEGIN) else {
        return Ok(None);
    };
    let Some(end) = text[begin..].find(&format!("\n{END}\n")).map(|i| begin + i) else {
        return Err(ConfigError::Unterminated {
            path: path.display().to_string(),
        });
    };
    let after = end + END.len() + 2;
    // The block starts a line: `begin` is 0 or follows a newline. That
    // newline was added with the block when it is the blank line before
    // it that `with_block` writes.
    let mut start = begin;
    if text[..begin].ends_with("\n\n") {
        start -= 1;
    }
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..start]);
    out.push_str(&text[after..]);
    Ok(Some(out))
}

/// The byte offset of a line equal to `line`.
fn find_line(text: &str, line: &str) -> Option<usize> {
    let mut at = 0;
    for l in text.split_inclusive('\n') {
        if l.trim_end_matches('\n') == line {
            return Some(at);
        }
        at += l.len();
    }
    None
}

/// Where the handler goes in the config at `path` holding `text`, and
/// what to write; `dropin_dir` is tried first (config version 3 only).
pub fn place(
    path: &Path,
    text: &str,
    dropin_dir: Option<&Path>,
    h: &Handler,
) -> Result<Placement, ConfigError> {
    let bare = without_block(path, text)?;
    let original = bare.as_deref().unwrap_or(text);
    let table = parse(path, original)?;
    let version = version(path, &table)?;
    if defines(&table, version, &h.name) {
        return Err(ConfigError::Taken {
            path: path.display().to_string(),
            name: h.name.clone(),
        });
    }
    if version >= 3 {
        if let Some(dir) = dropin_dir {
            let dropin = dir.join(DROP_IN);
            if imports_cover(path, &table, &dropin) {
                return Ok(Placement::DropIn {
                    path: dropin,
                    text: format!(
                        "# The rauha runtime handler (added by Rauha's node DaemonSet, removed on helm uninstall).\n\
                         version = 3\n\n{}",
                        handler_tables(version, h)
                    ),
                });
            }
        }
    }
    let mut out = original.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(BEGIN);
    out.push('\n');
    out.push_str(&handler_tables(version, h));
    out.push_str(END);
    out.push('\n');
    // The result must still parse, with the handler in it.
    let check = parse(path, &out)?;
    debug_assert!(defines(&check, version, &h.name));
    Ok(Placement::Block { text: out })
}

/// Whether the config's top-level `imports` name `file` (exactly, or by a
/// `*` glob in its directory); relative imports are the config's dir's.
fn imports_cover(path: &Path, table: &toml::Table, file: &Path) -> bool {
    let Some(toml::Value::Array(imports)) = table.get("imports") else {
        return false;
    };
    let base = path.parent().unwrap_or(Path::new("/"));
    imports.iter().filter_map(|v| v.as_str()).any(|i| {
        let pattern = base.join(i);
        if pattern == file {
            return true;
        }
        match (pattern.parent(), pattern.file_name(), file.file_name()) {
            (Some(dir), Some(glob), Some(name)) if dir == file.parent().unwrap_or(dir) => {
                glob_match(&glob.to_string_lossy(), &name.to_string_lossy())
            }
            _ => false,
        }
    })
}

/// `*` (any run of characters) and `?` (one), as filepath.Glob reads a
/// file name.
fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// How to take the handler out of a main config again.
#[derive(Debug, PartialEq, Eq)]
pub enum Removal {
    /// The file is exactly what Rauha wrote: put the saved original back.
    Restore,
    /// Someone edited it since: take out Rauha's block alone.
    Edit(String),
    /// It holds no block of Rauha's.
    Nothing,
}

/// What to do with the main config `current`, given what Rauha wrote
/// (`ours`, saved at install).
pub fn removal(path: &Path, current: &str, ours: Option<&str>) -> Result<Removal, ConfigError> {
    if ours == Some(current) {
        return Ok(Removal::Restore);
    }
    Ok(match without_block(path, current)? {
        Some(text) => Removal::Edit(text),
        None => Removal::Nothing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handler() -> Handler {
        Handler {
            name: "rauha".into(),
            shim: "/opt/rauha/bin/containerd-shim-rauha-v2".into(),
            shim_config: "/opt/rauha/etc/shim.toml".into(),
        }
    }

    const V3: &str = "version = 3\nroot = \"/var/lib/containerd\"\n\n[plugins.'io.containerd.cri.v1.runtime'.containerd]\n  default_runtime_name = \"runc\"\n";
    const V2: &str = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  default_runtime_name = \"runc\"";

    fn path() -> &'static Path {
        Path::new("/etc/containerd/config.toml")
    }

    #[test]
    fn a_block_comes_out_leaving_the_file_byte_identical() {
        for original in [V3, V2, "version = 2\n", "version = 3", "version = 3\n\n"] {
            let Placement::Block { text } = place(path(), original, None, &handler()).unwrap()
            else {
                panic!("a block for {original:?}")
            };
            assert!(text.starts_with(original), "{text}");
            let table = parse(path(), &text).unwrap();
            let v = version(path(), &table).unwrap();
            assert!(defines(&table, v, "rauha"), "{text}");
            // A file without a final newline gets one back from the edit
            // alone; its saved original restores it exactly.
            let mut bare = original.to_string();
            if !bare.ends_with('\n') {
                bare.push('\n');
            }
            assert_eq!(
                without_block(path(), &text).unwrap().as_deref(),
                Some(bare.as_str())
            );
            assert_eq!(
                removal(path(), &text, Some(&text)).unwrap(),
                Removal::Restore
            );
        }
    }

    #[test]
    fn version_two_gets_the_cri_plugins_old_table() {
        let Placement::Block { text } = place(path(), V2, None, &handler()).unwrap() else {
            panic!()
        };
        assert!(text.contains("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.rauha]"));
        assert!(text
            .contains("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.rauha.options]"));
        assert!(text.contains("runtime_path = \"/opt/rauha/bin/containerd-shim-rauha-v2\""));
    }

    #[test]
    fn placing_again_replaces_the_block_rather_than_adding_one() {
        let Placement::Block { text } = place(path(), V3, None, &handler()).unwrap() else {
            panic!()
        };
        let mut other = handler();
        other.shim_config = "/etc/rauha/shim.toml".into();
        let Placement::Block { text: again } = place(path(), &text, None, &other).unwrap() else {
            panic!()
        };
        assert_eq!(again.matches(BEGIN).count(), 1, "{again}");
        assert!(again.contains("/etc/rauha/shim.toml"));
        assert_eq!(without_block(path(), &again).unwrap().as_deref(), Some(V3));
    }

    #[test]
    fn an_edit_made_since_install_is_kept_and_the_block_alone_goes() {
        let Placement::Block { text } = place(path(), V3, None, &handler()).unwrap() else {
            panic!()
        };
        let edited = text.replace("root = ", "# a comment\nroot = ");
        let Removal::Edit(out) = removal(path(), &edited, Some(&text)).unwrap() else {
            panic!()
        };
        assert_eq!(out, V3.replace("root = ", "# a comment\nroot = "));
        assert_eq!(removal(path(), V3, Some(&text)).unwrap(), Removal::Nothing);
    }

    #[test]
    fn version_three_with_covering_imports_gets_a_drop_in_and_keeps_the_main_file() {
        let dir = Path::new("/etc/containerd/conf.d");
        for imports in [
            "imports = [\"/etc/containerd/conf.d/*.toml\"]\n",
            "imports = [\"conf.d/rauha.toml\"]\n",
            "imports = [\"/etc/containerd/conf.d/r*\"]\n",
        ] {
            let config = format!("{imports}{V3}");
            match place(path(), &config, Some(dir), &handler()).unwrap() {
                Placement::DropIn { path, text } => {
                    assert_eq!(path, dir.join(DROP_IN));
                    let t = parse(&path, &text).unwrap();
                    assert!(defines(&t, 3, "rauha"), "{text}");
                }
                other => panic!("{imports}: {other:?}"),
            }
        }
        // Imports that do not cover it, or a version 2 file: a block.
        for config in [
            format!("imports = [\"/etc/containerd/other/*.toml\"]\n{V3}"),
            format!("imports = [\"/etc/containerd/conf.d/*.conf\"]\n{V3}"),
            format!("imports = [\"/etc/containerd/conf.d/*.toml\"]\n{V2}"),
        ] {
            assert!(
                matches!(
                    place(path(), &config, Some(dir), &handler()).unwrap(),
                    Placement::Block { .. }
                ),
                "{config}"
            );
        }
    }

    #[test]
    fn a_config_rauha_cannot_use_is_refused_with_what_to_do() {
        let e = place(path(), "oom_score = 0\n", None, &handler()).unwrap_err();
        assert!(e.to_string().contains("containerd config migrate"), "{e}");
        let e = place(path(), "version = 3\n[x\n", None, &handler()).unwrap_err();
        assert!(e.to_string().contains("not valid TOML"), "{e}");
        let taken = format!("{V3}[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.rauha]\n  runtime_type = \"x\"\n");
        let e = place(path(), &taken, None, &handler()).unwrap_err();
        assert!(e.to_string().contains("runtimeClass.handler"), "{e}");
        let cut = format!("{V3}\n{BEGIN}\n[a]\n");
        let e = place(path(), &cut, None, &handler()).unwrap_err();
        assert!(e.to_string().contains("without its END"), "{e}");
    }

    #[test]
    fn globs_match_as_filepath_glob_does() {
        assert!(glob_match("*.toml", "rauha.toml"));
        assert!(glob_match("r?uha.toml", "rauha.toml"));
        assert!(glob_match("*", "rauha.toml"));
        assert!(!glob_match("*.conf", "rauha.toml"));
        assert!(!glob_match("a*", "rauha.toml"));
    }
}
