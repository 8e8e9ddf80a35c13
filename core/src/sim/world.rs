//! The simulated world: regions, links, in-flight batches, and the random schedule.

use super::oracle;
use super::rng::Rng;
use crate::Error;
use crate::model::{ConflictPolicy, PartitionKey};
use crate::replicate::{Batch, Version};
use crate::resolve::ResolverHost;
use crate::store::{Durability, Store, StoreOptions, WriteOp};
use serde_json::json;
use std::cell::Cell;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

/// The databases of the run: each holds the containers [`CONTAINERS`], and resolvers of the
/// same name, so modules must never be found by container and name alone.
pub(crate) const DATABASES: [&str; 2] = ["sim", "sim2"];
/// The container with the run's policy ([`SimConfig::policy`]).
pub(crate) const CONTAINER: &str = "items";
/// Every container of each database: [`CONTAINER`], and one that starts with another policy
/// (see [`World::initial_policy`]); most writes go to the first.
pub(crate) const CONTAINERS: [&str; 2] = [CONTAINER, "other"];
pub(crate) const PK_PATH: &str = "/pk";
/// The other partition key path a re-creation may take: items carry the same value under
/// both, so they can be written to a creation of either.
const OTHER_PK_PATH: &str = "/part";
const IDS: [&str; 3] = ["a", "b", "c"];
const PKS: [&str; 2] = ["p", "q"];

/// Which conflict policy the simulated container uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SimPolicy {
    /// LWW; the path switches between `/_ts` and `/n` during the run.
    Lww,
    /// Manual: every conflict in the feed.
    Manual,
    /// A custom resolver of this name, run by the configured host.
    Custom(String),
}

/// One simulation run.
#[derive(Clone)]
pub struct SimConfig {
    /// Everything derives from it.
    pub seed: u64,
    /// The container's policy.
    pub policy: SimPolicy,
    /// Whether region 0 is a durable (redb) store that is closed and reopened mid-run.
    pub durable: bool,
    /// Random steps before the final exchange.
    pub steps: usize,
    /// The resolver host for [`SimPolicy::Custom`].
    pub host: Option<Arc<dyn ResolverHost>>,
    /// The module versions uploaded under [`SimPolicy::Custom`]'s resolver name: the first by
    /// region 0 at the start and by whichever region re-creates the container, any of them by
    /// a random region during the run (each upload re-pins the definition). Regions run only
    /// what has reached them: until then their conflicts show `resolver missing`.
    pub modules: Vec<Arc<[u8]>>,
    /// Whether containers may be dropped and re-created during the run.
    pub drops: bool,
    /// Under [`SimPolicy::Custom`]: whether regions switch the container between the custom
    /// policy (with its default or other limits), manual and LWW during the run, while items
    /// are in conflict.
    pub mode_changes: bool,
    /// Whether a simulated watchdog stops a third of the custom resolver calls made under a
    /// region's writer, deterministically per region (by the region and the request), as a
    /// slow module would be stopped; the retry then decides them without the writer.
    pub watchdog: bool,
    /// Bytes that drive the schedule's choices before the seed does (for fuzzing).
    pub tape: Vec<u8>,
    /// Shapes written bodies for a resolver: called with a random number, returns the fields
    /// to write (the simulation sets `id` and `pk` over them). Without it, bodies carry a
    /// small number `n`, the writer and the step.
    pub bodies: Option<BodyGenerator>,
}

/// See [`SimConfig::bodies`].
pub type BodyGenerator = Arc<dyn Fn(u64) -> serde_json::Value + Send + Sync>;

impl std::fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimConfig")
            .field("seed", &self.seed)
            .field("policy", &self.policy)
            .field("durable", &self.durable)
            .field("steps", &self.steps)
            .finish_non_exhaustive()
    }
}

impl SimConfig {
    /// A configuration with the defaults: 3 to 7 in-memory regions, about 80 steps, drops on.
    pub fn new(seed: u64, policy: SimPolicy) -> Self {
        SimConfig {
            seed,
            policy,
            durable: false,
            steps: 80,
            host: None,
            modules: Vec::new(),
            drops: true,
            mode_changes: false,
            watchdog: false,
            tape: Vec::new(),
            bodies: None,
        }
    }
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimReport {
    /// Number of regions.
    pub regions: usize,
    /// Writes acknowledged.
    pub writes: usize,
    /// Batches and version sets delivered.
    pub deliveries: usize,
    /// Durable region restarts.
    pub restarts: usize,
    /// Container drops.
    pub drops: usize,
    /// Items in conflict at the end.
    pub items_in_conflict: usize,
    /// Open conflict records per region at the end.
    pub open_conflicts: usize,
    /// The reasons of those records (`deferred: …` and `trap: …` with their messages).
    pub reasons: std::collections::BTreeSet<String>,
    /// Tombstones purged by collection, over all regions.
    pub collected_tombstones: usize,
    /// Regions that joined from a snapshot during the run.
    pub joins: usize,
    /// Regions retired during the run.
    pub retirements: usize,
    /// Log entries removed by collection, over all regions.
    pub collected_log_entries: usize,
}

/// A run whose regions disagreed, lost a version, or failed unexpectedly.
#[derive(Debug)]
pub struct SimFailure {
    /// The seed to replay.
    pub seed: u64,
    /// What went wrong.
    pub message: String,
    /// The last steps of the schedule.
    pub trace: Vec<String>,
}

impl std::fmt::Display for SimFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "simulation seed {} failed: {}", self.seed, self.message)?;
        writeln!(f, "replay with CONVERGE_SIM_SEED={}", self.seed)?;
        for line in &self.trace {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

thread_local! {
    static NOW: Cell<u64> = const { Cell::new(0) };
    static INCARNATIONS: Cell<u64> = const { Cell::new(0) };
}

fn sim_now() -> u64 {
    NOW.with(Cell::get)
}

fn sim_incarnation() -> u64 {
    INCARNATIONS.with(|c| {
        let mut r = Rng::new(c.get());
        c.set(c.get() + 1);
        r.next_u64()
    })
}

pub(crate) struct Region {
    pub name: String,
    pub store: Option<Store>,
    dir: Option<PathBuf>,
    /// This region's clock offset from simulated time, ms.
    skew: i64,
}

pub(crate) struct World {
    pub cfg: SimConfig,
    pub rng: Rng,
    pub regions: Vec<Region>,
    cut: HashSet<(usize, usize)>,
    in_flight: Vec<(usize, Vec<Version>)>,
    /// Every version any region has logged, kept before collection removes any (the oracle
    /// checks against all of them).
    pub(crate) ledger: Vec<Version>,
    /// Whether regions only exchange with their neighbours in a chain r0 - r1 - … (so what
    /// they learn of the others, versions and stability alike, is relayed).
    chain: bool,
    ledger_seen: HashSet<(crate::model::CreationId, crate::causal::Dot)>,
    time: u64,
    pub report: SimReport,
    pub trace: Vec<String>,
}

impl Drop for World {
    fn drop(&mut self) {
        for r in &mut self.regions {
            r.store = None;
            if let Some(d) = &r.dir {
                let _ = std::fs::remove_dir_all(d);
            }
        }
    }
}

/// Runs one simulation and checks the oracle.
pub fn run(cfg: &SimConfig) -> Result<SimReport, SimFailure> {
    let mut world = World::new(cfg.clone()).map_err(|e| SimFailure {
        seed: cfg.seed,
        message: format!("setup failed: {e}"),
        trace: vec![],
    })?;
    let result = world
        .run_schedule()
        .and_then(|()| world.exchange_all())
        .and_then(|()| oracle::check(&mut world))
        .and_then(|()| world.collect_all())
        .and_then(|()| world.exchange_all())
        .and_then(|()| oracle::check(&mut world));
    match result {
        Ok(()) => Ok(world.report.clone()),
        Err(message) => {
            let skip = world.trace.len().saturating_sub(200);
            Err(SimFailure {
                seed: cfg.seed,
                message,
                trace: world.trace.split_off(skip),
            })
        }
    }
}

impl World {
    fn new(cfg: SimConfig) -> Result<Self, Error> {
        let mut rng = Rng::with_tape(cfg.seed, &cfg.tape);
        INCARNATIONS.with(|c| c.set(cfg.seed.wrapping_mul(1_000_003)));
        let n = rng.range(3, 7) as usize;
        let chain = rng.chance(33);
        let time = 1_764_230_400_000;
        let mut world = World {
            rng,
            regions: Vec::new(),
            cut: HashSet::new(),
            in_flight: Vec::new(),
            ledger: Vec::new(),
            chain,
            ledger_seen: HashSet::new(),
            time,
            report: SimReport {
                regions: n,
                ..SimReport::default()
            },
            trace: Vec::new(),
            cfg,
        };
        for i in 0..n {
            let skew = world.rng.range(0, 4000) as i64 - 2000;
            let dir = (i == 0 && world.cfg.durable).then(|| {
                static DIRS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let n = DIRS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                std::env::temp_dir().join(format!(
                    "converge-sim-{}-{}-{n}",
                    std::process::id(),
                    world.cfg.seed
                ))
            });
            world.regions.push(Region {
                name: format!("r{i}"),
                store: None,
                dir,
                skew,
            });
            world.open(i)?;
        }
        // Each region is configured with every other as a peer: a member from the start.
        for i in 0..n {
            for j in (0..n).filter(|&j| j != i && (!chain || i.abs_diff(j) == 1)) {
                let name = world.regions[j].name.clone();
                world.store(i).add_member(&name)?;
            }
        }
        // Every region creates the containers independently, as a deployment script would.
        for i in 0..n {
            world.at(i);
            for db in DATABASES {
                for container in CONTAINERS {
                    let policy = world.initial_policy(container);
                    world
                        .store(i)
                        .put_container(db, container, PK_PATH, policy)?;
                }
            }
        }
        // Region 0 uploads the first module version to the first database and the second
        // (when there is one) under the same name to the second.
        world.at(0);
        world.upload(0, DATABASES[0], CONTAINER, 0)?;
        world.upload(
            0,
            DATABASES[1],
            CONTAINER,
            1 % world.cfg.modules.len().max(1),
        )?;
        Ok(world)
    }

    /// Region `i` uploads module version `which` of [`SimConfig::modules`] to `container` of
    /// `db` (under a custom policy, where the container exists there).
    fn upload(&mut self, i: usize, db: &str, container: &str, which: usize) -> Result<(), Error> {
        let (SimPolicy::Custom(name), Some(module)) =
            (&self.cfg.policy, self.cfg.modules.get(which))
        else {
            return Ok(());
        };
        let out = self.store(i).put_resolver(db, container, name, module);
        self.log(format!(
            "{} uploads module {which} to {db}/{container}: {:?}",
            self.regions[i].name,
            out.as_ref().map(|h| &h[..8])
        ));
        match out {
            Ok(_) | Err(Error::UnknownContainer { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn step_upload(&mut self) -> Result<(), Error> {
        if self.cfg.modules.is_empty() {
            return Ok(());
        }
        let i = self.rng.below(self.regions.len() as u64) as usize;
        let which = self.rng.below(self.cfg.modules.len() as u64) as usize;
        let db = *self.rng.pick(&DATABASES);
        let container = *self.rng.pick(&CONTAINERS);
        self.at(i);
        self.upload(i, db, container, which)
    }

    /// The policy `container` is created with: the run's for [`CONTAINER`]; for the other,
    /// manual under an LWW run and LWW otherwise (so a run of a well-behaved resolver without
    /// mode changes leaves nothing in the feed).
    fn initial_policy(&self, container: &str) -> ConflictPolicy {
        match (&self.cfg.policy, container == CONTAINER) {
            (SimPolicy::Lww, true) => ConflictPolicy::default(),
            (SimPolicy::Lww, false) => ConflictPolicy::Manual,
            (SimPolicy::Manual, true) => ConflictPolicy::Manual,
            (SimPolicy::Manual | SimPolicy::Custom(_), false) => ConflictPolicy::default(),
            (SimPolicy::Custom(name), true) => ConflictPolicy::Custom {
                resolver: name.clone(),
                hash: None,
                limits: Default::default(),
            },
        }
    }

    /// A container for a step: [`CONTAINER`] three times in four.
    fn pick_container(&mut self) -> &'static str {
        match self.rng.chance(75) {
            true => CONTAINER,
            false => CONTAINERS[1],
        }
    }

    fn options(&self, region: usize) -> StoreOptions {
        let mut o = StoreOptions::new()
            .clock_source(sim_now)
            .incarnation_source(sim_incarnation)
            .durability(Durability::Deferred);
        if let Some(h) = &self.cfg.host {
            o = match self.cfg.watchdog {
                true => o.resolver_host(Arc::new(Watchdog {
                    inner: h.clone(),
                    region: region as u64,
                })),
                false => o.resolver_host(h.clone()),
            };
        }
        o
    }

    fn open(&mut self, i: usize) -> Result<(), Error> {
        // A store reads the clock when it opens.
        self.at(i);
        let opts = self.options(i);
        let r = &mut self.regions[i];
        r.store = Some(match &r.dir {
            Some(d) => Store::open(d, &r.name, opts)?,
            None => Store::memory(&r.name, opts)?,
        });
        Ok(())
    }

    pub(crate) fn store(&self, i: usize) -> &Store {
        self.regions[i]
            .store
            .as_ref()
            .expect("regions are open outside restarts")
    }

    /// Sets simulated time as region `i` sees it.
    fn at(&self, i: usize) {
        NOW.with(|c| c.set(self.time.saturating_add_signed(self.regions[i].skew)));
    }

    fn log(&mut self, line: String) {
        self.trace.push(line);
    }

    fn run_schedule(&mut self) -> Result<(), String> {
        for step in 0..self.cfg.steps {
            self.time += self.rng.below(4);
            let roll = self.rng.below(1000);
            let r = match roll {
                0..=459 => self.step_write(step),
                460..=474 => self.step_collect(),
                475..=477 => self.step_join(),
                478..=479 => self.step_retire(),
                480..=719 => self.step_pull(),
                720..=819 => self.step_gossip(),
                820..=879 => {
                    self.step_partition();
                    Ok(())
                }
                880..=919 => self.step_restart(),
                920..=949 => self.step_in_flight(),
                950..=959 => self.step_upload(),
                960..=989 => self.step_policy(),
                _ => self.step_drop(),
            };
            r.map_err(|e| format!("step {step}: unexpected error: {e}"))?;
        }
        Ok(())
    }

    fn step_write(&mut self, step: usize) -> Result<(), Error> {
        let i = self.rng.below(self.regions.len() as u64) as usize;
        self.at(i);
        let db = *self.rng.pick(&DATABASES);
        let container = self.pick_container();
        let id = *self.rng.pick(&IDS);
        let pk = *self.rng.pick(&PKS);
        let body = match &self.cfg.bodies {
            Some(generate) => {
                let mut body = generate(self.rng.next_u64());
                if let Some(obj) = body.as_object_mut() {
                    obj.insert("id".into(), id.into());
                    obj.insert("pk".into(), pk.into());
                    obj.insert("part".into(), pk.into());
                }
                body
            }
            None => {
                json!({"id": id, "pk": pk, "part": pk, "n": self.rng.below(5), "by": self.regions[i].name, "step": step})
            }
        };
        let if_match = if self.rng.chance(20) {
            let current = self
                .store(i)
                .read_item(db, container, &PartitionKey::from(pk), id);
            match current {
                Ok(item) if self.rng.chance(80) => Some(item.etag),
                _ => Some("\"0000000000000000\"".to_owned()),
            }
        } else {
            None
        };
        let op = match self.rng.below(4) {
            0 => WriteOp::Create(body),
            1 => WriteOp::Replace {
                id: id.into(),
                item: body,
                if_match,
            },
            2 => WriteOp::Upsert(body),
            _ => WriteOp::Delete {
                partition_key: PartitionKey::from(pk),
                id: id.into(),
                if_match,
            },
        };
        let desc = format!("{op:?}");
        let out = self.store(i).write(db, container, op);
        self.log(format!(
            "t={} {} write {db}/{container} {desc} -> {:?}",
            self.time,
            self.regions[i].name,
            out.as_ref().map(|_| "ok")
        ));
        match out {
            Ok(_) => {
                self.report.writes += 1;
                Ok(())
            }
            Err(
                Error::AlreadyExists { .. }
                | Error::NotFound { .. }
                | Error::PreconditionFailed { .. }
                | Error::UnknownContainer { .. },
            ) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn linked(&self, a: usize, b: usize) -> bool {
        !self.cut.contains(&(a.min(b), a.max(b))) && (!self.chain || a.abs_diff(b) == 1)
    }

    fn two(&mut self) -> (usize, usize) {
        let n = self.regions.len() as u64;
        let a = self.rng.below(n) as usize;
        let b = (a + 1 + self.rng.below(n - 1) as usize) % n as usize;
        (a, b)
    }

    /// A pull with the persisted cursor: the batch may be dropped, duplicated or delayed.
    fn step_pull(&mut self) -> Result<(), Error> {
        let (dst, src) = self.two();
        if !self.linked(dst, src) {
            return Ok(());
        }
        let cursor = self.store(dst).cursor(&self.regions[src].name)?;
        let max = self.rng.range(1, 8) as usize;
        let batch = self.read_log(src, dst, cursor, max)?;
        // The wire form is what travels; decoding is part of the path.
        let batch = Batch::decode(&batch.encode())?;
        let fate = self.rng.below(10);
        self.log(format!(
            "t={} {} pulls {} from {}: {} versions, fate {fate}",
            self.time,
            self.regions[dst].name,
            self.regions[src].name,
            cursor,
            batch.versions.len()
        ));
        self.at(dst);
        match fate {
            0 => {} // dropped in transit: the cursor does not move
            1 => {
                self.store(dst).apply_batch(&batch)?;
                self.store(dst).apply_batch(&batch)?;
            }
            2 | 3 => self.in_flight.push((dst, batch.versions)),
            _ => {
                self.store(dst).apply_batch(&batch)?;
            }
        }
        self.report.deliveries += 1;
        Ok(())
    }

    /// A random subset of a peer's log, in random order, in random chunks.
    fn step_gossip(&mut self) -> Result<(), Error> {
        let (dst, src) = self.two();
        if !self.linked(dst, src) {
            return Ok(());
        }
        let mut versions = self
            .read_log(src, src, crate::Cursor::START, usize::MAX)?
            .versions;
        self.rng.shuffle(&mut versions);
        let keep = self.rng.range(0, versions.len() as u64) as usize;
        versions.truncate(keep);
        self.log(format!(
            "t={} gossip {} versions {} -> {}",
            self.time, keep, self.regions[src].name, self.regions[dst].name
        ));
        self.at(dst);
        while !versions.is_empty() {
            let n = self.rng.range(1, versions.len() as u64) as usize;
            let rest = versions.split_off(n);
            self.store(dst).apply_versions(&versions)?;
            versions = rest;
        }
        self.report.deliveries += 1;
        Ok(())
    }

    /// `src`'s log after `cursor`, read for `dst` as a server pulls (saying who it is and what
    /// it has applied).
    fn read_log(
        &self,
        src: usize,
        dst: usize,
        cursor: crate::Cursor,
        max: usize,
    ) -> Result<Batch, Error> {
        let reader = self.store(dst);
        self.store(src)
            .read_log_for(Some(&reader.puller()), cursor, max)
    }

    /// Adds every version the regions' logs hold to the ledger (before collection removes any).
    pub(crate) fn record_logs(&mut self) -> Result<(), Error> {
        for i in 0..self.regions.len() {
            for v in self
                .read_log(i, i, crate::Cursor::START, usize::MAX)?
                .versions
            {
                if self.ledger_seen.insert((v.creation, v.dot.clone())) {
                    self.ledger.push(v);
                }
            }
        }
        Ok(())
    }

    /// A new region joins from a snapshot of a random region (its neighbour in a chain), at
    /// most two per run.
    fn step_join(&mut self) -> Result<(), Error> {
        if self.report.joins >= 2 {
            return Ok(());
        }
        let n = self.regions.len();
        let src = match self.chain {
            true => n - 1,
            false => self.rng.below(n as u64) as usize,
        };
        let skew = self.rng.range(0, 4000) as i64 - 2000;
        self.regions.push(Region {
            name: format!("r{}", n + self.report.retirements),
            store: None,
            dir: None,
            skew,
        });
        self.open(n)?;
        self.at(src);
        let mut snapshot = Vec::new();
        let joiner = self.store(n).store_id();
        self.store(src)
            .snapshot_to(&self.regions[n].name, joiner, &mut snapshot)?;
        self.at(n);
        let summary = self
            .store(n)
            .join_from(&mut snapshot.as_slice(), &mut |_, _| {})?;
        self.report.joins += 1;
        self.log(format!(
            "t={} {} joins from a snapshot of {}: {summary:?}",
            self.time, self.regions[n].name, self.regions[src].name
        ));
        Ok(())
    }

    /// A region other than the first goes for good and another retires it, once its last
    /// writes reached the retiring one (as an operator retires a region that is gone); the
    /// region leaves the world. At most one per run, and never below three regions.
    fn step_retire(&mut self) -> Result<(), Error> {
        let n = self.regions.len();
        if n <= 3 || self.report.retirements >= 1 {
            return Ok(());
        }
        let k = 1 + self.rng.below(n as u64 - 1) as usize;
        let by = match self.chain {
            true => k - 1,
            false => (k + 1 + self.rng.below(n as u64 - 1) as usize) % n,
        };
        self.store(k).flush()?;
        loop {
            let cursor = self.store(by).cursor(&self.regions[k].name)?;
            let batch = match self.read_log(k, by, cursor, 64) {
                Ok(b) => b,
                // The retiring region lacks what the other collected: it cannot retire it.
                Err(Error::SnapshotNeeded(_)) => return Ok(()),
                Err(e) => return Err(e),
            };
            self.at(by);
            self.store(by).apply_batch(&batch)?;
            if !batch.more {
                break;
            }
        }
        self.at(by);
        let name = self.regions[k].name.clone();
        let cut = self.store(by).retire_region(&name)?;
        self.regions.remove(k);
        let shift = |i: usize| if i > k { i - 1 } else { i };
        self.in_flight = std::mem::take(&mut self.in_flight)
            .into_iter()
            .filter(|(dst, _)| *dst != k)
            .map(|(dst, v)| (shift(dst), v))
            .collect();
        self.cut = std::mem::take(&mut self.cut)
            .into_iter()
            .filter(|(a, b)| *a != k && *b != k)
            .map(|(a, b)| (shift(a), shift(b)))
            .collect();
        // In a chain the operator links the regions on either side of the retired one.
        if self.chain && k < self.regions.len() {
            let (left, right) = (
                self.regions[k - 1].name.clone(),
                self.regions[k].name.clone(),
            );
            self.store(k - 1).add_member(&right)?;
            self.store(k).add_member(&left)?;
        }
        self.report.retirements += 1;
        self.log(format!(
            "t={} {name} is gone; {} retires it (cut {cut})",
            self.time,
            self.regions[shift(by)].name
        ));
        Ok(())
    }

    /// Collection in a random region, with no grace or a short one (sim time, ms).
    fn step_collect(&mut self) -> Result<(), Error> {
        let i = self.rng.below(self.regions.len() as u64) as usize;
        let grace = std::time::Duration::from_millis(*self.rng.pick(&[0, 0, 5, 50]));
        self.record_logs()?;
        self.at(i);
        let r = self.store(i).collect(grace)?;
        self.report.collected_tombstones += r.tombstones;
        self.report.collected_log_entries += r.log_entries;
        self.log(format!(
            "t={} {} collects (grace {grace:?}): {r:?}",
            self.time, self.regions[i].name
        ));
        Ok(())
    }

    fn step_partition(&mut self) {
        if self.rng.chance(30) {
            self.cut.clear();
            self.log("heal all links".into());
        } else {
            let (a, b) = self.two();
            self.cut.insert((a.min(b), a.max(b)));
            self.log(format!(
                "cut {}-{}",
                self.regions[a].name, self.regions[b].name
            ));
        }
    }

    fn step_restart(&mut self) -> Result<(), Error> {
        if self.regions[0].dir.is_none() {
            return Ok(());
        }
        self.store(0).flush()?;
        self.regions[0].store = None;
        self.open(0)?;
        self.report.restarts += 1;
        self.log(format!(
            "restart {} as {}",
            self.regions[0].name,
            self.store(0).incarnation()
        ));
        Ok(())
    }

    fn step_in_flight(&mut self) -> Result<(), Error> {
        let mut batches = std::mem::take(&mut self.in_flight);
        self.rng.shuffle(&mut batches);
        for (dst, versions) in batches {
            self.at(dst);
            self.store(dst).apply_versions(&versions)?;
            self.log(format!(
                "late delivery of {} versions to {}",
                versions.len(),
                self.regions[dst].name
            ));
        }
        Ok(())
    }

    /// A policy change of a random container in a random region: under LWW and manual runs,
    /// LWW on `/_ts` or `/n`, or manual; under a custom policy with
    /// [`SimConfig::mode_changes`], any of custom (default or smaller fuel), manual and LWW.
    fn step_policy(&mut self) -> Result<(), Error> {
        let container = self.pick_container();
        let policy = match &self.cfg.policy {
            SimPolicy::Lww | SimPolicy::Manual => match self.rng.below(3) {
                0 => ConflictPolicy::default(),
                1 => ConflictPolicy::Lww { path: "/n".into() },
                _ => ConflictPolicy::Manual,
            },
            SimPolicy::Custom(name) if self.cfg.mode_changes => match self.rng.below(4) {
                0 => self.initial_policy(CONTAINER),
                1 => ConflictPolicy::Custom {
                    resolver: name.clone(),
                    hash: None,
                    limits: crate::model::ResolverLimits {
                        fuel: 5_000_000,
                        ..Default::default()
                    },
                },
                2 => ConflictPolicy::Manual,
                _ => ConflictPolicy::default(),
            },
            _ => return Ok(()),
        };
        let i = self.rng.below(self.regions.len() as u64) as usize;
        let db = *self.rng.pick(&DATABASES);
        self.at(i);
        // A change keeps the path; a re-creation (where the container is gone) may take the
        // other one, so concurrent creations with different paths meet.
        let path = match self.store(i).container(db, container) {
            Ok(def) => def.partition_key,
            Err(_) => self.creation_path().to_owned(),
        };
        let out = self
            .store(i)
            .put_container(db, container, &path, policy.clone());
        self.log(format!(
            "{} sets {db}/{container} {policy:?}: {:?}",
            self.regions[i].name,
            out.as_ref().map(|r| r.1)
        ));
        match out {
            Ok(_) => Ok(()),
            Err(Error::InvalidDefinition(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The partition key path of a re-creation: mostly [`PK_PATH`].
    fn creation_path(&mut self) -> &'static str {
        match self.rng.chance(25) {
            true => OTHER_PK_PATH,
            false => PK_PATH,
        }
    }

    fn step_drop(&mut self) -> Result<(), Error> {
        if !self.cfg.drops {
            return Ok(());
        }
        let i = self.rng.below(self.regions.len() as u64) as usize;
        let db = *self.rng.pick(&DATABASES);
        let container = self.pick_container();
        self.at(i);
        match self.store(i).drop_container(db, container) {
            Ok(()) | Err(Error::UnknownContainer { .. }) => {}
            Err(e) => return Err(e),
        }
        self.report.drops += 1;
        // A third of the drops stay: a later policy change re-creates the container, in any
        // region, concurrently with drops elsewhere of the creation it replaced or not.
        if self.rng.below(3) == 0 {
            self.log(format!("{} drops {db}/{container}", self.regions[i].name));
            return Ok(());
        }
        let policy = self.initial_policy(container);
        let path = self.creation_path();
        let def = self.store(i).put_container(db, container, path, policy)?;
        self.log(format!(
            "{} drops and re-creates {db}/{container}: {:?}",
            self.regions[i].name, def.0.creation_id
        ));
        // Resolvers belong to a creation: the new one needs its module uploaded again.
        self.upload(i, db, container, 0)
    }

    /// Every region collects, after the final exchange: then the regions must still agree.
    fn collect_all(&mut self) -> Result<(), String> {
        self.record_logs().map_err(|e| e.to_string())?;
        for i in 0..self.regions.len() {
            self.at(i);
            let r = self
                .store(i)
                .collect(std::time::Duration::ZERO)
                .map_err(|e| e.to_string())?;
            self.report.collected_tombstones += r.tombstones;
            self.report.collected_log_entries += r.log_entries;
            self.log(format!(
                "{} collects at the end: {r:?}",
                self.regions[i].name
            ));
        }
        Ok(())
    }

    /// Heals every link and pulls between all pairs until nothing new arrives.
    fn exchange_all(&mut self) -> Result<(), String> {
        self.cut.clear();
        self.step_in_flight().map_err(|e| e.to_string())?;
        let n = self.regions.len();
        for round in 0..20 {
            let mut applied = 0;
            for dst in 0..n {
                for src in (0..n).filter(|&s| s != dst && self.linked(s, dst)) {
                    self.store(src).flush().map_err(|e| e.to_string())?;
                    loop {
                        let cursor = self
                            .store(dst)
                            .cursor(&self.regions[src].name)
                            .map_err(|e| e.to_string())?;
                        let batch = self
                            .read_log(src, dst, cursor, 64)
                            .map_err(|e| e.to_string())?;
                        self.at(dst);
                        applied += self
                            .store(dst)
                            .apply_batch(&batch)
                            .map_err(|e| e.to_string())?
                            .applied;
                        if !batch.more {
                            break;
                        }
                    }
                }
            }
            // What a server's retry loop does: resolutions the watchdog stopped, or that a
            // transaction put off, are decided without the writer.
            let mut waiting = 0;
            for i in 0..n {
                self.at(i);
                let store = self.store(i);
                if store.interrupted_count() > 0 {
                    store.retry_interrupted().map_err(|e| e.to_string())?;
                    waiting += store.interrupted_count();
                }
            }
            self.log(format!(
                "exchange round {round}: {applied} applied, {waiting} resolutions waiting"
            ));
            if applied == 0 && waiting == 0 {
                return Ok(());
            }
        }
        Err("full exchange did not quiesce in 20 rounds".into())
    }
}

/// The simulated watchdog of [`SimConfig::watchdog`]: it stops a third of the calls made under
/// a region's writer, chosen by the region and the request, and lets the retry (which sets no
/// limit) through to the host.
struct Watchdog {
    inner: Arc<dyn ResolverHost>,
    region: u64,
}

impl ResolverHost for Watchdog {
    fn resolve(&self, request: &crate::ResolveRequest<'_>) -> crate::Outcome {
        self.inner.resolve(request)
    }

    fn resolve_within(
        &self,
        request: &crate::ResolveRequest<'_>,
        limit: std::time::Duration,
    ) -> crate::Outcome {
        let mut r = Rng::new(self.region);
        let mut h = r.next_u64();
        for v in request.versions {
            h = Rng::new(h ^ v.timestamp ^ (u64::from(v.logical) << 48)).next_u64();
        }
        match h % 3 {
            0 => crate::Outcome::Interrupted,
            _ => self.inner.resolve_within(request, limit),
        }
    }

    fn load(&self, module: &[u8]) -> Result<String, String> {
        self.inner.load(module)
    }
}
