//! Conflicts-feed records.

use crate::model::{CreationId, Operation, PartitionKey};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Whether a record still describes the item's current siblings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConflictStatus {
    /// The conflict is current: the sibling is not the visible value and nothing decided.
    Open,
    /// The siblings or the outcome changed since; kept until the application deletes it.
    Superseded,
}

/// One record of the conflicts feed: a sibling that is not the visible value of its item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictRecord {
    /// Deterministic id (hex): the same in every region that saw the same siblings.
    pub id: String,
    /// The creation of the container the item belongs to.
    pub creation: CreationId,
    /// The item's id.
    pub item_id: String,
    /// The item's partition key value.
    pub partition_key: PartitionKey,
    /// What the sibling's writer did.
    pub operation: Operation,
    /// The sibling's body (`None` for a tombstone).
    pub content: Option<String>,
    /// Why nothing decided (`manual policy`, `resolver missing`, `trap: …`, `container replaced`).
    pub reason: String,
    /// Open or superseded.
    pub status: ConflictStatus,
    /// When this region recorded it, ms since the Unix epoch (region-local).
    pub recorded_at_ms: u64,
    /// The sibling's dot, `region:incarnation:counter`.
    pub dot: String,
}

impl ConflictRecord {
    /// The record as the HTTP API shows it.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "itemId": self.item_id,
            "partitionKey": self.partition_key.to_value(),
            "operationType": self.operation.as_str(),
            "reason": self.reason,
            "content": self.content.as_deref().and_then(|c| serde_json::from_str::<Value>(c).ok()),
            "status": match self.status { ConflictStatus::Open => "open", ConflictStatus::Superseded => "superseded" },
            "recordedAt": self.recorded_at_ms,
            "dot": self.dot,
        })
    }
}
