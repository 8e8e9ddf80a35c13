//! Resolver modules installed through the store: validated, stored, replicated, loaded at open,
//! and conflicts resolved again when the module arrives.

mod common;

use common::{exchange, pick, set_time};
use converge_core::{
    ConflictPolicy, ConflictStatus, Error, PartitionKey, ResolverLimits, Store, WasmResolvers,
};
use serde_json::json;
use std::sync::Arc;

/// A module answering `{"pick":1}` (the older version wins).
fn pick_second() -> Vec<u8> {
    pick(1)
}

fn sandboxed(name: &str) -> Store {
    let opts = common::options().resolver_host(Arc::new(WasmResolvers::new()));
    Store::memory(name, opts).expect("store")
}

fn policy() -> ConflictPolicy {
    ConflictPolicy::Custom {
        resolver: "older".into(),
        hash: None,
        limits: ResolverLimits::default(),
    }
}

#[test]
fn a_resolver_installed_in_one_region_resolves_in_every_region() {
    let (a, b) = (sandboxed("a"), sandboxed("b"));
    for s in [&a, &b] {
        s.put_container("db", "carts", "/pk", policy())
            .expect("container");
    }
    set_time(10);
    a.upsert_item("db", "carts", json!({"id": "i", "pk": "p", "who": "a"}))
        .expect("a");
    set_time(20);
    b.upsert_item("db", "carts", json!({"id": "i", "pk": "p", "who": "b"}))
        .expect("b");
    exchange(&[&a, &b]);
    // No module yet: the LWW winner is tentative, the feed says why.
    let feed = b.conflicts("db", "carts", None, 10).expect("feed").items;
    assert_eq!(feed.len(), 1);
    assert_eq!(feed[0].reason, "resolver missing");

    let hash = a
        .put_resolver("db", "carts", "older", &pick_second())
        .expect("install");
    assert_eq!(
        a.resolvers("db", "carts").expect("list"),
        vec![("older".to_owned(), hash.clone())]
    );
    exchange(&[&a, &b]);
    let pk = PartitionKey::from("p");
    for s in [&a, &b] {
        assert_eq!(
            s.resolvers("db", "carts").expect("list"),
            vec![("older".to_owned(), hash.clone())]
        );
        assert_eq!(
            s.read_item("db", "carts", &pk, "i").expect("read").body["who"],
            "a",
            "the module picks the older version"
        );
        let feed = s.conflicts("db", "carts", None, 10).expect("feed").items;
        assert!(
            feed.iter().all(|r| r.status == ConflictStatus::Superseded),
            "the arrival resolved it: {feed:?}"
        );
    }
    assert_eq!(
        a.read_item("db", "carts", &pk, "i").expect("a").etag,
        b.read_item("db", "carts", &pk, "i").expect("b").etag
    );
    // The definitions pin the installed bytes.
    let pinned = |s: &Store| match s
        .container("db", "carts")
        .expect("def")
        .conflict_resolution_policy
    {
        ConflictPolicy::Custom { hash, .. } => hash,
        other => panic!("unexpected policy {other:?}"),
    };
    assert_eq!(pinned(&a), Some(hash.clone()));
    assert_eq!(pinned(&b), Some(hash.clone()));
    // Re-uploading the name re-pins, and every region switches to the new bytes.
    let newer = a
        .put_resolver("db", "carts", "older", &pick(0))
        .expect("re-upload");
    assert_ne!(newer, hash);
    exchange(&[&a, &b]);
    for s in [&a, &b] {
        assert_eq!(pinned(s), Some(newer.clone()));
        assert_eq!(
            s.read_item("db", "carts", &pk, "i").expect("read").body["who"],
            "b"
        );
    }
}

#[test]
fn a_bad_module_is_refused_and_nothing_is_written() {
    let a = sandboxed("a");
    a.put_container("db", "carts", "/pk", policy())
        .expect("container");
    match a.put_resolver("db", "carts", "older", b"\0asm\x01\0\0\0") {
        Err(Error::InvalidModule(m)) => assert!(m.contains("memory"), "{m}"),
        other => panic!("expected InvalidModule, got {other:?}"),
    }
    assert!(matches!(
        a.put_resolver("db", "carts", "older", b"garbage"),
        Err(Error::InvalidModule(_))
    ));
    assert!(matches!(
        a.put_resolver("db", "nope", "older", &pick_second()),
        Err(Error::UnknownContainer { .. })
    ));
    assert!(matches!(
        a.put_resolver("db", "carts", "a/b", &pick_second()),
        Err(Error::InvalidInput(_))
    ));
    assert!(a.resolvers("db", "carts").expect("list").is_empty());
}

#[test]
fn installed_resolvers_survive_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let open = || {
        let opts = common::options().resolver_host(Arc::new(WasmResolvers::new()));
        Store::open(dir.path(), "west", opts).expect("open")
    };
    let west = open();
    west.put_container("db", "carts", "/pk", policy())
        .expect("container");
    west.put_resolver("db", "carts", "older", &pick_second())
        .expect("install");
    drop(west);
    // A fresh sandbox: the store loads the module from disk at open.
    let west = open();
    let east = sandboxed("east");
    east.put_container("db", "carts", "/pk", policy())
        .expect("container");
    // Later than the clock bound West resumed at (its clock never goes backwards).
    set_time(1000);
    west.upsert_item("db", "carts", json!({"id": "i", "pk": "p", "who": "west"}))
        .expect("w");
    set_time(2000);
    east.upsert_item("db", "carts", json!({"id": "i", "pk": "p", "who": "east"}))
        .expect("e");
    west.apply_batch(
        &east
            .read_log(converge_core::Cursor::START, 100)
            .expect("log"),
    )
    .expect("apply");
    let item = west
        .read_item("db", "carts", &PartitionKey::from("p"), "i")
        .expect("read");
    assert_eq!(item.body["who"], "west");
    assert!(
        west.conflicts("db", "carts", None, 10)
            .expect("feed")
            .items
            .is_empty()
    );
}
