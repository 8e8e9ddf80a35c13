//! Reading the conflicts feed, the change feed and the replication log; applying batches.

use super::Store;
use super::backend::Table;
use super::codec::{ItemRecord, LogEntry, cid_lsn_key, decode, encode, parse_item_key, prefix_end};
use super::defs::{self, load_item};
use super::items::{decode_hex, encode_hex, render};
use crate::causal::Incarnation;
use crate::causal::RegionId;
use crate::feed::{Change, ConflictRecord, Page};
use crate::replicate::{Applied, Batch, Cursor, MAX_BATCH_BYTES, Version};
use crate::{Error, Result};

/// A region pulling a log, as it says who it is (`region=`, `applied=` and `store=` of the
/// log route): see [`Store::read_log_for`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Puller {
    /// The pulling region.
    pub region: RegionId,
    /// What it has applied: per region, the counter up to which it applied every version.
    pub applied: Applied,
    /// Which of its region's stores it is ([`Store::store_id`]); `None` from a puller that
    /// does not say, whose store is then not checked.
    pub store: Option<u64>,
    /// Whether that store joined from a snapshot: a peer that knows an earlier store of the
    /// region takes it in (a store that started empty without joining is refused).
    pub joined: bool,
}

/// Whether `store`, claimed by a store of `region` that says it joined and has applied
/// `applied` (empty: not known), can be one: store ids are counters taken from the wall clock
/// when a store is made (so none lies more than a minute ahead of this region's clock), and a
/// store's own counter starts at its id.
fn plausible_store(store: u64, region: &RegionId, applied: &Applied, now_ms: u64) -> bool {
    let ahead = now_ms.saturating_add(60_000).saturating_mul(1000);
    store <= ahead && (applied.is_empty() || applied.get(region).is_some_and(|&c| c >= store))
}

/// What applying a batch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Versions stored (new to this region).
    pub applied: usize,
    /// Versions ignored: already seen, or of a dropped container.
    pub ignored: usize,
}

/// Applies remote versions in one transaction; the first that fails its checks fails it all.
fn apply_all(tx: &mut super::tx::Tx<'_>, versions: &[Version]) -> Result<ApplyReport> {
    let mut report = ApplyReport::default();
    for v in versions {
        match tx.apply(v, false)? {
            Some(_) => report.applied += 1,
            None => report.ignored += 1,
        }
    }
    Ok(report)
}

/// `stab` with what `batch` says of the members merged in, if that changes anything.
fn merged(
    stab: &super::stability::Stability,
    batch: &Batch,
    counter: u64,
    now_ms: u64,
) -> Option<super::stability::Stability> {
    let mut probe = stab.clone();
    probe.merge(
        &batch.source,
        batch.store,
        batch.applied.as_ref(),
        &batch.members,
        counter,
        now_ms,
    );
    probe.is_dirty().then_some(probe)
}

/// An applied vector as text, `region:counter` joined by commas.
pub(crate) fn applied_text(v: &Applied) -> String {
    v.iter()
        .map(|(r, c)| format!("{r}:{c}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn parse_conflict_id(id: &str) -> Result<u128> {
    if id.len() != 32 {
        return Err(Error::UnknownConflict(id.to_owned()));
    }
    u128::from_str_radix(id, 16).map_err(|_| Error::UnknownConflict(id.to_owned()))
}

impl Store {
    /// Lists conflict records of a container (open and superseded), in pages.
    pub fn conflicts(
        &self,
        database: &str,
        container: &str,
        continuation: Option<&str>,
        max: usize,
    ) -> Result<Page<ConflictRecord>> {
        let max = max.max(1);
        let generation = self.defs_generation();
        self.read_tx(|kv, _| {
            self.def_cached(kv, generation, database, container)?;
            let prefix = defs::conflict_prefix(database, container);
            let end = prefix_end(&prefix);
            let from = match continuation {
                Some(t) => decode_hex(t)
                    .filter(|k| k.starts_with(&prefix))
                    .ok_or_else(|| {
                        Error::InvalidToken(format!("{t:?} is not a conflicts continuation"))
                    })?,
                None => prefix.clone(),
            };
            let rows = kv.scan(Table::Conflicts, &from, end.as_deref(), max + 1)?;
            let continuation = rows.get(max).map(|(k, _)| encode_hex(k));
            let items = rows
                .iter()
                .take(max)
                .map(|(_, v)| decode("conflict", v))
                .collect::<Result<Vec<ConflictRecord>>>()?;
            Ok(Page {
                items,
                continuation,
            })
        })
    }

    /// Reads one conflict record.
    pub fn conflict(&self, database: &str, container: &str, id: &str) -> Result<ConflictRecord> {
        let n = parse_conflict_id(id)?;
        let generation = self.defs_generation();
        self.read_tx(|kv, _| {
            self.def_cached(kv, generation, database, container)?;
            match kv.get(
                Table::Conflicts,
                &defs::conflict_key(database, container, n),
            )? {
                Some(b) => decode("conflict", &b),
                None => Err(Error::UnknownConflict(id.to_owned())),
            }
        })
    }

    /// Deletes (acknowledges) a conflict record. Only this region's copy goes.
    pub fn delete_conflict(&self, database: &str, container: &str, id: &str) -> Result<()> {
        let n = parse_conflict_id(id)?;
        self.write_tx(self.commit_sync(), |tx| {
            self.def_cached(tx.read(), self.defs_generation(), database, container)?;
            let k = defs::conflict_key(database, container, n);
            if tx.read().get(Table::Conflicts, &k)?.is_none() {
                return Err(Error::UnknownConflict(id.to_owned()));
            }
            tx.kv.remove(Table::Conflicts, &k)
        })
    }

    /// Visible-value changes of a container after the token `since` (from the start when
    /// `None`), in `_lsn` order, each item once at its current state. The continuation is the
    /// token to pass next time; it is always set, so a reader can keep polling.
    pub fn changes(
        &self,
        database: &str,
        container: &str,
        since: Option<&str>,
        max: usize,
    ) -> Result<Page<Change>> {
        let after: u64 = match since {
            Some(t) => t
                .parse()
                .map_err(|_| Error::InvalidToken(format!("{t:?} is not a change-feed token")))?,
            None => 0,
        };
        let generation = self.defs_generation();
        self.read_tx(|kv, _| {
            let def = self.def_cached(kv, generation, database, container)?;
            let cid = def.creation_id;
            let from = cid_lsn_key(cid, after.saturating_add(1));
            let end = prefix_end(&cid.0.to_be_bytes());
            let mut items = Vec::new();
            let mut last = after;
            for (k, ik) in kv.scan(Table::Changes, &from, end.as_deref(), max.max(1))? {
                let lsn = u64::from_be_bytes(
                    k[16..24]
                        .try_into()
                        .map_err(|_| Error::Storage("malformed change key".into()))?,
                );
                last = lsn;
                let (_, key) = parse_item_key(&ik)?;
                let rec: ItemRecord = load_item(kv, &ik)?
                    .ok_or_else(|| Error::Storage("change without item".into()))?;
                items.push(match render(kv, &rec)? {
                    Some(item) => Change::Upsert(item.body),
                    None => Change::Delete {
                        id: key.id,
                        partition_key: key.partition_key,
                        lsn,
                    },
                });
            }
            Ok(Page {
                items,
                continuation: Some(last.to_string()),
            })
        })
    }

    /// Reads up to `max` durable versions of this region's log after `since`, and no more
    /// than [`MAX_BATCH_BYTES`] of them (always at least one). When this store
    /// has restarted since the cursor was issued, reading resumes from where the later
    /// incarnations began if that is earlier, so nothing is skipped.
    pub fn read_log(&self, since: Cursor, max: usize) -> Result<Batch> {
        self.read_log_for(None, since, max)
    }

    /// [`read_log`](Self::read_log) for a peer that says who it is and what it has applied.
    ///
    /// A region that has collected serves only pullers that have applied everything it
    /// removed; a retired region, and a store of its region this one knows another store of,
    /// are refused too ([`Error::SnapshotNeeded`]: it must join from a snapshot), unless it is
    /// a later store that says it joined ([`Puller::joined`]): its member record then starts
    /// over from it. Pulling does not make a member (a stray request would hold collection
    /// back everywhere). A reader that does not say who it is (`None`) is served only while
    /// nothing was collected.
    pub fn read_log_for(
        &self,
        puller: Option<&Puller>,
        since: Cursor,
        max: usize,
    ) -> Result<Batch> {
        let view = self.stability_view()?;
        // A later store of a member known here that says it joined (and can have): taken in.
        let joined_later = puller.and_then(|p| {
            p.store.filter(|&s| {
                p.joined
                    && view.is_later_store(&p.region, s)
                    && plausible_store(s, &p.region, &p.applied, self.now_ms())
            })
        });
        if let Some(p) = puller {
            if let Some(cut) = view.retired_cut(&p.region) {
                return Err(Error::SnapshotNeeded(format!(
                    "region {} was retired: its versions past counter {cut} are refused and it \
                     cannot serve again under that name; start a region of another name with \
                     `converge serve --join`",
                    p.region
                )));
            }
            if let Some(why) = p
                .store
                .filter(|_| joined_later.is_none())
                .and_then(|s| view.store_refusal(&p.region, s, Some(p.joined)))
            {
                return Err(Error::SnapshotNeeded(why));
            }
        }
        if !view.collected().is_empty() {
            let ok = puller.is_some_and(|p| view.has_collected_for(&p.applied));
            if !ok {
                let who = puller.map_or_else(|| "a reader".to_owned(), |p| format!("{}", p.region));
                let has = puller.map_or_else(String::new, |p| applied_text(&p.applied));
                return Err(Error::SnapshotNeeded(format!(
                    "region {} has collected versions {who} has not applied (collected up to \
                     {}; {who} has applied {has}); start {who} on an empty data directory with \
                     `converge serve --join <url of {}>`",
                    self.region,
                    applied_text(view.collected()),
                    self.region
                )));
            }
        }
        // Its record starts over from what it says it applied (the lost store's claims count
        // no more).
        if let (Some(p), Some(store)) = (puller, joined_later) {
            drop(view);
            self.take_joined_store(p.region.as_str(), store, &p.applied)?;
        }
        let published = self
            .published
            .lock()
            .map_err(|_| Error::Storage("publish lock poisoned".into()))?
            .clone();
        let durable = published.lsn;
        let members = self.stability_view()?.reports();
        self.read_tx(|kv, actors| {
            let mut from = since.lsn;
            if since.incarnation != self.incarnation {
                let mut seen = false;
                for (_, v) in kv.scan(Table::Incarnations, &[], None, usize::MAX)? {
                    let (inc, start): (Incarnation, u64) = decode("incarnation", &v)?;
                    if seen {
                        from = from.min(start.saturating_sub(1));
                    }
                    seen |= inc == since.incarnation;
                }
                if !seen {
                    from = 0;
                }
            }
            let mut versions = Vec::new();
            let mut next = from;
            if from < durable {
                let end = (durable + 1).to_be_bytes();
                let max = max.max(1);
                // Bodies are up to 2 MiB: a count alone could make a batch of a gigabyte, and
                // the scan stops at the byte cap without copying the rows past it.
                let (rows, capped) = kv.scan_capped(
                    Table::Log,
                    &(from + 1).to_be_bytes(),
                    Some(&end),
                    max,
                    MAX_BATCH_BYTES,
                )?;
                let full = capped || rows.len() == max;
                for (k, v) in rows {
                    next = u64::from_be_bytes(
                        k.as_slice()
                            .try_into()
                            .map_err(|_| Error::Storage("malformed log key".into()))?,
                    );
                    let entry: LogEntry = decode("log", &v)?;
                    versions.push(entry.into_version(|a| actors.by_id.get(a as usize).cloned())?);
                }
                // Positions without a log entry (changes that were not versions) are skipped.
                if !full {
                    next = durable;
                }
            }
            // Through the durable end, the reader has applied all this region had then.
            let complete = next >= durable;
            Ok(Batch {
                source: self.region.clone(),
                versions,
                more: !complete,
                next: Cursor {
                    incarnation: self.incarnation,
                    lsn: next,
                },
                applied: complete.then_some(published.applied),
                members,
                store: self.store_id,
            })
        })
    }

    /// Applies a batch read from a peer's log in one transaction and saves the cursor to
    /// continue from, under the peer's name. Re-delivered, reordered or duplicated versions are
    /// harmless; a version that fails its checks rejects the whole batch. A batch from a store
    /// of its region that this one does not know is refused ([`Error::SnapshotNeeded`]; see
    /// [`Store::read_log_for`]).
    pub fn apply_batch(&self, batch: &Batch) -> Result<ApplyReport> {
        if let Some(why) = self
            .stability_view()?
            .store_refusal(&batch.source, batch.store, None)
        {
            return Err(Error::SnapshotNeeded(why));
        }
        // An empty batch that leaves the cursor where it is (a peer's long poll that timed
        // out) commits nothing: an idle region would otherwise fsync once a second per peer.
        // Unless what it says of the members is news.
        if batch.versions.is_empty() && self.cursor(batch.source.as_str())? == batch.next {
            let counter = self.applied().get(&self.region).copied().unwrap_or(0);
            if merged(&*self.stability_view()?, batch, counter, 0).is_none() {
                return Ok(ApplyReport::default());
            }
        }
        self.write_tx(self.commit_sync(), |tx| {
            let report = apply_all(tx, &batch.versions)?;
            if let Some(stab) = merged(tx.stability(), batch, tx.counter(), tx.now_ms()) {
                *tx.stability_mut() = stab;
            }
            tx.kv.put(
                Table::Cursors,
                batch.source.as_str().as_bytes(),
                &encode(&batch.next)?,
            )?;
            Ok(report)
        })
    }

    /// `region` runs `store` now, a later store than the one known here that joined from a
    /// snapshot and has applied `applied` (its pull says so, or its fingerprint route: a
    /// region that only pulls from it learns it there). Its member record starts over: the
    /// lost store's claims count no more, and nothing is confirmed until its own writes are
    /// here. Says whether it was taken in; an implausible store (an id from the future, or a
    /// vector below the store's own start) is not.
    pub fn take_joined_store(&self, region: &str, store: u64, applied: &Applied) -> Result<bool> {
        let region = RegionId::new(region)?;
        if !plausible_store(store, &region, applied, self.now_ms()) {
            return Ok(false);
        }
        self.write_tx(self.commit_sync(), |tx| {
            let later = tx.stability().is_later_store(&region, store);
            if later {
                tx.stability_mut().later_store(&region, store, applied);
            }
            Ok(later)
        })
    }

    /// This region as a puller: its name, its applied vector, its store and whether the store
    /// joined from a snapshot.
    pub fn puller(&self) -> Puller {
        Puller {
            region: self.region.clone(),
            applied: self.applied(),
            store: Some(self.store_id()),
            joined: self.joined_store(),
        }
    }

    /// Whether this store was created by joining from a snapshot ([`Store::join_from`]).
    pub fn joined_store(&self) -> bool {
        self.joined.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Applies versions delivered outside a cursor (any order, any duplicates).
    pub fn apply_versions(&self, versions: &[Version]) -> Result<ApplyReport> {
        self.write_tx(self.commit_sync(), |tx| apply_all(tx, versions))
    }

    /// The saved cursor into `peer`'s log ([`Cursor::START`] if none).
    pub fn cursor(&self, peer: &str) -> Result<Cursor> {
        self.read_tx(|kv, _| match kv.get(Table::Cursors, peer.as_bytes())? {
            Some(b) => decode("cursor", &b),
            None => Ok(Cursor::START),
        })
    }
}

/// The causal state of one item in one region: for inspection, tests and simulations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemState {
    /// The dots of the current siblings, sorted.
    pub siblings: Vec<crate::causal::Dot>,
    /// Every version seen, as a version vector.
    pub context: crate::causal::Context<crate::causal::Writer>,
    /// Bytes of the item's record (causal metadata and the visible state, not the key); bodies
    /// are stored once, in the log.
    pub record_bytes: usize,
    /// Bytes the siblings' log entries take beyond their bodies (each version's key, dot, clock
    /// and context, as replication sends them).
    pub log_overhead_bytes: usize,
}

impl Store {
    /// The siblings and context of an item of a given creation (`None` if never seen here).
    pub fn item_state(
        &self,
        creation: crate::model::CreationId,
        key: &crate::model::ItemKey,
    ) -> Result<Option<ItemState>> {
        self.read_tx(|kv, actors| {
            let Some(raw) = kv.get(Table::Items, &super::codec::item_key(creation, key))? else {
                return Ok(None);
            };
            let rec: ItemRecord = decode("item", &raw)?;
            let mut log_overhead_bytes = 0;
            for s in &rec.siblings {
                let raw = kv
                    .get(Table::Log, &s.lsn.to_be_bytes())?
                    .map(|b| b.len())
                    .unwrap_or(0);
                let body = defs::sibling_body(kv, s)?.map_or(0, |b| b.len());
                log_overhead_bytes += raw.saturating_sub(body);
            }
            let writer = |a: &u32| actors.by_id.get(*a as usize).cloned();
            let mut siblings = Vec::new();
            for s in &rec.siblings {
                let (region, incarnation) =
                    writer(&s.actor).ok_or_else(|| Error::Storage("unknown actor".into()))?;
                siblings.push(crate::causal::Dot {
                    region,
                    incarnation,
                    counter: s.counter,
                });
            }
            siblings.sort();
            let mut entries = Vec::new();
            for (a, c) in rec.context.entries() {
                entries.push((
                    writer(a).ok_or_else(|| Error::Storage("unknown actor".into()))?,
                    *c,
                ));
            }
            Ok(Some(ItemState {
                siblings,
                context: crate::causal::Context::from_entries(entries),
                record_bytes: raw.len(),
                log_overhead_bytes,
            }))
        })
    }
}
