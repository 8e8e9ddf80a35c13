//! # converge-checks
//!
//! What converge's fuzz targets check, as plain functions over bytes: each panics with the
//! reason when a property does not hold. The cargo-fuzz targets in `fuzz/` are one line over
//! these, and `tests/replay.rs` replays every committed seed and every crash input found so far
//! through them in the ordinary test suite.
//!
//! ```
//! // Any bytes are fine input: the check panics only when a property is broken.
//! converge_checks::sdk_input::check(b"{\"abi\":1}");
//! converge_checks::sandbox::check(&[0u8; 64]);
//! ```

pub mod converge;
pub mod http_api;
pub mod lww_order;
pub mod sandbox;
pub mod sdk_input;
pub mod store_model;

/// Up to `max` values decoded one after another from `u`, until it runs out.
pub(crate) fn decode_many<'a, T: arbitrary::Arbitrary<'a>>(
    u: &mut arbitrary::Unstructured<'a>,
    max: usize,
) -> Vec<T> {
    let mut out = Vec::new();
    while out.len() < max && !u.is_empty() {
        match u.arbitrary::<T>() {
            Ok(v) => out.push(v),
            Err(_) => break,
        }
    }
    out
}

/// Whether `out` is an answer the host accepts as ABI.md's output shape: a JSON object with
/// exactly one of `pick` (non-negative integer), `merge` (object), `delete` (true) or `defer`
/// (string). Returns why not.
pub fn valid_answer(out: &[u8]) -> Result<(), String> {
    let v: serde_json::Value = serde_json::from_slice(out).map_err(|e| format!("not JSON: {e}"))?;
    let obj = v.as_object().ok_or("not an object")?;
    if obj.len() != 1 {
        return Err(format!("{} keys", obj.len()));
    }
    match obj.iter().next() {
        Some((k, v)) if k == "pick" && v.as_u64().is_some() => Ok(()),
        Some((k, v)) if k == "merge" && v.is_object() => Ok(()),
        Some((k, v)) if k == "delete" && v == &serde_json::Value::Bool(true) => Ok(()),
        Some((k, v)) if k == "defer" && v.is_string() => Ok(()),
        other => Err(format!("unexpected answer {other:?}")),
    }
}
