//! `converge check-resolver`: checks a resolver module before it ships (see
//! `converge_core::check`), with a progress bar, a human report or `--json`.

use anyhow::{Context, Result, bail};
use clap::Args;
use converge_core::ResolverLimits;
use converge_core::check::{CheckOptions, CheckReport, FindingKind, Property, check_resolver};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

/// Options of `converge check-resolver`.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The resolver module (`.wasm`).
    module: PathBuf,
    /// An item the generated conflicts derive from (a JSON object with an `id`); a generic
    /// item by default.
    #[arg(long)]
    sample: Option<PathBuf>,
    /// Where the sample's partition key is (`/pk` if the sample has one, else `/id`).
    #[arg(long)]
    partition_key_path: Option<String>,
    /// Conflicts to generate (each runs twice).
    #[arg(long, default_value_t = 500)]
    conflicts: usize,
    /// Multi-region simulation seeds to run with the resolver.
    #[arg(long, default_value_t = 30)]
    seeds: u64,
    /// Seed of the generated conflicts.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Fuel per call (the container's limit).
    #[arg(long)]
    fuel: Option<u64>,
    /// Property: every element of the array at POINTER present in all versions is in the
    /// result, compared by its KEY field when given (repeatable), e.g. `--keeps /lines:sku`.
    #[arg(long, value_name = "POINTER[:KEY]")]
    keeps: Vec<String>,
    /// Print the report as JSON (no progress bar).
    #[arg(long)]
    json: bool,
}

/// Runs the check; `Ok(false)` when it found problems.
pub fn run(args: &CheckArgs) -> Result<bool> {
    let module = std::fs::read(&args.module)
        .with_context(|| format!("cannot read {}", args.module.display()))?;
    let sample = match &args.sample {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", path.display()))?
        }
        None => serde_json::json!({"id": "item-1", "pk": "p", "name": "sample", "n": 1,
            "tags": ["a", "b"], "done": false}),
    };
    if sample.get("id").and_then(|v| v.as_str()).is_none() {
        bail!("the sample must be a JSON object with a string `id`");
    }
    let mut options = CheckOptions::new(sample);
    if let Some(p) = &args.partition_key_path {
        if !p.starts_with('/') {
            bail!("--partition-key-path must be a JSON pointer such as /customerId");
        }
        options.partition_key_path = p.clone();
    }
    options.conflicts = args.conflicts;
    options.simulation_seeds = args.seeds;
    options.seed = args.seed;
    if let Some(fuel) = args.fuel {
        options.limits = ResolverLimits {
            fuel,
            ..ResolverLimits::default()
        };
    }
    for spec in &args.keeps {
        let (pointer, key) = match spec.split_once(':') {
            Some((p, k)) => (p, Some(k)),
            None => (spec.as_str(), None),
        };
        if !pointer.starts_with('/') {
            bail!("--keeps takes a JSON pointer, such as /lines:sku");
        }
        options.properties.push(Property::keeps(pointer, key));
    }

    let bar = if args.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0).with_style(
            ProgressStyle::with_template("{msg:>11} [{bar:40}] {pos}/{len}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        )
    };
    let report = check_resolver(&module, &options, &mut |p| {
        bar.set_message(p.phase);
        bar.set_length(p.total);
        bar.set_position(p.done);
    })
    .with_context(|| format!("{} was refused", args.module.display()))?;
    bar.finish_and_clear();

    if args.json {
        let mut v = serde_json::to_value(&report)?;
        v["passed"] = report.passed().into();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_report(&args.module, &report);
    }
    Ok(report.passed())
}

fn print_report(path: &std::path::Path, r: &CheckReport) {
    println!("resolver {} (content hash {})", path.display(), r.module);
    let d = &r.decisions;
    println!(
        "{} conflicts, each run twice from a fresh state: {} picks, {} merges, {} deletes, {} defers, {} failures",
        r.conflicts, d.pick, d.merge, d.delete, d.defer, d.failed
    );
    let f = &r.fuel;
    println!(
        "fuel per call: p50 {}, p99 {}, max {} of {} ({:.1}%){}",
        f.p50,
        f.p99,
        f.max,
        f.limit,
        f.max as f64 * 100.0 / f.limit.max(1) as f64,
        if f.close_to_limit {
            "  WARNING: close to the limit; larger items may run out of fuel"
        } else {
            ""
        }
    );
    println!(
        "simulation: {} of {} seeds converged",
        r.simulation.converged, r.simulation.seeds
    );
    for finding in &r.findings {
        let kind = match finding.kind {
            FindingKind::Trap => "TRAP",
            FindingKind::InvalidAnswer => "INVALID ANSWER",
            FindingKind::Difference => "RUNS DIFFER",
            FindingKind::PropertyViolated => "PROPERTY VIOLATED",
            FindingKind::Divergence => "DIVERGED",
            FindingKind::Deferred => "deferred",
        };
        println!(
            "\n{kind} ({} conflicts): {}",
            finding.count, finding.message
        );
        if !finding.example.is_empty() {
            let ex: String = finding.example.chars().take(400).collect();
            println!("  first input: {ex}");
        }
    }
    println!("\n{}", if r.passed() { "PASSED" } else { "FAILED" });
}
