//! One version of an item, as it travels between regions and as the log keeps it.

use crate::causal::{Context, Dot, Hlc, Writer};
use crate::model::{CreationId, ItemKey, Operation};
use serde::{Deserialize, Serialize};

/// A version: one write, with everything a region needs to apply it anywhere.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// The creation of the container it belongs to (the system container for definitions).
    pub creation: CreationId,
    /// Partition key value and id.
    pub key: ItemKey,
    /// Who wrote it.
    pub dot: Dot,
    /// When (hybrid logical clock).
    pub hlc: Hlc,
    /// What its writer did.
    pub op: Operation,
    /// A tombstone.
    pub deleted: bool,
    /// The body (JSON object text); for a container drop, the dropped definition.
    pub body: Option<String>,
    /// The item's context when it was written: every version it covers.
    pub context: Context<Writer>,
}
