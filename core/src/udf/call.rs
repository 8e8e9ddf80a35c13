//! One resolver call: a fresh instance, fuel, memory and stack limits, input in, output out,
//! and every way it can end mapped to a decision or a conflicts-feed reason.

use super::module::ResolverModule;
use crate::model::ResolverLimits;
use crate::resolve::{Outcome, reason};
use serde_json::Value;
use wasmtime::{Caller, Extern, Linker, ResourceLimiter, Store, Trap};

/// Longest log or panic message kept from one call, in bytes.
pub const MAX_LOG_BYTES: usize = 4096;
/// Tables may grow this far (elements); resolvers rarely need any.
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// The per-call state: limits and what the guest said.
pub(crate) struct CallState {
    memory_limit: usize,
    memory_refused: bool,
    memory_bytes: usize,
    panic: Option<String>,
    logs: Vec<String>,
    log_bytes: usize,
}

impl CallState {
    fn new(memory_limit: u64) -> Self {
        CallState {
            memory_limit: usize::try_from(memory_limit).unwrap_or(usize::MAX),
            memory_refused: false,
            memory_bytes: 0,
            panic: None,
            logs: Vec::new(),
            log_bytes: 0,
        }
    }
}

impl ResourceLimiter for CallState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.memory_refused = true;
            return Ok(false);
        }
        self.memory_bytes = self.memory_bytes.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// What a call did, beyond its outcome: for `check-resolver` and benchmarks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallReport {
    /// The decision, or the failure with its feed reason.
    pub outcome: Outcome,
    /// Fuel the call consumed.
    pub fuel_used: u64,
    /// Messages the guest logged (truncated to [`MAX_LOG_BYTES`] in all).
    pub logs: Vec<String>,
    /// The instance's linear memory at the end of the call, bytes (what one live instance
    /// held; deterministic).
    pub memory_bytes: u64,
    /// Where the call's wall-clock time went (not deterministic: never compare it).
    pub timings: CallTimings,
}

impl CallReport {
    pub(crate) fn failed(reason: String) -> Self {
        CallReport {
            outcome: Outcome::Failed(reason),
            fuel_used: 0,
            logs: vec![],
            memory_bytes: 0,
            timings: CallTimings::default(),
        }
    }

    /// Whether two runs of a call behaved the same: outcome, fuel, logs and memory (not
    /// timings).
    pub fn same_behaviour(&self, other: &CallReport) -> bool {
        let key = |r: &CallReport| {
            (
                r.outcome.clone(),
                r.fuel_used,
                r.logs.clone(),
                r.memory_bytes,
            )
        };
        key(self) == key(other)
    }
}

/// The phases of one call, for finding the next optimisation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallTimings {
    /// A store with fuel and limits, and a fresh instance from the pool.
    pub instantiate: std::time::Duration,
    /// `converge_alloc` and copying the input into the instance.
    pub input: std::time::Duration,
    /// `converge_resolve`: the resolver itself.
    pub run: std::time::Duration,
    /// Reading and validating the answer, and dropping the instance.
    pub output: std::time::Duration,
}

fn guest_text(
    caller: &mut Caller<'_, CallState>,
    ptr: i32,
    len: i32,
    room: usize,
) -> Option<String> {
    let Some(Extern::Memory(mem)) = caller.get_export("memory") else {
        return None;
    };
    let (ptr, len) = (ptr as u32 as usize, (len as u32 as usize).min(room));
    let data = mem.data(&caller);
    let bytes = data.get(ptr..ptr.checked_add(len)?)?;
    Some(String::from_utf8_lossy(bytes).into_owned())
}

/// The imports ABI.md allows: `converge.log` and `converge.panic`.
pub(crate) fn define_imports(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "converge",
        "log",
        |mut caller: Caller<'_, CallState>, ptr: i32, len: i32| {
            let room = MAX_LOG_BYTES.saturating_sub(caller.data().log_bytes);
            if room == 0 {
                return;
            }
            if let Some(msg) = guest_text(&mut caller, ptr, len, room) {
                let s = caller.data_mut();
                s.log_bytes += msg.len();
                s.logs.push(msg);
            }
        },
    )?;
    linker.func_wrap(
        "converge",
        "panic",
        |mut caller: Caller<'_, CallState>, ptr: i32, len: i32| {
            let msg = guest_text(&mut caller, ptr, len, MAX_LOG_BYTES);
            caller.data_mut().panic = msg;
        },
    )?;
    Ok(())
}

fn trap_reason(err: &wasmtime::Error, state: &CallState) -> String {
    // ABI.md: any trap that follows a refused memory growth in the same call is `memory
    // limit`, whatever the guest did next (ran out of fuel looping on its allocator, recursed).
    if state.memory_refused {
        return reason::MEMORY_LIMIT.into();
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => reason::OUT_OF_FUEL.into(),
        Some(Trap::StackOverflow) => reason::STACK_OVERFLOW.into(),
        _ if state.panic.is_some() => reason::trap(state.panic.as_deref().unwrap_or_default()),
        Some(Trap::UnreachableCodeReached) => reason::trap("unreachable"),
        // wasmtime writes "wasm trap: <kind>"; the ABI's reason is `trap: <kind>`.
        Some(t) => {
            let text = t.to_string();
            reason::trap(text.strip_prefix("wasm trap: ").unwrap_or(&text))
        }
        // Not a trap: instantiation refused (for example an initial memory over the limit).
        None => reason::trap(err.root_cause()),
    }
}

/// Calls `converge_abi_version` on a fresh instance.
pub(crate) fn abi_version(module: &ResolverModule) -> Result<i32, String> {
    let limits = ResolverLimits::default();
    let mut store = new_store(module, &limits)?;
    store.set_epoch_deadline(u64::MAX / 2);
    let instance = module
        .pre
        .instantiate(&mut store)
        .map_err(|e| trap_reason(&e, store.data()))?;
    let f = instance
        .get_typed_func::<(), i32>(&mut store, "converge_abi_version")
        .map_err(|e| e.to_string())?;
    f.call(&mut store, ())
        .map_err(|e| trap_reason(&e, store.data()))
}

fn new_store(module: &ResolverModule, limits: &ResolverLimits) -> Result<Store<CallState>, String> {
    let mut store = Store::new(module.module.engine(), CallState::new(limits.memory_bytes));
    store.limiter(|s| s as &mut dyn ResourceLimiter);
    store.set_fuel(limits.fuel).map_err(|e| e.to_string())?;
    Ok(store)
}

/// Parses a resolver's answer.
pub(crate) fn parse_output(out: &[u8]) -> Outcome {
    let invalid = |why: &str| Outcome::Failed(reason::invalid_output(why));
    let Ok(v) = serde_json::from_slice::<Value>(out) else {
        return invalid("not JSON");
    };
    let Value::Object(obj) = v else {
        return invalid("not a JSON object");
    };
    let mut fields = obj.into_iter();
    let (Some((key, value)), None) = (fields.next(), fields.next()) else {
        return invalid("expected exactly one of pick, merge, delete, defer");
    };
    match (key.as_str(), value) {
        ("pick", Value::Number(n)) => match n.as_u64().and_then(|i| usize::try_from(i).ok()) {
            Some(i) => Outcome::Pick(i),
            None => invalid("pick must be a non-negative integer"),
        },
        ("pick", _) => invalid("pick must be a non-negative integer"),
        ("merge", body @ Value::Object(_)) => Outcome::Merge(body.to_string()),
        ("merge", _) => invalid("merge must be a JSON object"),
        ("delete", Value::Bool(true)) => Outcome::Delete,
        ("delete", _) => invalid("delete must be true"),
        ("defer", Value::String(why)) => Outcome::Failed(reason::deferred(why)),
        ("defer", _) => invalid("defer must be a string"),
        (other, _) => invalid(&format!("unknown answer {other:?}")),
    }
}

/// Wasm stacks up to this size run on the calling thread: every thread that calls into the
/// store has at least 2 MiB of native stack (Rust's and tokio's default). Larger ones run on a
/// thread with a stack sized for them, so a deep recursion ends in `stack overflow` instead of
/// overflowing the caller's native stack.
const INLINE_STACK: u64 = 512 << 10;

/// Runs one call on a fresh instance of `module` under `limits`.
pub(crate) fn call(
    module: &ResolverModule,
    input: &[u8],
    limits: &ResolverLimits,
    watchdog: std::time::Duration,
) -> CallReport {
    let stack = super::engine::effective_stack(limits.stack_bytes);
    if stack <= INLINE_STACK {
        return call_here(module, input, limits, watchdog);
    }
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("converge-resolver".into())
            .stack_size(super::engine::native_stack_for(stack))
            .spawn_scoped(scope, || call_here(module, input, limits, watchdog))
            .ok()
            .and_then(|t| t.join().ok())
            // Nothing the resolver did: a region-local failure, so no feed reason (which
            // would differ between regions) but a retry, as after the watchdog.
            .unwrap_or_else(|| CallReport {
                outcome: Outcome::Interrupted,
                ..CallReport::failed(String::new())
            })
    })
}

fn call_here(
    module: &ResolverModule,
    input: &[u8],
    limits: &ResolverLimits,
    watchdog: std::time::Duration,
) -> CallReport {
    if input.len() as u64 > limits.input_bytes || input.len() > i32::MAX as usize {
        return CallReport::failed(reason::INPUT_TOO_LARGE.into());
    }
    let mut clock = Phases::start();
    let mut store = match new_store(module, limits) {
        Ok(s) => s,
        Err(e) => return CallReport::failed(reason::trap(e)),
    };
    let ticks = watchdog.as_millis() / super::engine::WATCHDOG_TICK.as_millis().max(1);
    store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX).max(1));
    let outcome = run(module, &mut store, input, limits, &mut clock);
    let fuel_used = limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0));
    let logs = std::mem::take(&mut store.data_mut().logs);
    let memory_bytes = store.data().memory_bytes as u64;
    drop(store);
    clock.lap(|t| &mut t.output);
    CallReport {
        outcome,
        fuel_used,
        logs,
        memory_bytes,
        timings: clock.timings,
    }
}

/// Splits a call's wall-clock time into [`CallTimings`].
struct Phases {
    last: std::time::Instant,
    timings: CallTimings,
}

impl Phases {
    fn start() -> Self {
        Phases {
            last: std::time::Instant::now(),
            timings: CallTimings::default(),
        }
    }

    /// Adds the time since the last lap to the phase `field` picks.
    fn lap(&mut self, field: impl FnOnce(&mut CallTimings) -> &mut std::time::Duration) {
        let now = std::time::Instant::now();
        *field(&mut self.timings) += now - self.last;
        self.last = now;
    }
}

fn run(
    module: &ResolverModule,
    store: &mut Store<CallState>,
    input: &[u8],
    limits: &ResolverLimits,
    clock: &mut Phases,
) -> Outcome {
    let fail = |e: wasmtime::Error, store: &Store<CallState>| match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => Outcome::Interrupted,
        _ => Outcome::Failed(trap_reason(&e, store.data())),
    };
    let instance = match module.pre.instantiate(&mut *store) {
        Ok(i) => i,
        Err(e) => return fail(e, store),
    };
    let (Some(memory), Ok(alloc), Ok(resolve)) = (
        instance.get_memory(&mut *store, "memory"),
        instance.get_typed_func::<i32, i32>(&mut *store, "converge_alloc"),
        instance.get_typed_func::<(i32, i32), i64>(&mut *store, "converge_resolve"),
    ) else {
        return Outcome::Failed(reason::trap("the module lacks an ABI export"));
    };
    clock.lap(|t| &mut t.instantiate);
    let len = input.len() as i32;
    let ptr = match alloc.call(&mut *store, len) {
        Ok(0) => return Outcome::Failed(reason::MEMORY_LIMIT.into()),
        Ok(p) => p as u32 as usize,
        Err(e) => return fail(e, store),
    };
    if memory.write(&mut *store, ptr, input).is_err() {
        return Outcome::Failed(reason::invalid_output(
            "converge_alloc returned memory out of bounds",
        ));
    }
    clock.lap(|t| &mut t.input);
    let packed = match resolve.call(&mut *store, (ptr as i32, len)) {
        Ok(p) => p as u64,
        Err(e) => return fail(e, store),
    };
    clock.lap(|t| &mut t.run);
    let (out_ptr, out_len) = ((packed >> 32) as usize, (packed & 0xffff_ffff) as usize);
    if out_len as u64 > limits.output_bytes {
        return Outcome::Failed(reason::invalid_output("too large"));
    }
    match memory
        .data(&*store)
        .get(out_ptr..out_ptr.saturating_add(out_len))
    {
        Some(out) if out_ptr.checked_add(out_len).is_some() => parse_output(out),
        _ => Outcome::Failed(reason::invalid_output("out of bounds")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_parse_as_the_abi_says() {
        assert_eq!(parse_output(br#"{"pick": 1}"#), Outcome::Pick(1));
        assert_eq!(parse_output(br#"{"delete": true}"#), Outcome::Delete);
        assert_eq!(
            parse_output(br#"{"defer": "later"}"#),
            Outcome::Failed("deferred: later".into())
        );
        assert!(
            matches!(parse_output(br#"{"merge": {"id": "a"}}"#), Outcome::Merge(b) if b == r#"{"id":"a"}"#)
        );
        for (bad, why) in [
            (&b"nope"[..], "not JSON"),
            (br#"[1]"#, "not a JSON object"),
            (br#"{"pick": 1, "delete": true}"#, "exactly one"),
            (br#"{"pick": -1}"#, "non-negative"),
            (br#"{"merge": 3}"#, "JSON object"),
            (br#"{"delete": false}"#, "must be true"),
            (br#"{"defer": 3}"#, "must be a string"),
            (br#"{"other": 1}"#, "unknown answer"),
        ] {
            assert!(
                matches!(parse_output(bad), Outcome::Failed(r) if r.starts_with("invalid output: ") && r.contains(why)),
                "{why}"
            );
        }
    }
}
