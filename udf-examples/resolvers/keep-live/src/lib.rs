//! # keep-live
//!
//! The inverse of the default for items that ask for it: a live version beats a concurrent
//! delete when the item is flagged `"keepLive": true`, so an update made while another region
//! deleted the item brings it back instead of being lost. The rule:
//! 1. if some live version has `"keepLive": true`, the first live version in canonical order
//!    wins (among the live ones, the LWW winner);
//! 2. otherwise converge's default holds: a deleted version wins, else the first version in
//!    canonical order.
//!
//! ```
//! use converge_udf_sdk::resolve_json;
//! let input = r#"{"abi":1,"container":"docs","id":"d","partitionKey":"p","versions":[
//!  {"item":null,"deleted":true,"region":"west","timestamp":9,"logical":0},
//!  {"item":{"id":"d","keepLive":true},"deleted":false,"region":"east","timestamp":8,"logical":0}]}"#;
//! assert_eq!(resolve_json(input.as_bytes(), keep_live::keep_live), r#"{"pick":1}"#);
//! ```

use converge_udf_sdk::{Conflict, Decision};
use serde_json::Value;

/// The flag an item sets to be kept alive.
pub const FLAG: &str = "keepLive";

/// The resolver: see the crate documentation for the rule.
pub fn keep_live(c: &Conflict) -> Decision {
    let live = |i: &usize| !c.versions[*i].deleted;
    let flagged = c.versions.iter().any(|v| {
        v.item
            .as_ref()
            .and_then(|b| b.get(FLAG))
            .and_then(Value::as_bool)
            == Some(true)
    });
    match (0..c.versions.len()).find(live) {
        Some(i) if flagged => Decision::Pick(i),
        _ if c.is_tombstone() => Decision::Delete,
        _ => Decision::Pick(0),
    }
}

converge_udf_sdk::resolver!(keep_live);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conflict(items: Vec<Option<Value>>) -> Conflict {
        Conflict::for_test("docs", "d", json!("p"), items)
    }

    #[test]
    fn flagged_items_stay_live_and_others_follow_the_default() {
        let flagged = Some(json!({"id": "d", "keepLive": true}));
        let plain = Some(json!({"id": "d"}));
        assert_eq!(
            keep_live(&conflict(vec![None, flagged.clone()])),
            Decision::Pick(1)
        );
        assert_eq!(
            keep_live(&conflict(vec![None, plain.clone()])),
            Decision::Delete
        );
        assert_eq!(
            keep_live(&conflict(vec![plain.clone(), flagged])),
            Decision::Pick(0)
        );
        assert_eq!(keep_live(&conflict(vec![None, None])), Decision::Delete);
        assert_eq!(
            keep_live(&conflict(vec![plain.clone(), plain])),
            Decision::Pick(0)
        );
    }
}
