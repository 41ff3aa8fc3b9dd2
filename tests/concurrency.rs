//! One compiled model under load: many host threads sharing it (`Arc`), with `run` and
//! `run_into`, under both concurrency policies, every output bit-identical to a serial run;
//! the bounded plan cache (least recently used evicted, its kernels' code freed, evicted
//! signatures recompiled on demand); inputs that do not fit the declared dims.
//!
//! The tests take one lock so they run one at a time: the plan-cache test counts the
//! process-wide kernel cache's entries and code modules, which other tests' models would
//! change.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fovea::bench::{ShapeOverrides, seeded_inputs};
use fovea::runtime::{Concurrency, DEFAULT_SPIN, cache};
use fovea::{CompiledModel, Compiler, ErrorKind, Model, Tensor};

mod common;
use common::{bits, manifest_dir};

/// Host threads of the stress tests.
const CALLERS: usize = 16;
/// Runs per host thread.
const RUNS: usize = 200;
/// Distinct inputs the callers cycle through.
const INPUTS: usize = 4;

fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn load(name: &str) -> Model {
    Model::load(manifest_dir().join(format!("ir/{name}.fovea"))).unwrap()
}

/// Seeded inputs of a model with concrete input shapes, one set per seed.
fn input_sets(model: &Model) -> Vec<Vec<(String, Tensor)>> {
    (0..INPUTS as u64)
        .map(|seed| seeded_inputs(model, &ShapeOverrides::new(), Vec::new(), seed).unwrap())
        .collect()
}

fn owned(inputs: &[(String, Tensor)]) -> Vec<(&str, Tensor)> {
    inputs
        .iter()
        .map(|(n, t)| (n.as_str(), t.clone()))
        .collect()
}

fn borrowed(inputs: &[(String, Tensor)]) -> Vec<(&str, &Tensor)> {
    inputs.iter().map(|(n, t)| (n.as_str(), t)).collect()
}

/// `CALLERS` threads each run `compiled` `RUNS` times (`run_into` or `run`), cycling through
/// the input sets; every output must equal, bit for bit, a serial run's on the same inputs.
fn stress(compiled: Arc<CompiledModel>, sets: Arc<Vec<Vec<(String, Tensor)>>>, into: bool) {
    let expected: Arc<Vec<Vec<Vec<u64>>>> = Arc::new(
        sets.iter()
            .map(|set| bits(&compiled.run(&owned(set)).unwrap()))
            .collect(),
    );
    let handles: Vec<_> = (0..CALLERS)
        .map(|caller| {
            let (compiled, sets, expected) = (compiled.clone(), sets.clone(), expected.clone());
            std::thread::spawn(move || {
                let mut outputs = compiled.output_tensors(&borrowed(&sets[0])).unwrap();
                let names: Vec<String> = compiled
                    .run(&owned(&sets[0]))
                    .unwrap()
                    .into_iter()
                    .map(|(n, _)| n)
                    .collect();
                let mut mismatches = 0;
                for run in 0..RUNS {
                    let which = (caller + run) % INPUTS;
                    let got = if into {
                        compiled
                            .run_into(&borrowed(&sets[which]), &mut outputs)
                            .unwrap();
                        bits(
                            &names
                                .iter()
                                .cloned()
                                .zip(outputs.iter().cloned())
                                .collect::<Vec<_>>(),
                        )
                    } else {
                        bits(&compiled.run(&owned(&sets[which])).unwrap())
                    };
                    mismatches += usize::from(got != expected[which]);
                }
                mismatches
            })
        })
        .collect();
    let mismatches: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(
        mismatches, 0,
        "runs differing from the serial run's outputs"
    );
    let idle = compiled.idle_arenas();
    assert!(
        (1..=CALLERS).contains(&idle),
        "{idle} arenas idle after {CALLERS} callers"
    );
}

fn tiny_cnn_under_load(concurrency: Concurrency, into: bool) {
    let _serial = one_at_a_time();
    let model = load("tiny_cnn");
    let compiled = Compiler::new()
        .threads(2)
        .concurrency(concurrency)
        .compile(&model)
        .unwrap();
    stress(Arc::new(compiled), Arc::new(input_sets(&model)), into);
}

#[test]
fn sixteen_callers_run_bit_identical_to_serial() {
    tiny_cnn_under_load(Concurrency::SerialWhenBusy, false);
}

#[test]
fn sixteen_callers_run_into_bit_identical_to_serial() {
    tiny_cnn_under_load(Concurrency::SerialWhenBusy, true);
}

#[test]
fn sixteen_callers_on_the_shared_pool_bit_identical_to_serial() {
    tiny_cnn_under_load(Concurrency::SharedPool, true);
}

#[test]
fn callers_splitting_large_kernels_agree_with_serial() {
    // mbv2_block's kernels are large enough to be split across the workers, so callers
    // post launches to the shared pool at the same time; with no spin, every launch wakes
    // sleeping workers and every caller sleeps until its launch's last chunk is done.
    let _serial = one_at_a_time();
    let model = load("mbv2_block");
    let policies = [Concurrency::SharedPool, Concurrency::SerialWhenBusy];
    let spins = [Duration::ZERO, DEFAULT_SPIN];
    for (concurrency, spin) in policies.into_iter().flat_map(|c| spins.map(|s| (c, s))) {
        let compiled = Compiler::new()
            .threads(3)
            .concurrency(concurrency)
            .spin(spin)
            .compile(&model)
            .unwrap();
        let sets = Arc::new(input_sets(&model));
        let serial = Compiler::new().threads(1).compile(&model).unwrap();
        let expected: Vec<_> = sets
            .iter()
            .map(|set| bits(&serial.run(&owned(set)).unwrap()))
            .collect();
        let compiled = Arc::new(compiled);
        let handles: Vec<_> = (0..8)
            .map(|caller| {
                let (compiled, sets) = (compiled.clone(), sets.clone());
                std::thread::spawn(move || {
                    (0..25)
                        .map(|run| {
                            let which = (caller + run) % INPUTS;
                            (which, bits(&compiled.run(&owned(&sets[which])).unwrap()))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            for (which, got) in h.join().unwrap() {
                assert_eq!(got, expected[which], "{concurrency:?}: input set {which}");
            }
        }
    }
}

/// `dynamic_batch` inputs of batch `n`.
fn batch_inputs(model: &Model, n: usize) -> Vec<(String, Tensor)> {
    let mut shapes = ShapeOverrides::new();
    shapes.insert("input".to_string(), vec![n, 3, 32, 32]);
    seeded_inputs(model, &shapes, Vec::new(), n as u64).unwrap()
}

#[test]
fn the_plan_cache_is_bounded_and_frees_evicted_code() {
    let _serial = one_at_a_time();
    let model = load("dynamic_batch");
    let capacity = 2;
    let before = cache::stats();
    let compiled = Compiler::new()
        .threads(2)
        .plan_capacity(capacity)
        .compile(&model)
        .unwrap();
    let batches = [1, 2, 3, 4, 5, 6];
    let mut first_outputs = Vec::new();
    let mut live = Vec::new();
    for &n in &batches {
        let out = bits(&compiled.run(&owned(&batch_inputs(&model, n))).unwrap());
        first_outputs.push(out);
        let now = cache::stats();
        live.push((
            compiled.cached_plans(),
            now.entries - before.entries,
            now.code_modules - before.code_modules,
        ));
    }
    let stats = compiled.stats();
    println!("after each batch (plans cached, kernel cache entries, code modules): {live:?}");
    println!("{stats:?}");
    assert_eq!(stats.plans, batches.len());
    assert_eq!(stats.plans_evicted, batches.len() - capacity);
    let per_plan = stats.kernels;
    for &(plans, entries, modules) in &live {
        assert!(plans <= capacity, "{plans} plans cached");
        assert!(
            entries <= capacity * per_plan,
            "{entries} kernels cached for {capacity} plans of {per_plan} kernels"
        );
        assert!(
            modules <= entries,
            "{modules} code modules for {entries} kernels"
        );
    }

    // Batch 1 was evicted: running it again compiles it again and gives the same outputs.
    let compiled_before = compiled.stats().kernels_compiled;
    let again = bits(&compiled.run(&owned(&batch_inputs(&model, 1))).unwrap());
    assert_eq!(again, first_outputs[0]);
    let stats = compiled.stats();
    assert_eq!(stats.plans, batches.len() + 1);
    assert!(stats.kernels_compiled > compiled_before, "{stats:?}");

    // A cached signature is not rebuilt.
    let again = bits(&compiled.run(&owned(&batch_inputs(&model, 6))).unwrap());
    assert_eq!(again, first_outputs[5]);
    assert_eq!(compiled.stats().plans, batches.len() + 1);

    // Dropping the model frees every kernel it compiled.
    drop(compiled);
    let after = cache::stats();
    assert_eq!(after.entries, before.entries, "{after:?}");
    assert_eq!(after.code_modules, before.code_modules, "{after:?}");
}

#[test]
fn inputs_that_do_not_fit_the_declared_dims_are_user_errors() {
    let _serial = one_at_a_time();
    let model = load("dynamic_batch");
    let compiled = Compiler::new().threads(2).compile(&model).unwrap();
    for shape in [vec![2, 3, 31, 32], vec![2, 3, 32], vec![0, 4, 32, 32]] {
        let input = Tensor::zeros(fovea::DType::F32, shape.clone()).unwrap();
        let err = compiled.run(&[("input", input.clone())]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::User, "{shape:?}: {err}");
        let message = err.to_string();
        assert!(message.contains("input"), "{message}");
        let mut outputs = vec![Tensor::zeros(fovea::DType::F32, vec![2, 4]).unwrap()];
        let err = compiled
            .run_into(&[("input", &input)], &mut outputs)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::User, "{shape:?}: {err}");
    }
    let input = Tensor::zeros(fovea::DType::I64, vec![2, 3, 32, 32]).unwrap();
    let err = compiled.run(&[("input", input)]).unwrap_err();
    assert!(err.to_string().contains("dtype"), "{err}");
}

#[test]
fn run_into_checks_the_output_tensors() {
    let _serial = one_at_a_time();
    let model = load("tiny_cnn");
    let compiled = Compiler::new().threads(1).compile(&model).unwrap();
    let sets = input_sets(&model);
    let inputs = borrowed(&sets[0]);
    let cases = [
        (Vec::new(), "0 output tensors"),
        (
            vec![Tensor::zeros(fovea::DType::F32, vec![1, 9]).unwrap()],
            "output logits",
        ),
        (
            vec![Tensor::zeros(fovea::DType::I64, vec![1, 10]).unwrap()],
            "output logits",
        ),
    ];
    for (mut outputs, culprit) in cases {
        let err = compiled.run_into(&inputs, &mut outputs).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::User, "{err}");
        assert!(err.to_string().contains(culprit), "{err}");
    }
    let mut outputs = compiled.output_tensors(&inputs).unwrap();
    compiled.run_into(&inputs, &mut outputs).unwrap();
    let expected = compiled.run(&owned(&sets[0])).unwrap();
    assert_eq!(outputs[0], expected[0].1);
}
