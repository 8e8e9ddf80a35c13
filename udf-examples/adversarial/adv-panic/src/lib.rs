//! Panics with a message naming the item: the conflict must reach the feed as
//! `trap: cart <id> cannot be merged`.
use converge_udf_sdk::{Conflict, Decision};

/// Always panics.
pub fn resolve(c: &Conflict) -> Decision {
    panic!("cart {} cannot be merged", c.id)
}

converge_udf_sdk::resolver!(resolve);
