//! Lowering of the conv ops (see [`super`] for the conventions), and the sliding-window
//! walkers that pooling shares.
//!
//! Output positions are walked per spatial axis in up to three regions: the *interior*,
//! where every kernel tap lands inside the input, and the border regions before and after
//! it, where taps are clamped into the input and masked by a select (padding contributes
//! exactly 0, as in the interpreter). In the interior of the last (contiguous) axis with
//! stride 1, the kernel computes four output positions per `f32x4`, with up to four vectors
//! (16 positions) per step sharing each weight; everything else is scalar.
//!
//! - `conv`: one parallel iteration per (batch, output channel) plane; the sum runs over the
//!   group's input channels, then the kernel taps (row-major), from 0, and the bias is added
//!   last, in the interpreter's order. A 1×1 kernel with stride 1 and no padding treats the
//!   whole spatial plane as one contiguous axis.
//! - `conv_transpose`: a gather: each output position sums, over the group's input channels
//!   and the kernel taps, the input position that maps onto it (`x * stride + tap *
//!   dilation = out + pad`), found with an exact division and masked when there is none.

use super::ir::{CmpOp, UnOp};
use super::{
    Arg, BufferKind, Expr, KernelBuilder, LoopKind, Lowered, LoweredKernel, NodeInfo, Operand, Ty,
};
use crate::error::{Error, Result};
use crate::graph::op::{Conv, ConvTranspose, Op};
use crate::graph::window::{self, ResolvedWindow, Rounding};
use crate::tensor::DType;

/// Kernel-tap loops up to this extent are marked for unrolling.
const UNROLL_TAPS: usize = 8;

/// Output vectors (of four positions) computed together in the interior of a row.
const VECTORS: usize = 4;

/// `e + c`, without a `+ 0`.
pub(super) fn plus(e: Expr, c: i64) -> Expr {
    match (e, c) {
        (e, 0) => e,
        (Expr::Int(v), c) => Expr::Int(v + c),
        (e, c) if c < 0 => e.sub(Expr::Int(-c)),
        (e, c) => e.add(Expr::Int(c)),
    }
}

/// The sum of `terms`, leaving out constant zeros (`0` if nothing is left).
pub(super) fn sum(terms: impl IntoIterator<Item = Expr>) -> Expr {
    let mut total: Option<Expr> = None;
    for t in terms {
        if t == Expr::Int(0) {
            continue;
        }
        total = Some(match total {
            None => t,
            Some(acc) => acc.add(t),
        });
    }
    total.unwrap_or(Expr::Int(0))
}

/// `e * k` as an index term (`0` when `k` is 0, `e` when `k` is 1).
pub(super) fn times(e: Expr, k: usize) -> Expr {
    match (e, k) {
        (_, 0) | (Expr::Int(0), _) => Expr::Int(0),
        (Expr::Int(v), k) => Expr::Int(v * k as i64),
        (e, k) => e.scale(k as i64),
    }
}

/// Row-major element strides of `dims`.
pub(super) fn strides(dims: &[usize]) -> Vec<usize> {
    let mut out = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        out[i] = out[i + 1] * dims[i + 1];
    }
    out
}

/// Splits a flat index `v` in `0..outer * inner` into `(v / inner, v % inner)`, the second
/// clamped to `0..inner` so the verifier can bound it.
pub(super) fn split(v: Expr, outer: usize, inner: usize) -> (Expr, Expr) {
    if outer <= 1 {
        (Expr::Int(0), v)
    } else if inner <= 1 {
        (v, Expr::Int(0))
    } else {
        let q = v.clone().div(Expr::Int(inner as i64));
        let r = v
            .sub(q.clone().scale(inner as i64))
            .clamp(0, inner as i64 - 1);
        (q, r)
    }
}

/// `for v in 0..extent`, or the body once with `v = 0` when the extent is 1.
pub(super) fn range_or_zero(
    k: &mut KernelBuilder,
    extent: usize,
    kind: LoopKind,
    body: impl FnOnce(&mut KernelBuilder, Expr),
) {
    if extent == 1 {
        body(k, Expr::Int(0));
    } else {
        k.for_loop(0, extent as i64, 1, kind, body);
    }
}

/// One spatial axis of a sliding window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Axis {
    /// Input size.
    pub input: usize,
    /// Output size.
    pub output: usize,
    /// Kernel size.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Dilation.
    pub dilation: usize,
    /// Padding before the axis.
    pub pad: usize,
}

impl Axis {
    /// The axes of a resolved window over spatial input sizes `input`.
    pub fn from_window(g: &ResolvedWindow, input: &[usize]) -> Vec<Axis> {
        (0..input.len())
            .map(|i| Axis {
                input: input[i],
                output: g.output[i],
                kernel: g.kernel[i],
                stride: g.strides[i],
                dilation: g.dilations[i],
                pad: g.pads_begin()[i],
            })
            .collect()
    }

    /// The output positions `lo..hi` whose every tap lies inside the input.
    pub fn interior(&self) -> (usize, usize) {
        let lo = self.pad.div_ceil(self.stride.max(1)).min(self.output);
        // o * stride - pad + (kernel - 1) * dilation <= input - 1.
        let reach = (self.kernel.max(1) - 1).saturating_mul(self.dilation);
        let hi = match (self.input + self.pad).checked_sub(reach + 1) {
            Some(span) => (span / self.stride.max(1) + 1).min(self.output),
            None => lo,
        };
        (lo, hi.max(lo))
    }

    /// The output regions `(start, end, checked)`: the interior unchecked, the borders
    /// checked; empty regions left out.
    fn regions(&self) -> Vec<(usize, usize, bool)> {
        let (lo, hi) = self.interior();
        [(0, lo, true), (lo, hi, false), (hi, self.output, true)]
            .into_iter()
            .filter(|r| r.0 < r.1)
            .collect()
    }

    /// The input coordinate of output position `o`, tap `j` (may lie outside the input).
    pub fn input_coord(&self, o: Expr, j: Expr) -> Expr {
        plus(
            sum([times(o, self.stride), times(j, self.dilation)]),
            -(self.pad as i64),
        )
    }
}

/// A run of output positions along the last axis, at fixed positions on the other axes.
#[derive(Clone, Debug)]
pub(super) struct Segment {
    /// For each axis but the last: the output coordinate and whether its taps need checks.
    pub outer: Vec<(Expr, bool)>,
    /// First position on the last axis.
    pub start: usize,
    /// End (exclusive) on the last axis.
    pub end: usize,
    /// Whether taps along the last axis need checks.
    pub checked: bool,
}

impl Segment {
    /// The output coordinates of every axis, with `last` on the last one.
    pub fn coords(&self, last: Expr) -> Vec<(Expr, bool)> {
        let mut out = self.outer.clone();
        out.push((last, self.checked));
        out
    }
}

/// Emits loops over the output positions of every axis but the last (split into regions)
/// and calls `f` for each segment of the last axis. `axes` must not be empty.
pub(super) fn for_each_segment(
    k: &mut KernelBuilder,
    axes: &[Axis],
    f: &mut dyn FnMut(&mut KernelBuilder, &Segment),
) {
    walk_segments(k, axes, &mut Vec::new(), f);
}

fn walk_segments(
    k: &mut KernelBuilder,
    axes: &[Axis],
    outer: &mut Vec<(Expr, bool)>,
    f: &mut dyn FnMut(&mut KernelBuilder, &Segment),
) {
    let depth = outer.len();
    let Some(axis) = axes.get(depth) else { return };
    if depth + 1 == axes.len() {
        for (start, end, checked) in axis.regions() {
            let segment = Segment {
                outer: outer.clone(),
                start,
                end,
                checked,
            };
            f(k, &segment);
        }
        return;
    }
    for (start, end, checked) in axis.regions() {
        k.for_loop(start as i64, end as i64, 1, LoopKind::Serial, |k, o| {
            outer.push((o, checked));
            walk_segments(k, axes, outer, f);
            outer.pop();
        });
    }
}

/// One kernel tap at one output position.
#[derive(Clone, Debug)]
pub(super) struct TapAt {
    /// Row-major offset of the input element within one spatial plane (checked axes
    /// clamped into the input).
    pub offset: Expr,
    /// The tap's row-major index in the kernel.
    pub tap: Expr,
    /// The input coordinate per axis (clamped on checked axes).
    pub coords: Vec<Expr>,
    /// Whether the tap lies inside the input (`bool`); `None` when it always does.
    pub valid: Option<Expr>,
}

/// Emits loops over the kernel taps of the output position `outs` (coordinate and checked
/// flag per axis) and calls `f` for each tap.
pub(super) fn for_each_tap(
    k: &mut KernelBuilder,
    axes: &[Axis],
    outs: &[(Expr, bool)],
    f: &mut dyn FnMut(&mut KernelBuilder, &TapAt),
) {
    walk_taps(k, axes, outs, &mut Vec::new(), f);
}

fn walk_taps(
    k: &mut KernelBuilder,
    axes: &[Axis],
    outs: &[(Expr, bool)],
    taps: &mut Vec<Expr>,
    f: &mut dyn FnMut(&mut KernelBuilder, &TapAt),
) {
    let depth = taps.len();
    if let Some(axis) = axes.get(depth) {
        let kind = if depth + 1 == axes.len() && axis.kernel <= UNROLL_TAPS {
            LoopKind::Unrolled
        } else {
            LoopKind::Serial
        };
        range_or_zero(k, axis.kernel, kind, |k, j| {
            taps.push(j);
            walk_taps(k, axes, outs, taps, f);
            taps.pop();
        });
        return;
    }
    let in_strides = strides(&axes.iter().map(|a| a.input).collect::<Vec<_>>());
    let k_strides = strides(&axes.iter().map(|a| a.kernel).collect::<Vec<_>>());
    let mut coords = Vec::with_capacity(axes.len());
    let mut misses = Vec::new();
    for (axis, ((o, checked), j)) in axes.iter().zip(outs.iter().zip(taps.iter())) {
        let c = axis.input_coord(o.clone(), j.clone());
        if *checked {
            let clamped = c.clone().clamp(0, axis.input as i64 - 1);
            misses.push((c, clamped.clone()));
            coords.push(clamped);
        } else {
            coords.push(c);
        }
    }
    let valid = match misses.len() {
        0 => None,
        1 => misses.pop().map(|(c, clamped)| c.cmp(CmpOp::Eq, clamped)),
        _ => Some(
            sum(misses
                .into_iter()
                .map(|(c, clamped)| c.sub(clamped).unary(UnOp::Abs)))
            .cmp(CmpOp::Eq, Expr::Int(0)),
        ),
    };
    let tap = TapAt {
        offset: sum(coords
            .iter()
            .zip(&in_strides)
            .map(|(c, s)| times(c.clone(), *s))),
        tap: sum(taps
            .iter()
            .zip(&k_strides)
            .map(|(j, s)| times(j.clone(), *s))),
        coords,
        valid,
    };
    f(k, &tap);
}

/// Calls `f(k, last, vectors)` over the positions of `segment`'s last axis: in steps of
/// `4 * vectors` positions where `vectorize` (at most [`VECTORS`] vectors, then single
/// vectors), and one position at a time (`vectors` = 0) for the rest.
pub(super) fn walk_row(
    k: &mut KernelBuilder,
    segment: &Segment,
    vectorize: bool,
    f: &mut dyn FnMut(&mut KernelBuilder, Expr, usize),
) {
    let mut pos = segment.start;
    if vectorize {
        for vectors in [VECTORS, 1] {
            let width = 4 * vectors;
            let steps = (segment.end - pos) / width;
            if steps > 0 {
                let end = pos + steps * width;
                k.for_loop(
                    pos as i64,
                    end as i64,
                    width as i64,
                    LoopKind::Serial,
                    |k, o| f(k, o, vectors),
                );
                pos = end;
            }
        }
    }
    if pos < segment.end {
        k.for_loop(
            pos as i64,
            segment.end as i64,
            1,
            LoopKind::Serial,
            |k, o| f(k, o, 0),
        );
    }
}

/// The operand `i`, checked to be `f32`.
pub(super) fn f32_input<'a>(node: &'a NodeInfo<'_>, i: usize, what: &str) -> Result<&'a Operand> {
    let o = node.input(i)?;
    if o.dtype != DType::F32 {
        return Err(node.unsupported(&format!("{what} must be f32, got {}", o.dtype)));
    }
    Ok(o)
}

/// A user error about `node`.
pub(super) fn node_error(node: &NodeInfo<'_>, message: String) -> Error {
    Error::node(node.name, node.op.name(), message)
}

/// Lowers a node of this family.
pub(super) fn lower(node: &NodeInfo<'_>) -> Result<Lowered> {
    match node.op {
        Op::Conv(attrs) => lower_conv(node, attrs),
        Op::ConvTranspose(attrs) => lower_conv_transpose(node, attrs),
        other => Err(Error::internal(format!(
            "conv lowering called for {}",
            other.name()
        ))),
    }
}

/// Shapes common to both convolutions, checked.
struct Operands<'a> {
    x: &'a Operand,
    w: &'a Operand,
    b: Option<&'a Operand>,
    y: &'a Operand,
    batch: usize,
    channels: usize,
    spatial: &'a [usize],
    kernel: &'a [usize],
}

fn operands<'a>(node: &'a NodeInfo<'_>) -> Result<Operands<'a>> {
    let x = f32_input(node, 0, "input")?;
    let w = f32_input(node, 1, "weights")?;
    let b = match node.optional(2) {
        Some(_) => Some(f32_input(node, 2, "bias")?),
        None => None,
    };
    let y = node
        .outputs
        .first()
        .ok_or_else(|| Error::internal(format!("node {}: no output at lowering", node.name)))?;
    if x.shape.len() < 3 || w.shape.len() != x.shape.len() {
        return Err(node_error(
            node,
            format!(
                "input {:?} and weights {:?} must be [N, C, spatial...] of one rank",
                x.shape, w.shape
            ),
        ));
    }
    let spatial = &x.shape[2..];
    let kernel = &w.shape[2..];
    if spatial.contains(&0) || kernel.contains(&0) {
        return Err(node.unsupported("an empty spatial or kernel axis"));
    }
    Ok(Operands {
        x,
        w,
        b,
        y,
        batch: x.shape[0],
        channels: x.shape[1],
        spatial,
        kernel,
    })
}

/// Checks the output shape `[N, M, out...]` the lowering computes against the node's.
fn check_output(
    node: &NodeInfo<'_>,
    y: &Operand,
    batch: usize,
    m: usize,
    out: &[usize],
) -> Result<()> {
    let mut shape = vec![batch, m];
    shape.extend_from_slice(out);
    if y.shape != shape || y.dtype != DType::F32 {
        return Err(Error::internal(format!(
            "node {}: output is {} {:?}, lowering computes f32 {shape:?}",
            node.name, y.dtype, y.shape
        )));
    }
    Ok(())
}

fn lower_conv(node: &NodeInfo<'_>, attrs: &Conv) -> Result<Lowered> {
    let ops = operands(node)?;
    let (n, c) = (ops.batch, ops.channels);
    let (m, cg) = (ops.w.shape[0], ops.w.shape[1]);
    let group = attrs.group;
    if group == 0 || m % group != 0 || cg.checked_mul(group) != Some(c) {
        return Err(node_error(
            node,
            format!(
                "input {:?} and weights {:?} do not agree with group {group}",
                ops.x.shape, ops.w.shape
            ),
        ));
    }
    if let Some(b) = ops.b
        && b.shape != [m]
    {
        return Err(node_error(
            node,
            format!("bias {:?} must have shape [{m}]", b.shape),
        ));
    }
    let geometry = window::resolve(&attrs.window, ops.spatial, ops.kernel, Rounding::Floor)
        .map_err(|e| node_error(node, e))?;
    check_output(node, ops.y, n, m, &geometry.output)?;
    let plane: usize = ops.spatial.iter().product();
    let out_plane: usize = geometry.output.iter().product();
    let taps: usize = ops.kernel.iter().product();
    let mut axes = Axis::from_window(&geometry, ops.spatial);
    let pointwise = axes
        .iter()
        .all(|a| a.kernel == 1 && a.stride == 1 && a.pad == 0 && a.output == a.input);
    if pointwise {
        // A 1×1 kernel: the plane is one contiguous axis.
        axes = vec![Axis {
            input: plane,
            output: plane,
            kernel: 1,
            stride: 1,
            dilation: 1,
            pad: 0,
        }];
    }
    let out_strides = strides(&axes.iter().map(|a| a.output).collect::<Vec<_>>());
    let mg = m / group;
    let rank = axes.len();
    let last = axes[rank - 1].clone();
    // A strided last axis is vectorised through a copy of the input split by stride phase.
    let phases =
        (last.stride > 1 && last.kernel <= UNROLL_TAPS && last.output >= 4).then(|| Phases {
            stride: last.stride,
            width: last.input,
            len: last.input.div_ceil(last.stride),
            rows: n * c * (plane / last.input),
        });
    let x_plane = match &phases {
        Some(ph) => plane / last.input * ph.row_len(),
        None => plane,
    };

    let mut lowered = Lowered::default();
    let mut k = KernelBuilder::new(node.name);
    let mut args = Vec::new();
    let xb = match &phases {
        Some(ph) => {
            lowered.scratch.push((DType::F32, ph.rows * ph.row_len()));
            lowered
                .kernels
                .push(ph.kernel(&format!("{}_phases", node.name), Arg::Input(0), 0));
            args.push(Arg::Scratch(0));
            k.buffer(
                "x_phases",
                DType::F32,
                ph.rows * ph.row_len(),
                BufferKind::Input,
            )
        }
        None => {
            args.push(Arg::Input(0));
            k.buffer("x", DType::F32, ops.x.len(), BufferKind::Input)
        }
    };
    let wb = k.buffer("w", DType::F32, ops.w.len(), BufferKind::Input);
    args.push(Arg::Input(1));
    let bb = ops.b.map(|b| {
        args.push(Arg::Input(2));
        k.buffer("b", DType::F32, b.len(), BufferKind::Input)
    });
    let yb = k.buffer("y", DType::F32, ops.y.len(), BufferKind::Output);
    args.push(Arg::Output(0));

    k.for_loop(0, (n * m) as i64, 1, LoopKind::Parallel, |k, nm| {
        let (batch, mi) = split(nm.clone(), n, m);
        let g = if group == 1 {
            Expr::Int(0)
        } else if mg == 1 {
            mi.clone()
        } else {
            mi.clone().div(Expr::Int(mg as i64))
        };
        let x_base = sum([times(batch, c * x_plane), times(g, cg * x_plane)]);
        let w_base = times(mi.clone(), cg * taps);
        let y_base = times(nm, out_plane);
        let bias = bb.map(|b| Expr::load(b, mi.clone()));
        let vector_rows = last.stride == 1 || phases.is_some();
        for_each_segment(k, &axes, &mut |k, segment| {
            walk_row(
                k,
                segment,
                !segment.checked && vector_rows,
                &mut |k, o, vectors| {
                    let lanes = vectors.max(1);
                    let (ty, zero) = if vectors > 0 {
                        (Ty::F32x4, Expr::Float(0.0).splat())
                    } else {
                        (Ty::F32, Expr::Float(0.0))
                    };
                    let accs: Vec<_> = (0..lanes).map(|_| k.declare(ty, zero.clone())).collect();
                    let outs = segment.coords(o.clone());
                    // acc[u] += x[index(u)] * weight, masked by every condition of `index(u)`.
                    let accumulate = |k: &mut KernelBuilder,
                                      index: &dyn Fn(usize) -> (Expr, Vec<Expr>),
                                      weight: Expr| {
                        let weight = if vectors > 0 { weight.splat() } else { weight };
                        for (u, acc) in accs.iter().enumerate() {
                            let (index, valid) = index(u);
                            let value = if vectors > 0 {
                                Expr::load4(xb, index)
                            } else {
                                Expr::load(xb, index)
                            };
                            let value = valid
                                .into_iter()
                                .fold(value, |v, c| c.select(v, Expr::Float(0.0)));
                            k.assign(*acc, value.fma(weight.clone(), Expr::Local(*acc)));
                        }
                    };
                    range_or_zero(k, cg, LoopKind::Serial, |k, ci| {
                        let x_channel = sum([x_base.clone(), times(ci.clone(), x_plane)]);
                        let w_channel = sum([w_base.clone(), times(ci, taps)]);
                        match &phases {
                            None => for_each_tap(k, &axes, &outs, &mut |k, tap| {
                                let weight =
                                    Expr::load(wb, sum([w_channel.clone(), tap.tap.clone()]));
                                let index = |u: usize| {
                                    let at = plus(
                                        sum([x_channel.clone(), tap.offset.clone()]),
                                        4 * u as i64,
                                    );
                                    (at, tap.valid.iter().cloned().collect())
                                };
                                accumulate(k, &index, weight);
                            }),
                            Some(ph) => for_each_tap(
                                k,
                                &axes[..rank - 1],
                                &outs[..rank - 1],
                                &mut |k, tap| {
                                    let row = sum([
                                        x_channel.clone(),
                                        times(tap.offset.clone(), ph.row_len()),
                                    ]);
                                    for kx in 0..last.kernel {
                                        let weight = Expr::load(
                                            wb,
                                            sum([
                                                w_channel.clone(),
                                                times(tap.tap.clone(), last.kernel),
                                                Expr::Int(kx as i64),
                                            ]),
                                        );
                                        let index = |u: usize| {
                                            let (at, valid) = ph.tap(
                                                &last,
                                                o.clone(),
                                                kx,
                                                segment.checked,
                                                4 * u as i64,
                                            );
                                            (
                                                sum([row.clone(), at]),
                                                tap.valid.iter().cloned().chain(valid).collect(),
                                            )
                                        };
                                        accumulate(k, &index, weight);
                                    }
                                },
                            ),
                        }
                    });
                    let position = sum(outs
                        .iter()
                        .zip(&out_strides)
                        .map(|((o, _), s)| times(o.clone(), *s)));
                    for (u, acc) in accs.iter().enumerate() {
                        let index = plus(sum([y_base.clone(), position.clone()]), 4 * u as i64);
                        let value = match &bias {
                            Some(b) if vectors > 0 => Expr::Local(*acc).add(b.clone().splat()),
                            Some(b) => Expr::Local(*acc).add(b.clone()),
                            None => Expr::Local(*acc),
                        };
                        k.store(yb, index, value);
                    }
                },
            );
        });
    });
    lowered.kernels.push(LoweredKernel {
        kernel: k.finish(),
        args,
    });
    Ok(lowered)
}

/// The last spatial axis of an input split by stride phase, so that a strided window reads
/// consecutive elements: `phased[row, p, i] = x[row, i * stride + p]` (0 past the row's
/// end), for every row (all other axes, flattened).
struct Phases {
    stride: usize,
    /// Input row length.
    width: usize,
    /// Elements per phase: `ceil(width / stride)`.
    len: usize,
    /// Number of rows.
    rows: usize,
}

impl Phases {
    /// Elements per phased row.
    fn row_len(&self) -> usize {
        self.stride * self.len
    }

    /// The kernel writing the phased copy of input `input` into scratch buffer `scratch`.
    fn kernel(&self, name: &str, input: Arg, scratch: usize) -> LoweredKernel {
        let mut k = KernelBuilder::new(name);
        let x = k.buffer("x", DType::F32, self.rows * self.width, BufferKind::Input);
        let xs = k.buffer(
            "x_phases",
            DType::F32,
            self.rows * self.row_len(),
            BufferKind::Output,
        );
        k.for_loop(0, self.rows as i64, 1, LoopKind::Parallel, |k, r| {
            for p in 0..self.stride {
                let inside = self.width.saturating_sub(p).div_ceil(self.stride);
                let out = sum([
                    times(r.clone(), self.row_len()),
                    Expr::Int((p * self.len) as i64),
                ]);
                if inside > 0 {
                    k.range(inside, |k, i| {
                        let from = sum([
                            times(r.clone(), self.width),
                            times(i.clone(), self.stride),
                            Expr::Int(p as i64),
                        ]);
                        k.store(xs, sum([out.clone(), i]), Expr::load(x, from));
                    });
                }
                if inside < self.len {
                    k.for_loop(
                        inside as i64,
                        self.len as i64,
                        1,
                        LoopKind::Serial,
                        |k, i| {
                            k.store(xs, sum([out.clone(), i]), Expr::Float(0.0));
                        },
                    );
                }
            }
        });
        LoweredKernel {
            kernel: k.finish(),
            args: vec![input, Arg::Scratch(scratch)],
        }
    }

    /// The offset within a phased row of tap `kx` of output position `o` (+ `lanes`) on
    /// `axis`, and whether it lies inside the input (`None` when not `checked`: always).
    fn tap(
        &self,
        axis: &Axis,
        o: Expr,
        kx: usize,
        checked: bool,
        lanes: i64,
    ) -> (Expr, Option<Expr>) {
        let e = (kx * axis.dilation) as i64 - axis.pad as i64;
        let s = self.stride as i64;
        let (p, q) = (e.rem_euclid(s), e.div_euclid(s));
        let phase = Expr::Int(p * self.len as i64);
        if !checked {
            return (sum([phase, plus(o, q + lanes)]), None);
        }
        let ix = plus(times(o.clone(), self.stride), e);
        let valid = ix
            .clone()
            .cmp(CmpOp::Eq, ix.clamp(0, self.width as i64 - 1));
        (
            sum([phase, plus(o, q + lanes).clamp(0, self.len as i64 - 1)]),
            Some(valid),
        )
    }
}

fn lower_conv_transpose(node: &NodeInfo<'_>, attrs: &ConvTranspose) -> Result<Lowered> {
    let ops = operands(node)?;
    let (n, c) = (ops.batch, ops.channels);
    let (wc, mg) = (ops.w.shape[0], ops.w.shape[1]);
    let group = attrs.group;
    if group == 0 || c % group != 0 || wc != c {
        return Err(node_error(
            node,
            format!(
                "input {:?} and weights {:?} do not agree with group {group}",
                ops.x.shape, ops.w.shape
            ),
        ));
    }
    let m = mg * group;
    if let Some(b) = ops.b
        && b.shape != [m]
    {
        return Err(node_error(
            node,
            format!("bias {:?} must have shape [{m}]", b.shape),
        ));
    }
    let geometry = window::resolve_transpose(attrs, ops.spatial, ops.kernel)
        .map_err(|e| node_error(node, e))?;
    check_output(node, ops.y, n, m, &geometry.output)?;
    let cg = c / group;
    let plane: usize = ops.spatial.iter().product();
    let out_plane: usize = geometry.output.iter().product();
    let taps: usize = ops.kernel.iter().product();
    let rank = ops.spatial.len();
    let in_strides = strides(ops.spatial);
    let out_strides = strides(&geometry.output);
    let k_strides = strides(ops.kernel);

    let mut k = KernelBuilder::new(node.name);
    let xb = k.buffer("x", DType::F32, ops.x.len(), BufferKind::Input);
    let wb = k.buffer("w", DType::F32, ops.w.len(), BufferKind::Input);
    let bb = ops
        .b
        .map(|b| k.buffer("b", DType::F32, b.len(), BufferKind::Input));
    let yb = k.buffer("y", DType::F32, ops.y.len(), BufferKind::Output);
    let mut args = vec![Arg::Input(0), Arg::Input(1)];
    if bb.is_some() {
        args.push(Arg::Input(2));
    }
    args.push(Arg::Output(0));

    k.for_loop(0, (n * m) as i64, 1, LoopKind::Parallel, |k, nm| {
        let (batch, mi) = split(nm.clone(), n, m);
        let (g, mo) = if group == 1 {
            (Expr::Int(0), mi.clone())
        } else {
            let g = mi.clone().div(Expr::Int(mg as i64));
            let mo = mi
                .clone()
                .sub(g.clone().scale(mg as i64))
                .clamp(0, mg as i64 - 1);
            (g, mo)
        };
        let x_base = sum([times(batch, c * plane), times(g.clone(), cg * plane)]);
        let bias = bb.map(|b| Expr::load(b, mi.clone()));
        let y_base = times(nm, out_plane);
        nest(k, &geometry.output, &mut Vec::new(), &mut |k, outs| {
            let acc = k.declare(Ty::F32, Expr::Float(0.0));
            range_or_zero(k, cg, LoopKind::Serial, |k, cj| {
                let x_channel = sum([x_base.clone(), times(cj.clone(), plane)]);
                // w[(g * cg + cj) * mg + mo, taps...]
                let w_channel = times(sum([times(g.clone(), cg), cj]), mg * taps);
                let w_channel = sum([w_channel, times(mo.clone(), taps)]);
                nest(k, ops.kernel, &mut Vec::new(), &mut |k, js| {
                    let mut misses = Vec::new();
                    let mut offset = Vec::new();
                    for axis in 0..rank {
                        let (o, j) = (outs[axis].clone(), js[axis].clone());
                        let s = geometry.strides[axis] as i64;
                        let num = plus(o, geometry.pads_begin()[axis] as i64)
                            .sub(times(j, geometry.dilations[axis]));
                        let q = if s == 1 {
                            num.clone()
                        } else {
                            num.clone().div(Expr::Int(s))
                        };
                        if s != 1 {
                            misses.push(num.sub(q.clone().scale(s)).unary(UnOp::Abs));
                        }
                        let clamped = q.clone().clamp(0, ops.spatial[axis] as i64 - 1);
                        misses.push(q.sub(clamped.clone()).unary(UnOp::Abs));
                        offset.push(times(clamped, in_strides[axis]));
                    }
                    let valid = sum(misses).cmp(CmpOp::Eq, Expr::Int(0));
                    let tap = sum(js.iter().zip(&k_strides).map(|(j, s)| times(j.clone(), *s)));
                    let value = Expr::load(xb, sum([x_channel.clone(), sum(offset)]));
                    let weight = Expr::load(wb, sum([w_channel.clone(), tap]));
                    let value = valid.select(value, Expr::Float(0.0));
                    k.assign(acc, value.fma(weight, Expr::Local(acc)));
                });
            });
            let position = sum(outs
                .iter()
                .zip(&out_strides)
                .map(|(o, s)| times(o.clone(), *s)));
            let value = match &bias {
                Some(b) => Expr::Local(acc).add(b.clone()),
                None => Expr::Local(acc),
            };
            k.store(yb, sum([y_base.clone(), position]), value);
        });
    });
    Ok(Lowered::single(k.finish(), args))
}

/// Emits nested serial loops over `dims` (row-major) and calls `f` with the variables.
pub(super) fn nest(
    k: &mut KernelBuilder,
    dims: &[usize],
    vars: &mut Vec<Expr>,
    f: &mut dyn FnMut(&mut KernelBuilder, &[Expr]),
) {
    match dims.get(vars.len()) {
        None => f(k, vars),
        Some(&extent) => range_or_zero(k, extent, LoopKind::Serial, |k, v| {
            vars.push(v);
            nest(k, dims, vars, f);
            vars.pop();
        }),
    }
}

/// A harness for the tests of this family: lowers one node, compiles and runs its kernels
/// (splitting each parallel loop in two) and compares with the interpreter.
#[cfg(test)]
pub(super) mod testing {
    use std::sync::Arc;

    use super::super::{Arg, BufferKind, Lowered, NodeInfo, Operand, lower_node};
    use crate::codegen::{OptLevel, compile};
    use crate::graph::op::Op;
    use crate::tensor::{DType, Tensor, TensorData};

    enum Data {
        F32(Vec<f32>),
        I64(Vec<i64>),
    }

    impl Data {
        fn of(t: &Tensor) -> Data {
            match t.data() {
                TensorData::F32(v) => Data::F32(v.clone()),
                TensorData::I64(v) => Data::I64(v.clone()),
            }
        }

        fn filled(dtype: DType, len: usize) -> Data {
            match dtype {
                DType::F32 => Data::F32(vec![f32::from_bits(0x7fc0_1234); len]),
                DType::I64 => Data::I64(vec![i64::MIN; len]),
            }
        }

        fn ptr(&mut self) -> *mut u8 {
            match self {
                Data::F32(v) => v.as_mut_ptr().cast(),
                Data::I64(v) => v.as_mut_ptr().cast(),
            }
        }

        fn len(&self) -> usize {
            match self {
                Data::F32(v) => v.len(),
                Data::I64(v) => v.len(),
            }
        }
    }

    /// A deterministic pseudo-random tensor with values in [-1, 1).
    pub fn random(shape: &[usize], seed: u64) -> Tensor {
        let n = shape.iter().product();
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let data = (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect();
        Tensor::from_f32(shape.to_vec(), data).unwrap()
    }

    /// Lowers `op` on `inputs` (`(tensor, constant)`; `None` for an absent input), runs
    /// the kernels and checks every output against the interpreter. Returns the lowering.
    pub fn check(op: &Op, inputs: &[Option<(Tensor, bool)>], n_outputs: usize) -> Lowered {
        let refs: Vec<Option<&Tensor>> =
            inputs.iter().map(|i| i.as_ref().map(|(t, _)| t)).collect();
        let expected = crate::interp::eval(op, "n", &refs, n_outputs).unwrap();
        let node = NodeInfo {
            name: "n",
            op,
            inputs: inputs
                .iter()
                .map(|i| {
                    i.as_ref().map(|(t, constant)| Operand {
                        dtype: t.dtype(),
                        shape: t.shape().to_vec(),
                        value: constant.then(|| Arc::new(t.clone())),
                    })
                })
                .collect(),
            outputs: expected
                .iter()
                .map(|t| Operand {
                    dtype: t.dtype(),
                    shape: t.shape().to_vec(),
                    value: None,
                })
                .collect(),
        };
        let lowered = match lower_node(&node) {
            Ok(l) => l,
            Err(e) => panic!("{e}"),
        };
        let mut ins: Vec<Option<Data>> = inputs
            .iter()
            .map(|i| i.as_ref().map(|(t, _)| Data::of(t)))
            .collect();
        let mut outs: Vec<Data> = expected
            .iter()
            .map(|t| Data::filled(t.dtype(), t.len()))
            .collect();
        let mut scratch: Vec<Data> = lowered
            .scratch
            .iter()
            .map(|(d, n)| Data::filled(*d, *n))
            .collect();
        for lk in &lowered.kernels {
            let compiled = compile(&[(&lk.kernel, OptLevel::Speed)]).unwrap();
            let mut consts: Vec<Data> = Vec::new();
            let mut slots = Vec::new();
            for (b, arg) in lk.kernel.buffers.iter().zip(&lk.args) {
                if let (Arg::Const, BufferKind::Const(t)) = (arg, &b.kind) {
                    consts.push(Data::of(t));
                    slots.push((Arg::Const, consts.len() - 1));
                } else {
                    slots.push((*arg, 0));
                }
            }
            let mut ptrs = Vec::new();
            for ((arg, ci), b) in slots.iter().zip(&lk.kernel.buffers) {
                let data = match arg {
                    Arg::Input(i) => ins[*i].as_mut().expect("bound input is present"),
                    Arg::Output(i) => &mut outs[*i],
                    Arg::Scratch(i) => &mut scratch[*i],
                    Arg::Const => &mut consts[*ci],
                };
                assert_eq!(data.len(), b.len, "buffer {} length", b.name);
                ptrs.push(data.ptr());
            }
            let ranges = match lk.kernel.parallel_loop() {
                Some(l) => {
                    let mid = l.start + (l.end - l.start) / 2;
                    vec![(l.start, mid), (mid, l.end)]
                }
                None => vec![(0, 0)],
            };
            for (lo, hi) in ranges {
                // SAFETY: every buffer pointer is bound to data of the kernel's declared length.
                unsafe { (compiled[0].func)(ptrs.as_ptr(), lo, hi) };
            }
        }
        for (i, (want, got)) in expected.iter().zip(&outs).enumerate() {
            match (want.data(), got) {
                (TensorData::F32(w), Data::F32(g)) => {
                    for (j, (a, b)) in w.iter().zip(g).enumerate() {
                        let ok = (a.is_nan() && b.is_nan())
                            || a == b
                            || (a - b).abs() <= 1e-5 + 1e-4 * a.abs().max(b.abs());
                        assert!(
                            ok,
                            "{op:?}: output {i} element {j}: want {a}, got {b}\n{}",
                            lowered.kernels[0].kernel
                        );
                    }
                }
                (TensorData::I64(w), Data::I64(g)) => assert_eq!(w, g, "{op:?}: output {i}"),
                _ => panic!("output {i}: dtype differs"),
            }
        }
        lowered
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{check, random};
    use crate::graph::op::{AutoPad, Conv, ConvTranspose, Op, Window};
    use crate::tensor::Tensor;

    fn window(pads: &[usize], strides: &[usize], dilations: &[usize]) -> Window {
        Window {
            pads: pads.to_vec(),
            strides: strides.to_vec(),
            dilations: dilations.to_vec(),
            ..Window::default()
        }
    }

    fn conv(x: &[usize], w: &[usize], bias: bool, window: Window, group: usize) {
        let op = Op::Conv(Conv { window, group });
        let b = bias.then(|| (random(&[w[0]], 3), true));
        for constant in [true, false] {
            check(
                &op,
                &[
                    Some((random(x, 1), false)),
                    Some((random(w, 2), constant)),
                    b.clone(),
                ],
                1,
            );
        }
    }

    #[test]
    fn conv_2d_stride_1_padded_vectorises_the_interior() {
        conv(
            &[1, 3, 9, 37],
            &[4, 3, 3, 3],
            true,
            window(&[1, 1, 1, 1], &[], &[]),
            1,
        );
        conv(
            &[2, 2, 6, 21],
            &[3, 2, 3, 2],
            false,
            window(&[2, 0, 1, 3], &[], &[]),
            1,
        );
        conv(
            &[1, 2, 7, 30],
            &[2, 2, 3, 3],
            true,
            window(&[1, 2, 1, 2], &[], &[2, 2]),
            1,
        );
    }

    #[test]
    fn conv_pointwise_strided_grouped_and_depthwise() {
        conv(&[2, 8, 5, 7], &[6, 8, 1, 1], true, window(&[], &[], &[]), 1);
        conv(
            &[1, 3, 15, 15],
            &[5, 3, 7, 7],
            true,
            window(&[3, 3, 3, 3], &[2, 2], &[]),
            1,
        );
        conv(
            &[1, 4, 9, 9],
            &[6, 2, 3, 3],
            true,
            window(&[1, 1, 1, 1], &[1, 2], &[]),
            2,
        );
        conv(
            &[2, 6, 10, 23],
            &[6, 1, 3, 3],
            true,
            window(&[1, 1, 1, 1], &[], &[]),
            6,
        );
        conv(
            &[1, 1, 4, 4],
            &[1, 1, 5, 5],
            false,
            window(&[2, 2, 2, 2], &[], &[]),
            1,
        );
    }

    #[test]
    fn strided_rows_read_a_phase_split_copy() {
        let lowered = check(
            &Op::Conv(Conv {
                window: window(&[3, 3, 3, 3], &[2, 2], &[]),
                group: 1,
            }),
            &[Some((random(&[2, 3, 20, 45], 1), false)), Some((random(&[4, 3, 7, 7], 2), true)), None],
            1,
        );
        assert_eq!(lowered.kernels.len(), 2);
        assert_eq!(lowered.scratch, [(crate::tensor::DType::F32, 2 * 3 * 20 * 46)]);
        conv(&[1, 2, 5, 50], &[3, 2, 2, 3], true, window(&[0, 2, 1, 0], &[1, 3], &[1, 2]), 1);
        conv(&[1, 4, 11, 37], &[4, 1, 3, 3], true, window(&[1, 1, 1, 1], &[2, 2], &[]), 4);
        conv(&[1, 2, 61], &[2, 2, 5], false, window(&[1, 4], &[4], &[2]), 1);
        conv(&[1, 2, 3, 4, 33], &[2, 2, 1, 2, 3], false, window(&[0, 1, 1, 0, 0, 2], &[1, 1, 2], &[]), 1);
    }

    #[test]
    fn conv_1d_and_3d_and_auto_pad() {
        conv(&[1, 2, 40], &[3, 2, 4], true, window(&[2, 1], &[], &[3]), 1);
        conv(
            &[1, 2, 4, 5, 9],
            &[2, 2, 3, 2, 3],
            true,
            window(&[1, 0, 1, 1, 1, 1], &[1, 2, 1], &[]),
            1,
        );
        let same = Window {
            auto_pad: AutoPad::SameLower,
            strides: vec![2, 1],
            ..Window::default()
        };
        conv(&[1, 2, 7, 11], &[2, 2, 4, 4], false, same, 1);
    }

    fn transpose(
        x: &[usize],
        w: &[usize],
        group: usize,
        window: Window,
        output_padding: &[usize],
        output_shape: &[usize],
    ) {
        let op = Op::ConvTranspose(ConvTranspose {
            window,
            group,
            output_padding: output_padding.to_vec(),
            output_shape: output_shape.to_vec(),
        });
        let b = (random(&[w[1] * group], 3), true);
        check(
            &op,
            &[
                Some((random(x, 1), false)),
                Some((random(w, 2), true)),
                Some(b),
            ],
            1,
        );
        check(
            &op,
            &[
                Some((random(x, 1), false)),
                Some((random(w, 2), false)),
                None,
            ],
            1,
        );
    }

    #[test]
    fn conv_transpose_geometries() {
        transpose(
            &[1, 2, 5, 6],
            &[2, 3, 3, 3],
            1,
            window(&[], &[], &[]),
            &[],
            &[],
        );
        transpose(
            &[2, 2, 4, 5],
            &[2, 2, 3, 2],
            1,
            window(&[1, 0, 2, 1], &[3, 2], &[2, 1]),
            &[1, 1],
            &[],
        );
        transpose(
            &[1, 4, 3, 3],
            &[4, 2, 3, 3],
            2,
            window(&[], &[2, 2], &[]),
            &[],
            &[],
        );
        transpose(
            &[1, 1, 5],
            &[1, 2, 3],
            1,
            window(&[], &[3], &[]),
            &[],
            &[20],
        );
        transpose(
            &[1, 2, 3, 4, 2],
            &[2, 1, 2, 3, 2],
            1,
            window(&[], &[2, 1, 2], &[]),
            &[],
            &[],
        );
        let same = Window {
            auto_pad: AutoPad::SameUpper,
            strides: vec![2, 2],
            ..Window::default()
        };
        transpose(&[1, 1, 3, 3], &[1, 2, 3, 3], 1, same, &[], &[]);
    }

    #[test]
    fn padding_contributes_zero_even_next_to_infinities() {
        let op = Op::Conv(Conv {
            window: window(&[1, 1, 1, 1], &[], &[]),
            group: 1,
        });
        let mut x = random(&[1, 1, 4, 6], 1);
        if let Some(v) = x.as_f32_mut() {
            v[0] = f32::INFINITY;
            v[23] = f32::NAN;
        }
        let w = Tensor::from_f32(vec![1, 1, 3, 3], vec![0.5; 9]).unwrap();
        check(&op, &[Some((x, false)), Some((w, true)), None], 1);
    }
}
