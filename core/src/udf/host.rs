//! `WasmResolvers`: the [`ResolverHost`] that runs installed WebAssembly resolvers.

use super::call::{CallReport, call};
use super::module::{ModuleError, ResolverModule};
use crate::model::ResolverLimits;
use crate::resolve::{Outcome, ResolveRequest, ResolverHost, reason};
use std::collections::HashMap;
use std::sync::RwLock;

/// Installed resolver modules, by content hash, and the sandbox that runs them. Every call
/// gets a fresh instance. Names belong to containers, and the store maps them to hashes: the
/// host knows modules only by their content.
pub struct WasmResolvers {
    bytes: RwLock<HashMap<String, std::sync::Arc<[u8]>>>,
    watchdog: std::time::Duration,
}

/// How long a call may run on the wall clock before the watchdog stops it (fuel normally stops
/// it much sooner).
pub const DEFAULT_WATCHDOG: std::time::Duration = std::time::Duration::from_secs(5);

impl Default for WasmResolvers {
    fn default() -> Self {
        WasmResolvers {
            bytes: RwLock::default(),
            watchdog: DEFAULT_WATCHDOG,
        }
    }
}

impl std::fmt::Debug for WasmResolvers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmResolvers").finish_non_exhaustive()
    }
}

impl WasmResolvers {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the watchdog: a call still running after `limit` of wall-clock time is stopped and
    /// its resolution retried later instead of recorded.
    pub fn with_watchdog(mut self, limit: std::time::Duration) -> Self {
        self.watchdog = limit;
        self
    }

    /// Validates `bytes` and installs them, known afterwards by their content hash, which it
    /// returns. A module that breaks the ABI is refused with the reason.
    pub fn install(&self, bytes: &[u8]) -> Result<String, ModuleError> {
        let module = ResolverModule::compile(bytes, ResolverLimits::default().stack_bytes)?;
        let hash = module.hash().to_owned();
        if let Ok(mut b) = self.bytes.write() {
            b.entry(hash.clone()).or_insert_with(|| bytes.into());
        }
        Ok(hash)
    }

    /// The module bytes with this content hash, if installed.
    pub fn module_bytes(&self, hash: &str) -> Option<std::sync::Arc<[u8]>> {
        self.bytes.read().ok()?.get(hash).cloned()
    }

    /// Runs a module on raw ABI input under `limits`, with the report of the call.
    pub fn call_module(
        &self,
        bytes: &[u8],
        input: &[u8],
        limits: &ResolverLimits,
    ) -> Result<CallReport, ModuleError> {
        let module: ResolverModule = ResolverModule::compile(bytes, limits.stack_bytes)?;
        Ok(call(&module, input, limits, self.watchdog))
    }

    /// Runs a module on raw ABI input like [`call_module`](Self::call_module) without asking
    /// its `converge_abi_version` first: for fuzzing the host with generated modules, whose
    /// functions answer at random (every other check at install still applies). Not for
    /// stores: they only run modules installed with every check.
    #[doc(hidden)]
    pub fn call_generated_module(
        &self,
        bytes: &[u8],
        input: &[u8],
        limits: &ResolverLimits,
    ) -> Result<CallReport, ModuleError> {
        let module = ResolverModule::compile_unversioned(bytes, limits.stack_bytes)?;
        Ok(call(&module, input, limits, self.watchdog))
    }

    /// Runs the installed module with content hash `hash` on raw ABI input under `limits`;
    /// `None` if no module with that hash is installed.
    pub fn call(&self, hash: &str, input: &[u8], limits: &ResolverLimits) -> Option<CallReport> {
        self.call_within(hash, input, limits, self.watchdog)
    }

    /// Runs the module `hash` like [`call`](Self::call) with the watchdog at `watchdog`.
    fn call_within(
        &self,
        hash: &str,
        input: &[u8],
        limits: &ResolverLimits,
        watchdog: std::time::Duration,
    ) -> Option<CallReport> {
        let bytes = self.module_bytes(hash)?;
        Some(
            match ResolverModule::compile_known(hash, &bytes, limits.stack_bytes) {
                Ok(module) => call(&module, input, limits, watchdog),
                Err(e) => CallReport::failed(reason::trap(e)),
            },
        )
    }

    fn resolve_report(
        &self,
        req: &ResolveRequest<'_>,
        watchdog: std::time::Duration,
    ) -> CallReport {
        self.call_within(req.hash, &abi_input(req), req.limits, watchdog)
            .unwrap_or_else(|| CallReport::failed(reason::RESOLVER_MISSING.into()))
    }
}

impl ResolverHost for WasmResolvers {
    fn resolve(&self, req: &ResolveRequest<'_>) -> Outcome {
        self.resolve_report(req, self.watchdog).outcome
    }

    fn resolve_within(&self, req: &ResolveRequest<'_>, limit: std::time::Duration) -> Outcome {
        self.resolve_report(req, limit.min(self.watchdog)).outcome
    }

    fn load(&self, module: &[u8]) -> Result<String, String> {
        WasmResolvers::install(self, module).map_err(|e| e.to_string())
    }
}

/// The ABI's input JSON for a request. Bodies are already JSON text, so they are spliced in
/// rather than parsed again.
pub(crate) fn abi_input(req: &ResolveRequest<'_>) -> Vec<u8> {
    let size: usize = req
        .versions
        .iter()
        .map(|v| v.body.as_ref().map_or(4, String::len) + 96)
        .sum();
    let mut out = String::with_capacity(size + 128);
    let q = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    out.push_str(&format!(
        "{{\"abi\":1,\"container\":{},\"id\":{},\"partitionKey\":{},\"versions\":[",
        q(req.container),
        q(req.id),
        req.partition_key.as_json()
    ));
    for (i, v) in req.versions.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"item\":");
        out.push_str(v.body.as_deref().unwrap_or("null"));
        out.push_str(&format!(
            ",\"deleted\":{},\"region\":{},\"timestamp\":{},\"logical\":{}}}",
            v.deleted,
            q(&v.region),
            v.timestamp,
            v.logical
        ));
    }
    out.push_str("]}");
    out.into_bytes()
}
