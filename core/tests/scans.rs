//! Scanning a container's visible items (what queries read) beside writes.

use converge_core::{ConflictPolicy, Store, StoreOptions, WriteOp};
use serde_json::json;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Found by review with two real processes: a query held the actor table's read lock for its
/// whole scan, so the first version from a peer's new incarnation (which registers a writer)
/// waited for the scan, and every write and read behind it. A scan now holds nothing a writer
/// waits for, on either backend.
#[test]
fn a_long_scan_holds_up_neither_a_new_peer_nor_local_writes() {
    let dir = tempfile::tempdir().expect("dir");
    for durable in [false, true] {
        let west = Arc::new(if durable {
            Store::open(dir.path().join("west"), "west", StoreOptions::new()).expect("west")
        } else {
            Store::memory("west", StoreOptions::new()).expect("west")
        });
        west.put_container("db", "c", "/pk", ConflictPolicy::default())
            .expect("container");
        let ops = (0..2000)
            .map(|i| WriteOp::Upsert(json!({"id": format!("i{i}"), "pk": "p"})))
            .collect();
        for r in west.write_many("db", "c", ops).expect("items") {
            r.expect("item");
        }
        // A peer that has never written here: its first version registers a new writer. Its
        // log is short (the same definition, one item), so applying it is quick.
        let east = Store::memory("east", StoreOptions::new()).expect("east");
        east.put_container("db", "c", "/pk", ConflictPolicy::default())
            .expect("east's container");
        east.upsert_item("db", "c", json!({"id": "from-east", "pk": "p"}))
            .expect("east writes");
        let from_east = east
            .read_log(west.cursor("east").expect("cursor"), usize::MAX)
            .expect("east's log");

        let scanning = Arc::new(AtomicBool::new(true));
        let seen = Arc::new(AtomicUsize::new(0));
        let scan = {
            let (west, scanning, seen) = (west.clone(), scanning.clone(), seen.clone());
            std::thread::spawn(move || {
                west.scan_visible("db", "c", None, None, |_, _| {
                    seen.fetch_add(1, Ordering::Relaxed);
                    // A slow query: 2,000 items at 4 ms each, 8 s; the writes below take
                    // milliseconds unless they wait for it.
                    std::thread::sleep(std::time::Duration::from_millis(4));
                    ControlFlow::Continue(())
                })
                .expect("scan");
                scanning.store(false, Ordering::SeqCst);
            })
        };
        while seen.load(Ordering::Relaxed) < 10 {
            std::thread::yield_now();
        }
        west.apply_batch(&from_east)
            .expect("the new peer's version applies");
        west.upsert_item("db", "c", json!({"id": "local", "pk": "p"}))
            .expect("a local write");
        assert!(
            scanning.load(Ordering::SeqCst),
            "durable={durable}: the write waited for the whole scan"
        );
        scan.join().expect("scan thread");
    }
}
