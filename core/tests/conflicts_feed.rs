//! The conflicts feed under the manual and custom policies, and the change feed.

mod common;

use common::{exchange, region, set_time};
use converge_core::{
    Change, ConflictPolicy, ConflictStatus, Outcome, PartitionKey, ResolveRequest, ResolverHost,
    Store,
};
use serde_json::json;
use std::sync::Arc;

fn concurrent_writes(a: &Store, b: &Store) {
    set_time(10);
    a.upsert_item(
        "db",
        "c",
        json!({"id": "i", "pk": "p", "who": "a", "n": [1]}),
    )
    .expect("a");
    set_time(20);
    b.upsert_item(
        "db",
        "c",
        json!({"id": "i", "pk": "p", "who": "b", "n": [2]}),
    )
    .expect("b");
    exchange(&[a, b]);
}

#[test]
fn manual_conflicts_are_listed_identically_then_superseded_by_a_write() {
    let (a, b) = (region("a"), region("b"));
    for s in [&a, &b] {
        s.put_container("db", "c", "/pk", ConflictPolicy::Manual)
            .expect("container");
    }
    concurrent_writes(&a, &b);
    let pk = PartitionKey::from("p");
    // The LWW winner (b, later) is shown as tentative.
    assert_eq!(
        a.read_item("db", "c", &pk, "i").expect("read").body["who"],
        "b"
    );
    let fa = a.conflicts("db", "c", None, 10).expect("feed").items;
    let fb = b.conflicts("db", "c", None, 10).expect("feed").items;
    assert_eq!(fa.len(), 1);
    assert_eq!(
        fa[0].id, fb[0].id,
        "record ids are the same in every region"
    );
    assert_eq!(fa[0].reason, "manual policy");
    assert_eq!(fa[0].status, ConflictStatus::Open);
    assert_eq!(fa[0].operation.as_str(), "create");
    let content: serde_json::Value =
        serde_json::from_str(fa[0].content.as_deref().expect("content")).expect("json");
    assert_eq!(
        content["who"], "a",
        "the record holds the sibling that is not visible"
    );
    assert_eq!(
        a.conflict("db", "c", &fa[0].id).expect("read record"),
        fa[0]
    );

    // The application resolves with a replace; the record is superseded everywhere.
    set_time(30);
    a.replace_item(
        "db",
        "c",
        "i",
        json!({"id": "i", "pk": "p", "who": "app"}),
        None,
    )
    .expect("resolve");
    exchange(&[&a, &b]);
    for s in [&a, &b] {
        let f = s.conflicts("db", "c", None, 10).expect("feed").items;
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].status, ConflictStatus::Superseded);
        assert_eq!(
            s.read_item("db", "c", &pk, "i").expect("read").body["who"],
            "app"
        );
    }
    a.delete_conflict("db", "c", &fa[0].id).expect("ack");
    assert!(
        a.conflicts("db", "c", None, 10)
            .expect("feed")
            .items
            .is_empty()
    );
    assert!(a.delete_conflict("db", "c", &fa[0].id).is_err());
    assert!(a.conflict("db", "c", "not-an-id").is_err());
}

/// A resolver host in plain Rust: takes the union of `n` arrays, or fails as told.
struct UnionHost;

impl ResolverHost for UnionHost {
    fn resolve(&self, req: &ResolveRequest<'_>) -> Outcome {
        if req.resolver == "trap" {
            return Outcome::Failed("trap: boom".into());
        }
        let mut n: Vec<i64> = Vec::new();
        for v in req.versions.iter().filter_map(|v| v.body.as_deref()) {
            let body: serde_json::Value = serde_json::from_str(v).expect("input json");
            assert!(
                body.get("_ts").is_some(),
                "resolvers see each version's _ts"
            );
            n.extend(
                body["n"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|x| x.as_i64()),
            );
        }
        n.sort();
        n.dedup();
        Outcome::Merge(
            json!({"id": req.id, "pk": req.partition_key.to_value(), "n": n}).to_string(),
        )
    }
}

fn custom(name: &str) -> ConflictPolicy {
    ConflictPolicy::Custom {
        resolver: name.into(),
        hash: None,
        limits: Default::default(),
    }
}

#[test]
fn custom_resolution_merges_and_failures_go_to_the_feed() {
    let opts = || common::options().resolver_host(Arc::new(UnionHost));
    let a = Store::memory("a", opts()).expect("a");
    let b = Store::memory("b", opts()).expect("b");
    for s in [&a, &b] {
        s.put_container("db", "c", "/pk", custom("union"))
            .expect("container");
    }
    a.put_resolver("db", "c", "union", &common::module("union"))
        .expect("upload");
    concurrent_writes(&a, &b);
    let pk = PartitionKey::from("p");
    let ia = a.read_item("db", "c", &pk, "i").expect("merged");
    assert_eq!(ia.body["n"], json!([1, 2]));
    assert_eq!(
        ia.etag,
        b.read_item("db", "c", &pk, "i").expect("merged").etag
    );
    assert!(
        a.conflicts("db", "c", None, 10)
            .expect("feed")
            .items
            .is_empty()
    );

    // Switching to a trapping resolver re-resolves: tentative LWW winner, record in the feed.
    a.put_resolver("db", "c", "trap", &common::module("trap"))
        .expect("upload");
    a.put_container("db", "c", "/pk", custom("trap"))
        .expect("policy");
    exchange(&[&a, &b]);
    for s in [&a, &b] {
        assert_eq!(
            s.read_item("db", "c", &pk, "i").expect("read").body["who"],
            "b"
        );
        let f = s.conflicts("db", "c", None, 10).expect("feed").items;
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].reason, "trap: boom");
    }
    // A region without the resolver shows the LWW winner with `resolver missing`.
    let c = region("c");
    common::pull(&c, &a);
    let f = c.conflicts("db", "c", None, 10).expect("feed").items;
    assert_eq!(f[0].reason, "resolver missing");
}

#[test]
fn change_feed_lists_each_visible_change_once_in_lsn_order() {
    let s = region("a");
    s.put_container("db", "c", "/pk", ConflictPolicy::default())
        .expect("container");
    s.create_item("db", "c", json!({"id": "x", "pk": "p"}))
        .expect("x");
    s.create_item("db", "c", json!({"id": "y", "pk": "p"}))
        .expect("y");
    s.upsert_item("db", "c", json!({"id": "x", "pk": "p", "v": 2}))
        .expect("x again");
    s.delete_item("db", "c", &PartitionKey::from("p"), "y", None)
        .expect("delete y");
    let page = s.changes("db", "c", None, 10).expect("changes");
    assert_eq!(page.items.len(), 2);
    assert!(matches!(&page.items[0], Change::Upsert(v) if v["id"] == "x" && v["v"] == 2));
    assert!(matches!(&page.items[1], Change::Delete { id, .. } if id == "y"));
    assert!(page.items[0].lsn() < page.items[1].lsn());
    let token = page.continuation.expect("token");
    assert!(
        s.changes("db", "c", Some(&token), 10)
            .expect("after")
            .items
            .is_empty()
    );
    s.create_item("db", "c", json!({"id": "z", "pk": "p"}))
        .expect("z");
    let next = s.changes("db", "c", Some(&token), 10).expect("after");
    assert_eq!(next.items.len(), 1);
    assert!(s.changes("db", "c", Some("bad"), 10).is_err());
}
