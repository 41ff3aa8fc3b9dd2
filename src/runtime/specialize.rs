//! Shape specialisation: a graph with symbolic dims (or shape-like inputs) → a graph whose
//! every tensor has a concrete shape, for one set of input shapes.
//!
//! Graph inputs take the shapes of the tensors given; an input used only as a shape-like
//! operand (Reshape's `shape`, Slice's bounds, Resize's scales…) is replaced by its value, so
//! the JIT specialises on it. The graph is then rebuilt node by node with shape inference;
//! `shape` of a concrete tensor, and any node whose inputs are all constants, is evaluated
//! at compile time (the shape-computing chains of exported models fold away here, as they
//! do at import for static shapes).

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::graph::op::Op;
use crate::graph::{ConstInit, Graph, TensorType, ValueDef, ValueId};
use crate::passes::{Known, fold_node};
use crate::tensor::Tensor;

/// Whether input `i` of `op` is shape-like: read at compile time, not per element.
pub fn is_shape_operand(op: &Op, i: usize) -> bool {
    match op {
        Op::Reshape { .. }
        | Op::Squeeze
        | Op::Unsqueeze
        | Op::ReduceMean { .. }
        | Op::Split { .. } => i == 1,
        Op::Slice | Op::Resize(_) => i >= 1,
        Op::Pad { .. } => i == 1 || i == 3,
        _ => false,
    }
}

/// The graph inputs used only as shape-like operands (their values are part of a plan's key).
pub fn value_inputs(graph: &Graph) -> Vec<ValueId> {
    let mut uses: HashMap<ValueId, bool> = HashMap::new();
    for &node_id in graph.node_order() {
        let node = graph.node(node_id);
        for (i, input) in node.inputs.iter().enumerate() {
            if let Some(id) = input {
                let shape_like = is_shape_operand(&node.op, i);
                uses.entry(*id)
                    .and_modify(|all| *all &= shape_like)
                    .or_insert(shape_like);
            }
        }
    }
    graph
        .inputs()
        .iter()
        .copied()
        .filter(|id| uses.get(id).copied().unwrap_or(false))
        .collect()
}

/// A concrete copy of `graph` for the given input tensors (in graph-input order).
pub fn specialize(graph: &Graph, inputs: &[&Tensor]) -> Result<Graph> {
    let by_value = value_inputs(graph);
    let mut out = Graph::new(graph.name.clone());
    let mut map: HashMap<ValueId, ValueId> = HashMap::new();
    for (&id, tensor) in graph.inputs().iter().zip(inputs) {
        let value = graph.value(id);
        let new = if by_value.contains(&id) {
            out.add_const(value.name.clone(), (*tensor).clone(), ConstInit::Literal)?
        } else {
            out.add_input(
                value.name.clone(),
                TensorType::known(tensor.dtype(), tensor.shape()),
            )?
        };
        map.insert(id, new);
    }
    for (id, value) in graph.values() {
        if let ValueDef::Const(c) = &value.def {
            let new = out.add_shared_const(value.name.clone(), c.tensor.clone(), c.init.clone())?;
            map.insert(id, new);
        }
    }
    for &node_id in graph.node_order() {
        let node = graph.node(node_id);
        let inputs: Vec<Option<ValueId>> = node
            .inputs
            .iter()
            .map(|i| {
                i.map(|id| {
                    map.get(&id)
                        .copied()
                        .ok_or_else(|| Error::internal("value used before definition"))
                })
                .transpose()
            })
            .collect::<Result<_>>()?;
        let names: Vec<String> = node
            .outputs
            .iter()
            .map(|&o| graph.value(o).name.clone())
            .collect();
        if let Some(folded) = fold(&out, &node.name, &node.op, &inputs, names.len())? {
            for ((&old, name), tensor) in node.outputs.iter().zip(&names).zip(folded) {
                map.insert(
                    old,
                    out.add_const(name.clone(), tensor, ConstInit::Literal)?,
                );
            }
            continue;
        }
        let ids = out.add_node(node.name.clone(), node.op.clone(), inputs, names)?;
        for (&old, new) in node.outputs.iter().zip(ids) {
            let ty = &out.value(new).ty;
            if ty.known_shape().is_none() {
                return Err(Error::node(
                    &node.name,
                    node.op.name(),
                    format!(
                        "cannot compile: output type {ty} depends on values known only at run time"
                    ),
                ));
            }
            map.insert(old, new);
        }
    }
    let outputs = graph
        .outputs()
        .iter()
        .map(|id| {
            map.get(id)
                .copied()
                .ok_or_else(|| Error::internal("graph output not defined"))
        })
        .collect::<Result<Vec<_>>>()?;
    out.set_outputs(outputs);
    Ok(out)
}

/// Evaluates a node at compile time when its result is already determined (see
/// [`crate::passes::fold_node`]).
fn fold(
    graph: &Graph,
    name: &str,
    op: &Op,
    inputs: &[Option<ValueId>],
    n_outputs: usize,
) -> Result<Option<Vec<Tensor>>> {
    let known: Vec<Known<'_>> = inputs
        .iter()
        .map(|input| match input {
            None => Known::Absent,
            Some(id) => match graph.constant(*id) {
                Some(c) => Known::Const(&c.tensor),
                None => Known::Value(&graph.value(*id).ty),
            },
        })
        .collect();
    fold_node(op, name, &known, n_outputs)
}
