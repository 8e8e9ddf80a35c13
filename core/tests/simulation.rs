//! The multi-region simulation over many seeds, for each policy.
//!
//! `CONVERGE_SIM_SEEDS` sets how many seeds per policy (default 5,000: 10,000 in all);
//! `CONVERGE_SIM_SEED` replays one seed, printing its trace.

use converge_core::sim::{SimConfig, SimPolicy, run};
use std::sync::atomic::{AtomicU64, Ordering};

fn seeds() -> u64 {
    std::env::var("CONVERGE_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5_000)
}

fn config(seed: u64, policy: SimPolicy) -> SimConfig {
    let mut c = SimConfig::new(seed, policy);
    // One seed in twenty runs region 0 on redb and restarts it mid-run.
    c.durable = seed.is_multiple_of(20);
    c
}

fn sweep(policy: SimPolicy) {
    if let Some(seed) = std::env::var("CONVERGE_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        match run(&config(seed, policy.clone())) {
            Ok(r) => println!("seed {seed} ({policy:?}) converged: {r:?}"),
            Err(f) => panic!("{f}"),
        }
        return;
    }
    let n = seeds();
    let next = AtomicU64::new(0);
    let conflicts = AtomicU64::new(0);
    let failure = std::sync::Mutex::new(None);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= n || failure.lock().map(|f| f.is_some()).unwrap_or(true) {
                        break;
                    }
                    match run(&config(seed, policy.clone())) {
                        Ok(r) => {
                            conflicts.fetch_add(r.items_in_conflict as u64, Ordering::Relaxed);
                        }
                        Err(f) => {
                            if let Ok(mut slot) = failure.lock() {
                                slot.get_or_insert(f.to_string());
                            }
                        }
                    }
                }
            });
        }
    });
    if let Some(f) = failure.into_inner().ok().flatten() {
        panic!("{f}");
    }
    let conflicts = conflicts.into_inner();
    println!("{n} seeds of {policy:?} converged; {conflicts} items ended in conflict");
    // The workload must actually produce conflicts, or the sweep proves little.
    assert!(n < 50 || conflicts > 0, "no seed produced a conflict");
}

#[test]
fn lww_seeds_converge() {
    sweep(SimPolicy::Lww);
}

#[test]
fn manual_seeds_converge() {
    sweep(SimPolicy::Manual);
}
