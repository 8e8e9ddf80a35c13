//! One write transaction: applying versions, resolving items, keeping the feeds.
//!
//! Local writes and remote versions go through the same [`Tx::apply`], so a region treats its
//! own writes exactly as its peers will.

use super::backend::{KvRead, KvWrite, Table};
use super::codec::{
    ActorId, ItemRecord, LogEntryRef, Shown, StoredSibling, cid_lsn_key, decode, encode, item_key,
    parse_item_key, prefix_end,
};
use super::defs::{self, CidState, Creation};
use super::{Actors, META_CLOCK, META_WRITER, Store, WriterState};
use crate::causal::{Clock, Context, Dot, Hlc, Writer};
use crate::feed::{ConflictRecord, ConflictStatus};
use crate::model::{ConflictPolicy, ContainerDef, CreationId, ItemKey, Operation, SYSTEM_CREATION};
use crate::replicate::Version;
use crate::resolve::{CanonicalVersion, LwwKey, Outcome, decide, reason};
use crate::{Error, Result};
use std::collections::HashMap;
use xxhash_rust::xxh3::Xxh3;

const SCAN_CHUNK: usize = 256;

pub(crate) struct Tx<'a> {
    store: &'a Store,
    pub(super) kv: &'a mut dyn KvWrite,
    st: &'a mut WriterState,
    clock: &'a mut Clock,
    actors: &'a Actors,
    new_actors: &'a mut Vec<Writer>,
    cids: HashMap<CreationId, CidState>,
    /// The last writer interned: batches are mostly one writer's versions.
    last_writer: Option<(Writer, ActorId)>,
    /// Whether a system-container version (a definition) was applied.
    defs_changed: bool,
    /// Items whose resolution the watchdog stopped, to retry after the commit.
    interrupted: Vec<(CreationId, ItemKey)>,
}

/// A conflict record an item's current state justifies.
struct OpenRecord {
    id: u128,
    sibling: usize,
    reason: String,
}

/// The visible value decided for an item.
struct Resolution<'s> {
    shown: Shown,
    etag: u64,
    ts: u64,
    /// Siblings that contributed to the visible value.
    shown_siblings: Vec<usize>,
    open: Vec<OpenRecord>,
    /// Where the records go: database and container name.
    feed: Option<(&'s str, &'s str)>,
    /// The watchdog stopped the resolver: records stay as they were; retry later.
    retry: bool,
}

impl<'a> Tx<'a> {
    pub(super) fn new(
        store: &'a Store,
        kv: &'a mut dyn KvWrite,
        st: &'a mut WriterState,
        clock: &'a mut Clock,
        actors: &'a Actors,
        new_actors: &'a mut Vec<Writer>,
    ) -> Self {
        Tx {
            store,
            kv,
            st,
            clock,
            actors,
            new_actors,
            cids: HashMap::new(),
            last_writer: None,
            defs_changed: false,
            interrupted: Vec::new(),
        }
    }

    pub(super) fn defs_changed(&self) -> bool {
        self.defs_changed
    }

    pub(super) fn take_interrupted(&mut self) -> Vec<(CreationId, ItemKey)> {
        std::mem::take(&mut self.interrupted)
    }

    pub(super) fn read(&self) -> &dyn KvRead {
        &*self.kv
    }

    /// Persists the writer's counters; called once before commit.
    pub(super) fn finish(&mut self) -> Result<()> {
        self.st.clock = self.clock.last();
        self.st.stats.commits += 1;
        if self.st.needs_clock_bound() {
            let bound = self.st.bound_clock()?;
            self.kv.put(Table::Meta, META_CLOCK, &bound)?;
        }
        if !self.st.needs_reservation() {
            return Ok(());
        }
        self.st.reserve();
        let bytes = encode(&*self.st)?;
        self.kv.put(Table::Meta, META_WRITER, &bytes)
    }

    fn writer_of(&self, a: ActorId) -> &Writer {
        let i = a as usize;
        let n = self.actors.by_id.len();
        if i < n {
            &self.actors.by_id[i]
        } else {
            &self.new_actors[i - n]
        }
    }

    fn intern(&mut self, w: &Writer) -> Result<ActorId> {
        if let Some((last, id)) = &self.last_writer
            && last == w
        {
            return Ok(*id);
        }
        if let Some(&id) = self.actors.by_writer.get(w) {
            self.last_writer = Some((w.clone(), id));
            return Ok(id);
        }
        let n = self.actors.by_id.len();
        if let Some(pos) = self.new_actors.iter().position(|x| x == w) {
            return Ok((n + pos) as ActorId);
        }
        let id = (n + self.new_actors.len()) as ActorId;
        self.kv.put(Table::Actors, &id.to_be_bytes(), &encode(w)?)?;
        self.new_actors.push(w.clone());
        Ok(id)
    }

    fn wire_dot(&self, a: ActorId, counter: u64) -> Dot {
        let (region, incarnation) = self.writer_of(a).clone();
        Dot {
            region,
            incarnation,
            counter,
        }
    }

    fn alloc_lsn(&mut self) -> u64 {
        let l = self.st.next_lsn;
        self.st.next_lsn += 1;
        l
    }

    fn cid_state(&mut self, cid: CreationId) -> Result<CidState> {
        if let Some(s) = self.cids.get(&cid) {
            return Ok(s.clone());
        }
        let s = defs::cid_state(&*self.kv, cid)?;
        self.cids.insert(cid, s.clone());
        Ok(s)
    }

    fn clock_now_ms(&self) -> u64 {
        self.clock.physical_now()
    }

    /// Writes a new local version of an item whose current record is `rec`.
    pub(crate) fn write_local(
        &mut self,
        cid: CreationId,
        key: &ItemKey,
        rec: &ItemRecord,
        op: Operation,
        body: Option<String>,
    ) -> Result<ItemRecord> {
        self.st.counter += 1;
        let counter = self.st.counter;
        let hlc = self.clock.now();
        let entries = rec
            .context
            .entries()
            .iter()
            .map(|(a, c)| (self.writer_of(*a).clone(), *c))
            .collect();
        let v = Version {
            creation: cid,
            key: key.clone(),
            dot: Dot {
                region: self.store.region.clone(),
                incarnation: self.store.incarnation,
                counter,
            },
            hlc,
            op,
            deleted: op == Operation::Delete,
            body,
            context: Context::from_entries(entries),
        };
        match self.apply(&v, true)? {
            Some(rec) => Ok(rec),
            None => Err(Error::Storage("a local write was not applied".into())),
        }
    }

    /// Refuses what a trusted but buggy or confused peer could send.
    fn check_remote(&self, v: &Version) -> Result<()> {
        let me = (&self.store.region, self.store.incarnation);
        let ours = |region: &crate::causal::RegionId, inc| (region, inc) == me;
        if ours(&v.dot.region, v.dot.incarnation) && v.dot.counter > self.st.counter {
            return Err(Error::CorruptBatch(format!(
                "version {} claims a counter this region never issued",
                v.dot
            )));
        }
        for ((region, inc), c) in v.context.entries() {
            if ours(region, *inc) && *c > self.st.counter {
                return Err(Error::CorruptBatch(format!(
                    "version {} has a context claiming counter {c} of this region's current \
                     incarnation, which only issued {}",
                    v.dot, self.st.counter
                )));
            }
        }
        if !v.deleted && v.body.is_none() {
            return Err(Error::CorruptBatch(format!(
                "live version {} has no body",
                v.dot
            )));
        }
        if v.deleted != (v.op == Operation::Delete) {
            return Err(Error::CorruptBatch(format!(
                "version {} mixes up delete and write",
                v.dot
            )));
        }
        if v.creation == SYSTEM_CREATION {
            let body = v.body.as_deref().ok_or_else(|| {
                Error::CorruptBatch(format!("definition version {} has no body", v.dot))
            })?;
            if super::resolvers::is_resolver_key(&v.key) {
                super::resolvers::parse_resolver(&v.key, body)?;
                return Ok(());
            }
            let def = defs::parse_def(body)?;
            if def.database != v.key.partition_key.to_value().as_str().unwrap_or_default()
                || def.name != v.key.id
            {
                return Err(Error::CorruptBatch(format!(
                    "definition version {} does not match its key",
                    v.dot
                )));
            }
        }
        Ok(())
    }

    /// Applies one version, local or remote. Returns the item's new record, or `None` when the
    /// version was already seen or belongs to a dropped container.
    pub(crate) fn apply(&mut self, v: &Version, local: bool) -> Result<Option<ItemRecord>> {
        if !local {
            self.check_remote(v)?;
        }
        let system = v.creation == SYSTEM_CREATION;
        if !system && matches!(self.cid_state(v.creation)?, CidState::Dropped) {
            self.st.stats.discarded_dropped += 1;
            return Ok(None);
        }
        let ik = item_key(v.creation, &v.key);
        let mut rec = defs::load_item(&*self.kv, &ik)?.unwrap_or_else(ItemRecord::empty);
        let actor = self.intern(&v.dot.writer())?;
        let mut vctx = Vec::with_capacity(v.context.entries().len());
        for (w, c) in v.context.entries() {
            vctx.push((self.intern(w)?, *c));
        }
        let vctx = Context::from_entries(vctx);
        if rec.context.covers(&actor, v.dot.counter) {
            // A drop takes effect even when a later version already covers it: the set of
            // dropped creations grows independently of causal order. Otherwise a region that
            // saw the re-creation first would never learn that the old creation is gone.
            if system && v.deleted && !self.drop_known(v)? {
                let lsn = self.log_version(v, actor, &vctx)?;
                return self.apply_definition(v, &ik, rec, lsn).map(Some);
            }
            if !local {
                self.st.stats.remote_duplicates += 1;
            }
            return Ok(None);
        }
        let mut lost = 0;
        rec.siblings.retain(|s| {
            let covered = vctx.covers(&s.actor, s.counter);
            lost += u64::from(covered && !s.shown);
            !covered
        });
        self.st.stats.lost_to_lww += lost;
        let lsn = self.log_version(v, actor, &vctx)?;
        rec.siblings.push(StoredSibling {
            actor,
            counter: v.dot.counter,
            hlc: v.hlc,
            op: v.op,
            deleted: v.deleted,
            lsn,
            shown: false,
        });
        rec.context.merge(&vctx);
        rec.context.insert(actor, v.dot.counter);
        if !local {
            self.st.stats.remote_applied += 1;
            let now = self.clock_now_ms();
            if !self.clock.observe_at(v.hlc, now) {
                self.st.stats.clock_skew_ignored += 1;
            }
        }
        if system && super::resolvers::is_resolver_key(&v.key) {
            return self.apply_resolver(v, &ik, rec, lsn).map(Some);
        }
        if system {
            return self.apply_definition(v, &ik, rec, lsn).map(Some);
        }
        self.refresh(v.creation, &v.key, &ik, rec, Some(lsn))
            .map(Some)
    }

    /// Appends a version to the log, with its writers interned; returns its position.
    fn log_version(
        &mut self,
        v: &Version,
        actor: ActorId,
        context: &Context<ActorId>,
    ) -> Result<u64> {
        let lsn = self.alloc_lsn();
        let entry = LogEntryRef {
            creation: v.creation,
            key: &v.key,
            actor,
            counter: v.dot.counter,
            hlc: v.hlc,
            op: v.op,
            deleted: v.deleted,
            body: v.body.as_deref(),
            context,
        };
        self.kv
            .put_owned(Table::Log, &lsn.to_be_bytes(), encode(&entry)?)?;
        Ok(lsn)
    }

    /// A resolver item changed: load the visible module into the sandbox and resolve again
    /// the items of every creation of its container that uses it.
    fn apply_resolver(
        &mut self,
        v: &Version,
        ik: &[u8],
        rec: ItemRecord,
        lsn: u64,
    ) -> Result<ItemRecord> {
        let rec = self.refresh(SYSTEM_CREATION, &v.key, ik, rec, Some(lsn))?;
        let Some(body) = defs::visible_body(&*self.kv, &rec)? else {
            return Ok(rec);
        };
        let (item, module) = super::resolvers::parse_resolver(&v.key, &body)?;
        if self
            .store
            .options
            .host
            .install(&item.container, &item.name, &module)
            .is_err()
        {
            return Ok(rec);
        }
        let uses_it = |d: &ContainerDef| matches!(&d.conflict_resolution_policy, ConflictPolicy::Custom { resolver, .. } if *resolver == item.name);
        if defs::visible_def(&*self.kv, &item.database, &item.container)?
            .is_some_and(|d| uses_it(&d))
        {
            for cid in defs::creations_of(&*self.kv, &item.database, &item.container)? {
                self.refresh_creation(cid)?;
            }
        }
        Ok(rec)
    }

    /// Whether the creation a drop version drops is already known as dropped.
    fn drop_known(&self, v: &Version) -> Result<bool> {
        let body = v
            .body
            .as_deref()
            .ok_or_else(|| Error::CorruptBatch("drop without body".into()))?;
        defs::is_dropped(&*self.kv, defs::parse_def(body)?.creation_id)
    }

    /// The definition-specific part of applying a version of the system container.
    fn apply_definition(
        &mut self,
        v: &Version,
        ik: &[u8],
        mut rec: ItemRecord,
        lsn: u64,
    ) -> Result<ItemRecord> {
        let body = v
            .body
            .as_deref()
            .ok_or_else(|| Error::CorruptBatch("definition without body".into()))?;
        let def = defs::parse_def(body)?;
        self.defs_changed = true;
        let (db, name) = (def.database.clone(), def.name.clone());
        let old_def = defs::visible_def(&*self.kv, &db, &name)?;
        let cid_key = def.creation_id.0.to_be_bytes();
        let creation = encode(&Creation {
            database: db.clone(),
            name: name.clone(),
        })?;
        let new_creation = self.kv.get(Table::Creations, &cid_key)?.is_none();
        if new_creation {
            self.kv.put(Table::Creations, &cid_key, &creation)?;
        }
        if v.deleted && !defs::is_dropped(&*self.kv, def.creation_id)? {
            self.kv.put(Table::Dropped, &cid_key, &creation)?;
            self.purge_creation(def.creation_id, &db, &name)?;
        }
        // Live definitions of dropped creations are discarded; their dots stay in the context.
        let mut keep = Vec::with_capacity(rec.siblings.len());
        for s in rec.siblings.drain(..) {
            let dropped = match (s.deleted, defs::sibling_body(&*self.kv, &s)?) {
                (false, Some(b)) => defs::is_dropped(&*self.kv, defs::parse_def(&b)?.creation_id)?,
                _ => false,
            };
            if !dropped {
                keep.push(s);
            }
        }
        rec.siblings = keep;
        self.cids.clear();
        let key = defs::def_key(&db, &name);
        let rec = self.refresh(SYSTEM_CREATION, &key, ik, rec, Some(lsn))?;
        self.cids.clear();
        let new_def = defs::visible_body(&*self.kv, &rec)?
            .as_deref()
            .map(defs::parse_def)
            .transpose()?;
        if old_def != new_def {
            for cid in defs::creations_of(&*self.kv, &db, &name)? {
                self.refresh_creation(cid)?;
            }
        } else if new_creation {
            self.refresh_creation(def.creation_id)?;
        }
        Ok(rec)
    }

    /// Re-resolves one stored item (a no-op if it is gone).
    pub(crate) fn refresh_existing(&mut self, cid: CreationId, key: &ItemKey) -> Result<()> {
        let ik = item_key(cid, key);
        if let Some(rec) = defs::load_item(&*self.kv, &ik)? {
            self.refresh(cid, key, &ik, rec, None)?;
        }
        Ok(())
    }

    /// Re-resolves every item of a creation (after its definition changed).
    fn refresh_creation(&mut self, cid: CreationId) -> Result<()> {
        let prefix = cid.0.to_be_bytes();
        let end = prefix_end(&prefix);
        let mut from = prefix.to_vec();
        loop {
            let chunk = self
                .kv
                .scan(Table::Items, &from, end.as_deref(), SCAN_CHUNK)?;
            let Some((last, _)) = chunk.last() else { break };
            from = last.clone();
            from.push(0);
            for (k, v) in chunk {
                let (_, key) = parse_item_key(&k)?;
                let rec: ItemRecord = decode("item", &v)?;
                self.refresh(cid, &key, &k, rec, None)?;
            }
        }
        Ok(())
    }

    /// Removes a dropped creation's items, change-feed entries and conflict records.
    fn purge_creation(&mut self, cid: CreationId, db: &str, name: &str) -> Result<()> {
        let prefix = cid.0.to_be_bytes();
        let end = prefix_end(&prefix);
        for table in [Table::Items, Table::Changes] {
            loop {
                let chunk = self.kv.scan(table, &prefix, end.as_deref(), SCAN_CHUNK)?;
                if chunk.is_empty() {
                    break;
                }
                for (k, _) in chunk {
                    self.kv.remove(table, &k)?;
                }
            }
        }
        let cprefix = defs::conflict_prefix(db, name);
        let cend = prefix_end(&cprefix);
        for (k, v) in self
            .kv
            .scan(Table::Conflicts, &cprefix, cend.as_deref(), usize::MAX)?
        {
            let r: ConflictRecord = decode("conflict", &v)?;
            if r.creation == cid {
                self.kv.remove(Table::Conflicts, &k)?;
            }
        }
        self.cids.clear();
        Ok(())
    }

    /// Decides the item's visible value, updates its conflict records and change-feed entry,
    /// and stores it. `lsn` is the position of the version that caused it, if any.
    pub(crate) fn refresh(
        &mut self,
        cid: CreationId,
        key: &ItemKey,
        ik: &[u8],
        mut rec: ItemRecord,
        lsn: Option<u64>,
    ) -> Result<ItemRecord> {
        let state = self.cid_state(cid)?;
        let res = self.resolve(cid, key, &rec, &state)?;
        for &i in &res.shown_siblings {
            rec.siblings[i].shown = true;
        }
        // Conflict records: new ones open, the ones no longer justified superseded. A call the
        // watchdog stopped says nothing about them: they stay, and the item is retried.
        if res.retry {
            self.interrupted.push((cid, key.clone()));
        }
        let new_ids: Vec<u128> = if res.retry {
            rec.open.clone()
        } else {
            res.open.iter().map(|o| o.id).collect()
        };
        if let Some((db, name)) = res.feed.filter(|_| !res.retry) {
            for old in rec.open.iter().filter(|id| !new_ids.contains(id)) {
                let k = defs::conflict_key(db, name, *old);
                if let Some(b) = self.kv.get(Table::Conflicts, &k)? {
                    let mut r: ConflictRecord = decode("conflict", &b)?;
                    if r.status == ConflictStatus::Open {
                        r.status = ConflictStatus::Superseded;
                        self.kv.put(Table::Conflicts, &k, &encode(&r)?)?;
                    }
                }
            }
            let now = self.clock_now_ms();
            for o in res.open.iter().filter(|o| !rec.open.contains(&o.id)) {
                let s = &rec.siblings[o.sibling];
                let r = ConflictRecord {
                    id: format!("{:032x}", o.id),
                    creation: cid,
                    item_id: key.id.clone(),
                    partition_key: key.partition_key.clone(),
                    operation: s.op,
                    content: if s.deleted {
                        None
                    } else {
                        defs::sibling_body(&*self.kv, s)?
                    },
                    reason: o.reason.clone(),
                    status: ConflictStatus::Open,
                    recorded_at_ms: now,
                    dot: self.wire_dot(s.actor, s.counter).to_string(),
                };
                self.kv.put(
                    Table::Conflicts,
                    &defs::conflict_key(db, name, o.id),
                    &encode(&r)?,
                )?;
            }
        }
        rec.open = new_ids;
        let was_visible = rec.shown != Shown::Hidden;
        let is_visible = res.shown != Shown::Hidden;
        let changed = if is_visible {
            !was_visible || rec.etag != res.etag || rec.shown != res.shown
        } else {
            was_visible
        };
        rec.shown = res.shown;
        rec.etag = res.etag;
        rec.ts = res.ts;
        if changed && cid != SYSTEM_CREATION {
            let l = lsn.unwrap_or_else(|| self.alloc_lsn());
            if rec.lsn != 0 {
                self.kv.remove(Table::Changes, &cid_lsn_key(cid, rec.lsn))?;
            }
            self.kv.put(Table::Changes, &cid_lsn_key(cid, l), ik)?;
            rec.lsn = l;
        }
        self.kv.put_owned(Table::Items, ik, encode(&rec)?)?;
        Ok(rec)
    }

    fn sorted_dots(&self, rec: &ItemRecord) -> Vec<Dot> {
        let mut dots: Vec<Dot> = rec
            .siblings
            .iter()
            .map(|s| self.wire_dot(s.actor, s.counter))
            .collect();
        dots.sort();
        dots
    }

    fn resolve<'s>(
        &self,
        cid: CreationId,
        key: &ItemKey,
        rec: &ItemRecord,
        state: &'s CidState,
    ) -> Result<Resolution<'s>> {
        let hidden = |feed| Resolution {
            shown: Shown::Hidden,
            etag: 0,
            ts: 0,
            shown_siblings: vec![],
            open: vec![],
            feed,
            retry: false,
        };
        let (def, path): (Option<&ContainerDef>, &str) = match state {
            CidState::System => (None, "/_ts"),
            CidState::Active(d) => (Some(d), d.conflict_resolution_policy.order_path()),
            CidState::Unknown | CidState::Dropped => return Ok(hidden(None)),
            CidState::Replaced { database, name } => {
                let mut r = hidden(Some((database.as_str(), name.as_str())));
                for (i, s) in rec.siblings.iter().enumerate().filter(|(_, s)| !s.deleted) {
                    let mut h = Xxh3::new();
                    h.update(reason::CONTAINER_REPLACED.as_bytes());
                    h.update(&cid.0.to_be_bytes());
                    hash_dot(&mut h, &self.wire_dot(s.actor, s.counter));
                    r.open.push(OpenRecord {
                        id: h.digest128(),
                        sibling: i,
                        reason: reason::CONTAINER_REPLACED.into(),
                    });
                }
                return Ok(r);
            }
        };
        let feed = def.map(|d| (d.database.as_str(), d.name.as_str()));
        let sibs = &rec.siblings;
        if sibs.is_empty() {
            return Ok(hidden(feed));
        }
        // Bodies live in the log; a conflict reads them only when the order or the policy
        // looks at them.
        let needs_bodies = sibs.len() > 1
            && (path != "/_ts"
                || matches!(
                    def.map(|d| &d.conflict_resolution_policy),
                    Some(ConflictPolicy::Custom { .. })
                ));
        let bodies: Vec<Option<String>> = if needs_bodies {
            sibs.iter()
                .map(|s| {
                    if s.deleted {
                        Ok(None)
                    } else {
                        defs::sibling_body(self.read(), s)
                    }
                })
                .collect::<Result<_>>()?
        } else {
            vec![None; sibs.len()]
        };
        let order: Vec<usize> = if sibs.len() == 1 {
            vec![0]
        } else {
            let keys: Vec<LwwKey<'_>> = sibs
                .iter()
                .zip(&bodies)
                .map(|(s, body)| {
                    let (r, inc) = self.writer_of(s.actor);
                    LwwKey::new(
                        path,
                        s.deleted,
                        body.as_deref(),
                        s.hlc,
                        r.as_str(),
                        inc.0,
                        s.counter,
                    )
                })
                .collect();
            crate::resolve::lww::canonical_order(&keys, path)
        };
        let outcome = match def {
            Some(d) if sibs.len() > 1 => {
                let versions: Vec<CanonicalVersion> = order
                    .iter()
                    .map(|&i| {
                        let s = &sibs[i];
                        CanonicalVersion {
                            body: if s.deleted {
                                None
                            } else {
                                bodies[i].as_deref().map(|b| with_ts(b, s.hlc))
                            },
                            deleted: s.deleted,
                            region: self.writer_of(s.actor).0.to_string(),
                            timestamp: s.hlc.physical_ms,
                            logical: s.hlc.logical,
                        }
                    })
                    .collect();
                decide(
                    &d.conflict_resolution_policy,
                    &*self.store.options.host,
                    &d.name,
                    &key.id,
                    &key.partition_key,
                    &d.partition_key,
                    &versions,
                )
            }
            _ => Outcome::Pick(0),
        };
        let ts = sibs
            .iter()
            .map(|s| s.hlc)
            .max()
            .unwrap_or(Hlc::default())
            .seconds();
        let dots = self.sorted_dots(rec);
        // The etag names the visible version: the sibling set and which sibling (a dot names
        // its body) or the merged body shows.
        let etag_of = |shown: &[u8]| {
            let mut h = Xxh3::new();
            for d in &dots {
                hash_dot(&mut h, d);
            }
            h.update(shown);
            h.digest()
        };
        let pick = |i: usize, open: Vec<OpenRecord>| {
            let s = &sibs[i];
            match s.deleted {
                false => Resolution {
                    shown: Shown::Sibling(i as u32),
                    etag: {
                        let mut h = Xxh3::new();
                        hash_dot(&mut h, &self.wire_dot(s.actor, s.counter));
                        etag_of(&h.digest128().to_le_bytes())
                    },
                    ts,
                    shown_siblings: vec![i],
                    open,
                    feed,
                    retry: false,
                },
                true => Resolution {
                    shown_siblings: vec![i],
                    open,
                    ..hidden(feed)
                },
            }
        };
        Ok(match outcome {
            Outcome::Pick(c) => pick(order[c], vec![]),
            Outcome::Merge(body) => Resolution {
                etag: etag_of(body.as_bytes()),
                shown: Shown::Merged(body),
                ts,
                shown_siblings: (0..sibs.len()).collect(),
                open: vec![],
                feed,
                retry: false,
            },
            Outcome::Delete => Resolution {
                shown_siblings: (0..sibs.len()).collect(),
                ..hidden(feed)
            },
            Outcome::Interrupted => Resolution {
                retry: true,
                ..pick(order[0], vec![])
            },
            Outcome::Failed(reason) => {
                let mut open = Vec::new();
                for &i in &order[1..] {
                    let mut h = Xxh3::new();
                    h.update(&cid.0.to_be_bytes());
                    h.update(key.partition_key.as_json().as_bytes());
                    h.update(&[0]);
                    h.update(key.id.as_bytes());
                    h.update(&[0]);
                    for d in &dots {
                        hash_dot(&mut h, d);
                    }
                    hash_dot(&mut h, &self.wire_dot(sibs[i].actor, sibs[i].counter));
                    open.push(OpenRecord {
                        id: h.digest128(),
                        sibling: i,
                        reason: reason.clone(),
                    });
                }
                pick(order[0], open)
            }
        })
    }
}

fn hash_dot(h: &mut Xxh3, d: &Dot) {
    h.update(&(d.region.as_str().len() as u32).to_le_bytes());
    h.update(d.region.as_str().as_bytes());
    h.update(&d.incarnation.0.to_le_bytes());
    h.update(&d.counter.to_le_bytes());
}

/// The body as a resolver sees it: with `_ts`, the version's own seconds.
fn with_ts(body: &str, hlc: Hlc) -> String {
    let rest = body.trim_start().strip_prefix('{').unwrap_or("}");
    let sep = if rest.trim_start().starts_with('}') {
        ""
    } else {
        ","
    };
    format!("{{\"_ts\":{}{sep}{rest}", hlc.seconds())
}

/// An etag as users see it.
pub(crate) fn etag_string(etag: u64) -> String {
    format!("\"{etag:016x}\"")
}
