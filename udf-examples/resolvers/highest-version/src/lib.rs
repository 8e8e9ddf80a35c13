//! # highest-version
//!
//! A last-writer-wins policy on an application field: the version whose numeric `version`
//! field is highest is shown. The rule:
//! 1. a deleted version wins, as under converge's built-in LWW policy;
//! 2. otherwise the highest `version` wins; a version without a numeric `version` counts as
//!    lower than any number;
//! 3. ties go to the earlier version in canonical order, which is the one with the higher
//!    `_ts`-based LWW key, so every region picks the same one.
//!
//! It reads only the fields it needs from the input (`resolver!(raw: ...)` with the SDK's
//! `view`), so a call costs little more than scanning the input once.
//!
//! ```
//! use converge_udf_sdk::{resolve_json, Decision};
//! let input = r#"{"abi":1,"container":"orders","id":"o","partitionKey":"p","versions":[
//!  {"item":{"id":"o","version":3},"deleted":false,"region":"west","timestamp":9,"logical":0},
//!  {"item":{"id":"o","version":4},"deleted":false,"region":"east","timestamp":8,"logical":0}]}"#;
//! assert_eq!(resolve_json(input.as_bytes(), highest_version::highest_version), r#"{"pick":1}"#);
//! assert_eq!(highest_version::resolve_bytes(input.as_bytes()), br#"{"pick":1}"#);
//! ```

use converge_udf_sdk::view::ConflictView;
use converge_udf_sdk::{Conflict, Decision};

/// The resolver on the SDK's typed input.
pub fn highest_version(c: &Conflict) -> Decision {
    if c.is_tombstone() {
        return Decision::Delete;
    }
    let key = |i: usize| {
        c.versions[i]
            .item
            .as_ref()
            .and_then(|b| b.get("version"))
            .and_then(serde_json::Value::as_f64)
    };
    Decision::Pick(best(c.versions.len(), key))
}

/// The index whose key is highest, the earliest on ties; `None` is below every number.
fn best(n: usize, key: impl Fn(usize) -> Option<f64>) -> usize {
    let mut best = 0;
    for i in 1..n {
        let better = match (key(i), key(best)) {
            (Some(a), Some(b)) => a > b,
            (Some(_), None) => true,
            _ => false,
        };
        if better {
            best = i;
        }
    }
    best
}

/// The same rule on the raw input bytes through the SDK's zero-copy [`ConflictView`], which
/// locates `deleted` and `version` without decoding anything else: what the wasm module
/// exports.
pub fn resolve_bytes(input: &[u8]) -> Vec<u8> {
    let decision = match ConflictView::parse(input) {
        Ok(c) if c.versions.len() < 2 => {
            Decision::Defer("input has fewer than two versions".into())
        }
        Ok(c) if c.is_tombstone() => Decision::Delete,
        Ok(c) => Decision::Pick(best(c.versions.len(), |i| {
            c.versions[i]
                .item
                .and_then(|b| b.get("version"))
                .and_then(|v| v.as_f64())
        })),
        Err(e) => Decision::Defer(format!("cannot decode the input: {e}")),
    };
    decision.to_json().into_bytes()
}

converge_udf_sdk::resolver!(raw: resolve_bytes);

#[cfg(test)]
mod tests {
    use super::*;
    use converge_udf_sdk::resolve_json;

    fn input(versions: &[&str]) -> String {
        let vs: Vec<String> = versions
            .iter()
            .map(|item| {
                let deleted = *item == "null";
                format!(
                    r#"{{"item":{item},"deleted":{deleted},"region":"r","timestamp":1,"logical":0}}"#
                )
            })
            .collect();
        format!(
            r#"{{"abi":1,"container":"c","id":"o","partitionKey":"p","versions":[{}]}}"#,
            vs.join(",")
        )
    }

    /// Both entry points, which must agree.
    fn decide(versions: &[&str]) -> String {
        let i = input(versions);
        let typed = resolve_json(i.as_bytes(), highest_version);
        let raw = String::from_utf8(resolve_bytes(i.as_bytes())).expect("utf-8");
        assert_eq!(typed, raw, "{i}");
        raw
    }

    #[test]
    fn the_highest_version_wins_and_ties_go_to_the_first() {
        assert_eq!(
            decide(&[r#"{"id":"o","version":1}"#, r#"{"id":"o","version":2}"#]),
            r#"{"pick":1}"#
        );
        assert_eq!(
            decide(&[r#"{"id":"o","version":2}"#, r#"{"id":"o","version":2}"#]),
            r#"{"pick":0}"#
        );
        assert_eq!(
            decide(&[
                r#"{"id":"o"}"#,
                r#"{"id":"o","version":"x"}"#,
                r#"{"id":"o","version":-1}"#
            ]),
            r#"{"pick":2}"#
        );
    }

    #[test]
    fn deletes_win_and_bad_input_defers() {
        assert_eq!(
            decide(&[r#"{"id":"o","version":9}"#, "null"]),
            r#"{"delete":true}"#
        );
        assert!(String::from_utf8_lossy(&resolve_bytes(b"{")).starts_with(r#"{"defer""#));
    }
}
