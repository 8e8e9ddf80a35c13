//! Collection: stable tombstones, contexts and log entries are removed, and nothing deleted
//! ever comes back — not a late copy of an old version, not a region that was cut off.

mod common;

use common::{exchange, pull, region, set_time};
use converge_core::{ConflictPolicy, Cursor, Error, PartitionKey, Store, Version};
use serde_json::json;
use std::time::Duration;

const NO_GRACE: Duration = Duration::ZERO;

fn pk() -> PartitionKey {
    PartitionKey::from("p")
}

fn setup(names: &[&str], policy: ConflictPolicy) -> Vec<Store> {
    let stores: Vec<Store> = names.iter().map(|n| region(n)).collect();
    stores[0]
        .put_container("db", "c", "/pk", policy)
        .expect("container");
    exchange(&stores.iter().collect::<Vec<_>>());
    stores
}

fn log_len(s: &Store) -> usize {
    s.read_log_for(Some((s.region(), &s.applied())), Cursor::START, usize::MAX)
        .expect("read log")
        .versions
        .len()
}

fn exists(s: &Store, id: &str) -> bool {
    match s.read_item("db", "c", &pk(), id) {
        Ok(_) => true,
        Err(Error::NotFound { .. }) => false,
        Err(e) => panic!("read: {e}"),
    }
}

/// Every version `s` holds of item `id` (to deliver again later, as a late copy would be).
fn versions_of(s: &Store, id: &str) -> Vec<Version> {
    s.read_log_for(Some((s.region(), &s.applied())), Cursor::START, usize::MAX)
        .expect("read log")
        .versions
        .into_iter()
        .filter(|v| v.key.id == id)
        .collect()
}

#[test]
fn a_stable_tombstone_is_purged_and_a_late_copy_of_the_item_stays_deleted() {
    set_time(0);
    let s = setup(&["west", "east", "north"], ConflictPolicy::default());
    let all: Vec<&Store> = s.iter().collect();
    for i in 0..5 {
        s[i % 3]
            .upsert_item("db", "c", json!({"id": format!("i{i}"), "pk": "p", "n": i}))
            .expect("write");
    }
    exchange(&all);
    let old = versions_of(&s[0], "i1");
    assert!(!old.is_empty());
    s[1].delete_item("db", "c", &pk(), "i1", None)
        .expect("delete");
    exchange(&all);
    // Stability travels with the batches: a second round lets every region confirm it.
    exchange(&all);
    set_time(10);
    let before: Vec<usize> = s.iter().map(log_len).collect();
    for st in &s {
        let r = st.collect(NO_GRACE).expect("collect");
        assert_eq!(r.tombstones, 1, "{}: {r:?}", st.region());
        assert!(r.log_entries > 0, "{}: {r:?}", st.region());
        let cid = st.container("db", "c").expect("def").creation_id;
        let key = converge_core::ItemKey {
            partition_key: pk(),
            id: "i1".into(),
        };
        assert_eq!(st.item_state(cid, &key).expect("state"), None);
    }
    for (st, b) in s.iter().zip(before) {
        assert!(log_len(st) < b, "{}: the log shrank", st.region());
    }
    // A late copy of the item's old versions is a duplicate: the delete still wins.
    for st in &s {
        st.apply_versions(&old).expect("late delivery");
        assert!(
            !exists(st, "i1"),
            "{}: a deleted item came back",
            st.region()
        );
        assert!(exists(st, "i2"));
    }
}

#[test]
fn a_region_cut_off_longer_than_the_grace_holds_collection_back_and_its_old_version_loses() {
    // The zombie schedule: a region partitioned for longer than the grace comes back with an
    // old version of an item the others deleted; the delete must still win, everywhere.
    set_time(0);
    let s = setup(&["west", "east", "zombie"], ConflictPolicy::default());
    let all: Vec<&Store> = s.iter().collect();
    s[0].upsert_item("db", "c", json!({"id": "x", "pk": "p", "v": 1}))
        .expect("write");
    exchange(&all);
    // The zombie is cut off; the others delete x and wait far longer than the grace.
    s[0].delete_item("db", "c", &pk(), "x", None)
        .expect("delete");
    for _ in 0..3 {
        exchange(&[&s[0], &s[1]]);
    }
    set_time(3_600_000);
    let grace = Duration::from_secs(60);
    for st in &s[..2] {
        let r = st.collect(grace).expect("collect");
        assert_eq!(
            r.tombstones,
            0,
            "{}: the zombie has not seen the delete",
            st.region()
        );
        let members = st.members().expect("members");
        let z = members
            .iter()
            .find(|m| m.region == "zombie")
            .expect("the zombie is a member");
        assert!(z.holds_back, "{}: {z:?}", st.region());
    }
    // The zombie writes nothing new, but still shows its old version, and comes back.
    assert!(exists(&s[2], "x"));
    let zombie_old = versions_of(&s[2], "x");
    exchange(&all);
    exchange(&all);
    for st in &s {
        assert!(!exists(st, "x"), "{}: the delete won", st.region());
    }
    for st in &s {
        let r = st.collect(grace).expect("collect");
        assert_eq!(r.tombstones, 1, "{}: {r:?}", st.region());
    }
    // Its old version arriving once more (a late batch) is a duplicate.
    for st in &s {
        st.apply_versions(&zombie_old).expect("late");
        assert!(
            !exists(st, "x"),
            "{}: a deleted item came back",
            st.region()
        );
    }
}

#[test]
fn a_write_after_collection_covers_what_was_collected_in_regions_that_kept_it() {
    // Under a manual policy a concurrent sibling would be a conflict record: a write made in a
    // region that purged the tombstone must still cover it where it was not purged yet.
    set_time(0);
    let s = setup(&["west", "east"], ConflictPolicy::Manual);
    let all: Vec<&Store> = s.iter().collect();
    s[0].upsert_item("db", "c", json!({"id": "x", "pk": "p"}))
        .expect("write");
    exchange(&all);
    s[0].delete_item("db", "c", &pk(), "x", None)
        .expect("delete");
    exchange(&all);
    exchange(&all);
    set_time(10);
    assert_eq!(s[0].collect(NO_GRACE).expect("collect").tombstones, 1);
    // West writes x again; east still holds the tombstone.
    s[0].upsert_item("db", "c", json!({"id": "x", "pk": "p", "again": true}))
        .expect("write again");
    exchange(&all);
    for st in &s {
        let item = st.read_item("db", "c", &pk(), "x").expect("x shows");
        assert_eq!(item.body["again"], json!(true));
        let feed = st.conflicts("db", "c", None, 100).expect("feed");
        assert!(feed.items.is_empty(), "{}: {:?}", st.region(), feed.items);
    }
}

#[test]
fn a_new_region_cannot_pull_a_collected_log_from_its_start() {
    set_time(0);
    let s = setup(&["west", "east"], ConflictPolicy::default());
    let all: Vec<&Store> = s.iter().collect();
    s[0].upsert_item("db", "c", json!({"id": "x", "pk": "p"}))
        .expect("write");
    s[0].upsert_item("db", "c", json!({"id": "x", "pk": "p", "v": 2}))
        .expect("update");
    exchange(&all);
    exchange(&all);
    set_time(10);
    assert!(s[0].collect(NO_GRACE).expect("collect").log_entries > 0);
    let fresh = region("south");
    let refused = s[0].read_log_for(Some((fresh.region(), &fresh.applied())), Cursor::START, 100);
    match refused {
        Err(Error::SnapshotNeeded(m)) => assert!(m.contains("--join"), "{m}"),
        other => panic!("expected SnapshotNeeded, got {other:?}"),
    }
    // East has applied everything west collected: it may read west's log from the start.
    pull(&s[1], &s[0]);
}
