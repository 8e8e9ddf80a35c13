//! What the application reads besides items: the conflicts feed and the change feed.

mod changes;
mod conflicts;

pub use changes::Change;
pub use conflicts::{ConflictRecord, ConflictStatus};

/// One page of a listing, with the token for the next page (`None` at the end).
#[derive(Clone, Debug, PartialEq)]
pub struct Page<T> {
    /// The entries.
    pub items: Vec<T>,
    /// Pass it back to get the next page; `None` when there is none.
    pub continuation: Option<String>,
}
