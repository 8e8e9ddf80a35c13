//! Recurses without bound: the call must end with `stack overflow`.
use converge_udf_sdk::{Conflict, Decision};

/// Counts down from `n` one call at a time (never inlined into a loop).
#[inline(never)]
pub fn depth(n: u64) -> u64 {
    if n == 0 {
        0
    } else {
        1 + depth(std::hint::black_box(n - 1))
    }
}

/// Recurses about 2^64 calls deep.
pub fn resolve(c: &Conflict) -> Decision {
    Decision::Pick(depth(std::hint::black_box(u64::MAX - c.versions.len() as u64)) as usize)
}

converge_udf_sdk::resolver!(resolve);
