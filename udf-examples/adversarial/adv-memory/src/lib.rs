//! Allocates without bound: the call must end with `memory limit`.
use converge_udf_sdk::{Conflict, Decision};

/// Keeps every megabyte it allocates.
pub fn resolve(c: &Conflict) -> Decision {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(Vec::with_capacity((1 << 20) + c.versions.len()));
        std::hint::black_box(&hoard);
    }
}

converge_udf_sdk::resolver!(resolve);
