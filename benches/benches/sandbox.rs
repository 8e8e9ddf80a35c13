//! The fixed cost of one sandboxed resolver call: a fresh instance from the pool, fuel, the
//! input copied in, a call, the output read back. The module (WAT, see `udf-examples/wat`)
//! answers without reading its input, so this is the floor under any resolver; the baseline is
//! parsing the same input natively with serde_json, the least work a real resolver does.

use converge_core::{ResolverLimits, WasmResolvers};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

fn sandbox_call(c: &mut Criterion) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../udf-examples/wat/review.wat"
    );
    let bytes = wat::parse_file(path).expect("review.wat");
    let host = WasmResolvers::new();
    host.install(&bytes).expect("install");
    let body = serde_json::json!({"id": "i", "pk": "p", "pad": "x".repeat(900)}).to_string();
    let input = format!(
        r#"{{"abi":1,"container":"c","id":"i","partitionKey":"p","versions":[{{"item":{body},"deleted":false,"region":"w","timestamp":2,"logical":0}},{{"item":{body},"deleted":false,"region":"e","timestamp":1,"logical":0}}]}}"#
    );
    let limits = ResolverLimits::default();
    let mut g = c.benchmark_group("sandbox_call_2KiB");
    g.bench_function("baseline_native_json_parse", |b| {
        b.iter(|| {
            black_box(serde_json::from_str::<serde_json::Value>(black_box(&input)).expect("json"))
        })
    });
    g.bench_function("fresh_instance_call", |b| {
        b.iter(|| {
            black_box(
                host.call_module(&bytes, input.as_bytes(), &limits)
                    .expect("call"),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, sandbox_call);
criterion_main!(benches);
