//! Depthwise convolution (2-D, one output channel per input channel), reading the
//! unpadded input, vectorised along the output row.
//!
//! The parallel loop runs over (batch and channel, group of output rows: a whole 7×7 or
//! 14×14 plane, two rows of 56). A row is computed in
//! vectors of 4 output pixels; the interior of the row (every tap inside the input) in
//! steps of [`VECTORS`] vectors with independent accumulators, so the FMA chains overlap
//! (with `f32x8` and stride 1, the interior of rows whose taps all lie in the input in
//! [`WIDE_VECTORS`] vectors of 8 at a time).
//! The kernel's weights are splatted once per parallel iteration. With stride 1 the taps of 4 pixels are
//! 4 consecutive inputs (one load); with stride 2 they are every other input of 7 (two
//! loads and a shuffle), and a tap pair (kernel columns `2j`, `2j + 1`) shares its two
//! loads of 4: the even and the odd elements of 8 (a 3×3 row of taps is 4 loads, not 6;
//! MobileNetV2's stride-2 layers on one thread, 8 alternated runs: 0.59 → 0.51, 0.18 →
//! 0.16 and 0.067 → 0.058 ms). Vectors at the ends of a row that reach outside the input are at
//! known positions: their loads are moved inside the row and a shuffle puts each lane in
//! place, with zero for lanes outside. Rows whose tap rows leave the input clamp the tap
//! row and select zero, as in [`super::direct_conv`]. Each output sums its taps row-major
//! from the bias; the fused epilogue runs on the vector before its store.
//!
//! Small planes (up to [`FLAT_READS`] tap reads: 28×28 with a 3×3 kernel) are computed
//! *flat* instead: one plane per parallel iteration, as a run of vectors of 4 consecutive
//! outputs that may cross output rows, every vector unrolled at a position known at
//! compile time. With "same" padding and stride 1 a tap's 4 lanes are consecutive inputs
//! even across a row boundary, so nearly every tap is one load, the lanes whose input
//! lies outside the plane's rows or columns zeroed by a blend — where rows of 7 or 14
//! leave the row form with two edge vectors of 4 in every row, each tap two loads and two
//! shuffles. Vectors whose lanes are not consecutive inputs (stride 2, "valid" padding,
//! the plane's first and last elements) gather them with two loads inside the plane and a
//! shuffle (a stride-2 tap pair from the same two, [`Dw::paired_picks`]); a plane where two loads cannot gather some vector's lanes takes the row form.
//! MobileNetV2's depthwise layers at 7×7, 14×14 and 28×28: 0.056, 0.069–0.106 and
//! 0.109 ms → 0.035, 0.040–0.060 and 0.073–0.081 ms each on one core. Runs of periods
//! (the fewest rows that are whole vectors: one row of 28, two of 14) that read alike are
//! a loop over one period's code rather than unrolled ([`Repeat`]); with `f32x8`, two
//! consecutive vectors whose taps are all whole loads (a row's interior) are computed as one
//! ([`wide_pair`]; MobileNetV2's 28×28 and 14×14 depthwise layers 10–15% faster). Unrolled, a 28×28
//! plane is ~35 KB of machine code, more than the 32 KB instruction cache, and every
//! plane fetched it again (a 192-channel 28×28 layer with its neighbours 0.389 → 0.255
//! ms; MobileNetV2 3% faster on one thread, 5% on two).

use super::conv::{Axis, Loads, gcd, plus, split, stride2_loads, sum, times};
use super::direct_conv::{DirectConv, for_rows, input_at, interior};
use super::epilogue::StoreAt;
use super::ir::{BufId, CmpOp, Expr, KernelBuilder, LocalId, LoopKind, Ty};
use super::{Arg, BufferKind, Kernel, Lowered, LoweredKernel, NodeInfo};
use crate::tensor::{DType, Tensor};

/// Vectors computed together in the interior of a row.
const VECTORS: usize = 4;

/// Vectors of 8 computed together in the interior of a row, with `f32x8`.
const WIDE_VECTORS: usize = 4;

/// Outputs a parallel iteration aims for (see [`Dw::rows_per_iteration`]).
const PIXELS_PER_ITERATION: usize = 128;

/// The depthwise kernel for `conv` (one channel per group), or `None` when it does not
/// apply (not depthwise, not 2-D, a stride along the row other than 1 or 2, rows too short
/// for its vectors, a bias of the wrong length).
pub(super) fn lower(node: &NodeInfo<'_>, conv: &DirectConv<'_>) -> Option<Lowered> {
    let bias = bias(conv)?;
    let [rows, cols] = conv.axes else {
        return None;
    };
    let min_input = if cols.stride == 1 { 4 } else { 8 };
    if cols.output < 4 || cols.input < min_input {
        return None;
    }
    let dw = Dw { conv, rows, cols };
    // Every static vector must be expressible with its two loads.
    for start in dw.static_starts() {
        for kx in 0..cols.kernel {
            dw.static_picks(start, kx)?;
        }
    }
    let kernel = match dw.flat_plan() {
        Some(plan) => dw.flat_kernel(node.name, bias, &plan),
        None => dw.kernel(node.name, bias),
    };
    let mut args = vec![Arg::Input(0), Arg::Input(1), Arg::Const, Arg::Output(0)];
    args.extend(conv.epilogue.args());
    Some(Lowered {
        kernels: vec![LoweredKernel { kernel, args }],
        scratch: Vec::new(),
    })
}

/// The bias of `conv` as the kernels' constant, or `None` when `conv` is not a depthwise
/// convolution these kernels take (not one output channel per input channel, not 2-D, a
/// stride along the row other than 1 or 2, weights not constant, a bias of the wrong
/// length).
fn bias(conv: &DirectConv<'_>) -> Option<std::sync::Arc<Tensor>> {
    if conv.group != conv.c || conv.m != conv.c {
        return None;
    }
    let [rows, cols] = conv.axes else {
        return None;
    };
    if !(1..=2).contains(&cols.stride) {
        return None;
    }
    if conv.weights.shape() != [conv.c, 1, rows.kernel, cols.kernel] {
        return None;
    }
    conv.weights.as_f32()?;
    let bias = match conv.bias {
        Some(b) if b.len() == conv.c => b.as_f32()?.to_vec(),
        Some(_) => return None,
        None => vec![0.0; conv.c],
    };
    Some(std::sync::Arc::new(
        Tensor::from_f32(vec![conv.c], bias).ok()?,
    ))
}

/// The flat planes ([`Dw::flat_plan`]) of a band of a depthwise convolution's output rows,
/// read from a buffer that holds only the band's input rows ([`super::banded`]).
pub(super) struct BandPlanes<'a> {
    dw: Dw<'a>,
    plan: FlatPlan,
    wide: bool,
}

impl<'a> BandPlanes<'a> {
    /// The planes of `conv` (whose weights and epilogue they apply) with the band's rows
    /// `rows` (its input rows, their padding and its output rows) and the layer's columns
    /// `cols`, with the bias constant; `None` where the depthwise kernels do not take
    /// `conv` or the band's plane is not computed flat.
    pub(super) fn new(
        conv: &'a DirectConv<'a>,
        rows: &'a Axis,
        cols: &'a Axis,
    ) -> Option<(BandPlanes<'a>, std::sync::Arc<Tensor>)> {
        let bias = bias(conv)?;
        let dw = Dw { conv, rows, cols };
        let plan = dw.flat_plan()?;
        let wide = crate::codegen::wide_vectors() && dw.flat_wide_pairs(&plan) > 0;
        Some((BandPlanes { dw, plan, wide }, bias))
    }

    /// Vectors of 4 outputs per plane.
    pub(super) fn vectors(&self) -> usize {
        self.plan.vectors.len()
    }

    /// The plane of batch and channel `nc`, from `x_plane` in `bufs.x` (the band's first
    /// input row) to `y_plane` in `bufs.y` (its first output row).
    pub(super) fn plane(
        &self,
        k: &mut KernelBuilder,
        bufs: &Buffers,
        nc: &Expr,
        x_plane: &Expr,
        y_plane: &Expr,
    ) {
        self.dw
            .flat_plane(k, bufs, &self.plan, self.wide, nc, x_plane, y_plane);
    }
}

/// Tap reads (vectors × kernel taps) up to which a plane is computed as one flat run of
/// unrolled vectors ([`Dw::flat_plan`]): a 28×28 plane with a 3×3 kernel, 14×14 with 5×5.
const FLAT_READS: usize = 2048;

/// Tap reads up to which a plane strided along the row is computed flat when most of it is
/// a loop over alike periods ([`Repeat`]): a 56×56 output with a 3×3 kernel. Strided taps
/// are two loads and a shuffle in either form, and the flat one leaves out the row form's
/// per-row set-up and edge vectors (MobileNetV2's 96-channel 112×112 → 56×56 layer with a
/// ReLU before and a pooling after, 11 alternated runs: 12% faster). Stride-1 rows keep the
/// row form there, whose interior takes `f32x8` (a 144-channel 56×56 layer flat: 17%
/// slower).
const LOOPED_FLAT_READS: usize = 8192;

/// How one vector of a flat plane reads one kernel tap.
#[derive(Clone, Debug, PartialEq)]
enum FlatTap {
    /// No lane's tap lies in the input.
    Skip,
    /// One load at this element of the input plane; the lanes not kept become zero.
    Load { at: i64, keep: [bool; 4] },
    /// Two loads and a shuffle (the vector's lanes are not consecutive inputs, or a load
    /// would leave the plane).
    Picks(Picks),
}

impl FlatTap {
    /// The same read `by` input elements further on.
    fn shifted(&self, by: i64) -> FlatTap {
        match self {
            FlatTap::Skip => FlatTap::Skip,
            FlatTap::Load { at, keep } => FlatTap::Load {
                at: at + by,
                keep: *keep,
            },
            FlatTap::Picks(p) => FlatTap::Picks(Picks {
                loads: p.loads.map(|l| l + by),
                ..p.clone()
            }),
        }
    }
}

/// A flat plane's vectors: each one's first output element and how it reads every tap
/// (row-major).
struct FlatPlan {
    vectors: Vec<(usize, Vec<FlatTap>)>,
    /// The run of identical periods computed by a loop, if any.
    repeat: Option<Repeat>,
}

/// A run of periods of a flat plane (a period: the fewest whole output rows that are also
/// whole vectors) whose vectors read their taps alike, each period's reads those of the
/// period before moved on by its input rows: computed by a loop over one period's code
/// instead of unrolled, so that the kernel's code stays small enough for the instruction
/// caches (a 28×28 plane unrolled is ~35 KB of machine code, over the 32 KB L1i).
#[derive(Clone, Debug, PartialEq)]
struct Repeat {
    /// Index of the first period's first vector.
    first: usize,
    /// Vectors per period.
    vectors: usize,
    /// Periods in the run.
    trips: usize,
    /// Input elements from one period to the next.
    x_step: i64,
    /// Output elements from one period to the next.
    y_step: i64,
}

/// Fewest periods for which a flat plane loops rather than unrolls ([`Repeat`]).
const MIN_REPEAT: usize = 3;

/// A depthwise kernel's buffers.
pub(super) struct Buffers {
    pub x: BufId,
    pub w: BufId,
    pub b: BufId,
    pub y: BufId,
    pub extras: Vec<BufId>,
}

struct Dw<'a> {
    conv: &'a DirectConv<'a>,
    rows: &'a Axis,
    cols: &'a Axis,
}

/// How a vector at a known position gathers the taps of one kernel column: two loads
/// (element offsets within the input row), the lanes picked from them (0–7), then the
/// lanes kept (the others become zero).
#[derive(Clone, Debug, PartialEq)]
struct Picks {
    loads: [i64; 2],
    lanes: [u8; 4],
    keep: [bool; 4],
}

/// The buffers and position of one parallel iteration.
struct Frame {
    x: BufId,
    y: BufId,
    extras: Vec<BufId>,
    /// The channel.
    channel: Expr,
    /// First element of the output row.
    y_row: Expr,
    /// Each tap row's first element, and for border rows whether it lies in the input.
    tap_rows: Vec<(Expr, Option<Expr>)>,
    /// The splatted weights, row-major.
    weights: Vec<LocalId>,
    /// The splatted bias.
    bias: LocalId,
    /// For rows whose tap rows all lie in the input, the distance between two consecutive
    /// tap rows (so every tap is a constant offset from the first row's).
    row_step: Option<i64>,
    /// Whether the weights and bias are `f32x8` (the interior in vectors of 8; the other
    /// vectors use their low halves).
    wide: bool,
}

impl Frame {
    /// Weight `i` (row-major) as an `f32x4`.
    fn weight4(&self, i: usize) -> Expr {
        self.four(self.weights[i])
    }

    /// `local` (a weight or the bias) as an `f32x4`.
    fn four(&self, local: LocalId) -> Expr {
        if self.wide {
            Expr::Local(local).half(0)
        } else {
            Expr::Local(local)
        }
    }
}

impl Dw<'_> {
    /// Starts of the vectors at known positions: those with a pixel whose taps leave the
    /// row, and the last one (which may overlap the one before).
    fn static_starts(&self) -> Vec<usize> {
        let (lo, hi) = interior(self.cols);
        let out = self.cols.output;
        let mut starts = Vec::new();
        let mut x = 0;
        while x < lo && x + 4 <= out {
            starts.push(x);
            x += 4;
        }
        let (_, end) = self.interior_vectors(x, hi);
        let mut x = end.max(x);
        while x < out {
            let start = x.min(out - 4);
            starts.push(start);
            x = start + 4;
        }
        starts
    }

    /// The interior vectors after `from`: a range `from..end` of whole vectors whose taps
    /// all lie in the row.
    fn interior_vectors(&self, from: usize, hi: usize) -> (usize, usize) {
        if from + 4 > hi {
            (from, from)
        } else {
            (from, from + (hi - from) / 4 * 4)
        }
    }

    /// The loads and lane picks of the vector of pixels `start..start + 4`, kernel column
    /// `kx` (`None` if two loads inside the row cannot cover its taps).
    /// With stride 2 along the row (no dilation), the loads of a tap pair: taps `2j` and
    /// `2j + 1` whose lanes are every other element of 8 from an even tap's first, both
    /// from the same two loads of 4 (lanes 0, 2, 4, 6 and 1, 3, 5, 7), so the code reads
    /// them once for the two taps instead of two loads per tap. `at` is each lane's input
    /// element (inside the plane of `input` elements); `None` where the lanes are not so
    /// spaced, the tap has no partner (a last even tap) or the loads would leave the plane.
    fn paired_picks(&self, kx: usize, at: &[Option<i64>; 4], input: i64) -> Option<Picks> {
        let cols = self.cols;
        if cols.stride != 2 || cols.dilation != 1 || (kx.is_multiple_of(2) && kx + 1 >= cols.kernel)
        {
            return None;
        }
        let (first, a) = at.iter().enumerate().find_map(|(l, a)| a.map(|a| (l, a)))?;
        // The first lane's element for the even tap of the pair.
        let base = a - 2 * first as i64 - (kx % 2) as i64;
        if base < 0 || base + 8 > input {
            return None;
        }
        let mut lanes = [0u8; 4];
        for (l, a) in at.iter().enumerate() {
            let Some(a) = a else { continue };
            let offset = a - base;
            if offset != (2 * l + kx % 2) as i64 {
                return None;
            }
            lanes[l] = offset as u8;
        }
        Some(Picks {
            loads: [base, base + 4],
            lanes,
            keep: at.map(|a| a.is_some()),
        })
    }

    fn static_picks(&self, start: usize, kx: usize) -> Option<Picks> {
        let cols = self.cols;
        let w = cols.input as i64;
        let taps: Vec<i64> = (0..4).map(|i| input_at(cols, start + i, kx)).collect();
        let keep: [bool; 4] = std::array::from_fn(|i| taps[i] >= 0 && taps[i] < w);
        let first = taps[0].clamp(0, w - 4);
        let second = (taps[0] + 3).clamp(0, w - 4);
        let mut lanes = [0u8; 4];
        for i in 0..4 {
            if !keep[i] {
                continue;
            }
            lanes[i] = if (first..first + 4).contains(&taps[i]) {
                (taps[i] - first) as u8
            } else if (second..second + 4).contains(&taps[i]) {
                (taps[i] - second + 4) as u8
            } else {
                return None;
            };
        }
        Some(Picks {
            loads: [first, second],
            lanes,
            keep,
        })
    }

    /// Declares the kernel's buffers: the input, the weights, the bias, the output and the
    /// epilogue's operands.
    fn buffers(&self, k: &mut KernelBuilder, bias: std::sync::Arc<Tensor>) -> Buffers {
        let conv = self.conv;
        let (rows, cols) = (self.rows, self.cols);
        let (n, c) = (conv.n, conv.c);
        Buffers {
            x: k.buffer(
                "x",
                DType::F32,
                n * c * rows.input * cols.input,
                BufferKind::Input,
            ),
            w: k.buffer(
                "w",
                DType::F32,
                c * rows.kernel * cols.kernel,
                BufferKind::Input,
            ),
            b: k.buffer("b", DType::F32, c, BufferKind::Const(bias)),
            y: k.buffer(
                "y",
                DType::F32,
                n * c * rows.output * cols.output,
                BufferKind::Output,
            ),
            extras: conv.epilogue.declare(k),
        }
    }

    /// The channel of plane `nc` (batch-major), its weights splatted (row-major) and its
    /// bias splatted, as locals.
    fn channel(
        &self,
        k: &mut KernelBuilder,
        nc: &Expr,
        w: BufId,
        b: BufId,
        wide: bool,
    ) -> (Expr, Vec<LocalId>, LocalId) {
        let (ty, splat): (Ty, fn(Expr) -> Expr) = if wide {
            (Ty::F32x8, Expr::splat8)
        } else {
            (Ty::F32x4, Expr::splat)
        };
        let conv = self.conv;
        let taps = self.rows.kernel * self.cols.kernel;
        let channel = if conv.n == 1 {
            nc.clone()
        } else {
            split(nc.clone(), conv.n, conv.c).1
        };
        let channel = Expr::Local(k.declare(Ty::I64, channel));
        let weights = (0..taps)
            .map(|t| {
                let at = plus(times(channel.clone(), taps), t as i64);
                k.declare(ty, splat(Expr::load(w, at)))
            })
            .collect();
        let bias = k.declare(ty, splat(Expr::load(b, channel.clone())));
        (channel, weights, bias)
    }

    fn kernel(&self, name: &str, bias: std::sync::Arc<Tensor>) -> Kernel {
        let conv = self.conv;
        let (rows, cols) = (self.rows, self.cols);
        let plane = rows.input * cols.input;
        let out_plane = rows.output * cols.output;
        let mut k = KernelBuilder::new(name);
        let per = self.rows_per_iteration();
        let wide = self.wide();
        let interior = if wide {
            format!("f32x8 in the interior of rows inside the input, {WIDE_VECTORS} together")
        } else {
            format!("{VECTORS} vectors together in the interior")
        };
        k.set_schedule(format!(
            "depthwise, rows of f32x4 along the output row ({interior}), {} channels x {} \
             groups of {per} rows in parallel",
            conv.n * conv.c,
            rows.output / per,
        ));
        let Buffers { x, w, b, y, extras } = self.buffers(&mut k, bias);
        k.for_loop(
            0,
            (conv.n * conv.c * rows.output / per) as i64,
            1,
            LoopKind::Parallel,
            |k, it| {
                let (nc, group) = split(it, conv.n * conv.c, rows.output / per);
                let nc = Expr::Local(k.declare(Ty::I64, nc));
                let first = Expr::Local(k.declare(Ty::I64, times(group, per)));
                let (channel, weights, bias) = self.channel(k, &nc, w, b, wide);
                let x_plane = Expr::Local(k.declare(Ty::I64, times(nc.clone(), plane)));
                k.range(per, |k, r| {
                    let oy = Expr::Local(k.declare(Ty::I64, sum([first.clone(), r])));
                    let y_row = sum([times(nc.clone(), out_plane), times(oy.clone(), cols.output)]);
                    let y_row = Expr::Local(k.declare(Ty::I64, y_row));
                    let row = |k: &mut KernelBuilder, oy: Expr, border: bool| {
                        let tap_rows = (0..rows.kernel)
                            .map(|ky| {
                                let iy = sum([
                                    times(oy.clone(), rows.stride),
                                    Expr::Int((ky * rows.dilation) as i64 - rows.pad as i64),
                                ]);
                                let iy = Expr::Local(k.declare(Ty::I64, iy));
                                if !border {
                                    let at = sum([x_plane.clone(), times(iy, cols.input)]);
                                    return (Expr::Local(k.declare(Ty::I64, at)), None);
                                }
                                let clamped = iy.clone().clamp(0, rows.input as i64 - 1);
                                let clamped = Expr::Local(k.declare(Ty::I64, clamped));
                                let at = sum([x_plane.clone(), times(clamped.clone(), cols.input)]);
                                let inside = clamped.cmp(CmpOp::Eq, iy);
                                (Expr::Local(k.declare(Ty::I64, at)), Some(inside))
                            })
                            .collect();
                        let frame = Frame {
                            x,
                            y,
                            extras: extras.clone(),
                            channel: channel.clone(),
                            y_row: y_row.clone(),
                            tap_rows,
                            weights: weights.clone(),
                            bias,
                            wide,
                            row_step: (!border).then_some((rows.dilation * cols.input) as i64),
                        };
                        self.row(k, &frame);
                    };
                    for_rows(k, rows, &oy, &row);
                });
            },
        );
        k.finish()
    }

    /// Whether the row form computes its interior in `f32x8` vectors: with 256-bit vectors,
    /// stride 1 and at least two vectors of 8 in a row's interior (MobileNetV2's 112×112
    /// and 56×56 depthwise layers).
    fn wide(&self) -> bool {
        let (lo, hi) = interior(self.cols);
        crate::codegen::wide_vectors() && self.cols.stride == 1 && hi.saturating_sub(lo) >= 16
    }

    /// Output rows per parallel iteration: enough for about [`PIXELS_PER_ITERATION`]
    /// outputs (a divisor of the rows), so small planes (7×7, 14×14) do not pay the weight
    /// broadcasts and the row set-up for every short row (MobileNetV2's depthwise layers
    /// 2.29 → 2.08 ms in all; its 960-channel 7×7 ones 0.090 → 0.068 ms each).
    fn rows_per_iteration(&self) -> usize {
        let rows = self.rows.output;
        let wanted = PIXELS_PER_ITERATION
            .div_ceil(self.cols.output)
            .clamp(1, rows);
        (1..=wanted)
            .rev()
            .find(|r| rows.is_multiple_of(*r))
            .unwrap_or(1)
    }

    /// One output row: the static vectors at its ends, the interior in groups of
    /// [`VECTORS`] vectors, then single vectors.
    fn row(&self, k: &mut KernelBuilder, f: &Frame) {
        let cols = self.cols;
        let (lo, hi) = interior(cols);
        let statics = self.static_starts();
        let left: Vec<usize> = statics.iter().copied().filter(|&s| s < lo).collect();
        let from = left.last().map_or(0, |s| s + 4);
        let (from, end) = self.interior_vectors(from, hi);
        for &start in &left {
            self.vectors(k, f, &[Expr::Int(start as i64)], Some(start));
        }
        // Interior rows with `f32x8` weights: groups of [`WIDE_VECTORS`] vectors of 8, then
        // single ones, the rest in vectors of 4.
        let from = if f.wide && f.row_step.is_some() {
            interior_run(k, from, end, 8, WIDE_VECTORS, &|k, starts| {
                self.wide_vectors(k, f, starts)
            })
        } else {
            from
        };
        interior_run(k, from, end, 4, VECTORS, &|k, starts| {
            self.vectors(k, f, starts, None)
        });
        for &start in statics.iter().filter(|&&s| s >= lo) {
            self.vectors(k, f, &[Expr::Int(start as i64)], Some(start));
        }
    }

    /// Vectors of 8 pixels from each of `starts`, in the interior of a row whose tap rows
    /// all lie in the input (stride 1: each tap one `f32x8` load), accumulated over the
    /// taps, each half through the epilogue and stored.
    fn wide_vectors(&self, k: &mut KernelBuilder, f: &Frame, starts: &[Expr]) {
        let (rows, cols) = (self.rows, self.cols);
        let (Some(step), Some((row_at, _))) = (f.row_step, f.tap_rows.first()) else {
            return;
        };
        let acc: Vec<LocalId> = starts
            .iter()
            .map(|_| k.declare(Ty::F32x8, Expr::Local(f.bias)))
            .collect();
        let firsts: Vec<Expr> = starts
            .iter()
            .map(|ox| {
                let at = sum([row_at.clone(), ox.clone(), Expr::Int(-(cols.pad as i64))]);
                Expr::Local(k.declare(Ty::I64, at))
            })
            .collect();
        for ky in 0..rows.kernel {
            for kx in 0..cols.kernel {
                let weight = Expr::Local(f.weights[ky * cols.kernel + kx]);
                let offset = ky as i64 * step + (kx * cols.dilation) as i64;
                for (&a, first) in acc.iter().zip(&firsts) {
                    let value = Expr::load8(f.x, plus(first.clone(), offset));
                    k.assign(a, value.fma(weight.clone(), Expr::Local(a)));
                }
            }
        }
        for (&a, ox) in acc.iter().zip(starts) {
            let index = sum([f.y_row.clone(), ox.clone()]);
            let value = Expr::Local(a);
            let channel = f.channel.clone();
            self.conv
                .epilogue
                .store8(k, &f.extras, f.y, index, channel, value);
        }
    }

    /// Vectors of 4 pixels from each of `starts` (interior ones, or the one at the known
    /// position `fixed`), accumulated over the taps, through the epilogue, stored.
    fn vectors(&self, k: &mut KernelBuilder, f: &Frame, starts: &[Expr], fixed: Option<usize>) {
        let cols = self.cols;
        let acc: Vec<LocalId> = starts
            .iter()
            .map(|_| k.declare(Ty::F32x4, f.four(f.bias)))
            .collect();
        let cols_at: Vec<Expr> = starts
            .iter()
            .map(|ox| {
                let at = plus(times(ox.clone(), cols.stride), -(cols.pad as i64));
                Expr::Local(k.declare(Ty::I64, at))
            })
            .collect();
        // Interior vectors: each vector's first tap in a local, every other tap a constant
        // offset from it (one address per vector rather than one per load).
        let firsts: Option<(Vec<Expr>, i64)> = match (fixed, f.row_step, f.tap_rows.first()) {
            (None, Some(step), Some((row_at, _))) => {
                let firsts = cols_at
                    .iter()
                    .map(|col| {
                        let at = sum([row_at.clone(), col.clone()]);
                        Expr::Local(k.declare(Ty::I64, at))
                    })
                    .collect();
                Some((firsts, step))
            }
            _ => None,
        };
        for (ky, (row_at, inside)) in f.tap_rows.iter().enumerate() {
            // Each vector's first tap in this tap row (vectors at known positions place
            // their loads themselves).
            let bases: Vec<Expr> = match (&firsts, fixed) {
                (_, Some(_)) => Vec::new(),
                (Some((firsts, step)), None) => firsts
                    .iter()
                    .map(|a| plus(a.clone(), ky as i64 * step))
                    .collect(),
                (None, None) => cols_at
                    .iter()
                    .map(|col| {
                        let at = sum([row_at.clone(), col.clone()]);
                        Expr::Local(k.declare(Ty::I64, at))
                    })
                    .collect(),
            };
            // Each vector's stride-2 loads in this tap row, read once for the tap pair
            // that picks from them.
            let mut loads: Vec<Loads> = bases.iter().map(|b| Loads::new(f.x, b.clone())).collect();
            for kx in 0..cols.kernel {
                let weight = f.weight4(ky * cols.kernel + kx);
                for v in 0..cols_at.len() {
                    let tap = (kx * cols.dilation) as i64;
                    let mut value = match fixed {
                        Some(start) => {
                            let Some(p) = self.static_picks(start, kx) else {
                                continue;
                            };
                            if !p.keep.iter().any(|&k| k) {
                                continue;
                            }
                            let load = |o: i64| Expr::load4(f.x, plus(row_at.clone(), o));
                            zero_lanes(load(p.loads[0]).shuffle(load(p.loads[1]), p.lanes), &p.keep)
                        }
                        None => {
                            let base = bases[v].clone();
                            if cols.stride == 1 {
                                Expr::load4(f.x, plus(base, tap))
                            } else if cols.dilation == 1 {
                                let ([a, b], lanes) = stride2_loads(kx, cols.kernel);
                                let (a, b) = (loads[v].at(k, a as i64), loads[v].at(k, b as i64));
                                a.shuffle(b, lanes)
                            } else {
                                Expr::load4(f.x, plus(base.clone(), tap))
                                    .shuffle(Expr::load4(f.x, plus(base, tap + 3)), [0, 2, 5, 7])
                            }
                        }
                    };
                    if let Some(inside) = inside {
                        value = inside.clone().select(value, Expr::Float(0.0).splat());
                    }
                    let a = acc[v];
                    k.assign(a, value.fma(weight.clone(), Expr::Local(a)));
                }
            }
        }
        for (v, ox) in starts.iter().enumerate() {
            let index = Expr::Local(k.declare(Ty::I64, sum([f.y_row.clone(), ox.clone()])));
            let at = StoreAt {
                index,
                channel: f.channel.clone(),
            };
            let value = Expr::Local(acc[v]);
            self.conv.epilogue.store(k, &f.extras, f.y, &at, value, 4);
        }
    }

    /// The flat form of a small plane: the output plane as one run of vectors of 4
    /// consecutive outputs, which cross output rows, each at a position known at compile
    /// time. Where a tap's lanes read consecutive inputs (a "same"-padded stride-1 plane:
    /// all but the rows at its top and bottom), the tap is one load with the lanes outside
    /// the input zeroed; otherwise two loads inside the plane and a shuffle. Planes of up to
    /// [`FLAT_READS`] tap reads qualify, and with stride 2 along the row planes of up to
    /// [`LOOPED_FLAT_READS`] whose unrolled vectors, outside the loop over their alike
    /// periods, stay within [`FLAT_READS`]. `None` where the plane is too large or a tap's
    /// lanes cannot be gathered by two loads.
    fn flat_plan(&self) -> Option<FlatPlan> {
        let (rows, cols) = (self.rows, self.cols);
        let plane = rows.output * cols.output;
        let taps = rows.kernel * cols.kernel;
        let reads = plane.div_ceil(4) * taps;
        let looped_only = reads > FLAT_READS;
        if plane < 4 || looped_only && (cols.stride != 2 || reads > LOOPED_FLAT_READS) {
            return None;
        }
        let input = (rows.input * cols.input) as i64;
        if input < 4 {
            return None;
        }
        let mut starts: Vec<usize> = (0..plane / 4).map(|j| 4 * j).collect();
        if !plane.is_multiple_of(4) {
            starts.push(plane - 4);
        }
        let mut vectors = Vec::with_capacity(starts.len());
        for start in starts {
            let mut taps = Vec::with_capacity(rows.kernel * cols.kernel);
            for ky in 0..rows.kernel {
                for kx in 0..cols.kernel {
                    // Each lane's input element, if inside the input.
                    let at: [Option<i64>; 4] = std::array::from_fn(|l| {
                        let (y, x) = ((start + l) / cols.output, (start + l) % cols.output);
                        let (iy, ix) = (input_at(rows, y, ky), input_at(cols, x, kx));
                        let inside = (0..rows.input as i64).contains(&iy)
                            && (0..cols.input as i64).contains(&ix);
                        inside.then_some(iy * cols.input as i64 + ix)
                    });
                    let keep = at.map(|a| a.is_some());
                    let Some((first, &Some(a))) = at.iter().enumerate().find(|(_, a)| a.is_some())
                    else {
                        taps.push(FlatTap::Skip);
                        continue;
                    };
                    let base = a - first as i64;
                    let consecutive = (0..4).all(|l| at[l].is_none_or(|a| a == base + l as i64));
                    if consecutive && base >= 0 && base + 4 <= input {
                        taps.push(FlatTap::Load { at: base, keep });
                        continue;
                    }
                    if let Some(picks) = self.paired_picks(kx, &at, input) {
                        taps.push(FlatTap::Picks(picks));
                        continue;
                    }
                    let lo = at.iter().flatten().min().copied()?;
                    let hi = at.iter().flatten().max().copied()?;
                    let loads = [lo.clamp(0, input - 4), (hi - 3).clamp(0, input - 4)];
                    let mut lanes = [0u8; 4];
                    for l in 0..4 {
                        let Some(a) = at[l] else { continue };
                        lanes[l] = if (loads[0]..loads[0] + 4).contains(&a) {
                            (a - loads[0]) as u8
                        } else if (loads[1]..loads[1] + 4).contains(&a) {
                            (a - loads[1] + 4) as u8
                        } else {
                            return None;
                        };
                    }
                    taps.push(FlatTap::Picks(Picks { loads, lanes, keep }));
                }
            }
            vectors.push((start, taps));
        }
        let repeat = self.flat_repeat(&vectors);
        let unrolled = repeat
            .as_ref()
            .map_or(vectors.len(), |r| vectors.len() - r.vectors * (r.trips - 1));
        if looped_only && unrolled * taps > FLAT_READS {
            return None;
        }
        Some(FlatPlan { vectors, repeat })
    }

    /// The longest run of at least [`MIN_REPEAT`] periods of a flat plane that read their
    /// taps alike ([`Repeat`]), if any.
    fn flat_repeat(&self, vectors: &[(usize, Vec<FlatTap>)]) -> Option<Repeat> {
        let (rows, cols) = (self.rows, self.cols);
        let period_rows = 4 / gcd(cols.output, 4);
        let per = period_rows * cols.output / 4;
        let y_step = (period_rows * cols.output) as i64;
        let x_step = (period_rows * rows.stride * cols.input) as i64;
        let periods = vectors.len() / per;
        // Whether period `p + 1` reads as period `p` moved on by one step.
        let alike = |p: usize| {
            (0..per).all(|v| {
                let (a, b) = (&vectors[p * per + v], &vectors[(p + 1) * per + v]);
                b.0 as i64 == a.0 as i64 + y_step
                    && a.1.len() == b.1.len()
                    && a.1.iter().zip(&b.1).all(|(t, u)| t.shifted(x_step) == *u)
            })
        };
        let mut best: Option<(usize, usize)> = None;
        let mut p = 0;
        while p + 1 < periods {
            let mut end = p;
            while end + 1 < periods && alike(end) {
                end += 1;
            }
            let trips = end - p + 1;
            if trips >= MIN_REPEAT && best.is_none_or(|(_, t)| trips > t) {
                best = Some((p, trips));
            }
            p = end + 1;
        }
        best.map(|(p, trips)| Repeat {
            first: p * per,
            vectors: per,
            trips,
            x_step,
            y_step,
        })
    }

    /// The kernel of a flat plane ([`Dw::flat_plan`]): one plane per parallel iteration,
    /// every vector unrolled; each output sums its taps row-major from the bias.
    fn flat_kernel(&self, name: &str, bias: std::sync::Arc<Tensor>, plan: &FlatPlan) -> Kernel {
        let conv = self.conv;
        let (rows, cols) = (self.rows, self.cols);
        let plane = rows.input * cols.input;
        let out_plane = rows.output * cols.output;
        let mut k = KernelBuilder::new(name);
        let looped = plan.repeat.as_ref().map_or(String::new(), |r| {
            format!(
                ", {} periods of {} vectors looped, the rest unrolled",
                r.trips, r.vectors
            )
        });
        let wide_pairs = if crate::codegen::wide_vectors() {
            self.flat_wide_pairs(plan)
        } else {
            0
        };
        let paired = if wide_pairs > 0 {
            format!(", {wide_pairs} pairs of them per plane as f32x8")
        } else {
            String::new()
        };
        k.set_schedule(format!(
            "depthwise, flat: the {}x{} plane as {} f32x4 vectors of consecutive outputs \
             (taps from one load, lanes outside the input zeroed){paired}{looped}, {} planes \
             in parallel",
            rows.output,
            cols.output,
            plan.vectors.len(),
            conv.n * conv.c,
        ));
        let Buffers { x, w, b, y, extras } = self.buffers(&mut k, bias);
        let wide = wide_pairs > 0;
        k.for_loop(
            0,
            (conv.n * conv.c) as i64,
            1,
            LoopKind::Parallel,
            |k, nc| {
                let x_plane = Expr::Local(k.declare(Ty::I64, times(nc.clone(), plane)));
                let y_plane = Expr::Local(k.declare(Ty::I64, times(nc.clone(), out_plane)));
                let bufs = Buffers {
                    x,
                    w,
                    b,
                    y,
                    extras: extras.clone(),
                };
                self.flat_plane(k, &bufs, plan, wide, &nc, &x_plane, &y_plane);
            },
        );
        k.finish()
    }

    /// One flat plane (batch and channel `nc`) from `x_plane` in the input to `y_plane`
    /// in the output: the channel's weights and bias splatted, then the plan's vectors.
    #[allow(clippy::too_many_arguments)]
    fn flat_plane(
        &self,
        k: &mut KernelBuilder,
        bufs: &Buffers,
        plan: &FlatPlan,
        wide: bool,
        nc: &Expr,
        x_plane: &Expr,
        y_plane: &Expr,
    ) {
        let (channel, weights, bias) = self.channel(k, nc, bufs.w, bufs.b, wide);
        let flat = FlatFrame {
            x: bufs.x,
            y: bufs.y,
            extras: &bufs.extras,
            channel,
            weights: &weights,
            bias,
            wide,
        };
        let Some(r) = &plan.repeat else {
            self.flat_vectors(k, &flat, &plan.vectors, x_plane, y_plane);
            return;
        };
        let looped = r.first..r.first + r.vectors;
        let rest = r.first + r.vectors * r.trips;
        self.flat_vectors(k, &flat, &plan.vectors[..r.first], x_plane, y_plane);
        k.for_loop(0, r.trips as i64, 1, LoopKind::Serial, |k, q| {
            let mut at = |plane: &Expr, step: i64| {
                let at = sum([plane.clone(), times(q.clone(), step as usize)]);
                Expr::Local(k.declare(Ty::I64, at))
            };
            let (x_at, y_at) = (at(x_plane, r.x_step), at(y_plane, r.y_step));
            self.flat_vectors(k, &flat, &plan.vectors[looped], &x_at, &y_at);
        });
        self.flat_vectors(k, &flat, &plan.vectors[rest..], x_plane, y_plane);
    }

    /// How many pairs of vectors [`Dw::flat_vectors`] computes as one `f32x8` in a plane
    /// (the looped period counted once per trip), pairing within each unrolled or looped
    /// run as it does.
    fn flat_wide_pairs(&self, plan: &FlatPlan) -> usize {
        let pairs = |vectors: &[(usize, Vec<FlatTap>)]| {
            let (mut i, mut n) = (0, 0);
            while i + 1 < vectors.len() {
                if wide_pair(&vectors[i], &vectors[i + 1]) {
                    n += 1;
                    i += 2;
                } else {
                    i += 1;
                }
            }
            n
        };
        match &plan.repeat {
            None => pairs(&plan.vectors),
            Some(r) => {
                let rest = r.first + r.vectors * r.trips;
                pairs(&plan.vectors[..r.first])
                    + r.trips * pairs(&plan.vectors[r.first..r.first + r.vectors])
                    + pairs(&plan.vectors[rest..])
            }
        }
    }

    /// Vectors of a flat plane, their reads and stores relative to `x_at` and `y_at` (the
    /// plane's first elements, or moved on by whole periods).
    fn flat_vectors(
        &self,
        k: &mut KernelBuilder,
        f: &FlatFrame<'_>,
        vectors: &[(usize, Vec<FlatTap>)],
        x_at: &Expr,
        y_at: &Expr,
    ) {
        let mut i = 0;
        while i < vectors.len() {
            if f.wide && i + 1 < vectors.len() && wide_pair(&vectors[i], &vectors[i + 1]) {
                self.flat_wide_vector(k, f, &vectors[i], x_at, y_at);
                i += 2;
                continue;
            }
            let (start, reads) = &vectors[i];
            i += 1;
            let acc = k.declare(Ty::F32x4, f.four(f.bias));
            // The vector's shuffled loads, each read once for every tap that picks from it
            // (a stride-2 tap pair, see `paired_picks`).
            let mut loads = Loads::new(f.x, x_at.clone());
            for (tap, read) in reads.iter().enumerate() {
                let (value, keep) = match read {
                    FlatTap::Skip => continue,
                    FlatTap::Load { at, keep } => (Expr::load4(f.x, plus(x_at.clone(), *at)), keep),
                    FlatTap::Picks(p) => {
                        let (a, b) = (loads.at(k, p.loads[0]), loads.at(k, p.loads[1]));
                        (a.shuffle(b, p.lanes), &p.keep)
                    }
                };
                let value = zero_lanes(value, keep);
                let weight = f.four(f.weights[tap]);
                k.assign(acc, value.fma(weight, Expr::Local(acc)));
            }
            let index = plus(y_at.clone(), *start as i64);
            let at = StoreAt {
                index: Expr::Local(k.declare(Ty::I64, index)),
                channel: f.channel.clone(),
            };
            self.conv
                .epilogue
                .store(k, f.extras, f.y, &at, Expr::Local(acc), 4);
        }
    }

    /// Two vectors of a flat plane that [`wide_pair`] joins, as one `f32x8` vector: each
    /// tap one 256-bit load (the first vector's) and FMA, each half through the epilogue.
    fn flat_wide_vector(
        &self,
        k: &mut KernelBuilder,
        f: &FlatFrame<'_>,
        (start, reads): &(usize, Vec<FlatTap>),
        x_at: &Expr,
        y_at: &Expr,
    ) {
        let acc = k.declare(Ty::F32x8, Expr::Local(f.bias));
        for (tap, read) in reads.iter().enumerate() {
            let FlatTap::Load { at, .. } = read else {
                continue;
            };
            let value = Expr::load8(f.x, plus(x_at.clone(), *at));
            let weight = Expr::Local(f.weights[tap]);
            k.assign(acc, value.fma(weight, Expr::Local(acc)));
        }
        let index = plus(y_at.clone(), *start as i64);
        let channel = f.channel.clone();
        self.conv
            .epilogue
            .store8(k, f.extras, f.y, index, channel, Expr::Local(acc));
    }
}

/// Whether two vectors of a flat plane can be computed as one `f32x8`: consecutive outputs
/// whose every tap is one load of all four lanes (none zeroed), the second's 4 elements on
/// from the first's, so one 256-bit load reads both.
fn wide_pair(a: &(usize, Vec<FlatTap>), b: &(usize, Vec<FlatTap>)) -> bool {
    let full = [true; 4];
    b.0 == a.0 + 4
        && a.1.len() == b.1.len()
        && a.1.iter().zip(&b.1).all(|pair| match pair {
            (
                FlatTap::Load { at, keep },
                FlatTap::Load {
                    at: next,
                    keep: next_keep,
                },
            ) => *keep == full && *next_keep == full && *next == at + 4,
            (FlatTap::Skip, FlatTap::Skip) => true,
            _ => false,
        })
}

/// The buffers and values of one flat plane's parallel iteration.
struct FlatFrame<'a> {
    x: BufId,
    y: BufId,
    extras: &'a [BufId],
    channel: Expr,
    /// The splatted weights: `f32x8` where `wide`, the `f32x4` vectors using their low
    /// halves.
    weights: &'a [LocalId],
    bias: LocalId,
    /// Whether the weights and bias are `f32x8` (pairs of vectors joined by [`wide_pair`]
    /// computed as one).
    wide: bool,
}

impl FlatFrame<'_> {
    /// `local` (a weight or the bias) as an `f32x4`.
    fn four(&self, local: LocalId) -> Expr {
        if self.wide {
            Expr::Local(local).half(0)
        } else {
            Expr::Local(local)
        }
    }
}

/// The interior vectors of `lanes` outputs from `from` up to `end`: loops over groups of
/// `together` vectors, then over single ones, `emit` computing the vectors at the given
/// starts. Returns where the single vectors stopped (`end` when `lanes` divides the run).
fn interior_run(
    k: &mut KernelBuilder,
    from: usize,
    end: usize,
    lanes: usize,
    together: usize,
    emit: &dyn Fn(&mut KernelBuilder, &[Expr]),
) -> usize {
    let group = lanes * together;
    let grouped = from + (end - from) / group * group;
    if grouped > from {
        let (lo, hi) = (from as i64, grouped as i64);
        k.for_loop(lo, hi, group as i64, LoopKind::Serial, |k, ox| {
            let starts: Vec<Expr> = (0..together)
                .map(|v| plus(ox.clone(), (lanes * v) as i64))
                .collect();
            emit(k, &starts);
        });
    }
    let singles = grouped + (end - grouped) / lanes * lanes;
    if singles > grouped {
        let (lo, hi) = (grouped as i64, singles as i64);
        k.for_loop(lo, hi, lanes as i64, LoopKind::Serial, |k, ox| {
            emit(k, &[ox])
        });
    }
    singles
}

/// `value` with the lanes not kept replaced by zero.
fn zero_lanes(value: Expr, keep: &[bool; 4]) -> Expr {
    if keep.iter().all(|&k| k) {
        return value;
    }
    let lanes: [u8; 4] = std::array::from_fn(|i| if keep[i] { i as u8 } else { 4 });
    value.shuffle(Expr::Float(0.0).splat(), lanes)
}
