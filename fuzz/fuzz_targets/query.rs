//! Arbitrary query text, continuations and item text into `converge-query`, and
//! byte-driven generated queries checked against the reference model: never a panic,
//! every failure a QueryError. See `query/tests/model/check.rs`.
#![no_main]

#[path = "../../query/tests/model/mod.rs"]
#[allow(dead_code)]
mod model;

libfuzzer_sys::fuzz_target!(|data: &[u8]| model::check::check(data));
