//! The store: one region's durable state and every operation on it.

mod backend;
pub(crate) mod codec;
mod collect;
mod containers;
mod credit;
mod databases;
mod def_cache;
mod defs;
mod feeds;
mod group;
mod items;
mod resolvers;
mod retirements;
mod snapshot;
mod stability;
mod tx;

use crate::causal::{Clock, Hlc, Incarnation, RegionId, Writer};
use crate::replicate::Applied;
use crate::resolve::{NoResolvers, ResolverHost};
use crate::{Error, Result};
use backend::{Backend, KvRead, Sync, Table};
use codec::{ActorId, STORE_FORMAT, decode, encode};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

pub use collect::{CollectReport, StorageCounts};
pub use databases::DatabaseDef;
pub use feeds::{ApplyReport, ItemState, Puller};
pub use snapshot::SnapshotSummary;
pub use stability::MemberStatus;

/// Parses a definition body as the system container stores it.
pub(crate) fn parse_def_body(body: &str) -> Result<crate::model::ContainerDef> {
    defs::parse_def(body)
}
pub(crate) use defs::def_key;
pub use items::{Item, VisibleItem, WriteOp, WriteOutcome};
pub(crate) use tx::etag_string;

/// Name of the database file inside a data directory.
pub const STORE_FILE: &str = "converge.redb";

/// Default memory the embedded database may use to cache pages (64 MiB).
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

/// How commits reach the disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Every commit is fsynced before it returns (the default): an acknowledged write survives
    /// kill -9 and power loss.
    #[default]
    Immediate,
    /// Like `Immediate`, but concurrent writers share one commit: each write still returns
    /// only once it is on disk. For servers with many clients.
    GroupCommit,
    /// Commits return before fsync; [`Store::flush`] (or the next immediate commit) makes them
    /// durable. Replication serves only what is durable. For bulk loads and benchmarks.
    Deferred,
}

/// Options for opening a store.
#[derive(Clone)]
pub struct StoreOptions {
    durability: Durability,
    host: Arc<dyn ResolverHost>,
    clock_source: Option<fn() -> u64>,
    incarnation_source: Option<fn() -> u64>,
    cache_bytes: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            durability: Durability::Immediate,
            host: Arc::new(NoResolvers),
            clock_source: None,
            incarnation_source: None,
            cache_bytes: DEFAULT_CACHE_BYTES,
        }
    }
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOptions")
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

impl StoreOptions {
    /// Default options: immediate durability, no resolver host.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets how commits reach the disk.
    pub fn durability(mut self, d: Durability) -> Self {
        self.durability = d;
        self
    }

    /// Installs the host that runs custom resolvers (the WebAssembly sandbox).
    pub fn resolver_host(mut self, host: Arc<dyn ResolverHost>) -> Self {
        self.host = host;
        self
    }

    /// Sets the memory the embedded database may use to cache pages. The store's memory use is
    /// bounded by it, whatever the number of items.
    pub fn cache_bytes(mut self, bytes: usize) -> Self {
        self.cache_bytes = bytes;
        self
    }

    /// Replaces the random source of incarnations; for reproducible simulations only (two opens
    /// must never take the same incarnation).
    pub fn incarnation_source(mut self, f: fn() -> u64) -> Self {
        self.incarnation_source = Some(f);
        self
    }

    /// Replaces wall-clock time (milliseconds) as the clock's physical source; for simulations.
    pub fn clock_source(mut self, f: fn() -> u64) -> Self {
        self.clock_source = Some(f);
        self
    }
}

/// Counters a region keeps about its own history.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStats {
    /// Writes that were covered by a later write while never visible here: lost to LWW.
    pub lost_to_lww: u64,
    /// Remote timestamps too far ahead of local time, which the clock did not follow.
    pub clock_skew_ignored: u64,
    /// Versions discarded because their container was dropped.
    pub discarded_dropped: u64,
    /// Remote versions applied (not counting duplicates).
    pub remote_applied: u64,
    /// Remote versions ignored as already seen.
    pub remote_duplicates: u64,
    /// Write transactions committed.
    pub commits: u64,
    /// Versions refused because their region was retired (past its cut), since the store
    /// opened (not persisted: stores written before it existed keep their format).
    #[serde(skip)]
    pub refused_retired: u64,
}

/// What a writer persists in the meta table after every transaction.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct WriterState {
    counter: u64,
    clock: Hlc,
    next_lsn: u64,
    incarnations: u64,
    stats: StoreStats,
    /// Counters below these are reserved by the persisted state: the state is written only
    /// when a transaction passes them, not on every commit (one leaf page less per fsync).
    /// After a crash the store resumes from the reservations, skipping unused numbers.
    counter_reserved: u64,
    lsn_reserved: u64,
    /// The clock never resumes below this physical time (ms) after a restart: it is kept
    /// ahead of every timestamp issued or followed, under its own key ([`META_CLOCK`]), and
    /// rewritten only when the clock passes it.
    #[serde(skip)]
    clock_bound: u64,
}

/// How far ahead counters and log positions are reserved.
const RESERVE: u64 = 4096;

/// How far ahead of the clock its persisted bound is kept, ms: a restart resumes at most this
/// far ahead of the last timestamp, and a region under constant load rewrites the bound about
/// once per this interval.
const CLOCK_RESERVE_MS: u64 = 250;

impl WriterState {
    /// Whether the persisted state must be rewritten before this transaction commits.
    fn needs_reservation(&self) -> bool {
        self.counter >= self.counter_reserved || self.next_lsn >= self.lsn_reserved
    }

    fn reserve(&mut self) {
        self.counter_reserved = self.counter + RESERVE;
        self.lsn_reserved = self.next_lsn + RESERVE;
    }

    /// Whether the clock has reached its persisted bound, which must then move ahead before
    /// this transaction commits.
    fn needs_clock_bound(&self) -> bool {
        self.clock.physical_ms >= self.clock_bound
    }

    /// Moves the clock's bound ahead of the clock; returns it encoded for [`META_CLOCK`].
    fn bound_clock(&mut self) -> Result<Vec<u8>> {
        self.clock_bound = self.clock.physical_ms.saturating_add(CLOCK_RESERVE_MS);
        encode(&self.clock_bound)
    }
}

/// The writer side, behind one lock: writes are serialized.
struct Writer_ {
    state: WriterState,
    clock: Clock,
    /// Resolver time the writer may still spend (see credit.rs).
    credit: credit::ResolverCredit,
    /// Members and the stable point (the writer's copy; readers see [`Store::stability`]).
    stab: stability::Stability,
}

/// What readers of the log see of the writer: the last durable position and this region's
/// applied vector as of it, published together after each durable commit.
#[derive(Clone, Debug)]
struct Published {
    lsn: u64,
    applied: stability::Applied,
}

/// Region incarnations interned to small ids, so item records stay small.
#[derive(Default)]
struct Actors {
    by_id: Vec<Writer>,
    by_writer: HashMap<Writer, ActorId>,
}

/// One region's store.
///
/// Open it on a directory with [`Store::open`] (durable, redb) or in memory with
/// [`Store::memory`]. Every method is safe to call from many threads; writes are serialized.
pub struct Store {
    backend: Backend,
    region: RegionId,
    incarnation: Incarnation,
    /// Which store of the region this is (`META_STORE`).
    store_id: u64,
    /// Whether this store was made by joining from a snapshot (`META_JOINED`).
    joined: std::sync::atomic::AtomicBool,
    writer: Mutex<Writer_>,
    /// The last log position a reader may return (committed durably); read without the
    /// writer, so peers pulling never wait for a transaction.
    durable_lsn: AtomicU64,
    /// The durable position with this region's applied vector then (for batches).
    published: Mutex<Published>,
    /// The members and the stable point as of the last commit, for readers.
    stability: RwLock<Arc<stability::Stability>>,
    /// Threads waiting for the writer: while any does, resolver calls are put off to the
    /// retry rather than made under the writer.
    writers_waiting: AtomicUsize,
    /// Modules recently slow, whose calls only the retry makes (see credit.rs).
    slow_modules: credit::SlowModules,
    actors: RwLock<Actors>,
    group: group::GroupCommit,
    def_cache: RwLock<def_cache::DefCache>,
    options: StoreOptions,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("region", &self.region)
            .field("incarnation", &self.incarnation)
            .finish_non_exhaustive()
    }
}

const META_REGION: &[u8] = b"region";
const META_FORMAT: &[u8] = b"format";
const META_WRITER: &[u8] = b"writer";
/// The clock's persisted bound (physical ms, see [`WriterState::clock_bound`]). Stores
/// written before it existed resume from the writer state's clock.
const META_CLOCK: &[u8] = b"clock";
/// Which store of its region this is: its counter when it was created (see
/// `MemberReport::store`). Stores written before it existed take their counter at the open
/// that adds it.
const META_STORE: &[u8] = b"store";
/// Present in a store created by joining from a snapshot.
const META_JOINED: &[u8] = b"joined";

/// Wall-clock time, ms since the epoch.
pub(crate) fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn random_incarnation() -> Incarnation {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS; mix in time and pid so two opens never collide.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    Incarnation(h.finish().max(1))
}

impl Store {
    /// Opens (or creates) the durable store of `region` in directory `dir`.
    ///
    /// The region name is stored when the directory is created; opening it as another region
    /// fails with [`Error::RegionMismatch`]. Every open takes a new incarnation.
    pub fn open(dir: impl AsRef<Path>, region: &str, options: StoreOptions) -> Result<Self> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::Storage(format!(
                "cannot create data directory {}: {e}",
                dir.display()
            ))
        })?;
        let backend = Backend::open_redb(&dir.join(STORE_FILE), options.cache_bytes)?;
        Self::with_backend(backend, region, options)
    }

    /// A store in memory (for tests and simulations); gone when dropped.
    pub fn memory(region: &str, options: StoreOptions) -> Result<Self> {
        Self::with_backend(Backend::memory(), region, options)
    }

    fn with_backend(backend: Backend, region: &str, options: StoreOptions) -> Result<Self> {
        let region_id = RegionId::new(region)?;
        let incarnation = match options.incarnation_source {
            Some(f) => Incarnation(f().max(1)),
            None => random_incarnation(),
        };
        let (state, actors, stab, store_id, joined) = backend.write(Sync::Durable, |kv| {
            match kv.get(Table::Meta, META_FORMAT)? {
                Some(f) => {
                    let found: u32 = decode("format", &f)?;
                    if found > STORE_FORMAT {
                        return Err(Error::FormatTooNew {
                            found,
                            supported: STORE_FORMAT,
                        });
                    }
                    if found < STORE_FORMAT {
                        return Err(Error::FormatTooOld {
                            found,
                            supported: STORE_FORMAT,
                        });
                    }
                }
                None => kv.put(Table::Meta, META_FORMAT, &encode(&STORE_FORMAT)?)?,
            }
            match kv.get(Table::Meta, META_REGION)? {
                Some(r) => {
                    let stored: String = decode("region", &r)?;
                    if stored != region {
                        return Err(Error::RegionMismatch {
                            stored,
                            requested: region.into(),
                        });
                    }
                }
                None => kv.put(Table::Meta, META_REGION, &encode(&region)?)?,
            }
            let mut state = match kv.get(Table::Meta, META_WRITER)? {
                Some(b) => decode::<WriterState>("writer", &b)?,
                None => WriterState {
                    counter: 0,
                    clock: Hlc::default(),
                    next_lsn: 1,
                    incarnations: 0,
                    stats: StoreStats::default(),
                    counter_reserved: 0,
                    lsn_reserved: 1,
                    clock_bound: 0,
                },
            };
            // The clock resumes at its bound: ahead of everything it issued or followed.
            if let Some(b) = kv.get(Table::Meta, META_CLOCK)? {
                let bound: u64 = decode("clock", &b)?;
                state.clock = state.clock.max(Hlc::new(bound, 0));
            }
            kv.put(Table::Meta, META_CLOCK, &state.bound_clock()?)?;
            // Resume past everything the previous incarnation may have used, and above
            // wall-clock microseconds: a wiped or restored directory of this region then never
            // reissues a counter its earlier store used (stability counts a region's versions
            // by counter, across incarnations and stores).
            let now_ms = options.clock_source.map_or_else(wall_ms, |f| f());
            state.counter = state
                .counter
                .max(state.counter_reserved)
                .max(now_ms.saturating_mul(1000));
            state.next_lsn = state.next_lsn.max(state.lsn_reserved);
            state.reserve();
            // The log records where each incarnation began, so pullers resume from there.
            state.incarnations += 1;
            kv.put(
                Table::Incarnations,
                &state.incarnations.to_be_bytes(),
                &encode(&(incarnation, state.next_lsn))?,
            )?;
            let mut actors = Actors::default();
            for (_, v) in kv.scan(Table::Actors, &[], None, usize::MAX)? {
                let w: Writer = decode("actor", &v)?;
                actors
                    .by_writer
                    .insert(w.clone(), actors.by_id.len() as ActorId);
                actors.by_id.push(w);
            }
            let me = actors.by_id.len() as ActorId;
            let w: Writer = (region_id.clone(), incarnation);
            kv.put(Table::Actors, &me.to_be_bytes(), &encode(&w)?)?;
            actors.by_writer.insert(w.clone(), me);
            actors.by_id.push(w);
            kv.put(Table::Meta, META_WRITER, &encode(&state)?)?;
            let store_id = match kv.get(Table::Meta, META_STORE)? {
                Some(b) => decode::<u64>("store", &b)?,
                None => {
                    kv.put(Table::Meta, META_STORE, &encode(&state.counter)?)?;
                    state.counter
                }
            };
            let mut stab = stability::Stability::load(
                kv,
                &region_id,
                actors.by_id.iter().map(|(r, _)| r.clone()),
            )?;
            stab.recompute(state.counter);
            stab.persist(kv)?;
            let joined = kv.get(Table::Meta, META_JOINED)?.is_some();
            Ok((state, actors, stab, store_id, joined))
        })?;
        let clock = match options.clock_source {
            Some(f) => Clock::with_source(state.clock, f),
            None => Clock::new(state.clock),
        };
        let durable_lsn = state.next_lsn - 1;
        let published = Published {
            lsn: durable_lsn,
            applied: stab.own(state.counter),
        };
        let view = Arc::new(stab.clone());
        let store = Store {
            backend,
            region: region_id,
            incarnation,
            store_id,
            joined: joined.into(),
            writer: Mutex::new(Writer_ {
                state,
                clock,
                credit: credit::ResolverCredit::new(),
                stab,
            }),
            durable_lsn: AtomicU64::new(durable_lsn),
            published: Mutex::new(published),
            stability: RwLock::new(view),
            writers_waiting: AtomicUsize::new(0),
            slow_modules: credit::SlowModules::default(),
            actors: RwLock::new(actors),
            group: group::GroupCommit::default(),
            def_cache: RwLock::new(def_cache::DefCache::default()),
            options,
        };
        store.load_modules()?;
        Ok(store)
    }

    /// This region's name.
    pub fn region(&self) -> &RegionId {
        &self.region
    }

    /// The position of the last durable entry of this region's log: every visible change so
    /// far is at or below it (the change feed's "from now" token).
    pub fn log_head(&self) -> u64 {
        self.durable_lsn.load(Ordering::Acquire)
    }

    /// The build whose sandbox results this region produces; peers compare it and report a
    /// mismatch (fuel counts and stack use depend on it).
    pub fn engine_fingerprint(&self) -> crate::udf::EngineFingerprint {
        crate::udf::EngineFingerprint::current()
    }

    /// Which store of its region this is: the counter it started at when it was created. A
    /// store created later for the same region (after its data was lost) has a higher one.
    pub fn store_id(&self) -> u64 {
        self.store_id
    }

    /// The incarnation this open took.
    pub fn incarnation(&self) -> Incarnation {
        self.incarnation
    }

    /// All wall-clock time spent in custom resolver calls while the writer was held, since
    /// the store opened. Sustained, it stays under a tenth of the time: past that, conflicts
    /// are put off to [`retry_interrupted`](Self::retry_interrupted), which calls resolvers
    /// without the writer (as it does while writes wait for the writer).
    pub fn resolver_time_in_writer(&self) -> Result<std::time::Duration> {
        self.writer
            .lock()
            .map(|w| w.credit.spent())
            .map_err(|_| Error::Storage("writer lock poisoned".into()))
    }

    /// The members and the stable point as of the last commit.
    fn stability_view(&self) -> Result<Arc<stability::Stability>> {
        self.stability
            .read()
            .map(|s| Arc::clone(&s))
            .map_err(|_| Error::Storage("stability lock poisoned".into()))
    }

    /// This region's applied vector as of its durable end: per region, the counter up to
    /// which it has applied every version that region wrote (its own entry is its counter).
    /// A peer pulling from a region that collected its log sends it
    /// ([`read_log_for`](Self::read_log_for)).
    pub fn applied(&self) -> Applied {
        self.published
            .lock()
            .map(|p| p.applied.clone())
            .unwrap_or_default()
    }

    /// The stable point: per region, the counter up to which every live member has applied
    /// that region's versions (and every write concurrent with them has arrived here).
    pub fn stable_point(&self) -> Result<Applied> {
        Ok(self.stability_view()?.stable().clone())
    }

    /// Makes `region` a member (a configured peer): collection waits for it from now on,
    /// before this region has heard anything from it.
    pub fn add_member(&self, region: &str) -> Result<()> {
        let region = RegionId::new(region)?;
        if self.stability_view()?.is_member(&region) {
            return Ok(());
        }
        self.write_tx(self.commit_sync(), |tx| {
            tx.stability_mut().know(&region);
            Ok(())
        })
    }

    /// Physical time as this store's clock source tells it (ms since the epoch).
    pub(crate) fn now_ms(&self) -> u64 {
        self.options.clock_source.map_or_else(wall_ms, |f| f())
    }

    /// Every member this region knows of, itself first, with what it knows of each.
    pub fn members(&self) -> Result<Vec<MemberStatus>> {
        let counter = self.applied().get(&self.region).copied().unwrap_or(0);
        Ok(self.stability_view()?.status(counter, self.now_ms()))
    }

    /// The region's counters.
    pub fn stats(&self) -> StoreStats {
        self.writer
            .lock()
            .map(|w| w.state.stats)
            .unwrap_or_default()
    }

    /// How many items wait for a resolution the watchdog stopped (or that a transaction put
    /// off): the durable list [`retry_interrupted`](Self::retry_interrupted) works through.
    pub fn interrupted_count(&self) -> usize {
        self.read_tx(|kv, _| Ok(kv.scan(Table::Interrupted, &[], None, usize::MAX)?.len()))
            .unwrap_or(0)
    }

    /// Resolves again the items whose resolver call the watchdog stopped or a transaction put
    /// off. Each call runs without the store's writer and outside any transaction, under the
    /// host's full watchdog, so a slow resolver never stalls a local write or a peer's batch;
    /// its outcome is committed only if the item's siblings, definition and module are
    /// unchanged meanwhile. The list is durable: it survives a restart. Returns how many were
    /// tried; those stopped again stay listed.
    pub fn retry_interrupted(&self) -> Result<usize> {
        let pending: Vec<Vec<u8>> = self.read_tx(|kv, _| {
            Ok(kv
                .scan(Table::Interrupted, &[], None, usize::MAX)?
                .into_iter()
                .map(|(k, _)| k)
                .collect())
        })?;
        for ik in &pending {
            let read = self.read_tx(|kv, actors| {
                let Some(rec) = defs::load_item(kv, ik)? else {
                    return Ok(None);
                };
                let (cid, key) = codec::parse_item_key(ik)?;
                let state = defs::cid_state(kv, cid)?;
                let module = match &state {
                    defs::CidState::Active(d) => resolvers::held_module_of(kv, d)?,
                    _ => None,
                };
                let writer_of = |a: ActorId| {
                    actors.by_id.get(a as usize).cloned().ok_or_else(|| {
                        Error::Storage(format!("item record names unknown writer {a}"))
                    })
                };
                let inputs = tx::Inputs::read(kv, writer_of, &rec, state, module, &key)?;
                Ok(Some((cid, key, inputs)))
            })?;
            let Some((cid, key, inputs)) = read else {
                self.write_tx(self.commit_sync(), |tx| {
                    tx.kv.remove(Table::Interrupted, ik)
                })?;
                continue;
            };
            let (definition, _) = inputs.definition();
            let siblings = inputs.siblings();
            let conflict = crate::resolve::item::conflict_key(&definition, &key, &siblings);
            let decider = crate::resolve::item::Decider::Host(&*self.options.host, None);
            let started = std::time::Instant::now();
            let outcome =
                crate::resolve::item::resolve(&definition, cid, &key, &siblings, decider).outcome;
            if let Some(hash) = inputs.module()
                && started.elapsed() >= tx::IN_WRITER_CALL
            {
                self.slow_modules.mark(hash, std::time::Instant::now());
            }
            self.write_tx(self.commit_sync(), |tx| {
                tx.commit_decided(ik, conflict, outcome)
            })?;
        }
        Ok(pending.len())
    }

    /// Compacts the file of a durable store, returning space collection freed to the file
    /// system (redb keeps freed pages for reuse otherwise); a no-op in memory. Needs the store
    /// to itself: no reader or writer may be open.
    pub fn compact(&mut self) -> Result<()> {
        self.flush()?;
        match &mut self.backend {
            Backend::Redb(db) => db.compact().map(|_| ()).map_err(Error::storage),
            Backend::Memory(_) => Ok(()),
        }
    }

    /// Makes every commit so far durable (a no-op under immediate durability).
    pub fn flush(&self) -> Result<()> {
        self.write_tx(Sync::Durable, |_| Ok(()))
    }

    /// Whether a thread waits for the writer.
    fn writers_waiting(&self) -> bool {
        self.writers_waiting.load(Ordering::Relaxed) > 0
    }

    /// Runs `f` in one write transaction with the writer lock held.
    fn write_tx<R>(&self, sync: Sync, f: impl FnOnce(&mut tx::Tx<'_>) -> Result<R>) -> Result<R> {
        self.writers_waiting.fetch_add(1, Ordering::Relaxed);
        let w = self.writer.lock();
        self.writers_waiting.fetch_sub(1, Ordering::Relaxed);
        let mut w = w.map_err(|_| Error::Storage("writer lock poisoned".into()))?;
        let credit = w.credit.refill(std::time::Instant::now());
        let mut resolver_time = std::time::Duration::ZERO;
        let saved = w.state.clone();
        let saved_clock = w.clock.clone();
        let mut new_actors = Vec::new();
        let mut defs_changed = false;
        let mut new_stab = None;
        let out = {
            let actors = self
                .actors
                .read()
                .map_err(|_| Error::Storage("actor lock poisoned".into()))?;
            let w = &mut *w;
            self.backend.write(sync, |kv| {
                let mut t = tx::Tx::new(
                    self,
                    kv,
                    tx::WriterParts {
                        st: &mut w.state,
                        clock: &mut w.clock,
                        stab: &w.stab,
                    },
                    &actors,
                    &mut new_actors,
                    credit,
                );
                let r = f(&mut t);
                resolver_time = t.resolver_time();
                let r = r?;
                t.finish()?;
                defs_changed = t.defs_changed();
                new_stab = t.take_stability();
                Ok(r)
            })
        };
        // Resolver time is spent whether or not the transaction commits.
        w.credit.spend(resolver_time);
        match out {
            Ok(r) => {
                if defs_changed {
                    // Before the writer lock is released: see def_cache.rs.
                    self.invalidate_defs();
                }
                if !new_actors.is_empty() {
                    let mut a = self
                        .actors
                        .write()
                        .map_err(|_| Error::Storage("actor lock poisoned".into()))?;
                    for nw in new_actors {
                        let id = a.by_id.len() as ActorId;
                        a.by_writer.insert(nw.clone(), id);
                        a.by_id.push(nw);
                    }
                }
                if let Some(stab) = new_stab {
                    w.stab = stab;
                    let view = Arc::new(w.stab.clone());
                    *self
                        .stability
                        .write()
                        .map_err(|_| Error::Storage("stability lock poisoned".into()))? = view;
                }
                if sync == Sync::Durable || matches!(self.backend, Backend::Memory(_)) {
                    let lsn = w.state.next_lsn - 1;
                    let applied = w.stab.own(w.state.counter);
                    // Under the writer lock: a reader never sees a position with a vector of
                    // another commit.
                    *self
                        .published
                        .lock()
                        .map_err(|_| Error::Storage("publish lock poisoned".into()))? =
                        Published { lsn, applied };
                    self.durable_lsn.store(lsn, Ordering::Release);
                }
                Ok(r)
            }
            Err(e) => {
                w.state = saved;
                w.clock = saved_clock;
                Err(e)
            }
        }
    }

    /// How an ordinary commit syncs under the store's durability.
    fn commit_sync(&self) -> Sync {
        match self.options.durability {
            Durability::Immediate | Durability::GroupCommit => Sync::Durable,
            Durability::Deferred => Sync::Lazy,
        }
    }

    fn read_tx<R>(&self, f: impl FnOnce(&dyn KvRead, &Actors) -> Result<R>) -> Result<R> {
        let actors = self
            .actors
            .read()
            .map_err(|_| Error::Storage("actor lock poisoned".into()))?;
        self.backend.read(|kv| f(kv, &actors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_store_format_is_refused_with_a_clear_error() {
        let backend = Backend::memory();
        backend
            .write(Sync::Durable, |kv| {
                kv.put(Table::Meta, META_FORMAT, &encode(&(STORE_FORMAT + 1))?)
            })
            .expect("write format");
        match Store::with_backend(backend, "west", StoreOptions::new()) {
            Err(Error::FormatTooNew { found, supported }) => {
                assert_eq!((found, supported), (STORE_FORMAT + 1, STORE_FORMAT));
            }
            other => panic!("expected FormatTooNew, got {other:?}"),
        }
    }
}
