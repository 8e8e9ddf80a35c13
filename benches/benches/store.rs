//! Store benchmarks, each next to a baseline measured in the same run:
//! - `apply_lww_memory`: applying remote LWW versions of 1 KiB items to a memory store, against
//!   inserting the same version bytes into a plain `BTreeMap`;
//! - `durable_write`: one local write committed with fsync, against a bare redb commit of the
//!   same bytes;
//! - `durable_batch`: 1,000 remote versions applied in one durable transaction, against bare
//!   redb inserting the same bytes in one transaction.
//!
//! `cargo run -p converge-benches --bin bench-report` prints the ratios afterwards.

use converge_benches::{BARE, CONTAINER, DB, bare_redb, item, memory_store, remote_versions};
use converge_core::{Store, StoreOptions};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::collections::BTreeMap;
use std::hint::black_box;

const APPLY_N: usize = 10_000;

fn apply_lww_memory(c: &mut Criterion) {
    let versions = remote_versions("east", APPLY_N, APPLY_N / 4, 1024);
    let encoded: Vec<(Vec<u8>, Vec<u8>)> = versions
        .iter()
        .enumerate()
        .map(|(i, v)| {
            (
                i.to_be_bytes().to_vec(),
                serde_json::to_vec(&v.body).expect("bytes"),
            )
        })
        .collect();
    let mut g = c.benchmark_group("apply_lww_memory");
    g.throughput(Throughput::Elements(versions.len() as u64));
    g.sample_size(20);
    g.bench_function("baseline_btreemap_insert", |b| {
        b.iter_batched(
            BTreeMap::new,
            |mut m| {
                for (k, v) in &encoded {
                    m.insert(k.clone(), v.clone());
                }
                black_box(m)
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("converge_apply", |b| {
        b.iter_batched(
            || memory_store("west"),
            |s| {
                s.apply_versions(&versions).expect("apply");
                black_box(s)
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn durable_write(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(dir.path().join("west"), "west", StoreOptions::new()).expect("store");
    store
        .put_container(DB, CONTAINER, "/pk", Default::default())
        .expect("container");
    let bare = bare_redb(&dir.path().join("bare.redb"));
    let body = serde_json::to_vec(&item(1, 1024)).expect("bytes");
    let mut g = c.benchmark_group("durable_write");
    g.sample_size(50);
    let mut n = 0u64;
    g.bench_function("baseline_redb_commit", |b| {
        b.iter(|| {
            n += 1;
            let tx = bare.begin_write().expect("tx");
            tx.open_table(BARE)
                .expect("table")
                .insert(&n.to_be_bytes()[..], &body[..])
                .expect("insert");
            tx.commit().expect("commit");
        })
    });
    let mut i = 0;
    g.bench_function("converge_upsert", |b| {
        b.iter(|| {
            i += 1;
            store
                .upsert_item(DB, CONTAINER, item(i, 1024))
                .expect("write");
        })
    });
    g.finish();
}

fn durable_batch(c: &mut Criterion) {
    let versions = remote_versions("east", 1000, 1000, 1024);
    let (definition, batch) = versions.split_at(1);
    let encoded: Vec<(Vec<u8>, Vec<u8>)> = batch
        .iter()
        .map(|v| {
            let key = format!("{}{}", v.key.partition_key.as_json(), v.key.id).into_bytes();
            (key, v.body.clone().unwrap_or_default().into_bytes())
        })
        .collect();
    let mut g = c.benchmark_group("durable_batch");
    g.throughput(Throughput::Elements(batch.len() as u64));
    g.sample_size(20);
    // Each iteration starts from a fresh database, so every version is new to it.
    g.bench_function("baseline_redb_1000_inserts", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().expect("dir");
                let db = bare_redb(&dir.path().join("bare.redb"));
                (dir, db)
            },
            |(dir, db)| {
                let tx = db.begin_write().expect("tx");
                {
                    let mut t = tx.open_table(BARE).expect("table");
                    for (key, v) in &encoded {
                        t.insert(&key[..], &v[..]).expect("insert");
                    }
                }
                tx.commit().expect("commit");
                (dir, db)
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("converge_apply_1000", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().expect("dir");
                let store = Store::open(dir.path(), "west", StoreOptions::new()).expect("store");
                store.apply_versions(definition).expect("definition");
                (dir, store)
            },
            |(dir, store)| {
                store.apply_versions(batch).expect("apply");
                (dir, store)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, apply_lww_memory, durable_write, durable_batch);
criterion_main!(benches);
