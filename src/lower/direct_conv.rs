//! Register-blocked direct convolution (2-D), reading the unpadded input.
//!
//! The output is computed in *tiles* of 4 consecutive output pixels of one row × `4·Q`
//! output channels, held in `4·Q` `f32x4` accumulators (one per pixel and channel vector;
//! `Q` = 3 or 2, so 12 or 8 of the 16 xmm registers). For every input channel and kernel
//! tap the tile loads `Q` vectors of packed weights and broadcasts 4 input values, then
//! issues `4·Q` FMAs: every value loaded is used `Q` or 4 times. The weights are repacked
//! once, at compile time, as `[M / 4Q][C / group][KH][KW][4Q]` (the tile's channels
//! adjacent), and the accumulators start from the bias. At the end the 4 × 4 blocks of
//! each channel vector are transposed (8 shuffles) into vectors along the row, so the fused
//! epilogue and the stores work on four pixels of one channel, exactly as elsewhere.
//!
//! Padding costs no copy and no check in the interior:
//! - along a row, tiles are either *interior* (every tap of every pixel lands in the input;
//!   a loop over tile positions) or *static* (at a known position, so each pixel's
//!   in-bounds taps are known at compile time and the others are skipped); the last tile
//!   of a row may overlap the one before it: it computes only its new pixels and runs
//!   first, and the tile before it then stores over its other lanes;
//! - the parallel loop runs over (batch, channel block, output row); a row whose every
//!   tap row lies in the input takes the interior code, any other row the border code,
//!   which clamps each tap row and zeroes the inputs of the rows outside (an `if` on the
//!   row picks the code).
//!
//! The sum runs over input channels, then kernel rows, then kernel columns, starting from
//! the bias; the interpreter adds the bias last, so results agree to rounding.

use std::sync::Arc;

use super::Blocked;
use super::conv::{Axis, gcd, plus, pointwise, split, sum, times};
use super::epilogue::StoreAt;
use super::ir::{BufId, CmpOp, Expr, KernelBuilder, LocalId, LoopKind, Ty};
use super::{Arg, BufferKind, Epilogue, Kernel, Lowered, LoweredKernel, NodeInfo};
use crate::tensor::{DType, Tensor};

/// Output pixels per tile (one `f32x4` along the row after the transpose), unless
/// [`tile_pixels`] takes 6.
const PIXELS: usize = 4;

/// A convolution this kernel computes.
pub(super) struct DirectConv<'a> {
    /// Batch.
    pub n: usize,
    /// Input channels.
    pub c: usize,
    /// Output channels.
    pub m: usize,
    /// Groups.
    pub group: usize,
    /// The two spatial axes (rows, then columns).
    pub axes: &'a [Axis],
    /// Weights `[M, C / group, KH, KW]`.
    pub weights: &'a Tensor,
    /// Bias `[M]`, if any.
    pub bias: Option<&'a Tensor>,
    /// Applied to each output value before its store.
    pub epilogue: &'a Epilogue,
    /// Which of its tensors are stored in blocks of 8 channels.
    pub blocked: Blocked,
}

impl DirectConv<'_> {
    /// Whether a kernel can store this convolution's output in blocks of 8 channels as
    /// asked, given its epilogue: every lane of a store is then a channel of one pixel, so
    /// the epilogue may read no operand but its value.
    pub(super) fn blocked_output_possible(&self) -> bool {
        !self.blocked.output || (self.epilogue.extras.is_empty() && self.m.is_multiple_of(8))
    }
}

/// Channel vectors per tile for `channels` output channels per group, if the direct kernel
/// takes them (a multiple of 8 or of 12).
fn channel_vectors(channels: usize) -> Option<usize> {
    if crate::codegen::wide_vectors() {
        // With 256-bit vectors, `Q` counts pairs of them: 24 channels (3 `f32x8` per
        // pixel, 12 accumulators) or 16 (2 per pixel, 8 accumulators).
        if channels.is_multiple_of(24) {
            return Some(6);
        }
        if channels.is_multiple_of(16) {
            return Some(4);
        }
    }
    // Three where they divide: 12 accumulators, 3 weight vectors and the broadcast fill the
    // 16 registers, which the FMAs' accumulator form (`vfmadd231ps`, a broadcast from
    // memory, no copies) allows; each broadcast then feeds 3 FMAs instead of 2
    // (MobileNetV2, whose 1×1 layers mostly have multiples of 12 channels: 26.3 → 24.6 ms,
    // 6 of 6 paired runs). Otherwise two: 8 accumulators.
    if channels.is_multiple_of(12) {
        Some(3)
    } else {
        channels.is_multiple_of(8).then_some(2)
    }
}

/// Emits `body(first, n)` for the input channels `first..first + n`, over `0..count`: in a
/// loop unrolled so that each trip does at least 8 taps' worth of FMAs (a 1×1 kernel
/// unrolls 8 channels: 4 measured 10% slower, 16 8% slower), which spreads the loop's overhead and the shuffling of
/// accumulators between registers at its back edge. `body` computes its addresses once
/// per trip; the unrolled channels are constant offsets from them.
pub(super) fn channel_loop(
    k: &mut KernelBuilder,
    count: usize,
    taps: usize,
    body: &dyn Fn(&mut KernelBuilder, Expr, usize),
) {
    if count == 1 {
        body(k, Expr::Int(0), 1);
        return;
    }
    let unroll = channel_unroll(count, taps);
    k.for_loop(0, count as i64, unroll as i64, LoopKind::Serial, |k, c| {
        body(k, c, unroll)
    });
}

/// Input channels per trip of [`channel_loop`] over `count` channels of `taps` taps each:
/// enough for 8 taps, or the largest divisor of `count` below that.
pub(super) fn channel_unroll(count: usize, taps: usize) -> usize {
    let mut unroll = 8usize.div_ceil(taps).max(1);
    while !count.is_multiple_of(unroll) {
        unroll -= 1;
    }
    unroll
}

/// The direct kernel for `conv`, or `None` when it does not apply (not 2-D, rows shorter
/// than a tile, output channels per group not a multiple of 8, weights or bias not
/// constant). `node` supplies the name and the bindings.
pub(super) fn lower(node: &NodeInfo<'_>, conv: &DirectConv<'_>) -> Option<Lowered> {
    let [rows, cols] = conv.axes else {
        return None;
    };
    // A 1×1 kernel with stride 1 and no padding treats the plane as rows of any length
    // (see `flat_rows`): fewer partial tiles than short rows such as 7 or 14 end in.
    let flat = pointwise(conv.axes)
        .then(|| {
            flat_rows(
                rows.input * cols.input,
                conv.n * (conv.m / 8).max(1),
                node.options.threads,
            )
        })
        .flatten();
    let (rows, cols) = match &flat {
        Some([r, c]) => (r, c),
        None => (rows, cols),
    };
    if cols.output < PIXELS || conv.group == 0 || !conv.m.is_multiple_of(conv.group) {
        return None;
    }
    // Blocked tensors: 8-channel accumulators, an input read over flat rows.
    if conv.blocked.any()
        && (!crate::codegen::wide_vectors()
            || !conv.blocked_output_possible()
            || (conv.blocked.input && flat.is_none()))
    {
        return None;
    }
    // With 256-bit vectors, an ungrouped layer whose channels would leave fewer than 8
    // `f32x8` accumulators (SqueezeNet's 1000-channel classifier: 8 `f32x4`, 4.5–5 ms,
    // against ONNX Runtime's 2.2) is padded to a multiple of 16 or 24 channels: zero weights,
    // the padding's stores clamped onto the last channel and made before its own.
    // An ungrouped layer of 16-channel blocks (8 accumulators, which barely cover the FMA
    // latency) takes 24-channel ones, padded, where that pads at most 6% more and each sum
    // has at least 256 terms (MobileNetV2's 160-, 320- and 1280-channel 1×1 layers on 7×7,
    // 1 thread, 6 alternated runs: 0.18 → 0.165, 0.30 → 0.28, 0.60 → 0.56 and 0.85 → 0.76
    // ms; ResNet-18's stride-2 3×3 layers to 256 and 512 channels 5–10% faster). Shorter
    // sums lose more to the padding's clamped stores than they gain (SqueezeNet's 64 → 256
    // 1×1 layers on 13×13: 0.09 → 0.105 and 0.115 → 0.15 ms; ResNet-18's 1×1 downsamples).
    // Where the output planes start at no more than 4 offsets within a page (see
    // [`aliased_streams`]), a 24-channel tile's stores fill 6 ways of each of 4 L1 sets
    // besides the input's lines; 16-channel tiles leave room (MobileNetV2's 16 → 96 1×1 on
    // 112×112, 1 thread: 0.75–0.79 → 0.70–0.72 ms).
    let channels = conv.m / conv.group;
    let aliased = page_offsets(rows.output * cols.output) <= 4;
    let (q, m_pad) = match channel_vectors(channels) {
        Some(6) if aliased && channels.is_multiple_of(16) => (4, conv.m),
        Some(4)
            if conv.group == 1
                && !aliased
                && conv.c * rows.kernel * cols.kernel >= 256
                && conv.m.next_multiple_of(24) * 100 <= conv.m * 106 =>
        {
            (6, conv.m.next_multiple_of(24))
        }
        Some(q) if q >= 4 || !crate::codegen::wide_vectors() => (q, conv.m),
        _ if crate::codegen::wide_vectors() && conv.group == 1 && conv.m >= 64 => {
            // 24-channel blocks (12 accumulators) where they pad little more than 16.
            let (m16, m24) = (conv.m.next_multiple_of(16), conv.m.next_multiple_of(24));
            if m24 * 50 <= m16 * 51 {
                (6, m24)
            } else {
                (4, m16)
            }
        }
        q => (q?, conv.m),
    };
    let cg = conv.c / conv.group;
    let taps = rows.kernel * cols.kernel;
    if conv.weights.shape() != [conv.m, cg, rows.kernel, cols.kernel] {
        return None;
    }
    let w = conv.weights.as_f32()?;
    let width = 4 * q;
    let blocks = m_pad / width;
    // [block][ci][tap][j] = w[block * width + j][ci][tap] (zero past the last channel)
    let mut packed = vec![0f32; m_pad * cg * taps];
    for block in 0..blocks {
        for ci in 0..cg {
            for tap in 0..taps {
                for j in 0..width {
                    let oc = block * width + j;
                    if oc >= conv.m {
                        continue;
                    }
                    packed[((block * cg + ci) * taps + tap) * width + j] =
                        w[(oc * cg + ci) * taps + tap];
                }
            }
        }
    }
    let (packed, bias) = constants(conv, packed, m_pad)?;
    // `f32x8` from 16 channels (8 accumulators): 8 channels would leave 4, too few FMA
    // chains to cover the latency (SqueezeNet's 1000-channel classifier).
    let lanes = if crate::codegen::wide_vectors() && q >= 4 {
        8
    } else {
        4
    };
    let tile = Tile {
        conv,
        rows,
        cols,
        q,
        pixels: tile_pixels(q, lanes, cols, cg * taps),
        lanes,
        cg,
        blocks,
        chunk: chunk(
            cg,
            taps * width * 4 + small_plane_bytes(rows, cols),
            aliased_streams(rows, cols),
        ),
        rows_outer: conv.c * rows.input * cols.input > m_pad * cg * taps,
        padded: m_pad > conv.m,
        blocked: conv.blocked.input,
        blocked_output: conv.blocked.output,
    };
    if tile.blocked && !tile.reads_blocks() || tile.blocked_output && (tile.padded || lanes != 8) {
        return None;
    }
    let tile = Tile {
        blocked: tile.blocked || flat.is_some() && tile.blocks_input(),
        ..tile
    };
    let mut kernels = Vec::new();
    let mut scratch = Vec::new();
    let mut x = Arg::Input(0);
    if tile.blocked && !conv.blocked.input {
        kernels.push(LoweredKernel {
            kernel: blocked_input(node.name, conv.n * conv.c, rows.input * cols.input),
            args: vec![Arg::Input(0), Arg::Scratch(0)],
        });
        scratch.push((DType::F32, conv.n * conv.c * rows.input * cols.input));
        x = Arg::Scratch(0);
    }
    let kernel = tile.kernel(node.name, packed, bias);
    let mut args = vec![x, Arg::Const, Arg::Const, Arg::Output(0)];
    if tile.chunked() {
        args.push(Arg::Scratch(scratch.len()));
        scratch.push((DType::F32, tile.scratch_len()));
    }
    if tile.reads_ahead() || tile.reads_input_ahead() {
        args.push(Arg::Scratch(scratch.len()));
        scratch.push((DType::F32, tile.tasks()));
    }
    args.extend(conv.epilogue.args());
    kernels.push(LoweredKernel { kernel, args });
    Some(Lowered { kernels, scratch })
}

/// The kernel copying `channels` planes of `plane` elements (a multiple of 8 channels)
/// into blocks of 8 channels, each pixel's 8 values together (`[c / 8][pixel][8]`): the
/// layout a [`Tile::blocked`] 1×1 kernel reads.
fn blocked_input(name: &str, channels: usize, plane: usize) -> Kernel {
    let mut k = KernelBuilder::new(format!("{name}_blocked"));
    k.set_schedule(format!(
        "input into blocks of 8 channels: {} blocks in parallel, 4 pixels x 8 channels at a time",
        channels / 8
    ));
    let x = k.buffer("x", DType::F32, channels * plane, BufferKind::Input);
    let xb = k.buffer(
        "x_blocked",
        DType::F32,
        channels * plane,
        BufferKind::Output,
    );
    let whole = plane / 4 * 4;
    k.for_loop(
        0,
        (channels / 8) as i64,
        1,
        LoopKind::Parallel,
        |k, block| {
            let first = Expr::Local(k.declare(Ty::I64, times(block, 8 * plane)));
            k.for_loop(0, whole as i64, 4, LoopKind::Serial, |k, p| {
                let src = Expr::Local(k.declare(Ty::I64, sum([first.clone(), p.clone()])));
                let dst = Expr::Local(k.declare(Ty::I64, sum([first.clone(), times(p, 8)])));
                for half in 0..2 {
                    let rows = [0, 1, 2, 3].map(|i| {
                        let at = plus(src.clone(), ((4 * half + i) * plane) as i64);
                        Expr::Local(k.declare(Ty::F32x4, Expr::load4(x, at)))
                    });
                    for (q, column) in transpose4(k, &rows, 0..4).into_iter().enumerate() {
                        k.store(xb, plus(dst.clone(), (8 * q + 4 * half) as i64), column);
                    }
                }
            });
            for p in whole..plane {
                for c in 0..8 {
                    let value = Expr::load(x, plus(first.clone(), (c * plane + p) as i64));
                    k.store(xb, plus(first.clone(), (8 * p + c) as i64), value);
                }
            }
        },
    );
    k.finish()
}

/// The packed weights and the bias (zero where absent, and for the `m_pad - M` padding
/// channels) as constant tensors, or `None` if the bias does not have `M` values.
pub(super) fn constants(
    conv: &DirectConv<'_>,
    packed: Vec<f32>,
    m_pad: usize,
) -> Option<(Arc<Tensor>, Arc<Tensor>)> {
    let mut bias = match conv.bias {
        Some(b) => b.as_f32()?.to_vec(),
        None => vec![0.0; conv.m],
    };
    if bias.len() != conv.m {
        return None;
    }
    bias.resize(m_pad, 0.0);
    let packed = Tensor::from_f32(vec![packed.len()], packed).ok()?;
    let bias = Tensor::from_f32(vec![m_pad], bias).ok()?;
    Some((Arc::new(packed), Arc::new(bias)))
}

/// A convolution kernel's first four buffers.
#[derive(Clone, Copy)]
pub(super) struct ConvBuffers {
    /// The input.
    pub x: BufId,
    /// The packed weights.
    pub w: BufId,
    /// The bias.
    pub b: BufId,
    /// The output.
    pub y: BufId,
}

/// Declares a convolution kernel's first four buffers: the input (`plane` elements per
/// channel), the packed weights, the bias and the output (`out_plane` per channel).
pub(super) fn declare_buffers(
    k: &mut KernelBuilder,
    conv: &DirectConv<'_>,
    plane: usize,
    out_plane: usize,
    packed: Arc<Tensor>,
    bias: Arc<Tensor>,
) -> ConvBuffers {
    let x = k.buffer("x", DType::F32, conv.n * conv.c * plane, BufferKind::Input);
    let w = k.buffer(
        "w_packed",
        DType::F32,
        packed.len(),
        BufferKind::Const(packed),
    );
    let b = k.buffer("b", DType::F32, bias.len(), BufferKind::Const(bias));
    let y = k.buffer(
        "y",
        DType::F32,
        conv.n * conv.m * out_plane,
        BufferKind::Output,
    );
    ConvBuffers { x, w, b, y }
}

/// Parallel iterations a pointwise kernel keeps when its plane is cut into rows (at least;
/// 4 per thread with more than 8 threads, as many as the chunks a launch is cut into). More
/// rows than threads also keep a thread's rows of the input together (see `rows_outer`):
/// one row per block at 2 threads ran MobileNetV2's 56×56 and 112×112 1×1 layers 10–15%
/// slower.
const POINTWISE_ITERATIONS: usize = 32;

/// The axes of a `plane` of 1×1 outputs cut into rows: rows (a divisor of the plane, at
/// least one tile long) leaving [`POINTWISE_ITERATIONS`] iterations over `blocks` batch ×
/// channel blocks (or `4 × threads`), the fewest tile slots first (a row not a multiple of
/// 4 ends in a partial tile: rows of 13 take 4 tiles for 13 pixels), then the longest.
/// Where that leaves more than 1/8 of the slots empty, rows leaving only 4
/// iterations per thread are taken too (a 13×13 plane: 13 rows of 13, or one of 169; the
/// latter ran SqueezeNet's 13×13 1×1 layers 12–18% faster on one thread). `None` if no row
/// fits.
fn flat_rows(plane: usize, blocks: usize, threads: usize) -> Option<[Axis; 2]> {
    let slots = |d: usize| plane / d * d.next_multiple_of(PIXELS);
    let best = |iterations: usize| {
        let rows_needed = iterations.div_ceil(blocks.max(1));
        (PIXELS..=plane)
            .filter(|&d| plane.is_multiple_of(d) && plane / d >= rows_needed)
            .min_by_key(|&d| (slots(d), std::cmp::Reverse(d)))
    };
    let per_thread = 4 * threads.max(1);
    let mut length = best(POINTWISE_ITERATIONS.max(per_thread));
    if length.is_none_or(|d| slots(d) * 8 > plane * 9) {
        length = best(per_thread)
            .into_iter()
            .chain(length)
            .min_by_key(|&d| slots(d));
    }
    let length = length?;
    let axis = |size: usize| Axis {
        input: size,
        output: size,
        kernel: 1,
        stride: 1,
        dilation: 1,
        pad: 0,
    };
    Some([axis(plane / length), axis(length)])
}

/// Bytes of one chunk's packed weights that fit the L1 data cache with room for the
/// inputs and accumulators.
const CHUNK_BYTES: usize = 20 * 1024;

/// Input planes of at most this many elements count whole in a chunk's bytes (see
/// [`small_plane_bytes`]).
const SMALL_PLANE: usize = 64;

/// The bytes of one input channel that a chunk must keep in L1 besides its weights: the
/// whole plane when it is small (up to [`SMALL_PLANE`] elements, MobileNetV2's 7×7 1×1
/// layers), whose few lines per channel every tile of the row reads again and no
/// prefetcher streams; none for larger planes, whose rows stream through (measured: a
/// chunk holding 20 KB of weights with 62 KB of 7×7 inputs ran MobileNetV2's 320 → 1280
/// layer in 0.89 ms, chunks of 40–64 channels in 0.64–0.72; at 14×14 and 28×28 smaller
/// chunks were slower).
fn small_plane_bytes(rows: &Axis, cols: &Axis) -> usize {
    let plane = rows.input * cols.input;
    if plane <= SMALL_PLANE { plane * 4 } else { 0 }
}

/// The most input channels a chunk may read at once given how their planes fall in the L1
/// data cache's sets: a tile reads one line of every channel of its chunk and each line
/// serves the next 3 tiles too, so the lines must stay in L1 meanwhile. The L1 set of an
/// address is its offset within a 4 KB page; where the channel planes' size is a multiple
/// of 1 KB (112×112: 49 KB) the channels start at no more than 4 page offsets, so a tile's
/// lines crowd into 4 sets of 8 ways, with its output channels' lines too. Such planes keep
/// at most 4 channels per set (16 channels for a 112×112 plane); others are not limited
/// (measured on MobileNetV2, 1 thread: its 32 → 16 1×1 layer on 112×112 0.34–0.40 → 0.24–0.25
/// ms in chunks of 16 or 8; chunks of 16–48 channels on its 56×56 layers, whose planes start
/// at 16 offsets, were 5–25% slower than none).
fn aliased_streams(rows: &Axis, cols: &Axis) -> usize {
    let offsets = page_offsets(rows.input * cols.input);
    if offsets <= 4 {
        4 * offsets
    } else {
        usize::MAX
    }
}

/// The offsets within a 4 KB page (so the L1 sets) at which consecutive planes of `elements`
/// `f32`s start: 1 for a 224×224 plane, 4 for 112×112, 16 for 56×56.
pub(super) fn page_offsets(elements: usize) -> usize {
    const PAGE: usize = 4096;
    PAGE / gcd(elements * 4 % PAGE, PAGE)
}

/// Input channels per chunk: the largest divisor of `cg` (at least 8) whose weights and
/// inputs (`bytes_per_channel` each) fit [`CHUNK_BYTES`] and that reads at most `streams`
/// channels at once (see [`aliased_streams`]), or `cg` when all of them qualify (or no
/// divisor does).
fn chunk(cg: usize, bytes_per_channel: usize, streams: usize) -> usize {
    let fits = |d: usize| d * bytes_per_channel <= CHUNK_BYTES && d <= streams;
    if fits(cg) {
        return cg;
    }
    (8..cg)
        .rev()
        .find(|&d| cg.is_multiple_of(d) && fits(d))
        .unwrap_or(cg)
}

/// Sums of at least this many terms (input channels × taps per output) take 6-pixel tiles
/// with 16-channel blocks of `f32x8` accumulators (see [`tile_pixels`]).
const SIX_PIXEL_TERMS: usize = 256;

/// Pixels per tile: 6 for 16-channel blocks of `f32x8` accumulators on rows of at least 6
/// whose sums have [`SIX_PIXEL_TERMS`] terms or more, else 4. Six pixels give 12
/// accumulators instead of 8, which barely cover the FMA latency; the tile then stores two
/// overlapping groups of 4 pixels (2 and 3 twice), which costs more than it gains on short
/// sums. Single layers, 1 thread (`fovea bench --json`, medians of 8 alternated runs):
/// 384 → 64 1×1 on 14×14 0.181 → 0.167 ms, on 13×13 0.162 → 0.153, 512 → 64 on 13×13 0.241
/// → 0.208, 256 → 32 on 27×27 0.267 → 0.197; shorter sums slower: 192 → 32 on 28×28 0.207 →
/// 0.219, 32 → 16 on 112×112 0.298 → 0.335, SqueezeNet's 3 → 64 3×3 stem 0.67 → 0.72.
fn tile_pixels(q: usize, lanes: usize, cols: &Axis, terms: usize) -> usize {
    if q == 4 && lanes == 8 && cols.output >= 6 && terms >= SIX_PIXEL_TERMS {
        6
    } else {
        PIXELS
    }
}

/// Channel blocks from which a chunked 1×1 kernel reads its input from a copy in blocks of
/// 8 channels ([`blocked_input`]). A tile then reads 2 lines of a chunk's input per 8
/// channels instead of 8 lines with 16 bytes used of each: the kernel was 7–9% faster, but
/// the copy is one more pass over the input, which pays only when the kernel reads it many
/// times. Measured (1 thread unless said, kernel times in the model, 8–10 alternated runs):
/// SqueezeNet's 512 → 1000 classifier on 13×13 (42 blocks) 2.92 → 2.71 ms + 0.036 for the
/// copy (2 threads: 1.50 → 1.37 + 0.023); MobileNetV2's 320 → 1280 on 7×7 (54 blocks) 0.74
/// → 0.71 + 0.006; its squeezes and projections with 1–4 blocks lost (SqueezeNet's 128 → 16
/// on 55×55: 0.27 → 0.21 + 0.11), its 16-block expansions on 14×14 gained no more than
/// their copy cost.
const BLOCKED_INPUT_BLOCKS: usize = 32;

/// The geometry of the tiled kernel.
struct Tile<'a> {
    conv: &'a DirectConv<'a>,
    rows: &'a Axis,
    cols: &'a Axis,
    /// Channel vectors of 4 per tile (an even count with `f32x8` accumulators).
    q: usize,
    /// Pixels per tile: 4, or 6 for 16-channel blocks of `f32x8` accumulators (see
    /// [`tile_pixels`]).
    pixels: usize,
    /// Lanes of an accumulator: 8 (`f32x8`, two channel vectors) or 4.
    lanes: usize,
    /// Input channels per group.
    cg: usize,
    /// Channel blocks (`M / 4Q`).
    blocks: usize,
    /// Input channels per chunk: when less than `cg`, a row's sums are kept in a scratch
    /// row and the channels visited chunk by chunk, so each chunk's weights stay in L1
    /// across the row's tiles.
    chunk: usize,
    /// Whether the output channels are padded to a whole block (ungrouped only): the
    /// padding's lanes are computed, and stored onto the last channel before it.
    padded: bool,
    /// Whether the parallel loop runs over rows outside channel blocks: when the input is
    /// larger than the weights, so that a thread's contiguous share of the loop reads its
    /// rows of the input once for every block (instead of every thread reading the whole
    /// input once per block it takes) and the weights, the smaller, are the ones re-read.
    rows_outer: bool,
    /// Whether the input is read from a copy in blocks of 8 channels ([`blocked_input`];
    /// 1×1 kernels over flat rows only): a tile's inputs for 8 channels are then 2 lines
    /// instead of 8 (see [`Tile::blocks_input`]), or because the input is stored so.
    blocked: bool,
    /// Whether the output is stored in blocks of 8 channels: each `f32x8` accumulator is
    /// then stored as it is, without the transposes.
    blocked_output: bool,
}

/// The buffers and the position of one parallel iteration (indices in `i64` locals, so
/// that the unoptimised code computes each once).
struct Frame {
    bufs: ConvBuffers,
    extras: Vec<BufId>,
    /// First output channel of the iteration's block.
    channel: Expr,
    /// First element of the iteration's input group.
    x_base: Expr,
    /// First packed weight of the iteration's block.
    w_base: Expr,
    /// First element of the block's first output channel plane.
    y_base: Expr,
    /// First element of the iteration's batch in the output.
    y_batch: Expr,
    /// The scratch rows of partial sums (chunked kernels), and this iteration's first
    /// element in it.
    scratch: Option<(BufId, Expr)>,
    /// The reads of the next block's weights, where the kernel [reads ahead](Tile::reads_ahead).
    ahead: Option<ReadAhead>,
}

/// Bytes of packed weights from which the tasks read the next block's ahead: where they do
/// not stay in L2 (nor, between runs of a network, in the last-level cache). A task (an
/// output row of a block of channels) reads its block's weights, from memory for the
/// block's first row and from L2 for the rest, and the memory is idle while it computes.
/// Cranelift has no prefetch instruction, so each trip of the channel loop also loads
/// floats of the next block's weights (one per cache line, task `oy` of a block reading
/// the `oy`-th of `rows` parts of the next one), summed into a float stored per task (so
/// the loads stay); the stream prefetcher follows. Measured (1 thread, alternated runs,
/// normalised by kernels the change does not touch): a version reading block 0's weights
/// for every block, cached, made ResNet-18's layer-4 direct kernels (4.7 and 0.5 MB)
/// 16% faster and MobileNetV2's last two 1×1 layers (1.6 and 1.2 MB) 31% faster; reading
/// ahead made them 6% faster (8 alternated runs each).
const READ_AHEAD_BYTES: usize = 1 << 20;

/// Output pixels (over the batch) up to which a kernel reads weights ahead: SqueezeNet's
/// classifier (2 MB of weights for 13×13 pixels) ran 3% slower reading ahead (normalised,
/// 8 alternated runs), its weights amortised over 169 pixels a block.
const READ_AHEAD_PIXELS: usize = 64;

/// Input bytes (a batch's) from which a kernel whose parallel loop runs over rows outside
/// channel blocks reads the next output row's input rows ahead: inputs that do not stay in
/// L2. A network's first layer reads its input from memory (the rest of the network evicted
/// it), a tile's 9 short row streams (3 channels × 3 rows of 224) too short for the stream
/// prefetcher: MobileNetV2's stem took 0.93 ms in the model against 0.50 with every row
/// read from one cached row (normalised alternated runs), 0.30–0.43 ms alone. Reading
/// ahead: MobileNetV2's stem 21% faster, SqueezeNet's 5%, ResNet-18's layer-2 stride-2
/// 3×3 layer (its input written just before) within 1% (8 alternated runs each).
const INPUT_AHEAD_BYTES: usize = 512 << 10;

/// A task's reads ahead (see [`READ_AHEAD_BYTES`] and [`INPUT_AHEAD_BYTES`]): of the next
/// block's weights, from a running position, and of the input rows the next output row
/// adds, per channel and tile; and the sum of what was read.
struct ReadAhead {
    weights: Option<WeightsAhead>,
    /// The input and its last element, where the next row's input is read ahead.
    input: Option<(BufId, i64)>,
    sum: LocalId,
}

/// The running position in the next block's weights.
struct WeightsAhead {
    w: BufId,
    at: LocalId,
    /// Cache lines read per trip of the channel loop.
    lines: usize,
    /// The last packed weight (reads past it read it instead; the position, a running sum,
    /// is clamped to the weights for the loop verifier).
    last: i64,
}

/// Floats per cache line.
const LINE: usize = 16;

impl ReadAhead {
    /// Task `oy` of block `block` reads the `oy`-th part of block `block + 1`'s weights,
    /// spread over the trips of its channel loops, and the next row's input.
    fn new(
        tile: &Tile<'_>,
        k: &mut KernelBuilder,
        bufs: &ConvBuffers,
        block: &Expr,
        oy: &Expr,
    ) -> Self {
        let weights = tile.reads_ahead().then(|| {
            let len = tile.block_weights();
            let part = len.div_ceil(tile.rows.output);
            let taps = tile.rows.kernel * tile.cols.kernel;
            let trips = tile.cols.output.div_ceil(tile.pixels)
                * (tile.cg / channel_unroll(tile.chunk, taps)).max(1);
            let start = sum([
                times(block.clone(), len),
                Expr::Int(len as i64),
                times(oy.clone(), part),
            ]);
            WeightsAhead {
                w: bufs.w,
                at: k.declare(Ty::I64, start),
                lines: part.div_ceil(trips * LINE).max(1),
                last: (tile.blocks * len) as i64 - 1,
            }
        });
        let plane = tile.rows.input * tile.cols.input;
        let input = tile
            .reads_input_ahead()
            .then(|| (bufs.x, (tile.conv.n * tile.conv.c * plane) as i64 - 1));
        ReadAhead {
            weights,
            input,
            sum: k.declare(Ty::F32, Expr::Float(0.0)),
        }
    }

    /// One trip's reads of the weights.
    fn read(&self, k: &mut KernelBuilder) {
        let Some(ahead) = &self.weights else {
            return;
        };
        for i in 0..ahead.lines {
            let at = plus(Expr::Local(ahead.at), (i * LINE) as i64).clamp(0, ahead.last);
            let value = Expr::load(ahead.w, at);
            k.assign(self.sum, Expr::Local(self.sum).add(value));
        }
        let next = plus(Expr::Local(ahead.at), (ahead.lines * LINE) as i64);
        k.assign(ahead.at, next);
    }

    /// One trip's reads of the input: for each of its channels, at `next` (the tile's
    /// place in the rows the next output row adds) from the channel's plane at `x_channel`.
    fn read_input(
        &self,
        k: &mut KernelBuilder,
        x_channel: &Expr,
        next: &Expr,
        plane: usize,
        unrolled: usize,
    ) {
        let Some((x, last)) = self.input else {
            return;
        };
        for u in 0..unrolled {
            let at = sum([
                x_channel.clone(),
                next.clone(),
                Expr::Int((u * plane) as i64),
            ]);
            let value = Expr::load(x, at.clamp(0, last));
            k.assign(self.sum, Expr::Local(self.sum).add(value));
        }
    }
}

/// Where a tile's sums start and end.
enum Part {
    /// From the bias, over every input channel, to the output.
    Whole,
    /// From the scratch row, over `chunk` input channels from `first`, back to the
    /// scratch row for pixels `keep..` (the earlier ones belong to the previous tile).
    Chunk { first: Expr, keep: usize },
    /// From the scratch row to the output.
    Finish,
}

/// Where a tile starts along the row.
#[derive(Clone, Copy)]
enum TileAt {
    /// At a fixed column; its pixels before `keep` overlap the previous tile.
    Static { start: usize, keep: usize },
    /// Every tile of pixels in `from..end`.
    Loop { from: usize, end: usize },
}

/// How one output row reads its tap rows.
enum RowTaps {
    /// Every tap row is inside the input; `oy` is the (clamped) row.
    Interior(Expr),
    /// Some may not be: `oy` is the row, each tap row is clamped and checked.
    Border(Expr),
}

/// One tap row of an output row: the offset of its first element in an input plane, and
/// for border rows, the unclamped and clamped input rows (equal when inside).
struct TapRow {
    offset: Expr,
    check: Option<(Expr, Expr)>,
}

/// One pixel of a tile: its offset from the tile's first pixel, and which kernel columns
/// it computes — those landing inside the input, none where the previous tile computes
/// the pixel (`None`: all of them).
struct Pixel {
    delta: usize,
    valid: Option<Vec<bool>>,
}

/// The interior range `[lo, hi)` of output positions along `axis` whose taps all land
/// inside the input.
pub(super) fn interior(axis: &Axis) -> (usize, usize) {
    let lo = axis.pad.div_ceil(axis.stride).min(axis.output);
    let span = (axis.kernel - 1) * axis.dilation;
    let hi = if axis.input + axis.pad < span + 1 {
        0
    } else {
        ((axis.input + axis.pad - span - 1) / axis.stride + 1).min(axis.output)
    };
    (lo, hi.max(lo))
}

/// Emits `row(k, oy, border)` for the output row `oy` (an expression over every row of
/// `rows`): with `border` false and `oy` clamped into the interior rows (whose taps all
/// lie in the input, so the clamp lets the verifier prove it) for those rows, with `border`
/// true and `oy` as given for the others; an `if` picks when there are both.
pub(super) fn for_rows(
    k: &mut KernelBuilder,
    rows: &Axis,
    oy: &Expr,
    row: &dyn Fn(&mut KernelBuilder, Expr, bool),
) {
    let (lo, hi) = interior(rows);
    let clamped = || oy.clone().clamp(lo as i64, hi as i64 - 1);
    let interior_row = |k: &mut KernelBuilder| {
        let oy = Expr::Local(k.declare(Ty::I64, clamped()));
        row(k, oy, false);
    };
    let border_row = |k: &mut KernelBuilder| row(k, oy.clone(), true);
    match (lo < hi, lo > 0 || hi < rows.output) {
        (true, false) => interior_row(k),
        (false, _) => border_row(k),
        (true, true) => {
            let is_interior = clamped().cmp(CmpOp::Eq, oy.clone());
            k.if_else(is_interior, interior_row, border_row);
        }
    }
}

/// The input position of output `o` and tap `t` along `axis` (before clamping).
pub(super) fn input_at(axis: &Axis, o: usize, t: usize) -> i64 {
    (o * axis.stride + t * axis.dilation) as i64 - axis.pad as i64
}

impl Tile<'_> {
    fn width(&self) -> usize {
        4 * self.q
    }

    /// Accumulators per pixel.
    fn vectors(&self) -> usize {
        self.width() / self.lanes
    }

    /// The accumulator type.
    fn ty(&self) -> Ty {
        if self.lanes == 8 {
            Ty::F32x8
        } else {
            Ty::F32x4
        }
    }

    /// An accumulator-wide load.
    fn load(&self, buf: BufId, at: Expr) -> Expr {
        if self.lanes == 8 {
            Expr::load8(buf, at)
        } else {
            Expr::load4(buf, at)
        }
    }

    fn chunked(&self) -> bool {
        self.chunk < self.cg
    }

    /// Whether this kernel (1×1, over flat rows) can read its input in blocks of 8
    /// channels: `f32x8` accumulators, ungrouped, chunks and unrolled trips of whole
    /// blocks.
    fn reads_blocks(&self) -> bool {
        self.lanes == 8
            && self.conv.group == 1
            && self.cg.is_multiple_of(8)
            && self.chunk.is_multiple_of(8)
    }

    /// Whether this kernel (1×1, over flat rows) reads a copy of its input in blocks of 8
    /// channels: it [can](Tile::reads_blocks), sums in chunks and reads the input once per
    /// block for at least [`BLOCKED_INPUT_BLOCKS`] blocks.
    fn blocks_input(&self) -> bool {
        self.reads_blocks() && self.chunked() && self.blocks >= BLOCKED_INPUT_BLOCKS
    }

    /// Parallel iterations: (batch, block, row) triples.
    fn tasks(&self) -> usize {
        self.conv.n * self.blocks * self.rows.output
    }

    /// Elements of one block's packed weights.
    fn block_weights(&self) -> usize {
        self.cg * self.rows.kernel * self.cols.kernel * self.width()
    }

    /// Whether the tasks read the next block's weights ahead ([`ReadAhead`]): blocks outer,
    /// more than one, weights too large to stay in cache between runs, and output planes
    /// small enough that each weight serves few pixels (so that reading the weights is a
    /// large part of a block's time).
    fn reads_ahead(&self) -> bool {
        !self.rows_outer
            && self.blocks > 1
            && self.blocks * self.block_weights() * 4 >= READ_AHEAD_BYTES
            && self.conv.n * self.rows.output * self.cols.output <= READ_AHEAD_PIXELS
    }

    /// Whether the tasks read the next output row's input rows ahead ([`ReadAhead`]): rows
    /// outer (a thread's next task is the next row), kernels taller than a row (a 1×1
    /// kernel reads its input rows in long streams, and reading ahead made MobileNetV2's
    /// 1×1 layers on 56×56 and 112×112 1.4–2× slower), input in planes and larger than
    /// [`INPUT_AHEAD_BYTES`].
    fn reads_input_ahead(&self) -> bool {
        self.rows_outer
            && !self.blocked
            && self.rows.kernel > 1
            && self.rows.output > 1
            && self.conv.c * self.rows.input * self.cols.input * 4 >= INPUT_AHEAD_BYTES
    }

    /// Elements of the scratch rows: one row of `4Q` sums per pixel per parallel iteration.
    fn scratch_len(&self) -> usize {
        self.conv.n * self.blocks * self.rows.output * self.cols.output * self.width()
    }

    fn kernel(&self, name: &str, packed: Arc<Tensor>, bias: Arc<Tensor>) -> Kernel {
        let conv = self.conv;
        let (rows, cols) = (self.rows, self.cols);
        let plane = rows.input * cols.input;
        let out_plane = rows.output * cols.output;
        let width = self.width();
        let mut k = KernelBuilder::new(name);
        k.set_schedule(format!(
            "direct, tile {} pixels x {width} channels ({} f32x{} accumulators), \
             {} in parallel, {}{}input channels in chunks of {}",
            self.pixels,
            self.pixels * self.vectors(),
            self.lanes,
            if self.rows_outer {
                format!("{} rows x {} channel blocks", rows.output, self.blocks)
            } else {
                format!("{} channel blocks x {} rows", self.blocks, rows.output)
            },
            match (self.blocked, self.blocked_output) {
                (false, false) => "",
                (true, false) => "input in blocks of 8 channels, ",
                (false, true) => "output in blocks of 8 channels, ",
                (true, true) => "input and output in blocks of 8 channels, ",
            },
            match (self.reads_ahead(), self.reads_input_ahead()) {
                (true, _) => "the next block's weights read ahead, ",
                (false, true) => "the next row's input read ahead, ",
                (false, false) => "",
            },
            self.chunk,
        ));
        let bufs = declare_buffers(&mut k, conv, plane, out_plane, packed, bias);
        let scratch = self.chunked().then(|| {
            k.buffer(
                "partial_sums",
                DType::F32,
                self.scratch_len(),
                BufferKind::Output,
            )
        });
        let ahead_buf = (self.reads_ahead() || self.reads_input_ahead())
            .then(|| k.buffer("read_ahead", DType::F32, self.tasks(), BufferKind::Output));
        let extras = conv.epilogue.declare(&mut k);
        let blocks_per_group = self.blocks / conv.group;
        k.for_loop(0, self.tasks() as i64, 1, LoopKind::Parallel, |k, it| {
            let scratch = scratch.map(|buf| {
                let first = times(it.clone(), cols.output * width);
                (buf, Expr::Local(k.declare(Ty::I64, first)))
            });
            let task = it.clone();
            let (batch, rest) = split(it, conv.n, self.blocks * rows.output);
            let batch = Expr::Local(k.declare(Ty::I64, batch));
            let rest = Expr::Local(k.declare(Ty::I64, rest));
            let (block, oy) = if self.rows_outer {
                let (oy, block) = split(rest, rows.output, self.blocks);
                (block, oy)
            } else {
                split(rest, self.blocks, rows.output)
            };
            let oy = Expr::Local(k.declare(Ty::I64, oy));
            let block = Expr::Local(k.declare(Ty::I64, block));
            let g = if conv.group == 1 {
                Expr::Int(0)
            } else {
                block.clone().div(Expr::Int(blocks_per_group as i64))
            };
            let x_base = sum([
                times(batch.clone(), conv.c * plane),
                times(g, self.cg * plane),
            ]);
            let y_batch = Expr::Local(k.declare(Ty::I64, times(batch, conv.m * out_plane)));
            let y_base = sum([y_batch.clone(), times(block.clone(), width * out_plane)]);
            let ahead = ahead_buf.map(|_| ReadAhead::new(self, k, &bufs, &block, &oy));
            let frame = Frame {
                bufs,
                extras: extras.clone(),
                channel: Expr::Local(k.declare(Ty::I64, times(block.clone(), width))),
                x_base: Expr::Local(k.declare(Ty::I64, x_base)),
                w_base: Expr::Local(k.declare(
                    Ty::I64,
                    times(block, self.cg * rows.kernel * cols.kernel * width),
                )),
                y_base: Expr::Local(k.declare(Ty::I64, y_base)),
                y_batch,
                scratch,
                ahead,
            };
            for_rows(k, rows, &oy, &|k, oy, border| {
                let taps = if border {
                    RowTaps::Border(oy)
                } else {
                    RowTaps::Interior(oy)
                };
                self.row(k, &frame, &taps);
            });
            if let (Some(buf), Some(ahead)) = (ahead_buf, &frame.ahead) {
                k.store(buf, task, Expr::Local(ahead.sum));
            }
        });
        k.finish()
    }

    /// One output row: static tiles where a pixel has taps outside the input, a loop over
    /// the interior tiles between them.
    fn row(&self, k: &mut KernelBuilder, f: &Frame, taps: &RowTaps) {
        let (rows, cols) = (self.rows, self.cols);
        let oy = match taps {
            RowTaps::Interior(oy) | RowTaps::Border(oy) => oy.clone(),
        };
        // Each tap row's offset in an input plane, computed once per output row.
        let tap_rows: Vec<TapRow> = (0..rows.kernel)
            .map(|ky| {
                let iy = sum([
                    times(oy.clone(), rows.stride),
                    Expr::Int((ky * rows.dilation) as i64 - rows.pad as i64),
                ]);
                match taps {
                    RowTaps::Interior(_) => TapRow {
                        offset: Expr::Local(k.declare(Ty::I64, times(iy, cols.input))),
                        check: None,
                    },
                    RowTaps::Border(_) => {
                        let iy = Expr::Local(k.declare(Ty::I64, iy));
                        let clamped = iy.clone().clamp(0, rows.input as i64 - 1);
                        let clamped = Expr::Local(k.declare(Ty::I64, clamped));
                        TapRow {
                            offset: Expr::Local(
                                k.declare(Ty::I64, times(clamped.clone(), cols.input)),
                            ),
                            check: Some((iy, clamped)),
                        }
                    }
                }
            })
            .collect();
        // The output row's first element; padded, its offset in the plane (`store` adds the
        // batch and the clamped channel).
        let y_row = if self.padded || self.blocked_output {
            times(oy, cols.output)
        } else {
            sum([f.y_base.clone(), times(oy, cols.output)])
        };
        let y_row = Expr::Local(k.declare(Ty::I64, y_row));
        let tiles = self.tiles();
        // The pixels of a tile at `start`; at a known position (`fixed`: the pixels before
        // it, which the previous tile computes, and their taps) each pixel's taps inside
        // the input, none for the pixels before `fixed`.
        let pixels_at = |start: usize, fixed: Option<usize>| -> Vec<Pixel> {
            (0..self.pixels)
                .map(|delta| Pixel {
                    delta,
                    valid: fixed.map(|keep| {
                        (0..cols.kernel)
                            .map(|t| {
                                let ix = input_at(cols, start + delta, t);
                                delta >= keep && ix >= 0 && ix < cols.input as i64
                            })
                            .collect()
                    }),
                })
                .collect()
        };
        let each_tile = |k: &mut KernelBuilder, part: &dyn Fn(usize) -> Part| {
            for &at in &tiles {
                match at {
                    TileAt::Static { start, keep } => {
                        let pixels = pixels_at(start, Some(keep));
                        let ox = Expr::Int(start as i64);
                        self.tile(k, f, &tap_rows, &y_row, ox, &pixels, part(keep));
                    }
                    TileAt::Loop { from, end } => {
                        let pixels = pixels_at(from, None);
                        k.for_loop(
                            from as i64,
                            end as i64,
                            self.pixels as i64,
                            LoopKind::Serial,
                            |k, ox| self.tile(k, f, &tap_rows, &y_row, ox, &pixels, part(0)),
                        );
                    }
                }
            }
        };
        let Some((scratch, first)) = &f.scratch else {
            each_tile(k, &|_| Part::Whole);
            return;
        };
        // The bias into the scratch row, the chunks' sums onto it, then the output.
        k.range(cols.output, |k, ox| {
            let at = Expr::Local(k.declare(Ty::I64, sum([first.clone(), times(ox, self.width())])));
            for v in 0..self.vectors() {
                let bias = self.load(f.bufs.b, plus(f.channel.clone(), (v * self.lanes) as i64));
                k.store(*scratch, plus(at.clone(), (v * self.lanes) as i64), bias);
            }
        });
        k.range(self.cg / self.chunk, |k, c| {
            let first = Expr::Local(k.declare(Ty::I64, times(c, self.chunk)));
            each_tile(k, &|keep| Part::Chunk {
                first: first.clone(),
                keep,
            });
        });
        each_tile(k, &|_| Part::Finish);
    }

    /// The tiles of a row: static ones where a pixel has taps outside the input, a loop
    /// over the interior ones between them. The last may overlap the one before: it then
    /// computes only its new pixels and comes first, its other lanes holding the bias alone
    /// until the tile before stores over them (a conv's output never shares memory with its
    /// operands).
    fn tiles(&self) -> Vec<TileAt> {
        let cols = self.cols;
        let (lo, hi) = interior(cols);
        let mut tiles = Vec::new();
        let mut x = 0;
        while x < lo && x + self.pixels <= cols.output {
            tiles.push(TileAt::Static { start: x, keep: 0 });
            x += self.pixels;
        }
        if x + self.pixels <= hi {
            let end = x + (hi - x) / self.pixels * self.pixels;
            tiles.push(TileAt::Loop { from: x, end });
            x = end;
        }
        while x < cols.output {
            let start = x.min(cols.output - self.pixels);
            tiles.push(TileAt::Static {
                start,
                keep: x - start,
            });
            x = start + self.pixels;
        }
        if matches!(tiles.last(), Some(TileAt::Static { keep, .. }) if *keep > 0) {
            tiles.rotate_right(1);
        }
        tiles
    }

    /// One tile at output column `ox`: 4 or 6 pixels × `4Q` channels, summed over the input
    /// channels and taps of `part`; the whole sum is transposed, passed through the
    /// epilogue and stored to the output, a partial one kept in the scratch row.
    #[allow(clippy::too_many_arguments)]
    fn tile(
        &self,
        k: &mut KernelBuilder,
        f: &Frame,
        tap_rows: &[TapRow],
        y_row: &Expr,
        ox: Expr,
        pixels: &[Pixel],
        part: Part,
    ) {
        let (rows, cols) = (self.rows, self.cols);
        let width = self.width();
        let (vectors, lanes) = (self.vectors(), self.lanes);
        let tap_count = rows.kernel * cols.kernel;
        let plane = rows.input * cols.input;
        // The tile's sums in the scratch row (pixel-major, `4Q` per pixel).
        let partial = f.scratch.as_ref().map(|(buf, first)| {
            let at = sum([first.clone(), times(ox.clone(), width)]);
            (*buf, Expr::Local(k.declare(Ty::I64, at)))
        });
        // acc[p][v]: pixel p, channels lanes·v .. lanes·(v + 1) of the block.
        let acc: Vec<Vec<LocalId>> = pixels
            .iter()
            .map(|pixel| {
                (0..vectors)
                    .map(|v| {
                        let init = match (&part, &partial) {
                            (Part::Whole, _) | (_, None) => {
                                self.load(f.bufs.b, plus(f.channel.clone(), (lanes * v) as i64))
                            }
                            (_, Some((buf, at))) => self.load(
                                *buf,
                                plus(at.clone(), (pixel.delta * width + lanes * v) as i64),
                            ),
                        };
                        k.declare(self.ty(), init)
                    })
                    .collect()
            })
            .collect();
        let (first, count) = match &part {
            Part::Whole => (Expr::Int(0), self.cg),
            Part::Chunk { first, .. } => (first.clone(), self.chunk),
            Part::Finish => (Expr::Int(0), 0),
        };
        if count > 0 {
            // The input column of the tile's first pixel and first tap.
            let x_col = Expr::Local(k.declare(
                Ty::I64,
                plus(times(ox.clone(), cols.stride), -(cols.pad as i64)),
            ));
            let x_col_start = x_col.clone();
            let body = |k: &mut KernelBuilder, ci: Expr, unrolled: usize| {
                let ci = sum([first.clone(), ci]);
                // Blocked, `ci` is a multiple of 8 (chunks and the unrolled trip are), so
                // its block starts at `ci · plane`, and a pixel moves on by 8.
                let x_col = if self.blocked {
                    times(x_col.clone(), 8)
                } else {
                    x_col.clone()
                };
                let x_channel = sum([f.x_base.clone(), times(ci.clone(), plane), x_col]);
                let x_channel = Expr::Local(k.declare(Ty::I64, x_channel));
                let w_channel = sum([f.w_base.clone(), times(ci, tap_count * width)]);
                let w_channel = Expr::Local(k.declare(Ty::I64, w_channel));
                if let Some(ahead) = &f.ahead {
                    ahead.read(k);
                    // The rows after the last tap row (those the next output row adds),
                    // spread over the row's tiles: `x_col · stride` from their start.
                    if let Some(last) = tap_rows.last() {
                        let next = sum([
                            last.offset.clone(),
                            Expr::Int(cols.input as i64),
                            times(x_col_start.clone(), rows.stride.saturating_sub(1)),
                        ]);
                        ahead.read_input(k, &x_channel, &next, plane, unrolled);
                    }
                }
                let x_rows: Vec<Expr> = tap_rows
                    .iter()
                    .map(|tap_row| {
                        let offset = if self.blocked {
                            times(tap_row.offset.clone(), 8)
                        } else {
                            tap_row.offset.clone()
                        };
                        let x_row = sum([x_channel.clone(), offset]);
                        Expr::Local(k.declare(Ty::I64, x_row))
                    })
                    .collect();
                for u in 0..unrolled {
                    for (ky, tap_row) in tap_rows.iter().enumerate() {
                        let x_row = &x_rows[ky];
                        for kx in 0..cols.kernel {
                            let live: Vec<&Pixel> = pixels
                                .iter()
                                .filter(|p| p.valid.as_ref().is_none_or(|v| v[kx]))
                                .collect();
                            if live.is_empty() {
                                continue;
                            }
                            let tap = ky * cols.kernel + kx;
                            let weights: Vec<LocalId> = (0..vectors)
                                .map(|v| {
                                    let at = (u * tap_count + tap) * width + lanes * v;
                                    let at = plus(w_channel.clone(), at as i64);
                                    k.declare(self.ty(), self.load(f.bufs.w, at))
                                })
                                .collect();
                            for pixel in live {
                                let at = if self.blocked {
                                    u + 8 * pixel.delta
                                } else {
                                    u * plane + pixel.delta * cols.stride + kx * cols.dilation
                                };
                                let at = plus(x_row.clone(), at as i64);
                                let mut value = Expr::load(f.bufs.x, at);
                                if let Some((iy, clamped)) = &tap_row.check {
                                    value = clamped
                                        .clone()
                                        .cmp(CmpOp::Eq, iy.clone())
                                        .select(value, Expr::Float(0.0));
                                }
                                let xs = if lanes == 8 {
                                    k.declare(Ty::F32x8, value.splat8())
                                } else {
                                    k.declare(Ty::F32x4, value.splat())
                                };
                                for (v, &wv) in weights.iter().enumerate() {
                                    let a = acc[pixel.delta][v];
                                    k.assign(
                                        a,
                                        Expr::Local(xs).fma(Expr::Local(wv), Expr::Local(a)),
                                    );
                                }
                            }
                        }
                    }
                }
            };
            channel_loop(k, count, tap_count, &body);
        }
        match (part, partial) {
            (Part::Chunk { keep, .. }, Some((buf, at))) => {
                for pixel in &pixels[keep..] {
                    for (v, a) in acc[pixel.delta].iter().enumerate() {
                        let index = plus(at.clone(), (pixel.delta * width + lanes * v) as i64);
                        k.store(buf, index, Expr::Local(*a));
                    }
                }
            }
            _ => {
                let at = Expr::Local(k.declare(Ty::I64, sum([y_row.clone(), ox])));
                self.store(k, f, &at, &acc);
            }
        }
    }

    /// Transposes each channel vector's 4 × 4 block and stores four pixels per channel
    /// (6-pixel tiles: pixels 0..4, then 2..6),
    /// from output element `at` of the block's first channel, through the epilogue, one
    /// channel vector at a time (`f32x8` accumulators taken half by half), so few values
    /// are live at once. Padded, from the last lane down: a padding lane's clamped store
    /// precedes the last channel's own; lanes that are a real channel in every block store
    /// without the clamp.
    fn store(&self, k: &mut KernelBuilder, f: &Frame, at: &Expr, acc: &[Vec<LocalId>]) {
        let out_plane = self.rows.output * self.cols.output;
        if self.blocked_output {
            // `at` is the first pixel's offset in the plane; each accumulator is 8 channels
            // of one pixel, stored whole at `[block][pixel][8]`.
            for (p, vectors) in acc.iter().enumerate() {
                for (v, &a) in vectors.iter().enumerate() {
                    let channel = plus(f.channel.clone(), (8 * v) as i64);
                    let index = sum([
                        f.y_batch.clone(),
                        times(channel.clone(), out_plane),
                        times(plus(at.clone(), p as i64), 8),
                    ]);
                    self.conv.epilogue.store8(
                        k,
                        &f.extras,
                        f.bufs.y,
                        index,
                        channel,
                        Expr::Local(a),
                    );
                }
            }
            return;
        }
        let last = self.conv.m as i64 - 1;
        // Lanes below this one hold a real channel in every block (the padding channels
        // are the last block's top lanes), so only the lanes from it on clamp.
        let unclamped = self.width() - (self.blocks * self.width() - self.conv.m);
        // The tile's first element in its block's first channel plane (padded, `at` is an
        // offset within the plane, see `row`).
        let first = if self.padded {
            Expr::Local(k.declare(Ty::I64, sum([f.y_base.clone(), at.clone()])))
        } else {
            at.clone()
        };
        let order: Vec<usize> = if self.padded {
            (0..self.q).rev().collect()
        } else {
            (0..self.q).collect()
        };
        // Groups of 4 pixels, each transposed and stored whole; with 6 pixels the second
        // group is pixels 2..6, storing pixels 2 and 3 again (the same values).
        let groups: Vec<usize> = (0..self.pixels)
            .step_by(4)
            .map(|g| g.min(self.pixels - 4))
            .collect();
        for g in groups {
            let (at, first) = (plus(at.clone(), g as i64), plus(first.clone(), g as i64));
            for &v in &order {
                let r = [0, 1, 2, 3].map(|p| {
                    if self.lanes == 8 {
                        let half = Expr::Local(acc[g + p][v / 2]).half((v % 2) as u8);
                        Expr::Local(k.declare(Ty::F32x4, half))
                    } else {
                        Expr::Local(acc[g + p][v])
                    }
                });
                let mut columns: Vec<(usize, Expr)> = transpose4(k, &r, 0..4)
                    .into_iter()
                    .enumerate()
                    .map(|(c, value)| (4 * v + c, value))
                    .collect();
                if self.padded {
                    columns.reverse();
                }
                for (lane, value) in columns {
                    let store_at = if lane >= unclamped {
                        let channel = plus(f.channel.clone(), lane as i64).clamp(0, last);
                        let channel = Expr::Local(k.declare(Ty::I64, channel));
                        StoreAt {
                            index: sum([
                                f.y_batch.clone(),
                                times(channel.clone(), out_plane),
                                at.clone(),
                            ]),
                            channel,
                        }
                    } else {
                        StoreAt {
                            index: plus(first.clone(), (lane * out_plane) as i64),
                            channel: plus(f.channel.clone(), lane as i64),
                        }
                    };
                    self.conv
                        .epilogue
                        .store(k, &f.extras, f.bufs.y, &store_at, value, 4);
                }
            }
        }
    }
}

/// Columns `wanted` of the 4 × 4 transpose of `rows` (four `f32x4`s): column `c` holds
/// lane `c` of each row, in row order. Four shuffles make the pairs a column needs (two
/// for columns 0–1, two for 2–3), one more each column.
pub(super) fn transpose4(
    k: &mut KernelBuilder,
    rows: &[Expr; 4],
    wanted: std::ops::Range<usize>,
) -> Vec<Expr> {
    // [r0c0 r1c0 r0c1 r1c1], [r0c2 r1c2 r0c3 r1c3], and the same for r2, r3.
    let mut pair = |a: usize, b: usize, lanes: [u8; 4]| {
        Expr::Local(k.declare(Ty::F32x4, rows[a].clone().shuffle(rows[b].clone(), lanes)))
    };
    let low = (wanted.start < 2).then(|| (pair(0, 1, [0, 4, 1, 5]), pair(2, 3, [0, 4, 1, 5])));
    let high = (wanted.end > 2).then(|| (pair(0, 1, [2, 6, 3, 7]), pair(2, 3, [2, 6, 3, 7])));
    wanted
        .map(|c| {
            let (a, b) = if c < 2 { low.clone() } else { high.clone() }
                .expect("the pair of a wanted column is built");
            let lanes = if c % 2 == 0 {
                [0, 1, 4, 5]
            } else {
                [2, 3, 6, 7]
            };
            a.shuffle(b, lanes)
        })
        .collect()
}
