//! # field-merge
//!
//! Per-field last-writer-wins: two regions that change different fields of the same item both
//! keep their change. The application keeps, in the item, when it last wrote each field:
//!
//! ```json
//! {"id": "u1", "name": "Ada", "email": "ada@example.com",
//!  "_fieldTs": {"name": 1764230400123, "email": 1764230400456}}
//! ```
//!
//! The rule, for the versions of one item:
//! 1. a deleted version wins, as under the built-in LWW policy;
//! 2. every field named in some version's `_fieldTs` takes its value from the version with the
//!    latest time for it (ties: the earlier version in canonical order); if that version lacks
//!    the field, the field was removed and stays absent;
//! 3. fields nobody timestamps, `id` and the partition key come from the first version in
//!    canonical order (the LWW winner);
//! 4. `_fieldTs` of the result holds the latest time per field.
//!
//! ```
//! use converge_udf_sdk::resolve_json;
//! let input = r#"{"abi":1,"container":"users","id":"u","partitionKey":"u","versions":[
//!  {"item":{"id":"u","name":"Ada","email":"old","_fieldTs":{"name":5,"email":1}},
//!   "deleted":false,"region":"west","timestamp":9,"logical":0},
//!  {"item":{"id":"u","name":"A.","email":"new","_fieldTs":{"name":1,"email":6}},
//!   "deleted":false,"region":"east","timestamp":8,"logical":0}]}"#;
//! let out = resolve_json(input.as_bytes(), field_merge::merge_fields);
//! assert!(out.contains(r#""name":"Ada""#) && out.contains(r#""email":"new""#));
//! ```

use converge_udf_sdk::{Conflict, Decision};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Where the application keeps per-field write times.
pub const FIELD_TIMES: &str = "_fieldTs";

/// The resolver: see the crate documentation for the rule.
pub fn merge_fields(c: &Conflict) -> Decision {
    if c.is_tombstone() {
        return Decision::Delete;
    }
    let bodies = c.live_objects();
    let Some(base) = bodies.first() else {
        return Decision::Defer("no version is a JSON object".into());
    };
    // field -> (time, index of the version that wrote it last)
    let mut latest: BTreeMap<&str, (u64, usize)> = BTreeMap::new();
    for (i, body) in bodies.iter().enumerate() {
        let Some(times) = body.get(FIELD_TIMES).and_then(Value::as_object) else {
            continue;
        };
        for (field, at) in times {
            if field == "id" {
                continue;
            }
            let at = at.as_u64().unwrap_or(0);
            match latest.get(field.as_str()) {
                Some(&(t, _)) if t >= at => {}
                _ => {
                    latest.insert(field, (at, i));
                }
            }
        }
    }
    let mut out = (*base).clone();
    let mut times = Map::new();
    for (field, (at, i)) in latest {
        match bodies[i].get(field) {
            Some(v) => out.insert(field.to_owned(), v.clone()),
            None => out.remove(field),
        };
        times.insert(field.to_owned(), at.into());
    }
    out.insert(FIELD_TIMES.into(), Value::Object(times));
    Decision::Merge(Value::Object(out))
}

converge_udf_sdk::resolver!(merge_fields);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conflict(items: Vec<Option<Value>>) -> Conflict {
        Conflict::for_test("users", "u", json!("u"), items)
    }

    #[test]
    fn each_field_keeps_its_latest_write() {
        let c = conflict(vec![
            Some(json!({"id": "u", "a": 1, "b": 1, "note": "w", "_fieldTs": {"a": 5, "b": 1}})),
            Some(json!({"id": "u", "a": 2, "b": 2, "note": "e", "_fieldTs": {"a": 1, "b": 6}})),
            Some(json!({"id": "u", "_fieldTs": {"c": 3}})),
        ]);
        let Decision::Merge(m) = merge_fields(&c) else {
            panic!("expected a merge");
        };
        assert_eq!(
            m,
            json!({"id": "u", "a": 1, "b": 2, "note": "w", "_fieldTs": {"a": 5, "b": 6, "c": 3}})
        );
        let again = conflict(vec![Some(m.clone()), Some(m.clone())]);
        assert_eq!(merge_fields(&again), Decision::Merge(m));
    }

    #[test]
    fn a_later_removal_removes_and_a_delete_wins() {
        let c = conflict(vec![
            Some(json!({"id": "u", "a": 1, "_fieldTs": {"a": 5}})),
            Some(json!({"id": "u", "_fieldTs": {"a": 7}})),
        ]);
        assert_eq!(
            merge_fields(&c),
            Decision::Merge(json!({"id": "u", "_fieldTs": {"a": 7}}))
        );
        let c = conflict(vec![Some(json!({"id": "u"})), None]);
        assert_eq!(merge_fields(&c), Decision::Delete);
    }
}
