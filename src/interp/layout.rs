//! Helpers shared by the interpreter's elementwise and data-movement ops: row-major strides,
//! numpy broadcasting, a strided walk over a multi-dimensional index space, axis
//! normalization and reading small `i64` operands (axes, shapes, pads).
//!
//! Data-movement ops are written once, generic over the element type through [`Element`],
//! and dispatched on the tensor's dtype at the call.

use std::ops::Range;

use super::OpResult;
use crate::graph::types::format_shape;
use crate::tensor::{Tensor, TensorData};

/// An element type a tensor can hold.
pub(super) trait Element: Copy {
    /// The elements of `data`, if they have this type.
    fn slice(data: &TensorData) -> Option<&[Self]>;
    /// Wraps elements of this type as tensor data.
    fn wrap(values: Vec<Self>) -> TensorData;
}

impl Element for f32 {
    fn slice(data: &TensorData) -> Option<&[f32]> {
        match data {
            TensorData::F32(v) => Some(v),
            TensorData::I64(_) => None,
        }
    }

    fn wrap(values: Vec<f32>) -> TensorData {
        TensorData::F32(values)
    }
}

impl Element for i64 {
    fn slice(data: &TensorData) -> Option<&[i64]> {
        match data {
            TensorData::I64(v) => Some(v),
            TensorData::F32(_) => None,
        }
    }

    fn wrap(values: Vec<i64>) -> TensorData {
        TensorData::I64(values)
    }
}

/// Builds a tensor, turning a length mismatch (an interpreter bug) into a message.
pub(super) fn tensor(shape: Vec<usize>, data: TensorData) -> OpResult<Tensor> {
    Tensor::new(shape, data).map_err(|e| e.to_string())
}

/// The product of `dims`, or an error if it overflows.
pub(super) fn product(dims: &[usize]) -> OpResult<usize> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("shape {} has too many elements", format_shape(dims)))
}

/// Row-major strides of `shape`, in elements.
pub(super) fn strides(shape: &[usize]) -> Vec<usize> {
    let mut out = vec![1usize; shape.len()];
    for axis in (0..shape.len().saturating_sub(1)).rev() {
        out[axis] = out[axis + 1] * shape[axis + 1];
    }
    out
}

/// The numpy (multidirectional) broadcast of two shapes.
pub(super) fn broadcast_shape(a: &[usize], b: &[usize]) -> OpResult<Vec<usize>> {
    let rank = a.len().max(b.len());
    let dim = |shape: &[usize], i: usize| {
        // Shapes align at the right; missing leading dims act as 1.
        let offset = rank - shape.len();
        if i < offset { 1 } else { shape[i - offset] }
    };
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            _ => Err(format!(
                "shapes {} and {} do not broadcast",
                format_shape(a),
                format_shape(b)
            )),
        })
        .collect()
}

/// Strides that read a tensor of `shape` broadcast to a shape of rank `out_rank` (which must
/// be at least `shape.len()`): broadcast axes (size 1 or missing) get stride 0.
pub(super) fn broadcast_strides(shape: &[usize], out_rank: usize) -> Vec<isize> {
    let offset = out_rank - shape.len();
    let own = strides(shape);
    (0..out_rank)
        .map(|i| {
            if i < offset || shape[i - offset] == 1 {
                0
            } else {
                own[i - offset] as isize
            }
        })
        .collect()
}

/// Walks a multi-dimensional index space in row-major order and yields, for each index,
/// `offset + sum(index[k] * strides[k])`: the flat position of that element in a strided
/// view. Transposes, slices and broadcasts are all such views.
pub(super) struct Strided {
    shape: Vec<usize>,
    strides: Vec<isize>,
    index: Vec<usize>,
    position: isize,
    remaining: usize,
}

impl Strided {
    /// A walk over `shape` (which must fit in memory) with one stride per axis.
    pub(super) fn new(shape: &[usize], offset: isize, strides: Vec<isize>) -> Strided {
        debug_assert_eq!(shape.len(), strides.len());
        Strided {
            shape: shape.to_vec(),
            strides,
            index: vec![0; shape.len()],
            position: offset,
            remaining: shape.iter().product(),
        }
    }
}

impl Iterator for Strided {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let current = self.position as usize;
        // Advance the odometer: bump the last axis, carrying into earlier ones.
        for axis in (0..self.shape.len()).rev() {
            self.index[axis] += 1;
            self.position += self.strides[axis];
            if self.index[axis] < self.shape[axis] {
                break;
            }
            self.position -= self.strides[axis] * self.shape[axis] as isize;
            self.index[axis] = 0;
        }
        Some(current)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Strided {}

/// A new tensor of `shape` whose elements are `x`'s elements at the flat positions
/// `sources` (which must be in range and as many as `shape` holds).
pub(super) fn take(
    x: &Tensor,
    shape: Vec<usize>,
    sources: impl Iterator<Item = usize>,
) -> OpResult<Tensor> {
    let data = match x.data() {
        TensorData::F32(v) => TensorData::F32(sources.map(|i| v[i]).collect()),
        TensorData::I64(v) => TensorData::I64(sources.map(|i| v[i]).collect()),
    };
    tensor(shape, data)
}

/// A new tensor of `shape` made of `x`'s elements in the flat ranges `blocks`, in order
/// (which must be in range and hold as many elements as `shape`).
pub(super) fn take_blocks(
    x: &Tensor,
    shape: Vec<usize>,
    blocks: impl Iterator<Item = Range<usize>>,
) -> OpResult<Tensor> {
    fn copy<T: Copy>(v: &[T], n: usize, blocks: impl Iterator<Item = Range<usize>>) -> Vec<T> {
        let mut out = Vec::with_capacity(n);
        for block in blocks {
            out.extend_from_slice(&v[block]);
        }
        out
    }
    let n = product(&shape)?;
    let data = match x.data() {
        TensorData::F32(v) => TensorData::F32(copy(v, n, blocks)),
        TensorData::I64(v) => TensorData::I64(copy(v, n, blocks)),
    };
    tensor(shape, data)
}

/// Resolves a possibly negative axis against `rank`: valid axes are `-rank..rank`.
pub(super) fn normalize_axis(axis: i64, rank: usize) -> OpResult<usize> {
    let r = rank as i64;
    if (-r..r).contains(&axis) {
        Ok(if axis < 0 { axis + r } else { axis } as usize)
    } else {
        Err(format!("axis {axis} is out of range for rank {rank}"))
    }
}

/// Resolves a list of possibly negative axes against `rank`, rejecting duplicates.
pub(super) fn normalize_axes(axes: &[i64], rank: usize) -> OpResult<Vec<usize>> {
    let mut out = Vec::with_capacity(axes.len());
    for &axis in axes {
        let a = normalize_axis(axis, rank)?;
        if out.contains(&a) {
            return Err(format!("axes {axes:?} name axis {a} twice"));
        }
        out.push(a);
    }
    Ok(out)
}

/// The values of a small `i64` operand of rank 0 or 1 (axes, shapes, pads); `what` names
/// it in errors.
pub(super) fn read_ints(t: &Tensor, what: &str) -> OpResult<Vec<i64>> {
    let values = t
        .as_i64()
        .ok_or_else(|| format!("{what} must be i64, got {}", t.dtype()))?;
    if t.rank() > 1 {
        return Err(format!(
            "{what} must be a vector, got shape {}",
            format_shape(t.shape())
        ));
    }
    Ok(values.to_vec())
}

/// `v` as an `i64` rounded toward zero, or `None` for NaN, infinities and values out of
/// range.
pub(super) fn f64_to_i64(v: f64) -> Option<i64> {
    // 2^63 is exactly representable; every finite value strictly inside (-2^63 - 1, 2^63)
    // truncates to an i64.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    let t = v.trunc();
    (t.is_finite() && (-LIMIT..LIMIT).contains(&t)).then_some(t as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_follows_numpy() {
        assert_eq!(broadcast_shape(&[2, 3, 4], &[4]).unwrap(), vec![2, 3, 4]);
        assert_eq!(broadcast_shape(&[2, 1, 4], &[3, 1]).unwrap(), vec![2, 3, 4]);
        assert_eq!(broadcast_shape(&[], &[5]).unwrap(), vec![5]);
        assert_eq!(broadcast_shape(&[0, 1], &[1, 3]).unwrap(), vec![0, 3]);
        let err = broadcast_shape(&[2, 3], &[4]).unwrap_err();
        assert_eq!(err, "shapes [2,3] and [4] do not broadcast");
    }

    #[test]
    fn strided_walks_a_transposed_view() {
        // A [2, 3] tensor read as its [3, 2] transpose.
        let walk: Vec<usize> = Strided::new(&[3, 2], 0, vec![1, 3]).collect();
        assert_eq!(walk, vec![0, 3, 1, 4, 2, 5]);
        let reversed: Vec<usize> = Strided::new(&[3], 4, vec![-2]).collect();
        assert_eq!(reversed, vec![4, 2, 0]);
        assert_eq!(Strided::new(&[], 0, vec![]).collect::<Vec<_>>(), vec![0]);
        assert_eq!(Strided::new(&[2, 0], 0, vec![0, 1]).count(), 0);
    }

    #[test]
    fn axes_normalize_and_reject_duplicates() {
        assert_eq!(normalize_axis(-1, 3).unwrap(), 2);
        assert!(normalize_axis(3, 3).is_err());
        assert!(normalize_axis(-4, 3).is_err());
        assert!(normalize_axes(&[0, -3], 3).is_err());
    }

    #[test]
    fn float_to_int_truncates_and_rejects_the_unrepresentable() {
        assert_eq!(f64_to_i64(-2.7), Some(-2));
        assert_eq!(f64_to_i64(2.7), Some(2));
        assert_eq!(f64_to_i64(f64::NAN), None);
        assert_eq!(f64_to_i64(f64::INFINITY), None);
        assert_eq!(f64_to_i64(9.3e18), None);
        assert_eq!(f64_to_i64(-9_223_372_036_854_775_808.0), Some(i64::MIN));
    }
}
