//! Code generation: loop-nest kernels → Cranelift IR → machine code.

pub mod math;
