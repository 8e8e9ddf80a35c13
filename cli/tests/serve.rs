//! End-to-end: real `converge serve` processes on loopback, talked to over HTTP, as users run
//! them: concurrent clients, partitions made by stopping regions, kill -9 under load,
//! resolvers, the manual policy, relays, keys, and bad input on every route.

mod common;

use common::*;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);

/// Waits until `url` answers 200.
fn wait_for(a: &ureq::Agent, url: &str) {
    let start = std::time::Instant::now();
    while get(a, url).0 != 200 {
        assert!(start.elapsed() < LIMIT, "{url} never answered 200");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes `bodies[i]` in region i while every other region is stopped, so the versions are
/// concurrent; then starts every region again.
fn partitioned_writes(a: &ureq::Agent, regions: &mut [Region], coll: &str, bodies: &[Value]) {
    for r in regions.iter_mut() {
        r.stop();
    }
    for (i, body) in bodies.iter().enumerate() {
        regions[i].start();
        assert!(matches!(upsert(a, &regions[i], coll, body), 200 | 201));
        regions[i].stop();
    }
    for r in regions.iter_mut() {
        r.start();
    }
}

#[test]
fn concurrent_clients_in_three_regions_converge_with_the_same_etags() {
    let root = tempfile::tempdir().expect("dir");
    let regions = mesh(root.path());
    let a = agent();
    container(&a, &regions[0], "carts", json!({"mode": "lww"}));
    for r in &regions {
        wait_for(&a, &format!("{}/dbs/db/colls/carts", r.url()));
    }
    std::thread::scope(|s| {
        for (k, r) in regions.iter().enumerate() {
            for t in 0..4 {
                let a = a.clone();
                s.spawn(move || {
                    for n in 0..40 {
                        let body = json!({"id": format!("cart-{}", (n * 7 + t) % 25), "pk": "p",
                            "by": r.name, "n": n, "client": k * 10 + t});
                        assert!(matches!(upsert(&a, r, "carts", &body), 200 | 201));
                    }
                });
            }
        }
    });
    let listed = converge(&a, &[&regions[0], &regions[1], &regions[2]], "carts", LIMIT);
    assert_eq!(listed.len(), 25);
    // The metrics saw the writes and the replication.
    let mut m = a
        .get(format!("{}/metrics", regions[0].url()))
        .call()
        .expect("metrics");
    let text = m.body_mut().read_to_string().expect("text");
    assert!(
        text.contains("converge_writes_total{region=\"west\"} 160"),
        "{text}"
    );
    assert!(
        text.contains("converge_peer_up{region=\"west\",peer=\"east\"} 1")
            && text.contains(
                "converge_peer_replication_lag_seconds_count{region=\"west\",peer=\"east\"}"
            ),
        "{text}"
    );
}

#[test]
fn partitions_made_by_stopping_regions_heal_and_a_chain_relays() {
    let root = tempfile::tempdir().expect("dir");
    let mut regions = mesh(root.path());
    let a = agent();
    container(&a, &regions[0], "items", json!({"mode": "lww"}));
    for r in &regions {
        wait_for(&a, &format!("{}/dbs/db/colls/items", r.url()));
    }
    // Each side writes while the others are down: its own items and a shared one.
    for r in regions.iter_mut() {
        r.stop();
    }
    for r in regions.iter_mut() {
        r.start();
        for n in 0..10 {
            let body = json!({"id": format!("{}-{n}", r.name), "pk": "p", "n": n});
            assert_eq!(upsert(&a, r, "items", &body), 201);
        }
        let shared = json!({"id": "shared", "pk": "p", "by": r.name});
        assert!(matches!(upsert(&a, r, "items", &shared), 200 | 201));
        r.stop();
    }
    for r in regions.iter_mut() {
        r.start();
    }
    let listed = converge(&a, &[&regions[0], &regions[1], &regions[2]], "items", LIMIT);
    assert_eq!(listed.len(), 31);
    drop(regions);

    // A chain a <-> b <-> c: a and c never talk, b relays.
    let root = tempfile::tempdir().expect("dir");
    let ports = [free_port(), free_port(), free_port()];
    let mut chain: Vec<Region> = ["a", "b", "c"]
        .iter()
        .zip(ports)
        .map(|(n, p)| Region::new(root.path(), n, p))
        .collect();
    chain[0].peers = vec![("b".into(), ports[1])];
    chain[1].peers = vec![("a".into(), ports[0]), ("c".into(), ports[2])];
    chain[2].peers = vec![("b".into(), ports[1])];
    for r in chain.iter_mut() {
        r.start();
    }
    container(&a, &chain[0], "items", json!({"mode": "lww"}));
    wait_for(&a, &format!("{}/dbs/db/colls/items", chain[2].url()));
    for (r, name) in [(&chain[0], "from-a"), (&chain[2], "from-c")] {
        assert_eq!(upsert(&a, r, "items", &json!({"id": name, "pk": "p"})), 201);
    }
    let listed = converge(&a, &[&chain[0], &chain[1], &chain[2]], "items", LIMIT);
    assert_eq!(listed.len(), 2);
}

/// Review finding (issue 10), with real processes: west drops and re-creates a container and
/// writes into it while east, cut off, drops the earlier creation. Once linked, the
/// re-creation, its item and its resolver show in every region (east's late drop used to win
/// on the definition by deletes-win LWW and hide the container everywhere).
#[test]
fn a_late_drop_of_the_earlier_creation_leaves_a_re_creation_live_everywhere() {
    let root = tempfile::tempdir().expect("dir");
    let mut regions = mesh(root.path());
    let a = agent();
    container(&a, &regions[0], "k", json!({"mode": "lww"}));
    for r in &regions {
        wait_for(&a, &format!("{}/dbs/db/colls/k", r.url()));
    }
    for r in regions.iter_mut() {
        r.stop();
    }
    regions[0].start();
    let west = regions[0].url();
    assert_eq!(
        answer(a.delete(format!("{west}/dbs/db/colls/k")).call()).0,
        204
    );
    container(
        &a,
        &regions[0],
        "k",
        json!({"mode": "custom", "resolver": "m"}),
    );
    let (_, def) = get(&a, &format!("{west}/dbs/db/colls/k"));
    assert_eq!(
        upsert(&a, &regions[0], "k", &json!({"id": "after", "pk": "p"})),
        201
    );
    let (s, v) = answer(
        a.put(format!("{west}/dbs/db/colls/k/resolvers/m"))
            .content_type("application/wasm")
            .send(converge_udf_examples::HIGHEST_VERSION),
    );
    assert_eq!(s, 201, "{v}");
    regions[0].stop();
    regions[1].start();
    let east = regions[1].url();
    assert_eq!(
        answer(a.delete(format!("{east}/dbs/db/colls/k")).call()).0,
        204
    );
    regions[1].stop();
    for r in regions.iter_mut() {
        r.start();
    }
    // Until every region has both drops and the re-creation, one may show no container.
    let start = std::time::Instant::now();
    for r in &regions {
        while get(&a, &format!("{}/dbs/db/colls/k", r.url())).1["creationId"] != def["creationId"] {
            assert!(
                start.elapsed() < LIMIT,
                "{} never showed the re-creation",
                r.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let listed = converge(&a, &[&regions[0], &regions[1], &regions[2]], "k", LIMIT);
    assert_eq!(listed.len(), 1, "the re-creation's item shows: {listed:?}");
    for r in &regions {
        let (s, shown) = get(&a, &format!("{}/dbs/db/colls/k", r.url()));
        assert_eq!(s, 200, "{} shows the re-creation", r.name);
        assert_eq!(shown["creationId"], def["creationId"], "{}", r.name);
        let (_, list) = get(&a, &format!("{}/dbs/db/colls/k/resolvers", r.url()));
        assert_eq!(
            list["resolvers"].as_array().map(Vec::len),
            Some(1),
            "{}: {list}",
            r.name
        );
    }
}

#[test]
fn kill_9_under_write_load_loses_no_acknowledged_write() {
    let root = tempfile::tempdir().expect("dir");
    let mut regions = mesh(root.path());
    let a = agent();
    container(&a, &regions[0], "orders", json!({"mode": "lww"}));
    for r in &regions {
        wait_for(&a, &format!("{}/dbs/db/colls/orders", r.url()));
    }
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let west_url = regions[0].url();
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let (a, acked, url) = (a.clone(), acknowledged.clone(), west_url.clone());
            std::thread::spawn(move || {
                for n in 0..10_000 {
                    let id = format!("order-{t}-{n}");
                    let r = a
                        .post(format!("{url}/dbs/db/colls/orders/docs"))
                        .content_type("application/json")
                        .send(json!({"id": id, "pk": "p", "n": n}).to_string());
                    match r {
                        Ok(resp) if resp.status() == 201 => {
                            if let Ok(mut v) = acked.lock() {
                                v.push(id);
                            }
                        }
                        // The region died under us: nothing acknowledged after this.
                        _ => return,
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    regions[0].kill9();
    for w in writers {
        let _ = w.join();
    }
    let acked = acknowledged.lock().expect("list").clone();
    assert!(
        acked.len() > 20,
        "the load wrote too little: {}",
        acked.len()
    );
    regions[0].start();
    let listed = converge(
        &a,
        &[&regions[0], &regions[1], &regions[2]],
        "orders",
        LIMIT,
    );
    let present: std::collections::HashSet<&str> =
        listed.iter().map(|(id, _)| id.as_str()).collect();
    let missing: Vec<&String> = acked
        .iter()
        .filter(|id| !present.contains(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged writes lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(3)]
    );
}

#[test]
fn a_resolver_uploaded_to_one_region_resolves_everywhere_and_a_trapping_one_fills_every_feed() {
    let root = tempfile::tempdir().expect("dir");
    let mut regions = mesh(root.path());
    let a = agent();
    container(
        &a,
        &regions[0],
        "carts",
        json!({"mode": "custom", "resolver": "cart-merge"}),
    );
    container(
        &a,
        &regions[0],
        "wishes",
        json!({"mode": "custom", "resolver": "wish-merge"}),
    );
    for (coll, name, module) in [
        ("carts", "cart-merge", converge_udf_examples::CART_MERGE),
        (
            "wishes",
            "wish-merge",
            converge_udf_examples::adversarial::PANIC,
        ),
    ] {
        let (s, v) = answer(
            a.put(format!(
                "{}/dbs/db/colls/{coll}/resolvers/{name}",
                regions[0].url()
            ))
            .content_type("application/wasm")
            .send(module),
        );
        assert_eq!(s, 201, "{v}");
        assert_eq!(v["name"], name);
        for r in &regions {
            let start = std::time::Instant::now();
            loop {
                let (_, list) = get(&a, &format!("{}/dbs/db/colls/{coll}/resolvers", r.url()));
                if list["resolvers"][0]["hash"] == v["hash"] {
                    break;
                }
                assert!(start.elapsed() < LIMIT, "{} never got {name}", r.name);
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    let carts: Vec<Value> = ["apple", "pear", "plum"]
        .iter()
        .map(|sku| json!({"id": "c1", "pk": "p", "lines": [{"sku": sku, "qty": 1, "updated": 5}], "removed": {}}))
        .collect();
    partitioned_writes(&a, &mut regions, "carts", &carts);
    let wishes: Vec<Value> = (0..3)
        .map(|k| json!({"id": "w1", "pk": "p", "k": k}))
        .collect();
    partitioned_writes(&a, &mut regions, "wishes", &wishes);

    let all = [&regions[0], &regions[1], &regions[2]];
    converge(&a, &all, "carts", LIMIT);
    converge(&a, &all, "wishes", LIMIT);
    for r in &regions {
        let (s, cart) = answer(
            a.get(format!("{}/dbs/db/colls/carts/docs/c1", r.url()))
                .header("x-partition-key", "\"p\"")
                .call(),
        );
        assert_eq!(s, 200);
        let skus: Vec<&str> = cart["lines"]
            .as_array()
            .expect("lines")
            .iter()
            .filter_map(|l| l["sku"].as_str())
            .collect();
        assert_eq!(skus, ["apple", "pear", "plum"], "merged in {}", r.name);
        assert!(open_conflicts(&a, r, "carts").is_empty());
        let feed = open_conflicts(&a, r, "wishes");
        // One record per sibling that is not shown: three versions, two records.
        assert_eq!(feed.len(), 2, "{}: {feed:?}", r.name);
        assert!(
            feed.iter()
                .all(|(_, reason)| reason == "trap: cart w1 cannot be merged"),
            "{feed:?}"
        );
    }
}

#[test]
fn manual_conflicts_are_listed_resolved_by_the_application_and_deleted() {
    let root = tempfile::tempdir().expect("dir");
    let mut regions = mesh(root.path());
    let a = agent();
    container(&a, &regions[0], "returns", json!({"mode": "manual"}));
    for r in &regions {
        wait_for(&a, &format!("{}/dbs/db/colls/returns", r.url()));
    }
    let bodies: Vec<Value> = ["damaged", "late", "wrong size"]
        .iter()
        .map(|why| json!({"id": "r1", "pk": "p", "reason": why}))
        .collect();
    partitioned_writes(&a, &mut regions, "returns", &bodies);
    let all = [&regions[0], &regions[1], &regions[2]];
    converge(&a, &all, "returns", LIMIT);
    for r in &regions {
        // One record per sibling that is not shown: three versions, two records.
        assert_eq!(open_conflicts(&a, r, "returns").len(), 2, "{}", r.name);
    }
    // The application resolves in one region with a replace that has seen every version.
    let (s, current) = answer(
        a.get(format!("{}/dbs/db/colls/returns/docs/r1", regions[1].url()))
            .header("x-partition-key", "\"p\"")
            .call(),
    );
    assert_eq!(s, 200);
    let (s, v) = answer(
        a.put(format!("{}/dbs/db/colls/returns/docs/r1", regions[1].url()))
            .header("x-partition-key", "\"p\"")
            .header("If-Match", current["_etag"].as_str().expect("etag"))
            .content_type("application/json")
            .send(json!({"id": "r1", "pk": "p", "reason": "reviewed"}).to_string()),
    );
    assert_eq!(s, 200, "{v}");
    converge(&a, &all, "returns", LIMIT);
    for r in &regions {
        assert!(open_conflicts(&a, r, "returns").is_empty(), "{}", r.name);
        let (_, page) = get(&a, &format!("{}/dbs/db/colls/returns/conflicts", r.url()));
        let records = page["conflicts"].as_array().expect("records").clone();
        // Superseded records stay until deleted (earlier sibling sets had their own).
        assert!(records.len() >= 2, "{records:?}");
        for rec in &records {
            assert_eq!(rec["status"], "superseded");
            let url = format!(
                "{}/dbs/db/colls/returns/conflicts/{}",
                r.url(),
                rec["id"].as_str().expect("id")
            );
            assert_eq!(get(&a, &url).0, 200);
            assert_eq!(answer(a.delete(&url).call()).0, 204);
            assert_eq!(get(&a, &url).0, 404);
        }
    }
}

/// A bad request: method, URL, body, headers, expected status and code.
type Case<'a> = (
    &'a str,
    String,
    Option<Vec<u8>>,
    Vec<(&'a str, &'a str)>,
    u16,
    &'a str,
);

/// Sends only a request's head announcing `length` body bytes, then reads the answer.
fn head_only(port: u16, method: &str, path: &str, length: usize) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nx-partition-key: \"p\"\r\nContent-Type: application/json\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n{{"
    )
    .expect("send head");
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[test]
fn bad_input_on_every_route_gets_the_contracts_status_and_the_server_stays_healthy() {
    let root = tempfile::tempdir().expect("dir");
    let mut r = Region::new(root.path(), "west", free_port());
    r.start();
    let a = agent();
    let u = r.url();
    container(&a, &r, "c", json!({"mode": "lww"}));
    upsert(&a, &r, "c", &json!({"id": "i", "pk": "p"}));
    let cases: Vec<Case> = vec![
        (
            "PUT",
            format!("{u}/dbs/db/colls/c2"),
            Some(b"{".to_vec()),
            vec![],
            400,
            "BadRequest",
        ),
        (
            "PUT",
            format!("{u}/dbs/db/colls/c2"),
            Some(br#"{"partitionKey": 5}"#.to_vec()),
            vec![],
            400,
            "BadRequest",
        ),
        (
            "PUT",
            format!("{u}/dbs/db/colls/c2"),
            Some(
                br#"{"partitionKey": "/pk", "conflictResolutionPolicy": {"mode": "nope"}}"#
                    .to_vec(),
            ),
            vec![],
            400,
            "BadRequest",
        ),
        (
            "PUT",
            format!("{u}/dbs/db/colls/c2"),
            Some(br#"{"partitionKey": "pk"}"#.to_vec()),
            vec![],
            400,
            "BadRequest",
        ),
        (
            "GET",
            format!("{u}/dbs/db/colls/nope"),
            None,
            vec![],
            404,
            "NotFound",
        ),
        (
            "GET",
            format!("{u}/dbs/nope/colls"),
            None,
            vec![],
            404,
            "NotFound",
        ),
        (
            "DELETE",
            format!("{u}/dbs/db/colls/nope"),
            None,
            vec![],
            404,
            "NotFound",
        ),
        (
            "GET",
            format!("{u}/dbs/db/colls/nope/resolvers"),
            None,
            vec![],
            404,
            "NotFound",
        ),
        (
            "PUT",
            format!("{u}/dbs/db/colls/c/resolvers/r"),
            Some(b"not wasm".to_vec()),
            vec![],
            400,
            "BadRequest",
        ),
        (
            "POST",
            format!("{u}/dbs/db/colls/c/docs"),
            Some(b"nope".to_vec()),
            vec![],
            400,
            "BadRequest",
        ),
        (
            "POST",
            format!("{u}/dbs/db/colls/c/docs"),
            Some(b"[1]".to_vec()),
            vec![],
            400,
            "BadRequest",
        ),
        (
            "POST",
            format!("{u}/dbs/db/colls/c/docs"),
            Some(br#"{"pk": "p"}"#.to_vec()),
            vec![],
            400,
            "BadRequest",
        ),
        (
            "POST",
            format!("{u}/dbs/db/colls/c/docs"),
            Some(br#"{"id": 5, "pk": "p"}"#.to_vec()),
            vec![],
            400,
            "BadRequest",
        ),
        (
            "POST",
            format!("{u}/dbs/db/colls/c/docs"),
            Some(br#"{"id": "j", "pk": {"a": 1}}"#.to_vec()),
            vec![],
            400,
            "BadRequest",
        ),
        (
            "POST",
            format!("{u}/dbs/db/colls/c/docs"),
            Some(br#"{"id": "i", "pk": "p"}"#.to_vec()),
            vec![],
            409,
            "Conflict",
        ),
        (
            "POST",
            format!("{u}/dbs/db/colls/nope/docs"),
            Some(br#"{"id": "i", "pk": "p"}"#.to_vec()),
            vec![],
            404,
            "NotFound",
        ),
        (
            "PUT",
            format!("{u}/dbs/db/colls/c/docs/i"),
            Some(br#"{"id": "other", "pk": "p"}"#.to_vec()),
            vec![("x-partition-key", "\"p\"")],
            400,
            "BadRequest",
        ),
        (
            "PUT",
            format!("{u}/dbs/db/colls/c/docs/zz"),
            Some(br#"{"id": "zz", "pk": "p"}"#.to_vec()),
            vec![("x-partition-key", "\"p\"")],
            404,
            "NotFound",
        ),
        (
            "PUT",
            format!("{u}/dbs/db/colls/c/docs/i"),
            Some(br#"{"id": "i", "pk": "p"}"#.to_vec()),
            vec![("If-Match", "\"0000\"")],
            412,
            "PreconditionFailed",
        ),
        (
            "GET",
            format!("{u}/dbs/db/colls/c/docs/i"),
            None,
            vec![],
            400,
            "BadRequest",
        ),
        (
            "GET",
            format!("{u}/dbs/db/colls/c/docs/i"),
            None,
            vec![("x-partition-key", "not json")],
            400,
            "BadRequest",
        ),
        (
            "GET",
            format!("{u}/dbs/db/colls/c/docs/zz"),
            None,
            vec![("x-partition-key", "\"p\"")],
            404,
            "NotFound",
        ),
        (
            "DELETE",
            format!("{u}/dbs/db/colls/c/docs/zz"),
            None,
            vec![("x-partition-key", "\"p\"")],
            404,
            "NotFound",
        ),
        (
            "DELETE",
            format!("{u}/dbs/db/colls/c/docs/i"),
            None,
            vec![("x-partition-key", "\"p\""), ("If-Match", "\"0000\"")],
            412,
            "PreconditionFailed",
        ),
        (
            "GET",
            format!("{u}/dbs/db/colls/c/docs?continuation=garbage"),
            None,
            vec![],
            400,
            "BadRequest",
        ),
        (
            "GET",
            format!("{u}/dbs/db/colls/c/docs?maxItemCount=x"),
            None,
            vec![],
            400,
            "BadRequest",
        ),
        (
            "GET",
            format!("{u}/dbs/db/colls/c/conflicts/nope"),
            None,
            vec![],
            404,
            "NotFound",
        ),
        (
            "DELETE",
            format!("{u}/dbs/db/colls/c/conflicts/nope"),
            None,
            vec![],
            404,
            "NotFound",
        ),
        (
            "GET",
            format!("{u}/dbs/db/colls/c/changes?since=bad"),
            None,
            vec![],
            400,
            "BadRequest",
        ),
        (
            "GET",
            format!("{u}/dbs/db/colls/nope/changes"),
            None,
            vec![],
            404,
            "NotFound",
        ),
        (
            "GET",
            format!("{u}/dbs/a%2Fb/colls/c"),
            None,
            vec![],
            400,
            "BadRequest",
        ),
        (
            "GET",
            format!("{u}/dbs/{}/colls/c", "n".repeat(300)),
            None,
            vec![],
            400,
            "BadRequest",
        ),
        (
            "GET",
            format!("{u}/dbs/../colls/c"),
            None,
            vec![],
            400,
            "BadRequest",
        ),
        (
            "GET",
            format!("{u}/_replication/log?cursor=zz"),
            None,
            vec![],
            400,
            "BadRequest",
        ),
        (
            "PATCH",
            format!("{u}/dbs/db/colls/c"),
            None,
            vec![],
            405,
            "MethodNotAllowed",
        ),
        (
            "GET",
            format!("{u}/dbs/db/colls/c/docs/%FF%FE"),
            None,
            vec![("x-partition-key", "\"p\"")],
            400,
            "BadRequest",
        ),
        (
            "GET",
            format!("{u}/no/such/route"),
            None,
            vec![],
            404,
            "NotFound",
        ),
    ];
    for (method, url, body, headers, status, code) in cases {
        let mut req = ureq::http::Request::builder().method(method).uri(&url);
        for (k, v) in &headers {
            req = req.header(*k, *v);
        }
        let resp = match body {
            Some(b) => a.run(req.body(b).expect("request")),
            None => a.run(req.body(()).expect("request")),
        };
        let (s, v) = answer(resp);
        assert_eq!(s, status, "{method} {url}: {v}");
        assert_eq!(v["code"], code, "{method} {url}: {v}");
        assert!(
            v["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{method} {url}: {v}"
        );
    }
    // Bodies over the limit are refused from their Content-Length, before they are sent.
    for (method, path, length) in [
        ("POST", "/dbs/db/colls/c/docs", 3usize << 20),
        ("PUT", "/dbs/db/colls/c/docs/i", 3 << 20),
        ("PUT", "/dbs/db/colls/c/resolvers/r", 17 << 20),
    ] {
        let (status, text) = head_only(r.port, method, path, length);
        assert_eq!(status, 413, "{method} {path}: {text}");
        assert!(text.contains("RequestEntityTooLarge"), "{text}");
    }
    assert_eq!(
        get(&a, &format!("{u}/healthz")).1,
        json!({"region": "west", "status": "ok"})
    );
    // Nothing the bad requests sent was written.
    assert_eq!(listing(&a, &r, "c").len(), 1);
    r.stop();
}

#[test]
fn keys_guard_every_route_and_peers_use_them() {
    let root = tempfile::tempdir().expect("dir");
    let key = root.path().join("key");
    std::fs::write(&key, "correct-horse-battery-staple\n").expect("key");
    let ports = [free_port(), free_port()];
    let mut west = Region::new(root.path(), "west", ports[0]);
    let mut east = Region::new(root.path(), "east", ports[1]);
    west.peers = vec![("east".into(), ports[1])];
    east.peers = vec![("west".into(), ports[0])];
    west.key = Some(key.clone());
    east.key = Some(key.clone());
    west.start();
    east.start();
    let a = agent();
    for (auth, status) in [
        (None, 401),
        (Some("Bearer wrong-key-wrong-key"), 401),
        (Some("Bearer correct-horse-battery-staple"), 200),
    ] {
        let mut req = a.get(format!("{}/healthz", west.url()));
        if let Some(h) = auth {
            req = req.header("Authorization", h);
        }
        let (s, v) = answer(req.call());
        assert_eq!(s, status, "{v}");
        if s == 401 {
            assert_eq!(v["code"], "Unauthorized");
        }
    }
    let auth = "Bearer correct-horse-battery-staple";
    let (s, _) = answer(
        a.put(format!("{}/dbs/db/colls/c", west.url()))
            .header("Authorization", auth)
            .content_type("application/json")
            .send(json!({"partitionKey": "/pk"}).to_string()),
    );
    assert_eq!(s, 201);
    let (s, _) = answer(
        a.post(format!("{}/dbs/db/colls/c/docs", west.url()))
            .header("Authorization", auth)
            .content_type("application/json")
            .send(json!({"id": "i", "pk": "p"}).to_string()),
    );
    assert_eq!(s, 201);
    // east pulls with the key.
    let start = std::time::Instant::now();
    loop {
        let (s, _) = answer(
            a.get(format!("{}/dbs/db/colls/c/docs/i", east.url()))
                .header("Authorization", auth)
                .header("x-partition-key", "\"p\"")
                .call(),
        );
        if s == 200 {
            break;
        }
        assert!(start.elapsed() < LIMIT, "east never got the item");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Without a key, only loopback.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_converge"))
        .args(["serve", "--region", "x", "--listen", "0.0.0.0:0", "--data"])
        .arg(root.path().join("x"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("only loopback"));
}

/// A client that stops sending mid-request (or never sends) is closed after the idle timeout,
/// so idle connections cannot hold every descriptor, and SIGTERM does not wait on them.
#[test]
fn stalled_connections_are_closed_after_the_idle_timeout_and_do_not_hold_up_a_stop() {
    use std::io::{Read, Write};
    let root = tempfile::tempdir().expect("dir");
    let mut west = Region::new(root.path(), "west", free_port());
    west.extra = vec!["--idle-timeout".into(), "2".into()];
    west.start();
    let stall = |bytes: &[u8]| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", west.port)).expect("connect");
        s.write_all(bytes).expect("send");
        s
    };
    let mut half = stall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n");
    let mut silent = stall(b"");
    half.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    silent
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let start = Instant::now();
    for s in [&mut half, &mut silent] {
        let mut buf = [0u8; 256];
        // Closed by the server: end of stream (or a reset), not our 20 s read timeout.
        match s.read(&mut buf) {
            Ok(n) => assert_eq!(n, 0, "{:?}", String::from_utf8_lossy(&buf[..n])),
            Err(e) => assert!(
                e.kind() != std::io::ErrorKind::WouldBlock
                    && e.kind() != std::io::ErrorKind::TimedOut,
                "the server did not close a stalled connection: {e}"
            ),
        }
    }
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );
    // Meanwhile the region serves everyone else.
    assert_eq!(get(&agent(), &format!("{}/healthz", west.url())).0, 200);
    // A long poll longer than the idle timeout is held for less than it, and answered.
    let (status, _) = answer(
        agent()
            .get(format!("{}/_replication/log?wait=5000", west.url()))
            .call(),
    );
    assert_eq!(status, 200, "a long poll was cut as an idle connection");
    // A client reading a long answer slowly, for longer than the idle timeout, gets all of it:
    // the deadline counts progress in either direction.
    let filler = "x".repeat(1_400_000);
    let a = agent();
    put_json(
        &a,
        &format!("{}/dbs/db/colls/big", west.url()),
        &json!({"partitionKey": "/pk"}),
    );
    for i in 0..4 {
        let (status, _) = post_json(
            &a,
            &format!("{}/dbs/db/colls/big/docs", west.url()),
            &json!({"id": format!("b{i}"), "pk": "p", "filler": filler}),
        );
        assert_eq!(status, 201);
    }
    let mut slow =
        stall(b"GET /dbs/db/colls/big/docs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    // About 400 KB/s: slow enough that draining a third of a loopback send buffer (4 MB)
    // takes longer than the idle timeout, so a deadline that waited for the kernel to want
    // more would cut the answer.
    let (mut got, mut buf, start) = (Vec::new(), vec![0u8; 20 << 10], Instant::now());
    loop {
        match slow.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("the slow read failed after {} bytes: {e}", got.len()),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        start.elapsed() > Duration::from_secs(3),
        "read too fast to show anything: {:?}",
        start.elapsed()
    );
    let text = String::from_utf8_lossy(&got);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    let listed: Value = serde_json::from_str(body).expect("the whole answer, as JSON");
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(4));
    // A head that trickles in, a byte a second (never idle for the timeout), is cut off too.
    let trickle = |s: &mut std::net::TcpStream, seconds: u64| {
        for b in b"GET /healthz HTTP/1.1\r\nX-Slow: "
            .iter()
            .cycle()
            .take(seconds as usize)
        {
            if s.write_all(&[*b]).is_err() {
                return true;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        false
    };
    let mut slow = stall(b"");
    let start = Instant::now();
    assert!(trickle(&mut slow, 20), "a trickled head was never cut off");
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );
    // A request cut off mid-header, and one still trickling, when the stop comes: the stop
    // still completes.
    let _pending = stall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n");
    let mut slow = stall(b"");
    std::thread::spawn(move || trickle(&mut slow, 60));
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        west.stop_within(Duration::from_secs(15)),
        "SIGTERM waited on a stalled connection"
    );
}
