//! Max, average and global pooling over `[N, C, spatial...]` inputs with any number of
//! spatial axes.
//!
//! Windows come from [`crate::graph::window::resolve`] (ceil mode rounds up); each window is
//! read through a tap table (see [`super::conv::Windows`]) that says, for every kernel tap,
//! whether it lands on an input element, in the padding, or past the end padding (possible
//! only in ceil mode). Padding never wins a max; for the average, padding counts in the
//! divisor only with `count_include_pad`, and taps past the end padding never count.

use super::OpResult;
use super::conv::{Tap, Windows, check_image, describe, f32_tensor, product, row_major_strides};
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
