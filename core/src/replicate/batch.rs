//! Batches of versions and their wire encoding: magic, format, checksum, then postcard.

use super::Version;
use crate::causal::{Incarnation, RegionId};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use xxhash_rust::xxh3::xxh3_64;

/// Version of the replication protocol this binary speaks. Format 3: batches carry applied
/// vectors (stability). A deployment runs one build, so other formats are refused.
pub const PROTOCOL_FORMAT: u32 = 3;

/// The most stored log bytes one batch carries: `Store::read_log` stops before passing it,
/// though a batch always carries at least one version (an item may be 2 MiB).
pub const MAX_BATCH_BYTES: usize = 16 << 20;
const MAGIC: &[u8; 4] = b"CVB1";

/// A position in a peer's log: the peer's incarnation when it was read, and the last log
/// position read. The serving region uses the incarnation to resume earlier when it restarted
/// since, so nothing is skipped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The serving store's incarnation (0 for a fresh cursor).
    pub incarnation: Incarnation,
    /// The last log position read.
    pub lsn: u64,
}

impl Cursor {
    /// The cursor that reads a log from its start.
    pub const START: Cursor = Cursor {
        incarnation: Incarnation(0),
        lsn: 0,
    };

    /// Parses the token form `incarnation-lsn` (hex, decimal).
    pub fn parse(token: &str) -> Result<Self> {
        let bad = || Error::InvalidToken(format!("{token:?} is not a replication cursor"));
        let (inc, lsn) = token.split_once('-').ok_or_else(bad)?;
        Ok(Cursor {
            incarnation: Incarnation(u64::from_str_radix(inc, 16).map_err(|_| bad())?),
            lsn: lsn.parse().map_err(|_| bad())?,
        })
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.incarnation, self.lsn)
    }
}

/// An applied vector: per region, the counter up to which every version it wrote is applied.
pub type Applied = BTreeMap<RegionId, u64>;

/// What a batch says about one member of the deployment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberReport {
    /// The member.
    pub region: RegionId,
    /// The latest applied vector the sender knows of it.
    pub applied: Applied,
    /// Whether it was retired.
    pub retired: bool,
    /// Which store of the region the vector is of (when it was created: a later store of the
    /// same name, one that joined after its data was lost, has a higher one, and its vector
    /// replaces the lost store's claims).
    pub store: u64,
}

/// Versions read from one region's log, in log order, with the cursor to continue from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// The region whose log this was read from.
    pub source: RegionId,
    /// The versions.
    pub versions: Vec<Version>,
    /// Where the next read starts.
    pub next: Cursor,
    /// Whether the log had more durable versions than this batch holds.
    pub more: bool,
    /// The source's applied vector as of `next`, when the batch reached the source's durable
    /// end: having applied the log through `next`, the receiver has applied all of it.
    pub applied: Option<Applied>,
    /// The latest vector the source knows of each other member (relayed stability).
    pub members: Vec<MemberReport>,
    /// The source's store (see [`MemberReport::store`]).
    pub store: u64,
}

impl Batch {
    /// The wire form: magic, format, a checksum of the payload, and the payload.
    pub fn encode(&self) -> Vec<u8> {
        let payload = postcard::to_allocvec(self).unwrap_or_default();
        let mut out = Vec::with_capacity(payload.len() + 16);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&PROTOCOL_FORMAT.to_le_bytes());
        out.extend_from_slice(&xxh3_64(&payload).to_le_bytes());
        out.extend_from_slice(&payload);
        out
    }

    /// Decodes and checks the wire form. A damaged, truncated or other-format batch is refused
    /// whole.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < 16 || &bytes[..4] != MAGIC {
            return Err(Error::CorruptBatch(
                "not a converge replication batch".into(),
            ));
        }
        let format = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        if format != PROTOCOL_FORMAT {
            return Err(Error::CorruptBatch(format!(
                "batch uses protocol format {format}; this binary speaks {PROTOCOL_FORMAT}"
            )));
        }
        let mut sum = [0u8; 8];
        sum.copy_from_slice(&bytes[8..16]);
        let payload = &bytes[16..];
        if xxh3_64(payload) != u64::from_le_bytes(sum) {
            return Err(Error::CorruptBatch(
                "checksum mismatch: the batch was damaged".into(),
            ));
        }
        postcard::from_bytes(payload)
            .map_err(|e| Error::CorruptBatch(format!("cannot decode the batch: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damaged_batches_are_refused() {
        let b = Batch {
            source: RegionId::new("west").expect("name"),
            versions: vec![],
            next: Cursor {
                incarnation: Incarnation(5),
                lsn: 9,
            },
            more: false,
            applied: Some([(RegionId::new("west").expect("name"), 4)].into()),
            members: vec![],
            store: 7,
        };
        let mut bytes = b.encode();
        assert_eq!(Batch::decode(&bytes).expect("round trip"), b);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(
            matches!(Batch::decode(&bytes), Err(Error::CorruptBatch(m)) if m.contains("checksum"))
        );
        assert!(matches!(
            Batch::decode(b"garbage"),
            Err(Error::CorruptBatch(_))
        ));
        let c = Cursor {
            incarnation: Incarnation(0xab),
            lsn: 12,
        };
        assert_eq!(Cursor::parse(&c.to_string()).expect("parse"), c);
        assert!(Cursor::parse("zz").is_err());
    }
}
