//! An expansion (a 1×1 convolution) and the depthwise convolution that reads its output, in
//! one kernel over bands of output rows, so that the expanded tensor is never stored whole.
//!
//! MobileNet-style blocks expand a few channels into many (16 → 96 on 112×112: a 4.8 MB
//! tensor) and read them back once with a depthwise convolution. Computed one after the
//! other, the expansion writes the tensor out of L2 and the depthwise reads it back from
//! further away; both are bound by that traffic (on this machine the 16 → 96 expansion ran
//! at 38 GFLOP/s against 60–75 when its output stayed in L2). Here a task is a band of the
//! depthwise's output rows and a block of `R` channels: it expands the band's input rows
//! (the rows its taps read, the halo included) of those channels into a scratch band of
//! `R` planes, which stays in L1/L2, and runs the depthwise planes over it straight into the
//! output. Halo rows are expanded by both bands that read them (a band of 8 output rows at
//! stride 2 reads 17 input rows: 6% more expansion work).
//!
//! Each value is computed exactly as by the two kernels apart: the expansion's sum runs
//! over the input channels in order from the bias and goes through its epilogue (see
//! [`super::pointwise`]), and the depthwise sums the same taps in the same order (see
//! [`super::depthwise`]'s flat planes); so results are bit-identical to the unfused
//! kernels' and do not depend on the bands or the thread count.
//!
//! Bands are one of three kinds, each with its own code: the first (clipped by the top
//! padding), the middle ones (whose first input row moves on by a whole band's rows) and
//! the last (clipped by the bottom of the input). The tasks are dealt to one scratch slot
//! per thread, each slot running its share in order (band by band, the blocks of a band
//! together, so the band's input rows stay in cache while every block reads them).

use std::sync::Arc;

use super::conv::{Axis, split, sum, times};
use super::depthwise::{BandPlanes, Buffers};
use super::direct_conv::{ConvBuffers, DirectConv};
use super::ir::{CmpOp, Expr, KernelBuilder, LoopKind, Ty};
use super::pointwise::{self, Frame, Tile};
use super::{Arg, BufferKind, Kernel, Lowered, LoweredKernel, NodeInfo};
use crate::tensor::{DType, Tensor};

/// Expanded tensors smaller than this are computed by the two kernels apart (they stay in
/// the last-level cache, and the halo rows would be computed twice for little gain).
pub const MIN_INTERMEDIATE_BYTES: usize = 4 << 20;

/// The most output rows in a band.
const BAND_ROWS: usize = 8;

/// One kind of band: where its input rows start and the geometry of its depthwise planes.
struct Kind<'a> {
    /// The band's first input row, or `None` for the middle bands (it moves with the band).
    start: Option<usize>,
    /// The band's first output row, or `None` for the middle bands.
    first_output: Option<usize>,
    /// Input rows the band reads.
    rows: usize,
    planes: BandPlanes<'a>,
}

/// The geometry of the fused kernel.
struct Bands<'a> {
    expand: &'a DirectConv<'a>,
    depthwise: &'a DirectConv<'a>,
    rows: &'a Axis,
    cols: &'a Axis,
    /// Output rows per band.
    per: usize,
    /// Bands per plane.
    bands: usize,
    /// Output channels of the expansion per task (its tile's channels).
    r: usize,
    /// Pixel vectors of the expansion's tile.
    v: usize,
    /// Scratch slots (one per thread).
    slots: usize,
    /// The most input rows a band reads.
    max_rows: usize,
}

/// The input rows `[start, end)` of output rows `first..first + count` along `axis`
/// (unclipped: they may leave the input).
fn input_rows(axis: &Axis, first: usize, count: usize) -> (i64, i64) {
    let start = (first * axis.stride) as i64 - axis.pad as i64;
    let end = ((first + count - 1) * axis.stride + (axis.kernel - 1) * axis.dilation) as i64
        - axis.pad as i64
        + 1;
    (start, end)
}

/// The band axis of output rows `first..first + count`: the input rows it reads (clipped
/// to the input) and its padding above, or `None` where it is empty.
fn band_axis(axis: &Axis, first: usize, count: usize) -> Option<(usize, Axis)> {
    let (start, end) = input_rows(axis, first, count);
    let lo = start.max(0);
    let hi = end.min(axis.input as i64);
    (hi > lo).then(|| {
        let band = Axis {
            input: (hi - lo) as usize,
            output: count,
            pad: (lo - start) as usize,
            ..*axis
        };
        (lo as usize, band)
    })
}

/// The kinds of band of `per` output rows along `rows` (at least two bands): the first,
/// the middle ones if any, the last, each with its first input row and first output row
/// (`None` for the middle ones, which move with the band) and its band axis; `None` where
/// a middle band would leave the input (its rows could not move on by whole bands).
#[allow(clippy::type_complexity)]
fn kinds(rows: &Axis, per: usize) -> Option<Vec<(Option<usize>, Option<usize>, Axis)>> {
    let bands = rows.output / per;
    let (first_start, first_axis) = band_axis(rows, 0, per)?;
    let (last_start, last_axis) = band_axis(rows, (bands - 1) * per, per)?;
    let mut kinds = vec![(Some(first_start), Some(0), first_axis)];
    if bands > 2 {
        for b in 1..bands - 1 {
            let (start, end) = input_rows(rows, b * per, per);
            if start < 0 || end > rows.input as i64 {
                return None;
            }
        }
        kinds.push((None, None, band_axis(rows, per, per)?.1));
    }
    kinds.push((Some(last_start), Some((bands - 1) * per), last_axis));
    Some(kinds)
}

/// The fused kernel of `expand` (a 1×1 convolution the pointwise tile takes, whose epilogue
/// has no extra operands) and `depthwise` (which reads the expansion's output as its
/// input), named after `node` (the depthwise), or `None` when it does not apply: the
/// expanded tensor is smaller than [`MIN_INTERMEDIATE_BYTES`], or no height of at most
/// [`BAND_ROWS`] rows cuts the planes into two or more bands whose depthwise planes are
/// all computed flat.
pub(super) fn lower(
    node: &NodeInfo<'_>,
    expand: &DirectConv<'_>,
    depthwise: &DirectConv<'_>,
) -> Option<Lowered> {
    let [rows, cols] = depthwise.axes else {
        return None;
    };
    let [e_rows, e_cols] = expand.axes else {
        return None;
    };
    if expand.n != depthwise.n
        || expand.m != depthwise.c
        || !expand.epilogue.extras.is_empty()
        || e_rows.output != rows.input
        || e_cols.output != cols.input
    {
        return None;
    }
    let plane = rows.input * cols.input;
    if expand.n * expand.m * plane * 4 < MIN_INTERMEDIATE_BYTES {
        return None;
    }
    let (r, packed, expand_bias) = pointwise::pack(expand)?;
    let v = pointwise::ACCUMULATORS / r;
    // The most rows per band (a divisor of the output rows, at least two bands) whose
    // bands' planes are all computed flat, and each at least one expansion tile.
    let (per, axes) = (1..=BAND_ROWS.min(rows.output / 2))
        .rev()
        .filter(|p| rows.output.is_multiple_of(*p))
        .find_map(|per| {
            let axes = kinds(rows, per)?;
            let fits = axes.iter().all(|(_, _, axis)| {
                axis.input * cols.input >= pointwise::LANES * v
                    && BandPlanes::new(depthwise, axis, cols).is_some()
            });
            fits.then_some((per, axes))
        })?;
    let bands = rows.output / per;
    let max_rows = axes.iter().map(|(_, _, a)| a.input).max().unwrap_or(0);
    let tasks = depthwise.n * bands * (expand.m / r);
    let threads = node.options.threads.max(1);
    let slots = (1..=threads.min(tasks))
        .rev()
        .find(|s| tasks.is_multiple_of(*s))
        .unwrap_or(1);
    let geometry = Bands {
        expand,
        depthwise,
        rows,
        cols,
        per,
        bands,
        r,
        v,
        slots,
        max_rows,
    };
    let mut band_kinds = Vec::with_capacity(axes.len());
    let mut dw_bias = None;
    for (start, first_output, axis) in &axes {
        let (planes, bias) = BandPlanes::new(depthwise, axis, cols)?;
        dw_bias = Some(bias);
        band_kinds.push(Kind {
            start: *start,
            first_output: *first_output,
            rows: axis.input,
            planes,
        });
    }
    let kernel = geometry.kernel(node.name, &band_kinds, packed, expand_bias, dw_bias?);
    let mut args = vec![
        Arg::Prologue(0),
        Arg::Const,
        Arg::Const,
        Arg::Input(1),
        Arg::Const,
        Arg::Output(0),
        Arg::Scratch(0),
    ];
    args.extend(depthwise.epilogue.args());
    Some(Lowered {
        kernels: vec![LoweredKernel { kernel, args }],
        scratch: vec![(DType::F32, geometry.slots * geometry.slot())],
    })
}

impl Bands<'_> {
    /// Elements of one scratch slot: `R` planes of the largest band.
    fn slot(&self) -> usize {
        self.r * self.max_rows * self.cols.input
    }

    fn kernel(
        &self,
        name: &str,
        kinds: &[Kind<'_>],
        packed: Arc<Tensor>,
        expand_bias: Arc<Tensor>,
        dw_bias: Arc<Tensor>,
    ) -> Kernel {
        let (e, d) = (self.expand, self.depthwise);
        let (rows, cols) = (self.rows, self.cols);
        let blocks = e.m / self.r;
        let tasks = d.n * self.bands * blocks;
        let per_slot = tasks / self.slots;
        let mut k = KernelBuilder::new(name);
        let middle = kinds
            .iter()
            .find(|kind| kind.start.is_none())
            .unwrap_or(&kinds[0]);
        k.set_schedule(format!(
            "expansion and depthwise in bands: {} bands of {} output rows ({} input rows) x \
             {blocks} blocks of {} channels, the expansion's tile {} channels x {} pixels \
             into a scratch band, the depthwise planes flat ({} f32x4 vectors), {} slots in \
             parallel",
            self.bands,
            self.per,
            middle.rows,
            self.r,
            self.r,
            8 * self.v,
            middle.planes.vectors(),
            self.slots,
        ));
        let plane = rows.input * cols.input;
        let out_plane = rows.output * cols.output;
        let x = k.buffer("x", DType::F32, e.n * e.c * plane, BufferKind::Input);
        let w_expand = k.buffer(
            "w_expand",
            DType::F32,
            packed.len(),
            BufferKind::Const(packed),
        );
        let b_expand = k.buffer(
            "b_expand",
            DType::F32,
            expand_bias.len(),
            BufferKind::Const(expand_bias),
        );
        let w = k.buffer(
            "w",
            DType::F32,
            d.c * rows.kernel * cols.kernel,
            BufferKind::Input,
        );
        let b = k.buffer("b", DType::F32, dw_bias.len(), BufferKind::Const(dw_bias));
        let y = k.buffer("y", DType::F32, d.n * d.m * out_plane, BufferKind::Output);
        let band = k.buffer(
            "band",
            DType::F32,
            self.slots * self.slot(),
            BufferKind::Output,
        );
        let extras = d.epilogue.declare(&mut k);
        let expand_bufs = ConvBuffers {
            x,
            w: w_expand,
            b: b_expand,
            y: band,
        };
        let dw_bufs = Buffers {
            x: band,
            w,
            b,
            y,
            extras,
        };
        k.for_loop(0, self.slots as i64, 1, LoopKind::Parallel, |k, s| {
            let slot = Expr::Local(k.declare(Ty::I64, times(s.clone(), self.slot())));
            k.for_loop(0, per_slot as i64, 1, LoopKind::Serial, |k, t| {
                let task = sum([times(s.clone(), per_slot), t]);
                let (nb, block) = split(task, d.n * self.bands, blocks);
                let nb = Expr::Local(k.declare(Ty::I64, nb));
                let block = Expr::Local(k.declare(Ty::I64, block));
                let (batch, band_index) = split(nb, d.n, self.bands);
                let batch = Expr::Local(k.declare(Ty::I64, batch));
                let band_index = Expr::Local(k.declare(Ty::I64, band_index));
                let task = Task {
                    batch,
                    band: band_index.clone(),
                    block,
                    slot: slot.clone(),
                };
                let run = |k: &mut KernelBuilder, kind: &Kind<'_>| {
                    self.task(k, kind, &task, expand_bufs, &dw_bufs)
                };
                let (first, rest) = (&kinds[0], &kinds[1..]);
                let is_first = band_index.clone().cmp(CmpOp::Eq, Expr::Int(0));
                k.if_else(
                    is_first,
                    |k| run(k, first),
                    |k| match rest {
                        [last] => run(k, last),
                        [middle, last] => {
                            let last_band = Expr::Int(self.bands as i64 - 1);
                            let is_last = band_index.clone().cmp(CmpOp::Eq, last_band);
                            k.if_else(is_last, |k| run(k, last), |k| run(k, middle));
                        }
                        _ => {}
                    },
                );
            });
        });
        k.finish()
    }

    /// One task of band kind `kind`: the expansion of the block's channels over the band's
    /// input rows into the slot, then their depthwise planes into the output.
    fn task(
        &self,
        k: &mut KernelBuilder,
        kind: &Kind<'_>,
        task: &Task,
        expand_bufs: ConvBuffers,
        dw_bufs: &Buffers,
    ) {
        let (e, d) = (self.expand, self.depthwise);
        let (rows, cols) = (self.rows, self.cols);
        let width = cols.input;
        let plane = rows.input * width;
        let band_plane = kind.rows * width;
        // The band's first input row: a middle band's moves on by `per · stride` rows per
        // band (clamped so that every read is provably inside the input; it never clamps).
        let start = match kind.start {
            Some(row) => Expr::Int(row as i64),
            None => {
                let row = sum([
                    times(task.band.clone(), self.per * rows.stride),
                    Expr::Int(-(rows.pad as i64)),
                ]);
                row.clamp(0, (rows.input - kind.rows) as i64)
            }
        };
        let start = Expr::Local(k.declare(Ty::I64, start));
        let x_batch = sum([times(task.batch.clone(), e.c * plane), times(start, width)]);
        let frame = Frame {
            bufs: expand_bufs,
            extras: Vec::new(),
            x_batch: Expr::Local(k.declare(Ty::I64, x_batch)),
            y_batch: task.slot.clone(),
        };
        let tile = Tile {
            conv: e,
            x_plane: plane,
            y_plane: band_plane,
            r: self.r,
            v: self.v,
            block_planes: true,
        };
        let pixels = tile.pixels();
        let whole = band_plane / pixels;
        let at = |k: &mut KernelBuilder, p0: Expr| {
            let x_tile = Expr::Local(k.declare(Ty::I64, sum([frame.x_batch.clone(), p0.clone()])));
            let y_tile = Expr::Local(k.declare(Ty::I64, sum([frame.y_batch.clone(), p0])));
            tile.block(k, &frame, &x_tile, &y_tile, task.block.clone());
        };
        k.for_loop(0, whole as i64, 1, LoopKind::Serial, |k, p| {
            at(k, times(p, pixels))
        });
        if !band_plane.is_multiple_of(pixels) {
            at(k, Expr::Int((band_plane - pixels) as i64));
        }
        // The block's depthwise planes.
        let out_plane = rows.output * cols.output;
        let first_output = match kind.first_output {
            Some(row) => Expr::Int(row as i64),
            None => times(task.band.clone(), self.per),
        };
        let y_band = Expr::Local(k.declare(Ty::I64, times(first_output, cols.output)));
        k.range(self.r, |k, j| {
            let channel = sum([times(task.block.clone(), self.r), j.clone()]);
            let nc = sum([times(task.batch.clone(), d.m), channel]);
            let nc = Expr::Local(k.declare(Ty::I64, nc));
            let x_plane = sum([task.slot.clone(), times(j, band_plane)]);
            let x_plane = Expr::Local(k.declare(Ty::I64, x_plane));
            let y_plane = sum([times(nc.clone(), out_plane), y_band.clone()]);
            let y_plane = Expr::Local(k.declare(Ty::I64, y_plane));
            kind.planes.plane(k, dw_bufs, &nc, &x_plane, &y_plane);
        });
    }
}

/// The positions of one task.
struct Task {
    batch: Expr,
    band: Expr,
    block: Expr,
    /// The slot's first element.
    slot: Expr,
}
