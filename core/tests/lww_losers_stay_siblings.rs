//! Regression: LWW losers must stay siblings until a write covers them.
//!
//! Region A deletes an item and then re-creates it, while region B writes it concurrently with
//! a higher timestamp. The delete beats B's write (deletes win), but A's re-creation, causally
//! after the delete, ranks below B's write. A region that dropped B's write early, when the
//! delete beat it, would disagree with one that received the re-creation first.

mod common;

use common::{region, set_time};
use converge_core::{ConflictPolicy, PartitionKey, Store, Version};
use serde_json::json;

const DB: &str = "db";
const C: &str = "c";

fn setup(stores: &[&Store]) {
    for s in stores {
        s.put_container(DB, C, "/pk", ConflictPolicy::default())
            .expect("container");
    }
}

fn local_versions(s: &Store) -> Vec<Version> {
    common::everything(s)
        .versions
        .into_iter()
        .filter(|v| v.dot.region == *s.region())
        .collect()
}

#[test]
fn regions_agree_whichever_of_delete_or_recreate_arrives_first() {
    let a = region("a");
    let b = region("b");
    let early = region("x"); // gets A's delete before B's write
    let late = region("y"); // gets A's re-creation first
    setup(&[&a, &b, &early, &late]);

    set_time(1_000_000);
    a.create_item(DB, C, json!({"id": "i", "pk": "p", "v": "original"}))
        .expect("create");
    // Everyone (B included) sees the original.
    let original = local_versions(&a);
    for s in [&b, &early, &late] {
        s.apply_versions(&original).expect("deliver original");
    }
    set_time(1_000_100);
    a.delete_item(DB, C, &PartitionKey::from("p"), "i", None)
        .expect("delete");
    set_time(1_000_200);
    a.create_item(DB, C, json!({"id": "i", "pk": "p", "v": "recreated by a"}))
        .expect("recreate");
    // B writes concurrently, with a clock far ahead of A's.
    set_time(1_004_000);
    b.upsert_item(DB, C, json!({"id": "i", "pk": "p", "v": "written by b"}))
        .expect("b writes");

    let av = local_versions(&a);
    let (create, delete, recreate) = (&av[1], &av[2], &av[3]);
    assert!(delete.deleted && !recreate.deleted && !create.deleted);
    let bv: Vec<Version> = local_versions(&b)
        .into_iter()
        .filter(|v| v.key.id == "i")
        .collect();

    early
        .apply_versions(std::slice::from_ref(delete))
        .expect("delete first");
    early.apply_versions(&bv).expect("then b");
    early
        .apply_versions(std::slice::from_ref(recreate))
        .expect("then recreate");

    late.apply_versions(std::slice::from_ref(recreate))
        .expect("recreate first");
    late.apply_versions(&bv).expect("then b");
    late.apply_versions(std::slice::from_ref(delete))
        .expect("then delete");

    let pk = PartitionKey::from("p");
    let e = early.read_item(DB, C, &pk, "i").expect("visible in early");
    let l = late.read_item(DB, C, &pk, "i").expect("visible in late");
    assert_eq!(e.etag, l.etag, "regions must agree");
    assert_eq!(
        e.body["v"], "written by b",
        "B's write has the higher timestamp and wins"
    );
    // Both keep B's write and A's re-creation as siblings.
    let ck = converge_core::ItemKey {
        partition_key: pk.clone(),
        id: "i".into(),
    };
    let cid = early.container(DB, C).expect("def").creation_id;
    let es = early.item_state(cid, &ck).expect("state").expect("exists");
    let ls = late.item_state(cid, &ck).expect("state").expect("exists");
    assert_eq!((&es.siblings, &es.context), (&ls.siblings, &ls.context));
    assert_eq!(es.siblings.len(), 2);
    // A later write anywhere covers both and ends the conflict.
    set_time(1_005_000);
    early
        .replace_item(
            DB,
            C,
            "i",
            json!({"id": "i", "pk": "p", "v": "settled"}),
            None,
        )
        .expect("settle");
    let settled = local_versions(&early);
    late.apply_versions(&settled).expect("deliver");
    assert_eq!(
        late.read_item(DB, C, &pk, "i").expect("read").body["v"],
        "settled"
    );
    // In x, A's re-creation was never visible before the settling write covered it: lost to
    // LWW. In y it was visible for a while, so nothing was lost there.
    assert_eq!(early.stats().lost_to_lww, 1);
    assert_eq!(late.stats().lost_to_lww, 0);
}
