//! Secrets: values stored root-only under `$RAUHA_ROOT/secrets`, given to
//! a task in its environment and never written to any file of a zone.
//! There is no way to read a value back through the API.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::DaemonError;

/// Values shorter than this cannot be redacted reliably from output.
pub const MIN_SECRET_BYTES: usize = 4;
const MAX_SECRET_BYTES: usize = 64 * 1024;

pub struct SecretStore {
    dir: PathBuf,
}

/// A stored secret's name and facts, never its value.
pub struct SecretInfo {
    pub name: String,
    pub size: u64,
    pub updated_ms: u64,
}

/// Where a secret reaches the task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// An environment variable of this name.
    Env(String),
    /// A pipe the process inherits at this fd number, holding the value.
    Fd(i32),
}

/// Fd numbers a secret pipe may take: above stdio, below the agent's own.
pub const SECRET_FDS: std::ops::RangeInclusive<i32> = 3..=255;

/// A secret a task uses: its value and how it arrives.
#[derive(Clone)]
pub struct Secret {
    pub name: String,
    pub delivery: Delivery,
    pub value: Vec<u8>,
}

pub fn validate_name(field: &str, name: &str) -> Result<(), DaemonError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(DaemonError::invalid(
            field,
            format!(
                "{} is not a secret name; use letters, digits, '_', '-' and '.' (at most 128)",
                rauha_spec::message::quote(name)
            ),
        ))
    }
}

pub fn validate_env(field: &str, env: &str) -> Result<(), DaemonError> {
    let mut chars = env.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(DaemonError::invalid(
            field,
            format!(
                "{} is not an environment variable name; use letters, digits and '_'",
                rauha_spec::message::quote(env)
            ),
        ))
    }
}

impl SecretStore {
    pub fn open(root: &Path) -> Result<SecretStore, DaemonError> {
        let dir = root.join("secrets");
        let io = |source: std::io::Error| DaemonError::Secrets {
            what: format!("cannot prepare {}", dir.display()),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        Ok(SecretStore { dir })
    }

    pub fn set(&self, name: &str, value: &[u8]) -> Result<SecretInfo, DaemonError> {
        validate_name("name", name)?;
        if value.len() < MIN_SECRET_BYTES {
            return Err(DaemonError::invalid(
                "value",
                format!("is {} bytes; a secret needs at least {MIN_SECRET_BYTES} to be redacted reliably from output", value.len()),
            ));
        }
        if value.len() > MAX_SECRET_BYTES {
            return Err(DaemonError::invalid(
                "value",
                format!("is {} bytes; at most {MAX_SECRET_BYTES}", value.len()),
            ));
        }
        let path = self.dir.join(name);
        let tmp = self
            .dir
            .join(format!(".{name}.{}", uuid::Uuid::new_v4().simple()));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(value)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(DaemonError::Secrets {
                what: format!("cannot store secret {name}"),
                source: e,
            });
        }
        self.info(name)
    }

    fn info(&self, name: &str) -> Result<SecretInfo, DaemonError> {
        let meta = std::fs::metadata(self.dir.join(name)).map_err(|_| DaemonError::NotFound {
            kind: "secret",
            what: name.to_string(),
            hint: "list secrets with `rauha secret list`",
        })?;
        let updated_ms = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Ok(SecretInfo {
            name: name.to_string(),
            size: meta.len(),
            updated_ms,
        })
    }

    pub fn list(&self) -> Result<Vec<SecretInfo>, DaemonError> {
        let mut out = Vec::new();
        let entries = std::fs::read_dir(&self.dir).map_err(|source| DaemonError::Secrets {
            what: "cannot list secrets".into(),
            source,
        })?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') {
                out.push(self.info(&name)?);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub fn remove(&self, name: &str) -> Result<(), DaemonError> {
        validate_name("name", name)?;
        self.info(name)?;
        std::fs::remove_file(self.dir.join(name)).map_err(|source| DaemonError::Secrets {
            what: format!("cannot remove secret {name}"),
            source,
        })
    }

    /// The secret for a task, by name.
    pub fn get(&self, name: &str, delivery: Delivery) -> Result<Secret, DaemonError> {
        validate_name("secrets.name", name)?;
        match &delivery {
            Delivery::Env(env) => validate_env("secrets.env", env)?,
            Delivery::Fd(fd) if !SECRET_FDS.contains(fd) => {
                return Err(DaemonError::invalid(
                    "secrets.fd",
                    format!("{fd} is not a usable fd; give one from 3 to 255"),
                ))
            }
            Delivery::Fd(_) => {}
        }
        let value = std::fs::read(self.dir.join(name)).map_err(|_| DaemonError::NotFound {
            kind: "secret",
            what: name.to_string(),
            hint: "set it with `rauha secret set NAME` (the value on stdin)",
        })?;
        Ok(Secret {
            name: name.to_string(),
            delivery,
            value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (SecretStore, PathBuf) {
        let root = std::env::temp_dir().join(format!("rauha-secrets-{}", uuid::Uuid::new_v4()));
        (SecretStore::open(&root).expect("open"), root)
    }

    #[test]
    fn set_list_get_remove() {
        let (s, root) = store();
        s.set("API_TOKEN", b"sk-12345").expect("set");
        let listed = s.list().expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].name.as_str(), listed[0].size), ("API_TOKEN", 8));
        let mode = std::fs::metadata(root.join("secrets/API_TOKEN"))
            .expect("file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            s.get("API_TOKEN", Delivery::Env("TOKEN".into()))
                .expect("get")
                .value,
            b"sk-12345"
        );
        s.remove("API_TOKEN").expect("remove");
        assert!(matches!(
            s.get("API_TOKEN", Delivery::Env("TOKEN".into())),
            Err(DaemonError::NotFound { .. })
        ));
        std::fs::remove_dir_all(root).expect("cleanup");
    }

    #[test]
    fn bad_names_and_short_values_are_refused() {
        let (s, root) = store();
        assert!(s.set("../x", b"long enough").is_err());
        assert!(s.set(".hidden", b"long enough").is_err());
        assert_eq!(
            s.set("T", b"abc").err().map(|e| e.to_string()),
            Some(
                "value: is 3 bytes; a secret needs at least 4 to be redacted reliably from output"
                    .into()
            )
        );
        assert!(validate_env("env", "1ABC").is_err());
        assert!(validate_env("env", "A_B1").is_ok());
        std::fs::remove_dir_all(root).expect("cleanup");
    }
}
