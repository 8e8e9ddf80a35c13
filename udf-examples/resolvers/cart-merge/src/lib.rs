//! # cart-merge
//!
//! Merges concurrent versions of a shopping cart instead of letting one region's cart win.
//!
//! A cart looks like this (the application keeps `updated` and `removed`):
//!
//! ```json
//! {"id": "cart-42", "customerId": "alice",
//!  "lines": [{"sku": "apple", "qty": 3, "updated": 1764230400123}],
//!  "removed": {"pear": 1764230400456}}
//! ```
//!
//! - `lines[].updated` is when the application last changed that line (ms);
//! - `removed` maps a SKU to when it was last removed from the cart (ms): removal markers.
//!
//! The rule, for the versions of one cart:
//! 1. a deleted version wins (the cart was checked out or abandoned): the item is deleted;
//! 2. removal markers merge by taking the latest time per SKU;
//! 3. for each SKU, the line with the latest `updated` wins (ties: the larger `qty`, then the
//!    earlier version in canonical order);
//! 4. a line stays only if it was updated after its SKU's removal marker, so a line removed
//!    after the other region added it stays removed, and one added back later comes back;
//! 5. lines are listed by SKU; every other field comes from the first version in canonical
//!    order (the LWW winner).
//!
//! The result does not depend on the order of the versions beyond the canonical order the host
//! fixes, and merging a merged cart again changes nothing.
//!
//! ```
//! use converge_udf_sdk::{resolve_json, Decision};
//! let input = r#"{"abi":1,"container":"carts","id":"c","partitionKey":"alice","versions":[
//!  {"item":{"id":"c","customerId":"alice","lines":[{"sku":"a","qty":1,"updated":5}],"removed":{}},
//!   "deleted":false,"region":"west","timestamp":9,"logical":0},
//!  {"item":{"id":"c","customerId":"alice","lines":[{"sku":"b","qty":2,"updated":6}],"removed":{}},
//!   "deleted":false,"region":"east","timestamp":8,"logical":0}]}"#;
//! let out = resolve_json(input.as_bytes(), cart_merge::merge_carts);
//! assert!(out.contains(r#""sku":"a""#) && out.contains(r#""sku":"b""#));
//! ```

use converge_udf_sdk::{Conflict, Decision};
use serde_json::Value;
use std::collections::BTreeMap;

/// The resolver: see the crate documentation for the rule.
pub fn merge_carts(c: &Conflict) -> Decision {
    if c.is_tombstone() {
        return Decision::Delete;
    }
    let bodies = c.live_objects();
    let Some(base) = bodies.first() else {
        return Decision::Defer("no version is a JSON object".into());
    };
    let mut removed: BTreeMap<String, u64> = BTreeMap::new();
    for body in &bodies {
        if let Some(markers) = body.get("removed").and_then(Value::as_object) {
            for (sku, at) in markers {
                let at = at.as_u64().unwrap_or(0);
                let e = removed.entry(sku.clone()).or_insert(at);
                *e = (*e).max(at);
            }
        }
    }
    // sku -> (updated, qty, line), the first best line in canonical order
    let mut lines: BTreeMap<String, (u64, u64, &Value)> = BTreeMap::new();
    for body in &bodies {
        let Some(list) = body.get("lines").and_then(Value::as_array) else {
            continue;
        };
        for line in list {
            let Some(sku) = line.get("sku").and_then(Value::as_str) else {
                return Decision::Defer(format!("a line has no sku: {line}"));
            };
            let updated = line.get("updated").and_then(Value::as_u64).unwrap_or(0);
            let qty = line.get("qty").and_then(Value::as_u64).unwrap_or(0);
            match lines.get(sku) {
                Some(&(u, q, _)) if (u, q) >= (updated, qty) => {}
                _ => {
                    lines.insert(sku.to_owned(), (updated, qty, line));
                }
            }
        }
    }
    let kept: Vec<Value> = lines
        .into_iter()
        .filter(|(sku, (updated, _, _))| removed.get(sku).is_none_or(|r| updated > r))
        .map(|(_, (_, _, line))| line.clone())
        .collect();
    let mut out = (*base).clone();
    out.insert("lines".into(), Value::Array(kept));
    out.insert(
        "removed".into(),
        Value::Object(removed.into_iter().map(|(k, v)| (k, v.into())).collect()),
    );
    Decision::Merge(Value::Object(out))
}

converge_udf_sdk::resolver!(merge_carts);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conflict(items: Vec<Option<Value>>) -> Conflict {
        Conflict::for_test("carts", "c", json!("alice"), items)
    }

    fn cart(lines: Value, removed: Value) -> Option<Value> {
        Some(json!({"id": "c", "customerId": "alice", "lines": lines, "removed": removed}))
    }

    fn merged(c: &Conflict) -> Value {
        match merge_carts(c) {
            Decision::Merge(v) => v,
            other => panic!("expected a merge, got {other:?}"),
        }
    }

    #[test]
    fn concurrent_adds_are_both_kept() {
        let c = conflict(vec![
            cart(json!([{"sku": "a", "qty": 1, "updated": 5}]), json!({})),
            cart(json!([{"sku": "b", "qty": 2, "updated": 6}]), json!({})),
        ]);
        let m = merged(&c);
        assert_eq!(
            m["lines"],
            json!([{"sku": "a", "qty": 1, "updated": 5}, {"sku": "b", "qty": 2, "updated": 6}])
        );
    }

    #[test]
    fn a_removal_after_the_other_regions_add_stays_removed() {
        let c = conflict(vec![
            cart(json!([{"sku": "a", "qty": 1, "updated": 5}]), json!({})),
            cart(json!([]), json!({"a": 7})),
        ]);
        let m = merged(&c);
        assert_eq!(m["lines"], json!([]));
        assert_eq!(m["removed"], json!({"a": 7}));
        // ... and a line added back after the removal comes back.
        let c = conflict(vec![
            cart(json!([{"sku": "a", "qty": 4, "updated": 9}]), json!({})),
            cart(json!([]), json!({"a": 7})),
        ]);
        assert_eq!(merged(&c)["lines"][0]["qty"], 4);
    }

    #[test]
    fn the_latest_change_to_a_line_wins_and_merging_again_changes_nothing() {
        let c = conflict(vec![
            cart(json!([{"sku": "a", "qty": 1, "updated": 5}]), json!({})),
            cart(json!([{"sku": "a", "qty": 3, "updated": 8}]), json!({})),
            cart(
                json!([{"sku": "a", "qty": 2, "updated": 8}]),
                json!({"b": 1}),
            ),
        ]);
        let m = merged(&c);
        assert_eq!(m["lines"], json!([{"sku": "a", "qty": 3, "updated": 8}]));
        let again = conflict(vec![Some(m.clone()), Some(m.clone())]);
        assert_eq!(merged(&again), m);
    }

    /// Arbitrary conflicts (the SDK's `arbitrary` feature): never a panic, always an answer the
    /// host accepts (a merge keeps the id), and merging the merge again changes nothing.
    #[test]
    fn arbitrary_conflicts_get_valid_answers() {
        use arbitrary::{Arbitrary, Unstructured};
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let bytes: Vec<u8> = converge_udf_sdk::fuzz::pseudo_random_bytes(&mut seed, 1024);
            let Ok(c) = Conflict::arbitrary(&mut Unstructured::new(&bytes)) else {
                continue;
            };
            let decision = merge_carts(&c);
            if let Err(why) = converge_udf_sdk::fuzz::check_decision(&c, &decision, "/pk") {
                panic!("{why}: {c:?} answered {decision:?}");
            }
            match decision {
                Decision::Merge(m) => {
                    let again = Conflict::for_test(
                        "carts",
                        &c.id,
                        c.partition_key.clone(),
                        vec![Some(m.clone()), Some(m.clone())],
                    );
                    assert_eq!(merge_carts(&again), Decision::Merge(m));
                }
                Decision::Delete => assert!(c.is_tombstone()),
                Decision::Defer(why) => {
                    assert!(why.contains("sku") || why.contains("object"), "{why}")
                }
                Decision::Pick(i) => panic!("cart-merge never picks, got {i}"),
            }
        }
    }

    #[test]
    fn a_delete_wins_and_a_line_without_sku_defers() {
        let c = conflict(vec![cart(json!([]), json!({})), None]);
        assert_eq!(merge_carts(&c), Decision::Delete);
        let c = conflict(vec![
            cart(json!([{"qty": 1}]), json!({})),
            cart(json!([]), json!({})),
        ]);
        assert!(matches!(merge_carts(&c), Decision::Defer(r) if r.contains("no sku")));
    }
}
