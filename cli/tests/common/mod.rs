//! Running real `converge serve` processes on loopback and talking HTTP to them.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (bound and released: a tiny race the tests accept).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One region process.
pub struct Region {
    pub name: String,
    pub port: u16,
    pub dir: PathBuf,
    pub peers: Vec<(String, u16)>,
    pub key: Option<PathBuf>,
    /// Serve HTTPS (and pull from peers over it) with these files.
    pub tls: Option<Tls>,
    /// More `converge serve` arguments.
    pub extra: Vec<String>,
    child: Option<Child>,
}

/// A region's HTTPS files: its certificate and key, and the CA it verifies peers with.
#[derive(Clone, Debug)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub peer_ca: PathBuf,
}

impl Region {
    /// A region on its own port under `root`, pulling from `peers` (not started).
    pub fn new(root: &Path, name: &str, port: u16) -> Self {
        Region {
            name: name.into(),
            port,
            dir: root.join(name),
            peers: Vec::new(),
            key: None,
            tls: None,
            extra: Vec::new(),
            child: None,
        }
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme(), self.port)
    }

    /// Starts the process and waits for its `listening on` line.
    pub fn start(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_converge"));
        cmd.args(["serve", "--region", &self.name])
            .arg("--data")
            .arg(&self.dir)
            .args(["--listen", &format!("127.0.0.1:{}", self.port)]);
        for (peer, port) in &self.peers {
            cmd.args([
                "--peer",
                &format!("{peer}={}://127.0.0.1:{port}", self.scheme()),
            ]);
        }
        if let Some(k) = &self.key {
            cmd.arg("--key-file").arg(k);
        }
        if let Some(t) = &self.tls {
            cmd.arg("--tls-cert")
                .arg(&t.cert)
                .arg("--tls-key")
                .arg(&t.key);
            cmd.arg("--peer-ca").arg(&t.peer_ca);
        }
        cmd.args(&self.extra);
        // Its log goes next to its data directory, to read when a test fails.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.with_extension("log"))
            .map_or_else(|_| Stdio::null(), Stdio::from);
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start converge serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        assert_eq!(
            line.trim(),
            format!("listening on {}", self.url()),
            "region {} did not start",
            self.name
        );
        self.child = Some(child);
    }

    /// SIGTERM, and waits for a clean exit (status 0).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let ok = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .expect("kill -TERM")
                .success();
            assert!(ok);
            let status = child.wait().expect("wait");
            assert!(
                status.success(),
                "region {} exited with {status}",
                self.name
            );
        }
    }

    /// SIGTERM, and waits at most `limit` for a clean exit; false when it is still running
    /// (then it is killed).
    pub fn stop_within(&mut self, limit: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = child.try_wait() {
                assert!(
                    status.success(),
                    "region {} exited with {status}",
                    self.name
                );
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A blocking HTTP client that returns every status (no error for 4xx/5xx).
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// The status and JSON body (Null when empty or not JSON) of a response.
pub fn answer(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, Value) {
    let mut r = r.expect("HTTP request");
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

pub fn get(a: &ureq::Agent, url: &str) -> (u16, Value) {
    answer(a.get(url).call())
}

pub fn put_json(a: &ureq::Agent, url: &str, body: &Value) -> (u16, Value) {
    answer(
        a.put(url)
            .content_type("application/json")
            .send(body.to_string()),
    )
}

pub fn post_json(a: &ureq::Agent, url: &str, body: &Value) -> (u16, Value) {
    answer(
        a.post(url)
            .content_type("application/json")
            .send(body.to_string()),
    )
}

/// Creates `db/coll` partitioned on `/pk` with `policy` in one region.
pub fn container(a: &ureq::Agent, r: &Region, coll: &str, policy: Value) {
    let (s, v) = put_json(
        a,
        &format!("{}/dbs/db/colls/{coll}", r.url()),
        &serde_json::json!({"partitionKey": "/pk", "conflictResolutionPolicy": policy}),
    );
    assert!(s == 201 || s == 200, "{s} {v}");
}

/// [`container`] in the first of `regions`, then waits until every one of them has it.
pub fn container_everywhere(a: &ureq::Agent, regions: &[&Region], coll: &str, policy: Value) {
    container(a, regions[0], coll, policy);
    let start = Instant::now();
    while !regions
        .iter()
        .all(|r| get(a, &format!("{}/dbs/db/colls/{coll}", r.url())).0 == 200)
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{coll} did not reach every region within 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Upserts an item.
pub fn upsert(a: &ureq::Agent, r: &Region, coll: &str, item: &Value) -> u16 {
    answer(
        a.post(format!("{}/dbs/db/colls/{coll}/docs", r.url()))
            .header("x-upsert", "true")
            .content_type("application/json")
            .send(item.to_string()),
    )
    .0
}

/// Every visible item's (id, `_etag`), all pages.
pub fn listing(a: &ureq::Agent, r: &Region, coll: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut cont: Option<String> = None;
    loop {
        let mut url = format!("{}/dbs/db/colls/{coll}/docs?maxItemCount=1000", r.url());
        if let Some(c) = &cont {
            url.push_str(&format!("&continuation={c}"));
        }
        let (s, v) = get(a, &url);
        assert_eq!(s, 200, "{v}");
        for item in v["items"].as_array().expect("items") {
            out.push((
                item["id"].as_str().unwrap_or_default().to_owned(),
                item["_etag"].as_str().unwrap_or_default().to_owned(),
            ));
        }
        match v["continuation"].as_str() {
            Some(c) => cont = Some(c.to_owned()),
            None => return out,
        }
    }
}

/// Open conflict records (id, reason) of a container.
pub fn open_conflicts(a: &ureq::Agent, r: &Region, coll: &str) -> Vec<(String, String)> {
    let (s, v) = get(
        a,
        &format!(
            "{}/dbs/db/colls/{coll}/conflicts?maxItemCount=1000",
            r.url()
        ),
    );
    assert_eq!(s, 200, "{v}");
    let mut out: Vec<(String, String)> = v["conflicts"]
        .as_array()
        .expect("conflicts")
        .iter()
        .filter(|c| c["status"] == "open")
        .map(|c| {
            (
                c["id"].as_str().unwrap_or_default().to_owned(),
                c["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Waits until every region lists the same items with the same etags (and `extra` agrees),
/// returning that listing; panics after `limit`.
pub fn converge(
    a: &ureq::Agent,
    regions: &[&Region],
    coll: &str,
    limit: Duration,
) -> Vec<(String, String)> {
    let start = Instant::now();
    // A region the container has not reached yet answers 404: not converged yet.
    let has = |r: &Region| get(a, &format!("{}/dbs/db/colls/{coll}", r.url())).0 == 200;
    loop {
        if !regions.iter().all(|r| has(r)) {
            assert!(
                start.elapsed() < limit,
                "{coll} did not reach every region within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        let lists: Vec<_> = regions.iter().map(|r| listing(a, r, coll)).collect();
        let feeds: Vec<_> = regions.iter().map(|r| open_conflicts(a, r, coll)).collect();
        if lists.windows(2).all(|w| w[0] == w[1]) && feeds.windows(2).all(|w| w[0] == w[1]) {
            return lists.into_iter().next().unwrap_or_default();
        }
        assert!(
            start.elapsed() < limit,
            "regions did not converge on {coll} within {limit:?}: {:?}",
            lists.iter().map(Vec::len).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Three regions (west, east, north) pulling from each other, started.
pub fn mesh(root: &Path) -> Vec<Region> {
    mesh_with_key(root, None)
}

/// [`mesh`], every region (and its pulls) guarded by the key in `key`, if given.
pub fn mesh_with_key(root: &Path, key: Option<&Path>) -> Vec<Region> {
    mesh_with(root, key, &[])
}

/// [`mesh_with_key`], each region started with the `converge serve` arguments `extra` too.
pub fn mesh_with(root: &Path, key: Option<&Path>, extra: &[&str]) -> Vec<Region> {
    let names = ["west", "east", "north"];
    let ports: Vec<u16> = names.iter().map(|_| free_port()).collect();
    let mut regions: Vec<Region> = names
        .iter()
        .zip(&ports)
        .map(|(n, p)| Region::new(root, n, *p))
        .collect();
    for r in regions.iter_mut() {
        r.key = key.map(Path::to_path_buf);
        r.extra = extra.iter().map(|e| (*e).to_owned()).collect();
        r.peers = names
            .iter()
            .zip(&ports)
            .filter(|(n, _)| **n != r.name)
            .map(|(n, p)| ((*n).to_owned(), *p))
            .collect();
        r.start();
    }
    regions
}
