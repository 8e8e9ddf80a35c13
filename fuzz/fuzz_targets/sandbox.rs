//! wasm-smith modules shaped to the ABI, with arbitrary input, through the host: see
//! `converge_checks::sandbox`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| converge_checks::sandbox::check(data));
