//! Which tensors the plan stores in blocks of 8 channels (`[N][C / 8][H · W][8]`, see
//! [`crate::lower::Blocked`]) instead of one plane per channel.
//!
//! A 1×1 convolution's register tile reads, for each input channel, a few neighbouring
//! pixels: from planes that is one cache line per channel, of which it uses 16 bytes; from
//! blocks of 8 channels it is 2 lines per 8 channels, used whole (SqueezeNet's squeeze
//! layers and classifier 7–25% faster). Its producers store such blocks more cheaply than
//! planes, too: their accumulators already hold channels of one pixel, which planes need
//! transposed. A tensor is stored so when
//!
//! - it is not a graph output, is `f32` `[N, C, H, W]` with `C` a multiple of 8, and is
//!   written by one fused group's kernels or, as a concat written in place, by one group per
//!   part (each part read by nothing else);
//! - every group reading it is a convolution anchored on it, reading it as its input and
//!   nothing else (not as a residual, not through a view);
//! - every writer's kernels store it so and every reader's load it so: the lowering is
//!   asked (`lower`), and each group stores or loads at most one tensor so (a kernel
//!   either writes or reads blocks, which keeps the choices independent).
//!
//! The lowering a writer or reader was accepted with is the one the plan uses.

use std::collections::{HashMap, HashSet};

use crate::graph::NodeId;

use super::alias::{Aliases, Home};
use super::fuse::Group;
use crate::graph::{Graph, Op, ValueDef, ValueId};
use crate::lower::{Blocked, Lowered};
use crate::tensor::DType;

/// Chooses the tensors stored in blocks of 8 channels (see the module documentation);
/// `lower(g, flags)` lowers group `g` with `flags`, `None` where its kernels cannot honour
/// them. Returns, by group index, the lowering of every group that stores or loads such a
/// tensor.
pub fn plan(
    graph: &Graph,
    groups: &[Group],
    aliases: &Aliases,
    mut lower: impl FnMut(usize, Blocked) -> Option<Lowered>,
) -> HashMap<usize, Lowered> {
    let mut lowered: HashMap<usize, Lowered> = HashMap::new();
    if !crate::codegen::wide_vectors() {
        return lowered;
    }
    let outputs: HashSet<ValueId> = graph.outputs().iter().copied().collect();
    // The group whose kernels write each value, and every (group, node) reading it.
    let mut writer: HashMap<ValueId, usize> = HashMap::new();
    let mut group_of = HashMap::new();
    for (g, group) in groups.iter().enumerate() {
        for &node in group.nodes() {
            group_of.insert(node, g);
        }
        if !aliases.skips(g) {
            for &value in &graph.node(group.last()).outputs {
                writer.insert(value, g);
            }
        }
    }
    // The nodes reading a value computed by a node (once each).
    let readers = |value: ValueId| -> Vec<NodeId> {
        let ValueDef::Node { node, .. } = graph.value(value).def else {
            return Vec::new();
        };
        let mut nodes: Vec<NodeId> = graph
            .consumers(node)
            .filter(|&(_, v)| v == value)
            .map(|(n, _)| n)
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    };
    for (g, group) in groups.iter().enumerate() {
        let last = graph.node(group.last());
        let [value] = last.outputs[..] else {
            continue;
        };
        // The writers: this group's kernels, or a concat's parts'.
        let writers: Vec<(usize, ValueId)> = match (aliases.skips(g), &last.op) {
            (false, _) => match aliases.home(value) {
                None => vec![(g, value)],
                Some(_) => continue,
            },
            (true, Op::Concat { .. }) if aliases.home(value).is_none() => {
                let parts: Option<Vec<(usize, ValueId)>> = last
                    .inputs
                    .iter()
                    .map(|&part| {
                        let part = part?;
                        let inside = matches!(
                            aliases.home(part),
                            Some(Home::Inside { block, .. }) if block == value
                        );
                        let only_concat = readers(part) == [group.last()];
                        let writes = writer.get(&part).copied();
                        (inside && only_concat && !outputs.contains(&part))
                            .then_some(writes)
                            .flatten()
                            .map(|w| (w, part))
                    })
                    .collect();
                match parts {
                    Some(parts) => parts,
                    None => continue,
                }
            }
            _ => continue,
        };
        if outputs.contains(&value) || !blockable(graph, value) {
            continue;
        }
        if writers.iter().any(|&(_, part)| !blockable(graph, part)) {
            continue;
        }
        // The readers: convolution anchors reading it as their input 0 alone.
        let mut consumers = Vec::new();
        let mut ok = true;
        for node in readers(value) {
            let Some(&r) = group_of.get(&node) else {
                ok = false;
                break;
            };
            let n = graph.node(node);
            let sole_input = n.inputs.first() == Some(&Some(value))
                && n.inputs.iter().skip(1).flatten().all(|&v| v != value);
            if groups[r].anchor() != node
                || groups[r].prologue().is_some()
                || aliases.skips(r)
                || !matches!(n.op, Op::Conv(_))
                || !sole_input
            {
                ok = false;
                break;
            }
            consumers.push(r);
        }
        if !ok || consumers.is_empty() {
            continue;
        }
        let taken = |g: &usize| lowered.contains_key(g);
        if writers
            .iter()
            .any(|(w, _)| taken(w) || groups[*w].prologue().is_some())
            || consumers.iter().any(taken)
        {
            continue;
        }
        let asked = writers
            .iter()
            .map(|&(w, _)| {
                (
                    w,
                    Blocked {
                        input: false,
                        output: true,
                    },
                )
            })
            .chain(consumers.iter().map(|&r| {
                (
                    r,
                    Blocked {
                        input: true,
                        output: false,
                    },
                )
            }));
        let mut accepted = Vec::new();
        for (group, flags) in asked {
            match lower(group, flags) {
                Some(l) => accepted.push((group, l)),
                None => break,
            }
        }
        if accepted.len() != writers.len() + consumers.len() {
            continue;
        }
        lowered.extend(accepted);
    }
    lowered
}

/// Whether `value` can be stored in blocks of 8 channels: `f32` `[N, C, H, W]`, `C` a
/// multiple of 8, computed by a node (not an input or a constant).
fn blockable(graph: &Graph, value: ValueId) -> bool {
    let v = graph.value(value);
    let shape = v.ty.known_shape();
    v.ty.dtype == DType::F32
        && matches!(v.def, ValueDef::Node { .. })
        && shape.is_some_and(|s| s.len() == 4 && s[1] > 0 && s[1].is_multiple_of(8))
}
