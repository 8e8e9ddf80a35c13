//! What users store: items and the containers that hold them.

mod container;
mod item;

pub use container::{
    ConflictPolicy, ContainerDef, CreationId, MAX_PARTITION_KEY_LEVELS, ResolverLimits,
    SYSTEM_CREATION, partition_key_paths,
};
pub use item::{
    ItemKey, MAX_ID_BYTES, MAX_ITEM_BYTES, Operation, PartitionKey, partition_key_at, validate_name,
};
pub(crate) use item::{strip_system_properties, validate_item};
