//! Regression tests for the resolver and definition lifecycle (issue 10): each schedule below
//! once left two regions that had seen the same writes showing different data, or a region
//! stalled, or state lost across a restart.

mod common;

use common::set_time;
use converge_core::{ConflictPolicy, ResolverLimits, Store, WasmResolvers};
use std::sync::Arc;

fn sandboxed(name: &str) -> Store {
    let opts = common::options().resolver_host(Arc::new(WasmResolvers::new()));
    Store::memory(name, opts).expect("store")
}

/// A module answering `{"pick":i}`.
fn pick(i: usize) -> Vec<u8> {
    let json = format!(r#"{{"pick":{i}}}"#);
    wat::parse_str(format!(
        r#"(module (memory (export "memory") 1)
            (data (i32.const 16) "{}")
            (func (export "converge_abi_version") (result i32) (i32.const 1))
            (func (export "converge_alloc") (param i32) (result i32) (i32.const 1024))
            (func (export "converge_resolve") (param i32 i32) (result i64)
              (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const {}))))"#,
        json.replace('"', "\\\""),
        json.len()
    ))
    .expect("wat")
}

fn custom(resolver: &str) -> ConflictPolicy {
    ConflictPolicy::Custom {
        resolver: resolver.into(),
        hash: None,
        limits: ResolverLimits::default(),
    }
}

/// Defect 5: `all_containers` parsed resolver items as definitions and failed.
#[test]
fn all_containers_lists_definitions_once_a_resolver_is_installed() {
    let a = sandboxed("a");
    a.put_container("db", "carts", "/pk", custom("m"))
        .expect("container");
    a.put_container("other", "orders", "/pk", ConflictPolicy::Manual)
        .expect("container");
    a.put_resolver("db", "carts", "m", &pick(0)).expect("install");
    set_time(1);
    let names: Vec<(String, String)> = a
        .all_containers()
        .expect("all containers")
        .into_iter()
        .map(|d| (d.database, d.name))
        .collect();
    assert_eq!(
        names,
        vec![
            ("db".to_owned(), "carts".to_owned()),
            ("other".to_owned(), "orders".to_owned())
        ]
    );
}

/// Defect 7: the clock was persisted only with the counter reservations, so after a restart
/// it resumed below timestamps it had issued or followed from a peer.
#[test]
fn the_clock_never_goes_backwards_across_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let open = || Store::open(dir.path(), "west", common::options()).expect("open");
    let west = open();
    west.create_container("db", "c", "/pk").expect("container");
    let east = common::region("east");
    east.create_container("db", "c", "/pk").expect("container");
    // East's clock is 4 s ahead (within the lead West follows).
    set_time(14_000);
    east.upsert_item("db", "c", serde_json::json!({"id": "x", "pk": "p", "n": 1}))
        .expect("east");
    set_time(10_000);
    west.upsert_item("db", "c", serde_json::json!({"id": "y", "pk": "p", "n": 1}))
        .expect("west");
    west.apply_batch(&common::everything(&east)).expect("apply");
    let hlcs = |s: &Store| -> Vec<converge_core::Hlc> {
        common::everything(s).versions.iter().map(|v| v.hlc).collect()
    };
    let before = hlcs(&west).into_iter().max().expect("versions");
    drop(west);
    set_time(10_001);
    let west = open();
    west.upsert_item("db", "c", serde_json::json!({"id": "x", "pk": "p", "n": 2}))
        .expect("west again");
    let after = *hlcs(&west).last().expect("the new write");
    assert!(
        after > before,
        "a write after the restart ({after:?}) must follow every timestamp before it ({before:?})"
    );
    let pk = converge_core::PartitionKey::from("p");
    let east_ts = east.read_item("db", "c", &pk, "x").expect("east").ts;
    assert!(west.read_item("db", "c", &pk, "x").expect("read").ts >= east_ts);
}
