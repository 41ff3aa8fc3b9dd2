//! Slice geometry: resolving ONNX Slice bounds on one axis. Shape inference, the interpreter
//! and lowering all use [`slice_range`], so the three agree.

/// The first index and the length of `start..end` by `step` (non-zero) on an axis of length
/// `dim`: negative indices count from the end, out-of-range ones clamp (ONNX Slice). For a
/// negative step the first index is the highest one and the slice walks down.
pub fn slice_range(start: i64, end: i64, step: i64, dim: usize) -> (usize, usize) {
    let dim = dim as i128;
    let resolve = |v: i64| {
        let v = i128::from(v);
        if v < 0 { v + dim } else { v }
    };
    let (start, end, step) = (resolve(start), resolve(end), i128::from(step));
    let (start, end) = if step > 0 {
        (start.clamp(0, dim), end.clamp(0, dim))
    } else {
        (start.max(0).min(dim - 1), end.max(-1).min(dim - 1))
    };
    let span = if step > 0 { end - start } else { start - end };
    let len = if span > 0 && step != 0 {
        (span + step.abs() - 1) / step.abs()
    } else {
        0
    };
    // Both fit: start is in 0..=dim and len is at most dim.
    (start.max(0) as usize, len as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn onnx_slice_cases() {
        assert_eq!(slice_range(0, 3, 1, 10), (0, 3));
        assert_eq!(slice_range(-3, i64::MAX, 1, 10), (7, 3));
        assert_eq!(slice_range(i64::MAX, i64::MIN, -1, 10), (9, 10));
        assert_eq!(slice_range(5, 1, -2, 10), (5, 2));
        assert_eq!(slice_range(20, 30, 1, 10), (10, 0));
        assert_eq!(slice_range(0, 5, 1, 0), (0, 0));
    }
}

/// The dims `[start, end)` of `shape` that ONNX Shape returns: negative bounds count from
/// the end, and both clamp to `[0, rank]`.
pub fn shape_dims(shape: &[usize], start: i64, end: Option<i64>) -> Vec<i64> {
    let rank = shape.len() as i64;
    let resolve = |v: i64| (if v < 0 { v.saturating_add(rank) } else { v }).clamp(0, rank) as usize;
    let (s, e) = (resolve(start), resolve(end.unwrap_or(rank)));
    shape
        .get(s..e.max(s))
        .unwrap_or_default()
        .iter()
        .map(|&d| d as i64)
        .collect()
}

#[cfg(test)]
mod shape_tests {
    use super::*;

    #[test]
    fn shape_dims_clamp_like_onnx() {
        assert_eq!(shape_dims(&[2, 3, 4], 0, None), [2, 3, 4]);
        assert_eq!(shape_dims(&[2, 3, 4], -2, None), [3, 4]);
        assert_eq!(shape_dims(&[2, 3, 4], 1, Some(-1)), [3]);
        assert_eq!(shape_dims(&[2, 3, 4], 5, Some(1)), Vec::<i64>::new());
        assert_eq!(shape_dims(&[2, 3, 4], i64::MIN, Some(i64::MAX)), [2, 3, 4]);
    }
}
