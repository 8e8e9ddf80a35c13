//! Declares ABI version 2, which this host does not speak: refused at install.
//! (It exports the ABI by hand instead of through `resolver!`, which always declares 1.)
// Exporting functions by name (`no_mangle`) is what the `unsafe_code` lint flags.
#![allow(unsafe_code)]
use converge_udf_sdk::{Conflict, Decision};

/// Would pick the first version.
pub fn resolve(_: &Conflict) -> Decision {
    Decision::Pick(0)
}

/// The version this module claims.
#[cfg_attr(target_arch = "wasm32", unsafe(no_mangle))]
pub extern "C" fn converge_abi_version() -> i32 {
    2
}

/// See ABI.md.
#[cfg(target_arch = "wasm32")]
#[unsafe(no_mangle)]
pub extern "C" fn converge_alloc(len: i32) -> i32 {
    converge_udf_sdk::guest::alloc(len)
}

/// See ABI.md.
#[cfg(target_arch = "wasm32")]
#[unsafe(no_mangle)]
pub extern "C" fn converge_resolve(ptr: i32, len: i32) -> i64 {
    converge_udf_sdk::guest::resolve(ptr, len, resolve)
}
