//! Deciding an item's visible value from its siblings.

pub(crate) mod lww;
mod policy;

pub use lww::{LwwKey, NumberKey};
pub(crate) use policy::decide;
pub use policy::{CanonicalVersion, NoResolvers, Outcome, ResolveRequest, ResolverHost};
