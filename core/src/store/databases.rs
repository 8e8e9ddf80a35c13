//! Databases as items of the system container, so they are stored durably and replicate (and
//! relay) like container definitions.
//!
//! A database *shows* when its item is live or when it holds a container: containers made
//! without creating their database first (the plain HTTP API, the library) imply it, and a
//! container created concurrently with the database's deletion keeps it showing. Deleting a
//! database drops every container it holds and deletes its item.

use super::Store;
use super::codec::{ItemRecord, Shown, item_key};
use super::defs::{self, load_item};
use crate::model::{ItemKey, Operation, PartitionKey, SYSTEM_CREATION, validate_name};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Database items live in the partition `/databases`: database names cannot contain `/`, so it
/// never collides with definitions (partition `<database>`) or resolvers (`/resolvers/<db>`).
const PARTITION: &str = "/databases";

/// A database as the store shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseDef {
    /// The database's name.
    pub id: String,
    /// When its item was last written (HLC seconds); 0 when only its containers imply it.
    pub ts: u64,
    /// Whether a database item is live (it was created); `false` when only containers imply it.
    pub created: bool,
}

/// The body of a database item.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DatabaseItem {
    id: String,
}

pub(crate) fn database_key(name: &str) -> ItemKey {
    ItemKey {
        partition_key: PartitionKey::from(PARTITION),
        id: name.to_owned(),
    }
}

pub(crate) fn is_database_key(key: &ItemKey) -> bool {
    key.partition_key.to_value().as_str() == Some(PARTITION)
}

/// Checks a remote database item's body against its key.
pub(crate) fn check_body(key: &ItemKey, body: &str) -> Result<()> {
    let item: DatabaseItem = serde_json::from_str(body)
        .map_err(|e| Error::CorruptBatch(format!("database item {:?}: {e}", key.id)))?;
    if item.id != key.id {
        return Err(Error::CorruptBatch(format!(
            "database item {:?} does not match its key",
            key.id
        )));
    }
    Ok(())
}

/// The seconds of the visible version of a database (or definition) item, if it is live.
pub(super) fn live_ts(rec: &ItemRecord) -> Option<u64> {
    match rec.shown {
        Shown::Sibling(i) => rec
            .siblings
            .get(i as usize)
            .filter(|s| !s.deleted)
            .map(|s| s.hlc.seconds()),
        _ => None,
    }
}

fn database_record(kv: &dyn super::backend::KvRead, name: &str) -> Result<Option<ItemRecord>> {
    load_item(kv, &item_key(SYSTEM_CREATION, &database_key(name)))
}

fn show(kv: &dyn super::backend::KvRead, name: &str) -> Result<Option<DatabaseDef>> {
    let ts = database_record(kv, name)?.as_ref().and_then(live_ts);
    if ts.is_none() && defs::list_defs(kv, Some(name))?.is_empty() {
        return Ok(None);
    }
    Ok(Some(DatabaseDef {
        id: name.to_owned(),
        ts: ts.unwrap_or(0),
        created: ts.is_some(),
    }))
}

fn item_body(name: &str) -> Result<String> {
    serde_json::to_string(&DatabaseItem {
        id: name.to_owned(),
    })
    .map_err(Error::storage)
}

fn unknown(name: &str) -> Error {
    Error::UnknownDatabase(name.to_owned())
}

impl Store {
    /// Creates the database `name`; [`Error::DatabaseExists`] when it shows already (created,
    /// or holding a container).
    pub fn create_database(&self, name: &str) -> Result<DatabaseDef> {
        validate_name("database", name)?;
        self.write_tx(self.commit_sync(), |tx| {
            if show(tx.read(), name)?.is_some() {
                return Err(Error::DatabaseExists(name.to_owned()));
            }
            let key = database_key(name);
            let rec = database_record(tx.read(), name)?.unwrap_or_else(ItemRecord::empty);
            let body = item_body(name)?;
            let rec = tx.write_local(SYSTEM_CREATION, &key, &rec, Operation::Create, Some(body))?;
            Ok(DatabaseDef {
                id: name.to_owned(),
                ts: live_ts(&rec).unwrap_or(0),
                created: true,
            })
        })
    }

    /// The database `name`, if it shows.
    pub fn database(&self, name: &str) -> Result<DatabaseDef> {
        validate_name("database", name)?;
        self.read_tx(|kv, _| show(kv, name))?
            .ok_or_else(|| unknown(name))
    }

    /// Every database that shows, sorted by name.
    pub fn databases(&self) -> Result<Vec<DatabaseDef>> {
        self.read_tx(|kv, _| {
            let mut names: Vec<String> = defs::list_defs(kv, None)?
                .into_iter()
                .map(|d| d.database)
                .collect();
            let prefix =
                super::codec::partition_prefix(SYSTEM_CREATION, &PartitionKey::from(PARTITION));
            let end = super::codec::prefix_end(&prefix);
            for (k, v) in kv.scan(
                super::backend::Table::Items,
                &prefix,
                end.as_deref(),
                usize::MAX,
            )? {
                let (_, key) = super::codec::parse_item_key(&k)?;
                let rec: ItemRecord = super::codec::decode("item", &v)?;
                if live_ts(&rec).is_some() {
                    names.push(key.id);
                }
            }
            names.sort();
            names.dedup();
            let mut out = Vec::with_capacity(names.len());
            for n in names {
                out.extend(show(kv, &n)?);
            }
            Ok(out)
        })
    }

    /// Deletes the database `name` in every region: drops each container it holds (as
    /// [`Store::drop_container`] does) and deletes its item, in one transaction.
    pub fn delete_database(&self, name: &str) -> Result<()> {
        validate_name("database", name)?;
        self.write_tx(self.commit_sync(), |tx| {
            if show(tx.read(), name)?.is_none() {
                return Err(unknown(name));
            }
            for def in defs::list_defs(tx.read(), Some(name))? {
                super::containers::drop_in(tx, name, &def.name)?;
            }
            if let Some(rec) = database_record(tx.read(), name)?
                && live_ts(&rec).is_some()
            {
                // Every version of the system container carries a body, deletes included.
                let body = item_body(name)?;
                tx.write_local(
                    SYSTEM_CREATION,
                    &database_key(name),
                    &rec,
                    Operation::Delete,
                    Some(body),
                )?;
            }
            Ok(())
        })
    }
}
