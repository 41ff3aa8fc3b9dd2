//! Window geometry of convolution and pooling: resolving ONNX's defaults and `auto_pad`
//! against an input size, and the output size that follows.
//!
//! Shape inference, the interpreter and (later) lowering all use these functions, so the
//! three always agree on padding and output sizes.

use super::op::{AutoPad, Window};

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

/// The effective extent of a dilated kernel: `(k - 1) * d + 1`.
pub fn dilated_extent(kernel: usize, dilation: usize) -> usize {
    (kernel.max(1) - 1) * dilation + 1
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
                let needed =
                    (out.max(1) - 1) * strides[i] + dilated_extent(kernel[i], dilations[i]);
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
}
