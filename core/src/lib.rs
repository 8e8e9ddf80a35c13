//! # converge-core
//!
//! A multi-region JSON document store: every region accepts writes, regions exchange versions,
//! and concurrent versions of an item are resolved by the container's conflict policy (LWW on
//! a numeric path, a custom resolver, or manual through the conflicts feed). Any two regions
//! that have seen the same writes show the same data, whatever the order of delivery.
//!
//! ```
//! use converge_core::{ConflictPolicy, Cursor, PartitionKey, Store, StoreOptions};
//! use serde_json::json;
//!
//! let west = Store::memory("west", StoreOptions::new())?;
//! let east = Store::memory("east", StoreOptions::new())?;
//! for region in [&west, &east] {
//!     region.put_container("shop", "carts", "/customerId", ConflictPolicy::Manual)?;
//! }
//! // Both regions write the same cart concurrently.
//! west.upsert_item("shop", "carts", json!({"id": "c1", "customerId": "alice", "n": 1}))?;
//! east.upsert_item("shop", "carts", json!({"id": "c1", "customerId": "alice", "n": 2}))?;
//! // Exchange logs both ways.
//! east.apply_batch(&west.read_log(Cursor::START, 100)?)?;
//! west.apply_batch(&east.read_log(Cursor::START, 100)?)?;
//! // Both show the same tentative winner, and the same open conflict.
//! let pk = PartitionKey::from("alice");
//! let a = west.read_item("shop", "carts", &pk, "c1")?;
//! let b = east.read_item("shop", "carts", &pk, "c1")?;
//! assert_eq!(a.etag, b.etag);
//! let feed = west.conflicts("shop", "carts", None, 10)?;
//! assert_eq!(feed.items.len(), 1);
//! assert_eq!(feed.items[0].reason, "manual policy");
//! assert_eq!(feed.items, east.conflicts("shop", "carts", None, 10)?.items.iter().map(|r| {
//!     let mut r = r.clone();
//!     r.recorded_at_ms = feed.items[0].recorded_at_ms;
//!     r
//! }).collect::<Vec<_>>());
//! # Ok::<(), converge_core::Error>(())
//! ```

mod causal;
pub mod check;
mod error;
mod feed;
mod model;
mod replicate;
mod resolve;
pub mod sim;
mod store;
mod udf;

pub use causal::{Clock, Context, Dot, Hlc, Incarnation, MAX_CLOCK_LEAD_MS, RegionId, Writer};
pub use error::{Error, Result};
pub use feed::{Change, ConflictRecord, ConflictStatus, Page};
pub use model::{
    ConflictPolicy, ContainerDef, CreationId, ItemKey, MAX_ID_BYTES, MAX_ITEM_BYTES,
    MAX_PARTITION_KEY_LEVELS, Operation, PartitionKey, ResolverLimits, SYSTEM_CREATION,
    partition_key_at, partition_key_paths, validate_name,
};
pub use replicate::{
    Applied, Batch, Cursor, MAX_BATCH_BYTES, MemberReport, PROTOCOL_FORMAT, Version,
};
pub use resolve::{
    CanonicalVersion, LwwKey, NoResolvers, NumberKey, Outcome, ResolveRequest, ResolverHost, reason,
};
pub use store::{
    ApplyReport, CollectReport, DEFAULT_CACHE_BYTES, DatabaseDef, Durability, Item, ItemState,
    MemberStatus, Puller, STORE_FILE, SnapshotSummary, StorageCounts, Store, StoreOptions,
    StoreStats, VisibleItem, WriteOp, WriteOutcome,
};
pub use udf::{
    ABI_VERSION, CallReport, CallTimings, DEFAULT_WATCHDOG, EngineFingerprint, MAX_LOG_BYTES,
    MAX_MEMORY_LIMIT, MAX_STACK_LIMIT, ModuleError, ResolverModule, WasmResolvers, content_hash,
    effective_stack, engine_count,
};
