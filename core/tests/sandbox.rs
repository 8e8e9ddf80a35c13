//! The WebAssembly sandbox: every outcome of a call, refusals at install, fresh state per call,
//! determinism. Modules are written in WAT here, against ABI.md alone.

use converge_core::{
    CanonicalVersion, ConflictPolicy, ModuleError, Outcome, PartitionKey, ResolveRequest,
    ResolverHost, ResolverLimits, Store, StoreOptions, WasmResolvers,
};
use serde_json::json;
use std::sync::Arc;

/// A module with a bump allocator and `converge_resolve` = `body` (which has `$ptr`, `$len`).
fn module(imports: &str, data: &str, body: &str, extra: &str) -> Vec<u8> {
    let text = format!(
        r#"(module
  {imports}
  (memory (export "memory") 1)
  (global $bump (mut i32) (i32.const 4096))
  (data (i32.const 16) "{data}")
  (func (export "converge_abi_version") (result i32) (i32.const 1))
  (func (export "converge_alloc") (param $len i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $bump))
    (global.set $bump (i32.add (global.get $bump) (local.get $len)))
    (if (i32.gt_u (global.get $bump) (i32.mul (memory.size) (i32.const 65536)))
      (then
        (if (i32.eq (memory.grow (i32.add (i32.const 1)
              (i32.div_u (i32.sub (global.get $bump) (i32.mul (memory.size) (i32.const 65536))) (i32.const 65536))))
              (i32.const -1))
          (then (return (i32.const 0))))))
    (local.get $p))
  (func (export "converge_resolve") (param $ptr i32) (param $len i32) (result i64)
    {body})
  {extra}
)"#
    );
    wat::parse_str(&text).unwrap_or_else(|e| panic!("bad test WAT: {e}\n{text}"))
}

/// Returns the data segment (at 16) as the answer.
fn answer(json: &str) -> Vec<u8> {
    let escaped = json.replace('"', "\\\"");
    let body = format!(
        "(i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const {}))",
        json.len()
    );
    module("", &escaped, &body, "")
}

fn versions() -> Vec<CanonicalVersion> {
    let v = |region: &str, ts: u64, n: i64| CanonicalVersion {
        body: Some(json!({"_ts": ts / 1000, "id": "i", "pk": "p", "n": n}).to_string()),
        deleted: false,
        region: region.into(),
        timestamp: ts,
        logical: 0,
    };
    vec![v("east", 2000, 2), v("west", 1000, 1)]
}

fn run_with(bytes: &[u8], limits: &ResolverLimits) -> Outcome {
    let host = WasmResolvers::new();
    let hash = host.install(bytes).expect("install");
    let vs = versions();
    let pk = PartitionKey::from("p");
    let req = ResolveRequest {
        container: "c",
        id: "i",
        partition_key: &pk,
        versions: &vs,
        resolver: "r",
        hash: &hash,
        limits,
    };
    host.resolve(&req)
}

fn run(bytes: &[u8]) -> Outcome {
    run_with(bytes, &ResolverLimits::default())
}

fn failed(o: Outcome) -> String {
    match o {
        Outcome::Failed(r) => r,
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn decisions_come_back() {
    assert_eq!(run(&answer(r#"{"pick":1}"#)), Outcome::Pick(1));
    assert_eq!(run(&answer(r#"{"delete":true}"#)), Outcome::Delete);
    assert_eq!(
        failed(run(&answer(r#"{"defer":"needs a human"}"#))),
        "deferred: needs a human"
    );
    assert!(matches!(
        run(&answer(r#"{"merge":{"id":"i","pk":"p"}}"#)),
        Outcome::Merge(_)
    ));
}

/// Regression (issue 10, defect 6): a call whose memory growth was refused and that then ran
/// out of fuel or overflowed its stack was reported as `out of fuel` or `stack overflow`; the
/// ABI says any trap after a refused growth is `memory limit`.
#[test]
fn a_trap_after_a_refused_memory_growth_is_memory_limit() {
    let grow_refused = "(drop (memory.grow (i32.const 100000)))";
    let cases = [
        (
            format!("{grow_refused} (loop $l (br $l)) (i64.const 0)"),
            "",
        ),
        (
            format!("{grow_refused} (call $deep (i64.const 0))"),
            "(func $deep (param i64) (result i64) (call $deep (i64.add (local.get 0) (i64.const 1))))",
        ),
        (format!("{grow_refused} (unreachable)"), ""),
    ];
    for (body, extra) in cases {
        assert_eq!(
            failed(run(&module("", "", &body, extra))),
            "memory limit",
            "{body}"
        );
    }
    // A refused growth the guest recovers from is no failure.
    let recovers =
        format!("{grow_refused} (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 10))");
    assert_eq!(
        run(&module("", r#"{\"pick\":1}"#, &recovers, "")),
        Outcome::Pick(1)
    );
}

/// Regression (issue 10, defect 9): every distinct `stackBytes` made a wasmtime engine (a
/// pooling allocator and a ticker thread that never exits), and the 8 MiB stack clamp was
/// larger than the 2 MiB native stack of the threads that call resolvers, so a deep recursion
/// could crash the process.
#[test]
fn stack_limits_share_a_few_engines_and_a_deep_recursion_never_crashes() {
    let deep = module(
        "",
        "",
        "(call $deep (i64.const 0))",
        "(func $deep (param i64) (result i64) (call $deep (i64.add (local.get 0) (i64.const 1))))",
    );
    for stack in (1..60u64).map(|i| i * 150_001) {
        let limits = ResolverLimits {
            stack_bytes: stack.min(ResolverLimits::MAX_STACK_BYTES),
            fuel: 100_000,
            ..ResolverLimits::default()
        };
        run_with(&answer(r#"{"pick":0}"#), &limits);
    }
    assert!(
        converge_core::engine_count() <= 10,
        "{} engines",
        converge_core::engine_count()
    );
    // Stacks as large as the caller's native stack, and the largest allowed, called from a
    // thread with a 2 MiB native stack (Rust's and tokio's default).
    for stack_bytes in [2 << 20, ResolverLimits::MAX_STACK_BYTES] {
        let limits = ResolverLimits {
            stack_bytes,
            fuel: ResolverLimits::MAX_FUEL,
            ..ResolverLimits::default()
        };
        let deep = deep.clone();
        let outcome = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || run_with(&deep, &limits))
            .expect("thread")
            .join()
            .expect("the call returns");
        assert_eq!(failed(outcome), "stack overflow", "{stack_bytes}");
    }
    // Limits over their maxima are refused, naming the maximum.
    let store = Store::memory("a", StoreOptions::new()).expect("store");
    for (limits, field) in [
        (
            ResolverLimits {
                fuel: 100_000_000_000_000,
                ..ResolverLimits::default()
            },
            "fuel",
        ),
        (
            ResolverLimits {
                stack_bytes: 64 << 20,
                ..ResolverLimits::default()
            },
            "stackBytes",
        ),
        (
            ResolverLimits {
                input_bytes: 1 << 40,
                ..ResolverLimits::default()
            },
            "inputBytes",
        ),
        (
            ResolverLimits {
                output_bytes: 1 << 40,
                ..ResolverLimits::default()
            },
            "outputBytes",
        ),
    ] {
        let policy = ConflictPolicy::Custom {
            resolver: "r".into(),
            hash: None,
            limits,
        };
        match store.put_container("db", "c", "/pk", policy) {
            Err(converge_core::Error::InvalidDefinition(m)) => {
                assert!(m.contains(field) && m.contains("maximum"), "{m}")
            }
            other => panic!("{field}: expected a refusal, got {other:?}"),
        }
    }
}

#[test]
fn every_failure_has_its_feed_reason() {
    let unreachable = module("", "", "(unreachable)", "");
    assert_eq!(failed(run(&unreachable)), "trap: unreachable");

    let msg = "cart has no lines";
    let panics = module(
        r#"(import "converge" "panic" (func $panic (param i32 i32)))"#,
        msg,
        &format!(
            "(call $panic (i32.const 16) (i32.const {})) (unreachable)",
            msg.len()
        ),
        "",
    );
    assert_eq!(failed(run(&panics)), format!("trap: {msg}"));

    // (converge_resolve's body, extra functions, the feed reason)
    let cases = [
        ("(loop $l (br $l)) (i64.const 0)", "", "out of fuel"),
        (
            "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) (unreachable)",
            "",
            "memory limit",
        ),
        (
            "(call $deep (i64.const 0))",
            "(func $deep (param i64) (result i64) (call $deep (i64.add (local.get 0) (i64.const 1))))",
            "stack overflow",
        ),
        (
            "(i64.or (i64.shl (i64.const 65530) (i64.const 32)) (i64.const 100))",
            "",
            "invalid output: out of bounds",
        ),
        // The trap kind as the ABI names it: wasmtime's text without its "wasm trap: " prefix
        // (the review of issue 10 saw `trap: wasm trap: out of bounds memory access`).
        (
            "(drop (i64.load (i32.const -8))) (i64.const 0)",
            "",
            "trap: out of bounds memory access",
        ),
        (
            "(drop (i32.div_u (i32.const 1) (i32.const 0))) (i64.const 0)",
            "",
            "trap: integer divide by zero",
        ),
        (
            "(i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 0xfffffff))",
            "",
            "invalid output: too large",
        ),
    ];
    for (body, extra, reason) in cases {
        assert_eq!(failed(run(&module("", "", body, extra))), reason, "{body}");
    }
    assert_eq!(
        failed(run(&answer("this is not json"))),
        "invalid output: not JSON"
    );

    let small_input = ResolverLimits {
        input_bytes: 10,
        ..ResolverLimits::default()
    };
    assert_eq!(
        failed(run_with(&answer(r#"{"pick":0}"#), &small_input)),
        "input too large"
    );

    // `converge_alloc` cannot grow memory past a 64 KiB limit for a 100 KB input: it returns 0.
    let small_memory = ResolverLimits {
        memory_bytes: 65536,
        ..ResolverLimits::default()
    };
    let host = WasmResolvers::new();
    let big_input = vec![b' '; 100_000];
    let report = host
        .call_module(&answer(r#"{"pick":0}"#), &big_input, &small_memory)
        .expect("call");
    assert_eq!(report.outcome, Outcome::Failed("memory limit".into()));
}

#[test]
fn modules_that_break_the_abi_are_refused_at_install() {
    let host = WasmResolvers::new();
    assert!(matches!(
        host.install(b"not wasm"),
        Err(ModuleError::Invalid(_))
    ));
    let bad_import = module(
        r#"(import "env" "clock" (func (result i64)))"#,
        "",
        "(i64.const 0)",
        "",
    );
    let e = host.install(&bad_import).expect_err("refused");
    assert!(
        matches!(&e, ModuleError::Import { module, name } if module == "env" && name == "clock"),
        "{e}"
    );
    assert!(e.to_string().contains("env.clock"));
    let wrong_version = wat::parse_str(
        r#"(module (memory (export "memory") 1)
            (func (export "converge_abi_version") (result i32) (i32.const 2))
            (func (export "converge_alloc") (param i32) (result i32) (i32.const 8))
            (func (export "converge_resolve") (param i32 i32) (result i64) (i64.const 0)))"#,
    )
    .expect("wat");
    assert_eq!(
        host.install(&wrong_version),
        Err(ModuleError::AbiVersion(2))
    );
    let missing = wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "converge_abi_version") (result i32) (i32.const 1)))"#).expect("wat");
    assert!(matches!(
        host.install(&missing),
        Err(ModuleError::Export {
            name: "converge_alloc",
            ..
        })
    ));
    let wrong_type = wat::parse_str(
        r#"(module (memory (export "memory") 1)
            (func (export "converge_abi_version") (result i32) (i32.const 1))
            (func (export "converge_alloc") (param i64) (result i32) (i32.const 8))
            (func (export "converge_resolve") (param i32 i32) (result i64) (i64.const 0)))"#,
    )
    .expect("wat");
    assert!(matches!(
        host.install(&wrong_type),
        Err(ModuleError::Export {
            name: "converge_alloc",
            ..
        })
    ));
}

#[test]
fn every_call_starts_from_a_fresh_state_and_is_deterministic() {
    // A counter in a global: if state leaked between calls, the second call would pick 1.
    let counting = module(
        "",
        r#"{\"pick\":0}{\"pick\":1}"#,
        "(global.set $calls (i32.add (global.get $calls) (i32.const 1))) \
         (i64.or (i64.shl (i64.extend_i32_u (i32.add (i32.const 6) (i32.mul (i32.const 10) (global.get $calls)))) (i64.const 32)) (i64.const 10))",
        "(global $calls (mut i32) (i32.const 0))",
    );
    let host = WasmResolvers::new();
    let limits = ResolverLimits::default();
    let input = br#"{"abi":1,"container":"c","id":"i","partitionKey":"p","versions":[]}"#;
    let a = host.call_module(&counting, input, &limits).expect("call");
    let b = host.call_module(&counting, input, &limits).expect("call");
    assert_eq!(a.outcome, Outcome::Pick(0));
    assert!(
        a.same_behaviour(&b),
        "same outcome and the same fuel, call after call"
    );
    assert!(a.fuel_used > 0);
}

#[test]
fn a_store_resolves_custom_conflicts_with_an_installed_module() {
    let host = Arc::new(WasmResolvers::new());
    let opts = || StoreOptions::new().resolver_host(host.clone());
    let (a, b) = (
        Store::memory("a", opts()).expect("a"),
        Store::memory("b", opts()).expect("b"),
    );
    let policy = ConflictPolicy::Custom {
        resolver: "newest".into(),
        hash: None,
        limits: ResolverLimits::default(),
    };
    for s in [&a, &b] {
        s.put_container("db", "carts", "/pk", policy.clone())
            .expect("container");
    }
    a.put_resolver("db", "carts", "newest", &answer(r#"{"pick":1}"#))
        .expect("install");
    a.upsert_item("db", "carts", json!({"id": "i", "pk": "p", "who": "a"}))
        .expect("a");
    b.upsert_item("db", "carts", json!({"id": "i", "pk": "p", "who": "b"}))
        .expect("b");
    for (dst, src) in [(&a, &b), (&b, &a)] {
        dst.apply_batch(
            &src.read_log(converge_core::Cursor::START, 100)
                .expect("log"),
        )
        .expect("apply");
    }
    let pk = PartitionKey::from("p");
    let (ia, ib) = (
        a.read_item("db", "carts", &pk, "i").expect("a"),
        b.read_item("db", "carts", &pk, "i").expect("b"),
    );
    assert_eq!(ia.etag, ib.etag);
    assert!(
        a.conflicts("db", "carts", None, 10)
            .expect("feed")
            .items
            .is_empty(),
        "the resolver decided"
    );
}

#[test]
fn the_hand_written_wat_resolver_runs_as_docs_abi_md_describes() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../udf-examples/wat/review.wat"
    );
    let bytes = wat::parse_file(path).expect("review.wat parses");
    let host = WasmResolvers::new();
    host.install(&bytes).expect("accepted by the host");
    let input = br#"{"abi":1,"container":"c","id":"i","partitionKey":"p","versions":[{"item":null,"deleted":true,"region":"w","timestamp":1,"logical":0},{"item":{"id":"i"},"deleted":false,"region":"e","timestamp":0,"logical":0}]}"#;
    let report = host
        .call_module(&bytes, input, &ResolverLimits::default())
        .expect("call");
    assert_eq!(
        report.outcome,
        Outcome::Failed("deferred: sent to review".into())
    );
    assert_eq!(
        report.logs,
        vec!["review.wat: deferring a conflict".to_owned()]
    );
}

#[test]
fn the_watchdog_stops_a_runaway_call_which_is_retried_not_recorded() {
    // Fuel would allow a very long run; the wall-clock watchdog stops it first.
    let spins = module("", "", "(loop $l (br $l)) (i64.const 0)", "");
    let limits = ResolverLimits {
        fuel: ResolverLimits::MAX_FUEL,
        ..ResolverLimits::default()
    };
    let host = Arc::new(WasmResolvers::new().with_watchdog(std::time::Duration::from_millis(50)));
    let input = br#"{"abi":1}"#;
    let report = host.call_module(&spins, input, &limits).expect("call");
    assert_eq!(report.outcome, Outcome::Interrupted);

    let opts = || StoreOptions::new().resolver_host(host.clone());
    let (a, b) = (
        Store::memory("a", opts()).expect("a"),
        Store::memory("b", opts()).expect("b"),
    );
    let policy = ConflictPolicy::Custom {
        resolver: "slow".into(),
        hash: None,
        limits,
    };
    for s in [&a, &b] {
        s.put_container("db", "carts", "/pk", policy.clone())
            .expect("container");
    }
    a.put_resolver("db", "carts", "slow", &spins)
        .expect("install");
    a.upsert_item("db", "carts", json!({"id": "i", "pk": "p", "who": "a"}))
        .expect("a");
    // On the wall clock: b's write is the later one.
    std::thread::sleep(std::time::Duration::from_millis(5));
    b.upsert_item("db", "carts", json!({"id": "i", "pk": "p", "who": "b"}))
        .expect("b");
    a.apply_batch(&b.read_log(converge_core::Cursor::START, 100).expect("log"))
        .expect("apply");
    let pk = PartitionKey::from("p");
    // The LWW winner shows, nothing is recorded, and the item waits for a retry.
    assert_eq!(
        a.read_item("db", "carts", &pk, "i").expect("read").body["who"],
        "b"
    );
    assert!(
        a.conflicts("db", "carts", None, 10)
            .expect("feed")
            .items
            .is_empty()
    );
    assert_eq!(a.interrupted_count(), 1);
    assert_eq!(a.retry_interrupted().expect("retry"), 1);
    assert_eq!(a.interrupted_count(), 1, "stopped again: still pending");
    // Once a resolver that finishes is uploaded under the name, the conflict is decided and
    // nothing waits any more.
    a.put_resolver("db", "carts", "slow", &answer(r#"{"pick":1}"#))
        .expect("replace");
    assert_eq!(
        a.read_item("db", "carts", &pk, "i").expect("read").body["who"],
        "a"
    );
    a.retry_interrupted().expect("retry");
    assert_eq!(a.interrupted_count(), 0);
}
