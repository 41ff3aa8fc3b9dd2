//! The reference interpreter: runs the graph IR op by op on concrete tensors.
//!
//! It follows the ONNX specification in plain, readable Rust (NCHW, no blocking, no
//! threads) and is the oracle every compiled result is checked against, and the baseline
//! every benchmark reports. It depends only on [`crate::graph`] and [`crate::tensor`].
//!
//! Each op family lives in its own file; [`eval`] dispatches to them. Op functions return
//! `Result<_, String>` with a message about the operands; [`eval`] adds the node and op.

mod conv;
mod elementwise;
mod layout;
mod linalg;
mod pool;
pub(crate) mod resize;
mod shape_ops;

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::graph::op::Op;
use crate::graph::types::{Dim, TensorType, format_shape};
use crate::graph::{Graph, ValueDef, ValueId};
use crate::tensor::Tensor;

/// What an op function returns: the result, or a message about its operands.
pub(crate) type OpResult<T> = std::result::Result<T, String>;

/// Evaluates one op on concrete inputs (`None` for absent optional inputs), producing
/// `n_outputs` outputs. `node` names the node in errors.
pub fn eval(
    op: &Op,
    node: &str,
    inputs: &[Option<&Tensor>],
    n_outputs: usize,
) -> Result<Vec<Tensor>> {
    eval_op(op, inputs, n_outputs).map_err(|message| Error::node(node, op.name(), message))
}

fn input<'a>(inputs: &[Option<&'a Tensor>], i: usize) -> OpResult<&'a Tensor> {
    inputs
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| format!("input {i} is required"))
}

fn optional<'a>(inputs: &[Option<&'a Tensor>], i: usize) -> Option<&'a Tensor> {
    inputs.get(i).copied().flatten()
}

fn eval_op(op: &Op, inputs: &[Option<&Tensor>], n_outputs: usize) -> OpResult<Vec<Tensor>> {
    let x = || input(inputs, 0);
    let one = |t: Tensor| Ok(vec![t]);
    match op {
        Op::Conv(c) => one(conv::conv(c, x()?, input(inputs, 1)?, optional(inputs, 2))?),
        Op::ConvTranspose(c) => one(conv::conv_transpose(
            c,
            x()?,
            input(inputs, 1)?,
            optional(inputs, 2),
        )?),
        Op::BatchNorm { epsilon } => one(conv::batch_norm(
            *epsilon,
            x()?,
            input(inputs, 1)?,
            input(inputs, 2)?,
            input(inputs, 3)?,
            input(inputs, 4)?,
        )?),
        Op::Unary(u) => one(elementwise::unary(*u, x()?)?),
        Op::Binary(b) => one(elementwise::binary(*b, x()?, input(inputs, 1)?)?),
        Op::Clip => one(elementwise::clip(
            x()?,
            optional(inputs, 1),
            optional(inputs, 2),
        )?),
        Op::Softmax { axis, coerce_2d } => one(elementwise::softmax(*axis, *coerce_2d, x()?)?),
        Op::MaxPool(p) => {
            let (y, indices) = pool::max_pool(p, x()?, n_outputs > 1)?;
            Ok(std::iter::once(y).chain(indices).collect())
        }
        Op::AveragePool(p) => one(pool::average_pool(p, x()?)?),
        Op::GlobalAveragePool => one(pool::global_pool(x()?, false)?),
        Op::GlobalMaxPool => one(pool::global_pool(x()?, true)?),
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => one(linalg::gemm(
            *alpha,
            *beta,
            *trans_a,
            *trans_b,
            x()?,
            input(inputs, 1)?,
            optional(inputs, 2),
        )?),
        Op::MatMul => one(linalg::matmul(x()?, input(inputs, 1)?)?),
        Op::Flatten { axis } => one(shape_ops::flatten(*axis, x()?)?),
        Op::Reshape { allowzero } => one(shape_ops::reshape(*allowzero, x()?, input(inputs, 1)?)?),
        Op::Transpose { perm } => one(shape_ops::transpose(perm.as_deref(), x()?)?),
        Op::Concat { axis } => {
            let parts = (0..inputs.len())
                .map(|i| input(inputs, i))
                .collect::<OpResult<Vec<_>>>()?;
            one(shape_ops::concat(*axis, &parts)?)
        }
        Op::Split { axis, num_outputs } => {
            shape_ops::split(*axis, *num_outputs, x()?, optional(inputs, 1), n_outputs)
        }
        Op::Slice => one(shape_ops::slice(
            x()?,
            input(inputs, 1)?,
            input(inputs, 2)?,
            optional(inputs, 3),
            optional(inputs, 4),
        )?),
        Op::Pad { mode } => one(shape_ops::pad(
            *mode,
            x()?,
            input(inputs, 1)?,
            optional(inputs, 2),
            optional(inputs, 3),
        )?),
        Op::Resize(r) => one(resize::resize(
            r,
            x()?,
            optional(inputs, 1),
            optional(inputs, 2),
            optional(inputs, 3),
        )?),
        Op::Squeeze => one(shape_ops::squeeze(x()?, optional(inputs, 1))?),
        Op::Unsqueeze => one(shape_ops::unsqueeze(x()?, input(inputs, 1)?)?),
        Op::ReduceMean {
            keepdims,
            noop_with_empty_axes,
        } => one(elementwise::reduce_mean(
            *keepdims,
            *noop_with_empty_axes,
            x()?,
            optional(inputs, 1),
        )?),
        Op::Identity | Op::Dropout => one(x()?.clone()),
        Op::Shape { start, end } => one(shape_ops::shape(*start, *end, x()?)?),
        Op::Gather { axis } => one(shape_ops::gather(*axis, x()?, input(inputs, 1)?)?),
        Op::Cast { to } => one(elementwise::cast(x()?, *to)?),
    }
}

/// Checks that a concrete tensor fits a declared type, binding symbolic dims in `bindings`.
/// Returns a message describing the mismatch.
pub(crate) fn check_type(
    tensor: &Tensor,
    ty: &TensorType,
    bindings: &mut HashMap<String, usize>,
) -> std::result::Result<(), String> {
    if tensor.dtype() != ty.dtype {
        return Err(format!(
            "expected dtype {}, got {}",
            ty.dtype,
            tensor.dtype()
        ));
    }
    let shape = tensor.shape();
    let mismatch = || format!("expected shape {ty}, got {}", format_shape(shape));
    if shape.len() != ty.rank() {
        return Err(mismatch());
    }
    for (&actual, dim) in shape.iter().zip(&ty.shape) {
        match dim {
            Dim::Known(n) if *n != actual => return Err(mismatch()),
            Dim::Sym(s) => {
                let bound = *bindings.entry(s.clone()).or_insert(actual);
                if bound != actual {
                    return Err(format!("{} ({s} is already {bound})", mismatch()));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Runs a whole graph on named inputs and returns its outputs in order, with their names.
///
/// Every graph input must be given exactly once with the declared dtype and a shape that
/// fits the declared one (symbolic dims bind to the same size everywhere).
pub fn run(graph: &Graph, inputs: &[(&str, Tensor)]) -> Result<Vec<(String, Tensor)>> {
    let mut slots: Vec<Option<Arc<Tensor>>> = vec![None; graph.values().count()];
    let mut bindings = HashMap::new();
    for (name, tensor) in inputs {
        let id = graph
            .value_by_name(name)
            .filter(|id| graph.inputs().contains(id))
            .ok_or_else(|| Error::Input {
                name: name.to_string(),
                message: format!(
                    "the model has no input of this name (inputs: {})",
                    input_names(graph)
                ),
            })?;
        if slots[id.0].is_some() {
            return Err(Error::Input {
                name: name.to_string(),
                message: "given twice".to_string(),
            });
        }
        check_type(tensor, &graph.value(id).ty, &mut bindings).map_err(|message| Error::Input {
            name: name.to_string(),
            message,
        })?;
        slots[id.0] = Some(Arc::new(tensor.clone()));
    }
    for &id in graph.inputs() {
        if slots[id.0].is_none() {
            return Err(Error::Input {
                name: graph.value(id).name.clone(),
                message: format!("missing (type {})", graph.value(id).ty),
            });
        }
    }
    for (id, value) in graph.values() {
        if let ValueDef::Const(c) = &value.def {
            slots[id.0] = Some(c.tensor.clone());
        }
    }

    // Free each intermediate after its last reader, so peak memory stays near the live set.
    let mut remaining_reads = vec![0usize; slots.len()];
    for &node_id in graph.node_order() {
        for id in graph.node(node_id).inputs.iter().flatten() {
            remaining_reads[id.0] += 1;
        }
    }
    for id in graph.outputs() {
        remaining_reads[id.0] += 1;
    }

    for &node_id in graph.node_order() {
        let node = graph.node(node_id);
        let args: Vec<Option<Arc<Tensor>>> = node
            .inputs
            .iter()
            .map(|input| input.map(|id| slot(&slots, id, graph)).transpose())
            .collect::<Result<_>>()?;
        let arg_refs: Vec<Option<&Tensor>> = args.iter().map(|a| a.as_deref()).collect();
        let results = eval(&node.op, &node.name, &arg_refs, node.outputs.len())?;
        if results.len() != node.outputs.len() {
            return Err(Error::internal(format!(
                "{} produced {} outputs, the graph expects {}",
                graph.describe_node(node_id),
                results.len(),
                node.outputs.len()
            )));
        }
        for (&out, tensor) in node.outputs.iter().zip(results) {
            let declared = &graph.value(out).ty;
            // Symbolic dims of intermediates may be fresh; only dtype, rank and known dims
            // must agree with shape inference.
            check_type(&tensor, declared, &mut HashMap::new()).map_err(|m| {
                Error::internal(format!(
                    "{} output {}: shape inference and the interpreter disagree: {m}",
                    graph.describe_node(node_id),
                    graph.value(out).name
                ))
            })?;
            slots[out.0] = Some(Arc::new(tensor));
        }
        for id in node.inputs.iter().flatten() {
            remaining_reads[id.0] -= 1;
            if remaining_reads[id.0] == 0 && matches!(graph.value(*id).def, ValueDef::Node { .. }) {
                slots[id.0] = None;
            }
        }
    }

    graph
        .outputs()
        .iter()
        .map(|&id| {
            let tensor = slot(&slots, id, graph)?;
            Ok((graph.value(id).name.clone(), Arc::unwrap_or_clone(tensor)))
        })
        .collect()
}

fn slot(slots: &[Option<Arc<Tensor>>], id: ValueId, graph: &Graph) -> Result<Arc<Tensor>> {
    slots[id.0].clone().ok_or_else(|| {
        Error::internal(format!(
            "value {} read before it was computed",
            graph.value(id).name
        ))
    })
}

fn input_names(graph: &Graph) -> String {
    graph
        .inputs()
        .iter()
        .map(|&id| graph.value(id).name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
