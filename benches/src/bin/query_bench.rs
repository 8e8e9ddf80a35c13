//! What queries cost: items scanned per second by converge's Cosmos DB API (a region server
//! in this process, durable store), side by side in one run with a serde_json loop that
//! deserializes and filters the same items, and with the same queries in PostgreSQL 15 over a
//! JSONB table without an index (`EXPLAIN ANALYZE`'s execution time, a sequential scan).
//! Prints a markdown table.
//!
//! `cargo run --release -p converge-benches --bin query-bench [-- --items N] [--no-postgres]`
//!
//! PostgreSQL is started with `pg_ctlcluster 15 main start` and driven through `psql` as the
//! `postgres` user; without it (or with `--no-postgres`) its column says so.

use anyhow::{Context, Result, bail};
use clap::Parser;
use converge_core::{ConflictPolicy, Store, StoreOptions, WriteOp};
use converge_server::cosmos::auth::MasterKey;
use serde_json::{Value, json};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The Cosmos emulator's key: the region checks signatures as it does for any SDK.
const KEY: &str =
    "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw==";

#[derive(Parser)]
struct Args {
    /// Items in each container.
    #[arg(long, default_value_t = 100_000)]
    items: usize,
    /// Timed runs of each query (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Leave PostgreSQL out.
    #[arg(long)]
    no_postgres: bool,
    /// Time converge alone (no baselines, no PostgreSQL): for profiling its scan.
    #[arg(long)]
    converge_only: bool,
}

/// Item `i` of a container (~1 KiB of JSON): `n` cycles over 0..1000, so `c.n = 7` keeps one
/// item in a thousand.
fn item(i: usize, pk: &str) -> Value {
    let kinds = ["alpha", "beta", "gamma", "delta", "epsilon"];
    json!({
        "id": format!("i{i:07}"),
        "pk": pk,
        "n": i % 1000,
        "kind": kinds[i % kinds.len()],
        "price": (i % 977) as f64 / 4.0,
        "tags": ["t1", format!("t{}", i % 7)],
        "pad": "x".repeat(860),
    })
}

/// One query as converge, the serde_json loop and PostgreSQL run it.
struct Case {
    what: &'static str,
    /// `one` (every item in partition `p`, queried with its partition key) or `many` (1,000
    /// partitions, queried across them).
    container: &'static str,
    sql: &'static str,
    postgres: &'static str,
    /// The baseline: how many results the parsed items give.
    baseline: fn(&[Value]) -> usize,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            what: "filter, one partition (`WHERE c.n = 7`)",
            container: "one",
            sql: "SELECT * FROM c WHERE c.n = 7",
            postgres: "SELECT doc FROM qb_one WHERE doc->'pk' = '\"p\"' AND doc->'n' = '7'",
            baseline: |items| items.iter().filter(|v| v["n"] == 7).count(),
        },
        Case {
            what: "filter, across partitions",
            container: "many",
            sql: "SELECT * FROM c WHERE c.n = 7",
            postgres: "SELECT doc FROM qb_many WHERE doc->'n' = '7'",
            baseline: |items| items.iter().filter(|v| v["n"] == 7).count(),
        },
        Case {
            what: "ORDER BY c.price DESC, first page of 100",
            container: "many",
            sql: "SELECT * FROM c ORDER BY c.price DESC",
            postgres: "SELECT doc FROM qb_many ORDER BY doc->'price' DESC LIMIT 100",
            baseline: |items| {
                let mut prices: Vec<(f64, usize)> = items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| v["price"].as_f64().map(|p| (p, i)))
                    .collect();
                prices.sort_by(|a, b| b.0.total_cmp(&a.0));
                prices.truncate(100);
                prices.len()
            },
        },
        Case {
            what: "`SELECT VALUE COUNT(1) FROM c`",
            container: "many",
            sql: "SELECT VALUE COUNT(1) FROM c",
            postgres: "SELECT count(*) FROM qb_many",
            baseline: |items| items.iter().filter(|v| v.is_object()).count(),
        },
    ]
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn rate(items: usize, d: Duration) -> f64 {
    items as f64 / d.as_secs_f64()
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(300)))
        .build()
        .into()
}

/// The first page of a query through the Cosmos DB API, as an SDK sends it.
fn first_page(agent: &ureq::Agent, base: &str, case: &Case) -> Result<Vec<Value>> {
    let key = MasterKey::from_base64(KEY).context("key")?;
    let path = format!("/dbs/qb/colls/{}/docs", case.container);
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    let mut req = agent
        .post(format!("{base}{path}"))
        .header("x-ms-version", "2020-07-15")
        .header("x-ms-date", &date)
        .header("authorization", key.authorization("POST", &path, &date))
        .header("content-type", "application/query+json")
        .header("x-ms-documentdb-isquery", "true")
        .header("x-ms-max-item-count", "100");
    req = if case.container == "one" {
        req.header("x-ms-documentdb-partitionkey", "[\"p\"]")
    } else {
        req.header("x-ms-documentdb-query-enablecrosspartition", "true")
    };
    let mut resp = req.send(json!({"query": case.sql, "parameters": []}).to_string())?;
    let text = resp.body_mut().read_to_string()?;
    if resp.status() != 200 {
        bail!("{}: {} {text}", case.sql, resp.status());
    }
    let v: Value = serde_json::from_str(&text)?;
    Ok(v["Documents"].as_array().cloned().unwrap_or_default())
}

/// Loads both containers into a durable store at `dir`.
fn load(dir: &std::path::Path, items: usize) -> Result<(Vec<String>, Vec<String>)> {
    let store = Store::open(dir, "west", StoreOptions::new())?;
    store.create_database("qb")?;
    let mut texts = (Vec::new(), Vec::new());
    for (name, out) in [("one", &mut texts.0), ("many", &mut texts.1)] {
        store.put_container("qb", name, "/pk", ConflictPolicy::default())?;
        for start in (0..items).step_by(1000) {
            let batch: Vec<Value> = (start..(start + 1000).min(items))
                .map(|i| {
                    let pk = if name == "one" {
                        "p".to_owned()
                    } else {
                        format!("p{}", i % 1000)
                    };
                    item(i, &pk)
                })
                .collect();
            out.extend(batch.iter().map(Value::to_string));
            let ops = batch.into_iter().map(WriteOp::Upsert).collect();
            for r in store.write_many("qb", name, ops)? {
                r?;
            }
        }
    }
    store.flush()?;
    Ok(texts)
}

/// Runs `sql` through psql as the postgres user; returns its output.
fn psql(sql: &str, stdin: Option<&[u8]>) -> Result<String> {
    let mut child = Command::new("runuser")
        .args([
            "-u",
            "postgres",
            "--",
            "psql",
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            "postgres",
            "-c",
            sql,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("psql")?;
    if let Some(input) = stdin {
        child.stdin.take().context("stdin")?.write_all(input)?;
    }
    drop(child.stdin.take());
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("psql: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Loads the same items into JSONB tables without an index.
fn postgres_load(one: &[String], many: &[String]) -> Result<()> {
    let _ = Command::new("pg_ctlcluster")
        .args(["15", "main", "start"])
        .status();
    for (table, texts) in [("qb_one", one), ("qb_many", many)] {
        psql(
            &format!("DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (doc jsonb NOT NULL)"),
            None,
        )?;
        let mut csv = Vec::new();
        for t in texts {
            csv.push(b'"');
            csv.extend_from_slice(t.replace('"', "\"\"").as_bytes());
            csv.extend_from_slice(b"\"\n");
        }
        psql(
            &format!("COPY {table} (doc) FROM STDIN WITH (FORMAT csv)"),
            Some(&csv),
        )?;
        psql(&format!("VACUUM ANALYZE {table}"), None)?;
    }
    Ok(())
}

/// PostgreSQL's execution time of `sql` (`EXPLAIN ANALYZE`), and whether it scanned sequentially.
fn postgres_time(sql: &str) -> Result<(Duration, bool)> {
    let out = psql(&format!("EXPLAIN (ANALYZE, TIMING OFF) {sql}"), None)?;
    let ms: f64 = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Execution Time:"))
        .and_then(|t| t.trim().trim_end_matches("ms").trim().parse().ok())
        .context("no execution time in EXPLAIN ANALYZE")?;
    Ok((Duration::from_secs_f64(ms / 1e3), out.contains("Seq Scan")))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let started = Instant::now();
    let (one, many) = load(dir.path(), args.items)?;
    eprintln!(
        "loaded {} items in {:.1?}",
        2 * args.items,
        started.elapsed()
    );
    let base =
        converge_benches::serve_keyed("west", dir.path(), "127.0.0.1:0", Vec::new(), Some(KEY))?;
    let agent = agent();
    let postgres = if args.no_postgres || args.converge_only {
        None
    } else {
        match postgres_load(&one, &many) {
            Ok(()) => Some(()),
            Err(e) => {
                eprintln!("PostgreSQL left out: {e:#}");
                None
            }
        }
    };
    println!(
        "| query ({} items of ~1 KiB) | converge | serde_json loop | converge / loop | PostgreSQL 15 seq scan | converge / PostgreSQL |",
        args.items
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for case in cases() {
        let texts = if case.container == "one" { &one } else { &many };
        // Warm: the first run pages the store in.
        let results = first_page(&agent, &base, &case)?;
        let mut ours = Vec::new();
        for _ in 0..args.runs {
            let t = Instant::now();
            first_page(&agent, &base, &case)?;
            ours.push(t.elapsed());
        }
        if args.converge_only {
            println!(
                "| {} | {:.0} items/s |",
                case.what,
                rate(texts.len(), median(ours))
            );
            continue;
        }
        let mut loops = Vec::new();
        let mut expected = 0;
        for _ in 0..args.runs {
            let t = Instant::now();
            let parsed: Vec<Value> = texts
                .iter()
                .map(|t| serde_json::from_str(t).expect("JSON"))
                .collect();
            expected = (case.baseline)(&parsed);
            loops.push(t.elapsed());
        }
        let got = match results.as_slice() {
            [Value::Number(n)] if case.sql.contains("COUNT") => n.as_u64().unwrap_or(0) as usize,
            docs => docs.len(),
        };
        if got != expected.min(100) && !case.sql.contains("COUNT")
            || case.sql.contains("COUNT") && got != expected
        {
            bail!(
                "{}: converge gave {got} results, the loop {expected}",
                case.sql
            );
        }
        let (ours, loops) = (median(ours), median(loops));
        let pg = match postgres {
            Some(()) => {
                let mut times = Vec::new();
                let mut seq = true;
                for _ in 0..args.runs {
                    let (t, s) = postgres_time(case.postgres)?;
                    times.push(t);
                    seq &= s;
                }
                Some((median(times), seq))
            }
            None => None,
        };
        let n = texts.len();
        let (pg_rate, pg_ratio) = match pg {
            Some((t, seq)) => (
                format!(
                    "{:.0} items/s{}",
                    rate(n, t),
                    if seq { "" } else { " (not a seq scan)" }
                ),
                format!("{:.2}×", t.as_secs_f64() / ours.as_secs_f64()),
            ),
            None => ("—".into(), "—".into()),
        };
        println!(
            "| {} | {:.0} items/s | {:.0} items/s | {:.2}× | {pg_rate} | {pg_ratio} |",
            case.what,
            rate(n, ours),
            rate(n, loops),
            loops.as_secs_f64() / ours.as_secs_f64(),
        );
    }
    Ok(())
}
