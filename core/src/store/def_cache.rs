//! A cache of visible container definitions, so item reads and writes do not parse the
//! definition on every call.
//!
//! Correctness rests on generations: a writer that changes a definition bumps the generation
//! (and clears the cache) after its commit and before releasing the writer lock; a reader takes
//! the generation before opening its snapshot and inserts what it computed only if the
//! generation has not moved since. A reader can therefore never install a definition older than
//! the latest commit.

use super::Store;
use super::backend::KvRead;
use super::defs;
use crate::model::ContainerDef;
use crate::{Error, Result};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Default)]
pub(crate) struct DefCache {
    generation: u64,
    defs: HashMap<(String, String), Arc<ContainerDef>>,
}

fn poisoned() -> Error {
    Error::Storage("definition cache lock poisoned".into())
}

impl Store {
    /// The cache generation; take it before opening the snapshot `def_cached` reads.
    pub(crate) fn defs_generation(&self) -> u64 {
        self.def_cache
            .read()
            .map(|c| c.generation)
            .unwrap_or(u64::MAX)
    }

    /// Forgets every cached definition (after a commit that changed one).
    pub(crate) fn invalidate_defs(&self) {
        if let Ok(mut c) = self.def_cache.write() {
            c.generation += 1;
            c.defs.clear();
        }
    }

    /// The visible definition of `database/name`, or [`Error::UnknownContainer`].
    pub(crate) fn def_cached(
        &self,
        kv: &dyn KvRead,
        generation: u64,
        database: &str,
        name: &str,
    ) -> Result<Arc<ContainerDef>> {
        let key = (database.to_owned(), name.to_owned());
        if let Some(d) = self
            .def_cache
            .read()
            .map_err(|_| poisoned())?
            .defs
            .get(&key)
        {
            return Ok(d.clone());
        }
        let def = Arc::new(defs::active_def(kv, database, name)?);
        let mut c = self.def_cache.write().map_err(|_| poisoned())?;
        if c.generation == generation {
            c.defs.insert(key, def.clone());
        }
        Ok(def)
    }
}
