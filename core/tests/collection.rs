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
    s.read_log_for(Some(&s.puller()), Cursor::START, usize::MAX)
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
    s.read_log_for(Some(&s.puller()), Cursor::START, usize::MAX)
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
    let refused = s[0].read_log_for(Some(&fresh.puller()), Cursor::START, 100);
    match refused {
        Err(Error::SnapshotNeeded(m)) => assert!(m.contains("--join"), "{m}"),
        other => panic!("expected SnapshotNeeded, got {other:?}"),
    }
    // East has applied everything west collected: it may read west's log from the start.
    pull(&s[1], &s[0]);
}

#[test]
fn a_tombstone_waits_until_the_versions_it_covers_are_stable_too() {
    // X receives Y's write out of band (gossip: no stability claim comes with it) and deletes
    // it; M learns both from X only. Every member then has the tombstone, but M has no claim
    // on Y's versions: if X purged the item now, a late copy of Y's write would find no
    // record and no stable point covering it, and come back.
    set_time(0);
    let s = setup(&["x", "y", "m"], ConflictPolicy::default());
    let (x, y, m) = (&s[0], &s[1], &s[2]);
    y.upsert_item("db", "c", json!({"id": "j", "pk": "p"}))
        .expect("y writes");
    let v0 = versions_of(y, "j");
    x.apply_versions(&v0).expect("gossip");
    x.delete_item("db", "c", &pk(), "j", None)
        .expect("x deletes");
    // M learns the write and the delete from X, whose claim on Y's versions predates the
    // write; Y learns the delete; X hears from both that they have the delete.
    pull(m, x);
    pull(y, x);
    pull(x, y);
    pull(x, m);
    set_time(10);
    assert_eq!(
        x.collect(NO_GRACE).expect("collect").tombstones,
        0,
        "the write the tombstone covers is not stable yet"
    );
    x.apply_versions(&v0).expect("late copy");
    assert!(!exists(x, "j"), "a deleted item came back");
    // Once M has Y's versions too, the tombstone goes, and a late copy is still a duplicate.
    exchange(&s.iter().collect::<Vec<_>>());
    exchange(&s.iter().collect::<Vec<_>>());
    set_time(20);
    for st in &s {
        assert_eq!(
            st.collect(NO_GRACE).expect("collect").tombstones,
            1,
            "{}",
            st.region()
        );
        st.apply_versions(&v0).expect("late copy");
        assert!(
            !exists(st, "j"),
            "{}: a deleted item came back",
            st.region()
        );
    }
}

#[test]
fn a_members_report_counts_only_once_its_own_writes_have_arrived() {
    // M writes j concurrently with X's delete of it, then applies the delete. X hears, relayed
    // by Y, that M has the delete before M's concurrent write reaches X. Purging j at X then
    // would let M's write show alone at X while the others hold both siblings.
    set_time(0);
    let s = setup(&["x", "y", "m"], ConflictPolicy::default());
    let (x, y, m) = (&s[0], &s[1], &s[2]);
    x.upsert_item("db", "c", json!({"id": "j", "pk": "p"}))
        .expect("x writes");
    exchange(&s.iter().collect::<Vec<_>>());
    set_time(1);
    m.upsert_item("db", "c", json!({"id": "j", "pk": "p", "by": "m"}))
        .expect("m writes concurrently");
    set_time(2);
    x.delete_item("db", "c", &pk(), "j", None)
        .expect("x deletes");
    pull(m, x);
    pull(y, x);
    pull(x, y);
    // Y writes, then takes M's write and M's report; X reads one entry of Y's log: the report
    // of M comes with it, M's write does not.
    y.upsert_item("db", "c", json!({"id": "k", "pk": "p"}))
        .expect("y writes");
    pull(y, m);
    let partial = y
        .read_log_for(Some(&x.puller()), x.cursor("y").expect("cursor"), 1)
        .expect("read");
    assert!(partial.more);
    x.apply_batch(&partial).expect("apply");
    set_time(10);
    assert_eq!(
        x.collect(NO_GRACE).expect("collect").tombstones,
        0,
        "M's report waits for M's own writes"
    );
    exchange(&s.iter().collect::<Vec<_>>());
    for st in &s {
        assert_eq!(
            exists(st, "j"),
            exists(y, "j"),
            "{} differs from y",
            st.region()
        );
    }
}

#[test]
fn a_retired_region_stops_holding_collection_back_and_its_later_versions_are_refused_everywhere() {
    set_time(0);
    let s = setup(&["west", "east", "gone"], ConflictPolicy::default());
    let all: Vec<&Store> = s.iter().collect();
    s[2].upsert_item("db", "c", json!({"id": "before", "pk": "p"}))
        .expect("gone writes");
    exchange(&all);
    // "gone" is cut off for good; west deletes an item; nothing can be collected.
    s[0].upsert_item("db", "c", json!({"id": "x", "pk": "p"}))
        .expect("write");
    exchange(&[&s[0], &s[1]]);
    s[0].delete_item("db", "c", &pk(), "x", None)
        .expect("delete");
    exchange(&[&s[0], &s[1]]);
    exchange(&[&s[0], &s[1]]);
    set_time(10);
    assert_eq!(s[0].collect(NO_GRACE).expect("collect").tombstones, 0);
    assert!(matches!(
        s[0].retire_region("west"),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        s[0].retire_region("nowhere"),
        Err(Error::InvalidInput(_))
    ));
    // East retires it; the retirement reaches west as a replicated item.
    let cut = s[1].retire_region("gone").expect("retire");
    assert_eq!(
        s[1].retire_region("gone").expect("again"),
        cut,
        "idempotent"
    );
    exchange(&[&s[0], &s[1]]);
    exchange(&[&s[0], &s[1]]);
    set_time(20);
    for st in &s[..2] {
        let m = st.members().expect("members");
        let gone = m.iter().find(|m| m.region == "gone").expect("listed");
        assert!(
            gone.retired && !gone.holds_back,
            "{}: {gone:?}",
            st.region()
        );
        assert_eq!(
            st.collect(NO_GRACE).expect("collect").tombstones,
            1,
            "{}",
            st.region()
        );
    }
    // What "gone" wrote before its cut stays; what it writes after is refused, everywhere.
    s[2].upsert_item("db", "c", json!({"id": "after", "pk": "p"}))
        .expect("gone writes again");
    let late = versions_of(&s[2], "after");
    for st in &s[..2] {
        st.apply_versions(&late).expect("refused, not an error");
        assert!(exists(st, "before"), "{}", st.region());
        assert!(
            !exists(st, "after"),
            "{}: a retired region's write was taken",
            st.region()
        );
        assert_eq!(st.stats().refused_retired, 1, "{}", st.region());
    }
}

fn listing(s: &Store) -> Vec<(String, String)> {
    s.list_items("db", "c", None, None, 1000)
        .expect("list")
        .items
        .into_iter()
        .map(|i| (i.id().to_owned(), i.etag.clone()))
        .collect()
}

fn join(new: &Store, from: &Store) -> converge_core::SnapshotSummary {
    let mut buf = Vec::new();
    from.snapshot_to(new.region().as_str(), new.store_id(), &mut buf)
        .expect("snapshot");
    let mut seen = Vec::new();
    let summary = new
        .join_from(&mut buf.as_slice(), &mut |done, total| {
            seen.push((done, total))
        })
        .expect("join");
    assert_eq!(
        seen.last().map(|p| p.0),
        Some(summary.items),
        "progress ends at the count"
    );
    summary
}

#[test]
fn a_region_whose_data_was_lost_rejoins_from_a_snapshot_and_misses_nothing() {
    // The rejoin schedule: east's directory is lost after its peers collected; east started
    // on an empty directory is refused their logs, and bootstraps from a snapshot instead.
    set_time(0);
    let s = setup(&["west", "east", "north"], ConflictPolicy::Manual);
    for i in 0..20 {
        s[i % 3]
            .upsert_item("db", "c", json!({"id": format!("i{i}"), "pk": "p", "v": 1}))
            .expect("write");
    }
    exchange(&s.iter().collect::<Vec<_>>());
    for i in 0..10 {
        s[0].delete_item("db", "c", &pk(), &format!("i{i}"), None)
            .expect("delete");
    }
    // A manual conflict stays open through all of it.
    s[1].upsert_item("db", "c", json!({"id": "i15", "pk": "p", "v": "east"}))
        .expect("east");
    s[2].upsert_item("db", "c", json!({"id": "i15", "pk": "p", "v": "north"}))
        .expect("north");
    exchange(&s.iter().collect::<Vec<_>>());
    exchange(&s.iter().collect::<Vec<_>>());
    set_time(10);
    for st in &s {
        assert_eq!(
            st.collect(NO_GRACE).expect("collect").tombstones,
            10,
            "{}",
            st.region()
        );
    }
    let old_deleted = versions_of(&s[1], "i3");
    let west_list = listing(&s[0]);
    assert_eq!(west_list.len(), 10);
    // East loses its data and starts empty: its peers refuse to serve it their logs.
    let fresh = region("east");
    let refused = s[0].read_log_for(Some(&fresh.puller()), Cursor::START, 10);
    assert!(
        matches!(refused, Err(Error::SnapshotNeeded(_))),
        "{refused:?}"
    );
    let summary = join(&fresh, &s[0]);
    assert_eq!(
        summary.items, 11,
        "ten live items and the definition: {summary:?}"
    );
    assert_eq!(
        listing(&fresh),
        west_list,
        "the new east shows what west shows"
    );
    let feed = |st: &Store| {
        let mut v: Vec<String> = st
            .conflicts("db", "c", None, 100)
            .expect("feed")
            .items
            .into_iter()
            .filter(|r| r.status == converge_core::ConflictStatus::Open)
            .map(|r| r.id)
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        feed(&fresh),
        feed(&s[0]),
        "the open conflict came with the snapshot"
    );
    assert!(!feed(&fresh).is_empty());
    // North has not heard of east's new store yet, but the store says it joined: north takes
    // it in at its first pull (review finding: north refused it until west's news arrived,
    // and for good when west was lost), and takes its batches from then on.
    assert!(fresh.joined_store());
    pull(&fresh, &s[2]);
    pull(&s[2], &fresh);
    // It pulls from every peer from where the snapshot left off, and writes.
    let all = [&s[0], &fresh, &s[2]];
    fresh
        .upsert_item("db", "c", json!({"id": "new", "pk": "p"}))
        .expect("write after joining");
    s[2].upsert_item("db", "c", json!({"id": "from-north", "pk": "p"}))
        .expect("north writes");
    exchange(&all);
    exchange(&all);
    assert_eq!(listing(&fresh), listing(&s[0]));
    assert_eq!(listing(&s[2]), listing(&s[0]));
    assert_eq!(listing(&fresh).len(), 12);
    // Old copies of collected versions do not bring anything back in it.
    fresh.apply_versions(&old_deleted).expect("late copy");
    assert!(!exists(&fresh, "i3"));
    // A store that holds data cannot join.
    let again = join_err(&s[2], &s[0]);
    assert!(again.contains("empty"), "{again}");
}

fn join_err(new: &Store, from: &Store) -> String {
    let mut buf = Vec::new();
    from.snapshot_to(new.region().as_str(), new.store_id(), &mut buf)
        .expect("snapshot");
    new.join_from(&mut buf.as_slice(), &mut |_, _| {})
        .expect_err("must fail")
        .to_string()
}

#[test]
fn a_damaged_or_cut_off_snapshot_is_refused_with_a_clear_error() {
    set_time(0);
    let s = setup(&["west", "east"], ConflictPolicy::default());
    for i in 0..5 {
        s[0].upsert_item("db", "c", json!({"id": format!("i{i}"), "pk": "p"}))
            .expect("write");
    }
    let mut buf = Vec::new();
    s[0].snapshot_to("south", 1, &mut buf).expect("snapshot");
    let cut = region("south");
    let e = cut
        .join_from(&mut &buf[..buf.len() - 5], &mut |_, _| {})
        .expect_err("cut off");
    assert!(e.to_string().contains("ended"), "{e}");
    let mut damaged = buf.clone();
    let mid = damaged.len() / 2;
    damaged[mid] ^= 0x55;
    let e = region("south2")
        .join_from(&mut damaged.as_slice(), &mut |_, _| {})
        .expect_err("damaged");
    assert!(e.to_string().contains("snapshot"), "{e}");
    let e = region("south3")
        .join_from(&mut &b"hello world"[..], &mut |_, _| {})
        .expect_err("not a snapshot");
    assert!(e.to_string().contains("not a converge snapshot"), "{e}");
    assert!(
        s[0].snapshot_to("west", 1, &mut Vec::new()).is_err(),
        "not from itself"
    );
}

#[test]
fn concurrent_deletes_under_a_manual_policy_are_no_conflict_and_are_collected() {
    // Review finding: two regions deleting the same item while cut off left an open manual
    // record for the losing tombstone, which kept the item from ever being collected.
    set_time(0);
    let s = setup(&["west", "east"], ConflictPolicy::Manual);
    let all: Vec<&Store> = s.iter().collect();
    s[0].upsert_item("db", "c", json!({"id": "x", "pk": "p"}))
        .expect("write");
    exchange(&all);
    s[0].delete_item("db", "c", &pk(), "x", None)
        .expect("west deletes");
    s[1].delete_item("db", "c", &pk(), "x", None)
        .expect("east deletes");
    exchange(&all);
    exchange(&all);
    for st in &s {
        assert!(
            st.conflicts("db", "c", None, 10)
                .expect("feed")
                .items
                .is_empty()
        );
    }
    set_time(10);
    for st in &s {
        assert_eq!(
            st.collect(NO_GRACE).expect("collect").tombstones,
            1,
            "{}",
            st.region()
        );
    }
}

#[test]
fn a_region_rejoining_under_its_name_replaces_the_claims_of_its_lost_store_everywhere() {
    // Review finding: east still credited the lost south store with the delete after south
    // rejoined from west (which lacked it), purged the tombstone, and south's concurrent
    // update then showed alone at east while south and west held both.
    set_time(0);
    let s = setup(&["west", "east", "south"], ConflictPolicy::default());
    let (west, east) = (&s[0], &s[1]);
    west.upsert_item("db", "c", json!({"id": "k", "pk": "p", "v": 0}))
        .expect("write");
    exchange(&s.iter().collect::<Vec<_>>());
    // West is away; east deletes k, south applies the delete and says so.
    set_time(5);
    east.delete_item("db", "c", &pk(), "k", None)
        .expect("delete");
    exchange(&[&s[1], &s[2]]);
    exchange(&[&s[1], &s[2]]);
    // South's data is lost; it rejoins from west, which has not seen the delete.
    set_time(10);
    let south = region("south");
    join(&south, west);
    south
        .upsert_item("db", "c", json!({"id": "k", "pk": "p", "v": "south"}))
        .expect("concurrent update");
    // West comes back, hearing from east only; then everyone collects, then heals.
    pull(west, east);
    pull(east, west);
    pull(west, east);
    pull(east, west);
    set_time(20);
    for st in [west, east] {
        assert_eq!(
            st.collect(NO_GRACE).expect("collect").tombstones,
            0,
            "{}: the rejoined south has not seen the delete",
            st.region()
        );
    }
    let all = [west, east, &south];
    exchange(&all);
    exchange(&all);
    let state = |st: &Store| st.read_item("db", "c", &pk(), "k").ok().map(|i| i.etag);
    assert_eq!(state(west), state(&south), "west and south");
    assert_eq!(state(east), state(&south), "east and south");
}

#[test]
fn a_joiner_never_heard_from_is_forgotten_and_stops_holding_collection_back() {
    // Review finding: one aborted snapshot request made a member that held collection back
    // in every region for good.
    set_time(0);
    let s = setup(&["west", "east"], ConflictPolicy::default());
    let all: Vec<&Store> = s.iter().collect();
    s[0].upsert_item("db", "c", json!({"id": "x", "pk": "p"}))
        .expect("write");
    exchange(&all);
    let mut sink = Vec::new();
    s[0].snapshot_to("ghost", 99, &mut sink).expect("snapshot");
    s[0].delete_item("db", "c", &pk(), "x", None)
        .expect("delete");
    exchange(&all);
    exchange(&all);
    set_time(10);
    assert_eq!(
        s[0].collect(NO_GRACE).expect("collect").tombstones,
        0,
        "the joiner may come"
    );
    // Eleven minutes of silence.
    set_time(11 * 60 * 1000);
    assert_eq!(s[0].collect(NO_GRACE).expect("collect").tombstones, 1);
    assert!(
        s[0].members()
            .expect("members")
            .iter()
            .all(|m| m.region != "ghost")
    );
}

/// Simulation seed 22039: a region whose only configured peer was retired had received
/// another region's versions without a batch (so without its vector). It did not count that
/// writer as a member, believed itself alone, and collected versions the writer never had.
#[test]
fn a_region_whose_versions_arrived_here_holds_collection_back_before_any_restart() {
    set_time(0);
    let west = region("west");
    let east = region("east");
    west.add_member("gone").expect("configured peer");
    for s in [&west, &east] {
        s.put_container("db", "c", "/pk", ConflictPolicy::default())
            .expect("container");
    }
    east.upsert_item("db", "c", json!({"id": "e", "pk": "p"}))
        .expect("east writes");
    // East's versions reach west relayed by some third region: no batch of east's own.
    west.apply_versions(&versions_of(&east, "e"))
        .expect("relayed");
    west.retire_region("gone").expect("retire");
    west.upsert_item("db", "c", json!({"id": "w", "pk": "p"}))
        .expect("west writes");
    west.delete_item("db", "c", &pk(), "w", None)
        .expect("delete");
    set_time(10);
    let r = west.collect(NO_GRACE).expect("collect");
    assert_eq!(
        (r.tombstones, r.log_entries),
        (0, 0),
        "west collected what east never applied: {r:?}"
    );
    assert!(
        west.members()
            .expect("members")
            .iter()
            .any(|m| m.region == "east" && m.holds_back),
        "east is a member holding collection back"
    );
    pull(&east, &west);
    assert!(!exists(&east, "w"), "east applied west's delete");
}

/// Review finding (stop 20): a region whose data was lost and that started empty without
/// joining, while no peer answered, was served and taken in by peers that had not collected.
#[test]
fn a_store_its_peers_do_not_know_is_refused_until_it_joins_and_its_lost_store_after() {
    set_time(0);
    let s = setup(&["west", "east"], ConflictPolicy::default());
    s[1].upsert_item("db", "c", json!({"id": "kept", "pk": "p"}))
        .expect("east writes");
    exchange(&[&s[0], &s[1]]);
    // East's directory is lost; it starts empty and writes before anyone notices.
    set_time(5);
    let wiped = region("east");
    wiped
        .put_container("db", "c", "/pk", ConflictPolicy::default())
        .expect("container");
    wiped
        .upsert_item("db", "c", json!({"id": "stray", "pk": "p"}))
        .expect("wiped east writes");
    let refused = s[0].read_log_for(Some(&wiped.puller()), Cursor::START, 10);
    assert!(
        matches!(&refused, Err(Error::SnapshotNeeded(m)) if m.contains("--join")),
        "{refused:?}"
    );
    let batch = wiped
        .read_log_for(Some(&s[0].puller()), Cursor::START, 100)
        .expect("wiped east serves");
    let taken = s[0].apply_batch(&batch);
    assert!(
        matches!(&taken, Err(Error::SnapshotNeeded(m)) if m.contains("has not heard of")),
        "{taken:?}"
    );
    assert!(
        !exists(&s[0], "stray"),
        "west took a batch of an unknown store"
    );
    assert!(exists(&s[0], "kept"));
    // Started again and joined, it is taken in; the store it replaced is refused from then on.
    set_time(6);
    let joined = region("east");
    join(&joined, &s[0]);
    pull(&s[0], &joined);
    pull(&joined, &s[0]);
    // A pull that claims a joined store it cannot be (an id from the future, or a vector
    // that lacks the store's own start) changes nothing (review finding: one forged GET cut a
    // live region off).
    let forged = converge_core::Puller {
        region: joined.region().clone(),
        applied: joined.applied(),
        store: Some(u64::MAX / 2),
        joined: true,
    };
    assert!(matches!(
        s[0].read_log_for(Some(&forged), Cursor::START, 10),
        Err(Error::SnapshotNeeded(_))
    ));
    let mut lacking = joined.puller();
    lacking.store = Some(lacking.store.expect("store") + 1);
    lacking.applied.remove(joined.region());
    assert!(matches!(
        s[0].read_log_for(Some(&lacking), Cursor::START, 10),
        Err(Error::SnapshotNeeded(_))
    ));
    pull(&joined, &s[0]);
    let old = s[0].read_log_for(Some(&s[1].puller()), Cursor::START, 10);
    assert!(
        matches!(&old, Err(Error::SnapshotNeeded(m)) if m.contains("earlier store")),
        "{old:?}"
    );
    let old_batch = s[1].read_log(Cursor::START, 100).expect("old east's log");
    assert!(matches!(
        s[0].apply_batch(&old_batch),
        Err(Error::SnapshotNeeded(_))
    ));
}

/// Review finding (this session): a pull registered an unknown puller as a provisional
/// member; relayed, it became a member for good elsewhere, and one stray request under a
/// mistyped name stopped collection in every other region. Pulling makes no member.
#[test]
fn a_stray_pull_makes_no_member_and_holds_nothing_back() {
    set_time(0);
    let s = setup(&["west", "east"], ConflictPolicy::default());
    s[0].upsert_item("db", "c", json!({"id": "x", "pk": "p"}))
        .expect("write");
    let typo = region("typo");
    s[0].read_log_for(Some(&typo.puller()), Cursor::START, 10)
        .expect("a stray pull is served");
    s[0].delete_item("db", "c", &pk(), "x", None)
        .expect("delete");
    exchange(&[&s[0], &s[1]]);
    exchange(&[&s[0], &s[1]]);
    set_time(10);
    for st in &s {
        assert!(
            !st.members()
                .expect("members")
                .iter()
                .any(|m| m.region == "typo"),
            "{}: the stray puller is a member",
            st.region()
        );
        assert_eq!(st.collect(NO_GRACE).expect("collect").tombstones, 1);
    }
}

/// Review finding (this session): a joiner that pulled a peer before the peer heard of it
/// from the joiner's source was a provisional member there, forgotten ten minutes later
/// although alive; the peer purged a tombstone concurrent with the joiner's unsent write,
/// which then came back there for good. A joiner learned of is a member for good.
#[test]
fn a_joiner_that_pulls_a_peer_first_is_never_forgotten_there() {
    set_time(0);
    let s = setup(&["west", "east"], ConflictPolicy::default());
    s[0].upsert_item("db", "c", json!({"id": "x", "pk": "p", "v": 1}))
        .expect("write");
    exchange(&[&s[0], &s[1]]);
    let south = region("south");
    join(&south, &s[0]);
    pull(&south, &s[1]);
    pull(&s[0], &south);
    exchange(&[&s[0], &s[1]]);
    // South writes x and goes down before anyone has it; west deletes x later.
    south
        .upsert_item("db", "c", json!({"id": "x", "pk": "p", "v": "stale"}))
        .expect("south writes");
    set_time(10);
    s[0].delete_item("db", "c", &pk(), "x", None)
        .expect("delete");
    exchange(&[&s[0], &s[1]]);
    exchange(&[&s[0], &s[1]]);
    set_time(20 * 60_000);
    for st in &s {
        assert_eq!(
            st.collect(NO_GRACE).expect("collect").tombstones,
            0,
            "{}: south is silent but not gone",
            st.region()
        );
    }
    // South comes back: x stays deleted everywhere.
    let all = [&s[0], &s[1], &south];
    exchange(&all);
    exchange(&all);
    for st in all {
        assert!(!exists(st, "x"), "{}: x came back", st.region());
    }
}

/// Review finding (stop 20): a retired region went on acknowledging writes that every other
/// region then refused. Once it learns of its retirement (the retirement item reaches it, or
/// a peer refusing its pulls says so), it takes none, across restarts, and still serves reads.
#[test]
fn a_retired_region_that_learns_it_was_retired_takes_no_writes_and_still_reads() {
    set_time(0);
    let s = setup(&["west", "east", "gone"], ConflictPolicy::default());
    s[2].upsert_item("db", "c", json!({"id": "before", "pk": "p"}))
        .expect("gone writes");
    exchange(&s.iter().collect::<Vec<_>>());
    let cut = s[1].retire_region("gone").expect("retire");
    assert_eq!(s[2].retired_cut("gone").expect("cut"), None);
    let east_log = s[1].read_log(Cursor::START, usize::MAX).expect("log");
    s[2].apply_versions(&east_log.versions)
        .expect("the retirement arrives");
    assert_eq!(s[2].retired_cut("gone").expect("cut"), Some(cut));
    let refused = s[2].upsert_item("db", "c", json!({"id": "after", "pk": "p"}));
    assert!(
        matches!(&refused, Err(Error::Retired(m)) if m.contains("retired")),
        "{refused:?}"
    );
    assert!(exists(&s[2], "before"), "reads go on");
    // Told by a peer it replicates with, on a durable store: it stays so after a restart.
    let dir = tempfile::tempdir().expect("dir");
    let durable = Store::open(dir.path(), "gone2", common::options()).expect("open");
    pull(&durable, &s[1]);
    let (east, east_store) = (s[1].region().as_str(), s[1].store_id());
    assert!(
        durable.learn_retired(east, east_store, 0).expect("learn"),
        "news"
    );
    assert!(
        !durable.learn_retired(east, east_store, 0).expect("again"),
        "no news"
    );
    drop(durable);
    let durable = Store::open(dir.path(), "gone2", common::options()).expect("reopen");
    assert_eq!(durable.retired_cut("gone2").expect("cut"), Some(0));
    assert!(matches!(
        durable.upsert_item("db", "c", json!({"id": "x", "pk": "p"})),
        Err(Error::Retired(_))
    ));
}

/// Review finding (stop 21, D): a region believed any peer that said it was retired, so a
/// `--peer` pointing by mistake at another deployment, where a region of the same name was
/// retired, silenced a live region. The claim counts only from a store this region replicates
/// with, for a cut it can have issued.
#[test]
fn a_retirement_claim_counts_only_from_a_store_this_region_replicates_with() {
    set_time(0);
    let s = setup(&["west", "east"], ConflictPolicy::default());
    s[0].upsert_item("db", "c", json!({"id": "a", "pk": "p"}))
        .expect("west writes");
    exchange(&[&s[0], &s[1]]);
    // Another deployment's east (another store) that retired a "west" of its own.
    let other = s[1].store_id() + 1;
    let west = s[0].region().as_str().to_owned();
    let counter = s[0].applied()[s[0].region()];
    for (from, store, cut, why) in [
        ("east", other, 0, "not replicated with"),
        ("north", s[1].store_id(), 0, "no store of north"),
        ("east", 0, 0, "no store"),
        ("east", s[1].store_id(), counter + 1_000, "above the"),
    ] {
        let claim = s[0].learn_retired(from, store, cut);
        assert!(
            matches!(&claim, Err(Error::InvalidInput(m)) if m.contains("ignored")),
            "{from}/{store}/{cut} ({why}): {claim:?}"
        );
        assert_eq!(s[0].retired_cut(&west).expect("cut"), None);
        s[0].upsert_item("db", "c", json!({"id": "still", "pk": "p"}))
            .expect("west still takes writes");
    }
    // Its own peer is believed.
    assert!(
        s[0].learn_retired("east", s[1].store_id(), counter)
            .expect("learn")
    );
    assert!(matches!(
        s[0].upsert_item("db", "c", json!({"id": "after", "pk": "p"})),
        Err(Error::Retired(_))
    ));
}

/// Review finding (this session): a region that only pulls from a rejoined store, and never
/// heard of it from the join's source (lost), refused its batches for good. The rejoined
/// store's fingerprint says it joined, and the server takes it in from that.
#[test]
fn a_region_that_only_pulls_from_a_rejoined_store_takes_it_in_on_its_word() {
    set_time(0);
    let s = setup(&["west", "east", "north"], ConflictPolicy::default());
    exchange(&s.iter().collect::<Vec<_>>());
    set_time(5);
    let east = region("east");
    join(&east, &s[0]);
    east.upsert_item("db", "c", json!({"id": "from-new-east", "pk": "p"}))
        .expect("write");
    let batch = |dst: &Store| {
        east.read_log_for(
            Some(&dst.puller()),
            dst.cursor("east").expect("cursor"),
            100,
        )
        .expect("east serves")
    };
    let refused = s[2].apply_batch(&batch(&s[2]));
    assert!(
        matches!(&refused, Err(Error::SnapshotNeeded(_))),
        "{refused:?}"
    );
    assert!(
        s[2].take_joined_store("east", east.store_id(), &Default::default())
            .expect("take")
    );
    assert!(
        !s[2]
            .take_joined_store("east", east.store_id(), &Default::default())
            .expect("again"),
        "known now"
    );
    s[2].apply_batch(&batch(&s[2])).expect("taken in");
    assert!(exists(&s[2], "from-new-east"));
}
