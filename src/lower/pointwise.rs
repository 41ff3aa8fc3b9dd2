//! 1×1 convolutions (stride 1, no padding, one group) as a product of the weights `[M, C]`
//! and the input planes `[C, H·W]`, vectorised along the pixels.
//!
//! A tile is `R` output channels × `V` vectors of 8 consecutive pixels (`R·V` = 12 `f32x8`
//! accumulators: 6 × 2 or 4 × 3), started from the bias. For every input channel it loads
//! the `V` input vectors once and broadcasts each of the `R` weights once from the packed
//! weights `[M / R][C][R]`, then issues `R·V` FMAs. The accumulators hold output pixels in
//! the output's own layout, so the epilogue works on them as they are and each is stored
//! whole: no transpose, unlike the channel-vectorised direct kernel (see
//! [`super::direct_conv`]), whose transposes and stores into `4Q` channel planes cost as
//! much as its FMAs when the layer has few input channels and a large plane (MobileNetV2's
//! expansions on 112×112 and 56×56).
//!
//! It takes planes of 512 pixels or more that do not start at only a few offsets within a
//! page (see [`super::direct_conv`]'s `aliased_streams`): on MobileNetV2's 112×112 planes,
//! whose input and output lines crowd into 4 L1 sets, its 32 → 16 layer ran 0.37 → 0.70
//! ms in the model (1 thread), and the 16 → 96 one, bound by writing its 4.8 MB output, no
//! faster; on its 56×56 and 28×28 expansions it ran 10–15% faster (24 → 144 on 56×56
//! 0.45 → 0.38–0.41 ms, 32 → 192 on 28×28 0.167 → 0.145 ms), as on SqueezeNet's 55×55 and
//! 27×27 expansions (`fovea bench MODEL --profile`, medians of 7–8 alternated runs).
//!
//! The parallel loop runs over (batch, tile of pixels); each iteration computes its pixels
//! for every block of output channels, so the tile's input lines are read from L1 by every
//! block. Where the plane is not a whole number of tiles, the iteration of the last whole
//! tile also computes the plane's last `8V` pixels, overlapping it (same values stored
//! twice, in one iteration).
//!
//! The sum runs over input channels in order, starting from the bias; the interpreter adds
//! the bias last, so results agree to rounding.

use std::sync::Arc;

use super::conv::{Axis, plus, pointwise, split, sum, times};
use super::direct_conv::{
    ConvBuffers, DirectConv, channel_loop, channel_unroll, constants, declare_buffers, page_offsets,
};
use super::ir::{BufId, CmpOp, Expr, KernelBuilder, LocalId, LoopKind, Ty};
use super::{Arg, Kernel, Lowered, LoweredKernel, NodeInfo};
use crate::tensor::Tensor;

/// Lanes of a pixel vector.
pub(super) const LANES: usize = 8;

/// Accumulators per tile.
pub(super) const ACCUMULATORS: usize = 12;

/// The most input channels a layer may have for this kernel: a tile's input lines (one
/// per channel and pixel vector) must stay in L1 while every block of output channels
/// reads them.
const MAX_CHANNELS: usize = 64;

/// The smallest plane this kernel takes. On smaller planes (MobileNetV2's 14×14, SqueezeNet's
/// 13×13) it measured no faster than the direct kernel, or slower (a 13×13 plane is 10
/// tiles and a partial one).
const MIN_PLANE: usize = 512;

/// The channels per tile for `m` output channels: 6 (× 2 pixel vectors) or 4 (× 3).
fn channels_per_tile(m: usize) -> Option<usize> {
    [6, 4].into_iter().find(|&r| m.is_multiple_of(r))
}

/// The kernel for `conv`, or `None` when it does not apply: not a 1×1, stride-1, unpadded,
/// ungrouped convolution with 256-bit vectors, constant weights, at most
/// [`MAX_CHANNELS`] input channels, output channels a multiple of 4 and a plane of at
/// least [`MIN_PLANE`] pixels whose planes start at more than 4 offsets within a page.
pub(super) fn lower(node: &NodeInfo<'_>, conv: &DirectConv<'_>) -> Option<Lowered> {
    let plane: usize = conv.axes.iter().map(|a: &Axis| a.input).product();
    if plane < MIN_PLANE || page_offsets(plane) <= 4 {
        return None;
    }
    // (`MIN_PLANE` is more than a tile.)
    let (r, packed, bias) = pack(conv)?;
    let tile = Tile {
        conv,
        x_plane: plane,
        y_plane: plane,
        r,
        v: ACCUMULATORS / r,
        block_planes: false,
    };
    let kernel = tile.kernel(node.name, plane, packed, bias);
    let mut args = vec![Arg::Input(0), Arg::Const, Arg::Const, Arg::Output(0)];
    args.extend(conv.epilogue.args());
    Some(Lowered {
        kernels: vec![LoweredKernel { kernel, args }],
        scratch: Vec::new(),
    })
}

/// The channels per tile and the packed weights `[M / R][C][R]` and bias of `conv`, or
/// `None` when this kernel's tile does not apply to it (see [`lower`]; any plane).
pub(super) fn pack(conv: &DirectConv<'_>) -> Option<(usize, Arc<Tensor>, Arc<Tensor>)> {
    if !pointwise(conv.axes) || conv.group != 1 || !crate::codegen::wide_vectors() {
        return None;
    }
    if conv.c == 0 || conv.c > MAX_CHANNELS {
        return None;
    }
    let r = channels_per_tile(conv.m)?;
    if conv.weights.shape() != [conv.m, conv.c, 1, 1] {
        return None;
    }
    let w = conv.weights.as_f32()?;
    // [block][ci][j] = w[block * r + j][ci]
    let mut packed = vec![0f32; conv.m * conv.c];
    for block in 0..conv.m / r {
        for ci in 0..conv.c {
            for j in 0..r {
                packed[(block * conv.c + ci) * r + j] = w[(block * r + j) * conv.c + ci];
            }
        }
    }
    let (packed, bias) = constants(conv, packed, conv.m)?;
    Some((r, packed, bias))
}

/// The geometry of the tile.
pub(super) struct Tile<'a> {
    pub conv: &'a DirectConv<'a>,
    /// Elements between consecutive input channels.
    pub x_plane: usize,
    /// Elements between consecutive output channels.
    pub y_plane: usize,
    /// Output channels per tile.
    pub r: usize,
    /// Pixel vectors per tile.
    pub v: usize,
    /// Whether the output holds only the block's `R` planes (a band's scratch), rather
    /// than every channel's.
    pub block_planes: bool,
}

/// The buffers and positions of one parallel iteration.
pub(super) struct Frame {
    pub bufs: ConvBuffers,
    pub extras: Vec<BufId>,
    /// The iteration's batch: its first input and output elements.
    pub x_batch: Expr,
    pub y_batch: Expr,
}

impl Tile<'_> {
    /// Pixels per tile.
    pub(super) fn pixels(&self) -> usize {
        self.v * LANES
    }

    /// The kernel over planes of `plane` pixels.
    fn kernel(&self, name: &str, plane: usize, packed: Arc<Tensor>, bias: Arc<Tensor>) -> Kernel {
        let conv = self.conv;
        let pixels = self.pixels();
        let whole = plane / pixels;
        let tail = !plane.is_multiple_of(pixels);
        let mut k = KernelBuilder::new(name);
        k.set_schedule(format!(
            "pointwise, tile {} channels x {pixels} pixels ({} f32x8 accumulators along the \
             pixels), {} tiles of the plane in parallel{}, input channels unrolled by {}",
            self.r,
            self.r * self.v,
            whole,
            if tail {
                format!(", the last {} pixels with the last tile", plane % pixels)
            } else {
                String::new()
            },
            channel_unroll(conv.c, 1),
        ));
        let bufs = declare_buffers(&mut k, conv, plane, plane, packed, bias);
        let extras = conv.epilogue.declare(&mut k);
        k.for_loop(
            0,
            (conv.n * whole) as i64,
            1,
            LoopKind::Parallel,
            |k, it| {
                let (batch, t) = split(it, conv.n, whole);
                let batch = Expr::Local(k.declare(Ty::I64, batch));
                let t = Expr::Local(k.declare(Ty::I64, t));
                let frame = Frame {
                    bufs,
                    extras: extras.clone(),
                    x_batch: Expr::Local(k.declare(Ty::I64, times(batch.clone(), conv.c * plane))),
                    y_batch: Expr::Local(k.declare(Ty::I64, times(batch, conv.m * plane))),
                };
                self.tile(k, &frame, times(t.clone(), pixels));
                if tail {
                    let last = t.cmp(CmpOp::Eq, Expr::Int(whole as i64 - 1));
                    k.if_else(
                        last,
                        |k| self.tile(k, &frame, Expr::Int((plane - pixels) as i64)),
                        |_| {},
                    );
                }
            },
        );
        k.finish()
    }

    /// The tile of pixels `p0..p0 + 8V`, for every block of output channels.
    fn tile(&self, k: &mut KernelBuilder, f: &Frame, p0: Expr) {
        let x_tile = Expr::Local(k.declare(Ty::I64, sum([f.x_batch.clone(), p0.clone()])));
        let y_tile = Expr::Local(k.declare(Ty::I64, sum([f.y_batch.clone(), p0])));
        k.range(self.conv.m / self.r, |k, block| {
            self.block(k, f, &x_tile, &y_tile, block)
        });
    }

    /// Output channels `R·block..R·(block + 1)` of the pixels from `x_tile` in the input
    /// (its first channel) to `y_tile` in the output.
    pub(super) fn block(
        &self,
        k: &mut KernelBuilder,
        f: &Frame,
        x_tile: &Expr,
        y_tile: &Expr,
        block: Expr,
    ) {
        let conv = self.conv;
        let (r, v) = (self.r, self.v);
        {
            let first = Expr::Local(k.declare(Ty::I64, times(block.clone(), r)));
            let w_block = Expr::Local(k.declare(Ty::I64, times(block, conv.c * r)));
            // Accumulators [j][vector], from the bias.
            let acc: Vec<Vec<LocalId>> = (0..r)
                .map(|j| {
                    let bias = Expr::Local(k.declare(
                        Ty::F32x8,
                        Expr::load(f.bufs.b, plus(first.clone(), j as i64)).splat8(),
                    ));
                    (0..v).map(|_| k.declare(Ty::F32x8, bias.clone())).collect()
                })
                .collect();
            channel_loop(k, conv.c, 1, &|k, ci, u| {
                let x_at = Expr::Local(k.declare(
                    Ty::I64,
                    sum([x_tile.clone(), times(ci.clone(), self.x_plane)]),
                ));
                let w_at = Expr::Local(k.declare(Ty::I64, sum([w_block.clone(), times(ci, r)])));
                for c in 0..u {
                    let inputs: Vec<Expr> = (0..v)
                        .map(|p| {
                            let at = plus(x_at.clone(), (c * self.x_plane + p * LANES) as i64);
                            Expr::Local(k.declare(Ty::F32x8, Expr::load8(f.bufs.x, at)))
                        })
                        .collect();
                    for (j, row) in acc.iter().enumerate() {
                        let weight = Expr::load(f.bufs.w, plus(w_at.clone(), (c * r + j) as i64));
                        let weight = Expr::Local(k.declare(Ty::F32x8, weight.splat8()));
                        for (&a, input) in row.iter().zip(&inputs) {
                            k.assign(a, weight.clone().fma(input.clone(), Expr::Local(a)));
                        }
                    }
                }
            });
            for (j, row) in acc.iter().enumerate() {
                let channel = plus(first.clone(), j as i64);
                let plane_index = if self.block_planes {
                    Expr::Int(j as i64)
                } else {
                    channel.clone()
                };
                let y_row = Expr::Local(k.declare(
                    Ty::I64,
                    sum([y_tile.clone(), times(plane_index, self.y_plane)]),
                ));
                for (p, &a) in row.iter().enumerate() {
                    let index = plus(y_row.clone(), (p * LANES) as i64);
                    let (extras, value) = (&f.extras, Expr::Local(a));
                    conv.epilogue
                        .store8(k, extras, f.bufs.y, index, channel.clone(), value);
                }
            }
        }
    }
}
