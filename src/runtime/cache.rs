//! The process-wide kernel cache, keyed by a kernel's code and the CPU features.
//!
//! The key is the loop IR without names or constant data ([`crate::lower::print::code_key`]),
//! the optimisation level and the host's CPU features: two kernels with the same key compile
//! to the same machine code, so the second is never compiled. ResNet's repeated blocks share
//! kernels; compiling a model twice compiles nothing the second time.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use crate::codegen::{self, CompiledKernel, OptLevel};
use crate::error::{Error, Result};
use crate::lower::Kernel;
use crate::lower::print::code_key;

/// Process-wide cache counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups that found a compiled kernel.
    pub hits: usize,
    /// Lookups that had to compile.
    pub misses: usize,
    /// Kernels held.
    pub entries: usize,
}

#[derive(Default)]
struct Cache {
    kernels: HashMap<String, CompiledKernel>,
    hits: usize,
    misses: usize,
}

fn cache() -> &'static Mutex<Cache> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(Cache::default()))
}

fn key(kernel: &Kernel, opt: OptLevel) -> String {
    format!("{opt:?}|{}|{}", codegen::cpu_features(), code_key(kernel))
}

/// The compiled kernel for each of `kernels`, compiling (together, in one code module) those
/// not in the cache. Returns them in order, with the number of hits and misses. With
/// `shared` false the process-wide cache is neither read nor filled (a cold compile, for
/// measuring compile time); identical kernels within the batch are still compiled once.
pub fn get_or_compile(
    kernels: &[(&Kernel, OptLevel)],
    shared: bool,
) -> Result<(Vec<CompiledKernel>, usize, usize)> {
    let keys: Vec<String> = kernels.iter().map(|(k, opt)| key(k, *opt)).collect();
    let mut private = Cache::default();
    let mut guard = if shared {
        Some(
            cache()
                .lock()
                .map_err(|_| Error::internal("kernel cache lock poisoned"))?,
        )
    } else {
        None
    };
    let cache: &mut Cache = match guard.as_deref_mut() {
        Some(c) => c,
        None => &mut private,
    };
    // Distinct missing kernels, each compiled once even if the plan uses it many times.
    let mut missing: Vec<usize> = Vec::new();
    let mut hits = 0;
    for (i, k) in keys.iter().enumerate() {
        if cache.kernels.contains_key(k) {
            hits += 1;
        } else if !missing.iter().any(|&j| keys[j] == *k) {
            missing.push(i);
        } else {
            hits += 1;
        }
    }
    if !missing.is_empty() {
        let batch: Vec<(&Kernel, OptLevel)> = missing.iter().map(|&i| kernels[i]).collect();
        let compiled = codegen::compile(&batch)?;
        for (&i, c) in missing.iter().zip(compiled) {
            cache.kernels.insert(keys[i].clone(), c);
        }
    }
    cache.hits += hits;
    cache.misses += missing.len();
    let result = keys
        .iter()
        .map(|k| {
            cache
                .kernels
                .get(k)
                .cloned()
                .ok_or_else(|| Error::internal("kernel missing from the cache"))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((result, hits, missing.len()))
}

/// The process-wide counters.
pub fn stats() -> CacheStats {
    match cache().lock() {
        Ok(c) => CacheStats {
            hits: c.hits,
            misses: c.misses,
            entries: c.kernels.len(),
        },
        Err(_) => CacheStats::default(),
    }
}
