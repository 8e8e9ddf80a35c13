//! End-to-end through the official Cosmos DB SDKs: real `converge serve` processes signed into
//! with a master key, driven by `sdk/python_suite.py` (`azure-cosmos`, from PyPI) and
//! `sdk/js_suite.mjs` (`@azure/cosmos`, from npm).
//!
//! The SDKs are installed under the target directory the first time (a Python virtual
//! environment with pip; a folder with npm); when a registry cannot be reached the test fails,
//! it never skips.

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The SDK version the suite is written against.
const SDK: &str = "azure-cosmos==4.17.1";
/// The Cosmos DB emulator's well-known master key: what a Cosmos user's local setup has.
const EMULATOR_KEY: &str =
    "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw==";

/// The JavaScript SDK version the suite is written against.
const JS_SDK: &str = "@azure/cosmos@4.9.3";

static VENV: Mutex<Option<PathBuf>> = Mutex::new(None);
static NODE_MODULES: Mutex<Option<PathBuf>> = Mutex::new(None);

/// A folder with the JavaScript SDK installed (once per target directory) and the suite copied
/// next to it, so its `import` finds the SDK.
fn js_suite() -> PathBuf {
    let mut done = NODE_MODULES.lock().unwrap_or_else(|e| e.into_inner());
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cosmos-js");
    if done.is_none() {
        let marker = dir.join(format!("installed-{}", JS_SDK.replace('/', "_")));
        if !marker.exists() {
            std::fs::create_dir_all(&dir).expect("js dir");
            std::fs::write(
                dir.join("package.json"),
                r#"{"name": "converge-sdk-tests", "private": true, "type": "module"}"#,
            )
            .expect("package.json");
            let ok = Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--silent", JS_SDK])
                .current_dir(&dir)
                .status()
                .expect("npm");
            assert!(
                ok.success(),
                "npm could not install {JS_SDK}: the Cosmos SDK tests need it (no skip)"
            );
            std::fs::write(&marker, "").expect("marker");
        }
        *done = Some(dir.clone());
    }
    let script = dir.join("js_suite.mjs");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/js_suite.mjs"),
        &script,
    )
    .expect("copy the JavaScript suite");
    script
}

/// Runs one phase of the JavaScript suite against `region`.
fn js_phase(key: &Path, region: &Region, phase: &str, extra: &[&str]) -> String {
    let mut cmd = Command::new("node");
    if let Some(t) = &region.tls {
        cmd.env("NODE_EXTRA_CA_CERTS", &t.cert);
    }
    let out = cmd
        .arg(js_suite())
        .arg(phase)
        .arg(key)
        .args([region.name.as_str(), &region.url()])
        .args(extra)
        .output()
        .expect("run the JavaScript suite");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "JavaScript phase {phase} in {} failed:\n{stdout}\n{}",
        region.name,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The venv's python, with the SDK installed (once per target directory).
fn python() -> PathBuf {
    let mut venv = VENV.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = &*venv {
        return p.clone();
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cosmos-python");
    let py = dir.join("bin/python");
    let marker = dir.join(format!("installed-{SDK}"));
    if !marker.exists() {
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&dir)
            .status()
            .expect("python3 -m venv");
        assert!(
            ok.success(),
            "cannot make a virtual environment at {}",
            dir.display()
        );
        let ok = Command::new(&py)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                SDK,
            ])
            .status()
            .expect("pip");
        assert!(
            ok.success(),
            "pip could not install {SDK} from PyPI: the Cosmos SDK tests need it (no skip)"
        );
        std::fs::write(&marker, "").expect("marker");
    }
    *venv = Some(py.clone());
    py
}

fn suite() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/python_suite.py")
}

/// Runs one phase of the suite against `region`; returns its stdout, panics with its output
/// when it fails.
fn phase(key: &Path, region: &Region, phase: &str, extra: &[&str]) -> String {
    let mut cmd = Command::new(python());
    if let Some(t) = &region.tls {
        cmd.env("CONVERGE_CA", &t.cert);
    }
    let out = cmd
        .arg(suite())
        .args([phase])
        .arg(key)
        .args([region.name.as_str(), &region.url()])
        .args(extra)
        .output()
        .expect("run the Python suite");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "phase {phase} in {} failed:\n{stdout}\n{}",
        region.name,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn key_file(root: &Path) -> PathBuf {
    let key = root.join("key");
    std::fs::write(&key, EMULATOR_KEY).expect("key file");
    key
}

/// One keyed region, and the suite's `routes` phase run against it by `run`.
fn routes_in_one_region(run: fn(&Path, &Region, &str, &[&str]) -> String) {
    let root = tempfile::tempdir().expect("dir");
    let key = key_file(root.path());
    let mut west = Region::new(root.path(), "west", free_port());
    west.key = Some(key.clone());
    west.start();
    assert!(run(&key, &west, "routes", &[]).contains("routes ok"));
}

#[test]
fn every_route_works_through_the_python_sdk() {
    routes_in_one_region(phase);
}

#[test]
fn every_route_works_through_the_javascript_sdk() {
    routes_in_one_region(js_phase);
}

/// The query cases both suites run (hand-written results).
fn query_cases() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sdk/queries.json")
        .display()
        .to_string()
}

#[test]
fn every_query_construct_works_through_both_sdks() {
    let root = tempfile::tempdir().expect("dir");
    let key = key_file(root.path());
    let mut west = Region::new(root.path(), "west", free_port());
    west.key = Some(key.clone());
    west.start();
    let cases = query_cases();
    assert!(phase(&key, &west, "queries", &[&cases]).contains("queries ok"));
    assert!(js_phase(&key, &west, "queries", &[&cases]).contains("queries ok"));
}

#[test]
fn three_regions_written_while_isolated_converge_through_both_sdks() {
    let root = tempfile::tempdir().expect("dir");
    let key = key_file(root.path());
    let mut regions = mesh_with_key(root.path(), Some(&key));
    phase(&key, &regions[0], "setup", &[]);
    // The cart-merge resolver, uploaded to one region through converge's own route.
    let status = agent()
        .put(format!(
            "{}/dbs/shop/colls/carts/resolvers/cart-merge",
            regions[0].url()
        ))
        .header("Authorization", format!("Bearer {EMULATOR_KEY}"))
        .send(converge_udf_examples::CART_MERGE)
        .expect("upload")
        .status();
    assert_eq!(status, 201);
    // Every region has the definitions before they are isolated.
    wait_until(&key, &regions, |snaps| {
        snaps.windows(2).all(|w| w[0] == w[1])
    });
    for r in regions.iter_mut() {
        r.stop();
    }
    for r in regions.iter_mut() {
        r.start();
        phase(&key, r, "write", &[]);
        r.stop();
    }
    for r in regions.iter_mut() {
        r.start();
    }
    let snaps = wait_until(&key, &regions, |snaps| {
        snaps.windows(2).all(|w| w[0] == w[1])
            && snaps[0]["manual"]["conflicts"].as_array().map(Vec::len) == Some(6)
    });
    assert_eq!(snaps[0]["lww"]["conflicts"], Value::Array(Vec::new()));
    for r in &regions {
        phase(&key, r, "conflicts", &["3"]);
        js_phase(&key, r, "conflicts", &["3"]);
    }
    phase(&key, &regions[1], "resolve", &[]);
    let snaps = wait_until(&key, &regions, |snaps| {
        snaps.windows(2).all(|w| w[0] == w[1])
            && snaps[0]["manual"]["conflicts"].as_array().map(Vec::len) == Some(0)
    });
    for i in 0..3 {
        assert_eq!(
            snaps[0]["manual"]["items"][format!("item{i}")]["by"],
            "application"
        );
    }
}

/// Every region's snapshot through the SDK, until `done` holds of them (60 s at most).
fn wait_until(key: &Path, regions: &[Region], done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let snaps: Vec<Value> = regions
            .iter()
            .map(|r| serde_json::from_str(&phase(key, r, "snapshot", &[])).expect("snapshot JSON"))
            .collect();
        if done(&snaps) {
            return snaps;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the regions did not agree within 60 s: {snaps:#?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A self-signed certificate for `localhost` and `127.0.0.1`: its PEM certificate and key files.
fn certificate(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("a certificate");
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert, made.cert.pem()).expect("certificate file");
    std::fs::write(&key, made.signing_key.serialize_pem()).expect("key file");
    (cert, key)
}

#[test]
fn the_sdks_connect_over_https_verified_and_regions_pull_over_https() {
    let root = tempfile::tempdir().expect("dir");
    let key = key_file(root.path());
    let (cert, tls_key) = certificate(root.path(), "regions");
    let (other_ca, _) = certificate(root.path(), "other");
    let ports = [free_port(), free_port(), free_port()];
    let mut regions: Vec<Region> = ["west", "east", "north"]
        .iter()
        .zip(ports)
        .map(|(n, p)| Region::new(root.path(), n, p))
        .collect();
    for r in regions.iter_mut() {
        r.key = Some(key.clone());
        // north trusts another certificate than the one its peer shows.
        let peer_ca = if r.name == "north" { &other_ca } else { &cert };
        r.tls = Some(Tls {
            cert: cert.clone(),
            key: tls_key.clone(),
            peer_ca: peer_ca.clone(),
        });
    }
    regions[0].peers = vec![("east".into(), ports[1])];
    regions[1].peers = vec![("west".into(), ports[0])];
    regions[2].peers = vec![("west".into(), ports[0])];
    for r in regions.iter_mut() {
        r.start();
    }
    let said = phase(
        &key,
        &regions[0],
        "tls",
        &[other_ca.to_str().expect("path")],
    );
    assert!(said.contains("tls ok"), "{said}");
    // east pulled west's write over HTTPS; the JavaScript SDK reads it there and writes.
    assert!(js_phase(&key, &regions[1], "tls", &[]).contains("tls ok"));

    // north's pulls fail verification: nothing arrives, and its metrics say the peer is down.
    let roots = ureq::tls::RootCerts::new_with_certs(&[ureq::tls::Certificate::from_pem(
        &std::fs::read(&cert).expect("certificate"),
    )
    .expect("PEM certificate")]);
    let https: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build())
        .build()
        .into();
    let metrics = |r: &Region| {
        https
            .get(format!("{}/metrics", r.url()))
            .header("Authorization", format!("Bearer {EMULATOR_KEY}"))
            .call()
            .expect("metrics")
            .body_mut()
            .read_to_string()
            .expect("metrics text")
    };
    let start = Instant::now();
    loop {
        let text = metrics(&regions[2]);
        let errors = text
            .lines()
            .find(|l| l.starts_with("converge_peer_errors_total{region=\"north\",peer=\"west\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        if errors > 0 {
            assert!(
                text.contains("converge_peer_up{region=\"north\",peer=\"west\"} 0"),
                "{text}"
            );
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{text}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // An item of tls/items in a region, over HTTPS through converge's own route.
    let read = |r: &Region, id: &str| {
        answer(
            https
                .get(format!("{}/dbs/tls/colls/items/docs/{id}", r.url()))
                .header("Authorization", format!("Bearer {EMULATOR_KEY}"))
                .header("x-partition-key", "\"p\"")
                .call(),
        )
        .0
    };
    let status = read(&regions[2], "over-https");
    assert_eq!(
        status, 404,
        "north must not have pulled from a peer it cannot verify"
    );
    // west's pull from east works too: the JavaScript write arrives.
    let start = Instant::now();
    while read(&regions[0], "from-js") != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "from-js did not reach west"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
