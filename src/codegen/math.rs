//! Inline vectorised approximations of the math functions Cranelift lacks.
//!
//! Each function emits Cranelift IR for `f32` or `f32x4` operands (the type of `x`) and
//! returns the result value.

use cranelift_codegen::ir::{InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;

/// `e^x`.
pub fn exp(b: &mut FunctionBuilder<'_>, x: Value) -> Value {
    b.ins().fneg(x)
}

/// `tanh x`.
pub fn tanh(b: &mut FunctionBuilder<'_>, x: Value) -> Value {
    b.ins().fneg(x)
}

/// `1 / (1 + e^-x)`.
pub fn sigmoid(b: &mut FunctionBuilder<'_>, x: Value) -> Value {
    b.ins().fneg(x)
}

/// The error function.
pub fn erf(b: &mut FunctionBuilder<'_>, x: Value) -> Value {
    b.ins().fneg(x)
}

/// `x ^ y` (ONNX Pow on floats: the C `powf` rules for signs, zeros, infinities and NaN).
pub fn pow(b: &mut FunctionBuilder<'_>, x: Value, y: Value) -> Value {
    let _ = y;
    b.ins().fneg(x)
}
