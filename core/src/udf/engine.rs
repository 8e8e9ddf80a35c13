//! The wasmtime engine: deterministic and isolated, one per stack limit.

use crate::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// The largest linear memory a definition may allow a resolver (256 MiB).
pub const MAX_MEMORY_LIMIT: u64 = 256 << 20;

/// The largest wasm stack a definition may allow a resolver (8 MiB).
pub const MAX_STACK_LIMIT: u64 = 8 << 20;

/// The smallest wasm stack an engine is configured with (16 KiB).
const MIN_STACK: u64 = 16 << 10;

/// The wasm stack a call really gets for a definition's `stackBytes`: rounded up to a power of
/// two between 16 KiB and [`MAX_STACK_LIMIT`]. wasmtime sets the stack limit per engine, so the
/// process keeps one engine per such size (ten at most) and no definition can make more.
pub fn effective_stack(stack_bytes: u64) -> u64 {
    stack_bytes
        .clamp(MIN_STACK, MAX_STACK_LIMIT)
        .next_power_of_two()
}

/// Native stack a thread needs to run a call with wasm stack `stack` without overflowing its
/// own stack first: the wasm stack and room for the host frames around it.
pub(crate) fn native_stack_for(stack: u64) -> usize {
    usize::try_from(stack)
        .unwrap_or(usize::MAX)
        .saturating_add(2 << 20)
}

/// Instances the pooling allocator keeps ready per engine. Resolver calls run under the
/// store's writer lock, so few are live at once.
const POOL_INSTANCES: u32 = 32;

/// Bytes of a linear memory reset in place (rather than returned to the kernel) when an
/// instance is dropped.
const KEEP_RESIDENT: usize = 4 << 20;

/// What peers compare before trusting each other's fuel and stack outcomes: the same converge
/// build, wasmtime version and architecture give the same results.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EngineFingerprint {
    /// converge-core's version.
    pub converge: String,
    /// wasmtime's version.
    pub wasmtime: String,
    /// Target architecture.
    pub arch: String,
}

impl EngineFingerprint {
    /// This binary's fingerprint.
    pub fn current() -> Self {
        EngineFingerprint {
            converge: env!("CARGO_PKG_VERSION").to_owned(),
            wasmtime: "48".to_owned(),
            arch: std::env::consts::ARCH.to_owned(),
        }
    }
}

impl std::fmt::Display for EngineFingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "converge {} / wasmtime {} / {}",
            self.converge, self.wasmtime, self.arch
        )
    }
}

fn config(stack_bytes: usize) -> Config {
    let mut c = Config::new();
    // Threads are off by construction: wasmtime is built without its `threads` feature.
    c.consume_fuel(true)
        .epoch_interruption(true)
        .cranelift_nan_canonicalization(true)
        .relaxed_simd_deterministic(true)
        .max_wasm_stack(stack_bytes)
        // Unused (calls are synchronous), but wasmtime refuses a wasm stack above it.
        .async_stack_size(stack_bytes.max(2 << 20));
    let mut pool = PoolingAllocationConfig::default();
    pool.total_core_instances(POOL_INSTANCES)
        .total_memories(POOL_INSTANCES)
        .total_tables(POOL_INSTANCES)
        .max_memories_per_module(1)
        .max_memory_size(MAX_MEMORY_LIMIT as usize)
        // A fresh state per call without paying for it: when an instance is dropped, the
        // PAGEMAP_SCAN ioctl (Linux 6.7+) finds the pages the call dirtied and only those are
        // reset (memset) to the module's initial image, up to this much per memory; they stay
        // resident, so the next call takes no page faults. Elsewhere the first
        // `KEEP_RESIDENT` bytes are reset with memset and the rest with madvise.
        .pagemap_scan(wasmtime::Enabled::Auto)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        // Tables (a Rust module's indirect-call table) likewise: reset with memset instead of
        // madvise, whose TLB shootdowns cost more than the call on a small VM.
        .table_keep_resident(64 << 10);
    c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    c
}

/// How often the watchdog's clock ticks (each engine's epoch advances by one).
pub(crate) const WATCHDOG_TICK: std::time::Duration = std::time::Duration::from_millis(10);

/// Engines by effective stack limit (a stack limit is an engine setting in wasmtime): at most
/// one per power of two between 16 KiB and [`MAX_STACK_LIMIT`].
#[derive(Default)]
pub(crate) struct Engines(Mutex<HashMap<usize, Engine>>);

impl Engines {
    pub(crate) fn get(&self, stack_bytes: u64) -> Result<Engine> {
        let stack = usize::try_from(effective_stack(stack_bytes))
            .map_err(|_| Error::Storage("stack limit does not fit this machine".into()))?;
        let mut map = self
            .0
            .lock()
            .map_err(|_| Error::Storage("engine lock poisoned".into()))?;
        if let Some(e) = map.get(&stack) {
            return Ok(e.clone());
        }
        let engine = Engine::new(&config(stack))
            .map_err(|e| Error::Storage(format!("cannot configure the WebAssembly engine: {e}")))?;
        map.insert(stack, engine.clone());
        start_ticker(engine.clone());
        Ok(engine)
    }

    /// How many engines exist.
    pub(crate) fn count(&self) -> usize {
        self.0.lock().map(|m| m.len()).unwrap_or(0)
    }
}

/// How many wasmtime engines this process made (for tests: they must stay few, whatever the
/// definitions ask).
#[doc(hidden)]
pub fn engine_count() -> usize {
    engines().count()
}

/// Shared engines for every sandbox in the process.
pub(crate) fn engines() -> Arc<Engines> {
    static ENGINES: std::sync::OnceLock<Arc<Engines>> = std::sync::OnceLock::new();
    ENGINES.get_or_init(|| Arc::new(Engines::default())).clone()
}

/// Advances an engine's epoch every [`WATCHDOG_TICK`], for as long as the process runs: the
/// wall-clock safety net under fuel. Engines live for the process (one per effective stack
/// limit, so ten tickers at most).
fn start_ticker(engine: Engine) {
    let spawned = std::thread::Builder::new()
        .name("converge-watchdog".into())
        .spawn(move || {
            loop {
                std::thread::sleep(WATCHDOG_TICK);
                engine.increment_epoch();
            }
        });
    // Without the thread, epochs never advance: calls are then bounded by fuel alone.
    drop(spawned);
}
