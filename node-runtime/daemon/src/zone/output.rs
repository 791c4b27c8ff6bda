//! Captured output with a cap: bytes past the cap are counted, not kept.

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capture {
    pub data: Vec<u8>,
    pub cap: usize,
    pub dropped: u64,
}

impl Capture {
    pub fn new(cap: usize) -> Capture {
        Capture {
            data: Vec::new(),
            cap,
            dropped: 0,
        }
    }

    /// Keeps what fits under the cap; returns how many bytes it kept (the
    /// head of `chunk`).
    pub fn push(&mut self, chunk: &[u8]) -> usize {
        let room = self.cap.saturating_sub(self.data.len());
        let keep = room.min(chunk.len());
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
}
