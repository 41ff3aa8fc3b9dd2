//! Lowering of Resize (see [`super`] for the conventions).
//!
//! The interpreter's planning ([`crate::interp::resize::plan`]) decides, for every resized
//! axis, the taps `(input index, weight)` of each output index (or tf_crop_and_resize's
//! fill value): nearest, linear, cubic, antialias, exclude_outside, every coordinate
//! transform and the aspect-ratio policies are all just different taps. Lowering turns the
//! taps into constant tables at compile time:
//! - when every tap of every resized axis is a single weight-1 tap (nearest, without
//!   extrapolation), the whole resize is one gather: a view copy whose resized axes read
//!   their source offsets from tables (see [`super::movement`]);
//! - otherwise the axes are resampled one after another, innermost first as the
//!   interpreter does, one kernel per axis with scratch buffers in between. Each kernel
//!   computes `out[o, x, i] = Σ_t w[x, t] * in[o, idx[x, t], i]` from an index table and a
//!   weight table (`T` taps per output index, padded with zero weights), four lanes of `i`
//!   at a time, with the weights of `x` held in locals (up to eight taps; more are looped
//!   over); fill samples select the extrapolation value. An axis whose every output index
//!   copies one input index is a gather instead, and one that copies the input unchanged
//!   is skipped.
//!
//! The interpreter sums in `f64` and rounds once; the kernels sum in `f32` in the same tap
//! order, which stays well within the harness tolerance.

use super::ir::{BufId, BufferKind, CmpOp, Expr, KernelBuilder, LocalId, LoopKind, Ty};
use super::movement::{
    AxisSrc, KernelParts, Source, View, ViewAxis, add, one, row_major_strides, times,
};
use super::{Arg, Lowered, LoweredKernel, NodeInfo};
use crate::error::{Error, Result};
use crate::graph::op::{CoordinateTransform, Op, Resize};
use crate::interp::resize::{AxisPlan, Sample, plan};
use crate::tensor::{DType, Tensor};

/// Taps of up to this many per output index are held in locals; more are looped over.
const MAX_HOISTED_TAPS: usize = 8;

/// The parallel loop runs over the outer rows when there are at least this many of them,
/// else over the output indices of the resized axis.
const MIN_PARALLEL_ROWS: usize = 16;

/// One output index of a resized axis: its taps with non-zero weights (in the
/// interpreter's order), or `None` for the fill value.
type Taps = Option<Vec<(usize, f32)>>;

/// Lowers a node of this family.
pub(super) fn lower(node: &NodeInfo<'_>) -> Result<Lowered> {
    let Op::Resize(attrs) = node.op else {
        return Err(Error::internal(format!(
            "node {} ({}): not a resize",
            node.name,
            node.op.name()
        )));
    };
    let x = node.input(0)?;
    if x.dtype != DType::F32 {
        return Err(Error::node(
            node.name,
            node.op.name(),
            format!("input must be f32, got {}", x.dtype),
        ));
    }
    let roi = if attrs.coordinate_transformation_mode == CoordinateTransform::TfCropAndResize {
        constant_operand(node, 1, "roi")?
    } else {
        None
    };
    let scales = constant_operand(node, 2, "scales")?;
    let sizes = constant_operand(node, 3, "sizes")?;
    let plans = plan(
        attrs,
        &x.shape,
        roi.as_deref(),
        scales.as_deref(),
        sizes.as_deref(),
    )
    .map_err(|message| Error::node(node.name, node.op.name(), message))?;
    let out_shape: Vec<usize> = plans.iter().map(|p| p.out_len).collect();
    let out = node.outputs.first().ok_or_else(|| {
        Error::internal(format!(
            "node {} (resize): output 0 missing at lowering",
            node.name
        ))
    })?;
    if out.shape != out_shape {
        return Err(Error::internal(format!(
            "node {} (resize): output has shape {:?}, lowering expects {out_shape:?}",
            node.name, out.shape
        )));
    }
    if out.is_empty() {
        let mut kp = KernelParts::new(node.name);
        kp.output(node, 0)?;
        return Ok(one(kp.finish()));
    }
    lower_plans(node, attrs, &x.shape, &plans)
}

/// A constant operand (`None` when absent or empty, which Resize treats alike).
fn constant_operand(
    node: &NodeInfo<'_>,
    i: usize,
    what: &str,
) -> Result<Option<std::sync::Arc<Tensor>>> {
    match node.optional(i) {
        None => Ok(None),
        Some(op) if op.is_empty() => Ok(None),
        Some(op) => match &op.value {
            Some(t) => Ok(Some(t.clone())),
            None => Err(node.unsupported(&format!("{what} must be a compile-time constant"))),
        },
    }
}

/// The taps of every output index of an axis, zero weights dropped.
fn axis_taps(samples: &[Sample]) -> Vec<Taps> {
    samples
        .iter()
        .map(|s| match s {
            Sample::Fill(_) => None,
            Sample::Taps(taps) => Some(
                taps.iter()
                    .filter(|&&(_, w)| w != 0.0)
                    .map(|&(i, w)| (i, w as f32))
                    .collect(),
            ),
        })
        .collect()
}

/// The single input index each output index copies, if the axis is a pure gather.
fn gather_indices(taps: &[Taps]) -> Option<Vec<usize>> {
    taps.iter()
        .map(|t| match t.as_deref() {
            Some([(i, w)]) if *w == 1.0 => Some(*i),
            _ => None,
        })
        .collect()
}

/// Whether the taps of an axis copy it unchanged.
fn is_identity(taps: &[Taps], in_len: usize, out_len: usize) -> bool {
    in_len == out_len
        && gather_indices(taps).is_some_and(|idx| idx.iter().enumerate().all(|(x, &i)| x == i))
}

/// The kernels of a resize whose output is not empty.
fn lower_plans(
    node: &NodeInfo<'_>,
    attrs: &Resize,
    in_shape: &[usize],
    plans: &[AxisPlan],
) -> Result<Lowered> {
    // Innermost axis first, as the interpreter resamples them. An axis whose every output
    // index copies the same input index is skipped (the interpreter may still resample it,
    // when a clamped zero-weight tap hides that it is the identity).
    let steps: Vec<(usize, Vec<Taps>, usize)> = plans
        .iter()
        .enumerate()
        .rev()
        .filter_map(|(axis, p)| {
            let taps = axis_taps(p.samples.as_ref()?);
            (!is_identity(&taps, p.in_len, p.out_len)).then_some((axis, taps, p.out_len))
        })
        .collect();
    let fill = attrs.extrapolation_value;
    let mut kp = KernelParts::new(node.name);
    let src = kp.input(node, 0)?;
    let dst = kp.output(node, 0)?;
    let total: usize = in_shape.iter().product();

    if steps.is_empty() {
        kp.copy(&Source::Buf(src), dst, DType::F32, View::flat(total), true);
        return Ok(one(kp.finish()));
    }

    // Nearest without extrapolation: one gather over the output.
    let gathers: Option<Vec<(usize, Vec<usize>)>> = steps
        .iter()
        .map(|(axis, taps, _)| gather_indices(taps).map(|idx| (*axis, idx)))
        .collect();
    if let Some(gathers) = gathers {
        let out_shape: Vec<usize> = plans.iter().map(|p| p.out_len).collect();
        let in_strides = row_major_strides(in_shape);
        let mut view = View::dense(&out_shape, &in_strides);
        for (axis, idx) in gathers {
            let stride = in_strides[axis];
            view.axes[axis].src = AxisSrc::Table(idx.iter().map(|&i| i as i64 * stride).collect());
        }
        kp.copy(&Source::Buf(src), dst, DType::F32, view, true);
        return Ok(one(kp.finish()));
    }

    // One kernel per resized axis, through scratch buffers.
    let mut kernels = Vec::with_capacity(steps.len());
    let mut scratch = Vec::new();
    let mut shape = in_shape.to_vec();
    for (s, (axis, taps, out_len)) in steps.iter().enumerate() {
        let outer: usize = shape[..*axis].iter().product();
        let inner: usize = shape[axis + 1..].iter().product();
        let in_len = shape[*axis];
        let src_arg = if s == 0 {
            Arg::Input(0)
        } else {
            Arg::Scratch(s - 1)
        };
        let last = s + 1 == steps.len();
        let dst_arg = if last {
            Arg::Output(0)
        } else {
            Arg::Scratch(s)
        };
        if !last {
            scratch.push((DType::F32, outer * out_len * inner));
        }
        let geometry = Step {
            outer,
            in_len,
            out_len: *out_len,
            inner,
        };
        let name = format!("{}_axis{axis}", node.name);
        kernels.push(match gather_indices(taps) {
            Some(idx) => gather_step(&name, src_arg, dst_arg, &geometry, &idx),
            None => weighted_step(&name, src_arg, dst_arg, &geometry, taps, fill)?,
        });
        shape[*axis] = *out_len;
    }
    Ok(Lowered { kernels, scratch })
}

/// The geometry of one resampled axis: `[outer, in_len, inner] → [outer, out_len, inner]`.
struct Step {
    outer: usize,
    in_len: usize,
    out_len: usize,
    inner: usize,
}

impl Step {
    fn src_len(&self) -> usize {
        self.outer * self.in_len * self.inner
    }

    fn dst_len(&self) -> usize {
        self.outer * self.out_len * self.inner
    }
}

/// A kernel copying, for each output index `x`, input index `idx[x]` of the axis.
fn gather_step(name: &str, src_arg: Arg, dst_arg: Arg, g: &Step, idx: &[usize]) -> LoweredKernel {
    let mut kp = KernelParts::new(name);
    let src = kp.buffer("src", DType::F32, g.src_len(), BufferKind::Input, src_arg);
    let dst = kp.buffer("dst", DType::F32, g.dst_len(), BufferKind::Output, dst_arg);
    let inner = g.inner as i64;
    let view = View {
        src_base: 0,
        dst_base: 0,
        axes: vec![
            ViewAxis::affine(g.outer, g.in_len as i64 * inner, g.out_len as i64 * inner),
            ViewAxis {
                len: g.out_len,
                src: AxisSrc::Table(idx.iter().map(|&i| i as i64 * inner).collect()),
                dst: inner,
            },
            ViewAxis::affine(g.inner, 1, 1),
        ],
    };
    kp.copy(&Source::Buf(src), dst, DType::F32, view, true);
    kp.finish()
}

/// The buffers and tap tables of a weighted step, as the loop body reads them.
struct TapTables {
    src: BufId,
    dst: BufId,
    /// `idx[x * taps + t]`: the tap's input index times `inner`.
    idx: BufId,
    /// `w[x * taps + t]`: the tap's weight (zero for padding).
    weights: BufId,
    /// `fill[x]`: 1 where output index `x` takes the fill value (absent if none does).
    fill_flags: Option<BufId>,
    fill: f32,
    taps: usize,
}

/// The taps of one output index as the innermost loop reads them: weights in locals when
/// there are few taps (the indices are read from their table at each use, which keeps them
/// provably inside the input), else table loads inside a loop over the taps.
enum TapExprs {
    Hoisted {
        /// `(table slot, scalar weight local, vector weight local)` per tap.
        taps: Vec<(Expr, LocalId, Option<LocalId>)>,
    },
    Looped,
}

/// A kernel resampling one axis with weighted taps.
fn weighted_step(
    name: &str,
    src_arg: Arg,
    dst_arg: Arg,
    g: &Step,
    taps: &[Taps],
    fill: f32,
) -> Result<LoweredKernel> {
    let n_taps = taps
        .iter()
        .map(|t| t.as_ref().map_or(0, Vec::len))
        .max()
        .unwrap_or(0)
        .max(1);
    let mut idx = vec![0i64; g.out_len * n_taps];
    let mut weights = vec![0f32; g.out_len * n_taps];
    for (x, sample) in taps.iter().enumerate() {
        for (t, &(i, w)) in sample.iter().flatten().enumerate() {
            idx[x * n_taps + t] = (i * g.inner) as i64;
            weights[x * n_taps + t] = w;
        }
    }
    let mut kp = KernelParts::new(name);
    let src = kp.buffer("src", DType::F32, g.src_len(), BufferKind::Input, src_arg);
    let dst = kp.buffer("dst", DType::F32, g.dst_len(), BufferKind::Output, dst_arg);
    let idx_buf = kp.table("tap_index", idx);
    let weights = Tensor::from_f32(vec![weights.len()], weights)
        .map_err(|e| Error::internal(format!("kernel {name}: tap weights: {e}")))?;
    let weights_buf = kp.constant("tap_weight", weights);
    let fill_flags = if taps.iter().any(Option::is_none) {
        let flags = taps.iter().map(|t| i64::from(t.is_none())).collect();
        Some(kp.table("fill", flags))
    } else {
        None
    };
    let tables = TapTables {
        src,
        dst,
        idx: idx_buf,
        weights: weights_buf,
        fill_flags,
        fill,
        taps: n_taps,
    };
    let (outer, out_len) = (g.outer as i64, g.out_len as i64);
    let src_row = (g.in_len * g.inner) as i64;
    let dst_row = (g.out_len * g.inner) as i64;
    let k = &mut kp.k;
    if g.outer >= MIN_PARALLEL_ROWS || g.outer >= g.out_len {
        k.for_loop(0, outer, 1, LoopKind::Parallel, |k, o| {
            k.range(g.out_len, |k, x| {
                let exprs = hoist(k, &tables, &x, g.inner);
                let src_at = times(o.clone(), src_row);
                let dst_at = add(times(o, dst_row), times(x.clone(), g.inner as i64));
                row(k, &tables, &exprs, &x, src_at, dst_at, g.inner);
            });
        });
    } else {
        k.for_loop(0, out_len, 1, LoopKind::Parallel, |k, x| {
            let exprs = hoist(k, &tables, &x, g.inner);
            k.range(g.outer, |k, o| {
                let src_at = times(o.clone(), src_row);
                let dst_at = add(times(o, dst_row), times(x.clone(), g.inner as i64));
                row(k, &tables, &exprs, &x, src_at, dst_at, g.inner);
            });
        });
    }
    Ok(kp.finish())
}

/// Position `t` of output index `x` in the tap tables.
fn tap_slot(tables: &TapTables, x: &Expr, t: Expr) -> Expr {
    add(times(x.clone(), tables.taps as i64), t)
}

/// Declares the taps of output index `x` as locals when there are few of them.
fn hoist(k: &mut KernelBuilder, tables: &TapTables, x: &Expr, inner: usize) -> TapExprs {
    if tables.taps > MAX_HOISTED_TAPS {
        return TapExprs::Looped;
    }
    let taps = (0..tables.taps)
        .map(|t| {
            let slot = tap_slot(tables, x, Expr::Int(t as i64));
            let weight = k.declare(Ty::F32, Expr::load(tables.weights, slot.clone()));
            let vector = (inner >= 4).then(|| k.declare(Ty::F32x4, Expr::Local(weight).splat()));
            (slot, weight, vector)
        })
        .collect();
    TapExprs::Hoisted { taps }
}

/// Emits the output row `dst[dst_at .. dst_at + inner]` of output index `x`, reading input
/// rows from `src_at`: four lanes at a time, then a scalar tail.
fn row(
    k: &mut KernelBuilder,
    tables: &TapTables,
    exprs: &TapExprs,
    x: &Expr,
    src_at: Expr,
    dst_at: Expr,
    inner: usize,
) {
    if inner == 1 {
        let value = sample(k, tables, exprs, x, &src_at, Expr::Int(0), 1);
        k.store(tables.dst, dst_at, value);
        return;
    }
    let main = (inner - inner % 4) as i64;
    if main > 0 {
        k.for_loop(0, main, 4, LoopKind::Serial, |k, i| {
            let value = sample(k, tables, exprs, x, &src_at, i.clone(), 4);
            k.store(tables.dst, add(dst_at.clone(), i), value);
        });
    }
    if main < inner as i64 {
        k.for_loop(main, inner as i64, 1, LoopKind::Serial, |k, i| {
            let value = sample(k, tables, exprs, x, &src_at, i.clone(), 1);
            k.store(tables.dst, add(dst_at.clone(), i), value);
        });
    }
}

/// The value of `lanes` (1 or 4) outputs at offset `i` of output index `x`'s row.
fn sample(
    k: &mut KernelBuilder,
    tables: &TapTables,
    exprs: &TapExprs,
    x: &Expr,
    src_at: &Expr,
    i: Expr,
    lanes: u8,
) -> Expr {
    let load = |index: Expr| {
        let at = add(add(src_at.clone(), index), i.clone());
        if lanes == 4 {
            Expr::load4(tables.src, at)
        } else {
            Expr::load(tables.src, at)
        }
    };
    let sum = match exprs {
        TapExprs::Hoisted { taps } => {
            let mut sum: Option<Expr> = None;
            for (slot, weight, vector) in taps {
                let w = match (lanes, vector) {
                    (4, Some(v)) => Expr::Local(*v),
                    _ => Expr::Local(*weight),
                };
                let s = load(Expr::load(tables.idx, slot.clone()));
                sum = Some(match sum {
                    None => w.mul(s),
                    Some(acc) => w.fma(s, acc),
                });
            }
            sum.unwrap_or(Expr::Float(0.0))
        }
        TapExprs::Looped => {
            let (ty, zero) = if lanes == 4 {
                (Ty::F32x4, Expr::Float(0.0).splat())
            } else {
                (Ty::F32, Expr::Float(0.0))
            };
            let acc = k.declare(ty, zero);
            k.range(tables.taps, |k, t| {
                let slot = tap_slot(tables, x, t);
                let mut w = Expr::load(tables.weights, slot.clone());
                if lanes == 4 {
                    w = w.splat();
                }
                let s = load(Expr::load(tables.idx, slot));
                k.assign(acc, w.fma(s, Expr::Local(acc)));
            });
            Expr::Local(acc)
        }
    };
    match tables.fill_flags {
        Some(flags) => {
            let is_fill = Expr::load(flags, x.clone()).cmp(CmpOp::Ne, Expr::Int(0));
            let mut fill = Expr::Float(tables.fill);
            if lanes == 4 {
                fill = fill.splat();
            }
            is_fill.select(fill, sum)
        }
        None => sum,
    }
}

#[cfg(test)]
mod tests {
    use super::super::movement::testing::{check, constant, iota, runtime};
    use crate::graph::op::{
        AspectRatioPolicy, CoordinateTransform, NearestMode, Op, Resize, ResizeMode,
    };
    use crate::tensor::Tensor;

    const TRANSFORMS: [CoordinateTransform; 6] = [
        CoordinateTransform::HalfPixel,
        CoordinateTransform::HalfPixelSymmetric,
        CoordinateTransform::PytorchHalfPixel,
        CoordinateTransform::AlignCorners,
        CoordinateTransform::Asymmetric,
        CoordinateTransform::TfCropAndResize,
    ];

    fn scales(v: &[f32]) -> Tensor {
        Tensor::from_f32(vec![v.len()], v.to_vec()).unwrap()
    }

    fn empty() -> Tensor {
        Tensor::from_f32(vec![0], vec![]).unwrap()
    }

    fn run_scales(attrs: Resize, shape: &[usize], s: &[f32]) {
        let op = Op::Resize(attrs);
        check(
            &op,
            &[runtime(iota(shape)), None, constant(scales(s))],
            1,
            Some(2e-5),
        );
    }

    #[test]
    fn every_mode_and_transform_matches_the_interpreter() {
        let factors: [&[f32]; 4] = [
            &[1.0, 1.0, 2.0, 2.0],
            &[1.0, 1.0, 0.6, 0.8],
            &[1.0, 1.0, 1.5, 0.5],
            &[1.0, 2.0, 1.0, 3.0],
        ];
        for mode in [ResizeMode::Nearest, ResizeMode::Linear, ResizeMode::Cubic] {
            for transform in TRANSFORMS {
                for antialias in [false, true] {
                    for exclude_outside in [false, true] {
                        for s in factors {
                            let attrs = Resize {
                                mode,
                                coordinate_transformation_mode: transform,
                                antialias: antialias && mode != ResizeMode::Nearest,
                                exclude_outside,
                                extrapolation_value: 7.5,
                                ..Resize::default()
                            };
                            run_scales(attrs, &[1, 2, 5, 6], s);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn nearest_modes_and_wide_rows() {
        for nearest_mode in [
            NearestMode::RoundPreferFloor,
            NearestMode::RoundPreferCeil,
            NearestMode::Floor,
            NearestMode::Ceil,
        ] {
            for transform in TRANSFORMS {
                let attrs = Resize {
                    coordinate_transformation_mode: transform,
                    nearest_mode,
                    ..Resize::default()
                };
                run_scales(attrs.clone(), &[1, 3, 4, 7], &[1.0, 1.0, 2.0, 1.7]);
                run_scales(attrs, &[2, 3, 9, 8], &[1.0, 1.0, 0.5, 0.5]);
            }
        }
        // Many taps (antialiased strong downsampling), rows long enough for vectors and a
        // tail, and enough outer rows to parallelise over them.
        let linear = Resize {
            mode: ResizeMode::Linear,
            antialias: true,
            ..Resize::default()
        };
        run_scales(linear.clone(), &[1, 20, 40, 42], &[1.0, 1.0, 0.1, 0.15]);
        run_scales(
            Resize {
                mode: ResizeMode::Cubic,
                ..linear
            },
            &[1, 2, 24, 30],
            &[1.0, 1.0, 0.25, 2.0],
        );
    }

    #[test]
    fn sizes_axes_roi_and_policies() {
        let x = iota(&[1, 2, 4, 5]);
        for policy in [
            AspectRatioPolicy::Stretch,
            AspectRatioPolicy::NotLarger,
            AspectRatioPolicy::NotSmaller,
        ] {
            for axes in [vec![2, 3], vec![3, 2], vec![-1, -2]] {
                let attrs = Resize {
                    mode: ResizeMode::Linear,
                    axes,
                    keep_aspect_ratio_policy: policy,
                    ..Resize::default()
                };
                let sizes = Tensor::vector_i64(vec![7, 3]);
                let op = Op::Resize(attrs);
                check(
                    &op,
                    &[runtime(x.clone()), None, None, constant(sizes)],
                    1,
                    Some(2e-5),
                );
            }
        }
        let attrs = Resize {
            mode: ResizeMode::Linear,
            coordinate_transformation_mode: CoordinateTransform::TfCropAndResize,
            extrapolation_value: 10.0,
            ..Resize::default()
        };
        let roi = Tensor::from_f32(vec![8], vec![0.0, 0.0, 0.4, 0.6, 1.0, 1.0, 1.2, 1.7]).unwrap();
        let sizes = Tensor::vector_i64(vec![1, 2, 3, 9]);
        let op = Op::Resize(attrs);
        let inputs = [
            runtime(x.clone()),
            constant(roi),
            constant(empty()),
            constant(sizes),
        ];
        check(&op, &inputs, 1, Some(2e-5));
        // Unit scales copy; a 1-D resize works too.
        run_scales(Resize::default(), &[2, 3], &[1.0, 1.0]);
        run_scales(
            Resize {
                mode: ResizeMode::Cubic,
                ..Resize::default()
            },
            &[6],
            &[2.5],
        );
    }

    #[test]
    fn nearest_upsample_is_one_gather() {
        let lowered = check(
            &Op::Resize(Resize::default()),
            &[
                runtime(iota(&[1, 8, 10, 10])),
                None,
                constant(scales(&[1.0, 1.0, 2.0, 2.0])),
            ],
            1,
            None,
        );
        assert_eq!(lowered.kernels.len(), 1);
        assert!(lowered.scratch.is_empty());
    }
}
