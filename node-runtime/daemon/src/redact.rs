//! The externalization gate: nothing leaves a zone carrying a secret.
//! Every secret value in output, events, errors and diffs becomes
//! `[REDACTED:NAME]`, also when the task wrote it in pieces.

use crate::secrets::Secret;

#[derive(Clone, Default)]
pub struct Redactor {
    /// (marker, value), longest value first so a secret containing another
    /// is replaced whole.
    secrets: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Redactor {
    pub fn new(secrets: &[Secret]) -> Redactor {
        let mut list: Vec<(Vec<u8>, Vec<u8>)> = secrets
            .iter()
            .filter(|s| !s.value.is_empty())
            .map(|s| {
                (
                    format!("[REDACTED:{}]", s.name).into_bytes(),
                    s.value.clone(),
                )
            })
            .collect();
        list.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
        Redactor { secrets: list }
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Replaces every whole occurrence of every secret.
    pub fn bytes(&self, data: &[u8]) -> Vec<u8> {
        if self.secrets.is_empty() {
            return data.to_vec();
        }
        let mut out = Vec::with_capacity(data.len());
        let mut i = 0;
        'scan: while i < data.len() {
            for (marker, value) in &self.secrets {
                if data[i..].starts_with(value) {
                    out.extend_from_slice(marker);
                    i += value.len();
                    continue 'scan;
                }
            }
            out.push(data[i]);
            i += 1;
        }
        out
    }

    /// Like [`Redactor::bytes`], and also masks a tail that is the start of
    /// a secret: for output that was cut (at a cap, or by a kill).
    pub fn cut(&self, data: &[u8]) -> Vec<u8> {
        let mut out = self.bytes(data);
        let tail = self.partial_tail(&out);
        if tail > 0 {
            let keep = out.len() - tail;
            out.truncate(keep);
            out.extend_from_slice(b"[REDACTED]");
        }
        out
    }

    /// Length of the longest suffix of `data` that is a proper prefix of a
    /// secret.
    fn partial_tail(&self, data: &[u8]) -> usize {
        let mut best = 0;
        for (_, value) in &self.secrets {
            for len in (1..value.len()).rev() {
                if len <= data.len() && data.ends_with(&value[..len]) {
                    best = best.max(len);
                    break;
                }
            }
        }
        best
    }

    pub fn text(&self, s: &str) -> String {
        if self.secrets.is_empty() {
            return s.to_string();
        }
        String::from_utf8_lossy(&self.bytes(s.as_bytes())).into_owned()
    }
}

/// Redacts a stream of chunks: holds back a tail that could be the start
/// of a secret until the next chunk (or the end) decides it.
pub struct StreamRedactor {
    redactor: Redactor,
    pending: Vec<u8>,
}

impl StreamRedactor {
    pub fn new(redactor: Redactor) -> StreamRedactor {
        StreamRedactor {
            redactor,
            pending: Vec::new(),
        }
    }

    /// What can be released after `chunk`: everything up to the first
    /// place where a secret may be starting but is not complete yet.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.redactor.is_empty() {
            return chunk.to_vec();
        }
        self.pending.extend_from_slice(chunk);
        let data = &self.pending;
        let mut out = Vec::with_capacity(data.len());
        let mut i = 0;
        'scan: while i < data.len() {
            for (marker, value) in &self.redactor.secrets {
                if data[i..].starts_with(value) {
                    out.extend_from_slice(marker);
                    i += value.len();
                    continue 'scan;
                }
            }
            if self
                .redactor
                .secrets
                .iter()
                .any(|(_, v)| v.starts_with(&data[i..]))
            {
                break;
            }
            out.push(data[i]);
            i += 1;
        }
        self.pending.drain(..i);
        out
    }

    /// How many bytes pushed are held back (not yet released).
    pub fn held(&self) -> usize {
        self.pending.len()
    }

    /// The held tail, at the end of the stream.
    pub fn finish(&mut self) -> Vec<u8> {
        let rest = std::mem::take(&mut self.pending);
        self.redactor.cut(&rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r() -> Redactor {
        Redactor::new(&[Secret {
            name: "TOKEN".into(),
            delivery: crate::secrets::Delivery::Env("TOKEN".into()),
            value: b"sk-secret-123".to_vec(),
        }])
    }

    #[test]
    fn whole_values_are_replaced() {
        assert_eq!(
            r().text("a sk-secret-123 b sk-secret-123"),
            "a [REDACTED:TOKEN] b [REDACTED:TOKEN]"
        );
        assert_eq!(r().text("nothing here"), "nothing here");
    }

    #[test]
    fn a_cut_tail_is_masked() {
        assert_eq!(r().cut(b"value: sk-sec"), b"value: [REDACTED]");
        assert_eq!(r().cut(b"done\n"), b"done\n");
    }

    #[test]
    fn a_secret_written_one_byte_at_a_time_never_leaks() {
        let mut s = StreamRedactor::new(r());
        let mut out = Vec::new();
        for b in b"x=sk-secret-123;y" {
            out.extend(s.push(&[*b]));
        }
        out.extend(s.finish());
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "x=[REDACTED:TOKEN];y"
        );
    }

    #[test]
    fn a_self_overlapping_secret_leaks_nothing() {
        let r = Redactor::new(&[Secret {
            name: "A".into(),
            delivery: crate::secrets::Delivery::Fd(3),
            value: b"aaaa".to_vec(),
        }]);
        let mut s = StreamRedactor::new(r);
        let mut out = s.push(b"xaaaaa");
        out.extend(s.push(b"y"));
        out.extend(s.finish());
        assert_eq!(String::from_utf8(out).expect("utf8"), "x[REDACTED:A]ay");
    }

    #[test]
    fn held_bytes_that_turn_out_harmless_are_released() {
        let mut s = StreamRedactor::new(r());
        let mut out = s.push(b"sk-");
        assert!(out.is_empty(), "a possible secret start is held");
        out.extend(s.push(b"other"));
        out.extend(s.finish());
        assert_eq!(out, b"sk-other");
    }
}
