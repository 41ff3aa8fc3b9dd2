//! Max, average and global pooling over `[N, C, spatial...]` inputs with any number of
//! spatial axes.
//!
//! Windows come from [`crate::graph::window::resolve`] (ceil mode rounds up); each window is
//! read through a tap table (see [`super::conv::Windows`]) that says, for every kernel tap,
//! whether it lands on an input element, in the padding, or past the end padding (possible
//! only in ceil mode). Padding never wins a max; for the average, padding counts in the
//! divisor only with `count_include_pad`, and taps past the end padding never count.

use super::OpResult;
use super::conv::{Tap, Windows, check_image, describe, f32_tensor};
use super::layout::{product, strides as row_major_strides};
use crate::graph::op::Pool;
use crate::graph::window::{self, ResolvedWindow, Rounding};
use crate::tensor::Tensor;

/// Upper bound on the entries of one tap table.
const TABLE_LIMIT: usize = 1 << 20;

/// Resolves the pooling window of `attrs` against the spatial axes of `x`.
fn geometry(attrs: &Pool, x: &Tensor) -> OpResult<ResolvedWindow> {
    let kernel = &attrs.window.kernel_shape;
    if kernel.is_empty() || kernel.contains(&0) {
        return Err(format!(
            "kernel_shape {kernel:?} must give a positive size for each spatial axis of input {}",
            describe(x)
        ));
    }
    let rounding = if attrs.ceil_mode {
        Rounding::Ceil
    } else {
        Rounding::Floor
    };
    window::resolve(&attrs.window, &x.shape()[2..], kernel, rounding)
}

/// The output shape `[N, C, output...]`.
fn output_shape(x: &Tensor, geometry: &ResolvedWindow) -> Vec<usize> {
    let mut shape = x.shape()[..2].to_vec();
    shape.extend_from_slice(&geometry.output);
    shape
}

/// Output positions per tap table: bounded memory, at least one.
fn chunk_len(taps: usize, outputs: usize) -> usize {
    (TABLE_LIMIT / taps.max(1)).clamp(1, outputs.max(1))
}

/// `max_pool(x) -> (y, [indices])`. Indices (when `want_indices`) are flat offsets into `x`:
/// row-major, or with `storage_order` 1 column-major within each spatial plane (the batch
/// and channel part stays row-major). The first maximum in window order wins a tie; a window
/// entirely in the padding gives `-inf` with index -1.
pub(super) fn max_pool(
    attrs: &Pool,
    x: &Tensor,
    want_indices: bool,
) -> OpResult<(Tensor, Option<Tensor>)> {
    let xs = check_image(x, "input")?;
    if !matches!(attrs.storage_order, 0 | 1) {
        return Err(format!(
            "storage_order must be 0 or 1, got {}",
            attrs.storage_order
        ));
    }
    let geometry = geometry(attrs, x)?;
    let spatial = &x.shape()[2..];
    let windows = Windows::new(&geometry, spatial)?;
    let (plane, outputs, taps) = (product(spatial)?, windows.outputs, windows.taps);
    let planes = x.shape()[0] * x.shape()[1];
    let shape = output_shape(x, &geometry);
    let count = product(&shape)?;
    let mut out = vec![0.0f32; count];
    let mut argmax = vec![None; if want_indices { count } else { 0 }];
    let chunk = chunk_len(taps, outputs);
    let mut table = Vec::with_capacity(chunk * taps);
    for start in (0..outputs).step_by(chunk) {
        let len = chunk.min(outputs - start);
        windows.fill(start, len, &mut table);
        for p in 0..planes {
            let x_plane = &xs[p * plane..][..plane];
            let base = p * outputs + start;
            for (j, window) in table.chunks_exact(taps).enumerate() {
                let mut best = f32::NEG_INFINITY;
                let mut best_at = None;
                for tap in window {
                    if let Tap::Input(offset) = *tap {
                        let v = x_plane[offset];
                        if best_at.is_none() || v > best {
                            best = v;
                            best_at = Some(offset);
                        }
                    }
                }
                out[base + j] = best;
                if want_indices {
                    argmax[base + j] = best_at;
                }
            }
        }
    }
    let indices = if want_indices {
        Some(indices_tensor(
            &argmax,
            spatial,
            outputs,
            attrs.storage_order == 1,
            shape.clone(),
        )?)
    } else {
        None
    };
    Ok((f32_tensor(shape, out)?, indices))
}

/// Turns per-output plane offsets of the maxima into flat `i64` indices into the input.
fn indices_tensor(
    argmax: &[Option<usize>],
    spatial: &[usize],
    outputs: usize,
    column_major: bool,
    shape: Vec<usize>,
) -> OpResult<Tensor> {
    let plane = product(spatial)?;
    let row_strides = row_major_strides(spatial);
    let mut col_strides = vec![1usize; spatial.len()];
    for axis in 1..spatial.len() {
        col_strides[axis] = col_strides[axis - 1] * spatial[axis - 1];
    }
    let mut values = Vec::with_capacity(argmax.len());
    for (i, at) in argmax.iter().enumerate() {
        let Some(offset) = *at else {
            values.push(-1);
            continue;
        };
        let within = if column_major {
            (0..spatial.len())
                .map(|axis| (offset / row_strides[axis]) % spatial[axis] * col_strides[axis])
                .sum()
        } else {
            offset
        };
        let flat = (i / outputs.max(1)) * plane + within;
        values.push(i64::try_from(flat).map_err(|_| format!("index {flat} does not fit in i64"))?);
    }
    Tensor::from_i64(shape, values).map_err(|e| e.to_string())
}

/// `average_pool(x)`: the mean of each window's input elements; with `count_include_pad`
/// the divisor also counts taps in the padding (but never taps past the end padding). A
/// window with nothing to count gives NaN, as in the ONNX reference.
pub(super) fn average_pool(attrs: &Pool, x: &Tensor) -> OpResult<Tensor> {
    let xs = check_image(x, "input")?;
    let geometry = geometry(attrs, x)?;
    let spatial = &x.shape()[2..];
    let windows = Windows::new(&geometry, spatial)?;
    let (plane, outputs, taps) = (product(spatial)?, windows.outputs, windows.taps);
    let planes = x.shape()[0] * x.shape()[1];
    let shape = output_shape(x, &geometry);
    let mut out = vec![0.0f32; product(&shape)?];
    let chunk = chunk_len(taps, outputs);
    let mut table = Vec::with_capacity(chunk * taps);
    let mut divisors = Vec::with_capacity(chunk);
    for start in (0..outputs).step_by(chunk) {
        let len = chunk.min(outputs - start);
        windows.fill(start, len, &mut table);
        divisors.clear();
        divisors.extend(table.chunks_exact(taps).map(|window| {
            window
                .iter()
                .filter(|tap| match tap {
                    Tap::Input(_) => true,
                    Tap::Pad => attrs.count_include_pad,
                    Tap::Beyond => false,
                })
                .count() as f32
        }));
        for p in 0..planes {
            let x_plane = &xs[p * plane..][..plane];
            let base = p * outputs + start;
            for (j, window) in table.chunks_exact(taps).enumerate() {
                let mut sum = 0.0f32;
                for tap in window {
                    if let Tap::Input(offset) = *tap {
                        sum += x_plane[offset];
                    }
                }
                out[base + j] = sum / divisors[j];
            }
        }
    }
    f32_tensor(shape, out)
}

/// `global_average_pool(x)` or `global_max_pool(x)` (`max`): one value per (batch, channel)
/// over all spatial axes, which stay as size 1. The mean accumulates in `f64`.
pub(super) fn global_pool(x: &Tensor, max: bool) -> OpResult<Tensor> {
    let xs = check_image(x, "input")?;
    let plane = product(&x.shape()[2..])?;
    if plane == 0 {
        return Err(format!(
            "input {} has an empty spatial axis to pool over",
            describe(x)
        ));
    }
    let out: Vec<f32> = xs
        .chunks_exact(plane)
        .map(|values| {
            if max {
                values.iter().copied().fold(f32::NEG_INFINITY, f32::max)
            } else {
                let sum: f64 = values.iter().map(|&v| f64::from(v)).sum();
                (sum / plane as f64) as f32
            }
        })
        .collect();
    let mut shape = x.shape()[..2].to_vec();
    shape.resize(x.rank(), 1);
    f32_tensor(shape, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::op::Window;

    fn t(shape: &[usize], data: &[f32]) -> Tensor {
        Tensor::from_f32(shape.to_vec(), data.to_vec()).unwrap()
    }

    fn pool(kernel: &[usize], pads: &[usize], strides: &[usize]) -> Pool {
        Pool {
            window: Window {
                kernel_shape: kernel.to_vec(),
                pads: pads.to_vec(),
                strides: strides.to_vec(),
                ..Window::default()
            },
            ceil_mode: false,
            count_include_pad: false,
            storage_order: 0,
        }
    }

    #[test]
    fn max_pool_with_indices() {
        let x = t(
            &[1, 1, 3, 3],
            &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
        );
        let (y, i) = max_pool(&pool(&[2, 2], &[], &[]), &x, true).unwrap();
        assert_eq!(y.as_f32().unwrap(), [4.0, 5.0, 7.0, 8.0]);
        assert_eq!(i.unwrap().as_i64().unwrap(), [4, 5, 7, 8]);
        let mut column_major = pool(&[2, 2], &[], &[]);
        column_major.storage_order = 1;
        let (_, i) = max_pool(&column_major, &x, true).unwrap();
        assert_eq!(i.unwrap().as_i64().unwrap(), [4, 7, 5, 8]);
        let (_, none) = max_pool(&pool(&[2, 2], &[], &[]), &x, false).unwrap();
        assert!(none.is_none());
    }

    #[test]
    fn max_pool_padding_never_wins_and_indices_span_channels() {
        let x = t(&[1, 2, 1, 2], &[-1.0, -2.0, -3.0, -4.0]);
        let (y, i) = max_pool(&pool(&[1, 2], &[0, 1, 0, 1], &[]), &x, true).unwrap();
        assert_eq!(y.shape(), [1, 2, 1, 3]);
        assert_eq!(y.as_f32().unwrap(), [-1.0, -1.0, -2.0, -3.0, -3.0, -4.0]);
        assert_eq!(i.unwrap().as_i64().unwrap(), [0, 0, 1, 2, 2, 3]);
    }

    #[test]
    fn average_pool_divisor_rules() {
        let x = t(&[1, 1, 3], &[1.0, 2.0, 3.0]);
        let mut attrs = pool(&[2], &[1, 1], &[]);
        let y = average_pool(&attrs, &x).unwrap();
        assert_eq!(y.as_f32().unwrap(), [1.0, 1.5, 2.5, 3.0]);
        attrs.count_include_pad = true;
        let y = average_pool(&attrs, &x).unwrap();
        assert_eq!(y.as_f32().unwrap(), [0.5, 1.5, 2.5, 1.5]);

        // Ceil mode: the last window hangs past the end; those taps never count.
        let x = t(&[1, 1, 4], &[1.0, 2.0, 3.0, 4.0]);
        let mut attrs = pool(&[3], &[], &[2]);
        attrs.ceil_mode = true;
        attrs.count_include_pad = true;
        let y = average_pool(&attrs, &x).unwrap();
        assert_eq!(y.as_f32().unwrap(), [2.0, 3.5]);
    }

    #[test]
    fn global_pools_keep_spatial_axes() {
        let x = t(&[1, 2, 2, 1], &[1.0, 2.0, -3.0, -5.0]);
        let y = global_pool(&x, false).unwrap();
        assert_eq!(y.shape(), [1, 2, 1, 1]);
        assert_eq!(y.as_f32().unwrap(), [1.5, -4.0]);
        let y = global_pool(&x, true).unwrap();
        assert_eq!(y.as_f32().unwrap(), [2.0, -3.0]);
    }

    #[test]
    fn bad_pools_are_errors() {
        let x = t(&[1, 1, 3], &[1.0, 2.0, 3.0]);
        assert!(average_pool(&pool(&[], &[], &[]), &x).is_err());
        assert!(average_pool(&pool(&[4], &[], &[]), &x).is_err());
        assert!(max_pool(&pool(&[2, 2], &[], &[]), &x, false).is_err());
        let mut attrs = pool(&[2], &[], &[]);
        attrs.storage_order = 2;
        assert!(max_pool(&attrs, &x, true).is_err());
        let i = Tensor::from_i64(vec![1, 1, 1], vec![1]).unwrap();
        let err = global_pool(&i, true).unwrap_err();
        assert!(err.contains("i64[1,1,1]"), "{err}");
    }
}
