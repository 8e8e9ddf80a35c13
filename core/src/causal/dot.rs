//! Region names, incarnations and dots (the identity of one write).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// A region's name, as given when its data directory was created.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RegionId(Arc<str>);

impl RegionId {
    /// Validates a region name: 1 to 64 bytes of ASCII letters, digits, `-`, `_` or `.`, not
    /// dots alone.
    pub fn new(name: &str) -> crate::Result<Self> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && !name.bytes().all(|b| b == b'.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if ok {
            Ok(RegionId(name.into()))
        } else {
            Err(crate::Error::invalid(format!(
                "region name {name:?} must be 1 to 64 characters of letters, digits, '-', '_' or '.' (not dots alone)"
            )))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RegionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl fmt::Display for RegionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A random number a store takes every time it is opened, so that a restored or crashed
/// directory can never issue the same dot twice.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Incarnation(pub u64);

impl Incarnation {
    /// Not a store's incarnation (those are never 0) but a context entry's mark for a
    /// region's *floor*: `(region, FLOOR) -> n` in a context covers every dot of that region,
    /// of any incarnation, with a counter up to `n`. A local write carries its region's stable
    /// point this way, so it covers what collection removed (docs/design.md, "Collection").
    pub const FLOOR: Incarnation = Incarnation(0);
}

impl fmt::Display for Incarnation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The identity of one write: the region incarnation that issued it and its counter there.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    /// The issuing region.
    pub region: RegionId,
    /// The incarnation of the store that issued it.
    pub incarnation: Incarnation,
    /// The region's write counter.
    pub counter: u64,
}

impl fmt::Display for Dot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.region, self.incarnation, self.counter)
    }
}

/// A writer: one incarnation of one region. Contexts on the wire are version vectors over these.
pub type Writer = (RegionId, Incarnation);

impl Dot {
    /// The writer that issued this dot.
    pub fn writer(&self) -> Writer {
        (self.region.clone(), self.incarnation)
    }
}
