//! Inline vectorised approximations of the math functions Cranelift lacks.
//!
//! Each function emits Cranelift IR for `f32` or `f32x4` operands (the type of `x`) and
//! returns the result value. The code is branch-free: every lane computes every piece and
//! compare-and-select picks the right one, so the scalar and vector forms run the same
//! arithmetic and give bit-identical results.
//!
//! Accuracy, measured by the tests below against `f64` references over the whole `f32` range:
//! `exp`, `ln`, `tanh`, `sigmoid` and `erf` within 2e-6 relative or 1e-7 absolute (in practice
//! a few ulps), `pow` within 1e-5 relative where the result is a normal number. NaN, the
//! infinities, signed zeros and denormals follow Rust's (C's) `f32` functions.
//!
//! The building blocks:
//! - `exp`: `n = round(x·log2 e)` by the 1.5·2²³ trick, `r = x − n·ln 2` with a two-constant
//!   (Cody–Waite) split of `ln 2`, `e^r = 1 + r + r²·Q(r)`, then `2^n` applied in two steps
//!   through the exponent bits so that results down in the denormals round once.
//! - `ln`: `x = 2^k·m` with `m ∈ [√½, √2)`, `f = m − 1`, `s = f/(2+f)` and
//!   `ln(1+f) = f − f²/2 + s·(f²/2 + R(s²))`; `pow` keeps the sum as a hi/lo pair.
//! - `tanh`: odd polynomial below 0.625, `1 − 2/(e^{2|x|} + 1)` above.
//! - `erf`: odd polynomial below 1.25, a polynomial in `|x| − 2.585` up to 3.92, 1 beyond.
//!
//! The polynomial coefficients are near-minimax Chebyshev fits (mpmath `chebyfit`, 40 digits)
//! rounded to `f32`; the small-`|x|` `erf` piece is a relative-error minimax fit (Lawson's
//! algorithm) with its leading coefficient pinned to `2/√π`.
//!
//! Any operand type other than `f32` and `f32x4` is a caller bug; the Cranelift verifier
//! rejects the function it ends up in.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{Endianness, InstBuilder, MemFlagsData, Type, Value, types};
use cranelift_frontend::FunctionBuilder;

/// `log2(e)`.
const LOG2E: f32 = std::f32::consts::LOG2_E;
/// High part of `ln 2`, 0.693359375: 9 significant bits, so `n·LN2_HI` is exact for
/// `|n| < 2^15`.
const LN2_HI: f32 = f32::from_bits(0x3f31_8000);
/// `ln 2 − LN2_HI`.
const LN2_LO: f32 = -2.121_944_4e-4;
/// `1.5·2²³`: adding it rounds an `f32` of magnitude below 2²² to an integer, which then sits
/// in the low mantissa bits.
const ROUND_MAGIC: f32 = 12_582_912.0;
/// `2²³`: every `f32` at least this large is an integer.
const TWO_POW_23: f32 = 8_388_608.0;
/// Above this `exp` overflows (`e^89 > f32::MAX`); inputs are clamped here.
const EXP_MAX_ARG: f32 = 89.0;
/// Below this `exp` rounds to zero (`e^-104 < 2^-150`); inputs are clamped here.
const EXP_MIN_ARG: f32 = -104.0;

/// `(e^r − 1 − r) / r²` on `|r| ≤ ln2/2`, highest degree first.
const EXP_Q: [f32; 5] = [
    0.001_392_619_8,
    0.008_363_19,
    0.041_666_556,
    0.166_665_76,
    0.5,
];
/// `(2·atanh(s)/s − 2) / s²` as a polynomial in `z = s²`, `z ≤ (3 − 2√2)²`.
const LN_P: [f32; 3] = [0.295_834_72, 0.399_887_03, 0.666_666_87];
/// `(tanh(x)/x − 1) / x²` as a polynomial in `u = x²`, `|x| ≤ 0.625`.
const TANH_P: [f32; 5] = [
    -0.006_096_714,
    0.020_997_18,
    -0.053_850_908,
    0.133_327_7,
    -0.333_333_28,
];
/// Below this `|x|`, `tanh` uses the odd polynomial.
const TANH_SMALL: f32 = 0.625;
/// `erf(x)/x` as a polynomial in `u = x²`, `|x| ≤ 1.25`.
const ERF_SMALL: [f32; 7] = [
    6.703_96e-5,
    -7.674_247_6e-4,
    0.005_156_697_2,
    -0.026_846_284,
    0.112_839_065,
    -0.376_127_57,
    std::f32::consts::FRAC_2_SQRT_PI,
];
/// Below this `|x|`, `erf` uses [`ERF_SMALL`].
const ERF_SPLIT: f32 = 1.25;
/// Centre of the second `erf` piece.
const ERF_MID: f32 = 2.585;
/// `erf(ERF_MID + t)` for `|x| ∈ [1.25, 3.92]`, highest degree first.
const ERF_LARGE: [f32; 13] = [
    -8.816_253e-6,
    1.123_974_8e-5,
    7.564_733e-5,
    -2.168_785_3e-4,
    9.804_610_5e-5,
    6.937_455_6e-4,
    -0.002_436_864,
    0.004_763_305_7,
    -0.006_312_883_5,
    0.005_830_718_7,
    -0.003_654_814_8,
    0.001_413_618_4,
    0.999_743_6,
];
/// From here on `erf(|x|)` rounds to 1 in `f32`.
const ERF_ONE: f32 = 3.92;

/// `e^x`.
pub fn exp(b: &mut FunctionBuilder<'_>, x: Value) -> Value {
    let mut e = Emit::new(b, x);
    e.exp_parts(x, None)
}

/// `ln x` (natural logarithm; `ln 0 = −∞`, `ln` of a negative number is NaN).
pub fn ln(b: &mut FunctionBuilder<'_>, x: Value) -> Value {
    let mut e = Emit::new(b, x);
    let (hi, lo) = e.ln_parts(x);
    let mut r = e.add(hi, lo);
    let zero = e.f(0.0);
    let is_zero = e.fcmp(FloatCC::Equal, x, zero);
    let neg_inf = e.f(f32::NEG_INFINITY);
    r = e.select(is_zero, neg_inf, r);
    let is_neg = e.fcmp(FloatCC::LessThan, x, zero);
    let nan = e.f(f32::NAN);
    r = e.select(is_neg, nan, r);
    // +∞ and NaN map to themselves.
    let inf = e.f(f32::INFINITY);
    let is_inf = e.fcmp(FloatCC::Equal, x, inf);
    let is_nan = e.fcmp(FloatCC::Unordered, x, x);
    let passthrough = e.or(is_inf, is_nan);
    e.select(passthrough, x, r)
}

/// `tanh x`.
pub fn tanh(b: &mut FunctionBuilder<'_>, x: Value) -> Value {
    let mut e = Emit::new(b, x);
    let ax = e.abs(x);
    // Small |x|: |x| + |x|·u·P(u), u = x², relatively accurate down to the denormals.
    let u = e.mul(ax, ax);
    let p = e.poly(u, &TANH_P);
    let up = e.mul(u, p);
    let small = e.fma(ax, up, ax);
    // Large |x|: 1 − 2/(e^{2|x|} + 1); e^{2|x|} = ∞ gives exactly 1. NaN takes this path.
    let two = e.f(2.0);
    let ax2 = e.mul(ax, two);
    let ex = e.exp_parts(ax2, None);
    let one = e.f(1.0);
    let den = e.add(ex, one);
    let q = e.div(two, den);
    let large = e.sub(one, q);
    let limit = e.f(TANH_SMALL);
    let is_small = e.fcmp(FloatCC::LessThan, ax, limit);
    let r = e.select(is_small, small, large);
    e.copy_sign(r, x)
}

/// `1 / (1 + e^-x)`.
pub fn sigmoid(b: &mut FunctionBuilder<'_>, x: Value) -> Value {
    let mut e = Emit::new(b, x);
    // t = e^-|x|; sigmoid = 1/(1+t) for x ≥ 0 and t/(1+t) for x < 0, both relatively accurate.
    let ax = e.abs(x);
    let nax = e.neg(ax);
    let t = e.exp_parts(nax, None);
    let one = e.f(1.0);
    let den = e.add(one, t);
    let zero = e.f(0.0);
    let is_neg = e.fcmp(FloatCC::LessThan, x, zero);
    let num = e.select(is_neg, t, one);
    e.div(num, den)
}

/// The error function.
pub fn erf(b: &mut FunctionBuilder<'_>, x: Value) -> Value {
    let mut e = Emit::new(b, x);
    let ax = e.abs(x);
    // |x| < 1.25: |x|·P(x²).
    let u = e.mul(ax, ax);
    let p = e.poly(u, &ERF_SMALL);
    let small = e.mul(ax, p);
    // 1.25 ≤ |x| < 3.92: polynomial in |x| − 2.585. NaN takes this path.
    let mid = e.f(ERF_MID);
    let t = e.sub(ax, mid);
    let large = e.poly(t, &ERF_LARGE);
    let split = e.f(ERF_SPLIT);
    let is_small = e.fcmp(FloatCC::LessThan, ax, split);
    let mut r = e.select(is_small, small, large);
    let one_at = e.f(ERF_ONE);
    let is_one = e.fcmp(FloatCC::GreaterThanOrEqual, ax, one_at);
    let one = e.f(1.0);
    r = e.select(is_one, one, r);
    e.copy_sign(r, x)
}

/// `x ^ y` (ONNX Pow on floats: the C `powf` rules for signs, zeros, infinities and NaN).
pub fn pow(b: &mut FunctionBuilder<'_>, x: Value, y: Value) -> Value {
    let mut e = Emit::new(b, x);
    let ax = e.abs(x);
    let ay = e.abs(y);

    // Finite, nonzero |x|: e^(y·ln|x|) with y·ln|x| carried as hi + lo.
    let (l_hi, l_lo) = e.ln_parts(ax);
    let p_hi = e.mul(y, l_hi);
    let neg_p_hi = e.neg(p_hi);
    let p_err = e.fma(y, l_hi, neg_p_hi);
    let p_lo = e.fma(y, l_lo, p_err);
    let mut r = e.exp_parts(p_hi, Some(p_lo));

    // Sign rules: y odd integer → sign of x; negative x with non-integer y → NaN.
    let y_int = e.is_integer(ay);
    let half = e.f(0.5);
    let ay_half = e.mul(ay, half);
    let y_half_int = e.is_integer(ay_half);
    let y_not_even = e.not(y_half_int);
    let y_odd = e.and(y_int, y_not_even);
    let zero = e.f(0.0);
    let x_neg = e.fcmp(FloatCC::LessThan, x, zero);
    let y_frac = e.not(y_int);
    let neg_frac = e.and(x_neg, y_frac);
    let nan = e.f(f32::NAN);
    r = e.select(neg_frac, nan, r);

    // x = ±0, x = ±∞ or y = ±∞: the result is +0 or +∞ (before the sign).
    let inf = e.f(f32::INFINITY);
    let x_zero = e.fcmp(FloatCC::Equal, ax, zero);
    let x_inf = e.fcmp(FloatCC::Equal, ax, inf);
    let y_inf = e.fcmp(FloatCC::Equal, ay, inf);
    let x_edge = e.or(x_zero, x_inf);
    let edge = e.or(x_edge, y_inf);
    let one = e.f(1.0);
    let x_gt_one = e.fcmp(FloatCC::GreaterThan, ax, one);
    let y_pos = e.fcmp(FloatCC::GreaterThan, y, zero);
    let tends_to_zero = e.xor(x_gt_one, y_pos);
    let edge_value = e.select(tends_to_zero, zero, inf);
    r = e.select(edge, edge_value, r);

    let x_bits = e.bits(x);
    let izero = e.i(0);
    let x_sign = e.icmp(IntCC::SignedLessThan, x_bits, izero);
    let flip = e.and(x_sign, y_odd);
    let neg_r = e.neg(r);
    r = e.select(flip, neg_r, r);

    // NaN in, NaN out, except for the ones below.
    let any_nan = e.fcmp(FloatCC::Unordered, x, y);
    r = e.select(any_nan, nan, r);

    // x^±0 = 1, 1^y = 1, (−1)^±∞ = 1.
    let y_zero = e.fcmp(FloatCC::Equal, y, zero);
    let x_one = e.fcmp(FloatCC::Equal, x, one);
    let ax_one = e.fcmp(FloatCC::Equal, ax, one);
    let minus_one_inf = e.and(ax_one, y_inf);
    let ones = e.or(y_zero, x_one);
    let ones = e.or(ones, minus_one_inf);
    e.select(ones, one, r)
}

/// Emits arithmetic on one float type (`f32` or `f32x4`) and its integer twin.
///
/// Masks are what `fcmp`/`icmp` return: `i8` 0/1 for scalars, all-ones lanes for vectors.
struct Emit<'a, 'f> {
    b: &'a mut FunctionBuilder<'f>,
    /// The float type, `f32` or `f32x4`.
    fty: Type,
    /// The integer type of the same shape, `i32` or `i32x4`.
    ity: Type,
}

impl<'a, 'f> Emit<'a, 'f> {
    /// An emitter for the type of `x`.
    fn new(b: &'a mut FunctionBuilder<'f>, x: Value) -> Self {
        let fty = b.func.dfg.value_type(x);
        Self {
            b,
            fty,
            ity: fty.as_int(),
        }
    }

    fn vector(&self) -> bool {
        self.fty.is_vector()
    }

    /// A float constant of the working type.
    fn f(&mut self, c: f32) -> Value {
        let s = self.b.ins().f32const(c);
        if self.vector() {
            self.b.ins().splat(self.fty, s)
        } else {
            s
        }
    }

    /// An integer constant of the integer twin type.
    fn i(&mut self, c: i32) -> Value {
        let s = self.b.ins().iconst(types::I32, i64::from(c));
        if self.vector() {
            self.b.ins().splat(self.ity, s)
        } else {
            s
        }
    }

    fn add(&mut self, a: Value, c: Value) -> Value {
        self.b.ins().fadd(a, c)
    }

    fn sub(&mut self, a: Value, c: Value) -> Value {
        self.b.ins().fsub(a, c)
    }

    fn mul(&mut self, a: Value, c: Value) -> Value {
        self.b.ins().fmul(a, c)
    }

    fn div(&mut self, a: Value, c: Value) -> Value {
        self.b.ins().fdiv(a, c)
    }

    /// `a·c + d` with one rounding.
    fn fma(&mut self, a: Value, c: Value, d: Value) -> Value {
        self.b.ins().fma(a, c, d)
    }

    fn abs(&mut self, a: Value) -> Value {
        self.b.ins().fabs(a)
    }

    fn neg(&mut self, a: Value) -> Value {
        self.b.ins().fneg(a)
    }

    /// Horner evaluation of `coeffs` (highest degree first) at `x`.
    fn poly(&mut self, x: Value, coeffs: &[f32]) -> Value {
        let Some((&first, rest)) = coeffs.split_first() else {
            return self.f(0.0);
        };
        let mut acc = self.f(first);
        for &c in rest {
            let cv = self.f(c);
            acc = self.fma(acc, x, cv);
        }
        acc
    }

    fn flags() -> MemFlagsData {
        MemFlagsData::new().with_endianness(Endianness::Little)
    }

    /// The bits of a float value as the integer twin type.
    fn bits(&mut self, v: Value) -> Value {
        self.b.ins().bitcast(self.ity, Self::flags(), v)
    }

    /// The float whose bits are `v`.
    fn float_of_bits(&mut self, v: Value) -> Value {
        self.b.ins().bitcast(self.fty, Self::flags(), v)
    }

    fn iadd(&mut self, a: Value, c: Value) -> Value {
        self.b.ins().iadd(a, c)
    }

    fn isub(&mut self, a: Value, c: Value) -> Value {
        self.b.ins().isub(a, c)
    }

    fn shl(&mut self, a: Value, n: i64) -> Value {
        let n = self.b.ins().iconst(types::I32, n);
        self.b.ins().ishl(a, n)
    }

    fn ushr(&mut self, a: Value, n: i64) -> Value {
        let n = self.b.ins().iconst(types::I32, n);
        self.b.ins().ushr(a, n)
    }

    fn sshr(&mut self, a: Value, n: i64) -> Value {
        let n = self.b.ins().iconst(types::I32, n);
        self.b.ins().sshr(a, n)
    }

    /// A float comparison mask.
    fn fcmp(&mut self, cc: FloatCC, a: Value, c: Value) -> Value {
        self.b.ins().fcmp(cc, a, c)
    }

    /// An integer comparison mask.
    fn icmp(&mut self, cc: IntCC, a: Value, c: Value) -> Value {
        self.b.ins().icmp(cc, a, c)
    }

    fn and(&mut self, a: Value, c: Value) -> Value {
        self.b.ins().band(a, c)
    }

    fn or(&mut self, a: Value, c: Value) -> Value {
        self.b.ins().bor(a, c)
    }

    fn xor(&mut self, a: Value, c: Value) -> Value {
        self.b.ins().bxor(a, c)
    }

    /// Logical not of a mask (a scalar mask is 0/1, so `bnot` would not do).
    fn not(&mut self, m: Value) -> Value {
        if self.vector() {
            self.b.ins().bnot(m)
        } else {
            self.b.ins().bxor_imm_u(m, 1)
        }
    }

    /// `m ? a : c`, lane by lane.
    fn select(&mut self, m: Value, a: Value, c: Value) -> Value {
        if self.vector() {
            let ty = self.b.func.dfg.value_type(a);
            let m = if self.b.func.dfg.value_type(m) == ty {
                m
            } else {
                self.b.ins().bitcast(ty, Self::flags(), m)
            };
            self.b.ins().bitselect(m, a, c)
        } else {
            self.b.ins().select(m, a, c)
        }
    }

    /// `|r|` with the sign bit of `s` (`r` must be non-negative).
    fn copy_sign(&mut self, r: Value, s: Value) -> Value {
        let rb = self.bits(r);
        let sb = self.bits(s);
        let sign_mask = self.i(i32::MIN);
        let sign = self.b.ins().band(sb, sign_mask);
        let out = self.b.ins().bor(rb, sign);
        self.float_of_bits(out)
    }

    /// Mask of the lanes where `v` (non-negative or NaN) is an integer; ∞ counts as one.
    fn is_integer(&mut self, v: Value) -> Value {
        let big = self.f(TWO_POW_23);
        let is_big = self.fcmp(FloatCC::GreaterThanOrEqual, v, big);
        // For v < 2²³, v + 2²³ rounds v to an integer; subtracting 2²³ again is exact.
        let shifted = self.add(v, big);
        let rounded = self.sub(shifted, big);
        let same = self.fcmp(FloatCC::Equal, rounded, v);
        self.or(is_big, same)
    }

    /// `e^(x + lo)`, where `lo` is a small correction to `x` (the low part of a hi/lo pair).
    fn exp_parts(&mut self, x: Value, lo: Option<Value>) -> Value {
        // Clamp to where the result is neither ∞ nor 0 for sure; NaN passes through.
        let max = self.f(EXP_MAX_ARG);
        let min = self.f(EXP_MIN_ARG);
        // (Written as `max < x` and `x < min` so that x86-64 lowers the selects to one
        // `minps`/`maxps` each, which keep a NaN `x`.)
        let over = self.fcmp(FloatCC::LessThan, max, x);
        let under = self.fcmp(FloatCC::LessThan, x, min);
        let xc = self.select(over, max, x);
        let xc = self.select(under, min, xc);

        // n = round(x·log2 e), read back both as a float and as an integer.
        let log2e = self.f(LOG2E);
        let magic = self.f(ROUND_MAGIC);
        let kf = self.fma(xc, log2e, magic);
        let nf = self.sub(kf, magic);
        let k_bits = self.bits(kf);
        let magic_bits = self.i(ROUND_MAGIC.to_bits().cast_signed());
        let n = self.isub(k_bits, magic_bits);

        // r = x − n·ln 2, |r| ≤ ln2/2 (plus the low part, whose lanes are dropped when clamped
        // so that an infinite high part cannot make a NaN).
        let neg_ln2_hi = self.f(-LN2_HI);
        let neg_ln2_lo = self.f(-LN2_LO);
        let r = self.fma(nf, neg_ln2_hi, xc);
        let mut r = self.fma(nf, neg_ln2_lo, r);
        if let Some(lo) = lo {
            let clamped = self.or(over, under);
            let zero = self.f(0.0);
            let lo = self.select(clamped, zero, lo);
            r = self.add(r, lo);
        }

        // e^r = 1 + r + r²·Q(r).
        let q = self.poly(r, &EXP_Q);
        let r2 = self.mul(r, r);
        let p = self.fma(r2, q, r);
        let one = self.f(1.0);
        let p = self.add(p, one);

        // Scale by 2^n = 2^n1 · 2^n2 with n1, n2 ∈ [−75, 64], each a normal power of two.
        let n1 = self.sshr(n, 1);
        let n2 = self.isub(n, n1);
        let s1 = self.pow2(n1);
        let s2 = self.pow2(n2);
        let p = self.mul(p, s1);
        self.mul(p, s2)
    }

    /// `2^n` for an integer `n ∈ [−126, 127]`.
    fn pow2(&mut self, n: Value) -> Value {
        let bias = self.i(127);
        let biased = self.iadd(n, bias);
        let bits = self.shl(biased, 23);
        self.float_of_bits(bits)
    }

    /// `ln x ≈ hi + lo` for finite `x > 0` (denormals included); other inputs give garbage.
    fn ln_parts(&mut self, x: Value) -> (Value, Value) {
        // Scale denormals up by 2²³ and remember it in the exponent.
        let min_pos = self.f(f32::MIN_POSITIVE);
        let is_sub = self.fcmp(FloatCC::LessThan, x, min_pos);
        let scale = self.f(TWO_POW_23);
        let scaled = self.mul(x, scale);
        let xs = self.select(is_sub, scaled, x);
        let minus_23 = self.f(-23.0);
        let zero = self.f(0.0);
        let k_adjust = self.select(is_sub, minus_23, zero);

        // x = 2^k·m with m ∈ [√½, √2): offset the bits so the exponent field rounds at √2.
        const SQRT_HALF_BITS: i32 = 0x3f35_04f3;
        const ONE_BITS: i32 = 0x3f80_0000;
        let xb = self.bits(xs);
        let offset = self.i(ONE_BITS - SQRT_HALF_BITS);
        let ix = self.iadd(xb, offset);
        let biased = self.ushr(ix, 23);
        let bias = self.i(127);
        let k = self.isub(biased, bias);
        let mant_mask = self.i(0x007f_ffff);
        let mant = self.and(ix, mant_mask);
        let sqrt_half = self.i(SQRT_HALF_BITS);
        let m_bits = self.iadd(mant, sqrt_half);
        let m = self.float_of_bits(m_bits);

        // ln(1+f) = f − f²/2 + s·(f²/2 + R), s = f/(2+f), R = s²·P(s²); f is exact.
        let one = self.f(1.0);
        let f = self.sub(m, one);
        let two = self.f(2.0);
        let den = self.add(f, two);
        let s = self.div(f, den);
        let z = self.mul(s, s);
        let pz = self.poly(z, &LN_P);
        let r = self.mul(z, pz);
        let half = self.f(0.5);
        let ff = self.mul(f, f);
        let hfsq = self.mul(ff, half);
        let inner = self.add(hfsq, r);
        let neg_hfsq = self.neg(hfsq);
        let c = self.fma(s, inner, neg_hfsq);

        // k·ln2 + f + c as hi + lo: k·LN2_HI is exact, both sums are Fast2Sums (the larger
        // operand comes first: |k·ln2| ≥ 0.69 > |f| unless k = 0, and |c| < |f|/2 + …).
        let kf = self.b.ins().fcvt_from_sint(self.fty, k);
        let kf = self.add(kf, k_adjust);
        let ln2_hi = self.f(LN2_HI);
        let a = self.mul(kf, ln2_hi);
        let hi1 = self.add(a, f);
        let hi1_a = self.sub(hi1, a);
        let lo1 = self.sub(f, hi1_a);
        let hi = self.add(hi1, c);
        let hi_hi1 = self.sub(hi, hi1);
        let lo2 = self.sub(c, hi_hi1);
        let lo12 = self.add(lo1, lo2);
        let ln2_lo = self.f(LN2_LO);
        let lo = self.fma(kf, ln2_lo, lo12);
        (hi, lo)
    }
}

#[cfg(test)]
mod tests {
    //! Each function is JIT-compiled in its `f32` and `f32x4` forms (host ISA, `opt_level`
    //! speed, so FMA when the host has it) and compared with an `f64` reference.

    use super::*;
    use cranelift_codegen::ir::AbiParam;
    use cranelift_codegen::settings::{self, Configurable};
    use cranelift_frontend::FunctionBuilderContext;
    use cranelift_jit::{JITBuilder, JITModule};
    use cranelift_module::{Linkage, Module, default_libcall_names};

    type Unary = fn(&mut FunctionBuilder<'_>, Value) -> Value;
    type Binary = fn(&mut FunctionBuilder<'_>, Value, Value) -> Value;
    /// `out[..lanes] = f(x[..lanes], y[..lanes])`.
    type Kernel = unsafe extern "C" fn(*const f32, *const f32, *mut f32);

    #[derive(Clone, Copy)]
    enum Body {
        Unary(Unary),
        Binary(Binary),
    }

    /// The scalar and vector forms of one function, and the module that owns their code.
    struct Compiled {
        _module: JITModule,
        scalar: Kernel,
        vector: Kernel,
        /// Machine-code bytes of the scalar and vector forms.
        code_bytes: [usize; 2],
    }

    /// Compiles for the host with every feature it has (FMA, AVX, SSE4.1 on x86-64).
    fn compile(body: Body) -> Compiled {
        compile_for(body, cranelift_native::builder().unwrap())
    }

    fn compile_for(body: Body, isa: cranelift_codegen::isa::Builder) -> Compiled {
        let mut flags = settings::builder();
        flags.set("opt_level", "speed").unwrap();
        let isa = isa.finish(settings::Flags::new(flags)).unwrap();
        let mut module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));
        let ptr = module.target_config().pointer_type();
        let mut ids = Vec::new();
        let mut code_bytes = [0; 2];
        for (i, ty) in [types::F32, types::F32X4].into_iter().enumerate() {
            let mut sig = module.make_signature();
            for _ in 0..3 {
                sig.params.push(AbiParam::new(ptr));
            }
            let id = module
                .declare_function(&format!("f{i}"), Linkage::Local, &sig)
                .unwrap();
            let mut ctx = module.make_context();
            ctx.set_disasm(true);
            ctx.func.signature = sig;
            let mut fctx = FunctionBuilderContext::new();
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
            let block = b.create_block();
            b.append_block_params_for_function_params(block);
            b.switch_to_block(block);
            b.seal_block(block);
            let params = b.block_params(block).to_vec();
            let mem = MemFlagsData::new();
            let x = b.ins().load(ty, mem, params[0], 0);
            let r = match body {
                Body::Unary(f) => f(&mut b, x),
                Body::Binary(f) => {
                    let y = b.ins().load(ty, mem, params[1], 0);
                    f(&mut b, x, y)
                }
            };
            b.ins().store(mem, r, params[2], 0);
            b.ins().return_(&[]);
            b.finalize(module.isa().frontend_config());
            module.define_function(id, &mut ctx).unwrap();
            code_bytes[i] = ctx.compiled_code().unwrap().code_buffer().len();
            if std::env::var("MATH_DISASM").is_ok() {
                println!(
                    "{}",
                    ctx.compiled_code()
                        .unwrap()
                        .vcode
                        .clone()
                        .unwrap_or_default()
                );
            }
            module.clear_context(&mut ctx);
            ids.push(id);
        }
        module.finalize_definitions().unwrap();
        let get = |id| {
            let p = module.get_finalized_function(id);
            // SAFETY: the function was declared with three pointer parameters and no result.
            unsafe { std::mem::transmute::<*const u8, Kernel>(p) }
        };
        let (scalar, vector) = (get(ids[0]), get(ids[1]));
        Compiled {
            _module: module,
            scalar,
            vector,
            code_bytes,
        }
    }

    impl Compiled {
        /// Runs both forms over `xs` (and `ys`, same length) and checks they agree bit for bit.
        fn run(&self, xs: &[f32], ys: &[f32]) -> Vec<f32> {
            assert_eq!(xs.len(), ys.len());
            let mut scalar = vec![0.0f32; xs.len()];
            for i in 0..xs.len() {
                // SAFETY: each pointer points at one readable or writable f32.
                unsafe { (self.scalar)(&xs[i], &ys[i], &mut scalar[i]) };
            }
            let mut vector = vec![0.0f32; xs.len()];
            for start in (0..xs.len()).step_by(4) {
                let end = (start + 4).min(xs.len());
                let (mut x4, mut y4, mut o4) = ([1.0f32; 4], [1.0f32; 4], [0.0f32; 4]);
                x4[..end - start].copy_from_slice(&xs[start..end]);
                y4[..end - start].copy_from_slice(&ys[start..end]);
                // SAFETY: each pointer points at four readable or writable f32s.
                unsafe { (self.vector)(x4.as_ptr(), y4.as_ptr(), o4.as_mut_ptr()) };
                vector[start..end].copy_from_slice(&o4[..end - start]);
            }
            for i in 0..xs.len() {
                let (s, v) = (scalar[i], vector[i]);
                assert!(
                    s.to_bits() == v.to_bits() || (s.is_nan() && v.is_nan()),
                    "scalar {s:e} and vector {v:e} differ at x = {:e}, y = {:e}",
                    xs[i],
                    ys[i]
                );
            }
            scalar
        }
    }

    /// Worst errors seen by one sweep.
    #[derive(Debug, Default)]
    struct Errors {
        /// Largest relative error where the exact result is a normal `f32`.
        max_rel: f64,
        max_rel_at: (f32, f32),
        /// Largest absolute error where the exact result is at most 1 in magnitude.
        max_abs: f64,
        max_abs_at: (f32, f32),
        /// Points checked.
        points: usize,
    }

    /// Tolerances: a normal result within `rel`, a denormal or zero one within `abs`.
    #[derive(Clone, Copy)]
    struct Tol {
        rel: f64,
        abs: f64,
    }

    const UNARY_TOL: Tol = Tol {
        rel: 2e-6,
        abs: 1e-7,
    };
    const POW_TOL: Tol = Tol {
        rel: 1e-5,
        abs: 1e-5 * f32::MIN_POSITIVE as f64,
    };

    /// Checks `got` against the exact `want` and records the error.
    fn check(got: f32, want: f64, tol: Tol, at: (f32, f32), errs: &mut Errors, name: &str) {
        errs.points += 1;
        let fail = || panic!("{name}({:e}, {:e}) = {got:e}, want {want:e}", at.0, at.1);
        if want.is_nan() || got.is_nan() {
            if !(want.is_nan() && got.is_nan()) {
                fail();
            }
            return;
        }
        let max = f64::from(f32::MAX) * (1.0 - tol.rel);
        let want32 = want as f32;
        if got.is_infinite() || want32.is_infinite() {
            // Overflow: both beyond (or at the edge of) the f32 range, with the same sign.
            let g = f64::from(got);
            if g.signum() != want.signum() || g.abs() < max || want.abs() < max {
                fail();
            }
            return;
        }
        let err = (f64::from(got) - want).abs();
        if err > errs.max_abs && want.abs() <= 1.0 {
            errs.max_abs = err;
            errs.max_abs_at = at;
        }
        if want.abs() >= f64::from(f32::MIN_POSITIVE) {
            let rel = err / want.abs();
            if rel > errs.max_rel {
                errs.max_rel = rel;
                errs.max_rel_at = at;
            }
            if rel > tol.rel {
                fail();
            }
        } else if err > tol.abs {
            fail();
        }
    }

    /// A deterministic stream of pseudo-random `u32`s (64-bit LCG, high bits).
    fn lcg(seed: u64) -> impl FnMut() -> u32 {
        let mut s = seed;
        move || {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (s >> 32) as u32
        }
    }

    /// The sweep for unary functions: linear over [−100, 100], log-spaced magnitudes of both
    /// signs, 64 mantissas in every binade, random bit patterns, and the special values.
    fn unary_inputs() -> Vec<f32> {
        let mut xs = Vec::new();
        let n = 1_000_000;
        for i in 0..n {
            xs.push((-100.0 + 200.0 * i as f64 / (n - 1) as f64) as f32);
        }
        for i in 0..n / 2 {
            let m = 10f64.powf(-45.0 + 83.5 * i as f64 / (n / 2) as f64) as f32;
            xs.push(m);
            xs.push(-m);
        }
        for biased in 0u32..255 {
            for j in 0u32..64 {
                let mant = if j == 63 { 0x7f_ffff } else { j * 0x2_0000 + j };
                let bits = (biased << 23) | mant;
                xs.push(f32::from_bits(bits));
                xs.push(-f32::from_bits(bits));
            }
        }
        let mut rng = lcg(7);
        for _ in 0..n / 2 {
            xs.push(f32::from_bits(rng()));
        }
        xs.extend(specials());
        xs
    }

    fn specials() -> Vec<f32> {
        let mut v = vec![
            0.0,
            1.0,
            0.5,
            2.0,
            f32::INFINITY,
            f32::NAN,
            f32::MIN_POSITIVE,
            f32::from_bits(1),
            f32::from_bits(0x7f_ffff),
            1e-40,
            1e-30,
            1e-7,
            f32::EPSILON,
            0.625,
            1.25,
            3.92,
            88.72283,
            88.72284,
            89.0,
            103.97,
            104.0,
            87.33655,
            f32::MAX,
        ];
        let neg: Vec<f32> = v.iter().map(|x| -x).collect();
        v.extend(neg);
        v
    }

    fn sweep_unary(name: &str, f: Unary, reference: fn(f64) -> f64, tol: Tol) -> Errors {
        let c = compile(Body::Unary(f));
        let xs = unary_inputs();
        let ys = vec![0.0; xs.len()];
        let got = c.run(&xs, &ys);
        let mut errs = Errors::default();
        for (&x, &g) in xs.iter().zip(&got) {
            check(g, reference(f64::from(x)), tol, (x, 0.0), &mut errs, name);
        }
        println!(
            "{name}: {} points, max rel {:.3e} at {:e}, max abs {:.3e} at {:e}, code {:?} bytes",
            errs.points,
            errs.max_rel,
            errs.max_rel_at.0,
            errs.max_abs,
            errs.max_abs_at.0,
            c.code_bytes
        );
        errs
    }

    /// Special values must match Rust's `f32` function exactly where it returns 0, ±1 or ±∞
    /// (sign included), NaN where it returns NaN, and within `tol` elsewhere.
    fn check_specials(name: &str, f: Unary, std: fn(f32) -> f32, tol: Tol) {
        let c = compile(Body::Unary(f));
        let xs = specials();
        let got = c.run(&xs, &vec![0.0; xs.len()]);
        for (&x, &g) in xs.iter().zip(&got) {
            let want = std(x);
            if want.is_nan() {
                assert!(g.is_nan(), "{name}({x:e}) = {g:e}, want NaN");
            } else if want == 0.0 || want.is_infinite() || want.abs() == 1.0 || x == 0.0 {
                assert_eq!(
                    g.to_bits(),
                    want.to_bits(),
                    "{name}({x:e}) = {g:e}, want {want:e}"
                );
            } else {
                check(
                    g,
                    f64::from(want),
                    tol,
                    (x, 0.0),
                    &mut Errors::default(),
                    name,
                );
            }
        }
    }

    /// erf in f64: 2/√π · e^{−x²} · Σ 2^k x^{2k+1} / (2k+1)!!, a series of positive terms.
    fn erf_ref(x: f64) -> f64 {
        let ax = x.abs();
        if ax.is_nan() || ax == 0.0 {
            return x;
        }
        if ax > 6.0 {
            return 1f64.copysign(x);
        }
        let x2 = 2.0 * ax * ax;
        let (mut term, mut sum) = (ax, ax);
        for k in 1..1000 {
            term *= x2 / (2 * k + 1) as f64;
            sum += term;
            if term <= sum * 1e-17 {
                break;
            }
        }
        (std::f64::consts::FRAC_2_SQRT_PI * (-ax * ax).exp() * sum).copysign(x)
    }

    fn sigmoid_ref(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    /// Rust has no f32 erf; rounding the f64 reference is exact enough for the special values.
    fn erf_std(x: f32) -> f32 {
        erf_ref(f64::from(x)) as f32
    }

    fn sigmoid_std(x: f32) -> f32 {
        sigmoid_ref(f64::from(x)) as f32
    }

    #[test]
    fn exp_sweep() {
        let e = sweep_unary("exp", exp, f64::exp, UNARY_TOL);
        assert!(e.max_rel < 5e-7, "{e:?}");
        check_specials("exp", exp, f32::exp, UNARY_TOL);
    }

    /// Results in the denormal range are rounded once: within one step of 2⁻¹⁴⁹.
    #[test]
    fn exp_denormal_results() {
        let c = compile(Body::Unary(exp));
        let xs: Vec<f32> = (0..100_000)
            .map(|i| (-104.0 + 17.0 * f64::from(i) / 99_999.0) as f32)
            .collect();
        let got = c.run(&xs, &vec![0.0; xs.len()]);
        let step = f64::from(f32::from_bits(1));
        for (&x, &g) in xs.iter().zip(&got) {
            let want = f64::from(x).exp();
            if want < f64::from(f32::MIN_POSITIVE) {
                let err = (f64::from(g) - want).abs();
                assert!(err <= step, "exp({x:e}) = {g:e}, want {want:e}");
            }
        }
    }

    #[test]
    fn ln_sweep() {
        let e = sweep_unary("ln", ln, f64::ln, UNARY_TOL);
        assert!(e.max_rel < 5e-7, "{e:?}");
        check_specials("ln", ln, f32::ln, UNARY_TOL);
    }

    #[test]
    fn tanh_sweep() {
        let e = sweep_unary("tanh", tanh, f64::tanh, UNARY_TOL);
        assert!(e.max_rel < 5e-7, "{e:?}");
        check_specials("tanh", tanh, f32::tanh, UNARY_TOL);
    }

    #[test]
    fn sigmoid_sweep() {
        let e = sweep_unary("sigmoid", sigmoid, sigmoid_ref, UNARY_TOL);
        assert!(e.max_rel < 5e-7, "{e:?}");
        check_specials("sigmoid", sigmoid, sigmoid_std, UNARY_TOL);
    }

    #[test]
    fn erf_sweep() {
        let e = sweep_unary("erf", erf, erf_ref, UNARY_TOL);
        assert!(e.max_rel < 5e-7, "{e:?}");
        check_specials("erf", erf, erf_std, UNARY_TOL);
    }

    fn pow_ref(x: f64, y: f64) -> f64 {
        x.powf(y)
    }

    /// Pairs for `pow`: a grid of bases × exponents, bases next to 1 with large exponents,
    /// and random bit patterns.
    fn pow_inputs() -> (Vec<f32>, Vec<f32>) {
        let mut bases: Vec<f32> = (0..400)
            .map(|i| 10f64.powf(-40.0 + 78.5 * f64::from(i) / 399.0) as f32)
            .collect();
        bases.extend([
            0.5,
            2.0,
            3.0,
            10.0,
            0.1,
            1.0 + f32::EPSILON,
            1.0 - f32::EPSILON / 2.0,
        ]);
        let neg: Vec<f32> = bases.iter().map(|x| -x).collect();
        bases.extend(neg);
        let mut exps: Vec<f32> = (-50..=50).map(|i| i as f32).collect();
        exps.extend((-50..50).map(|i| i as f32 + 0.5));
        let mut rng = lcg(11);
        for _ in 0..300 {
            exps.push((f64::from(rng()) / f64::from(u32::MAX) * 400.0 - 200.0) as f32);
        }
        exps.extend([
            1e-3,
            -1e-3,
            1e3,
            -1e3,
            1e6,
            -1e6,
            12345.0,
            1e10,
            -1e10,
            16_777_217.0,
        ]);
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        for &x in &bases {
            for &y in &exps {
                xs.push(x);
                ys.push(y);
            }
        }
        // Bases within a few ulps of 1 with exponents that take the result over the range.
        for k in 1..=64 {
            for sign in [1.0f32, -1.0] {
                let x = 1.0 + sign * k as f32 * f32::EPSILON / 2.0;
                for i in 0..200 {
                    let y = 10f64.powf(4.0 + 5.0 * f64::from(i) / 199.0) as f32;
                    for y in [y, -y, y.round(), -y.round()] {
                        xs.push(x);
                        ys.push(y);
                    }
                }
            }
        }
        for _ in 0..1_000_000 {
            xs.push(f32::from_bits(rng()));
            ys.push(f32::from_bits(rng()));
        }
        // Random finite pairs whose exact result stays near the f32 range.
        for _ in 0..500_000 {
            let x = f32::from_bits(rng() & 0xbfff_ffff | 0x0080_0000);
            let target = f64::from(rng()) / f64::from(u32::MAX) * 200.0 - 100.0;
            let l = f64::from(x.abs()).ln();
            if l != 0.0 {
                xs.push(x);
                ys.push((target / l) as f32);
            }
        }
        (xs, ys)
    }

    #[test]
    fn pow_sweep() {
        let c = compile(Body::Binary(pow));
        let (xs, ys) = pow_inputs();
        let got = c.run(&xs, &ys);
        let mut errs = Errors::default();
        for ((&x, &y), &g) in xs.iter().zip(&ys).zip(&got) {
            let want = pow_ref(f64::from(x), f64::from(y));
            check(g, want, POW_TOL, (x, y), &mut errs, "pow");
        }
        println!(
            "pow: {} points, max rel {:.3e} at {:?}, max abs {:.3e} at {:?}, code {:?} bytes",
            errs.points, errs.max_rel, errs.max_rel_at, errs.max_abs, errs.max_abs_at, c.code_bytes
        );
        assert!(errs.max_rel < 4e-6, "{errs:?}");
    }

    #[test]
    fn pow_specials() {
        let c = compile(Body::Binary(pow));
        let mut vals = vec![
            0.0,
            1.0,
            0.5,
            2.0,
            3.0,
            2.5,
            f32::INFINITY,
            f32::NAN,
            f32::MIN_POSITIVE,
            f32::from_bits(1),
            f32::MAX,
            1e-30,
            1e30,
            8_388_609.0,
            16_777_216.0,
            33_554_436.0,
        ];
        let neg: Vec<f32> = vals.iter().map(|x| -x).collect();
        vals.extend(neg);
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        for &x in &vals {
            for &y in &vals {
                xs.push(x);
                ys.push(y);
            }
        }
        let got = c.run(&xs, &ys);
        for ((&x, &y), &g) in xs.iter().zip(&ys).zip(&got) {
            let want = x.powf(y);
            if want.is_nan() {
                assert!(g.is_nan(), "pow({x:e}, {y:e}) = {g:e}, want NaN");
            } else if want == 0.0 || want.is_infinite() || want.abs() == 1.0 {
                assert_eq!(
                    g.to_bits(),
                    want.to_bits(),
                    "pow({x:e}, {y:e}) = {g:e}, want {want:e}"
                );
            } else {
                let want = pow_ref(f64::from(x), f64::from(y));
                check(g, want, POW_TOL, (x, y), &mut Errors::default(), "pow");
            }
        }
    }

    /// Without FMA (a libcall then, still fused), SSE4.1 or AVX the results are the same bits.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn baseline_isa_matches_native() {
        let baseline = || cranelift_codegen::isa::lookup(target_lexicon::Triple::host()).unwrap();
        let xs = unary_inputs();
        let ys: Vec<f32> = xs.iter().rev().copied().collect();
        let bodies: [(&str, Body); 6] = [
            ("exp", Body::Unary(exp)),
            ("ln", Body::Unary(ln)),
            ("tanh", Body::Unary(tanh)),
            ("sigmoid", Body::Unary(sigmoid)),
            ("erf", Body::Unary(erf)),
            ("pow", Body::Binary(pow)),
        ];
        for (name, body) in bodies {
            let native = compile(body).run(&xs, &ys);
            let plain = compile_for(body, baseline()).run(&xs, &ys);
            for i in 0..xs.len() {
                let (a, b) = (native[i], plain[i]);
                assert!(
                    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                    "{name}({:e}, {:e}): native {a:e}, baseline {b:e}",
                    xs[i],
                    ys[i]
                );
            }
        }
    }
}
