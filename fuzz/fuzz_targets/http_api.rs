//! Arbitrary requests into the region server's router in-process: the contract's statuses and
//! error shape, never a panic or a 5xx: see `converge_checks::http_api`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| converge_checks::http_api::check(data));
