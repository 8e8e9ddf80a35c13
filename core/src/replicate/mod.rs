//! What regions exchange: versions, batches of them, and cursors into a peer's log.

mod batch;
mod version;

pub use batch::{Applied, Batch, Cursor, MAX_BATCH_BYTES, MemberReport, PROTOCOL_FORMAT};
pub use version::Version;
