//! Item operations with Cosmos semantics.

use super::Store;
use super::backend::KvRead;
use super::backend::Table;
use super::codec::{ItemRecord, Shown, decode, item_key, partition_prefix, prefix_end};
use super::defs::{self, load_item};
use super::tx::{Tx, etag_string};
use crate::feed::Page;
use crate::model::{ContainerDef, ItemKey, Operation, PartitionKey, validate_item};
use crate::{Error, Result};
use serde_json::{Map, Value};

/// An item as read: the body with its system properties `_ts`, `_etag` and `_lsn`.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    /// The item, system properties included.
    pub body: Value,
    /// The `_etag` (also the HTTP `ETag`), quoted as Cosmos does.
    pub etag: String,
    /// The change-feed position of this visible value.
    pub lsn: u64,
    /// `_ts`, seconds.
    pub ts: u64,
}

impl Item {
    /// The item's id.
    pub fn id(&self) -> &str {
        self.body
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}

/// One write of an item.
#[derive(Clone, Debug)]
pub enum WriteOp {
    /// Create; fails with [`Error::AlreadyExists`] if the item exists.
    Create(Value),
    /// Create or replace.
    Upsert(Value),
    /// Replace an existing item; `if_match` makes it conditional on the current etag.
    Replace {
        /// The id of the item replaced; must equal the body's `id`.
        id: String,
        /// The new body.
        item: Value,
        /// The etag the item must have, if any (`*` matches any).
        if_match: Option<String>,
    },
    /// Delete an existing item.
    Delete {
        /// Its partition key value.
        partition_key: PartitionKey,
        /// Its id.
        id: String,
        /// The etag the item must have, if any.
        if_match: Option<String>,
    },
}

/// What a write did.
#[derive(Clone, Debug, PartialEq)]
pub enum WriteOutcome {
    /// The item did not exist; now it does.
    Created(Item),
    /// The item existed and was replaced.
    Replaced(Item),
    /// The item was deleted.
    Deleted,
}

impl WriteOutcome {
    /// The item written, unless it was a delete.
    pub fn item(&self) -> Option<&Item> {
        match self {
            WriteOutcome::Created(i) | WriteOutcome::Replaced(i) => Some(i),
            WriteOutcome::Deleted => None,
        }
    }
}

/// A visible item as the store holds it, before its body is parsed: what a scan that reads
/// only some properties of each item needs.
#[derive(Clone, Copy, Debug)]
pub struct VisibleItem<'a> {
    /// The item's JSON text as written, without its system properties.
    pub body: &'a str,
    /// `_ts`, seconds.
    pub ts: u64,
    /// The change-feed position of this visible value (`_lsn`).
    pub lsn: u64,
    etag: u64,
}

impl VisibleItem<'_> {
    /// `_etag` (also the HTTP `ETag`), quoted.
    pub fn etag(&self) -> String {
        etag_string(self.etag)
    }

    /// The item as reads return it: the body parsed, with `_ts`, `_etag` and `_lsn`.
    pub fn to_item(&self) -> Result<Item> {
        let mut obj: Map<String, Value> = match serde_json::from_str(self.body) {
            Ok(Value::Object(o)) => o,
            _ => {
                return Err(Error::Storage(
                    "the store holds a visible body that is not an object".into(),
                ));
            }
        };
        let etag = self.etag();
        obj.insert("_ts".into(), self.ts.into());
        obj.insert("_etag".into(), etag.clone().into());
        obj.insert("_lsn".into(), self.lsn.into());
        Ok(Item {
            body: Value::Object(obj),
            etag,
            lsn: self.lsn,
            ts: self.ts,
        })
    }
}

/// Renders a visible record as the user sees it (`None` when it shows nothing).
pub(crate) fn render(kv: &dyn KvRead, rec: &ItemRecord) -> Result<Option<Item>> {
    let Some(body) = defs::visible_body(kv, rec)? else {
        return Ok(None);
    };
    visible(rec, &body).to_item().map(Some)
}

fn visible<'a>(rec: &ItemRecord, body: &'a str) -> VisibleItem<'a> {
    VisibleItem {
        body,
        ts: rec.ts,
        lsn: rec.lsn,
        etag: rec.etag,
    }
}

fn check_if_match(rec: &ItemRecord, if_match: Option<&str>) -> Result<()> {
    let Some(expected) = if_match else {
        return Ok(());
    };
    let current = etag_string(rec.etag);
    if expected == "*" || expected == current || format!("\"{expected}\"") == current {
        Ok(())
    } else {
        Err(Error::PreconditionFailed {
            expected: expected.to_owned(),
            current,
        })
    }
}

fn not_found(key: &ItemKey) -> Error {
    Error::NotFound {
        id: key.id.clone(),
        partition_key: key.partition_key.as_json().to_owned(),
    }
}

pub(crate) fn apply_op(tx: &mut Tx<'_>, def: &ContainerDef, op: WriteOp) -> Result<WriteOutcome> {
    let cid = def.creation_id;
    let (key, body, if_match, intent) = match op {
        WriteOp::Create(v) => {
            let valid = validate_item(v, &def.partition_key)?;
            (valid.key, Some(valid.body), None, Some(Operation::Create))
        }
        WriteOp::Upsert(v) => {
            let valid = validate_item(v, &def.partition_key)?;
            (valid.key, Some(valid.body), None, None)
        }
        WriteOp::Replace { id, item, if_match } => {
            let valid = validate_item(item, &def.partition_key)?;
            if valid.key.id != id {
                return Err(Error::invalid(format!(
                    "the body's id {:?} does not match the id {id:?} being replaced",
                    valid.key.id
                )));
            }
            (
                valid.key,
                Some(valid.body),
                if_match,
                Some(Operation::Replace),
            )
        }
        WriteOp::Delete {
            partition_key,
            id,
            if_match,
        } => (
            ItemKey { partition_key, id },
            None,
            if_match,
            Some(Operation::Delete),
        ),
    };
    let rec = load_item(tx.read(), &item_key(cid, &key))?.unwrap_or_else(ItemRecord::empty);
    let exists = rec.shown != Shown::Hidden;
    let op = match (intent, exists) {
        (Some(Operation::Create), true) => {
            return Err(Error::AlreadyExists {
                id: key.id,
                partition_key: key.partition_key.as_json().to_owned(),
            });
        }
        (Some(Operation::Replace | Operation::Delete), false) => return Err(not_found(&key)),
        (Some(op), _) => op,
        (None, true) => Operation::Replace,
        (None, false) => Operation::Create,
    };
    check_if_match(&rec, if_match.as_deref())?;
    let rec = tx.write_local(cid, &key, &rec, op, body)?;
    let rendered = || {
        render(tx.read(), &rec)?
            .ok_or_else(|| Error::Storage("a written item is not visible".into()))
    };
    Ok(match op {
        Operation::Create => WriteOutcome::Created(rendered()?),
        Operation::Replace => WriteOutcome::Replaced(rendered()?),
        Operation::Delete => WriteOutcome::Deleted,
    })
}

impl Store {
    /// Applies several writes to one container in one transaction (one fsync). Each write
    /// succeeds or fails on its own; a failed one changes nothing.
    pub fn write_many(
        &self,
        database: &str,
        container: &str,
        ops: Vec<WriteOp>,
    ) -> Result<Vec<Result<WriteOutcome>>> {
        self.write_tx(self.commit_sync(), |tx| {
            let def = self.def_cached(tx.read(), self.defs_generation(), database, container)?;
            let mut out = Vec::with_capacity(ops.len());
            for op in ops {
                match apply_op(tx, &def, op) {
                    Err(Error::Storage(e)) => return Err(Error::Storage(e)),
                    r => out.push(r),
                }
            }
            Ok(out)
        })
    }

    /// Applies one write.
    pub fn write(&self, database: &str, container: &str, op: WriteOp) -> Result<WriteOutcome> {
        if self.options.durability == super::Durability::GroupCommit {
            return self.write_grouped(database, container, op);
        }
        self.write_tx(self.commit_sync(), |tx| {
            let def = self.def_cached(tx.read(), self.defs_generation(), database, container)?;
            apply_op(tx, &def, op)
        })
    }

    /// Creates an item; [`Error::AlreadyExists`] if it exists.
    pub fn create_item(&self, database: &str, container: &str, item: Value) -> Result<Item> {
        match self.write(database, container, WriteOp::Create(item))? {
            WriteOutcome::Created(i) => Ok(i),
            other => Err(Error::Storage(format!("create returned {other:?}"))),
        }
    }

    /// Creates or replaces an item; the flag says whether it was created.
    pub fn upsert_item(
        &self,
        database: &str,
        container: &str,
        item: Value,
    ) -> Result<(Item, bool)> {
        match self.write(database, container, WriteOp::Upsert(item))? {
            WriteOutcome::Created(i) => Ok((i, true)),
            WriteOutcome::Replaced(i) => Ok((i, false)),
            WriteOutcome::Deleted => Err(Error::Storage("upsert deleted".into())),
        }
    }

    /// Replaces an existing item, optionally only if its etag is `if_match`.
    pub fn replace_item(
        &self,
        database: &str,
        container: &str,
        id: &str,
        item: Value,
        if_match: Option<&str>,
    ) -> Result<Item> {
        let op = WriteOp::Replace {
            id: id.to_owned(),
            item,
            if_match: if_match.map(str::to_owned),
        };
        match self.write(database, container, op)? {
            WriteOutcome::Replaced(i) => Ok(i),
            other => Err(Error::Storage(format!("replace returned {other:?}"))),
        }
    }

    /// Deletes an existing item, optionally only if its etag is `if_match`.
    pub fn delete_item(
        &self,
        database: &str,
        container: &str,
        partition_key: &PartitionKey,
        id: &str,
        if_match: Option<&str>,
    ) -> Result<()> {
        let op = WriteOp::Delete {
            partition_key: partition_key.clone(),
            id: id.to_owned(),
            if_match: if_match.map(str::to_owned),
        };
        self.write(database, container, op).map(|_| ())
    }

    /// Reads an item.
    pub fn read_item(
        &self,
        database: &str,
        container: &str,
        partition_key: &PartitionKey,
        id: &str,
    ) -> Result<Item> {
        let generation = self.defs_generation();
        self.read_tx(|kv, _| {
            let def = self.def_cached(kv, generation, database, container)?;
            let key = ItemKey {
                partition_key: partition_key.clone(),
                id: id.to_owned(),
            };
            match load_item(kv, &item_key(def.creation_id, &key))? {
                Some(rec) => render(kv, &rec)?.ok_or_else(|| not_found(&key)),
                None => Err(not_found(&key)),
            }
        })
    }

    /// Lists visible items, all or one partition's, grouped by partition and sorted by id
    /// within one (a stable order), in pages of at
    /// most `max` items.
    pub fn list_items(
        &self,
        database: &str,
        container: &str,
        partition_key: Option<&PartitionKey>,
        continuation: Option<&str>,
        max: usize,
    ) -> Result<Page<Item>> {
        let max = max.max(1);
        let generation = self.defs_generation();
        self.read_tx(|kv, _| {
            let def = self.def_cached(kv, generation, database, container)?;
            let prefix = match partition_key {
                Some(pk) => partition_prefix(def.creation_id, pk),
                None => def.creation_id.0.to_be_bytes().to_vec(),
            };
            let end = prefix_end(&prefix);
            let mut from = match continuation {
                Some(t) => {
                    let k = decode_hex(t).ok_or_else(|| {
                        Error::InvalidToken(format!("{t:?} is not a list continuation"))
                    })?;
                    if !k.starts_with(&prefix) {
                        return Err(Error::InvalidToken(
                            "the continuation belongs to another listing".into(),
                        ));
                    }
                    k
                }
                None => prefix.clone(),
            };
            let mut items = Vec::new();
            loop {
                let chunk = kv.scan(Table::Items, &from, end.as_deref(), 256)?;
                let Some((last, _)) = chunk.last() else {
                    return Ok(Page {
                        items,
                        continuation: None,
                    });
                };
                from = last.clone();
                from.push(0);
                for (k, v) in chunk {
                    let rec: ItemRecord = decode("item", &v)?;
                    if let Some(item) = render(kv, &rec)? {
                        if items.len() == max {
                            return Ok(Page {
                                items,
                                continuation: Some(encode_hex(&k)),
                            });
                        }
                        items.push(item);
                    }
                }
            }
        })
    }
}

impl Store {
    /// Calls `visit` with every visible item of a container (or of one partition), in key
    /// order, with the item's store key, from `from` (a key `visit` was given earlier,
    /// inclusive) on, until `visit` breaks. Bodies are handed over unparsed
    /// ([`VisibleItem::to_item`] parses one). Items are read 256 at a time, each batch in a
    /// read transaction of its own that holds no lock writers wait for: a long scan never
    /// holds up writes (each batch is consistent; the scan as a whole is not a snapshot).
    pub fn scan_visible(
        &self,
        database: &str,
        container: &str,
        partition_key: Option<&PartitionKey>,
        from: Option<&[u8]>,
        mut visit: impl FnMut(&[u8], VisibleItem<'_>) -> std::ops::ControlFlow<()>,
    ) -> Result<()> {
        let mut next: Option<Vec<u8>> = from.map(<[u8]>::to_vec);
        loop {
            let generation = self.defs_generation();
            let done = self.backend.read(|kv| {
                let def = self.def_cached(kv, generation, database, container)?;
                let prefix = match partition_key {
                    Some(pk) => partition_prefix(def.creation_id, pk),
                    None => def.creation_id.0.to_be_bytes().to_vec(),
                };
                let start = match next.take() {
                    Some(k) if k.starts_with(&prefix) => k,
                    Some(_) => {
                        return Err(Error::InvalidToken(
                            "the position belongs to another container or partition".into(),
                        ));
                    }
                    None => prefix.clone(),
                };
                let end = prefix_end(&prefix);
                let chunk = kv.scan(Table::Items, &start, end.as_deref(), 256)?;
                let Some((last, _)) = chunk.last() else {
                    return Ok(true);
                };
                let mut after = last.clone();
                after.push(0);
                for (k, v) in chunk {
                    let rec: ItemRecord = decode("item", &v)?;
                    if let Some(body) = defs::visible_body(kv, &rec)?
                        && visit(&k, visible(&rec, &body)).is_break()
                    {
                        return Ok(true);
                    }
                }
                next = Some(after);
                Ok(false)
            })?;
            if done {
                return Ok(());
            }
        }
    }
}

/// A continuation token: the hex of the key to resume at.
pub(crate) fn encode_hex(b: &[u8]) -> String {
    super::codec::to_hex(b)
}

/// Decodes a continuation token; tokens longer than any key are refused unread.
pub(crate) fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() > 4096 {
        return None;
    }
    super::codec::from_hex(s)
}
