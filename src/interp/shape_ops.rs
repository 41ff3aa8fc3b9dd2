//! Data-movement ops: flatten, reshape, transpose, concat, split, slice, pad, squeeze,
//! unsqueeze, shape and gather.
//!
//! They never compute with elements, only move them, so each is written once for every
//! dtype: as a strided view ([`Strided`]), as a list of contiguous blocks, or generically
//! over [`Element`].

use super::OpResult;
use super::layout::{
    Element, Strided, normalize_axes, normalize_axis, product, read_ints, strides, take,
    take_blocks, tensor,
};
use crate::graph::op::PadMode;
use crate::graph::slice::slice_range;
use crate::graph::types::format_shape;
use crate::tensor::{DType, Tensor, TensorData};

/// `x`'s elements under a new shape with the same element count.
fn reshaped(x: &Tensor, shape: Vec<usize>) -> OpResult<Tensor> {
    x.clone().reshaped(shape).map_err(|e| e.to_string())
}

/// Reshapes to 2-D: the dims before `axis`, then the rest.
pub(super) fn flatten(axis: i64, x: &Tensor) -> OpResult<Tensor> {
    let shape = x.shape();
    // Flatten's axis may also be the rank itself (everything in the outer dim).
    let axis = if axis == shape.len() as i64 {
        shape.len()
    } else {
        normalize_axis(axis, shape.len())?
    };
    let outer = product(&shape[..axis])?;
    let inner = product(&shape[axis..])?;
    reshaped(x, vec![outer, inner])
}

/// Reshapes to `shape`, where -1 is inferred and 0 copies the input dim (unless
/// `allowzero`).
pub(super) fn reshape(allowzero: bool, x: &Tensor, shape: &Tensor) -> OpResult<Tensor> {
    let target = read_ints(shape, "shape")?;
    let input = x.shape();
    let mut dims = Vec::with_capacity(target.len());
    let mut inferred = None;
    for (i, &d) in target.iter().enumerate() {
        let dim = match d {
            -1 if inferred.is_some() => {
                return Err(format!("shape {target:?} has more than one -1"));
            }
            -1 => {
                inferred = Some(i);
                1
            }
            0 if !allowzero => *input.get(i).ok_or_else(|| {
                format!(
                    "shape {target:?} copies dim {i} of the input, which has shape {}",
                    format_shape(input)
                )
            })?,
            d => usize::try_from(d).map_err(|_| format!("shape {target:?} has dim {d}"))?,
        };
        dims.push(dim);
    }
    if allowzero && inferred.is_some() && target.contains(&0) {
        return Err(format!(
            "shape {target:?} has both 0 and -1, which allowzero forbids"
        ));
    }
    let total = x.len();
    let mismatch = || {
        format!(
            "cannot reshape {} ({total} elements) to {target:?}",
            format_shape(input)
        )
    };
    if let Some(i) = inferred {
        let known = product(&dims)?;
        if known == 0 || !total.is_multiple_of(known) {
            return Err(mismatch());
        }
        dims[i] = total / known;
    }
    if product(&dims)? != total {
        return Err(mismatch());
    }
    reshaped(x, dims)
}

/// Permutes the axes (reverses them when `perm` is absent).
pub(super) fn transpose(perm: Option<&[usize]>, x: &Tensor) -> OpResult<Tensor> {
    let shape = x.shape();
    let rank = shape.len();
    let perm: Vec<usize> = match perm {
        Some(p) => p.to_vec(),
        None => (0..rank).rev().collect(),
    };
    let mut sorted = perm.clone();
    sorted.sort_unstable();
    if !sorted.iter().copied().eq(0..rank) {
        return Err(format!(
            "perm {perm:?} is not a permutation of the axes of shape {}",
            format_shape(shape)
        ));
    }
    let in_strides = strides(shape);
    let out_shape: Vec<usize> = perm.iter().map(|&a| shape[a]).collect();
    let view_strides = perm.iter().map(|&a| in_strides[a] as isize).collect();
    let sources = Strided::new(&out_shape, 0, view_strides);
    take(x, out_shape, sources)
}

/// Joins tensors along `axis`.
pub(super) fn concat(axis: i64, parts: &[&Tensor]) -> OpResult<Tensor> {
    let first = parts.first().ok_or("concat needs at least one input")?;
    let shape = first.shape();
    if shape.is_empty() {
        return Err("cannot concatenate scalars".to_string());
    }
    let axis = normalize_axis(axis, shape.len())?;
    let mut out_shape = shape.to_vec();
    out_shape[axis] = 0;
    for part in parts {
        let same_other_dims = part.rank() == shape.len()
            && (0..shape.len()).all(|a| a == axis || part.shape()[a] == shape[a]);
        if part.dtype() != first.dtype() || !same_other_dims {
            return Err(format!(
                "cannot concatenate {} {} with {} {} along axis {axis}",
                first.dtype(),
                format_shape(shape),
                part.dtype(),
                format_shape(part.shape())
            ));
        }
        out_shape[axis] = out_shape[axis]
            .checked_add(part.shape()[axis])
            .ok_or("concatenated axis is too long")?;
    }
    let outer = product(&shape[..axis])?;
    let inner = product(&shape[axis + 1..])?;
    product(&out_shape)?;
    let data = match first.dtype() {
        DType::F32 => f32::wrap(concat_elements(parts, axis, outer, inner)),
        DType::I64 => i64::wrap(concat_elements(parts, axis, outer, inner)),
    };
    tensor(out_shape, data)
}

/// Interleaves the parts' blocks: for each outer index, each part's slab along the axis.
/// The parts must all hold `T` and agree on every dim but `axis`.
fn concat_elements<T: Element>(
    parts: &[&Tensor],
    axis: usize,
    outer: usize,
    inner: usize,
) -> Vec<T> {
    let slabs: Vec<(&[T], usize)> = parts
        .iter()
        .map(|p| {
            let values = T::slice(p.data()).unwrap_or_default();
            (values, p.shape()[axis] * inner)
        })
        .collect();
    let mut out = Vec::with_capacity(slabs.iter().map(|(v, _)| v.len()).sum());
    for o in 0..outer {
        for &(values, slab) in &slabs {
            out.extend_from_slice(&values[o * slab..(o + 1) * slab]);
        }
    }
    out
}

/// Splits along `axis` into `n_outputs` parts: by the `split` sizes, into `num_outputs`
/// parts of ceil(len / n), or into equal parts.
pub(super) fn split(
    axis: i64,
    num_outputs: Option<usize>,
    x: &Tensor,
    split: Option<&Tensor>,
    n_outputs: usize,
) -> OpResult<Vec<Tensor>> {
    let shape = x.shape();
    if shape.is_empty() {
        return Err("cannot split a scalar".to_string());
    }
    let axis = normalize_axis(axis, shape.len())?;
    let len = shape[axis];
    let sizes = split_sizes(len, num_outputs, split, n_outputs)?;
    let outer = product(&shape[..axis])?;
    let inner = product(&shape[axis + 1..])?;
    let mut start = 0;
    let mut outputs = Vec::with_capacity(sizes.len());
    for size in sizes {
        let mut out_shape = shape.to_vec();
        out_shape[axis] = size;
        let blocks =
            (0..outer).map(|o| (o * len + start) * inner..(o * len + start + size) * inner);
        outputs.push(take_blocks(x, out_shape, blocks)?);
        start += size;
    }
    Ok(outputs)
}

/// The part lengths of a split of an axis of length `len` into `n_outputs` parts.
fn split_sizes(
    len: usize,
    num_outputs: Option<usize>,
    split: Option<&Tensor>,
    n_outputs: usize,
) -> OpResult<Vec<usize>> {
    // An empty split input means none, as in onnxruntime.
    let split = match split {
        Some(t) if !t.is_empty() => Some(read_ints(t, "split")?),
        _ => None,
    };
    match (split, num_outputs) {
        (Some(_), Some(_)) => Err("split and num_outputs cannot both be given".to_string()),
        (Some(split), None) => {
            let sizes = split
                .iter()
                .map(|&s| usize::try_from(s))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| format!("split {split:?} has a negative size"))?;
            if sizes.len() != n_outputs {
                return Err(format!(
                    "split {split:?} has {} sizes for {n_outputs} outputs",
                    sizes.len()
                ));
            }
            if sizes.iter().try_fold(0usize, |acc, &s| acc.checked_add(s)) != Some(len) {
                return Err(format!(
                    "split {split:?} does not sum to the axis length {len}"
                ));
            }
            Ok(sizes)
        }
        (None, Some(n)) => {
            if n != n_outputs {
                return Err(format!(
                    "num_outputs is {n}, but the node has {n_outputs} outputs"
                ));
            }
            // Opset 18: parts of ceil(len / n), the last one smaller if need be.
            let part = len.div_ceil(n);
            let last = (n - 1)
                .checked_mul(part)
                .and_then(|used| len.checked_sub(used))
                .ok_or_else(|| {
                    format!("cannot split an axis of length {len} into {n} parts of {part}")
                })?;
            let mut sizes = vec![part; n - 1];
            sizes.push(last);
            Ok(sizes)
        }
        (None, None) => {
            if n_outputs == 0 || !len.is_multiple_of(n_outputs) {
                return Err(format!(
                    "cannot split an axis of length {len} into {n_outputs} equal parts"
                ));
            }
            Ok(vec![len / n_outputs; n_outputs])
        }
    }
}

/// Takes `starts..ends` by `steps` on `axes`, with negative and out-of-range indices
/// resolved as ONNX Slice does.
pub(super) fn slice(
    x: &Tensor,
    starts: &Tensor,
    ends: &Tensor,
    axes: Option<&Tensor>,
    steps: Option<&Tensor>,
) -> OpResult<Tensor> {
    let shape = x.shape();
    let starts = read_ints(starts, "starts")?;
    let ends = read_ints(ends, "ends")?;
    let n = starts.len();
    let axes = match axes {
        Some(t) => read_ints(t, "axes")?,
        None => (0..n as i64).collect(),
    };
    let steps = match steps {
        Some(t) => read_ints(t, "steps")?,
        None => vec![1; n],
    };
    if ends.len() != n || axes.len() != n || steps.len() != n {
        return Err(format!(
            "starts, ends, axes and steps differ in length: {starts:?}, {ends:?}, {axes:?}, \
             {steps:?}"
        ));
    }
    let axes = normalize_axes(&axes, shape.len())?;
    let in_strides = strides(shape);
    let mut out_shape = shape.to_vec();
    let mut view_strides: Vec<isize> = in_strides.iter().map(|&s| s as isize).collect();
    let mut offset = 0isize;
    for (k, &axis) in axes.iter().enumerate() {
        let step = steps[k];
        if step == 0 {
            return Err(format!("steps {steps:?} has a zero step"));
        }
        let (start, len) = slice_range(starts[k], ends[k], step, shape[axis]);
        out_shape[axis] = len;
        offset += start as isize * in_strides[axis] as isize;
        // A step only matters when the axis keeps two or more elements; then it is at most
        // the axis length and step * stride cannot overflow.
        view_strides[axis] = if len > 1 {
            step as isize * in_strides[axis] as isize
        } else {
            0
        };
    }
    if out_shape.contains(&0) {
        offset = 0;
    }
    let sources = Strided::new(&out_shape, offset, view_strides);
    take(x, out_shape, sources)
}

/// Pads (or, with negative pads, crops) each axis in `axes` (all when absent).
pub(super) fn pad(
    mode: PadMode,
    x: &Tensor,
    pads: &Tensor,
    value: Option<&Tensor>,
    axes: Option<&Tensor>,
) -> OpResult<Tensor> {
    let shape = x.shape();
    let rank = shape.len();
    let pads = read_ints(pads, "pads")?;
    let axes = match axes {
        Some(t) => normalize_axes(&read_ints(t, "axes")?, rank)?,
        None => (0..rank).collect(),
    };
    if pads.len() != 2 * axes.len() {
        return Err(format!(
            "pads {pads:?} must have 2 values per padded axis ({} axes of shape {})",
            axes.len(),
            format_shape(shape)
        ));
    }
    let mut before = vec![0i64; rank];
    let mut after = vec![0i64; rank];
    for (k, &axis) in axes.iter().enumerate() {
        before[axis] = pads[k];
        after[axis] = pads[k + axes.len()];
    }

    let mut out_shape = Vec::with_capacity(rank);
    for axis in 0..rank {
        let dim = shape[axis] as i128 + i128::from(before[axis]) + i128::from(after[axis]);
        let dim = usize::try_from(dim).map_err(|_| {
            format!(
                "pads {pads:?} do not fit axis {axis} of shape {}",
                format_shape(shape)
            )
        })?;
        if shape[axis] == 0 && dim > 0 && mode != PadMode::Constant {
            return Err(format!(
                "cannot pad empty axis {axis} of shape {} in mode {}",
                format_shape(shape),
                format!("{mode:?}").to_lowercase()
            ));
        }
        out_shape.push(dim);
    }
    product(&out_shape)?;

    // For each axis, the input index each output index reads (None: the fill value).
    let sources: Vec<Vec<Option<usize>>> = (0..rank)
        .map(|axis| {
            let dim = shape[axis] as i128;
            (0..out_shape[axis] as i128)
                .map(|o| pad_source(mode, o - i128::from(before[axis]), dim))
                .collect()
        })
        .collect();

    if let Some(v) = value
        && (v.dtype() != x.dtype() || v.len() > 1)
    {
        return Err(format!(
            "constant_value must be a single {} value, got {} of shape {}",
            x.dtype(),
            v.dtype(),
            format_shape(v.shape())
        ));
    }
    let in_strides = strides(shape);
    let data = match x.data() {
        TensorData::F32(v) => {
            let fill = value.and_then(|t| t.as_f32()?.first().copied());
            f32::wrap(pad_elements(v, &sources, &in_strides, fill.unwrap_or(0.0)))
        }
        TensorData::I64(v) => {
            let fill = value.and_then(|t| t.as_i64()?.first().copied());
            i64::wrap(pad_elements(v, &sources, &in_strides, fill.unwrap_or(0)))
        }
    };
    tensor(out_shape, data)
}

/// The input index that index `i` (possibly outside `0..dim`) of a padded axis reads, or
/// `None` for the fill value. `dim` is not 0 unless the mode is constant.
fn pad_source(mode: PadMode, i: i128, dim: i128) -> Option<usize> {
    let i = if (0..dim).contains(&i) {
        i
    } else {
        match mode {
            PadMode::Constant => return None,
            PadMode::Edge => i.clamp(0, dim - 1),
            PadMode::Wrap => i.rem_euclid(dim),
            PadMode::Reflect if dim == 1 => 0,
            PadMode::Reflect => {
                // Mirror images repeat with period 2 (dim - 1), as numpy's reflect does.
                let period = 2 * (dim - 1);
                let m = i.rem_euclid(period);
                if m < dim { m } else { period - m }
            }
        }
    };
    Some(i as usize)
}

/// The padded elements, in row-major order of the output: `sources[axis][o]` is the input
/// index output index `o` reads on that axis, or `None` for the fill value.
fn pad_elements<T: Copy>(
    values: &[T],
    sources: &[Vec<Option<usize>>],
    in_strides: &[usize],
    fill: T,
) -> Vec<T> {
    fn visit<T: Copy>(
        values: &[T],
        sources: &[Vec<Option<usize>>],
        in_strides: &[usize],
        fill: T,
        base: Option<usize>,
        out: &mut Vec<T>,
    ) {
        match sources.split_first() {
            None => out.push(base.map_or(fill, |b| values[b])),
            Some((axis_sources, rest)) => {
                for &src in axis_sources {
                    let next = base.zip(src).map(|(b, s)| b + s * in_strides[0]);
                    visit(values, rest, &in_strides[1..], fill, next, out);
                }
            }
        }
    }
    let mut out = Vec::with_capacity(sources.iter().map(Vec::len).product());
    visit(values, sources, in_strides, fill, Some(0), &mut out);
    out
}

/// Removes size-1 axes: those in `axes`, or all of them.
pub(super) fn squeeze(x: &Tensor, axes: Option<&Tensor>) -> OpResult<Tensor> {
    let shape = x.shape();
    // An empty `axes` tensor means the same as none (as ONNX Runtime and shape inference
    // read it): squeeze every size-1 axis.
    let axes = match axes.filter(|t| !t.is_empty()) {
        Some(t) => {
            let axes = normalize_axes(&read_ints(t, "axes")?, shape.len())?;
            if let Some(&a) = axes.iter().find(|&&a| shape[a] != 1) {
                return Err(format!(
                    "cannot squeeze axis {a} of shape {}: its size is not 1",
                    format_shape(shape)
                ));
            }
            axes
        }
        None => (0..shape.len()).filter(|&a| shape[a] == 1).collect(),
    };
    let out_shape = (0..shape.len())
        .filter(|a| !axes.contains(a))
        .map(|a| shape[a])
        .collect();
    reshaped(x, out_shape)
}

/// Inserts size-1 axes at `axes`, which index the output.
pub(super) fn unsqueeze(x: &Tensor, axes: &Tensor) -> OpResult<Tensor> {
    let shape = x.shape();
    let axes = read_ints(axes, "axes")?;
    // Axes refer to the output, whose rank counts the new axes too.
    let out_rank = shape.len() + axes.len();
    let axes = normalize_axes(&axes, out_rank)?;
    let mut dims = shape.iter();
    let out_shape = (0..out_rank)
        .map(|a| {
            if axes.contains(&a) {
                1
            } else {
                // There are exactly as many non-new axes as input dims.
                dims.next().copied().unwrap_or(1)
            }
        })
        .collect();
    reshaped(x, out_shape)
}

/// The dims `start..end` of `x`'s shape as an `i64` vector.
pub(super) fn shape(start: i64, end: Option<i64>, x: &Tensor) -> OpResult<Tensor> {
    Ok(Tensor::vector_i64(crate::graph::slice::shape_dims(
        x.shape(),
        start,
        end,
    )))
}

/// Picks entries along `axis` at `indices`; the result has the indices' dims in place of
/// that axis.
pub(super) fn gather(axis: i64, x: &Tensor, indices: &Tensor) -> OpResult<Tensor> {
    let shape = x.shape();
    if shape.is_empty() {
        return Err("cannot gather from a scalar".to_string());
    }
    let axis = normalize_axis(axis, shape.len())?;
    let dim = shape[axis];
    let raw = indices
        .as_i64()
        .ok_or_else(|| format!("indices must be i64, got {}", indices.dtype()))?;
    let resolved = raw
        .iter()
        .map(|&i| {
            let j = if i < 0 { i + dim as i64 } else { i };
            usize::try_from(j).ok().filter(|&j| j < dim).ok_or_else(|| {
                format!(
                    "index {i} is out of range for axis {axis} of shape {}",
                    format_shape(shape)
                )
            })
        })
        .collect::<OpResult<Vec<usize>>>()?;
    let out_shape: Vec<usize> = shape[..axis]
        .iter()
        .chain(indices.shape())
        .chain(&shape[axis + 1..])
        .copied()
        .collect();
    let outer = product(&shape[..axis])?;
    let inner = product(&shape[axis + 1..])?;
    let blocks = (0..outer).flat_map(|o| {
        resolved
            .iter()
            .map(move |&j| (o * dim + j) * inner..(o * dim + j + 1) * inner)
    });
    take_blocks(x, out_shape, blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iota(shape: &[usize]) -> Tensor {
        let n = shape.iter().product::<usize>();
        Tensor::from_f32(shape.to_vec(), (0..n).map(|i| i as f32).collect()).unwrap()
    }

    fn ints(values: &[i64]) -> Tensor {
        Tensor::vector_i64(values.to_vec())
    }

    fn values(t: &Tensor) -> Vec<f64> {
        t.to_f64_vec()
    }

    #[test]
    fn flatten_splits_at_the_axis() {
        let x = iota(&[2, 3, 4]);
        assert_eq!(flatten(0, &x).unwrap().shape(), &[1, 24]);
        assert_eq!(flatten(2, &x).unwrap().shape(), &[6, 4]);
        assert_eq!(flatten(3, &x).unwrap().shape(), &[24, 1]);
        assert_eq!(flatten(-1, &x).unwrap().shape(), &[6, 4]);
        assert_eq!(flatten(-3, &x).unwrap().shape(), &[1, 24]);
        assert!(flatten(4, &x).is_err());
        assert!(flatten(-4, &x).is_err());
    }

    #[test]
    fn reshape_copies_zeros_and_infers_minus_one() {
        let x = iota(&[2, 3, 4]);
        assert_eq!(
            reshape(false, &x, &ints(&[0, -1])).unwrap().shape(),
            &[2, 12]
        );
        assert_eq!(
            reshape(false, &x, &ints(&[-1, 0, 2])).unwrap().shape(),
            &[4, 3, 2]
        );
        assert_eq!(reshape(false, &x, &ints(&[24])).unwrap().shape(), &[24]);
        let empty = iota(&[0, 3]);
        assert_eq!(
            reshape(true, &empty, &ints(&[3, 0])).unwrap().shape(),
            &[3, 0]
        );
        assert_eq!(
            reshape(false, &empty, &ints(&[-1, 3])).unwrap().shape(),
            &[0, 3]
        );
        assert_eq!(
            reshape(false, &x, &ints(&[5, -1])).unwrap_err(),
            "cannot reshape [2,3,4] (24 elements) to [5, -1]"
        );
        assert!(reshape(false, &x, &ints(&[-1, -1])).is_err());
        assert!(reshape(false, &x, &ints(&[2, -2, 12])).is_err());
        assert!(reshape(false, &x, &ints(&[1, 1, 1, 0])).is_err());
        assert!(reshape(true, &x, &ints(&[0, -1])).is_err());
    }

    #[test]
    fn transpose_permutes_axes() {
        let x = iota(&[2, 3]);
        let t = transpose(None, &x).unwrap();
        assert_eq!(t.shape(), &[3, 2]);
        assert_eq!(values(&t), vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        let y = iota(&[2, 3, 4]);
        let p = transpose(Some(&[1, 2, 0]), &y).unwrap();
        assert_eq!(p.shape(), &[3, 4, 2]);
        // p[i][j][k] = y[k][i][j] = 12k + 4i + j.
        assert_eq!(values(&p)[..4], [0.0, 12.0, 1.0, 13.0]);
        assert!(transpose(Some(&[0, 0, 1]), &y).is_err());
        assert!(transpose(Some(&[0, 1]), &y).is_err());
        let ints = Tensor::from_i64(vec![2, 2], vec![1, 2, 3, 4]).unwrap();
        assert_eq!(
            transpose(None, &ints).unwrap().as_i64().unwrap(),
            &[1, 3, 2, 4]
        );
    }

    #[test]
    fn concat_joins_along_any_axis() {
        let a = iota(&[2, 2]);
        let b = Tensor::from_f32(vec![2, 1], vec![10.0, 11.0]).unwrap();
        let c = concat(-1, &[&a, &b]).unwrap();
        assert_eq!(c.shape(), &[2, 3]);
        assert_eq!(values(&c), vec![0.0, 1.0, 10.0, 2.0, 3.0, 11.0]);
        let rows = concat(0, &[&a, &iota(&[0, 2]), &a]).unwrap();
        assert_eq!(rows.shape(), &[4, 2]);
        assert_eq!(values(&rows), vec![0.0, 1.0, 2.0, 3.0, 0.0, 1.0, 2.0, 3.0]);
        let shapes = concat(0, &[&ints(&[1, 2]), &ints(&[3])]).unwrap();
        assert_eq!(shapes.as_i64().unwrap(), &[1, 2, 3]);
        assert_eq!(
            concat(0, &[&a, &b]).unwrap_err(),
            "cannot concatenate f32 [2,2] with f32 [2,1] along axis 0"
        );
        assert!(concat(1, &[&a, &ints(&[1, 2])]).is_err());
        assert!(concat(2, &[&a]).is_err());
    }

    #[test]
    fn split_by_sizes_by_count_and_equally() {
        let x = iota(&[2, 5]);
        let parts = split(1, None, &x, Some(&ints(&[2, 0, 3])), 3).unwrap();
        let shapes: Vec<&[usize]> = parts.iter().map(|p| p.shape()).collect();
        assert_eq!(shapes, vec![&[2, 2][..], &[2, 0], &[2, 3]]);
        assert_eq!(values(&parts[2]), vec![2.0, 3.0, 4.0, 7.0, 8.0, 9.0]);
        let uneven = split(-1, Some(3), &x, None, 3).unwrap();
        let lens: Vec<usize> = uneven.iter().map(|p| p.shape()[1]).collect();
        assert_eq!(lens, vec![2, 2, 1]);
        assert_eq!(values(&uneven[1]), vec![2.0, 3.0, 7.0, 8.0]);
        let halves = split(0, None, &x, None, 2).unwrap();
        assert_eq!(values(&halves[1]), vec![5.0, 6.0, 7.0, 8.0, 9.0]);
        assert!(split(1, None, &x, None, 2).is_err());
        assert!(split(1, None, &x, Some(&ints(&[2, 2])), 2).is_err());
        assert!(split(1, None, &x, Some(&ints(&[6, -1])), 2).is_err());
        // Four parts of ceil(5 / 4) = 2 would need 8 elements.
        assert!(split(1, Some(4), &x, None, 4).is_err());
    }

    #[test]
    fn slice_clamps_and_steps_both_ways() {
        let x = iota(&[3, 4]);
        let s = slice(&x, &ints(&[1, 0]), &ints(&[2, 3]), None, None).unwrap();
        assert_eq!(s.shape(), &[1, 3]);
        assert_eq!(values(&s), vec![4.0, 5.0, 6.0]);
        let reversed = slice(
            &x,
            &ints(&[-1]),
            &ints(&[i64::MIN]),
            Some(&ints(&[1])),
            Some(&ints(&[-1])),
        )
        .unwrap();
        assert_eq!(reversed.shape(), &[3, 4]);
        assert_eq!(values(&reversed)[..4], [3.0, 2.0, 1.0, 0.0]);
        let stepped = slice(
            &x,
            &ints(&[0, 1]),
            &ints(&[i64::MAX, 1000]),
            Some(&ints(&[-2, -1])),
            Some(&ints(&[2, 2])),
        )
        .unwrap();
        assert_eq!(stepped.shape(), &[2, 2]);
        assert_eq!(values(&stepped), vec![1.0, 3.0, 9.0, 11.0]);
        let empty = slice(&x, &ints(&[10]), &ints(&[20]), None, None).unwrap();
        assert_eq!(empty.shape(), &[0, 4]);
        let huge_step = slice(&x, &ints(&[0]), &ints(&[3]), None, Some(&ints(&[i64::MAX])));
        assert_eq!(values(&huge_step.unwrap()), vec![0.0, 1.0, 2.0, 3.0]);
        assert!(slice(&x, &ints(&[0]), &ints(&[1]), None, Some(&ints(&[0]))).is_err());
        assert!(slice(&x, &ints(&[0]), &ints(&[1, 2]), None, None).is_err());
        assert!(
            slice(
                &x,
                &ints(&[0, 0]),
                &ints(&[1, 1]),
                Some(&ints(&[1, -1])),
                None
            )
            .is_err()
        );
    }

    #[test]
    fn pad_supports_every_mode() {
        let x = Tensor::from_f32(vec![3], vec![1.0, 2.0, 3.0]).unwrap();
        let pads = ints(&[5, 5]);
        let run = |mode| values(&pad(mode, &x, &pads, None, None).unwrap());
        // numpy.pad of [1, 2, 3] by 5 on each side.
        let reflect = [2, 1, 2, 3, 2, 1, 2, 3, 2, 1, 2, 3, 2];
        let wrap = [2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2];
        let edge = [1, 1, 1, 1, 1, 1, 2, 3, 3, 3, 3, 3, 3];
        let as_f64 = |v: &[i32]| v.iter().map(|&e| f64::from(e)).collect::<Vec<_>>();
        assert_eq!(run(PadMode::Reflect), as_f64(&reflect));
        assert_eq!(run(PadMode::Wrap), as_f64(&wrap));
        assert_eq!(run(PadMode::Edge), as_f64(&edge));
        let value = Tensor::scalar_f32(9.0);
        let constant = pad(PadMode::Constant, &x, &ints(&[1, 2]), Some(&value), None).unwrap();
        assert_eq!(values(&constant), vec![9.0, 1.0, 2.0, 3.0, 9.0, 9.0]);
        let cropped = pad(PadMode::Constant, &x, &ints(&[-1, 1]), None, None).unwrap();
        assert_eq!(values(&cropped), vec![2.0, 3.0, 0.0]);
        assert!(pad(PadMode::Constant, &x, &ints(&[-2, -2]), None, None).is_err());
        assert!(pad(PadMode::Constant, &x, &ints(&[1]), None, None).is_err());
    }

    #[test]
    fn pad_on_chosen_axes() {
        let x = Tensor::from_i64(vec![2, 2], vec![1, 2, 3, 4]).unwrap();
        let y = pad(PadMode::Edge, &x, &ints(&[1, 0]), None, Some(&ints(&[-1]))).unwrap();
        assert_eq!(y.shape(), &[2, 3]);
        assert_eq!(y.as_i64().unwrap(), &[1, 1, 2, 3, 3, 4]);
        let z = pad(
            PadMode::Constant,
            &x,
            &ints(&[0, 1]),
            Some(&Tensor::scalar_i64(-1)),
            Some(&ints(&[0])),
        )
        .unwrap();
        assert_eq!(z.as_i64().unwrap(), &[1, 2, 3, 4, -1, -1]);
        let empty = iota(&[0, 2]);
        assert!(pad(PadMode::Reflect, &empty, &ints(&[1, 0, 0, 0]), None, None).is_err());
        assert!(
            pad(
                PadMode::Constant,
                &x,
                &ints(&[0, 1]),
                Some(&Tensor::scalar_f32(1.0)),
                Some(&ints(&[0]))
            )
            .is_err()
        );
    }

    #[test]
    fn squeeze_and_unsqueeze_move_unit_axes() {
        let x = iota(&[1, 3, 1, 2]);
        assert_eq!(squeeze(&x, None).unwrap().shape(), &[3, 2]);
        let no_axes = Tensor::from_i64(vec![0], vec![]).unwrap();
        assert_eq!(squeeze(&x, Some(&no_axes)).unwrap().shape(), &[3, 2]);
        assert_eq!(squeeze(&x, Some(&ints(&[-2]))).unwrap().shape(), &[1, 3, 2]);
        assert_eq!(
            squeeze(&x, Some(&ints(&[1]))).unwrap_err(),
            "cannot squeeze axis 1 of shape [1,3,1,2]: its size is not 1"
        );
        let y = iota(&[3, 4]);
        assert_eq!(unsqueeze(&y, &ints(&[0])).unwrap().shape(), &[1, 3, 4]);
        assert_eq!(unsqueeze(&y, &ints(&[-1])).unwrap().shape(), &[3, 4, 1]);
        assert_eq!(
            unsqueeze(&y, &ints(&[3, 0])).unwrap().shape(),
            &[1, 3, 4, 1]
        );
        assert_eq!(
            unsqueeze(&y, &ints(&[1, 4, 2])).unwrap().shape(),
            &[3, 1, 1, 4, 1]
        );
        assert!(unsqueeze(&y, &ints(&[0, 0])).is_err());
        assert!(unsqueeze(&y, &ints(&[3])).is_err());
    }

    #[test]
    fn shape_slices_the_dims() {
        let x = iota(&[2, 3, 4]);
        assert_eq!(shape(0, None, &x).unwrap().as_i64().unwrap(), &[2, 3, 4]);
        assert_eq!(shape(-2, None, &x).unwrap().as_i64().unwrap(), &[3, 4]);
        assert_eq!(shape(1, Some(-1), &x).unwrap().as_i64().unwrap(), &[3]);
        assert_eq!(
            shape(-10, Some(10), &x).unwrap().as_i64().unwrap(),
            &[2, 3, 4]
        );
        assert!(shape(2, Some(1), &x).unwrap().is_empty());
    }

    #[test]
    fn gather_picks_along_an_axis() {
        let x = iota(&[3, 2]);
        let rows = gather(
            0,
            &x,
            &Tensor::from_i64(vec![2, 2], vec![0, 1, -1, 0]).unwrap(),
        )
        .unwrap();
        assert_eq!(rows.shape(), &[2, 2, 2]);
        assert_eq!(values(&rows), vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 0.0, 1.0]);
        let column = gather(1, &x, &Tensor::scalar_i64(1)).unwrap();
        assert_eq!(column.shape(), &[3]);
        assert_eq!(values(&column), vec![1.0, 3.0, 5.0]);
        let dims = gather(0, &ints(&[7, 8, 9]), &Tensor::scalar_i64(-1)).unwrap();
        assert_eq!(dims.as_i64().unwrap(), &[9]);
        assert_eq!(
            gather(0, &x, &Tensor::scalar_i64(3)).unwrap_err(),
            "index 3 is out of range for axis 0 of shape [3,2]"
        );
        assert!(gather(0, &x, &Tensor::scalar_f32(0.0)).is_err());
    }
}
