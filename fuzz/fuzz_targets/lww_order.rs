//! The LWW order is a total order and resolution does not depend on input order: see
//! `converge_checks::lww_order`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| converge_checks::lww_order::check(data));
