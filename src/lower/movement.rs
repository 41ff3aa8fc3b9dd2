//! Lowering of the data-movement ops: flatten, reshape, squeeze, unsqueeze, identity,
//! dropout, transpose, concat, split, slice, pad, shape and gather (see [`super`] for the
//! conventions).
//!
//! Every one of them is a *view copy*: each output element is one input element (or a fill
//! value), and the input position is a sum of one term per output axis. A term is affine
//! (`index * stride`, negative strides included), a constant table of offsets (pad's
//! reflected indices, gather's constant indices, resize's nearest taps), or an index read
//! at run time (gather's indices input, clamped into the axis). [`View`] describes such a
//! copy and [`KernelParts::copy`] emits its loop nest:
//! - axes of length 1 are dropped and neighbours that are contiguous on both sides merged,
//!   so reshape-like ops become one flat loop and a transpose keeps only the axes it moves;
//! - the leading axes are fused into one parallel loop of a few dozen iterations or more
//!   (their offsets come from a constant table when they are not affine), and a long flat
//!   copy is cut into blocks so that it can be split across threads;
//! - the innermost axis is copied four lanes at a time, with a scalar tail, when it is
//!   contiguous in both buffers and the elements are `f32` (`i64` loads are scalar).
//!
//! Kernels read and write dense row-major buffers, as the interpreter does. Results are
//! exact copies, so they match the interpreter bit for bit.

use std::sync::Arc;

use super::ir::{BufId, BufferKind, CmpOp, Expr, KernelBuilder, LoopKind, Ty};
use super::{Arg, Lowered, LoweredKernel, NodeInfo, Operand};
use crate::error::{Error, Result};
use crate::graph::op::{Op, PadMode};
use crate::graph::slice::slice_range;
use crate::tensor::{DType, Tensor};

/// Leading axes are fused into the parallel loop until it has at least this many
/// iterations.
const PARALLEL_TARGET: usize = 64;

/// The largest offset table built to fuse leading axes into the parallel loop.
const MAX_FUSED_TABLE: usize = 1 << 16;

/// A flat copy at least this long is cut into blocks so that threads can share it (the
/// runtime runs kernels writing fewer elements on one thread anyway).
const SPLIT_MIN_LEN: usize = 16 * 1024;

/// Where the source position of one output axis comes from.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum AxisSrc {
    /// `index * stride` elements (the stride may be negative).
    Affine(i64),
    /// `table[index]` elements: a constant offset per index.
    Table(Vec<i64>),
    /// Read at run time: `clamp(i < 0 ? i + dim : i, 0, dim - 1) * stride` with
    /// `i = buf[index]`, an `i64` index buffer (gather's indices).
    Runtime {
        /// The index buffer.
        buf: BufId,
        /// The length of the indexed axis (at least 1).
        dim: i64,
        /// Elements per step along the indexed axis.
        stride: i64,
    },
}

impl AxisSrc {
    /// The offset of `index`, for terms known at compile time.
    fn offset(&self, index: usize) -> Option<i64> {
        match self {
            AxisSrc::Affine(s) => Some(index as i64 * s),
            AxisSrc::Table(t) => t.get(index).copied(),
            AxisSrc::Runtime { .. } => None,
        }
    }
}

/// One axis of a [`View`].
#[derive(Clone, Debug, PartialEq)]
pub(super) struct ViewAxis {
    /// Number of indices.
    pub len: usize,
    /// The source term.
    pub src: AxisSrc,
    /// The destination stride in elements.
    pub dst: i64,
}

impl ViewAxis {
    /// An axis with an affine source.
    pub fn affine(len: usize, src: i64, dst: i64) -> ViewAxis {
        ViewAxis {
            len,
            src: AxisSrc::Affine(src),
            dst,
        }
    }
}

/// A copy `dst[dst_base + Σ i_k * dst_k] = src[src_base + Σ term_k(i_k)]` over every index
/// `(i_0, …)` of the axes, in row-major order.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct View {
    /// Source offset of index zero.
    pub src_base: i64,
    /// Destination offset of index zero.
    pub dst_base: i64,
    /// The axes, outermost first.
    pub axes: Vec<ViewAxis>,
}

impl View {
    /// A contiguous copy of `len` elements.
    pub fn flat(len: usize) -> View {
        View {
            src_base: 0,
            dst_base: 0,
            axes: vec![ViewAxis::affine(len, 1, 1)],
        }
    }

    /// A row-major walk over `shape` with the given source strides, writing a dense
    /// row-major destination.
    pub fn dense(shape: &[usize], src_strides: &[i64]) -> View {
        let dst = row_major_strides(shape);
        View {
            src_base: 0,
            dst_base: 0,
            axes: shape
                .iter()
                .zip(src_strides)
                .zip(dst)
                .map(|((&len, &src), dst)| ViewAxis::affine(len, src, dst))
                .collect(),
        }
    }

    /// Drops axes of length 1 (folding their offsets into the bases) and merges
    /// neighbouring affine axes that are contiguous on both sides. Returns `None` when the
    /// view has no elements.
    fn simplify(mut self) -> Option<View> {
        if self.axes.iter().any(|a| a.len == 0) {
            return None;
        }
        let mut axes: Vec<ViewAxis> = Vec::with_capacity(self.axes.len());
        for axis in std::mem::take(&mut self.axes) {
            if axis.len == 1 {
                match &axis.src {
                    AxisSrc::Affine(_) => continue,
                    AxisSrc::Table(t) => {
                        self.src_base += t.first().copied().unwrap_or(0);
                        continue;
                    }
                    AxisSrc::Runtime { .. } => {}
                }
            }
            if let Some(prev) = axes.last_mut()
                && let (AxisSrc::Affine(ps), AxisSrc::Affine(s)) = (&prev.src, &axis.src)
                && *ps == s * axis.len as i64
                && prev.dst == axis.dst * axis.len as i64
            {
                prev.len *= axis.len;
                prev.src = AxisSrc::Affine(*s);
                prev.dst = axis.dst;
                continue;
            }
            axes.push(axis);
        }
        self.axes = axes;
        Some(self)
    }
}

/// Row-major strides of `shape`, in elements.
pub(super) fn row_major_strides(shape: &[usize]) -> Vec<i64> {
    let mut out = vec![1i64; shape.len()];
    for axis in (0..shape.len().saturating_sub(1)).rev() {
        out[axis] = out[axis + 1] * shape[axis + 1] as i64;
    }
    out
}

/// What a copy reads.
#[derive(Clone, Debug)]
pub(super) enum Source {
    /// Elements of a buffer, at the view's source positions.
    Buf(BufId),
    /// One scalar value for every element (a fill); `f32` or `i64` like the destination.
    Value(Expr),
}

impl Source {
    fn scalar(&self, index: Expr) -> Expr {
        match self {
            Source::Buf(b) => Expr::load(*b, index),
            Source::Value(v) => v.clone(),
        }
    }

    fn vector(&self, index: Expr) -> Expr {
        match self {
            Source::Buf(b) => Expr::load4(*b, index),
            Source::Value(v) => v.clone().splat(),
        }
    }
}

/// `a + b`, skipping zeros and folding constants (keeps printed kernels short).
pub(super) fn add(a: Expr, b: Expr) -> Expr {
    match (a, b) {
        (Expr::Int(0), e) | (e, Expr::Int(0)) => e,
        (Expr::Int(x), Expr::Int(y)) => Expr::Int(x + y),
        (a, b) => a.add(b),
    }
}

/// `v * k`, skipping ones and zeros.
pub(super) fn times(v: Expr, k: i64) -> Expr {
    match k {
        0 => Expr::Int(0),
        _ => v.scale(k),
    }
}

/// A source term after its tables are declared: what the loop nest emits.
#[derive(Clone, Debug)]
enum Term {
    Affine(i64),
    Table(BufId),
    Runtime { buf: BufId, dim: i64, stride: i64 },
}

/// An axis of the loop nest: length, source term and destination stride.
#[derive(Clone, Debug)]
struct NestAxis {
    len: usize,
    src: Term,
    dst: i64,
}

/// A kernel under construction together with the binding of each buffer.
pub(super) struct KernelParts {
    /// The kernel.
    pub k: KernelBuilder,
    /// One binding per buffer declared so far.
    pub args: Vec<Arg>,
}

impl KernelParts {
    /// A kernel named `name` with no buffers yet.
    pub fn new(name: impl Into<String>) -> KernelParts {
        KernelParts {
            k: KernelBuilder::new(name),
            args: Vec::new(),
        }
    }

    /// Declares a buffer bound to `arg`.
    pub fn buffer(
        &mut self,
        name: impl Into<String>,
        dtype: DType,
        len: usize,
        kind: BufferKind,
        arg: Arg,
    ) -> BufId {
        self.args.push(arg);
        self.k.buffer(name, dtype, len, kind)
    }

    /// Declares node input `i` (an operand of `dtype` with `len` elements).
    pub fn input(&mut self, node: &NodeInfo<'_>, i: usize) -> Result<BufId> {
        let op = node.input(i)?;
        Ok(self.buffer(
            format!("in{i}"),
            op.dtype,
            op.len(),
            BufferKind::Input,
            Arg::Input(i),
        ))
    }

    /// Declares node output `i`.
    pub fn output(&mut self, node: &NodeInfo<'_>, i: usize) -> Result<BufId> {
        let op = output(node, i)?;
        Ok(self.buffer(
            format!("out{i}"),
            op.dtype,
            op.len(),
            BufferKind::Output,
            Arg::Output(i),
        ))
    }

    /// Declares a constant buffer holding `tensor`.
    pub fn constant(&mut self, name: impl Into<String>, tensor: Tensor) -> BufId {
        let (dtype, len) = (tensor.dtype(), tensor.len());
        self.buffer(
            name,
            dtype,
            len,
            BufferKind::Const(Arc::new(tensor)),
            Arg::Const,
        )
    }

    /// Declares a constant `i64` table.
    pub fn table(&mut self, name: impl Into<String>, values: Vec<i64>) -> BufId {
        self.constant(name, Tensor::vector_i64(values))
    }

    /// The finished kernel and its bindings.
    pub fn finish(self) -> LoweredKernel {
        LoweredKernel {
            kernel: self.k.finish(),
            args: self.args,
        }
    }

    /// Emits the copy `view` from `source` into `dst` (elements of `dtype`). With
    /// `parallel`, the outermost loop is parallel: only the first statement of a kernel may
    /// ask for it.
    pub fn copy(&mut self, source: &Source, dst: BufId, dtype: DType, view: View, parallel: bool) {
        let Some(view) = view.simplify() else { return };
        if !parallel {
            self.emit(source, dst, dtype, view, false);
            return;
        }
        // A long contiguous run with little else to share among threads: cut it into
        // blocks, the remainder copied afterwards by a serial nest.
        let outer: usize = view.axes.iter().rev().skip(1).map(|a| a.len).product();
        let Some(last) = view.axes.last() else {
            self.emit(source, dst, dtype, view, false);
            return;
        };
        let contiguous = last.src == AxisSrc::Affine(1) && last.dst == 1;
        if !(contiguous && outer < PARALLEL_TARGET && last.len >= SPLIT_MIN_LEN) {
            self.emit(source, dst, dtype, view, true);
            return;
        }
        let len = last.len;
        let block = block_size(len);
        let blocks = len / block;
        let mut main = view.clone();
        main.axes.pop();
        main.axes
            .push(ViewAxis::affine(blocks, block as i64, block as i64));
        main.axes.push(ViewAxis::affine(block, 1, 1));
        let done = (blocks * block) as i64;
        let mut rest = view;
        rest.src_base += done;
        rest.dst_base += done;
        if let Some(last) = rest.axes.last_mut() {
            last.len = len - blocks * block;
        }
        self.emit(source, dst, dtype, main, true);
        if let Some(rest) = rest.simplify() {
            self.emit(source, dst, dtype, rest, false);
        }
    }

    /// Emits a simplified, non-empty view.
    fn emit(&mut self, source: &Source, dst: BufId, dtype: DType, view: View, parallel: bool) {
        let src_base = Expr::Int(view.src_base);
        let dst_base = Expr::Int(view.dst_base);
        let fused = if parallel && view.axes.len() >= 2 {
            fused_count(&view.axes)
        } else {
            0
        };
        if fused < 2 {
            let mut axes = self.nest_axes(&view.axes);
            if fused == 0 {
                nest(&mut self.k, source, dst, dtype, &axes, src_base, dst_base);
                return;
            }
            let first = axes.remove(0);
            self.k
                .for_loop(0, first.len as i64, 1, LoopKind::Parallel, |k, v| {
                    let s = term(k, &first.src, v.clone());
                    let d = times(v, first.dst);
                    nest(
                        k,
                        source,
                        dst,
                        dtype,
                        &axes,
                        add(src_base, s),
                        add(dst_base, d),
                    );
                });
            return;
        }
        let (fused_axes, rest) = view.axes.split_at(fused);
        let extent: usize = fused_axes.iter().map(|a| a.len).product();
        let src_offsets = fused_offsets(fused_axes, |a, i| a.src.offset(i).unwrap_or(0));
        let dst_offsets = fused_offsets(fused_axes, |a, i| i as i64 * a.dst);
        let src_fused = self.fused_term("fused_src", src_offsets);
        let dst_fused = self.fused_term("fused_dst", dst_offsets);
        let rest = self.nest_axes(rest);
        self.k
            .for_loop(0, extent as i64, 1, LoopKind::Parallel, |k, p| {
                let s = src_fused(p.clone());
                let d = dst_fused(p);
                nest(
                    k,
                    source,
                    dst,
                    dtype,
                    &rest,
                    add(src_base, s),
                    add(dst_base, d),
                );
            });
    }

    /// The axes as the nest emits them, with a constant buffer declared per table.
    fn nest_axes(&mut self, axes: &[ViewAxis]) -> Vec<NestAxis> {
        axes.iter()
            .enumerate()
            .map(|(i, axis)| {
                let src = match &axis.src {
                    AxisSrc::Affine(s) => Term::Affine(*s),
                    AxisSrc::Table(t) => Term::Table(self.table(format!("offsets{i}"), t.clone())),
                    AxisSrc::Runtime { buf, dim, stride } => Term::Runtime {
                        buf: *buf,
                        dim: *dim,
                        stride: *stride,
                    },
                };
                NestAxis {
                    len: axis.len,
                    src,
                    dst: axis.dst,
                }
            })
            .collect()
    }

    /// The offset of fused index `p`: affine when the offsets are, else a table lookup.
    fn fused_term(&mut self, name: &str, offsets: Vec<i64>) -> impl Fn(Expr) -> Expr + use<> {
        let first = offsets.first().copied().unwrap_or(0);
        let step = offsets.get(1).map_or(0, |o| o - first);
        let affine = offsets
            .iter()
            .enumerate()
            .all(|(i, &o)| o == first + i as i64 * step);
        let table = if affine {
            None
        } else {
            Some(self.table(name, offsets))
        };
        move |p: Expr| match table {
            Some(t) => Expr::load(t, p),
            None => add(Expr::Int(first), times(p, step)),
        }
    }
}

/// How many leading axes (of at least two) the parallel loop of a kernel runs over: one,
/// or, while that is short, more whose offsets are known at compile time (fused into one
/// loop through offset tables). The innermost axis is always left to the nest.
fn fused_count(axes: &[ViewAxis]) -> usize {
    let is_static = |a: &ViewAxis| !matches!(a.src, AxisSrc::Runtime { .. });
    let mut fused = 1;
    let mut extent = axes.first().map_or(1, |a| a.len);
    while fused + 1 < axes.len()
        && extent < PARALLEL_TARGET
        && is_static(&axes[0])
        && is_static(&axes[fused])
        && extent * axes[fused].len <= MAX_FUSED_TABLE
    {
        extent *= axes[fused].len;
        fused += 1;
    }
    fused
}

/// The summed offsets of every index of `axes` in row-major order.
fn fused_offsets(axes: &[ViewAxis], offset: impl Fn(&ViewAxis, usize) -> i64) -> Vec<i64> {
    let mut out = vec![0i64];
    for axis in axes {
        let mut next = Vec::with_capacity(out.len() * axis.len);
        for &base in &out {
            for i in 0..axis.len {
                next.push(base + offset(axis, i));
            }
        }
        out = next;
    }
    out
}

/// The block length a long flat copy of `len` elements is cut into: a multiple of 4 that
/// divides `len` when one between 256 and 4096 does, else 1024 (with a remainder).
fn block_size(len: usize) -> usize {
    (64..=1024)
        .rev()
        .map(|q| q * 4)
        .find(|b| len.is_multiple_of(*b))
        .unwrap_or(1024)
}

/// The source offset of index `v` along an axis.
fn term(k: &mut KernelBuilder, src: &Term, v: Expr) -> Expr {
    match src {
        Term::Affine(s) => times(v, *s),
        Term::Table(t) => Expr::load(*t, v),
        Term::Runtime { buf, dim, stride } => {
            let raw = k.declare(Ty::I64, Expr::load(*buf, v));
            let negative = Expr::Local(raw).cmp(CmpOp::Lt, Expr::Int(0));
            let resolved = negative.select(Expr::Local(raw).add(Expr::Int(*dim)), Expr::Local(raw));
            times(resolved.clamp(0, dim - 1), *stride)
        }
    }
}

/// Emits the loops over `axes` around the element copy.
fn nest(
    k: &mut KernelBuilder,
    source: &Source,
    dst: BufId,
    dtype: DType,
    axes: &[NestAxis],
    src: Expr,
    dst_at: Expr,
) {
    match axes {
        [] => k.store(dst, dst_at, source.scalar(src)),
        [last]
            if dtype == DType::F32
                && matches!(last.src, Term::Affine(1))
                && last.dst == 1
                && last.len >= 4 =>
        {
            let main = (last.len - last.len % 4) as i64;
            k.for_loop(0, main, 4, LoopKind::Serial, |k, v| {
                k.store(
                    dst,
                    add(dst_at.clone(), v.clone()),
                    source.vector(add(src.clone(), v)),
                );
            });
            if main < last.len as i64 {
                k.for_loop(main, last.len as i64, 1, LoopKind::Serial, |k, v| {
                    k.store(dst, add(dst_at, v.clone()), source.scalar(add(src, v)));
                });
            }
        }
        [first, rest @ ..] => {
            k.range(first.len, |k, v| {
                let s = term(k, &first.src, v.clone());
                let d = times(v, first.dst);
                nest(k, source, dst, dtype, rest, add(src, s), add(dst_at, d));
            });
        }
    }
}

/// A node computed by one kernel.
pub(super) fn one(kernel: LoweredKernel) -> Lowered {
    Lowered {
        kernels: vec![kernel],
        scratch: Vec::new(),
    }
}

/// Output `i` of a node.
fn output<'a>(node: &'a NodeInfo<'_>, i: usize) -> Result<&'a Operand> {
    node.outputs.get(i).ok_or_else(|| {
        Error::internal(format!(
            "node {} ({}): output {i} missing at lowering",
            node.name,
            node.op.name()
        ))
    })
}

/// An internal error about `node`.
fn internal(node: &NodeInfo<'_>, message: String) -> Error {
    Error::internal(format!(
        "node {} ({}): {message}",
        node.name,
        node.op.name()
    ))
}

/// A user error about `node` (operands the interpreter rejects too).
fn user(node: &NodeInfo<'_>, message: String) -> Error {
    Error::node(node.name, node.op.name(), message)
}

/// Resolves a possibly negative axis against `rank`.
fn normalize_axis(node: &NodeInfo<'_>, axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    if (-r..r).contains(&axis) {
        Ok(if axis < 0 { axis + r } else { axis } as usize)
    } else {
        Err(user(
            node,
            format!("axis {axis} is out of range for rank {rank}"),
        ))
    }
}

/// Lowers a node of this family.
pub(super) fn lower(node: &NodeInfo<'_>) -> Result<Lowered> {
    match node.op {
        Op::Flatten { .. }
        | Op::Reshape { .. }
        | Op::Squeeze
        | Op::Unsqueeze
        | Op::Identity
        | Op::Dropout => reshape_like(node),
        Op::Transpose { perm } => transpose(node, perm.as_deref()),
        Op::Concat { axis } => concat(node, *axis),
        Op::Split { axis, .. } => split(node, *axis),
        Op::Slice => slice(node),
        Op::Pad { mode } => pad(node, *mode),
        Op::Shape { start, end } => shape(node, *start, *end),
        Op::Gather { axis } => gather(node, *axis),
        _ => Err(internal(node, "not a data-movement op".to_string())),
    }
}

/// One kernel copying `view` of input `input` to output 0, named after the node.
fn single_copy(node: &NodeInfo<'_>, input: usize, view: View) -> Result<Lowered> {
    let dtype = node.input(input)?.dtype;
    let mut kp = KernelParts::new(node.name);
    let x = kp.input(node, input)?;
    let y = kp.output(node, 0)?;
    kp.copy(&Source::Buf(x), y, dtype, view, true);
    Ok(one(kp.finish()))
}

/// Checks that output 0 has the expected shape.
fn check_output_shape(node: &NodeInfo<'_>, i: usize, shape: &[usize]) -> Result<()> {
    let out = output(node, i)?;
    if out.shape != shape {
        return Err(internal(
            node,
            format!(
                "output {i} has shape {:?}, lowering expects {shape:?}",
                out.shape
            ),
        ));
    }
    Ok(())
}

/// Flatten, reshape, squeeze, unsqueeze, identity and dropout: the same elements in the
/// same order, a flat copy.
fn reshape_like(node: &NodeInfo<'_>) -> Result<Lowered> {
    let x = node.input(0)?;
    let y = output(node, 0)?;
    if x.len() != y.len() || x.dtype != y.dtype {
        return Err(internal(
            node,
            format!(
                "{} {:?} cannot be copied to {} {:?}",
                x.dtype, x.shape, y.dtype, y.shape
            ),
        ));
    }
    single_copy(node, 0, View::flat(x.len()))
}

/// Transpose: a walk over the output reading the input with permuted strides.
fn transpose(node: &NodeInfo<'_>, perm: Option<&[usize]>) -> Result<Lowered> {
    let x = node.input(0)?;
    let rank = x.shape.len();
    let perm: Vec<usize> = match perm {
        Some(p) => p.to_vec(),
        None => (0..rank).rev().collect(),
    };
    let mut sorted = perm.clone();
    sorted.sort_unstable();
    if !sorted.iter().copied().eq(0..rank) {
        return Err(user(
            node,
            format!(
                "perm {perm:?} is not a permutation of the axes of shape {:?}",
                x.shape
            ),
        ));
    }
    let in_strides = row_major_strides(&x.shape);
    let out_shape: Vec<usize> = perm.iter().map(|&a| x.shape[a]).collect();
    check_output_shape(node, 0, &out_shape)?;
    let src: Vec<i64> = perm.iter().map(|&a| in_strides[a]).collect();
    single_copy(node, 0, View::dense(&out_shape, &src))
}

/// The product of `dims`.
fn product(dims: &[usize]) -> usize {
    dims.iter().product()
}

/// A kernel that only declares the node's buffers: the output has no elements.
fn empty(node: &NodeInfo<'_>) -> Result<Lowered> {
    let mut kp = KernelParts::new(node.name);
    for i in 0..node.outputs.len() {
        kp.output(node, i)?;
    }
    Ok(one(kp.finish()))
}

/// Concat: one kernel per non-empty part, copying its slab of every outer index into
/// place.
fn concat(node: &NodeInfo<'_>, axis: i64) -> Result<Lowered> {
    let out = output(node, 0)?;
    let axis = normalize_axis(node, axis, out.shape.len())?;
    let outer = product(&out.shape[..axis]);
    let inner = product(&out.shape[axis + 1..]);
    let total = out.shape[axis];
    let mut kernels = Vec::new();
    let mut offset = 0usize;
    for i in 0..node.inputs.len() {
        let part = node.input(i)?;
        let fits = part.shape.len() == out.shape.len()
            && (0..part.shape.len()).all(|a| a == axis || part.shape[a] == out.shape[a])
            && part.dtype == out.dtype;
        if !fits {
            return Err(internal(
                node,
                format!(
                    "part {i} {:?} does not fit output {:?}",
                    part.shape, out.shape
                ),
            ));
        }
        let len = part.shape[axis];
        let view = View {
            src_base: 0,
            dst_base: (offset * inner) as i64,
            axes: vec![
                ViewAxis::affine(outer, (len * inner) as i64, (total * inner) as i64),
                ViewAxis::affine(len * inner, 1, 1),
            ],
        };
        offset += len;
        if part.is_empty() || out.is_empty() {
            continue;
        }
        let mut kp = KernelParts::new(format!("{}_part{i}", node.name));
        let x = kp.input(node, i)?;
        let y = kp.output(node, 0)?;
        kp.copy(&Source::Buf(x), y, out.dtype, view, true);
        kernels.push(kp.finish());
    }
    if offset != total {
        return Err(internal(
            node,
            format!("parts sum to {offset} along axis {axis}, the output has {total}"),
        ));
    }
    if kernels.is_empty() {
        return empty(node);
    }
    Ok(Lowered {
        kernels,
        scratch: Vec::new(),
    })
}

/// Split: one kernel per output, copying its slab of every outer index. The part sizes
/// are the outputs' lengths along the axis.
fn split(node: &NodeInfo<'_>, axis: i64) -> Result<Lowered> {
    let x = node.input(0)?;
    let axis = normalize_axis(node, axis, x.shape.len())?;
    let outer = product(&x.shape[..axis]);
    let inner = product(&x.shape[axis + 1..]);
    let len = x.shape[axis];
    let mut kernels = Vec::new();
    let mut start = 0usize;
    for (j, out) in node.outputs.iter().enumerate() {
        let size = out.shape.get(axis).copied().unwrap_or(0);
        let mut expected = x.shape.clone();
        expected[axis] = size;
        check_output_shape(node, j, &expected)?;
        let view = View {
            src_base: (start * inner) as i64,
            dst_base: 0,
            axes: vec![
                ViewAxis::affine(outer, (len * inner) as i64, (size * inner) as i64),
                ViewAxis::affine(size * inner, 1, 1),
            ],
        };
        start += size;
        let mut kp = KernelParts::new(format!("{}_out{j}", node.name));
        let src = kp.input(node, 0)?;
        let y = kp.output(node, j)?;
        kp.copy(&Source::Buf(src), y, x.dtype, view, true);
        kernels.push(kp.finish());
    }
    if start != len {
        return Err(internal(
            node,
            format!("outputs sum to {start} along axis {axis}, the input has {len}"),
        ));
    }
    Ok(Lowered {
        kernels,
        scratch: Vec::new(),
    })
}

/// Slice: a strided view of the input (negative steps walk backwards).
fn slice(node: &NodeInfo<'_>) -> Result<Lowered> {
    let x = node.input(0)?;
    let rank = x.shape.len();
    let constant = |i: usize, what: &str| -> Result<Option<Vec<i64>>> {
        node.const_ints(i)
            .map_err(|_| node.unsupported(&format!("{what} must be a compile-time i64 constant")))
    };
    let starts = constant(1, "starts")?.unwrap_or_default();
    let ends = constant(2, "ends")?.unwrap_or_default();
    let n = starts.len();
    let axes = constant(3, "axes")?.unwrap_or_else(|| (0..n as i64).collect());
    let steps = constant(4, "steps")?.unwrap_or_else(|| vec![1; n]);
    if ends.len() != n || axes.len() != n || steps.len() != n {
        return Err(user(
            node,
            format!(
                "starts, ends, axes and steps differ in length: {starts:?}, {ends:?}, {axes:?}, {steps:?}"
            ),
        ));
    }
    let in_strides = row_major_strides(&x.shape);
    let mut out_shape = x.shape.clone();
    let mut src = in_strides.clone();
    let mut base = 0i64;
    let mut seen = vec![false; rank];
    for k in 0..n {
        let axis = normalize_axis(node, axes[k], rank)?;
        if std::mem::replace(&mut seen[axis], true) {
            return Err(user(node, format!("axes {axes:?} name axis {axis} twice")));
        }
        if steps[k] == 0 {
            return Err(user(node, format!("steps {steps:?} has a zero step")));
        }
        let (start, len) = slice_range(starts[k], ends[k], steps[k], x.shape[axis]);
        out_shape[axis] = len;
        if len > 0 {
            base += start as i64 * in_strides[axis];
        }
        // With two or more elements kept, |step| is below the axis length, so the product
        // stays within the input's extent.
        src[axis] = if len > 1 {
            steps[k] * in_strides[axis]
        } else {
            0
        };
    }
    check_output_shape(node, 0, &out_shape)?;
    let mut view = View::dense(&out_shape, &src);
    view.src_base = base;
    single_copy(node, 0, view)
}

/// The input index that index `i` (possibly outside `0..dim`) of a padded axis reads, or
/// `None` for the fill value (as the interpreter resolves it). `dim` is not 0 unless the
/// mode is constant.
fn pad_source(mode: PadMode, i: i64, dim: i64) -> Option<i64> {
    if (0..dim).contains(&i) {
        return Some(i);
    }
    match mode {
        PadMode::Constant => None,
        PadMode::Edge => Some(i.clamp(0, dim - 1)),
        PadMode::Wrap => Some(i.rem_euclid(dim)),
        PadMode::Reflect if dim == 1 => Some(0),
        PadMode::Reflect => {
            let period = 2 * (dim - 1);
            let m = i.rem_euclid(period);
            Some(if m < dim { m } else { period - m })
        }
    }
}

/// Pad. Constant mode fills the output and then copies the input's overlap into place (two
/// kernels, or only the copy when nothing is padded); the other modes read each padded
/// axis through a constant table of source indices.
fn pad(node: &NodeInfo<'_>, mode: PadMode) -> Result<Lowered> {
    let x = node.input(0)?;
    let rank = x.shape.len();
    let pads = node
        .const_ints(1)
        .map_err(|_| node.unsupported("pads must be a compile-time i64 constant"))?
        .unwrap_or_default();
    let axes = match node
        .const_ints(3)
        .map_err(|_| node.unsupported("axes must be a compile-time i64 constant"))?
    {
        Some(axes) => {
            let mut resolved = Vec::with_capacity(axes.len());
            for &a in &axes {
                let axis = normalize_axis(node, a, rank)?;
                if resolved.contains(&axis) {
                    return Err(user(node, format!("axes {axes:?} name axis {axis} twice")));
                }
                resolved.push(axis);
            }
            resolved
        }
        None => (0..rank).collect(),
    };
    if pads.len() != 2 * axes.len() {
        return Err(user(
            node,
            format!("pads {pads:?} must have 2 values per padded axis"),
        ));
    }
    let mut before = vec![0i64; rank];
    let mut after = vec![0i64; rank];
    for (k, &axis) in axes.iter().enumerate() {
        before[axis] = pads[k];
        after[axis] = pads[k + axes.len()];
    }
    let mut out_shape = Vec::with_capacity(rank);
    for axis in 0..rank {
        let dim = i128::from(before[axis]) + i128::from(after[axis]) + x.shape[axis] as i128;
        let dim = usize::try_from(dim).map_err(|_| {
            user(
                node,
                format!(
                    "pads {pads:?} do not fit axis {axis} of shape {:?}",
                    x.shape
                ),
            )
        })?;
        if x.shape[axis] == 0 && dim > 0 && mode != PadMode::Constant {
            return Err(user(
                node,
                format!(
                    "cannot pad empty axis {axis} of shape {:?} in mode {mode:?}",
                    x.shape
                ),
            ));
        }
        out_shape.push(dim);
    }
    check_output_shape(node, 0, &out_shape)?;
    let out_len = product(&out_shape);
    if out_len == 0 {
        return empty(node);
    }
    let in_strides = row_major_strides(&x.shape);
    let out_strides = row_major_strides(&out_shape);

    if mode != PadMode::Constant {
        let mut view = View::dense(&out_shape, &in_strides);
        for axis in 0..rank {
            if before[axis] == 0 && after[axis] == 0 {
                continue;
            }
            let dim = x.shape[axis] as i64;
            let offsets = (0..out_shape[axis] as i64)
                .map(|o| pad_source(mode, o - before[axis], dim).unwrap_or(0) * in_strides[axis])
                .collect();
            view.axes[axis].src = AxisSrc::Table(offsets);
        }
        return single_copy(node, 0, view);
    }

    // The overlap of the shifted input with the output, per axis.
    let mut copy = View {
        src_base: 0,
        dst_base: 0,
        axes: Vec::with_capacity(rank),
    };
    for axis in 0..rank {
        let lo = before[axis].max(0);
        let hi = (before[axis] + x.shape[axis] as i64).min(out_shape[axis] as i64);
        let len = (hi - lo).max(0) as usize;
        if len > 0 {
            copy.dst_base += lo * out_strides[axis];
            copy.src_base += (lo - before[axis]) * in_strides[axis];
        }
        copy.axes
            .push(ViewAxis::affine(len, in_strides[axis], out_strides[axis]));
    }
    let covers_output = (0..rank).all(|a| before[a] <= 0 && after[a] <= 0);

    let mut kernels = Vec::new();
    if !covers_output {
        let mut kp = KernelParts::new(format!("{}_fill", node.name));
        let value = fill_value(node, &mut kp, x.dtype)?;
        let y = kp.output(node, 0)?;
        kp.copy(&Source::Value(value), y, x.dtype, View::flat(out_len), true);
        kernels.push(kp.finish());
    }
    if copy.axes.iter().all(|a| a.len > 0) {
        let mut kp = KernelParts::new(format!("{}_copy", node.name));
        let src = kp.input(node, 0)?;
        let y = kp.output(node, 0)?;
        kp.copy(&Source::Buf(src), y, x.dtype, copy, true);
        kernels.push(kp.finish());
    }
    Ok(Lowered {
        kernels,
        scratch: Vec::new(),
    })
}

/// Pad's fill value: the constant_value operand (a constant, or an input read at run
/// time), or zero when it is absent or empty.
fn fill_value(node: &NodeInfo<'_>, kp: &mut KernelParts, dtype: DType) -> Result<Expr> {
    let zero = match dtype {
        DType::F32 => Expr::Float(0.0),
        DType::I64 => Expr::Int(0),
    };
    let Some(v) = node.optional(2) else {
        return Ok(zero);
    };
    if v.dtype != dtype || v.len() > 1 {
        return Err(user(
            node,
            format!(
                "constant_value must be a single {dtype} value, got {} of shape {:?}",
                v.dtype, v.shape
            ),
        ));
    }
    if v.is_empty() {
        return Ok(zero);
    }
    Ok(match &v.value {
        Some(t) => match (t.as_f32(), t.as_i64()) {
            (Some(f), _) => f.first().map_or(zero, |&f| Expr::Float(f)),
            (_, Some(i)) => i.first().map_or(zero, |&i| Expr::Int(i)),
            _ => zero,
        },
        None => {
            let buf = kp.input(node, 2)?;
            Expr::load(buf, Expr::Int(0))
        }
    })
}

/// Shape: the dims are known at compile time; the kernel copies them from a constant.
fn shape(node: &NodeInfo<'_>, start: i64, end: Option<i64>) -> Result<Lowered> {
    let x = node.input(0)?;
    let rank = x.shape.len() as i64;
    let resolve = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
    let start = resolve(start);
    let end = resolve(end.unwrap_or(rank)).max(start);
    let dims: Vec<i64> = x.shape[start..end].iter().map(|&d| d as i64).collect();
    check_output_shape(node, 0, &[dims.len()])?;
    if dims.is_empty() {
        return empty(node);
    }
    let mut kp = KernelParts::new(node.name);
    let n = dims.len();
    let table = kp.table("dims", dims);
    let y = kp.output(node, 0)?;
    kp.copy(&Source::Buf(table), y, DType::I64, View::flat(n), true);
    Ok(one(kp.finish()))
}

/// Gather: the indices become one axis of the view, read from a constant table of
/// offsets when they are constant, else at run time (negative indices counted from the
/// end, and clamped into the axis so that no index can read outside the input).
fn gather(node: &NodeInfo<'_>, axis: i64) -> Result<Lowered> {
    let x = node.input(0)?;
    let indices = node.input(1)?;
    if x.shape.is_empty() {
        return Err(user(node, "cannot gather from a scalar".to_string()));
    }
    if indices.dtype != DType::I64 {
        return Err(user(
            node,
            format!("indices must be i64, got {}", indices.dtype),
        ));
    }
    let axis = normalize_axis(node, axis, x.shape.len())?;
    let dim = x.shape[axis];
    let outer = product(&x.shape[..axis]);
    let inner = product(&x.shape[axis + 1..]);
    let n = indices.len();
    let out_shape: Vec<usize> = x.shape[..axis]
        .iter()
        .chain(&indices.shape)
        .chain(&x.shape[axis + 1..])
        .copied()
        .collect();
    check_output_shape(node, 0, &out_shape)?;
    if product(&out_shape) == 0 {
        return empty(node);
    }
    let mut kp = KernelParts::new(node.name);
    let src = kp.input(node, 0)?;
    let index_axis = match &indices.value {
        Some(t) => {
            let raw = t.as_i64().unwrap_or_default();
            let mut offsets = Vec::with_capacity(raw.len());
            for &i in raw {
                let j = if i < 0 { i + dim as i64 } else { i };
                if !(0..dim as i64).contains(&j) {
                    return Err(user(
                        node,
                        format!(
                            "index {i} is out of range for axis {axis} of shape {:?}",
                            x.shape
                        ),
                    ));
                }
                offsets.push(j * inner as i64);
            }
            AxisSrc::Table(offsets)
        }
        None => {
            if dim == 0 {
                return Err(user(
                    node,
                    format!(
                        "cannot gather from empty axis {axis} of shape {:?}",
                        x.shape
                    ),
                ));
            }
            let buf = kp.input(node, 1)?;
            AxisSrc::Runtime {
                buf,
                dim: dim as i64,
                stride: inner as i64,
            }
        }
    };
    let y = kp.output(node, 0)?;
    let view = View {
        src_base: 0,
        dst_base: 0,
        axes: vec![
            ViewAxis::affine(outer, (dim * inner) as i64, (n * inner) as i64),
            ViewAxis {
                len: n,
                src: index_axis,
                dst: inner as i64,
            },
            ViewAxis::affine(inner, 1, 1),
        ],
    };
    kp.copy(&Source::Buf(src), y, x.dtype, view, true);
    Ok(one(kp.finish()))
}

/// A test harness: lowers one node, compiles its kernels, runs them (each parallel loop
/// split into uneven chunks, as the runtime may split it) and compares with the
/// interpreter.
#[cfg(test)]
pub(super) mod testing {

    use crate::codegen::{self, OptLevel};
    use crate::graph::op::Op;
    use crate::lower::ir::BufferKind;
    use crate::lower::{Arg, Lowered};
    use crate::tensor::{DType, Tensor, TensorData};

    /// An input of the node under test: its data, and whether lowering may read it as a
    /// compile-time constant.
    pub struct In {
        /// The data.
        pub tensor: Tensor,
        /// Visible to lowering as a constant.
        pub constant: bool,
    }

    /// A run-time input.
    pub fn runtime(tensor: Tensor) -> Option<In> {
        Some(In {
            tensor,
            constant: false,
        })
    }

    /// A compile-time constant input.
    pub fn constant(tensor: Tensor) -> Option<In> {
        Some(In {
            tensor,
            constant: true,
        })
    }

    /// `[0, 1, 2, …]` of `shape`, minus a third so that signs vary.
    pub fn iota(shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        Tensor::from_f32(
            shape.to_vec(),
            (0..n).map(|i| i as f32 - n as f32 / 3.0).collect(),
        )
        .unwrap()
    }

    /// Lowers `op` on `inputs`, returning the kernels and the interpreter's outputs.
    pub fn lower(op: &Op, inputs: &[Option<In>], n_outputs: usize) -> (Lowered, Vec<Tensor>) {
        let inputs_ref: Vec<Option<(&Tensor, bool)>> = inputs
            .iter()
            .map(|i| i.as_ref().map(|i| (&i.tensor, i.constant)))
            .collect();
        crate::lower::testing::lower_with_reference(op, &inputs_ref, n_outputs)
    }

    fn filled(dtype: DType, len: usize) -> TensorData {
        // Unwritten elements show up as NaN or a sentinel.
        match dtype {
            DType::F32 => TensorData::F32(vec![f32::NAN; len]),
            DType::I64 => TensorData::I64(vec![i64::MIN + 7; len]),
        }
    }

    fn ptr(data: &mut TensorData) -> *mut u8 {
        match data {
            TensorData::F32(v) => v.as_mut_ptr().cast(),
            TensorData::I64(v) => v.as_mut_ptr().cast(),
        }
    }

    /// Runs lowered kernels on `inputs`; outputs have the shapes of `expected`.
    pub fn run(
        lowered: &Lowered,
        inputs: &[Option<In>],
        expected: &[Tensor],
        chunks: i64,
    ) -> Vec<Tensor> {
        let kernels: Vec<_> = lowered
            .kernels
            .iter()
            .map(|k| (&k.kernel, OptLevel::None))
            .collect();
        let compiled = codegen::compile(&kernels).unwrap_or_else(|e| panic!("{e}"));
        let mut inputs_data: Vec<Option<TensorData>> = inputs
            .iter()
            .map(|i| i.as_ref().map(|i| i.tensor.data().clone()))
            .collect();
        let mut outputs: Vec<TensorData> = expected
            .iter()
            .map(|t| filled(t.dtype(), t.len()))
            .collect();
        let mut scratch: Vec<TensorData> =
            lowered.scratch.iter().map(|&(d, n)| filled(d, n)).collect();
        let mut consts: Vec<Vec<TensorData>> = lowered
            .kernels
            .iter()
            .map(|k| {
                k.kernel
                    .buffers
                    .iter()
                    .filter_map(|b| match &b.kind {
                        BufferKind::Const(t) => Some(t.data().clone()),
                        _ => None,
                    })
                    .collect()
            })
            .collect();
        for (n, (lk, ck)) in lowered.kernels.iter().zip(&compiled).enumerate() {
            let mut next_const = 0;
            let mut table = Vec::new();
            for (arg, buffer) in lk.args.iter().zip(&lk.kernel.buffers) {
                let (data, len) = match *arg {
                    Arg::Input(i) => {
                        let d = inputs_data[i].as_mut().expect("bound input is present");
                        let len = match d {
                            TensorData::F32(v) => v.len(),
                            TensorData::I64(v) => v.len(),
                        };
                        (ptr(d), len)
                    }
                    Arg::Output(i) => {
                        let len = expected[i].len();
                        (ptr(&mut outputs[i]), len)
                    }
                    Arg::Scratch(i) => (ptr(&mut scratch[i]), lowered.scratch[i].1),
                    Arg::Const => {
                        next_const += 1;
                        (ptr(&mut consts[n][next_const - 1]), buffer.len)
                    }
                    Arg::Extra(i) => panic!("unfused kernel binds extra operand {i}"),
                    Arg::Prologue(i) => panic!("unfused kernel binds prologue input {i}"),
                };
                assert_eq!(
                    len, buffer.len,
                    "kernel {} buffer {} length",
                    lk.kernel.name, buffer.name
                );
                table.push(data);
            }
            let call = |lo: i64, hi: i64| unsafe { (ck.func)(table.as_ptr(), lo, hi) };
            match lk.kernel.parallel_loop() {
                Some(l) => {
                    let trips = l.trip_count();
                    let parts = chunks.min(trips).max(1);
                    for c in 0..parts {
                        let lo = l.start + trips * c / parts * l.step;
                        let hi = (l.start + trips * (c + 1) / parts * l.step).min(l.end);
                        call(lo, hi);
                    }
                }
                None => call(0, 0),
            }
        }
        outputs
            .into_iter()
            .zip(expected)
            .map(|(d, e)| Tensor::new(e.shape().to_vec(), d).unwrap())
            .collect()
    }

    /// Lowers, runs with 1 and 3 chunks, and checks the outputs against the interpreter
    /// (exactly when `tolerance` is `None`).
    pub fn check(
        op: &Op,
        inputs: &[Option<In>],
        n_outputs: usize,
        tolerance: Option<f32>,
    ) -> Lowered {
        let (lowered, expected) = lower(op, inputs, n_outputs);
        for chunks in [1, 3] {
            let got = run(&lowered, inputs, &expected, chunks);
            for (g, e) in got.iter().zip(&expected) {
                match (g.data(), e.data(), tolerance) {
                    (TensorData::F32(g), TensorData::F32(e), Some(tol)) => {
                        for (i, (&a, &b)) in g.iter().zip(e).enumerate() {
                            assert!(
                                (a - b).abs() <= tol * (1.0 + b.abs()),
                                "{op:?}: element {i}: got {a}, expected {b}\n{}",
                                lowered
                                    .kernels
                                    .iter()
                                    .map(|k| k.kernel.to_string())
                                    .collect::<String>()
                            );
                        }
                    }
                    _ => {
                        // Compare bit patterns so NaN (an unwritten element) never passes.
                        let bits = |t: &Tensor| match t.data() {
                            TensorData::F32(v) => {
                                v.iter().map(|x| i64::from(x.to_bits())).collect::<Vec<_>>()
                            }
                            TensorData::I64(v) => v.clone(),
                        };
                        assert_eq!(
                            bits(g),
                            bits(e),
                            "{op:?}\n{}",
                            lowered
                                .kernels
                                .iter()
                                .map(|k| k.kernel.to_string())
                                .collect::<String>()
                        );
                    }
                }
            }
        }
        lowered
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{check, constant, iota, runtime};
    use crate::graph::op::{Op, PadMode};
    use crate::tensor::Tensor;

    fn ints(v: &[i64]) -> Tensor {
        Tensor::vector_i64(v.to_vec())
    }

    #[test]
    fn reshape_like_ops_copy_flat() {
        for shape in [vec![2, 3, 4], vec![1, 3, 70, 50], vec![5], vec![0, 3]] {
            let x = iota(&shape);
            let n = x.len() as i64;
            check(&Op::Flatten { axis: 1 }, &[runtime(x.clone())], 1, None);
            check(
                &Op::Reshape { allowzero: false },
                &[runtime(x.clone()), constant(ints(&[-1]))],
                1,
                None,
            );
            check(&Op::Identity, &[runtime(x.clone())], 1, None);
            check(&Op::Dropout, &[runtime(x.clone())], 1, None);
            check(&Op::Unsqueeze, &[runtime(x), constant(ints(&[0]))], 1, None);
            let i = Tensor::from_i64(shape.clone(), (0..n).collect()).unwrap();
            check(&Op::Identity, &[runtime(i)], 1, None);
        }
        let big = iota(&[1, 8, 4000]);
        let lowered = check(&Op::Identity, &[runtime(big)], 1, None);
        let text = lowered.kernels[0].kernel.to_string();
        assert!(text.contains("parallel for v0 in 0..8"), "{text}");
    }

    #[test]
    fn transpose_every_permutation() {
        let perms: [&[usize]; 6] = [
            &[0, 1, 2],
            &[0, 2, 1],
            &[1, 0, 2],
            &[1, 2, 0],
            &[2, 0, 1],
            &[2, 1, 0],
        ];
        for perm in perms {
            for shape in [[2, 3, 4], [1, 5, 9], [6, 1, 3]] {
                let op = Op::Transpose {
                    perm: Some(perm.to_vec()),
                };
                check(&op, &[runtime(iota(&shape))], 1, None);
            }
        }
        check(
            &Op::Transpose { perm: None },
            &[runtime(iota(&[3, 5, 7, 2]))],
            1,
            None,
        );
        check(
            &Op::Transpose {
                perm: Some(vec![0, 2, 3, 1]),
            },
            &[runtime(iota(&[2, 16, 9, 9]))],
            1,
            None,
        );
        let i = Tensor::from_i64(vec![3, 2], vec![1, 2, 3, 4, 5, 6]).unwrap();
        check(&Op::Transpose { perm: None }, &[runtime(i)], 1, None);
    }

    #[test]
    fn concat_and_split_any_axis() {
        for axis in [0i64, 1, 2, -1] {
            let resolved = if axis < 0 { 2 } else { axis as usize };
            let with = |len: usize| {
                let mut shape = vec![2, 3, 5];
                shape[resolved] = len;
                iota(&shape)
            };
            let op = Op::Concat { axis };
            check(
                &op,
                &[runtime(with(3)), runtime(with(0)), runtime(with(4))],
                1,
                None,
            );
            let n = [2i64, 3, 5][resolved];
            let split = Op::Split {
                axis,
                num_outputs: None,
            };
            check(
                &split,
                &[runtime(with(n as usize)), constant(ints(&[1, 0, n - 1]))],
                3,
                None,
            );
        }
        let x = iota(&[2, 6, 3]);
        check(
            &Op::Split {
                axis: -2,
                num_outputs: Some(4),
            },
            &[runtime(x)],
            4,
            None,
        );
        let big = iota(&[1, 64, 40, 40]);
        check(
            &Op::Split {
                axis: 1,
                num_outputs: Some(2),
            },
            &[runtime(big.clone())],
            2,
            None,
        );
        check(
            &Op::Concat { axis: 1 },
            &[runtime(big.clone()), runtime(big)],
            1,
            None,
        );
    }

    /// Starts, ends, axes and steps of a slice.
    type SliceCase = (
        &'static [i64],
        &'static [i64],
        &'static [i64],
        &'static [i64],
    );

    #[test]
    fn slice_with_steps_and_clamping() {
        let x = iota(&[4, 5, 6]);
        let cases: [SliceCase; 6] = [
            (&[1, 0], &[3, 5], &[0, 1], &[1, 2]),
            (&[-1], &[i64::MIN], &[2], &[-1]),
            (&[10], &[20], &[1], &[1]),
            (&[0, 4, 5], &[i64::MAX, -100, 0], &[0, 1, 2], &[3, -2, -2]),
            (&[1], &[1000], &[-1], &[1]),
            (&[2], &[3], &[1], &[5]),
        ];
        for (starts, ends, axes, steps) in cases {
            let inputs = [
                runtime(x.clone()),
                constant(ints(starts)),
                constant(ints(ends)),
                constant(ints(axes)),
                constant(ints(steps)),
            ];
            check(&Op::Slice, &inputs, 1, None);
        }
    }

    #[test]
    fn pad_every_mode() {
        let x = iota(&[2, 3, 5]);
        for mode in [
            PadMode::Constant,
            PadMode::Reflect,
            PadMode::Edge,
            PadMode::Wrap,
        ] {
            for pads in [
                [0i64, 1, 2, 0, 3, 1],
                [1, 0, -1, 1, 2, -2],
                [0, 0, 0, 0, 0, 0],
            ] {
                let op = Op::Pad { mode };
                check(&op, &[runtime(x.clone()), constant(ints(&pads))], 1, None);
            }
        }
        let op = Op::Pad {
            mode: PadMode::Constant,
        };
        let value = Tensor::scalar_f32(2.5);
        check(
            &op,
            &[
                runtime(x.clone()),
                constant(ints(&[1, 2])),
                constant(value.clone()),
                constant(ints(&[-1])),
            ],
            1,
            None,
        );
        check(
            &op,
            &[
                runtime(x.clone()),
                constant(ints(&[1, 2])),
                runtime(value),
                constant(ints(&[1])),
            ],
            1,
            None,
        );
        let i = Tensor::from_i64(vec![2, 2], vec![1, 2, 3, 4]).unwrap();
        check(
            &op,
            &[
                runtime(i.clone()),
                constant(ints(&[1, 0, 0, 2])),
                constant(Tensor::scalar_i64(-9)),
            ],
            1,
            None,
        );
        check(
            &Op::Pad {
                mode: PadMode::Reflect,
            },
            &[runtime(i), constant(ints(&[1, 3, 1, 2]))],
            1,
            None,
        );
    }

    #[test]
    fn shape_and_gather() {
        let x = iota(&[2, 3, 4]);
        check(
            &Op::Shape {
                start: 0,
                end: None,
            },
            &[runtime(x.clone())],
            1,
            None,
        );
        check(
            &Op::Shape {
                start: -2,
                end: Some(-1),
            },
            &[runtime(x.clone())],
            1,
            None,
        );
        check(
            &Op::Shape {
                start: 2,
                end: Some(1),
            },
            &[runtime(x.clone())],
            1,
            None,
        );
        let indices = Tensor::from_i64(vec![2, 2], vec![0, -1, 2, 1]).unwrap();
        for axis in [0i64, 1, 2, -1] {
            let op = Op::Gather { axis };
            let idx = if axis == 0 {
                Tensor::from_i64(vec![3], vec![1, -2, 0]).unwrap()
            } else {
                indices.clone()
            };
            check(&op, &[runtime(x.clone()), runtime(idx.clone())], 1, None);
            check(&op, &[runtime(x.clone()), constant(idx)], 1, None);
        }
        check(
            &Op::Gather { axis: 0 },
            &[runtime(ints(&[7, 8, 9])), runtime(Tensor::scalar_i64(-1))],
            1,
            None,
        );
    }
}
