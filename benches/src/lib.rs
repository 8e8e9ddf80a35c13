//! Workloads shared by converge's benchmarks: remote versions to apply, and the bare-redb
//! baselines they are compared with in the same run.

use converge_core::{ConflictPolicy, Cursor, Store, StoreOptions, Version};
use redb::{Database, TableDefinition};
use serde_json::json;

/// Database and container of every benchmark.
pub const DB: &str = "bench";
/// Container name.
pub const CONTAINER: &str = "items";

/// A JSON item of about `size` bytes.
pub fn item(id: usize, size: usize) -> serde_json::Value {
    let pad = "x".repeat(size.saturating_sub(60));
    json!({"id": format!("item-{id}"), "pk": format!("p{}", id % 64), "n": id, "pad": pad})
}

/// A memory store with the benchmark container (LWW on `/_ts`).
pub fn memory_store(region: &str) -> Store {
    let s = Store::memory(region, StoreOptions::new()).expect("memory store");
    s.put_container(DB, CONTAINER, "/pk", ConflictPolicy::default())
        .expect("container");
    s
}

/// `count` remote versions of ~`size`-byte items written in region `source` over `distinct`
/// ids, in log order, with the container definition first.
pub fn remote_versions(source: &str, count: usize, distinct: usize, size: usize) -> Vec<Version> {
    let s = Store::memory(
        source,
        StoreOptions::new().durability(converge_core::Durability::Deferred),
    )
    .expect("source");
    s.put_container(DB, CONTAINER, "/pk", ConflictPolicy::default())
        .expect("container");
    let ops: Vec<_> = (0..count)
        .map(|i| converge_core::WriteOp::Upsert(item(i % distinct, size)))
        .collect();
    for chunk in ops.chunks(10_000) {
        s.write_many(DB, CONTAINER, chunk.to_vec()).expect("write");
    }
    s.read_log(Cursor::START, usize::MAX).expect("log").versions
}

/// The table the bare-redb baselines write.
pub const BARE: TableDefinition<'static, &'static [u8], &'static [u8]> =
    TableDefinition::new("bare");

/// A bare redb database for the baselines.
pub fn bare_redb(path: &std::path::Path) -> Database {
    let db = Database::create(path).expect("redb");
    let tx = db.begin_write().expect("tx");
    tx.open_table(BARE).expect("table");
    tx.commit().expect("commit");
    db
}

/// Peak resident memory of this process so far (VmHWM), in KiB; 0 where /proc is missing.
pub fn peak_rss_kib() -> u64 {
    status_kib("VmHWM:")
}

/// Resident memory of this process now, KiB (Linux; 0 elsewhere).
pub fn current_rss_kib() -> u64 {
    status_kib("VmRSS:")
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

/// Starts a region server (`converge_server::run`, what `converge serve` runs) in this
/// process, listening on `listen` (`127.0.0.1:0` for any free port); returns its base URL once
/// it listens.
pub fn serve(
    region: &str,
    dir: &std::path::Path,
    listen: &str,
    peers: Vec<converge_server::replication::Peer>,
) -> anyhow::Result<String> {
    serve_keyed(region, dir, listen, peers, None)
}

/// [`serve`], guarded by `key` (bearer, and Cosmos signatures when it is base64).
pub fn serve_keyed(
    region: &str,
    dir: &std::path::Path,
    listen: &str,
    peers: Vec<converge_server::replication::Peer>,
    key: Option<&str>,
) -> anyhow::Result<String> {
    use anyhow::Context;
    let (tx, rx) = std::sync::mpsc::channel();
    let config = converge_server::ServeConfig {
        region: region.into(),
        data: dir.to_path_buf(),
        listen: listen.into(),
        peers,
        key: key.map(str::to_owned),
        advertise: None,
        tls: None,
        peer_ca: None,
        idle_timeout: converge_server::conn::IDLE_TIMEOUT,
        tombstone_grace: converge_server::DEFAULT_TOMBSTONE_GRACE,
        joined_from: None,
    };
    std::thread::spawn(move || {
        let r = converge_server::run(config, |addr| {
            let _ = tx.send(addr);
        });
        if let Err(e) = r {
            eprintln!("server: {e}");
        }
    });
    let addr = rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .context("the server did not start")?;
    Ok(format!("http://{addr}"))
}
