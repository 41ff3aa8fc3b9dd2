//! Winograd convolution for ungrouped convolutions: for 3×3 stride-1 ones F(4×4, 3×3) (4×
//! fewer multiplications than the direct method), F(2×2, 3×3) (2.25×) and F(7×7, 3×3)
//! (5.4×); see below for F(7×7), other kernel sizes and stride 2.
//!
//! Each `m × m` block of outputs (a *tile*, `m` = 2, 4 or 7) is computed from the
//! `(m+2) × (m+2)` block of inputs under it as `Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A` (Lavin and
//! Gray; F(4×4): interpolation points 0, ±1, ±2, ∞), summed over input channels. The kernel
//! weights `g` become `U = G g Gᵀ` (36 or 16 *points* per output × input channel). One
//! kernel computes a layer; per task (a band of tiles and a group of output channels):
//!
//! 1. **Input transform.** For every input channel, the band's input rows are combined
//!    along columns (`Bᵀ d`, four columns at a time, into zero-padded scratch rows so that
//!    padding costs nothing), then each group of 4 tiles is transposed (tiles into lanes)
//!    and combined along rows (`· B`), giving `V[ξ][group][c][4 tiles]` for the points `ξ`.
//!    Channels are pipelined in pairs (see [`Plan::transform_channels`]).
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
//! F(7×7, 3×3) ([`Variant::Cook`]`(7, 3)`, Toom–Cook at ±1, ±2, ±¼, ±¾ and ∞) takes 81
//! points per 49 outputs (5.4× fewer multiplications), and planes of 7, 14, 28 and 56 split
//! into whole tiles where F(4×4) pads 14 to 16 and 7 to 8: on ResNet-18 it takes the 56×56,
//! 28×28 and 14×14 layers (12–17% faster each); a 7×7 plane is one tile, which fills one of
//! the GEMM's 4 lanes, so layer 4 keeps F(4×4). Its tiles' code is long (9 rows of 9
//! points), so the tile groups of the input transform and the output lanes run in loops.
//! Its rounding error is about 6× F(4×4)'s.
//!
//! Other kernels: 2×2 and 4×4 ones take F(4×4, r×r) with matrices built by Toom–Cook
//! ([`toom_cook`], [`Variant::Cook`]), and a stride-2 `K×K` convolution (K = 3–8) runs as a
//! stride-1 `⌈K/2⌉×⌈K/2⌉` one over the four phases of its input, written by a first kernel
//! ([`Phases`]: ResNet's 7×7 stem as F(4×4, 4×4) over 12 phase channels). A 3×3 or 4×4
//! one becomes 2×2 over the phases, which F(7×7, 2×2) computes with 64 points per 49
//! outputs and phase channel (5.2 multiplications per output and input channel against 9
//! direct; Toom–Cook at 0, ±1, ±2, ±½ and ∞, error as F(4×4, 2×2)'s): ResNet-18's layer-2
//! stride-2 3×3 convolution, weights transformed at run time (2.32 → 1.94 ms alone).
//! Smaller planes amortise the weight transform over too few tiles (layer 3's 14×14: no
//! gain, see [`PHASES_MARGIN`]).
//!
//! The tasks are shared equally among one scratch slot per thread (transformed rows, `V`,
//! `M`, run-time `U`), each slot's tasks run in turn. Splitting the output channels into
//! groups repeats the input transform once per group; bands and groups are chosen together
//! for the least work on the busiest thread. On many threads a layer with few bands
//! (ResNet-18's 28×28 and smaller planes are one band) would either leave threads idle or
//! repeat its input transform on each; there the input transform gets a kernel of its own
//! (`{layer}_input`, tasks of a band and a chunk of input channels, writing `V` to a buffer
//! of its own) and the products kernel splits the output channels into groups of any size
//! ([`Plan::split_input`]; ResNet-18 on 16 cores of a Xeon: 28.8 → 7.2–8.1 ms). Whether
//! Winograd pays over the direct kernel, which variant and where the weights are
//! transformed is decided per layer by a cost model ([`Plan::cost`], [`direct_cost`]); the
//! work split never changes what is computed, so results are the same, bit for bit, on any
//! number of threads.
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
/// Bytes of the weights the run-time transform computes at once (a chunk of input
/// channels, every point) before their products use them, where a block's would exceed
/// [`U_WHOLE_BYTES`] (see [`Plan::u_chunk`]).
const U_CHUNK_BYTES: usize = 160 << 10;
/// A block's run-time transformed weights up to this size are computed whole before the
/// products: chunking those of ResNet-18's 56×56 to 14×14 layers (166–332 KB a block) made
/// them 16% slower (more, shorter product loops; the weights stayed in L2 anyway).
const U_WHOLE_BYTES: usize = 512 << 10;

/// Which Winograd algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    /// F(2×2, 3×3): 16 points per 4 outputs (2.25× fewer multiplications than direct).
    F2,
    /// F(4×4, 3×3): 36 points per 16 outputs (4× fewer).
    F4,
    /// F(m×m, r×r) with matrices built by [`toom_cook`]: F(4×4, r×r) for other kernel
    /// sizes `r` (2 or 4: the space-to-depth forms of 3×3 and 7×7 stride-2 convolutions),
    /// and F(7×7, 3×3) (81 points per 49 outputs: 5.4× fewer multiplications, and planes
    /// of 7, 14, 28 and 56 split into whole tiles).
    Cook(usize, usize),
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

/// The matrices of a 1-D Winograd correlation F(m, r): `y = Aᵀ [(G g) ⊙ (Bᵀ d)]` for `m`
/// outputs `y`, `r` taps `g` and `n = m + r − 1` inputs `d`.
#[derive(Clone, Debug, PartialEq)]
struct Matrices {
    /// `n × n`.
    bt: Vec<Vec<f64>>,
    /// `n × r`.
    g: Vec<Vec<f64>>,
    /// `m × n`.
    at: Vec<Vec<f64>>,
}

/// Magnitudes of the finite interpolation points: `count` points are `±` the first
/// `count / 2` of these, plus 0 when `count` is odd (F(4, 3) takes Lavin and Gray's 0, ±1,
/// ±2). Points in ± pairs make the transforms' rows and columns pairs too (an even and an
/// odd half, summed and subtracted: [`apply_rows`], [`apply_columns`]).
const MAGNITUDES: [f64; 3] = [1.0, 2.0, 0.5];

/// The magnitudes of F(7, 3)'s 8 finite points: ±1, ±2, ±¼, ±¾ rounded least of the sets
/// tried in `f32` (max error relative to the tile's largest output over 25 random 256-channel
/// tiles: 5.2e-5, against 2.5e-4 for ±1, ±2, ±½, ±¼ and 6.5e-6 for F(4, 3)).
const MAGNITUDES_7: [f64; 4] = [1.0, 2.0, 0.25, 0.75];

/// The [`Variant::Cook`] algorithms `(m, r)` and their points' magnitudes: F(4×4, r×r) for
/// `r` = 2–5, F(7×7, 2×2) (0, ±1, ±2, ±½: of the sets tried in `f32`, the least error,
/// 1.5e-5 of the largest output over 256 random channels, as F(4, 2)'s 1.4e-5; ±¼ in place
/// of ±½ 1.7e-4) and F(7×7, 3×3).
const COOK: [(usize, usize, &[f64]); 6] = [
    (7, 2, &MAGNITUDES),
    (4, 2, &MAGNITUDES),
    (4, 3, &MAGNITUDES),
    (4, 4, &MAGNITUDES),
    (4, 5, &MAGNITUDES),
    (7, 3, &MAGNITUDES_7),
];

/// F(m, r) by Toom–Cook at `m + r − 2` finite points (± `magnitudes`) and ∞. The correlation is
/// the transpose of the convolution `s = g ∗ h` computed by evaluating both polynomials at
/// the points and interpolating: `Aᵀ` is the Vandermonde matrix of `h`'s `m` coefficients
/// (transposed), `G` the one of `g`'s `r`, and `Bᵀ` the transposed interpolation: row `j`
/// holds the coefficients of `Π_{l≠j} (x − a_l)` (of `Π_l (x − a_l)` for ∞), each scaled
/// by a power of two to integers; `G`'s rows carry the rest of the scale,
/// `1 / Π_{l≠j} (a_j − a_l)`, so that the run-time transforms multiply by small integers
/// and powers of the points only. `None` past the magnitudes.
fn toom_cook(m: usize, r: usize, magnitudes: &[f64]) -> Option<Matrices> {
    let n = m + r - 1;
    let count = n.checked_sub(1)?;
    let mut finite = if count % 2 == 1 {
        vec![0.0]
    } else {
        Vec::new()
    };
    for &a in magnitudes.get(..count / 2)? {
        finite.extend([a, -a]);
    }
    let mul = |p: &[f64], a: f64| {
        // p · (x − a), coefficients in ascending powers.
        let mut q = vec![0.0; p.len() + 1];
        for (i, &c) in p.iter().enumerate() {
            q[i + 1] += c;
            q[i] -= a * c;
        }
        q
    };
    let mut bt = Vec::with_capacity(n);
    let mut g = Vec::with_capacity(n);
    for (j, &a) in finite.iter().enumerate() {
        let mut poly = vec![1.0];
        let mut denominator = 1.0;
        for (l, &b) in finite.iter().enumerate() {
            if l != j {
                poly = mul(&poly, b);
                denominator *= a - b;
            }
        }
        poly.resize(n, 0.0);
        // The least power of two that makes every coefficient an integer.
        let mut scale = 1.0;
        while poly.iter().any(|c| (c * scale).fract() != 0.0) && scale < 1024.0 {
            scale *= 2.0;
        }
        bt.push(poly.iter().map(|c| c * scale).collect());
        g.push(
            (0..r)
                .map(|k| a.powi(k as i32) / (denominator * scale))
                .collect(),
        );
    }
    let full = finite.iter().fold(vec![1.0], |p, &a| mul(&p, a));
    bt.push(full);
    g.push((0..r).map(|k| if k == r - 1 { 1.0 } else { 0.0 }).collect());
    let at = (0..m)
        .map(|i| {
            let mut row: Vec<f64> = finite.iter().map(|a| a.powi(i as i32)).collect();
            row.push(if i == m - 1 { 1.0 } else { 0.0 });
            row
        })
        .collect();
    Some(Matrices { bt, g, at })
}

/// The input channels unrolled per trip of a products loop: 4, or the largest divisor of
/// `c` below it.
fn channel_unroll(c: usize) -> usize {
    let mut unroll = 4.min(c);
    while !c.is_multiple_of(unroll) {
        unroll -= 1;
    }
    unroll
}

/// The addresses of one trip of a products loop, from input channel `ci`: the weights'
/// row from `u_at` and `V`'s from `v_group`, once per trip (the unrolled channels are
/// constant offsets from them).
fn product_rows(k: &mut KernelBuilder, u_at: &Expr, v_group: &Expr, ci: Expr) -> (Expr, Expr) {
    let u_row = sum([u_at.clone(), times(ci.clone(), WIDTH)]);
    let u_row = Expr::Local(k.declare(Ty::I64, u_row));
    let v_row = sum([v_group.clone(), times(ci, GROUP)]);
    (u_row, Expr::Local(k.declare(Ty::I64, v_row)))
}

/// `c · x + acc`. The x86-64 FMA (`vfmadd231ps`, see `vendor/cranelift-codegen/FOVEA.md`)
/// overwrites `acc`, so `x`, which the transforms read again, is never copied.
fn scaled(c: f32, x: Expr, acc: Expr) -> Expr {
    Expr::Float(c).fma(x, acc)
}

/// `Σ coefficient · value` over the nonzero coefficients, as adds, subtracts and FMAs.
/// The terms scaled by other than ±1 come first, so the sum starts from a product of its
/// own, which the FMAs then overwrite; a sum that started from a value the transforms read
/// again would have to copy it first. The ±1 terms follow as adds and subtracts, which
/// overwrite nothing.
fn combine(terms: impl IntoIterator<Item = (f64, Expr)>) -> Expr {
    let mut acc: Option<Expr> = None;
    let (unit, scaled_terms): (Vec<_>, Vec<_>) = terms
        .into_iter()
        .filter(|(c, _)| *c != 0.0)
        .partition(|(c, _)| c.abs() == 1.0);
    for (c, e) in scaled_terms.into_iter().chain(unit) {
        acc = Some(match acc {
            None if c == 1.0 => e,
            None => e.mul(Expr::Float(c as f32)),
            Some(a) if c == 1.0 => a.add(e),
            Some(a) if c == -1.0 => a.sub(e),
            Some(a) => scaled(c as f32, e, a),
        });
    }
    acc.unwrap_or_else(|| Expr::Float(0.0).splat())
}

/// `rows · d` for a matrix whose rows come in pairs `b = ±(a with its odd-index entries
/// negated)` (the rows of `Bᵀ` and `G` at points ±a): each pair's even and odd halves are
/// summed once and the two rows are their sum and difference.
fn apply_rows(k: &mut KernelBuilder, rows: &[Vec<f64>], d: Vec<Expr>, ty: Ty) -> Vec<Expr> {
    let d: Vec<Expr> = d
        .into_iter()
        .map(|e| Expr::Local(k.declare(ty, e)))
        .collect();
    let flipped = |row: &[f64]| -> Vec<f64> {
        let sign = |i: usize| if i % 2 == 1 { -1.0 } else { 1.0 };
        row.iter().enumerate().map(|(i, c)| c * sign(i)).collect()
    };
    let half = |row: &[f64], parity: usize| {
        let terms: Vec<(f64, Expr)> = row
            .iter()
            .zip(&d)
            .enumerate()
            .filter(|(i, _)| i % 2 == parity)
            .map(|(_, (&c, e))| (c, e.clone()))
            .collect();
        combine(terms)
    };
    let mut out: Vec<Option<Expr>> = vec![None; rows.len()];
    for a in 0..rows.len() {
        if out[a].is_some() {
            continue;
        }
        let mirror = flipped(&rows[a]);
        let odd_nonzero = rows[a].iter().skip(1).step_by(2).any(|&c| c != 0.0);
        let even_nonzero = rows[a].iter().step_by(2).any(|&c| c != 0.0);
        let pair = (a + 1..rows.len()).find(|&b| {
            out[b].is_none()
                && (rows[b] == mirror || rows[b].iter().zip(&mirror).all(|(x, y)| *x == -y))
        });
        match pair {
            Some(b) if odd_nonzero && even_nonzero => {
                let even = Expr::Local(k.declare(ty, half(&rows[a], 0)));
                let odd = Expr::Local(k.declare(ty, half(&rows[a], 1)));
                out[a] = Some(even.clone().add(odd.clone()));
                out[b] = Some(if rows[b] == mirror {
                    even.sub(odd)
                } else {
                    odd.sub(even)
                });
            }
            _ => {
                let terms = rows[a].iter().copied().zip(d.iter().cloned());
                out[a] = Some(combine(terms));
            }
        }
    }
    out.into_iter().flatten().collect()
}

/// `at · m` for a matrix whose columns come in pairs `j' = (j with its odd-index rows
/// negated)` (the columns of `Aᵀ` at points ±a): each pair's sum and difference are taken
/// once and feed the even and odd rows.
fn apply_columns(k: &mut KernelBuilder, at: &[Vec<f64>], m: Vec<Expr>) -> Vec<Expr> {
    let n = m.len();
    let column = |j: usize| -> Vec<f64> { at.iter().map(|row| row[j]).collect() };
    // Per pair, at its first column: the sum and the difference; `taken` marks both columns.
    let mut paired: Vec<Option<(Expr, Expr)>> = vec![None; n];
    let mut taken = vec![false; n];
    for j in 0..n {
        if taken[j] {
            continue;
        }
        let cj = column(j);
        let mirror: Vec<f64> = cj
            .iter()
            .enumerate()
            .map(|(i, c)| if i % 2 == 1 { -c } else { *c })
            .collect();
        if cj == mirror {
            continue;
        }
        if let Some(jj) = (j + 1..n).find(|&jj| !taken[jj] && column(jj) == mirror) {
            taken[j] = true;
            taken[jj] = true;
            let a = Expr::Local(k.declare(Ty::F32x4, m[j].clone()));
            let b = Expr::Local(k.declare(Ty::F32x4, m[jj].clone()));
            let s = Expr::Local(k.declare(Ty::F32x4, a.clone().add(b.clone())));
            let d = Expr::Local(k.declare(Ty::F32x4, a.sub(b)));
            paired[j] = Some((s, d));
        }
    }
    at.iter()
        .enumerate()
        .map(|(i, row)| {
            let mut terms = Vec::new();
            for j in 0..n {
                if let Some((s, d)) = &paired[j] {
                    terms.push((row[j], if i % 2 == 0 { s.clone() } else { d.clone() }));
                } else if !taken[j] {
                    terms.push((row[j], m[j].clone()));
                }
            }
            combine(terms)
        })
        .collect()
}

impl Variant {
    /// Outputs per tile side.
    fn out(self) -> usize {
        match self {
            Variant::F2 => 2,
            Variant::F4 => 4,
            Variant::Cook(m, _) => m,
        }
    }

    /// Kernel taps per side.
    fn kernel(self) -> usize {
        match self {
            Variant::F2 | Variant::F4 => 3,
            Variant::Cook(_, r) => r,
        }
    }

    /// Kernel taps (`r²`): what weights transformed at run time read per channel pair.
    fn taps(self) -> usize {
        self.kernel() * self.kernel()
    }

    /// Inputs per tile side.
    fn input(self) -> usize {
        self.out() + self.kernel() - 1
    }

    /// Transform points per tile.
    fn points(self) -> usize {
        self.input() * self.input()
    }

    /// The Toom–Cook matrices of a [`Variant::Cook`].
    fn matrices(self) -> Option<&'static Matrices> {
        // Built once per algorithm: the emitters ask for them at every transform.
        static MATRICES: std::sync::OnceLock<Vec<Option<Matrices>>> = std::sync::OnceLock::new();
        match self {
            Variant::F2 | Variant::F4 => None,
            Variant::Cook(m, r) => {
                let i = COOK.iter().position(|&(cm, cr, _)| (cm, cr) == (m, r))?;
                MATRICES
                    .get_or_init(|| {
                        COOK.iter()
                            .map(|&(m, r, magnitudes)| toom_cook(m, r, magnitudes))
                            .collect()
                    })
                    .get(i)?
                    .as_ref()
            }
        }
    }

    /// `G` (`input() × kernel()`).
    fn g(self) -> Vec<Vec<f64>> {
        match self {
            Variant::F2 => G2.iter().map(|r| r.to_vec()).collect(),
            Variant::F4 => G4.iter().map(|r| r.to_vec()).collect(),
            Variant::Cook(..) => self.matrices().map(|m| m.g.clone()).unwrap_or_default(),
        }
    }

    /// Vector instructions of the input transform per tile and input channel, and of the
    /// output transform per tile and block of 8 output channels (counted from the code;
    /// for [`Variant::Cook`], estimated from the matrices' nonzeros the same way).
    fn transform_cost(self) -> (f64, f64) {
        match self {
            Variant::F2 => (22.0, 82.0),
            Variant::F4 => (60.0, 290.0),
            Variant::Cook(..) => {
                let Some(m) = self.matrices() else {
                    return (f64::INFINITY, f64::INFINITY);
                };
                let nonzeros =
                    |rows: &[Vec<f64>]| rows.iter().flatten().filter(|c| **c != 0.0).count() as f64;
                let (n, out) = (self.input() as f64, self.out() as f64);
                let (b, a) = (nonzeros(&m.bt), nonzeros(&m.at));
                // Columns: per 4 columns n loads, the combinations, n stores; tiles: per 4
                // tiles and row, the loads and transposes, the combinations, n stores.
                let input = (2.0 * n + b) * out / 4.0 + n * (3.0 * n + b) / 4.0;
                // Per vector of 4 channels: loads and column combinations, row combinations,
                // bias, transposes and stores.
                let output = 2.0 * (n * (n + a) + out * a + out * out + 8.0 * out);
                (input, output)
            }
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
                let a = local(scaled(-4.0, d[2].clone(), d[4].clone()));
                let b = local(scaled(-4.0, d[1].clone(), d[3].clone()));
                let c = local(d[4].clone().sub(d[2].clone()));
                let e = local(d[3].clone().sub(d[1].clone()).mul(f(2.0)));
                vec![
                    scaled(4.0, d[0].clone(), scaled(-5.0, d[2].clone(), d[4].clone())),
                    a.clone().add(b.clone()),
                    a.sub(b),
                    c.clone().add(e.clone()),
                    c.sub(e),
                    scaled(4.0, d[1].clone(), scaled(-5.0, d[3].clone(), d[5].clone())),
                ]
            }
            Variant::Cook(..) => {
                let bt = self.matrices().map_or(&[][..], |m| &m.bt[..]);
                apply_rows(k, bt, d, Ty::F32x4)
            }
        }
    }

    /// `G g` along one axis: the `input()` transformed values of a kernel's taps (in
    /// `f32`, for weights transformed at run time).
    fn weight_points(self, k: &mut KernelBuilder, g: Vec<Expr>, ty: Ty) -> Vec<Expr> {
        if let Variant::Cook(..) = self {
            return apply_rows(k, &self.g(), g, ty);
        }
        let mut local = |e: Expr| Expr::Local(k.declare(ty, e));
        let [g0, g1, g2] = [0, 1, 2].map(|i| local(g[i].clone()));
        let a = local(g0.clone().add(g2.clone()));
        if self == Variant::F2 {
            return vec![g0, a.clone().add(g1.clone()), a.sub(g1), g2];
        }
        // g0 + 4·g2
        let b = local(scaled(4.0, g2.clone(), g0.clone()));
        vec![
            g0,
            a.clone().add(g1.clone()),
            a.sub(g1.clone()),
            scaled(2.0, g1.clone(), b.clone()),
            scaled(-2.0, g1, b),
            g2,
        ]
    }

    /// Vector instructions to transform one input channel's weights of a block of 8 output
    /// channels at run time (two vectors of 4 channels: loads, `G g Gᵀ`, stores; counted from
    /// the code, for [`Variant::Cook`] estimated from `G`'s nonzeros). With `f32x8` the
    /// transform takes one vector of 8, half the instructions, but the model keeps the
    /// count it was calibrated with: halved, it took F(7×7) for ResNet-18's 14×14 layers,
    /// 22% slower than the F(4×4) it takes with this count (12 alternated runs, normalised
    /// by the layers it does not change).
    fn weight_transform_cost(self) -> f64 {
        match self {
            Variant::F2 => 84.0,
            Variant::F4 => 155.0,
            Variant::Cook(_, r) => {
                let Some(m) = self.matrices() else {
                    return f64::INFINITY;
                };
                let nonzeros = m.g.iter().flatten().filter(|c| **c != 0.0).count() as f64;
                let (n, r, taps) = (self.input() as f64, r as f64, self.taps() as f64);
                // Per lane: r² loads, `G` down r columns and along `n` rows, `n²` stores.
                2.0 * (taps + (r + n) * nonzeros + n * n)
            }
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
                    scaled(0.5, m1.clone().add(m2.clone()), m[0].clone()),
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
                    scaled(
                        1.0 / 24.0,
                        s34.clone(),
                        scaled(0.25, m[0].clone(), s12.clone()),
                    ),
                    scaled(1.0 / 12.0, d34.clone(), d12.clone()),
                    scaled(1.0 / 6.0, s34, s12),
                    scaled(1.0 / 3.0, d34, d12).add(m[5].clone()),
                ]
            }
            Variant::Cook(..) => {
                let at = self.matrices().map_or(&[][..], |m| &m.at[..]);
                apply_columns(k, at, m)
            }
        }
    }
}

/// The Winograd kernels for `conv` (a phase kernel first for stride 2), or `None` when
/// Winograd does not apply (kernel sizes or strides other than [`Geometry::of`] and
/// [`Phases::of`] take, grouped, output channels not a multiple of 8, rows narrower than 4
/// outputs) or when the cost model prefers the direct kernel. Of the variants that fit,
/// the one the cost model finds cheaper.
pub(super) fn lower(node: &NodeInfo<'_>, conv: &DirectConv<'_>) -> Option<Lowered> {
    if conv.blocked.input || !conv.blocked_output_possible() {
        return None;
    }
    let winograd = node.options.winograd;
    let threads = node.options.threads;
    // The layer itself (stride 1) or its four phases (stride 2), and the variants that fit.
    let (geometry, phases) = match Phases::of(conv) {
        Some(phases) => (phases.geometry, Some(phases)),
        None => (Geometry::of(conv)?, None),
    };
    let variants: Vec<Variant> = match (winograd, geometry.kernel) {
        (Winograd::Off, _) => return None,
        (Winograd::Auto, 3) => vec![Variant::F4, Variant::F2, Variant::Cook(7, 3)],
        (Winograd::F2x2, 3) => vec![Variant::F2],
        (Winograd::F4x4, 3) => vec![Variant::F4],
        (Winograd::F7x7, 3) => vec![Variant::Cook(7, 3)],
        (Winograd::F7x7, 2) => vec![Variant::Cook(7, 2)],
        (Winograd::Auto, 2) => vec![Variant::Cook(4, 2), Variant::Cook(7, 2)],
        (Winograd::Auto | Winograd::F4x4, r) => vec![Variant::Cook(4, r)],
        (Winograd::F2x2 | Winograd::F7x7, _) => return None,
    };
    // What is computed (the algorithm, where the weights are transformed, Winograd or not)
    // is chosen as for one thread, so that results are the same, bit for bit, on any
    // number of threads; only the work split depends on them.
    let single = variants
        .iter()
        .filter_map(|&v| Plan::new(&geometry, v, 1))
        .min_by(|a, b| a.cost().total_cmp(&b.cost()))?;
    let (extra, margin) = match &phases {
        Some(phases) => (phases.cost(), PHASES_MARGIN),
        None => (0.0, MARGIN),
    };
    if winograd == Winograd::Auto && single.cost() + extra >= margin * direct_cost(conv)? {
        return None;
    }
    let plan = if threads > 1 {
        Plan::new(&geometry, single.variant, threads)?
            .with_weights(single.runtime_weights)
            .split_input(threads)
    } else {
        single
    };
    let phase_weights;
    let w = match &phases {
        Some(phases) => {
            phase_weights = phases.weights(conv.weights.as_f32()?);
            &phase_weights[..]
        }
        None => conv.weights.as_f32()?,
    };
    let u = if plan.runtime_weights {
        pack_taps(w, plan.g.m, plan.g.c, plan.variant.taps())
    } else {
        transform_weights(plan.variant, w, plan.g.m, plan.g.c)
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
    let mut kernels = Vec::new();
    // Scratch 0: the slots; 1: `V` when the input transform has a kernel of its own; then
    // the phases.
    let mut scratch = vec![(DType::F32, plan.total_slots() * plan.slot())];
    if plan.split.is_some() {
        scratch.push((DType::F32, plan.bands() * plan.v_len()));
    }
    let x = match &phases {
        Some(phases) => {
            let at = scratch.len();
            scratch.push((DType::F32, phases.len()));
            kernels.push(LoweredKernel {
                kernel: phases.kernel(&format!("{}_phases", node.name)),
                args: vec![Arg::Input(0), Arg::Scratch(at)],
            });
            Arg::Scratch(at)
        }
        None => Arg::Input(0),
    };
    kernels.extend(plan.kernels(node.name, conv, x, (Arc::new(u), Arc::new(bias))));
    Some(Lowered { kernels, scratch })
}

/// The stride-1, ungrouped, square-kernel convolution a Winograd kernel computes: a
/// layer's own, or the four phases of a stride-2 layer ([`Phases`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Geometry {
    n: usize,
    /// Input and output channels.
    c: usize,
    m: usize,
    /// Input rows and columns.
    h: usize,
    w: usize,
    /// Output rows and columns.
    oh: usize,
    ow: usize,
    /// Padding before the first row and column (at most `kernel − 1`).
    pad_top: usize,
    pad_left: usize,
    /// Taps per side.
    kernel: usize,
}

/// The kernel side and the two axes of `conv` if it is ungrouped and undilated, with a
/// square kernel (weights `[M][C][K][K]`) and `stride` on both axes.
fn square<'a>(conv: &DirectConv<'a>, stride: usize) -> Option<(usize, &'a Axis, &'a Axis)> {
    let [rows, cols] = conv.axes else {
        return None;
    };
    let k = rows.kernel;
    let fits = |a: &Axis| a.kernel == k && a.stride == stride && a.dilation == 1;
    if !fits(rows) || !fits(cols) || conv.group != 1 {
        return None;
    }
    (conv.weights.shape() == [conv.m, conv.c, k, k]).then_some((k, rows, cols))
}

impl Geometry {
    /// The geometry of `conv` if it is a stride-1, undilated, ungrouped convolution with a
    /// square kernel of 2 to 4 taps a side.
    fn of(conv: &DirectConv<'_>) -> Option<Geometry> {
        let (r, rows, cols) = square(conv, 1)?;
        if !(2..=4).contains(&r) || rows.pad >= r || cols.pad >= r {
            return None;
        }
        Some(Geometry {
            n: conv.n,
            c: conv.c,
            m: conv.m,
            h: rows.input,
            w: cols.input,
            oh: rows.output,
            ow: cols.output,
            pad_top: rows.pad,
            pad_left: cols.pad,
            kernel: r,
        })
    }
}

/// A stride-2 convolution as a stride-1 one over the four phases of its input (a
/// space-to-depth): input channel `(2·py + px)·C + c` at `(Y, X)` is the layer's input `c`
/// at `(2Y + py − pad_top, 2X + px − pad_left)` (zero outside it), and that channel's tap
/// `(a, b)` is the layer's tap `(2a + py, 2b + px)` (zero past the kernel). A `K × K`
/// kernel becomes `⌈K/2⌉ × ⌈K/2⌉` over 4× the channels, which Winograd computes with
/// 2–4× fewer multiplications than the direct method (ResNet's 7×7 stem: 147 per output and
/// channel direct, 36.75 by F(4×4, 4×4), from 12 phase channels).
#[derive(Clone, Copy, Debug)]
struct Phases {
    /// The layer's input channels, rows, columns and padding.
    c: usize,
    h: usize,
    w: usize,
    pad_top: usize,
    pad_left: usize,
    /// The layer's taps per side.
    taps: usize,
    /// The stride-1 convolution over the phases (no padding: the phases carry it).
    geometry: Geometry,
}

impl Phases {
    /// The phases of `conv` if it is an ungrouped, undilated, stride-2 convolution with a
    /// square kernel of 3 to 8 taps a side (2 to 4 per phase).
    fn of(conv: &DirectConv<'_>) -> Option<Phases> {
        let (taps, rows, cols) = square(conv, 2)?;
        if !(3..=8).contains(&taps) {
            return None;
        }
        let r = taps.div_ceil(2);
        Some(Phases {
            c: conv.c,
            h: rows.input,
            w: cols.input,
            pad_top: rows.pad,
            pad_left: cols.pad,
            taps,
            geometry: Geometry {
                n: conv.n,
                c: 4 * conv.c,
                m: conv.m,
                h: rows.output + r - 1,
                w: cols.output + r - 1,
                oh: rows.output,
                ow: cols.output,
                pad_top: 0,
                pad_left: 0,
                kernel: r,
            },
        })
    }

    /// Elements of the phase tensor.
    fn len(&self) -> usize {
        let g = &self.geometry;
        g.n * g.c * g.h * g.w
    }

    /// Modelled seconds of the phase kernel (about 6 instructions per element).
    fn cost(&self) -> f64 {
        6.0 * self.len() as f64 / INSTRUCTIONS_PER_SECOND
    }

    /// The phase channels' weights `[M][4C][r][r]` from the layer's `[M][C][K][K]`.
    fn weights(&self, w: &[f32]) -> Vec<f32> {
        let (c, k, r) = (self.c, self.taps, self.geometry.kernel);
        let m = self.geometry.m;
        let mut out = vec![0f32; m * 4 * c * r * r];
        for oc in 0..m {
            for phase in 0..4 {
                let (py, px) = (phase / 2, phase % 2);
                for ci in 0..c {
                    for a in 0..r {
                        for b in 0..r {
                            let (ky, kx) = (2 * a + py, 2 * b + px);
                            if ky < k && kx < k {
                                let to = (((oc * 4 + phase) * c + ci) * r + a) * r + b;
                                out[to] = w[((oc * c + ci) * k + ky) * k + kx];
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// The kernel writing the phase tensor: one parallel iteration per input channel and
    /// phase row, writing that row of all four phases. Within a row the columns whose
    /// inputs all lie inside the input are copied 4 at a time (two loads, one shuffle of
    /// the phase's lanes); the few at the edges are stored one by one, zero where the
    /// padding is.
    fn kernel(&self, name: &str) -> Kernel {
        let g = &self.geometry;
        let mut k = KernelBuilder::new(name);
        k.set_schedule(format!(
            "space-to-depth: {} phase channels of {} x {} from {} channels of {} x {}",
            g.c, g.h, g.w, self.c, self.h, self.w
        ));
        let plane = self.h * self.w;
        let x = k.buffer("x", DType::F32, g.n * self.c * plane, BufferKind::Input);
        let p = k.buffer("phases", DType::F32, self.len(), BufferKind::Output);
        let phase_plane = g.h * g.w;
        let rows = (g.n * self.c * g.h) as i64;
        k.for_loop(0, rows, 1, LoopKind::Parallel, |k, row| {
            let (channel, yy) = split(row, g.n * self.c, g.h);
            let yy = Expr::Local(k.declare(Ty::I64, yy));
            let channel = Expr::Local(k.declare(Ty::I64, channel));
            let (batch, ci) = split(channel.clone(), g.n, self.c);
            // Phase (py, px) of channel ci is phase channel (2·py + px)·C + ci of the batch.
            let p_row = sum([
                times(batch, g.c * phase_plane),
                times(ci, phase_plane),
                times(yy.clone(), g.w),
            ]);
            let p_row = Expr::Local(k.declare(Ty::I64, p_row));
            for py in 0..2 {
                let iy = sum([
                    times(yy.clone(), 2),
                    Expr::Int(py as i64 - self.pad_top as i64),
                ]);
                let iy = Expr::Local(k.declare(Ty::I64, iy));
                let clamped = iy.clone().clamp(0, self.h as i64 - 1);
                let clamped = Expr::Local(k.declare(Ty::I64, clamped));
                let x_row = sum([
                    times(channel.clone(), plane),
                    times(clamped.clone(), self.w),
                ]);
                let x_row = Expr::Local(k.declare(Ty::I64, x_row));
                let inside = clamped.cmp(CmpOp::Eq, iy);
                let phases = |k: &mut KernelBuilder, inside: bool| {
                    for px in 0..2 {
                        let phase = 2 * py + px;
                        let to = plus(p_row.clone(), (phase * self.c * phase_plane) as i64);
                        let to = Expr::Local(k.declare(Ty::I64, to));
                        self.phase_row(k, [x, p], &x_row, &to, px, inside);
                    }
                };
                k.if_else(inside, |k| phases(k, true), |k| phases(k, false));
            }
        });
        k.finish()
    }

    /// One phase row: columns `X` of phase column `px` from the input row at `x_row` (all
    /// zero when the row is outside the input) into the phase tensor at `to`.
    fn phase_row(
        &self,
        k: &mut KernelBuilder,
        [x, p]: [BufId; 2],
        x_row: &Expr,
        to: &Expr,
        px: usize,
        inside: bool,
    ) {
        let width = self.geometry.w;
        // Input column of phase column X.
        let column = |xx: usize| (2 * xx + px) as i64 - self.pad_left as i64;
        let valid = |xx: usize| inside && (0..self.w as i64).contains(&column(xx));
        // Phase columns whose group of 4 reads inputs column(X) .. column(X) + 7 inside the
        // row: a loop of vectors.
        let first = (0..width).find(|&xx| valid(xx)).unwrap_or(width);
        let groups = (first..width)
            .take_while(|&xx| xx + 4 <= width && inside && column(xx) + 7 < self.w as i64)
            .step_by(4)
            .count();
        let end = first + 4 * groups;
        if groups > 0 {
            k.for_loop(first as i64, end as i64, 4, LoopKind::Serial, |k, xx| {
                let from = sum([x_row.clone(), times(xx.clone(), 2), Expr::Int(column(0))]);
                let from = Expr::Local(k.declare(Ty::I64, from));
                let a = Expr::load4(x, from.clone());
                let b = Expr::load4(x, plus(from, 4));
                k.store(p, sum([to.clone(), xx]), a.shuffle(b, [0, 2, 4, 6]));
            });
        }
        for xx in (0..first).chain(end..width) {
            let value = if valid(xx) {
                Expr::load(x, plus(x_row.clone(), column(xx)))
            } else {
                Expr::Float(0.0)
            };
            k.store(p, plus(to.clone(), xx as i64), value);
        }
    }
}

/// Winograd is taken when its modelled time is under this fraction of the direct kernel's.
const MARGIN: f64 = 0.9;

/// The same for a stride-2 layer over its phases, which the model finds cheaper than they
/// are: ResNet-18's layer-2 and layer-3 stride-2 3×3 convolutions by F(7×7, 2×2) with
/// run-time weights, modelled 1.62 and 2.17 ms against 2.14 and 2.58 direct, measured 1.94
/// and 2.56 against 2.32 and 2.54 (alone, 1 thread); the second is no gain.
const PHASES_MARGIN: f64 = 0.8;

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

/// Modelled instructions of the products per 4 tiles × 8 output channels and input
/// channel: 2 weight loads, 4 broadcasts and 8 FMAs with `f32x4`. With `f32x8` (1 weight
/// load, 8 broadcasts and 8 FMAs per 8 tiles: 8.5 per 4) it is fitted to 9.5: with 8.5
/// the model put ResNet-18's 56×56 layers on F(4×4), which ran one alone in 2.0–2.3 ms
/// against F(7×7)'s 1.5 (1 thread, `fovea bench FILE --winograd f4x4|f7x7`), and with 14
/// (the `f32x4` count) its 14×14 ones on F(7×7): 2.7 against F(4×4)'s 1.6–1.7 ms.
fn product_step() -> f64 {
    if crate::codegen::wide_vectors() {
        9.5
    } else {
        14.0
    }
}

/// The same for the direct kernel per 4 pixels × 8 output channels and tap: with `f32x8`,
/// 2 weight loads, 4 broadcasts and 8 FMAs per 16 channels. (Fitted instead to the rate
/// measured on ResNet-18's direct 3×3 layers, 1.2× the `f32x4` kernel's, 11.5, the model
/// moved its stride-2 layers 2 and 3 to the phases' F(7×7, 2×2), which ran them alone
/// 1.7–2.4 against 2.0 ms and 2.3–4.2 against 2.0–2.2 ms direct.)
fn direct_step() -> f64 {
    if crate::codegen::wide_vectors() {
        7.0
    } else {
        14.0
    }
}

/// The direct kernel's modelled seconds for `conv` (4-pixel tiles: per input channel and
/// tap 2 weight loads, 4 broadcasts and 8 FMAs per block of 8 output channels, or of 16
/// with `f32x8`).
fn direct_cost(conv: &DirectConv<'_>) -> Option<f64> {
    let [rows, cols] = conv.axes else {
        return None;
    };
    let taps = rows.kernel * cols.kernel;
    let tiles = (conv.n * rows.output * cols.output.div_ceil(4)) as f64;
    let work = tiles * taps as f64 * direct_step() * conv.c as f64 * (conv.m / WIDTH) as f64;
    Some(work / INSTRUCTIONS_PER_SECOND + weight_seconds(taps * conv.c * conv.m * 4, 1))
}

/// `U[block][ξ][c][j] = (G g Gᵀ)[ξ]` of output channel `block·8 + j` and input channel
/// `c`, computed in `f64` from weights `[m][c][r][r]`.
fn transform_weights(variant: Variant, w: &[f32], m: usize, c: usize) -> Vec<f32> {
    use rayon::prelude::*;
    let (g_matrix, input, r) = (variant.g(), variant.input(), variant.kernel());
    let points = variant.points();
    let mut u = vec![0f32; points * m * c];
    // One block of 8 output channels per task; within it, channel by channel, so that the
    // writes advance through the block's point rows together (in cache) rather than one
    // output channel at a time across all of them.
    u.par_chunks_mut(points * c * WIDTH)
        .enumerate()
        .for_each(|(block, u)| {
            for ci in 0..c {
                for j in 0..WIDTH {
                    let oc = block * WIDTH + j;
                    let g = &w[(oc * c + ci) * r * r..][..r * r];
                    // G g: input × r.
                    let gg: Vec<Vec<f64>> = g_matrix
                        .iter()
                        .map(|gr| {
                            (0..r)
                                .map(|b| (0..r).map(|a| gr[a] * f64::from(g[a * r + b])).sum())
                                .collect()
                        })
                        .collect();
                    for (k, row) in gg.iter().enumerate() {
                        for (l, gl) in g_matrix.iter().enumerate() {
                            let value: f64 = (0..r).map(|b| row[b] * gl[b]).sum();
                            u[((k * input + l) * c + ci) * WIDTH + j] = value as f32;
                        }
                    }
                }
            }
        });
    u
}

/// The direct taps (`taps` per output × input channel) packed `[block of 8 output
/// channels][C][taps][8]` for weights transformed at run time.
fn pack_taps(w: &[f32], m: usize, c: usize, taps: usize) -> Vec<f32> {
    let mut packed = vec![0f32; m * c * taps];
    for oc in 0..m {
        let (block, j) = (oc / WIDTH, oc % WIDTH);
        for ci in 0..c {
            for tap in 0..taps {
                packed[((block * c + ci) * taps + tap) * WIDTH + j] = w[(oc * c + ci) * taps + tap];
            }
        }
    }
    packed
}

/// The `input` columns of one transformed row of 4 tiles, tiles in lanes: column `e` holds
/// element `e` of each tile's row. `load(offset)` loads elements `offset..offset + 4` of the
/// 4 tiles' rows; 4 columns per load, the last load overlapping the one before.
fn tile_columns(
    k: &mut KernelBuilder,
    input: usize,
    load: impl Fn(usize) -> [Expr; 4],
) -> Vec<Expr> {
    let mut d = Vec::with_capacity(input);
    while d.len() < input {
        let start = d.len().min(input - 4);
        d.extend(transpose4(k, &load(start), d.len() - start..4));
    }
    d
}

/// Elements between two points' transformed inputs (`c` channels × `tiles`), padded by a
/// cache line so that the 16–36 stores of one tile group's points never share their low
/// 12 address bits (4K aliasing stalls the loads that follow them).
fn point_stride(c: usize, tiles: usize) -> usize {
    c * tiles + 16
}

/// The input transform in a kernel of its own: its tasks, each a band and a chunk of input
/// channels, shared among `slots` scratch slots ([`Plan::split_input`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct InputSplit {
    /// Chunks of input channels per band (each an even number of channels, or all).
    chunks: usize,
    slots: usize,
}

/// Seconds one more kernel launch costs (posting it, the threads' pickup and the wait for
/// the last).
const LAUNCH_SECONDS: f64 = 5e-6;

/// The input transform's time over its modelled instructions inside the fused kernel,
/// relative to the products', which sets what another output-channel group (each repeats
/// its band's input transform) costs in [`Plan::new`]. Measured by forcing the groups on
/// SqueezeNet's 16 → 64 3×3 layers on 55×55 (7 bands of 2 × 14 tiles), 1 thread: 2 groups
/// 0.82 ms against 0.69 for 1, the 3,136 repeated tile-channel transforms 4.2 times their
/// modelled share of the time; on 2 threads 2 groups (7 × 2 even tasks) ran 0.44–0.49 ms,
/// 1 group (bands split 4 + 3) 0.38–0.41 (6 alternated runs, `fovea bench --profile`).
/// With the instruction count alone the model took 2 groups.
const FUSED_INPUT_TRANSFORM_MEASURED: f64 = 4.0;

/// The input transform's measured time over its modelled instructions (alone, in a kernel
/// of its own, 1 thread: ResNet-18's 56×56, 28×28, 14×14 and 7×7 layers 0.27, 0.11, 0.053
/// and 0.031 ms against 0.10, 0.05, 0.025 and 0.010 modelled: its stores).
const INPUT_TRANSFORM_MEASURED: f64 = 2.5;

/// Bytes per second a thread reads of data other threads wrote (the transformed input, with
/// the input transform in a kernel of its own; the fused plan's repeated transform reads
/// its input, written by all threads, as well). Set by ResNet-18 on 4, 8 and 16 cores of a
/// Xeon (`fovea bench --profile`, every layer split against none): split, layers 1–3 were
/// faster on 4 and 8 threads (layer 2 on 4: 1.09–1.20 → 0.97–0.99 ms), the stem slower,
/// layer 4 even; the model gives those choices between 7 and 12 GB/s. On this 2-core
/// development machine ResNet-18 on 2 threads, layers 2–3 split as the model has them:
/// 19.6–20.4 ms against 19.7–21.3 whole.
const SHARED_BYTES_PER_SECOND: f64 = 8e9;

/// The geometry and work split of one Winograd convolution.
#[derive(Debug)]
struct Plan {
    variant: Variant,
    /// The convolution computed.
    g: Geometry,
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
    /// Whether the input transform has a kernel of its own (see [`InputSplit`]).
    split: Option<InputSplit>,
    /// Whether the weights are transformed at run time, per block of output channels, into
    /// the slot at [`Plan::u_at`] (the kernel then reads the `r²` direct taps per channel
    /// pair instead of 16–81 points: for layers whose transformed weights would be streamed
    /// from memory, this is less traffic than the transform costs).
    runtime_weights: bool,
}

impl Plan {
    fn new(geometry: &Geometry, variant: Variant, threads: usize) -> Option<Plan> {
        let Geometry {
            n,
            c,
            m,
            w,
            oh,
            ow,
            pad_left,
            kernel,
            ..
        } = *geometry;
        if kernel != variant.kernel() || !m.is_multiple_of(WIDTH) || c == 0 || n == 0 {
            return None;
        }
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
                && points * c * padded(band_rows) * 4 <= MAX_BAND_BYTES
        };
        // Output-channel groups for bands of `band_rows` of streamed weights: the fewest that
        // give every thread an iteration (the most if none does), keeping at least 4 blocks
        // per group (each group repeats the input transform).
        let blocks = m / WIDTH;
        let bands = |band_rows: usize| n * tile_rows / band_rows;
        // Output-channel groups of at least 4 blocks.
        let groups = || (1..=blocks).filter(|g| blocks.is_multiple_of(*g) && blocks / g >= 4);
        let oc_groups = |band_rows: usize| {
            let mut groups = groups();
            let most = groups.clone().next_back().unwrap_or(1);
            groups
                .find(|g| bands(band_rows) * g >= threads)
                .unwrap_or(most)
        };
        // Weights that stay in L2: small bands (parallel iterations) of at least a group of
        // tiles (chosen for one thread), and output-channel groups, for the least work on
        // the busiest thread: its tasks × padded tiles × (its blocks' products and output
        // transforms + the input transform, which each group repeats). Tiles padded to
        // groups of 4 are computed too (14 tiles a row pad to 16: 1/8 more), and a thread
        // with one more task than another sets the pace. ResNet-18's 56×56 layers: bands of
        // 2 rows of 14 tiles, no padding (1.56 → 1.34 ms on one thread); on 2 threads also
        // 2 groups of 4 blocks, as 7 bands split 4 + 3 left a thread idle 1/8 of the time
        // (the layer alone 0.85–0.91 → 0.81–0.86 ms). Weights streamed from memory: the
        // largest band, to read them once.
        let (input_cost, output_cost) = variant.transform_cost();
        let per_block = points as f64 * c as f64 * 3.5 + output_cost;
        let busiest = |band_rows: usize, g: usize, threads: usize| {
            let tasks = (bands(band_rows) * g).div_ceil(threads.max(1));
            let per_tile = (blocks / g) as f64 * per_block
                + input_cost * c as f64 * FUSED_INPUT_TRANSFORM_MEASURED;
            (tasks * padded(band_rows)) as f64 * per_tile
        };
        let cached = if points * c * m * 4 <= CACHED_WEIGHT_BYTES {
            // The bands one thread would take, for any thread count: a band's tiles are
            // summed in groups whose order depends on how many the band has, so the bands
            // fix every result's bits; then the groups for `threads`.
            let band = (1..=tile_rows)
                .filter(|&r| fits_band(r) && r * tile_cols >= GROUP)
                .min_by(|&r, &s| {
                    busiest(r, 1, 1)
                        .total_cmp(&busiest(s, 1, 1))
                        .then(r.cmp(&s))
                });
            band.and_then(|r| {
                groups()
                    .min_by(|&g, &h| {
                        busiest(r, g, threads)
                            .total_cmp(&busiest(r, h, threads))
                            .then(g.cmp(&h))
                    })
                    .map(|g| (r, g))
            })
        } else {
            None
        };
        let band_rows = match cached {
            Some((r, _)) => Some(r),
            None => (1..=tile_rows).rev().find(|&r| fits_band(r)),
        };
        let band_rows = band_rows.or_else(|| (1..=tile_rows).find(|&r| fits_band(r)))?;
        let tiles = padded(band_rows);
        let oc_groups = cached.map_or_else(|| oc_groups(band_rows), |(_, g)| g);
        let bands = bands(band_rows);
        let row_len = out * tile_cols + 4;
        if pad_left + w > row_len {
            return None;
        }
        let slots = threads.clamp(1, bands * oc_groups);
        let plan = Plan {
            variant,
            g: *geometry,
            tile_rows,
            tile_cols,
            band_rows,
            tiles,
            oc_groups,
            slots,
            row_len,
            split: None,
            runtime_weights: false,
        };
        Some(plan.choose_weights())
    }

    fn bands(&self) -> usize {
        self.g.n * self.tile_rows / self.band_rows
    }

    /// Tasks: (band, channel group) pairs.
    fn tasks(&self) -> usize {
        self.bands() * self.oc_groups
    }

    /// The plan with the input transform in a kernel of its own when that leaves the
    /// busiest of `threads` threads less work: the fused kernel's tasks each transform
    /// their band's whole input, once per output-channel group, and a layer with few bands
    /// (ResNet-18's 28×28 and smaller: one) has few tasks unless it splits its output
    /// channels; with its own kernel the input transform is split over bands and chunks of
    /// input channels and done once, the products over bands and output-channel groups of
    /// any size, at the price of one more launch and `V` passed through the cache between
    /// threads.
    fn split_input(mut self, threads: usize) -> Plan {
        if threads <= 1 {
            return self;
        }
        let (c, blocks, bands) = (self.g.c, self.g.m / WIDTH, self.bands());
        let (input_cost, output_cost) = self.variant.transform_cost();
        let tiles = self.tiles as f64;
        // Instructions per block of output channels and band: products, output transform,
        // and the weight transform when the weights are transformed at run time.
        let weights = if self.runtime_weights {
            c as f64 * self.variant.weight_transform_cost()
        } else {
            0.0
        };
        let per_block =
            tiles * (self.variant.points() as f64 * c as f64 * 3.5 + output_cost) + weights;
        let per_channel = tiles * input_cost * INPUT_TRANSFORM_MEASURED;
        let rounds = |tasks: usize| tasks.div_ceil(threads) as f64;
        let fused = rounds(bands * self.oc_groups)
            * ((blocks / self.oc_groups) as f64 * per_block + c as f64 * per_channel);
        let divisors = |n: usize| (1..=n).filter(move |d| n.is_multiple_of(*d));
        let least = |n: usize, cost: &dyn Fn(usize) -> f64| {
            divisors(n).min_by(|&a, &b| cost(a).total_cmp(&cost(b)).then(a.cmp(&b)))
        };
        // Chunks of an even number of channels (the transform pipelines channel pairs).
        let chunk_cost = |d: usize| rounds(bands * d) * (c / d) as f64 * per_channel;
        let chunks = if c.is_multiple_of(2) {
            least(c / 2, &chunk_cost).unwrap_or(1)
        } else {
            1
        };
        // Each products task reads its band's `V`, all but a thread's share of it written
        // by the others.
        let shared = (threads - 1) as f64 / threads as f64;
        let v_read =
            (self.v_len() * 4) as f64 * shared / SHARED_BYTES_PER_SECOND * INSTRUCTIONS_PER_SECOND;
        let group_cost = |g: usize| rounds(bands * g) * ((blocks / g) as f64 * per_block + v_read);
        let groups = least(blocks, &group_cost).unwrap_or(1);
        let split =
            chunk_cost(chunks) + group_cost(groups) + LAUNCH_SECONDS * INSTRUCTIONS_PER_SECOND;
        if split < fused {
            self.oc_groups = groups;
            self.slots = threads.min(bands * groups);
            self.split = Some(InputSplit {
                chunks,
                slots: threads.min(bands * chunks),
            });
        }
        self
    }

    fn blocks_per_group(&self) -> usize {
        self.g.m / WIDTH / self.oc_groups
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
        let (c, blocks) = (self.g.c as f64, (self.g.m / WIDTH) as f64);
        let (input, output) = self.variant.transform_cost();
        let tiles = (self.bands() * self.tiles) as f64;
        let work = tiles
            * (self.variant.points() as f64 * product_step() / 4.0 * c * blocks
                + input * c * self.oc_groups as f64
                + output * blocks);
        work / INSTRUCTIONS_PER_SECOND + self.weight_cost(self.runtime_weights)
    }

    /// Modelled seconds of the weights: streaming the transformed ones (when they do not
    /// stay in L2), or reading the direct ones and transforming each block per band.
    fn weight_cost(&self, runtime: bool) -> f64 {
        let (c, m, bands) = (self.g.c, self.g.m, self.bands());
        if runtime {
            let transform = (bands * m / WIDTH * c) as f64 * self.variant.weight_transform_cost();
            let taps = self.variant.taps();
            transform / INSTRUCTIONS_PER_SECOND + weight_seconds(taps * c * m * 4, bands)
        } else {
            weight_seconds(self.variant.points() * c * m * 4, bands)
        }
    }

    /// The plan with the weights transformed at run time or not.
    fn with_weights(mut self, runtime: bool) -> Plan {
        self.runtime_weights = runtime;
        self
    }

    /// Transforms the weights at run time where the model says it is cheaper.
    fn choose_weights(self) -> Plan {
        let runtime = self.weight_cost(true) < self.weight_cost(false);
        self.with_weights(runtime)
    }

    // A slot's layout, in elements: two sets of transformed rows (one channel's are written
    // while the previous channel's are read, see `Plan::transform_channels`), `V`, `M`, a
    // 4-element edge row, then (run-time weights only) the block's `U`. With the input
    // transform in a kernel of its own, `V` is in a buffer of its own, and the slot holds
    // the rows for that kernel and `M`, the edge and `U` (from 0) for the other.

    /// Where `V` starts in a slot (one kernel only).
    fn v_at(&self) -> usize {
        2 * self.rows_len()
    }

    /// Elements of one band's `V`.
    fn v_len(&self) -> usize {
        self.variant.points() * point_stride(self.g.c, self.tiles)
    }

    /// Where `M` starts.
    fn m_at(&self) -> usize {
        if self.split.is_some() {
            0
        } else {
            self.v_at() + self.v_len()
        }
    }

    /// Elements of one block's `M`.
    fn m_len(&self) -> usize {
        self.variant.points() * self.tiles * WIDTH
    }

    /// Output-channel blocks whose products run together: 2 where a band is a single group
    /// of 4 tiles (with 8-lane vectors), so that each broadcast input value feeds two FMAs
    /// (see [`Plan::wide_product`]); else 1.
    fn paired(&self) -> usize {
        if crate::codegen::wide_vectors()
            && self.groups() == 1
            && self.blocks_per_group().is_multiple_of(2)
        {
            2
        } else {
            1
        }
    }

    /// Where the row of a tile's partial output columns starts (after the `M` of each
    /// block of a pair).
    fn edge_at(&self) -> usize {
        self.m_at() + self.paired() * self.m_len()
    }

    /// Where the products leave the sum of what they read ahead (one float; see
    /// [`ReadAhead`]).
    fn ahead_at(&self) -> usize {
        self.edge_at() + 4
    }

    /// Where the run-time transformed weights start.
    fn u_at(&self) -> usize {
        (self.ahead_at() + 1).next_multiple_of(16)
    }

    /// Elements of one slot.
    fn slot(&self) -> usize {
        let u = if self.runtime_weights {
            self.paired() * self.u_len()
        } else {
            0
        };
        let products = (self.u_at() + u).next_multiple_of(16);
        if self.split.is_some() {
            products.max(2 * self.rows_len())
        } else {
            products
        }
    }

    /// Scratch slots (the input transform's kernel may have more than the products').
    fn total_slots(&self) -> usize {
        self.slots.max(self.split.as_ref().map_or(0, |s| s.slots))
    }

    /// Elements between two points' transformed weights of one block: `C × 8`, padded off
    /// 4 KiB multiples in the slot (the run-time transform stores all points of a channel
    /// together).
    /// Input channels whose weights the run-time transform computes at once, every point,
    /// before their products: all of them with compile-time weights or up to
    /// [`U_WHOLE_BYTES`] a block, else the largest divisor of `C` whose transformed weights
    /// fit [`U_CHUNK_BYTES`]. A block of ResNet-18's 7×7 layers transformed whole (36 points
    /// × 512 channels × 8: 590 KB) left L2 before the products read it back: chunks of 64
    /// channels made the layer alone 9–12% faster (512 → 512 on 7×7, 8 alternated runs:
    /// 4.43 → 4.02 ms; medians 6.48 / 4.75 / 4.73 / 4.67 / 4.71 ms with chunks of 16, 32,
    /// 64, 128 and 256 KB). In the model, where the layer's input transform and the
    /// previous layer's output share L2, its three such layers (alternated runs, normalised
    /// by the layers it does not change): chunks of 128 KB 3% faster than whole (16 runs),
    /// of 256 channels (295 KB) 6% faster (14 runs) and 4% faster than 128 KB (12 runs).
    /// With [pairs](Plan::paired) of blocks (both blocks' chunks in the slot) and the
    /// weights [read ahead](ReadAhead), 64 channels a chunk (147 KB for the pair, beside
    /// the band's 295 KB of `V`) were 3% faster than 128 (295 KB) on 1 and 2 threads, 32
    /// channels the same as 64 (8 alternated runs each).
    fn u_chunk(&self) -> usize {
        let c = self.g.c;
        if !self.runtime_weights {
            return c;
        }
        let bytes = |d: usize| self.paired() * self.variant.points() * d * WIDTH * 4;
        if bytes(c) <= U_WHOLE_BYTES {
            return c;
        }
        (1..=c)
            .rev()
            .find(|&d| c.is_multiple_of(d) && bytes(d) <= U_CHUNK_BYTES)
            .unwrap_or(1)
    }

    /// Elements of one block's run-time transformed weights.
    fn u_len(&self) -> usize {
        self.variant.points() * self.u_stride()
    }

    fn u_stride(&self) -> usize {
        if self.runtime_weights {
            point_stride(self.u_chunk(), WIDTH)
        } else {
            self.g.c * WIDTH
        }
    }

    /// The schedule words shared by the fused kernel and the split one's output kernel.
    fn schedule(&self) -> String {
        let (side, r) = (self.variant.out(), self.variant.kernel());
        let input = match &self.split {
            Some(split) => format!(
                "input transformed by a kernel of its own ({} bands x {} channel chunks on {} \
                 threads)",
                self.bands(),
                split.chunks,
                split.slots
            ),
            None => "input transformed per task".to_string(),
        };
        let gemm = if self.paired() == 2 {
            format!(
                "4 tiles x {} channels of 2 blocks (8 f32x8 accumulators)",
                2 * WIDTH
            )
        } else if crate::codegen::wide_vectors() {
            format!("8 tiles x {WIDTH} channels (8 f32x8 accumulators)")
        } else {
            format!("4 tiles x {WIDTH} channels (8 f32x4 accumulators)")
        };
        format!(
            "winograd F({side}x{side},{r}x{r}), bands of {} x {} tiles ({} with padding), GEMM \
             tile {gemm}, {} bands x {} channel groups on {} threads, weights transformed {}{}, \
             {input}",
            self.band_rows,
            self.tile_cols,
            self.tiles,
            self.bands(),
            self.oc_groups,
            self.slots,
            match (self.runtime_weights, self.u_chunk()) {
                (false, _) => "at compile time".to_string(),
                (true, chunk) if chunk == self.g.c => "at run time per block".to_string(),
                (true, chunk) => format!("at run time per block, {chunk} input channels at a time"),
            },
            if self.runtime_weights && crate::codegen::wide_vectors() {
                ", the next read ahead during the products"
            } else {
                ""
            }
        )
    }

    /// The parallel loop shared by the kernels: one iteration per scratch slot (`slots`),
    /// each running its share of `tasks` in turn (slot `p` the tasks from `p · per`); the
    /// first `zero` elements of each slot are zeroed first (the transformed rows' padding,
    /// which stays zero as rows are written inside it only). `task(k, slot, task)` emits
    /// one task.
    fn slot_loop(
        &self,
        k: &mut KernelBuilder,
        s: BufId,
        (slots, tasks): (usize, usize),
        zero: usize,
        task: impl Fn(&mut KernelBuilder, &Expr, Expr),
    ) {
        k.for_loop(0, slots as i64, 1, LoopKind::Parallel, |k, p| {
            let slot = Expr::Local(k.declare(Ty::I64, times(p.clone(), self.slot())));
            k.for_loop(0, zero as i64, 4, LoopKind::Serial, |k, i| {
                k.store(s, sum([slot.clone(), i]), Expr::Float(0.0).splat());
            });
            let per = tasks.div_ceil(slots);
            k.range(per, |k, t| {
                let index = sum([times(p.clone(), per), t]);
                let index = Expr::Local(k.declare(Ty::I64, index));
                let run = |k: &mut KernelBuilder| {
                    task(k, &slot, index.clone().clamp(0, tasks as i64 - 1));
                };
                if per * slots == tasks {
                    run(k);
                } else {
                    let real = index.clone().cmp(CmpOp::Lt, Expr::Int(tasks as i64));
                    k.if_else(real, run, |_| {});
                }
            });
        });
    }

    /// The layer's kernels: one, or (when the input transform has a kernel of its own) the
    /// input transform's and the products'. Arguments of the first: `x`, then (split) `V`
    /// out, the scratch; of the last: `x` or `V`, the weights, the bias, `y`, the scratch,
    /// the epilogue's.
    fn kernels(
        &self,
        name: &str,
        conv: &DirectConv<'_>,
        x: Arg,
        (u, b): (Arc<Tensor>, Arc<Tensor>),
    ) -> Vec<LoweredKernel> {
        let Some(split) = &self.split else {
            return vec![self.products_kernel(name, conv, x, (u, b))];
        };
        // The input transform: tasks of a band and a chunk of input channels.
        let mut k = KernelBuilder::new(format!("{name}_input"));
        let (side, r) = (self.variant.out(), self.variant.kernel());
        k.set_schedule(format!(
            "winograd F({side}x{side},{r}x{r}) input transform: {} bands x {} chunks of {} \
             channels on {} threads",
            self.bands(),
            split.chunks,
            self.g.c / split.chunks,
            split.slots
        ));
        let x_id = k.buffer("x", DType::F32, self.x_len(), BufferKind::Input);
        let v_id = self.declare_v(&mut k, BufferKind::Output);
        let s = self.declare_scratch(&mut k);
        let chunk = self.g.c / split.chunks;
        let tasks = self.bands() * split.chunks;
        let zero = 2 * self.rows_len();
        self.slot_loop(&mut k, s, (split.slots, tasks), zero, |k, slot, task| {
            let (band, part) = split_locals(k, task, self.bands(), split.chunks);
            let v = times(band.clone(), self.v_len());
            let (f, batch) = self.frame(k, s, slot, &band, (v_id, v));
            let src = self.source(k, x_id, &batch);
            let first = Expr::Local(k.declare(Ty::I64, times(part, chunk)));
            self.transform_channels(k, &f, &src, &first, chunk);
        });
        let input = LoweredKernel {
            kernel: k.finish(),
            args: vec![x, Arg::Scratch(1), Arg::Scratch(0)],
        };
        let products = self.products_kernel(name, conv, Arg::Scratch(1), (u, b));
        vec![input, products]
    }

    /// The kernel of the products and outputs, over tasks of a band and a group of
    /// output-channel blocks; `first` is the layer's input (each task transforms it first)
    /// or, when the input transform has a kernel of its own, `V`.
    fn products_kernel(
        &self,
        name: &str,
        conv: &DirectConv<'_>,
        first: Arg,
        (u, b): (Arc<Tensor>, Arc<Tensor>),
    ) -> LoweredKernel {
        let fused = self.split.is_none();
        let mut k = KernelBuilder::new(name);
        let mut schedule = self.schedule();
        if conv.blocked.output {
            schedule.push_str(", output in blocks of 8 channels");
        }
        k.set_schedule(schedule);
        let first_id = if fused {
            k.buffer("x", DType::F32, self.x_len(), BufferKind::Input)
        } else {
            self.declare_v(&mut k, BufferKind::Input)
        };
        let sink = self.declare_sink(&mut k, u, b);
        let s = self.declare_scratch(&mut k);
        let extras = conv.epilogue.declare(&mut k);
        let sink = Sink { extras, ..sink };
        // The fused kernel's transformed rows' padding is zeroed once per slot.
        let zero = if fused { 2 * self.rows_len() } else { 0 };
        self.slot_loop(
            &mut k,
            s,
            (self.slots, self.tasks()),
            zero,
            |k, slot, task| {
                let (band, group) = split_locals(k, task, self.bands(), self.oc_groups);
                let v = if fused {
                    (s, plus(slot.clone(), self.v_at() as i64))
                } else {
                    (first_id, times(band.clone(), self.v_len()))
                };
                let (f, batch) = self.frame(k, s, slot, &band, v);
                if fused {
                    let src = self.source(k, first_id, &batch);
                    self.transform_channels(k, &f, &src, &Expr::Int(0), self.g.c);
                }
                let sink = Sink {
                    y_base: self.y_base(k, &batch),
                    ..sink.clone()
                };
                self.blocks(k, &f, &sink, conv, &group);
            },
        );
        let mut args = vec![
            first,
            Arg::Const,
            Arg::Const,
            Arg::Output(0),
            Arg::Scratch(0),
        ];
        args.extend(conv.epilogue.args());
        LoweredKernel {
            kernel: k.finish(),
            args,
        }
    }

    /// Declares `V` of every band (written by the input-transform kernel of a split layer,
    /// read by its products kernel).
    fn declare_v(&self, k: &mut KernelBuilder, kind: BufferKind) -> BufId {
        let v_len = self.bands() * self.v_len();
        k.buffer("winograd_v", DType::F32, v_len, kind)
    }

    /// Declares the scratch slots (the same buffer in both kernels of a split layer).
    fn declare_scratch(&self, k: &mut KernelBuilder) -> BufId {
        let len = self.total_slots() * self.slot();
        k.buffer("winograd_scratch", DType::F32, len, BufferKind::Output)
    }

    /// Elements of the layer's input.
    fn x_len(&self) -> usize {
        self.g.n * self.g.c * self.g.h * self.g.w
    }

    /// Declares the weights, the bias and the output (ids 1–3 after the input or `V`); the
    /// epilogue's buffers and the batch's base are filled in later.
    fn declare_sink(&self, k: &mut KernelBuilder, u: Arc<Tensor>, b: Arc<Tensor>) -> Sink {
        let u_name = if self.runtime_weights {
            "w_taps"
        } else {
            "u_winograd"
        };
        let u = k.buffer(u_name, DType::F32, u.len(), BufferKind::Const(u));
        let b = k.buffer("b", DType::F32, self.g.m, BufferKind::Const(b));
        let y_len = self.g.n * self.g.m * self.g.oh * self.g.ow;
        let y = k.buffer("y", DType::F32, y_len, BufferKind::Output);
        Sink {
            u,
            b,
            y,
            extras: Vec::new(),
            y_base: Expr::Int(0),
        }
    }

    /// The frame of a task on global band `band` (batch × bands) with `V` at `v` (buffer,
    /// first element), and the band's batch.
    fn frame(
        &self,
        k: &mut KernelBuilder,
        s: BufId,
        slot: &Expr,
        band: &Expr,
        (v_buf, v): (BufId, Expr),
    ) -> (Frame, Expr) {
        let v = Expr::Local(k.declare(Ty::I64, v));
        let (batch, band) =
            split_locals(k, band.clone(), self.g.n, self.tile_rows / self.band_rows);
        let frame = Frame {
            s,
            slot: slot.clone(),
            band,
            v_buf,
            v,
        };
        (frame, batch)
    }

    /// The input of batch `batch`.
    fn source(&self, k: &mut KernelBuilder, x: BufId, batch: &Expr) -> Source {
        let x_base = times(batch.clone(), self.g.c * self.g.h * self.g.w);
        Source {
            x,
            x_base: Expr::Local(k.declare(Ty::I64, x_base)),
        }
    }

    /// The first output element of batch `batch`.
    fn y_base(&self, k: &mut KernelBuilder, batch: &Expr) -> Expr {
        let y_base = times(batch.clone(), self.g.m * self.g.oh * self.g.ow);
        Expr::Local(k.declare(Ty::I64, y_base))
    }

    /// The input transform of `count` input channels from `first` into the frame's `V`.
    /// Pipelined over channel pairs: a channel's rows are transformed into one set while
    /// the previous channel's tiles are read from the other, so the tile loads (at other
    /// offsets than the row stores) never wait for stores still in flight.
    fn transform_channels(
        &self,
        k: &mut KernelBuilder,
        f: &Frame,
        src: &Source,
        first: &Expr,
        count: usize,
    ) {
        let last = self.g.c as i64 - 1;
        self.transform_rows(k, f, src, first, 0);
        k.for_loop(0, (count / 2 * 2) as i64, 2, LoopKind::Serial, |k, c| {
            let c = Expr::Local(k.declare(Ty::I64, sum([first.clone(), c])));
            let next = Expr::Local(k.declare(Ty::I64, plus(c.clone(), 1)));
            self.transform_rows(k, f, src, &next, 1);
            self.transform_tiles(k, f, &c, 0);
            // Past the last channel this recomputes one into a set nobody reads.
            let after = Expr::Local(k.declare(Ty::I64, plus(c, 2).clamp(0, last)));
            self.transform_rows(k, f, src, &after, 0);
            self.transform_tiles(k, f, &next, 1);
        });
        if count % 2 == 1 {
            let odd = Expr::Local(k.declare(Ty::I64, plus(first.clone(), count as i64 - 1)));
            self.transform_tiles(k, f, &odd, 0);
        }
    }

    /// The products and outputs of output-channel group `group`, block by block (or pair
    /// by pair, see [`Plan::paired`]).
    fn blocks(
        &self,
        k: &mut KernelBuilder,
        f: &Frame,
        sink: &Sink,
        conv: &DirectConv<'_>,
        group: &Expr,
    ) {
        let pair = self.paired();
        k.range(self.blocks_per_group() / pair, |k, j| {
            let block = sum([
                times(group.clone(), self.blocks_per_group()),
                times(j, pair),
            ]);
            let block = Expr::Local(k.declare(Ty::I64, block));
            let chunk = self.u_chunk();
            let chunks = self.g.c / chunk;
            let transform = |k: &mut KernelBuilder, first: &Expr| {
                for h in 0..pair {
                    let block_h = plus(block.clone(), h as i64);
                    self.weights_at_run_time(k, f, sink, (&block_h, h), first, chunk);
                }
            };
            if chunks == 1 {
                if self.runtime_weights {
                    transform(k, &Expr::Int(0));
                }
                self.products(k, f, sink, &block, (&Expr::Int(0), chunk), false);
            } else {
                // `M` from zero, each chunk's products added onto it.
                let m = plus(f.slot.clone(), self.m_at() as i64);
                let m = Expr::Local(k.declare(Ty::I64, m));
                k.range(pair * self.m_len() / 4, |k, i| {
                    let at = sum([m.clone(), times(i, 4)]);
                    k.store(f.s, at, Expr::Float(0.0).splat());
                });
                k.range(chunks, |k, q| {
                    let first = Expr::Local(k.declare(Ty::I64, times(q, chunk)));
                    transform(k, &first);
                    self.products(k, f, sink, &block, (&first, chunk), true);
                });
            }
            for h in 0..pair {
                let block_h = Expr::Local(k.declare(Ty::I64, plus(block.clone(), h as i64)));
                self.outputs(k, f, sink, conv, (&block_h, h));
            }
        });
    }

    /// `Bᵀ d` along columns for input channel `ci`: each tile row's input rows into as
    /// many transformed rows of the scratch, 4 columns at a time (the last 4 may overlap).
    fn transform_rows(
        &self,
        k: &mut KernelBuilder,
        f: &Frame,
        src: &Source,
        ci: &Expr,
        set: usize,
    ) {
        let (out, input) = (self.variant.out(), self.variant.input());
        let plane = self.g.h * self.g.w;
        let x_channel = sum([src.x_base.clone(), times(ci.clone(), plane)]);
        let x_channel = Expr::Local(k.declare(Ty::I64, x_channel));
        // Bands whose every input row lies in the input need no checks.
        let band_count = self.tile_rows / self.band_rows;
        let first_row = |band: usize| (out * self.band_rows * band) as i64 - self.g.pad_top as i64;
        let interior: Vec<usize> = (0..band_count)
            .filter(|&b| {
                first_row(b) >= 0
                    && first_row(b) + ((out * (self.band_rows - 1) + input) as i64)
                        <= self.g.h as i64
            })
            .collect();
        let emit = |k: &mut KernelBuilder, band: &Expr, checked: bool| {
            k.range(self.band_rows, |k, r| {
                // Input row of the tile row's first transform row.
                let top = sum([
                    times(band.clone(), out * self.band_rows),
                    times(r.clone(), out),
                    Expr::Int(-(self.g.pad_top as i64)),
                ]);
                let top = Expr::Local(k.declare(Ty::I64, top));
                let rows: Vec<(Expr, Option<Expr>)> = (0..input)
                    .map(|i| {
                        let iy = plus(top.clone(), i as i64);
                        if checked {
                            let iy = Expr::Local(k.declare(Ty::I64, iy));
                            let clamped = iy.clone().clamp(0, self.g.h as i64 - 1);
                            let clamped = Expr::Local(k.declare(Ty::I64, clamped));
                            let valid = clamped.clone().cmp(CmpOp::Eq, iy);
                            let at = sum([x_channel.clone(), times(clamped, self.g.w)]);
                            (Expr::Local(k.declare(Ty::I64, at)), Some(valid))
                        } else {
                            let at = sum([x_channel.clone(), times(iy, self.g.w)]);
                            (Expr::Local(k.declare(Ty::I64, at)), None)
                        }
                    })
                    .collect();
                let out_row = sum([
                    f.slot.clone(),
                    Expr::Int((set * self.rows_len()) as i64),
                    times(r, input * self.row_len),
                    Expr::Int(self.g.pad_left as i64),
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
                                Some(x_col) => plus(x_col.clone(), (i * self.g.w) as i64),
                                None => sum([at.clone(), col.clone()]),
                            };
                            let v = Expr::load4(src.x, at);
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
                let full = self.g.w / 4 * 4;
                k.for_loop(0, full as i64, 4, LoopKind::Serial, |k, col| {
                    columns(k, col)
                });
                if full < self.g.w {
                    columns(k, Expr::Int(self.g.w as i64 - 4));
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
        let v_ci = sum([f.v.clone(), times(ci.clone(), GROUP)]);
        let v_ci = Expr::Local(k.declare(Ty::I64, v_ci));
        if out > 4 {
            self.transform_tile_groups(k, f, &v_ci, set);
            return;
        }
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
                let d = tile_columns(k, input, load);
                for (l, value) in self.variant.input_points(k, d).into_iter().enumerate() {
                    let point = row * input + l;
                    let at = point * point_stride(self.g.c, self.tiles) + g * self.g.c * GROUP;
                    let at = at as i64;
                    k.store(f.v_buf, plus(v_ci.clone(), at), value);
                }
            }
        }
    }

    /// [`Plan::transform_tiles`] for tiles wider than 4: the groups in a loop (their code,
    /// 9 rows of 9 points, is too long to repeat for every group), each lane's tile found
    /// at run time.
    fn transform_tile_groups(&self, k: &mut KernelBuilder, f: &Frame, v_ci: &Expr, set: usize) {
        let (out, input) = (self.variant.out(), self.variant.input());
        let real = self.band_rows * self.tile_cols;
        k.range(self.groups(), |k, g| {
            // The scratch offset of each lane's tile (the last real tile repeats).
            let starts: Vec<Expr> = (0..GROUP)
                .map(|j| {
                    let t = plus(times(g.clone(), GROUP), j as i64).clamp(0, real as i64 - 1);
                    let t = Expr::Local(k.declare(Ty::I64, t));
                    let (r, tx) = split(t, self.band_rows, self.tile_cols);
                    let at = sum([
                        f.slot.clone(),
                        Expr::Int((set * self.rows_len()) as i64),
                        times(r, input * self.row_len),
                        times(tx, out),
                    ]);
                    Expr::Local(k.declare(Ty::I64, at))
                })
                .collect();
            let v_group = sum([v_ci.clone(), times(g, self.g.c * GROUP)]);
            let v_group = Expr::Local(k.declare(Ty::I64, v_group));
            for row in 0..input {
                let load = |offset: usize| {
                    [0, 1, 2, 3].map(|j| {
                        let at = (row * self.row_len + offset) as i64;
                        Expr::load4(f.s, plus(starts[j].clone(), at))
                    })
                };
                let d = tile_columns(k, input, load);
                for (l, value) in self.variant.input_points(k, d).into_iter().enumerate() {
                    let at = (row * input + l) * point_stride(self.g.c, self.tiles);
                    k.store(f.v_buf, plus(v_group.clone(), at as i64), value);
                }
            }
        });
    }

    /// `U = G g Gᵀ` of output-channel block `block` at run time, from the direct taps packed
    /// `[block][C][r·r][8]`, into the slot's `U[point][C][8]`: per input channel, one vector
    /// of the 8 output channels (`f32x8`) or two of 4.
    fn weights_at_run_time(
        &self,
        k: &mut KernelBuilder,
        f: &Frame,
        sink: &Sink,
        (block, half): (&Expr, usize),
        first: &Expr,
        count: usize,
    ) {
        let (c, input, r) = (self.g.c, self.variant.input(), self.variant.kernel());
        let u_at = plus(f.slot.clone(), (self.u_at() + half * self.u_len()) as i64);
        let u_at = Expr::Local(k.declare(Ty::I64, u_at));
        let taps = self.variant.taps();
        let w_block = sum([
            times(block.clone(), c * taps * WIDTH),
            times(first.clone(), taps * WIDTH),
        ]);
        let w_block = Expr::Local(k.declare(Ty::I64, w_block));
        k.range(count, |k, ci| {
            let w_at = sum([w_block.clone(), times(ci.clone(), taps * WIDTH)]);
            let w_at = Expr::Local(k.declare(Ty::I64, w_at));
            let u_ci = sum([u_at.clone(), times(ci, WIDTH)]);
            let u_ci = Expr::Local(k.declare(Ty::I64, u_ci));
            let lanes = weight_lanes();
            let ty = if lanes == 8 { Ty::F32x8 } else { Ty::F32x4 };
            for v in 0..WIDTH / lanes {
                let tap = |a: usize, b: usize| {
                    let at = plus(w_at.clone(), ((a * r + b) * WIDTH + lanes * v) as i64);
                    if lanes == 8 {
                        Expr::load8(sink.u, at)
                    } else {
                        Expr::load4(sink.u, at)
                    }
                };
                // G g per kernel column, then (G g) Gᵀ per transformed row.
                let columns: Vec<Vec<Expr>> = (0..r)
                    .map(|b| {
                        let column = (0..r).map(|a| tap(a, b)).collect();
                        self.variant
                            .weight_points(k, column, ty)
                            .into_iter()
                            .map(|e| Expr::Local(k.declare(ty, e)))
                            .collect()
                    })
                    .collect();
                for kk in 0..input {
                    let row = columns.iter().map(|col| col[kk].clone()).collect();
                    let points = self.variant.weight_points(k, row, ty);
                    for (l, value) in points.into_iter().enumerate() {
                        let at = ((kk * input + l) * self.u_stride() + lanes * v) as i64;
                        k.store(f.s, plus(u_ci.clone(), at), value);
                    }
                }
            }
        });
    }

    /// The products for output-channel block `block`: for each point and group of 4 tiles,
    /// `Σ_c V[ξ][group][c][tile] · U[block][ξ][c][0..8]` into `M[ξ][tile][0..8]`.
    fn products(
        &self,
        k: &mut KernelBuilder,
        f: &Frame,
        sink: &Sink,
        block: &Expr,
        (first, count): (&Expr, usize),
        accumulate: bool,
    ) {
        let c = self.g.c;
        let points = self.variant.points();
        // The block's transformed weights: in the constant, or in the slot.
        let (u_buf, u_block) = if self.runtime_weights {
            (f.s, plus(f.slot.clone(), self.u_at() as i64))
        } else {
            (sink.u, times(block.clone(), points * c * WIDTH))
        };
        k.range(points, |k, point| {
            let u_at = sum([u_block.clone(), times(point.clone(), self.u_stride())]);
            let u_at = Expr::Local(k.declare(Ty::I64, u_at));
            let v_at = sum([
                f.v.clone(),
                times(point.clone(), point_stride(c, self.tiles)),
                times(first.clone(), GROUP),
            ]);
            let v_at = Expr::Local(k.declare(Ty::I64, v_at));
            let m_at = sum([
                f.slot.clone(),
                Expr::Int(self.m_at() as i64),
                times(point.clone(), self.tiles * WIDTH),
            ]);
            let m_at = Expr::Local(k.declare(Ty::I64, m_at));
            if crate::codegen::wide_vectors() {
                // Two groups (8 tiles) at a time in 8 `f32x8` accumulators: a weight vector
                // of the block's 8 channels feeds 8 FMAs, each with a broadcast tile value;
                // or one group for a pair of blocks.
                let pair = self.paired();
                let mut blocks = Blocks::default();
                for h in 0..pair {
                    let block_h = plus(block.clone(), h as i64);
                    let (u_h, m_h) = if h == 0 {
                        (u_at.clone(), m_at.clone())
                    } else {
                        let u_len = if self.runtime_weights {
                            self.u_len()
                        } else {
                            points * c * WIDTH
                        };
                        let u_h = plus(u_at.clone(), (h * u_len) as i64);
                        let m_h = plus(m_at.clone(), (h * self.m_len()) as i64);
                        (
                            Expr::Local(k.declare(Ty::I64, u_h)),
                            Expr::Local(k.declare(Ty::I64, m_h)),
                        )
                    };
                    blocks.u.push(u_h);
                    blocks.m.push(m_h);
                    if self.runtime_weights {
                        let at = (first, count);
                        let ahead = ReadAhead::new(self, k, f, sink, &block_h, at, &point);
                        blocks.ahead.push(ahead);
                    }
                }
                let groups = self.groups();
                k.range(groups / 2, |k, pair| {
                    let g = times(pair, 2);
                    self.wide_product(k, f, u_buf, &blocks, &v_at, (g, 2), count, accumulate);
                });
                if groups % 2 == 1 {
                    let g = Expr::Int(groups as i64 - 1);
                    self.wide_product(k, f, u_buf, &blocks, &v_at, (g, 1), count, accumulate);
                }
                return;
            }
            k.range(self.groups(), |k, g| {
                let zero = || Expr::Float(0.0).splat();
                let acc: Vec<[LocalId; 2]> = (0..GROUP)
                    .map(|_| [k.declare(Ty::F32x4, zero()), k.declare(Ty::F32x4, zero())])
                    .collect();
                let v_group = sum([v_at.clone(), times(g.clone(), c * GROUP)]);
                let v_group = Expr::Local(k.declare(Ty::I64, v_group));
                let unroll = channel_unroll(count);
                k.for_loop(0, count as i64, unroll as i64, LoopKind::Serial, |k, ci| {
                    let (u_row, v_row) = product_rows(k, &u_at, &v_group, ci);
                    for u in 0..unroll {
                        let w = [0, 4].map(|o| {
                            let at = plus(u_row.clone(), (u * WIDTH + o) as i64);
                            k.declare(Ty::F32x4, Expr::load4(u_buf, at))
                        });
                        for (j, pair) in acc.iter().enumerate() {
                            let at = plus(v_row.clone(), (u * GROUP + j) as i64);
                            let xs = k.declare(Ty::F32x4, Expr::load(f.v_buf, at).splat());
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
                        let mut total = Expr::Local(a);
                        if accumulate {
                            total = total.add(Expr::load4(f.s, at.clone()));
                        }
                        k.store(f.s, at, total);
                    }
                }
            });
        });
    }

    /// The products of `count` (1 or 2) consecutive groups of 4 tiles from group `g`, at
    /// one point (`blocks`: its weights and `M` per block; `v_at`: its `V`), with `f32x8`
    /// accumulators: per input channel one load of each block's 8 weights and one
    /// broadcast per tile, each feeding one FMA per block. A single group of a single block
    /// keeps two sums per tile (even and odd unrolled channels), added at the end, so 8 FMA
    /// chains are in flight in every case. A pair of blocks (ResNet-18's 7×7 layers: 4
    /// tiles) loads 6 values per 8 FMAs instead of 5 per 4. With `blocks.ahead`, each trip
    /// also reads one float of each block's next weights.
    #[allow(clippy::too_many_arguments)]
    fn wide_product(
        &self,
        k: &mut KernelBuilder,
        f: &Frame,
        u_buf: BufId,
        blocks: &Blocks,
        v_at: &Expr,
        (g, count): (Expr, usize),
        channels: usize,
        accumulate: bool,
    ) {
        let c = self.g.c;
        let tiles = count * GROUP;
        let pair = blocks.u.len();
        let sums = if count * pair == 1 { 2 } else { 1 };
        let zero = || Expr::Float(0.0).splat8();
        // Accumulator of block `h`, sum `s`, tile `t`: `(h · sums + s) · tiles + t`.
        let acc: Vec<LocalId> = (0..pair * sums * tiles)
            .map(|_| k.declare(Ty::F32x8, zero()))
            .collect();
        let ahead_sum = (!blocks.ahead.is_empty()).then(|| k.declare(Ty::F32, Expr::Float(0.0)));
        let v_group = sum([v_at.clone(), times(g.clone(), c * GROUP)]);
        let v_group = Expr::Local(k.declare(Ty::I64, v_group));
        let unroll = channel_unroll(channels);
        k.for_loop(
            0,
            channels as i64,
            unroll as i64,
            LoopKind::Serial,
            |k, ci| {
                if let Some(total) = ahead_sum {
                    for ahead in &blocks.ahead {
                        let value = ahead.read(&ci);
                        k.assign(total, Expr::Local(total).add(value));
                    }
                }
                let (u_row, v_row) = product_rows(k, &blocks.u[0], &v_group, ci.clone());
                let mut u_rows = vec![u_row];
                for u_at in &blocks.u[1..] {
                    let u_row = sum([u_at.clone(), times(ci.clone(), WIDTH)]);
                    u_rows.push(Expr::Local(k.declare(Ty::I64, u_row)));
                }
                for u in 0..unroll {
                    let w: Vec<LocalId> = u_rows
                        .iter()
                        .map(|row| {
                            let at = plus(row.clone(), (u * WIDTH) as i64);
                            k.declare(Ty::F32x8, Expr::load8(u_buf, at))
                        })
                        .collect();
                    let s = u % sums;
                    for t in 0..tiles {
                        // Tile `t`: group `t / GROUP`, whose `V` is `c · GROUP` further on.
                        let at = plus(
                            v_row.clone(),
                            ((t / GROUP) * c * GROUP + u * GROUP + t % GROUP) as i64,
                        );
                        let mut xs = Expr::load(f.v_buf, at).splat8();
                        if pair > 1 {
                            xs = Expr::Local(k.declare(Ty::F32x8, xs));
                        }
                        for (h, &wh) in w.iter().enumerate() {
                            let a = acc[(h * sums + s) * tiles + t];
                            k.assign(a, xs.clone().fma(Expr::Local(wh), Expr::Local(a)));
                        }
                    }
                }
            },
        );
        for (h, m_at) in blocks.m.iter().enumerate() {
            let out = sum([m_at.clone(), times(g.clone(), GROUP * WIDTH)]);
            let out = Expr::Local(k.declare(Ty::I64, out));
            for t in 0..tiles {
                let mut total = Expr::Local(acc[h * sums * tiles + t]);
                for s in 1..sums {
                    total = total.add(Expr::Local(acc[(h * sums + s) * tiles + t]));
                }
                let at = plus(out.clone(), (t * WIDTH) as i64);
                if accumulate {
                    total = total.add(Expr::load8(f.s, at.clone()));
                }
                k.store(f.s, at, total);
            }
        }
        if let (Some(ahead), Some(total)) = (blocks.ahead.first(), ahead_sum) {
            k.store(f.s, ahead.sink.clone(), Expr::Local(total));
        }
    }

    /// `Aᵀ M A` plus bias for every tile of the band and output-channel block `block`,
    /// four output columns at a time, through the epilogue into the output.
    fn outputs(
        &self,
        k: &mut KernelBuilder,
        f: &Frame,
        sink: &Sink,
        conv: &DirectConv<'_>,
        block: (&Expr, usize),
    ) {
        let out = self.variant.out();
        let per_block = 4 / out;
        let full = self.g.ow / 4;
        k.range(self.band_rows, |k, r| {
            let oy = sum([
                times(f.band.clone(), out * self.band_rows),
                times(r.clone(), out),
            ]);
            let oy = Expr::Local(k.declare(Ty::I64, oy));
            let first = Expr::Local(k.declare(Ty::I64, times(r, self.tile_cols)));
            if out > 4 {
                // Wider tiles: each one on its own, its rows stored 4 columns at a time.
                let full = self.g.ow / out;
                k.range(full, |k, tx| {
                    let tiles = vec![Some(sum([first.clone(), tx.clone()]))];
                    self.output_columns(k, f, sink, conv, block, &oy, tiles, &times(tx, out), out);
                });
                if full * out < self.g.ow {
                    let tiles = vec![Some(plus(first.clone(), full as i64))];
                    let ox = Expr::Int((out * full) as i64);
                    let columns = self.g.ow - out * full;
                    self.output_columns(k, f, sink, conv, block, &oy, tiles, &ox, columns);
                }
                return;
            }
            k.range(full, |k, cb| {
                let tile = sum([first.clone(), times(cb.clone(), per_block)]);
                let tiles = (0..per_block)
                    .map(|i| Some(plus(tile.clone(), i as i64)))
                    .collect();
                self.output_columns(k, f, sink, conv, block, &oy, tiles, &times(cb, 4), 4);
            });
            if full * 4 < self.g.ow {
                let tx = full * per_block;
                let tiles = (0..per_block)
                    .map(|i| {
                        (tx + i < self.tile_cols).then(|| plus(first.clone(), (tx + i) as i64))
                    })
                    .collect();
                let ox = Expr::Int((4 * full) as i64);
                self.output_columns(
                    k,
                    f,
                    sink,
                    conv,
                    block,
                    &oy,
                    tiles,
                    &ox,
                    self.g.ow - 4 * full,
                );
            }
        });
    }

    /// The output columns from `ox` of the tile row starting at output row `oy` that
    /// `tiles` compute (their indices in the band; `None` past the last tile): four (one
    /// F(4×4) tile or two F(2×2) ones) or a wider tile's, of which `columns` lie inside the
    /// output. Each row is stored 4 columns at a time.
    #[allow(clippy::too_many_arguments)]
    fn output_columns(
        &self,
        k: &mut KernelBuilder,
        f: &Frame,
        sink: &Sink,
        conv: &DirectConv<'_>,
        (block, half): (&Expr, usize),
        oy: &Expr,
        tiles: Vec<Option<Expr>>,
        ox: &Expr,
        columns: usize,
    ) {
        let (out, input) = (self.variant.out(), self.variant.input());
        let out_plane = self.g.oh * self.g.ow;
        let m_tiles: Vec<Option<Expr>> = tiles
            .into_iter()
            .map(|t| {
                t.map(|t| {
                    let at = sum([
                        f.slot.clone(),
                        Expr::Int((self.m_at() + half * self.m_len()) as i64),
                        times(t, WIDTH),
                    ]);
                    Expr::Local(k.declare(Ty::I64, at))
                })
            })
            .collect();
        // Rows the last tile row may have below the output.
        let spare = out * self.tile_rows - self.g.oh;
        // Per vector `v` of 4 output channels (a loop for wide tiles, whose code is long).
        let lane = |k: &mut KernelBuilder, v: Expr| {
            let channel = sum([times(block.clone(), WIDTH), times(v.clone(), 4)]);
            let channel = Expr::Local(k.declare(Ty::I64, channel));
            let bias = Expr::Local(k.declare(Ty::F32x4, Expr::load4(sink.b, channel.clone())));
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
                            let at = ((kk * input + l) * self.tiles * WIDTH) as i64;
                            let lane_at = sum([m_tile.clone(), times(v.clone(), 4)]);
                            Expr::load4(f.s, plus(lane_at, at))
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
                    y_row.clone().clamp(0, self.g.oh as i64 - 1)
                } else {
                    y_row.clone()
                };
                let store_row = |k: &mut KernelBuilder| {
                    for (c, chunk) in row.chunks(4).enumerate() {
                        let columns = columns.saturating_sub(4 * c).min(4);
                        if columns == 0 {
                            break;
                        }
                        if conv.blocked.output {
                            // Each value is 4 channels of one pixel: stored as it is, at
                            // `[block][pixel][8]` (the epilogue reads no operand).
                            let first = sum([
                                sink.y_base.clone(),
                                times(block.clone(), WIDTH * out_plane),
                                times(v.clone(), 4),
                                times(oy_row.clone(), WIDTH * self.g.ow),
                                times(plus(ox.clone(), 4 * c as i64), WIDTH),
                            ]);
                            let first = Expr::Local(k.declare(Ty::I64, first));
                            for (j, value) in chunk.iter().take(columns).enumerate() {
                                let store_at = StoreAt {
                                    index: plus(first.clone(), (WIDTH * j) as i64),
                                    channel: channel.clone(),
                                };
                                conv.epilogue.store(
                                    k,
                                    &sink.extras,
                                    sink.y,
                                    &store_at,
                                    value.clone(),
                                    4,
                                );
                            }
                            continue;
                        }
                        let mut chunk = chunk.to_vec();
                        chunk.resize(4, Expr::Float(0.0).splat());
                        let chunk: [Expr; 4] = chunk.try_into().expect("four columns");
                        let at = sum([
                            sink.y_base.clone(),
                            times(channel.clone(), out_plane),
                            times(oy_row.clone(), self.g.ow),
                            plus(ox.clone(), 4 * c as i64),
                        ]);
                        let at = Expr::Local(k.declare(Ty::I64, at));
                        for (lane, value) in transpose4(k, &chunk, 0..4).into_iter().enumerate() {
                            let index = plus(at.clone(), (lane * out_plane) as i64);
                            let channel = plus(channel.clone(), lane as i64);
                            if columns == 4 {
                                let store_at = StoreAt { index, channel };
                                conv.epilogue
                                    .store(k, &sink.extras, sink.y, &store_at, value, 4);
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
                                conv.epilogue
                                    .store(k, &sink.extras, sink.y, &store_at, value, 1);
                            }
                        }
                    }
                };
                if may_miss {
                    let inside = y_row.clone().cmp(CmpOp::Lt, Expr::Int(self.g.oh as i64));
                    k.if_else(inside, store_row, |_| {});
                } else {
                    store_row(k);
                }
            }
        };
        if out > 4 {
            k.range(WIDTH / 4, lane);
        } else {
            for v in 0..WIDTH / 4 {
                lane(k, Expr::Int(v as i64));
            }
        }
    }
}

/// Output channels per vector of the run-time weight transform: 8 with `f32x8` (a block's
/// channels at once), else 4. ResNet-18's three stride-1 7×7 layers, whose weights are
/// transformed at run time, 11% faster with 8 (16 alternated runs, normalised by the
/// layers it does not change: 14.56 → 13.49 ms for the three).
fn weight_lanes() -> usize {
    if crate::codegen::wide_vectors() { 8 } else { 4 }
}

/// `split(e, outer, inner)` with both parts declared as locals.
fn split_locals(k: &mut KernelBuilder, e: Expr, outer: usize, inner: usize) -> (Expr, Expr) {
    let (a, b) = split(e, outer, inner);
    let a = Expr::Local(k.declare(Ty::I64, a));
    let b = Expr::Local(k.declare(Ty::I64, b));
    (a, b)
}

/// The scratch and position of one task.
struct Frame {
    s: BufId,
    /// First element of the task's scratch slot.
    slot: Expr,
    /// The band (of the batch).
    band: Expr,
    /// The buffer holding the band's transformed input `V`, and its first element there.
    v_buf: BufId,
    v: Expr,
}

/// Reading ahead the run-time transform's next weights during the products. The transform
/// reads a chunk's direct weights once (9 floats per input and output channel), from
/// memory where a layer's do not stay in cache (ResNet-18's 7×7 layers: 9.4 MB each, 38 MB
/// with the rest of layer 4), at what the memory delivers to one core, while the products,
/// which run from L2, leave the memory idle. Cranelift has no prefetch instruction, so each
/// trip of the products' channel loop loads one float of the next chunk's weights (the
/// block's next chunk, or the next block's first: the next in memory), stepping through
/// them over the chunk's points, and adds it to a sum stored in the scratch (so the load
/// stays); the core's stream prefetcher follows these loads, and the transform then finds
/// the weights in cache. Measured on ResNet-18 (1 thread, alternated runs, normalised by
/// kernels the change does not touch): its three stride-1 7×7 layers 20–21% faster (a
/// transform reading the same block every time, cached, made them 27% faster); its other
/// Winograd layers, whose weights stay in L2 or L3, unchanged.
struct ReadAhead {
    /// The direct weights, and the first element read at the first point's first channel.
    buf: BufId,
    at: Expr,
    /// Elements between the reads of consecutive input channels: the next chunk's
    /// `count × taps × 8` floats spread over `points × count` channel steps.
    step: usize,
    /// The last element of the weights (reads past it read it instead).
    last: i64,
    /// Where the sum of the reads is stored.
    sink: Expr,
}

impl ReadAhead {
    /// The read-ahead of the products at `point` of block `block`'s chunk of `count`
    /// channels from `first`.
    fn new(
        plan: &Plan,
        k: &mut KernelBuilder,
        f: &Frame,
        sink: &Sink,
        block: &Expr,
        (first, count): (&Expr, usize),
        point: &Expr,
    ) -> ReadAhead {
        let (c, taps, points) = (plan.g.c, plan.variant.taps(), plan.variant.points());
        let step = (taps * WIDTH).div_ceil(points);
        let at = sum([
            times(block.clone(), c * taps * WIDTH),
            times(first.clone(), taps * WIDTH),
            Expr::Int((count * taps * WIDTH) as i64),
            times(point.clone(), count * step),
        ]);
        ReadAhead {
            buf: sink.u,
            at: Expr::Local(k.declare(Ty::I64, at)),
            step,
            last: (plan.g.m * c * taps) as i64 - 1,
            sink: plus(f.slot.clone(), plan.ahead_at() as i64),
        }
    }

    /// The float read at input channel `ci` of the point.
    fn read(&self, ci: &Expr) -> Expr {
        let at = sum([self.at.clone(), times(ci.clone(), self.step)]);
        Expr::load(self.buf, at.min(Expr::Int(self.last)))
    }
}

/// The blocks whose products run together at one point (one, or a pair): each one's
/// transformed weights and `M` (first elements), and its read-ahead (with run-time weights).
#[derive(Default)]
struct Blocks {
    u: Vec<Expr>,
    m: Vec<Expr>,
    ahead: Vec<ReadAhead>,
}

/// What the input transform reads: the input, and the first element of the task's batch.
struct Source {
    x: BufId,
    x_base: Expr,
}

/// What the products and the output transform use besides the frame: the weights, the
/// bias, the output and the epilogue's buffers, and the first output element of the
/// task's batch.
#[derive(Clone)]
struct Sink {
    u: BufId,
    b: BufId,
    y: BufId,
    extras: Vec<BufId>,
    y_base: Expr,
}

#[cfg(test)]
mod tests {
    use super::{G2, G4, MAGNITUDES, MAGNITUDES_7, Matrices, toom_cook};

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

    fn rows<const N: usize>(m: &[[f64; N]]) -> Vec<Vec<f64>> {
        m.iter().map(|r| r.to_vec()).collect()
    }

    /// `Aᵀ [(G g) ⊙ (Bᵀ d)]` against the correlation of `d` with `g`.
    fn check(matrices: &Matrices) {
        let Matrices {
            bt,
            g: g_matrix,
            at,
        } = matrices;
        let (n, r) = (bt.len(), g_matrix[0].len());
        let d: Vec<f64> = (0..n)
            .map(|i| ((i * 7 + 3) % 11) as f64 * 0.37 - 1.6)
            .collect();
        let g: Vec<f64> = (0..r)
            .map(|i| ((i * 5 + 2) % 7) as f64 * 0.41 - 1.1)
            .collect();
        let gg: Vec<f64> = g_matrix
            .iter()
            .map(|row| (0..r).map(|a| row[a] * g[a]).sum())
            .collect();
        let bd: Vec<f64> = bt
            .iter()
            .map(|row| (0..n).map(|i| row[i] * d[i]).sum())
            .collect();
        assert_eq!(at.len() + r - 1, n);
        for (o, row) in at.iter().enumerate() {
            let y: f64 = (0..n).map(|i| row[i] * gg[i] * bd[i]).sum();
            let direct: f64 = (0..r).map(|a| d[o + a] * g[a]).sum();
            assert!((y - direct).abs() < 1e-9, "output {o}: {y} vs {direct}");
        }
    }

    #[test]
    fn the_matrices_compute_a_correlation() {
        check(&Matrices {
            bt: rows(&BT2),
            g: rows(&G2),
            at: rows(&AT2),
        });
        check(&Matrices {
            bt: rows(&BT4),
            g: rows(&G4),
            at: rows(&AT4),
        });
        let cases = [
            (2, 2),
            (2, 3),
            (4, 2),
            (4, 3),
            (4, 4),
            (4, 5),
            (3, 4),
            (6, 3),
        ];
        for (m, r) in cases {
            let matrices = toom_cook(m, r, &MAGNITUDES).unwrap_or_else(|| panic!("F({m}, {r})"));
            check(&matrices);
        }
        check(&toom_cook(7, 3, &MAGNITUDES_7).expect("F(7, 3)"));
        assert_eq!(toom_cook(6, 4, &MAGNITUDES), None, "past the points");
    }

    /// Toom–Cook at 0, ±1, ±2 and ∞ gives the hand-factored F(4, 3)'s `Bᵀ`; the transform
    /// rows of points ±a are mirror pairs, and `Bᵀ` is integer.
    #[test]
    fn toom_cook_matches_the_hand_written_f4() {
        let cook = toom_cook(4, 3, &MAGNITUDES).unwrap();
        assert_eq!(cook.bt, rows(&BT4));
        let f44 = toom_cook(4, 4, &MAGNITUDES).unwrap();
        for row in &f44.bt[..f44.bt.len() - 1] {
            assert!(row.iter().all(|c| c.fract() == 0.0), "{row:?}");
        }
    }
}
