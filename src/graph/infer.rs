//! Shape inference: the output types of every op from its input types (and, for shape-like
//! operands such as Reshape's `shape`, their values when they are constants).
//!
//! Dimensions propagate symbolically: a symbolic batch `N` stays `N` through convolutions
//! and elementwise ops; a dimension that depends on values known only at run time is
//! [`Dim::Unknown`].

use crate::error::{Error, Result};
use crate::graph::op::Op;
use crate::graph::types::{Dim, TensorType};
use crate::tensor::Tensor;

/// One input of a node as shape inference sees it.
#[derive(Clone, Copy, Debug)]
pub struct Operand<'a> {
    /// Its type.
    pub ty: &'a TensorType,
    /// Its value, if it is a constant.
    pub value: Option<&'a Tensor>,
}

/// The output types of `op` applied to `inputs` (`None` for absent optional inputs), for a
/// node named `node` with `n_outputs` outputs. Checks arity, dtypes and shape compatibility.
pub fn infer(
    op: &Op,
    node: &str,
    inputs: &[Option<Operand<'_>>],
    n_outputs: usize,
) -> Result<Vec<TensorType>> {
    let _ = (inputs, n_outputs, Dim::Unknown);
    Err(Error::node(
        node,
        op.name(),
        "shape inference is not written yet",
    ))
}
