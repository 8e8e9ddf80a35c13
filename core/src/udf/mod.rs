//! The WebAssembly resolver sandbox (ABI version 1): a wasmtime engine configured for
//! determinism and isolation, module validation at install, and one fresh, limited instance
//! per call.

mod call;
mod engine;
mod host;
mod module;

pub use call::{CallReport, CallTimings, MAX_LOG_BYTES};
pub(crate) use engine::WATCHDOG_TICK;
pub use engine::{
    EngineFingerprint, MAX_MEMORY_LIMIT, MAX_STACK_LIMIT, effective_stack, engine_count,
};
pub(crate) use host::abi_input;
pub use host::{DEFAULT_WATCHDOG, WasmResolvers};
pub use module::{ABI_VERSION, ModuleError, ResolverModule, content_hash};
