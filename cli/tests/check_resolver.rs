//! End-to-end: the real `converge check-resolver` on module files, as a user runs it before
//! shipping a resolver.

use converge_udf_examples::{self as examples, adversarial};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write");
    path
}

fn check(module: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_converge"))
        .arg("check-resolver")
        .arg(module)
        .args(["--conflicts", "40", "--seeds", "3"])
        .args(extra)
        .output()
        .expect("run converge check-resolver")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_sound_resolver_passes_and_a_trapping_one_fails_with_its_message() {
    let dir = tempfile::tempdir().expect("dir");
    let cart = write(dir.path(), "cart.wasm", examples::CART_MERGE);
    let sample = write(
        dir.path(),
        "cart.json",
        br#"{"id": "cart-1", "customerId": "alice", "removed": {},
             "lines": [{"sku": "a", "qty": 1, "updated": 5}, {"sku": "b", "qty": 2, "updated": 6}]}"#,
    );
    let sample_arg = sample.to_str().expect("utf-8 path");
    let out = check(
        &cart,
        &[
            "--sample",
            sample_arg,
            "--partition-key-path",
            "/customerId",
            "--keeps",
            "/lines:sku",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("PASSED"));
    assert!(text(&out).contains("simulation: 3 of 3 seeds converged"));

    let panics = write(dir.path(), "panics.wasm", adversarial::PANIC);
    let out = check(&panics, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("TRAP (40 conflicts): trap: cart item-1 cannot be merged"),
        "{}",
        text(&out)
    );
}

#[test]
fn invalid_answers_and_violated_properties_fail_and_json_is_machine_readable() {
    let dir = tempfile::tempdir().expect("dir");
    let not_json = write(dir.path(), "not-json.wasm", adversarial::NOT_JSON);
    let out = check(&not_json, &["--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["passed"], false);
    assert_eq!(report["findings"][0]["kind"], "invalid-answer");
    assert_eq!(report["findings"][0]["message"], "invalid output: not JSON");
    assert_eq!(report["calls"], 80);

    // cart-merge drops a line when a removal marker is newer than it, even if every version
    // still lists it: "keeps every line" is not its rule, and the check says so.
    let cart = write(dir.path(), "cart.wasm", examples::CART_MERGE);
    let sample = write(
        dir.path(),
        "cart.json",
        br#"{"id": "cart-1", "pk": "alice", "removed": {"a": 6},
             "lines": [{"sku": "a", "qty": 1, "updated": 5}]}"#,
    );
    let out = check(
        &cart,
        &[
            "--sample",
            sample.to_str().expect("utf-8"),
            "--keeps",
            "/lines:sku",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("PROPERTY VIOLATED")
            && text(&out).contains(r#""a" is in every version"#),
        "{}",
        text(&out)
    );
}

#[test]
fn bad_input_gets_a_clear_error() {
    let dir = tempfile::tempdir().expect("dir");
    let out = check(&dir.path().join("missing.wasm"), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("cannot read"), "{}", text(&out));

    let garbage = write(dir.path(), "garbage.wasm", b"not a module");
    let out = check(&garbage, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("not a valid WebAssembly module"),
        "{}",
        text(&out)
    );

    let bad_import = write(dir.path(), "import.wasm", adversarial::BAD_IMPORT);
    let out = check(&bad_import, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("env.now"), "{}", text(&out));

    let cart = write(dir.path(), "cart.wasm", examples::CART_MERGE);
    let sample = write(dir.path(), "bad.json", b"{ not json");
    let out = check(&cart, &["--sample", sample.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("is not JSON"), "{}", text(&out));
}
