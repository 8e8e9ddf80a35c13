//! Change-feed entries.

use crate::model::PartitionKey;
use serde_json::{Value, json};

/// A visible-value change, in `_lsn` order.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// The item as it is now visible (with `_ts`, `_etag`, `_lsn`).
    Upsert(Value),
    /// The item was deleted.
    Delete {
        /// Item id.
        id: String,
        /// Partition key value.
        partition_key: PartitionKey,
        /// Change-feed position.
        lsn: u64,
    },
}

impl Change {
    /// The change as the HTTP API shows it.
    pub fn to_json(&self) -> Value {
        match self {
            Change::Upsert(v) => v.clone(),
            Change::Delete {
                id,
                partition_key,
                lsn,
            } => json!({
                "id": id, "partitionKey": partition_key.to_value(), "_deleted": true, "_lsn": lsn
            }),
        }
    }

    /// The change's `_lsn`.
    pub fn lsn(&self) -> u64 {
        match self {
            Change::Upsert(v) => v.get("_lsn").and_then(Value::as_u64).unwrap_or(0),
            Change::Delete { lsn, .. } => *lsn,
        }
    }
}
