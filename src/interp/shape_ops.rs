//! Data-movement ops: flatten, reshape, transpose, concat, split, slice, pad, squeeze,
//! unsqueeze, shape and gather.

use super::OpResult;
use crate::graph::op::PadMode;
use crate::tensor::Tensor;

const PENDING: &str = "not yet implemented in the interpreter";

pub(super) fn flatten(axis: i64, x: &Tensor) -> OpResult<Tensor> {
    let _ = (axis, x);
    Err(PENDING.to_string())
}

pub(super) fn reshape(allowzero: bool, x: &Tensor, shape: &Tensor) -> OpResult<Tensor> {
    let _ = (allowzero, x, shape);
    Err(PENDING.to_string())
}

pub(super) fn transpose(perm: Option<&[usize]>, x: &Tensor) -> OpResult<Tensor> {
    let _ = (perm, x);
    Err(PENDING.to_string())
}

pub(super) fn concat(axis: i64, parts: &[&Tensor]) -> OpResult<Tensor> {
    let _ = (axis, parts);
    Err(PENDING.to_string())
}

pub(super) fn split(
    axis: i64,
    num_outputs: Option<usize>,
    x: &Tensor,
    split: Option<&Tensor>,
    n_outputs: usize,
) -> OpResult<Vec<Tensor>> {
    let _ = (axis, num_outputs, x, split, n_outputs);
    Err(PENDING.to_string())
}

pub(super) fn slice(
    x: &Tensor,
    starts: &Tensor,
    ends: &Tensor,
    axes: Option<&Tensor>,
    steps: Option<&Tensor>,
) -> OpResult<Tensor> {
    let _ = (x, starts, ends, axes, steps);
    Err(PENDING.to_string())
}

pub(super) fn pad(
    mode: PadMode,
    x: &Tensor,
    pads: &Tensor,
    value: Option<&Tensor>,
    axes: Option<&Tensor>,
) -> OpResult<Tensor> {
    let _ = (mode, x, pads, value, axes);
    Err(PENDING.to_string())
}

pub(super) fn squeeze(x: &Tensor, axes: Option<&Tensor>) -> OpResult<Tensor> {
    let _ = (x, axes);
    Err(PENDING.to_string())
}

pub(super) fn unsqueeze(x: &Tensor, axes: &Tensor) -> OpResult<Tensor> {
    let _ = (x, axes);
    Err(PENDING.to_string())
}

pub(super) fn shape(start: i64, end: Option<i64>, x: &Tensor) -> OpResult<Tensor> {
    let _ = (start, end, x);
    Err(PENDING.to_string())
}

pub(super) fn gather(axis: i64, x: &Tensor, indices: &Tensor) -> OpResult<Tensor> {
    let _ = (axis, x, indices);
    Err(PENDING.to_string())
}
