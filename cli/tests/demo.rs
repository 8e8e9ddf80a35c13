//! End-to-end: the real `converge demo` binary runs, heals and reports agreement.

use std::process::Command;

#[test]
fn demo_ends_with_all_regions_in_agreement() {
    let dir = tempfile::tempdir().expect("dir");
    let out = Command::new(env!("CARGO_BIN_EXE_converge"))
        .args(["demo", "--quiet", "--writes", "150", "--customers", "10"])
        .arg("--data")
        .arg(dir.path())
        .output()
        .expect("run converge demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("all 3 regions agree"), "{stdout}");
    // The application's side is the Cosmos DB API, signed with the run's master key.
    assert!(
        stdout.contains("through the Cosmos DB API, as its SDK would")
            && stdout.contains("acknowledged through the Cosmos DB API"),
        "{stdout}"
    );
    assert!(dir.path().join("master-key").is_file());
    assert!(
        stdout.contains("manual policy"),
        "the manual container shows feed records: {stdout}"
    );
    // The cart-merge resolver (WebAssembly, installed in one region) merged carts everywhere,
    // and the panicking resolver's conflicts are in the feed with the panic message.
    assert!(
        stdout.contains("resolved by cart-merge in every region")
            && stdout.contains("shows one merged cart with sku-"),
        "{stdout}"
    );
    assert!(
        stdout.contains("wishlist-merge failed") && stdout.contains("trap: cart wishlist-"),
        "{stdout}"
    );
    // The regions' data is real: each region's directory holds its store.
    for r in ["west", "east", "north"] {
        assert!(dir.path().join(r).join("converge.redb").is_file());
    }
    // Running again on the same directories reopens them (new incarnations) and still agrees.
    let again = Command::new(env!("CARGO_BIN_EXE_converge"))
        .args(["demo", "--quiet", "--writes", "50"])
        .arg("--data")
        .arg(dir.path())
        .output()
        .expect("run again");
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
}

#[test]
fn bad_arguments_are_refused_with_usage() {
    let out = Command::new(env!("CARGO_BIN_EXE_converge"))
        .args(["demo", "--writes", "many"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value"));
}

#[test]
fn the_in_process_mode_agrees_too() {
    let out = Command::new(env!("CARGO_BIN_EXE_converge"))
        .args([
            "demo",
            "--quiet",
            "--in-process",
            "--writes",
            "100",
            "--customers",
            "8",
        ])
        .output()
        .expect("run converge demo --in-process");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("stores in this process"), "{stdout}");
    assert!(stdout.contains("all 3 regions agree"), "{stdout}");
}
