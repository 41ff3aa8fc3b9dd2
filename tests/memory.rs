//! Memory planning: the greedy placement on synthetic lifetimes (never overlaps, reuses
//! memory along a chain), and the arena of every model in `ir/` and `tests/data/models`
//! (plus the full networks in `../shared/models` when present) within 5% of the lower bound.
//! Aliasing (`runtime::alias`): snapshots of planned memory with views, concats written in
//! place and in-place elementwise kernels, the cases each rule must leave alone, and random
//! graphs mixing them, every plan checked against the interpreter.
//! Re-bless with `INSTA_UPDATE=always cargo test --test memory`.

use std::path::{Path, PathBuf};

use fovea::bench::{ShapeOverrides, seeded_inputs};
use fovea::runtime::memory::{self, Lifetime, MemoryPlan, Order, align_up};
use fovea::{Compiler, Model, Tensor};

mod common;
use common::{fovea, manifest_dir, named, relative_error};

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
    // The block's views and the concat's parts, each with what it aliases.
    assert!(plan.alias_counts.views >= 2 && plan.alias_counts.concats == 1);
    for a in &plan.aliases {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&a.name) && l.ends_with(&a.how)),
            "{}: {stdout}",
            a.name
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

/// Compiles `text`, checks the compiled model against the interpreter (with and without
/// the optimisations, 1 and 2 threads; in debug builds the arena starts as NaN, so a part
/// or view nobody wrote shows up), and returns the kernel launches and the planned memory
/// as `--stage planned` prints it.
fn planned(text: &str) -> String {
    let model = Model::parse(text).unwrap();
    let inputs = common::inputs(&model);
    let refs = named(&inputs);
    let expected = model.interpret(&refs).unwrap();
    for threads in [1, 2] {
        for optimize in [true, false] {
            let compiled = Compiler::new()
                .threads(threads)
                .optimize(optimize)
                .compile(&model)
                .unwrap();
            let got = compiled.run(&refs).unwrap();
            assert_eq!(got.len(), expected.len());
            for ((name, a), (_, b)) in got.iter().zip(&expected) {
                assert_eq!(a.shape(), b.shape(), "{name}");
                let e = relative_error(a, b);
                assert!(e <= 1e-4, "{name}: relative error {e}");
            }
        }
    }
    let compiled = Compiler::new().threads(1).compile(&model).unwrap();
    let plan = compiled.static_plan().unwrap();
    let memory = plan.memory();
    let lifetimes: Vec<Lifetime> = memory
        .buffers
        .iter()
        .map(|b| Lifetime {
            bytes: b.bytes,
            first: b.first,
            last: b.last,
        })
        .collect();
    let offsets: Vec<usize> = memory.buffers.iter().map(|b| b.offset).collect();
    memory::check(&lifetimes, &offsets, memory.arena_bytes).unwrap();
    assert!(memory.arena_bytes as f64 <= 1.05 * memory.lower_bound_bytes as f64);
    format!(
        "kernels: {}\n{}",
        plan.kernel_names().collect::<Vec<_>>().join(", "),
        memory.dump()
    )
}

#[test]
fn views_run_no_kernel_and_share_their_source() {
    // `flat` and `square` are views of `relu`; `square` is a graph output, so `relu`'s
    // buffer lives to the end and `sigmoid` must not write over it.
    insta::assert_snapshot!(planned(
        "graph g(x: f32[1,4,2,2]) -> (y: f32[1,16], square: f32[4,4]) {
  const shape: i64[2] = [4, 4]
  relu: f32[1,4,2,2] = relu(x)
  flat: f32[1,16] = flatten(relu)
  y: f32[1,16] = sigmoid(flat)
  square: f32[4,4] = reshape(relu, shape)
}"
    ));
}

#[test]
fn a_graph_output_that_is_a_view_of_an_input_is_copied() {
    // `y` is an output viewing the input `x`: it keeps its copy kernel. `v` views `x`
    // without being an output: no kernel, `z` reads `x` directly.
    insta::assert_snapshot!(planned(
        "graph g(x: f32[2,3]) -> (y: f32[6], z: f32[3,2]) {
  const flat: i64[1] = [6]
  const tall: i64[2] = [3, 2]
  y: f32[6] = reshape(x, flat)
  v: f32[3,2] = reshape(x, tall)
  z: f32[3,2] = relu(v)
}"
    ));
}

#[test]
fn concat_parts_are_written_in_place() {
    // Three parts computed into `cat`, which is nested in `outer` with a view of `d`;
    // `b` is also read after the concat (it stays in its block); `y` then writes over
    // `outer`, whose values are all dead by then.
    insta::assert_snapshot!(planned(
        "graph g(x: f32[1,2,3,3]) -> (y: f32[1,10,3,3], z: f32[1,2,3,3]) {
  const shape: i64[4] = [1, 4, 3, 3]
  a: f32[1,2,3,3] = relu(x)
  b: f32[1,2,3,3] = sigmoid(x)
  c: f32[1,2,3,3] = tanh(x)
  cat: f32[1,6,3,3] = concat(a, b, c) {axis=1}
  d: f32[2,2,3,3] = concat(x, x) {axis=0}
  dview: f32[1,4,3,3] = reshape(d, shape)
  outer: f32[1,10,3,3] = concat(cat, dview) {axis=1}
  z: f32[1,2,3,3] = exp(b)
  y: f32[1,10,3,3] = relu(outer)
}"
    ));
}

#[test]
fn concats_that_cannot_be_written_in_place_stay_kernels() {
    // `first` has an input part, `second` a graph-output part, `third` the same part
    // twice, `fourth` joins along an axis with a non-unit dim before it.
    insta::assert_snapshot!(planned(
        "graph g(x: f32[1,2,3], w: f32[2,2,3]) -> (first: f32[1,4,3], a: f32[1,2,3], second: f32[1,4,3], third: f32[1,4,3], fourth: f32[2,4,3]) {
  a: f32[1,2,3] = relu(x)
  b: f32[1,2,3] = sigmoid(x)
  c: f32[2,2,3] = tanh(w)
  e: f32[2,2,3] = exp(w)
  first: f32[1,4,3] = concat(x, b) {axis=1}
  second: f32[1,4,3] = concat(a, b) {axis=1}
  third: f32[1,4,3] = concat(b, b) {axis=1}
  fourth: f32[2,4,3] = concat(c, e) {axis=1}
}"
    ));
}

#[test]
fn elementwise_kernels_write_over_dying_operands() {
    // `p` reads `a`, which `q` reads later: not in place. `r` reads `p`, which `q` reads
    // later, and `bb`, which dies but is broadcast: not in place. `q` and `y` fuse into
    // one kernel reading `a` (dying, same shape): it writes `y` over `a`. `z` reads `y`, a
    // graph output: not in place.
    insta::assert_snapshot!(planned(
        "graph g(x: f32[2,8], bias: f32[8]) -> (y: f32[2,8], z: f32[2,8]) {
  a: f32[2,8] = relu(x)
  bb: f32[8] = relu(bias)
  p: f32[2,8] = sigmoid(a)
  r: f32[2,8] = mul(bb, p)
  q: f32[2,8] = add(a, p)
  y: f32[2,8] = sub(q, r)
  z: f32[2,8] = exp(y)
}"
    ));
}

/// A random graph of unary and binary maps, views and concats along channels on
/// `f32[1,C,2,2]` values, with a few graph outputs: the mix the aliasing rules meet.
fn random_alias_graph(rng: &mut Lcg) -> String {
    let mut values: Vec<(String, usize)> = vec![("x".to_string(), 2)];
    let mut consts = Vec::new();
    let mut body = Vec::new();
    let steps = 4 + rng.next(10) as usize;
    for step in 0..steps {
        let name = format!("v{step}");
        let pick = |rng: &mut Lcg, values: &[(String, usize)]| {
            values[rng.next(values.len() as u64) as usize].clone()
        };
        let (a, ca) = pick(rng, &values);
        let c = match rng.next(5) {
            0 => {
                let op = ["relu", "sigmoid", "tanh", "hard_swish"][rng.next(4) as usize];
                body.push(format!("  {name}: f32[1,{ca},2,2] = {op}({a})"));
                ca
            }
            1 => {
                let same: Vec<(String, usize)> =
                    values.iter().filter(|(_, c)| *c == ca).cloned().collect();
                let (b, _) = pick(rng, &same);
                let op = ["add", "mul", "sub"][rng.next(3) as usize];
                body.push(format!("  {name}: f32[1,{ca},2,2] = {op}({a}, {b})"));
                ca
            }
            2 => {
                let mut parts = vec![(a, ca)];
                for _ in 0..1 + rng.next(2) {
                    parts.push(pick(rng, &values));
                }
                let total: usize = parts.iter().map(|(_, c)| c).sum();
                if total > 24 {
                    body.push(format!("  {name}: f32[1,{ca},2,2] = relu({})", parts[0].0));
                    ca
                } else {
                    let names: Vec<&str> = parts.iter().map(|(n, _)| n.as_str()).collect();
                    body.push(format!(
                        "  {name}: f32[1,{total},2,2] = concat({}) {{axis=1}}",
                        names.join(", ")
                    ));
                    total
                }
            }
            3 => {
                consts.push(format!("  const {name}.shape: i64[4] = [1, {ca}, 2, 2]"));
                body.push(format!("  {name}.flat: f32[1,{}] = flatten({a})", 4 * ca));
                body.push(format!(
                    "  {name}: f32[1,{ca},2,2] = reshape({name}.flat, {name}.shape)"
                ));
                ca
            }
            _ => {
                consts.push(format!(
                    "  const {name}.bias: f32[{ca},1,1] = normal(seed={step}, std=1.0)"
                ));
                body.push(format!("  {name}: f32[1,{ca},2,2] = add({a}, {name}.bias)"));
                ca
            }
        };
        values.push((name, c));
    }
    let mut outputs = vec![values[values.len() - 1].clone()];
    for _ in 0..rng.next(3) {
        let v = values[1 + rng.next(values.len() as u64 - 1) as usize].clone();
        if !outputs.contains(&v) {
            outputs.push(v);
        }
    }
    let header: Vec<String> = outputs
        .iter()
        .map(|(n, c)| format!("{n}: f32[1,{c},2,2]"))
        .collect();
    format!(
        "graph g(x: f32[1,2,2,2]) -> ({}) {{\n{}\n{}\n}}",
        header.join(", "),
        consts.join("\n"),
        body.join("\n")
    )
}

#[test]
fn random_graphs_with_aliases_match_the_interpreter() {
    let mut rng = Lcg(11);
    let mut fired = [0usize; 3];
    for _ in 0..60 {
        let text = random_alias_graph(&mut rng);
        // `planned` checks every run against the interpreter and the arena's placement.
        let dump = std::panic::catch_unwind(|| planned(&text))
            .unwrap_or_else(|_| panic!("graph:\n{text}"));
        fired[0] += usize::from(dump.contains("view of"));
        fired[1] += usize::from(dump.contains("in concat"));
        fired[2] += usize::from(dump.contains("in place of"));
    }
    // Every rule fired on some of the graphs.
    assert!(fired.iter().all(|&n| n > 0), "{fired:?}");
}

/// The constants the lowerings make go into one pool per plan, on 2 MiB-aligned memory
/// advised for huge pages when it is 1 MiB or more (`runtime::pages`), counted once, and
/// are read from there: the outputs match the interpreter, and the plan's loop IR no longer
/// holds the data.
#[test]
fn constants_are_pooled_on_huge_pages() {
    // 256 → 256 3×3 (2.4 MB of taps; Winograd keeps them as packed taps) and 16 → 16 1×1.
    let text = "graph big(x: f32[1,256,14,14]) -> (y: f32[1,16,14,14]) {
  const w: f32[256,256,3,3] = normal(seed=1, std=0.02)
  const v: f32[16,256,1,1] = normal(seed=2, std=0.05)
  c: f32[1,256,14,14] = conv(x, w) {kernel_shape=[3, 3], pads=[1, 1, 1, 1]}
  r: f32[1,256,14,14] = relu(c)
  y: f32[1,16,14,14] = conv(r, v) {kernel_shape=[1, 1]}
}";
    let model = Model::parse(text).unwrap();
    let inputs = common::inputs(&model);
    let refs = named(&inputs);
    let expected = model.interpret(&refs).unwrap();
    for threads in [1, 2] {
        let compiled = Compiler::new().threads(threads).compile(&model).unwrap();
        let got = compiled.run(&refs).unwrap();
        let e = relative_error(&got[0].1, &expected[0].1);
        assert!(e <= 1e-4, "{threads} threads: relative error {e}");
        let pool = compiled.stats().constant_pool_bytes;
        assert_eq!(
            pool,
            4 << 20,
            "2.4 MB of taps and the 1x1's 16 KB on two 2 MiB pages"
        );
        let plan = compiled.static_plan().unwrap();
        let sizes: Vec<(usize, usize)> = plan
            .kernels()
            .iter()
            .flat_map(|k| &k.buffers)
            .filter_map(|b| match &b.kind {
                fovea::lower::BufferKind::Const(t) => Some((b.len, t.len())),
                _ => None,
            })
            .collect();
        assert!(sizes.contains(&(256 * 256 * 9, 0)), "{sizes:?}");
        assert!(sizes.iter().all(|&(_, held)| held == 0), "{sizes:?}");
    }
}
