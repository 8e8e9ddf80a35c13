//! # converge-udf-examples
//!
//! converge's example resolvers, compiled to WebAssembly by this crate's build script from the
//! crates under `udf-examples/resolvers` and `udf-examples/adversarial`, plus the resolver
//! written by hand in WAT from `docs/abi.md` alone. Tests, benchmarks and `converge demo`
//! take the modules from here.
//!
//! ```
//! let cart = converge_udf_examples::CART_MERGE;
//! assert_eq!(&cart[..4], b"\0asm");
//! assert!(converge_udf_examples::by_name("highest-version").is_some());
//! ```

/// Merges concurrent shopping carts line by line (`resolvers/cart-merge`).
pub const CART_MERGE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cart_merge.wasm"));
/// Last-writer-wins on the application's `version` field (`resolvers/highest-version`).
pub const HIGHEST_VERSION: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/highest_version.wasm"));
/// Per-field last-writer-wins on application timestamps (`resolvers/field-merge`).
pub const FIELD_MERGE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/field_merge.wasm"));
/// A live version beats a delete for flagged items (`resolvers/keep-live`).
pub const KEEP_LIVE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/keep_live.wasm"));
/// Written by hand in WAT from `docs/abi.md`: defers every conflict to the feed for review.
pub const REVIEW_WAT: &str = include_str!("../wat/review.wat");

/// Adversarial resolvers: each misbehaves in one way the host must contain.
pub mod adversarial {
    /// Panics with `cart <id> cannot be merged`.
    pub const PANIC: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/adv_panic.wasm"));
    /// Loops forever.
    pub const LOOP: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/adv_loop.wasm"));
    /// Allocates without bound.
    pub const MEMORY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/adv_memory.wasm"));
    /// Recurses without bound.
    pub const RECURSION: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/adv_recursion.wasm"));
    /// Merges into a body with another `id`.
    pub const CHANGES_ID: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/adv_changes_id.wasm"));
    /// Answers bytes that are not JSON.
    pub const NOT_JSON: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/adv_not_json.wasm"));
    /// Answers 5 MiB, over the output limit.
    pub const HUGE_ANSWER: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/adv_huge_answer.wasm"));
    /// Imports `env.now`, which the ABI does not allow.
    pub const BAD_IMPORT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/adv_bad_import.wasm"));
    /// Declares ABI version 2.
    pub const ABI_VERSION: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/adv_abi_version.wasm"));
}

/// Every compiled example, by crate name (the WAT one is text: see [`REVIEW_WAT`]).
pub const ALL: &[(&str, &[u8])] = &[
    ("cart-merge", CART_MERGE),
    ("highest-version", HIGHEST_VERSION),
    ("field-merge", FIELD_MERGE),
    ("keep-live", KEEP_LIVE),
    ("adv-panic", adversarial::PANIC),
    ("adv-loop", adversarial::LOOP),
    ("adv-memory", adversarial::MEMORY),
    ("adv-recursion", adversarial::RECURSION),
    ("adv-changes-id", adversarial::CHANGES_ID),
    ("adv-not-json", adversarial::NOT_JSON),
    ("adv-huge-answer", adversarial::HUGE_ANSWER),
    ("adv-bad-import", adversarial::BAD_IMPORT),
    ("adv-abi-version", adversarial::ABI_VERSION),
];

/// The compiled module of the example crate called `name`.
pub fn by_name(name: &str) -> Option<&'static [u8]> {
    ALL.iter().find(|(n, _)| *n == name).map(|(_, m)| *m)
}
