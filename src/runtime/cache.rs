//! The process-wide kernel cache, keyed by a kernel's code and the CPU features.
//!
//! The key is the loop IR without names or constant data ([`crate::lower::print::code_key`]),
//! the optimisation level and the host's CPU features: two kernels with the same key compile
//! to the same machine code, so the second is never compiled. ResNet's repeated blocks share
//! kernels; compiling a model twice compiles nothing the second time while the first is alive.
//!
//! The cache does not own the code. Kernels compiled together share one code module
//! ([`CodeMemory`]), which the plans using them hold by `Arc`; the cache holds only a weak
//! reference. When the last plan using a module is dropped (its compiled model dropped, or
//! the plan evicted from a bounded plan cache), the module's executable memory is freed and
//! its cache entries go dead: a later lookup compiles the kernel again, and dead entries are
//! removed on every lookup, so the cache holds no more entries than live kernels.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, Weak};

use crate::codegen::{self, CodeMemory, CompiledKernel, KernelFn, OptLevel};
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
    /// Kernels held (each one alive: used by some plan).
    pub entries: usize,
    /// Code modules mapped now, process-wide ([`codegen::live_code_modules`]).
    pub code_modules: usize,
}

/// A cached kernel: its entry point and a weak reference to the module holding it.
struct Entry {
    func: KernelFn,
    memory: Weak<CodeMemory>,
}

impl Entry {
    /// The kernel, if its code is still mapped.
    fn upgrade(&self) -> Option<CompiledKernel> {
        self.memory.upgrade().map(|memory| CompiledKernel {
            func: self.func,
            memory,
        })
    }
}

#[derive(Default)]
struct Cache {
    kernels: HashMap<String, Entry>,
    hits: usize,
    misses: usize,
}

impl Cache {
    /// Drops the entries whose code has been freed.
    fn prune(&mut self) {
        self.kernels.retain(|_, e| e.memory.strong_count() > 0);
    }
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
    cache.prune();
    // The kernels found, held strongly from here on so their code cannot be freed before
    // the caller has them; then the distinct missing ones, each compiled once even if the
    // plan uses it many times.
    let mut found: Vec<Option<CompiledKernel>> = keys
        .iter()
        .map(|k| cache.kernels.get(k).and_then(Entry::upgrade))
        .collect();
    let mut missing: Vec<usize> = Vec::new();
    let mut hits = 0;
    for (i, k) in keys.iter().enumerate() {
        if found[i].is_some() || missing.iter().any(|&j| keys[j] == *k) {
            hits += 1;
        } else {
            missing.push(i);
        }
    }
    if !missing.is_empty() {
        let batch: Vec<(&Kernel, OptLevel)> = missing.iter().map(|&i| kernels[i]).collect();
        let compiled = codegen::compile(&batch)?;
        for (&i, c) in missing.iter().zip(compiled) {
            cache.kernels.insert(
                keys[i].clone(),
                Entry {
                    func: c.func,
                    memory: std::sync::Arc::downgrade(&c.memory),
                },
            );
            found[i] = Some(c);
        }
    }
    cache.hits += hits;
    cache.misses += missing.len();
    let mut result = Vec::with_capacity(keys.len());
    for (i, k) in keys.iter().enumerate() {
        let kernel = match &found[i] {
            Some(c) => c.clone(),
            // A repeat within the batch of a kernel compiled just now: its first occurrence
            // holds the module alive.
            None => missing
                .iter()
                .find(|&&j| keys[j] == *k)
                .and_then(|&j| found[j].clone())
                .ok_or_else(|| Error::internal("kernel missing from the cache"))?,
        };
        result.push(kernel);
    }
    Ok((result, hits, missing.len()))
}

/// The process-wide counters (dead entries are dropped first, so `entries` counts only
/// kernels some plan still uses).
pub fn stats() -> CacheStats {
    match cache().lock() {
        Ok(mut c) => {
            c.prune();
            CacheStats {
                hits: c.hits,
                misses: c.misses,
                entries: c.kernels.len(),
                code_modules: codegen::live_code_modules(),
            }
        }
        Err(_) => CacheStats::default(),
    }
}
