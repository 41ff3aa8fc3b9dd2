//! Kernel fusion: which nodes of a specialised graph run as one kernel.
//!
//! Fusion is a schedule decision (STYLE.md §9): the graph keeps its nodes, and
//! [`fusion_groups`] lists the groups of nodes that are computed by one kernel. A group is an
//! *anchor* node (a convolution or an elementwise op) followed by a chain of elementwise
//! nodes, each applied in registers to the running value before the kernel's single store
//! (the group's [`Epilogue`]). The group runs at the position of its last node and writes
//! only that node's output; the intermediate values are never stored.
//!
//! The rules, all of which must hold to fuse an elementwise node `E` into the group `G`
//! whose last node `P` produces `E`'s operand `v`:
//! 1. `E` is a unary activation, a binary arithmetic op or a clip with constant bounds, on
//!    `f32` values; `v` is `E`'s first operand, or either operand of a binary op other
//!    than PRelu (whose first operand is the value it rectifies);
//! 2. `v` is `P`'s only output, it has exactly one reader (`E`, once) and is not a graph
//!    output;
//! 3. `G`'s anchor takes an epilogue ([`crate::lower::takes_epilogue`]: a convolution or an
//!    elementwise op) and `v` is `f32`;
//! 4. `E`'s output has the shape of `v` (`E` does not broadcast the value up);
//! 5. `E`'s other operand, if any, is not `v`, is `f32`, and broadcasts to the output as a
//!    scalar, per channel or with the output's own shape ([`Broadcast::of`]); it is a
//!    constant, an input or a node output computed before `E` (always true in topological
//!    order, so the group may run at `E`'s position).
//!
//! Shapes must be concrete (plans fuse specialised graphs); a value of unknown shape is
//! never fused.
//!
//! A second rule, [`attach_prologues`], moves a whole group into the group that reads its
//! output, as that group's *prologue*, where the consumer's lowering computes both in one
//! kernel (a 1×1 expansion and the depthwise convolution that reads it, band by band: see
//! `lower/banded.rs`); the producer's output is then never stored.

use std::collections::{HashMap, HashSet};
use std::fmt::Write;

use crate::graph::op::{Binary, Op};
use crate::graph::{Graph, NodeId, ValueDef, ValueId};
use crate::lower::epilogue::{Broadcast, EpilogueStep, ExtraOperand};
use crate::lower::{Epilogue, takes_epilogue};
use crate::tensor::DType;

/// Nodes computed by one kernel: the prologue's nodes if any, the anchor, then the
/// epilogue's nodes in order (never empty).
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    /// The prologue's nodes, the anchor, then each fused elementwise node.
    nodes: Vec<NodeId>,
    /// What the fused nodes compute, applied to the anchor's value.
    epilogue: Epilogue,
    /// The graph value of each extra operand of the epilogue.
    extras: Vec<ValueId>,
    /// The group whose output the anchor reads, computed inside this group's kernel (see
    /// [`attach_prologues`]).
    prologue: Option<Prologue>,
}

/// A producer group computed inside its consumer's kernel: its nodes are the first
/// `len` of the consumer group's.
#[derive(Clone, Debug, PartialEq)]
pub struct Prologue {
    /// How many of the group's nodes are the prologue's (its anchor first).
    len: usize,
    /// What the prologue's fused nodes compute, applied to its anchor's value.
    epilogue: Epilogue,
}

impl Group {
    /// A group of one node.
    pub fn single(node: NodeId) -> Group {
        Group {
            nodes: vec![node],
            epilogue: Epilogue::empty(),
            extras: Vec::new(),
            prologue: None,
        }
    }

    /// The nodes: the prologue's, the anchor, then each fused elementwise node.
    pub fn nodes(&self) -> &[NodeId] {
        &self.nodes
    }

    /// The prologue's anchor and epilogue, if the group has one.
    pub fn prologue(&self) -> Option<(NodeId, &Epilogue)> {
        self.prologue.as_ref().map(|p| (self.nodes[0], &p.epilogue))
    }

    /// What the fused nodes compute, applied to the anchor's value.
    pub fn epilogue(&self) -> &Epilogue {
        &self.epilogue
    }

    /// The graph value of each extra operand of the epilogue ([`crate::lower::Arg::Extra`]).
    pub fn extras(&self) -> &[ValueId] {
        &self.extras
    }

    /// The anchor node.
    pub fn anchor(&self) -> NodeId {
        self.nodes[self.prologue.as_ref().map_or(0, |p| p.len)]
    }

    /// The last node (the group writes its outputs).
    pub fn last(&self) -> NodeId {
        self.nodes[self.nodes.len() - 1]
    }

    /// The node names joined with ` + `.
    pub fn describe(&self, graph: &Graph) -> String {
        self.nodes
            .iter()
            .map(|&n| graph.node(n).name.as_str())
            .collect::<Vec<_>>()
            .join(" + ")
    }
}

/// One group per node, in graph order (no fusion).
pub fn single_groups(graph: &Graph) -> Vec<Group> {
    graph
        .node_order()
        .iter()
        .map(|&n| Group::single(n))
        .collect()
}

/// The fusion groups of a graph, in execution order (see the module doc for the rules).
pub fn fusion_groups(graph: &Graph) -> Vec<Group> {
    let mut readers: HashMap<ValueId, usize> = HashMap::new();
    for &n in graph.node_order() {
        for &input in graph.node(n).inputs.iter().flatten() {
            *readers.entry(input).or_default() += 1;
        }
    }
    let outputs: HashSet<ValueId> = graph.outputs().iter().copied().collect();
    let mut groups: Vec<Group> = Vec::new();
    // The group whose last node is the key.
    let mut tail_of: HashMap<NodeId, usize> = HashMap::new();
    for &e in graph.node_order() {
        let fused = fuse_into(graph, e, &readers, &outputs, &groups, &tail_of);
        match fused {
            Some((g, step, extra)) => {
                let group = &mut groups[g];
                let tail = group.last();
                let step = match (step, extra) {
                    (EpilogueStep::Binary { op, value_left, .. }, Some(value)) => {
                        let index = match group.extras.iter().position(|&x| x == value) {
                            Some(i) => i,
                            None => {
                                let v = graph.value(value);
                                group.epilogue.extras.push(ExtraOperand {
                                    name: v.name.clone(),
                                    shape: v.ty.known_shape().unwrap_or_default(),
                                    broadcast: fused_broadcast(graph, value, e),
                                });
                                group.extras.push(value);
                                group.extras.len() - 1
                            }
                        };
                        EpilogueStep::Binary {
                            op,
                            extra: index,
                            value_left,
                        }
                    }
                    (step, _) => step,
                };
                group.epilogue.steps.push(step);
                group.nodes.push(e);
                tail_of.remove(&tail);
                tail_of.insert(e, g);
            }
            None => {
                tail_of.insert(e, groups.len());
                groups.push(Group::single(e));
            }
        }
    }
    // Each group runs at the position of its last node.
    let position: HashMap<NodeId, usize> = graph
        .node_order()
        .iter()
        .enumerate()
        .map(|(i, &n)| (n, i))
        .collect();
    groups.sort_by_key(|g| position.get(&g.last()).copied().unwrap_or(usize::MAX));
    groups
}

/// Moves producer groups into the groups that read them, as prologues computed in the
/// consumer's kernel, where `accept(producer, consumer)` says the pair's lowering computes
/// it (a depthwise convolution computing its input's expansion band by band:
/// [`crate::lower::lower_banded`]). A producer qualifies when:
/// 1. the consumer's anchor is a convolution whose input is the producer's only output,
///    the consumer has no prologue yet and the producer has none;
/// 2. the producer's anchor is a convolution and its epilogue has no extra operands;
/// 3. that value has exactly one reader (the consumer's anchor, once) and is not a graph
///    output.
///
/// The consumer keeps its place; it runs after everything the producer read was computed,
/// since the producer did.
pub fn attach_prologues(
    graph: &Graph,
    groups: Vec<Group>,
    mut accept: impl FnMut(&Group, &Group) -> bool,
) -> Vec<Group> {
    let mut readers: HashMap<ValueId, usize> = HashMap::new();
    for &n in graph.node_order() {
        for &input in graph.node(n).inputs.iter().flatten() {
            *readers.entry(input).or_default() += 1;
        }
    }
    let outputs: HashSet<ValueId> = graph.outputs().iter().copied().collect();
    let mut groups: Vec<Option<Group>> = groups.into_iter().map(Some).collect();
    let by_last: HashMap<NodeId, usize> = groups
        .iter()
        .enumerate()
        .filter_map(|(i, g)| g.as_ref().map(|g| (g.last(), i)))
        .collect();
    for c in 0..groups.len() {
        let Some(consumer) = &groups[c] else { continue };
        let anchor = graph.node(consumer.anchor());
        if consumer.prologue.is_some() || !matches!(anchor.op, Op::Conv(_)) {
            continue;
        }
        let Some(Some(v)) = anchor.inputs.first().copied() else {
            continue;
        };
        let ValueDef::Node { node: p, .. } = graph.value(v).def else {
            continue;
        };
        let Some(&pi) = by_last.get(&p) else { continue };
        let Some(producer) = &groups[pi] else {
            continue;
        };
        let qualifies = pi != c
            && producer.prologue.is_none()
            && producer.extras.is_empty()
            && matches!(graph.node(producer.anchor()).op, Op::Conv(_))
            && graph.node(p).outputs.len() == 1
            && readers.get(&v).copied() == Some(1)
            && !outputs.contains(&v);
        if !qualifies || !accept(producer, consumer) {
            continue;
        }
        let Some(producer) = groups[pi].take() else {
            continue;
        };
        if let Some(consumer) = &mut groups[c] {
            let mut nodes = producer.nodes;
            consumer.prologue = Some(Prologue {
                len: nodes.len(),
                epilogue: producer.epilogue,
            });
            nodes.append(&mut consumer.nodes);
            consumer.nodes = nodes;
        }
    }
    groups.into_iter().flatten().collect()
}

/// How an extra operand already accepted by [`fuse_into`] broadcasts to `e`'s output.
fn fused_broadcast(graph: &Graph, value: ValueId, e: NodeId) -> Broadcast {
    let out = graph
        .node(e)
        .outputs
        .first()
        .and_then(|&o| graph.value(o).ty.known_shape())
        .unwrap_or_default();
    let shape = graph.value(value).ty.known_shape().unwrap_or_default();
    Broadcast::of(&shape, &out).unwrap_or(Broadcast::Full)
}

/// The concrete `f32` shape of a value, if it has one.
fn f32_shape(graph: &Graph, id: ValueId) -> Option<Vec<usize>> {
    let ty = &graph.value(id).ty;
    if ty.dtype == DType::F32 {
        ty.known_shape()
    } else {
        None
    }
}

/// A constant `f32` scalar bound of a clip (`Some(None)` when absent; `None` when not a
/// constant scalar).
fn clip_bound(graph: &Graph, input: Option<&Option<ValueId>>) -> Option<Option<f32>> {
    match input {
        None | Some(None) => Some(None),
        Some(Some(id)) => {
            let c = graph.constant(*id)?;
            let v = c.tensor.as_f32()?;
            (v.len() == 1).then(|| v.first().copied())
        }
    }
}

/// Whether (and how) `e` joins an existing group: the group's index, `e`'s step, and the
/// value of the step's other operand (binary steps; the step's `extra` is set by the
/// caller).
fn fuse_into(
    graph: &Graph,
    e: NodeId,
    readers: &HashMap<ValueId, usize>,
    outputs: &HashSet<ValueId>,
    groups: &[Group],
    tail_of: &HashMap<NodeId, usize>,
) -> Option<(usize, EpilogueStep, Option<ValueId>)> {
    let node = graph.node(e);
    let [out] = node.outputs[..] else {
        return None;
    };
    let out_shape = f32_shape(graph, out)?;
    // Rule 1: which operands may carry the running value.
    let sides: &[usize] = match &node.op {
        Op::Unary(_) | Op::Clip => &[0],
        Op::Binary(Binary::PRelu) => &[0],
        Op::Binary(_) => &[0, 1],
        _ => return None,
    };
    for &side in sides {
        let Some(Some(v)) = node.inputs.get(side).copied() else {
            continue;
        };
        // Rule 2.
        let ValueDef::Node { node: p, .. } = graph.value(v).def else {
            continue;
        };
        let Some(&g) = tail_of.get(&p) else {
            continue;
        };
        if graph.node(p).outputs.len() != 1
            || readers.get(&v).copied() != Some(1)
            || outputs.contains(&v)
        {
            continue;
        }
        // Rule 3.
        let anchor = graph.node(groups[g].anchor());
        if !takes_epilogue(&anchor.op) {
            continue;
        }
        // Rules 3 and 4.
        if f32_shape(graph, v).as_ref() != Some(&out_shape) {
            continue;
        }
        // Rule 5 and the step.
        let step = match &node.op {
            Op::Unary(u) => (EpilogueStep::Unary(*u), None),
            Op::Clip => {
                let min = clip_bound(graph, node.inputs.get(1))?;
                let max = clip_bound(graph, node.inputs.get(2))?;
                (EpilogueStep::Clip { min, max }, None)
            }
            Op::Binary(op) => {
                let Some(Some(other)) = node.inputs.get(1 - side).copied() else {
                    continue;
                };
                let Some(shape) = f32_shape(graph, other) else {
                    continue;
                };
                if other == v || Broadcast::of(&shape, &out_shape).is_none() {
                    continue;
                }
                let step = EpilogueStep::Binary {
                    op: *op,
                    extra: 0,
                    value_left: side == 0,
                };
                (step, Some(other))
            }
            _ => return None,
        };
        return Some((g, step.0, step.1));
    }
    None
}

/// The graph as text IR with its nodes in execution order, each group preceded by a
/// `# kernel kN: anchor + ...` line (the `--stage fused` dump).
pub fn print_groups(graph: &Graph, groups: &[Group]) -> String {
    let text = crate::graph::text::print(graph);
    let lines: Vec<&str> = text.lines().collect();
    let consts = graph
        .values()
        .filter(|(_, v)| matches!(v.def, ValueDef::Const(_)))
        .count();
    let node_lines: HashMap<NodeId, &str> = graph
        .node_order()
        .iter()
        .enumerate()
        .filter_map(|(i, &n)| lines.get(1 + consts + i).map(|l| (n, *l)))
        .collect();
    let mut out = String::new();
    for line in lines.iter().take(1 + consts) {
        let _ = writeln!(out, "{line}");
    }
    for (k, group) in groups.iter().enumerate() {
        let _ = writeln!(out, "  # kernel k{k}: {}", group.describe(graph));
        for n in &group.nodes {
            if let Some(line) = node_lines.get(n) {
                let _ = writeln!(out, "{line}");
            }
        }
    }
    out.push_str("}\n");
    out
}
