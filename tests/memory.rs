//! Memory planning: the greedy placement on synthetic lifetimes (never overlaps, reuses
//! memory along a chain), and the arena of every model in `ir/` and `tests/data/models`
//! (plus the full networks in `../shared/models` when present) within 5% of the lower bound.

use std::path::{Path, PathBuf};

use fovea::bench::{ShapeOverrides, seeded_inputs};
use fovea::runtime::memory::{self, Lifetime, MemoryPlan, Order, align_up};
use fovea::{Compiler, Model, Tensor};

mod common;
use common::{fovea, manifest_dir};

/// A small deterministic pseudo-random generator (64-bit LCG).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % bound
    }
}

#[test]
fn random_lifetimes_never_overlap() {
    let mut rng = Lcg(42);
    for case in 0..200 {
        let steps = 1 + rng.next(40) as usize;
        let count = rng.next(60) as usize;
        let buffers: Vec<Lifetime> = (0..count)
            .map(|_| {
                let first = rng.next(steps as u64) as usize;
                let last = first + rng.next((steps - first) as u64) as usize;
                let bytes = match rng.next(4) {
                    0 => 0,
                    1 => 1 + rng.next(100) as usize,
                    _ => 1 + rng.next(100_000) as usize,
                };
                Lifetime { bytes, first, last }
            })
            .collect();
        let p = memory::place(&buffers);
        memory::check(&buffers, &p.offsets, p.arena_bytes)
            .unwrap_or_else(|e| panic!("case {case}: {e}"));
        assert!(p.arena_bytes >= p.lower_bound, "case {case}");
        assert!(p.arena_bytes <= p.unshared_bytes, "case {case}");
        for order in [Order::Size, Order::Start] {
            let (offsets, arena) =
                memory::place_in_order(&buffers, &memory::visiting_order(&buffers, order));
            memory::check(&buffers, &offsets, arena)
                .unwrap_or_else(|e| panic!("case {case}, {}: {e}", order.name()));
            assert!(p.arena_bytes <= arena);
        }
    }
}

#[test]
fn a_chain_needs_two_buffers() {
    // Step s reads buffer s - 1 and writes buffer s.
    let steps: Vec<Vec<usize>> = (0..12)
        .map(|s| if s == 0 { vec![0] } else { vec![s - 1, s] })
        .collect();
    let live = memory::liveness(12, &steps, &[11]);
    let buffers: Vec<Lifetime> = live
        .iter()
        .map(|r| {
            let (first, last) = r.unwrap();
            Lifetime {
                bytes: 4096,
                first,
                last,
            }
        })
        .collect();
    let p = memory::place(&buffers);
    memory::check(&buffers, &p.offsets, p.arena_bytes).unwrap();
    assert_eq!(p.arena_bytes, 2 * 4096);
    assert_eq!(p.lower_bound, 2 * 4096);
    assert_eq!(p.unshared_bytes, 12 * 4096);
}

#[test]
fn a_step_never_writes_over_its_inputs() {
    // Step 1 reads a (last use) and writes b: they must not share memory.
    let live = memory::liveness(2, &[vec![0], vec![0, 1]], &[1]);
    assert_eq!(live, vec![Some((0, 1)), Some((1, 1))]);
    let buffers = [
        Lifetime {
            bytes: 100,
            first: 0,
            last: 1,
        },
        Lifetime {
            bytes: 100,
            first: 1,
            last: 1,
        },
    ];
    let p = memory::place(&buffers);
    assert_ne!(p.offsets[0], p.offsets[1]);
    assert_eq!(p.arena_bytes, 2 * align_up(100));
}

/// The plan of a model for seeded inputs (symbolic dims set to 2).
fn memory_plan(model: &Model) -> MemoryPlan {
    let mut shapes = ShapeOverrides::new();
    for (input, ty) in model.inputs() {
        if ty.known_shape().is_none() {
            let shape = ty.shape.iter().map(|d| d.known().unwrap_or(2)).collect();
            shapes.insert(input.to_string(), shape);
        }
    }
    let inputs = seeded_inputs(model, &shapes, Vec::new(), 7).unwrap();
    let tensors: Vec<&Tensor> = model
        .inputs()
        .iter()
        .filter_map(|(n, _)| inputs.iter().find(|(m, _)| m == n).map(|(_, t)| t))
        .collect();
    let compiled = Compiler::new().threads(1).compile(model).unwrap();
    compiled.plan_for(&tensors).unwrap().memory().clone()
}

/// Checks a model's arena: no overlap, and within 5% of the lower bound. Returns the
/// figures line.
fn check_model(name: &str, model: &Model) -> Option<String> {
    let plan = memory_plan(model);
    let lifetimes: Vec<Lifetime> = plan
        .buffers
        .iter()
        .map(|b| Lifetime {
            bytes: b.bytes,
            first: b.first,
            last: b.last,
        })
        .collect();
    let offsets: Vec<usize> = plan.buffers.iter().map(|b| b.offset).collect();
    memory::check(&lifetimes, &offsets, plan.arena_bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    let ratio = plan.arena_bytes as f64 / plan.lower_bound_bytes.max(1) as f64;
    let line = format!(
        "{name:<20} arena {:>10}  lower bound {:>10}  no sharing {:>10}  ratio {ratio:.3}  ({})",
        plan.arena_bytes,
        plan.lower_bound_bytes,
        plan.unshared_bytes,
        plan.order.map_or("empty", Order::name)
    );
    println!("{line}");
    (plan.arena_bytes as f64 > 1.05 * plan.lower_bound_bytes as f64).then_some(line)
}

fn models_in(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    files
}

#[test]
fn every_model_arena_is_within_five_percent_of_the_lower_bound() {
    let mut files = models_in(&manifest_dir().join("ir"), "fovea");
    files.extend(models_in(&manifest_dir().join("tests/data/models"), "onnx"));
    let mut misses = Vec::new();
    for file in files {
        let name = file.file_stem().unwrap().to_string_lossy().into_owned();
        misses.extend(check_model(&name, &Model::load(&file).unwrap()));
    }
    assert!(
        misses.is_empty(),
        "over 1.05 x lower bound:\n{}",
        misses.join("\n")
    );
}

#[test]
#[ignore = "needs the full networks in ../shared/models (not in the repo); .ci/run runs it"]
fn full_network_arenas_are_within_five_percent_of_the_lower_bound() {
    let dir = std::env::var_os("FOVEA_SHARED_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir().join("../shared/models"));
    let mut misses = Vec::new();
    for file in models_in(&dir, "onnx") {
        let name = file.file_stem().unwrap().to_string_lossy().into_owned();
        misses.extend(check_model(&name, &Model::load(&file).unwrap()));
    }
    assert!(
        misses.is_empty(),
        "over 1.05 x lower bound:\n{}",
        misses.join("\n")
    );
}

#[test]
fn dump_ir_planned_prints_every_buffer_and_the_totals() {
    let model = manifest_dir().join("ir/shufflenet_block.fovea");
    let (code, stdout, stderr) = fovea(&["dump-ir", model.to_str().unwrap(), "--stage", "planned"]);
    assert_eq!(code, 0, "{stderr}");
    let plan = memory_plan(&Model::load(&model).unwrap());
    for b in &plan.buffers {
        assert!(
            stdout.contains(&format!("steps {}..={}", b.first, b.last)) && stdout.contains(&b.name),
            "{}: {stdout}",
            b.name
        );
    }
    assert!(
        stdout.contains(&format!("arena        {} bytes", plan.arena_bytes)),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("lower bound  {} bytes", plan.lower_bound_bytes)));
    assert!(stdout.contains(&format!("no sharing   {} bytes", plan.unshared_bytes)));
}

#[test]
fn bench_json_reports_the_arena() {
    let model = manifest_dir().join("ir/tiny_cnn.fovea");
    let (code, stdout, stderr) = fovea(&[
        "bench",
        model.to_str().unwrap(),
        "--iters",
        "1",
        "--warmup",
        "0",
        "--json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let plan = memory_plan(&Model::load(&model).unwrap());
    assert_eq!(report["arena_bytes"], plan.arena_bytes);
    assert_eq!(report["arena_lower_bound_bytes"], plan.lower_bound_bytes);
    assert_eq!(report["arena_unshared_bytes"], plan.unshared_bytes);
}
