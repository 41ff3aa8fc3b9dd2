//! Gemm and MatMul.

use super::OpResult;
use crate::tensor::Tensor;

const PENDING: &str = "not yet implemented in the interpreter";

pub(super) fn gemm(
    alpha: f32,
    beta: f32,
    trans_a: bool,
    trans_b: bool,
    a: &Tensor,
    b: &Tensor,
    c: Option<&Tensor>,
) -> OpResult<Tensor> {
    let _ = (alpha, beta, trans_a, trans_b, a, b, c);
    Err(PENDING.to_string())
}

pub(super) fn matmul(a: &Tensor, b: &Tensor) -> OpResult<Tensor> {
    let _ = (a, b);
    Err(PENDING.to_string())
}
