//! The example and adversarial resolvers from `udf-examples`, compiled to WebAssembly by the
//! build, running in stores: each adversarial one is refused at install or ends in the
//! conflicts feed with its exact reason while every region keeps serving and agrees; each
//! example resolves its conflicts the same way in every region.

mod common;

use common::{exchange, set_time};
use converge_core::{
    ConflictPolicy, ConflictStatus, Error, PartitionKey, ResolverLimits, Store, WasmResolvers,
};
use converge_udf_examples::{self as examples, adversarial};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Test time only moves forward, across the cases of a test too.
static CLOCK: AtomicU64 = AtomicU64::new(10_000);

fn sandboxed(name: &str) -> Store {
    let opts = common::options().resolver_host(Arc::new(WasmResolvers::new()));
    Store::memory(name, opts).expect("store")
}

/// Three regions with container `db/c` (partition key `/pk`) resolved by `module`.
fn regions(module: &[u8]) -> [Store; 3] {
    regions_with(module, ResolverLimits::default())
}

fn regions_with(module: &[u8], limits: ResolverLimits) -> [Store; 3] {
    let stores = [sandboxed("west"), sandboxed("east"), sandboxed("north")];
    let policy = ConflictPolicy::Custom {
        resolver: "r".into(),
        hash: None,
        limits,
    };
    stores[0]
        .put_container("db", "c", "/pk", policy)
        .expect("container");
    stores[0]
        .put_resolver("db", "c", "r", module)
        .expect("install");
    exchange(&[&stores[0], &stores[1], &stores[2]]);
    stores
}

/// Each region writes its body of item `i` at a different time, then all exchange.
fn concurrent(stores: &[Store; 3], bodies: [Option<Value>; 3]) {
    for (s, body) in stores.iter().zip(bodies) {
        // Seconds apart, so `_ts` orders them: north's write is the LWW winner.
        set_time(CLOCK.fetch_add(2_000, Ordering::Relaxed));
        match body {
            Some(b) => {
                s.upsert_item("db", "c", b).expect("write");
            }
            None => {
                // Make sure the item exists here, then delete it.
                let _ = s.create_item("db", "c", json!({"id": "i", "pk": "p"}));
                s.delete_item("db", "c", &PartitionKey::from("p"), "i", None)
                    .expect("delete");
            }
        }
    }
    exchange(&[&stores[0], &stores[1], &stores[2]]);
}

/// What every region shows for `i` (asserting they agree): the body, or `None` if deleted.
fn agreed(stores: &[Store; 3]) -> Option<Value> {
    let pk = PartitionKey::from("p");
    let shown: Vec<Option<(Value, String)>> = stores
        .iter()
        .map(|s| match s.read_item("db", "c", &pk, "i") {
            Ok(item) => Some((item.body, item.etag)),
            Err(Error::NotFound { .. }) => None,
            Err(e) => panic!("read: {e}"),
        })
        .collect();
    let strip = |v: &Option<(Value, String)>| {
        v.as_ref().map(|(b, e)| {
            let mut b = b.clone();
            b.as_object_mut().expect("object").remove("_lsn");
            (b, e.clone())
        })
    };
    assert_eq!(strip(&shown[0]), strip(&shown[1]), "west and east disagree");
    assert_eq!(
        strip(&shown[0]),
        strip(&shown[2]),
        "west and north disagree"
    );
    shown[0].as_ref().map(|(b, _)| b.clone())
}

fn open_reasons(s: &Store) -> Vec<String> {
    let mut r: Vec<String> = s
        .conflicts("db", "c", None, 100)
        .expect("feed")
        .items
        .into_iter()
        .filter(|r| r.status == ConflictStatus::Open)
        .map(|r| r.reason)
        .collect();
    r.dedup();
    r
}

#[test]
fn each_misbehaving_resolver_ends_in_the_feed_with_its_reason() {
    let cases: [(&str, &[u8], &str); 7] = [
        ("panic", adversarial::PANIC, "trap: cart i cannot be merged"),
        ("loop", adversarial::LOOP, "out of fuel"),
        ("memory", adversarial::MEMORY, "memory limit"),
        ("recursion", adversarial::RECURSION, "stack overflow"),
        (
            "changes id",
            adversarial::CHANGES_ID,
            "invalid output: merge changes the id",
        ),
        (
            "not json",
            adversarial::NOT_JSON,
            "invalid output: not JSON",
        ),
        (
            "huge",
            adversarial::HUGE_ANSWER,
            "invalid output: too large",
        ),
    ];
    for (what, module, reason) in cases {
        // Writing 5 MiB byte by byte takes more than the default fuel; the definition's
        // limits replicate, so every region allows the same.
        let fuel = if what == "huge" {
            100_000_000
        } else {
            10_000_000
        };
        let stores = regions_with(
            module,
            ResolverLimits {
                fuel,
                ..ResolverLimits::default()
            },
        );
        concurrent(
            &stores,
            [0, 1, 2].map(|k| Some(json!({"id": "i", "pk": "p", "k": k}))),
        );
        // The LWW winner (the latest write, north's) shows as tentative everywhere ...
        let shown = agreed(&stores).expect("live");
        assert_eq!(shown["k"], 2, "{what}");
        for s in &stores {
            // ... and every sibling is in the feed with the exact reason.
            assert_eq!(open_reasons(s), vec![reason.to_owned()], "{what}");
            // The store keeps serving.
            s.upsert_item(
                "db",
                "c",
                json!({"id": format!("after-{}", s.region()), "pk": "p"}),
            )
            .expect("write after");
        }
        exchange(&[&stores[0], &stores[1], &stores[2]]);
        let listed = |s: &Store| {
            s.list_items("db", "c", None, None, 100)
                .expect("list")
                .items
                .len()
        };
        assert!(stores.iter().all(|s| listed(s) == 4), "{what}");
    }
}

#[test]
fn modules_that_break_the_abi_are_refused_naming_the_problem() {
    let s = sandboxed("west");
    s.put_container("db", "c", "/pk", ConflictPolicy::Manual)
        .expect("container");
    match s.put_resolver("db", "c", "r", adversarial::BAD_IMPORT) {
        Err(Error::InvalidModule(m)) => assert!(m.contains("env.now"), "{m}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    match s.put_resolver("db", "c", "r", adversarial::ABI_VERSION) {
        Err(Error::InvalidModule(m)) => assert!(m.contains("version 2"), "{m}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(s.resolvers("db", "c").expect("list").is_empty());
}

#[test]
fn cart_merge_keeps_every_regions_lines_and_removals() {
    let stores = regions(examples::CART_MERGE);
    let cart = |lines: Value, removed: Value| {
        Some(json!({"id": "i", "pk": "p", "lines": lines, "removed": removed}))
    };
    concurrent(
        &stores,
        [
            cart(
                json!([{"sku": "apple", "qty": 1, "updated": 5}, {"sku": "pear", "qty": 1, "updated": 5}]),
                json!({}),
            ),
            cart(
                json!([{"sku": "apple", "qty": 3, "updated": 9}]),
                json!({"pear": 7}),
            ),
            cart(json!([{"sku": "plum", "qty": 2, "updated": 6}]), json!({})),
        ],
    );
    let merged = agreed(&stores).expect("live");
    assert_eq!(
        merged["lines"],
        json!([{"sku": "apple", "qty": 3, "updated": 9}, {"sku": "plum", "qty": 2, "updated": 6}])
    );
    assert_eq!(merged["removed"], json!({"pear": 7}));
    assert!(stores.iter().all(|s| open_reasons(s).is_empty()));
}

#[test]
fn highest_version_field_merge_and_keep_live_decide_alike_everywhere() {
    let stores = regions(examples::HIGHEST_VERSION);
    concurrent(
        &stores,
        [7, 9, 8].map(|v| Some(json!({"id": "i", "pk": "p", "version": v}))),
    );
    assert_eq!(agreed(&stores).expect("live")["version"], 9);

    let stores = regions(examples::FIELD_MERGE);
    concurrent(
        &stores,
        [
            Some(
                json!({"id": "i", "pk": "p", "name": "Ada", "email": "a@old", "_fieldTs": {"name": 5, "email": 1}}),
            ),
            Some(
                json!({"id": "i", "pk": "p", "name": "A.", "email": "a@new", "_fieldTs": {"name": 2, "email": 6}}),
            ),
            Some(json!({"id": "i", "pk": "p", "phone": "1", "_fieldTs": {"phone": 3}})),
        ],
    );
    let m = agreed(&stores).expect("live");
    assert_eq!(
        (&m["name"], &m["email"], &m["phone"]),
        (&json!("Ada"), &json!("a@new"), &json!("1"))
    );

    let stores = regions(examples::KEEP_LIVE);
    concurrent(
        &stores,
        [
            Some(json!({"id": "i", "pk": "p", "keepLive": true, "v": 1})),
            Some(json!({"id": "i", "pk": "p", "keepLive": true, "v": 2})),
            None,
        ],
    );
    assert_eq!(
        agreed(&stores).expect("the live version beats the delete")["v"],
        2
    );
}
