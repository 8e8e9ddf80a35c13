//! Prints the benchmark ratios from criterion's results: each subject against the baseline
//! measured in the same run. Run `cargo bench -p converge-benches` first.

use anyhow::{Context, Result};
use clap::Parser;
use std::path::{Path, PathBuf};

fn median_ns(root: &Path, group: &str, bench: &str) -> Result<f64> {
    let path = root
        .join(group)
        .join(bench)
        .join("new")
        .join("estimates.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    v["median"]["point_estimate"]
        .as_f64()
        .context("no median in estimates.json")
}

/// Prints each benchmark against the baseline measured in the same run, from criterion's
/// results (run `cargo bench -p converge-benches` first).
#[derive(Parser)]
struct Args {
    /// Criterion's output folder.
    #[arg(default_value = "target/criterion")]
    root: PathBuf,
}

fn main() -> Result<()> {
    let Args { root } = Args::parse();
    let rows = [
        (
            "apply_lww_memory",
            "baseline_btreemap_insert",
            "converge_apply",
            10_000.0,
            "10,000 remote versions, 1 KiB, memory store",
        ),
        (
            "durable_write",
            "baseline_redb_commit",
            "converge_upsert",
            1.0,
            "one local write, fsync",
        ),
        (
            "durable_batch",
            "baseline_redb_1000_inserts",
            "converge_apply_1000",
            1000.0,
            "1,000 remote versions, one durable transaction",
        ),
    ];
    println!("| benchmark | baseline (median) | converge (median) | ratio | per element |");
    println!("|---|---|---|---|---|");
    for (group, base, subject, n, what) in rows {
        let b = median_ns(&root, group, base)?;
        let s = median_ns(&root, group, subject)?;
        println!(
            "| {what} | {:.1} µs | {:.1} µs | {:.2}× | {:.0} ns ({:.0}/s) |",
            b / 1e3,
            s / 1e3,
            s / b,
            s / n,
            n / (s / 1e9)
        );
    }
    Ok(())
}
