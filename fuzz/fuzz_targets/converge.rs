//! An arbitrary schedule for the multi-region simulation: the fuzzer's bytes drive every choice
//! (regions, operations, deliveries, partitions, restarts, drops); the oracle checks that the
//! regions agree and that nothing is lost.
#![no_main]

use converge_core::sim::{SimConfig, SimPolicy, run};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, tape)) = data.split_first() else {
        return;
    };
    let policy = if selector & 1 == 0 {
        SimPolicy::Lww
    } else {
        SimPolicy::Manual
    };
    let mut cfg = SimConfig::new(u64::from(selector), policy);
    cfg.steps = 20 + tape.len().min(2048) / 8;
    cfg.tape = tape.to_vec();
    if let Err(failure) = run(&cfg) {
        panic!("{failure}");
    }
});
