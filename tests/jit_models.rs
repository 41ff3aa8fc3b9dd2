//! The JIT against the interpreter on whole models: every model in `ir/`, the small ONNX
//! models (and, ignored by default, the full networks in `../shared/models`), with 1 and 2
//! threads giving bit-identical results; and the kernel cache on ResNet-18.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use fovea::bench::{ShapeOverrides, seeded_inputs};
use fovea::lower::print::code_key;
use fovea::{Compiler, Model, Tensor, Winograd};

mod common;
use common::{bits, manifest_dir, relative_error};

/// Runs `model` in the interpreter and the JIT (1 and 2 threads) on seeded inputs (or the
/// given ones) and checks they agree; returns the JIT/interpreter relative error.
fn check_model(name: &str, model: &Model, given: Vec<(String, Tensor)>) -> f64 {
    let mut shapes = ShapeOverrides::new();
    for (input, ty) in model.inputs() {
        if ty.known_shape().is_none() {
            let shape = ty.shape.iter().map(|d| d.known().unwrap_or(2)).collect();
            shapes.insert(input.to_string(), shape);
        }
    }
    let inputs = seeded_inputs(model, &shapes, given, 7).unwrap();
    let refs: Vec<(&str, Tensor)> = inputs
        .iter()
        .map(|(n, t)| (n.as_str(), t.clone()))
        .collect();
    let reference = model.interpret(&refs).unwrap();
    let mut runs = Vec::new();
    for threads in [1, 2] {
        let compiled = Compiler::new()
            .threads(threads)
            .compile(model)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        runs.push(
            compiled
                .run(&refs)
                .unwrap_or_else(|e| panic!("{name}: {e}")),
        );
    }
    assert_eq!(
        bits(&runs[0]),
        bits(&runs[1]),
        "{name}: 1 and 2 threads differ"
    );
    let mut worst: f64 = 0.0;
    for ((out, actual), (_, expected)) in runs[0].iter().zip(&reference) {
        let error = relative_error(actual, expected);
        assert!(
            error <= 1e-4,
            "{name} output {out}: JIT vs interpreter relative error {error:.3e}"
        );
        worst = worst.max(error);
    }
    println!("{name:<24} JIT vs interpreter max relative error {worst:.3e}");
    worst
}

#[test]
fn every_ir_model_matches_the_interpreter() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(manifest_dir().join("ir"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "fovea"))
        .collect();
    files.sort();
    for file in files {
        let name = file.file_stem().unwrap().to_string_lossy().into_owned();
        check_model(&name, &Model::load(&file).unwrap(), Vec::new());
    }
}

fn onnx_models(dir: &Path, names: &[&str]) {
    for name in names {
        let model = Model::load(dir.join(format!("{name}.onnx"))).unwrap();
        let input = fovea::npy::read(dir.join(format!("{name}.input.npy"))).unwrap();
        let input_name = model.inputs()[0].0.to_string();
        check_model(name, &model, vec![(input_name.clone(), input.clone())]);
        // And against ONNX Runtime's output.
        let compiled = Compiler::new().threads(2).compile(&model).unwrap();
        let out = compiled.run(&[(input_name.as_str(), input)]).unwrap();
        let expected = fovea::npy::read(dir.join(format!("{name}.output.npy"))).unwrap();
        let error = relative_error(&out[0].1, &expected);
        println!("{name:<24} JIT vs ONNX Runtime max relative error {error:.3e}");
        assert!(
            error <= 1e-4,
            "{name}: JIT vs ONNX Runtime relative error {error:.3e}"
        );
    }
}

#[test]
fn small_onnx_models_match() {
    onnx_models(
        &manifest_dir().join("tests/data/models"),
        &["conv_bn_relu", "resblock", "mbv2_block", "tiny_cnn"],
    );
}

#[test]
#[ignore = "needs the full networks in ../shared/models (not in the repo); .ci/run runs it"]
fn full_networks_match() {
    let dir = std::env::var_os("FOVEA_SHARED_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir().join("../shared/models"));
    onnx_models(&dir, &["squeezenet1_1", "mobilenet_v2"]);
}

#[test]
fn resnet18_compiles_once_and_shares_repeated_kernels() {
    let model = Model::load(manifest_dir().join("ir/resnet18.fovea")).unwrap();
    let first = Compiler::new().threads(1).compile(&model).unwrap();
    let plan = first.static_plan().unwrap();
    let distinct: HashSet<String> = plan.kernels().iter().map(code_key).collect();
    println!(
        "resnet18: {} kernel launches, {} distinct kernels",
        plan.kernel_count(),
        distinct.len()
    );
    assert!(
        distinct.len() < plan.kernel_count(),
        "repeated blocks should share kernels"
    );
    let second = Compiler::new().threads(1).compile(&model).unwrap();
    let stats = second.stats();
    assert_eq!(stats.kernels_compiled, 0, "{stats:?}");
    assert_eq!(stats.cache_hits, plan.kernel_count());
}

/// The cost model puts every 3×3 stride-1 convolution of ResNet-18 on Winograd (F(7×7) on
/// layers 1–3, F(4×4) on layer 4; with 256-bit vectors, whose products cost less against
/// the transforms, F(4×4) on layer 3 too), the stem over its input's phases, and layer 2's
/// stride-2 3×3 too with 128-bit vectors only (the 256-bit direct kernel is cheaper), the
/// weights transformed at run time but the stem's; `Winograd::Off` puts them back on the
/// direct kernel.
#[test]
fn resnet18_takes_winograd_where_the_cost_model_says() {
    let model = Model::load(manifest_dir().join("ir/resnet18.fovea")).unwrap();
    let schedules = |choice: Winograd| -> Vec<(String, String)> {
        let compiled = Compiler::new()
            .threads(1)
            .winograd(choice)
            .compile(&model)
            .unwrap();
        let plan = compiled.static_plan().unwrap();
        plan.kernels()
            .iter()
            .filter_map(|k| Some((k.name.clone(), k.schedule.clone()?)))
            .filter(|(_, s)| s.starts_with("winograd"))
            .collect()
    };
    let auto = schedules(Winograd::Auto);
    let names: Vec<&str> = auto.iter().map(|(n, _)| n.as_str()).collect();
    let wide = fovea::codegen::wide_vectors();
    let mut expected = vec![
        "conv1",
        "layer1.0.conv1",
        "layer1.0.conv2",
        "layer1.1.conv1",
        "layer1.1.conv2",
        "layer2.0.conv1",
        "layer2.0.conv2",
        "layer2.1.conv1",
        "layer2.1.conv2",
        "layer3.0.conv2",
        "layer3.1.conv1",
        "layer3.1.conv2",
        "layer4.0.conv2",
        "layer4.1.conv1",
        "layer4.1.conv2",
    ];
    if wide {
        expected.retain(|n| *n != "layer2.0.conv1");
    }
    assert_eq!(names, expected);
    for (name, schedule) in &auto {
        // The 7×7 stride-2 stem runs over its input's four phases as a 4×4 convolution,
        // layer 2's 3×3 stride-2 one as a 2×2 convolution (layers 3 and 4's stay direct: 4
        // and 1 tiles amortise little of the weight transform); the 56×56, 28×28 and 14×14
        // planes split into whole 7×7 tiles; a 7×7 plane would fill one lane of F(7×7)'s
        // 4-tile GEMM, so layer 4 takes F(4×4).
        let algorithm = match name.as_str() {
            "conv1" => "F(4x4,4x4)",
            "layer2.0.conv1" => "F(7x7,2x2)",
            n if n.starts_with("layer4") => "F(4x4,3x3)",
            n if wide && n.starts_with("layer3") => "F(4x4,3x3)",
            _ => "F(7x7,3x3)",
        };
        assert!(schedule.contains(algorithm), "{name}: {schedule}");
        // The stem's transformed weights (0.15 MB) stay in cache; the layers' (1.3-38 MB)
        // would be streamed from memory, so they are transformed at run time.
        let weights = if name == "conv1" {
            "at compile time"
        } else {
            "at run time"
        };
        assert!(schedule.contains(weights), "{name}: {schedule}");
    }
    assert!(schedules(Winograd::Off).is_empty());
}

#[test]
fn dynamic_batch_compiles_each_batch_size_once() {
    let plans = run_batches("ir/dynamic_batch.fovea", &[1, 3, 1, 2, 3]);
    assert_eq!(
        plans.iter().map(|p| p.0).collect::<Vec<_>>(),
        [1, 2, 2, 3, 3],
        "a plan is built on the first sight of each batch size only"
    );
}

/// ResNet-18 with a symbolic batch: kernels are compiled on the first sight of a batch
/// size only, and every run equals the interpreter's.
#[test]
fn resnet18_with_a_dynamic_batch_compiles_each_batch_size_once() {
    let counts = run_batches("ir/resnet18_dynamic.fovea", &[1, 2, 1, 2]);
    let plans: Vec<usize> = counts.iter().map(|c| c.0).collect();
    assert_eq!(plans, [1, 2, 2, 2]);
    let compiled: Vec<usize> = counts.iter().map(|c| c.1).collect();
    assert!(compiled[0] > 0, "{compiled:?}");
    assert_eq!(compiled[2], compiled[1], "batch 1 again compiles nothing");
    assert_eq!(compiled[3], compiled[1], "batch 2 again compiles nothing");
}

/// Runs `path` (first input with a symbolic batch) at each batch size, checking the JIT
/// against the interpreter; returns the plans built and kernels compiled after each run.
fn run_batches(path: &str, batches: &[usize]) -> Vec<(usize, usize)> {
    let model = Model::load(manifest_dir().join(path)).unwrap();
    // Without the process-wide cache, so the counts do not depend on other tests.
    let compiled = Compiler::new()
        .threads(2)
        .kernel_cache(false)
        .compile(&model)
        .unwrap();
    assert_eq!(
        compiled.stats().plans,
        0,
        "nothing to compile before the batch size is known"
    );
    let input_name = model.inputs()[0].0.to_string();
    let mut counts = Vec::new();
    for &batch in batches {
        let mut shapes = ShapeOverrides::new();
        let mut shape: Vec<usize> = model.inputs()[0]
            .1
            .shape
            .iter()
            .map(|d| d.known().unwrap_or(0))
            .collect();
        shape[0] = batch;
        shapes.insert(input_name.clone(), shape);
        let inputs = seeded_inputs(&model, &shapes, Vec::new(), batch as u64).unwrap();
        let refs: Vec<(&str, Tensor)> = inputs
            .iter()
            .map(|(n, t)| (n.as_str(), t.clone()))
            .collect();
        let jit = compiled.run(&refs).unwrap();
        let reference = model.interpret(&refs).unwrap();
        assert!(
            relative_error(&jit[0].1, &reference[0].1) <= 1e-4,
            "{path} batch {batch}"
        );
        let stats = compiled.stats();
        counts.push((stats.plans, stats.kernels_compiled));
    }
    counts
}

#[test]
fn compiled_models_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<fovea::CompiledModel>();
    let model = Model::load(manifest_dir().join("ir/tiny_cnn.fovea")).unwrap();
    let compiled = std::sync::Arc::new(Compiler::new().threads(2).compile(&model).unwrap());
    let inputs = seeded_inputs(&model, &ShapeOverrides::new(), Vec::new(), 3).unwrap();
    let expected = bits(
        &compiled
            .run(&[(inputs[0].0.as_str(), inputs[0].1.clone())])
            .unwrap(),
    );
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (compiled, inputs) = (compiled.clone(), inputs.clone());
            std::thread::spawn(move || {
                bits(
                    &compiled
                        .run(&[(inputs[0].0.as_str(), inputs[0].1.clone())])
                        .unwrap(),
                )
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), expected);
    }
}
