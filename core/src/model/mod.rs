//! What users store: items and the containers that hold them.

mod container;
mod item;

pub use container::{ConflictPolicy, ContainerDef, CreationId, ResolverLimits, SYSTEM_CREATION};
pub use item::{ItemKey, MAX_ID_BYTES, MAX_ITEM_BYTES, Operation, PartitionKey, validate_name};
pub(crate) use item::{strip_system_properties, validate_item};
