//! Printer of the loop-nest IR (`fovea dump-ir --stage loops`).
//!
//! ```text
//! kernel relu(b0: f32[64] in x, b1: f32[64] out y) {
//!   parallel for v0 in 0..64 step 4 {
//!     b1[v0] = max(load4(b0, v0), 0.0)
//!   }
//! }
//! ```
//!
//! The text is also the kernel's identity for the cache: two kernels that print the same
//! compile to the same code (constant buffers print their type and length, not their data).

use std::fmt::{self, Write};

use super::ir::{BinOp, BufferKind, CmpOp, Expr, Kernel, LoopKind, Stmt, UnOp};
use crate::graph::op::FloatRepr;

fn unop_name(op: UnOp) -> &'static str {
    match op {
        UnOp::Neg => "neg",
        UnOp::Abs => "abs",
        UnOp::Sqrt => "sqrt",
        UnOp::Floor => "floor",
        UnOp::Ceil => "ceil",
        UnOp::Round => "round",
        UnOp::Exp => "exp",
        UnOp::Tanh => "tanh",
        UnOp::Sigmoid => "sigmoid",
        UnOp::Erf => "erf",
        UnOp::ToF32 => "to_f32",
        UnOp::ToI64 => "to_i64",
    }
}

fn cmp_name(op: CmpOp) -> &'static str {
    match op {
        CmpOp::Lt => "<",
        CmpOp::Le => "<=",
        CmpOp::Gt => ">",
        CmpOp::Ge => ">=",
        CmpOp::Eq => "==",
        CmpOp::Ne => "!=",
    }
}

/// Writes an expression.
pub fn write_expr(out: &mut String, e: &Expr) {
    match e {
        Expr::Int(v) => {
            let _ = write!(out, "{v}");
        }
        Expr::Float(v) => {
            let _ = write!(out, "{}", FloatRepr(*v));
        }
        Expr::Var(v) => {
            let _ = write!(out, "v{}", v.0);
        }
        Expr::Local(l) => {
            let _ = write!(out, "l{}", l.0);
        }
        Expr::Load { buf, index, lanes } => {
            let _ = write!(
                out,
                "{}(b{}, ",
                if *lanes == 4 { "load4" } else { "load" },
                buf.0
            );
            write_expr(out, index);
            out.push(')');
        }
        Expr::Unary(op, a) => {
            out.push_str(unop_name(*op));
            out.push('(');
            write_expr(out, a);
            out.push(')');
        }
        Expr::Binary(op, a, b) => {
            let infix = match op {
                BinOp::Add => Some(" + "),
                BinOp::Sub => Some(" - "),
                BinOp::Mul => Some(" * "),
                BinOp::Div => Some(" / "),
                BinOp::Min | BinOp::Max | BinOp::Pow => None,
            };
            match infix {
                Some(sym) => {
                    out.push('(');
                    write_expr(out, a);
                    out.push_str(sym);
                    write_expr(out, b);
                    out.push(')');
                }
                None => {
                    out.push_str(match op {
                        BinOp::Min => "min(",
                        BinOp::Max => "max(",
                        _ => "pow(",
                    });
                    write_expr(out, a);
                    out.push_str(", ");
                    write_expr(out, b);
                    out.push(')');
                }
            }
        }
        Expr::Fma(a, b, c) => {
            out.push_str("fma(");
            write_expr(out, a);
            out.push_str(", ");
            write_expr(out, b);
            out.push_str(", ");
            write_expr(out, c);
            out.push(')');
        }
        Expr::Cmp(op, a, b) => {
            out.push('(');
            write_expr(out, a);
            let _ = write!(out, " {} ", cmp_name(*op));
            write_expr(out, b);
            out.push(')');
        }
        Expr::Select(c, a, b) => {
            out.push_str("select(");
            write_expr(out, c);
            out.push_str(", ");
            write_expr(out, a);
            out.push_str(", ");
            write_expr(out, b);
            out.push(')');
        }
        Expr::Clamp(a, lo, hi) => {
            out.push_str("clamp(");
            write_expr(out, a);
            let _ = write!(out, ", {lo}, {hi})");
        }
        Expr::Splat(a) => {
            out.push_str("splat(");
            write_expr(out, a);
            out.push(')');
        }
        Expr::Splat8(a) => {
            out.push_str("splat8(");
            write_expr(out, a);
            out.push(')');
        }
        Expr::Half(a, h) => {
            out.push_str("half(");
            write_expr(out, a);
            let _ = write!(out, ", {h})");
        }
        Expr::ReduceAdd(a) => {
            out.push_str("reduce_add(");
            write_expr(out, a);
            out.push(')');
        }
        Expr::ReduceMax(a) => {
            out.push_str("reduce_max(");
            write_expr(out, a);
            out.push(')');
        }
        Expr::Shuffle(a, b, lanes) => {
            out.push_str("shuffle(");
            write_expr(out, a);
            out.push_str(", ");
            write_expr(out, b);
            let _ = write!(out, ", {lanes:?})");
        }
    }
}

fn write_stmts(out: &mut String, stmts: &[Stmt], depth: usize) {
    for stmt in stmts {
        let indent = "  ".repeat(depth);
        out.push_str(&indent);
        match stmt {
            Stmt::Loop(l) => {
                let kind = match l.kind {
                    LoopKind::Serial => "",
                    LoopKind::Parallel => "parallel ",
                    LoopKind::Unrolled => "unrolled ",
                };
                let _ = write!(out, "{kind}for v{} in {}..{}", l.var.0, l.start, l.end);
                if l.step != 1 {
                    let _ = write!(out, " step {}", l.step);
                }
                out.push_str(" {\n");
                write_stmts(out, &l.body, depth + 1);
                out.push_str(&indent);
                out.push_str("}\n");
            }
            Stmt::Store { buf, index, value } => {
                let _ = write!(out, "b{}[", buf.0);
                write_expr(out, index);
                out.push_str("] = ");
                write_expr(out, value);
                out.push('\n');
            }
            Stmt::Declare { local, ty, init } => {
                let _ = write!(out, "l{}: {} = ", local.0, ty.name());
                write_expr(out, init);
                out.push('\n');
            }
            Stmt::Assign { local, value } => {
                let _ = write!(out, "l{} = ", local.0);
                write_expr(out, value);
                out.push('\n');
            }
            Stmt::If {
                cond,
                then,
                otherwise,
            } => {
                out.push_str("if ");
                write_expr(out, cond);
                out.push_str(" {\n");
                write_stmts(out, then, depth + 1);
                out.push_str(&indent);
                if otherwise.is_empty() {
                    out.push_str("}\n");
                } else {
                    out.push_str("} else {\n");
                    write_stmts(out, otherwise, depth + 1);
                    out.push_str(&indent);
                    out.push_str("}\n");
                }
            }
        }
    }
}

/// The kernel's signature and body, without constant data.
pub fn print_kernel(kernel: &Kernel) -> String {
    let mut out = String::new();
    let _ = write!(out, "kernel {}(", kernel.name);
    for (i, b) in kernel.buffers.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let kind = match b.kind {
            BufferKind::Input => "in",
            BufferKind::Output => "out",
            BufferKind::Const(_) => "const",
        };
        let _ = write!(out, "b{i}: {}[{}] {kind} {}", b.dtype, b.len, b.name);
    }
    out.push_str(") {\n");
    if let Some(schedule) = &kernel.schedule {
        let _ = writeln!(out, "  // schedule: {schedule}");
    }
    write_stmts(&mut out, &kernel.body, 1);
    out.push_str("}\n");
    out
}

/// The kernel's code without names: what determines the machine code (the cache key).
pub fn code_key(kernel: &Kernel) -> String {
    let mut out = String::new();
    for b in &kernel.buffers {
        let kind = match b.kind {
            BufferKind::Const(_) => "c",
            _ => "m",
        };
        let _ = write!(out, "{}[{}]{kind},", b.dtype, b.len);
    }
    out.push('\n');
    if let Some(schedule) = &kernel.schedule {
        let _ = writeln!(out, "schedule {schedule}");
    }
    write_stmts(&mut out, &kernel.body, 0);
    out
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&print_kernel(self))
    }
}
