//! Lowering of the linalg ops (see [`super`] for the conventions).

use super::{Lowered, NodeInfo};
use crate::error::Result;

/// Lowers a node of this family.
pub(super) fn lower(node: &NodeInfo<'_>) -> Result<Lowered> {
    Err(node.unsupported("this op has no compiled lowering yet"))
}
