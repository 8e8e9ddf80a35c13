//! Imports `env.now`, which the ABI does not allow: refused at install, naming the import.
use converge_udf_sdk::{Conflict, Decision};

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod host {
    #[link(wasm_import_module = "env")]
    unsafe extern "C" {
        pub fn now() -> i64;
    }
}

/// Picks by the host's clock, which would make regions disagree.
pub fn resolve(c: &Conflict) -> Decision {
    #[cfg(target_arch = "wasm32")]
    #[allow(unsafe_code)]
    // SAFETY: never runs: the host refuses the module at install.
    let now = unsafe { host::now() };
    #[cfg(not(target_arch = "wasm32"))]
    let now = 0i64;
    Decision::Pick(now.unsigned_abs() as usize % c.versions.len())
}

converge_udf_sdk::resolver!(resolve);
