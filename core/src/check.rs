//! Checking a resolver before it ships: the library behind `converge check-resolver`.
//!
//! [`check_resolver`] installs a module in a private sandbox, generates conflicts from a sample
//! item (2 to 7 siblings, deletes among them, every other field mutated), runs each conflict
//! twice from a fresh state, and reports traps with their messages, invalid answers, defers,
//! fuel against the limit, any difference between the two runs, and any violation of the
//! [`Property`]s the caller states; then it runs the multi-region simulation with the resolver
//! and checks that the regions converge. Users call it from their own tests:
//!
//! ```
//! use converge_core::check::{CheckOptions, Property, check_resolver};
//! use serde_json::json;
//!
//! // A resolver written in WAT that always picks the LWW winner.
//! let module = wat::parse_str(r#"(module (memory (export "memory") 1)
//!   (data (i32.const 16) "{\"pick\":0}")
//!   (func (export "converge_abi_version") (result i32) (i32.const 1))
//!   (func (export "converge_alloc") (param i32) (result i32) (i32.const 1024))
//!   (func (export "converge_resolve") (param i32 i32) (result i64)
//!     (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 10))))"#).unwrap();
//! let mut options = CheckOptions::new(json!({"id": "cart-1", "pk": "alice", "lines": [1, 2]}));
//! options.conflicts = 50;
//! options.simulation_seeds = 3;
//! options.properties.push(Property::new("never deletes", |r| match r.result {
//!     None => Err("the item was deleted".into()),
//!     Some(_) => Ok(()),
//! }));
//! let report = check_resolver(&module, &options, &mut |_| {}).unwrap();
//! // Picking the winner shows a delete whenever a delete is among the versions.
//! assert!(!report.passed());
//! assert!(report.findings.iter().any(|f| f.message.contains("never deletes")));
//! ```

use crate::Hlc;
use crate::model::{PartitionKey, ResolverLimits};
use crate::resolve::reason::{self, ReasonKind};
use crate::resolve::{CanonicalVersion, Outcome, ResolveRequest, check_answer, item};
use crate::sim::{Rng, SimConfig, SimPolicy};
use crate::udf::{ModuleError, WasmResolvers, abi_input};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A property every decision must keep: called with the versions and what became visible.
#[derive(Clone)]
pub struct Property {
    /// Shown in findings.
    pub name: String,
    check: Arc<PropertyFn>,
}

/// A property's check: why a resolution violates it.
type PropertyFn = dyn Fn(&Resolution<'_>) -> Result<(), String> + Send + Sync;

impl Property {
    /// A property named `name`; `check` returns why a resolution violates it.
    pub fn new(
        name: impl Into<String>,
        check: impl Fn(&Resolution<'_>) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        Property {
            name: name.into(),
            check: Arc::new(check),
        }
    }

    /// Every element of the array at `pointer` (compared by its `key` field, or whole when
    /// `key` is `None`) that is present in all versions is present in the result: the CLI's
    /// `--keeps POINTER[:KEY]`.
    pub fn keeps(pointer: &str, key: Option<&str>) -> Self {
        let (pointer, key) = (pointer.to_owned(), key.map(str::to_owned));
        let name = match &key {
            Some(k) => format!("keeps every {pointer} element (by {k}) present in all versions"),
            None => format!("keeps every {pointer} element present in all versions"),
        };
        Property::new(name, move |r| {
            let ident = |v: &Value| match &key {
                Some(k) => v.get(k).cloned().unwrap_or(Value::Null),
                None => v.clone(),
            };
            let elements = |body: Option<&Value>| -> Vec<Value> {
                body.and_then(|b| b.pointer(&pointer))
                    .and_then(Value::as_array)
                    .map(|a| a.iter().map(ident).collect())
                    .unwrap_or_default()
            };
            let mut common = elements(r.versions.first().and_then(Option::as_ref));
            for v in &r.versions[1..] {
                let here = elements(v.as_ref());
                common.retain(|e| here.contains(e));
            }
            let kept = elements(r.result);
            match common.iter().find(|e| !kept.contains(e)) {
                Some(lost) => Err(format!("{lost} is in every version but not in the result")),
                None => Ok(()),
            }
        })
    }
}

impl std::fmt::Debug for Property {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Property")
            .field("name", &self.name)
            .finish()
    }
}

/// One decided conflict, for [`Property`] checks.
#[derive(Debug)]
pub struct Resolution<'a> {
    /// The versions' bodies in canonical order (`None` for a delete), `_ts` included.
    pub versions: &'a [Option<Value>],
    /// The decision.
    pub outcome: &'a Outcome,
    /// What became visible: the picked or merged body, `None` if the item is deleted.
    pub result: Option<&'a Value>,
}

/// What [`check_resolver`] does.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// The item conflicts are generated from (a JSON object with an `id`).
    pub sample: Value,
    /// Where the partition key is in the sample (kept unchanged in every version).
    pub partition_key_path: String,
    /// Conflicts to generate (each is run twice).
    pub conflicts: usize,
    /// Everything random derives from it.
    pub seed: u64,
    /// Per-call limits, as a container definition would set them.
    pub limits: ResolverLimits,
    /// Multi-region simulation seeds to run with the resolver (0 to skip).
    pub simulation_seeds: u64,
    /// The caller's properties.
    pub properties: Vec<Property>,
}

impl CheckOptions {
    /// Defaults: 500 conflicts, 30 simulation seeds, the ABI's default limits; the partition
    /// key at `/pk` when the sample has one, else `/id`.
    pub fn new(sample: Value) -> Self {
        let partition_key_path = if sample.get("pk").is_some() {
            "/pk"
        } else {
            "/id"
        };
        CheckOptions {
            sample,
            partition_key_path: partition_key_path.into(),
            conflicts: 500,
            seed: 1,
            limits: ResolverLimits::default(),
            simulation_seeds: 30,
            properties: Vec::new(),
        }
    }
}

/// What kind of problem a [`Finding`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    /// The call trapped, ran out of fuel, exceeded memory or stack, or was too large to run.
    Trap,
    /// The answer broke the ABI (not JSON, unknown shape, index out of range, changed id...).
    InvalidAnswer,
    /// The two runs of the same conflict behaved differently.
    Difference,
    /// A stated property does not hold.
    PropertyViolated,
    /// The regions of the simulation did not converge.
    Divergence,
    /// The resolver deferred (not a failure: the conflict goes to the feed by design).
    Deferred,
}

/// One kind of problem, with how often it happened and the first input that showed it.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    /// What kind.
    pub kind: FindingKind,
    /// The feed reason, the property and why, or the simulation's failure.
    pub message: String,
    /// How many conflicts showed it.
    pub count: usize,
    /// The first ABI input that showed it (truncated to 4 KiB).
    pub example: String,
}

/// Fuel used per call, against the limit.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FuelReport {
    /// The limit per call.
    pub limit: u64,
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Maximum.
    pub max: u64,
    /// Whether the maximum used half the limit or more.
    pub close_to_limit: bool,
}

/// How the decisions were distributed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Decisions {
    /// Picks.
    pub pick: usize,
    /// Merges.
    pub merge: usize,
    /// Deletes.
    pub delete: usize,
    /// Defers.
    pub defer: usize,
    /// Failures (traps and invalid answers).
    pub failed: usize,
}

/// The simulation part of a check.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SimulationReport {
    /// Seeds run.
    pub seeds: u64,
    /// Seeds whose regions converged.
    pub converged: u64,
}

/// Everything [`check_resolver`] found.
#[derive(Clone, Debug, Serialize)]
pub struct CheckReport {
    /// The module's content hash.
    pub module: String,
    /// Conflicts generated.
    pub conflicts: usize,
    /// Calls made (two per conflict).
    pub calls: usize,
    /// Decisions of the first runs.
    pub decisions: Decisions,
    /// Problems (and defers), most serious kind first.
    pub findings: Vec<Finding>,
    /// Fuel per call.
    pub fuel: FuelReport,
    /// The simulation with the resolver.
    pub simulation: SimulationReport,
}

impl CheckReport {
    /// Whether nothing but defers was found.
    pub fn passed(&self) -> bool {
        self.findings
            .iter()
            .all(|f| f.kind == FindingKind::Deferred)
    }
}

/// Where a check is, for a progress bar.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// `"conflicts"` or `"simulation"`.
    pub phase: &'static str,
    /// Steps done in this phase.
    pub done: u64,
    /// Steps in this phase.
    pub total: u64,
}

const REGIONS: [&str; 7] = [
    "west", "east", "north", "south", "central", "asia", "europe",
];
const EXAMPLE_BYTES: usize = 4096;

/// Checks a resolver module: see the [module](self) documentation. Errors only when the module
/// is refused at install (with the reason); everything else is in the report.
pub fn check_resolver(
    module: &[u8],
    options: &CheckOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<CheckReport, ModuleError> {
    let host = Arc::new(WasmResolvers::new());
    let hash = host.install(module)?;
    let mut findings: BTreeMap<(FindingKind, String), Finding> = BTreeMap::new();
    let mut note = |kind: FindingKind, message: String, input: &[u8]| {
        findings
            .entry((kind, message.clone()))
            .or_insert_with(|| Finding {
                kind,
                message,
                count: 0,
                example: truncate(input),
            })
            .count += 1;
    };
    let mut decisions = Decisions::default();
    let mut fuel = Vec::with_capacity(options.conflicts * 2);
    let id = options
        .sample
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or("item")
        .to_owned();
    let pk = options
        .sample
        .pointer(&options.partition_key_path)
        .and_then(|v| PartitionKey::from_value(v).ok())
        .unwrap_or_else(|| PartitionKey::from(id.as_str()));
    let total = options.conflicts as u64;
    for n in 0..options.conflicts {
        let bodies = generate(
            options,
            &id,
            &pk,
            options.seed.wrapping_mul(1_000_003) ^ n as u64,
        );
        let versions = canonical(&bodies);
        let req = ResolveRequest {
            container: crate::sim::CONTAINER,
            id: &id,
            partition_key: &pk,
            versions: &versions,
            resolver: "checked",
            hash: &hash,
            limits: &options.limits,
        };
        let input = abi_input(&req);
        progress(Progress {
            phase: "conflicts",
            done: n as u64 + 1,
            total,
        });
        let (Some(first), Some(second)) = (
            host.call(&hash, &input, &options.limits),
            host.call(&hash, &input, &options.limits),
        ) else {
            // Installed above, so never: a missing module would be reported like this.
            note(FindingKind::Trap, reason::RESOLVER_MISSING.into(), &input);
            continue;
        };
        fuel.extend([first.fuel_used, second.fuel_used]);
        if !first.same_behaviour(&second) {
            note(
                FindingKind::Difference,
                format!(
                    "two runs differ: {:?} using {} fuel, then {:?} using {} fuel",
                    first.outcome, first.fuel_used, second.outcome, second.fuel_used
                ),
                &input,
            );
        }
        let outcome = check_answer(
            first.outcome,
            versions.len(),
            &id,
            &pk,
            &options.partition_key_path,
        );
        let in_order: Vec<Option<Value>> = versions
            .iter()
            .map(|v| v.body.as_deref().and_then(|b| serde_json::from_str(b).ok()))
            .collect();
        let merged;
        let result = match &outcome {
            Outcome::Pick(i) => {
                decisions.pick += 1;
                in_order[*i].as_ref()
            }
            Outcome::Merge(body) => {
                decisions.merge += 1;
                merged = serde_json::from_str::<Value>(body).ok();
                merged.as_ref()
            }
            Outcome::Delete => {
                decisions.delete += 1;
                None
            }
            Outcome::Failed(why) => {
                let kind = match reason::kind(why) {
                    Some(ReasonKind::Deferred) => {
                        decisions.defer += 1;
                        FindingKind::Deferred
                    }
                    Some(ReasonKind::InvalidOutput) => {
                        decisions.failed += 1;
                        FindingKind::InvalidAnswer
                    }
                    _ => {
                        decisions.failed += 1;
                        FindingKind::Trap
                    }
                };
                note(kind, why.clone(), &input);
                continue;
            }
            Outcome::Interrupted => {
                decisions.failed += 1;
                note(
                    FindingKind::Trap,
                    "stopped by the wall-clock watchdog".into(),
                    &input,
                );
                continue;
            }
        };
        let resolution = Resolution {
            versions: &in_order,
            outcome: &outcome,
            result,
        };
        for p in &options.properties {
            if let Err(why) = (p.check)(&resolution) {
                note(
                    FindingKind::PropertyViolated,
                    format!("{}: {why}", p.name),
                    &input,
                );
            }
        }
    }

    let simulation = simulate(options, &host, module, &mut note, progress);
    fuel.sort_unstable();
    let at = |q: usize| {
        fuel.get((fuel.len().saturating_sub(1)) * q / 100)
            .copied()
            .unwrap_or(0)
    };
    let max = fuel.last().copied().unwrap_or(0);
    let mut findings: Vec<Finding> = findings.into_values().collect();
    findings.sort_by_key(|f| (f.kind, std::cmp::Reverse(f.count)));
    Ok(CheckReport {
        module: hash,
        conflicts: options.conflicts,
        calls: options.conflicts * 2,
        decisions,
        findings,
        fuel: FuelReport {
            limit: options.limits.fuel,
            p50: at(50),
            p99: at(99),
            max,
            close_to_limit: max.saturating_mul(2) >= options.limits.fuel,
        },
        simulation,
    })
}

fn simulate(
    options: &CheckOptions,
    host: &Arc<WasmResolvers>,
    module: &[u8],
    note: &mut impl FnMut(FindingKind, String, &[u8]),
    progress: &mut dyn FnMut(Progress),
) -> SimulationReport {
    let mut report = SimulationReport {
        seeds: options.simulation_seeds,
        converged: 0,
    };
    let sample = options.sample.clone();
    for seed in 0..options.simulation_seeds {
        let mut c = SimConfig::new(
            options.seed.wrapping_add(seed),
            SimPolicy::Custom("checked".into()),
        );
        c.host = Some(host.clone());
        c.modules = vec![module.into()];
        let sample = sample.clone();
        c.bodies = Some(Arc::new(move |r| mutate(&sample, &mut Rng::new(r), 0)));
        match crate::sim::run(&c) {
            Ok(_) => report.converged += 1,
            Err(f) => note(FindingKind::Divergence, f.to_string(), &[]),
        }
        progress(Progress {
            phase: "simulation",
            done: seed + 1,
            total: options.simulation_seeds,
        });
    }
    report
}

fn truncate(input: &[u8]) -> String {
    let text = String::from_utf8_lossy(&input[..input.len().min(EXAMPLE_BYTES)]).into_owned();
    if input.len() > EXAMPLE_BYTES {
        format!("{text}… ({} bytes in all)", input.len())
    } else {
        text
    }
}

/// One generated sibling: body (`None` for a delete) and its HLC and region.
struct Generated {
    body: Option<Value>,
    hlc: Hlc,
    region: &'static str,
}

/// 2 to 7 siblings of the sample: a sixth of them deletes, the others mutated copies with the
/// sample's id and partition key.
fn generate(options: &CheckOptions, id: &str, pk: &PartitionKey, seed: u64) -> Vec<Generated> {
    let mut rng = Rng::new(seed);
    let n = 2 + rng.below(6) as usize;
    let base_ms = 1_764_230_400_000 + rng.below(1_000_000);
    (0..n)
        .map(|k| {
            let hlc = Hlc::new(base_ms + rng.below(5_000), rng.below(3) as u32);
            let body = (!rng.chance(16)).then(|| {
                let mut b = mutate(&options.sample, &mut rng, 0);
                if let Some(obj) = b.as_object_mut() {
                    obj.insert("id".into(), id.into());
                    // Stored bodies hold no system properties; the canonical versions add
                    // `_ts` as the store does.
                    obj.remove("_ts");
                }
                if let Some(slot) = b.pointer_mut(&options.partition_key_path) {
                    *slot = pk.to_value();
                }
                b
            });
            Generated {
                body,
                hlc,
                region: REGIONS[k],
            }
        })
        .collect()
}

/// The generated siblings in the store's canonical order (LWW on `/_ts`, winner first), as
/// the store's resolution builds them ([`item::canonical`]).
fn canonical(generated: &[Generated]) -> Vec<CanonicalVersion> {
    let texts: Vec<Option<String>> = generated
        .iter()
        .map(|g| g.body.as_ref().map(Value::to_string))
        .collect();
    let siblings: Vec<item::Sibling<'_>> = generated
        .iter()
        .zip(&texts)
        .enumerate()
        .filter_map(|(k, (g, text))| {
            Some(item::Sibling {
                dot: crate::Dot {
                    region: crate::RegionId::new(g.region).ok()?,
                    incarnation: crate::Incarnation(1),
                    counter: k as u64,
                },
                hlc: g.hlc,
                deleted: g.body.is_none(),
                body: text.as_deref(),
            })
        })
        .collect();
    item::canonical_versions(&siblings, &item::canonical(&siblings, "/_ts"))
}

/// A random variation of `v`: numbers, strings and booleans changed, array elements dropped
/// or duplicated with changes, object members changed, dropped or added.
pub(crate) fn mutate(v: &Value, rng: &mut Rng, depth: usize) -> Value {
    match v {
        Value::Bool(b) => Value::Bool(if rng.chance(30) { !b } else { *b }),
        Value::Number(n) if rng.chance(40) => match n.as_i64() {
            Some(i) => Value::from(i.saturating_add(rng.below(21) as i64 - 10)),
            None => Value::from(n.as_f64().unwrap_or(0.0) * (rng.below(200) as f64 / 100.0)),
        },
        Value::String(s) if rng.chance(30) => Value::String(format!("{s}-{}", rng.below(10))),
        Value::Array(a) if depth < 8 => {
            let mut out = Vec::with_capacity(a.len() + 1);
            for e in a {
                if rng.chance(15) {
                    continue;
                }
                out.push(if rng.chance(30) {
                    mutate(e, rng, depth + 1)
                } else {
                    e.clone()
                });
            }
            if !a.is_empty() && rng.chance(30) {
                let e = &a[rng.below(a.len() as u64) as usize];
                out.push(mutate(e, rng, depth + 1));
            }
            Value::Array(out)
        }
        Value::Object(o) if depth < 8 => {
            let mut out = Map::new();
            for (k, e) in o {
                if k != "id" && k != "pk" && rng.chance(5) {
                    continue;
                }
                let e = if rng.chance(40) {
                    mutate(e, rng, depth + 1)
                } else {
                    e.clone()
                };
                out.insert(k.clone(), e);
            }
            if rng.chance(5) {
                out.insert(
                    format!("extra{}", rng.below(3)),
                    Value::from(rng.below(100)),
                );
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}
