//! Replication: cursors across restarts, relaying, corrupt and impossible batches, clock lead.

mod common;

use common::{everything, exchange, pull, region};
use converge_core::{
    Batch, Cursor, Error, Hlc, MAX_CLOCK_LEAD_MS, PartitionKey, Store, StoreOptions,
};
use serde_json::json;

#[test]
fn a_chain_relays_writes_and_converges() {
    let (a, b, c) = (region("a"), region("b"), region("c"));
    for s in [&a, &b, &c] {
        s.create_container("db", "c", "/pk").expect("container");
    }
    a.create_item("db", "c", json!({"id": "from-a", "pk": "p"}))
        .expect("a");
    c.create_item("db", "c", json!({"id": "from-c", "pk": "p"}))
        .expect("c");
    // a <- b <- c and c <- b <- a: b relays.
    for _ in 0..2 {
        pull(&b, &a);
        pull(&b, &c);
        pull(&a, &b);
        pull(&c, &b);
    }
    let ids = |s: &Store| {
        s.list_items("db", "c", None, None, 10)
            .expect("list")
            .items
            .into_iter()
            .map(|i| i.id().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&a), ["from-a", "from-c"]);
    assert_eq!(ids(&a), ids(&c));
}

#[test]
fn cursors_survive_restarts_of_either_side() {
    let dir_a = tempfile::tempdir().expect("dir");
    let dir_b = tempfile::tempdir().expect("dir");
    let a = Store::open(dir_a.path(), "a", StoreOptions::new()).expect("a");
    let b = Store::open(dir_b.path(), "b", StoreOptions::new()).expect("b");
    a.create_container("db", "c", "/pk").expect("container");
    for i in 0..5 {
        a.create_item("db", "c", json!({"id": format!("i{i}"), "pk": "p"}))
            .expect("write");
    }
    pull(&b, &a);
    let cursor = b.cursor("a").expect("cursor");
    assert_eq!(cursor.incarnation, a.incarnation());
    drop(a);
    drop(b);
    let a = Store::open(dir_a.path(), "a", StoreOptions::new()).expect("a again");
    let b = Store::open(dir_b.path(), "b", StoreOptions::new()).expect("b again");
    assert_eq!(
        b.cursor("a").expect("cursor"),
        cursor,
        "the cursor is durable"
    );
    a.create_item("db", "c", json!({"id": "after", "pk": "p"}))
        .expect("write");
    let batch = a.read_log(cursor, 100).expect("read");
    assert_eq!(
        batch.versions.len(),
        1,
        "resumes where it left off, no full re-pull"
    );
    b.apply_batch(&batch).expect("apply");
    assert_eq!(
        b.list_items("db", "c", None, None, 100)
            .expect("list")
            .items
            .len(),
        6
    );
}

#[test]
fn a_corrupt_or_impossible_batch_is_refused_whole() {
    let (a, b) = (region("a"), region("b"));
    a.create_container("db", "c", "/pk").expect("container");
    a.create_item("db", "c", json!({"id": "x", "pk": "p"}))
        .expect("write");
    let mut bytes = everything(&a).encode();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    assert!(matches!(Batch::decode(&bytes), Err(Error::CorruptBatch(_))));
    assert!(matches!(
        Batch::decode(&bytes[..10]),
        Err(Error::CorruptBatch(_))
    ));

    // A version claiming a counter of b's current incarnation that b never issued.
    b.create_container("db", "c", "/pk").expect("container");
    let mut batch = everything(&a);
    let mut forged = batch.versions[1].clone();
    // (Counters start above wall-clock microseconds: claim past b's.)
    let issued = b.applied().get(b.region()).copied().unwrap_or(0);
    forged
        .context
        .insert((b.region().clone(), b.incarnation()), issued + 1_000);
    forged.dot.counter += 100;
    batch.versions.push(forged);
    assert!(
        matches!(b.apply_batch(&batch), Err(Error::CorruptBatch(m)) if m.contains("never issued") || m.contains("only issued"))
    );
    // Nothing of it was applied, and the cursor did not move.
    assert!(
        b.read_item("db", "c", &PartitionKey::from("p"), "x")
            .is_err()
    );
    assert_eq!(b.cursor("a").expect("cursor"), Cursor::START);
    // The honest part applies fine afterwards.
    batch.versions.pop();
    b.apply_batch(&batch).expect("apply");
    assert!(
        b.read_item("db", "c", &PartitionKey::from("p"), "x")
            .is_ok()
    );
}

#[test]
fn remote_clocks_far_ahead_are_not_followed() {
    let (a, b) = (region("a"), region("b"));
    a.create_container("db", "c", "/pk").expect("container");
    a.create_item("db", "c", json!({"id": "x", "pk": "p"}))
        .expect("write");
    let mut batch = everything(&a);
    for v in &mut batch.versions {
        v.hlc = Hlc::new(v.hlc.physical_ms + MAX_CLOCK_LEAD_MS + 60_000, 0);
    }
    b.apply_batch(&batch).expect("kept unchanged");
    assert_eq!(b.stats().clock_skew_ignored, 2);
    assert!(
        b.read_item("db", "c", &PartitionKey::from("p"), "x")
            .is_ok()
    );
    exchange(&[&a, &b]);
}

/// Batches are capped in bytes as well as in versions: 40 items of 1 MiB come in batches of at
/// most `MAX_BATCH_BYTES` each, all of them arrive, and `more` says when to read on.
#[test]
fn batches_of_large_items_are_capped_in_bytes() {
    let (a, b) = (region("a"), region("b"));
    a.create_container("db", "c", "/pk").expect("container");
    let filler = "x".repeat(1 << 20);
    for i in 0..40 {
        a.create_item(
            "db",
            "c",
            json!({"id": format!("i{i}"), "pk": "p", "f": filler}),
        )
        .expect("write");
    }
    let mut cursor = Cursor::START;
    let mut batches = 0;
    loop {
        let batch = a.read_log(cursor, 500).expect("read");
        let bytes: usize = batch
            .versions
            .iter()
            .map(|v| v.body.as_ref().map_or(0, String::len))
            .sum();
        assert!(
            bytes <= converge_core::MAX_BATCH_BYTES,
            "a batch of {bytes} body bytes"
        );
        b.apply_batch(&batch).expect("apply");
        batches += 1;
        cursor = batch.next;
        if !batch.more {
            break;
        }
        assert!(batches < 100, "the log never ends");
    }
    assert!(batches >= 3, "40 MiB came in {batches} batches");
    let listed = b.list_items("db", "c", None, None, 100).expect("list");
    assert_eq!(listed.items.len(), 40);
}
