//! The multi-region simulation over many seeds, for each policy.
//!
//! `CONVERGE_SIM_SEEDS` sets how many seeds per policy (default 7,000: 21,000 in all);
//! `CONVERGE_SIM_SEED` replays one seed, printing its trace.

use converge_core::sim::{SimConfig, SimPolicy, run, run_seeds};
use converge_core::{Outcome, ResolveRequest, ResolverHost};
use std::sync::Arc;

/// A deterministic custom resolver that exercises every outcome: merges when the versions'
/// `n` sum (plus a number the module's hash gives, so module versions decide differently) is
/// even, picks the last version when it is 1 mod 4, deletes on 3 mod 8, and fails (as a
/// trapping resolver would) otherwise. The simulation's watchdog stops a third of its calls
/// made under a region's writer, as it would a slow module's.
struct MixedHost;

impl ResolverHost for MixedHost {
    fn resolve(&self, req: &ResolveRequest<'_>) -> Outcome {
        let module = u64::from_str_radix(&req.hash[..1], 16).unwrap_or(0);
        let sum: u64 = module
            + req
                .versions
                .iter()
                .filter_map(|v| v.body.as_deref())
                .filter_map(|b| serde_json::from_str::<serde_json::Value>(b).ok())
                .filter_map(|b| b["n"].as_u64())
                .sum::<u64>();
        match sum % 8 {
            0 | 2 | 4 | 6 => Outcome::Merge(
                serde_json::json!({"id": req.id, "pk": req.partition_key.to_value(), "n": sum})
                    .to_string(),
            ),
            1 | 5 => Outcome::Pick(req.versions.len() - 1),
            3 => Outcome::Delete,
            _ => Outcome::Failed("trap: odd sum".into()),
        }
    }
}

/// Three valid modules with different bytes (so different hashes), for [`MixedHost`], which
/// decides by the hash alone.
fn module_versions() -> Vec<Arc<[u8]>> {
    (0..3)
        .map(|v| {
            wat::parse_str(format!(
                r#"(module (memory (export "memory") 1) (data (i32.const 0) "v{v}")
                    (func (export "converge_abi_version") (result i32) (i32.const 1))
                    (func (export "converge_alloc") (param i32) (result i32) (i32.const 1024))
                    (func (export "converge_resolve") (param i32 i32) (result i64) (i64.const 0)))"#
            ))
            .expect("wat")
            .into()
        })
        .collect()
}

fn seeds() -> u64 {
    std::env::var("CONVERGE_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7_000)
}

fn config(seed: u64, policy: SimPolicy) -> SimConfig {
    let custom = matches!(policy, SimPolicy::Custom(_));
    let mut c = SimConfig::new(seed, policy);
    if custom {
        c.host = Some(Arc::new(MixedHost));
        c.modules = module_versions();
        c.mode_changes = true;
        c.watchdog = true;
    }
    // One seed in twenty runs region 0 on redb and restarts it mid-run.
    c.durable = seed.is_multiple_of(20);
    c
}

/// The first seed of a sweep (`CONVERGE_SIM_FIRST`, default 0): a long run goes on where an
/// earlier one stopped.
fn first_seed() -> u64 {
    std::env::var("CONVERGE_SIM_FIRST")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn sweep(policy: SimPolicy) {
    let n = seeds();
    let first = first_seed();
    let p = policy.clone();
    sweep_with(&format!("{policy:?}"), n, move |seed| {
        config(first + seed, p.clone())
    });
}

/// Runs `n` seeds of `make` on every core (or the one `CONVERGE_SIM_SEED` names).
fn sweep_with(what: &str, n: u64, make: impl Fn(u64) -> SimConfig + Sync) {
    if let Some(seed) = std::env::var("CONVERGE_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        match run(&make(seed)) {
            Ok(r) => println!("seed {seed} ({what}) converged: {r:?}"),
            Err(f) => panic!("{f}"),
        }
        return;
    }
    let reports = run_seeds(n, make).unwrap_or_else(|f| panic!("{f}"));
    let conflicts: usize = reports.iter().map(|r| r.items_in_conflict).sum();
    let tombstones: usize = reports.iter().map(|r| r.collected_tombstones).sum();
    let log: usize = reports.iter().map(|r| r.collected_log_entries).sum();
    let joins: usize = reports.iter().map(|r| r.joins).sum();
    let retired: usize = reports.iter().map(|r| r.retirements).sum();
    println!(
        "{n} seeds of {what} converged; {conflicts} items ended in conflict; collection purged \
         {tombstones} tombstones and {log} log entries; {joins} regions joined from snapshots, \
         {retired} retired"
    );
    assert!(n < 50 || retired > 0, "no seed retired a region");
    assert!(n < 50 || joins > 0, "no seed joined a region");
    // The workload must actually produce conflicts and collect, or the sweep proves little.
    assert!(n < 50 || conflicts > 0, "no seed produced a conflict");
    assert!(n < 50 || tombstones > 0, "no seed purged a tombstone");
    assert!(n < 50 || log > 0, "no seed collected a log entry");
}

#[test]
fn lww_seeds_converge() {
    sweep(SimPolicy::Lww);
}

#[test]
fn manual_seeds_converge() {
    sweep(SimPolicy::Manual);
}

/// Custom resolution (merges, picks, deletes, failures, calls the watchdog stops, module
/// re-uploads, switches to manual and LWW and back) converges too.
#[test]
fn custom_seeds_converge() {
    sweep(SimPolicy::Custom("mixed".into()));
}
