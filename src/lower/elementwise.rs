//! Lowering of the elementwise ops: unary activations, broadcasting binary arithmetic,
//! clip, batch_norm (inference form) and cast (see [`super`] for the conventions).
//!
//! Every op here is a *map*: each output element is a function of the elements of its
//! operands at the same (broadcast) position. [`map_kernel`] builds the loop nest once for
//! all of them:
//! - each operand gets numpy-broadcast strides over the output shape (0 along broadcast
//!   axes); axes of size 1 are dropped and neighbouring axes that every operand walks
//!   contiguously are merged, so `[1,64,56,56] + [1,64,56,56]` is one flat loop and
//!   `[1,64,56,56] * [64,1,1]` is a loop over 64 channels around a loop over 3136 pixels;
//! - the outermost remaining axis is the parallel loop;
//! - the innermost axis is vectorised with `f32x4` when every operand is `f32` and walks it
//!   contiguously or not at all (a broadcast operand is loaded once, before the inner loop,
//!   and splatted), with a scalar tail for the remainder; `i64` maps are scalar.
//!
//! Float results match the interpreter within rounding: it computes activations in `f64`;
//! the kernels use `f32` and the inline approximations of `exp`, `tanh`, `sigmoid`, `erf` and
//! `pow`. Batch norm with constant parameters is folded to `x * a + b` per channel
//! (`a = scale / sqrt(var + eps)`, `b = bias - mean * a`, computed in `f64`). NaN behaves as
//! in the interpreter (relu, clip and the hard activations keep it).
//!
//! Integer maps follow the interpreter's wrapping arithmetic; `i64` pow with an `i64` (or a
//! whole `f32`) exponent is square-and-multiply, exact where the interpreter's `f64` is.
//! Run-time behaviour that the interpreter reports as an error cannot be reported by a
//! kernel; the kernels produce a defined value instead and never trap:
//! - `i64` division is compiled only for a constant, non-zero divisor (the loop IR's
//!   integer division takes constant divisors); any other divisor is `unsupported`;
//! - `i64` pow of 0 to a negative power gives 0 (the interpreter reports an error);
//! - `i64` pow with an `f32` exponent that is not a whole number goes through `f32`
//!   (rounding the result to the nearest integer when it is within 1e-6 of one, so exact
//!   roots such as `4 ^ 0.5` stay exact), then truncates; the interpreter uses `f64`;
//! - cast of NaN or out-of-range floats to `i64` saturates (NaN gives 0) where the
//!   interpreter reports an error.

use std::sync::Arc;

use super::epilogue::binary_f32;
use super::ir::{BinOp, CmpOp, UnOp};
use super::{
    Arg, BufferKind, Epilogue, Expr, KernelBuilder, LoopKind, Lowered, LoweredKernel, NodeInfo,
    Operand, Ty,
};
use crate::error::{Error, Result};
use crate::graph::op::{Binary, Op, Unary};
use crate::tensor::{DType, Tensor};

/// Lowers a node of this family, applying `epi` to each output element before its store
/// (its extra operands become more operands of the map).
pub(super) fn lower(node: &NodeInfo<'_>, epi: &Epilogue) -> Result<Lowered> {
    if !epi.is_empty() && output(node, 0)?.dtype != DType::F32 {
        return Err(Error::internal(format!(
            "node {} ({}): an epilogue needs an f32 output",
            node.name,
            node.op.name()
        )));
    }
    let kernel = match node.op {
        Op::Unary(op) => unary(node, *op, epi)?,
        Op::Binary(op) => binary(node, *op, epi)?,
        Op::Clip => clip(node, epi)?,
        Op::BatchNorm { epsilon } => batch_norm(node, *epsilon, epi)?,
        Op::Cast { to } => cast(node, *to, epi)?,
        other => {
            return Err(Error::internal(format!(
                "node {}: {} is not an elementwise op",
                node.name,
                other.name()
            )));
        }
    };
    Ok(Lowered {
        kernels: vec![kernel],
        scratch: Vec::new(),
    })
}

/// The node's output `i`.
pub(super) fn output<'n>(node: &'n NodeInfo<'_>, i: usize) -> Result<&'n Operand> {
    node.outputs.get(i).ok_or_else(|| {
        Error::internal(format!(
            "node {} ({}): output {i} missing at lowering",
            node.name,
            node.op.name()
        ))
    })
}

/// Where the data of a map operand comes from.
pub(super) enum Source {
    /// A buffer bound at run time.
    Arg(Arg),
    /// Data computed at compile time.
    Const(Arc<Tensor>),
}

/// One operand of a map kernel.
pub(super) struct MapInput {
    /// Buffer name for dumps.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Shape; it broadcasts (numpy rules) to the output shape.
    pub shape: Vec<usize>,
    /// Where its data comes from.
    pub source: Source,
}

impl MapInput {
    /// The node's input `i`, as it is.
    pub fn input(node: &NodeInfo<'_>, i: usize, name: &str) -> Result<MapInput> {
        let operand = node.input(i)?;
        Ok(MapInput {
            name: name.to_string(),
            dtype: operand.dtype,
            shape: operand.shape.clone(),
            source: Source::Arg(Arg::Input(i)),
        })
    }

    /// Constant data viewed with `shape` (which must have as many elements as the data).
    pub fn constant(name: &str, data: Tensor, shape: Vec<usize>) -> MapInput {
        MapInput {
            name: name.to_string(),
            dtype: data.dtype(),
            shape,
            source: Source::Const(Arc::new(data)),
        }
    }
}

/// The output of a map kernel.
pub(super) struct MapOutput<'a> {
    /// Buffer name for dumps.
    pub name: &'a str,
    /// Element type.
    pub dtype: DType,
    /// Shape.
    pub shape: &'a [usize],
    /// What the buffer is bound to.
    pub arg: Arg,
}

/// The element function of a map: given the operand values (all `f32x4` in the vector
/// loop; `f32` or `i64` by dtype in the scalar loops), emits any statements it needs and
/// returns the output value. Operand values are locals or splats, so they can be used more
/// than once.
pub(super) type ElementFn<'a> = dyn Fn(&mut KernelBuilder, &[Expr]) -> Expr + 'a;

/// Strides (in elements) of a row-major tensor of `shape` broadcast to `out`: 0 along
/// axes it broadcasts. `None` if it does not broadcast.
fn broadcast_strides(shape: &[usize], out: &[usize]) -> Option<Vec<i64>> {
    let pad = out.len().checked_sub(shape.len())?;
    let mut strides = vec![0i64; out.len()];
    let mut step = 1i64;
    for (i, &d) in shape.iter().enumerate().rev() {
        let o = out[pad + i];
        if d == o && d != 1 {
            strides[pad + i] = step;
        } else if d != 1 {
            return None;
        }
        step = step.checked_mul(i64::try_from(d).ok()?)?;
    }
    Some(strides)
}

/// One loop axis of a map: its extent and each buffer's stride along it.
#[derive(Clone, Debug, PartialEq)]
struct Axis {
    extent: i64,
    strides: Vec<i64>,
}

/// Drops axes of size 1 and merges neighbours every buffer walks as one (outer stride =
/// inner stride × inner extent). Returns at least one axis.
fn coalesce(extents: &[usize], strides: &[Vec<i64>]) -> Vec<Axis> {
    let mut axes: Vec<Axis> = Vec::new();
    for (d, &extent) in extents.iter().enumerate() {
        if extent == 1 {
            continue;
        }
        let axis = Axis {
            extent: extent as i64,
            strides: strides.iter().map(|s| s[d]).collect(),
        };
        match axes.last_mut() {
            Some(prev)
                if prev
                    .strides
                    .iter()
                    .zip(&axis.strides)
                    .all(|(&p, &q)| p == q * axis.extent) =>
            {
                prev.extent *= axis.extent;
                prev.strides = axis.strides;
            }
            _ => axes.push(axis),
        }
    }
    if axes.is_empty() {
        axes.push(Axis {
            extent: 1,
            strides: vec![0; strides.len()],
        });
    }
    axes
}

/// `base + var * stride`, skipping zero terms.
pub(super) fn offset(base: Expr, var: &Expr, stride: i64) -> Expr {
    if stride == 0 {
        base
    } else if base == Expr::Int(0) {
        var.clone().scale(stride)
    } else {
        base.add(var.clone().scale(stride))
    }
}

/// The scalar type of a dtype.
pub(super) fn scalar_ty(dtype: DType) -> Ty {
    match dtype {
        DType::F32 => Ty::F32,
        DType::I64 => Ty::I64,
    }
}

/// Everything the loop emission needs about a map.
struct MapPlan<'f> {
    /// Input buffers (the map's operands, then the epilogue's extras), then the output
    /// (last).
    bufs: Vec<super::ir::BufId>,
    dtypes: Vec<DType>,
    axes: Vec<Axis>,
    f: &'f ElementFn<'f>,
    /// Applied to `f`'s value before the store.
    epilogue: &'f Epilogue,
    /// Number of the map's own operands (the extras follow).
    operands: usize,
}

/// Builds a kernel computing `out[i] = f(inputs[i]...)` with broadcasting.
pub(super) fn map_kernel(
    kernel_name: &str,
    inputs: Vec<MapInput>,
    out: MapOutput<'_>,
    f: &ElementFn<'_>,
) -> Result<LoweredKernel> {
    fused_map(&Epilogue::empty(), kernel_name, inputs, out, f)
}

/// [`map_kernel`] followed by an epilogue: `out[i] = epi(f(inputs[i]...), extras[i]...)`,
/// the extras being more operands bound with [`Arg::Extra`].
pub(super) fn fused_map(
    epi: &Epilogue,
    kernel_name: &str,
    mut inputs: Vec<MapInput>,
    out: MapOutput<'_>,
    f: &ElementFn<'_>,
) -> Result<LoweredKernel> {
    let operands = inputs.len();
    if !epi.is_empty() && out.dtype != DType::F32 {
        return Err(Error::internal(format!(
            "kernel {kernel_name}: an epilogue needs an f32 value, the map computes {}",
            out.dtype
        )));
    }
    for (i, extra) in epi.extras.iter().enumerate() {
        inputs.push(MapInput {
            name: extra.name.clone(),
            dtype: DType::F32,
            shape: extra.shape.clone(),
            source: Source::Arg(Arg::Extra(i)),
        });
    }
    let mut k = KernelBuilder::new(kernel_name);
    let mut args = Vec::new();
    let mut bufs = Vec::new();
    let mut dtypes = Vec::new();
    let mut strides = Vec::new();
    for input in inputs {
        let s = broadcast_strides(&input.shape, out.shape).ok_or_else(|| {
            Error::internal(format!(
                "kernel {kernel_name}: operand {} of shape {:?} does not broadcast to {:?}",
                input.name, input.shape, out.shape
            ))
        })?;
        let len: usize = input.shape.iter().product();
        let (kind, arg) = match input.source {
            Source::Arg(a) => (BufferKind::Input, a),
            Source::Const(t) => {
                if t.len() != len || t.dtype() != input.dtype {
                    return Err(Error::internal(format!(
                        "kernel {kernel_name}: constant {} does not match shape {:?}",
                        input.name, input.shape
                    )));
                }
                (BufferKind::Const(t), Arg::Const)
            }
        };
        bufs.push(k.buffer(input.name, input.dtype, len, kind));
        args.push(arg);
        dtypes.push(input.dtype);
        strides.push(s);
    }
    let out_len: usize = out.shape.iter().product();
    bufs.push(k.buffer(out.name, out.dtype, out_len, BufferKind::Output));
    args.push(out.arg);
    dtypes.push(out.dtype);
    strides.push(broadcast_strides(out.shape, out.shape).unwrap_or_default());

    if out_len > 0 {
        let plan = MapPlan {
            bufs,
            dtypes,
            axes: coalesce(out.shape, &strides),
            f,
            epilogue: epi,
            operands,
        };
        let offsets = vec![Expr::Int(0); plan.bufs.len()];
        emit_axis(&mut k, &plan, 0, offsets);
    }
    Ok(LoweredKernel {
        kernel: k.finish(),
        args,
    })
}

/// Emits the loop over axis `level` (and everything inside it); `offsets` are each
/// buffer's element offset from the enclosing loops.
fn emit_axis(k: &mut KernelBuilder, plan: &MapPlan<'_>, level: usize, offsets: Vec<Expr>) {
    let axis = &plan.axes[level];
    if level + 1 < plan.axes.len() {
        let kind = if level == 0 {
            LoopKind::Parallel
        } else {
            LoopKind::Serial
        };
        k.for_loop(0, axis.extent, 1, kind, |k, v| {
            let inner: Vec<Expr> = offsets
                .iter()
                .zip(&axis.strides)
                .map(|(o, &s)| offset(o.clone(), &v, s))
                .collect();
            emit_axis(k, plan, level + 1, inner);
        });
    } else {
        emit_inner(k, plan, level, &offsets);
    }
}

/// Emits the innermost axis: a vector loop and a scalar tail, or a scalar loop.
fn emit_inner(k: &mut KernelBuilder, plan: &MapPlan<'_>, level: usize, offsets: &[Expr]) {
    let axis = &plan.axes[level];
    let n_in = plan.bufs.len() - 1;
    let top = level == 0;
    // Operands that do not move along this axis are read once per inner loop (hoisted into
    // a local when there is an enclosing loop; the first top-level statement must be the
    // parallel loop).
    let fixed: Vec<Option<Expr>> = (0..n_in)
        .map(|i| {
            (axis.strides[i] == 0).then(|| {
                let load = Expr::load(plan.bufs[i], offsets[i].clone());
                if top {
                    load
                } else {
                    Expr::Local(k.declare(scalar_ty(plan.dtypes[i]), load))
                }
            })
        })
        .collect();
    let vectorise = axis.extent >= 4
        && plan.dtypes.iter().all(|&d| d == DType::F32)
        && axis.strides.iter().all(|&s| s == 0 || s == 1);
    let out = n_in;
    let scalar_body = |k: &mut KernelBuilder, j: Expr| {
        let values: Vec<Expr> = (0..n_in)
            .map(|i| match &fixed[i] {
                Some(e) => e.clone(),
                None => {
                    let load = Expr::load(
                        plan.bufs[i],
                        offset(offsets[i].clone(), &j, axis.strides[i]),
                    );
                    Expr::Local(k.declare(scalar_ty(plan.dtypes[i]), load))
                }
            })
            .collect();
        let y = (plan.f)(k, &values[..plan.operands]);
        let y = plan.epilogue.apply(k, y, &values[plan.operands..], 1);
        k.store(
            plan.bufs[out],
            offset(offsets[out].clone(), &j, axis.strides[out]),
            y,
        );
    };
    let kind = if top {
        LoopKind::Parallel
    } else {
        LoopKind::Serial
    };
    if vectorise {
        let main = axis.extent / 4 * 4;
        k.for_loop(0, main, 4, kind, |k, j| {
            let values: Vec<Expr> = (0..n_in)
                .map(|i| match &fixed[i] {
                    Some(e) => e.clone().splat(),
                    None => {
                        let load = Expr::load4(plan.bufs[i], offset(offsets[i].clone(), &j, 1));
                        Expr::Local(k.declare(Ty::F32x4, load))
                    }
                })
                .collect();
            let y = (plan.f)(k, &values[..plan.operands]);
            let y = plan.epilogue.apply(k, y, &values[plan.operands..], 4);
            k.store(plan.bufs[out], offset(offsets[out].clone(), &j, 1), y);
        });
        if main < axis.extent {
            k.for_loop(main, axis.extent, 1, LoopKind::Serial, scalar_body);
        }
    } else {
        k.for_loop(0, axis.extent, 1, kind, scalar_body);
    }
}

/// `max(0, min(1, v))`, keeping NaN (as `f64::clamp` in the interpreter).
fn clamp_unit(v: Expr) -> Expr {
    // max(a, b) is `a > b ? a : b` and min(a, b) is `a < b ? a : b`: a NaN `v` is kept.
    Expr::Float(1.0).min(Expr::Float(0.0).max(v))
}

/// The value of an `f32` activation of `x`.
pub(super) fn activation(op: Unary, x: Expr) -> Expr {
    let zero = || Expr::Float(0.0);
    match op {
        // `0 > x ? 0 : x`: NaN stays NaN, as in the interpreter.
        Unary::Relu => zero().max(x),
        Unary::LeakyRelu { alpha } => x
            .clone()
            .cmp(CmpOp::Lt, zero())
            .select(x.clone().mul(Expr::Float(alpha)), x),
        Unary::Sigmoid => x.unary(UnOp::Sigmoid),
        Unary::HardSigmoid { alpha, beta } => {
            clamp_unit(x.fma(Expr::Float(alpha), Expr::Float(beta)))
        }
        Unary::HardSwish => {
            let gate = clamp_unit(x.clone().fma(Expr::Float(1.0 / 6.0), Expr::Float(0.5)));
            x.mul(gate)
        }
        Unary::Tanh => x.unary(UnOp::Tanh),
        Unary::Gelu { tanh: false } => {
            // x * (1 + erf(x / sqrt 2)) / 2
            let erf = x
                .clone()
                .mul(Expr::Float(std::f32::consts::FRAC_1_SQRT_2))
                .unary(UnOp::Erf);
            x.mul(erf.fma(Expr::Float(0.5), Expr::Float(0.5)))
        }
        Unary::Gelu { tanh: true } => {
            // (1 + tanh y) / 2 = sigmoid(2y), y = sqrt(2/pi) (x + 0.044715 x^3).
            let c1 = 2.0 * (2.0 / std::f64::consts::PI).sqrt();
            let c3 = c1 * 0.044715;
            let x2 = x.clone().mul(x.clone());
            let two_y = x
                .clone()
                .mul(x2.fma(Expr::Float(c3 as f32), Expr::Float(c1 as f32)));
            x.mul(two_y.unary(UnOp::Sigmoid))
        }
        Unary::Erf => x.unary(UnOp::Erf),
        Unary::Exp => x.unary(UnOp::Exp),
        Unary::Sqrt => x.unary(UnOp::Sqrt),
    }
}

/// The output of a single-output map node, bound to `Arg::Output(0)`.
fn node_output<'n>(node: &'n NodeInfo<'_>, dtype: DType) -> Result<MapOutput<'n>> {
    let y = output(node, 0)?;
    if y.dtype != dtype {
        return Err(Error::internal(format!(
            "node {} ({}): output is {} but the kernel computes {dtype}",
            node.name,
            node.op.name(),
            y.dtype
        )));
    }
    Ok(MapOutput {
        name: "y",
        dtype,
        shape: &y.shape,
        arg: Arg::Output(0),
    })
}

/// An operand that must be `f32`.
fn require_f32(node: &NodeInfo<'_>, i: usize) -> Result<()> {
    let x = node.input(i)?;
    if x.dtype == DType::F32 {
        Ok(())
    } else {
        Err(node.unsupported(&format!("input {i} is {}, expected f32", x.dtype)))
    }
}

fn unary(node: &NodeInfo<'_>, op: Unary, epi: &Epilogue) -> Result<LoweredKernel> {
    require_f32(node, 0)?;
    let inputs = vec![MapInput::input(node, 0, "x")?];
    fused_map(
        epi,
        node.name,
        inputs,
        node_output(node, DType::F32)?,
        &|_, v| activation(op, v[0].clone()),
    )
}

fn binary(node: &NodeInfo<'_>, op: Binary, epi: &Epilogue) -> Result<LoweredKernel> {
    let (a, b) = (node.input(0)?, node.input(1)?);
    if op == Binary::PRelu && output(node, 0)?.shape != a.shape {
        return Err(node.unsupported("the slope must broadcast to the shape of x"));
    }
    let both = || -> Result<Vec<MapInput>> {
        Ok(vec![
            MapInput::input(node, 0, "a")?,
            MapInput::input(node, 1, "b")?,
        ])
    };
    match (a.dtype, b.dtype) {
        (DType::F32, DType::F32) => {
            let f =
                move |_: &mut KernelBuilder, v: &[Expr]| binary_f32(op, v[0].clone(), v[1].clone());
            fused_map(epi, node.name, both()?, node_output(node, DType::F32)?, &f)
        }
        (DType::I64, DType::I64) => int_binary(node, op),
        (DType::F32, DType::I64) if op == Binary::Pow => {
            let f = |_: &mut KernelBuilder, v: &[Expr]| {
                Expr::Binary(
                    BinOp::Pow,
                    Box::new(v[0].clone()),
                    Box::new(v[1].clone().unary(UnOp::ToF32)),
                )
            };
            fused_map(epi, node.name, both()?, node_output(node, DType::F32)?, &f)
        }
        (DType::I64, DType::F32) if op == Binary::Pow => {
            let f =
                |k: &mut KernelBuilder, v: &[Expr]| int_pow_float(k, v[0].clone(), v[1].clone());
            map_kernel(node.name, both()?, node_output(node, DType::I64)?, &f)
        }
        (p, q) => Err(node.unsupported(&format!("operands of types {p} and {q}"))),
    }
}

/// The single value of a constant operand whose elements are all equal.
fn uniform_int(operand: &Operand) -> Option<i64> {
    let values = operand.value.as_ref()?.as_i64()?;
    let first = *values.first()?;
    values.iter().all(|&v| v == first).then_some(first)
}

fn int_binary(node: &NodeInfo<'_>, op: Binary) -> Result<LoweredKernel> {
    let out = node_output(node, DType::I64)?;
    if op == Binary::Div {
        // The loop IR divides integers by non-zero constants only (a run-time zero would
        // trap); i64::MIN / -1 would trap too, so -1 is a (wrapping) negation.
        let divisor = match uniform_int(node.input(1)?) {
            Some(d) if d != 0 => d,
            _ => {
                return Err(node.unsupported(
                    "integer division by a divisor that is not one non-zero constant",
                ));
            }
        };
        let f = move |_: &mut KernelBuilder, v: &[Expr]| match divisor {
            1 => v[0].clone(),
            -1 => v[0].clone().unary(UnOp::Neg),
            d => v[0].clone().div(Expr::Int(d)),
        };
        return map_kernel(node.name, vec![MapInput::input(node, 0, "a")?], out, &f);
    }
    let f = move |k: &mut KernelBuilder, v: &[Expr]| {
        let (p, q) = (v[0].clone(), v[1].clone());
        match op {
            Binary::Add => p.add(q),
            Binary::Sub => p.sub(q),
            Binary::Mul => p.mul(q),
            Binary::Pow => int_pow(k, p, q),
            Binary::PRelu => p
                .clone()
                .cmp(CmpOp::Lt, Expr::Int(0))
                .select(q.mul(p.clone()), p),
            // Handled above.
            Binary::Div => p,
        }
    };
    let inputs = vec![
        MapInput::input(node, 0, "a")?,
        MapInput::input(node, 1, "b")?,
    ];
    map_kernel(node.name, inputs, out, &f)
}

/// `base ^ exponent` in wrapping `i64` arithmetic, as the interpreter: square-and-multiply
/// over the exponent's 63 value bits; a negative exponent gives the exact result truncated
/// toward zero (1 for base 1, ±1 for base -1, else 0; the interpreter's error for base 0
/// becomes 0). `base` and `exponent` must be cheap to repeat (locals or constants).
fn int_pow(k: &mut KernelBuilder, base: Expr, exponent: Expr) -> Expr {
    let e = k.declare(Ty::I64, exponent.clone());
    let result = k.declare(Ty::I64, Expr::Int(1));
    let square = k.declare(Ty::I64, base.clone());
    k.range(63, |k, _| {
        let half = k.declare(Ty::I64, Expr::Local(e).div(Expr::Int(2)));
        let bit = Expr::Local(e).sub(Expr::Local(half).mul(Expr::Int(2)));
        let times = Expr::Local(result).mul(Expr::Local(square));
        k.assign(
            result,
            bit.cmp(CmpOp::Eq, Expr::Int(1))
                .select(times, Expr::Local(result)),
        );
        k.assign(square, Expr::Local(square).mul(Expr::Local(square)));
        k.assign(e, Expr::Local(half));
    });
    let odd = exponent
        .clone()
        .sub(exponent.clone().div(Expr::Int(2)).mul(Expr::Int(2)))
        .cmp(CmpOp::Ne, Expr::Int(0));
    let minus_one = odd.select(Expr::Int(-1), Expr::Int(1));
    let negative = base.clone().cmp(CmpOp::Eq, Expr::Int(1)).select(
        Expr::Int(1),
        base.cmp(CmpOp::Eq, Expr::Int(-1))
            .select(minus_one, Expr::Int(0)),
    );
    exponent
        .cmp(CmpOp::Lt, Expr::Int(0))
        .select(negative, Expr::Local(result))
}

/// `i64 ^ f32` with an `i64` result: exact integer power for whole exponents, else the
/// `f32` power truncated toward zero (rounded to the nearest integer first when within
/// 1e-6 relative of one, so that exact roots survive the approximate `pow`).
fn int_pow_float(k: &mut KernelBuilder, base: Expr, exponent: Expr) -> Expr {
    let whole = exponent
        .clone()
        .cmp(CmpOp::Eq, exponent.clone().unary(UnOp::Floor));
    let int_exponent = Expr::Local(k.declare(Ty::I64, exponent.clone().unary(UnOp::ToI64)));
    let exact = int_pow(k, base.clone(), int_exponent);
    let power = Expr::Binary(
        BinOp::Pow,
        Box::new(base.unary(UnOp::ToF32)),
        Box::new(exponent),
    );
    let power = Expr::Local(k.declare(Ty::F32, power));
    let nearest = Expr::Local(k.declare(Ty::F32, power.clone().unary(UnOp::Round)));
    let close = power.clone().sub(nearest.clone()).unary(UnOp::Abs).cmp(
        CmpOp::Le,
        nearest.clone().unary(UnOp::Abs).mul(Expr::Float(1e-6)),
    );
    let fractional = close.select(nearest, power).unary(UnOp::ToI64);
    whole.select(exact, fractional)
}

/// A clip bound: a constant folded into the kernel, or a run-time scalar operand.
enum Bound {
    None,
    Const(Expr),
    Operand,
}

fn clip(node: &NodeInfo<'_>, epi: &Epilogue) -> Result<LoweredKernel> {
    let x = node.input(0)?;
    let mut inputs = vec![MapInput::input(node, 0, "x")?];
    let mut bound = |i: usize, name: &str| -> Result<Bound> {
        let Some(b) = node.optional(i) else {
            return Ok(Bound::None);
        };
        if b.dtype != x.dtype || b.len() != 1 {
            return Err(node.unsupported(&format!("{name} must be a single {} value", x.dtype)));
        }
        if let Some(t) = &b.value {
            let literal = match (t.as_f32(), t.as_i64()) {
                (Some(v), _) => v.first().map(|&v| Expr::Float(v)),
                (_, Some(v)) => v.first().map(|&v| Expr::Int(v)),
                _ => None,
            };
            if let Some(e) = literal {
                return Ok(Bound::Const(e));
            }
        }
        inputs.push(MapInput {
            name: name.to_string(),
            dtype: b.dtype,
            shape: Vec::new(),
            source: Source::Arg(Arg::Input(i)),
        });
        Ok(Bound::Operand)
    };
    let lo = bound(1, "min")?;
    let hi = bound(2, "max")?;
    let f = move |_: &mut KernelBuilder, v: &[Expr]| {
        let mut next = 1;
        let mut value = |b: &Bound| match b {
            Bound::None => None,
            Bound::Const(e) => Some(e.clone()),
            Bound::Operand => {
                next += 1;
                v.get(next - 1).cloned()
            }
        };
        let (lo, hi) = (value(&lo), value(&hi));
        // Raise to min, then lower to max (so min > max gives max): `v < lo ? lo : v` is
        // max(lo, v) and `v > hi ? hi : v` is min(hi, v); NaN is kept.
        let mut y = v[0].clone();
        if let Some(lo) = lo {
            y = lo.max(y);
        }
        if let Some(hi) = hi {
            y = hi.min(y);
        }
        y
    };
    fused_map(epi, node.name, inputs, node_output(node, x.dtype)?, &f)
}

fn batch_norm(node: &NodeInfo<'_>, epsilon: f32, epi: &Epilogue) -> Result<LoweredKernel> {
    require_f32(node, 0)?;
    let x = node.input(0)?;
    let Some(&c) = x.shape.get(1) else {
        return Err(node.unsupported("the input needs a batch and a channel axis"));
    };
    // Per-channel parameters broadcast along the axes after the channel axis.
    let mut param_shape = vec![c];
    param_shape.resize(x.shape.len() - 1, 1);
    let mut params = Vec::new();
    for i in 1..5 {
        let p = node.input(i)?;
        if p.dtype != DType::F32 || p.shape != [c] {
            return Err(node.unsupported(&format!("parameter {i} must be f32[{c}]")));
        }
        params.push(p.value.as_ref().and_then(|t| t.as_f32()));
    }
    let out = node_output(node, DType::F32)?;
    if let [Some(scale), Some(bias), Some(mean), Some(var)] = params[..] {
        // Folded at compile time: y = x * a + b, a = scale / sqrt(var + eps),
        // b = bias - mean * a.
        let mut a = Vec::with_capacity(c);
        let mut b = Vec::with_capacity(c);
        for ch in 0..c {
            let denom = (f64::from(var[ch]) + f64::from(epsilon)).sqrt();
            let ach = f64::from(scale[ch]) / denom;
            a.push(ach as f32);
            b.push((f64::from(bias[ch]) - f64::from(mean[ch]) * ach) as f32);
        }
        let inputs = vec![
            MapInput::input(node, 0, "x")?,
            MapInput::constant("a", Tensor::from_f32(vec![c], a)?, param_shape.clone()),
            MapInput::constant("b", Tensor::from_f32(vec![c], b)?, param_shape),
        ];
        let f = |_: &mut KernelBuilder, v: &[Expr]| v[0].clone().fma(v[1].clone(), v[2].clone());
        return fused_map(epi, node.name, inputs, out, &f);
    }
    // Run-time parameters: the interpreter's formula, (x - mean) / sqrt(var + eps) * scale
    // + bias (the parameters are loaded once per inner loop).
    let mut inputs = vec![MapInput::input(node, 0, "x")?];
    for (i, name) in [(1, "scale"), (2, "bias"), (3, "mean"), (4, "var")] {
        let mut p = MapInput::input(node, i, name)?;
        p.shape = param_shape.clone();
        inputs.push(p);
    }
    let f = move |_: &mut KernelBuilder, v: &[Expr]| {
        let denom = v[4].clone().add(Expr::Float(epsilon)).unary(UnOp::Sqrt);
        v[0].clone()
            .sub(v[3].clone())
            .div(denom)
            .fma(v[1].clone(), v[2].clone())
    };
    fused_map(epi, node.name, inputs, out, &f)
}

fn cast(node: &NodeInfo<'_>, to: DType, epi: &Epilogue) -> Result<LoweredKernel> {
    let from = node.input(0)?.dtype;
    let f = move |_: &mut KernelBuilder, v: &[Expr]| match (from, to) {
        (DType::I64, DType::F32) => v[0].clone().unary(UnOp::ToF32),
        (DType::F32, DType::I64) => v[0].clone().unary(UnOp::ToI64),
        _ => v[0].clone(),
    };
    fused_map(
        epi,
        node.name,
        vec![MapInput::input(node, 0, "x")?],
        node_output(node, to)?,
        &f,
    )
}

#[cfg(test)]
pub(super) mod testkit;

#[cfg(test)]
mod tests {
    use super::testkit::{check, random, run_node};
    use crate::graph::op::{Binary, Op, Unary};
    use crate::tensor::{DType, Tensor};

    fn rt(t: Tensor) -> Option<(Tensor, bool)> {
        Some((t, false))
    }

    fn ct(t: Tensor) -> Option<(Tensor, bool)> {
        Some((t, true))
    }

    #[test]
    fn activations_match_the_interpreter() {
        let ops = [
            Unary::Relu,
            Unary::LeakyRelu { alpha: 0.1 },
            Unary::Sigmoid,
            Unary::HardSigmoid {
                alpha: 0.2,
                beta: 0.5,
            },
            Unary::HardSwish,
            Unary::Tanh,
            Unary::Gelu { tanh: false },
            Unary::Gelu { tanh: true },
            Unary::Erf,
            Unary::Exp,
            Unary::Sqrt,
        ];
        for op in ops {
            for shape in [&[2, 3, 5][..], &[7], &[], &[1, 8], &[0, 3]] {
                check(&Op::Unary(op), &[rt(random(shape, 1))]);
            }
        }
    }

    #[test]
    fn relu_keeps_nan() {
        let x = Tensor::from_f32(vec![5], vec![f32::NAN, -1.0, 2.0, f32::NAN, 0.0]).unwrap();
        check(&Op::Unary(Unary::Relu), &[rt(x)]);
    }

    #[test]
    fn same_shape_maps_are_one_flat_vector_loop() {
        let text = check(
            &Op::Binary(Binary::Add),
            &[rt(random(&[2, 3, 5], 1)), rt(random(&[2, 3, 5], 2))],
        );
        assert!(text.contains("parallel for v0 in 0..28 step 4"), "{text}");
        assert!(text.contains("for v1 in 28..30"), "{text}");
    }

    #[test]
    fn binary_ops_broadcast_both_ways() {
        let shapes: [(&[usize], &[usize]); 8] = [
            (&[2, 3, 4, 5], &[5]),
            (&[2, 3, 4, 5], &[3, 1, 1]),
            (&[3, 1], &[1, 6]),
            (&[], &[2, 9]),
            (&[2, 9], &[1]),
            (&[1, 4, 1, 6], &[2, 1, 3, 1]),
            (&[4, 7], &[4, 7]),
            (&[2, 0, 3], &[3]),
        ];
        for op in [
            Binary::Add,
            Binary::Sub,
            Binary::Mul,
            Binary::Div,
            Binary::Pow,
        ] {
            for (i, (a, b)) in shapes.iter().enumerate() {
                let (x, y) = (random(a, i as u64), random(b, 100 + i as u64));
                check(&Op::Binary(op), &[rt(x.clone()), rt(y.clone())]);
                check(&Op::Binary(op), &[rt(y), ct(x)]);
            }
        }
    }

    #[test]
    fn channel_broadcast_hoists_the_operand() {
        let text = check(
            &Op::Binary(Binary::Mul),
            &[rt(random(&[1, 6, 3, 3], 1)), ct(random(&[6, 1, 1], 2))],
        );
        assert!(text.contains("parallel for v0 in 0..6 {"), "{text}");
        assert!(text.contains("splat(l0)"), "{text}");
    }

    #[test]
    fn prelu_broadcasts_the_slope() {
        check(
            &Op::Binary(Binary::PRelu),
            &[rt(random(&[2, 3, 4, 5], 1)), rt(random(&[3, 1, 1], 2))],
        );
        check(
            &Op::Binary(Binary::PRelu),
            &[rt(random(&[2, 3, 4, 5], 1)), rt(random(&[5], 2))],
        );
    }

    fn ints(shape: &[usize], v: &[i64]) -> Tensor {
        Tensor::from_i64(shape.to_vec(), v.to_vec()).unwrap()
    }

    #[test]
    fn integer_arithmetic_wraps_and_divides_by_constants() {
        let a = ints(&[5], &[7, -7, i64::MAX, i64::MIN, 0]);
        let b = ints(&[5], &[2, -3, 2, -1, 5]);
        for op in [Binary::Add, Binary::Sub, Binary::Mul, Binary::PRelu] {
            check(&Op::Binary(op), &[rt(a.clone()), rt(b.clone())]);
        }
        for d in [2, -2, 1, -1, 7] {
            check(
                &Op::Binary(Binary::Div),
                &[rt(a.clone()), ct(ints(&[], &[d]))],
            );
        }
        check(
            &Op::Binary(Binary::Div),
            &[rt(a.clone()), ct(ints(&[5], &[3; 5]))],
        );
    }

    #[test]
    fn integer_division_by_run_time_values_is_unsupported() {
        let a = ints(&[2], &[7, 8]);
        let op = Op::Binary(Binary::Div);
        let node = crate::lower::NodeInfo {
            name: "d",
            op: &op,
            inputs: vec![
                Some(crate::lower::Operand {
                    dtype: DType::I64,
                    shape: vec![2],
                    value: None,
                }),
                Some(crate::lower::Operand {
                    dtype: DType::I64,
                    shape: vec![2],
                    value: None,
                }),
            ],
            outputs: vec![crate::lower::Operand {
                dtype: DType::I64,
                shape: vec![2],
                value: None,
            }],
            options: Default::default(),
            blocked: Default::default(),
        };
        let err = crate::lower::lower_node(&node).unwrap_err().to_string();
        assert!(err.contains("cannot compile"), "{err}");
        let zero = ints(&[1], &[0]);
        let node = crate::lower::NodeInfo {
            inputs: vec![
                node.inputs[0].clone(),
                Some(crate::lower::Operand {
                    dtype: DType::I64,
                    shape: vec![1],
                    value: Some(std::sync::Arc::new(zero)),
                }),
            ],
            ..node
        };
        assert!(crate::lower::lower_node(&node).is_err());
        let _ = a;
    }

    #[test]
    fn integer_powers_are_exact() {
        let base = ints(&[8], &[1, 2, 3, -3, -1, 1, 2, 7]);
        let exp = ints(&[8], &[4, 5, 6, 3, -3, -5, 62, 22]);
        check(&Op::Binary(Binary::Pow), &[rt(base.clone()), rt(exp)]);
        let fexp =
            Tensor::from_f32(vec![8], vec![4.0, 5.0, 6.0, 3.0, -3.0, 0.5, 0.5, 10.0]).unwrap();
        check(&Op::Binary(Binary::Pow), &[rt(base), rt(fexp)]);
        let roots = ints(&[4], &[4, 9, 10, 1_000_000]);
        let half = Tensor::from_f32(vec![4], vec![0.5; 4]).unwrap();
        check(&Op::Binary(Binary::Pow), &[rt(roots), rt(half)]);
        let fbase = Tensor::from_f32(vec![4], vec![1.0, 2.0, -3.0, 0.5]).unwrap();
        check(
            &Op::Binary(Binary::Pow),
            &[rt(fbase), rt(ints(&[4], &[4, 5, 3, -2]))],
        );
    }

    #[test]
    fn clip_with_constant_run_time_and_absent_bounds() {
        let x = Tensor::from_f32(
            vec![2, 5],
            vec![-2.0, -0.5, 0.5, 2.0, f32::NAN, 1.0, -1.0, 0.0, 3.0, -3.0],
        )
        .unwrap();
        let lo = Tensor::scalar_f32(-1.0);
        let hi = Tensor::scalar_f32(1.0);
        for (l, h) in [(true, true), (false, true), (true, false), (false, false)] {
            let bound = |t: &Tensor, c: bool| Some((t.clone(), c));
            check(&Op::Clip, &[rt(x.clone()), bound(&lo, l), bound(&hi, h)]);
            check(&Op::Clip, &[rt(x.clone()), bound(&hi, l), bound(&lo, h)]);
            check(&Op::Clip, &[rt(x.clone()), None, bound(&hi, h)]);
            check(&Op::Clip, &[rt(x.clone()), bound(&lo, l), None]);
        }
        check(&Op::Clip, &[rt(x)]);
        let i = ints(&[3], &[-5, 0, 5]);
        check(
            &Op::Clip,
            &[rt(i.clone()), ct(ints(&[], &[-1])), rt(ints(&[1], &[2]))],
        );
        check(&Op::Clip, &[rt(i), None, ct(ints(&[1], &[2]))]);
    }

    #[test]
    fn batch_norm_folds_constant_parameters() {
        let params = |seed| {
            let var = Tensor::from_f32(vec![3], vec![0.5, 1.5, 2.0]).unwrap();
            [
                random(&[3], seed),
                random(&[3], seed + 1),
                random(&[3], seed + 2),
                var,
            ]
        };
        for shape in [&[2, 3, 4, 5][..], &[2, 3], &[1, 3, 7]] {
            let x = random(shape, 9);
            let op = Op::BatchNorm { epsilon: 1e-5 };
            let mut inputs = vec![rt(x.clone())];
            inputs.extend(params(3).map(ct));
            let text = check(&op, &inputs);
            assert!(text.contains("const"), "{text}");
            let mut inputs = vec![rt(x)];
            inputs.extend(params(3).map(rt));
            check(&op, &inputs);
        }
    }

    #[test]
    fn cast_converts_both_ways() {
        let x = Tensor::from_f32(vec![5], vec![-2.7, 0.5, 3.9, -0.0, 1e6]).unwrap();
        check(&Op::Cast { to: DType::I64 }, &[rt(x.clone())]);
        check(&Op::Cast { to: DType::F32 }, &[rt(x)]);
        let i = ints(&[3], &[-3, 16_777_217, 5]);
        check(&Op::Cast { to: DType::F32 }, &[rt(i.clone())]);
        check(&Op::Cast { to: DType::I64 }, &[rt(i)]);
    }

    #[test]
    fn kernels_print_readably() {
        let (_, _, text) = run_node(&Op::Unary(Unary::Relu), &[rt(random(&[1, 2, 3, 3], 1))]);
        assert!(text.contains("max(0.0, l0)"), "{text}");
    }
}
