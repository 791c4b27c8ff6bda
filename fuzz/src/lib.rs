//! Rauha's fuzz tests, on stable Rust, in the test command.
//!
//! A target is a function of bytes that panics when an input breaks a
//! property (a crash, an error of two lines, a round trip that changes the
//! value). [`run`] feeds it, first every input of its corpus
//! (`fuzz/corpus/<target>/`, kept in the repository: seeds and each
//! failure found before, which stay regression tests), then inputs mutated
//! from them (bytes flipped, set to edge values, inserted, deleted,
//! repeated, spliced with another input or with a word of the target's
//! dictionary) until its time is up: `RAUHA_FUZZ_SECONDS`, 10 by default.
//! An input that grows the set of distinct outcomes the target reports is
//! kept for further mutation, a coarse stand-in for coverage.
//!
//! A failing input is written to `target/fuzz-failures/<target>/` and the
//! test fails naming it and the seed (`RAUHA_FUZZ_SEED` replays a run);
//! copied into the corpus, it is a regression test from then on.
//!
//! No dependency: the generator is a xorshift, the outcome a string.

use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What a run did, for the test's output and docs/security.md.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub target: String,
    pub inputs: u64,
    pub corpus: usize,
    pub outcomes: usize,
    pub seconds: u64,
    pub seed: u64,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "fuzz {}: {} inputs in {} s ({} corpus entries, {} distinct outcomes, seed {}), no failure",
            self.target, self.inputs, self.seconds, self.corpus, self.outcomes, self.seed
        )
    }
}

/// The property every target checks of an error: one line, shorter than
/// `max_bytes` (`usize::MAX` for no bound).
pub fn assert_one_line(line: &str, max_bytes: usize) {
    assert!(!line.contains('\n'), "an error of two lines: {line:?}");
    assert!(
        line.len() < max_bytes,
        "an error of {} bytes: {line}",
        line.len()
    );
}

/// The corpus directory of `target` in the repository.
pub fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

/// Runs `target` on its corpus, then on mutations of it for the time
/// budget. `check` returns a short outcome label (which error, which
/// branch); it panics on a broken property. `dictionary` holds words the
/// inputs are made of (keys, tokens), spliced in by the mutator.
pub fn run(target: &str, dictionary: &[&[u8]], check: impl Fn(&[u8]) -> String) -> Report {
    run_seeded(target, Vec::new(), dictionary, check)
}

/// [`run`], with seed inputs made in code (encoded messages) besides the
/// corpus directory's, which then holds the regressions alone.
pub fn run_seeded(
    target: &str,
    seeds: Vec<Vec<u8>>,
    dictionary: &[&[u8]],
    check: impl Fn(&[u8]) -> String,
) -> Report {
    let seconds = std::env::var("RAUHA_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10u64);
    let seed = std::env::var("RAUHA_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
        | 1;
    let mut pool = seeds;
    pool.extend(load(&corpus_dir(target)));
    assert!(
        !pool.is_empty(),
        "fuzz {target}: no seed and no corpus in {}; add seed inputs there",
        corpus_dir(target).display()
    );
    let corpus = pool.len();
    let mut outcomes = HashSet::new();
    let mut inputs = 0u64;
    let attempt = |input: &[u8], outcomes: &mut HashSet<String>| -> bool {
        match catch_unwind(AssertUnwindSafe(|| check(input))) {
            Ok(outcome) => outcomes.insert(outcome),
            Err(panic) => fail(target, seed, input, &panic),
        }
    };
    for input in pool.clone() {
        attempt(&input, &mut outcomes);
        inputs += 1;
    }
    let mut rng = Rng(seed);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        for _ in 0..64 {
            let base = &pool[rng.below(pool.len())];
            let other = &pool[rng.below(pool.len())];
            let input = mutate(&mut rng, base, other, dictionary);
            inputs += 1;
            if attempt(&input, &mut outcomes) && pool.len() < 4096 {
                pool.push(input);
            }
        }
    }
    let report = Report {
        target: target.to_string(),
        inputs,
        corpus,
        outcomes: outcomes.len(),
        seconds,
        seed,
    };
    println!("{report}");
    report
}

fn load(dir: &Path) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .filter(|p| p.is_file())
        .filter_map(|p| std::fs::read(p).ok())
        .collect()
}

fn fail(target: &str, seed: u64, input: &[u8], panic: &Box<dyn std::any::Any + Send>) -> ! {
    let why = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic".into());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/fuzz-failures")
        .join(target);
    let _ = std::fs::create_dir_all(&dir);
    let file = dir.join(format!("{:016x}", fnv(input)));
    let _ = std::fs::write(&file, input);
    panic!(
        "fuzz {target}: input {} ({} bytes, seed {seed}) failed: {why}; once fixed, copy it into {} as a regression test",
        file.display(),
        input.len(),
        corpus_dir(target).display()
    )
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Bytes the mutator sets: edges of integers and text.
const EDGES: &[u8] = &[
    0, 1, 0x7f, 0x80, 0xff, b'\n', b'"', b'\\', b'/', b'.', b'=', b'[', b'-',
];

fn mutate(rng: &mut Rng, base: &[u8], other: &[u8], dictionary: &[&[u8]]) -> Vec<u8> {
    let mut out = base.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(8) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] = EDGES[rng.below(EDGES.len())];
            }
            2 => {
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                out.splice(at..at, bytes);
            }
            3 if !out.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(out.len());
                out.drain(at.min(end)..end);
            }
            4 if !out.is_empty() => {
                let start = rng.below(out.len());
                let end = (start + 1 + rng.below(32)).min(out.len());
                let piece = out[start..end].to_vec();
                for _ in 0..=rng.below(3) {
                    out.splice(at..at, piece.iter().copied());
                }
            }
            5 if !other.is_empty() => {
                let start = rng.below(other.len());
                let end = (start + 1 + rng.below(64)).min(other.len());
                out.splice(at..at, other[start..end].iter().copied());
            }
            6 if !dictionary.is_empty() => {
                let word = dictionary[rng.below(dictionary.len())];
                out.splice(at..at, word.iter().copied());
            }
            _ => {
                // A number at its edge, as text.
                let n = [
                    "0",
                    "-1",
                    "18446744073709551616",
                    "9223372036854775808",
                    "1e400",
                    "nan",
                ][rng.below(6)];
                out.splice(at..at, n.bytes());
            }
        }
    }
    out.truncate(1 << 16);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_stay_bounded_and_vary() {
        let mut rng = Rng(42);
        let mut seen = HashSet::new();
        for _ in 0..1000 {
            let m = mutate(&mut rng, b"[resources]\npids_max = 4\n", b"x", &[b"key"]);
            assert!(m.len() <= 1 << 16);
            seen.insert(m);
        }
        assert!(seen.len() > 900, "{}", seen.len());
    }
}
