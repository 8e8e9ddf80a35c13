//! One region under 64 concurrent HTTP clients on loopback, against the same store called
//! in-process by 64 threads (the ratio is the server's cost); the replication lag to a second
//! region pulling from it during that load; and the versions per second a fresh region applies
//! from a peer. Prints markdown tables.
//!
//! `cargo run --release -p converge-benches --bin server-bench [-- --writes N]` (writes per
//! client, default 100).

use anyhow::Result;
use clap::Parser;
use converge_core::{ConflictPolicy, Durability, Store, StoreOptions};
use converge_server::cosmos::auth::MasterKey;
use converge_server::replication::Peer;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

static CLIENTS: std::sync::LazyLock<usize> = std::sync::LazyLock::new(|| {
    std::env::var("CLIENTS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(64)
});

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted
        .get((sorted.len().saturating_sub(1)) * p / 100)
        .copied()
        .unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn body(client: usize, n: usize) -> serde_json::Value {
    json!({"id": format!("c{client}-{n}"), "pk": format!("p{}", n % 16), "pad": "x".repeat(960)})
}

/// Starts a region server in this process on any free port; returns its base URL.
fn serve(region: &str, dir: &std::path::Path, peers: Vec<Peer>) -> Result<String> {
    converge_benches::serve_keyed(region, dir, "127.0.0.1:0", peers, Some(KEY))
}

/// The key every region is guarded by (the Cosmos emulator's), so both dialects pay for their
/// authentication: a bearer compare, or a master-key signature check.
const KEY: &str =
    "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw==";

fn bearer() -> String {
    format!("Bearer {KEY}")
}

/// How the load's clients write: converge's own route, or as a Cosmos SDK does.
#[derive(Clone, Copy, PartialEq)]
enum Dialect {
    Plain,
    Cosmos,
}

/// The HTTP request of one upsert.
fn upsert_request(dialect: Dialect, item: &serde_json::Value, key: &MasterKey) -> String {
    let text = item.to_string();
    let headers = match dialect {
        Dialect::Plain => format!("Authorization: Bearer {KEY}\r\nx-upsert: true\r\n"),
        Dialect::Cosmos => {
            let date = httpdate::fmt_http_date(std::time::SystemTime::now());
            let auth = key.authorization("POST", "/dbs/db/colls/c/docs", &date);
            format!(
                "x-ms-version: 2020-07-15\r\nx-ms-date: {date}\r\nAuthorization: {auth}\r\nx-ms-documentdb-is-upsert: true\r\nx-ms-documentdb-partitionkey: [{}]\r\n",
                item["pk"]
            )
        }
    };
    format!(
        "POST /dbs/db/colls/c/docs HTTP/1.1\r\nHost: bench\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
        text.len()
    )
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

struct Run {
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Run {
    fn row(&mut self, what: &str, writes: usize) -> (f64, Duration, Duration) {
        self.latencies.sort();
        let rate = writes as f64 / self.elapsed.as_secs_f64();
        let (p50, p99) = (
            percentile(&self.latencies, 50),
            percentile(&self.latencies, 99),
        );
        println!(
            "| {what} | {rate:.0} writes/s | {} | {} |",
            ms(p50),
            ms(p99)
        );
        (rate, p50, p99)
    }
}

/// `per_client` upserts from each of the concurrent clients against `url`, ids prefixed by
/// `tag`; records each write's acknowledgement time in `acked`. The clients are keep-alive
/// HTTP/1.1 connections driven by one thread (tokio, current-thread), so the client side costs
/// little of the machine's two cores and the figures are the server's.
fn http_load(
    url: &str,
    per_client: usize,
    dialect: Dialect,
    tag: &str,
    acked: &Arc<Mutex<HashMap<String, Instant>>>,
) -> Result<Run> {
    let addr: std::net::SocketAddr = url.trim_start_matches("http://").parse()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let start = Instant::now();
    let latencies = rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..*CLIENTS {
            let (tag, acked) = (tag.to_owned(), acked.clone());
            tasks.spawn(async move { client(addr, c, per_client, dialect, &tag, &acked).await });
        }
        let mut all = Vec::new();
        while let Some(r) = tasks.join_next().await {
            all.extend(r??);
        }
        anyhow::Ok(all)
    })?;
    Ok(Run {
        latencies,
        elapsed: start.elapsed(),
    })
}

/// One client: upserts over one keep-alive connection, one request at a time.
async fn client(
    addr: std::net::SocketAddr,
    c: usize,
    per_client: usize,
    dialect: Dialect,
    tag: &str,
    acked: &Mutex<HashMap<String, Instant>>,
) -> Result<Vec<Duration>> {
    let key =
        MasterKey::from_base64(KEY).ok_or_else(|| anyhow::anyhow!("the key is not base64"))?;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut buf: Vec<u8> = Vec::with_capacity(16 << 10);
    let mut out = Vec::with_capacity(per_client);
    for n in 0..per_client {
        let mut item = body(c, n);
        let id = format!("{tag}-{}", item["id"].as_str().unwrap_or_default());
        item["id"] = json!(id);
        let t = Instant::now();
        let request = upsert_request(dialect, &item, &key);
        stream.write_all(request.as_bytes()).await?;
        // Read one response: the head, then Content-Length bytes of body.
        let (head_len, status, length) = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let status: u16 = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                break (end + 4, status, length);
            }
            let mut chunk = [0u8; 8192];
            let n = stream.read(&mut chunk).await?;
            anyhow::ensure!(n > 0, "the server closed the connection");
            buf.extend_from_slice(&chunk[..n]);
        };
        while buf.len() < head_len + length {
            let mut chunk = [0u8; 8192];
            let n = stream.read(&mut chunk).await?;
            anyhow::ensure!(n > 0, "the server closed the connection");
            buf.extend_from_slice(&chunk[..n]);
        }
        buf.drain(..head_len + length);
        anyhow::ensure!(status == 200 || status == 201, "write answered {status}");
        out.push(t.elapsed());
        if let Ok(mut m) = acked.lock() {
            m.insert(id, Instant::now());
        }
    }
    Ok(out)
}

/// East's replication-lag histogram for peer west: (upper bound in s, cumulative count).
fn lag_histogram(a: &ureq::Agent, url: &str) -> Result<Vec<(f64, u64)>> {
    let mut r = a
        .get(format!("{url}/metrics"))
        .header("Authorization", bearer())
        .call()?;
    let text = r.body_mut().read_to_string()?;
    Ok(text
        .lines()
        .filter(|l| {
            l.starts_with("converge_peer_replication_lag_seconds_bucket")
                && l.contains("peer=\"west\"")
        })
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let count = l.split_whitespace().last()?.parse().ok()?;
            Some((
                if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                },
                count,
            ))
        })
        .collect())
}

/// Versions applied at `url` from west so far.
fn applied_from_west(a: &ureq::Agent, url: &str) -> Result<u64> {
    let mut r = a
        .get(format!("{url}/metrics"))
        .header("Authorization", bearer())
        .call()?;
    let text = r.body_mut().read_to_string()?;
    Ok(text
        .lines()
        .find(|l| l.starts_with("converge_peer_versions_applied_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0))
}

/// One region under concurrent HTTP clients on loopback against the same store in-process,
/// the replication lag to a second region, and a fresh region's catch-up rate. The number of
/// clients is `CLIENTS` in the environment (default 64).
#[derive(Parser)]
struct Args {
    /// Writes per client.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    writes: u32,
}

fn main() -> Result<()> {
    let per_client = Args::parse().writes as usize;
    let writes = per_client * *CLIENTS;
    let dir = tempfile::tempdir()?;

    // Baseline: the same store, durable with group commit, called by 64 threads.
    let store = Arc::new(Store::open(
        dir.path().join("inproc"),
        "inproc",
        StoreOptions::new().durability(Durability::GroupCommit),
    )?);
    store.put_container("db", "c", "/pk", ConflictPolicy::default())?;
    let start = Instant::now();
    let latencies: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..*CLIENTS)
            .map(|c| {
                let store = store.clone();
                s.spawn(move || {
                    (0..per_client)
                        .map(|n| {
                            let t = Instant::now();
                            store.upsert_item("db", "c", body(c, n)).expect("write");
                            t.elapsed()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("client"))
            .collect()
    });
    let mut baseline = Run {
        latencies,
        elapsed: start.elapsed(),
    };

    // The server, with a second region pulling from it during the load.
    let west = serve("west", &dir.path().join("west"), vec![])?;
    let a = agent();
    let put = a
        .put(format!("{west}/dbs/db/colls/c"))
        .header("Authorization", bearer())
        .content_type("application/json")
        .send(json!({"partitionKey": "/pk"}).to_string())?;
    anyhow::ensure!(put.status() == 201, "container: {}", put.status());
    let unused = Arc::default();
    let mut server = http_load(&west, per_client, Dialect::Plain, "alone", &unused)?;
    let mut cosmos = http_load(&west, per_client, Dialect::Cosmos, "cosmos", &unused)?;
    let east = serve(
        "east",
        &dir.path().join("east"),
        vec![Peer {
            name: "west".into(),
            url: west.clone(),
        }],
    )?;
    // Wait for the container to reach east, then watch east's change feed.
    while a
        .get(format!("{east}/dbs/db/colls/c"))
        .header("Authorization", bearer())
        .call()?
        .status()
        != 200
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let acked: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (seen, done, east, a) = (seen.clone(), done.clone(), east.clone(), a.clone());
        std::thread::spawn(move || -> Result<()> {
            let mut since: Option<String> = None;
            loop {
                let mut req = a
                    .get(format!("{east}/dbs/db/colls/c/changes"))
                    .header("Authorization", bearer())
                    .query("maxItemCount", "1000");
                if let Some(t) = &since {
                    req = req.query("since", t);
                }
                let mut resp = req.call()?;
                let page: serde_json::Value =
                    serde_json::from_str(&resp.body_mut().read_to_string()?)?;
                let now = Instant::now();
                let changes = page["changes"].as_array().cloned().unwrap_or_default();
                if let Ok(mut s) = seen.lock() {
                    for c in &changes {
                        if let Some(id) = c["id"].as_str() {
                            s.entry(id.to_owned()).or_insert(now);
                        }
                    }
                }
                since = page["continuation"].as_str().map(str::to_owned);
                let finished = done.load(std::sync::atomic::Ordering::Relaxed);
                if changes.is_empty() {
                    // Everything of the second load (and the first, already there) arrived.
                    if finished && seen.lock().map(|s| s.len()).unwrap_or(0) >= 2 * writes {
                        return Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        })
    };
    // East first catches up with the first load; its lag is measured on the second only.
    while applied_from_west(&a, &east)? < writes as u64 + 1 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = lag_histogram(&a, &east)?;
    let mut replicated = http_load(&west, per_client, Dialect::Plain, "replicated", &acked)?;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    watcher
        .join()
        .map_err(|_| anyhow::anyhow!("watcher panicked"))??;

    println!(
        "## One region under {} concurrent writers ({writes} upserts of 1 KiB, durable)\n",
        *CLIENTS
    );
    println!("| | throughput | p50 | p99 |");
    println!("|---|---|---|---|");
    let (base_rate, base_p50, _) =
        baseline.row("store in-process (64 threads, group commit)", writes);
    let (rate, p50, p99) = server.row(
        "`converge serve` over HTTP on loopback (64 clients)",
        writes,
    );
    let (c_rate, _, c_p99) = cosmos.row(
        "the same through the Cosmos DB API (signed, partition key header)",
        writes,
    );
    replicated.row(
        "the same, while a second region pulls from it and a reader polls that region's change feed",
        writes,
    );
    println!(
        "\nserver / in-process: throughput {:.2}×, p50 {:.2}×; p99 {} against the 10 ms target",
        rate / base_rate,
        p50.as_secs_f64() / base_p50.as_secs_f64(),
        if p99 < Duration::from_millis(10) {
            "met"
        } else {
            "NOT met"
        }
    );

    println!(
        "Cosmos API / own route (same server, same run): throughput {:.2}×, p99 {:.2}× (target: within 1.2×)",
        rate / c_rate,
        c_p99.as_secs_f64() / p99.as_secs_f64()
    );

    let (acked, seen) = (acked.lock().expect("acked"), seen.lock().expect("seen"));
    let mut lags: Vec<Duration> = acked
        .iter()
        .filter_map(|(id, at)| seen.get(id).map(|s| s.saturating_duration_since(*at)))
        .collect();
    lags.sort();
    println!("\n## Replication lag west → east during that load\n");
    println!("| versions | p50 | p99 | max |");
    println!("|---|---|---|---|");
    println!(
        "| {} | {} | {} | {} |",
        lags.len(),
        ms(percentile(&lags, 50)),
        ms(percentile(&lags, 99)),
        ms(lags.last().copied().unwrap_or_default())
    );

    // The same lag as east measures it: from each version's write (its HLC, the same clock
    // here) to its application, from east's metrics histogram, second load only.
    while applied_from_west(&a, &east)? < 2 * writes as u64 + 1 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let after = lag_histogram(&a, &east)?;
    let during: Vec<(f64, u64)> = after
        .iter()
        .map(|(le, n)| {
            (
                *le,
                n - before.iter().find(|(b, _)| b == le).map_or(0, |b| b.1),
            )
        })
        .collect();
    let total = during.last().map_or(0, |b| b.1);
    let bound = |q: f64| {
        during
            .iter()
            .find(|(_, c)| *c as f64 >= q * total as f64)
            .map_or(f64::INFINITY, |(le, _)| *le * 1e3)
    };
    println!(
        "\nAs east's puller measures it (write → applied at east, `converge_peer_replication_lag_seconds`): {total} versions, p50 ≤ {} ms, p99 ≤ {} ms",
        bound(0.5),
        bound(0.99)
    );

    // A fresh region catching up from west.
    let north = serve(
        "north",
        &dir.path().join("north"),
        vec![Peer {
            name: "west".into(),
            url: west.clone(),
        }],
    )?;
    let start = Instant::now();
    loop {
        let applied = applied_from_west(&a, &north)?;
        if applied as usize > 2 * writes {
            let t = start.elapsed();
            println!("\n## A fresh region catching up from a peer\n");
            println!(
                "{applied} versions (1 KiB items, the container definition included) applied in {:.2} s: {:.0} versions/s",
                t.as_secs_f64(),
                applied as f64 / t.as_secs_f64()
            );
            break;
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(120),
            "north did not catch up"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::process::exit(0);
}
