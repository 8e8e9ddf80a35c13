//! # converge-udf-sdk
//!
//! The guest side of converge's resolver ABI (version 1): the typed input a resolver receives
//! and the decision it returns. A resolver is a plain Rust function from [`Conflict`] to
//! [`Decision`], so it can be unit-tested natively with `cargo test` before it is compiled to
//! WebAssembly.
//!
//! ```
//! use converge_udf_sdk::{Conflict, Decision, resolve_json};
//!
//! // Keep the version with the most lines; never resurrect a delete.
//! fn most_lines(c: &Conflict) -> Decision {
//!     if c.is_tombstone() {
//!         return Decision::Delete;
//!     }
//!     let lines = |i: usize| c.versions[i].item.as_ref().and_then(|b| b["lines"].as_array()).map_or(0, Vec::len);
//!     let best = (0..c.versions.len()).max_by_key(|&i| lines(i)).unwrap_or(0);
//!     Decision::Pick(best)
//! }
//!
//! let input = r#"{"abi":1,"container":"carts","id":"c1","partitionKey":"alice","versions":[
//!   {"item":{"id":"c1","lines":[1]},"deleted":false,"region":"west","timestamp":2,"logical":0},
//!   {"item":{"id":"c1","lines":[1,2]},"deleted":false,"region":"east","timestamp":1,"logical":0}]}"#;
//! assert_eq!(resolve_json(input.as_bytes(), most_lines), r#"{"pick":1}"#);
//! ```
//!
//! To build it as a resolver, export it with [`resolver!`] in a `cdylib` crate and compile for
//! `wasm32-unknown-unknown`:
//!
//! ```
//! use converge_udf_sdk::{Conflict, Decision};
//!
//! fn newest(_: &Conflict) -> Decision {
//!     Decision::Pick(0)
//! }
//!
//! // Exports the ABI when compiled to wasm32; natively it expands to nothing.
//! converge_udf_sdk::resolver!(newest);
//! ```
//!
//! The macro exports the ABI's functions, installs a panic hook that sends the panic message to
//! the host before the guest traps, and [`log`] sends diagnostics to the host.
//!
//! For speed, `resolver!(raw: f)` hands `f` the input bytes, and [`view::ConflictView`] finds
//! the fields a resolver reads without decoding the rest. On wasm32 the SDK's global allocator
//! is a bump allocator in the module's initial memory (feature `allocator`, on by default),
//! which keeps the fresh instance every call gets cheap. [`Conflict::for_test`] builds inputs
//! for unit tests. The guide is `docs/resolvers.md` in the repository.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[cfg(feature = "arbitrary")]
pub mod fuzz;
pub mod guest;
pub mod view;

#[cfg(all(target_arch = "wasm32", feature = "allocator"))]
#[global_allocator]
static ALLOCATOR: guest::BumpAllocator = guest::BumpAllocator::new();

/// The ABI version this SDK implements.
pub const ABI_VERSION: i32 = 1;

/// One sibling, as the host hands it over (canonical order: the LWW winner first).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Version {
    /// The item's body, `_ts` included; `None` for a tombstone.
    pub item: Option<Value>,
    /// Whether this version is a delete.
    pub deleted: bool,
    /// The region that wrote it.
    pub region: String,
    /// HLC physical time, ms.
    pub timestamp: u64,
    /// HLC logical counter.
    pub logical: u32,
}

/// A conflict: every sibling of one item, in canonical order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Conflict {
    /// ABI version of the input.
    pub abi: i32,
    /// Container name.
    pub container: String,
    /// Item id.
    pub id: String,
    /// Partition key value.
    pub partition_key: Value,
    /// The siblings, at least two, the LWW winner first.
    pub versions: Vec<Version>,
}

impl Conflict {
    /// Cosmos's `incoming`: the first version in canonical order.
    pub fn incoming(&self) -> &Version {
        &self.versions[0]
    }

    /// Cosmos's `existing`: the second version in canonical order.
    pub fn existing(&self) -> &Version {
        &self.versions[1]
    }

    /// Cosmos's `conflicting`: the rest.
    pub fn conflicting(&self) -> &[Version] {
        &self.versions[2..]
    }

    /// Cosmos's `isTombstone`: whether any version is a delete.
    pub fn is_tombstone(&self) -> bool {
        self.versions.iter().any(|v| v.deleted)
    }

    /// The bodies of the live versions that are JSON objects, in canonical order (so the
    /// first is the LWW winner among them).
    pub fn live_objects(&self) -> Vec<&serde_json::Map<String, Value>> {
        self.versions
            .iter()
            .filter_map(|v| v.item.as_ref().and_then(Value::as_object))
            .collect()
    }

    /// A conflict for unit tests: `items` in canonical order (`None` for a delete), written
    /// by regions `r0`, `r1`, … at decreasing times, as the host would order them.
    pub fn for_test(
        container: &str,
        id: &str,
        partition_key: Value,
        items: Vec<Option<Value>>,
    ) -> Self {
        let n = items.len() as u64;
        Conflict {
            abi: ABI_VERSION,
            container: container.into(),
            id: id.into(),
            partition_key,
            versions: items
                .into_iter()
                .enumerate()
                .map(|(k, item)| Version {
                    deleted: item.is_none(),
                    item,
                    region: format!("r{k}"),
                    timestamp: 1_764_230_400_000 + (n - k as u64) * 1000,
                    logical: 0,
                })
                .collect(),
        }
    }
}

/// What a resolver decides.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Show the version at this index of [`Conflict::versions`].
    Pick(usize),
    /// Show this new body (same `id` and partition key).
    Merge(Value),
    /// Delete the item.
    Delete,
    /// Decide nothing: the conflict goes to the conflicts feed with this reason.
    Defer(String),
}

impl Decision {
    /// The ABI's output JSON.
    pub fn to_json(&self) -> String {
        match self {
            Decision::Pick(i) => format!(r#"{{"pick":{i}}}"#),
            Decision::Merge(body) => format!(r#"{{"merge":{body}}}"#),
            Decision::Delete => r#"{"delete":true}"#.to_owned(),
            Decision::Defer(reason) => format!(r#"{{"defer":{}}}"#, Value::from(reason.as_str())),
        }
    }
}

/// Decodes ABI input, runs `resolver`, and encodes its decision. Input that is not a valid
/// conflict defers with the decoding error as the reason, so the host records it.
pub fn resolve_json(input: &[u8], resolver: impl Fn(&Conflict) -> Decision) -> String {
    match serde_json::from_slice::<Conflict>(input) {
        Ok(c) if c.versions.len() >= 2 => resolver(&c).to_json(),
        Ok(_) => Decision::Defer("input has fewer than two versions".into()).to_json(),
        Err(e) => Decision::Defer(format!("cannot decode the input: {e}")).to_json(),
    }
}

/// Sends a diagnostic message to the host (kept with the call's report). Natively, for unit
/// tests, it prints to standard error.
pub fn log(message: &str) {
    guest::log(message);
}

/// Exports a function `fn(&Conflict) -> Decision` as the module's resolver: defines
/// `converge_abi_version`, `converge_alloc` and `converge_resolve` when compiling to
/// WebAssembly, and nothing natively (so the same crate's unit tests call the function
/// directly).
///
/// `resolver!(raw: f)` exports `f: fn(&[u8]) -> Vec<u8>` instead: it receives the input JSON
/// bytes and returns the output JSON bytes, for resolvers that decode only what they need.
/// The host validates whatever it returns (ABI.md's invalid answers).
#[macro_export]
macro_rules! resolver {
    (raw: $resolver:path) => {
        $crate::__exports!(|ptr, len| $crate::guest::resolve_raw(ptr, len, $resolver));
    };
    ($resolver:path) => {
        $crate::__exports!(|ptr, len| $crate::guest::resolve(ptr, len, $resolver));
    };
}

/// The ABI's three exports around a `converge_resolve` body; used by [`resolver!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __exports {
    (|$ptr:ident, $len:ident| $resolve:expr) => {
        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub extern "C" fn converge_abi_version() -> i32 {
            $crate::ABI_VERSION
        }

        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub extern "C" fn converge_alloc(len: i32) -> i32 {
            $crate::guest::alloc(len)
        }

        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub extern "C" fn converge_resolve($ptr: i32, $len: i32) -> i64 {
            $resolve
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_encode_as_the_abi_says() {
        assert_eq!(Decision::Pick(2).to_json(), r#"{"pick":2}"#);
        assert_eq!(Decision::Delete.to_json(), r#"{"delete":true}"#);
        assert_eq!(Decision::Defer("x".into()).to_json(), r#"{"defer":"x"}"#);
        assert_eq!(
            Decision::Merge(serde_json::json!({"id": "a"})).to_json(),
            r#"{"merge":{"id":"a"}}"#
        );
    }

    #[test]
    fn bad_input_defers_instead_of_panicking() {
        assert!(
            resolve_json(b"not json", |_| Decision::Delete)
                .starts_with(r#"{"defer":"cannot decode"#)
        );
        let one = r#"{"abi":1,"container":"c","id":"i","partitionKey":1,"versions":[
            {"item":null,"deleted":true,"region":"w","timestamp":1,"logical":0}]}"#;
        assert!(resolve_json(one.as_bytes(), |_| Decision::Delete).contains("fewer than two"));
    }
}
