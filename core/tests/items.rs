//! Item operations with Cosmos semantics, and bad input.

mod common;

use common::region;
use converge_core::{ConflictPolicy, Error, PartitionKey, Store, WriteOp, WriteOutcome};
use serde_json::json;

fn store() -> Store {
    let s = region("west");
    s.put_container("shop", "carts", "/customerId", ConflictPolicy::default())
        .expect("container");
    s
}

#[test]
fn create_read_replace_upsert_delete() {
    let s = store();
    let pk = PartitionKey::from("alice");
    let created = s
        .create_item(
            "shop",
            "carts",
            json!({"id": "c1", "customerId": "alice", "n": 1}),
        )
        .expect("create");
    assert_eq!(created.body["n"], 1);
    assert!(
        created.body["_etag"].is_string()
            && created.body["_ts"].is_u64()
            && created.body["_lsn"].is_u64()
    );
    assert!(matches!(
        s.create_item("shop", "carts", json!({"id": "c1", "customerId": "alice"})),
        Err(Error::AlreadyExists { .. })
    ));
    let read = s.read_item("shop", "carts", &pk, "c1").expect("read");
    assert_eq!(read, created);

    let replaced = s
        .replace_item(
            "shop",
            "carts",
            "c1",
            json!({"id": "c1", "customerId": "alice", "n": 2}),
            Some(&created.etag),
        )
        .expect("replace with matching etag");
    assert_ne!(replaced.etag, created.etag);
    assert!(replaced.lsn > created.lsn);
    assert!(matches!(
        s.replace_item(
            "shop",
            "carts",
            "c1",
            json!({"id": "c1", "customerId": "alice"}),
            Some(&created.etag)
        ),
        Err(Error::PreconditionFailed { .. })
    ));
    assert!(matches!(
        s.replace_item(
            "shop",
            "carts",
            "nope",
            json!({"id": "nope", "customerId": "alice"}),
            None
        ),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        s.replace_item(
            "shop",
            "carts",
            "c1",
            json!({"id": "other", "customerId": "alice"}),
            None
        ),
        Err(Error::InvalidInput(_))
    ));

    let (_, created_flag) = s
        .upsert_item(
            "shop",
            "carts",
            json!({"id": "c1", "customerId": "alice", "n": 3}),
        )
        .expect("upsert");
    assert!(!created_flag);
    let (_, created_flag) = s
        .upsert_item("shop", "carts", json!({"id": "c2", "customerId": "bob"}))
        .expect("upsert new");
    assert!(created_flag);

    assert!(matches!(
        s.delete_item("shop", "carts", &pk, "c1", Some("\"0000000000000000\"")),
        Err(Error::PreconditionFailed { .. })
    ));
    s.delete_item("shop", "carts", &pk, "c1", None)
        .expect("delete");
    assert!(matches!(
        s.read_item("shop", "carts", &pk, "c1"),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        s.delete_item("shop", "carts", &pk, "c1", None),
        Err(Error::NotFound { .. })
    ));
    // A deleted item can be created again.
    s.create_item("shop", "carts", json!({"id": "c1", "customerId": "alice"}))
        .expect("create again");
}

#[test]
fn list_pages_by_partition_and_whole_container() {
    let s = store();
    for (id, who) in [
        ("a", "alice"),
        ("b", "alice"),
        ("c", "bob"),
        ("d", "alice"),
        ("e", "carol"),
    ] {
        s.create_item("shop", "carts", json!({"id": id, "customerId": who}))
            .expect("create");
    }
    s.delete_item("shop", "carts", &PartitionKey::from("alice"), "b", None)
        .expect("delete");
    let mut ids = Vec::new();
    let mut cont = None;
    loop {
        let page = s
            .list_items("shop", "carts", None, cont.as_deref(), 2)
            .expect("list");
        assert!(page.items.len() <= 2);
        ids.extend(page.items.iter().map(|i| i.id().to_owned()));
        match page.continuation {
            Some(c) => cont = Some(c),
            None => break,
        }
    }
    // Grouped by partition (in key order: shorter keys first), ids sorted within one.
    assert_eq!(ids, ["c", "a", "d", "e"]);
    let alice = s
        .list_items(
            "shop",
            "carts",
            Some(&PartitionKey::from("alice")),
            None,
            10,
        )
        .expect("list");
    assert_eq!(
        alice.items.iter().map(|i| i.id()).collect::<Vec<_>>(),
        ["a", "d"]
    );
    assert!(alice.continuation.is_none());
    assert!(matches!(
        s.list_items("shop", "carts", None, Some("zz"), 10),
        Err(Error::InvalidToken(_))
    ));
}

#[test]
fn bad_input_gets_a_clear_error_and_writes_nothing() {
    let s = store();
    let cases = [
        (json!("a string"), "JSON object"),
        (json!({"customerId": "alice"}), "\"id\""),
        (
            json!({"id": 7, "customerId": "alice"}),
            "\"id\" must be a string",
        ),
        (
            json!({"id": "x".repeat(256), "customerId": "alice"}),
            "1 to 255 bytes",
        ),
        (json!({"id": "a/b", "customerId": "alice"}), "'/'"),
        (json!({"id": "a\\b", "customerId": "alice"}), "'\\\\'"),
        (json!({"id": "a?b", "customerId": "alice"}), "'?'"),
        (json!({"id": "a#b", "customerId": "alice"}), "'#'"),
        (json!({"id": "a"}), "no partition key value at /customerId"),
        (
            json!({"id": "a", "customerId": [1]}),
            "partition key at /customerId",
        ),
    ];
    for (item, expected) in cases {
        match s.create_item("shop", "carts", item.clone()) {
            Err(Error::InvalidInput(msg)) => {
                assert!(msg.contains(expected), "{item}: {msg:?} lacks {expected:?}")
            }
            other => panic!("{item}: expected InvalidInput, got {other:?}"),
        }
    }
    let big = "x".repeat(2 * 1024 * 1024);
    assert!(matches!(
        s.create_item(
            "shop",
            "carts",
            json!({"id": "big", "customerId": "a", "blob": big})
        ),
        Err(Error::TooLarge { .. })
    ));
    assert!(matches!(
        s.create_item("shop", "nope", json!({"id": "a", "customerId": "a"})),
        Err(Error::UnknownContainer { .. })
    ));
    assert!(matches!(
        s.create_item("nodb", "carts", json!({"id": "a", "customerId": "a"})),
        Err(Error::UnknownContainer { .. })
    ));
    // Nothing was written by any of them.
    assert!(
        s.list_items("shop", "carts", None, None, 100)
            .expect("list")
            .items
            .is_empty()
    );
    assert_eq!(
        s.read_log(converge_core::Cursor::START, 100)
            .expect("log")
            .versions
            .len(),
        1,
        "only the definition"
    );
}

#[test]
fn write_many_commits_together_and_fails_per_operation() {
    let s = store();
    let out = s
        .write_many(
            "shop",
            "carts",
            vec![
                WriteOp::Create(json!({"id": "a", "customerId": "x"})),
                WriteOp::Create(json!({"id": "a", "customerId": "x"})),
                WriteOp::Upsert(json!({"id": "b", "customerId": "x"})),
                WriteOp::Create(json!({"no": "id"})),
            ],
        )
        .expect("batch");
    assert!(matches!(out[0], Ok(WriteOutcome::Created(_))));
    assert!(matches!(out[1], Err(Error::AlreadyExists { .. })));
    assert!(matches!(out[2], Ok(WriteOutcome::Created(_))));
    assert!(matches!(out[3], Err(Error::InvalidInput(_))));
    assert_eq!(
        s.list_items("shop", "carts", None, None, 10)
            .expect("list")
            .items
            .len(),
        2
    );
}

#[test]
fn system_properties_from_the_user_are_ignored() {
    let s = store();
    let item = s
        .create_item(
            "shop",
            "carts",
            json!({"id": "a", "customerId": "x", "_ts": 1, "_etag": "mine", "_lsn": 99}),
        )
        .expect("create");
    assert_ne!(item.body["_etag"], "mine");
    assert_ne!(item.body["_lsn"], 99);
}
