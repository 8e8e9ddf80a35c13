//! The host against generated modules: wasm-smith modules shaped to the ABI's exports and
//! imports, called with arbitrary input under small limits. The host never panics or hangs,
//! and every call ends in a decision or one of the feed reasons ABI.md lists, within its fuel.

use arbitrary::Unstructured;
use converge_core::reason::{self, ReasonKind};
use converge_core::{Outcome, ResolverLimits, WasmResolvers};
use std::time::{Duration, Instant};

/// The exports every generated module has (ABI.md), and the imports it may use.
const EXPORTS: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "converge_abi_version") (result i32) unreachable)
  (func (export "converge_alloc") (param i32) (result i32) unreachable)
  (func (export "converge_resolve") (param i32 i32) (result i64) unreachable))"#;
const IMPORTS: &str = r#"(module
  (import "converge" "log" (func (param i32 i32)))
  (import "converge" "panic" (func (param i32 i32))))"#;

/// How long one call may take before the check calls it a hang (fuel stops real work long
/// before: 1,000,000 instructions).
const HANG: Duration = Duration::from_secs(5);

fn config(u: &mut Unstructured<'_>) -> arbitrary::Result<wasm_smith::Config> {
    let mut c: wasm_smith::Config = u.arbitrary()?;
    c.exports = Some(wat::parse_str(EXPORTS).map_err(|_| arbitrary::Error::IncorrectFormat)?);
    c.available_imports =
        Some(wat::parse_str(IMPORTS).map_err(|_| arbitrary::Error::IncorrectFormat)?);
    // What the host's engine does not enable.
    c.threads_enabled = false;
    c.shared_everything_threads_enabled = false;
    c.memory64_enabled = false;
    c.gc_enabled = false;
    c.exceptions_enabled = false;
    c.custom_page_sizes_enabled = false;
    c.max_memories = 1;
    c.max_memory32_bytes = 4 << 20;
    c.max_table_elements = 1000;
    Ok(c)
}

/// Generates a module and an input from `data` and runs the call.
pub fn check(data: &[u8]) {
    let _ = run(data);
}

/// As [`check`], returning the call's outcome (`None` when `data` made no module, or the host
/// refused the module at install).
pub fn run(data: &[u8]) -> Option<Outcome> {
    let mut u = Unstructured::new(data);
    let cfg = config(&mut u).ok()?;
    let module = wasm_smith::Module::new(cfg, &mut u).ok()?;
    let bytes = module.to_bytes();
    let input: Vec<u8> = u.arbitrary().unwrap_or_default();
    let limits = ResolverLimits {
        fuel: 1_000_000,
        memory_bytes: 4 << 20,
        ..ResolverLimits::default()
    };
    let host = WasmResolvers::new();
    let start = Instant::now();
    // Half the time through the whole install check (generated modules mostly declare another
    // ABI version and are refused, with a clear error, as the ABI asks), half the time
    // skipping the version question so the call itself runs.
    let report = if data.first().is_some_and(|b| b & 1 == 0) {
        host.call_module(&bytes, &input, &limits).ok()?
    } else {
        host.call_generated_module(&bytes, &input, &limits).ok()?
    };
    assert!(
        start.elapsed() < HANG,
        "the call took {:?}",
        start.elapsed()
    );
    assert!(
        report.fuel_used <= limits.fuel,
        "used {} fuel of {}",
        report.fuel_used,
        limits.fuel
    );
    match &report.outcome {
        Outcome::Pick(_) | Outcome::Merge(_) | Outcome::Delete => {}
        Outcome::Failed(why) => {
            assert!(
                reason::kind(why).is_some_and(|k| ReasonKind::FROM_A_CALL.contains(&k)),
                "not a reason a call can end in: {why:?}"
            );
            assert!(
                !why.contains("0x"),
                "a reason must not carry an address: {why:?}"
            );
        }
        Outcome::Interrupted => panic!("the watchdog had to stop a call fuel should have ended"),
    }
    Some(report.outcome)
}
