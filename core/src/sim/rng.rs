//! A small deterministic generator (SplitMix64), so a seed replays exactly.

/// Deterministic pseudo-random numbers from a seed, or first from a tape of bytes (so a fuzzer
/// can steer every choice), then from the seed.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
    tape: Vec<u8>,
    pos: usize,
}

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng {
            state: seed ^ 0x5DEE_CE66_D1CE_4E5B,
            tape: Vec::new(),
            pos: 0,
        }
    }

    /// A generator whose first numbers come from `tape`, 8 bytes each (a shorter tail is
    /// zero-padded); after the tape, from `seed`.
    pub fn with_tape(seed: u64, tape: &[u8]) -> Self {
        Rng {
            tape: tape.to_vec(),
            ..Rng::new(seed)
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        if self.pos < self.tape.len() {
            let mut b = [0u8; 8];
            let end = (self.pos + 8).min(self.tape.len());
            b[..end - self.pos].copy_from_slice(&self.tape[self.pos..end]);
            self.pos = end;
            return u64::from_le_bytes(b);
        }
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }

    /// Shuffles in place.
    pub fn shuffle<T>(&mut self, xs: &mut [T]) {
        for i in (1..xs.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            xs.swap(i, j);
        }
    }
}
