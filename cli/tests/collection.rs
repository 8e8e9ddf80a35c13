//! Collection with real `converge serve` processes: a deleted item's tombstone is purged in
//! every region once all have it, a region that is down holds collection back (the members
//! route and the metrics say so), and a region whose data is older than what its peers
//! collected is refused with a clear error rather than served a log with holes.

mod common;

use common::{
    Region, agent, answer, container_everywhere, converge, get, listing, mesh_with, post_json,
    upsert,
};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn metric(a: &ureq::Agent, r: &Region, name: &str, labels: &str) -> Option<f64> {
    let mut resp = a.get(format!("{}/metrics", r.url())).call().ok()?;
    let text = resp.body_mut().read_to_string().ok()?;
    text.lines()
        .find(|l| l.starts_with(name) && l.contains(labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn members(a: &ureq::Agent, r: &Region) -> Value {
    let (s, v) = get(a, &format!("{}/_replication/members", r.url()));
    assert_eq!(s, 200, "{v}");
    v
}

fn member<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["members"]
        .as_array()
        .expect("members")
        .iter()
        .find(|m| m["region"] == name)
        .unwrap_or_else(|| panic!("{name} is not a member: {v}"))
}

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn delete(a: &ureq::Agent, r: &Region, id: &str) -> u16 {
    answer(
        a.delete(format!("{}/dbs/db/colls/c/docs/{id}", r.url()))
            .header("x-partition-key", "\"p\"")
            .call(),
    )
    .0
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
    }
}

#[test]
fn a_deleted_item_is_collected_everywhere_once_a_region_that_was_down_has_the_delete() {
    let root = tempfile::tempdir().expect("dir");
    let mut r = mesh_with(root.path(), None, &["--tombstone-grace", "0s"]);
    let a = agent();
    container_everywhere(&a, &[&r[0], &r[1], &r[2]], "c", json!({"mode": "lww"}));
    for id in ["x", "y"] {
        assert_eq!(upsert(&a, &r[0], "c", &json!({"id": id, "pk": "p"})), 201);
    }
    converge(&a, &[&r[0], &r[1], &r[2]], "c", Duration::from_secs(20));
    // Every member heard from: nobody holds the others back.
    wait_until("members confirmed", Duration::from_secs(20), || {
        let v = members(&a, &r[0]);
        ["east", "north"]
            .iter()
            .all(|n| member(&v, n)["holds_back"] == false)
    });
    // North goes down with x still live; a copy of its data is kept, as a stale backup.
    r[2].stop();
    let backup = root.path().join("north-backup");
    copy_dir(&r[2].dir, &backup);
    assert_eq!(delete(&a, &r[0], "x"), 204);
    std::thread::sleep(Duration::from_secs(4));
    for reg in &r[..2] {
        let v = members(&a, reg);
        assert_eq!(member(&v, "north")["holds_back"], true, "{}: {v}", reg.name);
        assert_eq!(
            metric(&a, reg, "converge_member_holds_back", "member=\"north\""),
            Some(1.0)
        );
        assert_eq!(
            metric(&a, reg, "converge_collected_tombstones_total", ""),
            Some(0.0),
            "{}: north has not seen the delete",
            reg.name
        );
    }
    // North comes back: it takes the delete, then every region purges the tombstone.
    r[2].start();
    converge(&a, &[&r[0], &r[1], &r[2]], "c", Duration::from_secs(20));
    assert_eq!(listing(&a, &r[2], "c").len(), 1);
    for reg in &r {
        wait_until(
            &format!("{} collects the tombstone", reg.name),
            Duration::from_secs(30),
            || metric(&a, reg, "converge_collected_tombstones_total", "").unwrap_or(0.0) >= 1.0,
        );
    }
    // A new region may not pull the collected log from its start: it is told to join.
    let (s, v) = get(
        &a,
        &format!("{}/_replication/log?region=south&applied=", r[0].url()),
    );
    assert_eq!(s, 409, "{v}");
    assert!(
        v["message"].as_str().unwrap_or("").contains("--join"),
        "{v}"
    );
    // North restored from its stale copy still holds x: its peers refuse to serve it a log
    // with holes, and x does not come back anywhere else.
    r[2].stop();
    std::fs::remove_dir_all(&r[2].dir).expect("rm");
    copy_dir(&backup, &r[2].dir);
    r[2].start();
    std::thread::sleep(Duration::from_secs(3));
    for reg in &r[..2] {
        assert_eq!(listing(&a, reg, "c").len(), 1, "{}: x came back", reg.name);
    }
    let v = members(&a, &r[0]);
    assert!(member(&v, "north").is_object());
    for reg in &mut r {
        reg.stop();
    }
}

#[test]
fn retiring_a_region_that_is_gone_lets_the_others_collect_and_refuses_its_later_writes() {
    let root = tempfile::tempdir().expect("dir");
    let mut r = mesh_with(root.path(), None, &["--tombstone-grace", "0s"]);
    let a = agent();
    container_everywhere(&a, &[&r[0], &r[1], &r[2]], "c", json!({"mode": "lww"}));
    assert_eq!(upsert(&a, &r[0], "c", &json!({"id": "x", "pk": "p"})), 201);
    converge(&a, &[&r[0], &r[1], &r[2]], "c", Duration::from_secs(20));
    r[2].stop();
    assert_eq!(delete(&a, &r[0], "x"), 204);
    let retire = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_converge"))
            .args(["retire-region", "north", "--url", &r[1].url()])
            .args(extra)
            .output()
            .expect("run converge retire-region")
    };
    // North was heard from a moment ago: retiring it needs --force.
    let out = retire(&[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("force"),
        "{out:?}"
    );
    let out = retire(&["--force"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("retired north"));
    for reg in &r[..2] {
        wait_until(
            &format!("{} collects without north", reg.name),
            Duration::from_secs(30),
            || metric(&a, reg, "converge_collected_tombstones_total", "").unwrap_or(0.0) >= 1.0,
        );
        assert_eq!(member(&members(&a, reg), "north")["retired"], true);
    }
    // North comes back: its peers refuse it a log and tell it it was retired; from then on
    // it refuses writes (403) and still serves reads. A write it took before it heard is
    // refused everywhere.
    r[2].start();
    let mut n = 0;
    let mut taken = 0;
    wait_until("north refuses writes", Duration::from_secs(20), || {
        n += 1;
        match upsert(
            &a,
            &r[2],
            "c",
            &json!({"id": format!("late{n}"), "pk": "p"}),
        ) {
            201 => {
                taken += 1;
                false
            }
            s => {
                assert_eq!(s, 403, "north's answer to a write");
                true
            }
        }
    });
    assert!(!listing(&a, &r[2], "c").is_empty() || taken == 0);
    if taken > 0 {
        wait_until(
            "the late writes are refused",
            Duration::from_secs(20),
            || {
                r[..2].iter().all(|reg| {
                    metric(&a, reg, "converge_refused_retired_total", "").unwrap_or(0.0) >= 1.0
                })
            },
        );
    }
    std::thread::sleep(Duration::from_secs(1));
    for reg in &r[..2] {
        assert!(listing(&a, reg, "c").is_empty(), "{}", reg.name);
    }
    let (s, v) = get(
        &a,
        &format!("{}/_replication/log?region=north&applied=", r[0].url()),
    );
    assert_eq!(s, 409, "{v}");
    assert!(
        v["message"].as_str().unwrap_or("").contains("retired"),
        "{v}"
    );
    for reg in &mut r {
        reg.stop();
    }
}

#[test]
fn a_fourth_region_joins_a_running_deployment_with_one_command_and_catches_up() {
    let root = tempfile::tempdir().expect("dir");
    let mut r = mesh_with(root.path(), None, &["--tombstone-grace", "0s"]);
    let a = agent();
    container_everywhere(&a, &[&r[0], &r[1], &r[2]], "c", json!({"mode": "lww"}));
    for i in 0..120 {
        let item = json!({"id": format!("i{i}"), "pk": "p", "pad": "x".repeat(200)});
        assert_eq!(upsert(&a, &r[i % 3], "c", &item), 201);
    }
    converge(&a, &[&r[0], &r[1], &r[2]], "c", Duration::from_secs(30));
    for i in 0..40 {
        assert_eq!(delete(&a, &r[0], &format!("i{i}")), 204);
    }
    converge(&a, &[&r[0], &r[1], &r[2]], "c", Duration::from_secs(30));
    for reg in &r {
        wait_until(
            &format!("{} collects", reg.name),
            Duration::from_secs(30),
            || metric(&a, reg, "converge_collected_tombstones_total", "").unwrap_or(0.0) >= 40.0,
        );
    }
    // The one command: a new region on an empty directory, joining from west.
    let mut south = Region::new(root.path(), "south", common::free_port());
    south.peers = r.iter().map(|x| (x.name.clone(), x.port)).collect();
    south.extra = vec![
        "--tombstone-grace".into(),
        "0s".into(),
        "--join".into(),
        r[0].url(),
    ];
    south.start();
    let all = [&r[0], &r[1], &r[2], &south];
    let items = converge(&a, &all, "c", Duration::from_secs(30));
    assert_eq!(items.len(), 80);
    // Its writes reach every region (west pulls from it now), and theirs reach it.
    assert_eq!(
        upsert(&a, &south, "c", &json!({"id": "from-south", "pk": "p"})),
        201
    );
    assert_eq!(
        upsert(&a, &r[2], "c", &json!({"id": "from-north", "pk": "p"})),
        201
    );
    assert_eq!(delete(&a, &r[1], "i50"), 204);
    let items = converge(&a, &all, "c", Duration::from_secs(30));
    assert_eq!(items.len(), 81);
    // Every old region learns of it as a member.
    for reg in &r {
        wait_until(
            &format!("{} knows south", reg.name),
            Duration::from_secs(20),
            || {
                members(&a, reg)["members"]
                    .as_array()
                    .is_some_and(|m| m.iter().any(|m| m["region"] == "south"))
            },
        );
    }
    // West pulls from south at the URL it announced: the same announcement again is a no-op,
    // another URL for it is refused (review finding: it answered 200 and was ignored).
    let announce = |url: &str| {
        post_json(
            &a,
            &format!("{}/_replication/peers", r[0].url()),
            &json!({"region": "south", "url": url}),
        )
    };
    let (s, v) = announce(&south.url());
    assert_eq!(s, 200, "{v}");
    let (s, v) = announce("http://127.0.0.1:1");
    assert_eq!(s, 409, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .contains("already pulls"),
        "{v}"
    );
    // Joining onto a directory that holds a store is refused, and the store is untouched.
    south.stop();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_converge"))
        .args(["serve", "--region", "south", "--listen", "127.0.0.1:0"])
        .arg("--data")
        .arg(&south.dir)
        .args(["--join", &r[0].url()])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already holds a store"),
        "{out:?}"
    );
    // Restarted without --join, it keeps its store, and west still pulls from it.
    south.extra.truncate(2);
    south.start();
    assert_eq!(listing(&a, &south, "c").len(), 81);
    assert_eq!(
        upsert(&a, &south, "c", &json!({"id": "after-restart", "pk": "p"})),
        201
    );
    converge(
        &a,
        &[&r[0], &r[1], &r[2], &south],
        "c",
        Duration::from_secs(30),
    );
    south.stop();
    // A join whose process was killed half-way leaves its mark: the directory is refused
    // without --join, and the same --join command starts it over.
    std::fs::write(south.dir.join("join-in-progress"), r[0].url()).expect("mark");
    std::fs::write(south.dir.join("converge.redb"), b"half a store").expect("junk");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_converge"))
        .args(["serve", "--region", "south", "--listen", "127.0.0.1:0"])
        .arg("--data")
        .arg(&south.dir)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("did not finish"),
        "{out:?}"
    );
    south.extra.extend(["--join".to_owned(), r[1].url()]);
    south.start();
    converge(
        &a,
        &[&r[0], &r[1], &r[2], &south],
        "c",
        Duration::from_secs(30),
    );
    assert!(!south.dir.join("join-in-progress").exists());
    south.stop();
    for reg in &mut r {
        reg.stop();
    }
}

#[test]
fn a_region_whose_data_was_lost_is_refused_an_empty_start_and_rejoins_under_its_name() {
    let root = tempfile::tempdir().expect("dir");
    let mut r = mesh_with(root.path(), None, &["--tombstone-grace", "0s"]);
    let a = agent();
    container_everywhere(&a, &[&r[0], &r[1], &r[2]], "c", json!({"mode": "lww"}));
    for id in ["x", "y", "z"] {
        assert_eq!(upsert(&a, &r[0], "c", &json!({"id": id, "pk": "p"})), 201);
    }
    converge(&a, &[&r[0], &r[1], &r[2]], "c", Duration::from_secs(20));
    assert_eq!(delete(&a, &r[0], "x"), 204);
    converge(&a, &[&r[0], &r[1], &r[2]], "c", Duration::from_secs(20));
    // North loses its disk.
    r[2].kill9();
    std::fs::remove_dir_all(&r[2].dir).expect("rm");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_converge"));
    cmd.args(["serve", "--region", "north", "--listen", "127.0.0.1:0"])
        .arg("--data")
        .arg(&r[2].dir);
    for (p, port) in &r[2].peers {
        cmd.args(["--peer", &format!("{p}=http://127.0.0.1:{port}")]);
    }
    let out = cmd.output().expect("run");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("was lost") && err.contains("--join"), "{err}");
    // The same command with --join brings it back, missing nothing.
    let east = r[1].url();
    r[2].extra.extend(["--join".to_owned(), east]);
    r[2].start();
    let items = converge(&a, &[&r[0], &r[1], &r[2]], "c", Duration::from_secs(30));
    assert_eq!(items.len(), 2);
    assert_eq!(
        upsert(&a, &r[2], "c", &json!({"id": "back", "pk": "p"})),
        201
    );
    let items = converge(&a, &[&r[0], &r[1], &r[2]], "c", Duration::from_secs(30));
    assert_eq!(items.len(), 3);
    // Its fingerprint says it joined: a region that only pulls from it takes its store in.
    let (s, v) = get(&a, &format!("{}/_replication/fingerprint", r[2].url()));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["joined"], true, "{v}");
    let (_, w) = get(&a, &format!("{}/_replication/fingerprint", r[0].url()));
    assert_eq!(w["joined"], false, "{w}");
    assert!(v["store"].as_u64().unwrap_or(0) > w["store"].as_u64().unwrap_or(u64::MAX));
    for reg in &mut r {
        reg.stop();
    }
}

/// Review finding (stop 21, D): a region believed any peer that refused its pulls saying it was
/// retired. Here a `--peer` points by mistake into another deployment, where a region of the
/// same name was retired: the region goes on taking writes, and its log says why.
#[test]
fn a_peer_of_another_deployment_saying_this_region_was_retired_is_not_believed() {
    let root = tempfile::tempdir().expect("dir");
    let other = root.path().join("other");
    std::fs::create_dir_all(&other).expect("dir");
    let mut b = mesh_with(&other, None, &[]);
    let a = agent();
    container_everywhere(&a, &[&b[0], &b[1], &b[2]], "c", json!({"mode": "lww"}));
    b[2].stop();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_converge"))
        .args(["retire-region", "north", "--force", "--url", &b[1].url()])
        .output()
        .expect("run converge retire-region");
    assert!(out.status.success(), "{out:?}");
    // This deployment's north, holding data, restarted with its --peer pointing by mistake at
    // the other deployment's east. (An empty north is not even started: that east has heard
    // of a north, so the start says to join instead.)
    let mut north = common::Region::new(root.path(), "north", common::free_port());
    north.start();
    container_everywhere(&a, &[&north], "c", json!({"mode": "lww"}));
    assert_eq!(
        upsert(&a, &north, "c", &json!({"id": "mine", "pk": "p"})),
        201
    );
    north.stop();
    north.peers = vec![("east".into(), b[1].port)];
    north.start();
    wait_until(
        "the other east refuses north's pulls",
        Duration::from_secs(20),
        || {
            std::fs::read_to_string(north.dir.with_extension("log"))
                .is_ok_and(|l| l.contains("the claim is ignored"))
        },
    );
    for n in 0..3 {
        assert_eq!(
            upsert(&a, &north, "c", &json!({"id": format!("w{n}"), "pk": "p"})),
            201,
            "north still takes writes"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    north.stop();
    for reg in &mut b {
        reg.stop();
    }
}
