//! Ops and their typed attributes.
//!
//! The graph IR uses one form per op: the newest ONNX form. Operands that newer opsets take
//! as inputs (Reshape's shape, Slice's starts, Clip's bounds, Squeeze's axes, Pad's pads,
//! Resize's scales) are inputs here too; the ONNX importer upgrades older forms. Everything
//! else is a typed attribute.
//!
//! [`Op::from_parts`] is the single constructor from a name and generic attributes, shared by
//! the ONNX importer and the text-IR parser; [`Op::attributes`] is its inverse (defaults are
//! omitted), used by the printer. Attribute names follow ONNX.

use std::fmt;
use std::ops::RangeInclusive;

use crate::error::{Error, Result};
use crate::tensor::DType;

/// A generic attribute value, as read from ONNX or the text IR.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    /// An integer.
    Int(i64),
    /// A float.
    Float(f32),
    /// A list of integers.
    Ints(Vec<i64>),
    /// A list of floats.
    Floats(Vec<f32>),
    /// A string.
    Str(String),
}

impl fmt::Display for Attr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn list<T: fmt::Display>(f: &mut fmt::Formatter<'_>, items: &[T]) -> fmt::Result {
            f.write_str("[")?;
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{x}")?;
            }
            f.write_str("]")
        }
        match self {
            Attr::Int(v) => write!(f, "{v}"),
            Attr::Float(v) => write!(f, "{}", FloatRepr(*v)),
            Attr::Ints(v) => list(f, v),
            Attr::Floats(v) => list(f, &v.iter().map(|&x| FloatRepr(x)).collect::<Vec<_>>()),
            Attr::Str(s) => write!(f, "{s:?}"),
        }
    }
}

/// Prints an `f32` so that it reads back bit-exactly and always looks like a float
/// (`1.0`, `0.001`, `-inf`, `nan`).
#[derive(Clone, Copy, Debug)]
pub struct FloatRepr(pub f32);

impl fmt::Display for FloatRepr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        if v.is_nan() {
            f.write_str("nan")
        } else if v.is_infinite() {
            f.write_str(if v > 0.0 { "inf" } else { "-inf" })
        } else {
            let s = format!("{v:?}");
            f.write_str(&s)
        }
    }
}

/// Padding policy of convolution and pooling windows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AutoPad {
    /// Explicit `pads`.
    #[default]
    NotSet,
    /// Output size `ceil(in / stride)`, extra padding at the end.
    SameUpper,
    /// Output size `ceil(in / stride)`, extra padding at the start.
    SameLower,
    /// No padding.
    Valid,
}

impl AutoPad {
    fn name(self) -> &'static str {
        match self {
            AutoPad::NotSet => "NOTSET",
            AutoPad::SameUpper => "SAME_UPPER",
            AutoPad::SameLower => "SAME_LOWER",
            AutoPad::Valid => "VALID",
        }
    }

    fn from_name(name: &str) -> Option<AutoPad> {
        Some(match name {
            "NOTSET" | "" => AutoPad::NotSet,
            "SAME_UPPER" => AutoPad::SameUpper,
            "SAME_LOWER" => AutoPad::SameLower,
            "VALID" => AutoPad::Valid,
            _ => return None,
        })
    }
}

/// The sliding window shared by convolution and pooling. Empty lists mean the ONNX default
/// (kernel from the weights, strides and dilations 1, pads 0), resolved against the input by
/// [`crate::graph::window`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Window {
    /// Padding policy.
    pub auto_pad: AutoPad,
    /// Kernel size per spatial axis.
    pub kernel_shape: Vec<usize>,
    /// Stride per spatial axis.
    pub strides: Vec<usize>,
    /// `[begin_0, begin_1, …, end_0, end_1, …]`.
    pub pads: Vec<usize>,
    /// Dilation per spatial axis.
    pub dilations: Vec<usize>,
}

/// Convolution attributes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Conv {
    /// The window.
    pub window: Window,
    /// Number of channel groups.
    pub group: usize,
}

/// Transposed-convolution attributes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConvTranspose {
    /// The window.
    pub window: Window,
    /// Number of channel groups.
    pub group: usize,
    /// Extra size added at the end of each spatial output axis.
    pub output_padding: Vec<usize>,
    /// Requested spatial output shape (empty if not given).
    pub output_shape: Vec<usize>,
}

/// Pooling attributes (MaxPool and AveragePool).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pool {
    /// The window; `kernel_shape` is always set.
    pub window: Window,
    /// Round the output size up instead of down.
    pub ceil_mode: bool,
    /// AveragePool: count padded cells in the divisor.
    pub count_include_pad: bool,
    /// MaxPool: 0 for row-major indices, 1 for column-major.
    pub storage_order: i64,
}

/// Elementwise ops of one operand.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unary {
    /// `max(x, 0)`.
    Relu,
    /// `x` if `x >= 0`, else `alpha * x`.
    LeakyRelu {
        /// Slope for negative inputs.
        alpha: f32,
    },
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
    /// `max(0, min(1, alpha * x + beta))`.
    HardSigmoid {
        /// Slope.
        alpha: f32,
        /// Offset.
        beta: f32,
    },
    /// `x * max(0, min(1, x / 6 + 0.5))`.
    HardSwish,
    /// Hyperbolic tangent.
    Tanh,
    /// Gaussian error linear unit, exact (erf) or its tanh approximation.
    Gelu {
        /// Use the tanh approximation.
        tanh: bool,
    },
    /// The error function.
    Erf,
    /// `e^x`.
    Exp,
    /// Square root.
    Sqrt,
}

impl Unary {
    /// The op's name in the text IR.
    pub fn name(self) -> &'static str {
        match self {
            Unary::Relu => "relu",
            Unary::LeakyRelu { .. } => "leaky_relu",
            Unary::Sigmoid => "sigmoid",
            Unary::HardSigmoid { .. } => "hard_sigmoid",
            Unary::HardSwish => "hard_swish",
            Unary::Tanh => "tanh",
            Unary::Gelu { .. } => "gelu",
            Unary::Erf => "erf",
            Unary::Exp => "exp",
            Unary::Sqrt => "sqrt",
        }
    }
}

/// Elementwise ops of two operands, with multidirectional (numpy) broadcasting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Binary {
    /// `a + b`.
    Add,
    /// `a - b`.
    Sub,
    /// `a * b`.
    Mul,
    /// `a / b` (truncating for integers).
    Div,
    /// `a ^ b`; the result has `a`'s dtype.
    Pow,
    /// `a` if `a >= 0`, else `slope * a`; the slope broadcasts to `a`'s shape.
    PRelu,
}

impl Binary {
    /// The op's name in the text IR.
    pub fn name(self) -> &'static str {
        match self {
            Binary::Add => "add",
            Binary::Sub => "sub",
            Binary::Mul => "mul",
            Binary::Div => "div",
            Binary::Pow => "pow",
            Binary::PRelu => "prelu",
        }
    }
}

/// Padding mode of [`Op::Pad`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PadMode {
    /// Fill with a constant.
    #[default]
    Constant,
    /// Mirror without repeating the edge.
    Reflect,
    /// Repeat the edge.
    Edge,
    /// Wrap around.
    Wrap,
}

impl PadMode {
    fn name(self) -> &'static str {
        match self {
            PadMode::Constant => "constant",
            PadMode::Reflect => "reflect",
            PadMode::Edge => "edge",
            PadMode::Wrap => "wrap",
        }
    }

    fn from_name(name: &str) -> Option<PadMode> {
        Some(match name {
            "constant" => PadMode::Constant,
            "reflect" => PadMode::Reflect,
            "edge" => PadMode::Edge,
            "wrap" => PadMode::Wrap,
            _ => return None,
        })
    }
}

/// Interpolation of [`Op::Resize`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ResizeMode {
    /// Nearest neighbour.
    #[default]
    Nearest,
    /// (Multi-)linear.
    Linear,
    /// Cubic.
    Cubic,
}

/// How [`Op::Resize`] maps output coordinates to input coordinates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CoordinateTransform {
    /// `(x_out + 0.5) / scale - 0.5`.
    #[default]
    HalfPixel,
    /// Like half_pixel, with the scale computed from the sizes.
    HalfPixelSymmetric,
    /// Like half_pixel, but 0 when the output length is 1.
    PytorchHalfPixel,
    /// `x_out * (in - 1) / (out - 1)`.
    AlignCorners,
    /// `x_out / scale`.
    Asymmetric,
    /// Crop to the region of interest, then align corners.
    TfCropAndResize,
}

/// Rounding of [`Op::Resize`] in nearest mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum NearestMode {
    /// Round halves down.
    #[default]
    RoundPreferFloor,
    /// Round halves up.
    RoundPreferCeil,
    /// Floor.
    Floor,
    /// Ceiling.
    Ceil,
}

/// How [`Op::Resize`] treats `sizes` that would change the aspect ratio.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AspectRatioPolicy {
    /// Use the sizes as given.
    #[default]
    Stretch,
    /// Keep the ratio; the result is no larger than the sizes.
    NotLarger,
    /// Keep the ratio; the result is no smaller than the sizes.
    NotSmaller,
}

/// Resize attributes.
#[derive(Clone, Debug, PartialEq)]
pub struct Resize {
    /// Interpolation.
    pub mode: ResizeMode,
    /// Coordinate mapping.
    pub coordinate_transformation_mode: CoordinateTransform,
    /// Rounding in nearest mode.
    pub nearest_mode: NearestMode,
    /// The cubic kernel's `a`.
    pub cubic_coeff_a: f32,
    /// Zero the weights of samples outside the input and renormalise.
    pub exclude_outside: bool,
    /// Value for samples outside the input in tf_crop_and_resize.
    pub extrapolation_value: f32,
    /// Widen the kernel when downsampling (linear and cubic).
    pub antialias: bool,
    /// Axes that `scales`/`sizes` refer to (all axes if empty).
    pub axes: Vec<i64>,
    /// Aspect-ratio policy for `sizes`.
    pub keep_aspect_ratio_policy: AspectRatioPolicy,
}

impl Default for Resize {
    fn default() -> Resize {
        Resize {
            mode: ResizeMode::Nearest,
            coordinate_transformation_mode: CoordinateTransform::HalfPixel,
            nearest_mode: NearestMode::RoundPreferFloor,
            cubic_coeff_a: -0.75,
            exclude_outside: false,
            extrapolation_value: 0.0,
            antialias: false,
            axes: Vec::new(),
            keep_aspect_ratio_policy: AspectRatioPolicy::Stretch,
        }
    }
}

/// An operation of the graph IR. Inputs in brackets are optional (absent inputs are `None`).
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// `conv(x, w, [b])`: N-d convolution, NC… layout, weights `[M, C/group, k…]`.
    Conv(Conv),
    /// `conv_transpose(x, w, [b])`: weights `[C, M/group, k…]`.
    ConvTranspose(ConvTranspose),
    /// `batch_norm(x, scale, bias, mean, var)`, inference form.
    BatchNorm {
        /// Added to the variance.
        epsilon: f32,
    },
    /// An elementwise op of one operand.
    Unary(Unary),
    /// An elementwise op of two broadcast operands.
    Binary(Binary),
    /// `clip(x, [min], [max])`; absent bounds do not clip.
    Clip,
    /// `softmax(x)` along `axis`.
    Softmax {
        /// The axis (negative counts from the end).
        axis: i64,
        /// Opset < 13 semantics: flatten to 2-D at `axis` and normalise the whole row.
        coerce_2d: bool,
    },
    /// `max_pool(x) -> (y, [indices])`.
    MaxPool(Pool),
    /// `average_pool(x)`.
    AveragePool(Pool),
    /// `global_average_pool(x)`: mean over all spatial axes, kept as size 1.
    GlobalAveragePool,
    /// `global_max_pool(x)`: max over all spatial axes, kept as size 1.
    GlobalMaxPool,
    /// `gemm(a, b, [c])`: `alpha * op(a) @ op(b) + beta * c`.
    Gemm {
        /// Scale of the product.
        alpha: f32,
        /// Scale of `c`.
        beta: f32,
        /// Transpose `a`.
        trans_a: bool,
        /// Transpose `b`.
        trans_b: bool,
    },
    /// `matmul(a, b)`: numpy matmul with batch broadcasting.
    MatMul,
    /// `flatten(x)` to 2-D at `axis`.
    Flatten {
        /// Dims before `axis` form the first output dim.
        axis: i64,
    },
    /// `reshape(x, shape)`; `shape` is `i64[k]` (0 copies, -1 infers).
    Reshape {
        /// A 0 in `shape` means size 0 instead of "copy".
        allowzero: bool,
    },
    /// `transpose(x)` by `perm` (reversed axes if absent).
    Transpose {
        /// The permutation.
        perm: Option<Vec<usize>>,
    },
    /// `concat(x…)` along `axis`.
    Concat {
        /// The axis.
        axis: i64,
    },
    /// `split(x, [split]) -> (y…)` along `axis`.
    Split {
        /// The axis.
        axis: i64,
        /// Number of equal(ish) parts when `split` is absent (else the output count).
        num_outputs: Option<usize>,
    },
    /// `slice(x, starts, ends, [axes], [steps])`.
    Slice,
    /// `pad(x, pads, [constant_value], [axes])`.
    Pad {
        /// Padding mode.
        mode: PadMode,
    },
    /// `resize(x, [roi], [scales], [sizes])`.
    Resize(Resize),
    /// `squeeze(x, [axes])`.
    Squeeze,
    /// `unsqueeze(x, axes)`.
    Unsqueeze,
    /// `reduce_mean(x, [axes])`.
    ReduceMean {
        /// Keep reduced axes as size 1.
        keepdims: bool,
        /// With no axes, return the input instead of reducing everything.
        noop_with_empty_axes: bool,
    },
    /// `identity(x)`.
    Identity,
    /// `dropout(x, [ratio], [training_mode])`: the identity at inference.
    Dropout,
    /// `shape(x)`: the shape as `i64[r]`, sliced to `[start, end)`.
    Shape {
        /// First axis.
        start: i64,
        /// One past the last axis (the rank if absent).
        end: Option<i64>,
    },
    /// `gather(x, indices)` along `axis`.
    Gather {
        /// The axis.
        axis: i64,
    },
    /// `cast(x)` to `to`.
    Cast {
        /// Target dtype.
        to: DType,
    },
}

/// Reads generic attributes for one node, tracking which were used so that unknown ones are
/// reported.
pub struct AttrReader<'a> {
    node: &'a str,
    op: &'a str,
    attrs: &'a [(String, Attr)],
    used: Vec<bool>,
}

impl<'a> AttrReader<'a> {
    /// A reader over `attrs` of node `node` with op `op`.
    pub fn new(node: &'a str, op: &'a str, attrs: &'a [(String, Attr)]) -> AttrReader<'a> {
        AttrReader {
            node,
            op,
            attrs,
            used: vec![false; attrs.len()],
        }
    }

    fn error(&self, message: String) -> Error {
        Error::node(self.node, self.op, message)
    }

    fn take(&mut self, name: &str) -> Option<&'a Attr> {
        let i = self.attrs.iter().position(|(n, _)| n == name)?;
        self.used[i] = true;
        Some(&self.attrs[i].1)
    }

    /// An integer attribute.
    pub fn int(&mut self, name: &str, default: i64) -> Result<i64> {
        match self.take(name) {
            None => Ok(default),
            Some(Attr::Int(v)) => Ok(*v),
            Some(other) => Err(self.error(format!("attribute {name} must be an int, got {other}"))),
        }
    }

    /// An optional integer attribute.
    pub fn opt_int(&mut self, name: &str) -> Result<Option<i64>> {
        match self.take(name) {
            None => Ok(None),
            Some(Attr::Int(v)) => Ok(Some(*v)),
            Some(other) => Err(self.error(format!("attribute {name} must be an int, got {other}"))),
        }
    }

    /// A boolean attribute stored as an int 0 or 1.
    pub fn flag(&mut self, name: &str, default: bool) -> Result<bool> {
        match self.int(name, i64::from(default))? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(self.error(format!("attribute {name} must be 0 or 1, got {v}"))),
        }
    }

    /// A non-negative integer attribute.
    pub fn usize(&mut self, name: &str, default: usize) -> Result<usize> {
        let v = self.int(name, default as i64)?;
        usize::try_from(v)
            .map_err(|_| self.error(format!("attribute {name} must be >= 0, got {v}")))
    }

    /// A float attribute (ints are accepted).
    pub fn float(&mut self, name: &str, default: f32) -> Result<f32> {
        match self.take(name) {
            None => Ok(default),
            Some(Attr::Float(v)) => Ok(*v),
            Some(Attr::Int(v)) => Ok(*v as f32),
            Some(other) => {
                Err(self.error(format!("attribute {name} must be a float, got {other}")))
            }
        }
    }

    /// A list of integers (empty if absent).
    pub fn ints(&mut self, name: &str) -> Result<Vec<i64>> {
        Ok(self.opt_ints(name)?.unwrap_or_default())
    }

    /// An optional list of integers.
    pub fn opt_ints(&mut self, name: &str) -> Result<Option<Vec<i64>>> {
        match self.take(name) {
            None => Ok(None),
            Some(Attr::Ints(v)) => Ok(Some(v.clone())),
            Some(Attr::Int(v)) => Ok(Some(vec![*v])),
            Some(other) => Err(self.error(format!(
                "attribute {name} must be a list of ints, got {other}"
            ))),
        }
    }

    /// A list of non-negative integers (empty if absent).
    pub fn usizes(&mut self, name: &str) -> Result<Vec<usize>> {
        let values = self.ints(name)?;
        values
            .iter()
            .map(|&v| usize::try_from(v))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|_| {
                self.error(format!(
                    "attribute {name} must not be negative, got {values:?}"
                ))
            })
    }

    /// A string attribute.
    pub fn string(&mut self, name: &str, default: &str) -> Result<String> {
        match self.take(name) {
            None => Ok(default.to_string()),
            Some(Attr::Str(s)) => Ok(s.clone()),
            Some(other) => {
                Err(self.error(format!("attribute {name} must be a string, got {other}")))
            }
        }
    }

    /// A string attribute from a fixed set of names.
    fn choice<T>(
        &mut self,
        name: &str,
        default: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<T> {
        let s = self.string(name, default)?;
        parse(&s).ok_or_else(|| self.error(format!("attribute {name} has unsupported value {s:?}")))
    }

    /// Fails if any attribute was not read.
    pub fn finish(self) -> Result<()> {
        let unknown: Vec<&str> = self
            .attrs
            .iter()
            .zip(&self.used)
            .filter(|(_, used)| !**used)
            .map(|((n, _), _)| n.as_str())
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(self.error(format!("unknown attribute(s) {}", unknown.join(", "))))
        }
    }
}

fn read_window(r: &mut AttrReader<'_>) -> Result<Window> {
    Ok(Window {
        auto_pad: r.choice("auto_pad", "NOTSET", AutoPad::from_name)?,
        kernel_shape: r.usizes("kernel_shape")?,
        strides: r.usizes("strides")?,
        pads: r.usizes("pads")?,
        dilations: r.usizes("dilations")?,
    })
}

fn window_attributes(w: &Window, out: &mut Vec<(&'static str, Attr)>) {
    fn ints(v: &[usize]) -> Attr {
        Attr::Ints(v.iter().map(|&x| x as i64).collect())
    }
    if w.auto_pad != AutoPad::NotSet {
        out.push(("auto_pad", Attr::Str(w.auto_pad.name().to_string())));
    }
    if !w.kernel_shape.is_empty() {
        out.push(("kernel_shape", ints(&w.kernel_shape)));
    }
    if !w.strides.is_empty() {
        out.push(("strides", ints(&w.strides)));
    }
    if !w.pads.is_empty() {
        out.push(("pads", ints(&w.pads)));
    }
    if !w.dilations.is_empty() {
        out.push(("dilations", ints(&w.dilations)));
    }
}

fn usize_list(v: &[usize]) -> Attr {
    Attr::Ints(v.iter().map(|&x| x as i64).collect())
}

macro_rules! names {
    ($ty:ident { $($variant:ident = $name:literal),* $(,)? }) => {
        impl $ty {
            /// The attribute value's name (as in ONNX).
            pub fn name(self) -> &'static str {
                match self { $($ty::$variant => $name),* }
            }
            /// Parses a name printed by `name`.
            pub fn from_name(name: &str) -> Option<$ty> {
                match name { $($name => Some($ty::$variant),)* _ => None }
            }
        }
    };
}

names!(ResizeMode { Nearest = "nearest", Linear = "linear", Cubic = "cubic" });
names!(CoordinateTransform {
    HalfPixel = "half_pixel",
    HalfPixelSymmetric = "half_pixel_symmetric",
    PytorchHalfPixel = "pytorch_half_pixel",
    AlignCorners = "align_corners",
    Asymmetric = "asymmetric",
    TfCropAndResize = "tf_crop_and_resize",
});
names!(NearestMode {
    RoundPreferFloor = "round_prefer_floor",
    RoundPreferCeil = "round_prefer_ceil",
    Floor = "floor",
    Ceil = "ceil",
});
names!(AspectRatioPolicy { Stretch = "stretch", NotLarger = "not_larger", NotSmaller = "not_smaller" });

impl Op {
    /// Every op name [`Op::from_parts`] accepts, in the text IR's spelling.
    pub const NAMES: &'static [&'static str] = &[
        "conv",
        "conv_transpose",
        "batch_norm",
        "relu",
        "leaky_relu",
        "sigmoid",
        "hard_sigmoid",
        "hard_swish",
        "tanh",
        "gelu",
        "erf",
        "exp",
        "sqrt",
        "add",
        "sub",
        "mul",
        "div",
        "pow",
        "prelu",
        "clip",
        "softmax",
        "max_pool",
        "average_pool",
        "global_average_pool",
        "global_max_pool",
        "gemm",
        "matmul",
        "flatten",
        "reshape",
        "transpose",
        "concat",
        "split",
        "slice",
        "pad",
        "resize",
        "squeeze",
        "unsqueeze",
        "reduce_mean",
        "identity",
        "dropout",
        "shape",
        "gather",
        "cast",
    ];

    /// Builds an op from its text-IR name and generic attributes, validating every
    /// attribute. `node` names the node in errors.
    pub fn from_parts(name: &str, attrs: &[(String, Attr)], node: &str) -> Result<Op> {
        let mut r = AttrReader::new(node, name, attrs);
        let op = match name {
            "conv" => Op::Conv(Conv {
                window: read_window(&mut r)?,
                group: r.usize("group", 1)?,
            }),
            "conv_transpose" => Op::ConvTranspose(ConvTranspose {
                window: read_window(&mut r)?,
                group: r.usize("group", 1)?,
                output_padding: r.usizes("output_padding")?,
                output_shape: r.usizes("output_shape")?,
            }),
            "batch_norm" => Op::BatchNorm {
                epsilon: r.float("epsilon", 1e-5)?,
            },
            "relu" => Op::Unary(Unary::Relu),
            "leaky_relu" => Op::Unary(Unary::LeakyRelu {
                alpha: r.float("alpha", 0.01)?,
            }),
            "sigmoid" => Op::Unary(Unary::Sigmoid),
            "hard_sigmoid" => Op::Unary(Unary::HardSigmoid {
                alpha: r.float("alpha", 0.2)?,
                beta: r.float("beta", 0.5)?,
            }),
            "hard_swish" => Op::Unary(Unary::HardSwish),
            "tanh" => Op::Unary(Unary::Tanh),
            "gelu" => Op::Unary(Unary::Gelu {
                tanh: r.choice("approximate", "none", |s| match s {
                    "none" => Some(false),
                    "tanh" => Some(true),
                    _ => None,
                })?,
            }),
            "erf" => Op::Unary(Unary::Erf),
            "exp" => Op::Unary(Unary::Exp),
            "sqrt" => Op::Unary(Unary::Sqrt),
            "add" => Op::Binary(Binary::Add),
            "sub" => Op::Binary(Binary::Sub),
            "mul" => Op::Binary(Binary::Mul),
            "div" => Op::Binary(Binary::Div),
            "pow" => Op::Binary(Binary::Pow),
            "prelu" => Op::Binary(Binary::PRelu),
            "clip" => Op::Clip,
            "softmax" => Op::Softmax {
                axis: r.int("axis", -1)?,
                coerce_2d: r.flag("coerce_2d", false)?,
            },
            "max_pool" | "average_pool" => {
                let pool = Pool {
                    window: read_window(&mut r)?,
                    ceil_mode: r.flag("ceil_mode", false)?,
                    count_include_pad: if name == "average_pool" {
                        r.flag("count_include_pad", false)?
                    } else {
                        false
                    },
                    storage_order: if name == "max_pool" {
                        r.int("storage_order", 0)?
                    } else {
                        0
                    },
                };
                if pool.window.kernel_shape.is_empty() {
                    return Err(Error::node(
                        node,
                        name,
                        "attribute kernel_shape is required",
                    ));
                }
                if !(0..=1).contains(&pool.storage_order) {
                    return Err(Error::node(
                        node,
                        name,
                        "attribute storage_order must be 0 or 1",
                    ));
                }
                if name == "max_pool" {
                    Op::MaxPool(pool)
                } else {
                    Op::AveragePool(pool)
                }
            }
            "global_average_pool" => Op::GlobalAveragePool,
            "global_max_pool" => Op::GlobalMaxPool,
            "gemm" => Op::Gemm {
                alpha: r.float("alpha", 1.0)?,
                beta: r.float("beta", 1.0)?,
                trans_a: r.flag("transA", false)?,
                trans_b: r.flag("transB", false)?,
            },
            "matmul" => Op::MatMul,
            "flatten" => Op::Flatten {
                axis: r.int("axis", 1)?,
            },
            "reshape" => Op::Reshape {
                allowzero: r.flag("allowzero", false)?,
            },
            "transpose" => Op::Transpose {
                perm: match r.opt_ints("perm")? {
                    None => None,
                    Some(p) => Some(
                        p.iter()
                            .map(|&x| usize::try_from(x))
                            .collect::<std::result::Result<Vec<_>, _>>()
                            .map_err(|_| {
                                Error::node(node, name, format!("perm {p:?} has a negative axis"))
                            })?,
                    ),
                },
            },
            "concat" => Op::Concat {
                axis: r
                    .opt_int("axis")?
                    .ok_or_else(|| Error::node(node, name, "attribute axis is required"))?,
            },
            "split" => Op::Split {
                axis: r.int("axis", 0)?,
                num_outputs: r
                    .opt_int("num_outputs")?
                    .map(|n| {
                        usize::try_from(n).ok().filter(|&n| n > 0).ok_or_else(|| {
                            Error::node(
                                node,
                                name,
                                format!("num_outputs must be positive, got {n}"),
                            )
                        })
                    })
                    .transpose()?,
            },
            "slice" => Op::Slice,
            "pad" => Op::Pad {
                mode: r.choice("mode", "constant", PadMode::from_name)?,
            },
            "resize" => Op::Resize(Resize {
                mode: r.choice("mode", "nearest", ResizeMode::from_name)?,
                coordinate_transformation_mode: r.choice(
                    "coordinate_transformation_mode",
                    "half_pixel",
                    CoordinateTransform::from_name,
                )?,
                nearest_mode: r.choice(
                    "nearest_mode",
                    "round_prefer_floor",
                    NearestMode::from_name,
                )?,
                cubic_coeff_a: r.float("cubic_coeff_a", -0.75)?,
                exclude_outside: r.flag("exclude_outside", false)?,
                extrapolation_value: r.float("extrapolation_value", 0.0)?,
                antialias: r.flag("antialias", false)?,
                axes: r.ints("axes")?,
                keep_aspect_ratio_policy: r.choice(
                    "keep_aspect_ratio_policy",
                    "stretch",
                    AspectRatioPolicy::from_name,
                )?,
            }),
            "squeeze" => Op::Squeeze,
            "unsqueeze" => Op::Unsqueeze,
            "reduce_mean" => Op::ReduceMean {
                keepdims: r.flag("keepdims", true)?,
                noop_with_empty_axes: r.flag("noop_with_empty_axes", false)?,
            },
            "identity" => Op::Identity,
            "dropout" => Op::Dropout,
            "shape" => Op::Shape {
                start: r.int("start", 0)?,
                end: r.opt_int("end")?,
            },
            "gather" => Op::Gather {
                axis: r.int("axis", 0)?,
            },
            "cast" => {
                let to = r.string("to", "")?;
                Op::Cast {
                    to: DType::from_name(&to)
                        .ok_or_else(|| Error::node(node, name, format!("cannot cast to {to:?}")))?,
                }
            }
            _ => {
                return Err(Error::UnsupportedOp {
                    node: node.to_string(),
                    op: name.to_string(),
                    domain: String::new(),
                    opset: 0,
                });
            }
        };
        r.finish()?;
        Ok(op)
    }

    /// The op's name in the text IR.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Conv(_) => "conv",
            Op::ConvTranspose(_) => "conv_transpose",
            Op::BatchNorm { .. } => "batch_norm",
            Op::Unary(u) => u.name(),
            Op::Binary(b) => b.name(),
            Op::Clip => "clip",
            Op::Softmax { .. } => "softmax",
            Op::MaxPool(_) => "max_pool",
            Op::AveragePool(_) => "average_pool",
            Op::GlobalAveragePool => "global_average_pool",
            Op::GlobalMaxPool => "global_max_pool",
            Op::Gemm { .. } => "gemm",
            Op::MatMul => "matmul",
            Op::Flatten { .. } => "flatten",
            Op::Reshape { .. } => "reshape",
            Op::Transpose { .. } => "transpose",
            Op::Concat { .. } => "concat",
            Op::Split { .. } => "split",
            Op::Slice => "slice",
            Op::Pad { .. } => "pad",
            Op::Resize(_) => "resize",
            Op::Squeeze => "squeeze",
            Op::Unsqueeze => "unsqueeze",
            Op::ReduceMean { .. } => "reduce_mean",
            Op::Identity => "identity",
            Op::Dropout => "dropout",
            Op::Shape { .. } => "shape",
            Op::Gather { .. } => "gather",
            Op::Cast { .. } => "cast",
        }
    }

    /// The attributes that differ from their defaults, in a fixed order; the inverse of
    /// [`Op::from_parts`].
    pub fn attributes(&self) -> Vec<(&'static str, Attr)> {
        let mut out = Vec::new();
        match self {
            Op::Conv(c) => {
                window_attributes(&c.window, &mut out);
                if c.group != 1 {
                    out.push(("group", Attr::Int(c.group as i64)));
                }
            }
            Op::ConvTranspose(c) => {
                window_attributes(&c.window, &mut out);
                if c.group != 1 {
                    out.push(("group", Attr::Int(c.group as i64)));
                }
                if !c.output_padding.is_empty() {
                    out.push(("output_padding", usize_list(&c.output_padding)));
                }
                if !c.output_shape.is_empty() {
                    out.push(("output_shape", usize_list(&c.output_shape)));
                }
            }
            Op::BatchNorm { epsilon } => {
                if *epsilon != 1e-5 {
                    out.push(("epsilon", Attr::Float(*epsilon)));
                }
            }
            Op::Unary(Unary::LeakyRelu { alpha }) => {
                if *alpha != 0.01 {
                    out.push(("alpha", Attr::Float(*alpha)));
                }
            }
            Op::Unary(Unary::HardSigmoid { alpha, beta }) => {
                if *alpha != 0.2 {
                    out.push(("alpha", Attr::Float(*alpha)));
                }
                if *beta != 0.5 {
                    out.push(("beta", Attr::Float(*beta)));
                }
            }
            Op::Unary(Unary::Gelu { tanh }) => {
                if *tanh {
                    out.push(("approximate", Attr::Str("tanh".to_string())));
                }
            }
            Op::Softmax { axis, coerce_2d } => {
                if *axis != -1 {
                    out.push(("axis", Attr::Int(*axis)));
                }
                if *coerce_2d {
                    out.push(("coerce_2d", Attr::Int(1)));
                }
            }
            Op::MaxPool(p) | Op::AveragePool(p) => {
                window_attributes(&p.window, &mut out);
                if p.ceil_mode {
                    out.push(("ceil_mode", Attr::Int(1)));
                }
                if p.count_include_pad {
                    out.push(("count_include_pad", Attr::Int(1)));
                }
                if p.storage_order != 0 {
                    out.push(("storage_order", Attr::Int(p.storage_order)));
                }
            }
            Op::Gemm {
                alpha,
                beta,
                trans_a,
                trans_b,
            } => {
                if *alpha != 1.0 {
                    out.push(("alpha", Attr::Float(*alpha)));
                }
                if *beta != 1.0 {
                    out.push(("beta", Attr::Float(*beta)));
                }
                if *trans_a {
                    out.push(("transA", Attr::Int(1)));
                }
                if *trans_b {
                    out.push(("transB", Attr::Int(1)));
                }
            }
            Op::Flatten { axis } => {
                if *axis != 1 {
                    out.push(("axis", Attr::Int(*axis)));
                }
            }
            Op::Reshape { allowzero } => {
                if *allowzero {
                    out.push(("allowzero", Attr::Int(1)));
                }
            }
            Op::Transpose { perm } => {
                if let Some(p) = perm {
                    out.push(("perm", usize_list(p)));
                }
            }
            Op::Concat { axis } => out.push(("axis", Attr::Int(*axis))),
            Op::Gather { axis } => {
                if *axis != 0 {
                    out.push(("axis", Attr::Int(*axis)));
                }
            }
            Op::Split { axis, num_outputs } => {
                if *axis != 0 {
                    out.push(("axis", Attr::Int(*axis)));
                }
                if let Some(n) = num_outputs {
                    out.push(("num_outputs", Attr::Int(*n as i64)));
                }
            }
            Op::Pad { mode } => {
                if *mode != PadMode::Constant {
                    out.push(("mode", Attr::Str(mode.name().to_string())));
                }
            }
            Op::Resize(r) => {
                let d = Resize::default();
                if r.mode != d.mode {
                    out.push(("mode", Attr::Str(r.mode.name().to_string())));
                }
                if r.coordinate_transformation_mode != d.coordinate_transformation_mode {
                    out.push((
                        "coordinate_transformation_mode",
                        Attr::Str(r.coordinate_transformation_mode.name().to_string()),
                    ));
                }
                if r.nearest_mode != d.nearest_mode {
                    out.push(("nearest_mode", Attr::Str(r.nearest_mode.name().to_string())));
                }
                if r.cubic_coeff_a != d.cubic_coeff_a {
                    out.push(("cubic_coeff_a", Attr::Float(r.cubic_coeff_a)));
                }
                if r.exclude_outside {
                    out.push(("exclude_outside", Attr::Int(1)));
                }
                if r.extrapolation_value != d.extrapolation_value {
                    out.push(("extrapolation_value", Attr::Float(r.extrapolation_value)));
                }
                if r.antialias {
                    out.push(("antialias", Attr::Int(1)));
                }
                if !r.axes.is_empty() {
                    out.push(("axes", Attr::Ints(r.axes.clone())));
                }
                if r.keep_aspect_ratio_policy != d.keep_aspect_ratio_policy {
                    out.push((
                        "keep_aspect_ratio_policy",
                        Attr::Str(r.keep_aspect_ratio_policy.name().to_string()),
                    ));
                }
            }
            Op::ReduceMean {
                keepdims,
                noop_with_empty_axes,
            } => {
                if !*keepdims {
                    out.push(("keepdims", Attr::Int(0)));
                }
                if *noop_with_empty_axes {
                    out.push(("noop_with_empty_axes", Attr::Int(1)));
                }
            }
            Op::Shape { start, end } => {
                if *start != 0 {
                    out.push(("start", Attr::Int(*start)));
                }
                if let Some(e) = end {
                    out.push(("end", Attr::Int(*e)));
                }
            }
            Op::Cast { to } => out.push(("to", Attr::Str(to.name().to_string()))),
            Op::Unary(_)
            | Op::Binary(_)
            | Op::Clip
            | Op::GlobalAveragePool
            | Op::GlobalMaxPool
            | Op::MatMul
            | Op::Slice
            | Op::Squeeze
            | Op::Unsqueeze
            | Op::Identity
            | Op::Dropout => {}
        }
        out
    }

    /// How many inputs the op takes (optional inputs included in the upper bound).
    pub fn input_arity(&self) -> RangeInclusive<usize> {
        match self {
            Op::Conv(_) | Op::ConvTranspose(_) | Op::Gemm { .. } => 2..=3,
            Op::Clip | Op::Dropout => 1..=3,
            Op::BatchNorm { .. } => 5..=5,
            Op::Binary(_) | Op::MatMul | Op::Reshape { .. } | Op::Gather { .. } | Op::Unsqueeze => {
                2..=2
            }
            Op::Concat { .. } => 1..=usize::MAX,
            Op::Split { .. } | Op::Squeeze | Op::ReduceMean { .. } => 1..=2,
            Op::Slice => 3..=5,
            Op::Pad { .. } => 2..=4,
            Op::Resize(_) => 1..=4,
            Op::Unary(_)
            | Op::Softmax { .. }
            | Op::MaxPool(_)
            | Op::AveragePool(_)
            | Op::GlobalAveragePool
            | Op::GlobalMaxPool
            | Op::Flatten { .. }
            | Op::Transpose { .. }
            | Op::Identity
            | Op::Shape { .. }
            | Op::Cast { .. } => 1..=1,
        }
    }

    /// How many outputs the op produces (optional outputs included in the upper bound).
    pub fn output_arity(&self) -> RangeInclusive<usize> {
        match self {
            Op::MaxPool(_) => 1..=2,
            Op::Split {
                num_outputs: Some(n),
                ..
            } => *n..=*n,
            Op::Split { .. } => 1..=usize::MAX,
            _ => 1..=1,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_round_trips_through_attributes() {
        for &name in Op::NAMES {
            let attrs: Vec<(String, Attr)> = match name {
                "max_pool" | "average_pool" => {
                    vec![("kernel_shape".into(), Attr::Ints(vec![2, 2]))]
                }
                "cast" => vec![("to".into(), Attr::Str("i64".into()))],
                "concat" => vec![("axis".into(), Attr::Int(1))],
                _ => vec![],
            };
            let op = Op::from_parts(name, &attrs, "n").unwrap();
            assert_eq!(op.name(), name);
            let back: Vec<(String, Attr)> = op
                .attributes()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            assert_eq!(Op::from_parts(name, &back, "n").unwrap(), op, "{name}");
        }
    }

    #[test]
    fn unknown_attribute_is_an_error_naming_the_node() {
        let err = Op::from_parts("relu", &[("alpha".into(), Attr::Float(1.0))], "r1").unwrap_err();
        assert_eq!(
            err.to_string(),
            "node r1 (relu): unknown attribute(s) alpha"
        );
    }

    #[test]
    fn float_repr_reads_back_exactly() {
        for v in [0.1f32, 1.0, -2.5e-8, 1e30, f32::MIN_POSITIVE] {
            let s = FloatRepr(v).to_string();
            assert_eq!(s.parse::<f32>().unwrap(), v, "{s}");
        }
    }
}
