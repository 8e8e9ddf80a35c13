//! Joining from a damaged snapshot: a valid snapshot of a small store (items, a delete, a
//! manual conflict, a dropped container), edited by the input (bytes flipped at chosen
//! offsets, then cut at a chosen length), is given to `Store::join_from` on an empty store. It
//! must answer an error or join; never panic, and a store it joins must answer reads.
#![no_main]

use converge_core::{ConflictPolicy, Cursor, PartitionKey, Store, StoreOptions};
use serde_json::json;
use std::sync::OnceLock;

fn valid() -> &'static [u8] {
    static SNAPSHOT: OnceLock<Vec<u8>> = OnceLock::new();
    SNAPSHOT.get_or_init(|| {
        let (a, b) = (
            Store::memory("a", StoreOptions::new()).expect("a"),
            Store::memory("b", StoreOptions::new()).expect("b"),
        );
        a.put_container("db", "c", "/pk", ConflictPolicy::Manual)
            .expect("container");
        a.put_container("db", "gone", "/pk", ConflictPolicy::default())
            .expect("container");
        for i in 0..4 {
            a.upsert_item("db", "c", json!({"id": format!("i{i}"), "pk": "p", "n": i}))
                .expect("write");
        }
        let batch = a.read_log(Cursor::START, usize::MAX).expect("log");
        b.apply_batch(&batch).expect("apply");
        a.upsert_item("db", "c", json!({"id": "i1", "pk": "p", "n": "a"}))
            .expect("a");
        b.upsert_item("db", "c", json!({"id": "i1", "pk": "p", "n": "b"}))
            .expect("b");
        a.delete_item("db", "c", &PartitionKey::from("p"), "i2", None)
            .expect("delete");
        a.drop_container("db", "gone").expect("drop");
        let batch = b.read_log(Cursor::START, usize::MAX).expect("log");
        a.apply_batch(&batch).expect("apply");
        let mut out = Vec::new();
        a.snapshot_to("joiner", 1, &mut out).expect("snapshot");
        out
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut snap = valid().to_vec();
    // Edits: three bytes each, an offset (two bytes) and a value to xor there; a trailing
    // byte cuts the snapshot at that share of its length.
    let mut chunks = data.chunks_exact(3);
    for e in &mut chunks {
        let at = usize::from(u16::from_le_bytes([e[0], e[1]])) % snap.len();
        snap[at] ^= e[2];
    }
    if let [cut] = chunks.remainder() {
        let keep = snap.len() * usize::from(*cut) / 255;
        snap.truncate(keep);
    }
    let joiner = Store::memory("joiner", StoreOptions::new()).expect("store");
    if joiner.join_from(&mut snap.as_slice(), &mut |_, _| {}).is_ok() {
        let _ = joiner.all_containers();
        let _ = joiner.list_items("db", "c", None, None, 100);
        let _ = joiner.conflicts("db", "c", None, 100);
        let _ = joiner.read_log(Cursor::START, 100);
    }
});
