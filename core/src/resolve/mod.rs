//! Deciding an item's visible value from its siblings.

pub mod item;
pub(crate) mod lww;
mod policy;
pub mod reason;

pub use lww::{LwwKey, NumberKey};
pub(crate) use policy::check_answer;
pub use policy::{CanonicalVersion, NoResolvers, Outcome, ResolveRequest, ResolverHost};
