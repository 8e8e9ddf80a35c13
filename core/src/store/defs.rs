//! Container definitions as the system container holds them, and what they say about a
//! creation id.

use super::backend::{KvRead, Table};
use super::codec::LogEntryBody;
use super::codec::{
    ItemRecord, Shown, StoredSibling, decode, item_key, partition_prefix, prefix_end,
};
use crate::model::{ContainerDef, CreationId, ItemKey, PartitionKey, SYSTEM_CREATION};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// What the store knows of a creation id, which decides how its items resolve.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum CidState {
    /// The system container of definitions.
    System,
    /// The creation is the container's visible definition.
    Active(std::sync::Arc<ContainerDef>),
    /// Another creation of the same name won: the items become conflict records.
    Replaced { database: String, name: String },
    /// No definition has arrived yet: items wait, stored but not visible.
    Unknown,
    /// Dropped: its items are discarded.
    Dropped,
}

/// What the creations table keeps of every creation ever seen.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Creation {
    pub database: String,
    pub name: String,
    pub epoch: u64,
}

pub(crate) fn def_key(database: &str, name: &str) -> ItemKey {
    ItemKey {
        partition_key: PartitionKey::from(database),
        id: name.to_owned(),
    }
}

pub(crate) fn parse_def(body: &str) -> Result<ContainerDef> {
    serde_json::from_str(body)
        .map_err(|e| Error::CorruptBatch(format!("unreadable container definition: {e}")))
}

/// A sibling's body, read from the log (for a drop, the dropped definition).
pub(crate) fn sibling_body(kv: &dyn KvRead, s: &StoredSibling) -> Result<Option<String>> {
    // Only the entry's head is decoded (postcard reads a prefix and ignores the rest): a
    // scan reads one body per item.
    match kv.get(Table::Log, &s.lsn.to_be_bytes())? {
        Some(b) => postcard::from_bytes::<LogEntryBody<'_>>(&b)
            .map(|e| e.body.map(str::to_owned))
            .map_err(|e| Error::Storage(format!("the store holds an unreadable log record: {e}"))),
        None => Err(Error::Storage(format!("log entry {} is missing", s.lsn))),
    }
}

/// The visible body of an item, if any.
pub(crate) fn visible_body<'r>(
    kv: &dyn KvRead,
    rec: &'r ItemRecord,
) -> Result<Option<Cow<'r, str>>> {
    Ok(match &rec.shown {
        Shown::Hidden => None,
        Shown::Sibling(i) => match rec.siblings.get(*i as usize) {
            Some(s) if !s.deleted => sibling_body(kv, s)?.map(Cow::Owned),
            _ => None,
        },
        Shown::Merged(b) => Some(Cow::Borrowed(b.as_str())),
    })
}

pub(crate) fn load_item(kv: &dyn KvRead, key: &[u8]) -> Result<Option<ItemRecord>> {
    kv.get(Table::Items, key)?
        .map(|b| decode("item", &b))
        .transpose()
}

/// The visible definition of `database/name`, if the container exists.
pub(crate) fn visible_def(
    kv: &dyn KvRead,
    database: &str,
    name: &str,
) -> Result<Option<ContainerDef>> {
    let Some(rec) = load_item(kv, &item_key(SYSTEM_CREATION, &def_key(database, name)))? else {
        return Ok(None);
    };
    visible_body(kv, &rec)?
        .as_deref()
        .map(parse_def)
        .transpose()
}

/// The visible definition, or [`Error::UnknownContainer`].
pub(crate) fn active_def(kv: &dyn KvRead, database: &str, name: &str) -> Result<ContainerDef> {
    visible_def(kv, database, name)?.ok_or_else(|| Error::UnknownContainer {
        database: database.to_owned(),
        container: name.to_owned(),
    })
}

/// The visible definitions of one database, or of all, sorted by database and name.
pub(crate) fn list_defs(kv: &dyn KvRead, database: Option<&str>) -> Result<Vec<ContainerDef>> {
    let prefix = match database {
        Some(db) => partition_prefix(SYSTEM_CREATION, &PartitionKey::from(db)),
        None => SYSTEM_CREATION.0.to_be_bytes().to_vec(),
    };
    let end = prefix_end(&prefix);
    let mut out = Vec::new();
    for (k, v) in kv.scan(Table::Items, &prefix, end.as_deref(), usize::MAX)? {
        // The system container also holds resolver and database items, which are no
        // definitions.
        let key = super::codec::parse_item_key(&k)?.1;
        if super::resolvers::is_resolver_key(&key)
            || super::databases::is_database_key(&key)
            || super::retirements::is_retirement_key(&key)
        {
            continue;
        }
        let rec: ItemRecord = decode("item", &v)?;
        if let Some(body) = visible_body(kv, &rec)? {
            out.push(parse_def(&body)?);
        }
    }
    Ok(out)
}

pub(crate) fn is_dropped(kv: &dyn KvRead, cid: CreationId) -> Result<bool> {
    Ok(kv.get(Table::Dropped, &cid.0.to_be_bytes())?.is_some())
}

pub(crate) fn cid_state(kv: &dyn KvRead, cid: CreationId) -> Result<CidState> {
    if cid == SYSTEM_CREATION {
        return Ok(CidState::System);
    }
    if is_dropped(kv, cid)? {
        return Ok(CidState::Dropped);
    }
    let Some(c) = kv.get(Table::Creations, &cid.0.to_be_bytes())? else {
        return Ok(CidState::Unknown);
    };
    let c: Creation = decode("creation", &c)?;
    match visible_def(kv, &c.database, &c.name)? {
        Some(def) if def.creation_id == cid => Ok(CidState::Active(std::sync::Arc::new(def))),
        _ => Ok(CidState::Replaced {
            database: c.database,
            name: c.name,
        }),
    }
}

/// Every creation id seen for `database/name`.
pub(crate) fn creations_of(kv: &dyn KvRead, database: &str, name: &str) -> Result<Vec<CreationId>> {
    let mut out = Vec::new();
    for (k, v) in kv.scan(Table::Creations, &[], None, usize::MAX)? {
        let c: Creation = decode("creation", &v)?;
        if c.database == database && c.name == name {
            let id: [u8; 16] = k
                .as_slice()
                .try_into()
                .map_err(|_| Error::Storage("malformed creation key".into()))?;
            out.push(CreationId(u128::from_be_bytes(id)));
        }
    }
    Ok(out)
}

/// The epoch of a new creation of `database/name`: one past the highest epoch of its dropped
/// creations this region knows (0 if none), and past any epoch whose creation id is dropped.
/// It depends on which drops arrived, not on how many or in which order, so a region that saw
/// only the latest drop derives the same id as one that saw them all, and a re-created
/// container is never born dropped.
pub(crate) fn next_epoch(
    kv: &dyn KvRead,
    database: &str,
    name: &str,
    partition_key: &str,
) -> Result<u64> {
    let mut epoch = 0;
    for (_, v) in kv.scan(Table::Dropped, &[], None, usize::MAX)? {
        let c: Creation = decode("drop", &v)?;
        if c.database == database && c.name == name {
            epoch = epoch.max(c.epoch.saturating_add(1));
        }
    }
    while is_dropped(
        kv,
        crate::model::CreationId::derive(database, name, partition_key, epoch),
    )? {
        epoch += 1;
    }
    Ok(epoch)
}

/// Conflict records are keyed by container name, so records of a replaced creation show in the
/// feed of the container that replaced it.
pub(crate) fn conflict_prefix(database: &str, name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(database.len() + name.len() + 8);
    for part in [database, name] {
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out
}

pub(crate) fn conflict_key(database: &str, name: &str, id: u128) -> Vec<u8> {
    let mut out = conflict_prefix(database, name);
    out.extend_from_slice(&id.to_be_bytes());
    out
}
