//! The example resolvers, compiled to WebAssembly by the build, in the multi-region simulation:
//! every conflict resolved (nothing reaches the feed) and every region converged, 100 seeds
//! each (one in twenty with a durable region restarted), without drops (a drop's
//! `container replaced` records would be feed entries too). Misbehaving resolvers converge too,
//! with their conflicts in the feed.

use converge_checks::converge::{RESOLVERS, resolver_config};
use converge_core::sim::run_seeds;

fn seeds(name: &'static str, n: u64) -> Vec<converge_core::sim::SimReport> {
    let make = |seed: u64| {
        let mut c = resolver_config(name, seed);
        c.durable = seed.is_multiple_of(20);
        c.drops = false;
        c
    };
    run_seeds(n, make).unwrap_or_else(|f| panic!("{name}: {f}"))
}

#[test]
fn example_resolvers_converge_with_nothing_in_the_feed() {
    for name in RESOLVERS.iter().filter(|r| !r.starts_with("adv-")) {
        let reports = seeds(name, 100);
        let conflicts: usize = reports.iter().map(|r| r.items_in_conflict).sum();
        let open: usize = reports.iter().map(|r| r.open_conflicts).sum();
        assert_eq!(open, 0, "{name} left conflicts in the feed");
        assert!(
            conflicts > 0,
            "{name}: no seed produced a conflict to resolve"
        );
    }
}

#[test]
fn misbehaving_resolvers_converge_with_their_conflicts_in_the_feed() {
    for name in RESOLVERS.iter().filter(|r| r.starts_with("adv-")) {
        let reports = seeds(name, 30);
        let open: usize = reports.iter().map(|r| r.open_conflicts).sum();
        assert!(open > 0, "{name}: no conflict reached the feed");
    }
}

/// A module in WAT that defers every conflict (`{"defer": "needs review"}`).
fn deferring_module() -> Vec<u8> {
    let answer = r#"{"defer":"needs review"}"#;
    wat::parse_str(format!(
        r#"(module (memory (export "memory") 1) (data (i32.const 0) "{}")
            (func (export "converge_abi_version") (result i32) (i32.const 1))
            (func (export "converge_alloc") (param i32) (result i32) (i32.const 1024))
            (func (export "converge_resolve") (param i32 i32) (result i64) (i64.const {})))"#,
        answer.replace('"', "\\\""),
        answer.len()
    ))
    .expect("the deferring module assembles")
}

/// The whole lifecycle with real WebAssembly modules uploaded and re-uploaded under one name
/// during partitions: one that picks (highest-version), one that merges (field-merge), one
/// that traps (adv-panic), one that defers, and one that loops until its fuel runs out
/// (adv-loop), with the simulated watchdog stopping calls under each region's writer, policy
/// and limit changes across every mode, drops and re-creations. Every region converges, and
/// the oracle's recomputation of each item with the same pure function agrees.
#[test]
fn real_modules_converge_across_the_lifecycle() {
    let names = ["highest-version", "field-merge", "adv-panic", "adv-loop"];
    let mut modules: Vec<std::sync::Arc<[u8]>> = names
        .iter()
        .map(|n| converge_udf_examples::by_name(n).expect("built").into())
        .collect();
    modules.insert(3, deferring_module().into());
    let make = |seed: u64| {
        let mut c = resolver_config("highest-version", seed);
        c.modules = modules.clone();
        c.mode_changes = true;
        c.durable = seed.is_multiple_of(10);
        c.bodies = Some(std::sync::Arc::new(|r| {
            let mut body = converge_checks::converge::example_body("highest-version", r);
            let fields = converge_checks::converge::example_body("field-merge", r >> 16);
            if let (Some(b), Some(f)) = (body.as_object_mut(), fields.as_object()) {
                b.extend(f.clone());
            }
            body
        }));
        c
    };
    let reports = run_seeds(150, make).unwrap_or_else(|f| panic!("{f}"));
    let open: usize = reports.iter().map(|r| r.open_conflicts).sum();
    let conflicts: usize = reports.iter().map(|r| r.items_in_conflict).sum();
    assert!(conflicts > 0, "no seed produced a conflict");
    assert!(open > 0, "no conflict reached the feed");
    let reasons: std::collections::BTreeSet<&str> = reports
        .iter()
        .flat_map(|r| &r.reasons)
        .map(|r| r.split(':').next().unwrap_or(r))
        .collect();
    for due in ["trap", "deferred", "out of fuel", "manual policy"] {
        assert!(reasons.contains(due), "no record says {due:?}: {reasons:?}");
    }
}
