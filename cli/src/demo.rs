//! `converge demo`: an e-commerce workload on three regions, partitioned then healed.

use anyhow::{Context, Result};
use clap::Args;
use converge_core::sim::Rng;
use converge_core::{
    ConflictPolicy, ConflictStatus, PartitionKey, ResolverLimits, Store, StoreOptions,
    WasmResolvers,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;

pub(crate) const REGIONS: [&str; 3] = ["west", "east", "north"];
pub(crate) const DB: &str = "shop";

/// Options of `converge demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Writes per region while replication is cut.
    #[arg(long, default_value_t = 600)]
    pub(crate) writes: usize,
    /// Customers (a smaller number makes more conflicts).
    #[arg(long, default_value_t = 40)]
    pub(crate) customers: u64,
    /// Seed of the workload.
    #[arg(long, default_value_t = 7)]
    pub(crate) seed: u64,
    /// Keep the regions' data here instead of a temporary directory.
    #[arg(long)]
    pub(crate) data: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    pub(crate) quiet: bool,
    /// Run the three regions as stores inside this process instead of as three
    /// `converge serve` processes talking HTTP.
    #[arg(long)]
    in_process: bool,
}

pub(crate) struct Scenario {
    pub(crate) container: &'static str,
    pub(crate) pk: &'static str,
    pub(crate) policy: ConflictPolicy,
    pub(crate) what: &'static str,
    /// A WebAssembly resolver installed (in one region) for a custom policy.
    pub(crate) module: Option<&'static [u8]>,
}

fn custom(resolver: &str) -> ConflictPolicy {
    ConflictPolicy::Custom {
        resolver: resolver.into(),
        hash: None,
        limits: ResolverLimits::default(),
    }
}

pub(crate) fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            container: "profiles",
            pk: "/customerId",
            policy: ConflictPolicy::Lww {
                path: "/_ts".into(),
            },
            what: "last writer wins on /_ts (the default)",
            module: None,
        },
        Scenario {
            container: "carts",
            pk: "/customerId",
            policy: custom("cart-merge"),
            what: "custom: the cart-merge resolver (WebAssembly) merges lines by SKU",
            module: Some(converge_udf_examples::CART_MERGE),
        },
        Scenario {
            container: "wishlists",
            pk: "/customerId",
            policy: custom("wishlist-merge"),
            what: "custom: a wishlist-merge resolver with a bug (it panics on every conflict)",
            module: Some(converge_udf_examples::adversarial::PANIC),
        },
        Scenario {
            container: "orders",
            pk: "/customerId",
            policy: ConflictPolicy::Lww {
                path: "/version".into(),
            },
            what: "highest /version wins (an application counter)",
            module: None,
        },
        Scenario {
            container: "returns",
            pk: "/customerId",
            policy: ConflictPolicy::Manual,
            what: "manual: the application resolves from the conflicts feed",
            module: None,
        },
    ]
}

pub(crate) fn bar(quiet: bool, len: u64, msg: &'static str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg:>18} [{bar:40}] {pos}/{len} {per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(msg);
    pb
}

/// Pulls everything each region has not seen from every other, until nothing new arrives.
fn heal(stores: &[Store], pb: &ProgressBar) -> Result<usize> {
    let mut total = 0;
    loop {
        let mut applied = 0;
        for dst in stores {
            for src in stores.iter().filter(|s| s.region() != dst.region()) {
                loop {
                    let cursor = dst.cursor(src.region().as_str())?;
                    let batch = src.read_log(cursor, 256)?;
                    let n = dst.apply_batch(&batch)?.applied;
                    applied += n;
                    pb.inc(batch.versions.len() as u64);
                    if !batch.more {
                        break;
                    }
                }
            }
        }
        total += applied;
        if applied == 0 {
            return Ok(total);
        }
    }
}

fn workload_item(
    rng: &mut Rng,
    container: &str,
    region: &str,
    customer: u64,
    step: usize,
) -> Value {
    let cid = format!("customer-{customer}");
    match container {
        "profiles" => json!({
            "id": format!("profile-{customer}"), "customerId": cid,
            "email": format!("c{customer}+{}@example.com", rng.below(100)), "by": region
        }),
        "wishlists" => json!({
            "id": format!("wishlist-{customer}"), "customerId": cid,
            "skus": [format!("sku-{}", rng.below(20))], "by": region
        }),
        "orders" => json!({
            "id": format!("order-{}", customer % 10), "customerId": cid,
            "status": *rng.pick(&["placed", "paid", "shipped"]), "version": step, "by": region
        }),
        _ => json!({
            "id": format!("return-{}", customer % 10), "customerId": cid,
            "reason": *rng.pick(&["damaged", "late", "wrong size"]), "by": region
        }),
    }
}

/// What the workload needs from a region: a store in this process or a server over HTTP.
pub(crate) trait DemoRegion {
    /// The region's name.
    fn name(&self) -> String;
    /// The item, or `None` if there is none.
    fn read(&self, container: &str, customer: &str, id: &str) -> Result<Option<Value>>;
    /// Creates or replaces an item.
    fn upsert(&self, container: &str, item: Value) -> Result<()>;
    /// Deletes an item; `false` if there was none.
    fn delete(&self, container: &str, customer: &str, id: &str) -> Result<bool>;
}

impl DemoRegion for Store {
    fn name(&self) -> String {
        self.region().as_str().to_owned()
    }

    fn read(&self, container: &str, customer: &str, id: &str) -> Result<Option<Value>> {
        match self.read_item(DB, container, &PartitionKey::from(customer), id) {
            Ok(item) => Ok(Some(item.body)),
            Err(converge_core::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn upsert(&self, container: &str, item: Value) -> Result<()> {
        self.upsert_item(DB, container, item)?;
        Ok(())
    }

    fn delete(&self, container: &str, customer: &str, id: &str) -> Result<bool> {
        match self.delete_item(DB, container, &PartitionKey::from(customer), id, None) {
            Ok(()) => Ok(true),
            Err(converge_core::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// The shopping application's cart change in one region: read the cart, add or change a line
/// or remove one (leaving a removal marker, as cart-merge expects), write it back.
fn change_cart(r: &dyn DemoRegion, rng: &mut Rng, customer: u64, step: usize) -> Result<()> {
    let cid = format!("customer-{customer}");
    let id = format!("cart-{customer}");
    let mut cart = r
        .read("carts", &cid, &id)?
        .unwrap_or_else(|| json!({"id": id, "customerId": cid, "lines": [], "removed": {}}));
    if let Some(obj) = cart.as_object_mut() {
        obj.retain(|k, _| !k.starts_with('_'));
    }
    let now = step as u64;
    let mut lines: Vec<Value> = cart["lines"].as_array().cloned().unwrap_or_default();
    if !lines.is_empty() && rng.chance(30) {
        let gone = lines.remove(rng.below(lines.len() as u64) as usize);
        cart["removed"][gone["sku"].as_str().unwrap_or_default()] = json!(now);
    } else {
        let sku = format!("sku-{}", rng.below(8));
        lines.retain(|l| l["sku"] != sku.as_str());
        lines.push(json!({"sku": sku, "qty": rng.range(1, 4), "updated": now}));
    }
    cart["lines"] = Value::Array(lines);
    cart["by"] = json!(r.name());
    r.upsert("carts", cart)
}

/// One write of the workload in region `r`; `Ok(false)` when it was a delete of nothing.
pub(crate) fn write_step(
    r: &dyn DemoRegion,
    rng: &mut Rng,
    customers: u64,
    step: usize,
) -> Result<bool> {
    let mut all = scenarios();
    let sc = all.swap_remove(rng.below(all.len() as u64) as usize);
    let customer = rng.below(customers.max(1));
    let region = r.name();
    if rng.chance(8) {
        let item = workload_item(rng, sc.container, &region, customer, step);
        let id = item["id"].as_str().unwrap_or_default();
        r.delete(sc.container, &format!("customer-{customer}"), id)
    } else if sc.container == "carts" {
        change_cart(r, rng, customer, step)?;
        Ok(true)
    } else {
        r.upsert(
            sc.container,
            workload_item(rng, sc.container, &region, customer, step),
        )?;
        Ok(true)
    }
}

/// Runs the demo; `Ok(false)` when the regions disagree.
pub fn run(args: &DemoArgs) -> Result<bool> {
    let tmp;
    let root = match &args.data {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir().context("creating a temporary directory")?;
            tmp.path().to_path_buf()
        }
    };
    if !args.in_process {
        return crate::cluster::run(args, &root);
    }
    println!(
        "converge demo: three regions ({}) on embedded stores in this process, under {}",
        REGIONS.join(", "),
        root.display()
    );
    let stores: Vec<Store> = REGIONS
        .iter()
        .map(|r| {
            let sandbox = StoreOptions::new().resolver_host(Arc::new(WasmResolvers::new()));
            Store::open(root.join(r), r, sandbox).with_context(|| format!("opening region {r}"))
        })
        .collect::<Result<_>>()?;
    // Each region runs the same deployment script: the containers are created once.
    for s in &stores {
        for sc in scenarios() {
            s.put_container(DB, sc.container, sc.pk, sc.policy)?;
        }
    }
    // The resolvers are uploaded to one region; replication takes them to the others.
    for sc in scenarios() {
        if let (Some(module), ConflictPolicy::Custom { resolver, .. }) = (sc.module, &sc.policy) {
            stores[0]
                .put_resolver(DB, sc.container, resolver, module)
                .with_context(|| format!("installing {resolver}"))?;
        }
    }
    let pb = bar(args.quiet, 0, "initial sync");
    heal(&stores, &pb)?;
    pb.finish_and_clear();

    println!(
        "replication cut: every region takes {} writes on {} customers",
        args.writes, args.customers
    );
    let mut rng = Rng::new(args.seed);
    let total = (args.writes * stores.len()) as u64;
    let pb = bar(args.quiet, total, "partitioned writes");
    let mut ok_writes = 0;
    for step in 0..args.writes {
        for s in &stores {
            if write_step(s, &mut rng, args.customers, step)? {
                ok_writes += 1;
            }
            pb.inc(1);
        }
    }
    pb.finish_and_clear();
    println!("{ok_writes} writes acknowledged (each fsynced) while partitioned");

    let pb = bar(args.quiet, 0, "healing");
    pb.set_length(
        stores
            .iter()
            .map(|s| {
                s.read_log(converge_core::Cursor::START, usize::MAX)
                    .map(|b| b.versions.len() as u64)
                    .unwrap_or(0)
            })
            .sum::<u64>()
            * 2,
    );
    let moved = heal(&stores, &pb)?;
    pb.finish_and_clear();
    println!("replication healed: {moved} versions exchanged");
    let lost: Vec<String> = stores
        .iter()
        .map(|s| format!("{} {}", s.region(), s.stats().lost_to_lww))
        .collect();
    println!(
        "versions each region saw covered before it ever showed them (counted as lost to LWW): {}\n",
        lost.join(", ")
    );

    let mut agree = true;
    for sc in scenarios() {
        agree &= report(&stores, &sc)?;
    }
    // The application resolves the manual conflicts in one region; the others follow.
    let resolved = resolve_manually(&stores[0])?;
    heal(&stores, &ProgressBar::hidden())?;
    let open_after: Vec<usize> = stores
        .iter()
        .map(|s| open_records(s, "returns").map(|r| r.len()))
        .collect::<Result<_>>()?;
    println!(
        "the application resolved {resolved} manual conflicts in {}; open records now {:?} (per region)",
        REGIONS[0], open_after
    );
    conclude(&stores, agree, &open_after)
}

/// The end of either mode: no manual record left open, every container alike in every
/// region; prints the verdict.
pub(crate) fn conclude(stores: &[Store], mut agree: bool, open_after: &[usize]) -> Result<bool> {
    agree &= open_after.iter().all(|&n| n == 0);
    for sc in scenarios() {
        agree &= same_items(stores, sc.container)?;
    }
    if agree {
        println!(
            "\nall {} regions agree on every item, etag and open conflict",
            stores.len()
        );
    } else {
        println!("\nREGIONS DISAGREE");
    }
    Ok(agree)
}

pub(crate) fn open_records(
    s: &Store,
    container: &str,
) -> Result<Vec<converge_core::ConflictRecord>> {
    let mut out = Vec::new();
    let mut cont = None;
    loop {
        let page = s.conflicts(DB, container, cont.as_deref(), 500)?;
        out.extend(
            page.items
                .into_iter()
                .filter(|r| r.status == ConflictStatus::Open),
        );
        match page.continuation {
            Some(c) => cont = Some(c),
            None => return Ok(out),
        }
    }
}

fn visible(s: &Store, container: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut cont = None;
    loop {
        let page = s.list_items(DB, container, None, cont.as_deref(), 500)?;
        out.extend(page.items.into_iter().map(|i| (i.id().to_owned(), i.etag)));
        match page.continuation {
            Some(c) => cont = Some(c),
            None => return Ok(out),
        }
    }
}

pub(crate) fn same_items(stores: &[Store], container: &str) -> Result<bool> {
    let first = visible(&stores[0], container)?;
    let first_open: Vec<String> = open_records(&stores[0], container)?
        .into_iter()
        .map(|r| r.id)
        .collect();
    for s in &stores[1..] {
        let open: Vec<String> = open_records(s, container)?
            .into_iter()
            .map(|r| r.id)
            .collect();
        if visible(s, container)? != first || open != first_open {
            return Ok(false);
        }
    }
    Ok(true)
}

pub(crate) fn report(stores: &[Store], sc: &Scenario) -> Result<bool> {
    let s = &stores[0];
    let cid = s.container(DB, sc.container)?.creation_id;
    let items = s
        .list_items(DB, sc.container, None, None, usize::MAX)?
        .items;
    let mut in_conflict = 0;
    let mut examples = Vec::new();
    for item in &items {
        let pk = PartitionKey::from_value(&item.body[&sc.pk[1..]])?;
        let key = converge_core::ItemKey {
            partition_key: pk,
            id: item.id().to_owned(),
        };
        let Some(state) = s.item_state(cid, &key)? else {
            continue;
        };
        if state.siblings.len() < 2 {
            continue;
        }
        in_conflict += 1;
        if examples.len() < 2 {
            let regions: Vec<&str> = state.siblings.iter().map(|d| d.region.as_str()).collect();
            let shows = match item.body["lines"].as_array() {
                Some(lines) if sc.container == "carts" => {
                    let skus: Vec<&str> = lines.iter().filter_map(|l| l["sku"].as_str()).collect();
                    format!("one merged cart with {}", skus.join(", "))
                }
                _ => format!("{}'s", item.body["by"].as_str().unwrap_or("?")),
            };
            examples.push(format!(
                "{}: {} concurrent versions from {} -> shows {shows}",
                item.id(),
                regions.len(),
                regions.join(", "),
            ));
        }
    }
    let open = open_records(s, sc.container)?;
    let agree = same_items(stores, sc.container)?;
    let how = match (&sc.policy, open.is_empty()) {
        (ConflictPolicy::Manual, _) => {
            "shown tentatively (LWW winner) until the application resolves".to_owned()
        }
        (ConflictPolicy::Custom { resolver, .. }, true) => {
            format!("resolved by {resolver} in every region, no record needed")
        }
        (ConflictPolicy::Custom { resolver, .. }, false) => format!(
            "{resolver} failed, so each shows the LWW winner tentatively and its versions wait in the feed"
        ),
        _ => "resolved by the policy, no record needed".to_owned(),
    };
    println!("{} — {}", sc.container, sc.what);
    println!(
        "  {} items visible; {in_conflict} had concurrent versions: {how}",
        items.len()
    );
    for e in &examples {
        println!("    e.g. {e}");
    }
    println!("  conflicts feed: {} open records", open.len());
    for r in open.iter().take(2) {
        println!(
            "    {}… item {} ({} from {}): {}",
            &r.id[..12],
            r.item_id,
            r.operation.as_str(),
            r.dot.split(':').next().unwrap_or("?"),
            r.reason
        );
    }
    println!("  regions agree: {}\n", if agree { "yes" } else { "NO" });
    Ok(agree)
}

/// The application's side of the manual policy: take each open record, write a resolution.
fn resolve_manually(s: &Store) -> Result<usize> {
    let mut done = std::collections::HashSet::new();
    for r in open_records(s, "returns")? {
        if !done.insert((r.partition_key.clone(), r.item_id.clone())) {
            continue;
        }
        let current = s.read_item(DB, "returns", &r.partition_key, &r.item_id);
        let mut body = match current {
            Ok(item) => item.body,
            Err(_) => json!({"id": r.item_id, "customerId": r.partition_key.to_value()}),
        };
        body["reason"] = json!("reviewed by support");
        s.upsert_item(DB, "returns", body)?;
    }
    Ok(done.len())
}
