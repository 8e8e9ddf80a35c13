//! Helpers shared by the behaviour tests.
#![allow(dead_code)]

use converge_core::{Batch, Cursor, Store, StoreOptions};
use std::cell::Cell;

thread_local! {
    static NOW: Cell<u64> = const { Cell::new(1_764_230_400_000) };
}

fn now() -> u64 {
    NOW.with(Cell::get)
}

/// Sets the physical time every test store on this thread sees: ms after a fixed base.
pub fn set_time(ms: u64) {
    NOW.with(|c| c.set(1_764_230_400_000 + ms));
}

/// Store options on the test clock.
pub fn options() -> StoreOptions {
    StoreOptions::new().clock_source(now)
}

/// A memory store on the test clock.
pub fn region(name: &str) -> Store {
    Store::memory(name, StoreOptions::new().clock_source(now)).expect("memory store")
}

/// Everything `from` has, as one batch.
pub fn everything(from: &Store) -> Batch {
    from.read_log(Cursor::START, usize::MAX).expect("read log")
}

/// Pulls from `src` into `dst` with `dst`'s saved cursor until caught up.
pub fn pull(dst: &Store, src: &Store) {
    loop {
        let c = dst.cursor(src.region().as_str()).expect("cursor");
        // As a server pulls: saying who it is and what it has applied.
        let b = src
            .read_log_for(Some(&dst.puller()), c, 100)
            .expect("read log");
        dst.apply_batch(&b).expect("apply");
        if !b.more {
            break;
        }
    }
}

/// Full exchange between all stores.
pub fn exchange(stores: &[&Store]) {
    for _ in 0..2 {
        for a in stores {
            for b in stores {
                if a.region() != b.region() {
                    pull(a, b);
                }
            }
        }
    }
}

/// A valid resolver module whose bytes depend on `tag` (so each tag has its own content hash):
/// for tests whose resolver host decides in Rust and needs a module to be held by the store.
pub fn module(tag: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module (memory (export "memory") 1) (data (i32.const 0) "{tag}")
            (func (export "converge_abi_version") (result i32) (i32.const 1))
            (func (export "converge_alloc") (param i32) (result i32) (i32.const 1024))
            (func (export "converge_resolve") (param i32 i32) (result i64) (i64.const 0)))"#
    ))
    .expect("wat")
}

/// A module answering `{"pick":i}`.
pub fn pick(i: usize) -> Vec<u8> {
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
