//! `fold_constants`: work that needs no input data is done once, at compile time.
//!
//! - A batch normalisation that follows a convolution with constant weights is folded into
//!   the convolution's weights and bias (when the convolution's output feeds nothing else and
//!   is not a graph output).
//! - `identity` and `dropout` (inference) disappear: their readers read the input instead
//!   (unless the node produces a graph output, whose name must survive).
//! - A node whose inputs are all constants is evaluated (with the interpreter's semantics)
//!   and becomes a constant, up to [`FOLD_LIMIT`] elements.
//!
//! ```text
//! before:                                            after:
//!   c: f32[1,8,8,8] = conv(x, w, b)                    y: f32[1,8,8,8] = conv(x, w.folded, b.folded) @c
//!   y: f32[1,8,8,8] = batch_norm(c, s, o, m, v)
//! ```

use std::collections::HashMap;

use super::{Pass, Rebuild};
use crate::error::Result;
use crate::graph::infer::Operand;
use crate::graph::op::Op;
use crate::graph::slice::shape_dims;
use crate::graph::{Graph, NodeId, TensorType, ValueId};
use crate::tensor::{Tensor, element_count};

/// Largest tensor (in elements) evaluated at compile time.
pub const FOLD_LIMIT: usize = 16 << 20;

/// The constant-folding pass.
pub struct FoldConstants;

impl Pass for FoldConstants {
    fn name(&self) -> &'static str {
        "fold_constants"
    }

    fn run(&self, graph: &Graph) -> Result<Option<Graph>> {
        let mut readers: HashMap<ValueId, usize> = HashMap::new();
        for &id in graph.node_order() {
            for input in graph.node(id).inputs.iter().flatten() {
                *readers.entry(*input).or_default() += 1;
            }
        }
        let is_output = |v: ValueId| graph.outputs().contains(&v);
        // Convolutions whose batch normalisation gets folded in: conv node → bn node.
        let mut fold_bn: HashMap<NodeId, NodeId> = HashMap::new();
        for &id in graph.node_order() {
            let node = graph.node(id);
            if let (Op::BatchNorm { .. }, Some(Some(x))) = (&node.op, node.inputs.first())
                && let crate::graph::ValueDef::Node { node: producer, .. } = graph.value(*x).def
                && matches!(graph.node(producer).op, Op::Conv(_))
                && readers.get(x) == Some(&1)
                && !is_output(*x)
                && node.inputs[1..]
                    .iter()
                    .all(|i| i.is_some_and(|v| graph.constant(v).is_some()))
                && graph.node(producer).inputs[1..]
                    .iter()
                    .flatten()
                    .all(|v| graph.constant(*v).is_some())
            {
                fold_bn.insert(producer, id);
            }
        }
        let folded_bns: Vec<NodeId> = fold_bn.values().copied().collect();

        let mut rb = Rebuild::new(graph)?;
        let mut changed = false;
        for &id in graph.node_order() {
            let node = graph.node(id);
            if folded_bns.contains(&id) {
                continue;
            }
            if let Some(&bn) = fold_bn.get(&id) {
                fold_conv_bn(&mut rb, id, bn)?;
                changed = true;
                continue;
            }
            if matches!(node.op, Op::Identity | Op::Dropout)
                && let (Some(Some(x)), Some(&y)) = (node.inputs.first(), node.outputs.first())
                && !is_output(y)
            {
                let x = rb.get(*x)?;
                rb.alias(y, x);
                changed = true;
                continue;
            }
            if let Some(values) = evaluate(&rb, id)? {
                for (&out, tensor) in node.outputs.iter().zip(values) {
                    rb.replace_with_constant(out, tensor);
                }
                changed = true;
                continue;
            }
            rb.copy_node(id)?;
        }
        if changed {
            Ok(Some(rb.finish()?))
        } else {
            Ok(None)
        }
    }
}

/// What is known at compile time about one input of a node.
#[derive(Clone, Copy, Debug)]
pub enum Known<'a> {
    /// An absent optional input.
    Absent,
    /// A constant.
    Const(&'a Tensor),
    /// A value computed at run time, of this type.
    Value(&'a TensorType),
}

/// A node's outputs when they are known at compile time: `shape` of a value whose dims are
/// all known, or any op whose inputs are all constants (with outputs of at most
/// [`FOLD_LIMIT`] elements), evaluated with the interpreter's semantics. `None` otherwise.
/// The ONNX importer, shape specialisation and this pass all fold through this function.
pub fn fold_node(
    op: &Op,
    name: &str,
    inputs: &[Known<'_>],
    n_outputs: usize,
) -> Result<Option<Vec<Tensor>>> {
    if let (Op::Shape { start, end }, Some(first)) = (op, inputs.first()) {
        let shape = match first {
            Known::Const(t) => Some(t.shape().to_vec()),
            Known::Value(ty) => ty.known_shape(),
            Known::Absent => None,
        };
        return Ok(shape.map(|s| vec![Tensor::vector_i64(shape_dims(&s, *start, *end))]));
    }
    let mut values = Vec::with_capacity(inputs.len());
    for input in inputs {
        match input {
            Known::Absent => values.push(None),
            Known::Const(t) => values.push(Some(*t)),
            Known::Value(_) => return Ok(None),
        }
    }
    if values.iter().all(Option::is_none) {
        return Ok(None);
    }
    let types: Vec<Option<TensorType>> = values
        .iter()
        .map(|v| v.map(|t| TensorType::known(t.dtype(), t.shape())))
        .collect();
    let operands: Vec<Option<Operand<'_>>> = types
        .iter()
        .zip(&values)
        .map(|(ty, v)| ty.as_ref().map(|ty| Operand { ty, value: *v }))
        .collect();
    let out_types = crate::graph::infer::infer(op, name, &operands, n_outputs)?;
    let small = out_types.iter().all(|ty| {
        ty.known_shape()
            .and_then(|s| element_count(&s).ok())
            .is_some_and(|n| n <= FOLD_LIMIT)
    });
    if !small {
        return Ok(None);
    }
    Ok(Some(crate::interp::eval(op, name, &values, n_outputs)?))
}

/// The outputs of a node of the graph being rewritten, if known at compile time (inputs
/// are looked up in the graph being built, so chains fold in one pass).
fn evaluate(rb: &Rebuild<'_>, id: NodeId) -> Result<Option<Vec<Tensor>>> {
    let graph = rb.old;
    let node = graph.node(id);
    let constants: Vec<Option<std::sync::Arc<Tensor>>> = node
        .inputs
        .iter()
        .map(|i| i.and_then(|v| rb.constant(v)))
        .collect();
    let known: Vec<Known<'_>> = node
        .inputs
        .iter()
        .zip(&constants)
        .map(|(input, c)| match (input, c) {
            (None, _) => Known::Absent,
            (Some(_), Some(t)) => Known::Const(t),
            (Some(v), None) => Known::Value(&graph.value(*v).ty),
        })
        .collect();
    fold_node(&node.op, &node.name, &known, node.outputs.len())
}

/// Emits `conv` with the batch normalisation `bn` folded into its weights and bias; the new
/// convolution produces the batch normalisation's output.
fn fold_conv_bn(rb: &mut Rebuild<'_>, conv: NodeId, bn: NodeId) -> Result<()> {
    let graph = rb.old;
    let (conv_node, bn_node) = (graph.node(conv), graph.node(bn));
    let Op::BatchNorm { epsilon } = bn_node.op else {
        return Err(crate::error::Error::internal(
            "fold_conv_bn on a node that is not a batch_norm",
        ));
    };
    let constant = |i: Option<ValueId>| {
        i.and_then(|v| graph.constant(v))
            .map(|c| c.tensor.to_f64_vec())
    };
    let params: Vec<Vec<f64>> = (1..5).filter_map(|i| constant(bn_node.inputs[i])).collect();
    let w_id =
        conv_node.inputs[1].ok_or_else(|| crate::error::Error::internal("conv without weights"))?;
    let w = graph
        .constant(w_id)
        .ok_or_else(|| crate::error::Error::internal("conv weights are not constant"))?;
    let m = w.tensor.shape().first().copied().unwrap_or(0);
    if params.len() != 4 || params.iter().any(|p| p.len() != m) {
        // Shapes that do not line up per output channel: keep both nodes as they are.
        rb.copy_node(conv)?;
        return rb.copy_node(bn);
    }
    let (scale, shift, mean, var) = (&params[0], &params[1], &params[2], &params[3]);
    let a: Vec<f64> = (0..m)
        .map(|c| scale[c] / (var[c] + f64::from(epsilon)).sqrt())
        .collect();
    let per_channel = w.tensor.len() / m.max(1);
    let weights: Vec<f32> = w
        .tensor
        .to_f64_vec()
        .iter()
        .enumerate()
        .map(|(i, &x)| (x * a[i / per_channel.max(1)]) as f32)
        .collect();
    let bias_in =
        constant(conv_node.inputs.get(2).copied().flatten()).unwrap_or_else(|| vec![0.0; m]);
    let bias: Vec<f32> = (0..m)
        .map(|c| ((bias_in[c] - mean[c]) * a[c] + shift[c]) as f32)
        .collect();
    let w_name = format!("{}.folded", graph.value(w_id).name);
    let new_w = rb.add_const(
        &w_name,
        Tensor::from_f32(w.tensor.shape().to_vec(), weights)?,
    )?;
    let new_b = rb.add_const(
        &format!("{}.bias.folded", conv_node.name),
        Tensor::from_f32(vec![m], bias)?,
    )?;
    let x =
        conv_node.inputs[0].ok_or_else(|| crate::error::Error::internal("conv without input"))?;
    let x = rb.get(x)?;
    let y = bn_node.outputs[0];
    let ids = rb.new.add_node(
        conv_node.name.clone(),
        conv_node.op.clone(),
        vec![Some(x), Some(new_w), Some(new_b)],
        vec![graph.value(y).name.clone()],
    )?;
    rb.alias(y, ids[0]);
    Ok(())
}
