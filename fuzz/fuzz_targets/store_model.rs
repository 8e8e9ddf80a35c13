//! The durable store against a plain model of the same operations, with reopens: see
//! `converge_checks::store_model`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| converge_checks::store_model::check(data));
