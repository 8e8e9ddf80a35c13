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
use super::stability::Stability;
use super::{Actors, META_CLOCK, META_WRITER, Store, WriterState};
use crate::causal::{Clock, Context, Dot, Hlc, Incarnation, RegionId, Writer};
use crate::feed::{ConflictRecord, ConflictStatus};
use crate::model::{ConflictPolicy, ContainerDef, CreationId, ItemKey, Operation, SYSTEM_CREATION};
use crate::replicate::Version;
use crate::resolve::{Outcome, item};
use crate::{Error, Result};
use std::collections::HashMap;
use std::time::Instant;

const SCAN_CHUNK: usize = 256;

pub(crate) struct Tx<'a> {
    store: &'a Store,
    pub(super) kv: &'a mut dyn KvWrite,
    st: &'a mut WriterState,
    clock: &'a mut Clock,
    /// The members and the stable point as the transaction began, and the changed copy once
    /// something changes them (copied on the first change, so most transactions copy nothing).
    stab: &'a Stability,
    stab_new: Option<Stability>,
    actors: &'a Actors,
    new_actors: &'a mut Vec<Writer>,
    cids: HashMap<CreationId, CidState>,
    /// The last writer interned: batches are mostly one writer's versions.
    last_writer: Option<(Writer, ActorId)>,
    /// Whether a system-container version (a definition) was applied.
    defs_changed: bool,
    /// Wall-clock time spent in custom resolver calls.
    resolver_time: std::time::Duration,
    /// The resolver time this transaction may spend: the writer's credit (credit.rs).
    resolver_credit: std::time::Duration,
    /// The module each creation runs, if held here (see [`Tx::module_for`]).
    modules: HashMap<CreationId, Option<String>>,
}

/// What a transaction takes of the writer: its counters and clock, and the members and the
/// stable point as the transaction began.
pub(super) struct WriterParts<'a> {
    pub st: &'a mut WriterState,
    pub clock: &'a mut Clock,
    pub stab: &'a Stability,
}

/// A custom resolver call made while the writer is held may run this long before it is
/// stopped and retried without the writer ([`Store::retry_interrupted`]); a write that arrives
/// as such a call starts waits at most about this long for it.
pub(super) const IN_WRITER_CALL: std::time::Duration = std::time::Duration::from_millis(50);

/// The owned inputs of one item's resolution, read from the store.
pub(super) struct Inputs {
    state: CidState,
    module: Option<String>,
    siblings: Vec<(Dot, Hlc, bool, Option<String>)>,
}

impl Inputs {
    /// Reads what resolving `rec` needs: its creation's state, the module its definition runs
    /// if this region holds it, the siblings' wire dots and, where resolution reads them, their
    /// bodies.
    pub(super) fn read(
        kv: &dyn KvRead,
        writer_of: impl Fn(ActorId) -> Result<Writer>,
        rec: &ItemRecord,
        state: CidState,
        module: Option<String>,
        key: &ItemKey,
    ) -> Result<Self> {
        let mut inputs = Inputs {
            state,
            module,
            siblings: Vec::with_capacity(rec.siblings.len()),
        };
        // Resolver items of the system container order without their bodies (modules, up to
        // many MiB): only definitions carry an epoch.
        let bodies = item::needs_bodies(&inputs.definition().0, rec.siblings.len())
            && !(inputs.state == CidState::System && super::resolvers::is_resolver_key(key));
        for s in &rec.siblings {
            let (region, incarnation) = writer_of(s.actor)?;
            let body = match bodies && !s.deleted {
                true => defs::sibling_body(kv, s)?,
                false => None,
            };
            let dot = Dot {
                region,
                incarnation,
                counter: s.counter,
            };
            inputs.siblings.push((dot, s.hlc, s.deleted, body));
        }
        Ok(inputs)
    }

    /// The definition as resolution sees it, and where the records go (database, container).
    pub(super) fn definition(&self) -> (item::Definition<'_>, Option<(&str, &str)>) {
        match &self.state {
            CidState::System => (item::Definition::System, None),
            CidState::Active(def) => (
                item::Definition::Active {
                    def,
                    module: self.module.as_deref(),
                },
                Some((def.database.as_str(), def.name.as_str())),
            ),
            CidState::Unknown | CidState::Dropped => (item::Definition::Hidden, None),
            CidState::Replaced { database, name } => (
                item::Definition::Replaced,
                Some((database.as_str(), name.as_str())),
            ),
        }
    }

    pub(super) fn siblings(&self) -> Vec<item::Sibling<'_>> {
        self.siblings
            .iter()
            .map(|(dot, hlc, deleted, body)| item::Sibling {
                dot: dot.clone(),
                hlc: *hlc,
                deleted: *deleted,
                body: body.as_deref(),
            })
            .collect()
    }

    /// Whether the item's creation is live under a custom policy.
    pub(super) fn custom(&self) -> bool {
        matches!(&self.state, CidState::Active(d)
            if matches!(d.conflict_resolution_policy, ConflictPolicy::Custom { .. }))
    }

    /// The content hash of the module the item's definition runs, if held here.
    pub(super) fn module(&self) -> Option<&str> {
        self.module.as_deref()
    }

    /// Whether the item is in conflict under a custom policy: the case a resolver is called
    /// for.
    pub(super) fn custom_conflict(&self) -> bool {
        self.siblings.len() > 1 && self.custom()
    }
}

impl<'a> Tx<'a> {
    pub(super) fn new(
        store: &'a Store,
        kv: &'a mut dyn KvWrite,
        writer: WriterParts<'a>,
        actors: &'a Actors,
        new_actors: &'a mut Vec<Writer>,
        resolver_credit: std::time::Duration,
    ) -> Self {
        let WriterParts { st, clock, stab } = writer;
        Tx {
            store,
            kv,
            st,
            clock,
            stab,
            stab_new: None,
            actors,
            new_actors,
            cids: HashMap::new(),
            last_writer: None,
            defs_changed: false,
            resolver_time: std::time::Duration::ZERO,
            resolver_credit,
            modules: HashMap::new(),
        }
    }

    /// Wall-clock time this transaction spent in custom resolver calls.
    pub(super) fn resolver_time(&self) -> std::time::Duration {
        self.resolver_time
    }

    pub(super) fn defs_changed(&self) -> bool {
        self.defs_changed
    }

    pub(super) fn read(&self) -> &dyn KvRead {
        &*self.kv
    }

    /// The members and the stable point, with this transaction's changes.
    pub(super) fn stability(&self) -> &Stability {
        self.stab_new.as_ref().unwrap_or(self.stab)
    }

    /// The members and the stable point, to change (persisted when the transaction commits).
    pub(super) fn stability_mut(&mut self) -> &mut Stability {
        self.stab_new.get_or_insert_with(|| self.stab.clone())
    }

    /// The changed members and stable point, if the transaction changed them.
    pub(super) fn take_stability(&mut self) -> Option<Stability> {
        self.stab_new.take()
    }

    /// This region's write counter (the last one issued).
    pub(super) fn counter(&self) -> u64 {
        self.st.counter
    }

    /// The region that issued the dots of `actor`.
    fn region_of(&self, actor: ActorId) -> &RegionId {
        &self.writer_of(actor).0
    }

    /// The interned id of `w`, if it has one (without interning it).
    fn actor_id(&self, w: &Writer) -> Option<ActorId> {
        if let Some(&id) = self.actors.by_writer.get(w) {
            return Some(id);
        }
        let n = self.actors.by_id.len();
        self.new_actors
            .iter()
            .position(|x| x == w)
            .map(|pos| (n + pos) as ActorId)
    }

    /// Whether this region has already applied the dot `(actor, counter)` of an item whose
    /// context is `ctx`: the context covers it (by its writer's entry or its region's floor),
    /// or it is at or below the stable point, which every version this region applied is.
    fn seen(&self, ctx: &Context<ActorId>, actor: ActorId, dot: &Dot) -> bool {
        if ctx.covers(&actor, dot.counter) || dot.counter <= self.stability().stable_of(&dot.region)
        {
            return true;
        }
        self.actor_id(&(dot.region.clone(), Incarnation::FLOOR))
            .is_some_and(|f| ctx.covers(&f, dot.counter))
    }

    /// Whether the dot `(actor, counter)` is at or below the stable point.
    pub(super) fn is_stable(&self, actor: ActorId, counter: u64) -> bool {
        counter <= self.stability().stable_of(self.region_of(actor))
    }

    /// Records that collection removed these dots (floor entries are not versions: skipped).
    pub(super) fn mark_collected(&mut self, dots: &[(ActorId, u64)]) {
        let dots: Vec<(RegionId, u64)> = dots
            .iter()
            .filter(|(a, _)| self.writer_of(*a).1 != Incarnation::FLOOR)
            .map(|(a, c)| (self.region_of(*a).clone(), *c))
            .collect();
        let stab = self.stability_mut();
        for (r, c) in &dots {
            stab.mark_collected(r, *c);
        }
    }

    /// [`shrink`](Self::shrink) for collection.
    pub(super) fn shrink_context(&self, ctx: &mut Context<ActorId>) {
        self.shrink(ctx);
    }

    /// Drops the context entries the stable point covers (its floor covers them).
    fn shrink(&self, ctx: &mut Context<ActorId>) {
        let stable = self.stability();
        if stable.stable().is_empty() {
            return;
        }
        ctx.retain(|a, c| c > stable.stable_of(self.region_of(*a)));
    }

    /// Persists the writer's counters; called once before commit.
    pub(super) fn finish(&mut self) -> Result<()> {
        if let Some(stab) = self.stab_new.as_mut()
            && stab.is_dirty()
        {
            stab.persist(self.kv)?;
        }
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
        // A region whose versions this store holds is a member from now on, as it is when the
        // store opens: collection waits for it.
        if !self.stability().is_member(&w.0) {
            self.stability_mut().know(&w.0);
        }
        Ok(id)
    }

    /// A version's context with its writers interned.
    fn intern_context(&mut self, ctx: &Context<Writer>) -> Result<Context<ActorId>> {
        let mut out = Vec::with_capacity(ctx.entries().len());
        for (w, c) in ctx.entries() {
            out.push((self.intern(w)?, *c));
        }
        Ok(Context::from_entries(out))
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

    /// This region's physical time, ms (the clock's source).
    pub(super) fn now_ms(&self) -> u64 {
        self.clock_now_ms()
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
        if let Some(cut) = self.stability().retired_self() {
            return Err(crate::Error::Retired(format!(
                "region {} was retired (its versions past counter {cut} are refused in every \
                 region): it takes no writes; write to another region, or start a region of \
                 another name with `converge serve --join`",
                self.store.region
            )));
        }
        self.st.counter += 1;
        let counter = self.st.counter;
        let hlc = self.clock.now();
        // The stable point travels as floor entries: whatever collection removed here, this
        // version covers (a region that has not collected it yet drops it as covered).
        let entries = rec
            .context
            .entries()
            .iter()
            .map(|(a, c)| (self.writer_of(*a).clone(), *c))
            .chain(
                self.stability()
                    .stable()
                    .iter()
                    .filter(|(_, c)| **c > 0)
                    .map(|(r, c)| ((r.clone(), Incarnation::FLOOR), *c)),
            )
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
        for ((region, inc), c) in v.context.entries() {
            if *region == self.store.region && *inc == Incarnation::FLOOR && *c > self.st.counter {
                return Err(Error::CorruptBatch(format!(
                    "version {} claims this region's versions up to {c} are stable; it only \
                     issued {}",
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
                // The module's bytes are decoded and checked against their hash when they are
                // kept (`keep_module`), only if this region does not hold them yet.
                super::resolvers::parse_head(&v.key, body)?;
                return Ok(());
            }
            if super::databases::is_database_key(&v.key) {
                return super::databases::check_body(&v.key, body);
            }
            if super::retirements::is_retirement_key(&v.key) {
                return super::retirements::parse(&v.key, body).map(|_| ());
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
            // A retired region's versions past its cut are refused, in every region alike.
            if let Some(cut) = self.stability().retired_cut(&v.dot.region)
                && v.dot.counter > cut
            {
                self.st.stats.refused_retired += 1;
                return Ok(None);
            }
        }
        let system = v.creation == SYSTEM_CREATION;
        if !system && matches!(self.cid_state(v.creation)?, CidState::Dropped) {
            self.st.stats.discarded_dropped += 1;
            return Ok(None);
        }
        // Every module version that arrives is kept by its content hash, covered or not, so
        // a region can run whichever one its definition pins.
        let resolver = system && super::resolvers::is_resolver_key(&v.key);
        // Database items resolve like any system item; nothing else depends on them.
        // Retirements too, but each one retires its region when it arrives, covered or not
        // (the set of retired regions only grows, whatever the order).
        let retirement = system && super::retirements::is_retirement_key(&v.key);
        if let (true, Some(body)) = (retirement, v.body.as_deref()) {
            let (region, cut) = super::retirements::parse(&v.key, body)?;
            if self.stability().retired_cut(&region) < Some(cut) {
                self.stability_mut().retire(&region, cut);
            }
        }
        let database = system && (super::databases::is_database_key(&v.key) || retirement);
        let new_module = match (resolver, v.body.as_deref()) {
            (true, Some(body)) => self.keep_module(&v.key, body)?,
            _ => None,
        };
        let ik = item_key(v.creation, &v.key);
        let mut rec = defs::load_item(&*self.kv, &ik)?.unwrap_or_else(ItemRecord::empty);
        let actor = self.intern(&v.dot.writer())?;
        let vctx = self.intern_context(&v.context)?;
        if database && self.seen(&rec.context, actor, &v.dot) {
            if !local {
                self.st.stats.remote_duplicates += 1;
            }
            return Ok(None);
        }
        if self.seen(&rec.context, actor, &v.dot) {
            // A drop takes effect even when a later version already covers it: the set of
            // dropped creations grows independently of causal order. Otherwise a region that
            // saw the re-creation first would never learn that the old creation is gone.
            if system && v.deleted && !self.drop_known(v)? {
                let lsn = self.log_version(v, actor, &vctx)?;
                return self.apply_definition(v, &ik, rec, lsn).map(Some);
            }
            // Likewise a definition of a creation new here, covered on arrival: the creation
            // becomes known (its items are replaced by the one that won, not left waiting),
            // and the version is logged so the regions this one relays to learn it too.
            // Otherwise which creations a region knows would depend on delivery order.
            if system && !resolver && !v.deleted && !self.creation_known(v)? {
                let lsn = self.log_version(v, actor, &vctx)?;
                return self.apply_definition(v, &ik, rec, lsn).map(Some);
            }
            // A covered module version new here is logged, so it is relayed to regions that
            // may pin it, and the conflicts that wait for it are resolved again (the visible
            // resolver items are unchanged, so only the definitions pinning it can be).
            if let Some(item) = new_module {
                self.log_version(v, actor, &vctx)?;
                let pinning = self.creations_pinning(&item.hash)?;
                self.refresh_creations(pinning)?;
                return Ok(None);
            }
            if !local {
                self.st.stats.remote_duplicates += 1;
            }
            return Ok(None);
        }
        let mut lost = 0;
        // A version's floor entries cover every dot of their region up to them.
        let floors: Vec<(&RegionId, u64)> = v
            .context
            .entries()
            .iter()
            .filter(|((_, inc), _)| *inc == Incarnation::FLOOR)
            .map(|((r, _), c)| (r, *c))
            .collect();
        rec.siblings.retain(|s| {
            let covered = vctx.covers(&s.actor, s.counter)
                || floors
                    .iter()
                    .any(|(r, c)| s.counter <= *c && *r == self.region_of(s.actor));
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
        if resolver {
            let rec = self.refresh(SYSTEM_CREATION, &v.key, &ik, rec, Some(lsn))?;
            let item = super::resolvers::parse_head(&v.key, v.body.as_deref().unwrap_or_default())?;
            // The creation the item belongs to (its visible resolver may have changed) and,
            // when the module is new here, every creation pinning it: each resolved once.
            let mut affected = self.creation_using(&item)?;
            if new_module.is_some() {
                affected.extend(self.creations_pinning(&item.hash)?);
            }
            self.refresh_creations(affected)?;
            return Ok(Some(rec));
        }
        if system && !database {
            return self.apply_definition(v, &ik, rec, lsn).map(Some);
        }
        self.refresh(v.creation, &v.key, &ik, rec, Some(lsn))
            .map(Some)
    }

    /// Stores an item as a snapshot carried it: its context, its siblings (logged here with the
    /// contexts they were written with, so this region relays them as written), then resolves
    /// it as any refresh does (visible value, conflict records, change feed).
    pub(super) fn bootstrap_item(&mut self, item: super::snapshot::SnapItem) -> Result<()> {
        let ik = item_key(item.creation, &item.key);
        let mut rec = ItemRecord::empty();
        for (w, c) in item.context.entries() {
            let a = self.intern(w)?;
            rec.context.insert(a, *c);
        }
        for (v, shown) in &item.siblings {
            if v.creation != item.creation || v.key != item.key {
                return Err(Error::CorruptBatch(format!(
                    "snapshot: sibling {} is of another item",
                    v.dot
                )));
            }
            let actor = self.intern(&v.dot.writer())?;
            let vctx = self.intern_context(&v.context)?;
            let lsn = self.log_version(v, actor, &vctx)?;
            rec.siblings.push(StoredSibling {
                actor,
                counter: v.dot.counter,
                hlc: v.hlc,
                op: v.op,
                deleted: v.deleted,
                lsn,
                shown: *shown,
            });
            rec.context.insert(actor, v.dot.counter);
            let now = self.clock_now_ms();
            if !self.clock.observe_at(v.hlc, now) {
                self.st.stats.clock_skew_ignored += 1;
            }
        }
        if item.creation == SYSTEM_CREATION {
            self.defs_changed = true;
            self.cids.clear();
            self.modules.clear();
        }
        self.refresh(item.creation, &item.key, &ik, rec, None)?;
        Ok(())
    }

    /// Logs a version a snapshot carried that no item shows (so this region relays it), without
    /// applying it: its effects came with the snapshot's state.
    pub(super) fn bootstrap_log(&mut self, v: &Version) -> Result<()> {
        let actor = self.intern(&v.dot.writer())?;
        let vctx = self.intern_context(&v.context)?;
        self.log_version(v, actor, &vctx)?;
        Ok(())
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

    /// Keeps the module a resolver version carries, if its bytes are new here (and loads it
    /// into the sandbox); returns the resolver item then.
    fn keep_module(
        &mut self,
        key: &ItemKey,
        body: &str,
    ) -> Result<Option<super::resolvers::ResolverHead>> {
        let head = super::resolvers::parse_head(key, body)?;
        if super::resolvers::holds_module(&*self.kv, &head.hash)? {
            return Ok(None);
        }
        let (_, module) = super::resolvers::parse_resolver(key, body)?;
        super::resolvers::keep_module(self.kv, &head.hash, &module)?;
        let item = head;
        // A host without a sandbox refuses; its conflicts show `resolver missing`.
        let _ = self.store.options.host.load(&module);
        self.modules.clear();
        Ok(Some(item))
    }

    /// Every live creation whose definition runs the module `hash`, whichever container or
    /// resolver name the module came under.
    fn creations_pinning(&self, hash: &str) -> Result<std::collections::BTreeSet<CreationId>> {
        let mut out = std::collections::BTreeSet::new();
        for def in defs::list_defs(&*self.kv, None)? {
            if super::resolvers::module_of(&*self.kv, &def)?.as_deref() == Some(hash) {
                out.insert(def.creation_id);
            }
        }
        Ok(out)
    }

    /// The creation a resolver item belongs to, if it is live and its policy names the
    /// resolver.
    fn creation_using(
        &self,
        item: &super::resolvers::ResolverHead,
    ) -> Result<std::collections::BTreeSet<CreationId>> {
        let uses_it = |d: &ContainerDef| {
            d.creation_id == item.creation
                && matches!(&d.conflict_resolution_policy,
                    ConflictPolicy::Custom { resolver, .. } if *resolver == item.name)
        };
        let live = defs::visible_def(&*self.kv, &item.database, &item.container)?
            .is_some_and(|d| uses_it(&d));
        Ok(live.then_some(item.creation).into_iter().collect())
    }

    /// Resolves again the items of each creation (after its resolver or module changed).
    fn refresh_creations(
        &mut self,
        creations: std::collections::BTreeSet<CreationId>,
    ) -> Result<()> {
        self.modules.clear();
        for cid in creations {
            self.refresh_creation(cid)?;
        }
        Ok(())
    }

    /// The content hash of the module `def` runs, if this region holds it (cached for the
    /// transaction; cleared when a definition, resolver or module changes).
    fn module_for(&mut self, def: &ContainerDef) -> Result<Option<String>> {
        if let Some(m) = self.modules.get(&def.creation_id) {
            return Ok(m.clone());
        }
        let m = super::resolvers::held_module_of(&*self.kv, def)?;
        self.modules.insert(def.creation_id, m.clone());
        Ok(m)
    }

    /// The definition a version of a definition item carries (for a drop, the one it drops).
    fn carried_def(v: &Version) -> Result<ContainerDef> {
        let body = v
            .body
            .as_deref()
            .ok_or_else(|| Error::CorruptBatch("definition version without body".into()))?;
        defs::parse_def(body)
    }

    /// Whether the creation a definition version names is already in the creations table.
    fn creation_known(&self, v: &Version) -> Result<bool> {
        let cid = Self::carried_def(v)?.creation_id;
        Ok(self
            .kv
            .get(Table::Creations, &cid.0.to_be_bytes())?
            .is_some())
    }

    /// Whether the creation a drop version drops is already known as dropped.
    fn drop_known(&self, v: &Version) -> Result<bool> {
        defs::is_dropped(&*self.kv, Self::carried_def(v)?.creation_id)
    }

    /// The definition-specific part of applying a version of the system container.
    fn apply_definition(
        &mut self,
        v: &Version,
        ik: &[u8],
        mut rec: ItemRecord,
        lsn: u64,
    ) -> Result<ItemRecord> {
        let def = Self::carried_def(v)?;
        self.defs_changed = true;
        self.modules.clear();
        let (db, name) = (def.database.clone(), def.name.clone());
        let old_def = defs::visible_def(&*self.kv, &db, &name)?;
        let cid_key = def.creation_id.0.to_be_bytes();
        let creation = encode(&Creation {
            database: db.clone(),
            name: name.clone(),
            epoch: def.epoch,
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
        rec: ItemRecord,
        lsn: Option<u64>,
    ) -> Result<ItemRecord> {
        self.refresh_with(cid, key, ik, rec, lsn, None)
    }

    /// Commits an outcome computed without the writer for the item at `ik`, if what it depends
    /// on (its [`item::conflict_key`]) is unchanged; otherwise whatever changed it resolved it
    /// again already, and nothing is done.
    pub(super) fn commit_decided(
        &mut self,
        ik: &[u8],
        conflict_key: u128,
        outcome: Outcome,
    ) -> Result<()> {
        let (cid, key) = parse_item_key(ik)?;
        match defs::load_item(&*self.kv, ik)? {
            Some(rec) => {
                self.refresh_with(cid, &key, ik, rec, None, Some((conflict_key, outcome)))?;
            }
            None => self.kv.remove(Table::Interrupted, ik)?,
        }
        Ok(())
    }

    fn refresh_with(
        &mut self,
        cid: CreationId,
        key: &ItemKey,
        ik: &[u8],
        mut rec: ItemRecord,
        lsn: Option<u64>,
        decided: Option<(u128, Outcome)>,
    ) -> Result<ItemRecord> {
        let state = self.cid_state(cid)?;
        let module = match &state {
            CidState::Active(d) if rec.siblings.len() > 1 => self.module_for(d)?,
            _ => None,
        };
        let inputs = Inputs::read(
            &*self.kv,
            |a| Ok(self.writer_of(a).clone()),
            &rec,
            state,
            module,
            key,
        )?;
        let (definition, feed) = inputs.definition();
        let siblings = inputs.siblings();
        let retrying = decided.is_some();
        let decider = match decided {
            Some((k, outcome)) if item::conflict_key(&definition, key, &siblings) == k => {
                item::Decider::Decided(outcome)
            }
            // Otherwise (no outcome, or the item changed since it was computed) it resolves as
            // any refresh does, except that the call is put off to the retry, which makes it
            // without the writer, when the writer's credit left does not cover a whole call
            // (so the watchdog's granularity cannot make many short, doomed calls out of a
            // small credit), when another write waits for the writer, or when the module was
            // slow a moment ago.
            _ if self.resolver_time + IN_WRITER_CALL > self.resolver_credit
                || self.store.writers_waiting()
                || inputs
                    .module()
                    .is_some_and(|h| self.store.slow_modules.is_slow(h, Instant::now())) =>
            {
                item::Decider::Later
            }
            _ => item::Decider::Host(&*self.store.options.host, Some(IN_WRITER_CALL)),
        };
        let called = matches!(decider, item::Decider::Host(..)) && inputs.custom_conflict();
        let started = Instant::now();
        let res = item::resolve(&definition, cid, key, &siblings, decider);
        if called {
            let took = started.elapsed();
            self.resolver_time += took;
            // The watchdog's ticks may stop a call up to one tick before its limit.
            let slow = took + crate::udf::WATCHDOG_TICK >= IN_WRITER_CALL;
            if let Some(h) = inputs.module().filter(|_| slow) {
                self.store.slow_modules.mark(h, Instant::now());
            }
        }
        for &i in &res.contributors {
            rec.siblings[i].shown = true;
        }
        // A call stopped (or put off) says nothing about the records: they stay, and the item
        // waits in the durable list of interrupted resolutions.
        let interrupted = res.interrupted();
        if interrupted {
            self.kv.put(Table::Interrupted, ik, &[])?;
        } else if inputs.custom() || retrying {
            self.kv.remove(Table::Interrupted, ik)?;
        }
        let new_ids: Vec<u128> = if interrupted {
            rec.open.clone()
        } else {
            res.open.iter().map(|o| o.id).collect()
        };
        if let Some((db, name)) = feed.filter(|_| !interrupted) {
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
                    dot: siblings[o.sibling].dot.to_string(),
                };
                self.kv.put(
                    Table::Conflicts,
                    &defs::conflict_key(db, name, o.id),
                    &encode(&r)?,
                )?;
            }
        }
        rec.open = new_ids;
        self.shrink(&mut rec.context);
        let shown = match res.shown {
            item::Shown::Hidden => Shown::Hidden,
            item::Shown::Sibling(i) => Shown::Sibling(i as u32),
            item::Shown::Merged(body) => Shown::Merged(body),
        };
        let was_visible = rec.shown != Shown::Hidden;
        let is_visible = shown != Shown::Hidden;
        let changed = if is_visible {
            !was_visible || rec.etag != res.etag || rec.shown != shown
        } else {
            was_visible
        };
        rec.shown = shown;
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
}

/// An etag as users see it.
pub(crate) fn etag_string(etag: u64) -> String {
    format!("\"{etag:016x}\"")
}
