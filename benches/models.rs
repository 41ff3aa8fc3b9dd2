//! Per model in `ir/`: the interpreter, the JIT on one thread and on all threads, and the
//! JIT's compile time cold (kernel cache off) and warm (every kernel cached), each measured
//! apart.
//!
//! `cargo bench --bench models` (add a filter such as `resnet18` to run one model).

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use fovea::bench::{ShapeOverrides, seeded_inputs};
use fovea::{Compiler, Model, Tensor};

const MODELS: &[&str] = &["tiny_cnn", "mbv2_block", "resnet18", "mobilenet_v2"];

fn models(c: &mut Criterion) {
    let all_threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    for name in MODELS {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("ir/{name}.fovea"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let model = Model::parse(&text).unwrap();
        let inputs = seeded_inputs(&model, &ShapeOverrides::new(), Vec::new(), 0).unwrap();
        let refs: Vec<(&str, Tensor)> = inputs
            .iter()
            .map(|(n, t)| (n.as_str(), t.clone()))
            .collect();

        let mut group = c.benchmark_group(*name);
        group.sample_size(10);
        group.bench_function("load", |b| {
            b.iter(|| Model::parse(black_box(&text)).unwrap())
        });
        group.bench_function("compile_cold", |b| {
            b.iter(|| {
                Compiler::new()
                    .threads(1)
                    .kernel_cache(false)
                    .compile(black_box(&model))
                    .unwrap()
            })
        });
        // Warm: every kernel is already in the process-wide cache (which holds kernels only
        // while some compiled model uses them, so this one stays alive).
        let _warm = Compiler::new().threads(1).compile(&model).unwrap();
        group.bench_function("compile_warm", |b| {
            b.iter(|| {
                Compiler::new()
                    .threads(1)
                    .compile(black_box(&model))
                    .unwrap()
            })
        });
        group.bench_function("interpret", |b| {
            b.iter(|| model.interpret(black_box(&refs)).unwrap())
        });
        for threads in [1, all_threads] {
            let compiled = Compiler::new().threads(threads).compile(&model).unwrap();
            group.bench_function(format!("jit_{threads}_threads"), |b| {
                b.iter(|| compiled.run(black_box(&refs)).unwrap())
            });
        }
        group.finish();
    }
}

criterion_group!(benches, models);
criterion_main!(benches);
