//! Graph passes: rewrites of the graph IR that keep its meaning and make it cheaper to run.
//!
//! Every pass has one shape ([`Pass`]): a stable name and `run(&Graph) -> Result<Option<Graph>>`,
//! returning the rewritten graph, or `None` when it changed nothing. The [`Pipeline`] is a
//! plain list of passes; the driver, not the pass, verifies the graph after each pass (a
//! verifier failure there is an internal error naming the pass), times it, and records
//! whether it changed anything.
//!
//! Passes rebuild the graph rather than edit it in place ([`Rebuild`]): nodes are re-added in
//! order through `Graph::add_node`, so shape inference re-checks every rewrite.

mod fold_constants;

use std::collections::HashMap;
use std::time::Instant;

pub use fold_constants::{FOLD_LIMIT, FoldConstants, Known, fold_node};

use crate::error::{Error, Result};
use crate::graph::{ConstInit, Graph, ValueDef, ValueId};
use crate::tensor::Tensor;

/// One graph rewrite.
pub trait Pass {
    /// The pass's name, a verb phrase (`fold_constants`), used in dumps and errors.
    fn name(&self) -> &'static str;

    /// Rewrites the graph; `None` when nothing changed.
    fn run(&self, graph: &Graph) -> Result<Option<Graph>>;
}

/// What one pass did.
#[derive(Clone, Debug, PartialEq)]
pub struct PassReport {
    /// The pass.
    pub name: &'static str,
    /// Whether it changed the graph.
    pub changed: bool,
    /// Nodes after the pass.
    pub nodes: usize,
    /// Time taken, in milliseconds.
    pub ms: f64,
}

/// An ordered list of passes.
pub struct Pipeline {
    passes: Vec<Box<dyn Pass + Send + Sync>>,
}

impl Default for Pipeline {
    fn default() -> Pipeline {
        Pipeline::standard()
    }
}

impl Pipeline {
    /// The passes Fovea runs before lowering, in order.
    pub fn standard() -> Pipeline {
        Pipeline {
            passes: vec![Box::new(FoldConstants)],
        }
    }

    /// No passes.
    pub fn empty() -> Pipeline {
        Pipeline { passes: Vec::new() }
    }

    /// The pass names, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.passes.iter().map(|p| p.name()).collect()
    }

    /// Runs the passes in order, stopping after the one named `stop_after` if given, and
    /// verifies the graph after each.
    pub fn run(&self, graph: &Graph, stop_after: Option<&str>) -> Result<(Graph, Vec<PassReport>)> {
        if let Some(name) = stop_after
            && !self.passes.iter().any(|p| p.name() == name)
        {
            return Err(Error::Usage(format!(
                "there is no pass {name:?} (passes: {})",
                self.names().join(", ")
            )));
        }
        let mut current = graph.clone();
        let mut reports = Vec::new();
        for pass in &self.passes {
            let start = Instant::now();
            let result = pass.run(&current)?;
            let changed = result.is_some();
            if let Some(next) = result {
                next.verify().map_err(|e| {
                    Error::internal(format!(
                        "the graph is invalid after pass {}: {e}",
                        pass.name()
                    ))
                })?;
                current = next;
            }
            reports.push(PassReport {
                name: pass.name(),
                changed,
                nodes: current.node_count(),
                ms: start.elapsed().as_secs_f64() * 1e3,
            });
            if stop_after == Some(pass.name()) {
                break;
            }
        }
        Ok((current, reports))
    }
}

/// Rebuilds a graph node by node, mapping old value ids to new ones. Inputs are copied up
/// front and constants when first read, so constants nothing reads any more disappear; each
/// pass decides per node to copy it, drop it (aliasing its outputs to other values) or add
/// something else instead.
pub struct Rebuild<'g> {
    /// The graph being rewritten.
    pub old: &'g Graph,
    /// The graph being built.
    pub new: Graph,
    map: HashMap<ValueId, ValueId>,
    /// Old values replaced by constants, added to the new graph when first read.
    pending: HashMap<ValueId, std::sync::Arc<Tensor>>,
}

impl<'g> Rebuild<'g> {
    /// Starts a rebuild of `old`, with its inputs already copied.
    pub fn new(old: &'g Graph) -> Result<Rebuild<'g>> {
        let mut new = Graph::new(old.name.clone());
        let mut map = HashMap::new();
        for &id in old.inputs() {
            let v = old.value(id);
            map.insert(id, new.add_input(v.name.clone(), v.ty.clone())?);
        }
        Ok(Rebuild {
            old,
            new,
            map,
            pending: HashMap::new(),
        })
    }

    /// The new id of an old value (copying an old constant on first use).
    pub fn get(&mut self, old: ValueId) -> Result<ValueId> {
        if let Some(&id) = self.map.get(&old) {
            return Ok(id);
        }
        let v = self.old.value(old);
        if let Some(t) = self.pending.remove(&old) {
            let id = self
                .new
                .add_shared_const(v.name.clone(), t, ConstInit::Literal)?;
            self.map.insert(old, id);
            return Ok(id);
        }
        match &v.def {
            ValueDef::Const(c) => {
                let id =
                    self.new
                        .add_shared_const(v.name.clone(), c.tensor.clone(), c.init.clone())?;
                self.map.insert(old, id);
                Ok(id)
            }
            _ => Err(Error::internal(format!(
                "value {} used before it was rebuilt",
                v.name
            ))),
        }
    }

    /// The data of an old value if it is (or has become) a constant, without copying it into
    /// the new graph.
    pub fn constant(&self, old: ValueId) -> Option<std::sync::Arc<Tensor>> {
        if let Some(t) = self.pending.get(&old) {
            return Some(t.clone());
        }
        match self.map.get(&old) {
            Some(&new) => self.new.constant(new).map(|c| c.tensor.clone()),
            None => self.old.constant(old).map(|c| c.tensor.clone()),
        }
    }

    /// Replaces an old value by constant data, under the old value's name; the constant
    /// enters the new graph only if something reads it.
    pub fn replace_with_constant(&mut self, old: ValueId, tensor: Tensor) {
        self.pending.insert(old, std::sync::Arc::new(tensor));
    }

    /// Maps an old value to a new one.
    pub fn alias(&mut self, old: ValueId, new: ValueId) {
        self.map.insert(old, new);
    }

    /// Copies an old node unchanged.
    pub fn copy_node(&mut self, node_id: crate::graph::NodeId) -> Result<()> {
        let node = self.old.node(node_id);
        let mut inputs = Vec::with_capacity(node.inputs.len());
        for input in &node.inputs {
            inputs.push(input.map(|id| self.get(id)).transpose()?);
        }
        let names = node
            .outputs
            .iter()
            .map(|&o| self.old.value(o).name.clone())
            .collect();
        let ids = self
            .new
            .add_node(node.name.clone(), node.op.clone(), inputs, names)?;
        for (&old, new) in node.outputs.iter().zip(ids) {
            self.map.insert(old, new);
        }
        Ok(())
    }

    /// Adds a constant under a fresh name derived from `base`.
    pub fn add_const(&mut self, base: &str, tensor: Tensor) -> Result<ValueId> {
        let mut name = base.to_string();
        let mut n = 1;
        while self.new.value_by_name(&name).is_some() || self.old.value_by_name(&name).is_some() {
            name = format!("{base}.{n}");
            n += 1;
        }
        self.new.add_const(name, tensor, ConstInit::Literal)
    }

    /// Finishes: declares the outputs.
    pub fn finish(mut self) -> Result<Graph> {
        let mut outputs = Vec::with_capacity(self.old.outputs().len());
        for &o in self.old.outputs() {
            outputs.push(self.get(o)?);
        }
        self.new.set_outputs(outputs);
        Ok(self.new)
    }
}
