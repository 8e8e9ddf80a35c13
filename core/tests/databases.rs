//! Databases as resources: created, listed and deleted in one region, replicated to the others,
//! and resolved the same everywhere when regions create and delete them concurrently.

mod common;

use common::{exchange, region};
use converge_core::{ConflictPolicy, Error, Store};

fn ids(s: &Store) -> Vec<String> {
    s.databases()
        .expect("databases")
        .into_iter()
        .map(|d| d.id)
        .collect()
}

#[test]
fn a_created_database_shows_replicates_and_refuses_a_second_create() {
    let (a, b) = (region("a"), region("b"));
    let db = a.create_database("shop").expect("create");
    assert!(db.created);
    assert!(db.ts > 0, "a created database carries its write's seconds");
    assert!(matches!(
        a.create_database("shop"),
        Err(Error::DatabaseExists(_))
    ));
    assert!(matches!(b.database("shop"), Err(Error::UnknownDatabase(_))));
    exchange(&[&a, &b]);
    assert_eq!(b.database("shop").expect("replicated"), db);
    assert_eq!(ids(&b), vec!["shop"]);
    // A database is no container: the definitions list does not see it.
    assert!(b.all_containers().expect("containers").is_empty());
}

#[test]
fn containers_imply_their_database_and_a_delete_drops_them() {
    let (a, b) = (region("a"), region("b"));
    a.create_container("implied", "c", "/pk")
        .expect("container");
    let implied = a.database("implied").expect("implied database");
    assert!(!implied.created);
    assert!(matches!(
        a.create_database("implied"),
        Err(Error::DatabaseExists(_))
    ));
    a.create_database("made").expect("create");
    a.put_container("made", "x", "/pk", ConflictPolicy::Manual)
        .expect("container");
    a.create_item("made", "x", serde_json::json!({"id": "1", "pk": "p"}))
        .expect("item");
    exchange(&[&a, &b]);
    assert_eq!(ids(&b), vec!["implied", "made"]);
    b.delete_database("made").expect("delete");
    assert!(matches!(
        b.delete_database("made"),
        Err(Error::UnknownDatabase(_))
    ));
    exchange(&[&a, &b]);
    for s in [&a, &b] {
        assert_eq!(ids(s), vec!["implied"]);
        assert!(matches!(
            s.container("made", "x"),
            Err(Error::UnknownContainer { .. })
        ));
    }
    // Re-created, it starts empty.
    a.create_database("made").expect("re-create");
    a.create_container("made", "x", "/pk").expect("container");
    exchange(&[&a, &b]);
    let page = b.list_items("made", "x", None, None, 10).expect("list");
    assert!(page.items.is_empty());
}

#[test]
fn a_concurrent_create_and_delete_keep_the_database_everywhere() {
    let (a, b) = (region("a"), region("b"));
    a.create_database("db").expect("create");
    exchange(&[&a, &b]);
    // Concurrently: a deletes it, b deletes and creates it again.
    a.delete_database("db").expect("delete");
    b.delete_database("db").expect("delete");
    b.create_database("db").expect("re-create");
    exchange(&[&a, &b]);
    for s in [&a, &b] {
        assert!(s.database("db").expect("shows").created);
    }
    assert_eq!(a.database("db").ok(), b.database("db").ok());
}

#[test]
fn a_container_created_concurrently_with_the_delete_keeps_its_database() {
    let (a, b) = (region("a"), region("b"));
    a.create_database("db").expect("create");
    exchange(&[&a, &b]);
    a.delete_database("db").expect("delete");
    b.create_container("db", "late", "/pk").expect("container");
    exchange(&[&a, &b]);
    for s in [&a, &b] {
        let db = s.database("db").expect("the container implies it");
        assert!(!db.created);
        s.container("db", "late")
            .expect("the concurrent container stays");
    }
}

#[test]
fn a_remote_database_item_that_does_not_match_its_key_is_refused() {
    let a = region("a");
    a.create_database("db").expect("create");
    let mut batch = common::everything(&a);
    let v = batch
        .versions
        .iter_mut()
        .find(|v| v.key.id == "db")
        .expect("the database's version");
    v.body = Some(r#"{"id":"other"}"#.into());
    let b = region("b");
    assert!(matches!(b.apply_batch(&batch), Err(Error::CorruptBatch(_))));
    assert!(ids(&b).is_empty(), "nothing of the batch was applied");
}
