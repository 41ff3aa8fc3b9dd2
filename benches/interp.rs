//! Interpreter latency per model in `ir/` (the baseline the JIT will be measured against),
//! with loading (parse + verify) measured apart from running.
//!
//! `cargo bench --bench interp` (add a filter such as `resnet18` to run one model).

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use fovea::Model;
use fovea::bench::{ShapeOverrides, seeded_inputs};

const MODELS: &[&str] = &["tiny_cnn", "mbv2_block", "resnet18", "mobilenet_v2"];

fn models(c: &mut Criterion) {
    for name in MODELS {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("ir/{name}.fovea"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut group = c.benchmark_group(*name);
        group.sample_size(10);
        group.bench_function("load", |b| {
            b.iter(|| Model::parse(black_box(&text)).unwrap())
        });
        let model = Model::parse(&text).unwrap();
        let inputs = seeded_inputs(&model, &ShapeOverrides::new(), Vec::new(), 0).unwrap();
        let refs: Vec<(&str, fovea::Tensor)> = inputs
            .iter()
            .map(|(n, t)| (n.as_str(), t.clone()))
            .collect();
        group.bench_function("interpret", |b| {
            b.iter(|| model.interpret(black_box(&refs)).unwrap())
        });
        group.finish();
    }
}

criterion_group!(benches, models);
criterion_main!(benches);
