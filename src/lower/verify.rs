//! The loop-IR verifier: types, scoping, and every memory access proven in bounds.
//!
//! Invariants checked (all problems are collected, not just the first):
//! - every expression is well typed (see [`super::ir`]); stores match their buffer's dtype;
//!   locals are declared once, before use, and assigned values of their type;
//! - loop variables are bound once, used only inside their loop, and loops have a positive
//!   step; only the first top-level statement may be a parallel loop;
//! - only output buffers are stored to;
//! - for every load and store, the interval of its index (by interval arithmetic over the
//!   loop variables' ranges, with `clamp`, `min`, `max` and the known values of constant
//!   `i64` tables) lies within `[0, len - lanes]`. An index computed from run-time data must
//!   be clamped, or it cannot be proven and is rejected.
//!
//! Because loops have constant bounds and buffers have constant lengths, a kernel that
//! passes never reads or writes outside its buffers.

use std::collections::HashMap;

use super::ir::{BinOp, BufId, BufferKind, Expr, Kernel, LocalId, LoopKind, Stmt, Ty, UnOp, VarId};
use super::print::write_expr;
use crate::tensor::DType;

/// A closed integer interval (in `i128`, so arithmetic on `i64` bounds cannot overflow).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Interval {
    lo: i128,
    hi: i128,
}

impl Interval {
    const FULL: Interval = Interval {
        lo: i64::MIN as i128,
        hi: i64::MAX as i128,
    };

    fn point(v: i64) -> Interval {
        Interval {
            lo: v as i128,
            hi: v as i128,
        }
    }

    /// Clamps the bounds to the `i64` range (results of `i64` arithmetic wrap, so anything
    /// beyond is unknown).
    fn normalized(self) -> Interval {
        if self.lo < i64::MIN as i128 || self.hi > i64::MAX as i128 {
            Interval::FULL
        } else {
            self
        }
    }
}

struct Verifier<'k> {
    kernel: &'k Kernel,
    errors: Vec<String>,
    vars: HashMap<VarId, Interval>,
    seen_vars: Vec<bool>,
    locals: HashMap<LocalId, Ty>,
    /// The range of each `i64` local that is declared and never assigned (its value is
    /// its initial expression's, evaluated where it is declared).
    local_ranges: HashMap<LocalId, Interval>,
    /// Locals assigned anywhere in the kernel (their range is unknown).
    assigned: std::collections::HashSet<LocalId>,
    /// `[min, max]` of each constant `i64` buffer.
    table_ranges: HashMap<BufId, Interval>,
    /// Whether the statements being checked are reachable (no empty loop around them).
    live: bool,
}

fn describe(e: &Expr) -> String {
    let mut s = String::new();
    write_expr(&mut s, e);
    s
}

impl<'k> Verifier<'k> {
    fn error(&mut self, message: String) {
        self.errors.push(message);
    }

    fn buffer_name(&self, buf: BufId) -> String {
        match self.kernel.buffers.get(buf.0 as usize) {
            Some(b) => format!("b{} ({})", buf.0, b.name),
            None => format!("b{}", buf.0),
        }
    }

    fn check_access(&mut self, buf: BufId, index: &Expr, lanes: u8, what: &str) {
        let Some(b) = self.kernel.buffers.get(buf.0 as usize) else {
            self.error(format!("{what} of unknown buffer b{}", buf.0));
            return;
        };
        let len = b.len as i128;
        if self.expr_ty(index) != Some(Ty::I64) {
            self.error(format!(
                "{what} of {}: index {} is not i64",
                self.buffer_name(buf),
                describe(index)
            ));
            return;
        }
        if !self.live {
            return;
        }
        let range = self.interval(index);
        if range.lo < 0 || range.hi + i128::from(lanes) > len {
            self.error(format!(
                "{what} of {} at {}: index range [{}, {}] + {lanes} lane(s) is not inside [0, {len})",
                self.buffer_name(buf),
                describe(index),
                range.lo,
                range.hi
            ));
        }
    }

    /// The type of an expression, reporting type errors (and returning `None` for them).
    fn expr_ty(&mut self, e: &Expr) -> Option<Ty> {
        let float = |t: Ty| t.is_float();
        match e {
            Expr::Int(_) => Some(Ty::I64),
            Expr::Float(_) => Some(Ty::F32),
            Expr::Var(v) => {
                if self.vars.contains_key(v) {
                    Some(Ty::I64)
                } else {
                    self.error(format!("loop variable v{} used outside its loop", v.0));
                    None
                }
            }
            Expr::Local(l) => match self.locals.get(l) {
                Some(t) => Some(*t),
                None => {
                    self.error(format!("local l{} used before it is declared", l.0));
                    None
                }
            },
            Expr::Load { buf, index, lanes } => {
                self.check_access(*buf, index, *lanes, "load");
                let dtype = self.kernel.buffers.get(buf.0 as usize)?.dtype;
                match (dtype, lanes) {
                    (DType::F32, 1) => Some(Ty::F32),
                    (DType::F32, 4) => Some(Ty::F32x4),
                    (DType::F32, 8) => Some(Ty::F32x8),
                    (DType::I64, 1) => Some(Ty::I64),
                    _ => {
                        self.error(format!(
                            "load of {} with {lanes} lanes",
                            self.buffer_name(*buf)
                        ));
                        None
                    }
                }
            }
            Expr::Unary(op, a) => {
                let t = self.expr_ty(a)?;
                let ok = match op {
                    UnOp::Neg | UnOp::Abs => t == Ty::I64 || float(t),
                    UnOp::ToF32 => t == Ty::I64,
                    UnOp::ToI64 => t == Ty::F32,
                    _ => float(t),
                };
                if !ok {
                    self.error(format!("{} cannot take {}", describe(e), t.name()));
                    return None;
                }
                Some(match op {
                    UnOp::ToF32 => Ty::F32,
                    UnOp::ToI64 => Ty::I64,
                    _ => t,
                })
            }
            Expr::Binary(op, a, b) => {
                let (ta, tb) = (self.expr_ty(a)?, self.expr_ty(b)?);
                match (ta, tb) {
                    (Ty::I64, Ty::I64) => {
                        if *op == BinOp::Pow {
                            self.error(format!("{}: pow takes floats", describe(e)));
                            return None;
                        }
                        if *op == BinOp::Div && !matches!(**b, Expr::Int(d) if d != 0) {
                            self.error(format!(
                                "{}: integer division needs a non-zero constant divisor",
                                describe(e)
                            ));
                            return None;
                        }
                        Some(Ty::I64)
                    }
                    (x, y) if float(x) && float(y) && x.join(y).is_some() => x.join(y),
                    _ => {
                        self.error(format!(
                            "{}: operands {} and {} do not match",
                            describe(e),
                            ta.name(),
                            tb.name()
                        ));
                        None
                    }
                }
            }
            Expr::Fma(a, b, c) => {
                let ts = [self.expr_ty(a)?, self.expr_ty(b)?, self.expr_ty(c)?];
                if !ts.iter().all(|t| float(*t)) {
                    self.error(format!("{}: fma takes floats", describe(e)));
                    return None;
                }
                let t = ts[0].join(ts[1]).and_then(|t| t.join(ts[2]));
                if t.is_none() {
                    self.error(format!("{}: fma mixes vector widths", describe(e)));
                }
                t
            }
            Expr::Cmp(_, a, b) => {
                let (ta, tb) = (self.expr_ty(a)?, self.expr_ty(b)?);
                match (ta, tb) {
                    (Ty::I64, Ty::I64) | (Ty::F32, Ty::F32) => Some(Ty::Bool),
                    (x, y) if float(x) && float(y) && x.join(y) == Some(Ty::F32x4) => {
                        Some(Ty::Boolx4)
                    }
                    _ => {
                        self.error(format!(
                            "{}: cannot compare {} with {}",
                            describe(e),
                            ta.name(),
                            tb.name()
                        ));
                        None
                    }
                }
            }
            Expr::Select(c, a, b) => {
                let tc = self.expr_ty(c)?;
                let (ta, tb) = (self.expr_ty(a)?, self.expr_ty(b)?);
                let t = match (ta, tb) {
                    (x, y) if x == y => x,
                    (x, y) if float(x) && float(y) => Ty::F32x4,
                    _ => {
                        self.error(format!(
                            "{}: branches {} and {} differ",
                            describe(e),
                            ta.name(),
                            tb.name()
                        ));
                        return None;
                    }
                };
                match (tc, t) {
                    // `select(a, b, false)` is `a && b`: conditions combine by selection.
                    (Ty::Bool, Ty::I64 | Ty::F32 | Ty::F32x4 | Ty::Bool) => Some(t),
                    (Ty::Boolx4, Ty::F32 | Ty::F32x4) => Some(Ty::F32x4),
                    _ => {
                        self.error(format!(
                            "{}: condition {} cannot select {}",
                            describe(e),
                            tc.name(),
                            t.name()
                        ));
                        None
                    }
                }
            }
            Expr::Clamp(a, lo, hi) => {
                if self.expr_ty(a)? != Ty::I64 || lo > hi {
                    self.error(format!("{}: clamp takes an i64 and lo <= hi", describe(e)));
                    return None;
                }
                Some(Ty::I64)
            }
            Expr::Splat(a) | Expr::Splat8(a) => {
                if self.expr_ty(a)? != Ty::F32 {
                    self.error(format!("{}: splat takes an f32", describe(e)));
                    return None;
                }
                Some(if matches!(e, Expr::Splat8(_)) {
                    Ty::F32x8
                } else {
                    Ty::F32x4
                })
            }
            Expr::Half(a, h) => {
                if self.expr_ty(a)? != Ty::F32x8 || *h > 1 {
                    self.error(format!("{}: half takes an f32x8 and 0 or 1", describe(e)));
                    return None;
                }
                Some(Ty::F32x4)
            }
            Expr::ReduceAdd(a) | Expr::ReduceMax(a) => {
                if self.expr_ty(a)? != Ty::F32x4 {
                    self.error(format!("{}: lane reductions take an f32x4", describe(e)));
                    return None;
                }
                Some(Ty::F32)
            }
            Expr::Shuffle(a, b, lanes) => {
                let (ta, tb) = (self.expr_ty(a)?, self.expr_ty(b)?);
                if ta != Ty::F32x4 || tb != Ty::F32x4 || lanes.iter().any(|&l| l > 7) {
                    self.error(format!(
                        "{}: shuffle takes two f32x4 and lanes 0..8",
                        describe(e)
                    ));
                    return None;
                }
                Some(Ty::F32x4)
            }
        }
    }

    /// The range of an `i64` expression.
    fn interval(&self, e: &Expr) -> Interval {
        match e {
            Expr::Int(v) => Interval::point(*v),
            Expr::Var(v) => self.vars.get(v).copied().unwrap_or(Interval::FULL),
            Expr::Local(l) => self.local_ranges.get(l).copied().unwrap_or(Interval::FULL),
            Expr::Load { buf, .. } => self
                .table_ranges
                .get(buf)
                .copied()
                .unwrap_or(Interval::FULL),
            Expr::Unary(UnOp::Neg, a) => {
                let i = self.interval(a);
                Interval {
                    lo: -i.hi,
                    hi: -i.lo,
                }
                .normalized()
            }
            Expr::Unary(UnOp::Abs, a) => {
                let i = self.interval(a);
                let (lo, hi) = if i.lo >= 0 {
                    (i.lo, i.hi)
                } else if i.hi <= 0 {
                    (-i.hi, -i.lo)
                } else {
                    (0, i.hi.max(-i.lo))
                };
                Interval { lo, hi }.normalized()
            }
            Expr::Binary(op, a, b) => {
                let (x, y) = (self.interval(a), self.interval(b));
                match op {
                    BinOp::Add => Interval {
                        lo: x.lo + y.lo,
                        hi: x.hi + y.hi,
                    }
                    .normalized(),
                    BinOp::Sub => Interval {
                        lo: x.lo - y.hi,
                        hi: x.hi - y.lo,
                    }
                    .normalized(),
                    BinOp::Mul => {
                        let corners = [
                            x.lo.saturating_mul(y.lo),
                            x.lo.saturating_mul(y.hi),
                            x.hi.saturating_mul(y.lo),
                            x.hi.saturating_mul(y.hi),
                        ];
                        Interval {
                            lo: *corners.iter().min().unwrap_or(&0),
                            hi: *corners.iter().max().unwrap_or(&0),
                        }
                        .normalized()
                    }
                    BinOp::Div => match **b {
                        Expr::Int(d) if d != 0 => {
                            let d = i128::from(d);
                            let (p, q) = (x.lo / d, x.hi / d);
                            Interval {
                                lo: p.min(q),
                                hi: p.max(q),
                            }
                        }
                        _ => Interval::FULL,
                    },
                    BinOp::Min => Interval {
                        lo: x.lo.min(y.lo),
                        hi: x.hi.min(y.hi),
                    },
                    BinOp::Max => Interval {
                        lo: x.lo.max(y.lo),
                        hi: x.hi.max(y.hi),
                    },
                    BinOp::Pow => Interval::FULL,
                }
            }
            Expr::Select(_, a, b) => {
                let (x, y) = (self.interval(a), self.interval(b));
                Interval {
                    lo: x.lo.min(y.lo),
                    hi: x.hi.max(y.hi),
                }
            }
            Expr::Clamp(a, lo, hi) => {
                let x = self.interval(a);
                let (lo, hi) = (i128::from(*lo), i128::from(*hi));
                Interval {
                    lo: x.lo.clamp(lo, hi),
                    hi: x.hi.clamp(lo, hi),
                }
            }
            _ => Interval::FULL,
        }
    }

    fn stmts(&mut self, stmts: &[Stmt], top_level: bool) {
        for (i, stmt) in stmts.iter().enumerate() {
            match stmt {
                Stmt::Loop(l) => {
                    if l.kind == LoopKind::Parallel && !(top_level && i == 0) {
                        self.error(format!(
                            "loop v{}: only the first top-level loop may be parallel",
                            l.var.0
                        ));
                    }
                    if l.step <= 0 {
                        self.error(format!(
                            "loop v{}: step {} is not positive",
                            l.var.0, l.step
                        ));
                        continue;
                    }
                    let index = l.var.0 as usize;
                    if index >= self.seen_vars.len() {
                        self.error(format!(
                            "loop v{}: variable beyond the kernel's {} variables",
                            l.var.0,
                            self.seen_vars.len()
                        ));
                        continue;
                    }
                    if std::mem::replace(&mut self.seen_vars[index], true) {
                        self.error(format!("loop v{}: variable bound twice", l.var.0));
                    }
                    let trips = l.trip_count();
                    let last = if trips > 0 {
                        l.start + (trips - 1) * l.step
                    } else {
                        l.start
                    };
                    self.vars.insert(
                        l.var,
                        Interval {
                            lo: i128::from(l.start),
                            hi: i128::from(last),
                        },
                    );
                    let was_live = self.live;
                    self.live = was_live && trips > 0;
                    self.stmts(&l.body, false);
                    self.live = was_live;
                    self.vars.remove(&l.var);
                }
                Stmt::Store { buf, index, value } => {
                    let vt = self.expr_ty(value);
                    let lanes = vt.map_or(1, Ty::lanes);
                    self.check_access(*buf, index, lanes, "store");
                    let Some(b) = self.kernel.buffers.get(buf.0 as usize) else {
                        continue;
                    };
                    if b.kind != BufferKind::Output {
                        self.error(format!(
                            "store to {}, which is not an output",
                            self.buffer_name(*buf)
                        ));
                    }
                    let ok = matches!(
                        (b.dtype, vt),
                        (DType::F32, Some(Ty::F32 | Ty::F32x4 | Ty::F32x8))
                            | (DType::I64, Some(Ty::I64))
                    );
                    if !ok && vt.is_some() {
                        self.error(format!(
                            "store of {} to {} buffer {}",
                            describe(value),
                            b.dtype,
                            self.buffer_name(*buf)
                        ));
                    }
                }
                Stmt::Declare { local, ty, init } => {
                    if self.locals.contains_key(local) || local.0 >= self.kernel.locals {
                        self.error(format!(
                            "local l{} declared twice or beyond the kernel's locals",
                            local.0
                        ));
                    }
                    if let Some(t) = self.expr_ty(init)
                        && t != *ty
                    {
                        self.error(format!(
                            "local l{}: {} declared with a {} value",
                            local.0,
                            ty.name(),
                            t.name()
                        ));
                    }
                    self.locals.insert(*local, *ty);
                    if *ty == Ty::I64 && !self.assigned.contains(local) {
                        let range = self.interval(init);
                        self.local_ranges.insert(*local, range);
                    }
                }
                Stmt::Assign { local, value } => {
                    let declared = self.locals.get(local).copied();
                    let t = self.expr_ty(value);
                    match (declared, t) {
                        (None, _) => {
                            self.error(format!("local l{} assigned before it is declared", local.0))
                        }
                        (Some(d), Some(t)) if d != t => self.error(format!(
                            "local l{}: {} assigned a {} value",
                            local.0,
                            d.name(),
                            t.name()
                        )),
                        _ => {}
                    }
                }
                Stmt::If {
                    cond,
                    then,
                    otherwise,
                } => {
                    if let Some(t) = self.expr_ty(cond)
                        && t != Ty::Bool
                    {
                        self.error(format!("if on {} of type {}", describe(cond), t.name()));
                    }
                    // Each branch sees the same bounds; its locals end with it.
                    for branch in [then, otherwise] {
                        let before: Vec<LocalId> = self.locals.keys().copied().collect();
                        self.stmts(branch, false);
                        self.locals.retain(|l, _| before.contains(l));
                        self.local_ranges.retain(|l, _| before.contains(l));
                    }
                }
            }
        }
    }
}

/// Every local that some `Assign` in `stmts` writes.
fn assigned_locals(stmts: &[Stmt]) -> std::collections::HashSet<LocalId> {
    let mut out = std::collections::HashSet::new();
    fn walk(stmts: &[Stmt], out: &mut std::collections::HashSet<LocalId>) {
        for s in stmts {
            match s {
                Stmt::Assign { local, .. } => {
                    out.insert(*local);
                }
                Stmt::Loop(l) => walk(&l.body, out),
                Stmt::If {
                    then, otherwise, ..
                } => {
                    walk(then, out);
                    walk(otherwise, out);
                }
                Stmt::Store { .. } | Stmt::Declare { .. } => {}
            }
        }
    }
    walk(stmts, &mut out);
    out
}

/// Verifies a kernel, returning every problem found.
pub fn verify(kernel: &Kernel) -> Result<(), Vec<String>> {
    let mut table_ranges = HashMap::new();
    for (i, b) in kernel.buffers.iter().enumerate() {
        if let BufferKind::Const(t) = &b.kind {
            if let Some(values) = t.as_i64()
                && let (Some(lo), Some(hi)) = (values.iter().min(), values.iter().max())
            {
                table_ranges.insert(
                    BufId(i as u32),
                    Interval {
                        lo: i128::from(*lo),
                        hi: i128::from(*hi),
                    },
                );
            }
            if t.len() != b.len || t.dtype() != b.dtype {
                return Err(vec![format!(
                    "constant buffer b{i} ({}) does not match its data",
                    b.name
                )]);
            }
        }
    }
    let mut v = Verifier {
        kernel,
        errors: Vec::new(),
        vars: HashMap::new(),
        seen_vars: vec![false; kernel.vars as usize],
        locals: HashMap::new(),
        local_ranges: HashMap::new(),
        assigned: assigned_locals(&kernel.body),
        table_ranges,
        live: true,
    };
    v.stmts(&kernel.body, true);
    if v.errors.is_empty() {
        Ok(())
    } else {
        Err(v.errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lower::ir::{BufferKind, Expr, KernelBuilder, LoopKind, Ty};

    fn copy_kernel(len: usize, offset: i64) -> Kernel {
        let mut k = KernelBuilder::new("copy");
        let x = k.buffer("x", DType::F32, len, BufferKind::Input);
        let y = k.buffer("y", DType::F32, len, BufferKind::Output);
        k.for_loop(0, len as i64, 1, LoopKind::Parallel, |k, i| {
            k.store(y, i.clone(), Expr::load(x, i.add(Expr::Int(offset))));
        });
        k.finish()
    }

    #[test]
    fn in_bounds_copy_passes_and_shifted_copy_fails() {
        assert!(verify(&copy_kernel(16, 0)).is_ok());
        let errors = verify(&copy_kernel(16, 1)).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("[1, 16]"), "{errors:?}");
    }

    #[test]
    fn clamped_indices_are_proven() {
        let mut k = KernelBuilder::new("pad");
        let x = k.buffer("x", DType::F32, 8, BufferKind::Input);
        let y = k.buffer("y", DType::F32, 10, BufferKind::Output);
        k.range(10, |k, i| {
            let src = i.clone().sub(Expr::Int(1));
            let inside = src.clone().cmp(crate::lower::ir::CmpOp::Ge, Expr::Int(0));
            let value = inside.select(Expr::load(x, src.clamp(0, 7)), Expr::Float(0.0));
            k.store(y, i, value);
        });
        assert_eq!(verify(&k.finish()), Ok(()));
    }

    #[test]
    fn vector_loads_need_room_for_four_lanes() {
        let mut k = KernelBuilder::new("v");
        let x = k.buffer("x", DType::F32, 10, BufferKind::Input);
        let y = k.buffer("y", DType::F32, 10, BufferKind::Output);
        k.for_loop(0, 10, 4, LoopKind::Serial, |k, i| {
            k.store(y, i.clone(), Expr::load4(x, i));
        });
        let errors = verify(&k.finish()).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
    }

    #[test]
    fn wide_vectors_need_room_for_eight_lanes_and_do_not_mix_widths() {
        let mut k = KernelBuilder::new("v8");
        let x = k.buffer("x", DType::F32, 20, BufferKind::Input);
        let y = k.buffer("y", DType::F32, 20, BufferKind::Output);
        k.for_loop(0, 16, 8, LoopKind::Serial, |k, i| {
            // In bounds: 8 lanes from 0 and 8; a half is an f32x4.
            let v = k.declare(Ty::F32x8, Expr::load8(x, i.clone()));
            let w = Expr::Local(v).fma(Expr::Float(2.0).splat8(), Expr::Float(1.0));
            k.store(y, i.clone(), w);
            k.store(y, i.clone(), Expr::Local(v).half(1));
        });
        assert_eq!(verify(&k.finish()), Ok(()));

        let mut k = KernelBuilder::new("v8_bad");
        let x = k.buffer("x", DType::F32, 20, BufferKind::Input);
        let y = k.buffer("y", DType::F32, 20, BufferKind::Output);
        k.for_loop(0, 20, 8, LoopKind::Serial, |k, i| {
            // 8 lanes from 16 run past 20; f32x4 + f32x8 mixes widths; a half of an f32x4.
            k.store(y, i.clone(), Expr::load8(x, i.clone()));
            let mixed = Expr::load4(x, Expr::Int(0)).add(Expr::load8(x, Expr::Int(0)));
            k.store(y, Expr::Int(0), mixed);
            k.store(y, Expr::Int(0), Expr::load4(x, Expr::Int(0)).half(0));
        });
        let errors = verify(&k.finish()).unwrap_err();
        assert!(errors.iter().any(|e| e.contains("8 lane")), "{errors:?}");
        assert!(
            errors.iter().any(|e| e.contains("do not match")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e.contains("half takes")),
            "{errors:?}"
        );
    }

    #[test]
    fn type_and_scope_errors_are_all_reported() {
        let mut k = KernelBuilder::new("bad");
        let x = k.buffer("x", DType::F32, 4, BufferKind::Input);
        k.range(4, |k, i| {
            k.store(x, i.clone(), Expr::Int(1));
            let l = k.declare(Ty::F32, Expr::Int(0));
            k.assign(l, Expr::Float(1.0));
        });
        let errors = verify(&k.finish()).unwrap_err();
        assert!(
            errors.iter().any(|e| e.contains("not an output")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e.contains("f32 buffer")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e.contains("declared with a i64")),
            "{errors:?}"
        );
    }
}
