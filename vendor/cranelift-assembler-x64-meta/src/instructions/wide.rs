//! 256-bit (`ymm`) forms of the AVX instructions that a vectorized `f32x8`
//! kernel needs. Added for Fovea (see the repository's `vendor/FOVEA.md`).
//!
//! The DSL has no `ymm` locations; the `ymm` registers are the `xmm`
//! registers widened, so these reuse the `xmm` locations with a `VEX.L = 1`
//! encoding (`vex(L256)`). Only the printed names differ from a native
//! `ymm` definition (they print as `xmm`); the bytes are exact. Each format is
//! named `Y*` so the generated constructors read `x64_<mnemonic>_y*`.

use crate::dsl::{Feature::*, Inst, Length::*, Location::*};
use crate::dsl::{fmt, inst, r, rw, vex, w};

#[rustfmt::skip] // Keeps instructions on a single line.
pub fn list() -> Vec<Inst> {
    vec![
        // Moves: load, store, and register-to-register (spills, reloads and
        // the register allocator's moves of 256-bit values).
        inst("vmovups", fmt("YA", [w(xmm1), r(xmm_m128)]), vex(L256)._0f().op(0x10).r(), (_64b | compat) & avx),
        inst("vmovups", fmt("YB", [w(xmm_m128), r(xmm1)]), vex(L256)._0f().op(0x11).r(), (_64b | compat) & avx),
        inst("vmovaps", fmt("YR", [w(xmm1), r(xmm2)]), vex(L256)._0f().op(0x28).r(), (_64b | compat) & avx),
        // Broadcasts of one `f32` to eight lanes.
        inst("vbroadcastss", fmt("YM", [w(xmm1), r(m32)]), vex(L256)._66()._0f38().w0().op(0x18).r(), (_64b | compat) & avx),
        inst("vbroadcastss", fmt("YX", [w(xmm1), r(xmm2)]), vex(L256)._66()._0f38().w0().op(0x18).r(), (_64b | compat) & avx2),
        // Arithmetic.
        inst("vaddps", fmt("Y", [w(xmm1), r(xmm2), r(xmm_m128)]), vex(L256)._0f().op(0x58).r(), (_64b | compat) & avx),
        inst("vsubps", fmt("Y", [w(xmm1), r(xmm2), r(xmm_m128)]), vex(L256)._0f().op(0x5C).r(), (_64b | compat) & avx),
        inst("vmulps", fmt("Y", [w(xmm1), r(xmm2), r(xmm_m128)]), vex(L256)._0f().op(0x59).r(), (_64b | compat) & avx),
        inst("vminps", fmt("Y", [w(xmm1), r(xmm2), r(xmm_m128)]), vex(L256)._0f().op(0x5D).r(), (_64b | compat) & avx),
        inst("vmaxps", fmt("Y", [w(xmm1), r(xmm2), r(xmm_m128)]), vex(L256)._0f().op(0x5F).r(), (_64b | compat) & avx),
        inst("vxorps", fmt("Y", [w(xmm1), r(xmm2), r(xmm_m128)]), vex(L256)._0f().op(0x57).r(), (_64b | compat) & avx),
        inst("vfmadd231ps", fmt("Y", [rw(xmm1), r(xmm2), r(xmm_m128)]), vex(L256)._66()._0f38().w0().op(0xB8).r(), (_64b | compat) & fma),
        // Halves: the upper 128 bits out, and a 128-bit value into the upper half.
        inst("vextractf128", fmt("Y", [w(xmm_m128), r(xmm1), r(imm8)]), vex(L256)._66()._0f3a().w0().op(0x19).r().ib(), (_64b | compat) & avx),
        inst("vinsertf128", fmt("Y", [w(xmm1), r(xmm2), r(xmm_m128), r(imm8)]), vex(L256)._66()._0f3a().w0().op(0x18).r().ib(), (_64b | compat) & avx),
    ]
}
