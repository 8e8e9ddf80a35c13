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
