//! How records are laid out in the key-value tables.

use crate::causal::{Context, Hlc};
use crate::model::{CreationId, ItemKey, Operation, PartitionKey};
use crate::{Error, Result};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// The store file format this binary writes and reads. Format 2: resolver items belong to a
/// container's creation, module bytes are kept by content hash, creations record their epoch.
pub(crate) const STORE_FORMAT: u32 = 2;

pub(crate) fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    postcard::to_extend(v, Vec::with_capacity(1280))
        .map_err(|e| Error::Storage(format!("cannot encode a record: {e}")))
}

pub(crate) fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes)
        .map_err(|e| Error::Storage(format!("the store holds an unreadable {what} record: {e}")))
}

/// Bytes as lowercase hex.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

/// Hex back to bytes (`None` if it is not hex).
pub(crate) fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Item keys sort by creation, then partition key, then id, so a container or one partition is
/// a key range.
pub(crate) fn item_key(cid: CreationId, key: &ItemKey) -> Vec<u8> {
    let pk = key.partition_key.as_json().as_bytes();
    let mut out = Vec::with_capacity(16 + 4 + pk.len() + key.id.len());
    out.extend_from_slice(&cid.0.to_be_bytes());
    out.extend_from_slice(&(pk.len() as u32).to_be_bytes());
    out.extend_from_slice(pk);
    out.extend_from_slice(key.id.as_bytes());
    out
}

/// The key prefix of one partition of a container.
pub(crate) fn partition_prefix(cid: CreationId, pk: &PartitionKey) -> Vec<u8> {
    let pk = pk.as_json().as_bytes();
    let mut out = cid.0.to_be_bytes().to_vec();
    out.extend_from_slice(&(pk.len() as u32).to_be_bytes());
    out.extend_from_slice(pk);
    out
}

pub(crate) fn parse_item_key(bytes: &[u8]) -> Result<(CreationId, ItemKey)> {
    let bad = || Error::Storage("the store holds a malformed item key".into());
    let cid = u128::from_be_bytes(
        bytes
            .get(..16)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?,
    );
    let len = u32::from_be_bytes(
        bytes
            .get(16..20)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?,
    ) as usize;
    let pk = bytes.get(20..20 + len).ok_or_else(bad)?;
    let id = bytes.get(20 + len..).ok_or_else(bad)?;
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| bad());
    Ok((
        CreationId(cid),
        ItemKey {
            partition_key: PartitionKey::from_canonical(text(pk)?),
            id: text(id)?,
        },
    ))
}

/// The first key after every key that starts with `prefix`.
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

pub(crate) fn cid_lsn_key(cid: CreationId, n: u64) -> Vec<u8> {
    let mut out = cid.0.to_be_bytes().to_vec();
    out.extend_from_slice(&n.to_be_bytes());
    out
}

/// Interned writer id: an index into the store's table of region incarnations.
pub(crate) type ActorId = u32;

/// One sibling as stored in its item record. Its own context is not needed once applied (the
/// item's context covers it), and its body stays in the log entry it points to.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct StoredSibling {
    pub actor: ActorId,
    pub counter: u64,
    pub hlc: Hlc,
    pub op: Operation,
    pub deleted: bool,
    /// Where the version (and so its body) is in the log: bodies are stored once.
    pub lsn: u64,
    /// Whether this sibling has ever been the visible value here.
    pub shown: bool,
}

/// What the item shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Shown {
    /// Nothing: deleted, or not resolvable yet.
    Hidden,
    /// The sibling at this index.
    Sibling(u32),
    /// A body a resolver merged.
    Merged(String),
}

/// An item's state in one region.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ItemRecord {
    pub context: Context<ActorId>,
    pub siblings: Vec<StoredSibling>,
    pub shown: Shown,
    /// Identifies the visible version: the same in every region.
    pub etag: u64,
    /// `_ts` of the visible value, seconds.
    pub ts: u64,
    /// The change-feed position of the visible value (0: never visible here).
    pub lsn: u64,
    /// Ids of this item's open conflict records.
    pub open: Vec<u128>,
}

impl ItemRecord {
    pub(crate) fn empty() -> Self {
        ItemRecord {
            context: Context::new(),
            siblings: Vec::new(),
            shown: Shown::Hidden,
            etag: 0,
            ts: 0,
            lsn: 0,
            open: Vec::new(),
        }
    }
}

/// A log entry as written: a version with its writers interned. Field for field the same
/// encoding as [`LogEntry`], but borrowing, so writing a version copies its body once.
#[derive(Serialize)]
pub(crate) struct LogEntryRef<'a> {
    pub creation: CreationId,
    pub key: &'a ItemKey,
    pub actor: ActorId,
    pub counter: u64,
    pub hlc: Hlc,
    pub op: Operation,
    pub deleted: bool,
    pub body: Option<&'a str>,
    pub context: &'a Context<ActorId>,
}

/// A log entry as read back.
#[derive(Deserialize)]
pub(crate) struct LogEntry {
    pub creation: CreationId,
    pub key: ItemKey,
    pub actor: ActorId,
    pub counter: u64,
    pub hlc: Hlc,
    pub op: Operation,
    pub deleted: bool,
    pub body: Option<String>,
    pub context: Context<ActorId>,
}

/// The head of a [`LogEntry`] up to its body, borrowing: what reading a body from the log
/// needs, without copying the key or decoding the context that follows.
#[derive(Deserialize)]
pub(crate) struct LogEntryBody<'a> {
    pub _creation: CreationId,
    #[serde(borrow)]
    pub _key: ItemKeyRef<'a>,
    pub _actor: ActorId,
    pub _counter: u64,
    pub _hlc: Hlc,
    pub _op: Operation,
    pub _deleted: bool,
    #[serde(borrow)]
    pub body: Option<&'a str>,
}

/// An [`ItemKey`] as encoded, borrowing.
#[derive(Deserialize)]
pub(crate) struct ItemKeyRef<'a> {
    pub _partition_key: &'a str,
    pub _id: &'a str,
}

impl LogEntry {
    /// The version as it travels, with writers looked up by `writer`.
    pub(crate) fn into_version(
        self,
        writer: impl Fn(ActorId) -> Option<crate::causal::Writer>,
    ) -> Result<crate::replicate::Version> {
        let missing = || Error::Storage("a log entry names an unknown writer".into());
        let (region, incarnation) = writer(self.actor).ok_or_else(missing)?;
        let mut entries = Vec::with_capacity(self.context.entries().len());
        for (a, c) in self.context.entries() {
            entries.push((writer(*a).ok_or_else(missing)?, *c));
        }
        Ok(crate::replicate::Version {
            creation: self.creation,
            key: self.key,
            dot: crate::causal::Dot {
                region,
                incarnation,
                counter: self.counter,
            },
            hlc: self.hlc,
            op: self.op,
            deleted: self.deleted,
            body: self.body,
            context: Context::from_entries(entries),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_entrys_head_reads_its_body_without_the_rest() {
        let mut context = Context::new();
        context.insert(3, 9);
        let key = ItemKey {
            partition_key: PartitionKey::from("p"),
            id: "x".into(),
        };
        for body in [Some("{\"id\":\"x\",\"pad\":\"\u{e9}\"}"), None] {
            let entry = LogEntryRef {
                creation: CreationId(u128::MAX - 5),
                key: &key,
                actor: 3,
                counter: 9,
                hlc: Hlc {
                    physical_ms: 1_700_000_000_000,
                    logical: 2,
                },
                op: Operation::Replace,
                deleted: body.is_none(),
                body,
                context: &context,
            };
            let bytes = postcard::to_allocvec(&entry).expect("encode");
            let head: LogEntryBody<'_> = postcard::from_bytes(&bytes).expect("decode the head");
            assert_eq!(head.body, body);
            let whole: LogEntry = postcard::from_bytes(&bytes).expect("decode the entry");
            assert_eq!(whole.body.as_deref(), body);
        }
    }

    #[test]
    fn item_keys_round_trip_and_group_by_partition() {
        let cid = CreationId(77);
        let k = ItemKey {
            partition_key: PartitionKey::from("al"),
            id: "x1".into(),
        };
        let bytes = item_key(cid, &k);
        assert_eq!(parse_item_key(&bytes).expect("parse"), (cid, k));
        let prefix = partition_prefix(cid, &PartitionKey::from("al"));
        assert!(bytes.starts_with(&prefix));
        let other = item_key(
            cid,
            &ItemKey {
                partition_key: PartitionKey::from("alice"),
                id: "a".into(),
            },
        );
        assert!(
            !other.starts_with(&prefix),
            "partition \"al\" must not include \"alice\""
        );
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
    }
}
