//! Code generation: loop-nest kernels → Cranelift IR → machine code in a `JITModule`.
//!
//! Every kernel becomes a function `extern "C" fn(bufs: *const *mut u8, lo: i64, hi: i64)`:
//! `bufs` holds the base pointer of each kernel buffer (in [`Kernel::buffers`] order); `lo`
//! and `hi` bound the kernel's top-level parallel loop, so the runtime can hand sub-ranges
//! to threads (kernels without one ignore them). Loads and stores are marked `notrap`: the
//! loop verifier has proven them in bounds.
//!
//! The target ISA is the host's (`cranelift_native`), so `fma.f32x4` becomes `vfmadd` where
//! the CPU has AVX and FMA. Kernels compiled together share one `JITModule`, whose memory is
//! freed when the last [`CodeMemory`] handle goes away.

pub mod math;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{
    AbiParam, ConstantData, Endianness, InstBuilder, MemFlagsData, Type, Value, types,
};
use cranelift_codegen::isa::{OwnedTargetIsa, TargetFrontendConfig};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Linkage, Module, default_libcall_names};

use crate::error::{Error, Result};
use crate::lower::ir::{BinOp, CmpOp, Expr, Kernel, LoopKind, Stmt, Ty, UnOp, VarId};
use crate::tensor::DType;

/// A compiled kernel's entry point.
pub type KernelFn = unsafe extern "C" fn(bufs: *const *mut u8, lo: i64, hi: i64);

/// Cranelift's optimisation level for a kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OptLevel {
    /// No optimisation: fastest to compile.
    None,
    /// Optimise for speed (GVN, LICM and friends in the e-graph).
    Speed,
}

impl OptLevel {
    fn setting(self) -> &'static str {
        match self {
            OptLevel::None => "none",
            OptLevel::Speed => "speed",
        }
    }
}

/// Owns the executable memory of a group of kernels compiled together.
pub struct CodeMemory {
    module: Option<JITModule>,
}

/// Code modules compiled and not yet freed, process-wide.
static LIVE_MODULES: AtomicUsize = AtomicUsize::new(0);

/// The number of code modules (groups of kernels compiled together) whose executable
/// memory is mapped now, process-wide: it falls when the last kernel of a module is dropped.
pub fn live_code_modules() -> usize {
    LIVE_MODULES.load(Ordering::Relaxed)
}

// SAFETY: after `finalize_definitions` the module is never used through a shared reference;
// it is only kept alive so the code stays mapped, and dropped (freeing the code) when the
// last `Arc<CodeMemory>` goes, at which point no function pointer into it is reachable
// (every holder of a pointer also holds the `Arc`).
unsafe impl Sync for CodeMemory {}

impl Drop for CodeMemory {
    fn drop(&mut self) {
        if let Some(module) = self.module.take() {
            // SAFETY: see the `Sync` impl: nothing can call into this memory any more.
            unsafe { module.free_memory() };
            LIVE_MODULES.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl std::fmt::Debug for CodeMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CodeMemory")
    }
}

/// A compiled kernel: its entry point and the memory that holds it.
#[derive(Clone, Debug)]
pub struct CompiledKernel {
    /// Entry point.
    pub func: KernelFn,
    /// Keeps the code mapped.
    pub memory: Arc<CodeMemory>,
}

fn host_isa(opt: OptLevel) -> Result<OwnedTargetIsa> {
    let mut flags = settings::builder();
    let set = |flags: &mut settings::Builder, name: &str, value: &str| {
        flags
            .set(name, value)
            .map_err(|e| Error::internal(format!("cranelift setting {name}={value}: {e}")))
    };
    set(&mut flags, "opt_level", opt.setting())?;
    set(&mut flags, "is_pic", "false")?;
    set(
        &mut flags,
        "enable_verifier",
        if cfg!(debug_assertions) {
            "true"
        } else {
            "false"
        },
    )?;
    let isa_builder =
        cranelift_native::builder().map_err(|e| Error::internal(format!("host ISA: {e}")))?;
    isa_builder
        .finish(settings::Flags::new(flags))
        .map_err(|e| Error::internal(format!("host ISA: {e}")))
}

/// Whether kernels may use 256-bit `f32x8` vectors ([`Ty::F32x8`]): the host has AVX2
/// and FMA, and the code generator (the patched `cranelift-codegen`, see
/// `vendor/FOVEA.md`) then moves and spills whole `ymm` registers. `FOVEA_VECTOR_BITS=128`
/// in the environment turns them off (the 128-bit kernels, for comparison and tests).
pub fn wide_vectors() -> bool {
    static WIDE: OnceLock<bool> = OnceLock::new();
    *WIDE.get_or_init(|| {
        if std::env::var("FOVEA_VECTOR_BITS").is_ok_and(|v| v.trim() == "128") {
            return false;
        }
        #[cfg(target_arch = "x86_64")]
        {
            // Building the host ISA, with AVX, is what enables 256-bit values in the code
            // generator; check that it builds before promising them.
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && host_isa(OptLevel::None).is_ok()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// The host CPU features the generated code depends on, as part of cache keys.
pub fn cpu_features() -> &'static str {
    static FEATURES: OnceLock<String> = OnceLock::new();
    FEATURES.get_or_init(|| match host_isa(OptLevel::None) {
        Ok(isa) => {
            let mut s = format!("{}", isa.triple());
            for v in isa.isa_flags() {
                if let Some(true) = v.as_bool() {
                    s.push(' ');
                    s.push_str(v.name);
                }
            }
            s
        }
        Err(_) => "unknown".to_string(),
    })
}

/// A kernel compiled to machine code, not yet placed in a module.
struct MachineCode {
    func: cranelift_codegen::ir::Function,
    bytes: Vec<u8>,
    alignment: u64,
    relocs: Vec<cranelift_codegen::FinalizedMachReloc>,
}

/// Builds and compiles one kernel for `isa` (independent of every other kernel, so kernels
/// compile in parallel).
fn machine_code(
    kernel: &Kernel,
    isa: &dyn cranelift_codegen::isa::TargetIsa,
) -> Result<MachineCode> {
    let mut ctx = cranelift_codegen::Context::new();
    let mut fctx = FunctionBuilderContext::new();
    build_function(kernel, &mut ctx.func, &mut fctx, isa.frontend_config())?;
    let compiled = ctx
        .compile(isa, &mut Default::default())
        .map_err(|e| Error::internal(format!("compiling kernel {}: {:?}", kernel.name, e.inner)))?;
    let alignment = u64::from(compiled.buffer.alignment)
        .max(u64::from(isa.function_alignment().minimum))
        .max(isa.symbol_alignment());
    let bytes = compiled.code_buffer().to_vec();
    let relocs = compiled.buffer.relocs().to_vec();
    Ok(MachineCode {
        func: ctx.func,
        bytes,
        alignment,
        relocs,
    })
}

/// Compiles kernels into one code module. Returns one compiled kernel per input, in order.
/// Cranelift compiles the kernels in parallel on rayon's global pool (each is independent);
/// they are then placed in one module per optimisation level.
pub fn compile(kernels: &[(&Kernel, OptLevel)]) -> Result<Vec<CompiledKernel>> {
    use rayon::prelude::*;
    // One module per optimisation level: the ISA (and so the module) fixes the level.
    let mut by_level: HashMap<OptLevel, Vec<usize>> = HashMap::new();
    for (i, (_, opt)) in kernels.iter().enumerate() {
        by_level.entry(*opt).or_default().push(i);
    }
    let mut results: Vec<Option<CompiledKernel>> = vec![None; kernels.len()];
    for (opt, indices) in by_level {
        let isa = host_isa(opt)?;
        let code = indices
            .par_iter()
            .map(|&i| machine_code(kernels[i].0, &*isa))
            .collect::<Result<Vec<_>>>()?;
        let mut module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));
        let mut ids = Vec::new();
        for (n, (&i, code)) in indices.iter().zip(&code).enumerate() {
            let kernel = kernels[i].0;
            // The kernel's name (unique within the module): `perf record` shows it, since
            // the JIT module lists its functions in /tmp/perf-<pid>.map under perf.
            let name = format!("{} #{n}", kernel.name);
            let id = module
                .declare_function(&name, Linkage::Local, &code.func.signature)
                .map_err(|e| Error::internal(format!("declaring kernel {}: {e}", kernel.name)))?;
            let relocs: Vec<cranelift_module::ModuleReloc> = code
                .relocs
                .iter()
                .map(|r| cranelift_module::ModuleReloc::from_mach_reloc(r, &code.func, id))
                .collect();
            module
                .define_function_bytes(id, code.alignment, &code.bytes, &relocs)
                .map_err(|e| Error::internal(format!("placing kernel {}: {e:?}", kernel.name)))?;
            ids.push((i, id));
        }
        module
            .finalize_definitions()
            .map_err(|e| Error::internal(format!("finalizing kernels: {e}")))?;
        let pointers: Vec<(usize, *const u8)> = ids
            .iter()
            .map(|&(i, id)| (i, module.get_finalized_function(id)))
            .collect();

        LIVE_MODULES.fetch_add(1, Ordering::Relaxed);
        let memory = Arc::new(CodeMemory {
            module: Some(module),
        });
        for (i, ptr) in pointers {
            // SAFETY: the function was built with exactly the `KernelFn` signature.
            let func = unsafe { std::mem::transmute::<*const u8, KernelFn>(ptr) };
            results[i] = Some(CompiledKernel {
                func,
                memory: memory.clone(),
            });
        }
    }
    results
        .into_iter()
        .map(|r| r.ok_or_else(|| Error::internal("a kernel was not compiled")))
        .collect()
}

/// The machine code of a kernel compiled at `opt`, as Cranelift's disassembly of its final
/// instructions (`fovea dump-ir --stage asm`).
pub fn asm_text(kernel: &Kernel, opt: OptLevel) -> Result<String> {
    let isa = host_isa(opt)?;
    let mut ctx = cranelift_codegen::Context::new();
    let mut fctx = FunctionBuilderContext::new();
    build_function(kernel, &mut ctx.func, &mut fctx, isa.frontend_config())?;
    ctx.set_disasm(true);
    let compiled = ctx
        .compile(&*isa, &mut Default::default())
        .map_err(|e| Error::internal(format!("compiling kernel {}: {:?}", kernel.name, e.inner)))?;
    Ok(compiled.vcode.clone().unwrap_or_default())
}

/// The Cranelift IR of a kernel, as text (`fovea dump-ir --stage clif`).
pub fn clif_text(kernel: &Kernel) -> Result<String> {
    let isa = host_isa(OptLevel::Speed)?;
    let mut func = cranelift_codegen::ir::Function::new();
    let mut fctx = FunctionBuilderContext::new();
    build_function(kernel, &mut func, &mut fctx, isa.frontend_config())?;
    Ok(func.display().to_string())
}

fn build_function(
    kernel: &Kernel,
    func: &mut cranelift_codegen::ir::Function,
    fctx: &mut FunctionBuilderContext,
    config: TargetFrontendConfig,
) -> Result<()> {
    let ptr = config.pointer_type();
    func.signature.params.push(AbiParam::new(ptr));
    func.signature.params.push(AbiParam::new(types::I64));
    func.signature.params.push(AbiParam::new(types::I64));
    let mut b = FunctionBuilder::new(func, fctx);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let params = b.block_params(entry).to_vec();
    let bufs_ptr = params[0];
    let mut bases = Vec::with_capacity(kernel.buffers.len());
    for i in 0..kernel.buffers.len() {
        bases.push(b.ins().load(
            ptr,
            MemFlagsData::trusted(),
            bufs_ptr,
            (i * ptr.bytes() as usize) as i32,
        ));
    }
    let mut g = Gen {
        b,
        kernel,
        bases,
        vars: HashMap::new(),
        locals: HashMap::new(),
        range: (params[1], params[2]),
        addresses: HashMap::new(),
    };
    g.stmts(&kernel.body, true)?;
    g.b.ins().return_(&[]);
    g.b.seal_all_blocks();
    g.b.finalize(config);
    Ok(())
}

struct Gen<'a, 'k> {
    b: FunctionBuilder<'a>,
    kernel: &'k Kernel,
    bases: Vec<Value>,
    vars: HashMap<VarId, Variable>,
    locals: HashMap<u32, (Variable, Ty)>,
    /// `lo`, `hi` of the top-level parallel loop.
    range: (Value, Value),
    /// Addresses computed in the current block, by buffer and index value: accesses at
    /// the same index plus different constants share one address computation.
    addresses: HashMap<(u32, Value), Value>,
}

/// Splits `index` into its non-constant part (`None` if it is a constant) and the sum of
/// the constants added at its top (`(a + 3) + 5` gives `a` and 8).
fn split_constant(index: &Expr) -> (Option<&Expr>, i64) {
    match index {
        Expr::Int(c) => (None, *c),
        Expr::Binary(BinOp::Add, a, b) => match (a.as_ref(), b.as_ref()) {
            (rest, Expr::Int(c)) | (Expr::Int(c), rest) => {
                let (rest, inner) = split_constant(rest);
                match inner.checked_add(*c) {
                    Some(total) => (rest, total),
                    None => (Some(index), 0),
                }
            }
            _ => (Some(index), 0),
        },
        _ => (Some(index), 0),
    }
}

fn clif_type(ty: Ty) -> Result<Type> {
    match ty {
        Ty::I64 => Ok(types::I64),
        Ty::F32 => Ok(types::F32),
        Ty::F32x4 => Ok(types::F32X4),
        Ty::F32x8 => Ok(types::F32X8),
        Ty::Bool | Ty::Boolx4 => Err(Error::internal("boolean locals are not supported")),
    }
}

/// Loops with at most this many iterations may be unrolled when marked so.
const MAX_UNROLL: i64 = 16;

impl Gen<'_, '_> {
    /// Continues in `block`; addresses computed in the previous block are forgotten.
    fn switch_to(&mut self, block: cranelift_codegen::ir::Block) {
        self.addresses.clear();
        self.b.switch_to_block(block);
    }

    fn vector_flags() -> MemFlagsData {
        MemFlagsData::new().with_endianness(Endianness::Little)
    }

    fn stmts(&mut self, stmts: &[Stmt], top_level: bool) -> Result<()> {
        for (i, stmt) in stmts.iter().enumerate() {
            match stmt {
                Stmt::Loop(l) => {
                    let var = self.b.declare_var(types::I64);
                    self.vars.insert(l.var, var);
                    if l.kind == LoopKind::Unrolled && l.trip_count() <= MAX_UNROLL {
                        let mut v = l.start;
                        while v < l.end {
                            let c = self.b.ins().iconst(types::I64, v);
                            self.b.def_var(var, c);
                            self.stmts(&l.body, false)?;
                            v += l.step;
                        }
                    } else {
                        let parallel = l.kind == LoopKind::Parallel && top_level && i == 0;
                        let (start, end) = if parallel {
                            self.range
                        } else {
                            (
                                self.b.ins().iconst(types::I64, l.start),
                                self.b.ins().iconst(types::I64, l.end),
                            )
                        };
                        self.b.def_var(var, start);
                        let header = self.b.create_block();
                        let body = self.b.create_block();
                        let exit = self.b.create_block();
                        self.b.ins().jump(header, &[]);
                        self.switch_to(header);
                        let v = self.b.use_var(var);
                        let more = self.b.ins().icmp(IntCC::SignedLessThan, v, end);
                        self.b.ins().brif(more, body, &[], exit, &[]);
                        self.switch_to(body);
                        self.stmts(&l.body, false)?;
                        let v = self.b.use_var(var);
                        let next = self.b.ins().iadd_imm_s(v, l.step);
                        self.b.def_var(var, next);
                        self.b.ins().jump(header, &[]);
                        self.switch_to(exit);
                    }
                    self.vars.remove(&l.var);
                }
                Stmt::Store { buf, index, value } => {
                    let (v, _) = self.expr(value)?;
                    let (addr, offset) = self.address(buf.0, index)?;
                    self.b
                        .ins()
                        .store(MemFlagsData::new().with_notrap(), v, addr, offset);
                }
                Stmt::Declare { local, ty, init } => {
                    let var = self.b.declare_var(clif_type(*ty)?);
                    let (v, _) = self.expr(init)?;
                    self.b.def_var(var, v);
                    self.locals.insert(local.0, (var, *ty));
                }
                Stmt::If {
                    cond,
                    then,
                    otherwise,
                } => {
                    let (c, _) = self.expr(cond)?;
                    let then_block = self.b.create_block();
                    let else_block = self.b.create_block();
                    let merge = self.b.create_block();
                    self.b.ins().brif(c, then_block, &[], else_block, &[]);
                    self.switch_to(then_block);
                    self.stmts(then, false)?;
                    self.b.ins().jump(merge, &[]);
                    self.switch_to(else_block);
                    self.stmts(otherwise, false)?;
                    self.b.ins().jump(merge, &[]);
                    self.switch_to(merge);
                }
                Stmt::Assign { local, value } => {
                    let (v, _) = self.expr(value)?;
                    let (var, _) = *self.locals.get(&local.0).ok_or_else(|| {
                        Error::internal(format!("local l{} assigned before declared", local.0))
                    })?;
                    self.b.def_var(var, v);
                }
            }
        }
        Ok(())
    }

    /// The address of element `index` of buffer `buf`, as a base value and a byte offset.
    fn address(&mut self, buf: u32, index: &Expr) -> Result<(Value, i32)> {
        let buffer = self
            .kernel
            .buffers
            .get(buf as usize)
            .ok_or_else(|| Error::internal(format!("unknown buffer b{buf}")))?;
        let shift = match buffer.dtype {
            DType::F32 => 2,
            DType::I64 => 3,
        };
        // A constant term of the index becomes the access's immediate offset.
        let (rest, constant) = split_constant(index);
        let bytes = constant
            .checked_mul(1 << shift)
            .and_then(|b| i32::try_from(b).ok());
        let (rest, bytes) = match bytes {
            Some(b) => (rest, b),
            None => (Some(index), 0),
        };
        let base = self.bases[buf as usize];
        let addr = match rest {
            Some(rest) => {
                let (i, _) = self.expr(rest)?;
                match self.addresses.get(&(buf, i)) {
                    Some(&addr) => addr,
                    None => {
                        let offset = self.b.ins().ishl_imm_s(i, shift);
                        let addr = self.b.ins().iadd(base, offset);
                        self.addresses.insert((buf, i), addr);
                        addr
                    }
                }
            }
            None => base,
        };
        Ok((addr, bytes))
    }

    fn splat_if(&mut self, (v, t): (Value, Ty), target: Ty) -> Value {
        match (t, target) {
            (Ty::F32, Ty::F32x4) => self.b.ins().splat(types::F32X4, v),
            (Ty::F32, Ty::F32x8) => self.b.ins().splat(types::F32X8, v),
            _ => v,
        }
    }

    /// The common type of float operands (a scalar takes the other's vector type).
    fn join(a: Ty, b: Ty) -> Result<Ty> {
        a.join(b)
            .ok_or_else(|| Error::internal(format!("operands {} and {} mixed", a.name(), b.name())))
    }

    /// Promotes two float operands to a common type (splatting a scalar against a vector).
    fn promote(&mut self, a: (Value, Ty), b: (Value, Ty)) -> Result<(Value, Value, Ty)> {
        let t = Self::join(a.1, b.1)?;
        Ok((self.splat_if(a, t), self.splat_if(b, t), t))
    }

    /// The low (`h` = 0) or high half of an `f32x8`: as lane `h` of the same bits read as
    /// `f128x2` (Cranelift has no instruction that narrows a vector; the patched code
    /// generator lowers lane 0 to the register itself and lane 1 to `vextractf128`).
    fn half(&mut self, v: Value, h: u8) -> Value {
        let flags = Self::vector_flags();
        let wide = self.b.ins().bitcast(types::F128X2, flags, v);
        let lane = self.b.ins().extractlane(wide, h);
        self.b.ins().bitcast(types::F32X4, flags, lane)
    }

    fn float_select(&mut self, cond: Value, a: Value, b: Value, t: Ty) -> Value {
        let vector = match t {
            Ty::F32x4 => types::F32X4,
            Ty::F32x8 => types::F32X8,
            _ => return self.b.ins().select(cond, a, b),
        };
        let mask = self.b.ins().bitcast(vector, Self::vector_flags(), cond);
        self.b.ins().bitselect(mask, a, b)
    }

    fn expr(&mut self, e: &Expr) -> Result<(Value, Ty)> {
        Ok(match e {
            Expr::Int(v) => (self.b.ins().iconst(types::I64, *v), Ty::I64),
            Expr::Float(v) => (self.b.ins().f32const(*v), Ty::F32),
            Expr::Var(v) => {
                let var = *self.vars.get(v).ok_or_else(|| {
                    Error::internal(format!("loop variable v{} out of scope", v.0))
                })?;
                (self.b.use_var(var), Ty::I64)
            }
            Expr::Local(l) => {
                let (var, ty) = *self.locals.get(&l.0).ok_or_else(|| {
                    Error::internal(format!("local l{} read before declared", l.0))
                })?;
                (self.b.use_var(var), ty)
            }
            Expr::Load { buf, index, lanes } => {
                let dtype = self.kernel.buffers.get(buf.0 as usize).map(|b| b.dtype);
                let (ty, clif) = match (dtype, lanes) {
                    (Some(DType::F32), 4) => (Ty::F32x4, types::F32X4),
                    (Some(DType::F32), 8) => (Ty::F32x8, types::F32X8),
                    (Some(DType::F32), _) => (Ty::F32, types::F32),
                    (Some(DType::I64), _) => (Ty::I64, types::I64),
                    (None, _) => return Err(Error::internal(format!("unknown buffer b{}", buf.0))),
                };
                let (addr, offset) = self.address(buf.0, index)?;
                let flags = MemFlagsData::new().with_notrap();
                (self.b.ins().load(clif, flags, addr, offset), ty)
            }
            Expr::Unary(op, a) => {
                let (x, t) = self.expr(a)?;
                match op {
                    UnOp::Neg if t == Ty::I64 => (self.b.ins().ineg(x), t),
                    UnOp::Abs if t == Ty::I64 => (self.b.ins().iabs(x), t),
                    UnOp::Neg => (self.b.ins().fneg(x), t),
                    UnOp::Abs => (self.b.ins().fabs(x), t),
                    UnOp::Sqrt => (self.b.ins().sqrt(x), t),
                    UnOp::Floor => (self.b.ins().floor(x), t),
                    UnOp::Ceil => (self.b.ins().ceil(x), t),
                    UnOp::Round => (self.b.ins().nearest(x), t),
                    UnOp::Exp => (math::exp(&mut self.b, x), t),
                    UnOp::Tanh => (math::tanh(&mut self.b, x), t),
                    UnOp::Sigmoid => (math::sigmoid(&mut self.b, x), t),
                    UnOp::Erf => (math::erf(&mut self.b, x), t),
                    UnOp::ToF32 => (self.b.ins().fcvt_from_sint(types::F32, x), Ty::F32),
                    UnOp::ToI64 => (self.b.ins().fcvt_to_sint_sat(types::I64, x), Ty::I64),
                }
            }
            Expr::Binary(op, a, b) => {
                let (x, y) = (self.expr(a)?, self.expr(b)?);
                if x.1 == Ty::I64 {
                    let (x, y) = (x.0, y.0);
                    let v = match op {
                        BinOp::Add => self.b.ins().iadd(x, y),
                        BinOp::Sub => self.b.ins().isub(x, y),
                        BinOp::Mul => self.b.ins().imul(x, y),
                        BinOp::Div => match **b {
                            // The verifier only admits non-zero constant divisors.
                            Expr::Int(d) if d != 0 => self.b.ins().sdiv_imm_s(x, d),
                            _ => return Err(Error::internal("integer division by a non-constant")),
                        },
                        BinOp::Min => self.b.ins().smin(x, y),
                        BinOp::Max => self.b.ins().smax(x, y),
                        BinOp::Pow => return Err(Error::internal("integer pow")),
                    };
                    (v, Ty::I64)
                } else {
                    let (x, y, t) = self.promote(x, y)?;
                    let v = match op {
                        BinOp::Add => self.b.ins().fadd(x, y),
                        BinOp::Sub => self.b.ins().fsub(x, y),
                        BinOp::Mul => self.b.ins().fmul(x, y),
                        BinOp::Div => self.b.ins().fdiv(x, y),
                        BinOp::Min | BinOp::Max => {
                            // `a < b ? a : b` lowers to one minps, and `b < a ? a : b` to one
                            // maxps: Cranelift matches these two forms only (`a > b ? a : b`
                            // became a compare and a blend).
                            let c = if *op == BinOp::Min {
                                self.b.ins().fcmp(FloatCC::LessThan, x, y)
                            } else {
                                self.b.ins().fcmp(FloatCC::LessThan, y, x)
                            };
                            self.float_select(c, x, y, t)
                        }
                        BinOp::Pow => math::pow(&mut self.b, x, y),
                    };
                    (v, t)
                }
            }
            Expr::Fma(a, b, c) => {
                let (x, y, z) = (self.expr(a)?, self.expr(b)?, self.expr(c)?);
                let t = Self::join(Self::join(x.1, y.1)?, z.1)?;
                let (x, y, z) = (
                    self.splat_if(x, t),
                    self.splat_if(y, t),
                    self.splat_if(z, t),
                );
                (self.b.ins().fma(x, y, z), t)
            }
            Expr::Cmp(op, a, b) => {
                let (x, y) = (self.expr(a)?, self.expr(b)?);
                if x.1 == Ty::I64 {
                    let cc = match op {
                        CmpOp::Lt => IntCC::SignedLessThan,
                        CmpOp::Le => IntCC::SignedLessThanOrEqual,
                        CmpOp::Gt => IntCC::SignedGreaterThan,
                        CmpOp::Ge => IntCC::SignedGreaterThanOrEqual,
                        CmpOp::Eq => IntCC::Equal,
                        CmpOp::Ne => IntCC::NotEqual,
                    };
                    (self.b.ins().icmp(cc, x.0, y.0), Ty::Bool)
                } else {
                    let (x, y, t) = self.promote(x, y)?;
                    let cc = match op {
                        CmpOp::Lt => FloatCC::LessThan,
                        CmpOp::Le => FloatCC::LessThanOrEqual,
                        CmpOp::Gt => FloatCC::GreaterThan,
                        CmpOp::Ge => FloatCC::GreaterThanOrEqual,
                        CmpOp::Eq => FloatCC::Equal,
                        CmpOp::Ne => FloatCC::NotEqual,
                    };
                    let mask = self.b.ins().fcmp(cc, x, y);
                    (mask, if t == Ty::F32x4 { Ty::Boolx4 } else { Ty::Bool })
                }
            }
            Expr::Select(c, a, b) => {
                let (cond, ct) = self.expr(c)?;
                let (x, y) = (self.expr(a)?, self.expr(b)?);
                if matches!(x.1, Ty::I64 | Ty::Bool) {
                    (self.b.ins().select(cond, x.0, y.0), x.1)
                } else {
                    let (x, y, t) = self.promote(x, y)?;
                    match ct {
                        Ty::Boolx4 => {
                            let (x, y) = (
                                self.splat_if((x, t), Ty::F32x4),
                                self.splat_if((y, t), Ty::F32x4),
                            );
                            (self.float_select(cond, x, y, Ty::F32x4), Ty::F32x4)
                        }
                        _ => (self.b.ins().select(cond, x, y), t),
                    }
                }
            }
            Expr::Clamp(a, lo, hi) => {
                let (x, _) = self.expr(a)?;
                let lo = self.b.ins().iconst(types::I64, *lo);
                let hi = self.b.ins().iconst(types::I64, *hi);
                let upper = self.b.ins().smin(x, hi);
                (self.b.ins().smax(upper, lo), Ty::I64)
            }
            Expr::Splat8(a) => {
                let (x, _) = self.expr(a)?;
                (self.b.ins().splat(types::F32X8, x), Ty::F32x8)
            }
            Expr::Half(a, h) => {
                let (x, _) = self.expr(a)?;
                (self.half(x, *h), Ty::F32x4)
            }
            Expr::Splat(a) => {
                let (x, _) = self.expr(a)?;
                (self.b.ins().splat(types::F32X4, x), Ty::F32x4)
            }
            Expr::ReduceAdd(a) | Expr::ReduceMax(a) => {
                let (x, _) = self.expr(a)?;
                let lanes: Vec<Value> = (0..4u8).map(|i| self.b.ins().extractlane(x, i)).collect();
                let mut acc = lanes[0];
                for &lane in &lanes[1..] {
                    acc = if matches!(e, Expr::ReduceAdd(_)) {
                        self.b.ins().fadd(acc, lane)
                    } else {
                        let c = self.b.ins().fcmp(FloatCC::GreaterThan, lane, acc);
                        self.b.ins().select(c, lane, acc)
                    };
                }
                (acc, Ty::F32)
            }
            Expr::Shuffle(a, b, lanes) => {
                let (x, _) = self.expr(a)?;
                let (y, _) = self.expr(b)?;
                let flags = Self::vector_flags();
                let x = self.b.ins().bitcast(types::I8X16, flags, x);
                let y = self.b.ins().bitcast(types::I8X16, flags, y);
                let bytes: Vec<u8> = lanes
                    .iter()
                    .flat_map(|&l| (0..4).map(move |i| 4 * l + i))
                    .collect();
                let mask = self.b.func.dfg.immediates.push(ConstantData::from(bytes));
                let picked = self.b.ins().shuffle(x, y, mask);
                (self.b.ins().bitcast(types::F32X4, flags, picked), Ty::F32x4)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lower::ir::{BufferKind, KernelBuilder};

    fn run(kernel: &Kernel, opt: OptLevel, x: &mut [f32], y: &mut [f32], range: (i64, i64)) {
        let compiled = compile(&[(kernel, opt)]).unwrap();
        let ptrs = [x.as_mut_ptr().cast::<u8>(), y.as_mut_ptr().cast::<u8>()];
        // SAFETY: the kernel's two buffers are `x` and `y`, of the declared lengths.
        unsafe { (compiled[0].func)(ptrs.as_ptr(), range.0, range.1) };
    }

    /// `y[i] = max(x[i] * 2 + 1, 0)` over 10 elements: vector body and scalar tail.
    fn affine_relu(n: usize) -> Kernel {
        let mut k = KernelBuilder::new("affine_relu");
        let x = k.buffer("x", DType::F32, n, BufferKind::Input);
        let y = k.buffer("y", DType::F32, n, BufferKind::Output);
        let body = (n / 4 * 4) as i64;
        k.for_loop(0, body, 4, LoopKind::Parallel, |k, i| {
            let v = Expr::load4(x, i.clone())
                .fma(Expr::Float(2.0), Expr::Float(1.0))
                .max(Expr::Float(0.0));
            k.store(y, i, v);
        });
        k.for_loop(body, n as i64, 1, LoopKind::Serial, |k, i| {
            let v = Expr::load(x, i.clone())
                .fma(Expr::Float(2.0), Expr::Float(1.0))
                .max(Expr::Float(0.0));
            k.store(y, i, v);
        });
        k.finish()
    }

    #[test]
    fn vector_and_scalar_loops_compute_the_same_function() {
        let kernel = affine_relu(10);
        crate::lower::verify::verify(&kernel).unwrap();
        for opt in [OptLevel::None, OptLevel::Speed] {
            let mut x: Vec<f32> = (0..10).map(|i| i as f32 - 4.5).collect();
            let mut y = vec![f32::NAN; 10];
            run(&kernel, opt, &mut x, &mut y, (0, 8));
            let expected: Vec<f32> = x.iter().map(|&v| (v * 2.0 + 1.0).max(0.0)).collect();
            assert_eq!(y, expected);
        }
    }

    #[test]
    fn the_parallel_loop_runs_only_its_given_range() {
        let kernel = affine_relu(8);
        let mut x = vec![1.0f32; 8];
        let mut y = vec![-1.0f32; 8];
        run(&kernel, OptLevel::Speed, &mut x, &mut y, (4, 8));
        assert_eq!(y, [-1.0, -1.0, -1.0, -1.0, 3.0, 3.0, 3.0, 3.0]);
    }

    #[test]
    fn clif_text_shows_the_function() {
        let text = clif_text(&affine_relu(8)).unwrap();
        assert!(text.contains("fma"), "{text}");
    }
}
