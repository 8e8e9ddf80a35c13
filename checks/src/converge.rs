//! Strong eventual consistency under an arbitrary schedule: the multi-region simulation
//! (`converge_core::sim`) driven by the fuzzer's bytes — how many regions, which operations,
//! deliveries lost, reordered and duplicated, partitions, restarts of a durable region, drops
//! and re-creations — under every policy, the example resolvers compiled to WebAssembly and two
//! misbehaving ones included. The oracle: every region shows the same data and no acknowledged
//! write is lost; with a well-behaved resolver and no drops, nothing is left in the feed.

use converge_core::WasmResolvers;
use converge_core::sim::{SimConfig, SimPolicy, run};
use serde_json::{Value, json};
use std::sync::{Arc, OnceLock};

/// The custom policies the check draws from: the four example resolvers, then two adversarial
/// ones whose conflicts must all land in the feed (a trap; a merge that changes the id).
pub const RESOLVERS: [&str; 6] = [
    "cart-merge",
    "highest-version",
    "field-merge",
    "keep-live",
    "adv-panic",
    "adv-changes-id",
];

/// One host with every resolver of [`RESOLVERS`] installed, compiled once per process.
fn host() -> Arc<WasmResolvers> {
    static HOST: OnceLock<Arc<WasmResolvers>> = OnceLock::new();
    HOST.get_or_init(|| {
        let host = WasmResolvers::new();
        for name in RESOLVERS {
            let module = converge_udf_examples::by_name(name)
                .unwrap_or_else(|| panic!("the build did not produce {name}"));
            if let Err(e) = host.install(module) {
                panic!("{name} does not install: {e}");
            }
        }
        Arc::new(host)
    })
    .clone()
}

/// The simulation `data` describes. The first byte picks the policy (bits 0–2: LWW, manual or
/// one of the six [`RESOLVERS`]), whether region 0 is durable and restarted (bit 3), whether
/// containers are dropped (bit 4), and whether, under a resolver, regions switch the policy's
/// mode and limits and upload a second module (the next resolver of the list) under the same
/// name (bit 5); the rest is the schedule's tape.
pub fn config(data: &[u8]) -> Option<SimConfig> {
    let (&selector, tape) = data.split_first()?;
    let policy = match selector & 7 {
        0 => SimPolicy::Lww,
        1 => SimPolicy::Manual,
        n => SimPolicy::Custom(RESOLVERS[usize::from(n) - 2].into()),
    };
    let mut cfg = match policy {
        SimPolicy::Custom(name) => resolver_config(RESOLVERS.iter().find(|r| **r == name)?, 0),
        other => SimConfig::new(0, other),
    };
    cfg.seed = u64::from(selector);
    cfg.durable = selector & 8 != 0;
    cfg.drops = selector & 16 != 0;
    if selector & 32 != 0
        && let SimPolicy::Custom(name) = &cfg.policy
    {
        cfg.mode_changes = true;
        let at = RESOLVERS.iter().position(|r| r == name)?;
        let other = converge_udf_examples::by_name(RESOLVERS[(at + 1) % RESOLVERS.len()])?;
        cfg.modules.push(other.into());
    }
    cfg.steps = 20 + tape.len().min(2048) / 8;
    cfg.tape = tape.to_vec();
    Some(cfg)
}

/// A simulation of `seed` under the resolver `name` (one of [`RESOLVERS`]) with bodies shaped
/// for it by [`example_body`].
pub fn resolver_config(name: &'static str, seed: u64) -> SimConfig {
    let mut cfg = SimConfig::new(seed, SimPolicy::Custom(name.into()));
    cfg.host = Some(host());
    cfg.modules = converge_udf_examples::by_name(name)
        .map(|m| vec![m.into()])
        .unwrap_or_default();
    cfg.bodies = Some(Arc::new(move |r| example_body(name, r)));
    cfg.watchdog = true;
    cfg
}

/// Runs the simulation `data` describes; panics when regions disagree, a write is lost, or a
/// well-behaved example resolver left a conflict in the feed.
pub fn check(data: &[u8]) {
    let Some(cfg) = config(data) else {
        return;
    };
    let report = match run(&cfg) {
        Ok(r) => r,
        Err(failure) => panic!("{failure}"),
    };
    if let SimPolicy::Custom(name) = &cfg.policy
        && !name.starts_with("adv-")
        && !cfg.drops
        && !cfg.mode_changes
    {
        assert_eq!(
            report.open_conflicts, 0,
            "{name} left conflicts in the feed: {report:?}"
        );
    }
}

/// Bodies shaped for each example resolver, from one random number: carts with lines and
/// removals for cart-merge, a `version` for highest-version, per-field timestamps for
/// field-merge, a `keepLive` flag for keep-live, a small number otherwise.
pub fn example_body(example: &str, r: u64) -> Value {
    let bits = |shift: u32, n: u64| (r >> shift) % n;
    const SKUS: [&str; 3] = ["apple", "pear", "plum"];
    match example {
        "cart-merge" => {
            let lines: Vec<Value> = (0..3u32)
                .filter(|k| bits(*k, 2) == 1)
                .map(|k| {
                    json!({
                        "sku": SKUS[k as usize],
                        "qty": 1 + bits(8 + 4 * k, 3),
                        "updated": bits(20 + 4 * k, 8),
                    })
                })
                .collect();
            let removed: serde_json::Map<String, Value> = (0..3u32)
                .filter(|k| bits(40 + k, 4) == 0)
                .map(|k| (SKUS[k as usize].to_owned(), json!(bits(44 + 4 * k, 8))))
                .collect();
            json!({"customerId": "alice", "lines": lines, "removed": removed})
        }
        "highest-version" => json!({"version": bits(0, 4), "note": bits(8, 100)}),
        "field-merge" => json!({
            "name": format!("n{}", bits(0, 5)),
            "email": format!("e{}", bits(4, 5)),
            "_fieldTs": {"name": bits(8, 6), "email": bits(12, 6)},
        }),
        "keep-live" => json!({"keepLive": bits(0, 2) == 1, "v": bits(4, 10)}),
        _ => json!({"n": bits(0, 5)}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first byte reaches every policy: LWW, manual and each resolver.
    #[test]
    fn every_policy_is_reachable() {
        let mut seen: Vec<String> = (0..8u8)
            .filter_map(|b| config(&[b]))
            .map(|c| format!("{:?}", c.policy))
            .collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 2 + RESOLVERS.len(), "{seen:?}");
    }
}
