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

/// Applies an `f32` activation elementwise.
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
    v.clamp(0.0, 1.0)
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

/// Applies an arithmetic op to two operands with numpy broadcasting (PRelu: the slope
/// broadcasts to `a`'s shape only).
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

/// Clamps `x` to the optional single-value bounds `min` and `max`.
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

/// Softmax along `axis` (or, with `coerce_2d`, over everything from `axis` on).
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

/// The mean over `axes` (all axes if none are given, unless `noop_with_empty_axes`).
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

/// Converts to `to`; floats become integers by truncation toward zero.
pub(super) fn cast(x: &Tensor, to: DType) -> OpResult<Tensor> {
    let data = match (x.data(), to) {
        (TensorData::F32(v), DType::I64) => TensorData::I64(
            v.iter()
                .map(|&e| f64_to_i64(f64::from(e)).ok_or_else(|| format!("cannot cast {e} to i64")))
                .collect::<OpResult<_>>()?,
        ),
        (TensorData::I64(v), DType::F32) => TensorData::F32(v.iter().map(|&e| e as f32).collect()),
        (data, _) => data.clone(),
    };
    tensor(x.shape().to_vec(), data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(shape: &[usize], values: &[f32]) -> Tensor {
        Tensor::from_f32(shape.to_vec(), values.to_vec()).unwrap()
    }

    fn i64s(shape: &[usize], values: &[i64]) -> Tensor {
        Tensor::from_i64(shape.to_vec(), values.to_vec()).unwrap()
    }

    fn assert_close(actual: &Tensor, expected: &[f32]) {
        let actual = actual.as_f32().unwrap();
        assert_eq!(actual.len(), expected.len(), "{actual:?} vs {expected:?}");
        for (a, e) in actual.iter().zip(expected) {
            let tolerance = 1e-6 * e.abs().max(1e-30);
            assert!(
                (a - e).abs() <= tolerance || (a.is_nan() && e.is_nan()),
                "{actual:?} vs {expected:?}"
            );
        }
    }

    fn relative_error(actual: f64, expected: f64) -> f64 {
        if expected == 0.0 {
            actual.abs()
        } else {
            ((actual - expected) / expected).abs()
        }
    }

    #[test]
    fn erf_and_erfc_match_reference_values() {
        // (x, erf x, erfc x) from a double-precision libm.
        let table = [
            (0.0, 0.0, 1.0),
            (1e-10, 1.1283791670955126e-10, 0.999999999887162),
            (0.1, 0.1124629160182849, 0.8875370839817152),
            (0.5, 0.5204998778130465, 0.4795001221869535),
            (1.0, 0.8427007929497149, 0.15729920705028513),
            (1.5, 0.9661051464753108, 0.033894853524689274),
            (2.0, 0.9953222650189527, 0.004677734981047265),
            (2.4999, 0.9995928300996666, 0.0004071699003334514),
            (2.5, 0.999593047982555, 0.0004069520174449589),
            (3.0, 0.9999779095030014, 2.2090496998585438e-05),
            (4.0, 0.9999999845827421, 1.541725790028002e-08),
            (5.5, 0.9999999999999927, 7.357847917974398e-15),
            (6.5, 1.0, 3.8421483271206475e-20),
            (8.0, 1.0, 1.1224297172982928e-29),
            (10.0, 1.0, 2.088487583762545e-45),
            (20.0, 1.0, 5.3958656116079005e-176),
            (26.0, 1.0, 5.663192408856143e-296),
        ];
        for (x, erf_x, erfc_x) in table {
            assert!(
                relative_error(erf(x), erf_x) < 1e-14,
                "erf({x}) = {}",
                erf(x)
            );
            assert!(relative_error(erf(-x), -erf_x) < 1e-14, "erf(-{x})");
            // Below 2.5, erfc is 1 - erf and loses a few digits to the subtraction.
            assert!(
                relative_error(erfc(x), erfc_x) < 1e-12,
                "erfc({x}) = {}",
                erfc(x)
            );
            assert!(relative_error(erfc(-x), 2.0 - erfc_x) < 1e-14, "erfc(-{x})");
        }
        assert_eq!(erf(f64::INFINITY), 1.0);
        assert_eq!(erf(f64::NEG_INFINITY), -1.0);
        assert_eq!(erfc(f64::INFINITY), 0.0);
        assert!(erf(f64::NAN).is_nan() && erfc(f64::NAN).is_nan());
    }

    #[test]
    fn activations_follow_their_definitions() {
        let x = f32s(&[5], &[-3.0, -0.5, 0.0, 0.5, 3.0]);
        let run = |op| unary(op, &x).unwrap();
        assert_close(&run(Unary::Relu), &[0.0, 0.0, 0.0, 0.5, 3.0]);
        assert_close(
            &run(Unary::LeakyRelu { alpha: 0.1 }),
            &[-0.3, -0.05, 0.0, 0.5, 3.0],
        );
        assert_close(
            &run(Unary::HardSigmoid {
                alpha: 0.2,
                beta: 0.5,
            }),
            &[0.0, 0.4, 0.5, 0.6, 1.0],
        );
        assert_close(
            &run(Unary::HardSwish),
            &[0.0, -0.5 * (2.5 / 6.0), 0.0, 0.5 * (3.5 / 6.0), 3.0],
        );
        assert_close(
            &run(Unary::Sigmoid),
            &[0.047425874, 0.37754068, 0.5, 0.62245935, 0.95257413],
        );
        assert_close(
            &run(Unary::Tanh),
            &[-0.9950547, -0.46211716, 0.0, 0.46211716, 0.9950547],
        );
        assert_close(
            &run(Unary::Gelu { tanh: false }),
            &[-0.004049694, -0.15426877, 0.0, 0.34573123, 2.9959503],
        );
        assert_close(
            &run(Unary::Gelu { tanh: true }),
            &[-0.003637392, -0.154286, 0.0, 0.345714, 2.9963627],
        );
        assert_close(
            &run(Unary::Exp),
            &[0.04978707, 0.60653067, 1.0, 1.6487213, 20.085537],
        );
        assert_close(
            &run(Unary::Sqrt),
            &[f32::NAN, f32::NAN, 0.0, 0.70710677, 1.7320508],
        );
        assert_close(
            &run(Unary::Erf),
            &[-0.9999779, -0.5204999, 0.0, 0.5204999, 0.9999779],
        );
    }

    #[test]
    fn activations_stay_finite_at_extremes() {
        let x = f32s(&[4], &[-1000.0, -30.0, 30.0, 1000.0]);
        let sigmoid = unary(Unary::Sigmoid, &x).unwrap();
        assert_eq!(sigmoid.as_f32().unwrap(), &[0.0, 9.357623e-14, 1.0, 1.0]);
        let gelu = unary(Unary::Gelu { tanh: false }, &x).unwrap();
        assert_eq!(gelu.as_f32().unwrap(), &[-0.0, -0.0, 30.0, 1000.0]);
        // gelu(-10) is tiny but representable: -10 * 0.5 * erfc(10 / sqrt 2).
        let tail = unary(Unary::Gelu { tanh: false }, &f32s(&[], &[-10.0])).unwrap();
        assert_close(&tail, &[-7.619853e-23]);
        let relu = unary(Unary::Relu, &f32s(&[1], &[f32::NAN])).unwrap();
        assert!(relu.as_f32().unwrap()[0].is_nan());
    }

    #[test]
    fn unary_rejects_integers() {
        let err = unary(Unary::Relu, &i64s(&[2], &[1, 2])).unwrap_err();
        assert_eq!(err, "relu takes f32, got i64 of shape [2]");
    }

    #[test]
    fn binary_broadcasts_both_ways() {
        let a = f32s(&[2, 1], &[1.0, 2.0]);
        let b = f32s(&[3], &[10.0, 20.0, 30.0]);
        let sum = binary(Binary::Add, &a, &b).unwrap();
        assert_eq!(sum.shape(), &[2, 3]);
        assert_close(&sum, &[11.0, 21.0, 31.0, 12.0, 22.0, 32.0]);
        let diff = binary(Binary::Sub, &b, &a).unwrap();
        assert_close(&diff, &[9.0, 19.0, 29.0, 8.0, 18.0, 28.0]);
        let scalar = binary(Binary::Mul, &f32s(&[], &[2.0]), &a).unwrap();
        assert_eq!(scalar.shape(), &[2, 1]);
        assert_close(&scalar, &[2.0, 4.0]);
        let quotient = binary(Binary::Div, &b, &f32s(&[1], &[4.0])).unwrap();
        assert_close(&quotient, &[2.5, 5.0, 7.5]);
        let err = binary(Binary::Add, &f32s(&[2], &[0.0; 2]), &b).unwrap_err();
        assert_eq!(err, "shapes [2] and [3] do not broadcast");
        let err = binary(Binary::Add, &a, &i64s(&[1], &[1])).unwrap_err();
        assert_eq!(
            err,
            "operands must have the same dtype, got f32 [2,1] and i64 [1]"
        );
    }

    #[test]
    fn integer_arithmetic_truncates_and_reports_division_by_zero() {
        let a = i64s(&[4], &[7, -7, 7, -7]);
        let b = i64s(&[4], &[2, 2, -2, -2]);
        let q = binary(Binary::Div, &a, &b).unwrap();
        assert_eq!(q.as_i64().unwrap(), &[3, -3, -3, 3]);
        let err = binary(Binary::Div, &a, &i64s(&[], &[0])).unwrap_err();
        assert_eq!(err, "integer division by zero (7 / 0)");
        let p = binary(Binary::Mul, &i64s(&[1], &[i64::MAX]), &i64s(&[1], &[2])).unwrap();
        assert_eq!(p.as_i64().unwrap(), &[-2]);
    }

    #[test]
    fn pow_keeps_the_base_dtype() {
        let base = f32s(&[3], &[1.0, 2.0, 3.0]);
        let ints = i64s(&[3], &[4, 5, 6]);
        let floats = f32s(&[3], &[4.0, 5.0, 6.0]);
        assert_close(
            &binary(Binary::Pow, &base, &floats).unwrap(),
            &[1.0, 32.0, 729.0],
        );
        assert_close(
            &binary(Binary::Pow, &base, &ints).unwrap(),
            &[1.0, 32.0, 729.0],
        );
        let int_base = i64s(&[3], &[1, 2, 3]);
        let r = binary(Binary::Pow, &int_base, &floats).unwrap();
        assert_eq!(r.as_i64().unwrap(), &[1, 32, 729]);
        let r = binary(Binary::Pow, &int_base, &ints).unwrap();
        assert_eq!(r.as_i64().unwrap(), &[1, 32, 729]);
        let r = binary(Binary::Pow, &i64s(&[3], &[2, -1, 1]), &i64s(&[1], &[-3])).unwrap();
        assert_eq!(r.as_i64().unwrap(), &[0, -1, 1]);
        assert!(binary(Binary::Pow, &i64s(&[1], &[0]), &i64s(&[1], &[-1])).is_err());
        assert!(binary(Binary::Pow, &i64s(&[1], &[-2]), &f32s(&[1], &[0.5])).is_err());
        let r = binary(Binary::Pow, &f32s(&[1], &[-8.0]), &f32s(&[1], &[1.0 / 3.0])).unwrap();
        assert!(r.as_f32().unwrap()[0].is_nan());
    }

    #[test]
    fn prelu_broadcasts_the_slope_to_x_only() {
        let x = f32s(&[2, 2], &[-1.0, 2.0, -3.0, 4.0]);
        let slope = f32s(&[2], &[0.1, 0.2]);
        let y = binary(Binary::PRelu, &x, &slope).unwrap();
        assert_close(&y, &[-0.1, 2.0, -0.3, 4.0]);
        let err = binary(Binary::PRelu, &slope, &x).unwrap_err();
        assert_eq!(
            err,
            "slope of shape [2,2] does not broadcast to x of shape [2]"
        );
    }

    #[test]
    fn clip_bounds_are_optional_and_min_over_max_gives_max() {
        let x = f32s(&[4], &[-2.0, -0.5, 0.5, 2.0]);
        let (lo, hi) = (f32s(&[], &[-1.0]), f32s(&[], &[1.0]));
        let both = clip(&x, Some(&lo), Some(&hi)).unwrap();
        assert_close(&both, &[-1.0, -0.5, 0.5, 1.0]);
        let only_max = clip(&x, None, Some(&hi)).unwrap();
        assert_close(&only_max, &[-2.0, -0.5, 0.5, 1.0]);
        assert_eq!(clip(&x, None, None).unwrap(), x);
        let inverted = clip(&x, Some(&hi), Some(&lo)).unwrap();
        assert_close(&inverted, &[-1.0; 4]);
        let ints = clip(&i64s(&[3], &[-5, 0, 5]), Some(&i64s(&[], &[-1])), None).unwrap();
        assert_eq!(ints.as_i64().unwrap(), &[-1, 0, 5]);
        let err = clip(&x, Some(&i64s(&[], &[0])), None).unwrap_err();
        assert_eq!(err, "min must be a single f32 value, got i64 of shape []");
    }

    #[test]
    fn softmax_normalizes_along_one_axis() {
        let x = f32s(&[2, 3], &[1.0, 2.0, 3.0, 1000.0, 1000.0, 1000.0]);
        let y = softmax(-1, false, &x).unwrap();
        let third = 1.0 / 3.0;
        assert_close(
            &y,
            &[0.09003057, 0.24472847, 0.66524096, third, third, third],
        );
        let columns = softmax(0, false, &f32s(&[2, 2], &[0.0, 1.0, 0.0, 3.0])).unwrap();
        assert_close(&columns, &[0.5, 0.11920292, 0.5, 0.880797]);
        // The opset 11 form flattens [1, 2, 2] at axis 1 into one row of four.
        let flat = softmax(1, true, &f32s(&[1, 2, 2], &[0.0; 4])).unwrap();
        assert_close(&flat, &[0.25; 4]);
        assert_eq!(
            softmax(2, false, &x).unwrap_err(),
            "axis 2 is out of range for rank 2"
        );
    }

    #[test]
    fn reduce_mean_handles_axes_keepdims_and_empty_axes() {
        let x = f32s(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let rows = reduce_mean(true, false, &x, Some(&Tensor::vector_i64(vec![-1]))).unwrap();
        assert_eq!(rows.shape(), &[2, 1]);
        assert_close(&rows, &[2.0, 5.0]);
        let cols = reduce_mean(false, false, &x, Some(&Tensor::vector_i64(vec![0]))).unwrap();
        assert_eq!(cols.shape(), &[3]);
        assert_close(&cols, &[2.5, 3.5, 4.5]);
        let all = reduce_mean(false, false, &x, None).unwrap();
        assert_eq!(all.shape(), &[] as &[usize]);
        assert_close(&all, &[3.5]);
        let empty_axes = Tensor::vector_i64(vec![]);
        let kept = reduce_mean(true, false, &x, Some(&empty_axes)).unwrap();
        assert_eq!(kept.shape(), &[1, 1]);
        assert_eq!(reduce_mean(true, true, &x, Some(&empty_axes)).unwrap(), x);
        let ints = reduce_mean(false, false, &i64s(&[2], &[1, 2]), None).unwrap();
        assert_eq!(ints.as_i64().unwrap(), &[1]);
        let err = reduce_mean(true, false, &x, Some(&Tensor::vector_i64(vec![0, -2])));
        assert_eq!(err.unwrap_err(), "axes [0, -2] name axis 0 twice");
    }

    #[test]
    fn cast_truncates_and_rejects_non_finite() {
        let x = f32s(&[3], &[-2.7, 0.5, 3.9]);
        assert_eq!(cast(&x, DType::I64).unwrap().as_i64().unwrap(), &[-2, 0, 3]);
        let back = cast(&i64s(&[2], &[-3, 16_777_217]), DType::F32).unwrap();
        assert_eq!(back.as_f32().unwrap(), &[-3.0, 16_777_216.0]);
        assert_eq!(cast(&x, DType::F32).unwrap(), x);
        let err = cast(&f32s(&[1], &[f32::NAN]), DType::I64).unwrap_err();
        assert_eq!(err, "cannot cast NaN to i64");
    }
}
