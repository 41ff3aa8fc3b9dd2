//! Lowering of the pooling ops (see [`super`] for the conventions).
//!
//! One parallel iteration per (batch, channel) plane.
//!
//! - `max_pool` follows the interpreter exactly: the first tap inside the input is taken,
//!   then a tap replaces the maximum only if it is greater (`v > best`, so NaN never
//!   replaces and a leading NaN stays); a window without input taps gives `-inf` (index -1).
//!   Output positions are walked with the checked walkers of [`super::conv`]: in the
//!   interior the first tap is always inside, so the maximum starts from it, and rows are
//!   computed in `f32x4` vectors reading a [`Layout`] of the input (split by stride phase,
//!   so strided taps are consecutive); border windows are scalar and track whether a tap
//!   was found in an `i64` local. Indices (flat offsets into the input, column-major within
//!   the plane for `storage_order` 1) are computed one position at a time.
//! - `average_pool` sums the taps in window order from 0 over a zero-padded [`Layout`]
//!   (padding and taps past it add exactly 0), every row in vectors, and divides by the
//!   count the interpreter uses; that count factors into a per-axis count (input taps, or
//!   all taps up to the end of the end padding with `count_include_pad`), so the kernel
//!   multiplies per-axis counts from a constant table.

use std::sync::Arc;

use super::conv::{
    Axis, Layout, Loads, for_each_segment, for_each_tap, node_error, plus, stride2_loads, strides,
    sum, times, walk_row,
};
use super::ir::{BufId, CmpOp, LocalId};
use super::{Arg, BufferKind, Expr, KernelBuilder, LoopKind, Lowered, LoweredKernel, NodeInfo, Ty};
use crate::error::{Error, Result};
use crate::graph::op::{Op, Pool};
use crate::graph::window::{self, ResolvedWindow, Rounding};
use crate::tensor::{DType, Tensor};

/// Lowers a node of this family.
pub(super) fn lower(node: &NodeInfo<'_>) -> Result<Lowered> {
    match node.op {
        Op::MaxPool(attrs) => max_pool(node, attrs),
        Op::AveragePool(attrs) => average_pool(node, attrs),
        other => Err(Error::internal(format!(
            "pool lowering called for {}",
            other.name()
        ))),
    }
}

/// The checked input shape, the resolved window and its axes.
struct Plan {
    planes: usize,
    plane: usize,
    out_plane: usize,
    x_len: usize,
    geometry: ResolvedWindow,
    axes: Vec<Axis>,
}

fn plan(node: &NodeInfo<'_>, attrs: &Pool) -> Result<Plan> {
    let x = super::conv::f32_input(node, 0, "input")?;
    if x.shape.len() < 3 {
        return Err(node_error(
            node,
            format!("input {:?} must be [N, C, spatial...]", x.shape),
        ));
    }
    let spatial = &x.shape[2..];
    let kernel = &attrs.window.kernel_shape;
    if kernel.len() != spatial.len() || kernel.contains(&0) {
        return Err(node_error(
            node,
            format!(
                "kernel_shape {kernel:?} must give a positive size for each spatial axis of input {:?}",
                x.shape
            ),
        ));
    }
    if spatial.contains(&0) {
        return Err(node.unsupported("an empty spatial axis"));
    }
    let rounding = if attrs.ceil_mode {
        Rounding::Ceil
    } else {
        Rounding::Floor
    };
    let geometry = window::resolve(&attrs.window, spatial, kernel, rounding)
        .map_err(|e| node_error(node, e))?;
    let mut shape = x.shape[..2].to_vec();
    shape.extend_from_slice(&geometry.output);
    for (i, y) in node.outputs.iter().enumerate() {
        let dtype = if i == 0 { DType::F32 } else { DType::I64 };
        if y.shape != shape || y.dtype != dtype {
            return Err(Error::internal(format!(
                "node {}: output {i} is {} {:?}, lowering computes {dtype} {shape:?}",
                node.name, y.dtype, y.shape
            )));
        }
    }
    Ok(Plan {
        planes: x.shape[0] * x.shape[1],
        plane: spatial.iter().product(),
        out_plane: geometry.output.iter().product(),
        x_len: x.len(),
        axes: Axis::from_window(&geometry, spatial),
        geometry,
    })
}

/// The offset in the output plane of the position `outs`.
fn out_position(plan: &Plan, outs: &[(Expr, bool)]) -> Expr {
    let out_strides = strides(&plan.geometry.output);
    sum(outs
        .iter()
        .zip(&out_strides)
        .map(|((o, _), s)| times(o.clone(), *s)))
}

/// The input offset within the plane of the first tap of the (interior) position `outs`.
fn first_tap(plan: &Plan, outs: &[(Expr, bool)]) -> (Expr, Vec<Expr>) {
    let in_strides = strides(&plan.axes.iter().map(|a| a.input).collect::<Vec<_>>());
    let coords: Vec<Expr> = plan
        .axes
        .iter()
        .zip(outs)
        .map(|(a, (o, _))| a.input_coord(o.clone(), Expr::Int(0)))
        .collect();
    let offset = sum(coords
        .iter()
        .zip(&in_strides)
        .map(|(c, s)| times(c.clone(), *s)));
    (offset, coords)
}

/// Calls `f(k, offset)` for each tap, in window order, of the output position `outs` in
/// `layout` (which has no padding left to check); `offset` is the tap's element within a
/// plane of the layout.
fn layout_taps(
    k: &mut KernelBuilder,
    layout: &Layout,
    outs: &[(Expr, bool)],
    f: &mut dyn FnMut(&mut KernelBuilder, Expr),
) {
    let rank = layout.axes.len();
    let o = outs[rank - 1].0.clone();
    let kernel = layout.axes[rank - 1].kernel;
    for_each_tap(
        k,
        &layout.axes[..rank - 1],
        &outs[..rank - 1],
        &mut |k, tap| {
            let row = times(tap.offset.clone(), layout.row_len());
            for kx in 0..kernel {
                f(k, sum([row.clone(), layout.tap(kx, o.clone())]));
            }
        },
    );
}

/// The offset within a plane of `layout` of the first tap of output position `outs`.
fn layout_first(layout: &Layout, outs: &[(Expr, bool)]) -> Expr {
    let rank = layout.axes.len();
    let row_strides = strides(
        &layout.axes[..rank - 1]
            .iter()
            .map(|a| a.input)
            .collect::<Vec<_>>(),
    );
    let row = sum(layout.axes[..rank - 1]
        .iter()
        .zip(outs)
        .zip(&row_strides)
        .map(|((a, (o, _)), s)| times(times(o.clone(), a.stride), *s)));
    sum([
        times(row, layout.row_len()),
        layout.tap(0, outs[rank - 1].0.clone()),
    ])
}

/// Adds the kernel writing `layout`'s copy of input 0 into scratch 0, and declares the
/// copy as a buffer of `k` (bound to [`Arg::Scratch`] 0).
fn copy_layout(
    node: &NodeInfo<'_>,
    layout: &Layout,
    k: &mut KernelBuilder,
    lowered: &mut Lowered,
) -> BufId {
    lowered.scratch.push((DType::F32, layout.len()));
    lowered
        .kernels
        .push(layout.kernel(&format!("{}_pad", node.name), Arg::Input(0), 0));
    k.buffer("x_padded", DType::F32, layout.len(), BufferKind::Input)
}

/// Vectors of a row that a direct max-pool kernel (stride 1 or 2 along the row) takes
/// through the taps together: each tap of a vector is two loads and a shuffle, so more
/// vectors at once leave too few registers and the optimiser's hoisted loads spill
/// (SqueezeNet's three max pools, 1 thread: 0.39–0.58 / 0.16–0.20 / 0.076 ms with the 8 of
/// a row's chunk together, 0.26–0.27 / 0.11 / 0.068 with 2, 0.30–0.32 / 0.135 / 0.077 with
/// 1 or 3).
const DIRECT_VECTORS: usize = 2;

/// Output columns of a strip of [`max_pool_strips`]: two `f32x4` vectors.
const STRIP: usize = 8;

/// A 2-D max pool without indices whose every window lies inside the input (no padding,
/// no dilation; ceil mode only where its last window fits), with a row stride of 1 or 2 and
/// at least [`STRIP`] output columns: each plane row by row, in strips of [`STRIP`] columns
/// (the last overlapping the one before where the row is not a whole number of strips).
/// A window's maximum is taken row by row: each input row's maximum over the window's
/// columns is computed once and kept, in a scratch row per plane, for the next output row
/// whose windows share the input row (3×3 windows at stride 2: every other row), so a
/// vector of outputs costs two rows' taps instead of three. Rows outer and strips inner,
/// the input is read in order: walking each strip down the whole plane instead (no
/// scratch, the kept rows in registers) read it in columns, and SqueezeNet's first max
/// pool (111×111 planes, not in cache) ran 0.40 → 0.87 ms on one thread; by rows it runs
/// 0.43 → 0.33 ms, its 27×27 and 13×13 ones 0.19 → 0.14 and 0.13 → 0.064 ms (medians of
/// 6 alternated runs, `fovea bench --profile`).
///
/// The result is the interpreter's, bit for bit: its fold (the first tap, then a tap
/// replaces the maximum only if greater) gives a NaN first tap, or else the first tap in
/// window order holding the largest non-NaN value. The row maxima start from `-inf`, so
/// they skip NaNs and keep the first of equal values; combined in row order the same way
/// they give that first largest value; a last `max(v, first tap)` puts a NaN first tap
/// back (and is `v` otherwise, the first tap being no greater than `v`, and `v` itself
/// where equal).
fn max_pool_strips(node: &NodeInfo<'_>, plan: &Plan) -> Option<Lowered> {
    let [ry, rx] = plan.axes.as_slice() else {
        return None;
    };
    let inside = |a: &Axis| a.dilation == 1 && a.interior() == (0, a.output);
    if !inside(ry) || !inside(rx) || !matches!(rx.stride, 1 | 2) || rx.output < STRIP {
        return None;
    }
    let (kh, sy) = (ry.kernel, ry.stride);
    // Rows of a window shared with the next output row's.
    let kept = kh.saturating_sub(sy);
    let vectors = STRIP / 4;
    let whole = rx.output / STRIP * STRIP;
    // Strips per row, the last one overlapping where the row is not a whole number.
    let strips = rx.output.div_ceil(STRIP);
    // The kept rows' maxima and first taps: per plane and kept row, `2 × STRIP` elements
    // per strip (the overlapping last strip has its own, after the others').
    let kept_len = kept * 2 * strips * STRIP;
    let mut k = KernelBuilder::new(node.name);
    k.set_schedule(format!(
        "max pool by rows in strips of {STRIP} columns, {kept} of {kh} rows' maxima kept \
         for the next output row"
    ));
    let xb = k.buffer("x", DType::F32, plan.x_len, BufferKind::Input);
    let yb = k.buffer(
        "y",
        DType::F32,
        plan.planes * plan.out_plane,
        BufferKind::Output,
    );
    let mut args = vec![Arg::Input(0), Arg::Output(0)];
    let mut scratch = Vec::new();
    let kb = (kept > 0).then(|| {
        args.push(Arg::Scratch(0));
        scratch.push((DType::F32, plan.planes * kept_len));
        k.buffer(
            "kept_rows",
            DType::F32,
            plan.planes * kept_len,
            BufferKind::Output,
        )
    });
    k.for_loop(0, plan.planes as i64, 1, LoopKind::Parallel, |k, p| {
        let x_plane = Expr::Local(k.declare(Ty::I64, times(p.clone(), plan.plane)));
        let y_plane = Expr::Local(k.declare(Ty::I64, times(p.clone(), plan.out_plane)));
        let kept_plane = Expr::Local(k.declare(Ty::I64, times(p, kept_len)));
        // One input row's maximum over the window's columns and its first tap, per vector
        // of the strip at output column `c`.
        let row_max = |k: &mut KernelBuilder, iy: Expr, c: &Expr| -> Vec<(LocalId, LocalId)> {
            let row = Expr::Local(k.declare(
                Ty::I64,
                sum([
                    x_plane.clone(),
                    times(iy, rx.input),
                    times(c.clone(), rx.stride),
                ]),
            ));
            (0..vectors)
                .map(|u| {
                    let at = plus(row.clone(), (4 * u * rx.stride) as i64);
                    let mut loads = Loads::new(xb, at);
                    let taps: Vec<Expr> = (0..rx.kernel)
                        .map(|kx| {
                            if rx.stride == 1 {
                                return loads.at(k, kx as i64);
                            }
                            let ([a, b], lanes) = stride2_loads(kx, rx.kernel);
                            loads.at(k, a as i64).shuffle(loads.at(k, b as i64), lanes)
                        })
                        .collect();
                    let mut taps = taps.into_iter();
                    let first = k.declare(Ty::F32x4, taps.next().expect("a window has taps"));
                    let best = k.declare(
                        Ty::F32x4,
                        Expr::Local(first).max(Expr::Float(f32::NEG_INFINITY).splat()),
                    );
                    for tap in taps {
                        k.assign(best, tap.max(Expr::Local(best)));
                    }
                    (best, first)
                })
                .collect()
        };
        // Where kept row `j`'s maxima (then first taps) of vector `u` of the strip with
        // slot `s` are.
        let kept_at = |j: usize, s: &Expr, u: usize, first: bool| {
            let row = j * 2 * strips * STRIP + if first { strips * STRIP } else { 0 };
            plus(sum([kept_plane.clone(), s.clone()]), (row + 4 * u) as i64)
        };
        let keep = |k: &mut KernelBuilder, j: usize, s: &Expr, row: &[(LocalId, LocalId)]| {
            let Some(kb) = kb else { return };
            for (u, &(best, first)) in row.iter().enumerate() {
                k.store(kb, kept_at(j, s, u, false), Expr::Local(best));
                k.store(kb, kept_at(j, s, u, true), Expr::Local(first));
            }
        };
        // Every strip of the row: output column `c`, slot `s`.
        let each_strip = |k: &mut KernelBuilder, f: &dyn Fn(&mut KernelBuilder, Expr, Expr)| {
            k.for_loop(0, whole as i64, STRIP as i64, LoopKind::Serial, |k, c| {
                f(k, c.clone(), c)
            });
            if whole < rx.output {
                f(
                    k,
                    Expr::Int((rx.output - STRIP) as i64),
                    Expr::Int(whole as i64),
                );
            }
        };
        // Output row 0's kept rows.
        each_strip(k, &|k, c, s| {
            for j in 0..kept {
                let row = row_max(k, Expr::Int(j as i64), &c);
                keep(k, j, &s, &row);
            }
        });
        k.for_loop(0, ry.output as i64, 1, LoopKind::Serial, |k, oy| {
            let top = Expr::Local(k.declare(Ty::I64, times(oy.clone(), sy)));
            let y_row =
                Expr::Local(k.declare(Ty::I64, sum([y_plane.clone(), times(oy, rx.output)])));
            each_strip(k, &|k, c, s| {
                let carried: Vec<Vec<(LocalId, LocalId)>> = (0..kept)
                    .map(|j| {
                        (0..vectors)
                            .map(|u| {
                                let kb = kb.expect("kept rows have a buffer");
                                let best = Expr::load4(kb, kept_at(j, &s, u, false));
                                let first = Expr::load4(kb, kept_at(j, &s, u, true));
                                (k.declare(Ty::F32x4, best), k.declare(Ty::F32x4, first))
                            })
                            .collect()
                    })
                    .collect();
                let fresh: Vec<Vec<(LocalId, LocalId)>> = (kept..kh)
                    .map(|ky| row_max(k, plus(top.clone(), ky as i64), &c))
                    .collect();
                let rows: Vec<&Vec<(LocalId, LocalId)>> = carried.iter().chain(&fresh).collect();
                let at = sum([y_row.clone(), c.clone()]);
                for u in 0..vectors {
                    let best = k.declare(Ty::F32x4, Expr::Local(rows[0][u].0));
                    for row in &rows[1..] {
                        k.assign(best, Expr::Local(row[u].0).max(Expr::Local(best)));
                    }
                    let value = Expr::Local(best).max(Expr::Local(rows[0][u].1));
                    k.store(yb, plus(at.clone(), 4 * u as i64), value);
                }
                // Output row oy + 1's first rows are this one's rows from `sy` on.
                for j in 0..kept {
                    keep(k, j, &s, rows[j + sy]);
                }
            });
        });
    });
    Some(Lowered {
        kernels: vec![LoweredKernel {
            kernel: k.finish(),
            args,
        }],
        scratch,
    })
}

fn max_pool(node: &NodeInfo<'_>, attrs: &Pool) -> Result<Lowered> {
    let plan = plan(node, attrs)?;
    let with_indices = node.outputs.len() > 1;
    if !matches!(attrs.storage_order, 0 | 1) {
        return Err(node_error(
            node,
            format!("storage_order must be 0 or 1, got {}", attrs.storage_order),
        ));
    }
    if !with_indices && let Some(lowered) = max_pool_strips(node, &plan) {
        return Ok(lowered);
    }
    // Strides of the input coordinates in the stored index (within the plane).
    let index_strides = if attrs.storage_order == 1 {
        let mut s = vec![1usize; plan.axes.len()];
        for a in 1..s.len() {
            s[a] = s[a - 1] * plan.axes[a - 1].input;
        }
        s
    } else {
        strides(&plan.axes.iter().map(|a| a.input).collect::<Vec<_>>())
    };
    // Interior vectors read a layout where strided taps are consecutive (no indices: those
    // are computed one position at a time).
    // With a stride of 1 or 2 along the row, interior vectors read the input itself (two
    // loads and a shuffle gather every other element); other strides read the layout.
    let row_stride = plan.axes.last().map_or(1, |a| a.stride);
    let direct = !with_indices && row_stride <= 2;
    let layout = (!with_indices && !direct).then(|| Layout::new(&plan.axes, plan.planes));

    let mut lowered = Lowered::default();
    let mut k = KernelBuilder::new(node.name);
    let mut args = vec![Arg::Input(0)];
    let xb = k.buffer("x", DType::F32, plan.x_len, BufferKind::Input);
    let lb = layout.as_ref().map(|l| {
        if l.copy {
            args.push(Arg::Scratch(0));
            copy_layout(node, l, &mut k, &mut lowered)
        } else {
            xb
        }
    });
    let yb = k.buffer(
        "y",
        DType::F32,
        plan.planes * plan.out_plane,
        BufferKind::Output,
    );
    args.push(Arg::Output(0));
    let ib = with_indices.then(|| {
        args.push(Arg::Output(1));
        k.buffer(
            "indices",
            DType::I64,
            plan.planes * plan.out_plane,
            BufferKind::Output,
        )
    });

    k.for_loop(0, plan.planes as i64, 1, LoopKind::Parallel, |k, p| {
        let x_base = times(p.clone(), plan.plane);
        let y_base = times(p.clone(), plan.out_plane);
        let stored = |coords: &[Expr]| {
            sum([
                times(p.clone(), plan.plane),
                sum(coords
                    .iter()
                    .zip(&index_strides)
                    .map(|(c, s)| times(c.clone(), *s))),
            ])
        };
        for_each_segment(k, &plan.axes, &mut |k, segment| {
            let interior = !segment.checked && segment.outer.iter().all(|(_, checked)| !checked);
            walk_row(
                k,
                segment,
                interior && (layout.is_some() || direct),
                &mut |k, o, vectors| {
                    let outs = segment.coords(o.clone());
                    let position = sum([y_base.clone(), out_position(&plan, &outs)]);
                    if direct && vectors > 0 {
                        // Interior vectors from the input: the first tap, then `v > best`.
                        let load = |offset: &Expr, u: usize| {
                            let at = sum([x_base.clone(), offset.clone()]);
                            if row_stride == 1 {
                                Expr::load4(xb, plus(at, 4 * u as i64))
                            } else {
                                let at = plus(at, 8 * u as i64);
                                Expr::load4(xb, at.clone())
                                    .shuffle(Expr::load4(xb, plus(at, 3)), [0, 2, 5, 7])
                            }
                        };
                        let (first, _) = first_tap(&plan, &outs);
                        let all: Vec<usize> = (0..vectors).collect();
                        for group in all.chunks(DIRECT_VECTORS) {
                            let best: Vec<(usize, LocalId)> = group
                                .iter()
                                .map(|&u| (u, k.declare(Ty::F32x4, load(&first, u))))
                                .collect();
                            for_each_tap(k, &plan.axes, &outs, &mut |k, tap| {
                                for &(u, b) in &best {
                                    k.assign(b, load(&tap.offset, u).max(Expr::Local(b)));
                                }
                            });
                            for &(u, b) in &best {
                                k.store(yb, plus(position.clone(), 4 * u as i64), Expr::Local(b));
                            }
                        }
                        return;
                    }
                    if let (Some(layout), Some(lb), true) = (&layout, lb, vectors > 0) {
                        // Interior vectors: start from the first tap, then `v > best` replaces.
                        let base = times(p.clone(), layout.plane_len());
                        let load = |offset: Expr, u: usize| {
                            Expr::load4(lb, plus(sum([base.clone(), offset]), 4 * u as i64))
                        };
                        let first = layout_first(layout, &outs);
                        let best: Vec<LocalId> = (0..vectors)
                            .map(|u| k.declare(Ty::F32x4, load(first.clone(), u)))
                            .collect();
                        layout_taps(k, layout, &outs, &mut |k, offset| {
                            for (u, b) in best.iter().enumerate() {
                                k.assign(*b, load(offset.clone(), u).max(Expr::Local(*b)));
                            }
                        });
                        for (u, b) in best.iter().enumerate() {
                            k.store(yb, plus(position.clone(), 4 * u as i64), Expr::Local(*b));
                        }
                        return;
                    }
                    let load = |offset: Expr| Expr::load(xb, sum([x_base.clone(), offset]));
                    let best: LocalId;
                    let index: Option<LocalId>;
                    if interior {
                        // The first tap is inside the input: start from it.
                        let (offset, coords) = first_tap(&plan, &outs);
                        best = k.declare(Ty::F32, load(offset));
                        index = ib.map(|_| k.declare(Ty::I64, stored(&coords)));
                    } else {
                        best = k.declare(Ty::F32, Expr::Float(f32::NEG_INFINITY));
                        index = Some(k.declare(Ty::I64, Expr::Int(-1)));
                    }
                    for_each_tap(k, &plan.axes, &outs, &mut |k, tap| {
                        let v = load(tap.offset.clone());
                        let greater = v.clone().cmp(CmpOp::Gt, Expr::Local(best));
                        let Some(found_at) = index.filter(|_| !interior) else {
                            // Interior: `v > best` replaces.
                            if let Some(i) = index {
                                k.assign(i, greater.select(stored(&tap.coords), Expr::Local(i)));
                            }
                            k.assign(best, v.max(Expr::Local(best)));
                            return;
                        };
                        // Border: the first tap inside the input is taken, later ones if greater;
                        // `found_at` is -1 until a tap is taken.
                        let first = Expr::Local(found_at).cmp(CmpOp::Eq, Expr::Int(-1));
                        let taken = k.declare(
                            Ty::F32,
                            first.clone().select(v.clone(), v.max(Expr::Local(best))),
                        );
                        let at = if ib.is_some() {
                            stored(&tap.coords)
                        } else {
                            Expr::Int(0)
                        };
                        let new_at =
                            first.select(at.clone(), greater.select(at, Expr::Local(found_at)));
                        match &tap.valid {
                            Some(valid) => {
                                k.assign(
                                    found_at,
                                    valid.clone().select(new_at, Expr::Local(found_at)),
                                );
                                k.assign(
                                    best,
                                    valid.clone().select(Expr::Local(taken), Expr::Local(best)),
                                );
                            }
                            None => {
                                k.assign(found_at, new_at);
                                k.assign(best, Expr::Local(taken));
                            }
                        }
                    });
                    k.store(yb, position.clone(), Expr::Local(best));
                    if let (Some(ib), Some(i)) = (ib, index) {
                        k.store(ib, position, Expr::Local(i));
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

fn average_pool(node: &NodeInfo<'_>, attrs: &Pool) -> Result<Lowered> {
    let plan = plan(node, attrs)?;
    // Per-axis divisor factors, concatenated: the taps of each output position that count.
    let mut table = Vec::new();
    let mut table_at = Vec::new();
    for (i, a) in plan.axes.iter().enumerate() {
        table_at.push(table.len());
        let end = a.pad
            + a.input
            + if attrs.count_include_pad {
                plan.geometry.pads_end()[i]
            } else {
                0
            };
        let begin = if attrs.count_include_pad { 0 } else { a.pad };
        for o in 0..a.output {
            let count = (0..a.kernel)
                .map(|j| o * a.stride + j * a.dilation)
                .filter(|&pos| pos >= begin && pos < end)
                .count();
            table.push(count as f32);
        }
    }
    let table = Tensor::from_f32(vec![table.len()], table)?;
    // Every tap reads the zero-padded layout: padding adds 0 to the sum.
    let layout = Layout::new(&plan.axes, plan.planes);

    let mut lowered = Lowered::default();
    let mut k = KernelBuilder::new(node.name);
    let mut args = Vec::new();
    let xb = if layout.copy {
        args.push(Arg::Scratch(0));
        copy_layout(node, &layout, &mut k, &mut lowered)
    } else {
        args.push(Arg::Input(0));
        k.buffer("x", DType::F32, plan.x_len, BufferKind::Input)
    };
    let db = k.buffer(
        "divisors",
        DType::F32,
        table.len(),
        BufferKind::Const(Arc::new(table)),
    );
    args.push(Arg::Const);
    let yb = k.buffer(
        "y",
        DType::F32,
        plan.planes * plan.out_plane,
        BufferKind::Output,
    );
    args.push(Arg::Output(0));

    k.for_loop(0, plan.planes as i64, 1, LoopKind::Parallel, |k, p| {
        let base = times(p.clone(), layout.plane_len());
        let y_base = times(p, plan.out_plane);
        for_each_segment(k, &layout.axes, &mut |k, segment| {
            walk_row(k, segment, true, &mut |k, o, vectors| {
                let outs = segment.coords(o.clone());
                let lanes = vectors.max(1);
                let (ty, zero) = if vectors > 0 {
                    (Ty::F32x4, Expr::Float(0.0).splat())
                } else {
                    (Ty::F32, Expr::Float(0.0))
                };
                let sums: Vec<LocalId> = (0..lanes).map(|_| k.declare(ty, zero.clone())).collect();
                layout_taps(k, &layout, &outs, &mut |k, offset| {
                    for (u, s) in sums.iter().enumerate() {
                        let index = plus(sum([base.clone(), offset.clone()]), 4 * u as i64);
                        let v = if vectors > 0 {
                            Expr::load4(xb, index)
                        } else {
                            Expr::load(xb, index)
                        };
                        k.assign(*s, Expr::Local(*s).add(v));
                    }
                });
                let position = sum([y_base.clone(), out_position(&plan, &outs)]);
                let rank = outs.len();
                for (u, s) in sums.iter().enumerate() {
                    // The product of the per-axis factors, the last axis a vector if need be.
                    let mut divisor: Option<Expr> = None;
                    for (axis, (o, _)) in outs.iter().enumerate() {
                        let index = plus(o.clone(), table_at[axis] as i64);
                        let factor = if axis + 1 == rank && vectors > 0 {
                            Expr::load4(db, plus(index, 4 * u as i64))
                        } else {
                            Expr::load(db, index)
                        };
                        divisor = Some(match divisor {
                            None => factor,
                            Some(d) => d.mul(factor),
                        });
                    }
                    let divisor = divisor.unwrap_or(Expr::Float(1.0));
                    k.store(
                        yb,
                        plus(position.clone(), 4 * u as i64),
                        Expr::Local(*s).div(divisor),
                    );
                }
            });
        });
    });
    lowered.kernels.push(LoweredKernel {
        kernel: k.finish(),
        args,
    });
    Ok(lowered)
}

#[cfg(test)]
mod tests {
    use super::super::conv::testing::{check, check_bits, random};
    use crate::graph::op::{AutoPad, Op, Pool, Window};
    use crate::tensor::Tensor;

    fn pool(
        kernel: &[usize],
        pads: &[usize],
        strides: &[usize],
        dilations: &[usize],
        ceil_mode: bool,
    ) -> Pool {
        Pool {
            window: Window {
                kernel_shape: kernel.to_vec(),
                pads: pads.to_vec(),
                strides: strides.to_vec(),
                dilations: dilations.to_vec(),
                ..Window::default()
            },
            ceil_mode,
            count_include_pad: false,
            storage_order: 0,
        }
    }

    fn all_pools(x: &Tensor, attrs: Pool) {
        for storage_order in [0, 1] {
            let attrs = Pool {
                storage_order,
                ..attrs.clone()
            };
            check(&Op::MaxPool(attrs), &[Some((x.clone(), false))], 2);
        }
        check(&Op::MaxPool(attrs.clone()), &[Some((x.clone(), false))], 1);
        for count_include_pad in [false, true] {
            let attrs = Pool {
                count_include_pad,
                ..attrs.clone()
            };
            check(&Op::AveragePool(attrs), &[Some((x.clone(), false))], 1);
        }
    }

    #[test]
    fn pools_2d() {
        let wide = random(&[1, 2, 7, 90], 6);
        all_pools(&wide, pool(&[3, 3], &[1, 1, 1, 1], &[2, 2], &[], true));
        all_pools(&wide, pool(&[2, 3], &[0, 0, 1, 2], &[2, 3], &[1, 2], true));
        all_pools(&wide, pool(&[3, 3], &[1, 1, 1, 1], &[1, 1], &[], false));
        let x = random(&[2, 3, 9, 27], 1);
        all_pools(&x, pool(&[3, 3], &[1, 1, 1, 1], &[], &[], false));
        all_pools(&x, pool(&[2, 2], &[], &[2, 2], &[], false));
        all_pools(&x, pool(&[3, 3], &[0, 1, 2, 1], &[2, 1], &[], true));
        all_pools(&x, pool(&[2, 3], &[1, 2, 1, 2], &[1, 1], &[2, 2], false));
        all_pools(&x, pool(&[3, 3], &[1, 1, 1, 1], &[3, 3], &[], true));
        let same = Pool {
            window: Window {
                auto_pad: AutoPad::SameLower,
                kernel_shape: vec![4, 3],
                ..Window::default()
            },
            ..pool(&[], &[], &[], &[], false)
        };
        all_pools(&x, same);
    }

    #[test]
    fn empty_inputs_lower() {
        all_pools(
            &random(&[0, 3, 5, 5], 1),
            pool(&[3, 3], &[1, 1, 1, 1], &[2, 2], &[], false),
        );
    }

    #[test]
    fn pools_1d_and_3d() {
        all_pools(
            &random(&[1, 2, 50], 2),
            pool(&[3], &[1, 2], &[1], &[2], true),
        );
        all_pools(
            &random(&[1, 2, 4, 5, 11], 3),
            pool(&[2, 3, 3], &[1, 0, 1, 1, 1, 1], &[1, 2, 1], &[], true),
        );
        all_pools(
            &random(&[1, 1, 6, 6, 6], 4),
            pool(&[2, 2, 2], &[], &[1, 1, 1], &[2, 2, 2], false),
        );
    }

    /// Max pools taking the strip path (`max_pool_strips`): rows kept between output rows
    /// (3×3 at stride 2 and 1), none kept (stride past the window), row strides 1 and 2,
    /// even and odd window widths, a last strip overlapping the one before, ceil mode whose
    /// last window fits; with NaNs (first taps and later ones), infinities and signed zeros
    /// scattered, the interpreter's NaN and zero choices must come out bit for bit.
    #[test]
    fn max_pool_strips_keep_the_interpreters_order() {
        let mut x = random(&[2, 3, 15, 35], 7);
        if let Some(v) = x.as_f32_mut() {
            for (i, e) in v.iter_mut().enumerate() {
                match i % 23 {
                    0 | 11 => *e = f32::NAN,
                    5 => *e = -0.0,
                    6 | 17 => *e = 0.0,
                    9 => *e = f32::NEG_INFINITY,
                    14 => *e = f32::INFINITY,
                    _ => {}
                }
            }
        }
        let cases = [
            pool(&[3, 3], &[], &[2, 2], &[], true),
            pool(&[3, 3], &[], &[2, 2], &[], false),
            pool(&[3, 3], &[], &[1, 1], &[], false),
            pool(&[3, 2], &[], &[1, 2], &[], false),
            pool(&[2, 3], &[], &[3, 1], &[], false),
            pool(&[2, 2], &[], &[2, 2], &[], false),
            pool(&[1, 5], &[], &[1, 2], &[], false),
        ];
        for attrs in cases {
            let lowered = check_bits(&Op::MaxPool(attrs.clone()), &[Some((x.clone(), false))], 1);
            let schedule = lowered.kernels[0]
                .kernel
                .schedule
                .clone()
                .unwrap_or_default();
            assert!(schedule.contains("strips"), "{attrs:?}: {schedule}");
            all_pools(&x, attrs);
        }
    }

    #[test]
    fn max_pool_nan_and_infinity_follow_the_interpreter() {
        let mut x = random(&[1, 1, 5, 13], 5);
        if let Some(v) = x.as_f32_mut() {
            v[0] = f32::NAN;
            v[7] = f32::NAN;
            v[20] = f32::NEG_INFINITY;
            v[33] = f32::NAN;
            v[64] = f32::INFINITY;
        }
        all_pools(&x, pool(&[2, 2], &[1, 1, 1, 1], &[], &[], false));
        all_pools(&x, pool(&[3, 3], &[], &[], &[], false));
        all_pools(&x, pool(&[3, 3], &[1, 1, 1, 1], &[2, 2], &[], false));
        all_pools(&x, pool(&[2, 2], &[0, 0, 0, 0], &[1, 2], &[], true));
        let mut x = Tensor::from_f32(vec![1, 1, 1, 6], vec![f32::NEG_INFINITY; 6]).unwrap();
        all_pools(&x, pool(&[1, 2], &[0, 1, 0, 1], &[], &[], false));
        if let Some(v) = x.as_f32_mut() {
            v[2] = f32::NAN;
        }
        all_pools(&x, pool(&[1, 3], &[0, 2, 0, 2], &[], &[], false));
    }
}
