//! The LWW order: total and deterministic, the same in every region.
//!
//! 1. A tombstone beats a live version.
//! 2. A higher number at the resolution path wins; for `/_ts` the full HLC is compared. A
//!    missing or non-numeric value loses to any number.
//! 3. Ties: higher HLC, then greater region name (bytes), then incarnation, then counter.

use crate::causal::Hlc;
use serde_json::{Number, Value};
use std::cmp::Ordering;

/// The key of a number in the LWW order: its f64 value under IEEE totalOrder; on equal f64, a
/// float before an integer; then the exact integer value. This matches numeric order except
/// among numbers that are equal as f64, where it still is total.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NumberKey {
    /// No number at the path: loses to any number.
    Missing,
    /// A number.
    Number {
        /// The value as f64.
        float: f64,
        /// Integer (true) or float (false).
        integer: bool,
        /// The exact integer value (0 for floats).
        exact: i128,
    },
}

impl NumberKey {
    /// The key of the value at `path` in the JSON `body`.
    pub fn of_body(body: &str, path: &str) -> Self {
        match serde_json::from_str::<Value>(body) {
            Ok(v) => Self::of_value(v.pointer(path)),
            Err(_) => NumberKey::Missing,
        }
    }

    /// The key of an optional JSON value.
    pub fn of_value(v: Option<&Value>) -> Self {
        match v {
            Some(Value::Number(n)) => Self::of_number(n),
            _ => NumberKey::Missing,
        }
    }

    fn of_number(n: &Number) -> Self {
        if let Some(i) = n.as_i64() {
            NumberKey::Number {
                float: i as f64,
                integer: true,
                exact: i as i128,
            }
        } else if let Some(u) = n.as_u64() {
            NumberKey::Number {
                float: u as f64,
                integer: true,
                exact: u as i128,
            }
        } else {
            NumberKey::Number {
                float: n.as_f64().unwrap_or(f64::NAN),
                integer: false,
                exact: 0,
            }
        }
    }

    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (NumberKey::Missing, NumberKey::Missing) => Ordering::Equal,
            (NumberKey::Missing, _) => Ordering::Less,
            (_, NumberKey::Missing) => Ordering::Greater,
            (
                NumberKey::Number {
                    float: a,
                    integer: ai,
                    exact: ae,
                },
                NumberKey::Number {
                    float: b,
                    integer: bi,
                    exact: be,
                },
            ) => a.total_cmp(b).then(ai.cmp(bi)).then(ae.cmp(be)),
        }
    }
}

/// Everything the LWW order looks at in one version.
#[derive(Clone, Debug)]
pub struct LwwKey<'a> {
    /// Whether the version is a tombstone.
    pub deleted: bool,
    /// The number at the resolution path (unused for `/_ts`).
    pub number: NumberKey,
    /// The version's HLC.
    pub hlc: Hlc,
    /// The issuing region's name.
    pub region: &'a str,
    /// The issuing incarnation.
    pub incarnation: u64,
    /// The dot's counter.
    pub counter: u64,
}

impl<'a> LwwKey<'a> {
    /// The key of a version for `path`. Reads the body only when the path is not `/_ts`.
    pub fn new(
        path: &str,
        deleted: bool,
        body: Option<&str>,
        hlc: Hlc,
        region: &'a str,
        incarnation: u64,
        counter: u64,
    ) -> Self {
        let number = match body {
            Some(b) if !deleted && path != "/_ts" => NumberKey::of_body(b, path),
            _ => NumberKey::Missing,
        };
        LwwKey {
            deleted,
            number,
            hlc,
            region,
            incarnation,
            counter,
        }
    }

    /// Compares two keys; `Greater` means `self` wins. `ts_path` says the path is `/_ts`.
    pub fn compare(&self, other: &Self, ts_path: bool) -> Ordering {
        self.deleted
            .cmp(&other.deleted)
            .then_with(|| {
                if ts_path {
                    Ordering::Equal
                } else {
                    self.number.cmp(&other.number)
                }
            })
            .then(self.hlc.cmp(&other.hlc))
            .then_with(|| self.region.as_bytes().cmp(other.region.as_bytes()))
            .then(self.incarnation.cmp(&other.incarnation))
            .then(self.counter.cmp(&other.counter))
    }
}

/// The canonical order of `keys` under `path`: indices, winner first.
pub(crate) fn canonical_order(keys: &[LwwKey<'_>], path: &str) -> Vec<usize> {
    let ts = path == "/_ts";
    let mut idx: Vec<usize> = (0..keys.len()).collect();
    idx.sort_by(|&a, &b| keys[b].compare(&keys[a], ts));
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key<'a>(deleted: bool, body: &'a str, ms: u64, region: &'a str) -> LwwKey<'a> {
        LwwKey::new("/v", deleted, Some(body), Hlc::new(ms, 0), region, 1, 1)
    }

    #[test]
    fn deletes_win_then_numbers_then_hlc_then_region() {
        let live_high = key(false, r#"{"v": 100}"#, 1, "a");
        let dead = key(true, r#"{"v": 1}"#, 0, "a");
        assert_eq!(dead.compare(&live_high, false), Ordering::Greater);
        let low = key(false, r#"{"v": 5}"#, 9, "a");
        assert_eq!(live_high.compare(&low, false), Ordering::Greater);
        let missing = key(false, r#"{"v": "9"}"#, 99, "z");
        assert_eq!(low.compare(&missing, false), Ordering::Greater);
        let tie_a = key(false, r#"{"v": 5}"#, 9, "a");
        let tie_b = key(false, r#"{"v": 5}"#, 9, "b");
        assert_eq!(tie_b.compare(&tie_a, false), Ordering::Greater);
        // Under /_ts the body is not consulted: the HLC decides.
        assert_eq!(missing.compare(&live_high, true), Ordering::Greater);
    }

    #[test]
    fn numbers_equal_as_f64_are_still_ordered() {
        let big = 9_007_199_254_740_993_u64; // 2^53 + 1: equal to 2^53 as f64
        let a = NumberKey::of_body(&format!(r#"{{"v": {big}}}"#), "/v");
        let b = NumberKey::of_body(r#"{"v": 9007199254740992}"#, "/v");
        let f = NumberKey::of_body(r#"{"v": 9007199254740992.0}"#, "/v");
        assert_eq!(a.cmp(&b), Ordering::Greater);
        assert_eq!(
            f.cmp(&b),
            Ordering::Less,
            "a float comes before an equal integer"
        );
        let neg = NumberKey::of_body(r#"{"v": -1e308}"#, "/v");
        assert_eq!(neg.cmp(&NumberKey::Missing), Ordering::Greater);
    }

    #[test]
    fn canonical_order_puts_the_winner_first_whatever_the_input_order() {
        let keys = vec![
            key(false, r#"{"v":1}"#, 5, "a"),
            key(false, r#"{"v":3}"#, 1, "b"),
        ];
        assert_eq!(canonical_order(&keys, "/v"), vec![1, 0]);
        let rev: Vec<_> = keys.iter().rev().cloned().collect();
        assert_eq!(canonical_order(&rev, "/v"), vec![0, 1]);
        assert_eq!(canonical_order(&keys, "/_ts"), vec![0, 1]);
    }
}
