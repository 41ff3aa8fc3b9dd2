//! Max, average and global pooling.

use super::OpResult;
use crate::graph::op::Pool;
use crate::tensor::Tensor;

const PENDING: &str = "not yet implemented in the interpreter";

pub(super) fn max_pool(
    attrs: &Pool,
    x: &Tensor,
    want_indices: bool,
) -> OpResult<(Tensor, Option<Tensor>)> {
    let _ = (attrs, x, want_indices);
    Err(PENDING.to_string())
}

pub(super) fn average_pool(attrs: &Pool, x: &Tensor) -> OpResult<Tensor> {
    let _ = (attrs, x);
    Err(PENDING.to_string())
}

pub(super) fn global_pool(x: &Tensor, max: bool) -> OpResult<Tensor> {
    let _ = (x, max);
    Err(PENDING.to_string())
}
