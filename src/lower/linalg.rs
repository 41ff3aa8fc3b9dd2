//! Lowering of Gemm and MatMul (see [`super`] for the conventions).
//!
//! Both become one batched product `y[r, :] = a[r, :] @ b` with `b` a `[K, N]` matrix. A
//! constant `b` (Gemm's weights, transposed or not) is packed at compile time into
//! contiguous `[K][16]` panels, one per block of 16 columns (see [`pack_panels`]); a
//! transposed run-time `b` is transposed by a first kernel into a scratch buffer, and
//! other `b`s are read row-major as they are. Each output row is computed in column blocks of 16
//! (four `f32x4` accumulators), then single vectors, then scalars; the `k` loop runs inside,
//! broadcasting one element of `a` against contiguous rows of `b`. Rows are the parallel
//! loop when there are enough of them; otherwise (a batch of one, say) the parallel loop
//! runs over pairs of 16-column blocks, one from each half of the columns, computed in one
//! `k` loop (two streams of a packed `b` in flight: a classifier's weights come from
//! memory), and a serial loop finishes the remaining columns. Every output element sums
//! over `k` in order from 0, whatever the split.
//!
//! Gemm's epilogue follows the interpreter: `acc * alpha`, then `+ beta * c` with `c`
//! broadcast to `[M, N]`. MatMul's batch axes broadcast through constant tables of each
//! batch's offset into `a` and `b`.

use std::sync::Arc;

use super::conv::{f32_input, node_error, plus, range_or_zero, split, sum, times};
use super::ir::BufId;
use super::{
    Arg, BufferKind, Expr, KernelBuilder, LoopKind, Lowered, LoweredKernel, NodeInfo, Operand, Ty,
};
use crate::error::{Error, Result};
use crate::graph::op::Op;
use crate::tensor::{DType, Tensor};

/// Output columns per block (four vectors).
const BLOCK: usize = 16;

/// Rows below which the parallel loop runs over column blocks instead.
const PARALLEL_ROWS: usize = 16;

/// Lowers a node of this family.
pub(super) fn lower(node: &NodeInfo<'_>) -> Result<Lowered> {
    match *node.op {
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => gemm(node, alpha, beta, trans_a, trans_b),
        Op::MatMul => matmul(node),
        ref other => Err(Error::internal(format!(
            "linalg lowering called for {}",
            other.name()
        ))),
    }
}

/// Where `b` (as a row-major `[K, N]` matrix) comes from.
enum Rhs {
    /// Input `i` as it is.
    Input(usize),
    /// A constant, packed in panels by [`pack_panels`].
    Const(Arc<Tensor>),
    /// Scratch buffer 0, written by an earlier kernel.
    Scratch,
}

/// `b + c` broadcast to the output, for Gemm.
struct Bias {
    beta: f32,
    len: usize,
    row_stride: usize,
    col_stride: usize,
}

/// A batched product and its epilogue.
struct Product {
    batches: usize,
    m: usize,
    k: usize,
    n: usize,
    a_len: usize,
    /// Element strides of `a[i, kk]` within one matrix.
    a_row: usize,
    a_col: usize,
    /// Per-batch offsets into `a` and `b` (`None`: a single batch at 0).
    a_offsets: Option<Vec<i64>>,
    b_offsets: Option<Vec<i64>>,
    b_len: usize,
    rhs: Rhs,
    alpha: f32,
    bias: Option<Bias>,
}

/// Buffers of the product kernel.
struct Buffers {
    a: BufId,
    b: BufId,
    y: BufId,
    c: Option<BufId>,
    a_offsets: Option<BufId>,
    b_offsets: Option<BufId>,
}

impl Product {
    /// Emits one block of `max(vectors, 1)` vectors (or one scalar when `vectors` is 0) of
    /// output row `r` from each column of `js`, in one loop over `k`: with several columns,
    /// as many streams of `b` are read at once.
    fn block(&self, k: &mut KernelBuilder, bufs: &Buffers, r: &Expr, js: &[Expr], vectors: usize) {
        let (bi, i) = split(r.clone(), self.batches, self.m);
        let a_base = sum([
            bufs.a_offsets
                .map_or(Expr::Int(0), |t| Expr::load(t, bi.clone())),
            times(i.clone(), self.a_row),
        ]);
        let b_base = bufs.b_offsets.map_or(Expr::Int(0), |t| Expr::load(t, bi));
        let lanes = vectors.max(1);
        let (ty, zero) = if vectors > 0 {
            (Ty::F32x4, Expr::Float(0.0).splat())
        } else {
            (Ty::F32, Expr::Float(0.0))
        };
        let accs: Vec<Vec<_>> = js
            .iter()
            .map(|_| (0..lanes).map(|_| k.declare(ty, zero.clone())).collect())
            .collect();
        range_or_zero(k, self.k, LoopKind::Serial, |k, kk| {
            let a = Expr::load(bufs.a, sum([a_base.clone(), times(kk.clone(), self.a_col)]));
            let a = if vectors > 0 { a.splat() } else { a };
            let a = if js.len() > 1 {
                Expr::Local(k.declare(ty, a))
            } else {
                a
            };
            for (j, accs) in js.iter().zip(&accs) {
                // A constant `b` is packed in panels ([`pack_panels`]), others are row-major.
                let b_row = if !matches!(self.rhs, Rhs::Const(_)) {
                    sum([b_base.clone(), times(kk.clone(), self.n), j.clone()])
                } else if vectors == BLOCK / 4 {
                    // Panel `j / 16` starts at `j * K`; its rows are 16 apart.
                    sum([times(j.clone(), self.k), times(kk.clone(), BLOCK)])
                } else {
                    let full = self.n / BLOCK * BLOCK;
                    let rest = self.n - full;
                    sum([
                        Expr::Int((full * self.k) as i64),
                        times(kk.clone(), rest),
                        plus(j.clone(), -(full as i64)),
                    ])
                };
                for (u, acc) in accs.iter().enumerate() {
                    let index = plus(b_row.clone(), 4 * u as i64);
                    let b = if vectors > 0 {
                        Expr::load4(bufs.b, index)
                    } else {
                        Expr::load(bufs.b, index)
                    };
                    k.assign(*acc, a.clone().fma(b, Expr::Local(*acc)));
                }
            }
        });
        for (j, accs) in js.iter().zip(&accs) {
            let y_row = sum([times(r.clone(), self.n), j.clone()]);
            for (u, acc) in accs.iter().enumerate() {
                let mut value = Expr::Local(*acc);
                if self.alpha != 1.0 {
                    value = value.mul(Expr::Float(self.alpha));
                }
                if let (Some(bias), Some(c)) = (&self.bias, bufs.c) {
                    let at = sum([
                        times(i.clone(), bias.row_stride),
                        times(plus(j.clone(), 4 * u as i64), bias.col_stride),
                    ]);
                    let c = if vectors > 0 && bias.col_stride == 1 {
                        Expr::load4(c, at)
                    } else {
                        Expr::load(c, at)
                    };
                    value = value.add(Expr::Float(bias.beta).mul(c));
                }
                k.store(bufs.y, plus(y_row.clone(), 4 * u as i64), value);
            }
        }
    }

    /// Emits the columns `from..n` of row `r`: blocks, single vectors, then scalars.
    fn row(&self, k: &mut KernelBuilder, bufs: &Buffers, r: &Expr, from: usize) {
        let mut pos = from;
        for vectors in [BLOCK / 4, 1] {
            let width = 4 * vectors;
            let steps = (self.n - pos) / width;
            if steps > 0 {
                let end = pos + steps * width;
                k.for_loop(
                    pos as i64,
                    end as i64,
                    width as i64,
                    LoopKind::Serial,
                    |k, j| self.block(k, bufs, r, &[j], vectors),
                );
                pos = end;
            }
        }
        if pos < self.n {
            k.for_loop(pos as i64, self.n as i64, 1, LoopKind::Serial, |k, j| {
                self.block(k, bufs, r, &[j], 0)
            });
        }
    }

    /// The kernel of the product, with the bindings of its buffers.
    fn kernel(self, name: &str) -> Result<LoweredKernel> {
        let rows = self.batches * self.m;
        let mut k = KernelBuilder::new(name);
        let mut args = Vec::new();
        let a = k.buffer("a", DType::F32, self.a_len, BufferKind::Input);
        args.push(Arg::Input(0));
        let b = match &self.rhs {
            Rhs::Input(i) => {
                args.push(Arg::Input(*i));
                k.buffer("b", DType::F32, self.b_len, BufferKind::Input)
            }
            Rhs::Const(t) => {
                args.push(Arg::Const);
                k.buffer(
                    "b_packed",
                    DType::F32,
                    self.b_len,
                    BufferKind::Const(t.clone()),
                )
            }
            Rhs::Scratch => {
                args.push(Arg::Scratch(0));
                k.buffer("b_packed", DType::F32, self.b_len, BufferKind::Input)
            }
        };
        let c = self.bias.as_ref().map(|bias| {
            args.push(Arg::Input(2));
            k.buffer("c", DType::F32, bias.len, BufferKind::Input)
        });
        let mut table = |name: &str, offsets: &Option<Vec<i64>>| -> Result<Option<BufId>> {
            let Some(values) = offsets else {
                return Ok(None);
            };
            let t = Tensor::from_i64(vec![values.len()], values.clone())?;
            args.push(Arg::Const);
            Ok(Some(k.buffer(
                name,
                DType::I64,
                values.len(),
                BufferKind::Const(Arc::new(t)),
            )))
        };
        let a_offsets = table("a_offsets", &self.a_offsets)?;
        let b_offsets = table("b_offsets", &self.b_offsets)?;
        let y = k.buffer("y", DType::F32, rows * self.n, BufferKind::Output);
        args.push(Arg::Output(0));
        let bufs = Buffers {
            a,
            b,
            y,
            c,
            a_offsets,
            b_offsets,
        };
        let blocks = self.n / BLOCK;
        if rows >= PARALLEL_ROWS || blocks < 2 {
            k.for_loop(0, rows as i64, 1, LoopKind::Parallel, |k, r| {
                self.row(k, &bufs, &r, 0)
            });
        } else {
            // Each iteration takes a block from each half of the columns: two streams of
            // `b` at once (MobileNetV2's 1280 → 1000 classifier, its 5 MB of weights read
            // from memory: 0.61 → 0.48 ms, median of 5 alternated runs).
            let half = blocks / 2;
            k.for_loop(0, half as i64, 1, LoopKind::Parallel, |k, t| {
                let js = [times(t.clone(), BLOCK), times(plus(t, half as i64), BLOCK)];
                range_or_zero(k, rows, LoopKind::Serial, |k, r| {
                    self.block(k, &bufs, &r, &js, BLOCK / 4)
                });
            });
            if 2 * half * BLOCK < self.n {
                range_or_zero(&mut k, rows, LoopKind::Serial, |k, r| {
                    self.row(k, &bufs, &r, 2 * half * BLOCK)
                });
            }
        }
        Ok(LoweredKernel {
            kernel: k.finish(),
            args,
        })
    }
}

/// A constant `[K, N]` right-hand side (element `(kk, j)` from `at`) packed for the
/// product: each block of 16 columns as a contiguous `[K][16]` panel, in order, then the
/// remaining columns row-major `[K][N mod 16]`. A block's products then read one
/// sequential stream instead of one cache line per row `N` elements apart (which the
/// hardware prefetcher does not follow across pages).
fn pack_panels(k: usize, n: usize, at: impl Fn(usize, usize) -> f32) -> Vec<f32> {
    let full = n / BLOCK * BLOCK;
    let rest = n - full;
    let mut packed = Vec::with_capacity(k * n);
    for panel in (0..full).step_by(BLOCK) {
        for kk in 0..k {
            packed.extend((panel..panel + BLOCK).map(|j| at(kk, j)));
        }
    }
    for kk in 0..k {
        packed.extend((full..full + rest).map(|j| at(kk, j)));
    }
    packed
}

/// The output operand, checked to be `f32` of `shape`.
fn check_output(node: &NodeInfo<'_>, shape: &[usize]) -> Result<()> {
    match node.outputs.first() {
        Some(y) if y.shape == shape && y.dtype == DType::F32 => Ok(()),
        Some(y) => Err(Error::internal(format!(
            "node {}: output is {} {:?}, lowering computes f32 {shape:?}",
            node.name, y.dtype, y.shape
        ))),
        None => Err(Error::internal(format!(
            "node {}: no output at lowering",
            node.name
        ))),
    }
}

/// A kernel copying `b` `[N, K]` transposed into scratch buffer 0 `[K, N]`.
fn transpose_kernel(name: &str, n: usize, k_dim: usize) -> LoweredKernel {
    let mut k = KernelBuilder::new(format!("{name}_transpose_b"));
    let b = k.buffer("b", DType::F32, n * k_dim, BufferKind::Input);
    let bt = k.buffer("b_packed", DType::F32, n * k_dim, BufferKind::Output);
    k.for_loop(0, k_dim as i64, 1, LoopKind::Parallel, |k, kk| {
        k.range(n, |k, j| {
            let value = Expr::load(b, sum([times(j.clone(), k_dim), kk.clone()]));
            k.store(bt, sum([times(kk.clone(), n), j]), value);
        });
    });
    LoweredKernel {
        kernel: k.finish(),
        args: vec![Arg::Input(1), Arg::Scratch(0)],
    }
}

/// A rank-2 operand's `(rows, cols)`.
fn matrix(node: &NodeInfo<'_>, o: &Operand, what: &str) -> Result<(usize, usize)> {
    match *o.shape {
        [rows, cols] => Ok((rows, cols)),
        _ => Err(node_error(
            node,
            format!("{what} {:?} must be a matrix", o.shape),
        )),
    }
}

fn gemm(
    node: &NodeInfo<'_>,
    alpha: f32,
    beta: f32,
    trans_a: bool,
    trans_b: bool,
) -> Result<Lowered> {
    let a = f32_input(node, 0, "a")?;
    let b = f32_input(node, 1, "b")?;
    let (a_rows, a_cols) = matrix(node, a, "a")?;
    let (b_rows, b_cols) = matrix(node, b, "b")?;
    let (m, k) = if trans_a {
        (a_cols, a_rows)
    } else {
        (a_rows, a_cols)
    };
    let (kb, n) = if trans_b {
        (b_cols, b_rows)
    } else {
        (b_rows, b_cols)
    };
    if k != kb {
        return Err(node_error(
            node,
            format!(
                "a {:?} and b {:?} disagree on the inner size",
                a.shape, b.shape
            ),
        ));
    }
    check_output(node, &[m, n])?;
    let bias = match node.optional(2) {
        None => None,
        Some(_) => {
            let c = f32_input(node, 2, "c")?;
            let (row_stride, col_stride) = match *c.shape {
                [] => Some((0, 0)),
                [cn] if cn == n => Some((0, 1)),
                [1] => Some((0, 0)),
                [cm, cn] if (cm == m || cm == 1) && (cn == n || cn == 1) => {
                    Some((if cm == 1 { 0 } else { cn }, if cn == 1 { 0 } else { 1 }))
                }
                _ => None,
            }
            .ok_or_else(|| {
                node_error(
                    node,
                    format!(
                        "c {:?} does not broadcast to the result [{m}, {n}]",
                        c.shape
                    ),
                )
            })?;
            Some(Bias {
                beta,
                len: c.len(),
                row_stride,
                col_stride,
            })
        }
    };
    if m * n == 0 {
        return Ok(Lowered::default());
    }
    let mut lowered = Lowered::default();
    let rhs = match (trans_b, &b.value) {
        (_, Some(t)) => {
            let data = t.as_f32().ok_or_else(|| {
                Error::internal(format!("node {}: constant b is not f32", node.name))
            })?;
            let at = |kk: usize, j: usize| {
                if trans_b {
                    data[j * k + kk]
                } else {
                    data[kk * n + j]
                }
            };
            Rhs::Const(Arc::new(Tensor::from_f32(
                vec![k * n],
                pack_panels(k, n, at),
            )?))
        }
        (false, None) => Rhs::Input(1),
        (true, None) => {
            lowered.scratch.push((DType::F32, k * n));
            lowered.kernels.push(transpose_kernel(node.name, n, k));
            Rhs::Scratch
        }
    };
    let product = Product {
        batches: 1,
        m,
        k,
        n,
        a_len: a.len(),
        a_row: if trans_a { 1 } else { k },
        a_col: if trans_a { m } else { 1 },
        a_offsets: None,
        b_offsets: None,
        b_len: k * n,
        rhs,
        alpha,
        bias,
    };
    lowered.kernels.push(product.kernel(node.name)?);
    Ok(lowered)
}

fn matmul(node: &NodeInfo<'_>) -> Result<Lowered> {
    let a = f32_input(node, 0, "a")?;
    let b = f32_input(node, 1, "b")?;
    if a.shape.is_empty() || b.shape.is_empty() {
        return Err(node_error(
            node,
            format!(
                "operands {:?} and {:?} must have at least one axis",
                a.shape, b.shape
            ),
        ));
    }
    let a_shape = if a.shape.len() == 1 {
        vec![1, a.shape[0]]
    } else {
        a.shape.clone()
    };
    let b_shape = if b.shape.len() == 1 {
        vec![b.shape[0], 1]
    } else {
        b.shape.clone()
    };
    let (a_batch, a_mat) = a_shape.split_at(a_shape.len() - 2);
    let (b_batch, b_mat) = b_shape.split_at(b_shape.len() - 2);
    let (m, k, kb, n) = (a_mat[0], a_mat[1], b_mat[0], b_mat[1]);
    if k != kb {
        return Err(node_error(
            node,
            format!(
                "a {:?} and b {:?} disagree on the inner size",
                a.shape, b.shape
            ),
        ));
    }
    // Batch axes align at the right; a missing or size-1 axis broadcasts.
    let rank = a_batch.len().max(b_batch.len());
    let padded = |batch: &[usize]| {
        let mut dims = vec![1; rank - batch.len()];
        dims.extend_from_slice(batch);
        dims
    };
    let (a_dims, b_dims) = (padded(a_batch), padded(b_batch));
    let mut batch = Vec::with_capacity(rank);
    for (&x, &y) in a_dims.iter().zip(&b_dims) {
        batch.push(match (x, y) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return Err(node_error(
                    node,
                    format!(
                        "batch axes of a {:?} and b {:?} do not broadcast",
                        a.shape, b.shape
                    ),
                ));
            }
        });
    }
    let mut shape = batch.clone();
    if a.shape.len() > 1 {
        shape.push(m);
    }
    if b.shape.len() > 1 {
        shape.push(n);
    }
    check_output(node, &shape)?;
    let batches: usize = batch.iter().product();
    if batches * m * n == 0 {
        return Ok(Lowered::default());
    }
    // Each batch's element offset into a and b, in row-major batch order.
    let offsets = |dims: &[usize], matrix: usize| {
        let mut strides = vec![0; rank];
        let mut stride = matrix;
        for axis in (0..rank).rev() {
            strides[axis] = if dims[axis] == 1 { 0 } else { stride };
            stride *= dims[axis];
        }
        let mut out = Vec::with_capacity(batches);
        let mut index = vec![0; rank];
        for _ in 0..batches {
            out.push(
                index
                    .iter()
                    .zip(&strides)
                    .map(|(i, s)| (i * s) as i64)
                    .sum::<i64>(),
            );
            for axis in (0..rank).rev() {
                index[axis] += 1;
                if index[axis] < batch[axis] {
                    break;
                }
                index[axis] = 0;
            }
        }
        out
    };
    let a_offsets = offsets(&a_dims, m * k);
    let b_offsets = offsets(&b_dims, k * n);
    // A shared b and consecutive a matrices: one tall product.
    let tall = b_offsets.iter().all(|&o| o == 0)
        && a_offsets
            .iter()
            .enumerate()
            .all(|(i, &o)| o == (i * m * k) as i64);
    let (batches, m, a_offsets, b_offsets) = if tall || batches == 1 {
        (1, batches * m, None, None)
    } else {
        (batches, m, Some(a_offsets), Some(b_offsets))
    };
    let product = Product {
        batches,
        m,
        k,
        n,
        a_len: a.len(),
        a_row: k,
        a_col: 1,
        a_offsets,
        b_offsets,
        b_len: b.len(),
        rhs: Rhs::Input(1),
        alpha: 1.0,
        bias: None,
    };
    Ok(Lowered {
        kernels: vec![product.kernel(node.name)?],
        scratch: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::conv::testing::{check, random};
    use crate::graph::op::Op;
    use crate::tensor::Tensor;

    fn gemm(
        alpha: f32,
        beta: f32,
        trans_a: bool,
        trans_b: bool,
        a: &[usize],
        b: &[usize],
        c: Option<&[usize]>,
    ) {
        let op = Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        };
        for constant in [false, true] {
            let c = c.map(|s| (random(s, 3), constant));
            check(
                &op,
                &[
                    Some((random(a, 1), false)),
                    Some((random(b, 2), constant)),
                    c,
                ],
                1,
            );
        }
    }

    #[test]
    fn gemm_shapes_transposes_and_bias() {
        gemm(1.0, 1.0, false, false, &[3, 5], &[5, 7], None);
        gemm(0.5, 2.0, true, true, &[5, 3], &[37, 5], Some(&[37]));
        gemm(
            1.0,
            1.0,
            false,
            true,
            &[1, 64],
            &[1000, 64],
            Some(&[1, 1000]),
        );
        gemm(1.0, -1.0, false, false, &[40, 9], &[9, 21], Some(&[40, 1]));
        gemm(2.0, 0.25, true, false, &[9, 20], &[9, 35], Some(&[20, 35]));
        gemm(1.0, 1.0, false, true, &[2, 3], &[4, 3], Some(&[]));
        gemm(1.0, 1.0, false, false, &[2, 3], &[3, 4], Some(&[1]));
        gemm(1.0, 1.0, false, false, &[2, 0], &[0, 4], Some(&[4]));
    }

    fn matmul(a: &[usize], b: &[usize]) {
        check(
            &Op::MatMul,
            &[Some((random(a, 1), false)), Some((random(b, 2), true))],
            1,
        );
    }

    #[test]
    fn matmul_vectors_batches_and_broadcasting() {
        matmul(&[3], &[3]);
        matmul(&[3], &[2, 3, 5]);
        matmul(&[2, 2, 3], &[3]);
        matmul(&[2, 1, 4, 3], &[3, 3, 18]);
        matmul(&[5, 7, 9], &[9, 20]);
        matmul(&[2, 3, 4, 5], &[2, 3, 5, 6]);
        matmul(&[1, 17], &[17, 33]);
        matmul(&[40, 17], &[17, 3]);
        matmul(&[2, 1, 3], &[1, 3, 40]);
    }

    #[test]
    fn empty_products_lower_to_nothing() {
        let a = Tensor::from_f32(vec![0, 3], vec![]).unwrap();
        let l = check(
            &Op::MatMul,
            &[Some((a, false)), Some((random(&[3, 4], 2), false))],
            1,
        );
        assert!(l.kernels.is_empty());
    }
}
