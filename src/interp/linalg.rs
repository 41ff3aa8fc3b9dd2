//! Gemm and MatMul on `f32`.
//!
//! Both reduce to [`matmul_into`], a row-major product whose inner loop runs over a
//! contiguous output row.

use super::OpResult;
use super::conv::{describe, f32_data, f32_tensor, next_index};
use super::layout::{broadcast_shape, product};
use crate::tensor::Tensor;

/// `out += a @ b` for row-major `a` `[m, k]`, `b` `[k, n]`, `out` `[m, n]`.
fn matmul_into(a: &[f32], b: &[f32], out: &mut [f32], m: usize, k: usize, n: usize) {
    if n == 0 {
        return;
    }
    for (i, row) in out.chunks_exact_mut(n).take(m).enumerate() {
        for (kk, &av) in a[i * k..][..k].iter().enumerate() {
            let b_row = &b[kk * n..][..n];
            for (o, &bv) in row.iter_mut().zip(b_row) {
                *o += av * bv;
            }
        }
    }
}

/// The row-major transpose of a row-major `[rows, cols]` matrix.
fn transposed(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

/// A rank-2 operand as (data, rows, cols), or an error naming it.
fn matrix<'a>(t: &'a Tensor, what: &str) -> OpResult<(&'a [f32], usize, usize)> {
    let data = f32_data(t, what)?;
    match *t.shape() {
        [rows, cols] => Ok((data, rows, cols)),
        _ => Err(format!("{what} {} must be a matrix", describe(t))),
    }
}

/// `gemm(a, b, [c])`: `alpha * op(a) @ op(b) + beta * c`, where `op` transposes when asked
/// and `c` broadcasts to `[M, N]` (scalar, `[N]`, `[M, 1]`, `[1, N]` or `[M, N]`).
pub(super) fn gemm(
    alpha: f32,
    beta: f32,
    trans_a: bool,
    trans_b: bool,
    a: &Tensor,
    b: &Tensor,
    c: Option<&Tensor>,
) -> OpResult<Tensor> {
    let (a_data, a_rows, a_cols) = matrix(a, "a")?;
    let (b_data, b_rows, b_cols) = matrix(b, "b")?;
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
        return Err(format!(
            "a {}{} and b {}{} disagree on the inner size ({k} vs {kb})",
            describe(a),
            if trans_a { " (transposed)" } else { "" },
            describe(b),
            if trans_b { " (transposed)" } else { "" }
        ));
    }
    let a_rm = if trans_a {
        transposed(a_data, a_rows, a_cols)
    } else {
        a_data.to_vec()
    };
    let b_rm = if trans_b {
        transposed(b_data, b_rows, b_cols)
    } else {
        b_data.to_vec()
    };
    let mut acc = vec![0.0f32; product(&[m, n])?];
    matmul_into(&a_rm, &b_rm, &mut acc, m, k, n);
    for v in &mut acc {
        *v *= alpha;
    }
    if let Some(c) = c {
        let c_data = f32_data(c, "c")?;
        // Strides of c over [M, N]; 0 along a broadcast axis.
        let (row_stride, col_stride) = match *c.shape() {
            [] => Some((0, 0)),
            [cn] if cn == n => Some((0, 1)),
            [1] => Some((0, 0)),
            [cm, cn] if (cm == m || cm == 1) && (cn == n || cn == 1) => {
                Some((if cm == 1 { 0 } else { cn }, if cn == 1 { 0 } else { 1 }))
            }
            _ => None,
        }
        .ok_or_else(|| {
            format!(
                "c {} does not broadcast to the result [{m},{n}]",
                describe(c)
            )
        })?;
        for i in 0..m {
            for j in 0..n {
                acc[i * n + j] += beta * c_data[i * row_stride + j * col_stride];
            }
        }
    }
    f32_tensor(vec![m, n], acc)
}

/// `matmul(a, b)` with numpy semantics: a 1-D `a` is a row `[1, K]` and a 1-D `b` a column
/// `[K, 1]`, the added axis removed from the result; batch axes broadcast.
pub(super) fn matmul(a: &Tensor, b: &Tensor) -> OpResult<Tensor> {
    let a_data = f32_data(a, "a")?;
    let b_data = f32_data(b, "b")?;
    if a.rank() == 0 || b.rank() == 0 {
        return Err(format!(
            "operands {} and {} must have at least one axis",
            describe(a),
            describe(b)
        ));
    }
    let a_shape: Vec<usize> = if a.rank() == 1 {
        vec![1, a.shape()[0]]
    } else {
        a.shape().to_vec()
    };
    let b_shape: Vec<usize> = if b.rank() == 1 {
        vec![b.shape()[0], 1]
    } else {
        b.shape().to_vec()
    };
    let (a_batch, a_mat) = a_shape.split_at(a_shape.len() - 2);
    let (b_batch, b_mat) = b_shape.split_at(b_shape.len() - 2);
    let (m, k, kb, n) = (a_mat[0], a_mat[1], b_mat[0], b_mat[1]);
    if k != kb {
        return Err(format!(
            "a {} and b {} disagree on the inner size ({k} vs {kb})",
            describe(a),
            describe(b)
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
    let batch = broadcast_shape(a_batch, b_batch).map_err(|_| {
        format!(
            "batch axes of a {} and b {} do not broadcast",
            describe(a),
            describe(b)
        )
    })?;
    // Element strides of each operand's batch axes (0 where broadcast).
    let batch_strides = |dims: &[usize], matrix: usize| {
        let mut strides = vec![0; rank];
        let mut stride = matrix;
        for axis in (0..rank).rev() {
            strides[axis] = if dims[axis] == 1 { 0 } else { stride };
            stride *= dims[axis];
        }
        strides
    };
    let a_strides = batch_strides(&a_dims, m * k);
    let b_strides = batch_strides(&b_dims, k * n);

    let count = product(&batch)?;
    let mut out = vec![0.0f32; product(&[count, m, n])?];
    let mut index = vec![0; rank];
    for chunk in out.chunks_exact_mut((m * n).max(1)).take(count) {
        let a_off: usize = index.iter().zip(&a_strides).map(|(i, s)| i * s).sum();
        let b_off: usize = index.iter().zip(&b_strides).map(|(i, s)| i * s).sum();
        matmul_into(
            &a_data[a_off..][..m * k],
            &b_data[b_off..][..k * n],
            chunk,
            m,
            k,
            n,
        );
        next_index(&mut index, &batch);
    }
    let mut shape = batch;
    if a.rank() > 1 {
        shape.push(m);
    }
    if b.rank() > 1 {
        shape.push(n);
    }
    f32_tensor(shape, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize], data: &[f32]) -> Tensor {
        Tensor::from_f32(shape.to_vec(), data.to_vec()).unwrap()
    }

    fn iota(shape: &[usize]) -> Tensor {
        let n = shape.iter().product::<usize>();
        t(shape, &(0..n).map(|i| i as f32).collect::<Vec<_>>())
    }

    #[test]
    fn gemm_plain_and_transposed() {
        // a = [[0,1,2],[3,4,5]], b = [[0,1],[2,3],[4,5]]: a @ b = [[10,13],[28,40]].
        let a = iota(&[2, 3]);
        let b = iota(&[3, 2]);
        let y = gemm(1.0, 1.0, false, false, &a, &b, None).unwrap();
        assert_eq!(y.as_f32().unwrap(), [10.0, 13.0, 28.0, 40.0]);
        let at = t(&[3, 2], &[0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        let bt = t(&[2, 3], &[0.0, 2.0, 4.0, 1.0, 3.0, 5.0]);
        let c = t(&[2], &[1.0, -1.0]);
        let y = gemm(2.0, 3.0, true, true, &at, &bt, Some(&c)).unwrap();
        assert_eq!(y.as_f32().unwrap(), [23.0, 23.0, 59.0, 77.0]);
    }

    #[test]
    fn gemm_bias_broadcasts() {
        let a = iota(&[2, 1]);
        let b = t(&[1, 2], &[1.0, 1.0]);
        let column = t(&[2, 1], &[10.0, 20.0]);
        let y = gemm(1.0, 1.0, false, false, &a, &b, Some(&column)).unwrap();
        assert_eq!(y.as_f32().unwrap(), [10.0, 10.0, 21.0, 21.0]);
        let scalar = Tensor::scalar_f32(5.0);
        let y = gemm(1.0, 0.5, false, false, &a, &b, Some(&scalar)).unwrap();
        assert_eq!(y.as_f32().unwrap(), [2.5, 2.5, 3.5, 3.5]);
        let bad = t(&[3], &[0.0; 3]);
        let err = gemm(1.0, 1.0, false, false, &a, &b, Some(&bad)).unwrap_err();
        assert!(
            err.contains("f32[3] does not broadcast to the result [2,2]"),
            "{err}"
        );
        assert!(gemm(1.0, 1.0, false, false, &a, &a, None).is_err());
    }

    #[test]
    fn matmul_vectors_and_batches() {
        let v = t(&[3], &[1.0, 2.0, 3.0]);
        let y = matmul(&v, &v).unwrap();
        assert_eq!(y.shape(), [] as [usize; 0]);
        assert_eq!(y.as_f32().unwrap(), [14.0]);

        // [3] @ [2, 3, 1] -> [2, 1].
        let b = iota(&[2, 3, 1]);
        let y = matmul(&v, &b).unwrap();
        assert_eq!(y.shape(), [2, 1]);
        assert_eq!(y.as_f32().unwrap(), [8.0, 26.0]);

        // [2, 1, 1, 2] @ [3, 2, 1] -> [2, 3, 1, 1]; batch axes broadcast.
        let a = t(&[2, 1, 1, 2], &[1.0, 0.0, 0.0, 1.0]);
        let b = iota(&[3, 2, 1]);
        let y = matmul(&a, &b).unwrap();
        assert_eq!(y.shape(), [2, 3, 1, 1]);
        assert_eq!(y.as_f32().unwrap(), [0.0, 2.0, 4.0, 1.0, 3.0, 5.0]);

        // [2, 2, 3] @ [3] -> [2, 2].
        let a = iota(&[2, 2, 3]);
        let y = matmul(&a, &v).unwrap();
        assert_eq!(y.shape(), [2, 2]);
        assert_eq!(y.as_f32().unwrap(), [8.0, 26.0, 44.0, 62.0]);
    }

    #[test]
    fn matmul_rejects_mismatches() {
        let err = matmul(&iota(&[2, 3]), &iota(&[2, 3])).unwrap_err();
        assert!(err.contains("inner size (3 vs 2)"), "{err}");
        assert!(matmul(&iota(&[2, 1, 2]), &iota(&[3, 2, 1])).is_err());
        assert!(matmul(&Tensor::scalar_f32(1.0), &iota(&[1])).is_err());
    }
}
