//! Merges into a body with another `id`: `invalid output: merge changes the id`.
use converge_udf_sdk::{Conflict, Decision};

/// Renames the item.
pub fn resolve(c: &Conflict) -> Decision {
    let mut body = c
        .versions
        .iter()
        .find_map(|v| v.item.clone())
        .unwrap_or_else(|| serde_json::json!({}));
    body["id"] = format!("{}-renamed", c.id).into();
    Decision::Merge(body)
}

converge_udf_sdk::resolver!(resolve);
