//! The error type of every fallible store operation.

use thiserror::Error;

/// What went wrong, with a message a person can act on.
///
/// Errors caused by input (an item, a name, a remote batch) never leave anything half-written:
/// the transaction that met them is rolled back.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The item or request is malformed; the message says what to fix.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The item exceeds the 2 MiB limit.
    #[error("item is {size} bytes serialized; the limit is {limit} bytes")]
    TooLarge {
        /// Serialized size of the item.
        size: usize,
        /// The limit it exceeds.
        limit: usize,
    },
    /// No container of that name exists in this region (yet).
    #[error("container {database}/{container} does not exist")]
    UnknownContainer {
        /// Database name.
        database: String,
        /// Container name.
        container: String,
    },
    /// The item does not exist (or is deleted).
    #[error("item {id:?} with partition key {partition_key} does not exist")]
    NotFound {
        /// Item id.
        id: String,
        /// Partition key value, as JSON.
        partition_key: String,
    },
    /// A create met an item that already exists.
    #[error("item {id:?} with partition key {partition_key} already exists")]
    AlreadyExists {
        /// Item id.
        id: String,
        /// Partition key value, as JSON.
        partition_key: String,
    },
    /// `If-Match` named another version than the current one.
    #[error("precondition failed: the item's current etag is {current:?}, not {expected:?}")]
    PreconditionFailed {
        /// The etag the caller expected.
        expected: String,
        /// The etag the item has.
        current: String,
    },
    /// The container definition request cannot be applied.
    #[error("invalid container definition: {0}")]
    InvalidDefinition(String),
    /// No database of that name shows in this region.
    #[error("database {0:?} does not exist")]
    UnknownDatabase(String),
    /// A database create met one that shows already.
    #[error("database {0:?} already exists")]
    DatabaseExists(String),
    /// A conflict record of that id does not exist.
    #[error("conflict record {0:?} does not exist")]
    UnknownConflict(String),
    /// A resolver module was refused: not WebAssembly, or it breaks the resolver ABI.
    #[error("invalid resolver module: {0}")]
    InvalidModule(String),
    /// A remote batch or version failed its checks; nothing of it was applied.
    #[error("corrupt replication batch: {0}")]
    CorruptBatch(String),
    /// A continuation or cursor token could not be decoded.
    #[error("invalid continuation token: {0}")]
    InvalidToken(String),
    /// The data directory belongs to another region.
    #[error("data directory belongs to region {stored:?}, not {requested:?}")]
    RegionMismatch {
        /// The region name stored in the directory.
        stored: String,
        /// The region name this open asked for.
        requested: String,
    },
    /// The store was written by a newer format than this binary reads.
    #[error(
        "store format {found} is newer than this binary supports ({supported}); upgrade converge"
    )]
    FormatTooNew {
        /// Format found in the store.
        found: u32,
        /// Newest format this binary reads.
        supported: u32,
    },
    /// The store was written by an older converge in a format this binary no longer reads.
    #[error(
        "store format {found} was written by an older converge; this binary reads format {supported} only: start the region on an empty data directory and it catches up from its peers"
    )]
    FormatTooOld {
        /// Format found in the store.
        found: u32,
        /// The format this binary reads.
        supported: u32,
    },
    /// A peer asked for log entries this region has collected, and has not applied everything
    /// they held: it must start from a snapshot of a region instead (`converge serve --join`).
    #[error("{0}")]
    SnapshotNeeded(String),
    /// This region was retired (`converge retire-region`): a write it took would be refused
    /// in every other region, so it takes none.
    #[error("{0}")]
    Retired(String),
    /// The embedded database failed (disk full, I/O error, corruption).
    #[error("storage error: {0}")]
    Storage(String),
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidInput(msg.into())
    }

    pub(crate) fn storage(e: impl std::fmt::Display) -> Self {
        Error::Storage(e.to_string())
    }
}
