//! Validating a resolver module against ABI version 1, and keeping it compiled.

use super::call::CallState;
use super::engine::engines;
use std::collections::HashMap;
use thiserror::Error;
use wasmtime::{ExternType, FuncType, Linker, Module, ValType};
use xxhash_rust::xxh3::xxh3_128;

/// The ABI version this host implements.
pub const ABI_VERSION: i32 = 1;

/// Why a module was refused at install. Each names what is wrong.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ModuleError {
    /// Not a valid WebAssembly module, or it does not compile.
    #[error("not a valid WebAssembly module: {0}")]
    Invalid(String),
    /// A required export is missing or has the wrong type.
    #[error("export {name:?} {problem}")]
    Export {
        /// The export's name.
        name: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// The module imports something the ABI does not offer.
    #[error(
        "import {module}.{name} is not allowed: a resolver may import only converge.log and converge.panic, each (i32, i32) -> ()"
    )]
    Import {
        /// Import module.
        module: String,
        /// Import name.
        name: String,
    },
    /// `converge_abi_version` returned another version.
    #[error("the module declares ABI version {0}; this host implements version 1")]
    AbiVersion(i32),
    /// `converge_abi_version` trapped or could not run.
    #[error("converge_abi_version failed: {0}")]
    AbiCall(String),
}

/// The content hash of a module's bytes (hex), its identity everywhere.
pub fn content_hash(bytes: &[u8]) -> String {
    format!("{:032x}", xxh3_128(bytes))
}

/// A validated, compiled resolver module.
#[derive(Clone)]
pub struct ResolverModule {
    pub(crate) hash: String,
    pub(crate) module: Module,
    pub(crate) pre: wasmtime::InstancePre<CallState>,
}

impl std::fmt::Debug for ResolverModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolverModule")
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

fn expect_func(
    module: &Module,
    name: &'static str,
    params: &[ValType],
    results: &[ValType],
) -> Result<(), ModuleError> {
    let Some(export) = module.get_export(name) else {
        return Err(ModuleError::Export {
            name,
            problem: "is missing".into(),
        });
    };
    let ExternType::Func(ty) = export else {
        return Err(ModuleError::Export {
            name,
            problem: "must be a function".into(),
        });
    };
    let same = |a: &mut dyn ExactSizeIterator<Item = ValType>, b: &[ValType]| {
        a.len() == b.len() && a.zip(b).all(|(x, y)| ValType::eq(&x, y))
    };
    if !same(&mut ty.params(), params) || !same(&mut ty.results(), results) {
        return Err(ModuleError::Export {
            name,
            problem: format!(
                "has type {ty}, expected {}",
                FuncType::new(
                    module.engine(),
                    params.iter().cloned(),
                    results.iter().cloned()
                )
            ),
        });
    }
    Ok(())
}

impl ResolverModule {
    /// Validates and compiles `bytes` for a stack limit. Checks the exports and imports ABI.md
    /// lists, and that `converge_abi_version` returns 1. Compiled modules are cached for the
    /// process by content hash and stack limit, so validating a module and running it later
    /// compile it once.
    pub fn compile(bytes: &[u8], stack_bytes: u64) -> Result<Self, ModuleError> {
        cache().get_or_compile(&content_hash(bytes), bytes, stack_bytes)
    }

    /// As [`compile`](Self::compile) for bytes whose content hash the caller already knows
    /// (an installed module): a cached module is found without hashing the bytes again.
    pub(crate) fn compile_known(
        hash: &str,
        bytes: &[u8],
        stack_bytes: u64,
    ) -> Result<Self, ModuleError> {
        cache().get_or_compile(hash, bytes, stack_bytes)
    }

    fn compile_uncached(bytes: &[u8], stack_bytes: u64) -> Result<Self, ModuleError> {
        let this = Self::compile_unversioned(bytes, stack_bytes)?;
        match super::call::abi_version(&this) {
            Ok(ABI_VERSION) => Ok(this),
            Ok(v) => Err(ModuleError::AbiVersion(v)),
            Err(e) => Err(ModuleError::AbiCall(e)),
        }
    }

    /// Every check of [`compile`](Self::compile) but calling `converge_abi_version`.
    /// Not cached: for generated modules, each seen once.
    pub(crate) fn compile_unversioned(bytes: &[u8], stack_bytes: u64) -> Result<Self, ModuleError> {
        if !bytes.starts_with(b"\0asm") {
            return Err(ModuleError::Invalid(
                "it does not start with the WebAssembly magic bytes".into(),
            ));
        }
        let engine = &engines()
            .get(stack_bytes)
            .map_err(|e| ModuleError::Invalid(e.to_string()))?;
        let module = Module::from_binary(engine, bytes)
            .map_err(|e| ModuleError::Invalid(format!("{e:#}")))?;
        for import in module.imports() {
            let ok = import.module() == "converge"
                && matches!(import.name(), "log" | "panic")
                && matches!(import.ty(), ExternType::Func(ref f)
                    if f.params().len() == 2 && f.params().all(|p| matches!(p, ValType::I32)) && f.results().len() == 0);
            if !ok {
                return Err(ModuleError::Import {
                    module: import.module().to_owned(),
                    name: import.name().to_owned(),
                });
            }
        }
        match module.get_export("memory") {
            Some(ExternType::Memory(_)) => {}
            Some(_) => {
                return Err(ModuleError::Export {
                    name: "memory",
                    problem: "must be a memory".into(),
                });
            }
            None => {
                return Err(ModuleError::Export {
                    name: "memory",
                    problem: "is missing".into(),
                });
            }
        }
        expect_func(&module, "converge_abi_version", &[], &[ValType::I32])?;
        expect_func(&module, "converge_alloc", &[ValType::I32], &[ValType::I32])?;
        expect_func(
            &module,
            "converge_resolve",
            &[ValType::I32, ValType::I32],
            &[ValType::I64],
        )?;
        let mut linker = Linker::new(engine);
        super::call::define_imports(&mut linker)
            .map_err(|e| ModuleError::Invalid(e.to_string()))?;
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| ModuleError::Invalid(format!("{e:#}")))?;
        Ok(ResolverModule {
            hash: content_hash(bytes),
            module,
            pre,
        })
    }

    /// The module's content hash.
    pub fn hash(&self) -> &str {
        &self.hash
    }
}

/// Compiled modules kept at most; past it an arbitrary one is dropped (and compiled again if
/// it is used again).
const CACHED_MODULES: usize = 256;

/// Compiled modules by (content hash, effective stack limit), so each is compiled once per
/// engine.
#[derive(Default)]
struct ModuleCache(std::sync::RwLock<HashMap<(String, u64), ResolverModule>>);

fn cache() -> &'static ModuleCache {
    static CACHE: std::sync::OnceLock<ModuleCache> = std::sync::OnceLock::new();
    CACHE.get_or_init(ModuleCache::default)
}

impl ModuleCache {
    fn get_or_compile(
        &self,
        hash: &str,
        bytes: &[u8],
        stack_bytes: u64,
    ) -> Result<ResolverModule, ModuleError> {
        let key = (hash.to_owned(), super::engine::effective_stack(stack_bytes));
        if let Some(m) = self.0.read().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(m);
        }
        let m = ResolverModule::compile_uncached(bytes, stack_bytes)?;
        if let Ok(mut map) = self.0.write() {
            if map.len() >= CACHED_MODULES
                && let Some(victim) = map.keys().next().cloned()
            {
                map.remove(&victim);
            }
            map.insert(key, m.clone());
        }
        Ok(m)
    }
}
