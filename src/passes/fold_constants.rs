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
use crate::graph::op::Op;
use crate::graph::{Graph, NodeId, ValueId};
use crate::tensor::Tensor;

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

/// The outputs of a node whose inputs are all constants (in the graph being built, so
/// chains fold in one pass), if small enough to fold.
fn evaluate(rb: &Rebuild<'_>, id: NodeId) -> Result<Option<Vec<Tensor>>> {
    let graph = rb.old;
    let node = graph.node(id);
    let mut args = Vec::with_capacity(node.inputs.len());
    for input in &node.inputs {
        match input {
            None => args.push(None),
            Some(v) => match rb.constant(*v) {
                Some(t) => args.push(Some(t)),
                None => return Ok(None),
            },
        }
    }
    let small = node.outputs.iter().all(|&o| {
        graph
            .value(o)
            .ty
            .known_shape()
            .is_some_and(|s| s.iter().product::<usize>() <= FOLD_LIMIT)
    });
    if !small {
        return Ok(None);
    }
    let refs: Vec<Option<&Tensor>> = args.iter().map(|a| a.as_deref()).collect();
    Ok(Some(crate::interp::eval(
        &node.op,
        &node.name,
        &refs,
        node.outputs.len(),
    )?))
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
