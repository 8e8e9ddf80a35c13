//! Arbitrary bytes into the SDK's input decoding, and arbitrary conflicts through every example
//! resolver: see `converge_checks::sdk_input`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| converge_checks::sdk_input::check(data));
