//! Convolution, transposed convolution and batch normalization.

use super::OpResult;
use crate::graph::op::{Conv, ConvTranspose};
use crate::tensor::Tensor;

const PENDING: &str = "not yet implemented in the interpreter";

pub(super) fn conv(attrs: &Conv, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> OpResult<Tensor> {
    let _ = (attrs, x, w, b);
    Err(PENDING.to_string())
}

pub(super) fn conv_transpose(
    attrs: &ConvTranspose,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
) -> OpResult<Tensor> {
    let _ = (attrs, x, w, b);
    Err(PENDING.to_string())
}

pub(super) fn batch_norm(
    epsilon: f32,
    x: &Tensor,
    scale: &Tensor,
    bias: &Tensor,
    mean: &Tensor,
    var: &Tensor,
) -> OpResult<Tensor> {
    let _ = (epsilon, x, scale, bias, mean, var);
    Err(PENDING.to_string())
}
