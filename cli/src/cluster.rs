//! `converge demo` on real regions: three `converge serve` processes on loopback (free ports),
//! driven through the Cosmos DB API as an application's SDK drives it: every request signed
//! with a master key made for the run, partition keys in `x-ms-documentdb-partitionkey`. Replication is cut by restarting the regions without their peers, and
//! healed by restarting them with their peers; the report then reads the regions' stores from
//! disk, after the servers stopped cleanly.

use crate::demo::{
    DB, DemoArgs, DemoRegion, REGIONS, bar, conclude, open_records, report, scenarios, write_step,
};
use anyhow::{Context, Result, bail};
use converge_core::sim::Rng;
use converge_core::{ConflictPolicy, Store, StoreOptions, WasmResolvers};
use converge_server::cosmos::auth::MasterKey;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long healing may take before the demo gives up.
const HEAL_LIMIT: Duration = Duration::from_secs(180);

struct Server {
    name: &'static str,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

/// The three region processes.
struct Cluster {
    exe: PathBuf,
    servers: Vec<Server>,
    /// The master key file every region is started with.
    key_file: PathBuf,
    key: String,
}

impl Cluster {
    fn new(root: &Path) -> Result<Self> {
        let exe = std::env::current_exe().context("finding the converge binary")?;
        let servers = REGIONS
            .iter()
            .map(|name| {
                let port = std::net::TcpListener::bind("127.0.0.1:0")?
                    .local_addr()?
                    .port();
                Ok(Server {
                    name,
                    port,
                    dir: root.join(name),
                    child: None,
                })
            })
            .collect::<Result<_>>()?;
        let key = master_key()?;
        let key_file = root.join("master-key");
        std::fs::create_dir_all(root)
            .and_then(|()| std::fs::write(&key_file, &key))
            .with_context(|| format!("writing {}", key_file.display()))?;
        Ok(Cluster {
            exe,
            servers,
            key_file,
            key,
        })
    }

    /// Starts every region, pulling from the others when `peers`.
    fn start(&mut self, peers: bool) -> Result<()> {
        let all: Vec<(&str, u16)> = self.servers.iter().map(|s| (s.name, s.port)).collect();
        for s in &mut self.servers {
            let mut cmd = Command::new(&self.exe);
            cmd.args(["serve", "--region", s.name, "--data"])
                .arg(&s.dir)
                .args(["--listen", &format!("127.0.0.1:{}", s.port)])
                .arg("--key-file")
                .arg(&self.key_file);
            if peers {
                for (name, port) in all.iter().filter(|(n, _)| *n != s.name) {
                    cmd.args(["--peer", &format!("{name}=http://127.0.0.1:{port}")]);
                }
            }
            let mut child = cmd
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("starting region {}", s.name))?;
            let mut line = String::new();
            if let Some(out) = child.stdout.take() {
                BufReader::new(out).read_line(&mut line)?;
            }
            if !line.starts_with("listening on ") {
                let _ = child.kill();
                bail!("region {} did not start (port {} taken?)", s.name, s.port);
            }
            s.child = Some(child);
        }
        Ok(())
    }

    /// SIGTERM to every region; each must exit cleanly.
    fn stop(&mut self) -> Result<()> {
        for s in &mut self.servers {
            if let Some(mut child) = s.child.take() {
                Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status()
                    .context("sending SIGTERM")?;
                let status = child.wait()?;
                if !status.success() {
                    bail!("region {} exited with {status}", s.name);
                }
            }
        }
        Ok(())
    }

    fn clients(&self) -> Vec<Http> {
        self.servers
            .iter()
            .map(|s| Http::new(s.name, s.port, &self.key))
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for s in &mut self.servers {
            if let Some(mut child) = s.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// What regions must agree on in a container: (id, etag) of visible items, open record ids.
type ContainerState = (Vec<(String, String)>, Vec<String>);

/// A fresh master key (64 random bytes, base64), as a Cosmos account has.
fn master_key() -> Result<String> {
    use base64::Engine;
    use std::io::Read;
    let mut bytes = [0u8; 64];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom for the demo's master key")?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// A region's Cosmos DB API, as an application's SDK calls it.
struct Http {
    name: &'static str,
    base: String,
    key: MasterKey,
    agent: ureq::Agent,
}

/// An answer: status, JSON body (Null when empty), and the continuation of a list.
type Answer = (u16, Value, Option<String>);

impl Http {
    fn new(name: &'static str, port: u16, key: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Http {
            name,
            base: format!("http://127.0.0.1:{port}"),
            // The key was made by `master_key`: base64 of 64 bytes.
            key: MasterKey::from_base64(key).unwrap_or_else(|| unreachable!("base64 key")),
            agent,
        }
    }

    /// A signed request to `path` (names of this demo need no URL encoding), with `headers`
    /// and an optional body of `content_type`.
    fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Answer> {
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("x-ms-version", "2020-07-15")
            .header("x-ms-date", &date)
            .header("authorization", self.key.authorization(method, path, &date));
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let (content_type, bytes) = body.unwrap_or(("application/json", Vec::new()));
        let req = req
            .header("content-type", content_type)
            .body(bytes)
            .context("building a request")?;
        let mut r = self
            .agent
            .run(req)
            .with_context(|| format!("calling region {}", self.name))?;
        let status = r.status().as_u16();
        let continuation = r
            .headers()
            .get("x-ms-continuation")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = r.body_mut().read_to_string().unwrap_or_default();
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::Null),
            continuation,
        ))
    }

    fn json(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &Value,
    ) -> Result<Answer> {
        self.call(
            method,
            path,
            headers,
            Some(("application/json", body.to_string().into_bytes())),
        )
    }

    fn expect(&self, what: &str, got: Answer, ok: &[u16]) -> Result<Value> {
        if ok.contains(&got.0) {
            Ok(got.1)
        } else {
            bail!("{what} in {}: {} {}", self.name, got.0, got.1)
        }
    }

    fn docs(container: &str) -> String {
        format!("/dbs/{DB}/colls/{container}/docs")
    }

    fn pk(customer: &str) -> (&'static str, String) {
        (
            "x-ms-documentdb-partitionkey",
            json!([customer]).to_string(),
        )
    }

    /// Every page of a Cosmos list (`docs` or `conflicts` of a container; `field` is
    /// `Documents` or `Conflicts`).
    fn list(&self, path: &str, field: &str) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut cont: Option<String> = None;
        loop {
            let mut headers = vec![("x-ms-max-item-count", "1000".to_owned())];
            if let Some(c) = &cont {
                headers.push(("x-ms-continuation", c.clone()));
            }
            let got = self.call("GET", path, &headers, None)?;
            let next = got.2.clone();
            let page = self.expect("listing", got, &[200])?;
            out.extend(page[field].as_array().cloned().unwrap_or_default());
            match next {
                Some(c) => cont = Some(c),
                None => return Ok(out),
            }
        }
    }

    /// The open and handled records of a container's conflicts feed.
    fn conflicts(&self, container: &str) -> Result<Vec<Value>> {
        self.list(
            &format!("/dbs/{DB}/colls/{container}/conflicts"),
            "Conflicts",
        )
    }

    /// (id, etag) of every visible item and ids of open records: what regions must agree on.
    fn state(&self, container: &str) -> Result<ContainerState> {
        let items = self
            .list(&Self::docs(container), "Documents")?
            .iter()
            .map(|i| (i["id"].to_string(), i["_etag"].to_string()))
            .collect();
        let mut open: Vec<String> = self
            .conflicts(container)?
            .iter()
            .filter(|c| c["status"] == "open")
            .map(|c| c["id"].to_string())
            .collect();
        open.sort();
        Ok((items, open))
    }
}

/// A container policy in Cosmos DB's shape.
fn cosmos_policy(container: &str, policy: &ConflictPolicy) -> Value {
    match policy {
        ConflictPolicy::Lww { path } => {
            json!({"mode": "LastWriterWins", "conflictResolutionPath": path})
        }
        ConflictPolicy::Custom { resolver, .. } => json!({
            "mode": "Custom",
            "conflictResolutionProcedure": format!("dbs/{DB}/colls/{container}/sprocs/{resolver}"),
        }),
        ConflictPolicy::Manual => json!({"mode": "Custom"}),
    }
}

impl DemoRegion for Http {
    fn name(&self) -> String {
        self.name.to_owned()
    }

    fn read(&self, container: &str, customer: &str, id: &str) -> Result<Option<Value>> {
        let path = format!("{}/{id}", Self::docs(container));
        let got = self.call("GET", &path, &[Self::pk(customer)], None)?;
        match got.0 {
            404 => Ok(None),
            _ => self.expect("read", got, &[200]).map(Some),
        }
    }

    fn upsert(&self, container: &str, item: Value) -> Result<()> {
        let customer = item["customerId"].as_str().unwrap_or_default().to_owned();
        let headers = [
            ("x-ms-documentdb-is-upsert", "true".to_owned()),
            Self::pk(&customer),
        ];
        let got = self.json("POST", &Self::docs(container), &headers, &item)?;
        self.expect("upsert", got, &[200, 201]).map(|_| ())
    }

    fn delete(&self, container: &str, customer: &str, id: &str) -> Result<bool> {
        let path = format!("{}/{id}", Self::docs(container));
        let got = self.call("DELETE", &path, &[Self::pk(customer)], None)?;
        match got.0 {
            404 => Ok(false),
            _ => self.expect("delete", got, &[204]).map(|_| true),
        }
    }
}

/// Whether every region shows the same items, etags and open records in every container.
fn agreed(regions: &[Http]) -> Result<bool> {
    for sc in scenarios() {
        let first = regions[0].state(sc.container)?;
        for r in &regions[1..] {
            if r.state(sc.container)? != first {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

fn wait_agreed(regions: &[Http], quiet: bool, what: &'static str) -> Result<Duration> {
    let pb = bar(quiet, 0, what);
    let start = Instant::now();
    while !agreed(regions)? {
        if start.elapsed() > HEAL_LIMIT {
            bail!("the regions did not agree within {HEAL_LIMIT:?}");
        }
        pb.tick();
        std::thread::sleep(Duration::from_millis(200));
    }
    pb.finish_and_clear();
    Ok(start.elapsed())
}

/// Runs the demo on three server processes; `Ok(false)` when the regions disagree.
pub fn run(args: &DemoArgs, root: &Path) -> Result<bool> {
    println!(
        "converge demo: three regions ({}) as `converge serve` processes on loopback, data under {}",
        REGIONS.join(", "),
        root.display()
    );
    let mut cluster = Cluster::new(root)?;
    cluster.start(true)?;
    let regions = cluster.clients();
    for (r, s) in regions.iter().zip(&cluster.servers) {
        println!("  {} listening on http://127.0.0.1:{}", r.name, s.port);
    }
    println!(
        "the application talks to them through the Cosmos DB API, as its SDK would (requests signed with the master key in {})",
        cluster.key_file.display()
    );
    // The deployment script runs against one region; replication takes it to the others.
    let west = &regions[0];
    let got = west.json("POST", "/dbs", &[], &json!({"id": DB}))?;
    // 409: a run on the same directories made it before.
    west.expect("creating the database", got, &[201, 409])?;
    for sc in scenarios() {
        let def = json!({
            "id": sc.container,
            "partitionKey": {"paths": [sc.pk], "kind": "Hash", "version": 2},
            "conflictResolutionPolicy": cosmos_policy(sc.container, &sc.policy),
        });
        let got = west.json("POST", &format!("/dbs/{DB}/colls"), &[], &def)?;
        west.expect("creating a container", got, &[201, 409])?;
        if let (Some(module), ConflictPolicy::Custom { resolver, .. }) = (sc.module, &sc.policy) {
            // converge's own route, reachable from the Cosmos dialect (there is no Cosmos one).
            let path = format!("/dbs/{DB}/colls/{}/resolvers/{resolver}", sc.container);
            let got = west.call(
                "PUT",
                &path,
                &[],
                Some(("application/wasm", module.to_vec())),
            )?;
            west.expect("uploading a resolver", got, &[201])?;
        }
    }
    wait_synced(&regions)?;
    cluster.stop()?;

    println!(
        "replication cut (regions restarted without peers): every region takes {} writes on {} customers",
        args.writes, args.customers
    );
    cluster.start(false)?;
    let total = (args.writes * REGIONS.len()) as u64;
    let pb = bar(args.quiet, total, "partitioned writes");
    let acknowledged = std::thread::scope(|s| {
        let handles: Vec<_> = regions
            .iter()
            .enumerate()
            .map(|(k, r)| {
                let pb = pb.clone();
                s.spawn(move || -> Result<usize> {
                    let mut rng = Rng::new(args.seed.wrapping_mul(31).wrapping_add(k as u64));
                    let mut ok = 0;
                    for step in 0..args.writes {
                        if write_step(r, &mut rng, args.customers, step)? {
                            ok += 1;
                        }
                        pb.inc(1);
                    }
                    Ok(ok)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a client thread panicked"))?
            })
            .sum::<Result<usize>>()
    })?;
    pb.finish_and_clear();
    println!(
        "{acknowledged} writes acknowledged through the Cosmos DB API (each durable) while partitioned"
    );

    cluster.stop()?;
    cluster.start(true)?;
    let took = wait_agreed(&regions, args.quiet, "healing")?;
    println!("replication healed (regions restarted with peers): all agree after {took:.1?}\n");

    // The application resolves the manual conflicts in one region, through the Cosmos API.
    let records = west.conflicts("returns")?;
    let open: Vec<&Value> = records.iter().filter(|r| r["status"] == "open").collect();
    println!(
        "returns (manual): {} open conflict records in every region's feed, for example",
        open.len()
    );
    for r in open.iter().take(2) {
        println!(
            "    item {} ({} from a concurrent version): {}",
            r["itemId"].as_str().unwrap_or("?"),
            r["operationType"].as_str().unwrap_or("?"),
            r["reason"].as_str().unwrap_or("?")
        );
    }
    println!(
        "the application now resolves them through the Cosmos DB API in {}\n",
        REGIONS[0]
    );
    let mut done = std::collections::HashSet::new();
    for record in records {
        if record["status"] != "open" {
            continue;
        }
        let (pk, id) = (record["partitionKey"].clone(), record["itemId"].clone());
        if !done.insert((pk.to_string(), id.to_string())) {
            continue;
        }
        let customer = pk.as_str().unwrap_or_default();
        let id = id.as_str().unwrap_or_default();
        let mut body = west
            .read("returns", customer, id)?
            .unwrap_or_else(|| json!({"id": id, "customerId": customer}));
        if let Some(obj) = body.as_object_mut() {
            obj.retain(|k, _| !k.starts_with('_'));
        }
        body["reason"] = json!("reviewed by support");
        west.upsert("returns", body)?;
    }
    wait_agreed(&regions, args.quiet, "settling")?;
    cluster.stop()?;

    // The report reads what the servers wrote.
    let stores: Vec<Store> = cluster
        .servers
        .iter()
        .map(|s| {
            let opts = StoreOptions::new().resolver_host(Arc::new(WasmResolvers::new()));
            Store::open(&s.dir, s.name, opts).with_context(|| format!("opening {}", s.name))
        })
        .collect::<Result<_>>()?;
    let mut agree = true;
    for sc in scenarios() {
        agree &= report(&stores, &sc)?;
    }
    let open_after: Vec<usize> = stores
        .iter()
        .map(|s| open_records(s, "returns").map(|r| r.len()))
        .collect::<Result<_>>()?;
    println!(
        "the application resolved {} manual conflicts through the Cosmos DB API in {}; open records now {open_after:?} (per region)",
        done.len(),
        REGIONS[0]
    );
    conclude(&stores, agree, &open_after)
}

/// Waits until every region has every container and resolver of the deployment.
fn wait_synced(regions: &[Http]) -> Result<()> {
    let start = Instant::now();
    for r in regions {
        for sc in scenarios() {
            loop {
                let path = match &sc.policy {
                    ConflictPolicy::Custom { .. } => {
                        format!("/dbs/{DB}/colls/{}/resolvers", sc.container)
                    }
                    _ => format!("/dbs/{DB}/colls/{}", sc.container),
                };
                let (status, v, _) = r.call("GET", &path, &[], None)?;
                let ready = status == 200
                    && (sc.module.is_none()
                        || v["resolvers"].as_array().is_some_and(|l| !l.is_empty()));
                if ready {
                    break;
                }
                if start.elapsed() > HEAL_LIMIT {
                    bail!("region {} never received {}", r.name, sc.container);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    Ok(())
}
