//! Deciding an item's visible value from its siblings.

pub(crate) mod lww;
mod policy;
pub mod reason;

pub use lww::{LwwKey, NumberKey};
pub use policy::{CanonicalVersion, NoResolvers, Outcome, ResolveRequest, ResolverHost};
pub(crate) use policy::{check_answer, decide};
