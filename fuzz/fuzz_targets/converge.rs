//! An arbitrary schedule for the multi-region simulation, every policy: see
//! `converge_checks::converge`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| converge_checks::converge::check(data));
