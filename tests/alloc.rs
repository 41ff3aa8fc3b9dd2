//! A warm `run_into` makes no heap allocation: a counting global allocator (this file is its
//! own test binary, with one test, so nothing else allocates while it counts) sees none over
//! many runs, with 1 thread and with 2 (the worker thread's allocations count too).
//!
//! Warm means the inputs' plan is cached and an arena is idle in its pool. Every allocation is
//! counted: `alloc`, `alloc_zeroed` and `realloc`, on any thread. The models are
//! `ir/tiny_cnn.fovea` and, in a release build, `ir/resnet18.fovea` (`ir/mbv2_block.fovea`
//! in a debug build, for speed).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use fovea::bench::{ShapeOverrides, seeded_inputs};
use fovea::{Compiler, Model, Tensor};

mod common;
use common::manifest_dir;

/// Counts every allocation made by any thread of the process.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Warm runs counted per model and thread count.
const RUNS: usize = 25;

#[test]
fn warm_run_into_allocates_nothing() {
    let models = if cfg!(debug_assertions) {
        ["tiny_cnn", "mbv2_block"]
    } else {
        ["tiny_cnn", "resnet18"]
    };
    let mut counts = Vec::new();
    for name in models {
        let model = Model::load(manifest_dir().join(format!("ir/{name}.fovea"))).unwrap();
        let inputs = seeded_inputs(&model, &ShapeOverrides::new(), Vec::new(), 5).unwrap();
        let refs: Vec<(&str, &Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let owned: Vec<(&str, Tensor)> = inputs
            .iter()
            .map(|(n, t)| (n.as_str(), t.clone()))
            .collect();
        for threads in [1, 2] {
            let compiled = Compiler::new().threads(threads).compile(&model).unwrap();
            let expected = compiled.run(&owned).unwrap();
            let mut outputs = compiled.output_tensors(&refs).unwrap();
            // Warm up: the first run fills the arena pool; a few more settle the workers.
            for _ in 0..3 {
                compiled.run_into(&refs, &mut outputs).unwrap();
            }
            let before = ALLOCATIONS.load(Ordering::SeqCst);
            for _ in 0..RUNS {
                compiled.run_into(&refs, &mut outputs).unwrap();
            }
            let allocations = ALLOCATIONS.load(Ordering::SeqCst) - before;
            counts.push((name, threads, allocations));
            // The counter sees this process's allocations: `run` returns new tensors.
            let before = ALLOCATIONS.load(Ordering::SeqCst);
            drop(compiled.run(&owned).unwrap());
            assert!(
                ALLOCATIONS.load(Ordering::SeqCst) > before,
                "the counter counts"
            );
            for ((name, want), got) in expected.iter().zip(&outputs) {
                assert_eq!(
                    want.to_f64_vec(),
                    got.to_f64_vec(),
                    "{name}: run_into and run disagree"
                );
            }
        }
    }
    println!("allocations over {RUNS} warm runs (model, threads, count): {counts:?}");
    for &(name, threads, allocations) in &counts {
        assert_eq!(
            allocations, 0,
            "{name} with {threads} thread(s): {allocations} allocations in {RUNS} warm runs"
        );
    }
}
