//! End-to-end partitions made in the network, not by stopping processes: three `converge
//! serve` processes in their own network namespaces, joined by a bridge for replication, each
//! also reachable by the test over a link of its own. Cutting a region's bridge link partitions
//! it while it keeps taking writes. Needs `ip netns` (root on Linux); skipped with a message
//! where it is not available.

mod common;

use common::{agent, answer};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const KEY: &str = "netns-test-key-0123456789";
const PORT: u16 = 7000;

fn ip(args: &str) -> bool {
    Command::new("ip")
        .args(args.split_whitespace())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The namespaces, bridge and links; removed on drop.
struct Net {
    id: u32,
}

impl Net {
    fn ns(&self, k: usize) -> String {
        format!("cv{}n{k}", self.id)
    }

    /// Builds the network, or `None` where namespaces cannot be made.
    fn new() -> Option<Self> {
        let id = std::process::id() % 10_000;
        let probe = format!("cv{id}probe");
        if !ip(&format!("netns add {probe}")) {
            return None;
        }
        ip(&format!("netns del {probe}"));
        let net = Net { id };
        let ok =
            ip(&format!("link add cv{id}b type bridge")) && ip(&format!("link set cv{id}b up"));
        assert!(ok, "cannot create the bridge");
        for k in 1..=3 {
            let ns = net.ns(k);
            let steps = [
                format!("netns add {ns}"),
                format!("netns exec {ns} ip link set lo up"),
                // Replication: a port on the bridge.
                format!("link add cv{id}p{k} type veth peer name cv{id}q{k}"),
                format!("link set cv{id}q{k} netns {ns}"),
                format!("link set cv{id}p{k} master cv{id}b"),
                format!("link set cv{id}p{k} up"),
                format!("netns exec {ns} ip addr add 10.77.0.{k}/24 dev cv{id}q{k}"),
                format!("netns exec {ns} ip link set cv{id}q{k} up"),
                // The test's own link to the region.
                format!("link add cv{id}c{k} type veth peer name cv{id}d{k}"),
                format!("link set cv{id}d{k} netns {ns}"),
                format!("addr add 10.78.{k}.2/30 dev cv{id}c{k}"),
                format!("link set cv{id}c{k} up"),
                format!("netns exec {ns} ip addr add 10.78.{k}.1/30 dev cv{id}d{k}"),
                format!("netns exec {ns} ip link set cv{id}d{k} up"),
            ];
            for s in &steps {
                assert!(ip(s), "ip {s} failed");
            }
        }
        Some(net)
    }

    /// Cuts (or restores) region `k`'s replication link.
    fn link(&self, k: usize, up: bool) {
        let state = if up { "up" } else { "down" };
        assert!(ip(&format!("link set cv{}p{k} {state}", self.id)));
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for k in 1..=3 {
            // Deleting one end of a veth pair deletes both; a deleted namespace's interfaces
            // may otherwise outlive it.
            ip(&format!("link del cv{}p{k}", self.id));
            ip(&format!("link del cv{}c{k}", self.id));
            ip(&format!("netns del {}", self.ns(k)));
        }
        ip(&format!("link del cv{}b", self.id));
    }
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn url(k: usize) -> String {
    format!("http://10.78.{k}.1:{PORT}")
}

fn call(req: ureq::RequestBuilder<ureq::typestate::WithoutBody>) -> (u16, Value) {
    answer(req.header("Authorization", format!("Bearer {KEY}")).call())
}

fn listing(a: &ureq::Agent, k: usize) -> Vec<(String, String)> {
    let (s, v) = call(a.get(format!("{}/dbs/db/colls/c/docs?maxItemCount=1000", url(k))));
    assert_eq!(s, 200, "{v}");
    let mut out: Vec<(String, String)> = v["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| (i["id"].to_string(), i["_etag"].to_string()))
        .collect();
    out.sort();
    out
}

fn write(a: &ureq::Agent, k: usize, item: &Value) {
    let (s, v) = answer(
        a.post(format!("{}/dbs/db/colls/c/docs", url(k)))
            .header("Authorization", format!("Bearer {KEY}"))
            .header("x-upsert", "true")
            .content_type("application/json")
            .send(item.to_string()),
    );
    assert!(s == 200 || s == 201, "{s} {v}");
}

#[test]
fn regions_cut_off_in_the_network_keep_writing_and_converge_when_the_link_returns() {
    let Some(net) = Net::new() else {
        eprintln!("skipped: `ip netns` is not available here (needs root on Linux)");
        return;
    };
    let root = tempfile::tempdir().expect("dir");
    let key = root.path().join("key");
    std::fs::write(&key, KEY).expect("key");
    let names = ["west", "east", "north"];
    let mut procs = Vec::new();
    for k in 1..=3 {
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &net.ns(k),
            env!("CARGO_BIN_EXE_converge"),
            "serve",
        ])
        .args([
            "--region",
            names[k - 1],
            "--listen",
            &format!("0.0.0.0:{PORT}"),
        ])
        .arg("--data")
        .arg(root.path().join(names[k - 1]))
        .arg("--key-file")
        .arg(&key);
        for j in (1..=3).filter(|j| *j != k) {
            cmd.args([
                "--peer",
                &format!("{}=http://10.77.0.{j}:{PORT}", names[j - 1]),
            ]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("listening line");
        assert_eq!(line.trim(), format!("listening on http://0.0.0.0:{PORT}"));
        procs.push(Proc(child));
    }
    let a = agent();
    let (s, v) = answer(
        a.put(format!("{}/dbs/db/colls/c", url(1)))
            .header("Authorization", format!("Bearer {KEY}"))
            .content_type("application/json")
            .send(json!({"partitionKey": "/pk"}).to_string()),
    );
    assert_eq!(s, 201, "{v}");
    let start = Instant::now();
    for k in 1..=3 {
        while call(a.get(format!("{}/dbs/db/colls/c", url(k)))).0 != 200 {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the container never reached {k}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // West is cut off; every side keeps writing, the shared item on both sides.
    net.link(1, false);
    for (k, name) in names.iter().enumerate() {
        for n in 0..10 {
            write(&a, k + 1, &json!({"id": format!("{name}-{n}"), "pk": "p"}));
        }
    }
    write(&a, 1, &json!({"id": "shared", "pk": "p", "by": "west"}));
    write(&a, 2, &json!({"id": "shared", "pk": "p", "by": "east"}));
    std::thread::sleep(Duration::from_secs(1));
    let east_sees = listing(&a, 2);
    assert!(
        !east_sees.iter().any(|(id, _)| id.contains("west-")),
        "the partition leaked: east has west's writes"
    );
    assert_eq!(
        east_sees.len(),
        21,
        "east and north still replicate: {east_sees:?}"
    );

    // The link returns: everyone converges on 31 items with the same etags.
    net.link(1, true);
    let start = Instant::now();
    loop {
        let lists: Vec<_> = (1..=3).map(|k| listing(&a, k)).collect();
        if lists[0].len() == 31 && lists.windows(2).all(|w| w[0] == w[1]) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no convergence after healing: {:?}",
            lists.iter().map(Vec::len).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(procs);
}
