//! Container definitions: replication, independent creation, drops, waiting versions,
//! partition key paths fixed at creation, region names stored with the directory.

mod common;

use common::{everything, exchange, region, set_time};
use converge_core::{ConflictPolicy, Error, PartitionKey, SYSTEM_CREATION, Store, StoreOptions};
use serde_json::json;

#[test]
fn definitions_replicate_and_independent_creations_are_one_container() {
    let (a, b) = (region("a"), region("b"));
    let da = a
        .create_container("shop", "carts", "/customerId")
        .expect("a creates");
    let db = b
        .create_container("shop", "carts", "/customerId")
        .expect("b creates");
    assert_eq!(
        da.creation_id, db.creation_id,
        "same name, path and epoch: the same creation"
    );
    a.create_item("shop", "carts", json!({"id": "1", "customerId": "x"}))
        .expect("write a");
    b.create_item("shop", "carts", json!({"id": "2", "customerId": "x"}))
        .expect("write b");
    exchange(&[&a, &b]);
    for s in [&a, &b] {
        assert_eq!(
            s.list_items("shop", "carts", None, None, 10)
                .expect("list")
                .items
                .len(),
            2
        );
    }
    // A policy change replicates, and replaces what b had read (and cached) before.
    assert_eq!(
        b.container("shop", "carts")
            .expect("def")
            .conflict_resolution_policy,
        ConflictPolicy::default()
    );
    a.put_container("shop", "carts", "/customerId", ConflictPolicy::Manual)
        .expect("policy");
    exchange(&[&a, &b]);
    assert_eq!(
        b.container("shop", "carts")
            .expect("def")
            .conflict_resolution_policy,
        ConflictPolicy::Manual
    );
    assert!(matches!(
        a.put_container("shop", "carts", "/other", ConflictPolicy::Manual),
        Err(Error::InvalidDefinition(m)) if m.contains("fixed at creation")
    ));
    assert_eq!(a.containers("shop").expect("list").len(), 1);
    assert!(matches!(
        a.containers("nodb"),
        Err(Error::UnknownContainer { .. })
    ));
}

#[test]
fn versions_that_arrive_before_their_definition_wait_for_it() {
    let (a, b) = (region("a"), region("b"));
    a.create_container("db", "c", "/pk").expect("container");
    a.create_item("db", "c", json!({"id": "i", "pk": "p"}))
        .expect("item");
    let all = everything(&a).versions;
    let (defs, items): (Vec<_>, Vec<_>) =
        all.into_iter().partition(|v| v.creation == SYSTEM_CREATION);
    b.apply_versions(&items).expect("item first");
    assert!(matches!(
        b.read_item("db", "c", &PartitionKey::from("p"), "i"),
        Err(Error::UnknownContainer { .. })
    ));
    b.apply_versions(&defs).expect("then the definition");
    assert!(
        b.read_item("db", "c", &PartitionKey::from("p"), "i")
            .is_ok()
    );
}

#[test]
fn a_drop_replicates_and_a_recreation_is_a_new_container() {
    let (a, b) = (region("a"), region("b"));
    let first = a.create_container("db", "c", "/pk").expect("container");
    a.create_item("db", "c", json!({"id": "old", "pk": "p"}))
        .expect("item");
    exchange(&[&a, &b]);
    // b writes to the old container while a drops it: b's write must not survive.
    b.create_item("db", "c", json!({"id": "late", "pk": "p"}))
        .expect("late write");
    a.drop_container("db", "c").expect("drop");
    assert!(matches!(
        a.container("db", "c"),
        Err(Error::UnknownContainer { .. })
    ));
    let second = a.create_container("db", "c", "/pk").expect("recreate");
    assert_ne!(first.creation_id, second.creation_id);
    assert_eq!(second.epoch, 1);
    exchange(&[&a, &b]);
    for s in [&a, &b] {
        assert_eq!(
            s.container("db", "c").expect("def").creation_id,
            second.creation_id
        );
        assert!(
            s.list_items("db", "c", None, None, 10)
                .expect("list")
                .items
                .is_empty()
        );
    }
    // Re-delivering the old container's versions changes nothing.
    let again = everything(&a);
    b.apply_batch(&again).expect("redeliver");
    assert!(
        b.list_items("db", "c", None, None, 10)
            .expect("list")
            .items
            .is_empty()
    );
    assert!(b.stats().discarded_dropped > 0);
}

#[test]
fn concurrent_creations_with_different_paths_keep_the_loser_items_in_the_feed() {
    let (a, b) = (region("a"), region("b"));
    set_time(0);
    a.create_container("db", "c", "/x").expect("a");
    a.create_item("db", "c", json!({"id": "from-a", "x": 1}))
        .expect("a item");
    set_time(500);
    b.create_container("db", "c", "/y").expect("b, later: wins");
    b.create_item("db", "c", json!({"id": "from-b", "y": 1}))
        .expect("b item");
    exchange(&[&a, &b]);
    for s in [&a, &b] {
        let def = s.container("db", "c").expect("def");
        assert_eq!(def.partition_key, "/y");
        let items = s.list_items("db", "c", None, None, 10).expect("list").items;
        assert_eq!(items.len(), 1);
        let feed = s.conflicts("db", "c", None, 10).expect("feed").items;
        assert_eq!(feed.len(), 1);
        assert_eq!(feed[0].reason, "container replaced");
        assert_eq!(feed[0].item_id, "from-a");
    }
}

#[test]
fn a_directory_keeps_its_region_name_and_every_open_is_a_new_incarnation() {
    let dir = tempfile::tempdir().expect("dir");
    let first = Store::open(dir.path(), "west", StoreOptions::new()).expect("create");
    let inc = first.incarnation();
    first.create_container("db", "c", "/pk").expect("container");
    drop(first);
    match Store::open(dir.path(), "east", StoreOptions::new()) {
        Err(Error::RegionMismatch { stored, requested }) => {
            assert_eq!((stored.as_str(), requested.as_str()), ("west", "east"));
        }
        other => panic!("expected RegionMismatch, got {other:?}"),
    }
    let again = Store::open(dir.path(), "west", StoreOptions::new()).expect("reopen");
    assert_ne!(again.incarnation(), inc);
    assert!(again.container("db", "c").is_ok());
    assert!(matches!(
        Store::memory("bad name!", StoreOptions::new()),
        Err(Error::InvalidInput(_))
    ));
}

/// A hierarchical partition key (`["/tenant","/user"]`): items are keyed by all of its values,
/// replicate and conflict as any other, and a merge or write must keep every value.
#[test]
fn hierarchical_partition_keys_key_items_by_every_level() {
    let (a, b) = (region("a"), region("b"));
    let paths = r#"["/tenant","/user"]"#;
    let def = a
        .put_container("t", "people", paths, ConflictPolicy::Manual)
        .expect("a hierarchical container")
        .0;
    assert_eq!(def.partition_key_paths(), ["/tenant", "/user"]);
    exchange(&[&a, &b]);
    let bob = PartitionKey::parse(r#"["acme","bob"]"#).expect("key");
    assert_eq!(bob.components(), [json!("acme"), json!("bob")]);
    a.create_item(
        "t",
        "people",
        json!({"id": "1", "tenant": "acme", "user": "bob", "n": 1}),
    )
    .expect("a writes bob's 1");
    a.create_item(
        "t",
        "people",
        json!({"id": "1", "tenant": "acme", "user": "ann"}),
    )
    .expect("the same id under another user is another item");
    b.create_item(
        "t",
        "people",
        json!({"id": "1", "tenant": "acme", "user": "bob", "n": 2}),
    )
    .expect("b writes bob's 1 concurrently");
    exchange(&[&a, &b]);
    for s in [&a, &b] {
        let open = s
            .conflicts("t", "people", None, 10)
            .expect("conflicts")
            .items;
        assert_eq!(open.len(), 1, "one conflict, on bob's item only");
        assert_eq!(open[0].partition_key, bob);
        assert_eq!(
            s.read_item(
                "t",
                "people",
                &PartitionKey::parse(r#"["acme","ann"]"#).expect("key"),
                "1"
            )
            .expect("ann's item")
            .body["user"],
            "ann"
        );
    }
    for (item, why) in [
        (json!({"id": "2", "tenant": "acme"}), "/user"),
        (json!({"id": "2", "tenant": "acme", "user": ["x"]}), "/user"),
    ] {
        let e = a.create_item("t", "people", item).expect_err("refused");
        assert!(
            matches!(e, Error::InvalidInput(ref m) if m.contains(why)),
            "{e}"
        );
    }
    for bad in [
        r#"["/a"]"#,
        r#"["/a","/a"]"#,
        r#"["/a","/b","/c","/d"]"#,
        r#"["/a", "/b"]"#,
        "[1,2]",
    ] {
        assert!(
            matches!(
                a.put_container("t", "bad", bad, ConflictPolicy::default()),
                Err(Error::InvalidDefinition(_))
            ),
            "{bad} must be refused"
        );
    }
    assert!(
        PartitionKey::parse(r#"[["x"],"y"]"#).is_err(),
        "a component must be a scalar"
    );
}
