//! Creating, changing, listing and dropping containers. Definitions are versions of items in
//! the system container, so they replicate and resolve like any item.

use super::Store;
use super::codec::{ItemRecord, item_key};
use super::defs::{self, def_key, load_item};
use crate::model::{
    ConflictPolicy, ContainerDef, CreationId, Operation, SYSTEM_CREATION, validate_name,
};
use crate::{Error, Result};

impl Store {
    /// Creates the container `database/name`, or changes its policy if it exists. Returns the
    /// definition and whether it was created. The partition key path is fixed at creation.
    pub fn put_container(
        &self,
        database: &str,
        name: &str,
        partition_key: &str,
        policy: ConflictPolicy,
    ) -> Result<(ContainerDef, bool)> {
        validate_name("database", database)?;
        validate_name("container", name)?;
        self.write_tx(self.commit_sync(), |tx| {
            let existing = defs::visible_def(tx.read(), database, name)?;
            let creation = match &existing {
                Some(d) => d.creation_id,
                None => CreationId::derive(
                    database,
                    name,
                    partition_key,
                    defs::next_epoch(tx.read(), database, name, partition_key)?,
                ),
            };
            // The definition pins the content hash of the resolver it names, if installed in
            // this creation; otherwise it keeps the hash it was given (a module to come).
            let mut policy = policy;
            if let ConflictPolicy::Custom { resolver, hash, .. } = &mut policy
                && let Some(installed) =
                    super::resolvers::installed_hash(tx.read(), database, name, creation, resolver)?
            {
                *hash = Some(installed);
            }
            let (def, op) = match existing {
                Some(d) if d.partition_key != partition_key => {
                    return Err(Error::InvalidDefinition(format!(
                        "container {database}/{name} has partition key {}; a partition key path is fixed at creation",
                        d.partition_key
                    )));
                }
                Some(d) if d.conflict_resolution_policy == policy => return Ok((d, false)),
                Some(d) => (ContainerDef { conflict_resolution_policy: policy, ..d }, Operation::Replace),
                None => {
                    let epoch = defs::next_epoch(tx.read(), database, name, partition_key)?;
                    let def = ContainerDef {
                        database: database.to_owned(),
                        name: name.to_owned(),
                        partition_key: partition_key.to_owned(),
                        conflict_resolution_policy: policy,
                        creation_id: CreationId::derive(database, name, partition_key, epoch),
                        epoch,
                    };
                    (def, Operation::Create)
                }
            };
            def.validate()?;
            let body = serde_json::to_string(&def).map_err(|e| Error::Storage(e.to_string()))?;
            let key = def_key(database, name);
            let rec = load_item(tx.read(), &item_key(SYSTEM_CREATION, &key))?.unwrap_or_else(ItemRecord::empty);
            tx.write_local(SYSTEM_CREATION, &key, &rec, op, Some(body))?;
            Ok((def, op == Operation::Create))
        })
    }

    /// Creates a container with the default policy (LWW on `/_ts`) if it does not exist.
    pub fn create_container(
        &self,
        database: &str,
        name: &str,
        partition_key: &str,
    ) -> Result<ContainerDef> {
        self.put_container(database, name, partition_key, ConflictPolicy::default())
            .map(|(d, _)| d)
    }

    /// Drops a container: its items and feeds go, in every region, for good. That is every
    /// creation of the name this region shows a live definition of: the visible one, and any
    /// concurrent creation with another partition key path that lost to it (whose items are
    /// `container replaced` records).
    pub fn drop_container(&self, database: &str, name: &str) -> Result<()> {
        self.write_tx(self.commit_sync(), |tx| drop_in(tx, database, name))
    }

    /// The definition of `database/name`.
    pub fn container(&self, database: &str, name: &str) -> Result<ContainerDef> {
        let generation = self.defs_generation();
        self.read_tx(|kv, _| {
            self.def_cached(kv, generation, database, name)
                .map(|d| (*d).clone())
        })
    }

    /// The containers of a database; [`Error::UnknownContainer`] (with an empty container
    /// name) when the database holds none.
    pub fn containers(&self, database: &str) -> Result<Vec<ContainerDef>> {
        let defs = self.read_tx(|kv, _| defs::list_defs(kv, Some(database)))?;
        if defs.is_empty() {
            return Err(Error::UnknownContainer {
                database: database.to_owned(),
                container: String::new(),
            });
        }
        Ok(defs)
    }

    /// Every container in every database.
    pub fn all_containers(&self) -> Result<Vec<ContainerDef>> {
        self.read_tx(|kv, _| defs::list_defs(kv, None))
    }

    /// When the visible definition of `database/name` was written (HLC seconds; 0 when no live
    /// definition shows).
    pub fn container_ts(&self, database: &str, name: &str) -> Result<u64> {
        self.read_tx(|kv, _| {
            let rec = load_item(kv, &item_key(SYSTEM_CREATION, &def_key(database, name)))?;
            Ok(rec
                .as_ref()
                .and_then(super::databases::live_ts)
                .unwrap_or(0))
        })
    }
}

/// Drops `database/name` within a transaction (see [`Store::drop_container`]).
pub(super) fn drop_in(tx: &mut super::tx::Tx<'_>, database: &str, name: &str) -> Result<()> {
    let def = defs::active_def(tx.read(), database, name)?;
    let key = def_key(database, name);
    let mut rec =
        load_item(tx.read(), &item_key(SYSTEM_CREATION, &key))?.unwrap_or_else(ItemRecord::empty);
    // A drop is a tombstone that still names the creation it drops: one per creation, the
    // visible one last.
    let mut dropped = Vec::new();
    for s in rec.siblings.iter().filter(|s| !s.deleted) {
        if let Some(body) = defs::sibling_body(tx.read(), s)? {
            let other = defs::parse_def(&body)?;
            if other.creation_id != def.creation_id
                && !dropped
                    .iter()
                    .any(|d: &ContainerDef| d.creation_id == other.creation_id)
            {
                dropped.push(other);
            }
        }
    }
    dropped.push(def);
    for d in dropped {
        let body = serde_json::to_string(&d).map_err(|e| Error::Storage(e.to_string()))?;
        rec = tx.write_local(SYSTEM_CREATION, &key, &rec, Operation::Delete, Some(body))?;
    }
    Ok(())
}
