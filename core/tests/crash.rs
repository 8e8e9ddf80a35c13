//! Durability under kill -9: a child process writes in a loop and reports every acknowledged
//! write; the parent kills it with SIGKILL at random moments, reopens the store and checks that
//! nothing acknowledged is missing and that the log, change feed and cursors are consistent.

use converge_core::sim::Rng;
use converge_core::{Change, Cursor, PartitionKey, Store, StoreOptions};
use serde_json::json;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const DB: &str = "db";
const C: &str = "c";
const ROUNDS: u64 = 20;

fn open(dir: &std::path::Path, region: &str) -> Store {
    Store::open(dir, region, StoreOptions::new()).expect("open store")
}

/// The child: runs only when the parent sets CONVERGE_CRASH_DIR.
#[test]
fn crash_child_writer() {
    let Ok(dir) = std::env::var("CONVERGE_CRASH_DIR") else {
        return;
    };
    let peer_dir = std::env::var("CONVERGE_CRASH_PEER").expect("peer dir");
    let mut n: u64 = std::env::var("CONVERGE_CRASH_START")
        .expect("start")
        .parse()
        .expect("number");
    let west = open(dir.as_ref(), "west");
    let east = open(peer_dir.as_ref(), "east");
    west.create_container(DB, C, "/pk").expect("container");
    loop {
        n += 1;
        let id = format!("k{}", n % 40);
        west.upsert_item(DB, C, json!({"id": id, "pk": "p", "n": n}))
            .expect("write");
        println!("ack {id} {n}");
        if n.is_multiple_of(5) {
            let cursor = west.cursor("east").expect("cursor");
            let batch = east.read_log(cursor, 3).expect("peer log");
            west.apply_batch(&batch).expect("apply peer batch");
        }
    }
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    if std::env::var("CONVERGE_CRASH_DIR").is_ok() {
        return;
    }
    let seed = std::env::var("CONVERGE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::process::id() as u64);
    println!("crash test seed {seed} (replay with CONVERGE_CRASH_SEED={seed})");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().expect("dir");
    let peer = tempfile::tempdir().expect("peer dir");
    {
        let east = open(peer.path(), "east");
        east.create_container(DB, C, "/pk").expect("container");
        for i in 0..150 {
            east.upsert_item(DB, C, json!({"id": format!("e{i}"), "pk": "p"}))
                .expect("peer write");
        }
    }
    let exe = std::env::current_exe().expect("test binary");
    let mut acked: HashMap<String, u64> = HashMap::new();
    let mut total_acks = 0;
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args([
                "crash_child_writer",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("CONVERGE_CRASH_DIR", dir.path())
            .env("CONVERGE_CRASH_PEER", peer.path())
            .env(
                "CONVERGE_CRASH_START",
                ((round + 1) * 1_000_000).to_string(),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("ack ") {
                    let (id, n) = rest.split_once(' ').expect("ack line");
                    acks.push((id.to_owned(), n.parse::<u64>().expect("n")));
                }
            }
            acks
        });
        // Let it start and write for a random while, then SIGKILL.
        std::thread::sleep(Duration::from_millis(rng.range(150, 600)));
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("wait");
        assert!(!status.success(), "the child must have been killed");
        let acks = reader.join().expect("reader");
        total_acks += acks.len();
        for (id, n) in acks {
            let e = acked.entry(id).or_insert(0);
            *e = (*e).max(n);
        }

        let west = open(dir.path(), "west");
        let pk = PartitionKey::from("p");
        for (id, n) in &acked {
            let item = west
                .read_item(DB, C, &pk, id)
                .unwrap_or_else(|e| panic!("round {round}: acknowledged {id} missing: {e}"));
            let got = item.body["n"].as_u64().expect("n");
            assert!(
                got >= *n,
                "round {round}: {id} has n={got}, but n={n} was acknowledged"
            );
        }
        check_consistency(&west, round);
        let east = open(peer.path(), "east");
        check_cursor(&west, &east, round);
    }
    assert!(
        total_acks > ROUNDS as usize,
        "the child must have written something: {total_acks} acks"
    );
    println!("{ROUNDS} kill -9 rounds, {total_acks} acknowledged writes, none lost");

    // Replication from the reopened store still converges.
    let west = open(dir.path(), "west");
    let far = Store::memory("far", StoreOptions::new()).expect("far");
    loop {
        let b = west
            .read_log(far.cursor("west").expect("cursor"), 500)
            .expect("log");
        far.apply_batch(&b).expect("apply");
        if !b.more {
            break;
        }
    }
    let list = |s: &Store| {
        s.list_items(DB, C, None, None, 10_000)
            .expect("list")
            .items
            .into_iter()
            .map(|i| (i.id().to_owned(), i.etag))
            .collect::<Vec<_>>()
    };
    assert_eq!(list(&west), list(&far));
    assert!(list(&far).len() >= 40);
}

/// Every visible item has exactly one change-feed entry, at its `_lsn`; every logged version
/// decodes.
fn check_consistency(west: &Store, round: u64) {
    let items = west
        .list_items(DB, C, None, None, 100_000)
        .expect("list")
        .items;
    let mut changes = HashMap::new();
    let mut token = None;
    loop {
        let page = west
            .changes(DB, C, token.as_deref(), 1000)
            .expect("changes");
        if page.items.is_empty() {
            break;
        }
        for ch in page.items {
            if let Change::Upsert(v) = &ch {
                let id = v["id"].as_str().expect("id").to_owned();
                assert!(
                    changes.insert(id, ch.lsn()).is_none(),
                    "round {round}: an item appears twice in the change feed"
                );
            }
        }
        token = page.continuation;
    }
    for it in &items {
        assert_eq!(
            changes.get(it.id()),
            Some(&it.lsn),
            "round {round}: change feed out of step for {}",
            it.id()
        );
    }
    assert_eq!(changes.len(), items.len());
    let log = west
        .read_log(Cursor::START, usize::MAX)
        .expect("log decodes");
    assert!(log.versions.len() >= items.len());
}

/// Every peer version at or before the saved cursor was indeed applied.
fn check_cursor(west: &Store, east: &Store, round: u64) {
    let cursor = west.cursor("east").expect("cursor");
    let mut at = Cursor {
        incarnation: east.incarnation(),
        lsn: 0,
    };
    let mut checked = 0;
    loop {
        // One version at a time, so each one's log position is known.
        let b = east.read_log(at, 1).expect("peer log");
        let Some(v) = b.versions.first() else { break };
        if b.next.lsn > cursor.lsn {
            break;
        }
        let st = west.item_state(v.creation, &v.key).expect("state");
        let received = st.is_some_and(|s| s.context.covers(&v.dot.writer(), v.dot.counter));
        assert!(
            received,
            "round {round}: peer version {} at or before the cursor was not applied",
            v.dot
        );
        checked += 1;
        at = b.next;
    }
    assert!(
        cursor == Cursor::START || checked > 0,
        "round {round}: a saved cursor covers something"
    );
}
