//! Group commit: concurrent writers share fsyncs, and every acknowledged write is durable.

use converge_core::{Durability, PartitionKey, Store, StoreOptions};
use serde_json::json;
use std::sync::Arc;

#[test]
fn concurrent_writers_share_commits_and_lose_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let opts = || StoreOptions::new().durability(Durability::GroupCommit);
    let store = Arc::new(Store::open(dir.path(), "west", opts()).expect("open"));
    store.create_container("db", "c", "/pk").expect("container");
    let before = store.stats().commits;
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let s = store.clone();
            std::thread::spawn(move || {
                for i in 0..40 {
                    s.upsert_item("db", "c", json!({"id": format!("t{t}-{i}"), "pk": "p"}))
                        .expect("write");
                }
                // Bad input in a group fails alone.
                assert!(s.create_item("db", "c", json!({"pk": "p"})).is_err());
                assert!(
                    s.create_item("db", "nope", json!({"id": "x", "pk": "p"}))
                        .is_err()
                );
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer");
    }
    let commits = store.stats().commits - before;
    println!("{commits} commits for {} successful writes", 8 * 40);
    assert!(
        commits < 8 * 40 / 2,
        "{commits} commits for {} writes: too little was grouped",
        8 * 40
    );
    drop(store);
    let store = Store::open(dir.path(), "west", opts()).expect("reopen");
    for t in 0..8 {
        for i in 0..40 {
            store
                .read_item("db", "c", &PartitionKey::from("p"), &format!("t{t}-{i}"))
                .expect("durable");
        }
    }
}
