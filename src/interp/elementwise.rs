//! Elementwise ops (unary activations and broadcasting binary arithmetic), clip, softmax,
//! reduce_mean and cast.
//!
//! Float math runs in `f64` and rounds once to `f32` where that is cheap, so results are
//! as close to exact as `f32` allows; plain `f32` arithmetic (add, sub, mul, div) is
//! already correctly rounded. Integer arithmetic wraps on overflow, as numpy does.

use super::OpResult;
use super::layout::{
    Strided, broadcast_shape, broadcast_strides, f64_to_i64, normalize_axes, normalize_axis,
    product, read_ints, strides, tensor,
};
use crate::graph::op::{Binary, Unary};
use crate::graph::types::format_shape;
use crate::tensor::{DType, Tensor, TensorData};

pub(super) fn unary(op: Unary, x: &Tensor) -> OpResult<Tensor> {
    let values = x.as_f32().ok_or_else(|| {
        format!(
            "{} takes f32, got {} of shape {}",
            op.name(),
            x.dtype(),
            format_shape(x.shape())
        )
    })?;
    let f = |v: f32| -> f32 {
        let x = f64::from(v);
        let y = match op {
            // Written as a comparison, not `max`, so that NaN propagates.
            Unary::Relu => {
                if x < 0.0 {
                    0.0
                } else {
                    x
                }
            }
            Unary::LeakyRelu { alpha } => {
                if x < 0.0 {
                    f64::from(alpha) * x
                } else {
                    x
                }
            }
            Unary::Sigmoid => sigmoid(x),
            Unary::HardSigmoid { alpha, beta } => {
                clamp_unit(f64::from(alpha) * x + f64::from(beta))
            }
            Unary::HardSwish => x * clamp_unit(x / 6.0 + 0.5),
            Unary::Tanh => x.tanh(),
            Unary::Gelu { tanh: false } => {
                // 1 + erf(u) loses all precision for very negative u; erfc(-u) does not.
                let u = x / std::f64::consts::SQRT_2;
                let one_plus_erf = if u >= 0.0 { 1.0 + erf(u) } else { erfc(-u) };
                0.5 * x * one_plus_erf
            }
            Unary::Gelu { tanh: true } => {
                // 0.5 (1 + tanh(y)) = sigmoid(2y), which is stable for large |y|.
                let y = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
                x * sigmoid(2.0 * y)
            }
            Unary::Erf => erf(x),
            Unary::Exp => x.exp(),
            // sqrt of a negative number is NaN, as the spec asks.
            Unary::Sqrt => x.sqrt(),
        };
        y as f32
    };
    tensor(
        x.shape().to_vec(),
        TensorData::F32(values.iter().map(|&v| f(v)).collect()),
    )
}

/// `max(0, min(1, v))`, propagating NaN.
fn clamp_unit(v: f64) -> f64 {
    if v < 0.0 {
        0.0
    } else if v > 1.0 {
        1.0
    } else {
        v
    }
}

/// `1 / (1 + e^-x)`, without overflow for large `|x|`.
fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Below this, erf comes from its power series; above, erfc from its continued fraction.
const ERF_SERIES_LIMIT: f64 = 2.5;

/// The error function, accurate to a few ulps of `f64`.
fn erf(x: f64) -> f64 {
    let a = x.abs();
    let magnitude = if a.is_nan() {
        return f64::NAN;
    } else if a < ERF_SERIES_LIMIT {
        erf_series(a)
    } else if a < 6.0 {
        1.0 - erfc_fraction(a)
    } else {
        // erfc(6) is about 2e-17, below half an ulp of 1.
        1.0
    };
    magnitude.copysign(x)
}

/// The complementary error function `1 - erf(x)`, accurate in relative terms even where it
/// is tiny.
fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        f64::NAN
    } else if x < ERF_SERIES_LIMIT {
        // For x < 2.5, erfc(x) > 4e-4, so the subtraction loses under four digits.
        1.0 - erf(x)
    } else {
        erfc_fraction(x)
    }
}

/// erf(x) for `0 <= x < ERF_SERIES_LIMIT` from the series
/// `erf(x) = 2/sqrt(pi) e^(-x^2) sum_n 2^n x^(2n+1) / (1 * 3 * ... * (2n+1))`,
/// whose terms are all positive, so nothing cancels.
fn erf_series(x: f64) -> f64 {
    let x2 = x * x;
    let mut term = x;
    let mut sum = x;
    let mut n = 0.0;
    while term > sum * 1e-17 {
        n += 1.0;
        term *= 2.0 * x2 / (2.0 * n + 1.0);
        sum += term;
    }
    2.0 / std::f64::consts::PI.sqrt() * (-x2).exp() * sum
}

/// erfc(x) for `x >= ERF_SERIES_LIMIT` from the continued fraction
/// `erfc(x) = e^(-x^2) / sqrt(pi) / (x + (1/2) / (x + 1 / (x + (3/2) / (x + ...))))`,
/// evaluated with the modified Lentz method.
fn erfc_fraction(x: f64) -> f64 {
    if x > 27.0 {
        // e^(-x^2) underflows to zero.
        return 0.0;
    }
    let mut f = x;
    let mut c = x;
    let mut d = 0.0;
    for n in 1..500 {
        let a = f64::from(n) * 0.5;
        d = 1.0 / (x + a * d);
        c = x + a / c;
        let delta = c * d;
        f *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    (-x * x).exp() / (std::f64::consts::PI.sqrt() * f)
}

pub(super) fn binary(op: Binary, a: &Tensor, b: &Tensor) -> OpResult<Tensor> {
    let shape = broadcast_shape(a.shape(), b.shape())?;
    product(&shape)?;
    if op == Binary::PRelu && shape != a.shape() {
        return Err(format!(
            "slope of shape {} does not broadcast to x of shape {}",
            format_shape(b.shape()),
            format_shape(a.shape())
        ));
    }
    let data = match (a.data(), b.data(), op) {
        (TensorData::F32(x), TensorData::F32(y), _) => {
            TensorData::F32(zip(x, a.shape(), y, b.shape(), &shape, |p, q| {
                Ok(float_op(op, p, q))
            })?)
        }
        (TensorData::I64(x), TensorData::I64(y), _) => {
            TensorData::I64(zip(x, a.shape(), y, b.shape(), &shape, |p, q| {
                int_op(op, p, q)
            })?)
        }
        // Pow takes the exponent in either dtype; the result has the base's dtype.
        (TensorData::F32(x), TensorData::I64(y), Binary::Pow) => {
            TensorData::F32(zip(x, a.shape(), y, b.shape(), &shape, |p, q| {
                Ok(f64::from(p).powf(q as f64) as f32)
            })?)
        }
        (TensorData::I64(x), TensorData::F32(y), Binary::Pow) => {
            TensorData::I64(zip(x, a.shape(), y, b.shape(), &shape, |p, q| {
                let v = (p as f64).powf(f64::from(q));
                f64_to_i64(v).ok_or_else(|| format!("{p} ^ {q} = {v} is not a valid i64"))
            })?)
        }
        _ => {
            return Err(format!(
                "operands must have the same dtype, got {} {} and {} {}",
                a.dtype(),
                format_shape(a.shape()),
                b.dtype(),
                format_shape(b.shape())
            ));
        }
    };
    tensor(shape, data)
}

fn float_op(op: Binary, p: f32, q: f32) -> f32 {
    match op {
        Binary::Add => p + q,
        Binary::Sub => p - q,
        Binary::Mul => p * q,
        Binary::Div => p / q,
        Binary::Pow => (f64::from(p).powf(f64::from(q))) as f32,
        Binary::PRelu => {
            if p < 0.0 {
                q * p
            } else {
                p
            }
        }
    }
}

fn int_op(op: Binary, p: i64, q: i64) -> OpResult<i64> {
    Ok(match op {
        Binary::Add => p.wrapping_add(q),
        Binary::Sub => p.wrapping_sub(q),
        Binary::Mul => p.wrapping_mul(q),
        // Rust's integer division truncates toward zero, like C.
        Binary::Div if q == 0 => return Err(format!("integer division by zero ({p} / 0)")),
        Binary::Div => p.wrapping_div(q),
        Binary::Pow => int_pow(p, q)?,
        Binary::PRelu => {
            if p < 0 {
                q.wrapping_mul(p)
            } else {
                p
            }
        }
    })
}

/// `base ^ exponent` in wrapping integer arithmetic; a negative exponent gives the exact
/// result truncated toward zero (so 0 unless the base is 1 or -1).
fn int_pow(base: i64, exponent: i64) -> OpResult<i64> {
    if exponent < 0 {
        return match base {
            0 => Err(format!("0 raised to the negative power {exponent}")),
            1 => Ok(1),
            -1 => Ok(if exponent % 2 == 0 { 1 } else { -1 }),
            _ => Ok(0),
        };
    }
    let mut result: i64 = 1;
    let mut square = base;
    let mut e = exponent;
    while e > 0 {
        if e & 1 == 1 {
            result = result.wrapping_mul(square);
        }
        square = square.wrapping_mul(square);
        e >>= 1;
    }
    Ok(result)
}

/// Applies `f` to `a` and `b` broadcast to `shape` (their numpy broadcast).
fn zip<A: Copy, B: Copy, R>(
    a: &[A],
    a_shape: &[usize],
    b: &[B],
    b_shape: &[usize],
    shape: &[usize],
    mut f: impl FnMut(A, B) -> OpResult<R>,
) -> OpResult<Vec<R>> {
    if a_shape == b_shape {
        return a.iter().zip(b).map(|(&p, &q)| f(p, q)).collect();
    }
    let a_walk = Strided::new(shape, 0, broadcast_strides(a_shape, shape.len()));
    let b_walk = Strided::new(shape, 0, broadcast_strides(b_shape, shape.len()));
    a_walk.zip(b_walk).map(|(i, j)| f(a[i], b[j])).collect()
}

/// Checks that a clip bound, if given, is a single element of `x`'s dtype.
fn check_bound(t: Option<&Tensor>, x: &Tensor, what: &str) -> OpResult<()> {
    match t {
        Some(t) if t.dtype() != x.dtype() || t.len() != 1 => Err(format!(
            "{what} must be a single {} value, got {} of shape {}",
            x.dtype(),
            t.dtype(),
            format_shape(t.shape())
        )),
        _ => Ok(()),
    }
}

pub(super) fn clip(x: &Tensor, min: Option<&Tensor>, max: Option<&Tensor>) -> OpResult<Tensor> {
    check_bound(min, x, "min")?;
    check_bound(max, x, "max")?;
    // Raise to min first, then lower to max, so min > max gives max everywhere (numpy's
    // clip, as the spec asks). Comparisons keep NaN.
    let data = match x.data() {
        TensorData::F32(v) => {
            let first = |t: Option<&Tensor>| t.and_then(|t| t.as_f32()?.first().copied());
            let (lo, hi) = (first(min), first(max));
            TensorData::F32(v.iter().map(|&e| clamp(e, lo, hi)).collect())
        }
        TensorData::I64(v) => {
            let first = |t: Option<&Tensor>| t.and_then(|t| t.as_i64()?.first().copied());
            let (lo, hi) = (first(min), first(max));
            TensorData::I64(v.iter().map(|&e| clamp(e, lo, hi)).collect())
        }
    };
    tensor(x.shape().to_vec(), data)
}

fn clamp<T: PartialOrd>(v: T, lo: Option<T>, hi: Option<T>) -> T {
    let v = match lo {
        Some(lo) if v < lo => lo,
        _ => v,
    };
    match hi {
        Some(hi) if v > hi => hi,
        _ => v,
    }
}

pub(super) fn softmax(axis: i64, coerce_2d: bool, x: &Tensor) -> OpResult<Tensor> {
    let values = x.as_f32().ok_or_else(|| {
        format!(
            "softmax takes f32, got {} of shape {}",
            x.dtype(),
            format_shape(x.shape())
        )
    })?;
    let shape = x.shape();
    let axis = normalize_axis(axis, shape.len())?;
    // The softmax runs over `len` elements `inner` apart, for each of `outer * inner` rows.
    // The opset < 13 form flattens to 2-D first: everything from `axis` on is one row.
    let (outer, len, inner) = if coerce_2d {
        (product(&shape[..axis])?, product(&shape[axis..])?, 1)
    } else {
        (
            product(&shape[..axis])?,
            shape[axis],
            product(&shape[axis + 1..])?,
        )
    };
    let mut out = vec![0.0f32; values.len()];
    let mut exps = vec![0.0f64; len];
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| (o * len + k) * inner + i;
            // Subtracting the maximum keeps exp from overflowing.
            let max = (0..len)
                .map(|k| f64::from(values[at(k)]))
                .fold(f64::NEG_INFINITY, f64::max);
            let mut sum = 0.0;
            for (k, e) in exps.iter_mut().enumerate() {
                *e = (f64::from(values[at(k)]) - max).exp();
                sum += *e;
            }
            for (k, e) in exps.iter().enumerate() {
                out[at(k)] = (e / sum) as f32;
            }
        }
    }
    tensor(shape.to_vec(), TensorData::F32(out))
}

pub(super) fn reduce_mean(
    keepdims: bool,
    noop_with_empty_axes: bool,
    x: &Tensor,
    axes: Option<&Tensor>,
) -> OpResult<Tensor> {
    let shape = x.shape();
    let axes = match axes {
        Some(t) => normalize_axes(&read_ints(t, "axes")?, shape.len())?,
        None => Vec::new(),
    };
    let axes: Vec<usize> = if axes.is_empty() {
        if noop_with_empty_axes {
            return Ok(x.clone());
        }
        (0..shape.len()).collect()
    } else {
        axes
    };
    let kept_shape: Vec<usize> = shape
        .iter()
        .enumerate()
        .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
        .collect();
    let count = product(&axes.iter().map(|&a| shape[a]).collect::<Vec<_>>())?;

    // Walk the input in order; each element lands in the output slot that has its index
    // on the kept axes (stride 0 along reduced axes).
    let out_strides: Vec<isize> = strides(&kept_shape)
        .iter()
        .enumerate()
        .map(|(i, &s)| if axes.contains(&i) { 0 } else { s as isize })
        .collect();
    let mut sums = vec![0.0f64; product(&kept_shape)?];
    for (slot, v) in Strided::new(shape, 0, out_strides).zip(x.to_f64_vec()) {
        sums[slot] += v;
    }
    // An empty reduction gives NaN (0 / 0), as numpy's mean does.
    let means = sums.into_iter().map(|s| s / count as f64);
    let data = match x.dtype() {
        DType::F32 => TensorData::F32(means.map(|m| m as f32).collect()),
        DType::I64 => TensorData::I64(
            means
                .map(|m| f64_to_i64(m).ok_or_else(|| format!("mean {m} is not a valid i64")))
                .collect::<OpResult<_>>()?,
        ),
    };
    let out_shape = if keepdims {
        kept_shape
    } else {
        shape
            .iter()
            .enumerate()
            .filter(|(i, _)| !axes.contains(i))
            .map(|(_, &d)| d)
            .collect()
    };
    tensor(out_shape, data)
}

pub(super) fn cast(x: &Tensor, to: DType) -> OpResult<Tensor> {
    let data = match (x.data(), to) {
        (TensorData::F32(v), DType::I64) => TensorData::I64(
            v.iter()
                .map(|&e| {
                    f64_to_i64(f64::from(e))
                        .ok_or_else(|| format!("cannot cast {e} to i64"))
                })
                .collect::<OpResult<_>>()?,
        ),
        (TensorData::I64(v), DType::F32) => TensorData::F32(v.iter().map(|&e| e as f32).collect()),
        (data, _) => data.clone(),
    };
    tensor(x.shape().to_vec(), data)
}
