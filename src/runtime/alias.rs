//! Aliasing: which values of a plan share memory with another value instead of being
//! computed into a buffer of their own. Every decision is made here, once per plan, from
//! the specialised graph and its fusion groups; the plan then resolves it into slots and
//! arena offsets (a view shares its source's slot, a concat part gets its own slot inside
//! the concat's buffer), so the executor never knows about aliasing.
//!
//! The rules, applied in this order:
//! 1. **Views.** Reshape, Flatten, Squeeze, Unsqueeze, Identity and Dropout (one output)
//!    keep the elements and their order, so when the output has the input's element count
//!    and type it is the input's bytes: the node runs no kernel and its output shares the
//!    input's slot. Chains of views share one slot. A graph output that would be a view of
//!    a graph input or a constant stays a copy: outputs come out of the arena (or are
//!    inputs or constants themselves), never out of other data under another shape.
//! 2. **Concat in place.** When every part of a concat is one contiguous block of the
//!    output (the dims before `axis` are all 1), each part is computed straight into its
//!    block and the concat runs no kernel. Each part (followed back through views to the
//!    value a kernel writes) must be written by a kernel of the plan or be another concat
//!    written in place (nesting), must not be a graph output nor have a view that is one,
//!    and must appear once among the parts of all concats. The concat's buffer then lives
//!    from the first part's kernel to the last reader of the concat or of any part.
//! 3. **In place.** A group whose anchor is an elementwise op (unary, binary, clip, batch
//!    norm, cast: each output element depends only on the operands at its own position)
//!    writes its output over an operand — of the anchor or an extra operand of its
//!    epilogue — that has the output's shape and type (so it is not broadcast), when that
//!    operand's buffer is a whole arena buffer (not a graph input or constant, not a part
//!    inside a concat), no value stored in that buffer is a graph output or is read after
//!    this group, no other operand of the group lives in that buffer, and the output is
//!    not itself a concat part.
//!
//! Aliasing only runs with the graph optimisations on ([`super::Compiler::optimize`]).
//! Writing in place relies on code generation treating every kernel buffer as possibly
//! overlapping every other (no alias-analysis hints on loads and stores): an elementwise
//! kernel's input and output may then be the same memory.

use std::collections::{HashMap, HashSet};

use crate::graph::op::Op;
use crate::graph::{Graph, ValueDef, ValueId};

use super::fuse::Group;

/// How a value that is not stored on its own is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Home {
    /// In the slot of `of`: the same bytes, the same length.
    Shared {
        /// The value whose slot it shares.
        of: ValueId,
        /// Why it shares it.
        how: Sharing,
    },
    /// Inside the buffer of `block` (a concat written in place), `byte_offset` bytes in.
    Inside {
        /// The concat's output.
        block: ValueId,
        /// Where the part starts in the concat's buffer.
        byte_offset: usize,
    },
}

/// Why a value shares another value's slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sharing {
    /// The value is a view of the other (rule 1).
    View,
    /// An elementwise kernel writes the value over the other (rule 3).
    InPlace,
}

/// How often each rule fired in one plan.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AliasCounts {
    /// Views that run no kernel.
    pub views: usize,
    /// Concats written in place by their producers.
    pub concats: usize,
    /// Values placed inside a concat's buffer.
    pub concat_parts: usize,
    /// Elementwise groups writing over an operand.
    pub in_place: usize,
}

/// The aliasing decisions of one plan.
#[derive(Clone, Debug, Default)]
pub struct Aliases {
    homes: HashMap<ValueId, Home>,
    skipped: Vec<bool>,
    counts: AliasCounts,
}

/// Whether `op` only relabels its input's shape (rule 1's ops).
pub fn is_view_op(op: &Op) -> bool {
    matches!(
        op,
        Op::Reshape { .. }
            | Op::Flatten { .. }
            | Op::Squeeze
            | Op::Unsqueeze
            | Op::Identity
            | Op::Dropout
    )
}

/// Whether each output element of `op` depends only on its operands at the same
/// (broadcast) position, read once before the element is stored (rule 3's anchors).
pub fn is_elementwise(op: &Op) -> bool {
    crate::lower::takes_epilogue(op) && !matches!(op, Op::Conv(_))
}

impl Aliases {
    /// No aliasing: every value gets its own slot and every group runs.
    pub fn none(groups: usize) -> Aliases {
        Aliases {
            homes: HashMap::new(),
            skipped: vec![false; groups],
            counts: AliasCounts::default(),
        }
    }

    /// Applies the rules (see the module doc) to a specialised graph and its groups in
    /// execution order.
    pub fn plan(graph: &Graph, groups: &[Group]) -> Aliases {
        let mut aliases = Aliases::none(groups.len());
        let graph_outputs: HashSet<ValueId> = graph.outputs().iter().copied().collect();
        // The group that writes each value (the outputs of its last node).
        let mut writer: HashMap<ValueId, usize> = HashMap::new();
        for (g, group) in groups.iter().enumerate() {
            for &out in &graph.node(group.last()).outputs {
                writer.insert(out, g);
            }
        }
        aliases.views(graph, groups, &graph_outputs);
        aliases.concats(graph, groups, &graph_outputs, &writer);
        aliases.in_place(graph, groups, &graph_outputs);
        aliases
    }

    /// How `value` is stored, if not in a slot of its own.
    pub fn home(&self, value: ValueId) -> Option<Home> {
        self.homes.get(&value).copied()
    }

    /// Every aliased value and its home, in value order.
    pub fn homes(&self) -> Vec<(ValueId, Home)> {
        let mut homes: Vec<(ValueId, Home)> = self.homes.iter().map(|(&v, &h)| (v, h)).collect();
        homes.sort_by_key(|(v, _)| *v);
        homes
    }

    /// Whether group `g` runs no kernel (a view, or a concat written in place).
    pub fn skips(&self, g: usize) -> bool {
        self.skipped.get(g).copied().unwrap_or(false)
    }

    /// How often each rule fired.
    pub fn counts(&self) -> AliasCounts {
        self.counts
    }

    /// The value whose slot `value` shares, following views and in-place writes.
    fn shared_root(&self, mut value: ValueId) -> ValueId {
        // Every `Shared` home points at an earlier value, so the walk ends; the bound
        // only guards against a bug.
        for _ in 0..=self.homes.len() {
            match self.homes.get(&value) {
                Some(Home::Shared { of, .. }) => value = *of,
                _ => break,
            }
        }
        value
    }

    /// The value owning the arena buffer `value` lives in, following views, in-place
    /// writes and concat parts.
    fn top(&self, mut value: ValueId) -> ValueId {
        for _ in 0..=self.homes.len() {
            match self.homes.get(&value) {
                Some(Home::Shared { of, .. }) => value = *of,
                Some(Home::Inside { block, .. }) => value = *block,
                None => break,
            }
        }
        value
    }

    /// Rule 1.
    fn views(&mut self, graph: &Graph, groups: &[Group], graph_outputs: &HashSet<ValueId>) {
        for (g, group) in groups.iter().enumerate() {
            let node = graph.node(group.anchor());
            if group.nodes().len() != 1 || !is_view_op(&node.op) {
                continue;
            }
            let (Some(Some(x)), &[y]) = (node.inputs.first().copied(), node.outputs.as_slice())
            else {
                continue;
            };
            let (xv, yv) = (graph.value(x), graph.value(y));
            let same_bytes = xv.ty.dtype == yv.ty.dtype
                && matches!(
                    (xv.ty.known_shape(), yv.ty.known_shape()),
                    (Some(a), Some(b)) if a.iter().product::<usize>() == b.iter().product::<usize>()
                );
            if !same_bytes {
                continue;
            }
            let root = self.shared_root(x);
            let outside_arena = !matches!(graph.value(root).def, ValueDef::Node { .. });
            if outside_arena && graph_outputs.contains(&y) {
                continue;
            }
            self.homes.insert(
                y,
                Home::Shared {
                    of: x,
                    how: Sharing::View,
                },
            );
            self.skipped[g] = true;
            self.counts.views += 1;
        }
    }

    /// Rule 2.
    fn concats(
        &mut self,
        graph: &Graph,
        groups: &[Group],
        graph_outputs: &HashSet<ValueId>,
        writer: &HashMap<ValueId, usize>,
    ) {
        for (g, group) in groups.iter().enumerate() {
            let node = graph.node(group.anchor());
            let Op::Concat { axis } = node.op else {
                continue;
            };
            let [c] = node.outputs[..] else {
                continue;
            };
            let Some(parts) = self.concat_parts(graph, node.inputs.as_slice(), c, axis) else {
                continue;
            };
            let mut roots = HashSet::new();
            let placeable = parts.iter().all(|&(v, _)| {
                let root = self.shared_root(v);
                let written = match writer.get(&root) {
                    Some(&w) => !self.skipped[w] || self.concat_in_place(graph, groups, w),
                    None => false,
                };
                written
                    && roots.insert(root)
                    && !self.homes.contains_key(&root)
                    && !self.has_output(graph, root, graph_outputs)
            });
            if !placeable {
                continue;
            }
            for (v, byte_offset) in parts {
                let root = self.shared_root(v);
                self.homes.insert(
                    root,
                    Home::Inside {
                        block: c,
                        byte_offset,
                    },
                );
                self.counts.concat_parts += 1;
            }
            self.skipped[g] = true;
            self.counts.concats += 1;
        }
    }

    /// Each part of concat output `c` with its byte offset, when every part is one
    /// contiguous block of the output.
    fn concat_parts(
        &self,
        graph: &Graph,
        inputs: &[Option<ValueId>],
        c: ValueId,
        axis: i64,
    ) -> Option<Vec<(ValueId, usize)>> {
        let ty = &graph.value(c).ty;
        let shape = ty.known_shape()?;
        let rank = i64::try_from(shape.len()).ok()?;
        let axis = usize::try_from(if axis < 0 { axis + rank } else { axis }).ok()?;
        if axis >= shape.len() || shape[..axis].iter().product::<usize>() != 1 {
            return None;
        }
        let inner: usize = shape[axis + 1..].iter().product();
        let mut offset = 0usize;
        let mut parts = Vec::with_capacity(inputs.len());
        for input in inputs {
            let v = (*input)?;
            let value = graph.value(v);
            let part = value.ty.known_shape()?;
            if value.ty.dtype != ty.dtype || part.len() != shape.len() {
                return None;
            }
            parts.push((v, offset));
            let elements = part.get(axis)?.checked_mul(inner)?;
            offset = offset.checked_add(elements.checked_mul(ty.dtype.size_bytes())?)?;
        }
        let total = shape
            .iter()
            .product::<usize>()
            .checked_mul(ty.dtype.size_bytes())?;
        (offset == total).then_some(parts)
    }

    /// Whether group `g` is a concat already written in place.
    fn concat_in_place(&self, graph: &Graph, groups: &[Group], g: usize) -> bool {
        self.skipped[g]
            && groups
                .get(g)
                .is_some_and(|group| matches!(graph.node(group.anchor()).op, Op::Concat { .. }))
    }

    /// Whether `root` or a value sharing its slot is a graph output.
    fn has_output(&self, graph: &Graph, root: ValueId, graph_outputs: &HashSet<ValueId>) -> bool {
        graph_outputs.contains(&root)
            || graph.outputs().iter().any(|&o| self.shared_root(o) == root)
    }

    /// Rule 3.
    fn in_place(&mut self, graph: &Graph, groups: &[Group], graph_outputs: &HashSet<ValueId>) {
        // The values each running group reads, and the last running group reading each.
        let reads: Vec<Vec<ValueId>> = groups
            .iter()
            .map(|group| {
                let anchor = graph.node(group.anchor());
                anchor
                    .inputs
                    .iter()
                    .flatten()
                    .chain(group.extras())
                    .copied()
                    .collect()
            })
            .collect();
        let mut last_read: HashMap<ValueId, usize> = HashMap::new();
        for (g, values) in reads.iter().enumerate() {
            if !self.skipped[g] {
                for &v in values {
                    last_read.insert(v, g);
                }
            }
        }
        let stored: Vec<ValueId> = graph
            .values()
            .filter(|(_, v)| matches!(v.def, ValueDef::Node { .. }))
            .map(|(id, _)| id)
            .collect();
        for (g, group) in groups.iter().enumerate() {
            let anchor = graph.node(group.anchor());
            if self.skipped[g] || !is_elementwise(&anchor.op) {
                continue;
            }
            let [y] = graph.node(group.last()).outputs[..] else {
                continue;
            };
            if self.homes.contains_key(&y) {
                continue;
            }
            let y_ty = &graph.value(y).ty;
            let candidate = reads[g].iter().copied().find(|&x| {
                let x_ty = &graph.value(x).ty;
                if x_ty.dtype != y_ty.dtype
                    || x_ty.known_shape().is_none()
                    || x_ty.known_shape() != y_ty.known_shape()
                {
                    return false;
                }
                let root = self.shared_root(x);
                if self.homes.contains_key(&root)
                    || !matches!(graph.value(root).def, ValueDef::Node { .. })
                {
                    return false;
                }
                let others_apart = reads[g].iter().all(|&o| o == x || self.top(o) != root);
                let dead_after = stored.iter().all(|&m| {
                    self.top(m) != root
                        || (!graph_outputs.contains(&m)
                            && last_read.get(&m).is_none_or(|&r| r <= g))
                });
                others_apart && dead_after
            });
            if let Some(x) = candidate {
                self.homes.insert(
                    y,
                    Home::Shared {
                        of: x,
                        how: Sharing::InPlace,
                    },
                );
                self.counts.in_place += 1;
            }
        }
    }
}
