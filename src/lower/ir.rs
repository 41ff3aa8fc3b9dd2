//! The loop-nest IR: what one compiled kernel does, as loops over flat buffers.
//!
//! A [`Kernel`] declares its buffers (each a flat array of `f32` or `i64` with a fixed
//! length; the kernel receives their base pointers) and a body of statements. Every loop
//! has constant bounds and step; every load and store addresses a buffer with an `i64`
//! index expression whose range the verifier ([`super::verify`]) proves to lie inside the
//! buffer, by interval arithmetic over the loop variables. Out-of-range positions (the
//! padding of a convolution, say) are handled with clamped indices and selects, never with
//! unchecked arithmetic.
//!
//! Expressions are typed: `i64` (indices and integer tensors), `f32`, `f32x4` (four lanes),
//! and `bool`/`bool x4` (compare results: `select` conditions, and scalar `bool`s combine
//! by selection, `select(a, b, false)` being `a && b`). A scalar operand
//! of a binary op with a vector operand is splatted. The printer ([`super::print`]) gives
//! the text `fovea dump-ir --stage loops` shows.

use crate::tensor::DType;

/// Identifies a buffer of a kernel (its position in [`Kernel::buffers`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BufId(pub u32);

/// Identifies a loop variable of a kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VarId(pub u32);

/// Identifies a local (a mutable scalar or vector variable, e.g. an accumulator).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocalId(pub u32);

/// The type of an expression or local.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ty {
    /// 64-bit signed integer.
    I64,
    /// One `f32`.
    F32,
    /// Four `f32` lanes.
    F32x4,
    /// Eight `f32` lanes (256-bit; only where [`crate::codegen::wide_vectors`] holds).
    F32x8,
    /// A scalar comparison result.
    Bool,
    /// Four lane-wise comparison results.
    Boolx4,
}

impl Ty {
    /// The name in the printed IR.
    pub fn name(self) -> &'static str {
        match self {
            Ty::I64 => "i64",
            Ty::F32 => "f32",
            Ty::F32x4 => "f32x4",
            Ty::F32x8 => "f32x8",
            Ty::Bool => "bool",
            Ty::Boolx4 => "boolx4",
        }
    }

    /// `f32`, `f32x4` or `f32x8`.
    pub fn is_float(self) -> bool {
        matches!(self, Ty::F32 | Ty::F32x4 | Ty::F32x8)
    }

    /// The lanes of a value of this type in memory (1 for scalars).
    pub fn lanes(self) -> u8 {
        match self {
            Ty::F32x4 | Ty::Boolx4 => 4,
            Ty::F32x8 => 8,
            _ => 1,
        }
    }

    /// The common type of float operands: a scalar takes the other operand's vector
    /// type; `None` where two vector widths meet.
    pub fn join(self, other: Ty) -> Option<Ty> {
        match (self, other) {
            (a, b) if a == b => Some(a),
            (Ty::F32, v) | (v, Ty::F32) => Some(v),
            _ => None,
        }
    }
}

/// How a kernel uses a buffer.
#[derive(Clone, Debug, PartialEq)]
pub enum BufferKind {
    /// Supplied at run time and only read (a kernel input).
    Input,
    /// Written (and possibly read back) by the kernel: a kernel output.
    Output,
    /// Constant data known at compile time (weights, index tables). The verifier uses the
    /// values of `i64` constants to bound indices read from them.
    Const(std::sync::Arc<crate::tensor::Tensor>),
}

/// A flat buffer a kernel reads or writes.
#[derive(Clone, Debug, PartialEq)]
pub struct Buffer {
    /// A name for dumps (the graph value it holds).
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Number of elements.
    pub len: usize,
    /// How the kernel uses it.
    pub kind: BufferKind,
}

/// How a loop runs; a schedule mark, never a change of meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LoopKind {
    /// One iteration after another.
    Serial,
    /// Iterations are independent and may be split across threads. Only the first
    /// top-level statement of a kernel may be a parallel loop; the runtime hands each thread
    /// a sub-range of it.
    Parallel,
    /// Unrolled by the code generator (for short constant trip counts).
    Unrolled,
}

/// A counted loop `for var in (start..end).step_by(step)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Loop {
    /// The induction variable.
    pub var: VarId,
    /// First value.
    pub start: i64,
    /// Exclusive end.
    pub end: i64,
    /// Positive step.
    pub step: i64,
    /// Schedule mark.
    pub kind: LoopKind,
    /// The body.
    pub body: Vec<Stmt>,
}

impl Loop {
    /// Number of iterations.
    pub fn trip_count(&self) -> i64 {
        if self.end <= self.start || self.step <= 0 {
            0
        } else {
            (self.end - self.start + self.step - 1) / self.step
        }
    }
}

/// A statement.
#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    /// A loop.
    Loop(Loop),
    /// `buf[index .. index + lanes] = value` (`lanes` is 4 for an `f32x4` value, 8 for an
    /// `f32x8`, else 1).
    Store {
        /// Target buffer.
        buf: BufId,
        /// Element index of the first lane.
        index: Expr,
        /// The value; its type must match the buffer's dtype.
        value: Expr,
    },
    /// Declares a local with its type and initial value.
    Declare {
        /// The local.
        local: LocalId,
        /// Its type.
        ty: Ty,
        /// Initial value.
        init: Expr,
    },
    /// Assigns a local.
    Assign {
        /// The local.
        local: LocalId,
        /// The new value.
        value: Expr,
    },
    /// `if cond { then } else { otherwise }` on a scalar `bool`. Locals declared in a branch
    /// are local to it. The verifier checks both branches under the same bounds (it does not
    /// narrow them by the condition), so an access in a branch must be in bounds whatever
    /// the condition; branches select the cheaper of two correct codes.
    If {
        /// The condition (`bool`).
        cond: Expr,
        /// Run when `cond` holds.
        then: Vec<Stmt>,
        /// Run otherwise.
        otherwise: Vec<Stmt>,
    },
}

/// Elementwise ops of one operand (on `f32`/`f32x4` unless noted).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnOp {
    /// `-x` (also `i64`).
    Neg,
    /// `|x|` (also `i64`).
    Abs,
    /// Square root.
    Sqrt,
    /// Round toward -inf.
    Floor,
    /// Round toward +inf.
    Ceil,
    /// Round half to even.
    Round,
    /// `e^x`, an inline polynomial approximation.
    Exp,
    /// `tanh x`, inline.
    Tanh,
    /// `1 / (1 + e^-x)`, inline.
    Sigmoid,
    /// The error function, inline.
    Erf,
    /// `i64 → f32` conversion.
    ToF32,
    /// `f32 → i64` conversion, truncating toward zero, saturating (NaN gives 0).
    ToI64,
}

/// Elementwise ops of two operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    /// `a + b`.
    Add,
    /// `a - b`.
    Sub,
    /// `a * b`.
    Mul,
    /// `a / b` (`i64`: truncating; the divisor must be a non-zero constant).
    Div,
    /// `min(a, b)`: for floats, `a < b ? a : b` (one `minps`; NaN rules as that select).
    Min,
    /// `max(a, b)`: for floats, `a > b ? a : b`.
    Max,
    /// `a ^ b` for floats, inline (`exp(b * ln a)` with the sign and integer-exponent rules).
    Pow,
}

/// Comparisons, producing `bool`/`boolx4`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CmpOp {
    /// `a < b`.
    Lt,
    /// `a <= b`.
    Le,
    /// `a > b`.
    Gt,
    /// `a >= b`.
    Ge,
    /// `a == b`.
    Eq,
    /// `a != b` (true for NaN operands).
    Ne,
}

/// An expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// An `i64` constant.
    Int(i64),
    /// An `f32` constant.
    Float(f32),
    /// A loop variable (`i64`).
    Var(VarId),
    /// A local's current value.
    Local(LocalId),
    /// `lanes` (1 or 4) consecutive elements of a buffer from `index`.
    Load {
        /// Source buffer.
        buf: BufId,
        /// Element index of the first lane (`i64`).
        index: Box<Expr>,
        /// 1 for a scalar, 4 for an `f32x4`, 8 for an `f32x8`.
        lanes: u8,
    },
    /// An elementwise op of one operand.
    Unary(UnOp, Box<Expr>),
    /// An elementwise op of two operands.
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `a * b + c`, fused.
    Fma(Box<Expr>, Box<Expr>, Box<Expr>),
    /// A comparison.
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    /// `cond ? a : b`, lane-wise for vectors.
    Select(Box<Expr>, Box<Expr>, Box<Expr>),
    /// `i64` clamped to `[lo, hi]`.
    Clamp(Box<Expr>, i64, i64),
    /// An `f32` broadcast to `f32x4`.
    Splat(Box<Expr>),
    /// An `f32` broadcast to `f32x8`.
    Splat8(Box<Expr>),
    /// Lanes `4h .. 4h + 4` of an `f32x8` (`h` is 0 or 1), an `f32x4`.
    Half(Box<Expr>, u8),
    /// The sum of the four lanes of an `f32x4` (in lane order), an `f32`.
    ReduceAdd(Box<Expr>),
    /// The maximum of the four lanes of an `f32x4`, an `f32`.
    ReduceMax(Box<Expr>),
    /// Lanes picked from two `f32x4`s: lane `i` is lane `lanes[i]` of `a ++ b` (0–3 from
    /// `a`, 4–7 from `b`).
    Shuffle(Box<Expr>, Box<Expr>, [u8; 4]),
}

/// Builders that keep lowering code short.
#[allow(clippy::should_implement_trait)]
impl Expr {
    /// `a + b`.
    pub fn add(self, b: Expr) -> Expr {
        Expr::Binary(BinOp::Add, Box::new(self), Box::new(b))
    }
    /// `a - b`.
    pub fn sub(self, b: Expr) -> Expr {
        Expr::Binary(BinOp::Sub, Box::new(self), Box::new(b))
    }
    /// `a * b`.
    pub fn mul(self, b: Expr) -> Expr {
        Expr::Binary(BinOp::Mul, Box::new(self), Box::new(b))
    }
    /// `a / b`.
    pub fn div(self, b: Expr) -> Expr {
        Expr::Binary(BinOp::Div, Box::new(self), Box::new(b))
    }
    /// `min(a, b)`.
    pub fn min(self, b: Expr) -> Expr {
        Expr::Binary(BinOp::Min, Box::new(self), Box::new(b))
    }
    /// `max(a, b)`.
    pub fn max(self, b: Expr) -> Expr {
        Expr::Binary(BinOp::Max, Box::new(self), Box::new(b))
    }
    /// `a * b + c`.
    pub fn fma(self, b: Expr, c: Expr) -> Expr {
        Expr::Fma(Box::new(self), Box::new(b), Box::new(c))
    }
    /// A unary op.
    pub fn unary(self, op: UnOp) -> Expr {
        Expr::Unary(op, Box::new(self))
    }
    /// A comparison.
    pub fn cmp(self, op: CmpOp, b: Expr) -> Expr {
        Expr::Cmp(op, Box::new(self), Box::new(b))
    }
    /// `self ? a : b`.
    pub fn select(self, a: Expr, b: Expr) -> Expr {
        Expr::Select(Box::new(self), Box::new(a), Box::new(b))
    }
    /// Clamped to `[lo, hi]`.
    pub fn clamp(self, lo: i64, hi: i64) -> Expr {
        Expr::Clamp(Box::new(self), lo, hi)
    }
    /// Broadcast to four lanes.
    pub fn splat(self) -> Expr {
        Expr::Splat(Box::new(self))
    }
    /// An `f32` broadcast to `f32x8`.
    pub fn splat8(self) -> Expr {
        Expr::Splat8(Box::new(self))
    }
    /// Half `h` (0: lanes 0–3, 1: lanes 4–7) of an `f32x8`.
    pub fn half(self, h: u8) -> Expr {
        Expr::Half(Box::new(self), h)
    }
    /// `i64` affine helper: `self * k` (skips `* 1`).
    pub fn scale(self, k: i64) -> Expr {
        if k == 1 { self } else { self.mul(Expr::Int(k)) }
    }
    /// Lanes of `self ++ b` (see [`Expr::Shuffle`]).
    pub fn shuffle(self, b: Expr, lanes: [u8; 4]) -> Expr {
        Expr::Shuffle(Box::new(self), Box::new(b), lanes)
    }
    /// A scalar load.
    pub fn load(buf: BufId, index: Expr) -> Expr {
        Expr::Load {
            buf,
            index: Box::new(index),
            lanes: 1,
        }
    }
    /// A four-lane load.
    pub fn load4(buf: BufId, index: Expr) -> Expr {
        Expr::Load {
            buf,
            index: Box::new(index),
            lanes: 4,
        }
    }
    /// An `f32x8` load of 8 consecutive elements.
    pub fn load8(buf: BufId, index: Expr) -> Expr {
        Expr::Load {
            buf,
            index: Box::new(index),
            lanes: 8,
        }
    }
}

/// One compiled unit: buffers and a loop nest.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    /// A name for dumps and profiles (e.g. the graph node it computes).
    pub name: String,
    /// Buffers, in the order the runtime passes their pointers.
    pub buffers: Vec<Buffer>,
    /// Number of loop variables (`VarId`s are `0..vars`).
    pub vars: u32,
    /// Number of locals (`LocalId`s are `0..locals`).
    pub locals: u32,
    /// The body.
    pub body: Vec<Stmt>,
    /// For a register-blocked kernel, its schedule in words (the tile shape), printed by
    /// `dump-ir --stage loops`. Such kernels are laid out by hand (one local per register,
    /// addresses shared): the runtime compiles them without Cranelift's optimiser, which
    /// measured both faster to compile and faster to run for them.
    pub schedule: Option<String>,
}

impl Kernel {
    /// The top-level parallel loop, if the kernel has one (always its first statement).
    pub fn parallel_loop(&self) -> Option<&Loop> {
        match self.body.first() {
            Some(Stmt::Loop(l)) if l.kind == LoopKind::Parallel => Some(l),
            _ => None,
        }
    }
}

/// Builds a kernel: hands out buffer, variable and local ids and nests loops.
#[derive(Debug, Default)]
pub struct KernelBuilder {
    name: String,
    buffers: Vec<Buffer>,
    vars: u32,
    locals: u32,
    schedule: Option<String>,
    /// Statement lists under construction, innermost last.
    stack: Vec<Vec<Stmt>>,
}

impl KernelBuilder {
    /// A builder for a kernel named `name`.
    pub fn new(name: impl Into<String>) -> KernelBuilder {
        KernelBuilder {
            name: name.into(),
            stack: vec![Vec::new()],
            ..KernelBuilder::default()
        }
    }

    /// Declares a buffer.
    pub fn buffer(
        &mut self,
        name: impl Into<String>,
        dtype: DType,
        len: usize,
        kind: BufferKind,
    ) -> BufId {
        self.buffers.push(Buffer {
            name: name.into(),
            dtype,
            len,
            kind,
        });
        BufId(self.buffers.len() as u32 - 1)
    }

    /// A fresh local declared here with type `ty` and value `init`.
    pub fn declare(&mut self, ty: Ty, init: Expr) -> LocalId {
        let local = LocalId(self.locals);
        self.locals += 1;
        self.push(Stmt::Declare { local, ty, init });
        local
    }

    /// Assigns a local.
    pub fn assign(&mut self, local: LocalId, value: Expr) {
        self.push(Stmt::Assign { local, value });
    }

    /// Stores `value` at `buf[index..]`.
    pub fn store(&mut self, buf: BufId, index: Expr, value: Expr) {
        self.push(Stmt::Store { buf, index, value });
    }

    /// Appends a statement.
    pub fn push(&mut self, stmt: Stmt) {
        self.stack
            .last_mut()
            .expect("the builder always has an open body")
            .push(stmt);
    }

    /// Emits `for v in start..end step` around the statements `body` emits; `body` gets the
    /// loop variable as an expression.
    pub fn for_loop(
        &mut self,
        start: i64,
        end: i64,
        step: i64,
        kind: LoopKind,
        body: impl FnOnce(&mut KernelBuilder, Expr),
    ) {
        let var = VarId(self.vars);
        self.vars += 1;
        self.stack.push(Vec::new());
        body(self, Expr::Var(var));
        let stmts = self.stack.pop().expect("pushed above");
        self.push(Stmt::Loop(Loop {
            var,
            start,
            end,
            step,
            kind,
            body: stmts,
        }));
    }

    /// Emits `if cond { then } else { otherwise }`.
    pub fn if_else(
        &mut self,
        cond: Expr,
        then: impl FnOnce(&mut KernelBuilder),
        otherwise: impl FnOnce(&mut KernelBuilder),
    ) {
        self.stack.push(Vec::new());
        then(self);
        let then = self.stack.pop().expect("pushed above");
        self.stack.push(Vec::new());
        otherwise(self);
        let otherwise = self.stack.pop().expect("pushed above");
        self.push(Stmt::If {
            cond,
            then,
            otherwise,
        });
    }

    /// `for v in 0..extent` (serial, step 1).
    pub fn range(&mut self, extent: usize, body: impl FnOnce(&mut KernelBuilder, Expr)) {
        self.for_loop(0, extent as i64, 1, LoopKind::Serial, body);
    }

    /// Marks the kernel register-blocked, with its schedule in words (see
    /// [`Kernel::schedule`]).
    pub fn set_schedule(&mut self, schedule: impl Into<String>) {
        self.schedule = Some(schedule.into());
    }

    /// The finished kernel.
    pub fn finish(mut self) -> Kernel {
        let body = self.stack.pop().unwrap_or_default();
        Kernel {
            name: self.name,
            buffers: self.buffers,
            vars: self.vars,
            locals: self.locals,
            body,
            schedule: self.schedule,
        }
    }
}
