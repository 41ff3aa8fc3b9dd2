//! The graph IR: ops on a petgraph graph, tensors on its edges.
//!
//! A [`Graph`] owns its values (graph inputs, constants and node outputs), each with a name
//! and a [`TensorType`], and its nodes, each an [`Op`] with typed attributes. A petgraph edge
//! runs from the node that produces a value to every node that reads it, weighted with the
//! value's id, so execution order is a topological sort. Constants (weights) are owned by
//! the graph and remember how they were made ([`ConstInit`]), so the text IR can print a
//! seeded generator instead of a million numbers.
//!
//! Invariants, checked by [`verify`]:
//! - value names are unique; every value is defined once (input, constant or node output);
//! - a node's inputs are defined before it in the order nodes were added, edges match the
//!   inputs, and the graph is acyclic;
//! - every node's arity and attributes are valid and its output types equal what shape
//!   inference computes from its input types.

pub mod dot;
pub mod infer;
pub mod op;
pub mod slice;
pub mod text;
pub mod types;
pub mod verify;
pub mod window;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;

pub use op::{Attr, Op};
pub use types::{Dim, TensorType};

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Identifies a value (tensor) of a [`Graph`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub usize);

/// Identifies a node of a [`Graph`].
pub type NodeId = NodeIndex;

/// How a constant's data was made; the text IR prints generators instead of data.
#[derive(Clone, Debug, PartialEq)]
pub enum ConstInit {
    /// Literal data (from a model file, or written out in the text IR).
    Literal,
    /// Every element equal to `value`.
    Fill {
        /// The value.
        value: f64,
    },
    /// Seeded normal distribution, see [`crate::tensor_gen`].
    Normal {
        /// Seed of the generator.
        seed: u64,
        /// Mean.
        mean: f64,
        /// Standard deviation.
        std: f64,
    },
    /// Seeded uniform distribution over `[low, high)`, see [`crate::tensor_gen`].
    Uniform {
        /// Seed of the generator.
        seed: u64,
        /// Lower bound.
        low: f64,
        /// Upper bound.
        high: f64,
    },
}

/// A constant tensor owned by the graph.
#[derive(Clone, Debug, PartialEq)]
pub struct Constant {
    /// The data.
    pub tensor: Arc<Tensor>,
    /// How it was made.
    pub init: ConstInit,
}

/// Where a value comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum ValueDef {
    /// A graph input, supplied on every run.
    Input,
    /// A constant.
    Const(Constant),
    /// Output `output` of node `node`.
    Node {
        /// The producing node.
        node: NodeId,
        /// Which of its outputs.
        output: usize,
    },
}

/// A tensor of the graph.
#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    /// Unique name.
    pub name: String,
    /// Its type.
    pub ty: TensorType,
    /// Its definition.
    pub def: ValueDef,
}

/// An op applied to values.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Name, for messages (need not be unique, but usually is).
    pub name: String,
    /// The op and its attributes.
    pub op: Op,
    /// Inputs; `None` marks an absent optional input.
    pub inputs: Vec<Option<ValueId>>,
    /// Outputs, each defined by this node.
    pub outputs: Vec<ValueId>,
}

/// A model: named inputs and outputs, constants, and nodes.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    /// The model's name.
    pub name: String,
    nodes: StableDiGraph<Node, ValueId>,
    /// Nodes in the order they were added (always a topological order).
    order: Vec<NodeId>,
    values: Vec<Value>,
    by_name: HashMap<String, ValueId>,
    inputs: Vec<ValueId>,
    outputs: Vec<ValueId>,
}

impl Graph {
    /// An empty graph.
    pub fn new(name: impl Into<String>) -> Graph {
        Graph {
            name: name.into(),
            ..Graph::default()
        }
    }

    fn add_value(&mut self, name: String, ty: TensorType, def: ValueDef) -> Result<ValueId> {
        if name.is_empty() {
            return Err(Error::Usage("a value needs a non-empty name".to_string()));
        }
        if self.by_name.contains_key(&name) {
            return Err(Error::Usage(format!("value {name} is defined twice")));
        }
        let id = ValueId(self.values.len());
        self.by_name.insert(name.clone(), id);
        self.values.push(Value { name, ty, def });
        Ok(id)
    }

    /// Adds a graph input.
    pub fn add_input(&mut self, name: impl Into<String>, ty: TensorType) -> Result<ValueId> {
        let id = self.add_value(name.into(), ty, ValueDef::Input)?;
        self.inputs.push(id);
        Ok(id)
    }

    /// Adds a constant.
    pub fn add_const(
        &mut self,
        name: impl Into<String>,
        tensor: Tensor,
        init: ConstInit,
    ) -> Result<ValueId> {
        self.add_shared_const(name, Arc::new(tensor), init)
    }

    /// Adds a constant whose data another graph already holds (no copy).
    pub fn add_shared_const(
        &mut self,
        name: impl Into<String>,
        tensor: Arc<Tensor>,
        init: ConstInit,
    ) -> Result<ValueId> {
        let ty = TensorType::known(tensor.dtype(), tensor.shape());
        self.add_value(name.into(), ty, ValueDef::Const(Constant { tensor, init }))
    }

    /// Adds a node, inferring its output types from its inputs. Inputs must already exist.
    pub fn add_node(
        &mut self,
        name: impl Into<String>,
        op: Op,
        inputs: Vec<Option<ValueId>>,
        output_names: Vec<String>,
    ) -> Result<Vec<ValueId>> {
        let name = name.into();
        let types = self.infer_node(&name, &op, &inputs, output_names.len())?;
        self.add_node_typed(
            name,
            op,
            inputs,
            output_names.into_iter().zip(types).collect(),
        )
    }

    /// Runs shape inference for a node that is not (yet) in the graph.
    pub fn infer_node(
        &self,
        name: &str,
        op: &Op,
        inputs: &[Option<ValueId>],
        n_outputs: usize,
    ) -> Result<Vec<TensorType>> {
        let mut operands = Vec::with_capacity(inputs.len());
        for input in inputs {
            operands.push(match input {
                None => None,
                Some(id) => {
                    let value = self.values.get(id.0).ok_or_else(|| {
                        Error::internal(format!("node {name} reads unknown value {id:?}"))
                    })?;
                    Some(infer::Operand {
                        ty: &value.ty,
                        value: match &value.def {
                            ValueDef::Const(c) => Some(c.tensor.as_ref()),
                            _ => None,
                        },
                    })
                }
            });
        }
        infer::infer(op, name, &operands, n_outputs)
    }

    /// Adds a node with the given output types, without running inference (the verifier
    /// checks them later).
    pub fn add_node_typed(
        &mut self,
        name: impl Into<String>,
        op: Op,
        inputs: Vec<Option<ValueId>>,
        outputs: Vec<(String, TensorType)>,
    ) -> Result<Vec<ValueId>> {
        let name = name.into();
        for id in inputs.iter().flatten() {
            if id.0 >= self.values.len() {
                return Err(Error::internal(format!(
                    "node {name} reads unknown value {id:?}"
                )));
            }
        }
        for (out_name, _) in &outputs {
            if self.by_name.contains_key(out_name) {
                return Err(Error::node(
                    &name,
                    op.name(),
                    format!("output {out_name} is already defined"),
                ));
            }
        }
        let node_id = self.nodes.add_node(Node {
            name,
            op,
            inputs: inputs.clone(),
            outputs: Vec::new(),
        });
        let mut ids = Vec::with_capacity(outputs.len());
        for (i, (out_name, ty)) in outputs.into_iter().enumerate() {
            let def = ValueDef::Node {
                node: node_id,
                output: i,
            };
            ids.push(self.add_value(out_name, ty, def)?);
        }
        self.nodes[node_id].outputs = ids.clone();
        for id in inputs.iter().flatten() {
            if let ValueDef::Node { node: producer, .. } = self.values[id.0].def {
                self.nodes.add_edge(producer, node_id, *id);
            }
        }
        self.order.push(node_id);
        Ok(ids)
    }

    /// Declares the graph's outputs (replacing any earlier declaration).
    pub fn set_outputs(&mut self, outputs: Vec<ValueId>) {
        self.outputs = outputs;
    }

    /// The graph inputs, in order.
    pub fn inputs(&self) -> &[ValueId] {
        &self.inputs
    }

    /// The graph outputs, in order.
    pub fn outputs(&self) -> &[ValueId] {
        &self.outputs
    }

    /// A value by id. Panics if the id is not from this graph.
    pub fn value(&self, id: ValueId) -> &Value {
        &self.values[id.0]
    }

    /// A value by name.
    pub fn value_by_name(&self, name: &str) -> Option<ValueId> {
        self.by_name.get(name).copied()
    }

    /// All values with their ids, in definition order.
    pub fn values(&self) -> impl Iterator<Item = (ValueId, &Value)> {
        self.values.iter().enumerate().map(|(i, v)| (ValueId(i), v))
    }

    /// The constant data of a value, if it is a constant.
    pub fn constant(&self, id: ValueId) -> Option<&Constant> {
        match &self.values[id.0].def {
            ValueDef::Const(c) => Some(c),
            _ => None,
        }
    }

    /// A node by id. Panics if the id is not from this graph.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id]
    }

    /// Node ids in execution order (the order they were added, a topological order).
    pub fn node_order(&self) -> &[NodeId] {
        &self.order
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.order.len()
    }

    /// The underlying petgraph graph (edges carry the value they transport).
    pub fn petgraph(&self) -> &StableDiGraph<Node, ValueId> {
        &self.nodes
    }

    /// The nodes that read `node`'s outputs, with the value each reads.
    pub fn consumers(&self, node: NodeId) -> impl Iterator<Item = (NodeId, ValueId)> + '_ {
        self.nodes
            .edges_directed(node, petgraph::Direction::Outgoing)
            .map(|e| (e.target(), *e.weight()))
    }

    /// Where a node is, for messages: `node NAME (op)`.
    pub fn describe_node(&self, id: NodeId) -> String {
        let node = &self.nodes[id];
        format!("node {} ({})", node.name, node.op.name())
    }

    /// Checks every invariant of the module doc, reporting all problems at once.
    pub fn verify(&self) -> Result<()> {
        verify::verify(self)
    }
}

impl fmt::Display for Graph {
    /// Prints the graph in the text IR.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&text::print(self))
    }
}
