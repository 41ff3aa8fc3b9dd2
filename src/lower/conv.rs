//! Lowering of the conv ops (see [`super`] for the conventions), and the sliding-window
//! helpers that pooling shares.
//!
//! - `conv`: one parallel iteration per (batch, output channel) plane. A first kernel
//!   copies the input into a [`Layout`]: zero-padded on every spatial axis and, along the
//!   last axis, split by stride phase, so that the taps of consecutive outputs are
//!   consecutive elements (no copy when there is no padding and the stride is 1). The
//!   convolution kernel then needs no bounds checks: it computes register blocks of up to
//!   eight `f32x4` accumulators (vectors along a row, and several rows when rows are
//!   short) that share each weight, the last-axis taps unrolled. Each output sums over the
//!   group's input channels, then the kernel taps (row-major), from 0 (padding adds 0 × w,
//!   as in the interpreter), and the bias is added last. A 1×1 kernel with stride 1 and no
//!   padding treats the whole plane as one row. Kernels wider than [`MAX_ROW_TAPS`] along
//!   the last axis read the input directly, with the checked walkers below.
//! - `conv_transpose`: a gather: each output position sums, over the group's input channels
//!   and the kernel taps, the input position that maps onto it (`x * stride + tap *
//!   dilation = out + pad`), found with an exact division and masked when there is none.
//!
//! The walkers ([`for_each_segment`], [`for_each_tap`], [`walk_row`]) visit output
//! positions per spatial axis in up to three regions: the *interior*, where every kernel
//! tap lands inside the input, and the borders before and after it, where taps are clamped
//! into the input and masked by a select.

use super::epilogue::{Epilogue, StoreAt};
use super::ir::{BufId, CmpOp, LocalId, UnOp};
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
const VECTORS: usize = 8;

/// Loads of 4 from `buf` at offsets from `base`, each declared once in the kernel's code
/// however many taps read it (a stride-2 tap pair's two loads, see [`stride2_loads`]).
pub(super) struct Loads {
    buf: BufId,
    base: Expr,
    declared: Vec<(i64, LocalId)>,
}

impl Loads {
    pub fn new(buf: BufId, base: Expr) -> Loads {
        Loads {
            buf,
            base,
            declared: Vec::new(),
        }
    }

    /// The 4 elements at `offset` from the base.
    pub fn at(&mut self, k: &mut KernelBuilder, offset: i64) -> Expr {
        if let Some(&(_, local)) = self.declared.iter().find(|(o, _)| *o == offset) {
            return Expr::Local(local);
        }
        let value = Expr::load4(self.buf, plus(self.base.clone(), offset));
        let local = k.declare(Ty::F32x4, value);
        self.declared.push((offset, local));
        Expr::Local(local)
    }
}

/// With stride 2 along a row (no dilation), where tap `kx` of a row of `kernel` taps reads
/// every other element for 4 consecutive outputs: the offsets, from the row's first tap
/// element, of its two loads of 4, and the lanes of the 8 loaded that the tap takes. Taps
/// `2j` and `2j + 1` share their loads (the even and the odd elements of 8, so a caller
/// that keeps the loads reads them once per pair); a last even tap reads columns
/// `kx .. kx + 6` and no further.
pub(super) fn stride2_loads(kx: usize, kernel: usize) -> ([usize; 2], [u8; 4]) {
    let even = kx - kx % 2;
    if kx % 2 == 1 {
        ([even, even + 4], [1, 3, 5, 7])
    } else if kx + 1 < kernel {
        ([kx, kx + 4], [0, 2, 4, 6])
    } else {
        ([kx, kx + 3], [0, 2, 5, 7])
    }
}

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
/// The greatest common divisor of `a` and `b`.
pub(super) fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

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

/// Whether every axis is a 1×1 window with stride 1 and no padding: the plane is then one
/// contiguous axis, the same for input and output.
pub(super) fn pointwise(axes: &[Axis]) -> bool {
    axes.iter()
        .all(|a| a.kernel == 1 && a.stride == 1 && a.pad == 0 && a.output == a.input)
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
/// vectors, then one vector overlapping the previous ones to finish the segment), and one
/// position at a time (`vectors` = 0) for the rest. `f` must compute each position's output
/// from the inputs alone, so that computing it twice stores the same value.
pub(super) fn walk_row(
    k: &mut KernelBuilder,
    segment: &Segment,
    vectorize: bool,
    f: &mut dyn FnMut(&mut KernelBuilder, Expr, usize),
) {
    let mut pos = segment.start;
    if vectorize {
        // Blocks of VECTORS vectors, then one block of the whole vectors left.
        while segment.end - pos >= 4 {
            let vectors = ((segment.end - pos) / 4).min(VECTORS);
            let width = 4 * vectors;
            let steps = if vectors == VECTORS {
                (segment.end - pos) / width
            } else {
                1
            };
            let end = pos + steps * width;
            if steps == 1 {
                f(k, Expr::Int(pos as i64), vectors);
            } else {
                k.for_loop(
                    pos as i64,
                    end as i64,
                    width as i64,
                    LoopKind::Serial,
                    |k, o| f(k, o, vectors),
                );
            }
            pos = end;
        }
        if pos < segment.end && segment.end - segment.start >= 4 {
            // The last few positions: one vector ending at the segment's end, overlapping
            // positions already computed (they are computed again, identically).
            f(k, Expr::Int(segment.end as i64 - 4), 1);
            pos = segment.end;
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
/// A convolution applies `epi` to every output value before its store; a transposed
/// convolution takes no epilogue.
pub(super) fn lower(node: &NodeInfo<'_>, epi: &Epilogue) -> Result<Lowered> {
    match node.op {
        Op::Conv(attrs) => lower_conv(node, attrs, epi),
        Op::ConvTranspose(attrs) if epi.is_empty() => lower_conv_transpose(node, attrs),
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

/// A convolution's operands and geometry, checked.
struct Checked<'a> {
    ops: Operands<'a>,
    m: usize,
    cg: usize,
    group: usize,
    geometry: ResolvedWindow,
}

fn checked<'a>(node: &'a NodeInfo<'_>, attrs: &Conv) -> Result<Checked<'a>> {
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
    Ok(Checked {
        ops,
        m,
        cg,
        group,
        geometry,
    })
}

/// Calls `f` with the register-blocked kernels' view of the convolution `node` (whose
/// kernels apply `epi`), when its weights and bias are constants; `Ok(None)` when they are
/// not or `f` declines.
pub(super) fn with_direct<R>(
    node: &NodeInfo<'_>,
    epi: &Epilogue,
    f: impl FnOnce(&super::direct_conv::DirectConv<'_>) -> Option<R>,
) -> Result<Option<R>> {
    let Op::Conv(attrs) = node.op else {
        return Ok(None);
    };
    let Checked {
        ops,
        m,
        group,
        geometry,
        ..
    } = checked(node, attrs)?;
    let axes = Axis::from_window(&geometry, ops.spatial);
    let (Some(weights), true) = (&ops.w.value, ops.b.is_none_or(|b| b.value.is_some())) else {
        return Ok(None);
    };
    Ok(f(&super::direct_conv::DirectConv {
        n: ops.batch,
        c: ops.channels,
        m,
        group,
        axes: &axes,
        weights,
        bias: ops.b.and_then(|b| b.value.as_deref()),
        epilogue: epi,
        blocked: node.blocked,
    }))
}

fn lower_conv(node: &NodeInfo<'_>, attrs: &Conv, epi: &Epilogue) -> Result<Lowered> {
    let direct = with_direct(node, epi, |direct| {
        if node.blocked.any() {
            // Only these two store or load tensors in blocks of 8 channels.
            return super::winograd::lower(node, direct)
                .or_else(|| super::direct_conv::lower(node, direct));
        }
        super::winograd::lower(node, direct)
            .or_else(|| super::pointwise::lower(node, direct))
            .or_else(|| super::direct_conv::lower(node, direct))
            .or_else(|| super::depthwise::lower(node, direct))
    })?;
    if let Some(lowered) = direct {
        return Ok(lowered);
    }
    if node.blocked.any() {
        return Err(Error::internal(format!(
            "node {}: no kernel stores or loads its tensors in blocks of 8 channels as asked \
             ({:?})",
            node.name, node.blocked
        )));
    }
    let Checked {
        ops,
        m,
        cg,
        group,
        geometry,
    } = checked(node, attrs)?;
    let (n, c) = (ops.batch, ops.channels);
    let plane: usize = ops.spatial.iter().product();
    let out_plane: usize = geometry.output.iter().product();
    let taps: usize = ops.kernel.iter().product();
    let mut axes = Axis::from_window(&geometry, ops.spatial);
    if pointwise(&axes) {
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
    let mut shape = ConvShape {
        n,
        c,
        m,
        cg,
        group,
        taps,
        out_plane,
        out_strides: strides(&axes.iter().map(|a| a.output).collect::<Vec<_>>()),
        x_plane: plane,
        x_len: ops.x.len(),
        w_len: ops.w.len(),
        b_len: ops.b.map(Operand::len),
        y_len: ops.y.len(),
        epilogue: epi.clone(),
    };
    if axes.last().is_none_or(|a| a.kernel > MAX_ROW_TAPS) {
        return Ok(Lowered::single(
            general_conv(node.name, &axes, &shape),
            shape.args(Arg::Input(0)),
        ));
    }
    let layout = Layout::new(&axes, n * c);
    let mut lowered = Lowered::default();
    let x_arg = if layout.copy {
        lowered.scratch.push((DType::F32, layout.len()));
        lowered
            .kernels
            .push(layout.kernel(&format!("{}_pad", node.name), Arg::Input(0), 0));
        Arg::Scratch(0)
    } else {
        Arg::Input(0)
    };
    shape.x_plane = layout.plane_len();
    shape.x_len = layout.len();
    lowered.kernels.push(LoweredKernel {
        kernel: row_conv(node.name, &layout, &shape),
        args: shape.args(x_arg),
    });
    Ok(lowered)
}

/// Widest kernel along the last axis that [`row_conv`] unrolls; wider ones take
/// [`general_conv`].
const MAX_ROW_TAPS: usize = 32;

/// Sizes of a convolution and its buffers.
struct ConvShape {
    n: usize,
    c: usize,
    m: usize,
    cg: usize,
    group: usize,
    taps: usize,
    out_plane: usize,
    out_strides: Vec<usize>,
    /// Elements per (batch, channel) plane of the input buffer the kernel reads.
    x_plane: usize,
    x_len: usize,
    w_len: usize,
    b_len: Option<usize>,
    y_len: usize,
    /// Applied to each output value before its store.
    epilogue: Epilogue,
}

/// The buffers of a convolution kernel and what each parallel iteration works on.
struct ConvFrame {
    x: super::ir::BufId,
    w: super::ir::BufId,
    y: super::ir::BufId,
    /// First element of the iteration's group in the input buffer.
    x_base: Expr,
    /// First weight of the iteration's output channel.
    w_base: Expr,
    /// First element of the iteration's output plane.
    y_base: Expr,
    bias: Option<Expr>,
    /// The iteration's output channel.
    channel: Expr,
    /// The epilogue's extra operands.
    extras: Vec<super::ir::BufId>,
}

impl ConvShape {
    /// The bindings of the kernel's buffers (x, w, optionally b, y, extras...).
    fn args(&self, x: Arg) -> Vec<Arg> {
        let mut args = vec![x, Arg::Input(1)];
        if self.b_len.is_some() {
            args.push(Arg::Input(2));
        }
        args.push(Arg::Output(0));
        args.extend(self.epilogue.args());
        args
    }

    /// Declares the buffers and the parallel loop over (batch, output channel) planes, and
    /// calls `body` inside it.
    fn kernel(
        &self,
        name: &str,
        body: &mut dyn FnMut(&mut KernelBuilder, &ConvFrame),
    ) -> super::Kernel {
        let mut k = KernelBuilder::new(name);
        let x = k.buffer("x", DType::F32, self.x_len, BufferKind::Input);
        let w = k.buffer("w", DType::F32, self.w_len, BufferKind::Input);
        let b = self
            .b_len
            .map(|len| k.buffer("b", DType::F32, len, BufferKind::Input));
        let y = k.buffer("y", DType::F32, self.y_len, BufferKind::Output);
        let extras = self.epilogue.declare(&mut k);
        let mg = self.m / self.group.max(1);
        k.for_loop(
            0,
            (self.n * self.m) as i64,
            1,
            LoopKind::Parallel,
            |k, nm| {
                let (batch, mi) = split(nm.clone(), self.n, self.m);
                let g = if self.group == 1 {
                    Expr::Int(0)
                } else if mg == 1 {
                    mi.clone()
                } else {
                    mi.clone().div(Expr::Int(mg as i64))
                };
                let frame = ConvFrame {
                    x,
                    w,
                    y,
                    x_base: sum([
                        times(batch, self.c * self.x_plane),
                        times(g, self.cg * self.x_plane),
                    ]),
                    w_base: times(mi.clone(), self.cg * self.taps),
                    y_base: times(nm, self.out_plane),
                    bias: b.map(|b| Expr::load(b, mi.clone())),
                    channel: mi,
                    extras: extras.clone(),
                };
                body(k, &frame);
            },
        );
        k.finish()
    }

    /// Declares `max(vectors, 1)` accumulators (`f32x4`, or one `f32` when `vectors` is 0).
    fn accumulators(k: &mut KernelBuilder, vectors: usize) -> Vec<super::ir::LocalId> {
        let (ty, zero) = if vectors > 0 {
            (Ty::F32x4, Expr::Float(0.0).splat())
        } else {
            (Ty::F32, Expr::Float(0.0))
        };
        (0..vectors.max(1))
            .map(|_| k.declare(ty, zero.clone()))
            .collect()
    }

    /// Stores the accumulators (plus the bias, then the epilogue) at output position
    /// `outs`.
    fn store(
        &self,
        k: &mut KernelBuilder,
        f: &ConvFrame,
        outs: &[(Expr, bool)],
        accs: &[super::ir::LocalId],
        vectors: usize,
    ) {
        let position = sum(outs
            .iter()
            .zip(&self.out_strides)
            .map(|((o, _), s)| times(o.clone(), *s)));
        for (u, acc) in accs.iter().enumerate() {
            let index = plus(sum([f.y_base.clone(), position.clone()]), 4 * u as i64);
            let value = match &f.bias {
                Some(b) if vectors > 0 => Expr::Local(*acc).add(b.clone().splat()),
                Some(b) => Expr::Local(*acc).add(b.clone()),
                None => Expr::Local(*acc),
            };
            let lanes = if vectors > 0 { 4 } else { 1 };
            let at = StoreAt {
                index,
                channel: f.channel.clone(),
            };
            self.epilogue.store(k, &f.extras, f.y, &at, value, lanes);
        }
    }
}

/// `acc[u] += x[index(u)] * weight` for each accumulator, the value masked (to 0) by each
/// condition `index(u)` returns.
fn accumulate(
    k: &mut KernelBuilder,
    x: super::ir::BufId,
    accs: &[super::ir::LocalId],
    vectors: usize,
    index: &dyn Fn(usize) -> (Expr, Vec<Expr>),
    weight: Expr,
) {
    let weight = if vectors > 0 { weight.splat() } else { weight };
    for (u, acc) in accs.iter().enumerate() {
        let (at, valid) = index(u);
        let value = if vectors > 0 {
            Expr::load4(x, at)
        } else {
            Expr::load(x, at)
        };
        let value = valid
            .into_iter()
            .fold(value, |v, c| c.select(v, Expr::Float(0.0)));
        k.assign(*acc, value.fma(weight.clone(), Expr::Local(*acc)));
    }
}

/// Accumulators of one register block of [`row_conv`].
const BLOCK_ACCUMULATORS: usize = 8;

/// The convolution kernel over a [`Layout`] (no padding left to check). Output positions
/// are computed in register blocks of up to [`BLOCK_ACCUMULATORS`] accumulators sharing
/// each weight: vectors of four positions along a row (the last one overlapping the one
/// before when the row is not a multiple of 4), and for rows of fewer than 8 vectors,
/// several rows at once (the last block of rows overlapping likewise). Rows narrower than 4
/// use scalars. The last-axis taps are unrolled.
fn row_conv(name: &str, layout: &Layout, shape: &ConvShape) -> super::Kernel {
    let rank = layout.axes.len();
    let ow = layout.axes[rank - 1].output;
    let oh = if rank >= 2 {
        layout.axes[rank - 2].output
    } else {
        1
    };
    let vector = ow >= 4;
    // Starts of the vectors (or scalar positions) of one row.
    let starts: Vec<usize> = if vector {
        (0..ow / 4)
            .map(|i| 4 * i)
            .chain((!ow.is_multiple_of(4)).then_some(ow - 4))
            .collect()
    } else {
        (0..ow).collect()
    };
    let wide = starts.len() > BLOCK_ACCUMULATORS;
    let rows = if wide || rank < 2 {
        1
    } else {
        (BLOCK_ACCUMULATORS / starts.len()).clamp(1, oh)
    };
    let outer: Vec<usize> = layout.axes[..rank.saturating_sub(2)]
        .iter()
        .map(|a| a.output)
        .collect();
    shape.kernel(name, &mut |k, f| {
        nest(k, &outer, &mut Vec::new(), &mut |k, outer| {
            let row_block = |k: &mut KernelBuilder, oy: Expr| {
                let block = |k: &mut KernelBuilder, xs: &[Expr]| {
                    conv_block(k, layout, shape, f, outer, &oy, rows, xs, vector)
                };
                if !wide {
                    let xs: Vec<Expr> = starts.iter().map(|&x| Expr::Int(x as i64)).collect();
                    block(k, &xs);
                    return;
                }
                let width = 4 * BLOCK_ACCUMULATORS;
                let full = ow / width * width;
                k.for_loop(0, full as i64, width as i64, LoopKind::Serial, |k, x| {
                    let xs: Vec<Expr> = (0..BLOCK_ACCUMULATORS)
                        .map(|u| plus(x.clone(), 4 * u as i64))
                        .collect();
                    block(k, &xs);
                });
                let rest: Vec<Expr> = starts
                    .iter()
                    .filter(|&&x| x + 4 > full)
                    .map(|&x| Expr::Int(x as i64))
                    .collect();
                if full < ow {
                    block(k, &rest);
                }
            };
            if rank < 2 {
                row_block(k, Expr::Int(0));
                return;
            }
            let full = oh / rows * rows;
            if full == rows {
                row_block(k, Expr::Int(0));
            } else {
                k.for_loop(0, full as i64, rows as i64, LoopKind::Serial, |k, oy| {
                    row_block(k, oy)
                });
            }
            if full < oh {
                row_block(k, Expr::Int((oh - rows) as i64));
            }
        });
    })
}

/// One register block of [`row_conv`]: output rows `oy..oy + rows` (of the position `outer`
/// on the other axes), at the vector starts (or scalar positions) `xs` of each row.
#[allow(clippy::too_many_arguments)]
fn conv_block(
    k: &mut KernelBuilder,
    layout: &Layout,
    shape: &ConvShape,
    f: &ConvFrame,
    outer: &[Expr],
    oy: &Expr,
    rows: usize,
    xs: &[Expr],
    vector: bool,
) {
    let rank = layout.axes.len();
    let last = &layout.axes[rank - 1];
    let vectors = if vector { 1 } else { 0 };
    let accs: Vec<Vec<super::ir::LocalId>> = (0..rows)
        .map(|_| {
            xs.iter()
                .flat_map(|_| ConvShape::accumulators(k, vectors))
                .collect()
        })
        .collect();
    // Output coordinates of the block's first row on every axis but the last.
    let mut outs: Vec<(Expr, bool)> = outer.iter().map(|o| (o.clone(), false)).collect();
    if rank >= 2 {
        outs.push((oy.clone(), false));
    }
    let row_step = if rank >= 2 {
        layout.axes[rank - 2].stride
    } else {
        0
    };
    range_or_zero(k, shape.cg, LoopKind::Serial, |k, ci| {
        let x_channel = sum([f.x_base.clone(), times(ci.clone(), shape.x_plane)]);
        let w_channel = sum([f.w_base.clone(), times(ci, shape.taps)]);
        for_each_tap(k, &layout.axes[..rank - 1], &outs, &mut |k, tap| {
            let w_row = sum([w_channel.clone(), times(tap.tap.clone(), last.kernel)]);
            for kx in 0..last.kernel {
                let weight = Expr::load(f.w, plus(w_row.clone(), kx as i64));
                let weight = if vector { weight.splat() } else { weight };
                for (r, row_accs) in accs.iter().enumerate() {
                    let row = sum([
                        x_channel.clone(),
                        times(
                            plus(tap.offset.clone(), (r * row_step) as i64),
                            layout.row_len(),
                        ),
                    ]);
                    for (x, acc) in xs.iter().zip(row_accs) {
                        let at = sum([row.clone(), layout.tap(kx, x.clone())]);
                        let value = if vector {
                            Expr::load4(f.x, at)
                        } else {
                            Expr::load(f.x, at)
                        };
                        k.assign(*acc, value.fma(weight.clone(), Expr::Local(*acc)));
                    }
                }
            }
        });
    });
    for (r, row_accs) in accs.iter().enumerate() {
        let mut position: Vec<(Expr, bool)> = outs.clone();
        if let Some(last_row) = position.last_mut().filter(|_| rank >= 2) {
            last_row.0 = plus(oy.clone(), r as i64);
        }
        for (x, acc) in xs.iter().zip(row_accs) {
            let mut at = position.clone();
            at.push((x.clone(), false));
            shape.store(k, f, &at, std::slice::from_ref(acc), vectors);
        }
    }
}

/// The convolution kernel for any geometry, reading the input directly: border taps are
/// clamped and masked; rows are vectorised only with stride 1.
fn general_conv(name: &str, axes: &[Axis], shape: &ConvShape) -> super::Kernel {
    let unit_stride = axes.last().is_some_and(|a| a.stride == 1);
    shape.kernel(name, &mut |k, f| {
        for_each_segment(k, axes, &mut |k, segment| {
            walk_row(
                k,
                segment,
                !segment.checked && unit_stride,
                &mut |k, o, vectors| {
                    let accs = ConvShape::accumulators(k, vectors);
                    let outs = segment.coords(o.clone());
                    range_or_zero(k, shape.cg, LoopKind::Serial, |k, ci| {
                        let x_channel = sum([f.x_base.clone(), times(ci.clone(), shape.x_plane)]);
                        let w_channel = sum([f.w_base.clone(), times(ci, shape.taps)]);
                        for_each_tap(k, axes, &outs, &mut |k, tap| {
                            let weight = Expr::load(f.w, sum([w_channel.clone(), tap.tap.clone()]));
                            let index = |u: usize| {
                                let at = plus(
                                    sum([x_channel.clone(), tap.offset.clone()]),
                                    4 * u as i64,
                                );
                                (at, tap.valid.iter().cloned().collect())
                            };
                            accumulate(k, f.x, &accs, vectors, &index, weight);
                        });
                    });
                    shape.store(k, f, &outs, &accs, vectors);
                },
            );
        });
    })
}

/// The input as a convolution reads it: each plane padded on every spatial axis to the
/// extent its windows reach, and the last axis split by stride phase, so that a window's
/// taps along it are consecutive elements for consecutive outputs:
/// `copy[plane, rows..., p, i] = x[plane, rows... - pads, i * stride + p - pad]` (0 in the
/// padding). Without padding and with stride 1 the input itself has this layout.
pub(super) struct Layout {
    /// The window axes over the padded input (no padding left).
    pub axes: Vec<Axis>,
    /// Unpadded input size and begin padding per axis.
    input: Vec<usize>,
    pads: Vec<usize>,
    /// Elements per phase of the last axis.
    phase_len: usize,
    /// Number of (batch, channel) planes.
    planes: usize,
    /// Whether the layout is a copy (else it is the input itself).
    pub copy: bool,
}

impl Layout {
    pub fn new(axes: &[Axis], planes: usize) -> Layout {
        let rank = axes.len();
        // Padded extent each axis's windows reach.
        let reach =
            |a: &Axis| (a.output.max(1) - 1) * a.stride + (a.kernel.max(1) - 1) * a.dilation + 1;
        let copy =
            axes.iter().any(|a| a.pad > 0 || reach(a) > a.input) || axes[rank - 1].stride > 1;
        let padded: Vec<Axis> = axes
            .iter()
            .map(|a| Axis {
                input: if copy { reach(a) } else { a.input },
                pad: 0,
                ..a.clone()
            })
            .collect();
        let last = &padded[rank - 1];
        Layout {
            phase_len: last.input.div_ceil(last.stride),
            axes: padded,
            input: axes.iter().map(|a| a.input).collect(),
            pads: axes.iter().map(|a| a.pad).collect(),
            planes,
            copy,
        }
    }

    fn stride(&self) -> usize {
        self.axes.last().map_or(1, |a| a.stride)
    }

    /// Elements per row (all phases of the last axis).
    pub fn row_len(&self) -> usize {
        if self.copy {
            self.stride() * self.phase_len
        } else {
            self.phase_len
        }
    }

    /// Elements per plane.
    pub fn plane_len(&self) -> usize {
        let rank = self.axes.len();
        self.axes[..rank - 1]
            .iter()
            .map(|a| a.input)
            .product::<usize>()
            * self.row_len()
    }

    /// Elements in all.
    pub fn len(&self) -> usize {
        self.planes * self.plane_len()
    }

    /// The offset within a row of last-axis tap `kx` of output position `o`.
    pub fn tap(&self, kx: usize, o: Expr) -> Expr {
        let Some(last) = self.axes.last() else {
            return o;
        };
        let e = kx * last.dilation;
        let (p, q) = (e % last.stride, e / last.stride);
        sum([Expr::Int((p * self.phase_len) as i64), plus(o, q as i64)])
    }

    /// The kernel writing the layout of input `input` into scratch buffer `scratch`.
    pub fn kernel(&self, name: &str, input: Arg, scratch: usize) -> LoweredKernel {
        let rank = self.axes.len();
        let in_plane: usize = self.input.iter().product();
        let mut k = KernelBuilder::new(name);
        let x = k.buffer("x", DType::F32, self.planes * in_plane, BufferKind::Input);
        let xs = k.buffer("x_padded", DType::F32, self.len(), BufferKind::Output);
        let in_strides = strides(&self.input);
        let row_strides = strides(
            &self.axes[..rank - 1]
                .iter()
                .map(|a| a.input)
                .collect::<Vec<_>>(),
        );
        k.for_loop(0, self.planes as i64, 1, LoopKind::Parallel, |k, plane| {
            let dst_plane = times(plane.clone(), self.plane_len());
            let src_plane = times(plane, in_plane);
            self.rows(k, &mut Vec::new(), &mut |k, rows| {
                let dst = sum([
                    dst_plane.clone(),
                    times(
                        sum(rows
                            .iter()
                            .zip(&row_strides)
                            .map(|((r, _), s)| times(r.clone(), *s))),
                        self.row_len(),
                    ),
                ]);
                if rows.iter().any(|(_, inside)| !inside) {
                    fill(k, xs, &dst, self.row_len(), None);
                    return;
                }
                let src = sum([
                    src_plane.clone(),
                    sum(rows.iter().enumerate().map(|(a, (r, _))| {
                        times(plus(r.clone(), -(self.pads[a] as i64)), in_strides[a])
                    })),
                ]);
                let (s, pad, width) = (self.stride(), self.pads[rank - 1], self.input[rank - 1]);
                for p in 0..s {
                    // Elements i of phase p with 0 <= i * s + p - pad < width.
                    let begin = pad.saturating_sub(p).div_ceil(s).min(self.phase_len);
                    let end = (pad + width)
                        .saturating_sub(p)
                        .div_ceil(s)
                        .clamp(begin, self.phase_len);
                    let phase = plus(dst.clone(), (p * self.phase_len) as i64);
                    fill(k, xs, &phase, begin, None);
                    let from = plus(src.clone(), (begin * s + p) as i64 - pad as i64);
                    fill(
                        k,
                        xs,
                        &plus(phase.clone(), begin as i64),
                        end - begin,
                        Some((x, from, s)),
                    );
                    fill(k, xs, &plus(phase, end as i64), self.phase_len - end, None);
                }
            });
        });
        LoweredKernel {
            kernel: k.finish(),
            args: vec![input, Arg::Scratch(scratch)],
        }
    }

    /// Emits loops over the padded rows (every axis but the last), calling `f` with each
    /// row coordinate and whether it lies inside the input.
    fn rows(&self, k: &mut KernelBuilder, rows: &mut Vec<(Expr, bool)>, f: &mut RowFn<'_>) {
        let axis = rows.len();
        if axis + 1 >= self.axes.len() {
            f(k, rows);
            return;
        }
        let size = self.axes[axis].input;
        let begin = self.pads[axis].min(size);
        let end = (self.pads[axis] + self.input[axis]).clamp(begin, size);
        for (start, stop, inside) in [(0, begin, false), (begin, end, true), (end, size, false)] {
            if start < stop {
                k.for_loop(start as i64, stop as i64, 1, LoopKind::Serial, |k, r| {
                    rows.push((r, inside));
                    self.rows(k, rows, f);
                    rows.pop();
                });
            }
        }
    }
}

/// A callback of [`Layout::rows`]: the coordinate of each row axis and whether it lies
/// inside the input.
type RowFn<'a> = dyn FnMut(&mut KernelBuilder, &[(Expr, bool)]) + 'a;

/// `dst[at + i] = src[from + i * step]` (or 0 without a source) for `i` in `0..count`,
/// four at a time where both sides are contiguous.
fn fill(
    k: &mut KernelBuilder,
    dst: super::ir::BufId,
    at: &Expr,
    count: usize,
    src: Option<(super::ir::BufId, Expr, usize)>,
) {
    let contiguous = src.as_ref().is_none_or(|(_, _, step)| *step == 1);
    let vectors = if contiguous { count / 4 } else { 0 };
    let value = |i: &Expr, lanes: bool| match &src {
        None if lanes => Expr::Float(0.0).splat(),
        None => Expr::Float(0.0),
        Some((buf, from, step)) => {
            let index = sum([from.clone(), times(i.clone(), *step)]);
            if lanes {
                Expr::load4(*buf, index)
            } else {
                Expr::load(*buf, index)
            }
        }
    };
    if vectors > 0 {
        k.for_loop(0, 4 * vectors as i64, 4, LoopKind::Serial, |k, i| {
            k.store(dst, sum([at.clone(), i.clone()]), value(&i, true));
        });
    }
    if 4 * vectors < count {
        k.for_loop(
            4 * vectors as i64,
            count as i64,
            1,
            LoopKind::Serial,
            |k, i| {
                k.store(dst, sum([at.clone(), i.clone()]), value(&i, false));
            },
        );
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

    use super::super::{Arg, BufferKind, Lowered};
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
        check_with(op, inputs, n_outputs, false)
    }

    /// [`check`], with every `f32` output bit for bit the interpreter's (any NaN for a NaN;
    /// a zero's sign counts).
    pub fn check_bits(op: &Op, inputs: &[Option<(Tensor, bool)>], n_outputs: usize) -> Lowered {
        check_with(op, inputs, n_outputs, true)
    }

    fn check_with(
        op: &Op,
        inputs: &[Option<(Tensor, bool)>],
        n_outputs: usize,
        exact: bool,
    ) -> Lowered {
        let inputs_ref: Vec<Option<(&Tensor, bool)>> = inputs
            .iter()
            .map(|i| i.as_ref().map(|(t, c)| (t, *c)))
            .collect();
        let (lowered, expected) =
            crate::lower::testing::lower_with_reference(op, &inputs_ref, n_outputs);
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
                    Arg::Extra(i) => panic!("unfused kernel binds extra operand {i}"),
                    Arg::Prologue(i) => panic!("unfused kernel binds prologue input {i}"),
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
                            || if exact {
                                a.to_bits() == b.to_bits()
                            } else {
                                a == b || (a - b).abs() <= 1e-5 + 1e-4 * a.abs().max(b.abs())
                            };
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
            &[1, 2, 3, 34],
            &[3, 2, 3, 3],
            true,
            window(&[1, 1, 1, 1], &[], &[]),
            1,
        );
        conv(
            &[1, 2, 9, 71],
            &[2, 2, 3, 3],
            true,
            window(&[1, 1, 1, 1], &[], &[]),
            1,
        );
        conv(
            &[1, 3, 7, 7],
            &[5, 3, 3, 3],
            true,
            window(&[1, 1, 1, 1], &[], &[]),
            1,
        );
        conv(
            &[1, 3, 9, 3],
            &[5, 3, 3, 3],
            true,
            window(&[1, 1, 1, 1], &[], &[]),
            1,
        );
        conv(
            &[1, 3, 9, 9],
            &[5, 3, 3, 3],
            true,
            window(&[], &[3, 3], &[]),
            1,
        );
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
    fn padded_phase_split_copies_make_every_row_vectorisable() {
        let lowered = check(
            &Op::Conv(Conv {
                window: window(&[3, 3, 3, 3], &[2, 2], &[]),
                group: 1,
            }),
            &[
                Some((random(&[2, 3, 20, 45], 1), false)),
                Some((random(&[4, 3, 7, 7], 2), true)),
                None,
            ],
            1,
        );
        assert_eq!(lowered.kernels.len(), 2);
        assert_eq!(
            lowered.scratch,
            // Rows padded to the 25 the windows reach, each split into 2 phases of 26.
            [(crate::tensor::DType::F32, 2 * 3 * 25 * 52)]
        );
        conv(
            &[1, 2, 5, 50],
            &[3, 2, 2, 3],
            true,
            window(&[0, 2, 1, 0], &[1, 3], &[1, 2]),
            1,
        );
        conv(
            &[1, 4, 11, 37],
            &[4, 1, 3, 3],
            true,
            window(&[1, 1, 1, 1], &[2, 2], &[]),
            4,
        );
        conv(
            &[1, 2, 61],
            &[2, 2, 5],
            false,
            window(&[1, 4], &[4], &[2]),
            1,
        );
        conv(
            &[1, 2, 3, 4, 33],
            &[2, 2, 1, 2, 3],
            false,
            window(&[0, 1, 1, 0, 0, 2], &[1, 1, 2], &[]),
            1,
        );
    }

    #[test]
    fn empty_batches_and_channels_lower() {
        conv(
            &[0, 2, 5, 5],
            &[3, 2, 3, 3],
            true,
            window(&[1, 1, 1, 1], &[2, 2], &[]),
            1,
        );
        conv(
            &[1, 2, 5, 5],
            &[0, 2, 3, 3],
            false,
            window(&[1, 1, 1, 1], &[], &[]),
            1,
        );
        transpose(
            &[0, 2, 3, 3],
            &[2, 1, 3, 3],
            1,
            window(&[], &[], &[]),
            &[],
            &[],
        );
    }

    #[test]
    fn very_wide_kernels_take_the_general_path() {
        conv(
            &[1, 2, 100],
            &[2, 2, 35],
            true,
            window(&[3, 5], &[2], &[]),
            1,
        );
        conv(
            &[1, 2, 3, 90],
            &[3, 2, 2, 40],
            true,
            window(&[1, 4, 0, 7], &[], &[1, 2]),
            1,
        );
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
