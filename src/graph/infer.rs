//! Shape inference: the output types of every op from its input types (and, for shape-like
//! operands such as Reshape's `shape`, their values when they are constants).
//!
//! Dimensions propagate symbolically: a symbolic batch `N` stays `N` through convolutions
//! and elementwise ops; a dimension that depends on values known only at run time is
//! [`Dim::Unknown`]. Ranks are always known, because every shape-like operand has a static
//! length.
//!
//! Broadcasting follows numpy, extended to symbols: `1` broadcasts to anything; a symbol
//! against `1` stays the symbol; a symbol or `?` against a known `k != 1` is `k` (anything
//! else would fail at run time); two different symbols, or `?` against a symbol, give `?`.
//!
//! Window geometry (convolution and pooling) comes from [`crate::graph::window`], so shape
//! inference, the interpreter and lowering agree on padding and output sizes.

use crate::error::{Error, Result};
use crate::graph::op::{AspectRatioPolicy, AutoPad, Binary, Conv, ConvTranspose, Op, Pool, Window};
use crate::graph::types::{Dim, TensorType};
use crate::graph::window::{self, Rounding};
use crate::tensor::{DType, Tensor, element_count};

/// One input of a node as shape inference sees it.
#[derive(Clone, Copy, Debug)]
pub struct Operand<'a> {
    /// Its type.
    pub ty: &'a TensorType,
    /// Its value, if it is a constant.
    pub value: Option<&'a Tensor>,
}

/// The output types of `op` applied to `inputs` (`None` for absent optional inputs), for a
/// node named `node` with `n_outputs` outputs. Checks arity, dtypes and shape compatibility.
pub fn infer(
    op: &Op,
    node: &str,
    inputs: &[Option<Operand<'_>>],
    n_outputs: usize,
) -> Result<Vec<TensorType>> {
    let error = |message: String| Error::node(node, op.name(), message);
    check_arity(op, inputs, n_outputs).map_err(error)?;
    let outputs = infer_op(op, inputs, n_outputs).map_err(error)?;
    if outputs.len() != n_outputs {
        return Err(Error::internal(format!(
            "node {node} ({}): shape inference made {} output types for {n_outputs} outputs",
            op.name(),
            outputs.len()
        )));
    }
    for ty in &outputs {
        let known: Vec<usize> = ty.shape.iter().filter_map(Dim::known).collect();
        element_count(&known)
            .map_err(|_| error(format!("output shape {ty} has too many elements")))?;
    }
    Ok(outputs)
}

/// What the op functions return: the result, or a message about the operands (the node and
/// op are added by [`infer`]).
type R<T> = std::result::Result<T, String>;

/// The largest window parameter or spatial size accepted, so that window arithmetic in
/// [`window`] cannot overflow.
const MAX_WINDOW_VALUE: usize = i32::MAX as usize;

fn check_arity(op: &Op, inputs: &[Option<Operand<'_>>], n_outputs: usize) -> R<()> {
    let input_arity = op.input_arity();
    if !input_arity.contains(&inputs.len()) {
        return Err(format!(
            "takes {} inputs, got {}",
            arity_text(&input_arity),
            inputs.len()
        ));
    }
    // Every op's required inputs come first; Concat requires all of them.
    let required = match op {
        Op::Concat { .. } => inputs.len(),
        _ => *input_arity.start(),
    };
    if let Some(i) = inputs.iter().take(required).position(Option::is_none) {
        return Err(format!("input {i} is required"));
    }
    let output_arity = op.output_arity();
    if !output_arity.contains(&n_outputs) {
        return Err(format!(
            "produces {} outputs, got {n_outputs}",
            arity_text(&output_arity)
        ));
    }
    Ok(())
}

/// An arity for messages: `2`, `2 to 3`, `at least 1`.
pub(crate) fn arity_text(range: &std::ops::RangeInclusive<usize>) -> String {
    match (*range.start(), *range.end()) {
        (a, b) if a == b => a.to_string(),
        (a, usize::MAX) => format!("at least {a}"),
        (a, b) => format!("{a} to {b}"),
    }
}

fn infer_op(op: &Op, inputs: &[Option<Operand<'_>>], n_outputs: usize) -> R<Vec<TensorType>> {
    let one = |ty: TensorType| vec![ty];
    Ok(match op {
        Op::Unary(_) => one(float_input(inputs, 0, "x")?.ty.clone()),
        Op::Binary(b) => one(binary(*b, inputs)?),
        Op::Clip => one(clip(inputs)?),
        Op::Conv(c) => one(conv(c, inputs)?),
        Op::ConvTranspose(c) => one(conv_transpose(c, inputs)?),
        Op::BatchNorm { .. } => one(batch_norm(inputs)?),
        Op::MaxPool(p) => {
            let y = pool(p, inputs)?;
            let mut outputs = vec![y.clone()];
            if n_outputs > 1 {
                outputs.push(TensorType::new(DType::I64, y.shape));
            }
            outputs
        }
        Op::AveragePool(p) => one(pool(p, inputs)?),
        Op::GlobalAveragePool | Op::GlobalMaxPool => one(global_pool(inputs)?),
        Op::Softmax { axis, .. } => {
            let x = float_input(inputs, 0, "x")?;
            normalize_axis(*axis, x.ty.rank(), "axis")?;
            one(x.ty.clone())
        }
        Op::Gemm {
            trans_a, trans_b, ..
        } => one(gemm(*trans_a, *trans_b, inputs)?),
        Op::MatMul => one(matmul(inputs)?),
        Op::Flatten { axis } => one(flatten(*axis, inputs)?),
        Op::Reshape { allowzero } => one(reshape(*allowzero, inputs)?),
        Op::Transpose { perm } => one(transpose(perm.as_deref(), inputs)?),
        Op::Concat { axis } => one(concat(*axis, inputs)?),
        Op::Split { axis, num_outputs } => split(*axis, *num_outputs, inputs, n_outputs)?,
        Op::Slice => one(slice(inputs)?),
        Op::Pad { .. } => one(pad(inputs)?),
        Op::Resize(r) => one(resize(r, inputs)?),
        Op::Squeeze => one(squeeze(inputs)?),
        Op::Unsqueeze => one(unsqueeze(inputs)?),
        Op::ReduceMean {
            keepdims,
            noop_with_empty_axes,
        } => one(reduce_mean(*keepdims, *noop_with_empty_axes, inputs)?),
        Op::Identity => one(input(inputs, 0, "x")?.ty.clone()),
        Op::Dropout => one(dropout(inputs)?),
        Op::Shape { start, end } => one(shape(*start, *end, inputs)?),
        Op::Gather { axis } => one(gather(*axis, inputs)?),
        Op::Cast { to } => one(TensorType::new(
            *to,
            input(inputs, 0, "x")?.ty.shape.clone(),
        )),
    })
}

// ---------------------------------------------------------------------------------------
// Operands

/// A required input.
fn input<'a>(inputs: &[Option<Operand<'a>>], i: usize, what: &str) -> R<Operand<'a>> {
    inputs
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| format!("input {i} ({what}) is required"))
}

/// An optional input.
fn optional<'a>(inputs: &[Option<Operand<'a>>], i: usize) -> Option<Operand<'a>> {
    inputs.get(i).copied().flatten()
}

fn expect_dtype(operand: Operand<'_>, dtype: DType, what: &str) -> R<()> {
    if operand.ty.dtype == dtype {
        Ok(())
    } else {
        Err(format!("{what} must be {dtype}, got {}", operand.ty))
    }
}

/// A required `f32` input.
fn float_input<'a>(inputs: &[Option<Operand<'a>>], i: usize, what: &str) -> R<Operand<'a>> {
    let operand = input(inputs, i, what)?;
    expect_dtype(operand, DType::F32, what)?;
    Ok(operand)
}

fn expect_rank(operand: Operand<'_>, rank: usize, what: &str) -> R<()> {
    if operand.ty.rank() == rank {
        Ok(())
    } else {
        Err(format!("{what} must have rank {rank}, got {}", operand.ty))
    }
}

fn expect_min_rank(operand: Operand<'_>, rank: usize, what: &str) -> R<()> {
    if operand.ty.rank() >= rank {
        Ok(())
    } else {
        Err(format!(
            "{what} must have rank {rank} or more, got {}",
            operand.ty
        ))
    }
}

/// A 1-D operand with a static length (a shape-like operand): its length, and its values
/// if it is a constant.
struct List<T> {
    len: usize,
    values: Option<Vec<T>>,
}

/// The static length of a 1-D (or, with `allow_scalar`, 0-D) operand.
fn static_len(operand: Operand<'_>, allow_scalar: bool, what: &str) -> R<usize> {
    match operand.ty.shape.as_slice() {
        [] if allow_scalar => Ok(1),
        [Dim::Known(n)] => Ok(*n),
        [_] => Err(format!(
            "{what} must have a static length, got {}",
            operand.ty
        )),
        _ => Err(format!("{what} must be a 1-D tensor, got {}", operand.ty)),
    }
}

/// Reads an `i64` list operand (shape, axes, starts, pads, …).
fn int_list(operand: Operand<'_>, allow_scalar: bool, what: &str) -> R<List<i64>> {
    expect_dtype(operand, DType::I64, what)?;
    let len = static_len(operand, allow_scalar, what)?;
    let values = operand.value.and_then(Tensor::as_i64).map(<[i64]>::to_vec);
    if values.as_ref().is_some_and(|v| v.len() != len) {
        return Err(format!(
            "{what} has type {} but holds {} values",
            operand.ty,
            values.map_or(0, |v| v.len())
        ));
    }
    Ok(List { len, values })
}

/// Reads an `f32` list operand (Resize's scales).
fn float_list(operand: Operand<'_>, what: &str) -> R<List<f32>> {
    expect_dtype(operand, DType::F32, what)?;
    let len = static_len(operand, false, what)?;
    let values = operand.value.and_then(Tensor::as_f32).map(<[f32]>::to_vec);
    if values.as_ref().is_some_and(|v| v.len() != len) {
        return Err(format!(
            "{what} has type {} but holds {} values",
            operand.ty,
            values.map_or(0, |v| v.len())
        ));
    }
    Ok(List { len, values })
}

/// Checks that an operand is a scalar: rank 0, or a single element of any rank.
fn expect_scalar(operand: Operand<'_>, what: &str) -> R<()> {
    if operand.ty.shape.iter().all(|d| *d == Dim::Known(1)) {
        Ok(())
    } else {
        Err(format!("{what} must be a scalar, got {}", operand.ty))
    }
}

// ---------------------------------------------------------------------------------------
// Dims and axes

fn fmt_dims(dims: &[Dim]) -> String {
    let parts: Vec<String> = dims.iter().map(Dim::to_string).collect();
    format!("[{}]", parts.join(","))
}

fn rank_i64(rank: usize) -> i64 {
    i64::try_from(rank).unwrap_or(i64::MAX)
}

/// Resolves a possibly negative axis against `rank` (valid: `-rank..rank`).
fn normalize_axis(axis: i64, rank: usize, what: &str) -> R<usize> {
    let r = rank_i64(rank);
    let a = if axis < 0 { axis + r } else { axis };
    if (0..r).contains(&a) {
        Ok(a as usize)
    } else {
        Err(format!("{what} {axis} is out of range for rank {rank}"))
    }
}

/// Resolves a list of axes against `rank`, rejecting duplicates.
fn normalize_axes(axes: &[i64], rank: usize, what: &str) -> R<Vec<usize>> {
    let mut out = Vec::with_capacity(axes.len());
    for &axis in axes {
        let a = normalize_axis(axis, rank, what)?;
        if out.contains(&a) {
            return Err(format!("{what} {axes:?} repeat axis {a}"));
        }
        out.push(a);
    }
    Ok(out)
}

/// Broadcasts two dims (numpy rules, see the module doc); `None` if they cannot broadcast.
fn broadcast_dim(a: &Dim, b: &Dim) -> Option<Dim> {
    match (a, b) {
        (Dim::Known(1), d) | (d, Dim::Known(1)) => Some(d.clone()),
        (Dim::Known(x), Dim::Known(y)) => (x == y).then_some(Dim::Known(*x)),
        (Dim::Known(k), _) | (_, Dim::Known(k)) => Some(Dim::Known(*k)),
        (Dim::Sym(x), Dim::Sym(y)) if x == y => Some(Dim::Sym(x.clone())),
        _ => Some(Dim::Unknown),
    }
}

/// Multidirectional (numpy) broadcasting of two shapes; `None` if they do not broadcast.
fn broadcast_shapes(a: &[Dim], b: &[Dim]) -> Option<Vec<Dim>> {
    let rank = a.len().max(b.len());
    let one = Dim::Known(1);
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        // Align from the right: dim `i` of the result is dim `i - (rank - len)` of each side.
        let da = (i + a.len()).checked_sub(rank).map_or(&one, |j| &a[j]);
        let db = (i + b.len()).checked_sub(rank).map_or(&one, |j| &b[j]);
        out.push(broadcast_dim(da, db)?);
    }
    Some(out)
}

/// Checks that `source` broadcasts to exactly `target` (unidirectional broadcasting, as for
/// PRelu's slope and Gemm's `c`).
fn check_unidirectional(
    target: &[Dim],
    source: &TensorType,
    target_text: &str,
    what: &str,
) -> R<()> {
    let fits = source.rank() <= target.len()
        && source
            .shape
            .iter()
            .rev()
            .zip(target.iter().rev())
            .all(|(s, t)| match (s, t) {
                (Dim::Known(1), _) => true,
                (Dim::Known(a), Dim::Known(b)) => a == b,
                _ => true,
            });
    if fits {
        Ok(())
    } else {
        Err(format!(
            "{what} {source} does not broadcast to {target_text}"
        ))
    }
}

/// Merges two dims that must be equal; `None` if they are known to differ.
fn same_dim(a: &Dim, b: &Dim) -> Option<Dim> {
    match (a, b) {
        (Dim::Known(x), Dim::Known(y)) => (x == y).then_some(Dim::Known(*x)),
        (Dim::Known(k), _) | (_, Dim::Known(k)) => Some(Dim::Known(*k)),
        (Dim::Sym(x), Dim::Sym(y)) => Some(if x == y {
            Dim::Sym(x.clone())
        } else {
            Dim::Unknown
        }),
        (Dim::Sym(s), Dim::Unknown) | (Dim::Unknown, Dim::Sym(s)) => Some(Dim::Sym(s.clone())),
        (Dim::Unknown, Dim::Unknown) => Some(Dim::Unknown),
    }
}

/// A product of dims in factored form: a known factor times symbols.
#[derive(Debug)]
struct Product {
    known: usize,
    syms: Vec<String>,
    unknown: bool,
}

impl Product {
    fn of(dims: &[Dim]) -> R<Product> {
        let mut p = Product {
            known: 1,
            syms: Vec::new(),
            unknown: false,
        };
        for d in dims {
            match d {
                Dim::Known(n) => {
                    p.known = p
                        .known
                        .checked_mul(*n)
                        .ok_or_else(|| format!("shape {} has too many elements", fmt_dims(dims)))?;
                }
                Dim::Sym(s) => p.syms.push(s.clone()),
                Dim::Unknown => p.unknown = true,
            }
        }
        p.syms.sort();
        Ok(p)
    }

    /// Removes the symbols both products share.
    fn cancel(&mut self, other: &mut Product) {
        let mut i = 0;
        while i < self.syms.len() {
            if let Some(j) = other.syms.iter().position(|s| *s == self.syms[i]) {
                other.syms.remove(j);
                self.syms.remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// The product as one dim, where that can be expressed.
    fn to_dim(&self) -> Dim {
        if self.known == 0 {
            Dim::Known(0)
        } else if self.unknown {
            Dim::Unknown
        } else {
            match self.syms.as_slice() {
                [] => Dim::Known(self.known),
                [s] if self.known == 1 => Dim::Sym(s.clone()),
                _ => Dim::Unknown,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Elementwise

fn binary(op: Binary, inputs: &[Option<Operand<'_>>]) -> R<TensorType> {
    let a = input(inputs, 0, "a")?;
    let b = input(inputs, 1, "b")?;
    let numeric = |o: Operand<'_>| matches!(o.ty.dtype, DType::F32 | DType::I64);
    if !numeric(a) || !numeric(b) {
        return Err(format!(
            "operands must be f32 or i64, got {} and {}",
            a.ty, b.ty
        ));
    }
    // Pow's exponent may have another dtype; everything else needs one dtype.
    if op != Binary::Pow && a.ty.dtype != b.ty.dtype {
        return Err(format!(
            "operands must have the same dtype, got {} and {}",
            a.ty, b.ty
        ));
    }
    if op == Binary::PRelu {
        check_unidirectional(&a.ty.shape, b.ty, &a.ty.to_string(), "slope")?;
        return Ok(a.ty.clone());
    }
    let shape = broadcast_shapes(&a.ty.shape, &b.ty.shape)
        .ok_or_else(|| format!("cannot broadcast {} with {}", a.ty, b.ty))?;
    Ok(TensorType::new(a.ty.dtype, shape))
}

fn clip(inputs: &[Option<Operand<'_>>]) -> R<TensorType> {
    let x = input(inputs, 0, "x")?;
    if !matches!(x.ty.dtype, DType::F32 | DType::I64) {
        return Err(format!("x must be f32 or i64, got {}", x.ty));
    }
    for (i, what) in [(1, "min"), (2, "max")] {
        if let Some(bound) = optional(inputs, i) {
            expect_dtype(bound, x.ty.dtype, what)?;
            expect_scalar(bound, what)?;
        }
    }
    Ok(x.ty.clone())
}

fn dropout(inputs: &[Option<Operand<'_>>]) -> R<TensorType> {
    let x = float_input(inputs, 0, "x")?;
    if let Some(ratio) = optional(inputs, 1) {
        expect_dtype(ratio, DType::F32, "ratio")?;
        expect_scalar(ratio, "ratio")?;
    }
    if let Some(training_mode) = optional(inputs, 2) {
        expect_scalar(training_mode, "training_mode")?;
    }
    Ok(x.ty.clone())
}

fn batch_norm(inputs: &[Option<Operand<'_>>]) -> R<TensorType> {
    let x = float_input(inputs, 0, "x")?;
    expect_min_rank(x, 2, "x")?;
    let channels = &x.ty.shape[1];
    for (i, what) in [(1, "scale"), (2, "bias"), (3, "mean"), (4, "var")] {
        let p = float_input(inputs, i, what)?;
        expect_rank(p, 1, what)?;
        if same_dim(&p.ty.shape[0], channels).is_none() {
            return Err(format!(
                "{what} {} does not match the {channels} channels of x {}",
                p.ty, x.ty
            ));
        }
    }
    Ok(x.ty.clone())
}

// ---------------------------------------------------------------------------------------
// Windows: convolution and pooling

/// The spatial output dims of a window over `input` dims with the given kernel (`None` where
/// the kernel size is not known).
fn window_output(
    window: &Window,
    input: &[Dim],
    kernel: &[Option<usize>],
    rounding: Rounding,
) -> R<Vec<Dim>> {
    let attrs = [
        &window.kernel_shape,
        &window.strides,
        &window.pads,
        &window.dilations,
    ];
    let known_input: Vec<usize> = input.iter().filter_map(Dim::known).collect();
    let too_large = attrs
        .iter()
        .flat_map(|a| a.iter())
        .chain(kernel.iter().flatten())
        .chain(&known_input)
        .any(|&v| v > MAX_WINDOW_VALUE);
    if too_large {
        let kernel: Vec<Dim> = kernel
            .iter()
            .map(|k| k.map_or(Dim::Unknown, Dim::Known))
            .collect();
        return Err(format!(
            "window sizes must be at most {MAX_WINDOW_VALUE}, got kernel {}, strides {:?}, \
             pads {:?}, dilations {:?} over spatial dims {}",
            fmt_dims(&kernel),
            window.strides,
            window.pads,
            window.dilations,
            fmt_dims(input)
        ));
    }
    // Where a size is not known, stand in a value that fits so that `resolve` still checks
    // the attributes; those axes get an unknown output.
    let concrete_kernel: Vec<usize> = kernel
        .iter()
        .enumerate()
        .map(|(i, k)| {
            k.or_else(|| window.kernel_shape.get(i).copied())
                .unwrap_or(1)
        })
        .collect();
    let concrete_input: Vec<usize> = input
        .iter()
        .enumerate()
        .map(|(i, d)| {
            d.known().unwrap_or_else(|| {
                let dilation = window.dilations.get(i).copied().unwrap_or(1);
                let kernel = concrete_kernel.get(i).copied().unwrap_or(1);
                window::dilated_extent(kernel, dilation)
            })
        })
        .collect();
    let resolved = window::resolve(window, &concrete_input, &concrete_kernel, rounding)?;
    let same = matches!(window.auto_pad, AutoPad::SameUpper | AutoPad::SameLower);
    Ok(input
        .iter()
        .enumerate()
        .map(|(i, d)| match d {
            // SAME padding: the output is ceil(input / stride), whatever the kernel.
            Dim::Known(_) if same => Dim::Known(resolved.output[i]),
            Dim::Known(_) if kernel[i].is_some() => Dim::Known(resolved.output[i]),
            _ if same && resolved.strides[i] == 1 => d.clone(),
            _ => Dim::Unknown,
        })
        .collect())
}

fn conv(c: &Conv, inputs: &[Option<Operand<'_>>]) -> R<TensorType> {
    let x = float_input(inputs, 0, "x")?;
    let w = float_input(inputs, 1, "w")?;
    expect_min_rank(x, 3, "x")?;
    if w.ty.rank() != x.ty.rank() {
        return Err(format!("weights {} must have the rank of x {}", w.ty, x.ty));
    }
    if c.group == 0 {
        return Err("group must be positive".to_string());
    }
    let (channels, out_channels, per_group) = (&x.ty.shape[1], &w.ty.shape[0], &w.ty.shape[1]);
    if let (Dim::Known(ch), Dim::Known(pg)) = (channels, per_group)
        && pg.checked_mul(c.group) != Some(*ch)
    {
        return Err(format!(
            "x {} has {ch} channels but weights {} with group {} take {}",
            x.ty,
            w.ty,
            c.group,
            pg.saturating_mul(c.group)
        ));
    }
    if let Dim::Known(m) = out_channels
        && m % c.group != 0
    {
        return Err(format!(
            "weights {} have {m} output channels, not a multiple of group {}",
            w.ty, c.group
        ));
    }
    if let Some(b) = optional(inputs, 2) {
        expect_dtype(b, DType::F32, "bias")?;
        expect_rank(b, 1, "bias")?;
        if same_dim(&b.ty.shape[0], out_channels).is_none() {
            return Err(format!(
                "bias {} does not match the {out_channels} output channels of weights {}",
                b.ty, w.ty
            ));
        }
    }
    let kernel: Vec<Option<usize>> = w.ty.shape[2..].iter().map(Dim::known).collect();
    let spatial = window_output(&c.window, &x.ty.shape[2..], &kernel, Rounding::Floor)
        .map_err(|m| format!("x {}, weights {}: {m}", x.ty, w.ty))?;
    let mut shape = vec![x.ty.shape[0].clone(), out_channels.clone()];
    shape.extend(spatial);
    Ok(TensorType::new(DType::F32, shape))
}

fn conv_transpose(c: &ConvTranspose, inputs: &[Option<Operand<'_>>]) -> R<TensorType> {
    let x = float_input(inputs, 0, "x")?;
    let w = float_input(inputs, 1, "w")?;
    expect_min_rank(x, 3, "x")?;
    if w.ty.rank() != x.ty.rank() {
        return Err(format!("weights {} must have the rank of x {}", w.ty, x.ty));
    }
    if c.group == 0 {
        return Err("group must be positive".to_string());
    }
    // Weights are [C, M / group, k…].
    let (channels, w_channels, per_group) = (&x.ty.shape[1], &w.ty.shape[0], &w.ty.shape[1]);
    if same_dim(channels, w_channels).is_none() {
        return Err(format!(
            "x {} has {channels} channels but weights {} take {w_channels}",
            x.ty, w.ty
        ));
    }
    if let Dim::Known(ch) = channels
        && ch % c.group != 0
    {
        return Err(format!(
            "x {} has {ch} channels, not a multiple of group {}",
            x.ty, c.group
        ));
    }
    let out_channels = match per_group {
        Dim::Known(pg) => Dim::Known(
            pg.checked_mul(c.group)
                .ok_or_else(|| format!("weights {} have too many output channels", w.ty))?,
        ),
        d if c.group == 1 => d.clone(),
        _ => Dim::Unknown,
    };
    if let Some(b) = optional(inputs, 2) {
        expect_dtype(b, DType::F32, "bias")?;
        expect_rank(b, 1, "bias")?;
        if same_dim(&b.ty.shape[0], &out_channels).is_none() {
            return Err(format!(
                "bias {} does not match the {out_channels} output channels of weights {} with group {}",
                b.ty, w.ty, c.group
            ));
        }
    }
    let spatial = conv_transpose_spatial(c, &x.ty.shape[2..], &w.ty.shape[2..])
        .map_err(|m| format!("x {}, weights {}: {m}", x.ty, w.ty))?;
    let mut shape = vec![x.ty.shape[0].clone(), out_channels];
    shape.extend(spatial);
    Ok(TensorType::new(DType::F32, shape))
}

/// The spatial output dims of a transposed convolution.
fn conv_transpose_spatial(c: &ConvTranspose, input: &[Dim], kernel: &[Dim]) -> R<Vec<Dim>> {
    let w = &c.window;
    let known_input: Vec<usize> = input.iter().filter_map(Dim::known).collect();
    let known_kernel: Vec<usize> = kernel.iter().filter_map(Dim::known).collect();
    let too_large = [
        &w.kernel_shape,
        &w.strides,
        &w.pads,
        &w.dilations,
        &c.output_padding,
        &c.output_shape,
        &known_input,
        &known_kernel,
    ]
    .iter()
    .flat_map(|v| v.iter())
    .any(|&v| v > MAX_WINDOW_VALUE);
    if too_large {
        return Err(format!(
            "window sizes must be at most {MAX_WINDOW_VALUE}, got kernel {}, strides {:?}, \
             pads {:?}, dilations {:?}, output_padding {:?}, output_shape {:?} over spatial \
             dims {}",
            fmt_dims(kernel),
            w.strides,
            w.pads,
            w.dilations,
            c.output_padding,
            c.output_shape,
            fmt_dims(input)
        ));
    }
    // Where a size is not known, stand in one that cannot make the window empty, so that
    // `resolve_transpose` still checks the attributes; those axes get an unknown output.
    let concrete_kernel: Vec<usize> = kernel
        .iter()
        .enumerate()
        .map(|(i, k)| {
            k.known()
                .or_else(|| w.kernel_shape.get(i).copied())
                .unwrap_or(1)
        })
        .collect();
    let stand_in = w.pads.iter().fold(1usize, |a, &p| a.saturating_add(p));
    let concrete_input: Vec<usize> = input
        .iter()
        .map(|d| d.known().unwrap_or(stand_in))
        .collect();
    let resolved = window::resolve_transpose(c, &concrete_input, &concrete_kernel)?;
    let same = matches!(w.auto_pad, AutoPad::SameUpper | AutoPad::SameLower);
    Ok(input
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let kernel_known = kernel[i].known().is_some();
            match d {
                // The output size is fixed by output_shape, or by SAME padding (in * stride).
                _ if !c.output_shape.is_empty() => Dim::Known(resolved.output[i]),
                Dim::Known(_) if same || kernel_known => Dim::Known(resolved.output[i]),
                _ if same && resolved.strides[i] == 1 => d.clone(),
                _ => Dim::Unknown,
            }
        })
        .collect())
}

fn pool(p: &Pool, inputs: &[Option<Operand<'_>>]) -> R<TensorType> {
    let x = float_input(inputs, 0, "x")?;
    expect_min_rank(x, 3, "x")?;
    let kernel: Vec<Option<usize>> = p.window.kernel_shape.iter().map(|&k| Some(k)).collect();
    let spatial = &x.ty.shape[2..];
    if kernel.len() != spatial.len() {
        return Err(format!(
            "kernel_shape {:?} has {} axes, x {} has {} spatial axes",
            p.window.kernel_shape,
            kernel.len(),
            x.ty,
            spatial.len()
        ));
    }
    let rounding = if p.ceil_mode {
        Rounding::Ceil
    } else {
        Rounding::Floor
    };
    let out = window_output(&p.window, spatial, &kernel, rounding)
        .map_err(|m| format!("x {}: {m}", x.ty))?;
    let mut shape = x.ty.shape[..2].to_vec();
    shape.extend(out);
    Ok(TensorType::new(DType::F32, shape))
}

fn global_pool(inputs: &[Option<Operand<'_>>]) -> R<TensorType> {
    let x = float_input(inputs, 0, "x")?;
    // A batch, a channel and at least one spatial axis, as for the other pools.
    expect_min_rank(x, 3, "x")?;
    let mut shape = x.ty.shape[..2].to_vec();
    shape.resize(x.ty.rank(), Dim::Known(1));
    Ok(TensorType::new(DType::F32, shape))
}

// ---------------------------------------------------------------------------------------
// Linear algebra

fn gemm(trans_a: bool, trans_b: bool, inputs: &[Option<Operand<'_>>]) -> R<TensorType> {
    let a = float_input(inputs, 0, "a")?;
    let b = float_input(inputs, 1, "b")?;
    expect_rank(a, 2, "a")?;
    expect_rank(b, 2, "b")?;
    let (m, ka) = if trans_a {
        (&a.ty.shape[1], &a.ty.shape[0])
    } else {
        (&a.ty.shape[0], &a.ty.shape[1])
    };
    let (kb, n) = if trans_b {
        (&b.ty.shape[1], &b.ty.shape[0])
    } else {
        (&b.ty.shape[0], &b.ty.shape[1])
    };
    if same_dim(ka, kb).is_none() {
        return Err(format!(
            "cannot multiply a {} by b {} (transA={}, transB={})",
            a.ty,
            b.ty,
            u8::from(trans_a),
            u8::from(trans_b)
        ));
    }
    let shape = vec![m.clone(), n.clone()];
    if let Some(c) = optional(inputs, 2) {
        expect_dtype(c, DType::F32, "c")?;
        let target = TensorType::new(DType::F32, shape.clone());
        check_unidirectional(&shape, c.ty, &target.to_string(), "c")?;
    }
    Ok(TensorType::new(DType::F32, shape))
}

fn matmul(inputs: &[Option<Operand<'_>>]) -> R<TensorType> {
    let a = float_input(inputs, 0, "a")?;
    let b = float_input(inputs, 1, "b")?;
    expect_min_rank(a, 1, "a")?;
    expect_min_rank(b, 1, "b")?;
    // A 1-D `a` is a row vector and a 1-D `b` a column vector; their unit dims are dropped
    // from the result.
    let (a_batch, m, ka) = match a.ty.shape.as_slice() {
        [k] => (&[][..], None, k),
        [batch @ .., m, k] => (batch, Some(m), k),
        [] => return Err(format!("a {} must have rank 1 or more", a.ty)),
    };
    let (b_batch, kb, n) = match b.ty.shape.as_slice() {
        [k] => (&[][..], k, None),
        [batch @ .., k, n] => (batch, k, Some(n)),
        [] => return Err(format!("b {} must have rank 1 or more", b.ty)),
    };
    let mismatch = || format!("cannot multiply a {} by b {}", a.ty, b.ty);
    if same_dim(ka, kb).is_none() {
        return Err(mismatch());
    }
    let mut shape = broadcast_shapes(a_batch, b_batch).ok_or_else(mismatch)?;
    shape.extend(m.cloned());
    shape.extend(n.cloned());
    Ok(TensorType::new(DType::F32, shape))
}

// ---------------------------------------------------------------------------------------
// Shape manipulation

fn flatten(axis: i64, inputs: &[Option<Operand<'_>>]) -> R<TensorType> {
    let x = input(inputs, 0, "x")?;
    let rank = x.ty.rank();
    let r = rank_i64(rank);
    let a = if axis < 0 { axis + r } else { axis };
    if !(0..=r).contains(&a) {
        return Err(format!("axis {axis} is out of range for x {}", x.ty));
    }
    let (outer, inner) = x.ty.shape.split_at(a as usize);
    Ok(TensorType::new(
        x.ty.dtype,
        vec![Product::of(outer)?.to_dim(), Product::of(inner)?.to_dim()],
    ))
}

fn reshape(allowzero: bool, inputs: &[Option<Operand<'_>>]) -> R<TensorType> {
    let x = input(inputs, 0, "x")?;
    let shape = int_list(input(inputs, 1, "shape")?, false, "shape")?;
    let Some(values) = shape.values else {
        return Ok(TensorType::new(x.ty.dtype, vec![Dim::Unknown; shape.len]));
    };
    let bad = |why: &str| format!("cannot reshape {} to {values:?}: {why}", x.ty);
    if values.iter().filter(|&&v| v == -1).count() > 1 {
        return Err(bad("more than one -1"));
    }
    if allowzero && values.contains(&0) && values.contains(&-1) {
        return Err(bad("0 and -1 together with allowzero"));
    }
    let mut dims = Vec::with_capacity(values.len());
    let mut infer_at = None;
    for (i, &v) in values.iter().enumerate() {
        dims.push(match v {
            -1 => {
                infer_at = Some(i);
                Dim::Known(1)
            }
            0 if !allowzero => {
                x.ty.shape
                    .get(i)
                    .cloned()
                    .ok_or_else(|| bad(&format!("0 at index {i} copies a dim x does not have")))?
            }
            v => Dim::Known(usize::try_from(v).map_err(|_| bad(&format!("invalid size {v}")))?),
        });
    }
    let mut total = Product::of(&x.ty.shape)?;
    let mut rest = Product::of(&dims)?;
    total.cancel(&mut rest);
    match infer_at {
        Some(i) => {
            dims[i] = if rest.known == 0 {
                return Err(bad("-1 is ambiguous when the other sizes multiply to 0"));
            } else if total.unknown || rest.unknown || !rest.syms.is_empty() {
                Dim::Unknown
            } else if total.known % rest.known != 0 {
                return Err(bad("the sizes do not divide the element count"));
            } else {
                Product {
                    known: total.known / rest.known,
                    syms: total.syms,
                    unknown: false,
                }
                .to_dim()
            };
        }
        None => {
            let comparable = !total.unknown && !rest.unknown;
            let equal = total.known == rest.known && total.syms == rest.syms;
            let zero = total.known == 0 && rest.known == 0;
            let both_fully_known = total.syms.is_empty() && rest.syms.is_empty();
            if comparable && both_fully_known && !equal && !zero {
                return Err(bad("the element counts differ"));
            }
        }
    }
    Ok(TensorType::new(x.ty.dtype, dims))
}

fn transpose(perm: Option<&[usize]>, inputs: &[Option<Operand<'_>>]) -> R<TensorType> {
    let x = input(inputs, 0, "x")?;
    let rank = x.ty.rank();
    let shape = match perm {
        None => x.ty.shape.iter().rev().cloned().collect(),
        Some(perm) => {
            let mut seen = vec![false; rank];
            let valid = perm.len() == rank
                && perm
                    .iter()
                    .all(|&p| p < rank && !std::mem::replace(&mut seen[p], true));
            if !valid {
                return Err(format!(
                    "perm {perm:?} is not a permutation of the axes of x {}",
                    x.ty
                ));
            }
            perm.iter().map(|&p| x.ty.shape[p].clone()).collect()
        }
    };
    Ok(TensorType::new(x.ty.dtype, shape))
}

fn concat(axis: i64, inputs: &[Option<Operand<'_>>]) -> R<TensorType> {
    let first = input(inputs, 0, "x")?;
    let rank = first.ty.rank();
    let axis = normalize_axis(axis, rank, "axis")?;
    let mut shape = first.ty.shape.clone();
    let mut sum = Product {
        known: 0,
        syms: Vec::new(),
        unknown: false,
    };
    for i in 0..inputs.len() {
        let x = input(inputs, i, "x")?;
        let mismatch = || {
            let types: Vec<String> = inputs.iter().flatten().map(|o| o.ty.to_string()).collect();
            format!("cannot concatenate {} along axis {axis}", types.join(", "))
        };
        if x.ty.dtype != first.ty.dtype || x.ty.rank() != rank {
            return Err(mismatch());
        }
        for (j, d) in x.ty.shape.iter().enumerate() {
            if j == axis {
                match d {
                    Dim::Known(n) => {
                        sum.known = sum.known.checked_add(*n).ok_or_else(mismatch)?;
                    }
                    Dim::Sym(s) => sum.syms.push(s.clone()),
                    Dim::Unknown => sum.unknown = true,
                }
            } else {
                shape[j] = same_dim(&shape[j], d).ok_or_else(mismatch)?;
            }
        }
    }
    shape[axis] = match (sum.unknown, sum.syms.as_slice(), sum.known) {
        (false, [], n) => Dim::Known(n),
        (false, [s], 0) => Dim::Sym(s.clone()),
        _ => Dim::Unknown,
    };
    Ok(TensorType::new(first.ty.dtype, shape))
}

fn split(
    axis: i64,
    num_outputs: Option<usize>,
    inputs: &[Option<Operand<'_>>],
    n_outputs: usize,
) -> R<Vec<TensorType>> {
    let x = input(inputs, 0, "x")?;
    let axis = normalize_axis(axis, x.ty.rank(), "axis")?;
    let dim = &x.ty.shape[axis];
    let split = optional(inputs, 1)
        .map(|s| int_list(s, false, "split"))
        .transpose()?
        .filter(|s| s.len > 0);
    let sizes: Vec<Dim> = match split {
        Some(split) => {
            if num_outputs.is_some() {
                return Err("split and num_outputs cannot both be given".to_string());
            }
            if split.len != n_outputs {
                return Err(format!(
                    "split has {} sizes for {n_outputs} outputs",
                    split.len
                ));
            }
            match split.values {
                None => vec![Dim::Unknown; n_outputs],
                Some(values) => {
                    let sizes = values
                        .iter()
                        .map(|&v| usize::try_from(v))
                        .collect::<std::result::Result<Vec<usize>, _>>()
                        .map_err(|_| format!("split {values:?} has a negative size"))?;
                    let total = sizes.iter().try_fold(0usize, |acc, &s| acc.checked_add(s));
                    if let Dim::Known(d) = dim
                        && total != Some(*d)
                    {
                        return Err(format!(
                            "split {values:?} does not add up to dim {axis} of x {}",
                            x.ty
                        ));
                    }
                    sizes.into_iter().map(Dim::Known).collect()
                }
            }
        }
        None => {
            let parts = num_outputs.unwrap_or(n_outputs);
            if parts == 0 {
                return Err("cannot split into 0 parts".to_string());
            }
            match dim {
                Dim::Known(d) if d % parts == 0 => vec![Dim::Known(d / parts); parts],
                Dim::Known(d) => {
                    // Uneven: every part but the last has ceil(d / parts); the last is smaller.
                    let chunk = d / parts + 1;
                    let last = chunk
                        .checked_mul(parts - 1)
                        .and_then(|used| d.checked_sub(used))
                        .ok_or_else(|| {
                            format!("cannot split dim {axis} of x {} into {parts} parts", x.ty)
                        })?;
                    let mut sizes = vec![Dim::Known(chunk); parts - 1];
                    sizes.push(Dim::Known(last));
                    sizes
                }
                d if parts == 1 => vec![d.clone()],
                _ => vec![Dim::Unknown; parts],
            }
        }
    };
    Ok(sizes
        .into_iter()
        .map(|size| {
            let mut shape = x.ty.shape.clone();
            shape[axis] = size;
            TensorType::new(x.ty.dtype, shape)
        })
        .collect())
}

/// The length of a slice of a `dim`-long axis (see [`crate::graph::slice::slice_range`]).
fn slice_len(dim: usize, start: i64, end: i64, step: i64) -> usize {
    crate::graph::slice::slice_range(start, end, step, dim).1
}

fn slice(inputs: &[Option<Operand<'_>>]) -> R<TensorType> {
    let x = input(inputs, 0, "x")?;
    let rank = x.ty.rank();
    let starts = int_list(input(inputs, 1, "starts")?, false, "starts")?;
    let ends = int_list(input(inputs, 2, "ends")?, false, "ends")?;
    let axes = optional(inputs, 3)
        .map(|a| int_list(a, false, "axes"))
        .transpose()?;
    let steps = optional(inputs, 4)
        .map(|s| int_list(s, false, "steps"))
        .transpose()?;
    let n = starts.len;
    for (what, len) in [
        ("ends", Some(ends.len)),
        ("axes", axes.as_ref().map(|a| a.len)),
        ("steps", steps.as_ref().map(|s| s.len)),
    ] {
        if let Some(len) = len
            && len != n
        {
            return Err(format!("starts has {n} values but {what} has {len}"));
        }
    }
    let axes = match axes {
        None => {
            if n > rank {
                return Err(format!("{n} starts for x {}", x.ty));
            }
            (0..n).collect()
        }
        Some(List { values: None, .. }) => {
            return Ok(TensorType::new(x.ty.dtype, vec![Dim::Unknown; rank]));
        }
        Some(List {
            values: Some(a), ..
        }) => normalize_axes(&a, rank, "axes")?,
    };
    let steps = match steps {
        None => Some(vec![1; n]),
        Some(s) => s.values,
    };
    if let Some(steps) = &steps
        && steps.contains(&0)
    {
        return Err(format!("steps {steps:?} must not be 0"));
    }
    let mut shape = x.ty.shape.clone();
    for (i, &axis) in axes.iter().enumerate() {
        shape[axis] = match (&x.ty.shape[axis], &starts.values, &ends.values, &steps) {
            (Dim::Known(d), Some(s), Some(e), Some(st)) => {
                Dim::Known(slice_len(*d, s[i], e[i], st[i]))
            }
            _ => Dim::Unknown,
        };
    }
    Ok(TensorType::new(x.ty.dtype, shape))
}

fn pad(inputs: &[Option<Operand<'_>>]) -> R<TensorType> {
    let x = input(inputs, 0, "x")?;
    let rank = x.ty.rank();
    let pads = int_list(input(inputs, 1, "pads")?, false, "pads")?;
    if let Some(value) = optional(inputs, 2) {
        expect_dtype(value, x.ty.dtype, "constant_value")?;
        expect_scalar(value, "constant_value")?;
    }
    let axes = match optional(inputs, 3) {
        None => Some((0..rank).collect::<Vec<_>>()),
        Some(a) => {
            let a = int_list(a, false, "axes")?;
            if pads.len != 2 * a.len {
                return Err(format!("pads has {} values for {} axes", pads.len, a.len));
            }
            a.values
                .map(|v| normalize_axes(&v, rank, "axes"))
                .transpose()?
        }
    };
    let Some(axes) = axes else {
        return Ok(TensorType::new(x.ty.dtype, vec![Dim::Unknown; rank]));
    };
    if pads.len != 2 * axes.len() {
        return Err(format!(
            "pads has {} values for x {} of rank {rank}",
            pads.len, x.ty
        ));
    }
    let mut shape = x.ty.shape.clone();
    for (i, &axis) in axes.iter().enumerate() {
        shape[axis] = match (&x.ty.shape[axis], &pads.values) {
            (d, Some(p)) if p[i] == 0 && p[i + axes.len()] == 0 => d.clone(),
            (Dim::Known(d), Some(p)) => {
                let size = i128::try_from(*d).unwrap_or(i128::MAX)
                    + i128::from(p[i])
                    + i128::from(p[i + axes.len()]);
                Dim::Known(usize::try_from(size).map_err(|_| {
                    format!(
                        "pads {p:?} give axis {axis} of x {} an invalid size {size}",
                        x.ty
                    )
                })?)
            }
            _ => Dim::Unknown,
        };
    }
    Ok(TensorType::new(x.ty.dtype, shape))
}

fn squeeze(inputs: &[Option<Operand<'_>>]) -> R<TensorType> {
    let x = input(inputs, 0, "x")?;
    let rank = x.ty.rank();
    let axes = optional(inputs, 1)
        .map(|a| int_list(a, true, "axes"))
        .transpose()?
        .filter(|a| a.len > 0);
    let Some(axes) = axes else {
        // Without axes, every dim of size 1 goes; that is only known for static dims.
        if x.ty.shape.iter().any(|d| d.known().is_none()) {
            return Err(format!(
                "squeeze without axes needs a static shape, got {}; give the axes",
                x.ty
            ));
        }
        let shape =
            x.ty.shape
                .iter()
                .filter(|d| **d != Dim::Known(1))
                .cloned()
                .collect();
        return Ok(TensorType::new(x.ty.dtype, shape));
    };
    let Some(values) = axes.values else {
        let out_rank = rank
            .checked_sub(axes.len)
            .ok_or_else(|| format!("{} axes to squeeze from x {}", axes.len, x.ty))?;
        return Ok(TensorType::new(x.ty.dtype, vec![Dim::Unknown; out_rank]));
    };
    let axes = normalize_axes(&values, rank, "axes")?;
    for &a in &axes {
        if let Dim::Known(n) = x.ty.shape[a]
            && n != 1
        {
            return Err(format!(
                "cannot squeeze axis {a} of x {}: its size is {n}",
                x.ty
            ));
        }
    }
    let shape =
        x.ty.shape
            .iter()
            .enumerate()
            .filter(|(i, _)| !axes.contains(i))
            .map(|(_, d)| d.clone())
            .collect();
    Ok(TensorType::new(x.ty.dtype, shape))
}

fn unsqueeze(inputs: &[Option<Operand<'_>>]) -> R<TensorType> {
    let x = input(inputs, 0, "x")?;
    let axes = int_list(input(inputs, 1, "axes")?, true, "axes")?;
    let out_rank =
        x.ty.rank()
            .checked_add(axes.len)
            .ok_or_else(|| format!("too many axes for x {}", x.ty))?;
    let Some(values) = axes.values else {
        return Ok(TensorType::new(x.ty.dtype, vec![Dim::Unknown; out_rank]));
    };
    let axes = normalize_axes(&values, out_rank, "axes")?;
    let mut dims = x.ty.shape.iter();
    let shape = (0..out_rank)
        .map(|i| {
            if axes.contains(&i) {
                Dim::Known(1)
            } else {
                // There are exactly `rank` positions not in `axes`.
                dims.next().cloned().unwrap_or(Dim::Unknown)
            }
        })
        .collect();
    Ok(TensorType::new(x.ty.dtype, shape))
}

fn reduce_mean(
    keepdims: bool,
    noop_with_empty_axes: bool,
    inputs: &[Option<Operand<'_>>],
) -> R<TensorType> {
    let x = float_input(inputs, 0, "x")?;
    let rank = x.ty.rank();
    let axes = optional(inputs, 1)
        .map(|a| int_list(a, true, "axes"))
        .transpose()?
        .filter(|a| a.len > 0);
    let reduced: Vec<usize> = match axes {
        None if noop_with_empty_axes => return Ok(x.ty.clone()),
        None => (0..rank).collect(),
        Some(List { values: None, len }) => {
            let out_rank = if keepdims {
                rank
            } else {
                rank.checked_sub(len)
                    .ok_or_else(|| format!("{len} axes to reduce in x {}", x.ty))?
            };
            return Ok(TensorType::new(DType::F32, vec![Dim::Unknown; out_rank]));
        }
        Some(List {
            values: Some(v), ..
        }) => normalize_axes(&v, rank, "axes")?,
    };
    let shape =
        x.ty.shape
            .iter()
            .enumerate()
            .filter_map(|(i, d)| match (reduced.contains(&i), keepdims) {
                (false, _) => Some(d.clone()),
                (true, true) => Some(Dim::Known(1)),
                (true, false) => None,
            })
            .collect();
    Ok(TensorType::new(DType::F32, shape))
}

fn shape(start: i64, end: Option<i64>, inputs: &[Option<Operand<'_>>]) -> R<TensorType> {
    let x = input(inputs, 0, "x")?;
    let r = rank_i64(x.ty.rank());
    let clamp = |v: i64| if v < 0 { v + r } else { v }.clamp(0, r);
    let (s, e) = (clamp(start), clamp(end.unwrap_or(r)));
    let len = usize::try_from((e - s).max(0)).unwrap_or(0);
    Ok(TensorType::known(DType::I64, &[len]))
}

fn gather(axis: i64, inputs: &[Option<Operand<'_>>]) -> R<TensorType> {
    let x = input(inputs, 0, "data")?;
    let indices = input(inputs, 1, "indices")?;
    expect_dtype(indices, DType::I64, "indices")?;
    let axis = normalize_axis(axis, x.ty.rank(), "axis")?;
    if let (Dim::Known(d), Some(values)) =
        (&x.ty.shape[axis], indices.value.and_then(Tensor::as_i64))
    {
        let d = rank_i64(*d);
        if let Some(bad) = values.iter().find(|&&i| i < -d || i >= d) {
            return Err(format!(
                "index {bad} is out of range for axis {axis} of data {}",
                x.ty
            ));
        }
    }
    let mut shape = x.ty.shape[..axis].to_vec();
    shape.extend(indices.ty.shape.iter().cloned());
    shape.extend(x.ty.shape[axis + 1..].iter().cloned());
    Ok(TensorType::new(x.ty.dtype, shape))
}

fn resize(r: &crate::graph::op::Resize, inputs: &[Option<Operand<'_>>]) -> R<TensorType> {
    let x = float_input(inputs, 0, "x")?;
    let rank = x.ty.rank();
    if let Some(roi) = optional(inputs, 1) {
        expect_dtype(roi, DType::F32, "roi")?;
    }
    let scales = optional(inputs, 2)
        .map(|s| float_list(s, "scales"))
        .transpose()?
        .filter(|s| s.len > 0);
    let sizes = optional(inputs, 3)
        .map(|s| int_list(s, false, "sizes"))
        .transpose()?
        .filter(|s| s.len > 0);
    let axes = if r.axes.is_empty() {
        (0..rank).collect()
    } else {
        normalize_axes(&r.axes, rank, "axes")?
    };
    let mut shape = x.ty.shape.clone();
    match (scales, sizes) {
        (Some(_), Some(_)) => return Err("give scales or sizes, not both".to_string()),
        (None, None) => return Err("scales or sizes is required".to_string()),
        (Some(scales), None) => {
            if scales.len != axes.len() {
                return Err(format!(
                    "scales has {} values for {} axes of x {}",
                    scales.len,
                    axes.len(),
                    x.ty
                ));
            }
            for (i, &axis) in axes.iter().enumerate() {
                shape[axis] = match (&x.ty.shape[axis], &scales.values) {
                    (_, Some(s)) if !(s[i] > 0.0 && s[i].is_finite()) => {
                        return Err(format!("scales {s:?} must be positive"));
                    }
                    (d, Some(s)) if s[i] == 1.0 => d.clone(),
                    (Dim::Known(d), Some(s)) => {
                        Dim::Known(scaled_size(*d as f64 * f64::from(s[i]), x.ty)?)
                    }
                    _ => Dim::Unknown,
                };
            }
        }
        (None, Some(sizes)) => {
            if sizes.len != axes.len() {
                return Err(format!(
                    "sizes has {} values for {} axes of x {}",
                    sizes.len,
                    axes.len(),
                    x.ty
                ));
            }
            let Some(values) = sizes.values else {
                for &axis in &axes {
                    shape[axis] = Dim::Unknown;
                }
                return Ok(TensorType::new(DType::F32, shape));
            };
            let sizes = values
                .iter()
                .map(|&v| usize::try_from(v))
                .collect::<std::result::Result<Vec<usize>, _>>()
                .map_err(|_| format!("sizes {values:?} must not be negative"))?;
            if r.keep_aspect_ratio_policy == AspectRatioPolicy::Stretch {
                for (&axis, &size) in axes.iter().zip(&sizes) {
                    shape[axis] = Dim::Known(size);
                }
            } else {
                let inputs: Option<Vec<usize>> =
                    axes.iter().map(|&a| x.ty.shape[a].known()).collect();
                match inputs {
                    None => {
                        for &axis in &axes {
                            shape[axis] = Dim::Unknown;
                        }
                    }
                    Some(inputs) => {
                        if inputs.contains(&0) {
                            return Err(format!(
                                "cannot keep the aspect ratio of x {}: an axis is empty",
                                x.ty
                            ));
                        }
                        let ratios = sizes
                            .iter()
                            .zip(&inputs)
                            .map(|(&s, &d)| s as f64 / d as f64);
                        let scale = if r.keep_aspect_ratio_policy == AspectRatioPolicy::NotLarger {
                            ratios.fold(f64::INFINITY, f64::min)
                        } else {
                            ratios.fold(0.0, f64::max)
                        };
                        for (&axis, &d) in axes.iter().zip(&inputs) {
                            // Round half up, as the ONNX reference does.
                            shape[axis] = Dim::Known(scaled_size(scale * d as f64 + 0.5, x.ty)?);
                        }
                    }
                }
            }
        }
    }
    Ok(TensorType::new(DType::F32, shape))
}

/// `floor(size)` as a dim size, or an error if it does not fit.
fn scaled_size(size: f64, x: &TensorType) -> R<usize> {
    let floor = size.floor();
    // 2^53: every integer below it is exact in f64.
    if !(0.0..9_007_199_254_740_992.0).contains(&floor) {
        return Err(format!("resizing x {x} gives an invalid size {size}"));
    }
    Ok(floor as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::op::{Attr, Unary};

    fn sym(s: &str) -> Dim {
        Dim::Sym(s.to_string())
    }

    fn k(n: usize) -> Dim {
        Dim::Known(n)
    }

    fn f32t(shape: Vec<Dim>) -> TensorType {
        TensorType::new(DType::F32, shape)
    }

    fn known(shape: &[usize]) -> TensorType {
        TensorType::known(DType::F32, shape)
    }

    fn op(name: &str, attrs: &[(&str, Attr)]) -> Op {
        let attrs: Vec<(String, Attr)> = attrs
            .iter()
            .map(|(n, a)| (n.to_string(), a.clone()))
            .collect();
        Op::from_parts(name, &attrs, "n").unwrap()
    }

    fn run(op: &Op, types: &[TensorType], values: &[Option<Tensor>]) -> Result<Vec<TensorType>> {
        let operands: Vec<Option<Operand<'_>>> = types
            .iter()
            .enumerate()
            .map(|(i, ty)| {
                Some(Operand {
                    ty,
                    value: values.get(i).and_then(Option::as_ref),
                })
            })
            .collect();
        infer(op, "n", &operands, 1)
    }

    fn run1(op: &Op, types: &[TensorType]) -> Result<TensorType> {
        run(op, types, &[]).map(|mut v| v.remove(0))
    }

    /// Runs `op` on `x` with constant i64 operands after it.
    fn with_consts(op: &Op, x: TensorType, consts: &[Vec<i64>]) -> Result<TensorType> {
        let mut types = vec![x];
        let mut values = vec![None];
        for c in consts {
            let t = Tensor::vector_i64(c.clone());
            types.push(TensorType::known(DType::I64, t.shape()));
            values.push(Some(t));
        }
        run(op, &types, &values).map(|mut v| v.remove(0))
    }

    fn ints(v: &[i64]) -> Attr {
        Attr::Ints(v.to_vec())
    }

    #[test]
    fn broadcasting_follows_numpy_with_symbols() {
        let add = Op::Binary(Binary::Add);
        let out = run1(&add, &[f32t(vec![sym("N"), k(3), k(1)]), known(&[4])]).unwrap();
        assert_eq!(out, f32t(vec![sym("N"), k(3), k(4)]));
        let out = run1(
            &add,
            &[f32t(vec![sym("N"), k(1)]), f32t(vec![k(1), sym("N")])],
        )
        .unwrap();
        assert_eq!(out, f32t(vec![sym("N"), sym("N")]));
        let out = run1(&add, &[f32t(vec![sym("N")]), known(&[5])]).unwrap();
        assert_eq!(out, known(&[5]));
        let out = run1(&add, &[f32t(vec![sym("N")]), f32t(vec![sym("M")])]).unwrap();
        assert_eq!(out, f32t(vec![Dim::Unknown]));
        let out = run1(&add, &[f32t(vec![Dim::Unknown]), known(&[1])]).unwrap();
        assert_eq!(out, f32t(vec![Dim::Unknown]));
        let out = run1(&add, &[known(&[]), known(&[2, 3])]).unwrap();
        assert_eq!(out, known(&[2, 3]));
        let err = run1(&add, &[known(&[3, 4]), known(&[5])]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "node n (add): cannot broadcast f32[3,4] with f32[5]"
        );
    }

    #[test]
    fn binary_dtypes() {
        let i64t = TensorType::known(DType::I64, &[2]);
        let add = Op::Binary(Binary::Add);
        assert_eq!(run1(&add, &[i64t.clone(), i64t.clone()]).unwrap(), i64t);
        assert!(run1(&add, &[known(&[2]), i64t.clone()]).is_err());
        let pow = Op::Binary(Binary::Pow);
        assert_eq!(
            run1(&pow, &[known(&[2]), i64t.clone()]).unwrap(),
            known(&[2])
        );
        assert_eq!(run1(&pow, &[i64t.clone(), known(&[2])]).unwrap(), i64t);
        let prelu = Op::Binary(Binary::PRelu);
        let x = f32t(vec![sym("N"), k(3), k(4), k(4)]);
        assert_eq!(run1(&prelu, &[x.clone(), known(&[3, 1, 1])]).unwrap(), x);
        assert!(run1(&prelu, &[known(&[3]), known(&[2, 3])]).is_err());
        assert!(run1(&Op::Unary(Unary::Relu), &[i64t]).is_err());
    }

    #[test]
    fn arity_is_checked() {
        let add = Op::Binary(Binary::Add);
        let err = run1(&add, &[known(&[2])]).unwrap_err();
        assert_eq!(err.to_string(), "node n (add): takes 2 inputs, got 1");
        let ty = known(&[2]);
        let x = Operand {
            ty: &ty,
            value: None,
        };
        let err = infer(&op("conv", &[]), "c", &[Some(x), None], 1).unwrap_err();
        assert_eq!(err.to_string(), "node c (conv): input 1 is required");
        let err = infer(&Op::Unary(Unary::Relu), "r", &[Some(x)], 2).unwrap_err();
        assert_eq!(err.to_string(), "node r (relu): produces 1 outputs, got 2");
    }

    #[test]
    fn conv_shapes_with_symbolic_batch() {
        let conv = op(
            "conv",
            &[("strides", ints(&[2, 2])), ("pads", ints(&[3, 3, 3, 3]))],
        );
        let x = f32t(vec![sym("N"), k(3), k(224), k(224)]);
        let out = run1(&conv, &[x, known(&[64, 3, 7, 7]), known(&[64])]).unwrap();
        assert_eq!(out, f32t(vec![sym("N"), k(64), k(112), k(112)]));

        // Symbolic spatial dims give unknown outputs, except SAME padding with stride 1.
        let x = f32t(vec![sym("N"), k(3), sym("H"), k(10)]);
        let out = run1(&conv, &[x.clone(), known(&[8, 3, 3, 3])]).unwrap();
        assert_eq!(out, f32t(vec![sym("N"), k(8), Dim::Unknown, k(7)]));
        let same = op("conv", &[("auto_pad", Attr::Str("SAME_UPPER".into()))]);
        let out = run1(&same, &[x, known(&[8, 3, 3, 3])]).unwrap();
        assert_eq!(out, f32t(vec![sym("N"), k(8), sym("H"), k(10)]));

        // Groups.
        let depthwise = op("conv", &[("group", Attr::Int(32))]);
        let out = run1(&depthwise, &[known(&[1, 32, 8, 8]), known(&[32, 1, 3, 3])]).unwrap();
        assert_eq!(out, known(&[1, 32, 6, 6]));
        let err = run1(&depthwise, &[known(&[1, 16, 8, 8]), known(&[32, 1, 3, 3])]).unwrap_err();
        assert!(err.to_string().contains("16 channels"), "{err}");
        let grouped = op("conv", &[("group", Attr::Int(3))]);
        assert!(run1(&grouped, &[known(&[1, 6, 8, 8]), known(&[4, 2, 3, 3])]).is_err());

        // Errors: the window does not fit; the bias does not match.
        assert!(run1(&conv, &[known(&[1, 3, 2, 2]), known(&[1, 3, 9, 9])]).is_err());
        assert!(
            run1(
                &conv,
                &[known(&[1, 3, 8, 8]), known(&[4, 3, 3, 3]), known(&[5])]
            )
            .is_err()
        );
        // Huge attributes are errors, not overflows.
        let huge = op("conv", &[("dilations", ints(&[i64::MAX, 1]))]);
        let err = run1(&huge, &[known(&[1, 3, 8, 8]), known(&[4, 3, 3, 3])]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "node n (conv): x f32[1,3,8,8], weights f32[4,3,3,3]: window sizes must be at most \
             2147483647, got kernel [3,3], strides [], pads [], dilations [9223372036854775807, 1] \
             over spatial dims [8,8]"
        );
    }

    #[test]
    fn pool_shapes() {
        let max_pool = op(
            "max_pool",
            &[
                ("kernel_shape", ints(&[3, 3])),
                ("strides", ints(&[2, 2])),
                ("pads", ints(&[1, 1, 1, 1])),
            ],
        );
        let x = f32t(vec![sym("N"), k(64), k(112), k(112)]);
        let out = run(&max_pool, std::slice::from_ref(&x), &[]).unwrap();
        assert_eq!(out, vec![f32t(vec![sym("N"), k(64), k(56), k(56)])]);
        let ty = x.clone();
        let operand = Operand {
            ty: &ty,
            value: None,
        };
        let out = infer(&max_pool, "p", &[Some(operand)], 2).unwrap();
        assert_eq!(out[1], TensorType::new(DType::I64, out[0].shape.clone()));

        let ceil = op(
            "average_pool",
            &[
                ("kernel_shape", ints(&[3, 3])),
                ("strides", ints(&[2, 2])),
                ("ceil_mode", Attr::Int(1)),
            ],
        );
        assert_eq!(
            run1(&ceil, &[known(&[1, 1, 4, 4])]).unwrap(),
            known(&[1, 1, 2, 2])
        );
        let gap = Op::GlobalAveragePool;
        assert_eq!(
            run1(&gap, &[x]).unwrap(),
            f32t(vec![sym("N"), k(64), k(1), k(1)])
        );
        let wrong_rank = op("max_pool", &[("kernel_shape", ints(&[2]))]);
        assert!(run1(&wrong_rank, &[known(&[1, 1, 4, 4])]).is_err());
    }

    #[test]
    fn gemm_and_matmul() {
        let gemm = op("gemm", &[("transB", Attr::Int(1))]);
        let out = run1(
            &gemm,
            &[
                f32t(vec![sym("N"), k(512)]),
                known(&[1000, 512]),
                known(&[1000]),
            ],
        )
        .unwrap();
        assert_eq!(out, f32t(vec![sym("N"), k(1000)]));
        assert!(run1(&gemm, &[known(&[2, 3]), known(&[4, 2])]).is_err());
        assert!(run1(&gemm, &[known(&[2, 3]), known(&[4, 3]), known(&[3])]).is_err());

        let mm = Op::MatMul;
        assert_eq!(run1(&mm, &[known(&[3]), known(&[3])]).unwrap(), known(&[]));
        assert_eq!(
            run1(&mm, &[known(&[3]), known(&[2, 3, 4])]).unwrap(),
            known(&[2, 4])
        );
        assert_eq!(
            run1(&mm, &[known(&[2, 3, 4]), known(&[4])]).unwrap(),
            known(&[2, 3])
        );
        assert_eq!(
            run1(&mm, &[known(&[5, 1, 3, 4]), known(&[6, 4, 2])]).unwrap(),
            known(&[5, 6, 3, 2])
        );
        assert!(run1(&mm, &[known(&[3, 4]), known(&[3, 4])]).is_err());
    }

    #[test]
    fn reshape_with_zero_and_minus_one() {
        let reshape = op("reshape", &[]);
        let x = known(&[2, 3, 4]);
        assert_eq!(
            with_consts(&reshape, x.clone(), &[vec![0, -1]]).unwrap(),
            known(&[2, 12])
        );
        assert_eq!(
            with_consts(&reshape, x.clone(), &[vec![-1, 2, 2]]).unwrap(),
            known(&[6, 2, 2])
        );
        assert!(with_consts(&reshape, x.clone(), &[vec![5, -1]]).is_err());
        assert!(with_consts(&reshape, x.clone(), &[vec![-1, -1]]).is_err());
        assert!(with_consts(&reshape, x.clone(), &[vec![4, 4]]).is_err());
        assert!(with_consts(&reshape, x.clone(), &[vec![0, 0, 0, 0]]).is_err());
        // Symbolic batch through a flattening reshape.
        let x = f32t(vec![sym("N"), k(512), k(1), k(1)]);
        assert_eq!(
            with_consts(&reshape, x.clone(), &[vec![0, -1]]).unwrap(),
            f32t(vec![sym("N"), k(512)])
        );
        assert_eq!(
            with_consts(&reshape, x.clone(), &[vec![-1, 512]]).unwrap(),
            f32t(vec![sym("N"), k(512)])
        );
        assert_eq!(
            with_consts(&reshape, x.clone(), &[vec![-1, 256]]).unwrap(),
            f32t(vec![Dim::Unknown, k(256)])
        );
        // allowzero keeps a literal 0.
        let allowzero = op("reshape", &[("allowzero", Attr::Int(1))]);
        assert_eq!(
            with_consts(&allowzero, known(&[0, 3, 4]), &[vec![3, 4, 0]]).unwrap(),
            known(&[3, 4, 0])
        );
        // A non-constant shape gives unknown dims of the right rank.
        let shape = TensorType::known(DType::I64, &[3]);
        assert_eq!(
            run1(&reshape, &[x, shape]).unwrap(),
            f32t(vec![Dim::Unknown; 3])
        );
    }

    #[test]
    fn slice_shapes() {
        let slice = Op::Slice;
        let x = known(&[20, 10, 5]);
        let s = |consts: &[Vec<i64>]| with_consts(&slice, x.clone(), consts).unwrap();
        assert_eq!(
            s(&[vec![0, 0], vec![3, 10], vec![0, 1], vec![1, 1]]),
            known(&[3, 10, 5])
        );
        assert_eq!(s(&[vec![0], vec![-1]]), known(&[19, 10, 5]));
        assert_eq!(s(&[vec![1000], vec![1000], vec![1]]), known(&[20, 0, 5]));
        assert_eq!(
            s(&[vec![0], vec![i64::MAX], vec![1], vec![3]]),
            known(&[20, 4, 5])
        );
        assert_eq!(
            s(&[
                vec![20, 10, 4],
                vec![0, 0, 1],
                vec![0, 1, 2],
                vec![-1, -3, -2]
            ]),
            known(&[19, 3, 2])
        );
        assert_eq!(
            s(&[vec![-1], vec![i64::MIN], vec![0], vec![-1]]),
            known(&[20, 10, 5])
        );
        assert_eq!(s(&[vec![0], vec![3], vec![-1]]), known(&[20, 10, 3]));
        assert!(with_consts(&slice, x.clone(), &[vec![0], vec![3], vec![3]]).is_err());
        assert!(with_consts(&slice, x.clone(), &[vec![0], vec![3], vec![0], vec![0]]).is_err());
        assert!(with_consts(&slice, x.clone(), &[vec![0], vec![3, 4]]).is_err());
        // A symbolic dim that is sliced becomes unknown; one that is not stays.
        let xs = f32t(vec![sym("N"), k(10)]);
        assert_eq!(
            with_consts(&slice, xs.clone(), &[vec![2], vec![8], vec![1]]).unwrap(),
            f32t(vec![sym("N"), k(6)])
        );
        assert_eq!(
            with_consts(&slice, xs, &[vec![2], vec![8], vec![0]]).unwrap(),
            f32t(vec![Dim::Unknown, k(10)])
        );
    }

    #[test]
    fn shape_ops() {
        let x = f32t(vec![sym("N"), k(3), k(4), k(5)]);
        let flatten = op("flatten", &[]);
        assert_eq!(
            run1(&flatten, std::slice::from_ref(&x)).unwrap(),
            f32t(vec![sym("N"), k(60)])
        );
        let flatten0 = op("flatten", &[("axis", Attr::Int(0))]);
        assert_eq!(run1(&flatten0, &[known(&[2, 3])]).unwrap(), known(&[1, 6]));
        let flatten_neg = op("flatten", &[("axis", Attr::Int(-4))]);
        assert_eq!(
            run1(&flatten_neg, std::slice::from_ref(&x)).unwrap(),
            f32t(vec![k(1), Dim::Unknown])
        );
        let bad = op("flatten", &[("axis", Attr::Int(5))]);
        assert!(run1(&bad, std::slice::from_ref(&x)).is_err());

        let transpose = op("transpose", &[("perm", ints(&[0, 2, 3, 1]))]);
        assert_eq!(
            run1(&transpose, std::slice::from_ref(&x)).unwrap(),
            f32t(vec![sym("N"), k(4), k(5), k(3)])
        );
        let bad = op("transpose", &[("perm", ints(&[0, 0, 1, 2]))]);
        assert!(run1(&bad, std::slice::from_ref(&x)).is_err());

        let concat = op("concat", &[("axis", Attr::Int(1))]);
        let y = f32t(vec![sym("N"), k(2), k(4), k(5)]);
        assert_eq!(
            run1(&concat, &[x.clone(), y.clone()]).unwrap(),
            f32t(vec![sym("N"), k(5), k(4), k(5)])
        );
        assert!(run1(&concat, &[x.clone(), known(&[1, 2, 4, 6])]).is_err());

        let shape = op("shape", &[("start", Attr::Int(-3))]);
        assert_eq!(
            run1(&shape, std::slice::from_ref(&x)).unwrap(),
            TensorType::known(DType::I64, &[3])
        );

        let gather = op("gather", &[("axis", Attr::Int(1))]);
        let idx = TensorType::known(DType::I64, &[2, 2]);
        assert_eq!(
            run1(&gather, &[x.clone(), idx]).unwrap(),
            f32t(vec![sym("N"), k(2), k(2), k(4), k(5)])
        );
        let gather0 = op("gather", &[]);
        assert!(with_consts(&gather0, known(&[3]), &[vec![3]]).is_err());

        let unsqueeze = op("unsqueeze", &[]);
        assert_eq!(
            with_consts(&unsqueeze, known(&[3, 4]), &[vec![-1, 0]]).unwrap(),
            known(&[1, 3, 4, 1])
        );
        let squeeze = op("squeeze", &[]);
        assert_eq!(
            with_consts(&squeeze, f32t(vec![sym("N"), k(1), k(4)]), &[vec![1]]).unwrap(),
            f32t(vec![sym("N"), k(4)])
        );
        assert!(with_consts(&squeeze, known(&[2, 3]), &[vec![0]]).is_err());
        assert_eq!(run1(&squeeze, &[known(&[1, 3, 1])]).unwrap(), known(&[3]));
        assert!(run1(&squeeze, &[f32t(vec![sym("N"), k(1)])]).is_err());

        let reduce = op("reduce_mean", &[("keepdims", Attr::Int(0))]);
        assert_eq!(
            with_consts(&reduce, x.clone(), &[vec![2, -1]]).unwrap(),
            f32t(vec![sym("N"), k(3)])
        );
        assert_eq!(run1(&reduce, std::slice::from_ref(&x)).unwrap(), known(&[]));
        let cast = op("cast", &[("to", Attr::Str("i64".into()))]);
        assert_eq!(
            run1(&cast, std::slice::from_ref(&x)).unwrap().dtype,
            DType::I64
        );
    }

    #[test]
    fn split_and_pad() {
        let operand_ty = known(&[7]);
        let operand = Operand {
            ty: &operand_ty,
            value: None,
        };
        let split = op("split", &[("num_outputs", Attr::Int(4))]);
        let out = infer(&split, "s", &[Some(operand)], 4).unwrap();
        let sizes: Vec<TensorType> = [2, 2, 2, 1].iter().map(|&n| known(&[n])).collect();
        assert_eq!(out, sizes);
        let plain = op("split", &[]);
        let out = infer(&plain, "s", &[Some(operand)], 1).unwrap();
        assert_eq!(out, vec![known(&[7])]);
        let split_const = Tensor::vector_i64(vec![3, 4]);
        let split_ty = TensorType::known(DType::I64, &[2]);
        let with = Operand {
            ty: &split_ty,
            value: Some(&split_const),
        };
        let out = infer(&plain, "s", &[Some(operand), Some(with)], 2).unwrap();
        assert_eq!(out, vec![known(&[3]), known(&[4])]);
        assert!(infer(&plain, "s", &[Some(operand), Some(with)], 3).is_err());

        let pad = op("pad", &[]);
        assert_eq!(
            with_consts(&pad, known(&[2, 3]), &[vec![1, 0, 1, -1]]).unwrap(),
            known(&[4, 2])
        );
        assert_eq!(
            with_consts(&pad, f32t(vec![sym("N"), k(3)]), &[vec![0, 1, 0, 1]]).unwrap(),
            f32t(vec![sym("N"), k(5)])
        );
        assert!(with_consts(&pad, known(&[2, 3]), &[vec![0, -4, 0, 0]]).is_err());
        assert!(with_consts(&pad, known(&[2, 3]), &[vec![1, 1]]).is_err());
    }

    #[test]
    fn resize_shapes() {
        let resize = op("resize", &[]);
        let x = f32t(vec![sym("N"), k(3), k(4), k(5)]);
        let scales = Tensor::from_f32(vec![4], vec![1.0, 1.0, 2.0, 1.5]).unwrap();
        let scales_ty = known(&[4]);
        let empty = known(&[0]);
        let out = run(
            &resize,
            &[x.clone(), empty, scales_ty],
            &[None, None, Some(scales)],
        )
        .unwrap();
        assert_eq!(out, vec![f32t(vec![sym("N"), k(3), k(8), k(7)])]);

        let axes = op("resize", &[("axes", ints(&[3, 2]))]);
        let sizes = Tensor::vector_i64(vec![10, 6]);
        let sizes_ty = TensorType::known(DType::I64, &[2]);
        let ops = [
            Some(Operand {
                ty: &x,
                value: None,
            }),
            None,
            None,
            Some(Operand {
                ty: &sizes_ty,
                value: Some(&sizes),
            }),
        ];
        let out = infer(&axes, "r", &ops, 1).unwrap();
        assert_eq!(out, vec![f32t(vec![sym("N"), k(3), k(6), k(10)])]);

        let not_larger = op(
            "resize",
            &[("keep_aspect_ratio_policy", Attr::Str("not_larger".into()))],
        );
        let xk = known(&[1, 1, 4, 4]);
        let sizes = Tensor::vector_i64(vec![1, 1, 7, 8]);
        let sizes_ty = TensorType::known(DType::I64, &[4]);
        let ops = [
            Some(Operand {
                ty: &xk,
                value: None,
            }),
            None,
            None,
            Some(Operand {
                ty: &sizes_ty,
                value: Some(&sizes),
            }),
        ];
        // scale = min(1, 1, 7/4, 2) = 1: every axis keeps its size.
        let out = infer(&not_larger, "r", &ops, 1).unwrap();
        assert_eq!(out, vec![known(&[1, 1, 4, 4])]);
        assert!(infer(&resize, "r", &ops[..1], 1).is_err());
    }

    #[test]
    fn conv_transpose_shapes() {
        let ct = op("conv_transpose", &[("strides", ints(&[3, 2]))]);
        let out = run1(&ct, &[known(&[1, 1, 3, 3]), known(&[1, 2, 3, 3])]).unwrap();
        assert_eq!(out, known(&[1, 2, 9, 7]));
        let pads = op(
            "conv_transpose",
            &[("strides", ints(&[3, 2])), ("pads", ints(&[1, 2, 1, 2]))],
        );
        let out = run1(&pads, &[known(&[1, 1, 3, 3]), known(&[1, 2, 3, 3])]).unwrap();
        assert_eq!(out, known(&[1, 2, 7, 3]));
        let group = op("conv_transpose", &[("group", Attr::Int(2))]);
        let out = run1(&group, &[known(&[1, 2, 3, 3]), known(&[2, 3, 3, 3])]).unwrap();
        assert_eq!(out, known(&[1, 6, 5, 5]));
    }

    #[test]
    fn too_many_elements_is_an_error() {
        let x = known(&[usize::MAX / 2, 4]);
        let err = run1(&Op::Unary(Unary::Relu), &[x]).unwrap_err();
        assert!(err.to_string().contains("too many elements"), "{err}");
    }

    #[test]
    fn never_panics_on_odd_inputs() {
        let dims = [k(0), k(1), k(3), k(usize::MAX), sym("N"), Dim::Unknown];
        let mut types = vec![known(&[])];
        for a in &dims {
            types.push(f32t(vec![a.clone()]));
            for b in &dims {
                types.push(f32t(vec![k(1), a.clone(), b.clone()]));
                types.push(f32t(vec![k(2), k(3), a.clone(), b.clone()]));
            }
        }
        let odd = [i64::MIN, -5, -1, 0, 1, 2, 7, i64::MAX];
        let mut consts: Vec<Tensor> = vec![Tensor::vector_i64(vec![])];
        for &a in &odd {
            consts.push(Tensor::vector_i64(vec![a]));
            for &b in &odd {
                consts.push(Tensor::vector_i64(vec![a, b, 1, -1]));
                consts.push(Tensor::vector_i64(vec![b, a]));
            }
        }
        consts.push(Tensor::from_f32(vec![2], vec![f32::NAN, 1e30]).unwrap());
        consts.push(Tensor::from_f32(vec![4], vec![1.0, 1.0, 0.5, 1e-30]).unwrap());
        let const_types: Vec<TensorType> = consts
            .iter()
            .map(|t| TensorType::known(t.dtype(), t.shape()))
            .collect();
        let big = ints(&[1 << 40, 1 << 40]);
        let mut ops: Vec<Op> = Op::NAMES
            .iter()
            .map(|&name| {
                let attrs: Vec<(&str, Attr)> = match name {
                    "max_pool" | "average_pool" => vec![("kernel_shape", ints(&[2, 2]))],
                    "cast" => vec![("to", Attr::Str("i64".into()))],
                    "concat" => vec![("axis", Attr::Int(-1))],
                    _ => vec![],
                };
                op(name, &attrs)
            })
            .collect();
        ops.push(op(
            "conv",
            &[("strides", big.clone()), ("group", Attr::Int(3))],
        ));
        ops.push(op(
            "max_pool",
            &[("kernel_shape", big.clone()), ("ceil_mode", Attr::Int(1))],
        ));
        ops.push(op(
            "conv_transpose",
            &[("pads", ints(&[9, 9, 9, 9])), ("strides", big)],
        ));
        ops.push(op(
            "split",
            &[("num_outputs", Attr::Int(3)), ("axis", Attr::Int(-1))],
        ));
        ops.push(op("gather", &[("axis", Attr::Int(i64::MIN))]));
        ops.push(op("flatten", &[("axis", Attr::Int(i64::MAX))]));
        for op in &ops {
            for x in &types {
                for (ct, cv) in const_types.iter().zip(&consts) {
                    let c = Some(Operand {
                        ty: ct,
                        value: Some(cv),
                    });
                    let xo = Some(Operand { ty: x, value: None });
                    let n_in = *op.input_arity().start();
                    for n_outputs in 0..3 {
                        for shape in [
                            vec![xo, c, c, c, c],
                            vec![xo, xo, c, c, c],
                            vec![xo, None, c, c],
                            vec![xo, None, None, c],
                        ] {
                            let len = n_in.max(1).min(shape.len());
                            for l in [len, shape.len()] {
                                let _ = infer(op, "n", &shape[..l], n_outputs);
                            }
                        }
                    }
                }
            }
        }
    }
}
