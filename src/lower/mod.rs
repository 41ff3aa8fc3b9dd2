//! Lowering: graph nodes with concrete shapes → loop-nest kernels.
//!
//! [`lower_node`] turns one node, whose operand shapes are all concrete, into one or more
//! [`Kernel`]s plus the binding of each kernel buffer to the node's inputs, outputs or
//! scratch buffers. Each op family has its own file; lowering never changes what is
//! computed, only how (the interpreter is the reference).
//!
//! Conventions every lowering follows:
//! - tensors are dense row-major (NCHW) flat buffers, exactly as the interpreter's;
//! - a node's operands are bound with [`Arg::Input`] / [`Arg::Output`] (constants such as
//!   weights are inputs too: the runtime passes their data); tables computed at compile time
//!   (index maps, interpolation weights) are [`BufferKind::Const`] buffers bound with
//!   [`Arg::Const`];
//! - the outermost loop over independent work is [`LoopKind::Parallel`] when the kernel is
//!   large enough to split (results must not depend on how it is split);
//! - inner loops over contiguous memory use `f32x4` loads and stores with a scalar tail;
//! - every kernel passes [`verify::verify`]: out-of-range positions (padding) use clamped
//!   indices and selects.

pub mod epilogue;
pub mod ir;
pub mod print;
pub mod verify;

mod banded;
mod conv;
mod depthwise;
mod direct_conv;
mod elementwise;
mod linalg;
mod movement;
mod pointwise;
mod pool;
mod reduce;
mod resize;
mod winograd;

use std::sync::Arc;

pub use epilogue::Epilogue;
pub use ir::{BufferKind, Expr, Kernel, KernelBuilder, LoopKind, Stmt, Ty};

use crate::error::{Error, Result};
use crate::graph::op::Op;
use crate::tensor::{DType, Tensor};

/// One operand of a node, with its concrete type.
#[derive(Clone, Debug)]
pub struct Operand {
    /// Element type.
    pub dtype: DType,
    /// Concrete shape.
    pub shape: Vec<usize>,
    /// The data, if the operand is a constant.
    pub value: Option<Arc<Tensor>>,
}

impl Operand {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the operand has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A node as lowering sees it: op, operands and results, all with concrete shapes.
#[derive(Clone, Debug)]
pub struct NodeInfo<'a> {
    /// The node's name (kernels are named after it).
    pub name: &'a str,
    /// The op.
    pub op: &'a Op,
    /// Inputs (`None` for absent optional inputs).
    pub inputs: Vec<Option<Operand>>,
    /// Outputs (`value` is always `None`).
    pub outputs: Vec<Operand>,
    /// Choices the compiler's options make for lowering.
    pub options: LowerOptions,
    /// Which of the node's tensors are stored in blocks of 8 channels (convolutions only).
    pub blocked: Blocked,
}

/// Which of a convolution's tensors (`[N, C, H, W]`, `C` a multiple of 8) are stored in
/// blocks of 8 channels, `[N][C / 8][H · W][8]`, instead of one plane per channel: the
/// layout a 1×1 kernel's tiles read 2 lines of per 8 channels instead of 8, which the
/// plan gives a tensor when every kernel writing it and every kernel reading it can store
/// and load it so (see `runtime::layout`). Only the register-blocked direct kernel reads
/// such an input (1×1 kernels over flat rows); it and Winograd's write such an output,
/// without per-channel or residual operands in their epilogue. A lowering that cannot
/// honour the layout fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Blocked {
    /// Input 0 is stored in blocks of 8 channels.
    pub input: bool,
    /// Output 0 is stored in blocks of 8 channels.
    pub output: bool,
}

impl Blocked {
    /// Whether any tensor is blocked.
    pub fn any(self) -> bool {
        self.input || self.output
    }
}

/// Which algorithm ungrouped convolutions with output channels a multiple of 8 use where
/// Winograd applies: 2×2, 3×3 and 4×4 kernels at stride 1, and 3×3 to 8×8 kernels at
/// stride 2 (over the four phases of their input, as 2×2 to 4×4 kernels). Convolutions
/// Winograd does not apply to always use the direct kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Winograd {
    /// Per layer, the cheapest of F(4×4, r×r), F(2×2, 3×3), F(7×7, 3×3), F(7×7, 2×2)
    /// (2×2 kernels, and 3×3 and 4×4 ones at stride 2) and the direct kernel by a cost
    /// model of their arithmetic and of the transformed weights' memory traffic (chosen as
    /// for one thread, so that results do not depend on the thread count).
    #[default]
    Auto,
    /// Never: the direct kernel.
    Off,
    /// F(2×2, 3×3) wherever it applies (3×3 kernels, and 5×5 and 6×6 ones at stride 2;
    /// 16 points per 4 outputs).
    F2x2,
    /// F(4×4, r×r) wherever it applies (36 points per 16 outputs for 3×3 kernels).
    F4x4,
    /// F(7×7, 3×3) or F(7×7, 2×2) wherever they apply (3×3 kernels at stride 1: 81 points
    /// per 49 outputs; 2×2 kernels at stride 1, and 3×3 and 4×4 ones at stride 2 over their
    /// input's phases: 64 points per 49 outputs and channel).
    F7x7,
}

/// Compiler options that change how nodes are lowered (never what they compute).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LowerOptions {
    /// Whether and how convolutions use Winograd.
    pub winograd: Winograd,
    /// The threads a run's kernels may use: kernels split their work into at least this
    /// many parallel iterations where they can.
    pub threads: usize,
}

impl Default for LowerOptions {
    fn default() -> LowerOptions {
        LowerOptions {
            winograd: Winograd::Auto,
            threads: 1,
        }
    }
}

impl NodeInfo<'_> {
    /// Input `i`, which must be present.
    pub fn input(&self, i: usize) -> Result<&Operand> {
        self.inputs.get(i).and_then(Option::as_ref).ok_or_else(|| {
            Error::internal(format!(
                "node {} ({}): input {i} missing at lowering",
                self.name,
                self.op.name()
            ))
        })
    }

    /// Optional input `i`.
    pub fn optional(&self, i: usize) -> Option<&Operand> {
        self.inputs.get(i).and_then(Option::as_ref)
    }

    /// The values of a constant `i64` operand (shape-like operands are constants after
    /// specialisation).
    pub fn const_ints(&self, i: usize) -> Result<Option<Vec<i64>>> {
        match self.optional(i) {
            None => Ok(None),
            Some(o) => match &o.value {
                Some(t) => match t.as_i64() {
                    Some(v) => Ok(Some(v.to_vec())),
                    None => Err(self.unsupported(&format!("input {i} must be i64"))),
                },
                None => {
                    Err(self.unsupported(&format!("input {i} must be a compile-time constant")))
                }
            },
        }
    }

    /// An error for an operand combination lowering does not handle.
    pub fn unsupported(&self, why: &str) -> Error {
        Error::node(self.name, self.op.name(), format!("cannot compile: {why}"))
    }
}

/// What a kernel buffer is bound to at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Arg {
    /// The node's input `i`.
    Input(usize),
    /// The node's output `i`.
    Output(usize),
    /// Scratch buffer `i` of [`Lowered::scratch`] (written by an earlier kernel of the node).
    Scratch(usize),
    /// The kernel's own constant data ([`BufferKind::Const`]).
    Const,
    /// Extra operand `i` of a fused group ([`epilogue::Epilogue::extras`]).
    Extra(usize),
    /// Input `i` of the group's prologue node (the producer a banded kernel computes
    /// itself, see [`lower_banded`]).
    Prologue(usize),
}

/// A kernel and the binding of each of its buffers (same order as `kernel.buffers`).
#[derive(Clone, Debug)]
pub struct LoweredKernel {
    /// The kernel.
    pub kernel: Kernel,
    /// One binding per buffer.
    pub args: Vec<Arg>,
}

/// The kernels computing one node, run in order.
#[derive(Clone, Debug, Default)]
pub struct Lowered {
    /// The kernels.
    pub kernels: Vec<LoweredKernel>,
    /// Scratch buffers (dtype, element count) the kernels share.
    pub scratch: Vec<(DType, usize)>,
}

impl Lowered {
    /// A node computed by a single kernel.
    pub fn single(kernel: Kernel, args: Vec<Arg>) -> Lowered {
        Lowered {
            kernels: vec![LoweredKernel { kernel, args }],
            scratch: Vec::new(),
        }
    }
}

/// Lowers one node to kernels. Every kernel is verified; a verifier failure is an internal
/// error (a bug in a lowering).
pub fn lower_node(node: &NodeInfo<'_>) -> Result<Lowered> {
    lower_group(node, &Epilogue::empty())
}

/// Whether [`lower_group`] can compile `op` with a non-empty epilogue (the anchors of fused
/// groups): the elementwise ops and the convolution.
pub fn takes_epilogue(op: &Op) -> bool {
    matches!(
        op,
        Op::Unary(_)
            | Op::Binary(_)
            | Op::Clip
            | Op::BatchNorm { .. }
            | Op::Cast { .. }
            | Op::Conv(_)
    )
}

/// Lowers a fused group: the anchor node `node`, whose kernel applies `epilogue` to its
/// value before storing it (bound to [`Arg::Output`]`(0)`, which the runtime binds to the
/// group's last output). An empty epilogue is [`lower_node`]. Every kernel is verified.
pub fn lower_group(node: &NodeInfo<'_>, epilogue: &Epilogue) -> Result<Lowered> {
    let bad_extra = epilogue.steps.iter().any(|step| {
        matches!(step, epilogue::EpilogueStep::Binary { extra, .. } if *extra >= epilogue.extras.len())
    });
    if bad_extra {
        return Err(Error::internal(format!(
            "node {} ({}): an epilogue step reads a missing extra operand",
            node.name,
            node.op.name()
        )));
    }
    if node.blocked.any() && !matches!(node.op, Op::Conv(_)) {
        return Err(Error::internal(format!(
            "node {} ({}): only convolutions take tensors in blocks of 8 channels",
            node.name,
            node.op.name()
        )));
    }
    if !epilogue.is_empty() && !takes_epilogue(node.op) {
        return Err(Error::internal(format!(
            "node {} ({}): fused with an epilogue but cannot apply one",
            node.name,
            node.op.name()
        )));
    }
    let lowered = match node.op {
        Op::Unary(_) | Op::Binary(_) | Op::Clip | Op::BatchNorm { .. } | Op::Cast { .. } => {
            elementwise::lower(node, epilogue)?
        }
        Op::Softmax { .. } | Op::ReduceMean { .. } | Op::GlobalAveragePool | Op::GlobalMaxPool => {
            reduce::lower(node)?
        }
        Op::Conv(_) | Op::ConvTranspose(_) => conv::lower(node, epilogue)?,
        Op::MaxPool(_) | Op::AveragePool(_) => pool::lower(node)?,
        Op::Gemm { .. } | Op::MatMul => linalg::lower(node)?,
        Op::Resize(_) => resize::lower(node)?,
        Op::Flatten { .. }
        | Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Concat { .. }
        | Op::Split { .. }
        | Op::Slice
        | Op::Pad { .. }
        | Op::Squeeze
        | Op::Unsqueeze
        | Op::Identity
        | Op::Dropout
        | Op::Shape { .. }
        | Op::Gather { .. } => movement::lower(node)?,
    };
    verified(node, lowered)
}

/// The minimum size of the expanded tensor for which [`lower_banded`] fuses an expansion
/// into the depthwise convolution that reads it.
pub const BANDED_MIN_BYTES: usize = banded::MIN_INTERMEDIATE_BYTES;

/// Lowers a depthwise convolution `node` (applying `epilogue`) together with the 1×1
/// convolution `expand` (applying `expand_epilogue`) whose output is its input, in one
/// kernel over bands of output rows that never stores the expanded tensor whole (see
/// `banded.rs`); `Ok(None)` where that kernel does not apply. The kernel binds the
/// expansion's input with [`Arg::Prologue`]. Every kernel is verified.
pub fn lower_banded(
    expand: &NodeInfo<'_>,
    expand_epilogue: &Epilogue,
    node: &NodeInfo<'_>,
    epilogue: &Epilogue,
) -> Result<Option<Lowered>> {
    let lowered = conv::with_direct(expand, expand_epilogue, |e| {
        conv::with_direct(node, epilogue, |d| banded::lower(node, e, d))
            .ok()
            .flatten()
    })?;
    lowered.map(|l| verified(node, l)).transpose()
}

/// `lowered` once every kernel has as many bindings as buffers and passes the loop
/// verifier (an internal error otherwise: a bug in a lowering).
fn verified(node: &NodeInfo<'_>, lowered: Lowered) -> Result<Lowered> {
    for lk in &lowered.kernels {
        if lk.args.len() != lk.kernel.buffers.len() {
            return Err(Error::internal(format!(
                "node {} ({}): kernel {} has {} buffers but {} bindings",
                node.name,
                node.op.name(),
                lk.kernel.name,
                lk.kernel.buffers.len(),
                lk.args.len()
            )));
        }
        if let Err(problems) = verify::verify(&lk.kernel) {
            return Err(Error::internal(format!(
                "node {} ({}): kernel {} fails the loop verifier:\n  {}\n{}",
                node.name,
                node.op.name(),
                lk.kernel.name,
                problems.join("\n  "),
                lk.kernel
            )));
        }
    }
    Ok(lowered)
}

/// Test support shared by the lowering tests of every op family.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use super::{Lowered, NodeInfo, Operand, lower_node};
    use crate::graph::op::Op;
    use crate::tensor::Tensor;

    /// Lowers `op` on `inputs` (each a tensor and whether it is a compile-time constant;
    /// `None` for an absent input). Returns the lowering and the interpreter's outputs,
    /// which give the output shapes and the expected values.
    pub(crate) fn lower_with_reference(
        op: &Op,
        inputs: &[Option<(&Tensor, bool)>],
        n_outputs: usize,
    ) -> (Lowered, Vec<Tensor>) {
        let refs: Vec<Option<&Tensor>> = inputs.iter().map(|i| i.map(|(t, _)| t)).collect();
        let expected = crate::interp::eval(op, "n", &refs, n_outputs)
            .unwrap_or_else(|e| panic!("interpreter: {e}"));
        let operand = |t: &Tensor, value: Option<Arc<Tensor>>| Operand {
            dtype: t.dtype(),
            shape: t.shape().to_vec(),
            value,
        };
        let node = NodeInfo {
            name: "n",
            op,
            inputs: inputs
                .iter()
                .map(|i| i.map(|(t, constant)| operand(t, constant.then(|| Arc::new(t.clone())))))
                .collect(),
            outputs: expected.iter().map(|t| operand(t, None)).collect(),
            options: super::LowerOptions::default(),
            blocked: super::Blocked::default(),
        };
        let lowered = lower_node(&node).unwrap_or_else(|e| panic!("{e}"));
        (lowered, expected)
    }
}
