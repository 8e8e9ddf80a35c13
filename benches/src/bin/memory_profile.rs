//! Peak memory while applying remote versions to a durable store, and the causal metadata
//! stored per item. Prints a table; `--versions N` (default 1,000,000).

use anyhow::Result;
use clap::Parser;
use converge_benches::{CONTAINER, DB, item, peak_rss_kib, remote_versions};
use converge_core::{
    Context, Dot, Hlc, Incarnation, ItemKey, Operation, PartitionKey, RegionId, Store,
    StoreOptions, Version,
};

/// Peak memory while applying remote versions to a durable store, and the causal metadata
/// stored per item.
#[derive(Parser)]
struct Args {
    /// Remote versions to apply.
    #[arg(long, default_value_t = 1_000_000)]
    versions: usize,
}

fn main() -> Result<()> {
    let total = Args::parse().versions;
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), "west", StoreOptions::new())?;
    let definition = remote_versions("east", 1, 1, 1024);
    store.apply_versions(&definition[..1])?;
    let cid = store.container(DB, CONTAINER)?.creation_id;

    // Metadata per item with one sibling: everything stored beyond the body, which is stored
    // once (in the log).
    store.upsert_item(DB, CONTAINER, item(0, 1024))?;
    let key = ItemKey {
        partition_key: PartitionKey::from("p0"),
        id: "item-0".into(),
    };
    let st = store.item_state(cid, &key)?.expect("item");
    println!(
        "metadata per item with one sibling: {} bytes beyond the body ({} in the item record, {} in its log entry)",
        st.record_bytes + st.log_overhead_bytes,
        st.record_bytes,
        st.log_overhead_bytes
    );

    let east = RegionId::new("east")?;
    let pad = "x".repeat(1000);
    println!("| versions applied | peak RSS (MiB) |");
    println!("|---|---|");
    let start = std::time::Instant::now();
    let mut applied = 0;
    while applied < total {
        let batch: Vec<Version> = (applied..(applied + 1000).min(total))
            .map(|i| Version {
                creation: cid,
                key: ItemKey { partition_key: PartitionKey::from(format!("p{}", i % 64).as_str()), id: format!("r{i}") },
                dot: Dot { region: east.clone(), incarnation: Incarnation(1), counter: i as u64 + 10 },
                hlc: Hlc::new(1_764_230_400_000 + i as u64, 0),
                op: Operation::Create,
                deleted: false,
                body: Some(serde_json::json!({"id": format!("r{i}"), "pk": format!("p{}", i % 64), "pad": pad}).to_string()),
                context: Context::new(),
            })
            .collect();
        store.apply_versions(&batch)?;
        applied += batch.len();
        if applied % (total / 10).max(1) == 0 {
            println!("| {applied} | {:.1} |", peak_rss_kib() as f64 / 1024.0);
        }
    }
    println!(
        "applied {applied} versions durably in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
