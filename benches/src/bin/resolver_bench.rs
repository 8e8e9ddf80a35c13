//! The cost of one conflict resolved by a WebAssembly resolver, against the same resolver
//! function compiled natively on the same input bytes (and, with `--features quickjs`, the same
//! logic in JavaScript on QuickJS), with the breakdown of a call and the memory of 100,000
//! calls in a row. Prints markdown tables.
//!
//! `cargo run --release -p converge-benches --bin resolver-bench [--features quickjs]`
//! (`--calls N` calls per round at 1 KiB, a tenth at 64 KiB; `--rounds N`; `--memory-calls N`).

use anyhow::{Context as _, Result};
use clap::Parser;
use converge_benches::current_rss_kib;
use converge_core::{CallTimings, Outcome, ResolverLimits, WasmResolvers};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// An order of about `size` bytes with a numeric `version`.
fn order(version: u64, size: usize) -> String {
    let head =
        format!(r#"{{"id":"order-1","pk":"alice","version":{version},"status":"open","lines":["#);
    let mut out = head;
    let mut k = 0;
    while out.len() + 2 < size {
        if k > 0 {
            out.push(',');
        }
        out.push_str(&format!(
            r#"{{"sku":"sku-{k:05}","qty":{},"price":{}}}"#,
            k % 7 + 1,
            100 + k
        ));
        k += 1;
    }
    out.push_str("]}");
    out
}

/// ABI input: two versions of about `size` bytes each; the second has the higher version.
fn input(size: usize) -> Vec<u8> {
    let v = |body: String, region: &str, ts: u64| {
        format!(
            r#"{{"item":{body},"deleted":false,"region":"{region}","timestamp":{ts},"logical":0}}"#
        )
    };
    format!(
        r#"{{"abi":1,"container":"orders","id":"order-1","partitionKey":"alice","versions":[{},{}]}}"#,
        v(order(3, size), "west", 1_764_230_400_456),
        v(order(4, size), "east", 1_764_230_400_123)
    )
    .into_bytes()
}

#[derive(Clone, Copy)]
struct Sample {
    p50: Duration,
    p99: Duration,
}

/// p50 and p99 of `calls` timed calls (after a tenth as warm-up).
fn measure(calls: usize, mut f: impl FnMut()) -> Sample {
    for _ in 0..calls / 10 + 1 {
        f();
    }
    let mut times: Vec<Duration> = (0..calls)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    Sample {
        p50: times[times.len() / 2],
        p99: times[times.len() * 99 / 100],
    }
}

/// The median round's figures: subjects are measured in turn, round after round, so a noisy
/// moment on a shared machine hits all of them alike and one round cannot skew the result.
fn median(mut rounds: Vec<Sample>) -> Sample {
    rounds.sort_by_key(|s| s.p50);
    rounds[rounds.len() / 2]
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

#[cfg(feature = "quickjs")]
mod js {
    //! The same rule in JavaScript, as a Cosmos DB user writes a resolver today.
    use rquickjs::{Context, Function, Runtime};

    pub const SOURCE: &str = r#"
function resolve(input) {
  const c = JSON.parse(input);
  if (c.versions.some(v => v.deleted)) return '{"delete":true}';
  const num = v => (v.item && typeof v.item.version === 'number') ? v.item.version : null;
  let best = 0, bv = num(c.versions[0]);
  for (let i = 1; i < c.versions.length; i++) {
    const n = num(c.versions[i]);
    if (n !== null && (bv === null || n > bv)) { best = i; bv = n; }
  }
  return JSON.stringify({pick: best});
}"#;

    /// One runtime and context, reused for every call (state survives between calls).
    pub struct Warm {
        _rt: Runtime,
        ctx: Context,
    }

    impl Warm {
        pub fn new() -> anyhow::Result<Self> {
            let rt = Runtime::new()?;
            let ctx = Context::full(&rt)?;
            ctx.with(|c| c.eval::<(), _>(SOURCE))?;
            Ok(Warm { _rt: rt, ctx })
        }

        pub fn call(&self, input: &str) -> String {
            self.ctx.with(|c| {
                let f: Function = c.globals().get("resolve").expect("resolve");
                f.call((input,)).expect("call")
            })
        }
    }

    /// A fresh context per call (fresh state, as converge gives every wasm call).
    pub fn fresh(rt: &Runtime, input: &str) -> String {
        let ctx = Context::full(rt).expect("context");
        ctx.with(|c| {
            c.eval::<(), _>(SOURCE).expect("eval");
            let f: Function = c.globals().get("resolve").expect("resolve");
            f.call((input,)).expect("call")
        })
    }
}

/// The cost of one conflict resolved by a WebAssembly resolver against the same function
/// compiled natively, the breakdown of a call, and the memory of many calls in a row.
#[derive(Parser)]
struct Args {
    /// Calls per round at 1 KiB (a tenth as many at 64 KiB).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    calls: u32,
    /// Rounds; the table shows the median round.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..))]
    rounds: u16,
    /// Calls in a row for the memory measurement.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..))]
    memory_calls: u32,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let (calls, rounds, memory_calls) = (
        args.calls as usize,
        usize::from(args.rounds),
        args.memory_calls as usize,
    );
    let host = WasmResolvers::new();
    let hash = host.install(converge_udf_examples::HIGHEST_VERSION)?;
    let limits = ResolverLimits::default();
    // What one instance costs the process: resident memory before and after the first call
    // (the module is compiled at install; the call takes a pool slot, its memory and tables).
    let before_first = current_rss_kib();
    host.call(&hash, &input(1024), &limits)
        .context("installed")?;
    let first_instance_kib = current_rss_kib().saturating_sub(before_first);

    println!(
        "## highest-version: one conflict of two versions (p50 / p99 per call, median of {rounds} rounds)\n"
    );
    print!("| versions of | native | wasm, fresh instance (fuel on) | wasm / native |");
    #[cfg(feature = "quickjs")]
    print!(" QuickJS, warm context | QuickJS / wasm | QuickJS, fresh context |");
    println!();
    print!("|---|---|---|---|");
    #[cfg(feature = "quickjs")]
    print!("---|---|---|");
    println!();
    let mut breakdowns = Vec::new();
    for size in [1024, 64 * 1024] {
        let input = input(size);
        let n = if size > 4096 { calls / 10 } else { calls };
        let expected = highest_version::resolve_bytes(&input);
        assert_eq!(expected, br#"{"pick":1}"#, "the workload's answer");
        let report = host.call(&hash, &input, &limits).context("installed")?;
        assert_eq!(report.outcome, Outcome::Pick(1));
        let mut sum = CallTimings::default();
        #[cfg(feature = "quickjs")]
        let text = std::str::from_utf8(&input)?;
        #[cfg(feature = "quickjs")]
        let warm = js::Warm::new()?;
        #[cfg(feature = "quickjs")]
        assert_eq!(warm.call(text), r#"{"pick":1}"#);
        #[cfg(feature = "quickjs")]
        let rt = rquickjs::Runtime::new()?;
        let (mut natives, mut wasms) = (Vec::new(), Vec::new());
        #[cfg_attr(not(feature = "quickjs"), allow(unused_mut))]
        let (mut jsws, mut jsfs): (Vec<Sample>, Vec<Sample>) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            natives.push(measure(n, || {
                black_box(highest_version::resolve_bytes(black_box(&input)));
            }));
            wasms.push(measure(n, || {
                let r = host
                    .call(&hash, black_box(&input), &limits)
                    .expect("installed");
                sum.instantiate += r.timings.instantiate;
                sum.input += r.timings.input;
                sum.run += r.timings.run;
                sum.output += r.timings.output;
            }));
            #[cfg(feature = "quickjs")]
            {
                jsws.push(measure(n, || {
                    black_box(warm.call(black_box(text)));
                }));
                jsfs.push(measure(n / 10 + 1, || {
                    black_box(js::fresh(&rt, black_box(text)));
                }));
            }
        }
        let (native, wasm) = (median(natives), median(wasms));
        let total = (n + n / 10 + 1) * rounds;
        breakdowns.push((size, sum, total, report.fuel_used, report.memory_bytes));
        print!(
            "| {} KiB | {} / {} | {} / {} | {:.2}× |",
            size / 1024,
            us(native.p50),
            us(native.p99),
            us(wasm.p50),
            us(wasm.p99),
            wasm.p50.as_secs_f64() / native.p50.as_secs_f64()
        );
        if !jsws.is_empty() {
            let (jsw, jsf) = (median(jsws), median(jsfs));
            print!(
                " {} / {} | {:.2}× | {} / {} |",
                us(jsw.p50),
                us(jsw.p99),
                jsw.p50.as_secs_f64() / wasm.p50.as_secs_f64(),
                us(jsf.p50),
                us(jsf.p99)
            );
        }
        println!();
    }

    println!("\n## Where a wasm call's time goes (mean per call)\n");
    println!(
        "| versions of | instantiate | input in | resolver runs | output out + drop | fuel used | instance memory |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (size, sum, n, fuel, mem) in breakdowns {
        let mean = |d: Duration| us(d / n as u32);
        println!(
            "| {} KiB | {} | {} | {} | {} | {fuel} | {} KiB |",
            size / 1024,
            mean(sum.instantiate),
            mean(sum.input),
            mean(sum.run),
            mean(sum.output),
            mem / 1024
        );
    }

    println!(
        "\n## Memory\n\nOne instance (resident memory the first call added): {first_instance_kib} KiB\n"
    );
    println!("Over {memory_calls} calls in a row (1 KiB versions):\n");
    println!("| calls | process RSS |");
    println!("|---|---|");
    let input = input(1024);
    let checkpoints = [
        1,
        memory_calls / 4,
        memory_calls / 2,
        memory_calls * 3 / 4,
        memory_calls,
    ];
    for i in 1..=memory_calls {
        black_box(host.call(&hash, &input, &limits));
        if checkpoints.contains(&i) {
            println!("| {i} | {} KiB |", current_rss_kib());
        }
    }
    Ok(())
}
