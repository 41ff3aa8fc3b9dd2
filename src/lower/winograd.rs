//! Winograd convolution for 3×3, stride-1, ungrouped convolutions: F(4×4, 3×3) (4× fewer
//! multiplications than the direct method) and F(2×2, 3×3) (2.25×).
//!
//! Each `m × m` block of outputs (a *tile*, `m` = 4 or 2) is computed from the
//! `(m+2) × (m+2)` block of inputs under it as `Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A` (Lavin and
//! Gray; F(4×4): interpolation points 0, ±1, ±2, ∞), summed over input channels. The kernel
//! weights `g` become `U = G g Gᵀ` (36 or 16 *points* per output × input channel). One
//! kernel computes a layer; per task (a band of tiles and a group of output channels):
//!
//! 1. **Input transform.** For every input channel, the band's input rows are combined
//!    along columns (`Bᵀ d`, four columns at a time, into zero-padded scratch rows so that
//!    padding costs nothing), then each group of 4 tiles is transposed (tiles into lanes)
//!    and combined along rows (`· B`), giving `V[ξ][group][c][4 tiles]` for the points `ξ`.
//!    Channels are pipelined in pairs (see [`Plan::task`]).
//! 2. **Batched products.** For each block of 8 output channels and each point, a
//!    register-blocked GEMM `M[ξ][tile][8] = Σ_c V[ξ][c][tile] · U[ξ][c][8]`: 4 tiles ×
//!    8 channels in 8 `f32x4` accumulators, broadcast `V`, FMA — the direct kernel's tile.
//! 3. **Output transform.** `Aᵀ M A` per tile with lanes over 4 output channels, the bias
//!    added, then each output row (4 columns: one F(4×4) tile or two F(2×2) tiles)
//!    transposed into a vector along the row so the fused epilogue and the stores are the
//!    direct kernel's. Columns past the output's right edge are not stored (the valid ones
//!    one by one); rows below it are skipped.
//!
//! `G`'s rows are kept as small integers (`G g` is then adds and one multiply by 4 or 2)
//! and their scales (1/4, −1/6, 1/24 for F(4×4); 1/2 for F(2×2)) carried by `Aᵀ` instead,
//! where they cost one multiply per pair of points or ride in the FMAs' constants: the
//! output transform runs per tile and block of 8 output channels, the weight transform per
//! input channel and block, far more often when weights are transformed at run time.
//!
//! `U` is computed once at compile time (in `f64`) — or, when the transformed weights
//! would not stay in cache (they are 4× or 1.8× the taps, and at batch 1 a small plane uses
//! each byte for few tiles), the kernel keeps the taps and transforms each block of output
//! channels at run time just before its products ([`Plan::choose_weights`]).
//!
//! The tasks are shared equally among one scratch slot per thread (transformed rows, `V`,
//! `M`, run-time `U`), each slot's tasks run in turn. Splitting the output channels into
//! groups repeats the input transform once per group, so groups are only made to give
//! every thread a task. Whether Winograd pays over the direct kernel, which variant and
//! where the weights are transformed is decided per layer by a cost model ([`Plan::cost`],
//! [`direct_cost`]).
//!
//! Rounding differs from the direct method (the transforms scale values by up to 8 and
//! 1/24): relative to the output's magnitude the error stays near 1e-6 (tests compare
//! against the interpreter within 1e-4 of the largest output).

use std::sync::Arc;

use super::conv::{Axis, plus, split, sum, times};
use super::direct_conv::{DirectConv, transpose4};
use super::epilogue::StoreAt;
use super::ir::{BufId, CmpOp, Expr, KernelBuilder, LocalId, LoopKind, Ty};
use super::{Arg, BufferKind, Kernel, Lowered, LoweredKernel, NodeInfo, Winograd};
use crate::tensor::{DType, Tensor};

/// Output channels per GEMM block (two `f32x4`s).
const WIDTH: usize = 8;
/// Tiles per GEMM micro-tile (and per input-transform group: one per lane).
const GROUP: usize = 4;
/// At most this many tile groups per band (the input transform unrolls them).
const MAX_GROUPS: usize = 16;
/// At most this many bytes of transformed input per band (kept in L2 for the products).
const MAX_BAND_BYTES: usize = 1 << 20;
/// Transformed weights up to this size stay in L2 across bands; larger ones are streamed
/// from memory, so the bands are made as large as possible to read them once.
const CACHED_WEIGHT_BYTES: usize = 1 << 20;

/// Which Winograd algorithm: outputs per tile side 2 or 4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    /// F(2×2, 3×3): 16 points per 4 outputs (2.25× fewer multiplications than direct).
    F2,
    /// F(4×4, 3×3): 36 points per 16 outputs (4× fewer).
    F4,
}

/// `G` of F(2×2, 3×3) (`U = G g Gᵀ`) with its rows' scales moved into `Aᵀ`: rows of
/// small integers, so that weights transformed at run time take adds and no multiplies.
const G2: [[f64; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [1.0, 1.0, 1.0],
    [1.0, -1.0, 1.0],
    [0.0, 0.0, 1.0],
];

/// `G` of F(4×4, 3×3), its rows' scales (1/4, −1/6, −1/6, 1/24, 1/24, 1) moved into `Aᵀ`.
const G4: [[f64; 3]; 6] = [
    [1.0, 0.0, 0.0],
    [1.0, 1.0, 1.0],
    [1.0, -1.0, 1.0],
    [1.0, 2.0, 4.0],
    [1.0, -2.0, 4.0],
    [0.0, 0.0, 1.0],
];

impl Variant {
    /// Outputs per tile side.
    fn out(self) -> usize {
        match self {
            Variant::F2 => 2,
            Variant::F4 => 4,
        }
    }

    /// Inputs per tile side.
    fn input(self) -> usize {
        self.out() + 2
    }

    /// Transform points per tile.
    fn points(self) -> usize {
        self.input() * self.input()
    }

    fn g(self) -> &'static [[f64; 3]] {
        match self {
            Variant::F2 => &G2,
            Variant::F4 => &G4,
        }
    }

    /// Vector instructions of the input transform per tile and input channel, and of the
    /// output transform per tile and block of 8 output channels (counted from the code).
    fn transform_cost(self) -> (f64, f64) {
        match self {
            Variant::F2 => (22.0, 82.0),
            Variant::F4 => (60.0, 290.0),
        }
    }

    /// `Bᵀ d` along one axis: the transformed values of `input()` inputs.
    fn input_points(self, k: &mut KernelBuilder, d: Vec<Expr>) -> Vec<Expr> {
        let d: Vec<Expr> = d
            .into_iter()
            .map(|e| Expr::Local(k.declare(Ty::F32x4, e)))
            .collect();
        let f = Expr::Float;
        match self {
            Variant::F2 => vec![
                d[0].clone().sub(d[2].clone()),
                d[1].clone().add(d[2].clone()),
                d[2].clone().sub(d[1].clone()),
                d[1].clone().sub(d[3].clone()),
            ],
            Variant::F4 => {
                let mut local = |e: Expr| Expr::Local(k.declare(Ty::F32x4, e));
                let a = local(d[2].clone().fma(f(-4.0), d[4].clone()));
                let b = local(d[1].clone().fma(f(-4.0), d[3].clone()));
                let c = local(d[4].clone().sub(d[2].clone()));
                let e = local(d[3].clone().sub(d[1].clone()).mul(f(2.0)));
                vec![
                    d[0].clone()
                        .fma(f(4.0), d[2].clone().fma(f(-5.0), d[4].clone())),
                    a.clone().add(b.clone()),
                    a.sub(b),
                    c.clone().add(e.clone()),
                    c.sub(e),
                    d[1].clone()
                        .fma(f(4.0), d[3].clone().fma(f(-5.0), d[5].clone())),
                ]
            }
        }
    }

    /// `G g` along one axis: the `input()` transformed values of a kernel's 3 taps (in
    /// `f32`, for weights transformed at run time).
    fn weight_points(self, k: &mut KernelBuilder, g: [Expr; 3]) -> Vec<Expr> {
        let f = Expr::Float;
        let mut local = |e: Expr| Expr::Local(k.declare(Ty::F32x4, e));
        let [g0, g1, g2] = g.map(&mut local);
        let a = local(g0.clone().add(g2.clone()));
        match self {
            Variant::F2 => vec![g0, a.clone().add(g1.clone()), a.sub(g1), g2],
            Variant::F4 => {
                // g0 + 4·g2
                let b = local(g2.clone().fma(f(4.0), g0.clone()));
                vec![
                    g0,
                    a.clone().add(g1.clone()),
                    a.sub(g1.clone()),
                    g1.clone().fma(f(2.0), b.clone()),
                    g1.fma(f(-2.0), b),
                    g2,
                ]
            }
        }
    }

    /// Vector instructions to transform one input channel's weights of a block of 8 output
    /// channels at run time (two lanes of 4: loads, `G g Gᵀ`, stores; counted from the code).
    fn weight_transform_cost(self) -> f64 {
        match self {
            Variant::F2 => 84.0,
            Variant::F4 => 155.0,
        }
    }

    /// `Aᵀ m` along one axis: the `out()` outputs of `input()` transformed values (`Aᵀ`
    /// carries the scales of `G`'s rows, see [`G4`]).
    fn output_points(self, k: &mut KernelBuilder, m: Vec<Expr>) -> Vec<Expr> {
        let f = Expr::Float;
        let mut local = |e: Expr| Expr::Local(k.declare(Ty::F32x4, e));
        match self {
            Variant::F2 => {
                let m1 = local(m[1].clone());
                let m2 = local(m[2].clone());
                vec![
                    m1.clone().add(m2.clone()).fma(f(0.5), m[0].clone()),
                    m1.sub(m2).mul(f(0.5)).sub(m[3].clone()),
                ]
            }
            Variant::F4 => {
                // Each of m1..m4 is read twice: loaded once.
                let [m1, m2, m3, m4] = [1, 2, 3, 4].map(|i| local(m[i].clone()));
                let s12 = local(m1.clone().add(m2.clone()).mul(f(-1.0 / 6.0)));
                let d12 = local(m1.sub(m2).mul(f(-1.0 / 6.0)));
                let s34 = local(m3.clone().add(m4.clone()));
                let d34 = local(m3.sub(m4));
                vec![
                    s34.clone()
                        .fma(f(1.0 / 24.0), m[0].clone().fma(f(0.25), s12.clone())),
                    d34.clone().fma(f(1.0 / 12.0), d12.clone()),
                    s34.fma(f(1.0 / 6.0), s12),
                    d34.fma(f(1.0 / 3.0), d12).add(m[5].clone()),
                ]
            }
        }
    }
}

/// The Winograd kernel for `conv`, or `None` when it does not apply (not 3×3 stride 1, not
/// ungrouped, output channels not a multiple of 8, rows narrower than 4 outputs) or when
/// the cost model prefers the direct kernel. Of the two variants, the one the cost model
/// finds cheaper.
pub(super) fn lower(node: &NodeInfo<'_>, conv: &DirectConv<'_>) -> Option<Lowered> {
    let variants: &[Variant] = match node.options.winograd {
        Winograd::Off => return None,
        Winograd::Auto => &[Variant::F4, Variant::F2],
        Winograd::F2x2 => &[Variant::F2],
        Winograd::F4x4 => &[Variant::F4],
    };
    let threads = node.options.threads;
    let plan = variants
        .iter()
        .filter_map(|&v| Plan::new(conv, v, threads))
        .min_by(|a, b| a.cost().total_cmp(&b.cost()))?;
    if node.options.winograd == Winograd::Auto && plan.cost() >= 0.9 * direct_cost(conv)? {
        return None;
    }
    let w = conv.weights.as_f32()?;
    let u = if plan.runtime_weights {
        pack_taps(w, conv.m, conv.c)
    } else {
        transform_weights(plan.variant, w, conv.m, conv.c)
    };
    let u = Tensor::from_f32(vec![u.len()], u).ok()?;
    let bias = match conv.bias {
        Some(b) => b.as_f32()?.to_vec(),
        None => vec![0.0; conv.m],
    };
    if bias.len() != conv.m {
        return None;
    }
    let bias = Tensor::from_f32(vec![conv.m], bias).ok()?;
    let kernel = plan.kernel(node.name, conv, Arc::new(u), Arc::new(bias));
    let mut args = vec![
        Arg::Input(0),
        Arg::Const,
        Arg::Const,
        Arg::Output(0),
        Arg::Scratch(0),
    ];
    args.extend(conv.epilogue.args());
    Some(Lowered {
        kernels: vec![LoweredKernel { kernel, args }],
        scratch: vec![(DType::F32, plan.slots * plan.slot())],
    })
}

/// Vector instructions per second one core retires in these kernels, and bytes per second
/// it streams from memory (both measured on ResNet-18's layers with `fovea bench
/// --profile`); the cost model's units.
const INSTRUCTIONS_PER_SECOND: f64 = 11.8e9;
const BYTES_PER_SECOND: f64 = 9e9;

/// Seconds of weight traffic for `bytes` of weights read `times` times: free when they
/// stay in L2.
fn weight_seconds(bytes: usize, times: usize) -> f64 {
    if bytes <= CACHED_WEIGHT_BYTES {
        0.0
    } else {
        (bytes * times) as f64 / BYTES_PER_SECOND
    }
}

/// The direct kernel's modelled seconds for `conv` (4-pixel tiles: per input channel and
/// tap 2 weight loads, 4 broadcasts and 8 FMAs per block of 8 output channels).
fn direct_cost(conv: &DirectConv<'_>) -> Option<f64> {
    let [rows, cols] = conv.axes else {
        return None;
    };
    let tiles = (conv.n * rows.output * cols.output.div_ceil(4)) as f64;
    let work = tiles * 9.0 * 14.0 * conv.c as f64 * (conv.m / WIDTH) as f64;
    Some(work / INSTRUCTIONS_PER_SECOND + weight_seconds(9 * conv.c * conv.m * 4, 1))
}

/// `U[block][ξ][c][j] = (G g Gᵀ)[ξ]` of output channel `block·8 + j` and input channel
/// `c`, computed in `f64`.
fn transform_weights(variant: Variant, w: &[f32], m: usize, c: usize) -> Vec<f32> {
    use rayon::prelude::*;
    let (g_matrix, input) = (variant.g(), variant.input());
    let points = variant.points();
    let mut u = vec![0f32; points * m * c];
    // One block of 8 output channels per task; within it, channel by channel, so that the
    // writes advance through the block's 36 point rows together (in cache) rather than
    // one output channel at a time across all of them.
    u.par_chunks_mut(points * c * WIDTH)
        .enumerate()
        .for_each(|(block, u)| {
            for ci in 0..c {
                for j in 0..WIDTH {
                    let oc = block * WIDTH + j;
                    let g = &w[(oc * c + ci) * 9..][..9];
                    // G g: input × 3, on the stack.
                    let mut gg = [[0f64; 3]; 6];
                    for (row, gr) in gg.iter_mut().zip(g_matrix) {
                        for (b, out) in row.iter_mut().enumerate() {
                            *out = (0..3).map(|a| gr[a] * f64::from(g[a * 3 + b])).sum();
                        }
                    }
                    for (k, row) in gg[..input].iter().enumerate() {
                        for (l, gl) in g_matrix.iter().enumerate() {
                            let value: f64 = (0..3).map(|b| row[b] * gl[b]).sum();
                            u[((k * input + l) * c + ci) * WIDTH + j] = value as f32;
                        }
                    }
                }
            }
        });
    u
}

/// The direct taps packed `[block of 8 output channels][C][9][8]` for weights transformed
/// at run time.
fn pack_taps(w: &[f32], m: usize, c: usize) -> Vec<f32> {
    let mut packed = vec![0f32; m * c * 9];
    for oc in 0..m {
        let (block, j) = (oc / WIDTH, oc % WIDTH);
        for ci in 0..c {
            for tap in 0..9 {
                packed[((block * c + ci) * 9 + tap) * WIDTH + j] = w[(oc * c + ci) * 9 + tap];
            }
        }
    }
    packed
}

/// Elements between two points' transformed inputs (`c` channels × `tiles`), padded by a
/// cache line so that the 16–36 stores of one tile group's points never share their low
/// 12 address bits (4K aliasing stalls the loads that follow them).
fn point_stride(c: usize, tiles: usize) -> usize {
    c * tiles + 16
}

/// The geometry and work split of one Winograd convolution.
#[derive(Debug)]
struct Plan {
    variant: Variant,
    n: usize,
    c: usize,
    m: usize,
    /// Input rows and columns.
    h: usize,
    w: usize,
    /// Output rows and columns.
    oh: usize,
    ow: usize,
    /// Padding before the first row and column.
    pad_top: usize,
    pad_left: usize,
    /// Tile rows and columns (`⌈out / tile side⌉`).
    tile_rows: usize,
    tile_cols: usize,
    /// Tile rows per band (a divisor of `tile_rows`).
    band_rows: usize,
    /// Tiles per band, rounded up to a multiple of 4 (the last group repeats a tile).
    tiles: usize,
    /// Groups of output-channel blocks (parallel iterations per band).
    oc_groups: usize,
    /// Scratch slots: one per thread, each running an equal share of the tasks in turn
    /// (so a thread's scratch stays in its cache from one task to the next).
    slots: usize,
    /// Length of a transformed row in the scratch (zero-padded, a multiple of 4).
    row_len: usize,
    /// Whether the weights are transformed at run time, per block of output channels, into
    /// the slot at [`Plan::u_at`] (the kernel then reads the 9 direct taps per channel pair
    /// instead of 16 or 36 points: for layers whose transformed weights would be streamed
    /// from memory, this is less traffic than the transform costs).
    runtime_weights: bool,
}

impl Plan {
    fn new(conv: &DirectConv<'_>, variant: Variant, threads: usize) -> Option<Plan> {
        let [rows, cols] = conv.axes else {
            return None;
        };
        let fits = |a: &Axis| a.kernel == 3 && a.stride == 1 && a.dilation == 1 && a.pad <= 2;
        if !fits(rows) || !fits(cols) || conv.group != 1 || conv.c == 0 || conv.n == 0 {
            return None;
        }
        if !conv.m.is_multiple_of(WIDTH) || conv.weights.shape() != [conv.m, conv.c, 3, 3] {
            return None;
        }
        let (h, w, oh, ow) = (rows.input, cols.input, rows.output, cols.output);
        let out = variant.out();
        if w < 4 || ow < 4 || oh == 0 {
            return None;
        }
        let (tile_rows, tile_cols) = (oh.div_ceil(out), ow.div_ceil(out));
        let points = variant.points();
        let padded = |band_rows: usize| (band_rows * tile_cols).next_multiple_of(GROUP);
        let fits_band = |band_rows: usize| {
            tile_rows.is_multiple_of(band_rows)
                && padded(band_rows) / GROUP <= MAX_GROUPS
                && points * conv.c * padded(band_rows) * 4 <= MAX_BAND_BYTES
        };
        // Output-channel groups for bands of `band_rows`: the fewest that give every thread
        // an iteration, keeping at least 4 blocks per group (each group repeats the input
        // transform).
        let blocks = conv.m / WIDTH;
        let bands = |band_rows: usize| conv.n * tile_rows / band_rows;
        let oc_groups = |band_rows: usize| {
            (1..=blocks)
                .filter(|g| blocks.is_multiple_of(*g) && blocks / g >= 4)
                .find(|g| bands(band_rows) * g >= threads)
                .unwrap_or(1)
        };
        // The products of the busiest thread, in (padded) tiles × channel blocks: tiles
        // padded to groups of 4 are computed too (14 tiles a row pad to 16: 1/8 more), and
        // a thread with one more task than another sets the pace.
        let span = |band_rows: usize| {
            let g = oc_groups(band_rows);
            (bands(band_rows) * g).div_ceil(threads.max(1)) * padded(band_rows) * (blocks / g)
        };
        // Weights that stay in L2: small bands (parallel iterations), at least a group of
        // tiles each, the least busy thread's work first (ResNet-18's 56×56 layers: bands of
        // 2 rows of 14 tiles, no padding, 1.56 → 1.34 ms on one thread). Weights streamed
        // from memory: the largest band, to read them once.
        let band_rows = if points * conv.c * conv.m * 4 <= CACHED_WEIGHT_BYTES {
            (1..=tile_rows)
                .filter(|&r| fits_band(r) && r * tile_cols >= GROUP)
                .min_by_key(|&r| (span(r), r))
        } else {
            (1..=tile_rows).rev().find(|&r| fits_band(r))
        };
        let band_rows = band_rows.or_else(|| (1..=tile_rows).find(|&r| fits_band(r)))?;
        let tiles = padded(band_rows);
        let oc_groups = oc_groups(band_rows);
        let bands = bands(band_rows);
        let row_len = out * tile_cols + 4;
        if cols.pad + w > row_len {
            return None;
        }
        let slots = threads.clamp(1, bands * oc_groups);
        let plan = Plan {
            variant,
            n: conv.n,
            c: conv.c,
            m: conv.m,
            h,
            w,
            oh,
            ow,
            pad_top: rows.pad,
            pad_left: cols.pad,
            tile_rows,
            tile_cols,
            band_rows,
            tiles,
            oc_groups,
            slots,
            row_len,
            runtime_weights: false,
        };
        Some(plan.choose_weights())
    }

    fn bands(&self) -> usize {
        self.n * self.tile_rows / self.band_rows
    }

    /// Tasks: (band, channel group) pairs.
    fn tasks(&self) -> usize {
        self.bands() * self.oc_groups
    }

    /// Tasks per slot (the last slot may have fewer).
    fn tasks_per_slot(&self) -> usize {
        self.tasks().div_ceil(self.slots)
    }

    fn blocks_per_group(&self) -> usize {
        self.m / WIDTH / self.oc_groups
    }

    /// Elements of one set of transformed rows.
    fn rows_len(&self) -> usize {
        self.band_rows * self.variant.input() * self.row_len
    }

    fn groups(&self) -> usize {
        self.tiles / GROUP
    }

    /// Modelled seconds: the products over padded tiles (per point and input channel, the
    /// direct kernel's 14 instructions per 4 tiles × 8 channels), both transforms, and the
    /// transformed weights read once per band when they do not stay in L2.
    fn cost(&self) -> f64 {
        let (c, blocks) = (self.c as f64, (self.m / WIDTH) as f64);
        let (input, output) = self.variant.transform_cost();
        let tiles = (self.bands() * self.tiles) as f64;
        let work = tiles
            * (self.variant.points() as f64 * 14.0 / 4.0 * c * blocks
                + input * c * self.oc_groups as f64
                + output * blocks);
        work / INSTRUCTIONS_PER_SECOND + self.weight_cost(self.runtime_weights)
    }

    /// Modelled seconds of the weights: streaming the transformed ones (when they do not
    /// stay in L2), or reading the direct ones and transforming each block per band.
    fn weight_cost(&self, runtime: bool) -> f64 {
        let (c, m, bands) = (self.c, self.m, self.bands());
        if runtime {
            let transform = (bands * m / WIDTH * c) as f64 * self.variant.weight_transform_cost();
            transform / INSTRUCTIONS_PER_SECOND + weight_seconds(9 * c * m * 4, bands)
        } else {
            weight_seconds(self.variant.points() * c * m * 4, bands)
        }
    }

    /// Transforms the weights at run time where the model says it is cheaper.
    fn choose_weights(mut self) -> Plan {
        self.runtime_weights = self.weight_cost(true) < self.weight_cost(false);
        self
    }

    // A slot's layout, in elements: two sets of transformed rows (one channel's are written
    // while the previous channel's are read, see `Plan::task`), `V`, `M`, a 4-element edge
    // row, then (run-time weights only) the block's `U`.

    /// Where `V` starts in a slot.
    fn v_at(&self) -> usize {
        2 * self.rows_len()
    }

    /// Where `M` starts.
    fn m_at(&self) -> usize {
        self.v_at() + self.variant.points() * point_stride(self.c, self.tiles)
    }

    /// Where the row of a tile's partial output columns starts.
    fn edge_at(&self) -> usize {
        self.m_at() + self.variant.points() * self.tiles * WIDTH
    }

    /// Where the run-time transformed weights start.
    fn u_at(&self) -> usize {
        (self.edge_at() + 4).next_multiple_of(16)
    }

    /// Elements of one slot.
    fn slot(&self) -> usize {
        let u = if self.runtime_weights {
            self.variant.points() * self.u_stride()
        } else {
            0
        };
        (self.u_at() + u).next_multiple_of(16)
    }

    /// Elements between two points' transformed weights of one block: `C × 8`, padded off
    /// 4 KiB multiples in the slot (the run-time transform stores all points of a channel
    /// together).
    fn u_stride(&self) -> usize {
        if self.runtime_weights {
            point_stride(self.c, WIDTH)
        } else {
            self.c * WIDTH
        }
    }

    fn kernel(&self, name: &str, conv: &DirectConv<'_>, u: Arc<Tensor>, b: Arc<Tensor>) -> Kernel {
        let mut k = KernelBuilder::new(name);
        let side = self.variant.out();
        k.set_schedule(format!(
            "winograd F({side}x{side},3x3), bands of {} x {} tiles ({} with padding), GEMM \
             tile 4 tiles x {WIDTH} channels (8 accumulators), {} bands x {} channel groups \
             on {} threads, weights transformed {}",
            self.band_rows,
            self.tile_cols,
            self.tiles,
            self.bands(),
            self.oc_groups,
            self.slots,
            if self.runtime_weights {
                "at run time per block"
            } else {
                "at compile time"
            }
        ));
        let x = k.buffer(
            "x",
            DType::F32,
            self.n * self.c * self.h * self.w,
            BufferKind::Input,
        );
        let u_name = if self.runtime_weights {
            "w_taps"
        } else {
            "u_winograd"
        };
        let u = k.buffer(u_name, DType::F32, u.len(), BufferKind::Const(u));
        let b = k.buffer("b", DType::F32, self.m, BufferKind::Const(b));
        let y = k.buffer(
            "y",
            DType::F32,
            self.n * self.m * self.oh * self.ow,
            BufferKind::Output,
        );
        let s = k.buffer(
            "winograd_scratch",
            DType::F32,
            self.slots * self.slot(),
            BufferKind::Output,
        );
        let extras = conv.epilogue.declare(&mut k);
        k.for_loop(0, self.slots as i64, 1, LoopKind::Parallel, |k, p| {
            let slot = Expr::Local(k.declare(Ty::I64, times(p.clone(), self.slot())));
            // The transformed rows' padding stays zero: rows are written inside it only.
            k.for_loop(0, self.v_at() as i64, 4, LoopKind::Serial, |k, i| {
                k.store(s, sum([slot.clone(), i]), Expr::Float(0.0).splat());
            });
            let per = self.tasks_per_slot();
            k.range(per, |k, t| {
                let task = sum([times(p.clone(), per), t]);
                let task = Expr::Local(k.declare(Ty::I64, task));
                let run = |k: &mut KernelBuilder| {
                    let task = task.clone().clamp(0, self.tasks() as i64 - 1);
                    self.task(k, conv, &extras, [x, u, b, y, s], &slot, task);
                };
                if per * self.slots == self.tasks() {
                    run(k);
                } else {
                    let real = task.clone().cmp(CmpOp::Lt, Expr::Int(self.tasks() as i64));
                    k.if_else(real, run, |_| {});
                }
            });
        });
        k.finish()
    }

    /// One task: the input transform of its band, then its channel blocks' products and
    /// outputs.
    fn task(
        &self,
        k: &mut KernelBuilder,
        conv: &DirectConv<'_>,
        extras: &[BufId],
        [x, u, b, y, s]: [BufId; 5],
        slot: &Expr,
        task: Expr,
    ) {
        let (band, group) = split(task, self.bands(), self.oc_groups);
        let group = Expr::Local(k.declare(Ty::I64, group));
        let (batch, band) = split(band, self.n, self.tile_rows / self.band_rows);
        let batch = Expr::Local(k.declare(Ty::I64, batch));
        let band = Expr::Local(k.declare(Ty::I64, band));
        let f = Frame {
            x,
            u,
            b,
            y,
            s,
            extras: extras.to_vec(),
            x_base: Expr::Local(k.declare(Ty::I64, times(batch.clone(), self.c * self.h * self.w))),
            y_base: Expr::Local(k.declare(Ty::I64, times(batch, self.m * self.oh * self.ow))),
            band,
            slot: slot.clone(),
        };
        // The input transform is pipelined over channel pairs: a channel's rows are
        // transformed into one set while the previous channel's tiles are read from the
        // other, so the tile loads (at other offsets than the row stores) never wait for
        // stores still in flight.
        let last = self.c as i64 - 1;
        self.transform_rows(k, &f, &Expr::Int(0), 0);
        k.for_loop(0, (self.c / 2 * 2) as i64, 2, LoopKind::Serial, |k, c| {
            let c = Expr::Local(k.declare(Ty::I64, c));
            let next = Expr::Local(k.declare(Ty::I64, plus(c.clone(), 1)));
            self.transform_rows(k, &f, &next, 1);
            self.transform_tiles(k, &f, &c, 0);
            // Past the last channel this recomputes it into a set nobody reads.
            let after = Expr::Local(k.declare(Ty::I64, plus(c, 2).clamp(0, last)));
            self.transform_rows(k, &f, &after, 0);
            self.transform_tiles(k, &f, &next, 1);
        });
        if self.c % 2 == 1 {
            self.transform_tiles(k, &f, &Expr::Int(last), 0);
        }
        k.range(self.blocks_per_group(), |k, j| {
            let block = sum([times(group.clone(), self.blocks_per_group()), j]);
            let block = Expr::Local(k.declare(Ty::I64, block));
            if self.runtime_weights {
                self.weights_at_run_time(k, &f, &block);
            }
            self.products(k, &f, &block);
            self.outputs(k, &f, conv, &block);
        });
    }

    /// `Bᵀ d` along columns for input channel `ci`: each tile row's input rows into as
    /// many transformed rows of the scratch, 4 columns at a time (the last 4 may overlap).
    fn transform_rows(&self, k: &mut KernelBuilder, f: &Frame, ci: &Expr, set: usize) {
        let (out, input) = (self.variant.out(), self.variant.input());
        let plane = self.h * self.w;
        let x_channel = sum([f.x_base.clone(), times(ci.clone(), plane)]);
        let x_channel = Expr::Local(k.declare(Ty::I64, x_channel));
        // Bands whose every input row lies in the input need no checks.
        let band_count = self.tile_rows / self.band_rows;
        let first_row = |band: usize| (out * self.band_rows * band) as i64 - self.pad_top as i64;
        let interior: Vec<usize> = (0..band_count)
            .filter(|&b| {
                first_row(b) >= 0
                    && first_row(b) + ((out * (self.band_rows - 1) + input) as i64) <= self.h as i64
            })
            .collect();
        let emit = |k: &mut KernelBuilder, band: &Expr, checked: bool| {
            k.range(self.band_rows, |k, r| {
                // Input row of the tile row's first transform row.
                let top = sum([
                    times(band.clone(), out * self.band_rows),
                    times(r.clone(), out),
                    Expr::Int(-(self.pad_top as i64)),
                ]);
                let top = Expr::Local(k.declare(Ty::I64, top));
                let rows: Vec<(Expr, Option<Expr>)> = (0..input)
                    .map(|i| {
                        let iy = plus(top.clone(), i as i64);
                        if checked {
                            let iy = Expr::Local(k.declare(Ty::I64, iy));
                            let clamped = iy.clone().clamp(0, self.h as i64 - 1);
                            let clamped = Expr::Local(k.declare(Ty::I64, clamped));
                            let valid = clamped.clone().cmp(CmpOp::Eq, iy);
                            let at = sum([x_channel.clone(), times(clamped, self.w)]);
                            (Expr::Local(k.declare(Ty::I64, at)), Some(valid))
                        } else {
                            let at = sum([x_channel.clone(), times(iy, self.w)]);
                            (Expr::Local(k.declare(Ty::I64, at)), None)
                        }
                    })
                    .collect();
                let out_row = sum([
                    f.slot.clone(),
                    Expr::Int((set * self.rows_len()) as i64),
                    times(r, input * self.row_len),
                    Expr::Int(self.pad_left as i64),
                ]);
                let out_row = Expr::Local(k.declare(Ty::I64, out_row));
                let columns = |k: &mut KernelBuilder, col: Expr| {
                    // One address for the column's loads (unchecked rows are `w` apart)
                    // and one for its stores; the rest are constant offsets.
                    let x_col = (!checked).then(|| {
                        let at = sum([rows[0].0.clone(), col.clone()]);
                        Expr::Local(k.declare(Ty::I64, at))
                    });
                    let d = rows
                        .iter()
                        .enumerate()
                        .map(|(i, (at, valid))| {
                            let at = match &x_col {
                                Some(x_col) => plus(x_col.clone(), (i * self.w) as i64),
                                None => sum([at.clone(), col.clone()]),
                            };
                            let v = Expr::load4(f.x, at);
                            match valid {
                                Some(valid) => valid.clone().select(v, Expr::Float(0.0).splat()),
                                None => v,
                            }
                        })
                        .collect();
                    let points = self.variant.input_points(k, d);
                    let out_col = sum([out_row.clone(), col]);
                    let out_col = Expr::Local(k.declare(Ty::I64, out_col));
                    for (t, value) in points.into_iter().enumerate() {
                        let at = plus(out_col.clone(), (t * self.row_len) as i64);
                        k.store(f.s, at, value);
                    }
                };
                let full = self.w / 4 * 4;
                k.for_loop(0, full as i64, 4, LoopKind::Serial, |k, col| {
                    columns(k, col)
                });
                if full < self.w {
                    columns(k, Expr::Int(self.w as i64 - 4));
                }
            });
        };
        match (interior.first(), interior.last()) {
            (Some(&lo), Some(&hi)) if interior.len() == band_count => {
                let band = f.band.clone().clamp(lo as i64, hi as i64);
                let band = Expr::Local(k.declare(Ty::I64, band));
                emit(k, &band, false);
            }
            (Some(&lo), Some(&hi)) => {
                let clamped = f.band.clone().clamp(lo as i64, hi as i64);
                let is_interior = clamped.clone().cmp(CmpOp::Eq, f.band.clone());
                k.if_else(
                    is_interior,
                    |k| {
                        let band = Expr::Local(k.declare(Ty::I64, clamped));
                        emit(k, &band, false);
                    },
                    |k| emit(k, &f.band, true),
                );
            }
            _ => emit(k, &f.band, true),
        }
    }

    /// `· B` along rows for input channel `ci`: each group of 4 tiles transposed so that
    /// lanes are tiles, combined, and stored as `V[ξ][group][ci][4]`.
    fn transform_tiles(&self, k: &mut KernelBuilder, f: &Frame, ci: &Expr, set: usize) {
        let (out, input) = (self.variant.out(), self.variant.input());
        let real = self.band_rows * self.tile_cols;
        let v_ci = sum([
            f.slot.clone(),
            Expr::Int(self.v_at() as i64),
            times(ci.clone(), GROUP),
        ]);
        let v_ci = Expr::Local(k.declare(Ty::I64, v_ci));
        for g in 0..self.groups() {
            // The scratch offset of each lane's tile (the last real tile repeats).
            let starts: [usize; 4] = [0, 1, 2, 3].map(|j| {
                let t = (g * GROUP + j).min(real - 1);
                let (r, tx) = (t / self.tile_cols, t % self.tile_cols);
                r * input * self.row_len + out * tx
            });
            for row in 0..input {
                let load = |offset: usize| {
                    [0, 1, 2, 3].map(|j| {
                        let at = starts[j] + row * self.row_len + offset;
                        let at = set * self.rows_len() + at;
                        Expr::load4(f.s, plus(f.slot.clone(), at as i64))
                    })
                };
                // Lane j of column e: element e of tile j's row (F4 needs 6: two loads).
                let mut d = transpose4(k, &load(0), 0..4);
                if input > 4 {
                    d.extend(transpose4(k, &load(2), 2..4));
                }
                for (l, value) in self.variant.input_points(k, d).into_iter().enumerate() {
                    let point = row * input + l;
                    let at = point * point_stride(self.c, self.tiles) + g * self.c * GROUP;
                    let at = at as i64;
                    k.store(f.s, plus(v_ci.clone(), at), value);
                }
            }
        }
    }

    /// `U = G g Gᵀ` of output-channel block `block` at run time, from the direct taps packed
    /// `[block][C][9][8]`, into the slot's `U[point][C][8]`: per input channel, two lanes of 4
    /// output channels.
    fn weights_at_run_time(&self, k: &mut KernelBuilder, f: &Frame, block: &Expr) {
        let (c, input) = (self.c, self.variant.input());
        let u_at = plus(f.slot.clone(), self.u_at() as i64);
        let u_at = Expr::Local(k.declare(Ty::I64, u_at));
        let w_block = Expr::Local(k.declare(Ty::I64, times(block.clone(), c * 9 * WIDTH)));
        k.range(c, |k, ci| {
            let w_at = sum([w_block.clone(), times(ci.clone(), 9 * WIDTH)]);
            let w_at = Expr::Local(k.declare(Ty::I64, w_at));
            let u_ci = sum([u_at.clone(), times(ci, WIDTH)]);
            let u_ci = Expr::Local(k.declare(Ty::I64, u_ci));
            for v in 0..WIDTH / 4 {
                let tap = |a: usize, b: usize| {
                    Expr::load4(
                        f.u,
                        plus(w_at.clone(), ((a * 3 + b) * WIDTH + 4 * v) as i64),
                    )
                };
                // G g per kernel column, then (G g) Gᵀ per transformed row.
                let columns: Vec<Vec<Expr>> = (0..3)
                    .map(|b| {
                        self.variant
                            .weight_points(k, [tap(0, b), tap(1, b), tap(2, b)])
                            .into_iter()
                            .map(|e| Expr::Local(k.declare(Ty::F32x4, e)))
                            .collect()
                    })
                    .collect();
                for kk in 0..input {
                    let row = [&columns[0], &columns[1], &columns[2]].map(|col| col[kk].clone());
                    for (l, value) in self.variant.weight_points(k, row).into_iter().enumerate() {
                        let at = ((kk * input + l) * self.u_stride() + 4 * v) as i64;
                        k.store(f.s, plus(u_ci.clone(), at), value);
                    }
                }
            }
        });
    }

    /// The products for output-channel block `block`: for each point and group of 4 tiles,
    /// `Σ_c V[ξ][group][c][tile] · U[block][ξ][c][0..8]` into `M[ξ][tile][0..8]`.
    fn products(&self, k: &mut KernelBuilder, f: &Frame, block: &Expr) {
        let c = self.c;
        let points = self.variant.points();
        // The block's transformed weights: in the constant, or in the slot.
        let (u_buf, u_block) = if self.runtime_weights {
            (f.s, plus(f.slot.clone(), self.u_at() as i64))
        } else {
            (f.u, times(block.clone(), points * c * WIDTH))
        };
        k.range(points, |k, point| {
            let u_at = sum([u_block.clone(), times(point.clone(), self.u_stride())]);
            let u_at = Expr::Local(k.declare(Ty::I64, u_at));
            let v_at = sum([
                f.slot.clone(),
                Expr::Int(self.v_at() as i64),
                times(point.clone(), point_stride(c, self.tiles)),
            ]);
            let v_at = Expr::Local(k.declare(Ty::I64, v_at));
            let m_at = sum([
                f.slot.clone(),
                Expr::Int(self.m_at() as i64),
                times(point, self.tiles * WIDTH),
            ]);
            let m_at = Expr::Local(k.declare(Ty::I64, m_at));
            k.range(self.groups(), |k, g| {
                let zero = || Expr::Float(0.0).splat();
                let acc: Vec<[LocalId; 2]> = (0..GROUP)
                    .map(|_| [k.declare(Ty::F32x4, zero()), k.declare(Ty::F32x4, zero())])
                    .collect();
                let v_group = sum([v_at.clone(), times(g.clone(), c * GROUP)]);
                let v_group = Expr::Local(k.declare(Ty::I64, v_group));
                let mut unroll = 4.min(c);
                while !c.is_multiple_of(unroll) {
                    unroll -= 1;
                }
                k.for_loop(0, c as i64, unroll as i64, LoopKind::Serial, |k, ci| {
                    // One address per trip; the unrolled channels are constant offsets.
                    let u_row = sum([u_at.clone(), times(ci.clone(), WIDTH)]);
                    let u_row = Expr::Local(k.declare(Ty::I64, u_row));
                    let v_row = sum([v_group.clone(), times(ci, GROUP)]);
                    let v_row = Expr::Local(k.declare(Ty::I64, v_row));
                    for u in 0..unroll {
                        let w = [0, 4].map(|o| {
                            let at = plus(u_row.clone(), (u * WIDTH + o) as i64);
                            k.declare(Ty::F32x4, Expr::load4(u_buf, at))
                        });
                        for (j, pair) in acc.iter().enumerate() {
                            let at = plus(v_row.clone(), (u * GROUP + j) as i64);
                            let xs = k.declare(Ty::F32x4, Expr::load(f.s, at).splat());
                            for (&a, &wv) in pair.iter().zip(&w) {
                                k.assign(a, Expr::Local(xs).fma(Expr::Local(wv), Expr::Local(a)));
                            }
                        }
                    }
                });
                let out = sum([m_at.clone(), times(g, GROUP * WIDTH)]);
                let out = Expr::Local(k.declare(Ty::I64, out));
                for (j, pair) in acc.iter().enumerate() {
                    for (v, &a) in pair.iter().enumerate() {
                        let at = plus(out.clone(), (j * WIDTH + 4 * v) as i64);
                        k.store(f.s, at, Expr::Local(a));
                    }
                }
            });
        });
    }

    /// `Aᵀ M A` plus bias for every tile of the band and output-channel block `block`,
    /// four output columns at a time, through the epilogue into the output.
    fn outputs(&self, k: &mut KernelBuilder, f: &Frame, conv: &DirectConv<'_>, block: &Expr) {
        let out = self.variant.out();
        let per_block = 4 / out;
        let full = self.ow / 4;
        k.range(self.band_rows, |k, r| {
            let oy = sum([
                times(f.band.clone(), out * self.band_rows),
                times(r.clone(), out),
            ]);
            let oy = Expr::Local(k.declare(Ty::I64, oy));
            let first = Expr::Local(k.declare(Ty::I64, times(r, self.tile_cols)));
            k.range(full, |k, cb| {
                let tile = sum([first.clone(), times(cb.clone(), per_block)]);
                let tiles = (0..per_block)
                    .map(|i| Some(plus(tile.clone(), i as i64)))
                    .collect();
                self.output_columns(k, f, conv, block, &oy, tiles, &times(cb, 4), 4);
            });
            if full * 4 < self.ow {
                let tx = full * per_block;
                let tiles = (0..per_block)
                    .map(|i| {
                        (tx + i < self.tile_cols).then(|| plus(first.clone(), (tx + i) as i64))
                    })
                    .collect();
                let ox = Expr::Int((4 * full) as i64);
                self.output_columns(k, f, conv, block, &oy, tiles, &ox, self.ow - 4 * full);
            }
        });
    }

    /// Four output columns from `ox` of the tile row starting at output row `oy`: from
    /// `tiles` (their indices in the band; `None` past the last tile), of which `columns`
    /// lie inside the output.
    #[allow(clippy::too_many_arguments)]
    fn output_columns(
        &self,
        k: &mut KernelBuilder,
        f: &Frame,
        conv: &DirectConv<'_>,
        block: &Expr,
        oy: &Expr,
        tiles: Vec<Option<Expr>>,
        ox: &Expr,
        columns: usize,
    ) {
        let (out, input) = (self.variant.out(), self.variant.input());
        let out_plane = self.oh * self.ow;
        let m_tiles: Vec<Option<Expr>> = tiles
            .into_iter()
            .map(|t| {
                t.map(|t| {
                    let at = sum([
                        f.slot.clone(),
                        Expr::Int(self.m_at() as i64),
                        times(t, WIDTH),
                    ]);
                    Expr::Local(k.declare(Ty::I64, at))
                })
            })
            .collect();
        // Rows the last tile row may have below the output.
        let spare = out * self.tile_rows - self.oh;
        for v in 0..WIDTH / 4 {
            let channel = plus(times(block.clone(), WIDTH), 4 * v as i64);
            let channel = Expr::Local(k.declare(Ty::I64, channel));
            let bias = Expr::Local(k.declare(Ty::F32x4, Expr::load4(f.b, channel.clone())));
            // Per output row, the 4 columns' values (lanes: 4 output channels).
            let mut rows: Vec<Vec<Expr>> = vec![Vec::new(); out];
            for m_tile in &m_tiles {
                let Some(m_tile) = m_tile else {
                    for row in &mut rows {
                        row.extend((0..out).map(|_| Expr::Float(0.0).splat()));
                    }
                    continue;
                };
                // Aᵀ along the rows of M (per column), then along the columns (per row).
                let mut half: Vec<Vec<Expr>> = vec![Vec::new(); out];
                for l in 0..input {
                    let m = (0..input)
                        .map(|kk| {
                            let at = ((kk * input + l) * self.tiles * WIDTH + 4 * v) as i64;
                            Expr::load4(f.s, plus(m_tile.clone(), at))
                        })
                        .collect();
                    for (i, value) in self.variant.output_points(k, m).into_iter().enumerate() {
                        half[i].push(Expr::Local(k.declare(Ty::F32x4, value)));
                    }
                }
                for (i, row) in half.into_iter().enumerate() {
                    for value in self.variant.output_points(k, row) {
                        rows[i].push(Expr::Local(k.declare(Ty::F32x4, value.add(bias.clone()))));
                    }
                }
            }
            for (i, row) in rows.into_iter().enumerate() {
                let y_row = plus(oy.clone(), i as i64);
                let may_miss = i >= out - spare;
                let oy_row = if may_miss {
                    y_row.clone().clamp(0, self.oh as i64 - 1)
                } else {
                    y_row.clone()
                };
                let row: [Expr; 4] = row.try_into().expect("four columns per row");
                let store_row = |k: &mut KernelBuilder| {
                    let at = sum([
                        f.y_base.clone(),
                        times(channel.clone(), out_plane),
                        times(oy_row.clone(), self.ow),
                        ox.clone(),
                    ]);
                    let at = Expr::Local(k.declare(Ty::I64, at));
                    for (lane, value) in transpose4(k, &row, 0..4).into_iter().enumerate() {
                        let index = plus(at.clone(), (lane * out_plane) as i64);
                        let channel = plus(channel.clone(), lane as i64);
                        if columns == 4 {
                            let store_at = StoreAt { index, channel };
                            conv.epilogue.store(k, &f.extras, f.y, &store_at, value, 4);
                            continue;
                        }
                        let edge = plus(f.slot.clone(), self.edge_at() as i64);
                        let edge = Expr::Local(k.declare(Ty::I64, edge));
                        k.store(f.s, edge.clone(), value);
                        for j in 0..columns {
                            let value = Expr::load(f.s, plus(edge.clone(), j as i64));
                            let store_at = StoreAt {
                                index: plus(index.clone(), j as i64),
                                channel: channel.clone(),
                            };
                            conv.epilogue.store(k, &f.extras, f.y, &store_at, value, 1);
                        }
                    }
                };
                if may_miss {
                    let inside = y_row.clone().cmp(CmpOp::Lt, Expr::Int(self.oh as i64));
                    k.if_else(inside, store_row, |_| {});
                } else {
                    store_row(k);
                }
            }
        }
    }
}

/// The buffers and position of one parallel iteration.
struct Frame {
    x: BufId,
    u: BufId,
    b: BufId,
    y: BufId,
    s: BufId,
    extras: Vec<BufId>,
    /// First element of the iteration's batch in the input and the output.
    x_base: Expr,
    y_base: Expr,
    /// The band (of the batch).
    band: Expr,
    /// First element of the iteration's scratch slot.
    slot: Expr,
}

#[cfg(test)]
mod tests {
    use super::{G2, G4};

    /// `Bᵀ` and `Aᵀ` of F(2, 3) and F(4, 3), as the kernels' formulas compute them.
    const BT2: [[f64; 4]; 4] = [
        [1.0, 0.0, -1.0, 0.0],
        [0.0, 1.0, 1.0, 0.0],
        [0.0, -1.0, 1.0, 0.0],
        [0.0, 1.0, 0.0, -1.0],
    ];
    const AT2: [[f64; 4]; 2] = [[1.0, 0.5, 0.5, 0.0], [0.0, 0.5, -0.5, -1.0]];
    const BT4: [[f64; 6]; 6] = [
        [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
        [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
        [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
        [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
        [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
        [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
    ];
    const AT4: [[f64; 6]; 4] = [
        [0.25, -1.0 / 6.0, -1.0 / 6.0, 1.0 / 24.0, 1.0 / 24.0, 0.0],
        [0.0, -1.0 / 6.0, 1.0 / 6.0, 1.0 / 12.0, -1.0 / 12.0, 0.0],
        [0.0, -1.0 / 6.0, -1.0 / 6.0, 1.0 / 6.0, 1.0 / 6.0, 0.0],
        [0.0, -1.0 / 6.0, 1.0 / 6.0, 1.0 / 3.0, -1.0 / 3.0, 1.0],
    ];

    /// `Aᵀ [(G g) ⊙ (Bᵀ d)]` against the correlation of `d` with `g`.
    fn check(g_matrix: &[[f64; 3]], bt: &[&[f64]], at: &[&[f64]]) {
        let d = [0.3, -1.2, 2.5, 0.7, -0.4, 1.9];
        let g = [0.5, -0.25, 1.5];
        let n = bt.len();
        let gg: Vec<f64> = g_matrix
            .iter()
            .map(|r| (0..3).map(|a| r[a] * g[a]).sum())
            .collect();
        let bd: Vec<f64> = bt
            .iter()
            .map(|r| (0..n).map(|i| r[i] * d[i]).sum())
            .collect();
        for (o, row) in at.iter().enumerate() {
            let y: f64 = (0..n).map(|i| row[i] * gg[i] * bd[i]).sum();
            let direct: f64 = (0..3).map(|a| d[o + a] * g[a]).sum();
            assert!((y - direct).abs() < 1e-12, "output {o}: {y} vs {direct}");
        }
    }

    #[test]
    fn the_matrices_compute_a_correlation() {
        check(
            &G2,
            &BT2.each_ref().map(|r| &r[..]),
            &AT2.each_ref().map(|r| &r[..]),
        );
        check(
            &G4,
            &BT4.each_ref().map(|r| &r[..]),
            &AT4.each_ref().map(|r| &r[..]),
        );
    }
}
