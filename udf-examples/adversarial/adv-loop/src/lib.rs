//! Loops forever: the call must end with `out of fuel`.
use converge_udf_sdk::{Conflict, Decision};

/// Never returns.
pub fn resolve(c: &Conflict) -> Decision {
    let mut n = c.versions.len() as u64;
    loop {
        n = std::hint::black_box(n.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}

converge_udf_sdk::resolver!(resolve);
