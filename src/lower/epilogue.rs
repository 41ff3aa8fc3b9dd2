//! Epilogues: elementwise ops applied in registers to an anchor kernel's value before its
//! single store (kernel fusion; the groups come from [`crate::runtime::fuse`]).
//!
//! An [`Epilogue`] is the tail of a fused group: a list of [`EpilogueStep`]s, each taking the
//! running value (the anchor's result, then each step's) to the next. A binary step's other
//! operand is an *extra* operand of the group: a buffer bound with [`super::Arg::Extra`],
//! which broadcasts to the output in one of three simple ways ([`Broadcast`]): one scalar,
//! one value per channel (axis 1), or the output's own shape (a residual). An empty
//! epilogue is the anchor alone, exactly as unfused.
//!
//! Anchors that take an epilogue: every elementwise op (the extras become more operands
//! of its map kernel) and the convolution (which loads the extras itself at the position
//! and channel it stores, see [`Epilogue::load`]). The step values are the same
//! expressions the unfused elementwise kernels compute (`elementwise::activation`
//! and the binary and clip formulas), so fusing changes no result.

use super::conv::plus;
use super::elementwise::activation;
use super::ir::{BufId, CmpOp};
use super::{Arg, BufferKind, Expr, KernelBuilder, Ty};
use crate::graph::op::{Binary, Unary};
use crate::tensor::DType;

/// One elementwise op applied to the running value.
#[derive(Clone, Debug, PartialEq)]
pub enum EpilogueStep {
    /// An activation of the running value.
    Unary(Unary),
    /// A binary op of the running value and extra operand `extra`.
    Binary {
        /// The op.
        op: Binary,
        /// Index into [`Epilogue::extras`].
        extra: usize,
        /// Whether the running value is the left operand (else the right one).
        value_left: bool,
    },
    /// Clip to constant bounds (raise to `min`, then lower to `max`, as the interpreter).
    Clip {
        /// Lower bound.
        min: Option<f32>,
        /// Upper bound.
        max: Option<f32>,
    },
}

/// How an extra operand broadcasts to the output `[N, C, ...]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Broadcast {
    /// One element.
    Scalar,
    /// One element per channel (axis 1 of the output).
    Channel,
    /// The output's own shape.
    Full,
}

impl Broadcast {
    /// How `shape` broadcasts to `out`, if in one of the supported ways.
    pub fn of(shape: &[usize], out: &[usize]) -> Option<Broadcast> {
        let len: usize = shape.iter().product();
        if len == 1 && shape.len() <= out.len() {
            return Some(Broadcast::Scalar);
        }
        if shape == out {
            return Some(Broadcast::Full);
        }
        let pad = out.len().checked_sub(shape.len())?;
        let channels = *out.get(1)?;
        let per_channel = shape
            .iter()
            .enumerate()
            .all(|(i, &d)| if pad + i == 1 { d == channels } else { d == 1 });
        (per_channel && pad <= 1).then_some(Broadcast::Channel)
    }
}

/// An extra operand of a fused group.
#[derive(Clone, Debug, PartialEq)]
pub struct ExtraOperand {
    /// Buffer name for dumps (the graph value).
    pub name: String,
    /// Its shape (it broadcasts to the output as [`ExtraOperand::broadcast`] says).
    pub shape: Vec<usize>,
    /// How it broadcasts.
    pub broadcast: Broadcast,
}

impl ExtraOperand {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether it has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where an anchor stores: the flat output index of the first lane and the output
/// channel (the same for every lane).
#[derive(Clone, Debug)]
pub struct StoreAt {
    /// Flat element index of the first lane in the output.
    pub index: Expr,
    /// The output channel (axis 1).
    pub channel: Expr,
}

/// The elementwise tail of a fused group.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Epilogue {
    /// The steps, in order.
    pub steps: Vec<EpilogueStep>,
    /// The extra operands the binary steps read.
    pub extras: Vec<ExtraOperand>,
}

impl Epilogue {
    /// No steps: the anchor alone.
    pub fn empty() -> Epilogue {
        Epilogue::default()
    }

    /// Whether there are no steps.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The bindings of the extra operands' buffers, in order.
    pub fn args(&self) -> Vec<Arg> {
        (0..self.extras.len()).map(Arg::Extra).collect()
    }

    /// Declares one input buffer per extra operand (bind them with [`Epilogue::args`]).
    pub fn declare(&self, k: &mut KernelBuilder) -> Vec<BufId> {
        self.extras
            .iter()
            .map(|e| k.buffer(e.name.clone(), DType::F32, e.len(), BufferKind::Input))
            .collect()
    }

    /// Whether every step can run on `f32x8` values (`lanes` 8 in [`Epilogue::store`]):
    /// ReLU, the hard sigmoid and swish, clip, and adding, subtracting or multiplying an
    /// extra operand. The others (their inline math is written for `f32x4`) run on each
    /// half of an `f32x8`.
    pub fn wide(&self) -> bool {
        self.steps.iter().all(|step| match step {
            EpilogueStep::Unary(op) => matches!(
                op,
                Unary::Relu | Unary::HardSigmoid { .. } | Unary::HardSwish
            ),
            EpilogueStep::Binary { op, .. } => {
                matches!(op, Binary::Add | Binary::Sub | Binary::Mul)
            }
            EpilogueStep::Clip { .. } => true,
        })
    }

    /// The extra operands' values at a store position, `lanes` (1, 4 or 8) wide: scalars
    /// and per-channel values are loaded once and splatted, residuals are loaded at the
    /// index.
    pub fn load(&self, bufs: &[BufId], at: &StoreAt, lanes: u8) -> Vec<Expr> {
        self.extras
            .iter()
            .zip(bufs)
            .map(|(e, &buf)| {
                let one = |index: Expr| {
                    let v = Expr::load(buf, index);
                    match lanes {
                        4 => v.splat(),
                        8 => v.splat8(),
                        _ => v,
                    }
                };
                match e.broadcast {
                    Broadcast::Scalar => one(Expr::Int(0)),
                    Broadcast::Channel => one(at.channel.clone()),
                    Broadcast::Full => Expr::Load {
                        buf,
                        index: Box::new(at.index.clone()),
                        lanes,
                    },
                }
            })
            .collect()
    }

    /// The value after every step, given the anchor's `value` and the extra operands'
    /// values (`lanes` wide, as from [`Epilogue::load`]; 8 only where [`Epilogue::wide`]).
    /// Each intermediate value is kept in a local, so steps that use it twice do not
    /// recompute it.
    pub fn apply(&self, k: &mut KernelBuilder, value: Expr, extras: &[Expr], lanes: u8) -> Expr {
        let ty = match lanes {
            4 => Ty::F32x4,
            8 => Ty::F32x8,
            _ => Ty::F32,
        };
        let mut value = value;
        for (i, step) in self.steps.iter().enumerate() {
            if i > 0 {
                value = Expr::Local(k.declare(ty, value));
            }
            value = match step {
                EpilogueStep::Unary(op) => activation(*op, value),
                EpilogueStep::Binary {
                    op,
                    extra,
                    value_left,
                } => {
                    let other = extras.get(*extra).cloned().unwrap_or(Expr::Float(0.0));
                    let (p, q) = if *value_left {
                        (value, other)
                    } else {
                        (other, value)
                    };
                    binary_f32(*op, p, q)
                }
                EpilogueStep::Clip { min, max } => {
                    let mut y = value;
                    if let Some(lo) = min {
                        y = Expr::Float(*lo).max(y);
                    }
                    if let Some(hi) = max {
                        y = Expr::Float(*hi).min(y);
                    }
                    y
                }
            };
        }
        value
    }

    /// Stores `value` (`lanes` wide: 1, 4, or 8 where [`Epilogue::wide`]) into output
    /// buffer `y` at `at`, through the steps (the extra operands read from `bufs`, as
    /// declared by [`Epilogue::declare`]).
    pub fn store(
        &self,
        k: &mut KernelBuilder,
        bufs: &[BufId],
        y: BufId,
        at: &StoreAt,
        value: Expr,
        lanes: u8,
    ) {
        let value = if self.is_empty() {
            value
        } else {
            let extras = self.load(bufs, at, lanes);
            self.apply(k, value, &extras, lanes)
        };
        k.store(y, at.index.clone(), value);
    }

    /// Stores the `f32x8` `value` into `y` from element `index` (of output channel
    /// `channel`) through the steps: as one vector where they can run on it
    /// ([`Epilogue::wide`]), else each half as an `f32x4`.
    pub fn store8(
        &self,
        k: &mut KernelBuilder,
        bufs: &[BufId],
        y: BufId,
        index: Expr,
        channel: Expr,
        value: Expr,
    ) {
        let index = match index {
            Expr::Local(_) | Expr::Int(_) => index,
            other => Expr::Local(k.declare(Ty::I64, other)),
        };
        if self.wide() {
            let at = StoreAt { index, channel };
            self.store(k, bufs, y, &at, value, 8);
            return;
        }
        let value = match value {
            Expr::Local(_) => value,
            other => Expr::Local(k.declare(Ty::F32x8, other)),
        };
        for h in 0..2u8 {
            let at = StoreAt {
                index: plus(index.clone(), 4 * h as i64),
                channel: channel.clone(),
            };
            self.store(k, bufs, y, &at, value.clone().half(h), 4);
        }
    }
}

/// An `f32` binary op of two values (`q` used once, `p` twice for PRelu).
pub(super) fn binary_f32(op: Binary, p: Expr, q: Expr) -> Expr {
    match op {
        Binary::Add => p.add(q),
        Binary::Sub => p.sub(q),
        Binary::Mul => p.mul(q),
        Binary::Div => p.div(q),
        Binary::Pow => Expr::Binary(super::ir::BinOp::Pow, Box::new(p), Box::new(q)),
        // `p < 0 ? q * p : p`, as the interpreter (NaN stays NaN).
        Binary::PRelu => p
            .clone()
            .cmp(CmpOp::Lt, Expr::Float(0.0))
            .select(q.mul(p.clone()), p),
    }
}

#[cfg(test)]
mod tests {
    use super::Broadcast;

    #[test]
    fn broadcasts_are_scalar_per_channel_or_full() {
        let out = [2, 8, 5, 5];
        assert_eq!(Broadcast::of(&[], &out), Some(Broadcast::Scalar));
        assert_eq!(Broadcast::of(&[1, 1], &out), Some(Broadcast::Scalar));
        assert_eq!(Broadcast::of(&[8, 1, 1], &out), Some(Broadcast::Channel));
        assert_eq!(Broadcast::of(&[1, 8, 1, 1], &out), Some(Broadcast::Channel));
        assert_eq!(Broadcast::of(&[2, 8, 5, 5], &out), Some(Broadcast::Full));
        // [8] broadcasts along the last axis, not the channels.
        assert_eq!(Broadcast::of(&[8], &out), None);
        assert_eq!(Broadcast::of(&[2, 8, 1, 1], &out), None);
        assert_eq!(Broadcast::of(&[1, 1, 5, 5], &out), None);
        assert_eq!(Broadcast::of(&[8, 5, 5], &out), None);
        assert_eq!(Broadcast::of(&[3], &[3]), Some(Broadcast::Full));
        assert_eq!(Broadcast::of(&[3, 1], &[3]), None);
    }
}
