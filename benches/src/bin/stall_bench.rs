//! Whether a slow resolver stalls writes it has nothing to do with. Two regions (west and
//! east, `converge serve` in this process, replicating over HTTP on loopback) both write
//! conflicting upserts to 40 ids of container `slow` without pause, while one client writes to
//! container `fast` at west and times each write. Run twice: `slow` under LWW (the baseline,
//! measured in the same run), then under a custom resolver that loops until its fuel (10⁹, the
//! maximum) runs out. Prints a markdown table and the ratios.
//!
//! `cargo run --release -p converge-benches --bin stall-bench [-- --writes N]` (timed writes
//! to `fast`, default 300).

use anyhow::Result;
use clap::Parser;
use converge_server::replication::Peer;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Timed writes to `fast`.
    #[arg(long, default_value_t = 300)]
    writes: usize,
}

/// Conflicting ids each region keeps rewriting in `slow`.
const IDS: usize = 40;

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts a region server in this process on `port`; returns once it listens.
fn serve(region: &str, dir: &std::path::Path, port: u16, peers: Vec<Peer>) -> Result<()> {
    converge_benches::serve(region, dir, &format!("127.0.0.1:{port}"), peers).map(drop)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

fn put_json(a: &ureq::Agent, url: &str, body: serde_json::Value) -> Result<u16> {
    Ok(a.put(url)
        .content_type("application/json")
        .send(body.to_string())?
        .status()
        .as_u16())
}

fn upsert(a: &ureq::Agent, base: &str, container: &str, item: serde_json::Value) -> Result<()> {
    let status = a
        .post(format!("{base}/dbs/db/colls/{container}/docs"))
        .header("x-upsert", "true")
        .content_type("application/json")
        .send(item.to_string())?
        .status()
        .as_u16();
    anyhow::ensure!(
        status == 200 || status == 201,
        "upsert to {container} answered {status}"
    );
    Ok(())
}

struct Figures {
    p50: Duration,
    p99: Duration,
    max: Duration,
    over_250ms: usize,
    conflicting: u64,
}

/// One run: `slow` under `policy` (with the looping module uploaded if `custom`).
fn run(policy: serde_json::Value, custom: bool, writes: usize) -> Result<Figures> {
    let dir = tempfile::tempdir()?;
    let (wp, ep) = (free_port()?, free_port()?);
    let (west, east) = (
        format!("http://127.0.0.1:{wp}"),
        format!("http://127.0.0.1:{ep}"),
    );
    let peer = |name: &str, url: &str| Peer {
        name: name.into(),
        url: url.into(),
    };
    serve(
        "west",
        &dir.path().join("west"),
        wp,
        vec![peer("east", &east)],
    )?;
    serve(
        "east",
        &dir.path().join("east"),
        ep,
        vec![peer("west", &west)],
    )?;
    let a = agent();
    let slow = json!({"partitionKey": "/pk", "conflictResolutionPolicy": policy});
    anyhow::ensure!(put_json(&a, &format!("{west}/dbs/db/colls/slow"), slow)? == 201);
    if custom {
        let status = a
            .put(format!("{west}/dbs/db/colls/slow/resolvers/spin"))
            .content_type("application/wasm")
            .send(converge_udf_examples::adversarial::LOOP)?
            .status();
        anyhow::ensure!(status == 201, "upload answered {status}");
    }
    anyhow::ensure!(
        put_json(
            &a,
            &format!("{west}/dbs/db/colls/fast"),
            json!({"partitionKey": "/pk"})
        )? == 201
    );
    // Both containers (and the module) reach east.
    while a.get(format!("{east}/dbs/db/colls/fast")).call()?.status() != 200 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let conflicting = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = [west.clone(), east.clone()]
        .into_iter()
        .map(|base| {
            let (stop, conflicting, a) = (stop.clone(), conflicting.clone(), agent());
            std::thread::spawn(move || -> Result<()> {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("s{}", n as usize % IDS);
                    upsert(&a, &base, "slow", json!({"id": id, "pk": "p", "n": n}))?;
                    conflicting.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
                Ok(())
            })
        })
        .collect();
    // Let the conflicts build up before timing.
    std::thread::sleep(Duration::from_secs(2));
    let mut latencies = Vec::with_capacity(writes);
    for n in 0..writes {
        let t = Instant::now();
        upsert(&a, &west, "fast", json!({"id": format!("f{n}"), "pk": "p"}))?;
        latencies.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join()
            .map_err(|_| anyhow::anyhow!("a writer panicked"))??;
    }
    latencies.sort();
    let at = |p: usize| latencies[(latencies.len() - 1) * p / 100];
    Ok(Figures {
        p50: at(50),
        p99: at(99),
        max: latencies[latencies.len() - 1],
        over_250ms: latencies
            .iter()
            .filter(|d| **d > Duration::from_millis(250))
            .count(),
        conflicting: conflicting.load(Ordering::Relaxed),
    })
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let base = run(json!({"mode": "lww"}), false, args.writes)?;
    let spin = run(
        json!({"mode": "custom", "resolver": "spin", "limits": {"fuel": 1_000_000_000u64}}),
        true,
        args.writes,
    )?;
    println!(
        "## {} writes to `fast` while two regions rewrite {IDS} ids of `slow` concurrently\n",
        args.writes
    );
    println!("| `slow` under | conflicting writes | p50 | p99 | max | writes > 250 ms |");
    println!("|---|---|---|---|---|---|");
    for (what, f) in [
        ("LWW (baseline)", &base),
        ("a looping resolver, fuel 10⁹", &spin),
    ] {
        println!(
            "| {what} | {} | {} | {} | {} | {} |",
            f.conflicting,
            ms(f.p50),
            ms(f.p99),
            ms(f.max),
            f.over_250ms
        );
    }
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
    println!(
        "\nlooping / LWW: p50 {:.2}×, p99 {:.2}×, max {:.2}×",
        ratio(spin.p50, base.p50),
        ratio(spin.p99, base.p99),
        ratio(spin.max, base.max)
    );
    Ok(())
}
