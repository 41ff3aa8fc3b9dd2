//! Convolution, transposed convolution and batch normalization, plus the sliding-window
//! helpers that pooling shares.
//!
//! Layout is `[N, C, spatial...]` with any number of spatial axes. The window geometry
//! (output sizes, padding) always comes from [`crate::graph::window`], so the interpreter
//! agrees with shape inference by construction.
//!
//! Convolution is computed as im2col + matrix product: for a chunk of output positions, the
//! input values under every (channel, kernel tap) are gathered into a matrix `col` with one
//! row per (channel, tap) and one column per output position; each output channel's row is
//! then `sum_r w[m, r] * col[r, :]`, an inner loop over contiguous memory.

use super::OpResult;
use super::layout::{product, strides as row_major_strides, tensor};
use crate::graph::op::{Conv, ConvTranspose};
use crate::graph::types::format_shape;
use crate::graph::window::{self, ResolvedWindow, Rounding};
use crate::tensor::{Tensor, TensorData};

/// Upper bound on the entries of one im2col chunk or scatter table.
const COL_LIMIT: usize = 1 << 20;

/// `f32[1,3,5,5]`: a tensor's dtype and shape, for messages.
pub(super) fn describe(t: &Tensor) -> String {
    format!("{}{}", t.dtype(), format_shape(t.shape()))
}

/// The `f32` elements of operand `what`, or an error naming its type.
pub(super) fn f32_data<'a>(t: &'a Tensor, what: &str) -> OpResult<&'a [f32]> {
    t.as_f32()
        .ok_or_else(|| format!("{what} must be f32, got {}", describe(t)))
}

/// Builds an `f32` tensor; a length mismatch is an interpreter bug, reported as a message.
pub(super) fn f32_tensor(shape: Vec<usize>, data: Vec<f32>) -> OpResult<Tensor> {
    tensor(shape, TensorData::F32(data))
}

/// Advances the row-major multi-index `index` within `dims`; false after the last one.
pub(super) fn next_index(index: &mut [usize], dims: &[usize]) -> bool {
    for axis in (0..index.len()).rev() {
        index[axis] += 1;
        if index[axis] < dims[axis] {
            return true;
        }
        index[axis] = 0;
    }
    false
}

/// Checks that `x` is an `f32` tensor `[N, C, spatial...]` with at least one spatial axis.
pub(super) fn check_image<'a>(x: &'a Tensor, what: &str) -> OpResult<&'a [f32]> {
    let data = f32_data(x, what)?;
    if x.rank() < 3 {
        return Err(format!(
            "{what} {} must have a batch, a channel and at least one spatial axis",
            describe(x)
        ));
    }
    Ok(data)
}

/// Where one kernel tap of one window lands in the input plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Tap {
    /// On an input element: its row-major offset within the spatial plane.
    Input(usize),
    /// In the begin or end padding.
    Pad,
    /// Past the end padding (only the last windows of ceil mode reach there).
    Beyond,
}

/// The windows of a resolved geometry over one spatial plane, as tap tables.
pub(super) struct Windows<'a> {
    geometry: &'a ResolvedWindow,
    input: &'a [usize],
    input_strides: Vec<usize>,
    /// Number of taps per window (the product of the kernel).
    pub taps: usize,
    /// Number of output positions (the product of the output sizes).
    pub outputs: usize,
}

impl<'a> Windows<'a> {
    /// The windows of `geometry` over an input plane of size `input`.
    pub fn new(geometry: &'a ResolvedWindow, input: &'a [usize]) -> OpResult<Windows<'a>> {
        Ok(Windows {
            geometry,
            input,
            input_strides: row_major_strides(input),
            taps: product(&geometry.kernel)?,
            outputs: product(&geometry.output)?,
        })
    }

    /// Fills `table` with the taps of output positions `start..start + len` (row-major):
    /// `table[j * taps + t]` is tap `t` (row-major over the kernel) of position `start + j`.
    pub fn fill(&self, start: usize, len: usize, table: &mut Vec<Tap>) {
        let g = self.geometry;
        let rank = self.input.len();
        table.clear();
        let mut out = vec![0; rank];
        let mut rest = start;
        for axis in (0..rank).rev() {
            let size = g.output[axis].max(1);
            out[axis] = rest % size;
            rest /= size;
        }
        let mut tap = vec![0; rank];
        for _ in 0..len {
            tap.fill(0);
            for _ in 0..self.taps {
                table.push(self.locate(&out, &tap));
                next_index(&mut tap, &g.kernel);
            }
            next_index(&mut out, &g.output);
        }
    }

    fn locate(&self, out: &[usize], tap: &[usize]) -> Tap {
        let g = self.geometry;
        let mut offset = 0;
        let mut padded = false;
        for axis in 0..out.len() {
            // Position in the padded input: always non-negative.
            let pos = (out[axis] * g.strides[axis]).saturating_add(tap[axis] * g.dilations[axis]);
            let begin = g.pads_begin()[axis];
            let size = self.input[axis];
            if pos < begin {
                padded = true;
            } else if pos - begin < size {
                offset += (pos - begin) * self.input_strides[axis];
            } else if pos - begin < size + g.pads_end()[axis] {
                padded = true;
            } else {
                return Tap::Beyond;
            }
        }
        if padded { Tap::Pad } else { Tap::Input(offset) }
    }
}

/// Positions per chunk of `rows` entries each: bounded memory, at least one.
fn chunk_len(rows: usize, outputs: usize) -> usize {
    (COL_LIMIT / rows.max(1)).clamp(1, outputs.max(1))
}

/// `conv(x, w, [b])`: x `[N, C, in...]`, w `[M, C/group, k...]`, b `[M]`.
pub(super) fn conv(attrs: &Conv, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> OpResult<Tensor> {
    let xs = check_image(x, "input")?;
    let ws = f32_data(w, "weights")?;
    if w.rank() != x.rank() {
        return Err(format!(
            "weights {} must have the rank of the input {}",
            describe(w),
            describe(x)
        ));
    }
    let (n, c, spatial) = (x.shape()[0], x.shape()[1], &x.shape()[2..]);
    let (m, per_group, kernel) = (w.shape()[0], w.shape()[1], &w.shape()[2..]);
    check_kernel(w)?;
    let group = attrs.group;
    if group == 0 || m % group != 0 {
        return Err(format!(
            "weights {} have {m} output channels, not a positive multiple of group {group}",
            describe(w)
        ));
    }
    if per_group.checked_mul(group) != Some(c) {
        return Err(format!(
            "input {} has {c} channels, weights {} expect {per_group} per group (group {group})",
            describe(x),
            describe(w),
        ));
    }
    let bias = bias_data(b, m)?;
    let geometry = window::resolve(&attrs.window, spatial, kernel, Rounding::Floor)?;
    let windows = Windows::new(&geometry, spatial)?;
    let plane = product(spatial)?;
    let outputs = windows.outputs;
    let taps = windows.taps;
    let m_per_group = m / group;
    let rows = per_group * taps;

    let mut shape = vec![n, m];
    shape.extend_from_slice(&geometry.output);
    let mut out = vec![0.0f32; product(&shape)?];
    let chunk = chunk_len(rows, outputs);
    let mut table = Vec::with_capacity(chunk * taps);
    let mut col = vec![0.0f32; rows * chunk];
    for start in (0..outputs).step_by(chunk) {
        let len = chunk.min(outputs - start);
        windows.fill(start, len, &mut table);
        for batch in 0..n {
            for g in 0..group {
                // Gather: col[(ci * taps + t) * len + j].
                let x_group = &xs[(batch * c + g * per_group) * plane..][..per_group * plane];
                for (j, window) in table.chunks_exact(taps).enumerate() {
                    for (t, tap) in window.iter().enumerate() {
                        for ci in 0..per_group {
                            col[(ci * taps + t) * len + j] = match *tap {
                                Tap::Input(offset) => x_group[ci * plane + offset],
                                Tap::Pad | Tap::Beyond => 0.0,
                            };
                        }
                    }
                }
                // Multiply: out[mi, start..start + len] = w[mi, :] @ col.
                for mo in 0..m_per_group {
                    let mi = g * m_per_group + mo;
                    let row = &mut out[(batch * m + mi) * outputs + start..][..len];
                    let w_row = &ws[mi * rows..][..rows];
                    for (r, &wv) in w_row.iter().enumerate() {
                        let col_row = &col[r * len..][..len];
                        for (o, &v) in row.iter_mut().zip(col_row) {
                            *o += wv * v;
                        }
                    }
                }
            }
        }
    }
    add_bias(&mut out, bias, outputs);
    f32_tensor(shape, out)
}

/// Rejects weights with an empty kernel axis (there would be no taps to sum).
fn check_kernel(w: &Tensor) -> OpResult<()> {
    if w.shape().get(2..).is_some_and(|k| k.contains(&0)) {
        return Err(format!("weights {} have an empty kernel axis", describe(w)));
    }
    Ok(())
}

/// The bias values, checked to be `f32[count]`; `None` if absent.
fn bias_data(b: Option<&Tensor>, count: usize) -> OpResult<Option<&[f32]>> {
    let Some(b) = b else { return Ok(None) };
    let data = f32_data(b, "bias")?;
    if b.shape() != [count] {
        return Err(format!(
            "bias {} must have shape [{count}], one value per output channel",
            describe(b)
        ));
    }
    Ok(Some(data))
}

/// Adds `bias[channel]` to every plane of `plane` elements of `out` (`[N, M, plane]`).
fn add_bias(out: &mut [f32], bias: Option<&[f32]>, plane: usize) {
    let Some(bias) = bias else { return };
    if plane == 0 || bias.is_empty() {
        return;
    }
    for (i, values) in out.chunks_exact_mut(plane).enumerate() {
        let b = bias[i % bias.len()];
        for v in values {
            *v += b;
        }
    }
}

/// `conv_transpose(x, w, [b])`: x `[N, C, in...]`, w `[C, M/group, k...]`, b `[M]`.
///
/// Each input element scatters `x * w[tap]` to full position `in * stride + tap * dilation`;
/// the output is the full result shifted by the begin padding (see
/// [`window::resolve_transpose`]).
pub(super) fn conv_transpose(
    attrs: &ConvTranspose,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
) -> OpResult<Tensor> {
    let xs = check_image(x, "input")?;
    let ws = f32_data(w, "weights")?;
    if w.rank() != x.rank() {
        return Err(format!(
            "weights {} must have the rank of the input {}",
            describe(w),
            describe(x)
        ));
    }
    let (n, c, spatial) = (x.shape()[0], x.shape()[1], &x.shape()[2..]);
    let (wc, m_per_group, kernel) = (w.shape()[0], w.shape()[1], &w.shape()[2..]);
    check_kernel(w)?;
    let group = attrs.group;
    if group == 0 || c % group != 0 {
        return Err(format!(
            "input {} has {c} channels, not a positive multiple of group {group}",
            describe(x)
        ));
    }
    if wc != c {
        return Err(format!(
            "input {} has {c} channels, weights {} expect {wc} (group {group})",
            describe(x),
            describe(w)
        ));
    }
    let m = m_per_group.checked_mul(group).ok_or_else(|| {
        format!(
            "weights {} with group {group} have too many output channels",
            describe(w)
        )
    })?;
    let bias = bias_data(b, m)?;
    let geometry = window::resolve_transpose(attrs, spatial, kernel)?;
    let plane = product(spatial)?;
    let taps = product(kernel)?;
    let outputs = product(&geometry.output)?;
    let c_per_group = c / group;

    let mut shape = vec![n, m];
    shape.extend_from_slice(&geometry.output);
    let mut out = vec![0.0f32; product(&shape)?];
    let out_strides = row_major_strides(&geometry.output);
    // Input positions are taken in chunks; for each, scatter[j * taps + t] is the output
    // offset that input position start + j reaches through tap t (None: cropped away).
    let chunk = chunk_len(taps, plane);
    let mut scatter = Vec::with_capacity(chunk * taps);
    let mut pos = vec![0; spatial.len()];
    let mut tap = vec![0; spatial.len()];
    for start in (0..plane).step_by(chunk) {
        let len = chunk.min(plane - start);
        scatter.clear();
        for _ in 0..len {
            tap.fill(0);
            for _ in 0..taps {
                let mut offset = Some(0);
                for axis in 0..spatial.len() {
                    let full =
                        pos[axis] * geometry.strides[axis] + tap[axis] * geometry.dilations[axis];
                    offset = match full.checked_sub(geometry.pads_begin()[axis]) {
                        Some(o) if o < geometry.output[axis] => {
                            offset.map(|off| off + o * out_strides[axis])
                        }
                        _ => None,
                    };
                }
                scatter.push(offset);
                next_index(&mut tap, kernel);
            }
            next_index(&mut pos, spatial);
        }
        for batch in 0..n {
            for ci in 0..c {
                let g = ci / c_per_group;
                let x_part = &xs[(batch * c + ci) * plane + start..][..len];
                for mo in 0..m_per_group {
                    let mi = g * m_per_group + mo;
                    let w_taps = &ws[(ci * m_per_group + mo) * taps..][..taps];
                    let out_plane = &mut out[(batch * m + mi) * outputs..][..outputs];
                    for (&xv, targets) in x_part.iter().zip(scatter.chunks_exact(taps)) {
                        for (&wv, target) in w_taps.iter().zip(targets) {
                            if let Some(offset) = *target {
                                out_plane[offset] += xv * wv;
                            }
                        }
                    }
                }
            }
        }
    }
    add_bias(&mut out, bias, outputs);
    f32_tensor(shape, out)
}

/// Inference batch normalization over axis 1:
/// `y = (x - mean) / sqrt(var + epsilon) * scale + bias`, each parameter `[C]`.
pub(super) fn batch_norm(
    epsilon: f32,
    x: &Tensor,
    scale: &Tensor,
    bias: &Tensor,
    mean: &Tensor,
    var: &Tensor,
) -> OpResult<Tensor> {
    let xs = f32_data(x, "input")?;
    if x.rank() < 2 {
        return Err(format!(
            "input {} must have a batch and a channel axis",
            describe(x)
        ));
    }
    let c = x.shape()[1];
    let scale = channel_param(scale, "scale", c, x)?;
    let bias = channel_param(bias, "bias", c, x)?;
    let mean = channel_param(mean, "mean", c, x)?;
    let var = channel_param(var, "var", c, x)?;
    let plane = product(&x.shape()[2..])?;
    let mut out = Vec::with_capacity(xs.len());
    if plane > 0 {
        for (i, values) in xs.chunks_exact(plane).enumerate() {
            let ch = i % c;
            let denom = (var[ch] + epsilon).sqrt();
            out.extend(
                values
                    .iter()
                    .map(|&v| (v - mean[ch]) / denom * scale[ch] + bias[ch]),
            );
        }
    }
    f32_tensor(x.shape().to_vec(), out)
}

/// A batch-norm parameter: `f32[C]` for the input's `C` channels.
fn channel_param<'a>(t: &'a Tensor, what: &str, c: usize, x: &Tensor) -> OpResult<&'a [f32]> {
    let data = f32_data(t, what)?;
    if t.shape() != [c] {
        return Err(format!(
            "{what} {} must have shape [{c}] for input {}",
            describe(t),
            describe(x)
        ));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::op::Window;

    fn t(shape: &[usize], data: &[f32]) -> Tensor {
        Tensor::from_f32(shape.to_vec(), data.to_vec()).unwrap()
    }

    fn iota(shape: &[usize]) -> Tensor {
        let n = shape.iter().product::<usize>();
        t(shape, &(0..n).map(|i| i as f32).collect::<Vec<_>>())
    }

    fn conv_attrs(pads: &[usize], strides: &[usize], dilations: &[usize], group: usize) -> Conv {
        Conv {
            window: Window {
                pads: pads.to_vec(),
                strides: strides.to_vec(),
                dilations: dilations.to_vec(),
                ..Window::default()
            },
            group,
        }
    }

    fn transpose_attrs(pads: &[usize], strides: &[usize], group: usize) -> ConvTranspose {
        ConvTranspose {
            window: Window {
                pads: pads.to_vec(),
                strides: strides.to_vec(),
                ..Window::default()
            },
            group,
            output_padding: vec![],
            output_shape: vec![],
        }
    }

    #[test]
    fn conv_sums_each_window() {
        let x = iota(&[1, 1, 3, 3]);
        let w = t(&[1, 1, 2, 2], &[1.0; 4]);
        let y = conv(&conv_attrs(&[], &[], &[], 1), &x, &w, None).unwrap();
        assert_eq!(y.shape(), [1, 1, 2, 2]);
        assert_eq!(y.as_f32().unwrap(), [8.0, 12.0, 20.0, 24.0]);
    }

    #[test]
    fn conv_with_padding_stride_and_bias() {
        // 3x3 ones kernel, pads 1, stride 2: each corner window sees a 2x2 block.
        let x = iota(&[1, 1, 3, 3]);
        let w = t(&[1, 1, 3, 3], &[1.0; 9]);
        let b = t(&[1], &[1.0]);
        let y = conv(
            &conv_attrs(&[1, 1, 1, 1], &[2, 2], &[], 1),
            &x,
            &w,
            Some(&b),
        )
        .unwrap();
        assert_eq!(y.as_f32().unwrap(), [9.0, 13.0, 21.0, 25.0]);
    }

    #[test]
    fn conv_1d_dilated_and_grouped() {
        let x = t(&[1, 1, 5], &[1.0, 2.0, 3.0, 4.0, 5.0]);
        let w = t(&[1, 1, 2], &[1.0, 10.0]);
        let y = conv(&conv_attrs(&[], &[], &[2], 1), &x, &w, None).unwrap();
        assert_eq!(y.as_f32().unwrap(), [31.0, 42.0, 53.0]);

        // Depthwise: each of 2 channels has its own 1x1 weight.
        let x = t(&[1, 2, 1, 2], &[1.0, 2.0, 3.0, 4.0]);
        let w = t(&[2, 1, 1, 1], &[2.0, 3.0]);
        let y = conv(&conv_attrs(&[], &[], &[], 2), &x, &w, None).unwrap();
        assert_eq!(y.as_f32().unwrap(), [2.0, 4.0, 9.0, 12.0]);

        // Two batches, two output channels mixing both input channels.
        let x = t(&[2, 2, 1, 1], &[1.0, 2.0, 3.0, 4.0]);
        let w = t(&[2, 2, 1, 1], &[1.0, 1.0, 1.0, -1.0]);
        let y = conv(&conv_attrs(&[], &[], &[], 1), &x, &w, None).unwrap();
        assert_eq!(y.as_f32().unwrap(), [3.0, -1.0, 7.0, -1.0]);
    }

    #[test]
    fn conv_rejects_mismatched_operands() {
        let x = iota(&[1, 3, 5, 5]);
        let w = t(&[1, 2, 1, 1], &[1.0, 1.0]);
        let err = conv(&conv_attrs(&[], &[], &[], 1), &x, &w, None).unwrap_err();
        assert!(err.contains("f32[1,3,5,5] has 3 channels"), "{err}");
        let w = t(&[1, 3, 1, 1], &[1.0; 3]);
        let b = t(&[2], &[0.0; 2]);
        assert!(conv(&conv_attrs(&[], &[], &[], 1), &x, &w, Some(&b)).is_err());
        let w = t(&[1, 3, 6, 6], &[0.0; 108]);
        assert!(conv(&conv_attrs(&[], &[], &[], 1), &x, &w, None).is_err());
        let x2 = iota(&[1, 3]);
        assert!(conv(&conv_attrs(&[], &[], &[], 1), &x2, &w, None).is_err());
    }

    #[test]
    fn conv_transpose_scatters_each_input() {
        let x = t(&[1, 1, 3], &[1.0, 2.0, 3.0]);
        let w = t(&[1, 1, 2], &[1.0, 1.0]);
        let y = conv_transpose(&transpose_attrs(&[], &[], 1), &x, &w, None).unwrap();
        assert_eq!(y.as_f32().unwrap(), [1.0, 3.0, 5.0, 3.0]);
        let y = conv_transpose(&transpose_attrs(&[], &[2], 1), &x, &w, None).unwrap();
        assert_eq!(y.as_f32().unwrap(), [1.0, 1.0, 2.0, 2.0, 3.0, 3.0]);
        let b = t(&[1], &[10.0]);
        let y = conv_transpose(&transpose_attrs(&[1, 1], &[2], 1), &x, &w, Some(&b)).unwrap();
        assert_eq!(y.as_f32().unwrap(), [11.0, 12.0, 12.0, 13.0]);
    }

    #[test]
    fn conv_transpose_groups_and_output_shape() {
        let x = t(&[1, 2, 1], &[1.0, 2.0]);
        let w = t(&[2, 1, 1], &[3.0, 4.0]);
        let y = conv_transpose(&transpose_attrs(&[], &[], 2), &x, &w, None).unwrap();
        assert_eq!(y.as_f32().unwrap(), [3.0, 8.0]);

        // output_shape larger than the full output: the extra position gets only the bias.
        let x = t(&[1, 1, 2], &[1.0, 2.0]);
        let w = t(&[1, 1, 1], &[1.0]);
        let mut attrs = transpose_attrs(&[], &[], 1);
        attrs.output_shape = vec![3];
        let b = t(&[1], &[0.5]);
        let y = conv_transpose(&attrs, &x, &w, Some(&b)).unwrap();
        assert_eq!(y.as_f32().unwrap(), [1.5, 2.5, 0.5]);

        let w = t(&[3, 1, 1], &[1.0; 3]);
        assert!(conv_transpose(&transpose_attrs(&[], &[], 1), &x, &w, None).is_err());
    }

    #[test]
    fn batch_norm_normalizes_per_channel() {
        let x = t(&[1, 2, 1, 2], &[1.0, 2.0, 3.0, 4.0]);
        let scale = t(&[2], &[1.0, 2.0]);
        let bias = t(&[2], &[0.0, 1.0]);
        let mean = t(&[2], &[1.0, 3.0]);
        let var = t(&[2], &[4.0, 1.0]);
        let y = batch_norm(0.0, &x, &scale, &bias, &mean, &var).unwrap();
        assert_eq!(y.as_f32().unwrap(), [0.0, 0.5, 1.0, 3.0]);
        // Rank 2: [N, C].
        let x = t(&[2, 2], &[1.0, 3.0, 3.0, 4.0]);
        let y = batch_norm(0.0, &x, &scale, &bias, &mean, &var).unwrap();
        assert_eq!(y.as_f32().unwrap(), [0.0, 1.0, 1.0, 3.0]);
        let bad = t(&[3], &[1.0; 3]);
        let err = batch_norm(0.0, &x, &bad, &bias, &mean, &var).unwrap_err();
        assert!(err.contains("scale f32[3]"), "{err}");
    }
}
