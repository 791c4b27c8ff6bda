//! The commit's journal: what a commit intends, written before it acts, so
//! that a commit cut by the death of its process can be undone (or, once
//! it is whole, finished) by whoever starts next.
//!
//! One JSON object per line. The first line names the staging directory
//! and the changes; each later line is written before the step it names
//! is taken; `done` is written once every step is. A step's undo
//! therefore never assumes the step happened: it looks at what is there
//! (the temporary entry, the backup) and acts only on what the step left.
//! A last line cut by the kill is a step never begun, and is ignored.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rauha_spec::result::FileChange;
use serde::{Deserialize, Serialize};

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Record {
    /// The commit's staging directory (in the repository's root) and every
    /// change the task made, applied or held back.
    Begin {
        staging: String,
        changes: Vec<FileChange>,
    },
    /// A temporary entry `temp` is about to be made next to `path`.
    Temp { path: String, temp: String },
    /// The entry at `path` is about to move to `staging/<backup>`.
    Backup { path: String, backup: String },
    /// The temporary entry `temp` is about to be renamed to `path`.
    Place { path: String, temp: String },
    /// The directory `path` is about to be made.
    Mkdir { path: String },
    /// The directory `path`, whose mode is `mode`, is about to be chmodded.
    Chmod { path: String, mode: u32 },
    /// Every step was taken: what is left is removing the backups.
    Done,
}

/// The journal being written.
pub(super) struct Journal {
    file: File,
}

impl Journal {
    /// Creates (or empties) the journal at `path`, readable by its owner
    /// only, never through a symlink.
    pub(super) fn create(path: &Path) -> io::Result<Journal> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        Ok(Journal { file })
    }

    /// Appends `record` in one write.
    pub(super) fn append(&mut self, record: &Record) -> io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
        line.push(b'\n');
        self.file.write_all(&line)
    }

    /// Makes what was appended so far durable.
    pub(super) fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// Reads the journal at `path`: `None` when there is none. A last line cut
/// short (the kill came while it was written) is dropped; a bad line before
/// it is an error.
pub(super) fn read(path: &Path) -> io::Result<Option<Vec<Record>>> {
    let mut file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut text = Vec::new();
    file.read_to_end(&mut text)?;
    let complete = text.last() == Some(&b'\n');
    let lines: Vec<&[u8]> = text
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let mut records = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_slice(line) {
            Ok(r) => records.push(r),
            Err(_) if i + 1 == lines.len() && !complete => break,
            Err(e) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("line {} is not a journal record: {e}", i + 1),
                ))
            }
        }
    }
    Ok(Some(records))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_cut_by_the_kill_is_a_step_never_begun() {
        let s = crate::fixture::Scratch::new("journal");
        let path = s.root.join("journal");
        assert_eq!(read(&path).unwrap(), None);
        let mut j = Journal::create(&path).unwrap();
        let begin = Record::Begin {
            staging: ".rauha-commit-x".into(),
            changes: Vec::new(),
        };
        j.append(&begin).unwrap();
        j.append(&Record::Mkdir { path: "a".into() }).unwrap();
        j.file.write_all(b"{\"backup\":{\"pa").unwrap();
        assert_eq!(
            read(&path).unwrap().unwrap(),
            vec![begin.clone(), Record::Mkdir { path: "a".into() }]
        );
        // The same garbage with lines after it is no cut: it is refused.
        j.file.write_all(b"\n\"done\"\n").unwrap();
        let err = read(&path).unwrap_err();
        assert!(err.to_string().contains("line 3"), "{err}");
        // Created again, the journal starts empty.
        let mut j = Journal::create(&path).unwrap();
        j.append(&Record::Done).unwrap();
        assert_eq!(read(&path).unwrap().unwrap(), vec![Record::Done]);
    }
}
