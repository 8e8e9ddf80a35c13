//! An independent model of docs/queries.md for testing `converge-query`: a seeded PRNG,
//! random items and queries (the model's own syntax tree, rendered to text), and a
//! reference evaluator written from the document's numbered steps.
//!
//! Nothing here comes from `query/src`: the point is two implementations of one document.
//! Used by `tests/differential.rs`, `tests/fuzz_replay.rs` and the `query` fuzz target
//! (`fuzz/fuzz_targets/query.rs`, whose check is [`check::check`]).

pub mod ast;
pub mod check;
pub mod generate;
pub mod items;
pub mod reference;

/// SplitMix64: small, seedable, and good enough to pick test cases. Made
/// [`from_bytes`](Rng::from_bytes), it takes its choices from the bytes first (so that a
/// fuzzer's mutations change choices, not a hash of them), then from the generator.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
    bytes: Vec<u8>,
    at: usize,
}

impl Rng {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng {
            state: seed ^ 0x9e37_79b9_7f4a_7c15,
            bytes: Vec::new(),
            at: 0,
        }
    }

    /// A generator whose choices are `bytes` (one or two a choice), then pseudo-random.
    pub fn from_bytes(bytes: &[u8]) -> Rng {
        Rng {
            state: bytes.len() as u64,
            bytes: bytes.to_vec(),
            at: 0,
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        let width = if n <= 256 { 1 } else { 2 };
        if let Some(b) = self.bytes.get(self.at..self.at + width) {
            self.at += width;
            let x = b.iter().fold(0usize, |acc, &b| acc << 8 | b as usize);
            return x % n;
        }
        (self.next_u64() % n as u64) as usize
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    /// One element of `xs` (not empty).
    pub fn pick<'x, T>(&mut self, xs: &'x [T]) -> &'x T {
        &xs[self.below(xs.len())]
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }
}
