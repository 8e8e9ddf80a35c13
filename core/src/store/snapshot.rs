//! Snapshots: one region's state streamed to a new region, which starts from it instead of from
//! its peers' logs (once they collect, those no longer hold everything).
//!
//! A snapshot is read in one read transaction (a consistent state; redb readers never block
//! the writer) and written as it is read, frame by frame: the head (the source, the log
//! position to pull from next, the source's applied vector, stable point, members and cursors),
//! every module, the creations and dropped creations, then every item with its context and its
//! siblings as versions (each with the context it was written with, read from the log), and an
//! end frame with the count. Each frame is `length (u32 LE) · xxh3-64 (LE) · postcard`.

use super::Store;
use super::backend::{KvRead, Table};
use super::codec::{ItemRecord, LogEntry, decode, parse_item_key};
use super::stability::MemberRecord;
use crate::causal::{Context, Incarnation, RegionId, Writer};
use crate::model::{CreationId, ItemKey};
use crate::replicate::{Applied, Cursor, PROTOCOL_FORMAT, Version};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use xxhash_rust::xxh3::xxh3_64;

const MAGIC: &[u8; 4] = b"CVS1";
/// Items applied per transaction when joining.
const JOIN_CHUNK: usize = 4096;
/// The largest frame read: an item with siblings of up to 2 MiB each; a bound on a broken peer.
const MAX_FRAME: usize = 256 << 20;

/// What a snapshot held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotSummary {
    /// Items (user and system) it held.
    pub items: u64,
    /// Bytes it took.
    pub bytes: u64,
}

#[derive(Serialize, Deserialize)]
struct Head {
    source: RegionId,
    /// The source's store id.
    store: u64,
    incarnation: Incarnation,
    lsn: u64,
    applied: Applied,
    stable: Applied,
    collected: Applied,
    members: Vec<(RegionId, MemberRecord)>,
    cursors: Vec<(String, Cursor)>,
    /// How many items follow (for progress).
    items: u64,
}

#[derive(Serialize, Deserialize)]
pub(super) struct SnapItem {
    pub creation: CreationId,
    pub key: ItemKey,
    pub context: Context<Writer>,
    /// The siblings as they were written, and whether each has shown here.
    pub siblings: Vec<(Version, bool)>,
}

#[derive(Serialize, Deserialize)]
enum Part {
    Head(Box<Head>),
    Module {
        hash: String,
        bytes: Vec<u8>,
    },
    Creation {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Dropped {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Item(SnapItem),
    /// A logged version no item shows that some member may still lack (a drop, a covered
    /// definition or module version, a retirement): logged by the joiner too, so it relays it.
    Log(Version),
    End {
        items: u64,
    },
}

struct Framer<'a> {
    out: &'a mut dyn Write,
    bytes: u64,
}

impl Framer<'_> {
    fn put(&mut self, part: &Part) -> Result<()> {
        let payload = postcard::to_allocvec(part)
            .map_err(|e| Error::Storage(format!("cannot encode a snapshot frame: {e}")))?;
        let io = |e: std::io::Error| Error::Storage(format!("snapshot stream: {e}"));
        self.out
            .write_all(&(payload.len() as u32).to_le_bytes())
            .map_err(io)?;
        self.out
            .write_all(&xxh3_64(&payload).to_le_bytes())
            .map_err(io)?;
        self.out.write_all(&payload).map_err(io)?;
        self.bytes += 12 + payload.len() as u64;
        Ok(())
    }
}

fn bad(why: impl std::fmt::Display) -> Error {
    Error::CorruptBatch(format!("snapshot: {why}"))
}

/// Reads the next frame (`None` at a clean end of the stream, which a snapshot never has
/// before its end frame).
fn next_part(input: &mut dyn Read, bytes: &mut u64) -> Result<Part> {
    let mut head = [0u8; 12];
    input.read_exact(&mut head).map_err(|e| {
        bad(format!(
            "the stream ended early ({e}): the source stopped or the connection dropped"
        ))
    })?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len > MAX_FRAME {
        return Err(bad(format!("a frame of {len} bytes")));
    }
    let sum = u64::from_le_bytes(head[4..12].try_into().map_err(bad)?);
    let mut payload = vec![0u8; len];
    input
        .read_exact(&mut payload)
        .map_err(|e| bad(format!("the stream ended inside a frame ({e})")))?;
    if xxh3_64(&payload) != sum {
        return Err(bad("checksum mismatch: the stream was damaged"));
    }
    *bytes += 12 + len as u64;
    postcard::from_bytes(&payload).map_err(|e| bad(format!("cannot decode a frame: {e}")))
}

impl Store {
    /// Streams a snapshot of this region to `out` for the region `joiner` (its store
    /// `joiner_store`, [`store_id`](Self::store_id)), which becomes a member from this state on
    /// (an earlier store of its name counts no more; a joiner never heard from afterwards is
    /// forgotten after ten minutes). See [`join_from`](Self::join_from).
    pub fn snapshot_to(
        &self,
        joiner: &str,
        joiner_store: u64,
        out: &mut dyn Write,
    ) -> Result<SnapshotSummary> {
        let joiner = RegionId::new(joiner)?;
        if joiner == self.region {
            return Err(Error::invalid(format!(
                "region {joiner} cannot join from itself"
            )));
        }
        let view = self.stability_view()?;
        if view.retired_cut(&joiner).is_some() {
            return Err(Error::SnapshotNeeded(format!(
                "region {joiner} was retired: a region of another name must join instead"
            )));
        }
        let published = self
            .published
            .lock()
            .map_err(|_| Error::Storage("publish lock poisoned".into()))?
            .clone();
        // The joiner holds everything this snapshot holds: collection here waits for it from
        // now on, as it waits for any member.
        self.write_tx(self.commit_sync(), |tx| {
            let now = tx.now_ms();
            tx.stability_mut()
                .joined(&joiner, joiner_store, &published.applied, now);
            Ok(())
        })?;
        let view = self.stability_view()?;
        let writers: Vec<Writer> = self
            .actors
            .read()
            .map_err(|_| Error::Storage("actor lock poisoned".into()))?
            .by_id
            .clone();
        let mut framer = Framer { out, bytes: 0 };
        out_magic(framer.out)?;
        framer.bytes += 8;
        let items = self.backend.read(|kv| {
            let mut cursors = Vec::new();
            for (k, v) in kv.scan(Table::Cursors, &[], None, usize::MAX)? {
                let peer = String::from_utf8_lossy(&k).into_owned();
                if peer != joiner.as_str() {
                    cursors.push((peer, decode::<Cursor>("cursor", &v)?));
                }
            }
            framer.put(&Part::Head(Box::new(Head {
                source: self.region.clone(),
                store: self.store_id,
                incarnation: self.incarnation,
                lsn: published.lsn,
                applied: published.applied.clone(),
                stable: view.stable().clone(),
                collected: view.collected().clone(),
                members: view.records(),
                cursors,
                items: kv.len(Table::Items)?,
            })))?;
            for_each(kv, Table::Modules, |k, v| {
                framer.put(&Part::Module {
                    hash: String::from_utf8_lossy(k).into_owned(),
                    bytes: v.to_vec(),
                })
            })?;
            for_each(kv, Table::Creations, |k, v| {
                framer.put(&Part::Creation {
                    key: k.to_vec(),
                    value: v.to_vec(),
                })
            })?;
            for_each(kv, Table::Dropped, |k, v| {
                framer.put(&Part::Dropped {
                    key: k.to_vec(),
                    value: v.to_vec(),
                })
            })?;
            let writer = |a: u32| writers.get(a as usize).cloned();
            let mut items = 0u64;
            for_each(kv, Table::Items, |k, v| {
                let (creation, key) = parse_item_key(k)?;
                let rec: ItemRecord = decode("item", v)?;
                let mut siblings = Vec::with_capacity(rec.siblings.len());
                for s in &rec.siblings {
                    let raw = kv
                        .get(Table::Log, &s.lsn.to_be_bytes())?
                        .ok_or_else(|| Error::Storage(format!("log entry {} is missing", s.lsn)))?;
                    let entry: LogEntry = decode("log", &raw)?;
                    siblings.push((entry.into_version(writer)?, s.shown));
                }
                let mut context = Vec::with_capacity(rec.context.entries().len());
                for (a, c) in rec.context.entries() {
                    let w = writer(*a)
                        .ok_or_else(|| Error::Storage("an item names an unknown writer".into()))?;
                    context.push((w, *c));
                }
                items += 1;
                framer.put(&Part::Item(SnapItem {
                    creation,
                    key,
                    context: Context::from_entries(context),
                    siblings,
                }))
            })?;
            let stable = view.stable();
            let mut shown: Option<(Vec<u8>, Vec<u64>)> = None;
            for_each(kv, Table::Log, |k, v| {
                let entry: LogEntry = decode("log", v)?;
                let lsn = u64::from_be_bytes(
                    k.try_into()
                        .map_err(|_| Error::Storage("malformed log key".into()))?,
                );
                let w = writer(entry.actor)
                    .ok_or_else(|| Error::Storage("a log entry names an unknown writer".into()))?;
                if entry.counter <= stable.get(&w.0).copied().unwrap_or(0) {
                    return Ok(());
                }
                // Siblings travelled with their items.
                let ik = super::codec::item_key(entry.creation, &entry.key);
                if shown.as_ref().is_none_or(|(k, _)| *k != ik) {
                    let lsns = match kv.get(Table::Items, &ik)? {
                        Some(raw) => decode::<ItemRecord>("item", &raw)?
                            .siblings
                            .iter()
                            .map(|s| s.lsn)
                            .collect(),
                        None => Vec::new(),
                    };
                    shown = Some((ik, lsns));
                }
                if shown.as_ref().is_some_and(|(_, l)| l.contains(&lsn)) {
                    return Ok(());
                }
                framer.put(&Part::Log(entry.into_version(writer)?))
            })?;
            framer.put(&Part::End { items })?;
            Ok(items)
        })?;
        framer
            .out
            .flush()
            .map_err(|e| Error::Storage(format!("snapshot stream: {e}")))?;
        Ok(SnapshotSummary {
            items,
            bytes: framer.bytes,
        })
    }

    /// Starts this store — which must be empty — from a snapshot another region streamed with
    /// [`snapshot_to`](Self::snapshot_to): its items, siblings and contexts, definitions,
    /// modules, members and stable point, and the position to pull its log from next.
    /// `progress` is called with the items applied so far and the count the snapshot
    /// announced. Nothing of a damaged or cut-off snapshot remains usable: the error says to
    /// start again on an empty directory.
    pub fn join_from(
        &self,
        input: &mut dyn Read,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<SnapshotSummary> {
        let empty = self.read_tx(|kv, _| {
            Ok(kv.len(Table::Items)? == 0
                && kv.len(Table::Log)? == 0
                && kv.len(Table::Modules)? == 0)
        })?;
        if !empty {
            return Err(Error::invalid(
                "only an empty store can join from a snapshot: this one holds data",
            ));
        }
        let mut magic = [0u8; 8];
        input
            .read_exact(&mut magic)
            .map_err(|e| bad(format!("no snapshot ({e})")))?;
        if &magic[..4] != MAGIC {
            return Err(bad("not a converge snapshot"));
        }
        let format = u32::from_le_bytes([magic[4], magic[5], magic[6], magic[7]]);
        if format != PROTOCOL_FORMAT {
            return Err(bad(format!(
                "the source speaks protocol format {format}; this binary speaks {PROTOCOL_FORMAT}"
            )));
        }
        let mut bytes = 8u64;
        let Part::Head(head) = next_part(input, &mut bytes)? else {
            return Err(bad("it does not start with its head"));
        };
        let total = head.items;
        self.write_tx(self.commit_sync(), |tx| {
            for (peer, cursor) in &head.cursors {
                if peer != self.region.as_str() {
                    tx.kv.put(
                        Table::Cursors,
                        peer.as_bytes(),
                        &super::codec::encode(cursor)?,
                    )?;
                }
            }
            let cursor = Cursor {
                incarnation: head.incarnation,
                lsn: head.lsn,
            };
            tx.kv.put(
                Table::Cursors,
                head.source.as_str().as_bytes(),
                &super::codec::encode(&cursor)?,
            )?;
            // Its pulls say so: a peer that knows an earlier store of this region takes it in.
            tx.kv.put(Table::Meta, super::META_JOINED, &[1])?;
            let now = tx.now_ms();
            tx.stability_mut().adopt(
                &head.source,
                head.store,
                now,
                &head.applied,
                &head.stable,
                &head.collected,
                head.members.clone(),
            );
            Ok(())
        })?;
        self.joined
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let mut done = 0u64;
        progress(done, total);
        let mut pending: Vec<Part> = Vec::with_capacity(JOIN_CHUNK);
        loop {
            let part = next_part(input, &mut bytes)?;
            let end = match &part {
                Part::End { items } => Some(*items),
                Part::Head(_) => return Err(bad("a second head")),
                _ => None,
            };
            if end.is_none() {
                pending.push(part);
            }
            if pending.len() >= JOIN_CHUNK || end.is_some() {
                let n = pending
                    .iter()
                    .filter(|p| matches!(p, Part::Item(_)))
                    .count() as u64;
                let parts = std::mem::take(&mut pending);
                self.write_tx(super::backend::Sync::Lazy, |tx| {
                    for p in parts {
                        match p {
                            Part::Module { hash, bytes } => {
                                super::resolvers::keep_module(tx.kv, &hash, &bytes)?;
                                // A host without a sandbox refuses; conflicts show `resolver missing`.
                                let _ = self.options.host.load(&bytes);
                            }
                            Part::Creation { key, value } => {
                                tx.kv.put(Table::Creations, &key, &value)?;
                            }
                            Part::Dropped { key, value } => {
                                tx.kv.put(Table::Dropped, &key, &value)?
                            }
                            Part::Item(item) => tx.bootstrap_item(item)?,
                            Part::Log(v) => tx.bootstrap_log(&v)?,
                            Part::Head(_) | Part::End { .. } => {}
                        }
                    }
                    Ok(())
                })?;
                done += n;
                progress(done, total.max(done));
            }
            if let Some(items) = end {
                if items != done {
                    return Err(bad(format!(
                        "the snapshot announced {items} items and held {done}"
                    )));
                }
                break;
            }
        }
        self.flush()?;
        Ok(SnapshotSummary { items: done, bytes })
    }
}

fn out_magic(out: &mut dyn Write) -> Result<()> {
    out.write_all(MAGIC)
        .and_then(|()| out.write_all(&PROTOCOL_FORMAT.to_le_bytes()))
        .map_err(|e| Error::Storage(format!("snapshot stream: {e}")))
}

/// Calls `f` on every pair of `table`, in key order, reading 256 at a time.
fn for_each(
    kv: &dyn KvRead,
    table: Table,
    mut f: impl FnMut(&[u8], &[u8]) -> Result<()>,
) -> Result<()> {
    let mut from: Vec<u8> = Vec::new();
    loop {
        let chunk = kv.scan(table, &from, None, 256)?;
        let Some((last, _)) = chunk.last() else {
            return Ok(());
        };
        from = last.clone();
        from.push(0);
        for (k, v) in &chunk {
            f(k, v)?;
        }
    }
}
