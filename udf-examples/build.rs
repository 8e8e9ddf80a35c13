//! Compiles every crate under `resolvers/` and `adversarial/` to `wasm32-unknown-unknown` with
//! the workspace's `resolver` profile, so a fresh clone gets the modules from `cargo build` or
//! `cargo test` alone (no `.wasm` file is committed). Adds the wasm32 target through rustup
//! when the toolchain lacks it.
//!
//! The nested cargo builds into `<target>/wasm-examples`, its own directory, so it never waits
//! on the lock of the build that runs this script, and every profile shares one copy.

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-unknown-unknown";
const PROFILE: &str = "resolver";

fn main() {
    let here = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let root = here
        .parent()
        .expect("udf-examples sits in the workspace")
        .to_path_buf();
    let mut crates = Vec::new();
    for group in ["resolvers", "adversarial"] {
        for name in crate_dirs(&here.join(group)) {
            // Each crate's manifest and sources, not its whole directory: a crate may carry a
            // fuzz workspace whose corpus and target change all the time (cart-merge does).
            // A new crate shows in Cargo.lock.
            for part in ["Cargo.toml", "src"] {
                let path = here.join(group).join(&name).join(part);
                println!("cargo:rerun-if-changed={}", path.display());
            }
            crates.push(name);
        }
    }
    for path in ["udf-sdk", "Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");

    ensure_target();
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("wasm-examples");
    let mut cargo = Command::new(env("CARGO"));
    cargo
        .arg("build")
        .args(["--profile", PROFILE, "--target", TARGET])
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    for name in &crates {
        cargo.args(["-p", name]);
    }
    // Flags meant for the outer build (sanitizers, coverage, a host target) must not leak
    // into the wasm one.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cargo.env_remove(var);
    }
    let status = cargo
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the example resolvers: {e}"));
    assert!(
        status.success(),
        "building the example resolvers for {TARGET} failed (see the output above)"
    );

    let out = PathBuf::from(env("OUT_DIR"));
    let built = target_dir.join(TARGET).join(PROFILE);
    for name in &crates {
        let file = format!("{}.wasm", name.replace('-', "_"));
        std::fs::copy(built.join(&file), out.join(&file))
            .unwrap_or_else(|e| panic!("cannot copy {file} from {}: {e}", built.display()));
    }
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("cargo sets {name} for build scripts"))
}

/// Package names of the crates under `dir` (each directory's name is its package's name).
fn crate_dirs(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// Installs the wasm32 target for this toolchain through rustup unless it is there already.
fn ensure_target() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let installed =
        sysroot.is_some_and(|s| s.join("lib/rustlib").join(TARGET).join("lib").is_dir());
    if installed {
        return;
    }
    let mut rustup = Command::new("rustup");
    rustup.args(["target", "add", TARGET]);
    if let Ok(toolchain) = std::env::var("RUSTUP_TOOLCHAIN") {
        rustup.args(["--toolchain", &toolchain]);
    }
    let ok = rustup.status().map(|s| s.success()).unwrap_or(false);
    assert!(
        ok,
        "the {TARGET} target is missing and `rustup target add {TARGET}` failed; \
         install it by hand to build the example resolvers"
    );
}
