//! Captured output with a cap: bytes past the cap are counted, not kept;
//! and when each piece came (`logs --timestamps`).

/// Marks kept at most (one per piece of output that came at a new
/// millisecond); past it, later pieces share the last mark's time.
pub const MAX_MARKS: usize = 65_536;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capture {
    pub data: Vec<u8>,
    pub cap: usize,
    pub dropped: u64,
    /// `(offset in data, ms since the epoch)`: from that offset on, the
    /// bytes came at that time (until the next mark).
    pub marks: Vec<(u64, u64)>,
}

impl Capture {
    pub fn new(cap: usize) -> Capture {
        Capture {
            data: Vec::new(),
            cap,
            dropped: 0,
            marks: Vec::new(),
        }
    }

    /// Keeps what fits under the cap; returns how many bytes it kept (the
    /// head of `chunk`).
    pub fn push(&mut self, chunk: &[u8]) -> usize {
        self.push_at(chunk, None)
    }

    /// [`Capture::push`] of a piece that came at `time_ms`.
    pub fn push_at(&mut self, chunk: &[u8], time_ms: Option<u64>) -> usize {
        let room = self.cap.saturating_sub(self.data.len());
        let keep = room.min(chunk.len());
        if let Some(t) = time_ms.filter(|_| keep > 0) {
            let new_time = self.marks.last().is_none_or(|&(_, last)| last != t);
            if new_time && self.marks.len() < MAX_MARKS {
                self.marks.push((self.data.len() as u64, t));
            }
        }
        self.data.extend_from_slice(&chunk[..keep]);
        self.dropped += (chunk.len() - keep) as u64;
        keep
    }

    pub fn truncated(&self) -> bool {
        self.dropped > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_up_to_the_cap_and_counts_the_rest() {
        let mut c = Capture::new(5);
        c.push(b"abc");
        c.push(b"defgh");
        assert_eq!(c.data, b"abcde");
        assert_eq!(c.dropped, 3);
        assert!(c.truncated());
    }

    #[test]
    fn pieces_keep_the_time_they_came() {
        let mut c = Capture::new(10);
        c.push_at(b"ab", Some(5));
        c.push_at(b"c", Some(5));
        c.push_at(b"de", Some(7));
        c.push_at(b"0123456789", Some(9));
        c.push_at(b"late", Some(11));
        assert_eq!(c.marks, [(0, 5), (3, 7), (5, 9)]);
    }
}
