//! The multi-region simulation, shared by tests, fuzz targets and benches.
//!
//! 3 to 7 regions write concurrently to a small key space (so conflicts are frequent) while
//! replication delivers partial batches, reorders, duplicates and drops them, links are cut and
//! healed, container policies change, containers are dropped and re-created, and a durable
//! region is closed and reopened. After a full exchange the oracle checks strong eventual
//! consistency and that no version was lost. Everything derives from the seed, so a failure
//! replays exactly.

mod oracle;
mod rng;
mod world;

pub use rng::Rng;
pub(crate) use world::CONTAINER;
pub use world::{BodyGenerator, SimConfig, SimFailure, SimPolicy, SimReport, run};

/// Runs the simulations `make` gives for seeds `0..n` on every core, and returns their reports
/// in seed order, or the failure of the first seed found failing (the others stop then).
pub fn run_seeds(
    n: u64,
    make: impl Fn(u64) -> SimConfig + Sync,
) -> Result<Vec<SimReport>, SimFailure> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};
    let next = AtomicU64::new(0);
    let reports = Mutex::new(Vec::new());
    let failure = Mutex::new(None);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= n || failure.lock().map_or(true, |f| f.is_some()) {
                        break;
                    }
                    match run(&make(seed)) {
                        Ok(r) => {
                            if let Ok(mut all) = reports.lock() {
                                all.push((seed, r));
                            }
                        }
                        Err(f) => {
                            if let Ok(mut slot) = failure.lock() {
                                slot.get_or_insert(f);
                            }
                        }
                    }
                }
            });
        }
    });
    if let Some(f) = failure.into_inner().ok().flatten() {
        return Err(f);
    }
    let mut reports = reports.into_inner().unwrap_or_default();
    reports.sort_by_key(|(seed, _)| *seed);
    Ok(reports.into_iter().map(|(_, r)| r).collect())
}
