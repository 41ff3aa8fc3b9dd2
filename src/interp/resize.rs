//! Resize (nearest, linear, cubic; every coordinate transform; antialias).

use super::OpResult;
use crate::graph::op::Resize;
use crate::tensor::Tensor;

pub(super) fn resize(
    attrs: &Resize,
    x: &Tensor,
    roi: Option<&Tensor>,
    scales: Option<&Tensor>,
    sizes: Option<&Tensor>,
) -> OpResult<Tensor> {
    let _ = (attrs, x, roi, scales, sizes);
    Err("not yet implemented in the interpreter".to_string())
}
