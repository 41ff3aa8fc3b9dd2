//! Test support: a direct evaluator of loop-nest kernels (exact `std` math, no JIT) and a
//! checker that runs a node's kernels on given inputs and compares them with the
//! reference interpreter. It tests what the lowerings compute, independently of the code
//! generator.

use crate::graph::op::Op;
use crate::graph::{ConstInit, Graph, TensorType};
use crate::lower::Arg;
use crate::lower::ir::{BinOp, BufferKind, CmpOp, Expr, Kernel, Stmt, UnOp};
use crate::model::Model;
use crate::runtime::Compiler;
use crate::tensor::{DType, Tensor, TensorData};

#[derive(Clone, Copy, Debug)]
enum Value {
    I(i64),
    F(f32),
    V([f32; 4]),
    B(bool),
    BV([bool; 4]),
}

/// A buffer's storage during evaluation.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Data {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

struct Eval<'k> {
    kernel: &'k Kernel,
    bufs: Vec<Data>,
    vars: Vec<i64>,
    locals: Vec<Option<Value>>,
}

fn lanes(v: Value) -> [f32; 4] {
    match v {
        Value::F(x) => [x; 4],
        Value::V(x) => x,
        other => panic!("not a float: {other:?}"),
    }
}

fn blanes(v: Value) -> [bool; 4] {
    match v {
        Value::B(x) => [x; 4],
        Value::BV(x) => x,
        other => panic!("not a bool: {other:?}"),
    }
}

/// The error function, from its power series in `f64` (erf is 1 to `f32` precision
/// beyond 4).
fn erf(x: f32) -> f32 {
    let x = f64::from(x);
    if x.abs() >= 4.0 {
        return x.signum() as f32;
    }
    let mut term = x;
    let mut sum = x;
    let x2 = x * x;
    for n in 1..200 {
        term *= 2.0 * x2 / (2.0 * f64::from(n) + 1.0);
        sum += term;
        if term.abs() < 1e-17 * sum.abs() {
            break;
        }
    }
    (2.0 / std::f64::consts::PI.sqrt() * (-x2).exp() * sum) as f32
}

fn float_un(op: UnOp, x: f32) -> f32 {
    match op {
        UnOp::Neg => -x,
        UnOp::Abs => x.abs(),
        UnOp::Sqrt => x.sqrt(),
        UnOp::Floor => x.floor(),
        UnOp::Ceil => x.ceil(),
        UnOp::Round => x.round_ties_even(),
        UnOp::Exp => x.exp(),
        UnOp::Tanh => x.tanh(),
        UnOp::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        UnOp::Erf => erf(x),
        UnOp::ToF32 | UnOp::ToI64 => panic!("conversion on a float lane"),
    }
}

fn float_bin(op: BinOp, a: f32, b: f32) -> f32 {
    match op {
        BinOp::Add => a + b,
        BinOp::Sub => a - b,
        BinOp::Mul => a * b,
        BinOp::Div => a / b,
        BinOp::Min => {
            if a < b {
                a
            } else {
                b
            }
        }
        BinOp::Max => {
            if a > b {
                a
            } else {
                b
            }
        }
        BinOp::Pow => f64::from(a).powf(f64::from(b)) as f32,
    }
}

fn cmp<T: PartialOrd + PartialEq>(op: CmpOp, a: T, b: T) -> bool {
    match op {
        CmpOp::Lt => a < b,
        CmpOp::Le => a <= b,
        CmpOp::Gt => a > b,
        CmpOp::Ge => a >= b,
        CmpOp::Eq => a == b,
        CmpOp::Ne => a != b,
    }
}

impl Eval<'_> {
    fn int(&mut self, e: &Expr) -> i64 {
        match self.expr(e) {
            Value::I(v) => v,
            other => panic!("not an int: {other:?}"),
        }
    }

    fn expr(&mut self, e: &Expr) -> Value {
        match e {
            Expr::Int(v) => Value::I(*v),
            Expr::Float(v) => Value::F(*v),
            Expr::Var(v) => Value::I(self.vars[v.0 as usize]),
            Expr::Local(l) => self.locals[l.0 as usize].expect("local read before it is set"),
            Expr::Load { buf, index, lanes } => {
                let i = self.int(index);
                let i = usize::try_from(i).expect("negative index");
                match &self.bufs[buf.0 as usize] {
                    Data::F32(d) if *lanes == 4 => Value::V([d[i], d[i + 1], d[i + 2], d[i + 3]]),
                    Data::F32(d) => Value::F(d[i]),
                    Data::I64(d) => Value::I(d[i]),
                }
            }
            Expr::Unary(op, a) => match (op, self.expr(a)) {
                (UnOp::ToF32, Value::I(v)) => Value::F(v as f32),
                (UnOp::ToI64, Value::F(v)) => Value::I(v as i64),
                (UnOp::Neg, Value::I(v)) => Value::I(v.wrapping_neg()),
                (UnOp::Abs, Value::I(v)) => Value::I(v.wrapping_abs()),
                (op, Value::F(v)) => Value::F(float_un(*op, v)),
                (op, Value::V(v)) => Value::V(v.map(|x| float_un(*op, x))),
                (op, v) => panic!("{op:?} of {v:?}"),
            },
            Expr::Binary(op, a, b) => match (self.expr(a), self.expr(b)) {
                (Value::I(x), Value::I(y)) => Value::I(match op {
                    BinOp::Add => x.wrapping_add(y),
                    BinOp::Sub => x.wrapping_sub(y),
                    BinOp::Mul => x.wrapping_mul(y),
                    BinOp::Div => x.wrapping_div(y),
                    BinOp::Min => x.min(y),
                    BinOp::Max => x.max(y),
                    BinOp::Pow => panic!("integer pow"),
                }),
                (Value::F(x), Value::F(y)) => Value::F(float_bin(*op, x, y)),
                (x, y) => {
                    let (x, y) = (lanes(x), lanes(y));
                    Value::V(std::array::from_fn(|i| float_bin(*op, x[i], y[i])))
                }
            },
            Expr::Fma(a, b, c) => match (self.expr(a), self.expr(b), self.expr(c)) {
                (Value::F(x), Value::F(y), Value::F(z)) => Value::F(x.mul_add(y, z)),
                (x, y, z) => {
                    let (x, y, z) = (lanes(x), lanes(y), lanes(z));
                    Value::V(std::array::from_fn(|i| x[i].mul_add(y[i], z[i])))
                }
            },
            Expr::Cmp(op, a, b) => match (self.expr(a), self.expr(b)) {
                (Value::I(x), Value::I(y)) => Value::B(cmp(*op, x, y)),
                (Value::F(x), Value::F(y)) => Value::B(cmp(*op, x, y)),
                (x, y) => {
                    let (x, y) = (lanes(x), lanes(y));
                    Value::BV(std::array::from_fn(|i| cmp(*op, x[i], y[i])))
                }
            },
            Expr::Select(c, a, b) => match (self.expr(c), self.expr(a), self.expr(b)) {
                (Value::B(c), a, b) if !matches!((a, b), (Value::V(_), _) | (_, Value::V(_))) => {
                    if c {
                        a
                    } else {
                        b
                    }
                }
                (c, a, b) => {
                    let (c, a, b) = (blanes(c), lanes(a), lanes(b));
                    Value::V(std::array::from_fn(|i| if c[i] { a[i] } else { b[i] }))
                }
            },
            Expr::Clamp(a, lo, hi) => Value::I(self.int(a).clamp(*lo, *hi)),
            Expr::Splat(a) => Value::V(lanes(self.expr(a))),
            Expr::Splat8(_) | Expr::Half(..) => {
                unimplemented!("the elementwise test interpreter models 4-lane vectors only")
            }
            Expr::ReduceAdd(a) => {
                let v = lanes(self.expr(a));
                Value::F(((v[0] + v[1]) + v[2]) + v[3])
            }
            Expr::ReduceMax(a) => {
                let v = lanes(self.expr(a));
                Value::F(
                    v.iter()
                        .copied()
                        .fold(f32::NEG_INFINITY, |m, x| float_bin(BinOp::Max, x, m)),
                )
            }
            Expr::Shuffle(a, b, picks) => {
                let (a, b) = (lanes(self.expr(a)), lanes(self.expr(b)));
                Value::V(std::array::from_fn(|i| {
                    let p = picks[i] as usize;
                    if p < 4 { a[p] } else { b[p - 4] }
                }))
            }
        }
    }

    fn stmts(&mut self, stmts: &[Stmt]) {
        for s in stmts {
            match s {
                Stmt::Loop(l) => {
                    let mut v = l.start;
                    while v < l.end {
                        self.vars[l.var.0 as usize] = v;
                        self.stmts(&l.body);
                        v += l.step;
                    }
                }
                Stmt::Store { buf, index, value } => {
                    let i = usize::try_from(self.int(index)).expect("negative index");
                    let v = self.expr(value);
                    match (&mut self.bufs[buf.0 as usize], v) {
                        (Data::F32(d), Value::F(x)) => d[i] = x,
                        (Data::F32(d), Value::V(x)) => d[i..i + 4].copy_from_slice(&x),
                        (Data::I64(d), Value::I(x)) => d[i] = x,
                        (_, v) => panic!("store of {v:?}"),
                    }
                }
                Stmt::Declare { local, init, .. } | Stmt::Assign { local, value: init } => {
                    let v = self.expr(init);
                    self.locals[local.0 as usize] = Some(v);
                }
                Stmt::If {
                    cond,
                    then,
                    otherwise,
                } => match self.expr(cond) {
                    Value::B(true) => self.stmts(then),
                    Value::B(false) => self.stmts(otherwise),
                    v => panic!("if on {v:?}"),
                },
            }
        }
    }
}

fn tensor_data(t: &Tensor) -> Data {
    match t.data() {
        TensorData::F32(v) => Data::F32(v.clone()),
        TensorData::I64(v) => Data::I64(v.clone()),
    }
}

/// Runs a kernel on buffers (bound in order); returns the buffers afterwards.
pub(crate) fn run_kernel(kernel: &Kernel, bufs: Vec<Data>) -> Vec<Data> {
    let mut e = Eval {
        kernel,
        bufs,
        vars: vec![0; kernel.vars as usize],
        locals: vec![None; kernel.locals as usize],
    };
    for (b, buf) in e.kernel.buffers.iter().zip(&e.bufs) {
        let len = match buf {
            Data::F32(v) => v.len(),
            Data::I64(v) => v.len(),
        };
        assert_eq!(len, b.len, "buffer {} length", b.name);
    }
    let body = e.kernel.body.clone();
    e.stmts(&body);
    e.bufs
}

/// Lowers `op` applied to `inputs` (a tensor and whether it is a compile-time constant),
/// runs the kernels with the evaluator and returns the outputs and the interpreter's.
pub(crate) fn run_node(
    op: &Op,
    inputs: &[Option<(Tensor, bool)>],
) -> (Vec<Tensor>, Vec<Tensor>, String) {
    let inputs_ref: Vec<Option<(&Tensor, bool)>> = inputs
        .iter()
        .map(|i| i.as_ref().map(|(t, c)| (t, *c)))
        .collect();
    let (lowered, expected) = crate::lower::testing::lower_with_reference(op, &inputs_ref, 1);
    let mut outputs: Vec<Data> = expected
        .iter()
        .map(|t| match t.dtype() {
            DType::F32 => Data::F32(vec![f32::NAN; t.len()]),
            DType::I64 => Data::I64(vec![i64::MIN + 7; t.len()]),
        })
        .collect();
    let mut scratch: Vec<Data> = lowered
        .scratch
        .iter()
        .map(|&(d, n)| match d {
            DType::F32 => Data::F32(vec![f32::NAN; n]),
            DType::I64 => Data::I64(vec![i64::MIN + 7; n]),
        })
        .collect();
    let mut text = String::new();
    for lk in &lowered.kernels {
        text.push_str(&lk.kernel.to_string());
        let bufs: Vec<Data> = lk
            .args
            .iter()
            .zip(&lk.kernel.buffers)
            .map(|(a, b)| match (a, &b.kind) {
                (Arg::Input(i), _) => tensor_data(&inputs[*i].as_ref().expect("bound input").0),
                (Arg::Output(i), _) => outputs[*i].clone(),
                (Arg::Scratch(i), _) => scratch[*i].clone(),
                (Arg::Const, BufferKind::Const(t)) => tensor_data(t),
                (Arg::Const, _) => panic!("const binding of a non-constant buffer"),
                (Arg::Extra(i), _) => panic!("unfused kernel binds extra operand {i}"),
                (Arg::Prologue(i), _) => panic!("unfused kernel binds prologue input {i}"),
            })
            .collect();
        let after = run_kernel(&lk.kernel, bufs);
        for (a, d) in lk.args.iter().zip(after) {
            match a {
                Arg::Output(i) => outputs[*i] = d,
                Arg::Scratch(i) => scratch[*i] = d,
                _ => {}
            }
        }
    }
    let actual = outputs
        .into_iter()
        .zip(&expected)
        .map(|(d, t)| {
            let data = match d {
                Data::F32(v) => TensorData::F32(v),
                Data::I64(v) => TensorData::I64(v),
            };
            Tensor::new(t.shape().to_vec(), data).expect("output shape")
        })
        .collect();
    (actual, expected, text)
}

/// Builds a one-node model of `op` (run-time inputs are graph inputs, constants are graph
/// constants), compiles it with the JIT at 1 and 2 threads (which must agree bit for bit)
/// and returns its outputs.
pub(crate) fn run_jit(op: &Op, inputs: &[Option<(Tensor, bool)>]) -> Vec<Tensor> {
    let mut graph = Graph::new("t");
    let mut ids = Vec::new();
    let mut feeds = Vec::new();
    for (i, input) in inputs.iter().enumerate() {
        ids.push(input.as_ref().map(|(t, constant)| {
            let name = format!("in{i}");
            if *constant {
                graph
                    .add_const(name, t.clone(), ConstInit::Literal)
                    .expect("constant")
            } else {
                feeds.push((name.clone(), t.clone()));
                graph
                    .add_input(name, TensorType::known(t.dtype(), t.shape()))
                    .expect("input")
            }
        }));
    }
    let outputs = graph
        .add_node("n", op.clone(), ids, vec!["y".to_string()])
        .expect("node");
    graph.set_outputs(outputs);
    let model = Model::from_graph(graph).expect("model");
    let feeds: Vec<(&str, Tensor)> = feeds.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    let mut results = Vec::new();
    for threads in [1, 2] {
        let compiled = Compiler::new()
            .threads(threads)
            .compile(&model)
            .unwrap_or_else(|e| panic!("{e}"));
        let out = compiled.run(&feeds).unwrap_or_else(|e| panic!("{e}"));
        results.push(out.into_iter().map(|(_, t)| t).collect::<Vec<_>>());
    }
    let bits = |ts: &[Tensor]| -> Vec<Vec<u64>> {
        ts.iter()
            .map(|t| match t.data() {
                TensorData::F32(v) => v.iter().map(|x| u64::from(x.to_bits())).collect(),
                TensorData::I64(v) => v.iter().map(|&x| x as u64).collect(),
            })
            .collect()
    };
    assert_eq!(
        bits(&results[0]),
        bits(&results[1]),
        "1 and 2 threads disagree"
    );
    results.swap_remove(0)
}

fn compare(what: &str, actual: &[Tensor], expected: &[Tensor], text: &str) {
    for (a, e) in actual.iter().zip(expected) {
        assert_eq!(a.shape(), e.shape());
        match (a.data(), e.data()) {
            (TensorData::F32(x), TensorData::F32(y)) => {
                for (i, (p, q)) in x.iter().zip(y).enumerate() {
                    let ok = (p.is_nan() && q.is_nan())
                        || p == q
                        || (p - q).abs() <= 1e-5 + 1e-4 * q.abs();
                    assert!(ok, "{what}: element {i}: got {p}, expected {q}\n{text}");
                }
            }
            (TensorData::I64(x), TensorData::I64(y)) => assert_eq!(x, y, "{what}\n{text}"),
            _ => panic!("{what}: output dtype differs"),
        }
    }
}

/// Checks a node's kernels, run by the evaluator only, against the interpreter (for
/// operand types shape inference rejects, which never reach the JIT).
pub(crate) fn check_lowering(op: &Op, inputs: &[Option<(Tensor, bool)>]) -> String {
    let (actual, expected, text) = run_node(op, inputs);
    compare("evaluator", &actual, &expected, &text);
    text
}

/// Checks a node's kernels, run by the evaluator and by the JIT, against the interpreter
/// (1e-5 absolute + 1e-4 relative; NaN matches NaN; integers exactly). Returns the
/// kernels' text.
pub(crate) fn check(op: &Op, inputs: &[Option<(Tensor, bool)>]) -> String {
    let (actual, expected, text) = run_node(op, inputs);
    compare("evaluator", &actual, &expected, &text);
    let jit = run_jit(op, inputs);
    compare("jit", &jit, &expected, &text);
    text
}

/// Deterministic pseudo-random values in `[lo, hi)`.
pub(crate) fn values(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = (s >> 40) as f32 / (1u64 << 24) as f32;
            lo + (hi - lo) * u
        })
        .collect()
}

/// An `f32` tensor of pseudo-random values.
pub(crate) fn random(shape: &[usize], seed: u64) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_f32(shape.to_vec(), values(n, seed, -3.0, 3.0)).expect("shape")
}
