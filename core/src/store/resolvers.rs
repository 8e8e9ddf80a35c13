//! Resolver modules as items of the system container: `name → module` per container creation,
//! so they are stored durably and replicate (and relay) like definitions. The bytes of every
//! module version that arrives are also kept by content hash (the modules table), whether or
//! not the version is still visible, so a region can run whatever module its definition pins.

use super::Store;
use super::backend::{KvRead, KvWrite, Table};
use super::codec::{ItemRecord, decode, from_hex, parse_item_key, prefix_end, to_hex};
use super::defs;
use crate::model::{
    ConflictPolicy, ContainerDef, CreationId, ItemKey, PartitionKey, SYSTEM_CREATION, validate_name,
};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Resolver items live in partitions `/resolvers/<database>`: database names cannot contain
/// `/`, so these never collide with definitions (partition `<database>`).
const PARTITION_PREFIX: &str = "/resolvers/";

/// The body of a resolver item.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ResolverItem {
    pub database: String,
    pub container: String,
    /// The creation of the container it belongs to: a drop takes it with it.
    pub creation: CreationId,
    pub name: String,
    pub hash: String,
    /// The module's bytes, hex.
    pub module: String,
}

/// A resolver item's fields without its module: what most readers need, read without
/// decoding (or hashing) the module's bytes.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct ResolverHead {
    pub database: String,
    pub container: String,
    pub creation: CreationId,
    pub name: String,
    pub hash: String,
}

/// Parses a resolver item's head and checks it matches its key.
pub(crate) fn parse_head(key: &ItemKey, body: &str) -> Result<ResolverHead> {
    let head: ResolverHead = serde_json::from_str(body)
        .map_err(|e| Error::CorruptBatch(format!("resolver item {}: {e}", key.id)))?;
    if resolver_key(&head.database, &head.container, head.creation, &head.name) != *key {
        return Err(Error::CorruptBatch(format!(
            "resolver item {}: does not match its key",
            key.id
        )));
    }
    Ok(head)
}

/// The key of resolver `name` of one creation of `database/container`: `<container>/<creation
/// id>/<name>` (names hold no `/`).
pub(crate) fn resolver_key(
    database: &str,
    container: &str,
    creation: CreationId,
    name: &str,
) -> ItemKey {
    ItemKey {
        partition_key: PartitionKey::from(format!("{PARTITION_PREFIX}{database}").as_str()),
        id: format!("{container}/{creation}/{name}"),
    }
}

pub(crate) fn is_resolver_key(key: &ItemKey) -> bool {
    key.partition_key
        .to_value()
        .as_str()
        .is_some_and(|s| s.starts_with(PARTITION_PREFIX))
}

/// Parses and checks a resolver item: its key, and that the module has the hash it claims.
pub(crate) fn parse_resolver(key: &ItemKey, body: &str) -> Result<(ResolverItem, Vec<u8>)> {
    let bad = |why: &str| Error::CorruptBatch(format!("resolver item {}: {why}", key.id));
    let item: ResolverItem = serde_json::from_str(body).map_err(|e| bad(&e.to_string()))?;
    if resolver_key(&item.database, &item.container, item.creation, &item.name) != *key {
        return Err(bad("does not match its key"));
    }
    let module = from_hex(&item.module).ok_or_else(|| bad("module is not hex"))?;
    if crate::udf::content_hash(&module) != item.hash {
        return Err(bad("module does not have the hash it claims"));
    }
    Ok((item, module))
}

/// The content hash of the visible resolver `name` of creation `creation`, if any.
pub(crate) fn installed_hash(
    kv: &dyn KvRead,
    database: &str,
    container: &str,
    creation: CreationId,
    name: &str,
) -> Result<Option<String>> {
    let key = resolver_key(database, container, creation, name);
    let Some(rec) = defs::load_item(kv, &super::codec::item_key(SYSTEM_CREATION, &key))? else {
        return Ok(None);
    };
    match defs::visible_body(kv, &rec)? {
        Some(body) => serde_json::from_str::<ResolverHead>(&body)
            .map(|h| Some(h.hash))
            .map_err(|e| Error::Storage(format!("unreadable resolver item {}: {e}", key.id))),
        None => Ok(None),
    }
}

/// The content hash of the module a definition runs: the one it pins, else the visible
/// resolver of its name in its creation. `None` for other policies, or when neither exists.
pub(crate) fn module_of(kv: &dyn KvRead, def: &ContainerDef) -> Result<Option<String>> {
    let ConflictPolicy::Custom { resolver, hash, .. } = &def.conflict_resolution_policy else {
        return Ok(None);
    };
    match hash {
        Some(h) => Ok(Some(h.clone())),
        None => installed_hash(kv, &def.database, &def.name, def.creation_id, resolver),
    }
}

/// The content hash of the module a definition runs ([`module_of`]), if this region holds
/// that module.
pub(crate) fn held_module_of(kv: &dyn KvRead, def: &ContainerDef) -> Result<Option<String>> {
    match module_of(kv, def)? {
        Some(h) if holds_module(kv, &h)? => Ok(Some(h)),
        _ => Ok(None),
    }
}

/// Whether this region holds the module with content hash `hash`.
pub(crate) fn holds_module(kv: &dyn KvRead, hash: &str) -> Result<bool> {
    Ok(kv.get(Table::Modules, hash.as_bytes())?.is_some())
}

/// Keeps a module's bytes by content hash; returns whether they are new here.
pub(crate) fn keep_module(kv: &mut dyn KvWrite, hash: &str, module: &[u8]) -> Result<bool> {
    if holds_module(&*kv, hash)? {
        return Ok(false);
    }
    kv.put(Table::Modules, hash.as_bytes(), module)?;
    Ok(true)
}

/// Every visible resolver item of one creation.
fn resolvers_of(kv: &dyn KvRead, def: &ContainerDef) -> Result<Vec<ResolverHead>> {
    let prefix = SYSTEM_CREATION.0.to_be_bytes();
    let end = prefix_end(&prefix);
    let mut out = Vec::new();
    for (k, v) in kv.scan(Table::Items, &prefix, end.as_deref(), usize::MAX)? {
        let (_, key) = parse_item_key(&k)?;
        if !is_resolver_key(&key) {
            continue;
        }
        let rec: ItemRecord = decode("item", &v)?;
        if let Some(body) = defs::visible_body(kv, &rec)? {
            let item = parse_head(&key, &body)?;
            if item.database == def.database
                && item.container == def.name
                && item.creation == def.creation_id
            {
                out.push(item);
            }
        }
    }
    Ok(out)
}

impl Store {
    /// Validates a WebAssembly module against the resolver ABI and installs it as resolver
    /// `name` of the container: stored durably, replicated with the container, and loaded into
    /// every region's sandbox. Items of the container still in conflict are resolved again.
    /// Returns the module's content hash.
    pub fn put_resolver(
        &self,
        database: &str,
        container: &str,
        name: &str,
        module: &[u8],
    ) -> Result<String> {
        validate_name("resolver", name)?;
        let stack = crate::model::ResolverLimits::default().stack_bytes;
        let compiled = crate::udf::ResolverModule::compile(module, stack)
            .map_err(|e| Error::InvalidModule(e.to_string()))?;
        let hash = compiled.hash().to_owned();
        let hex = to_hex(module);
        self.write_tx(self.commit_sync(), |tx| {
            let creation = defs::active_def(tx.read(), database, container)?.creation_id;
            let body = serde_json::to_string(&ResolverItem {
                database: database.to_owned(),
                container: container.to_owned(),
                creation,
                name: name.to_owned(),
                hash: hash.clone(),
                module: hex,
            })
            .map_err(|e| Error::Storage(e.to_string()))?;
            let key = resolver_key(database, container, creation, name);
            let ik = super::codec::item_key(SYSTEM_CREATION, &key);
            let rec = defs::load_item(tx.read(), &ik)?.unwrap_or_else(ItemRecord::empty);
            let op = if rec.shown == super::codec::Shown::Hidden {
                crate::model::Operation::Create
            } else {
                crate::model::Operation::Replace
            };
            tx.write_local(SYSTEM_CREATION, &key, &rec, op, Some(body))?;
            // A definition that uses this name pins the new bytes: a new definition version,
            // so every region switches modules at the same point of the definition's history.
            if let Some(mut def) = defs::visible_def(tx.read(), database, container)?
                && let ConflictPolicy::Custom {
                    resolver,
                    hash: pinned,
                    ..
                } = &mut def.conflict_resolution_policy
                && resolver == name
                && pinned.as_deref() != Some(hash.as_str())
            {
                *pinned = Some(hash.clone());
                let body =
                    serde_json::to_string(&def).map_err(|e| Error::Storage(e.to_string()))?;
                let dkey = defs::def_key(database, container);
                let drec =
                    defs::load_item(tx.read(), &super::codec::item_key(SYSTEM_CREATION, &dkey))?
                        .unwrap_or_else(ItemRecord::empty);
                tx.write_local(
                    SYSTEM_CREATION,
                    &dkey,
                    &drec,
                    crate::model::Operation::Replace,
                    Some(body),
                )?;
            }
            Ok(())
        })?;
        Ok(hash)
    }

    /// The content hash of the module `def` runs, if this region holds it (as a resolution
    /// here would use it).
    pub(crate) fn held_module_of(&self, def: &ContainerDef) -> Result<Option<String>> {
        self.read_tx(|kv, _| held_module_of(kv, def))
    }

    /// The resolvers installed in a container's current creation: (name, content hash),
    /// sorted by name.
    pub fn resolvers(&self, database: &str, container: &str) -> Result<Vec<(String, String)>> {
        self.read_tx(|kv, _| {
            let def = defs::active_def(kv, database, container)?;
            let mut out: Vec<(String, String)> = resolvers_of(kv, &def)?
                .into_iter()
                .map(|r| (r.name, r.hash))
                .collect();
            out.sort();
            Ok(out)
        })
    }

    /// Loads every stored module into the sandbox (at open), by content hash.
    pub(crate) fn load_modules(&self) -> Result<()> {
        let mut from = Vec::new();
        loop {
            let chunk = self.read_tx(|kv, _| kv.scan(Table::Modules, &from, None, 16))?;
            let Some((last, _)) = chunk.last() else {
                return Ok(());
            };
            from = last.clone();
            from.push(0);
            for (_, module) in chunk {
                // A host without a sandbox keeps nothing; the conflicts show `resolver missing`.
                let _ = self.options.host.load(&module);
            }
        }
    }
}
