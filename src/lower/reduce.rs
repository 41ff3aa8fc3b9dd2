//! Lowering of the reductions: softmax, reduce_mean, global_average_pool and
//! global_max_pool (see [`super`] for the conventions).
//!
//! Every reduction sums (or takes the maximum) in a fixed order that does not depend on
//! how the runtime splits the parallel loop: each output element is reduced by one loop
//! iteration, never across iterations.
//!
//! - **reduce_mean, global pools**: the input's axes are split into kept and reduced ones
//!   (size-1 axes dropped, neighbours of the same kind merged). Kept axes are the outer
//!   loops, the first one parallel. When the innermost axis is reduced (a global pool, a
//!   mean over H and W), it is summed with an `f32x4` accumulator plus a scalar one for the
//!   tail, combined at the end (lane order, then the tail); when the innermost axis is kept
//!   (a mean over channels), four neighbouring outputs are reduced together in one `f32x4`
//!   accumulator.
//! - **softmax**: three passes per row (maximum, `exp(x - max)` stored with its sum, scale by
//!   `1 / sum`). Along the last axis (and in the opset < 13 flattened form) a row is
//!   contiguous and is vectorised along itself; along another axis, four neighbouring rows
//!   (consecutive positions after the axis) are processed together in the lanes of one
//!   vector.
//!
//! The interpreter accumulates in `f64`; `f32` accumulation is within the tolerance of the
//! tests. Maxima skip NaN as the interpreter's `f32::max` fold does (`max(x, acc)` is
//! `x > acc ? x : acc`).

use super::conv::plus;
use super::elementwise::{MapInput, MapOutput, map_kernel, offset, output, scalar_ty};
use super::ir::{BufId, LocalId, UnOp};
use super::{Arg, BufferKind, Expr, KernelBuilder, LoopKind, Lowered, LoweredKernel, NodeInfo, Ty};
use crate::error::{Error, Result};
use crate::graph::op::Op;
use crate::tensor::DType;

/// Lowers a node of this family.
pub(super) fn lower(node: &NodeInfo<'_>) -> Result<Lowered> {
    let kernel = match node.op {
        Op::Softmax { axis, coerce_2d } => softmax(node, *axis, *coerce_2d)?,
        Op::ReduceMean {
            noop_with_empty_axes,
            ..
        } => reduce_mean(node, *noop_with_empty_axes)?,
        Op::GlobalAveragePool => global_pool(node, Reduction::Mean)?,
        Op::GlobalMaxPool => global_pool(node, Reduction::Max)?,
        other => {
            return Err(Error::internal(format!(
                "node {}: {} is not a reduction",
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

/// What a reduction computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reduction {
    /// The mean (sum times `1 / count`; `i64`: sum truncated-divided by count).
    Mean,
    /// The maximum, skipping NaN (`-inf` for no elements).
    Max,
}

/// One loop of a reduction: its extent and the input's and output's strides along it (the
/// output's is 0 for a reduced axis).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Nest {
    extent: i64,
    x_stride: i64,
    y_stride: i64,
}

/// The body of a [`nest`]: gets the input and output offsets and whether it is at the top
/// level of the kernel.
type NestBody<'a> = dyn FnMut(&mut KernelBuilder, (Expr, Expr), bool) + 'a;

/// Emits loops over `dims` (outermost first) around `body`, which gets the input and
/// output offsets and whether it is at the top level of the kernel (no loop around it).
/// With `top`, the first loop is the kernel's parallel loop.
fn nest(
    k: &mut KernelBuilder,
    dims: &[Nest],
    top: bool,
    offsets: (Expr, Expr),
    body: &mut NestBody<'_>,
) {
    let Some((first, rest)) = dims.split_first() else {
        body(k, offsets, top);
        return;
    };
    let kind = if top {
        LoopKind::Parallel
    } else {
        LoopKind::Serial
    };
    k.for_loop(0, first.extent, 1, kind, |k, v| {
        let inner = (
            offset(offsets.0, &v, first.x_stride),
            offset(offsets.1, &v, first.y_stride),
        );
        nest(k, rest, false, inner, body);
    });
}

/// The identity of a reduction, as a scalar.
fn identity(kind: Reduction, dtype: DType) -> Expr {
    match (kind, dtype) {
        (Reduction::Mean, DType::F32) => Expr::Float(0.0),
        (Reduction::Max, DType::F32) => Expr::Float(f32::NEG_INFINITY),
        (Reduction::Mean, DType::I64) => Expr::Int(0),
        (Reduction::Max, DType::I64) => Expr::Int(i64::MIN),
    }
}

/// `acc` combined with the element `x`.
/// Vector accumulators of a sum over a contiguous row (a global average pool's plane):
/// 13×13 and 7×7 planes of 1000–1280 channels took ~3 cycles an add in one chain.
const SUM_CHAINS: usize = 4;

fn combine(kind: Reduction, acc: Expr, x: Expr) -> Expr {
    match kind {
        Reduction::Mean => acc.add(x),
        // `x > acc ? x : acc`: a NaN element is skipped.
        Reduction::Max => x.max(acc),
    }
}

/// The output value from the reduced value `v` of `count` elements.
fn finish(kind: Reduction, dtype: DType, count: i64, v: Expr) -> Expr {
    match (kind, dtype) {
        // 0 elements: 0 * inf = NaN, as the interpreter's 0 / 0.
        (Reduction::Mean, DType::F32) => v.mul(Expr::Float((1.0 / count as f64) as f32)),
        (Reduction::Mean, DType::I64) if count != 1 => v.div(Expr::Int(count)),
        _ => v,
    }
}

/// Builds the kernel reducing `x` (dense, shape `shape`) over the axes marked in
/// `reduced`; the output holds the kept axes in order.
fn reduce_kernel(
    name: &str,
    dtype: DType,
    shape: &[usize],
    reduced: &[bool],
    kind: Reduction,
) -> Result<LoweredKernel> {
    let mut k = KernelBuilder::new(name);
    let x_len: usize = shape.iter().product();
    let y_len: usize = shape
        .iter()
        .zip(reduced)
        .filter(|(_, r)| !**r)
        .map(|(d, _)| d)
        .product();
    let x = k.buffer("x", dtype, x_len, BufferKind::Input);
    let y = k.buffer("y", dtype, y_len, BufferKind::Output);
    let args = vec![Arg::Input(0), Arg::Output(0)];
    let count: i64 = shape
        .iter()
        .zip(reduced)
        .filter(|(_, r)| **r)
        .map(|(&d, _)| d as i64)
        .product();
    if y_len == 0 {
        return Ok(LoweredKernel {
            kernel: k.finish(),
            args,
        });
    }
    if dtype == DType::I64 && kind == Reduction::Mean && count == 0 {
        return Err(Error::internal("the mean of no i64 elements".to_string()));
    }

    // Axes innermost last, size 1 dropped, neighbours of one kind merged (the input is
    // dense, so a merged axis keeps the inner stride).
    let mut axes: Vec<(i64, i64, bool)> = Vec::new();
    let mut stride = 1i64;
    for (&d, &r) in shape.iter().zip(reduced).rev() {
        let d = d as i64;
        if d != 1 {
            match axes.last_mut() {
                Some(last) if last.2 == r => last.0 *= d,
                _ => axes.push((d, stride, r)),
            }
        }
        stride *= d;
    }
    axes.reverse();
    let mut kept = Vec::new();
    let mut red = Vec::new();
    let mut y_stride = 1i64;
    for &(extent, x_stride, r) in axes.iter().rev() {
        if r {
            red.push(Nest {
                extent,
                x_stride,
                y_stride: 0,
            });
        } else {
            kept.push(Nest {
                extent,
                x_stride,
                y_stride,
            });
            y_stride *= extent;
        }
    }
    kept.reverse();
    red.reverse();

    let float = dtype == DType::F32;
    let last_kept = axes.last().is_some_and(|a| !a.2);
    let bufs = (x, y);
    if float && last_kept && kept.last().is_some_and(|n| n.extent >= 4) {
        // Four neighbouring outputs at a time.
        let (outer, lanes) = kept.split_at(kept.len() - 1);
        let lanes = lanes[0];
        nest(
            &mut k,
            outer,
            true,
            (Expr::Int(0), Expr::Int(0)),
            &mut |k, offs, top| {
                reduce_lanes(k, bufs, &red, lanes, offs, top, kind, count);
            },
        );
    } else {
        let vector_row = float && !last_kept && red.last().is_some_and(|n| n.extent >= 4);
        nest(
            &mut k,
            &kept,
            true,
            (Expr::Int(0), Expr::Int(0)),
            &mut |k, offs, _| {
                reduce_one(k, bufs, dtype, &red, vector_row, offs, kind, count);
            },
        );
    }
    Ok(LoweredKernel {
        kernel: k.finish(),
        args,
    })
}

/// Reduces one output element at `offs` over the `red` axes; with `vector`, the innermost
/// reduced axis (contiguous) is summed four lanes at a time.
#[allow(clippy::too_many_arguments)]
fn reduce_one(
    k: &mut KernelBuilder,
    (x, y): (BufId, BufId),
    dtype: DType,
    red: &[Nest],
    vector: bool,
    (x_off, y_off): (Expr, Expr),
    kind: Reduction,
    count: i64,
) {
    let acc = k.declare(scalar_ty(dtype), identity(kind, dtype));
    if vector {
        let acc4 = k.declare(Ty::F32x4, identity(kind, dtype).splat());
        let (outer, row) = red.split_at(red.len() - 1);
        let row = row[0];
        let main = row.extent / 4 * 4;
        // Sums take [`SUM_CHAINS`] vectors a step into as many accumulators, so the adds'
        // latency overlaps (a maximum keeps one chain: NaN elements are skipped in order).
        let chains = if kind == Reduction::Mean {
            SUM_CHAINS
        } else {
            1
        };
        let wide = row.extent / (4 * chains as i64) * (4 * chains as i64);
        let more: Vec<LocalId> = (1..chains)
            .map(|_| k.declare(Ty::F32x4, identity(kind, dtype).splat()))
            .collect();
        nest(
            k,
            outer,
            false,
            (x_off, Expr::Int(0)),
            &mut |k, (xo, _), _| {
                if chains > 1 && wide > 0 {
                    k.for_loop(0, wide, 4 * chains as i64, LoopKind::Serial, |k, j| {
                        let accs = std::iter::once(acc4).chain(more.iter().copied());
                        for (c, a) in accs.enumerate() {
                            let at = plus(offset(xo.clone(), &j, 1), 4 * c as i64);
                            k.assign(a, combine(kind, Expr::Local(a), Expr::load4(x, at)));
                        }
                    });
                }
                let from = if chains > 1 { wide } else { 0 };
                if from < main {
                    k.for_loop(from, main, 4, LoopKind::Serial, |k, j| {
                        let v = Expr::load4(x, offset(xo.clone(), &j, 1));
                        k.assign(acc4, combine(kind, Expr::Local(acc4), v));
                    });
                }
                if main < row.extent {
                    k.for_loop(main, row.extent, 1, LoopKind::Serial, |k, j| {
                        let v = Expr::load(x, offset(xo.clone(), &j, 1));
                        k.assign(acc, combine(kind, Expr::Local(acc), v));
                    });
                }
            },
        );
        // The chains pairwise, then the lanes.
        let mut sums: Vec<Expr> = std::iter::once(acc4)
            .chain(more.iter().copied())
            .map(Expr::Local)
            .collect();
        while sums.len() > 1 {
            sums = sums
                .chunks(2)
                .filter_map(|pair| pair.iter().cloned().reduce(Expr::add))
                .collect();
        }
        let all = sums.pop().unwrap_or(Expr::Local(acc4));
        let lanes = match kind {
            Reduction::Mean => Expr::ReduceAdd(Box::new(all)),
            Reduction::Max => Expr::ReduceMax(Box::new(Expr::Local(acc4))),
        };
        // The lanes' total first, then the tail.
        let total = match kind {
            Reduction::Mean => lanes.add(Expr::Local(acc)),
            Reduction::Max => Expr::Local(acc).max(lanes),
        };
        k.store(y, y_off, finish(kind, dtype, count, total));
    } else {
        nest(
            k,
            red,
            false,
            (x_off, Expr::Int(0)),
            &mut |k, (xo, _), _| {
                k.assign(acc, combine(kind, Expr::Local(acc), Expr::load(x, xo)));
            },
        );
        k.store(y, y_off, finish(kind, dtype, count, Expr::Local(acc)));
    }
}

/// Reduces the outputs along the contiguous kept axis `lanes` four at a time (plus a
/// scalar tail), each over the `red` axes.
#[allow(clippy::too_many_arguments)]
fn reduce_lanes(
    k: &mut KernelBuilder,
    (x, y): (BufId, BufId),
    red: &[Nest],
    lanes: Nest,
    (x_off, y_off): (Expr, Expr),
    top: bool,
    kind: Reduction,
    count: i64,
) {
    let main = lanes.extent / 4 * 4;
    let kind_of_loop = if top {
        LoopKind::Parallel
    } else {
        LoopKind::Serial
    };
    k.for_loop(0, main, 4, kind_of_loop, |k, i| {
        let acc = k.declare(Ty::F32x4, identity(kind, DType::F32).splat());
        let xi = offset(x_off.clone(), &i, lanes.x_stride);
        nest(k, red, false, (xi, Expr::Int(0)), &mut |k, (xo, _), _| {
            k.assign(acc, combine(kind, Expr::Local(acc), Expr::load4(x, xo)));
        });
        let yi = offset(y_off.clone(), &i, lanes.y_stride);
        k.store(y, yi, finish(kind, DType::F32, count, Expr::Local(acc)));
    });
    if main < lanes.extent {
        k.for_loop(main, lanes.extent, 1, LoopKind::Serial, |k, i| {
            let acc = k.declare(Ty::F32, identity(kind, DType::F32));
            let xi = offset(x_off.clone(), &i, lanes.x_stride);
            nest(k, red, false, (xi, Expr::Int(0)), &mut |k, (xo, _), _| {
                k.assign(acc, combine(kind, Expr::Local(acc), Expr::load(x, xo)));
            });
            let yi = offset(y_off.clone(), &i, lanes.y_stride);
            k.store(y, yi, finish(kind, DType::F32, count, Expr::Local(acc)));
        });
    }
}

fn reduce_mean(node: &NodeInfo<'_>, noop_with_empty_axes: bool) -> Result<LoweredKernel> {
    let x = node.input(0)?;
    let rank = x.shape.len();
    let axes = node.const_ints(1)?.unwrap_or_default();
    if axes.is_empty() && noop_with_empty_axes {
        let y = output(node, 0)?;
        let out = MapOutput {
            name: "y",
            dtype: y.dtype,
            shape: &y.shape,
            arg: Arg::Output(0),
        };
        return map_kernel(
            node.name,
            vec![MapInput::input(node, 0, "x")?],
            out,
            &|_, v| v[0].clone(),
        );
    }
    let mut reduced = vec![axes.is_empty(); rank];
    for &a in &axes {
        let r = rank as i64;
        let i = if a < 0 { a + r } else { a };
        if !(0..r).contains(&i) || reduced[i as usize] {
            return Err(node.unsupported(&format!(
                "axes {axes:?} are out of range or repeated for rank {rank}"
            )));
        }
        reduced[i as usize] = true;
    }
    if x.dtype == DType::I64 && reduced.iter().zip(&x.shape).any(|(r, d)| *r && *d == 0) {
        return Err(node.unsupported("the mean of no i64 elements"));
    }
    check_output_len(node, &x.shape, &reduced)?;
    reduce_kernel(node.name, x.dtype, &x.shape, &reduced, Reduction::Mean)
}

fn global_pool(node: &NodeInfo<'_>, kind: Reduction) -> Result<LoweredKernel> {
    let x = node.input(0)?;
    if x.dtype != DType::F32 || x.shape.len() < 3 {
        return Err(
            node.unsupported("the input must be f32 with a batch, a channel and a spatial axis")
        );
    }
    if x.shape[2..].contains(&0) {
        return Err(node.unsupported("the input has an empty spatial axis"));
    }
    let reduced: Vec<bool> = (0..x.shape.len()).map(|i| i >= 2).collect();
    check_output_len(node, &x.shape, &reduced)?;
    reduce_kernel(node.name, DType::F32, &x.shape, &reduced, kind)
}

/// Checks that the node's output has as many elements as the kept axes.
fn check_output_len(node: &NodeInfo<'_>, shape: &[usize], reduced: &[bool]) -> Result<()> {
    let kept: usize = shape
        .iter()
        .zip(reduced)
        .filter(|(_, r)| !**r)
        .map(|(d, _)| d)
        .product();
    let y = output(node, 0)?;
    if y.len() != kept || y.dtype != node.input(0)?.dtype {
        return Err(Error::internal(format!(
            "node {} ({}): output {} {:?} does not match the reduction of {shape:?}",
            node.name,
            node.op.name(),
            y.dtype,
            y.shape
        )));
    }
    Ok(())
}

fn softmax(node: &NodeInfo<'_>, axis: i64, coerce_2d: bool) -> Result<LoweredKernel> {
    let x = node.input(0)?;
    if x.dtype != DType::F32 {
        return Err(node.unsupported("softmax takes f32"));
    }
    let shape = &x.shape;
    let rank = shape.len() as i64;
    let a = if axis < 0 { axis + rank } else { axis };
    if !(0..rank).contains(&a) {
        return Err(node.unsupported(&format!("axis {axis} is out of range for rank {rank}")));
    }
    let a = a as usize;
    let outer: usize = shape[..a].iter().product();
    let (len, inner) = if coerce_2d {
        (shape[a..].iter().product(), 1)
    } else {
        (shape[a], shape[a + 1..].iter().product())
    };
    let mut k = KernelBuilder::new(node.name);
    let total = x.len();
    let xb = k.buffer("x", DType::F32, total, BufferKind::Input);
    let yb = k.buffer("y", DType::F32, total, BufferKind::Output);
    let args = vec![Arg::Input(0), Arg::Output(0)];
    if total > 0 {
        let (len, inner) = (len as i64, inner as i64);
        let row = Nest {
            extent: outer as i64,
            x_stride: len * inner,
            y_stride: len * inner,
        };
        let rows: &[Nest] = if outer > 1 {
            std::slice::from_ref(&row)
        } else {
            &[]
        };
        nest(
            &mut k,
            rows,
            true,
            (Expr::Int(0), Expr::Int(0)),
            &mut |k, (base, _), top| {
                if inner == 1 {
                    softmax_row(k, (xb, yb), base, len);
                } else {
                    softmax_columns(k, (xb, yb), base, len, inner, top);
                }
            },
        );
    }
    Ok(LoweredKernel {
        kernel: k.finish(),
        args,
    })
}

/// Softmax of the contiguous row `base..base + len`, vectorised along it.
fn softmax_row(k: &mut KernelBuilder, (x, y): (BufId, BufId), base: Expr, len: i64) {
    let main = len / 4 * 4;
    let at = |j: &Expr| offset(base.clone(), j, 1);
    // Pass 1: the maximum.
    let m4 = k.declare(Ty::F32x4, Expr::Float(f32::NEG_INFINITY).splat());
    if main > 0 {
        k.for_loop(0, main, 4, LoopKind::Serial, |k, j| {
            k.assign(m4, Expr::load4(x, at(&j)).max(Expr::Local(m4)));
        });
    }
    let m = k.declare(Ty::F32, Expr::ReduceMax(Box::new(Expr::Local(m4))));
    if main < len {
        k.for_loop(main, len, 1, LoopKind::Serial, |k, j| {
            k.assign(m, Expr::load(x, at(&j)).max(Expr::Local(m)));
        });
    }
    // Pass 2: exponentials, stored, and their sum.
    let s4 = k.declare(Ty::F32x4, Expr::Float(0.0).splat());
    if main > 0 {
        k.for_loop(0, main, 4, LoopKind::Serial, |k, j| {
            let e = k.declare(
                Ty::F32x4,
                Expr::load4(x, at(&j)).sub(Expr::Local(m)).unary(UnOp::Exp),
            );
            k.store(y, at(&j), Expr::Local(e));
            k.assign(s4, Expr::Local(s4).add(Expr::Local(e)));
        });
    }
    let s = k.declare(Ty::F32, Expr::ReduceAdd(Box::new(Expr::Local(s4))));
    if main < len {
        k.for_loop(main, len, 1, LoopKind::Serial, |k, j| {
            let e = k.declare(
                Ty::F32,
                Expr::load(x, at(&j)).sub(Expr::Local(m)).unary(UnOp::Exp),
            );
            k.store(y, at(&j), Expr::Local(e));
            k.assign(s, Expr::Local(s).add(Expr::Local(e)));
        });
    }
    // Pass 3: scale.
    let r = k.declare(Ty::F32, Expr::Float(1.0).div(Expr::Local(s)));
    if main > 0 {
        k.for_loop(0, main, 4, LoopKind::Serial, |k, j| {
            k.store(y, at(&j), Expr::load4(y, at(&j)).mul(Expr::Local(r)));
        });
    }
    if main < len {
        k.for_loop(main, len, 1, LoopKind::Serial, |k, j| {
            k.store(y, at(&j), Expr::load(y, at(&j)).mul(Expr::Local(r)));
        });
    }
}

/// Softmax of the `inner` rows at `base + i` (`i < inner`), each of `len` elements
/// `inner` apart; four neighbouring rows share a vector. With `top`, the loop over rows is
/// the kernel's parallel loop.
fn softmax_columns(
    k: &mut KernelBuilder,
    (x, y): (BufId, BufId),
    base: Expr,
    len: i64,
    inner: i64,
    top: bool,
) {
    let main = inner / 4 * 4;
    let kind = if top {
        LoopKind::Parallel
    } else {
        LoopKind::Serial
    };
    // One group of rows starting at column `i`, with `load` / `ty` for its lanes.
    let group = |k: &mut KernelBuilder, i: Expr, vector: bool| {
        let ty = if vector { Ty::F32x4 } else { Ty::F32 };
        let load = |buf, at: Expr| {
            if vector {
                Expr::load4(buf, at)
            } else {
                Expr::load(buf, at)
            }
        };
        let lanes = |e: Expr| if vector { e.splat() } else { e };
        let col = offset(base.clone(), &i, 1);
        let at = move |c: &Expr| offset(col.clone(), c, inner);
        let m = k.declare(ty, lanes(Expr::Float(f32::NEG_INFINITY)));
        k.range(len as usize, |k, c| {
            k.assign(m, load(x, at(&c)).max(Expr::Local(m)));
        });
        let s = k.declare(ty, lanes(Expr::Float(0.0)));
        k.range(len as usize, |k, c| {
            let e = k.declare(ty, load(x, at(&c)).sub(Expr::Local(m)).unary(UnOp::Exp));
            k.store(y, at(&c), Expr::Local(e));
            k.assign(s, Expr::Local(s).add(Expr::Local(e)));
        });
        let r = k.declare(ty, lanes(Expr::Float(1.0)).div(Expr::Local(s)));
        k.range(len as usize, |k, c| {
            k.store(y, at(&c), load(y, at(&c)).mul(Expr::Local(r)));
        });
    };
    if main > 0 {
        k.for_loop(0, main, 4, kind, |k, i| group(k, i, true));
    }
    if main < inner {
        let kind = if main == 0 { kind } else { LoopKind::Serial };
        k.for_loop(main, inner, 1, kind, |k, i| group(k, i, false));
    }
}

#[cfg(test)]
mod tests {
    use crate::graph::op::Op;
    use crate::lower::elementwise::testkit::{check, check_lowering, random};
    use crate::tensor::Tensor;

    fn rt(t: Tensor) -> Option<(Tensor, bool)> {
        Some((t, false))
    }

    fn axes(v: &[i64]) -> Option<(Tensor, bool)> {
        Some((Tensor::vector_i64(v.to_vec()), true))
    }

    #[test]
    fn softmax_along_every_axis_and_flattened() {
        for shape in [
            &[2, 3, 4, 5][..],
            &[1, 6, 7],
            &[3, 9],
            &[5],
            &[1, 10, 1, 3],
            &[2, 0, 3],
        ] {
            for axis in -(shape.len() as i64)..shape.len() as i64 {
                for coerce_2d in [false, true] {
                    let op = Op::Softmax { axis, coerce_2d };
                    check(&op, &[rt(random(shape, (axis + 7) as u64))]);
                }
            }
        }
    }

    #[test]
    fn softmax_is_stable_and_propagates_nan() {
        let x = Tensor::from_f32(
            vec![2, 5],
            vec![
                1000.0,
                1001.0,
                999.0,
                -1000.0,
                0.0,
                1.0,
                f32::NAN,
                2.0,
                3.0,
                4.0,
            ],
        )
        .unwrap();
        check(
            &Op::Softmax {
                axis: -1,
                coerce_2d: false,
            },
            &[rt(x.clone())],
        );
        check(
            &Op::Softmax {
                axis: 0,
                coerce_2d: false,
            },
            &[rt(x)],
        );
    }

    #[test]
    fn softmax_over_channels_is_parallel_over_pixels() {
        let text = check(
            &Op::Softmax {
                axis: 1,
                coerce_2d: false,
            },
            &[rt(random(&[1, 5, 3, 3], 1))],
        );
        assert!(text.contains("parallel for v0 in 0..8 step 4"), "{text}");
    }

    #[test]
    fn reduce_mean_over_any_axes() {
        let shape = [2, 3, 4, 5];
        let cases: [&[i64]; 10] = [
            &[],
            &[0],
            &[1],
            &[2],
            &[3],
            &[-1],
            &[1, 2],
            &[0, 2],
            &[1, 3],
            &[0, 1, 2, 3],
        ];
        for keepdims in [true, false] {
            for a in cases {
                let op = Op::ReduceMean {
                    keepdims,
                    noop_with_empty_axes: false,
                };
                check(&op, &[rt(random(&shape, 3)), axes(a)]);
            }
            let op = Op::ReduceMean {
                keepdims,
                noop_with_empty_axes: false,
            };
            check(&op, &[rt(random(&shape, 3))]);
            check(&op, &[rt(random(&[1, 8, 1, 9], 3)), axes(&[2, 3])]);
            check(&op, &[rt(random(&[2, 0, 3], 3)), axes(&[1])]);
            check(&op, &[rt(random(&[2, 0, 3], 3)), axes(&[0])]);
        }
        let noop = Op::ReduceMean {
            keepdims: true,
            noop_with_empty_axes: true,
        };
        check(&noop, &[rt(random(&shape, 3)), axes(&[])]);
        check(&noop, &[rt(random(&shape, 3)), axes(&[1])]);
        let ints = Tensor::from_i64(vec![2, 3], vec![1, 2, 4, -7, 5, 6]).unwrap();
        let op = Op::ReduceMean {
            keepdims: false,
            noop_with_empty_axes: false,
        };
        // Shape inference takes f32 only; the lowering handles i64 as the interpreter does.
        check_lowering(&op, &[rt(ints.clone()), axes(&[1])]);
        check_lowering(&op, &[rt(ints.clone()), axes(&[0])]);
        check_lowering(&op, &[rt(ints)]);
    }

    #[test]
    fn global_pools_reduce_each_plane() {
        for shape in [
            &[2, 3, 4, 5][..],
            &[1, 4, 7, 7],
            &[1, 2, 3],
            &[1, 1, 2, 2, 3],
        ] {
            let text = check(&Op::GlobalAveragePool, &[rt(random(shape, 1))]);
            if shape == [1, 4, 7, 7] {
                // 48 of the 49 elements in vectors: 3 steps of 4 chains, no single vector.
                assert!(text.contains("parallel for v0 in 0..4"), "{text}");
                assert!(text.contains("for v1 in 0..48 step 16"), "{text}");
                assert!(!text.contains("step 4"), "{text}");
            }
            check(&Op::GlobalMaxPool, &[rt(random(shape, 2))]);
        }
        let x = Tensor::from_f32(
            vec![1, 2, 5],
            vec![
                f32::NAN,
                1.0,
                3.0,
                2.0,
                0.0,
                f32::NAN,
                7.0,
                f32::NAN,
                -1.0,
                2.0,
            ],
        )
        .unwrap();
        check(&Op::GlobalMaxPool, &[rt(x)]);
        let all_nan = Tensor::from_f32(vec![1, 1, 5], vec![f32::NAN; 5]).unwrap();
        check(&Op::GlobalMaxPool, &[rt(all_nan)]);
    }
}
