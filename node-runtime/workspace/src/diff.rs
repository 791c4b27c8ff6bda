//! Text detection and unified diffs capped in size.
//!
//! A side is text when it is at most [`TEXT_LIMIT`] bytes of valid UTF-8
//! with no NUL byte. A diff is made only when every side that exists is
//! text; it is cut at `cap` bytes (on a char boundary) while it is written,
//! so a huge diff never sits whole in memory.

use std::fmt::{self, Write as _};
use std::time::Duration;

use similar::TextDiff;

/// The largest file whose content is diffed.
pub(super) const TEXT_LIMIT: usize = 1 << 20;

/// How long the line diff may search for a minimal edit before it settles
/// for a correct but longer one.
const DIFF_TIMEOUT: Duration = Duration::from_secs(2);

/// One side of a diff.
#[derive(Debug, Clone, Copy)]
pub(super) enum Side<'a> {
    /// The file does not exist on this side (added or deleted).
    Absent,
    /// The file's whole content.
    Bytes(&'a [u8]),
    /// The file exists but is too large to be read as text.
    TooLarge,
}

/// A unified diff, `None` when there is nothing to show (a binary side, or
/// the same text on both sides).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CappedDiff {
    pub text: Option<String>,
    pub truncated: bool,
}

impl CappedDiff {
    const NONE: CappedDiff = CappedDiff {
        text: None,
        truncated: false,
    };
}

/// The text of `bytes`, if they are text.
pub(super) fn as_text(bytes: &[u8]) -> Option<&str> {
    if bytes.len() > TEXT_LIMIT || bytes.contains(&0) {
        return None;
    }
    std::str::from_utf8(bytes).ok()
}

/// The unified diff of `path` from `old` to `new`, with `a/<path>` and
/// `b/<path>` headers (`/dev/null` for an absent side), at most `cap` bytes.
pub(super) fn unified(path: &str, old: Side<'_>, new: Side<'_>, cap: usize) -> CappedDiff {
    let (Some(old_text), Some(new_text)) = (side_text(old), side_text(new)) else {
        return CappedDiff::NONE;
    };
    if old_text == new_text {
        return CappedDiff::NONE;
    }
    let old_header = match old {
        Side::Absent => "/dev/null".to_string(),
        _ => format!("a/{path}"),
    };
    let new_header = match new {
        Side::Absent => "/dev/null".to_string(),
        _ => format!("b/{path}"),
    };
    let diff = TextDiff::configure()
        .timeout(DIFF_TIMEOUT)
        .diff_lines(old_text, new_text);
    let mut out = CappedWriter {
        out: String::new(),
        cap,
        truncated: false,
    };
    let written = write!(
        out,
        "{}",
        diff.unified_diff()
            .context_radius(3)
            .header(&old_header, &new_header)
    );
    // The writer is the only thing that fails, and only when it is full.
    let truncated = out.truncated || written.is_err();
    CappedDiff {
        text: Some(out.out),
        truncated,
    }
}

/// An absent side diffs as empty text; a binary or large one not at all.
fn side_text(side: Side<'_>) -> Option<&str> {
    match side {
        Side::Absent => Some(""),
        Side::Bytes(b) => as_text(b),
        Side::TooLarge => None,
    }
}

/// A `fmt::Write` that keeps the first `cap` bytes and then fails, which
/// stops the formatting early.
struct CappedWriter {
    out: String,
    cap: usize,
    truncated: bool,
}

impl fmt::Write for CappedWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.cap.saturating_sub(self.out.len());
        if s.len() <= room {
            self.out.push_str(s);
            return Ok(());
        }
        let mut end = room;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.out.push_str(&s[..end]);
        self.truncated = true;
        Err(fmt::Error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: usize = 64 * 1024;

    #[test]
    fn modified_text_gives_the_exact_unified_diff() {
        let old = "one\ntwo\nthree\nfour\nfive\nsix\nseven\neight\nnine\n";
        let new = "one\ntwo\nthree\nfour\nFIVE\nsix\nseven\neight\nnine\nten\n";
        let d = unified(
            "src/n.txt",
            Side::Bytes(old.as_bytes()),
            Side::Bytes(new.as_bytes()),
            CAP,
        );
        let expected = "\
--- a/src/n.txt
+++ b/src/n.txt
@@ -2,8 +2,9 @@
 two
 three
 four
-five
+FIVE
 six
 seven
 eight
 nine
+ten
";
        assert_eq!(d.text.as_deref(), Some(expected));
        assert!(!d.truncated);
    }

    #[test]
    fn added_and_deleted_files_diff_against_dev_null() {
        let added = unified("n.txt", Side::Absent, Side::Bytes(b"x\ny\n"), CAP);
        assert_eq!(
            added.text.as_deref(),
            Some("--- /dev/null\n+++ b/n.txt\n@@ -0,0 +1,2 @@\n+x\n+y\n")
        );
        let deleted = unified("n.txt", Side::Bytes(b"x\n"), Side::Absent, CAP);
        assert_eq!(
            deleted.text.as_deref(),
            Some("--- a/n.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-x\n")
        );
    }

    #[test]
    fn missing_final_newline_is_marked() {
        let d = unified("f", Side::Bytes(b"a\n"), Side::Bytes(b"a\nb"), CAP);
        assert_eq!(
            d.text.as_deref(),
            Some("--- a/f\n+++ b/f\n@@ -1 +1,2 @@\n a\n+b\n\\ No newline at end of file\n")
        );
    }

    #[test]
    fn binary_and_large_files_have_no_diff() {
        let nul = unified("b", Side::Bytes(b"a\n"), Side::Bytes(b"a\0b\n"), CAP);
        assert_eq!(nul, CappedDiff::NONE);
        let not_utf8 = unified("b", Side::Absent, Side::Bytes(&[0xff, 0xfe, b'\n']), CAP);
        assert_eq!(not_utf8, CappedDiff::NONE);
        let big = vec![b'a'; TEXT_LIMIT + 1];
        assert_eq!(
            unified("b", Side::Bytes(b"a"), Side::Bytes(&big), CAP),
            CappedDiff::NONE
        );
        assert_eq!(
            unified("b", Side::TooLarge, Side::Bytes(b"a"), CAP),
            CappedDiff::NONE
        );
        // Exactly the limit is still text.
        let limit = vec![b'a'; TEXT_LIMIT];
        assert!(unified("b", Side::Absent, Side::Bytes(&limit), 16)
            .text
            .is_some());
    }

    #[test]
    fn same_text_has_no_diff() {
        assert_eq!(
            unified("s", Side::Bytes(b"x\n"), Side::Bytes(b"x\n"), CAP),
            CappedDiff::NONE
        );
    }

    #[test]
    fn cap_cuts_on_a_char_boundary() {
        let new = "ääääääääää\n".repeat(100);
        let full = unified("u", Side::Absent, Side::Bytes(new.as_bytes()), CAP);
        let full = full.text.unwrap();
        // "--- /dev/null\n+++ b/u\n" is 22 bytes, "@@ -0,0 +1,100 @@\n" 18,
        // then '+' at byte 40 and 'ä' (2 bytes) at 41 and 43: a cap of 44
        // falls inside the second 'ä'.
        let d = unified("u", Side::Absent, Side::Bytes(new.as_bytes()), 44);
        assert!(d.truncated);
        let text = d.text.unwrap();
        assert_eq!(text.len(), 43);
        assert!(full.starts_with(&text));
        assert!(text.ends_with("+ä"));
        let exact = unified("u", Side::Absent, Side::Bytes(new.as_bytes()), full.len());
        assert_eq!(exact.text.as_deref(), Some(full.as_str()));
        assert!(!exact.truncated);
    }
}
