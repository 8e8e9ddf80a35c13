//! Bounded storage, measured: three durable regions take updates and deletes over a fixed set
//! of items, replicating as they go; then the store's size on disk and its counts of log
//! entries, tombstones and context entries, before and after collection (and compaction,
//! which returns freed pages to the file system). Then a fourth region joins from a snapshot of
//! one of them, timed.
//!
//! `cargo run --release -p converge-benches --bin collection-bench` runs the workload
//! (1,000,000 updates and 100,000 deletes over 10,000 items of 1 KiB); `--scale 10` divides the
//! counts by ten. `--join-items` sets the snapshot's size (default 1,000,000 items of 1 KiB).

use anyhow::Result;
use clap::Parser;
use converge_benches::{CONTAINER, DB, item};
use converge_core::{
    ConflictPolicy, Cursor, Durability, PartitionKey, StorageCounts, Store, StoreOptions, WriteOp,
};
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Divide every count by this.
    #[arg(long, default_value_t = 1)]
    scale: usize,
    /// Distinct items.
    #[arg(long, default_value_t = 10_000)]
    items: usize,
    /// Updates over them.
    #[arg(long, default_value_t = 1_000_000)]
    updates: usize,
    /// Deletes among the updates.
    #[arg(long, default_value_t = 100_000)]
    deletes: usize,
    /// Item size, bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Items of the store a region joins from a snapshot of.
    #[arg(long, default_value_t = 1_000_000)]
    join_items: usize,
}

const REGIONS: [&str; 3] = ["west", "east", "north"];

fn open(dir: &Path, region: &str) -> Result<Store> {
    Ok(Store::open(
        dir.join(region),
        region,
        StoreOptions::new().durability(Durability::Deferred),
    )?)
}

fn pull(dst: &Store, src: &Store) -> Result<()> {
    src.flush()?;
    loop {
        let c = dst.cursor(src.region().as_str())?;
        let b = src.read_log_for(Some(&dst.puller()), c, 1000)?;
        dst.apply_batch(&b)?;
        if !b.more {
            return Ok(());
        }
    }
}

fn exchange(s: &[Store]) -> Result<()> {
    for a in s {
        for b in s {
            if a.region() != b.region() {
                pull(a, b)?;
            }
        }
    }
    Ok(())
}

fn file_mib(dir: &Path, region: &str) -> f64 {
    std::fs::metadata(dir.join(region).join(converge_core::STORE_FILE))
        .map_or(0.0, |m| m.len() as f64 / (1 << 20) as f64)
}

fn report(what: &str, dir: &Path, s: &[Store]) -> Result<Vec<StorageCounts>> {
    println!("{what}:");
    println!(
        "| region | file MiB | live MiB | item records | tombstones | context entries | log entries |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let mut out = Vec::new();
    for st in s {
        let c = st.storage_counts()?;
        println!(
            "| {} | {:.1} | {:.1} | {} | {} | {} | {} |",
            st.region(),
            file_mib(dir, st.region().as_str()),
            c.live_bytes as f64 / (1 << 20) as f64,
            c.items,
            c.tombstones,
            c.context_entries,
            c.log_entries
        );
        out.push(c);
    }
    Ok(out)
}

fn main() -> Result<()> {
    let a = Args::parse();
    let (items, updates, deletes) = (
        (a.items / a.scale).max(10),
        a.updates / a.scale,
        a.deletes / a.scale,
    );
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let mut s: Vec<Store> = REGIONS
        .iter()
        .map(|r| open(dir, r))
        .collect::<Result<_>>()?;
    for st in &s {
        for other in REGIONS {
            if other != st.region().as_str() {
                st.add_member(other)?;
            }
        }
    }
    s[0].put_container(DB, CONTAINER, "/pk", ConflictPolicy::default())?;
    exchange(&s)?;
    println!(
        "workload: {updates} updates and {deletes} deletes over {items} items of {} bytes, three \
         regions (round robin, replicating every 10,000 writes)",
        a.size
    );
    let started = Instant::now();
    let every_delete = (updates / deletes.max(1)).max(1);
    let batch = 1000;
    let mut n = 0usize;
    let mut deleted = 0usize;
    while n < updates {
        let region = (n / batch) % 3;
        let ops: Vec<WriteOp> = (n..(n + batch).min(updates))
            .map(|i| {
                let id = (i * 7919) % items;
                // Deletes fall on any item (an item deleted then written again is a new one).
                let roll = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
                if roll.is_multiple_of(every_delete as u64) {
                    let body = item(id, a.size);
                    WriteOp::Delete {
                        partition_key: PartitionKey::from(body["pk"].as_str().unwrap_or("")),
                        id: body["id"].as_str().unwrap_or("").to_owned(),
                        if_match: None,
                    }
                } else {
                    WriteOp::Upsert(item(id, a.size))
                }
            })
            .collect();
        // A delete of an item already deleted answers 404: that is part of the workload.
        let results = s[region].write_many(DB, CONTAINER, ops)?;
        deleted += results
            .iter()
            .filter(|r| matches!(r, Ok(converge_core::WriteOutcome::Deleted)))
            .count();
        n += batch;
        if n.is_multiple_of(10_000) {
            exchange(&s)?;
        }
    }
    for _ in 0..3 {
        exchange(&s)?;
    }
    println!(
        "written and replicated in {:.1} s ({deleted} deletes of live items)",
        started.elapsed().as_secs_f64()
    );
    let before = report("before collection", dir, &s)?;
    let started = Instant::now();
    // Stability needs round trips: what a region applied reaches the others with their next
    // pulls, and their confirmation with the pulls after.
    for _ in 0..3 {
        exchange(&s)?;
        for st in &s {
            st.collect(Duration::ZERO)?;
        }
    }
    println!("collected in {:.1} s", started.elapsed().as_secs_f64());
    let after = report("after collection", dir, &s)?;
    for st in &mut s {
        st.compact()?;
    }
    report("after compaction", dir, &s)?;
    let live = after[0].live_bytes as f64 / (1 << 20) as f64;
    let file = file_mib(dir, "west");
    println!(
        "west: {file:.1} MiB on disk for {live:.1} MiB of live data: {:.2}x (target: within 2x); \
         log entries {} -> {}, tombstones {} -> {}, context entries {} -> {}",
        file / live.max(1e-9),
        before[0].log_entries,
        after[0].log_entries,
        before[0].tombstones,
        after[0].tombstones,
        before[0].context_entries,
        after[0].context_entries
    );
    drop(s);

    // Joining from a snapshot.
    let join_items = a.join_items / a.scale;
    let src = open(dir, "big")?;
    src.put_container(DB, CONTAINER, "/pk", ConflictPolicy::default())?;
    let ops: Vec<WriteOp> = (0..join_items)
        .map(|i| WriteOp::Upsert(item(i, a.size)))
        .collect();
    for chunk in ops.chunks(10_000) {
        src.write_many(DB, CONTAINER, chunk.to_vec())?;
    }
    src.flush()?;
    let joiner = Store::open(
        dir.join("joiner"),
        "joiner",
        StoreOptions::new().durability(Durability::Deferred),
    )?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(64);
    let started = Instant::now();
    let summary = std::thread::scope(|scope| -> Result<converge_core::SnapshotSummary> {
        let producer = scope.spawn(|| {
            let mut w = ChannelWrite {
                tx,
                buf: Vec::new(),
            };
            let r = src.snapshot_to("joiner", joiner.store_id(), &mut w);
            w.send();
            r
        });
        let mut r = ChannelRead {
            rx,
            buf: Vec::new(),
            at: 0,
        };
        let joined = joiner.join_from(&mut r, &mut |_, _| {})?;
        producer
            .join()
            .map_err(|_| anyhow::anyhow!("snapshot thread"))??;
        Ok(joined)
    })?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "join: {} items ({:.0} MiB) from a snapshot in {secs:.1} s: {:.0} items/s (target: at least 50,000 items/s)",
        summary.items,
        summary.bytes as f64 / (1 << 20) as f64,
        summary.items as f64 / secs
    );
    let check = joiner.read_log_for(Some(&joiner.puller()), Cursor::START, 1)?;
    assert!(!check.versions.is_empty());
    Ok(())
}

/// Snapshot bytes through a channel, as the server streams them.
struct ChannelWrite {
    tx: std::sync::mpsc::SyncSender<Vec<u8>>,
    buf: Vec<u8>,
}

impl ChannelWrite {
    fn send(&mut self) {
        if !self.buf.is_empty() {
            let _ = self.tx.send(std::mem::take(&mut self.buf));
        }
    }
}

impl std::io::Write for ChannelWrite {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 256 << 10 {
            self.send();
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.send();
        Ok(())
    }
}

struct ChannelRead {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    at: usize,
}

impl std::io::Read for ChannelRead {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.buf.len() {
            match self.rx.recv() {
                Ok(b) => {
                    self.buf = b;
                    self.at = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
