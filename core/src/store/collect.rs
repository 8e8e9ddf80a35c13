//! Collection: purging stable tombstones, shrinking item contexts, removing log entries no one
//! can ask for. Each step runs in small write transactions (a chunk of keys each), so the
//! writer is never held for long; what a chunk decides depends only on the stable point, which
//! only grows, so a pass interrupted anywhere (or a crash) leaves a consistent store.

use super::Store;
use super::backend::{Sync, Table};
use super::codec::{ActorId, ItemRecord, Shown, cid_lsn_key, decode, encode, item_key};
use super::tx::Tx;
use crate::Result;
use crate::model::{CreationId, ItemKey, SYSTEM_CREATION};
use serde::Deserialize;
use std::time::Duration;

/// A region that asked for a snapshot and is not heard from within this long is forgotten.
const JOINER_TTL_MS: u64 = 10 * 60 * 1000;

/// Keys one collection transaction looks at.
const CHUNK: usize = 256;

/// What one collection pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CollectReport {
    /// Items whose tombstones were purged (with their change-feed entries and log entries).
    pub tombstones: usize,
    /// Item records whose contexts shrank.
    pub contexts_shrunk: usize,
    /// Context entries removed from them.
    pub context_entries: usize,
    /// Log entries removed (versions every member has that no item here shows).
    pub log_entries: usize,
}

/// What a store holds, counted (for benchmarks and operations; it reads every item).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StorageCounts {
    /// Item records (user items; system items apart).
    pub items: u64,
    /// Of them, records that show nothing and hold only tombstones.
    pub tombstones: u64,
    /// Entries of the item records' contexts.
    pub context_entries: u64,
    /// Log entries.
    pub log_entries: u64,
    /// Bytes of the visible items' bodies (the live data).
    pub live_bytes: u64,
}

/// The head of a log entry: which item and dot it holds.
#[derive(Deserialize)]
struct LogHead {
    creation: CreationId,
    key: ItemKey,
    actor: ActorId,
    counter: u64,
}

impl Store {
    /// Runs one collection pass: recomputes the stable point, purges the tombstones of items
    /// deleted everywhere more than `grace` ago (their record, change-feed entry and log
    /// entries), shrinks item contexts to what lies above the stable point, and removes the
    /// log entries of versions every member has applied that no item here shows. Nothing a
    /// member may still ask for, no sibling and no open conflict is touched; a version that
    /// arrives later at or below the stable point is a duplicate.
    pub fn collect(&self, grace: Duration) -> Result<CollectReport> {
        let mut report = CollectReport::default();
        self.write_tx(Sync::Lazy, |tx| {
            let counter = tx.counter();
            let mut probe = tx.stability().clone();
            probe.forget_silent_joiners(tx.now_ms(), JOINER_TTL_MS);
            probe.recompute(counter);
            if probe.is_dirty() {
                *tx.stability_mut() = probe;
            }
            Ok(())
        })?;
        let grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        let mut from: Vec<u8> = Vec::new();
        loop {
            let next = self.write_tx(Sync::Lazy, |tx| {
                collect_items(tx, &from, grace_ms, &mut report)
            })?;
            match next {
                Some(k) => from = k,
                None => break,
            }
        }
        let mut lsn = 0u64;
        loop {
            let next = self.write_tx(Sync::Lazy, |tx| collect_log(tx, lsn, &mut report))?;
            match next {
                Some(l) => lsn = l,
                None => break,
            }
        }
        // Durable before the pass returns (a crash before this loses only collection work).
        self.flush()?;
        Ok(report)
    }
}

impl Store {
    /// Counts items, tombstones, context entries, log entries and live bytes.
    pub fn storage_counts(&self) -> Result<StorageCounts> {
        let mut c = StorageCounts::default();
        let start = (SYSTEM_CREATION.0 + 1).to_be_bytes().to_vec();
        let mut from = start;
        loop {
            let chunk = self.read_tx(|kv, _| {
                let rows = kv.scan(Table::Items, &from, None, 1024)?;
                let mut out = Vec::with_capacity(rows.len());
                for (k, v) in rows {
                    let rec: ItemRecord = decode("item", &v)?;
                    let body = super::defs::visible_body(kv, &rec)?.map_or(0, |b| b.len());
                    out.push((k, rec, body));
                }
                Ok(out)
            })?;
            let Some((last, _, _)) = chunk.last() else {
                break;
            };
            from = last.clone();
            from.push(0);
            for (_, rec, body) in &chunk {
                c.items += 1;
                c.tombstones +=
                    u64::from(rec.shown == Shown::Hidden && rec.siblings.iter().all(|s| s.deleted));
                c.context_entries += rec.context.entries().len() as u64;
                c.live_bytes += *body as u64;
            }
        }
        c.log_entries = self.read_tx(|kv, _| kv.len(Table::Log))?;
        Ok(c)
    }
}

/// One chunk of the item pass from key `from`; returns where the next chunk starts.
fn collect_items(
    tx: &mut Tx<'_>,
    from: &[u8],
    grace_ms: u64,
    report: &mut CollectReport,
) -> Result<Option<Vec<u8>>> {
    // User items only: definitions and resolver items are few, and their history decides
    // which creations exist.
    let start = if from.is_empty() {
        (SYSTEM_CREATION.0 + 1).to_be_bytes().to_vec()
    } else {
        from.to_vec()
    };
    let chunk = tx.read().scan(Table::Items, &start, None, CHUNK)?;
    let Some((last, _)) = chunk.last() else {
        return Ok(None);
    };
    let mut next = last.clone();
    next.push(0);
    let now = tx.now_ms();
    for (ik, raw) in chunk {
        let mut rec: ItemRecord = decode("item", &raw)?;
        if purgeable(tx, &ik, &rec, now, grace_ms)? {
            let cid = CreationId(u128::from_be_bytes(
                ik[..16]
                    .try_into()
                    .map_err(|_| crate::Error::Storage("malformed item key".into()))?,
            ));
            tx.kv.remove(Table::Items, &ik)?;
            if rec.lsn != 0 {
                tx.kv.remove(Table::Changes, &cid_lsn_key(cid, rec.lsn))?;
            }
            for s in &rec.siblings {
                tx.kv.remove(Table::Log, &s.lsn.to_be_bytes())?;
            }
            let dots: Vec<(ActorId, u64)> = rec
                .siblings
                .iter()
                .map(|s| (s.actor, s.counter))
                .chain(rec.context.entries().iter().copied())
                .collect();
            tx.mark_collected(&dots);
            report.tombstones += 1;
            continue;
        }
        let before = rec.context.entries().len();
        tx.shrink_context(&mut rec.context);
        let gone = before - rec.context.entries().len();
        if gone > 0 {
            report.contexts_shrunk += 1;
            report.context_entries += gone;
            tx.kv.put_owned(Table::Items, &ik, encode(&rec)?)?;
        }
    }
    Ok(Some(next))
}

/// Whether an item record is a tombstone every member has, old enough, needed by nothing.
fn purgeable(tx: &Tx<'_>, ik: &[u8], rec: &ItemRecord, now: u64, grace_ms: u64) -> Result<bool> {
    if rec.siblings.is_empty()
        || rec.shown != Shown::Hidden
        || !rec.open.is_empty()
        || rec.siblings.iter().any(|s| !s.deleted)
    {
        return Ok(false);
    }
    let newest = rec
        .siblings
        .iter()
        .map(|s| s.hlc.physical_ms)
        .max()
        .unwrap_or(0);
    if newest.saturating_add(grace_ms) > now {
        return Ok(false);
    }
    // Every dot the item has seen at or below the stable point: a late copy of any of them
    // is then a duplicate, and every write concurrent with them has arrived already.
    let stable = |a, c| tx.is_stable(a, c);
    if !rec.siblings.iter().all(|s| stable(s.actor, s.counter))
        || !rec.context.entries().iter().all(|(a, c)| stable(*a, *c))
    {
        return Ok(false);
    }
    Ok(tx.read().get(Table::Interrupted, ik)?.is_none())
}

/// One chunk of the log pass after position `after`; returns where the next chunk starts.
fn collect_log(tx: &mut Tx<'_>, after: u64, report: &mut CollectReport) -> Result<Option<u64>> {
    let chunk = tx
        .read()
        .scan(Table::Log, &(after + 1).to_be_bytes(), None, CHUNK)?;
    let Some((last, _)) = chunk.last() else {
        return Ok(None);
    };
    let next = u64::from_be_bytes(
        last.as_slice()
            .try_into()
            .map_err(|_| crate::Error::Storage("malformed log key".into()))?,
    );
    for (k, v) in chunk {
        let head: LogHead = decode("log", &v)?;
        if !tx.is_stable(head.actor, head.counter) {
            continue;
        }
        let lsn = u64::from_be_bytes(
            k.as_slice()
                .try_into()
                .map_err(|_| crate::Error::Storage("malformed log key".into()))?,
        );
        let shows = match tx
            .read()
            .get(Table::Items, &item_key(head.creation, &head.key))?
        {
            Some(raw) => decode::<ItemRecord>("item", &raw)?
                .siblings
                .iter()
                .any(|s| s.lsn == lsn),
            None => false,
        };
        if !shows {
            tx.kv.remove(Table::Log, &k)?;
            tx.mark_collected(&[(head.actor, head.counter)]);
            report.log_entries += 1;
        }
    }
    Ok(Some(next))
}
