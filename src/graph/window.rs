//! Window geometry of convolution and pooling: resolving ONNX's defaults and `auto_pad`
//! against an input size, and the output size that follows.
//!
//! Shape inference, the interpreter and (later) lowering all use these functions, so the
//! three always agree on padding and output sizes.

use super::op::{AutoPad, ConvTranspose, Window};

/// A window with every default resolved, for one input size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedWindow {
    /// Kernel size per spatial axis.
    pub kernel: Vec<usize>,
    /// Stride per spatial axis.
    pub strides: Vec<usize>,
    /// Dilation per spatial axis.
    pub dilations: Vec<usize>,
    /// Padding before each spatial axis.
    pads_begin: Vec<usize>,
    /// Padding after each spatial axis.
    pads_end: Vec<usize>,
    /// Output size per spatial axis.
    pub output: Vec<usize>,
}

impl ResolvedWindow {
    /// Padding before each spatial axis.
    pub fn pads_begin(&self) -> &[usize] {
        &self.pads_begin
    }

    /// Padding after each spatial axis.
    pub fn pads_end(&self) -> &[usize] {
        &self.pads_end
    }
}

/// Whether the output size rounds down (convolution, pooling by default) or up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rounding {
    /// `floor`.
    Floor,
    /// `ceil`, dropping a last window that would start in the end padding.
    Ceil,
}

fn per_axis(
    values: &[usize],
    rank: usize,
    default: usize,
    what: &str,
) -> Result<Vec<usize>, String> {
    match values.len() {
        0 => Ok(vec![default; rank]),
        n if n == rank => Ok(values.to_vec()),
        n => Err(format!("{what} has {n} values for {rank} spatial axes")),
    }
}

/// The effective extent of a dilated kernel: `(k - 1) * d + 1` (saturating, so absurd
/// attributes give a window that fits nothing instead of an overflow).
pub fn dilated_extent(kernel: usize, dilation: usize) -> usize {
    (kernel.max(1) - 1)
        .saturating_mul(dilation)
        .saturating_add(1)
}

/// Output length of one axis with explicit padding; `None` if the window does not fit.
pub fn output_len(
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    pad_begin: usize,
    pad_end: usize,
    rounding: Rounding,
) -> Option<usize> {
    let padded = input.checked_add(pad_begin)?.checked_add(pad_end)?;
    let extent = dilated_extent(kernel, dilation);
    if padded < extent || stride == 0 {
        return None;
    }
    let span = padded - extent;
    let mut out = match rounding {
        Rounding::Floor => span / stride + 1,
        Rounding::Ceil => span.div_ceil(stride) + 1,
    };
    // A window may not start in the end padding: its first element must lie in the input or
    // in the begin padding (the rule ONNX shares with PyTorch).
    if rounding == Rounding::Ceil && (out - 1) * stride >= input + pad_begin {
        out -= 1;
    }
    Some(out)
}

/// Resolves a window against the spatial input sizes. `kernel` is the kernel size (from the
/// weights for convolution, from `kernel_shape` for pooling). Errors describe the problem
/// without naming the node; callers add it.
pub fn resolve(
    window: &Window,
    input: &[usize],
    kernel: &[usize],
    rounding: Rounding,
) -> Result<ResolvedWindow, String> {
    let rank = input.len();
    if kernel.len() != rank {
        return Err(format!(
            "kernel has {} spatial axes, input has {rank}",
            kernel.len()
        ));
    }
    if !window.kernel_shape.is_empty() && window.kernel_shape != kernel {
        return Err(format!(
            "kernel_shape {:?} disagrees with the weights' kernel {kernel:?}",
            window.kernel_shape
        ));
    }
    let strides = per_axis(&window.strides, rank, 1, "strides")?;
    let dilations = per_axis(&window.dilations, rank, 1, "dilations")?;
    if strides.contains(&0) || dilations.contains(&0) {
        return Err(format!(
            "strides {strides:?} and dilations {dilations:?} must be positive"
        ));
    }
    let mut pads_begin = vec![0; rank];
    let mut pads_end = vec![0; rank];
    let mut output = vec![0; rank];
    match window.auto_pad {
        AutoPad::NotSet | AutoPad::Valid => {
            if window.auto_pad == AutoPad::NotSet && !window.pads.is_empty() {
                if window.pads.len() != 2 * rank {
                    return Err(format!(
                        "pads has {} values for {rank} spatial axes",
                        window.pads.len()
                    ));
                }
                pads_begin.copy_from_slice(&window.pads[..rank]);
                pads_end.copy_from_slice(&window.pads[rank..]);
            }
            for i in 0..rank {
                output[i] = output_len(
                    input[i],
                    kernel[i],
                    strides[i],
                    dilations[i],
                    pads_begin[i],
                    pads_end[i],
                    rounding,
                )
                .ok_or_else(|| {
                    format!(
                        "window (kernel {:?}, dilations {dilations:?}) does not fit the input {input:?} padded by {pads_begin:?}/{pads_end:?}",
                        kernel
                    )
                })?;
            }
        }
        AutoPad::SameUpper | AutoPad::SameLower => {
            for i in 0..rank {
                let out = input[i].div_ceil(strides[i]);
                let needed = (out.max(1) - 1)
                    .saturating_mul(strides[i])
                    .saturating_add(dilated_extent(kernel[i], dilations[i]));
                let total = needed.saturating_sub(input[i]);
                let (small, large) = (total / 2, total - total / 2);
                if window.auto_pad == AutoPad::SameUpper {
                    pads_begin[i] = small;
                    pads_end[i] = large;
                } else {
                    pads_begin[i] = large;
                    pads_end[i] = small;
                }
                output[i] = out;
            }
        }
    }
    Ok(ResolvedWindow {
        kernel: kernel.to_vec(),
        strides,
        dilations,
        pads_begin,
        pads_end,
        output,
    })
}

/// Output size and effective pads of a transposed convolution (ONNX ConvTranspose).
///
/// The full (uncropped) output of axis `i` has `stride * (in - 1) + output_padding +
/// dilated_extent(k, d)` positions; input position `x` and kernel tap `j` land on full
/// position `x * stride + j * dilation`, and output position `o` is full position
/// `o + pads_begin`. The output size is, in order of precedence:
/// - `output_shape` if given (pads then follow from it; `pads` is ignored),
/// - `in * stride` for `SAME_UPPER` / `SAME_LOWER`,
/// - the full size minus the explicit `pads` (none for `VALID`).
///
/// With a derived total padding `full - output`, `SAME_UPPER` puts the smaller half at the
/// begin, everything else the larger half. If the requested output is larger than the full
/// size (negative total padding), both pads are 0 and the extra positions at the end receive
/// no contribution (only the bias), as ONNX Runtime does; `pads_end` is then 0 and `output`
/// exceeds `full - pads_begin`.
pub fn resolve_transpose(
    attrs: &ConvTranspose,
    input: &[usize],
    kernel: &[usize],
) -> Result<ResolvedWindow, String> {
    let window = &attrs.window;
    let rank = input.len();
    if kernel.len() != rank {
        return Err(format!(
            "kernel has {} spatial axes, input has {rank}",
            kernel.len()
        ));
    }
    if !window.kernel_shape.is_empty() && window.kernel_shape != kernel {
        return Err(format!(
            "kernel_shape {:?} disagrees with the weights' kernel {kernel:?}",
            window.kernel_shape
        ));
    }
    let strides = per_axis(&window.strides, rank, 1, "strides")?;
    let dilations = per_axis(&window.dilations, rank, 1, "dilations")?;
    if strides.contains(&0) || dilations.contains(&0) {
        return Err(format!(
            "strides {strides:?} and dilations {dilations:?} must be positive"
        ));
    }
    let output_padding = per_axis(&attrs.output_padding, rank, 0, "output_padding")?;
    // output_shape may also list the batch and channel dims (older exporters do).
    let requested = match attrs.output_shape.len() {
        0 => None,
        n if n == rank => Some(attrs.output_shape.as_slice()),
        n if n == rank + 2 => attrs.output_shape.get(2..),
        n => {
            return Err(format!(
                "output_shape has {n} values for {rank} spatial axes"
            ));
        }
    };
    let explicit_pads = if requested.is_none() && window.auto_pad == AutoPad::NotSet {
        match window.pads.len() {
            0 => None,
            n if n == 2 * rank => Some(&window.pads),
            n => return Err(format!("pads has {n} values for {rank} spatial axes")),
        }
    } else {
        None
    };
    let overflow = || format!("transposed window of input {input:?} overflows");
    let mut pads_begin = vec![0; rank];
    let mut pads_end = vec![0; rank];
    let mut output = vec![0; rank];
    for i in 0..rank {
        let full = input[i]
            .saturating_sub(1)
            .checked_mul(strides[i])
            .and_then(|n| n.checked_add(output_padding[i]))
            .and_then(|n| {
                let extent = (kernel[i].max(1) - 1).checked_mul(dilations[i])?;
                n.checked_add(extent)?.checked_add(1)
            })
            .ok_or_else(overflow)?;
        let same = matches!(window.auto_pad, AutoPad::SameUpper | AutoPad::SameLower);
        let target = match requested {
            Some(shape) => Some(shape[i]),
            None if same => Some(input[i].checked_mul(strides[i]).ok_or_else(overflow)?),
            None => None,
        };
        match (target, explicit_pads) {
            (Some(out), _) => {
                let total = full.saturating_sub(out);
                let (small, large) = (total / 2, total - total / 2);
                (pads_begin[i], pads_end[i]) = if window.auto_pad == AutoPad::SameUpper {
                    (small, large)
                } else {
                    (large, small)
                };
                output[i] = out;
            }
            (None, Some(pads)) => {
                (pads_begin[i], pads_end[i]) = (pads[i], pads[rank + i]);
                output[i] = pads_begin[i]
                    .checked_add(pads_end[i])
                    .and_then(|p| full.checked_sub(p))
                    .filter(|&n| n > 0)
                    .ok_or_else(|| {
                        format!(
                            "pads {pads:?} leave no output of the transposed window (full size {full} on axis {i})"
                        )
                    })?;
            }
            (None, None) => output[i] = full,
        }
    }
    Ok(ResolvedWindow {
        kernel: kernel.to_vec(),
        strides,
        dilations,
        pads_begin,
        pads_end,
        output,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(pads: Vec<usize>, strides: Vec<usize>) -> Window {
        Window {
            pads,
            strides,
            ..Window::default()
        }
    }

    #[test]
    fn resnet_stem_geometry() {
        let r = resolve(
            &window(vec![3, 3, 3, 3], vec![2, 2]),
            &[224, 224],
            &[7, 7],
            Rounding::Floor,
        )
        .unwrap();
        assert_eq!(r.output, vec![112, 112]);
        let r = resolve(
            &window(vec![1, 1, 1, 1], vec![2, 2]),
            &[112, 112],
            &[3, 3],
            Rounding::Floor,
        )
        .unwrap();
        assert_eq!(r.output, vec![56, 56]);
    }

    #[test]
    fn ceil_mode_drops_a_window_starting_in_the_padding() {
        // ONNX test maxpool_2d_ceil_output_size_reduce_by_one: 2x2 input, kernel 1, stride 2,
        // ceil mode gives 1, not 2.
        assert_eq!(output_len(2, 1, 2, 1, 0, 0, Rounding::Ceil), Some(1));
        assert_eq!(output_len(4, 3, 2, 1, 0, 0, Rounding::Ceil), Some(2));
        assert_eq!(output_len(4, 3, 2, 1, 0, 0, Rounding::Floor), Some(1));
    }

    #[test]
    fn same_lower_puts_extra_padding_first() {
        let w = Window {
            auto_pad: AutoPad::SameLower,
            ..Window::default()
        };
        let r = resolve(&w, &[5], &[2], Rounding::Floor).unwrap();
        assert_eq!(
            (r.pads_begin(), r.pads_end(), r.output.as_slice()),
            (&[1][..], &[0][..], &[5][..])
        );
    }

    #[test]
    fn too_small_input_is_an_error() {
        assert!(resolve(&Window::default(), &[2, 2], &[3, 3], Rounding::Floor).is_err());
    }

    fn transpose(
        window: Window,
        output_padding: Vec<usize>,
        output_shape: Vec<usize>,
    ) -> ConvTranspose {
        ConvTranspose {
            window,
            group: 1,
            output_padding,
            output_shape,
        }
    }

    #[test]
    fn transpose_with_explicit_pads() {
        // ONNX test convtranspose_pads: 3x3 input, 3x3 kernel, strides [3, 2], pads [1,2,1,2].
        let t = transpose(window(vec![1, 2, 1, 2], vec![3, 2]), vec![], vec![]);
        let r = resolve_transpose(&t, &[3, 3], &[3, 3]).unwrap();
        assert_eq!(r.output, vec![7, 3]);
        assert_eq!((r.pads_begin(), r.pads_end()), (&[1, 2][..], &[1, 2][..]));
    }

    #[test]
    fn transpose_same_upper_crops_the_end() {
        // ONNX test convtranspose_autopad_same: full size 7, output 3 * 2 = 6.
        let w = Window {
            auto_pad: AutoPad::SameUpper,
            strides: vec![2, 2],
            ..Window::default()
        };
        let r = resolve_transpose(&transpose(w.clone(), vec![], vec![]), &[3, 3], &[3, 3]).unwrap();
        assert_eq!(r.output, vec![6, 6]);
        assert_eq!((r.pads_begin(), r.pads_end()), (&[0, 0][..], &[1, 1][..]));
        let lower = Window {
            auto_pad: AutoPad::SameLower,
            ..w
        };
        let r = resolve_transpose(&transpose(lower, vec![], vec![]), &[3, 3], &[3, 3]).unwrap();
        assert_eq!((r.pads_begin(), r.pads_end()), (&[1, 1][..], &[0, 0][..]));
    }

    #[test]
    fn transpose_output_shape_and_output_padding() {
        // ONNX tests convtranspose_output_shape and convtranspose_kernel_shape: both 10x8.
        let w = window(vec![], vec![3, 2]);
        let r = resolve_transpose(&transpose(w.clone(), vec![], vec![10, 8]), &[3, 3], &[3, 3])
            .unwrap();
        assert_eq!(r.output, vec![10, 8]);
        assert_eq!(r.pads_begin(), &[0, 0]);
        let r =
            resolve_transpose(&transpose(w, vec![1, 1], vec![10, 8]), &[3, 3], &[3, 3]).unwrap();
        assert_eq!(r.output, vec![10, 8]);
        assert_eq!((r.pads_begin(), r.pads_end()), (&[0, 0][..], &[0, 0][..]));
    }

    #[test]
    fn transpose_defaults_and_errors() {
        // ONNX test convtranspose_dilations: 3x3 input, 2x2 kernel, dilation 2 -> 5x5.
        let w = Window {
            dilations: vec![2, 2],
            ..Window::default()
        };
        let r = resolve_transpose(&transpose(w, vec![], vec![]), &[3, 3], &[2, 2]).unwrap();
        assert_eq!(r.output, vec![5, 5]);
        let too_much = transpose(window(vec![3, 3, 3, 3], vec![]), vec![], vec![]);
        assert!(resolve_transpose(&too_much, &[2, 2], &[3, 3]).is_err());
        let bad_rank = transpose(Window::default(), vec![], vec![4]);
        assert!(resolve_transpose(&bad_rank, &[2, 2], &[3, 3]).is_err());
    }
}

#[cfg(test)]
mod overflow_tests {
    use super::*;

    #[test]
    fn absurd_dilations_are_an_error_not_an_overflow() {
        let w = Window {
            dilations: vec![usize::MAX],
            ..Window::default()
        };
        assert!(resolve(&w, &[8], &[3], Rounding::Floor).is_err());
        let same = Window {
            auto_pad: AutoPad::SameUpper,
            strides: vec![usize::MAX],
            dilations: vec![usize::MAX],
            ..Window::default()
        };
        assert!(resolve(&same, &[8], &[3], Rounding::Floor).is_ok());
    }
}
