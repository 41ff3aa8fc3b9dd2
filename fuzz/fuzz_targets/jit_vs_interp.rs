//! Fuzz target `jit_vs_interp`: a small random graph built with the graph builder (conv,
//! pooling, relu, clip, sigmoid, add and mul with broadcasting, concat, reshape, flatten,
//! gemm) is compiled with the JIT and run next to the interpreter. A JIT error on a graph the
//! interpreter runs, or outputs that differ beyond the tolerance of `tests/jit_props.rs`, is
//! a crash. Convolutions have 1–3, 8 or 16 output channels per group, so the register-blocked
//! direct and Winograd kernels are drawn too; with Winograd on, an output's error is measured
//! against its largest magnitude (Winograd's rounding is relative to the sums it transforms).
//!
//! The fuzzer's bytes are decoded (with `arbitrary`) into an input shape and a list of
//! steps; each step picks its operands among the values built so far and is skipped when
//! shape inference rejects it or its output would be large, so every input builds a valid
//! graph.

#![no_main]

use arbitrary::Arbitrary;
use fovea::graph::op::{Attr, Op};
use fovea::graph::{ConstInit, Graph, TensorType, ValueId};
use fovea::{Compiler, DType, Model, Tensor, Winograd, tensor_gen};
use libfuzzer_sys::fuzz_target;

/// Steps after this many are ignored.
const MAX_STEPS: usize = 8;
/// Values of more elements than this are not built.
const MAX_ELEMENTS: usize = 4096;

#[derive(Arbitrary, Debug)]
struct Case {
    /// Input shape `[n, c, h, w]`, each taken modulo a small bound.
    shape: [u8; 4],
    seed: u16,
    steps: Vec<Step>,
    /// Also output the value this picks (besides the last one built).
    extra_output: u8,
    threads2: bool,
    optimize: bool,
    fusion: bool,
    /// Modulo 4: the direct kernel only, the cost model's choice, F(4×4) or F(7×7)
    /// wherever it applies.
    winograd: u8,
}

#[derive(Arbitrary, Debug)]
struct Window {
    kernel: [u8; 2],
    strides: [u8; 2],
    dilations: [u8; 2],
    pads: [u8; 4],
    auto_pad: u8,
}

#[derive(Arbitrary, Debug)]
enum Step {
    Conv {
        x: u8,
        window: Window,
        group: u8,
        out_per_group: u8,
        bias: bool,
    },
    Pool {
        x: u8,
        window: Window,
        max: bool,
        ceil: bool,
        include_pad: bool,
    },
    GlobalPool {
        x: u8,
        max: bool,
    },
    Relu(u8),
    Sigmoid(u8),
    Clip {
        x: u8,
        min: Option<i8>,
        max: Option<i8>,
    },
    /// `add` or `mul` of two values built so far.
    Binary {
        a: u8,
        b: u8,
        mul: bool,
    },
    /// `add` or `mul` of a value and a constant: bit `i` of `ones` makes dim `i` of the
    /// constant 1; `drop` leading dims are left out.
    BinaryConst {
        a: u8,
        ones: u8,
        drop: u8,
        mul: bool,
        swap: bool,
    },
    Concat {
        a: u8,
        b: u8,
        axis: i8,
    },
    /// `reshape(x, [dims[0] .. dims[k]])` where the shape is made from `x`'s own dims: `keep`
    /// leading dims copied (as 0), the rest folded into one -1.
    Reshape {
        x: u8,
        keep: u8,
    },
    Flatten {
        x: u8,
        axis: i8,
    },
    Gemm {
        a: u8,
        n: u8,
        trans_a: bool,
        trans_b: bool,
        c_kind: u8,
        alpha: i8,
        beta: i8,
    },
}

fn ints(v: &[usize]) -> Attr {
    Attr::Ints(v.iter().map(|&x| x as i64).collect())
}

fn attrs(pairs: Vec<(&str, Attr)>) -> Vec<(String, Attr)> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// The window attributes, each dim small (kernels of 1 to `largest` taps); pads smaller
/// than the kernel (as ONNX requires for pooling, and harmless for convolution).
fn window_attrs(w: &Window, largest: usize) -> Vec<(&'static str, Attr)> {
    let k = [
        1 + w.kernel[0] as usize % largest,
        1 + w.kernel[1] as usize % largest,
    ];
    let pads: Vec<usize> = (0..4).map(|i| w.pads[i] as usize % k[i % 2]).collect();
    let mut out = vec![
        ("kernel_shape", ints(&k)),
        (
            "strides",
            ints(&[1 + w.strides[0] as usize % 2, 1 + w.strides[1] as usize % 2]),
        ),
        (
            "dilations",
            ints(&[
                1 + w.dilations[0] as usize % 2,
                1 + w.dilations[1] as usize % 2,
            ]),
        ),
    ];
    match w.auto_pad % 4 {
        0 => out.push(("pads", ints(&pads))),
        1 => out.push(("auto_pad", Attr::Str("SAME_UPPER".to_string()))),
        2 => out.push(("auto_pad", Attr::Str("SAME_LOWER".to_string()))),
        _ => out.push(("auto_pad", Attr::Str("VALID".to_string()))),
    }
    out
}

/// A graph under construction: the values steps may use, with their shapes.
struct Builder {
    graph: Graph,
    pool: Vec<(ValueId, Vec<usize>)>,
    seed: u64,
    count: usize,
}

impl Builder {
    fn pick(&self, i: u8) -> (ValueId, Vec<usize>) {
        self.pool[i as usize % self.pool.len()].clone()
    }

    fn constant(&mut self, tensor: Tensor) -> Option<ValueId> {
        self.count += 1;
        self.graph
            .add_const(format!("c{}", self.count), tensor, ConstInit::Literal)
            .ok()
    }

    fn weights(&mut self, shape: Vec<usize>) -> Option<ValueId> {
        self.seed += 1;
        let tensor = tensor_gen::normal(shape, self.seed, 0.0, 0.5).ok()?;
        self.constant(tensor)
    }

    /// Adds `op(inputs)` unless shape inference rejects it or its first output is large;
    /// the first output joins the pool.
    fn node(&mut self, op_name: &str, attrs: Vec<(&str, Attr)>, inputs: Vec<Option<ValueId>>) {
        self.count += 1;
        let name = format!("n{}", self.count);
        let Ok(op) = Op::from_parts(op_name, &self::attrs(attrs), &name) else {
            return;
        };
        let n_outputs = 1;
        let Ok(types) = self.graph.infer_node(&name, &op, &inputs, n_outputs) else {
            return;
        };
        let Some(shape) = types[0].known_shape() else {
            return;
        };
        let elements = shape.iter().product::<usize>();
        if elements == 0 || elements > MAX_ELEMENTS || types[0].dtype != DType::F32 {
            return;
        }
        let outputs = types
            .into_iter()
            .enumerate()
            .map(|(i, ty)| (format!("{name}_{i}"), ty))
            .collect();
        if let Ok(ids) = self.graph.add_node_typed(name, op, inputs, outputs) {
            self.pool.push((ids[0], shape));
        }
    }

    fn step(&mut self, step: &Step) {
        match step {
            Step::Conv {
                x,
                window,
                group,
                out_per_group,
                bias,
            } => {
                let (x, shape) = self.pick(*x);
                if shape.len() != 4 {
                    return;
                }
                let c = shape[1];
                let mut group = 1 + *group as usize % c;
                if c % group != 0 {
                    group = 1;
                }
                let per_group = match *out_per_group % 6 {
                    4 => 8,
                    5 => 16,
                    p => 1 + p as usize % 3,
                };
                let m = group * per_group;
                // Up to 8 taps: stride-2 kernels of 3 to 8 run over their input's phases.
                let mut a = window_attrs(window, 8);
                let kernel = match &a[0].1 {
                    Attr::Ints(k) => k.iter().map(|&d| d as usize).collect::<Vec<_>>(),
                    _ => return,
                };
                a.push(("group", Attr::Int(group as i64)));
                let Some(w) = self.weights(vec![m, c / group, kernel[0], kernel[1]]) else {
                    return;
                };
                let b = if *bias { self.weights(vec![m]) } else { None };
                self.node("conv", a, vec![Some(x), Some(w), b]);
            }
            Step::Pool {
                x,
                window,
                max,
                ceil,
                include_pad,
            } => {
                let (x, _) = self.pick(*x);
                let mut a = window_attrs(window, 3);
                a.push(("ceil_mode", Attr::Int(*ceil as i64)));
                if *max {
                    self.node("max_pool", a, vec![Some(x)]);
                } else {
                    a.push(("count_include_pad", Attr::Int(*include_pad as i64)));
                    self.node("average_pool", a, vec![Some(x)]);
                }
            }
            Step::GlobalPool { x, max } => {
                let (x, _) = self.pick(*x);
                let op = if *max {
                    "global_max_pool"
                } else {
                    "global_average_pool"
                };
                self.node(op, vec![], vec![Some(x)]);
            }
            Step::Relu(x) => {
                let (x, _) = self.pick(*x);
                self.node("relu", vec![], vec![Some(x)]);
            }
            Step::Sigmoid(x) => {
                let (x, _) = self.pick(*x);
                self.node("sigmoid", vec![], vec![Some(x)]);
            }
            Step::Clip { x, min, max } => {
                let (x, _) = self.pick(*x);
                let min = min.and_then(|v| self.constant(Tensor::scalar_f32(v as f32 / 16.0)));
                let max = max.and_then(|v| self.constant(Tensor::scalar_f32(v as f32 / 16.0)));
                self.node("clip", vec![], vec![Some(x), min, max]);
            }
            Step::Binary { a, b, mul } => {
                let (a, _) = self.pick(*a);
                let (b, _) = self.pick(*b);
                self.node(
                    if *mul { "mul" } else { "add" },
                    vec![],
                    vec![Some(a), Some(b)],
                );
            }
            Step::BinaryConst {
                a,
                ones,
                drop,
                mul,
                swap,
            } => {
                let (a, shape) = self.pick(*a);
                let drop = *drop as usize % (shape.len() + 1);
                let c_shape: Vec<usize> = shape
                    .iter()
                    .enumerate()
                    .skip(drop)
                    .map(|(i, &d)| if ones & (1 << i) != 0 { 1 } else { d })
                    .collect();
                let Some(c) = self.weights(c_shape) else {
                    return;
                };
                let inputs = if *swap {
                    vec![Some(c), Some(a)]
                } else {
                    vec![Some(a), Some(c)]
                };
                self.node(if *mul { "mul" } else { "add" }, vec![], inputs);
            }
            Step::Concat { a, b, axis } => {
                let (a, _) = self.pick(*a);
                let (b, _) = self.pick(*b);
                let axis = Attr::Int(*axis as i64 % 5);
                self.node("concat", vec![("axis", axis)], vec![Some(a), Some(b)]);
            }
            Step::Reshape { x, keep } => {
                let (x, shape) = self.pick(*x);
                let keep = *keep as usize % shape.len().max(1);
                let mut dims = vec![0i64; keep];
                dims.push(-1);
                let Some(s) = self.constant(Tensor::vector_i64(dims)) else {
                    return;
                };
                self.node("reshape", vec![], vec![Some(x), Some(s)]);
            }
            Step::Flatten { x, axis } => {
                let (x, _) = self.pick(*x);
                let axis = Attr::Int(*axis as i64 % 5);
                self.node("flatten", vec![("axis", axis)], vec![Some(x)]);
            }
            Step::Gemm {
                a,
                n,
                trans_a,
                trans_b,
                c_kind,
                alpha,
                beta,
            } => {
                let (a, shape) = self.pick(*a);
                if shape.len() != 2 {
                    return;
                }
                let (m, k) = if *trans_a {
                    (shape[1], shape[0])
                } else {
                    (shape[0], shape[1])
                };
                let n = 1 + *n as usize % 8;
                let b_shape = if *trans_b { vec![n, k] } else { vec![k, n] };
                let Some(b) = self.weights(b_shape) else {
                    return;
                };
                let c = match c_kind % 5 {
                    0 => None,
                    1 => self.weights(vec![]),
                    2 => self.weights(vec![n]),
                    3 => self.weights(vec![m, 1]),
                    _ => self.weights(vec![m, n]),
                };
                let a_attrs = vec![
                    ("alpha", Attr::Float(*alpha as f32 / 32.0)),
                    ("beta", Attr::Float(*beta as f32 / 32.0)),
                    ("transA", Attr::Int(*trans_a as i64)),
                    ("transB", Attr::Int(*trans_b as i64)),
                ];
                self.node("gemm", a_attrs, vec![Some(a), Some(b), c]);
            }
        }
    }
}

/// The tolerance of `tests/jit_props.rs`: relative to `scale` (the element itself, or the
/// output's largest magnitude for Winograd).
fn close(x: f64, y: f64, scale: f64) -> bool {
    (x - y).abs() <= 1e-5 + 1e-4 * scale || (x.is_nan() && y.is_nan()) || x == y
}

fuzz_target!(|case: Case| {
    let shape = vec![
        1 + case.shape[0] as usize % 2,
        1 + case.shape[1] as usize % 4,
        1 + case.shape[2] as usize % 8,
        1 + case.shape[3] as usize % 8,
    ];
    let mut graph = Graph::new("fuzz");
    let Ok(x) = graph.add_input("x", TensorType::known(DType::F32, &shape)) else {
        return;
    };
    let mut b = Builder {
        graph,
        pool: vec![(x, shape.clone())],
        seed: u64::from(case.seed) * 1000,
        count: 0,
    };
    for step in case.steps.iter().take(MAX_STEPS) {
        b.step(step);
    }
    if b.pool.len() < 2 {
        return;
    }
    let last = b.pool[b.pool.len() - 1].0;
    let extra = b.pool[1 + case.extra_output as usize % (b.pool.len() - 1)].0;
    let mut outputs = vec![last];
    if extra != last {
        outputs.push(extra);
    }
    b.graph.set_outputs(outputs);
    let model = match Model::from_graph(b.graph) {
        Ok(m) => m,
        Err(e) => panic!("a graph built from inferred types fails to verify: {e}"),
    };
    let Ok(input) = tensor_gen::normal(shape, u64::from(case.seed), 0.0, 1.0) else {
        return;
    };
    let reference = match model.interpret(&[("x", input.clone())]) {
        Ok(r) => r,
        Err(e) => panic!("the interpreter fails: {e}"),
    };
    let compiler = Compiler::new()
        .threads(if case.threads2 { 2 } else { 1 })
        .kernel_cache(false)
        .optimize(case.optimize)
        .fusion(case.fusion)
        .winograd(match case.winograd % 4 {
            0 => Winograd::Off,
            1 => Winograd::Auto,
            2 => Winograd::F4x4,
            _ => Winograd::F7x7,
        });
    let jit = match compiler
        .compile(&model)
        .and_then(|c| c.run(&[("x", input)]))
    {
        Ok(j) => j,
        Err(e) => panic!("the JIT fails where the interpreter runs: {e}"),
    };
    assert_eq!(jit.len(), reference.len());
    for ((name, a), (_, e)) in jit.iter().zip(&reference) {
        assert_eq!(a.shape(), e.shape(), "output {name}");
        let expected = e.to_f64_vec();
        let largest = expected
            .iter()
            .filter(|y| y.is_finite())
            .fold(0f64, |m, y| m.max(y.abs()));
        for (i, (x, y)) in a.to_f64_vec().iter().zip(expected).enumerate() {
            let scale = if case.winograd % 4 != 0 {
                largest.max(y.abs())
            } else {
                y.abs()
            };
            assert!(
                close(*x, y, scale),
                "output {name} element {i}: jit {x} vs interpreter {y}"
            );
        }
    }
});
