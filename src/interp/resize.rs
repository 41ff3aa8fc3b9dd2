//! Resize (nearest, linear, cubic; every coordinate transform; antialias).
//!
//! Follows ONNX Resize (opset 19) and, where the spec leaves room, the ONNX reference
//! implementation that produced the conformance data. The work is separable: for each axis
//! that changes, every output index gets a list of `(input index, weight)` taps (or a fill
//! value, for tf_crop_and_resize samples outside the input), and the axes are resampled one
//! after another. Nearest, linear, cubic, antialias and exclude_outside are all just
//! different taps. Arithmetic is done in `f64` and rounded to `f32` once at the end.
//!
//! Per axis, with input length `in`, output length `out` and scale `s`:
//! - the output length is `floor(in * s)` for `scales`, or the given size for `sizes`
//!   (with not_larger/not_smaller, one common scale `s` and `out = round_half_up(in * s)`);
//! - output index `x` maps to a real input coordinate `c` by the coordinate transform,
//!   where the "resized length" is the real number `in * s` (as the reference does);
//! - with `left = ceil(c) - 1` and `ratio = c - left` in `(0, 1]`, the kernel taps are
//!   `left + i` for `i` in `start..=1 - start`, weighted `k((i - ratio) * s')`, where
//!   `s' = min(s, 1)` with antialias (weights then renormalised) and `1` without;
//! - taps outside the input read the nearest edge element, or, with exclude_outside, get
//!   weight zero and the rest are renormalised.
//!
//! Two deliberate departures from the reference implementation, neither exercised by the
//! ONNX tests: pytorch_half_pixel maps every index to 0 when the resized length is 1 (the
//! spec and onnxruntime; the reference uses -0.5, which only matters for cubic), and the
//! taps always follow `ratio` (the reference picks its window from `c + pad` in floating
//! point, which can land one tap off when `c` is within an ulp of an integer).

use super::OpResult;
use crate::graph::op::{AspectRatioPolicy, CoordinateTransform, NearestMode, Resize, ResizeMode};
use crate::tensor::{DType, Tensor, element_count};

/// ONNX Resize of an f32 tensor `x`: `scales` or `sizes` (exactly one non-empty) give the
/// output size of the axes named by `attrs.axes` (all axes if empty); `roi` is read only
/// by tf_crop_and_resize (absent means the whole input).
pub(super) fn resize(
    attrs: &Resize,
    x: &Tensor,
    roi: Option<&Tensor>,
    scales: Option<&Tensor>,
    sizes: Option<&Tensor>,
) -> OpResult<Tensor> {
    let data = x
        .as_f32()
        .ok_or_else(|| format!("input must be f32, got {}", x.dtype()))?;
    let geometry = plan_axes(attrs, x.shape(), roi, scales, sizes)?;
    let out_shape: Vec<usize> = geometry.iter().map(|a| a.out_len).collect();
    element_count(&out_shape).map_err(|e| e.to_string())?;

    let mut shape = x.shape().to_vec();
    let mut values: Vec<f64> = data.iter().map(|&v| f64::from(v)).collect();
    // Innermost axis first, like the reference's nesting (this only affects rounding).
    for (axis, geom) in geometry.iter().enumerate().rev() {
        let samples = axis_samples(attrs, geom);
        if geom.out_len == geom.in_len && is_identity(&samples) {
            continue;
        }
        values = resample_axis(&values, &shape, axis, &samples)?;
        shape[axis] = geom.out_len;
    }
    let result = values.into_iter().map(|v| v as f32).collect();
    Tensor::from_f32(out_shape, result).map_err(|e| e.to_string())
}

/// The resampling of one axis, as the compiler reads it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct AxisPlan {
    /// Input length.
    pub(crate) in_len: usize,
    /// Output length.
    pub(crate) out_len: usize,
    /// The sample of every output index, or `None` when the axis is copied unchanged
    /// (the interpreter skips it).
    pub(crate) samples: Option<Vec<Sample>>,
}

/// The per-axis samples [`resize`] applies to an input of shape `in_shape` (same operands
/// and errors), for the compiler to turn into tables. The interpreter resamples the axes
/// innermost first.
pub(crate) fn plan(
    attrs: &Resize,
    in_shape: &[usize],
    roi: Option<&Tensor>,
    scales: Option<&Tensor>,
    sizes: Option<&Tensor>,
) -> OpResult<Vec<AxisPlan>> {
    let geometry = plan_axes(attrs, in_shape, roi, scales, sizes)?;
    let out_shape: Vec<usize> = geometry.iter().map(|a| a.out_len).collect();
    element_count(&out_shape).map_err(|e| e.to_string())?;
    Ok(geometry
        .iter()
        .map(|g| {
            let samples = axis_samples(attrs, g);
            let unchanged = g.out_len == g.in_len && is_identity(&samples);
            AxisPlan {
                in_len: g.in_len,
                out_len: g.out_len,
                samples: (!unchanged).then_some(samples),
            }
        })
        .collect())
}

/// How one axis is resized.
#[derive(Clone, Copy, Debug, PartialEq)]
struct AxisGeometry {
    /// Input length.
    in_len: usize,
    /// Output length.
    out_len: usize,
    /// Scale factor (output over input).
    scale: f64,
    /// The resized length as a real number: `in_len * scale`, or exactly the requested
    /// size when `sizes` is used without an aspect-ratio policy.
    length: f64,
    /// Region of interest `(start, end)` as fractions of the input (tf_crop_and_resize).
    roi: (f64, f64),
}

impl AxisGeometry {
    fn unchanged(len: usize) -> AxisGeometry {
        AxisGeometry {
            in_len: len,
            out_len: len,
            scale: 1.0,
            length: len as f64,
            roi: (0.0, 1.0),
        }
    }
}

/// Treats an empty tensor as an absent one, as ONNX does for Resize's optional inputs.
fn present(t: Option<&Tensor>) -> Option<&Tensor> {
    t.filter(|t| !t.is_empty())
}

/// Resolves the `axes` attribute against `rank`: every axis when empty, negatives counted
/// from the end, no repeats.
fn resolve_axes(axes: &[i64], rank: usize) -> OpResult<Vec<usize>> {
    if axes.is_empty() {
        return Ok((0..rank).collect());
    }
    let signed_rank = i64::try_from(rank).map_err(|_| format!("rank {rank} is too large"))?;
    let mut resolved = Vec::with_capacity(axes.len());
    for &a in axes {
        let normalized = if a < 0 { a + signed_rank } else { a };
        let axis = usize::try_from(normalized)
            .ok()
            .filter(|&n| n < rank)
            .ok_or_else(|| format!("axis {a} is out of range for an input of rank {rank}"))?;
        if resolved.contains(&axis) {
            return Err(format!("axis {a} appears more than once in axes {axes:?}"));
        }
        resolved.push(axis);
    }
    Ok(resolved)
}

/// Checks that `t` is a 1-D tensor of `dtype` with `len` elements.
fn check_vector(name: &str, t: &Tensor, dtype: DType, len: usize) -> OpResult<()> {
    if t.dtype() != dtype {
        return Err(format!("{name} must be {dtype}, got {}", t.dtype()));
    }
    if t.rank() != 1 || t.len() != len {
        return Err(format!(
            "{name} must have shape [{len}] (one entry per resized axis), got {:?}",
            t.shape()
        ));
    }
    Ok(())
}

/// Works out the geometry of every axis of an input of shape `in_shape`.
fn plan_axes(
    attrs: &Resize,
    in_shape: &[usize],
    roi: Option<&Tensor>,
    scales: Option<&Tensor>,
    sizes: Option<&Tensor>,
) -> OpResult<Vec<AxisGeometry>> {
    let axes = resolve_axes(&attrs.axes, in_shape.len())?;
    let mut geometry: Vec<AxisGeometry> = in_shape
        .iter()
        .map(|&n| AxisGeometry::unchanged(n))
        .collect();

    if attrs.coordinate_transformation_mode == CoordinateTransform::TfCropAndResize
        && let Some(roi) = present(roi)
    {
        check_vector("roi", roi, DType::F32, 2 * axes.len())?;
        let values = roi.as_f32().unwrap_or_default();
        if let Some(v) = values.iter().find(|v| !v.is_finite()) {
            return Err(format!("roi values must be finite, got {v}"));
        }
        let (starts, ends) = values.split_at(axes.len());
        for ((&axis, &start), &end) in axes.iter().zip(starts).zip(ends) {
            geometry[axis].roi = (f64::from(start), f64::from(end));
        }
    }

    match (present(scales), present(sizes)) {
        (Some(_), Some(_)) => Err("only one of scales and sizes may be given".to_string()),
        (None, None) => Err("one of scales and sizes must be given".to_string()),
        (Some(scales), None) => {
            check_vector("scales", scales, DType::F32, axes.len())?;
            let values = scales.as_f32().unwrap_or_default();
            for (&axis, &s) in axes.iter().zip(values) {
                if !(s.is_finite() && s > 0.0) {
                    return Err(format!("scales must be positive and finite, got {s}"));
                }
                let g = &mut geometry[axis];
                g.scale = f64::from(s);
                g.length = g.in_len as f64 * g.scale;
                g.out_len = whole_length(g.length.floor(), axis)?;
            }
            Ok(geometry)
        }
        (None, Some(sizes)) => {
            check_vector("sizes", sizes, DType::I64, axes.len())?;
            let values = sizes.as_i64().unwrap_or_default();
            let mut requested = Vec::with_capacity(axes.len());
            for (&axis, &size) in axes.iter().zip(values) {
                let size = usize::try_from(size)
                    .map_err(|_| format!("sizes must not be negative, got {size}"))?;
                let in_len = geometry[axis].in_len;
                if in_len == 0 && size != 0 {
                    return Err(format!(
                        "axis {axis} has length 0 and cannot be resized to {size}"
                    ));
                }
                requested.push((axis, size));
            }
            apply_sizes(attrs.keep_aspect_ratio_policy, &mut geometry, &requested)?;
            Ok(geometry)
        }
    }
}

/// Converts a non-negative whole `f64` length to `usize`, refusing absurd sizes.
fn whole_length(len: f64, axis: usize) -> OpResult<usize> {
    // Lengths beyond 2^53 cannot be represented exactly and would never fit in memory.
    const LIMIT: f64 = 9_007_199_254_740_992.0;
    if !(0.0..LIMIT).contains(&len) {
        return Err(format!("axis {axis} would have output length {len}"));
    }
    Ok(len as usize)
}

/// Sets output lengths and scales from `sizes` (pairs of axis and requested length).
fn apply_sizes(
    policy: AspectRatioPolicy,
    geometry: &mut [AxisGeometry],
    requested: &[(usize, usize)],
) -> OpResult<()> {
    if policy == AspectRatioPolicy::Stretch {
        for &(axis, size) in requested {
            let g = &mut geometry[axis];
            g.out_len = size;
            g.length = size as f64;
            // An empty axis stays empty; its scale is never used.
            g.scale = if g.in_len == 0 {
                1.0
            } else {
                size as f64 / g.in_len as f64
            };
        }
        return Ok(());
    }
    let mut ratios = Vec::with_capacity(requested.len());
    for &(axis, size) in requested {
        let in_len = geometry[axis].in_len;
        if in_len == 0 {
            return Err(format!(
                "axis {axis} has length 0, so keep_aspect_ratio_policy cannot scale it"
            ));
        }
        ratios.push(size as f64 / in_len as f64);
    }
    let pick = match policy {
        AspectRatioPolicy::NotLarger => f64::min,
        _ => f64::max,
    };
    let Some(scale) = ratios.into_iter().reduce(pick) else {
        return Ok(());
    };
    for &(axis, _) in requested {
        let g = &mut geometry[axis];
        g.scale = scale;
        g.length = g.in_len as f64 * scale;
        g.out_len = whole_length((g.length + 0.5).floor(), axis)?;
    }
    Ok(())
}

/// One output position along an axis.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Sample {
    /// A constant (tf_crop_and_resize's extrapolation value).
    Fill(f64),
    /// A weighted sum of input positions (already clamped into the input).
    Taps(Vec<(usize, f64)>),
}

/// Whether `samples` copy the input unchanged: output `i` is exactly input `i`.
fn is_identity(samples: &[Sample]) -> bool {
    samples.iter().enumerate().all(|(i, s)| match s {
        Sample::Fill(_) => false,
        Sample::Taps(taps) => taps
            .iter()
            .all(|&(j, w)| if j == i { w == 1.0 } else { w == 0.0 }),
    })
}

/// The input coordinate that output index `x` maps to.
fn source_coordinate(mode: CoordinateTransform, g: &AxisGeometry, x: usize) -> f64 {
    let x = x as f64;
    let in_len = g.in_len as f64;
    let half_pixel = (x + 0.5) / g.scale - 0.5;
    match mode {
        CoordinateTransform::HalfPixel => half_pixel,
        CoordinateTransform::HalfPixelSymmetric => {
            // Keeps the centre of the input at the centre of the output when the output
            // length was rounded.
            let adjustment = g.out_len as f64 / g.length;
            let offset = in_len / 2.0 * (1.0 - adjustment);
            // Summed left to right as the reference does: on nearest-rounding ties the
            // order of the additions decides the result.
            offset + (x + 0.5) / g.scale - 0.5
        }
        CoordinateTransform::PytorchHalfPixel => {
            if g.length > 1.0 {
                half_pixel
            } else {
                0.0
            }
        }
        CoordinateTransform::AlignCorners => {
            if g.out_len <= 1 {
                0.0
            } else {
                x * (in_len - 1.0) / (g.length - 1.0)
            }
        }
        CoordinateTransform::Asymmetric => x / g.scale,
        CoordinateTransform::TfCropAndResize => {
            let (start, end) = g.roi;
            if g.length > 1.0 {
                start * (in_len - 1.0) + x * (end - start) * (in_len - 1.0) / (g.length - 1.0)
            } else {
                0.5 * (start + end) * (in_len - 1.0)
            }
        }
    }
}

/// The cubic convolution kernel with parameter `a`.
fn cubic_kernel(t: f64, a: f64) -> f64 {
    let t = t.abs();
    if t <= 1.0 {
        ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0
    } else if t < 2.0 {
        ((a * t - 5.0 * a) * t + 8.0 * a) * t - 4.0 * a
    } else {
        0.0
    }
}

/// The taps (or fill value) of every output index of one axis.
fn axis_samples(attrs: &Resize, g: &AxisGeometry) -> Vec<Sample> {
    let mode = attrs.coordinate_transformation_mode;
    (0..g.out_len)
        .map(|x| {
            let c = source_coordinate(mode, g, x);
            let last = g.in_len as f64 - 1.0;
            if mode == CoordinateTransform::TfCropAndResize && !(0.0..=last).contains(&c) {
                return Sample::Fill(f64::from(attrs.extrapolation_value));
            }
            Sample::Taps(taps_at(attrs, g, c))
        })
        .collect()
}

/// The taps that interpolate the input at coordinate `c`.
fn taps_at(attrs: &Resize, g: &AxisGeometry, c: f64) -> Vec<(usize, f64)> {
    // `left` is the input index just below `c`; on an integer `c` it is `c - 1`, so the
    // ratio is in (0, 1] (the reference's convention, which decides rounding and taps).
    let (left, ratio) = if c.fract() == 0.0 {
        (c - 1.0, 1.0)
    } else {
        (c.floor(), c - c.floor())
    };
    let left = left as i64;
    let (start, mut weights): (i64, Vec<f64>) = match attrs.mode {
        ResizeMode::Nearest => {
            let right = ratio == 1.0
                || match attrs.nearest_mode {
                    NearestMode::RoundPreferFloor => ratio > 0.5,
                    NearestMode::RoundPreferCeil => ratio >= 0.5,
                    NearestMode::Floor => false,
                    NearestMode::Ceil => true,
                };
            (
                0,
                if right {
                    vec![0.0, 1.0]
                } else {
                    vec![1.0, 0.0]
                },
            )
        }
        ResizeMode::Linear => kernel_weights(attrs.antialias, g.scale, ratio, 1.0, |t| {
            (1.0 - t.abs()).max(0.0)
        }),
        ResizeMode::Cubic => {
            let a = f64::from(attrs.cubic_coeff_a);
            kernel_weights(attrs.antialias, g.scale, ratio, 2.0, |t| cubic_kernel(t, a))
        }
    };
    let indices: Vec<i64> = (0..weights.len())
        .map(|k| {
            let offset = start.saturating_add(k as i64);
            left.saturating_add(offset)
        })
        .collect();
    let in_len = i64::try_from(g.in_len).unwrap_or(i64::MAX);
    if attrs.exclude_outside {
        for (w, &i) in weights.iter_mut().zip(&indices) {
            if i < 0 || i >= in_len {
                *w = 0.0;
            }
        }
        // When every tap is outside (a degenerate nearest sample) the sample is zero.
        let sum: f64 = weights.iter().sum();
        if sum != 0.0 {
            weights.iter_mut().for_each(|w| *w /= sum);
        }
    }
    let last = in_len.saturating_sub(1).max(0);
    indices
        .into_iter()
        .zip(weights)
        .map(|(i, w)| (i.clamp(0, last) as usize, w))
        .collect()
}

/// Weights of a kernel of support `radius` at `ratio` past the left tap, stretched by
/// `1 / scale` when antialiasing a downsample. Returns the offset of the first tap from
/// the left tap and the weights.
fn kernel_weights(
    antialias: bool,
    scale: f64,
    ratio: f64,
    radius: f64,
    kernel: impl Fn(f64) -> f64,
) -> (i64, Vec<f64>) {
    let stretch = if antialias { scale.min(1.0) } else { 1.0 };
    let start = (-radius / stretch).floor() as i64 + 1;
    let mut weights: Vec<f64> = (start..=1 - start)
        .map(|i| kernel((i as f64 - ratio) * stretch))
        .collect();
    if antialias {
        let sum: f64 = weights.iter().sum();
        weights.iter_mut().for_each(|w| *w /= sum);
    }
    (start, weights)
}

/// Resamples `values` (of `shape`) along `axis` with one sample per output index.
fn resample_axis(
    values: &[f64],
    shape: &[usize],
    axis: usize,
    samples: &[Sample],
) -> OpResult<Vec<f64>> {
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let in_len = shape[axis];
    let mut out_shape = shape.to_vec();
    out_shape[axis] = samples.len();
    let mut out = vec![0.0; element_count(&out_shape).map_err(|e| e.to_string())?];
    for o in 0..outer {
        let src = &values[o * in_len * inner..(o + 1) * in_len * inner];
        for (x, sample) in samples.iter().enumerate() {
            let dst = &mut out[(o * samples.len() + x) * inner..][..inner];
            match sample {
                Sample::Fill(v) => dst.fill(*v),
                Sample::Taps(taps) => {
                    for &(i, w) in taps {
                        let row = &src[i * inner..(i + 1) * inner];
                        for (d, &s) in dst.iter_mut().zip(row) {
                            *d += w * s;
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(shape: &[usize], data: &[f32]) -> Tensor {
        Tensor::from_f32(shape.to_vec(), data.to_vec()).unwrap()
    }

    fn i64s(data: &[i64]) -> Tensor {
        Tensor::vector_i64(data.to_vec())
    }

    /// `[1, 1, 4, 4]` holding 1..=16.
    fn ramp4x4() -> Tensor {
        let data: Vec<f32> = (1..=16).map(|v| v as f32).collect();
        f32s(&[1, 1, 4, 4], &data)
    }

    fn with_mode(mode: ResizeMode) -> Resize {
        Resize {
            mode,
            ..Resize::default()
        }
    }

    fn run(
        attrs: &Resize,
        x: &Tensor,
        roi: Option<&Tensor>,
        scales: Option<&[f32]>,
        sizes: Option<&[i64]>,
    ) -> OpResult<Tensor> {
        let scales = scales.map(|s| f32s(&[s.len()], s));
        let sizes = sizes.map(i64s);
        resize(attrs, x, roi, scales.as_ref(), sizes.as_ref())
    }

    #[track_caller]
    fn assert_close(got: &Tensor, shape: &[usize], expected: &[f32]) {
        assert_eq!(got.shape(), shape);
        let got = got.as_f32().unwrap();
        assert_eq!(got.len(), expected.len());
        for (i, (&g, &e)) in got.iter().zip(expected).enumerate() {
            assert!(
                (g - e).abs() <= 1e-5 + 1e-4 * e.abs(),
                "element {i}: got {g}, expected {e}\n got {got:?}"
            );
        }
    }

    #[test]
    fn upsample_nearest_asymmetric_floor() {
        // ONNX test_upsample_nearest: Upsample is imported as this Resize.
        let attrs = Resize {
            coordinate_transformation_mode: CoordinateTransform::Asymmetric,
            nearest_mode: NearestMode::Floor,
            ..Resize::default()
        };
        let x = f32s(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let y = run(&attrs, &x, None, Some(&[1.0, 1.0, 2.0, 3.0]), None).unwrap();
        #[rustfmt::skip]
        let expected = [
            1.0, 1.0, 1.0, 2.0, 2.0, 2.0,
            1.0, 1.0, 1.0, 2.0, 2.0, 2.0,
            3.0, 3.0, 3.0, 4.0, 4.0, 4.0,
            3.0, 3.0, 3.0, 4.0, 4.0, 4.0,
        ];
        assert_close(&y, &[1, 1, 4, 6], &expected);
    }

    #[test]
    fn linear_half_pixel_upsample() {
        let x = f32s(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let attrs = with_mode(ResizeMode::Linear);
        let y = run(&attrs, &x, None, Some(&[1.0, 1.0, 2.0, 2.0]), None).unwrap();
        #[rustfmt::skip]
        let expected = [
            1.0, 1.25, 1.75, 2.0,
            1.5, 1.75, 2.25, 2.5,
            2.5, 2.75, 3.25, 3.5,
            3.0, 3.25, 3.75, 4.0,
        ];
        assert_close(&y, &[1, 1, 4, 4], &expected);
    }

    #[test]
    fn linear_align_corners_uses_the_real_resized_length() {
        // 4 * 0.6 = 2.4: the denominator is 2.4 - 1, not 2 - 1.
        let x = f32s(&[1, 1, 2, 4], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
        let attrs = Resize {
            mode: ResizeMode::Linear,
            coordinate_transformation_mode: CoordinateTransform::AlignCorners,
            ..Resize::default()
        };
        let y = run(&attrs, &x, None, Some(&[1.0, 1.0, 0.6, 0.6]), None).unwrap();
        assert_close(&y, &[1, 1, 1, 2], &[1.0, 3.142857]);
    }

    #[test]
    fn linear_half_pixel_symmetric_upsample() {
        let x = f32s(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let attrs = Resize {
            mode: ResizeMode::Linear,
            coordinate_transformation_mode: CoordinateTransform::HalfPixelSymmetric,
            ..Resize::default()
        };
        let y = run(&attrs, &x, None, Some(&[1.0, 1.0, 2.3, 2.94]), None).unwrap();
        #[rustfmt::skip]
        let expected = [
            1.0, 1.159864, 1.5, 1.840136, 2.0,
            1.5652174, 1.7250813, 2.0652175, 2.4053535, 2.5652175,
            2.4347825, 2.5946465, 2.9347825, 3.2749186, 3.4347825,
            3.0, 3.159864, 3.5, 3.840136, 4.0,
        ];
        assert_close(&y, &[1, 1, 4, 5], &expected);
    }

    #[test]
    fn linear_pytorch_half_pixel_downsample_sizes() {
        let attrs = Resize {
            mode: ResizeMode::Linear,
            coordinate_transformation_mode: CoordinateTransform::PytorchHalfPixel,
            ..Resize::default()
        };
        let y = run(&attrs, &ramp4x4(), None, None, Some(&[1, 1, 3, 1])).unwrap();
        assert_close(&y, &[1, 1, 3, 1], &[1.6666666, 7.0, 12.333333]);
    }

    #[test]
    fn linear_antialias_downsample() {
        let attrs = Resize {
            antialias: true,
            ..with_mode(ResizeMode::Linear)
        };
        let y = run(&attrs, &ramp4x4(), None, Some(&[1.0, 1.0, 0.6, 0.6]), None).unwrap();
        assert_close(&y, &[1, 1, 2, 2], &[2.875, 4.5, 9.375, 11.0]);
    }

    #[test]
    fn cubic_upsample() {
        let attrs = with_mode(ResizeMode::Cubic);
        let y = run(&attrs, &ramp4x4(), None, Some(&[1.0, 1.0, 2.0, 2.0]), None).unwrap();
        assert_eq!(y.shape(), &[1, 1, 8, 8]);
        let first_row = &y.as_f32().unwrap()[..8];
        let expected = [
            0.472_656_25,
            0.769_531_25,
            1.246_094,
            1.875,
            2.281_25,
            2.910_156,
            3.386_719,
            3.683_594,
        ];
        assert_close(&f32s(&[8], first_row), &[8], &expected);
    }

    #[test]
    fn cubic_exclude_outside_downsample() {
        let attrs = Resize {
            cubic_coeff_a: -0.5,
            exclude_outside: true,
            ..with_mode(ResizeMode::Cubic)
        };
        let y = run(&attrs, &ramp4x4(), None, Some(&[1.0, 1.0, 0.8, 0.8]), None).unwrap();
        #[rustfmt::skip]
        let expected = [
            1.3681268, 2.6695013, 4.0133367,
            6.573625, 7.875, 9.218835,
            11.948966, 13.250341, 14.594176,
        ];
        assert_close(&y, &[1, 1, 3, 3], &expected);
    }

    #[test]
    fn cubic_antialias_downsample() {
        let attrs = Resize {
            antialias: true,
            ..with_mode(ResizeMode::Cubic)
        };
        let y = run(&attrs, &ramp4x4(), None, Some(&[1.0, 1.0, 0.6, 0.6]), None).unwrap();
        assert_close(
            &y,
            &[1, 1, 2, 2],
            &[2.518072, 4.285886, 9.589329, 11.357142],
        );
    }

    #[test]
    fn tf_crop_and_resize_extrapolates_outside_the_input() {
        let attrs = Resize {
            mode: ResizeMode::Linear,
            coordinate_transformation_mode: CoordinateTransform::TfCropAndResize,
            extrapolation_value: 10.0,
            ..Resize::default()
        };
        let roi = f32s(&[8], &[0.0, 0.0, 0.4, 0.6, 1.0, 1.0, 1.2, 1.7]);
        let y = run(&attrs, &ramp4x4(), Some(&roi), None, Some(&[1, 1, 3, 3])).unwrap();
        let expected = [7.6, 10.0, 10.0, 12.4, 10.0, 10.0, 10.0, 10.0, 10.0];
        assert_close(&y, &[1, 1, 3, 3], &expected);
    }

    #[test]
    fn tf_crop_and_resize_with_axes_orders_roi_by_axes() {
        let attrs = Resize {
            mode: ResizeMode::Linear,
            coordinate_transformation_mode: CoordinateTransform::TfCropAndResize,
            axes: vec![3, 2],
            ..Resize::default()
        };
        let roi = f32s(&[4], &[0.6, 0.4, 0.8, 0.6]);
        let y = run(&attrs, &ramp4x4(), Some(&roi), None, Some(&[3, 3])).unwrap();
        let expected = [7.6, 7.9, 8.2, 8.8, 9.1, 9.4, 10.0, 10.3, 10.6];
        assert_close(&y, &[1, 1, 3, 3], &expected);
    }

    #[test]
    fn nearest_sizes_with_axes_in_any_order() {
        let x = f32s(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let attrs = Resize {
            axes: vec![3, 2],
            ..Resize::default()
        };
        let y = run(&attrs, &x, None, None, Some(&[8, 7])).unwrap();
        assert_eq!(y.shape(), &[1, 1, 7, 8]);
        let data = y.as_f32().unwrap();
        assert_eq!(&data[..8], &[1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0]);
        assert_eq!(&data[48..], &[3.0, 3.0, 3.0, 3.0, 4.0, 4.0, 4.0, 4.0]);
        // Negative axes mean the same.
        let attrs = Resize {
            axes: vec![-1, -2],
            ..Resize::default()
        };
        assert_eq!(run(&attrs, &x, None, None, Some(&[8, 7])).unwrap(), y);
    }

    #[test]
    fn nearest_modes_round_as_named() {
        // Asymmetric, 3 -> 6: coordinates 0, 0.5, 1, 1.5, 2, 2.5.
        let x = f32s(&[3], &[10.0, 20.0, 30.0]);
        let expect = |nearest_mode, expected: [f32; 6]| {
            let attrs = Resize {
                coordinate_transformation_mode: CoordinateTransform::Asymmetric,
                nearest_mode,
                ..Resize::default()
            };
            let y = run(&attrs, &x, None, Some(&[2.0]), None).unwrap();
            assert_eq!(y.as_f32().unwrap(), &expected, "{nearest_mode:?}");
        };
        expect(
            NearestMode::RoundPreferFloor,
            [10.0, 10.0, 20.0, 20.0, 30.0, 30.0],
        );
        expect(
            NearestMode::RoundPreferCeil,
            [10.0, 20.0, 20.0, 30.0, 30.0, 30.0],
        );
        expect(NearestMode::Floor, [10.0, 10.0, 20.0, 20.0, 30.0, 30.0]);
        expect(NearestMode::Ceil, [10.0, 20.0, 20.0, 30.0, 30.0, 30.0]);
    }

    #[test]
    fn keep_aspect_ratio_policies() {
        let x = f32s(&[1, 1, 2, 4], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
        let policy = |keep_aspect_ratio_policy| Resize {
            axes: vec![2, 3],
            keep_aspect_ratio_policy,
            ..Resize::default()
        };
        let y = run(
            &policy(AspectRatioPolicy::NotLarger),
            &x,
            None,
            None,
            Some(&[1, 3]),
        );
        assert_close(&y.unwrap(), &[1, 1, 1, 2], &[1.0, 3.0]);
        let y = run(
            &policy(AspectRatioPolicy::NotSmaller),
            &x,
            None,
            None,
            Some(&[1, 3]),
        );
        assert_eq!(y.unwrap().shape(), &[1, 1, 2, 3]);
        let y = run(
            &policy(AspectRatioPolicy::Stretch),
            &x,
            None,
            None,
            Some(&[1, 3]),
        );
        assert_eq!(y.unwrap().shape(), &[1, 1, 1, 3]);
    }

    #[test]
    fn output_length_floors_scaled_length() {
        let x = f32s(&[1, 5], &[1.0, 2.0, 3.0, 4.0, 5.0]);
        let y = run(&Resize::default(), &x, None, Some(&[1.0, 0.5]), None).unwrap();
        assert_eq!(y.shape(), &[1, 2]);
        let y = run(&Resize::default(), &x, None, Some(&[1.0, 1.3]), None).unwrap();
        assert_eq!(y.shape(), &[1, 6]);
    }

    #[test]
    fn unit_scales_copy_the_input_in_every_mode() {
        let x = ramp4x4();
        for mode in [ResizeMode::Nearest, ResizeMode::Linear, ResizeMode::Cubic] {
            for transform in [
                CoordinateTransform::HalfPixel,
                CoordinateTransform::HalfPixelSymmetric,
                CoordinateTransform::PytorchHalfPixel,
                CoordinateTransform::AlignCorners,
                CoordinateTransform::Asymmetric,
                CoordinateTransform::TfCropAndResize,
            ] {
                let attrs = Resize {
                    mode,
                    coordinate_transformation_mode: transform,
                    antialias: mode != ResizeMode::Nearest,
                    ..Resize::default()
                };
                let y = run(&attrs, &x, None, Some(&[1.0; 4]), None).unwrap();
                assert_eq!(y, x, "{mode:?} {transform:?}");
            }
        }
    }

    #[test]
    fn any_rank_works() {
        let x = f32s(&[2], &[1.0, 3.0]);
        let attrs = with_mode(ResizeMode::Linear);
        let y = run(&attrs, &x, None, None, Some(&[4])).unwrap();
        assert_close(&y, &[4], &[1.0, 1.5, 2.5, 3.0]);

        let x = f32s(&[1, 1, 1, 1, 2], &[1.0, 3.0]);
        let y = run(&attrs, &x, None, None, Some(&[1, 2, 1, 1, 4])).unwrap();
        assert_close(
            &y,
            &[1, 2, 1, 1, 4],
            &[1.0, 1.5, 2.5, 3.0, 1.0, 1.5, 2.5, 3.0],
        );

        let x = Tensor::scalar_f32(5.0);
        let y = run(&attrs, &x, None, None, Some(&[])).unwrap_err();
        assert!(y.contains("one of scales and sizes"), "{y}");
    }

    #[test]
    fn empty_operands_count_as_absent() {
        let x = f32s(&[1, 2], &[1.0, 2.0]);
        let empty_scales = f32s(&[0], &[]);
        let empty_roi = f32s(&[0], &[]);
        let sizes = i64s(&[1, 4]);
        let y = resize(
            &Resize::default(),
            &x,
            Some(&empty_roi),
            Some(&empty_scales),
            Some(&sizes),
        )
        .unwrap();
        assert_eq!(y.as_f32().unwrap(), &[1.0, 1.0, 2.0, 2.0]);
    }

    #[test]
    fn zero_sized_outputs_and_inputs() {
        let x = f32s(&[1, 0, 3], &[]);
        let y = run(&Resize::default(), &x, None, None, Some(&[1, 0, 6])).unwrap();
        assert_eq!(y.shape(), &[1, 0, 6]);
        let err = run(&Resize::default(), &x, None, None, Some(&[1, 2, 6])).unwrap_err();
        assert!(err.contains("length 0"), "{err}");
        let x = f32s(&[1, 3], &[1.0, 2.0, 3.0]);
        let y = run(&Resize::default(), &x, None, Some(&[1.0, 0.1]), None).unwrap();
        assert_eq!(y.shape(), &[1, 0]);
    }

    #[test]
    fn bad_operands_are_errors() {
        let x = f32s(&[1, 2], &[1.0, 2.0]);
        let attrs = Resize::default();
        let err = |r: OpResult<Tensor>| r.unwrap_err();

        let m = err(run(&attrs, &x, None, Some(&[1.0, 2.0]), Some(&[1, 4])));
        assert!(m.contains("only one of scales and sizes"), "{m}");
        let m = err(run(&attrs, &x, None, None, None));
        assert!(m.contains("one of scales and sizes must be given"), "{m}");
        let m = err(run(&attrs, &x, None, Some(&[2.0]), None));
        assert!(m.contains("scales must have shape [2]"), "{m}");
        let m = err(run(&attrs, &x, None, Some(&[1.0, 0.0]), None));
        assert!(m.contains("positive"), "{m}");
        let m = err(run(&attrs, &x, None, Some(&[1.0, f32::NAN]), None));
        assert!(m.contains("finite"), "{m}");
        let m = err(run(&attrs, &x, None, Some(&[1.0, 1e30]), None));
        assert!(m.contains("output length"), "{m}");
        let m = err(run(&attrs, &x, None, None, Some(&[1, -4])));
        assert!(m.contains("negative"), "{m}");
        let m = err(resize(&attrs, &x, None, Some(&i64s(&[1, 2])), None));
        assert!(m.contains("scales must be f32"), "{m}");
        let m = err(resize(
            &attrs,
            &x,
            None,
            None,
            Some(&f32s(&[2], &[1.0, 2.0])),
        ));
        assert!(m.contains("sizes must be i64"), "{m}");
        let m = err(run(&attrs, &i64s(&[1, 2]), None, None, Some(&[4])));
        assert!(m.contains("input must be f32"), "{m}");

        let axes = |axes: Vec<i64>| Resize {
            axes,
            ..Resize::default()
        };
        let m = err(run(&axes(vec![2]), &x, None, None, Some(&[4])));
        assert!(m.contains("axis 2 is out of range"), "{m}");
        let m = err(run(&axes(vec![1, -1]), &x, None, None, Some(&[4, 4])));
        assert!(m.contains("more than once"), "{m}");

        let tf = Resize {
            coordinate_transformation_mode: CoordinateTransform::TfCropAndResize,
            ..Resize::default()
        };
        let short_roi = f32s(&[2], &[0.0, 1.0]);
        let m = err(run(&tf, &x, Some(&short_roi), None, Some(&[1, 4])));
        assert!(m.contains("roi must have shape [4]"), "{m}");
        let bad_roi = f32s(&[4], &[0.0, 0.0, 1.0, f32::INFINITY]);
        let m = err(run(&tf, &x, Some(&bad_roi), None, Some(&[1, 4])));
        assert!(m.contains("finite"), "{m}");
        // Without roi, tf_crop_and_resize crops nothing: coordinates 0, 0.5, 1.
        let y = run(&tf, &x, None, None, Some(&[1, 3])).unwrap();
        assert_eq!(y.as_f32().unwrap(), &[1.0, 1.0, 2.0]);
    }
}
