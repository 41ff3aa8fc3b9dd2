//! The graph verifier: checks every invariant of a [`Graph`] and reports all problems at once.
//!
//! Invariants checked (see also the module doc of [`crate::graph`]):
//! - value names are unique and every value is defined once: a graph input is listed among
//!   the graph's inputs (once), a constant's type is its tensor's, and a node output points
//!   back at a node of the graph that lists it among its outputs;
//! - the graph's inputs are input values and its outputs exist;
//! - the execution order lists every node exactly once;
//! - every node input exists and is defined by a graph input, a constant or a node earlier in
//!   the execution order;
//! - the petgraph edges into a node are exactly one edge `producer → node` per input made by
//!   a node, carrying that value; and the graph is acyclic;
//! - every node's input and output counts fit its op, its required inputs are present, and
//!   shape inference accepts its inputs;
//! - every node output's stored type agrees with what shape inference computes: same dtype
//!   and rank, every inferred known dim equal, every inferred symbol the same symbol (an
//!   inferred `?` accepts any stored dim).
//!
//! A problem is a [`Diagnostic`] located at `node NAME (op)`, `value NAME`, or nowhere for
//! graph-wide problems; any problem makes [`verify`] return [`Error::InvalidGraph`].

use std::collections::{HashMap, HashSet};

use crate::error::{Diagnostic, Error, Result};
use crate::graph::infer::arity_text;
use crate::graph::types::{Dim, TensorType};
use crate::graph::{Graph, NodeId, Value, ValueDef, ValueId};

/// Checks the graph's invariants (see [`crate::graph`]), reporting every problem.
pub fn verify(graph: &Graph) -> Result<()> {
    let mut checker = Checker {
        graph,
        values: graph.values().map(|(_, v)| v).collect(),
        diagnostics: Vec::new(),
    };
    checker.check_values();
    checker.check_graph_io();
    checker.check_nodes();
    if checker.diagnostics.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidGraph {
            diagnostics: checker.diagnostics,
        })
    }
}

/// Whether a stored type agrees with the inferred one: same dtype and rank; an inferred known
/// dim or symbol must be stored as is, an inferred `?` accepts anything.
pub fn type_agrees(stored: &TensorType, inferred: &TensorType) -> bool {
    stored.dtype == inferred.dtype
        && stored.rank() == inferred.rank()
        && stored
            .shape
            .iter()
            .zip(&inferred.shape)
            .all(|(s, i)| *i == Dim::Unknown || s == i)
}

struct Checker<'g> {
    graph: &'g Graph,
    values: Vec<&'g Value>,
    diagnostics: Vec<Diagnostic>,
}

impl<'g> Checker<'g> {
    fn report(&mut self, location: impl Into<String>, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic {
            location: location.into(),
            message: message.into(),
        });
    }

    fn value(&self, id: ValueId) -> Option<&'g Value> {
        self.values.get(id.0).copied()
    }

    /// A value's name for messages, or its id if it does not exist.
    fn value_name(&self, id: ValueId) -> String {
        match self.value(id) {
            Some(v) => v.name.clone(),
            None => format!("#{} (missing)", id.0),
        }
    }

    /// A node for messages, `node NAME (op)`, or its index if it is not in the graph.
    fn describe(&self, id: NodeId) -> String {
        if self.graph.petgraph().node_weight(id).is_some() {
            self.graph.describe_node(id)
        } else {
            format!("missing node {}", id.index())
        }
    }

    fn check_values(&mut self) {
        let graph = self.graph;
        let mut names = HashSet::new();
        let inputs: HashSet<ValueId> = graph.inputs().iter().copied().collect();
        for (id, value) in graph.values() {
            let location = format!("value {}", value.name);
            if !names.insert(value.name.as_str()) {
                self.report(&location, "the name is used by more than one value");
            } else if graph.value_by_name(&value.name) != Some(id) {
                self.report(&location, "the name does not look up this value");
            }
            match &value.def {
                ValueDef::Input => {
                    if !inputs.contains(&id) {
                        self.report(&location, "is an input value but not a graph input");
                    }
                }
                ValueDef::Const(c) => {
                    let actual = TensorType::known(c.tensor.dtype(), c.tensor.shape());
                    if value.ty != actual {
                        self.report(
                            &location,
                            format!("has type {} but its constant is {actual}", value.ty),
                        );
                    }
                }
                ValueDef::Node { node, output } => match graph.petgraph().node_weight(*node) {
                    None => self.report(&location, "is defined by a node that is not in the graph"),
                    Some(n) if n.outputs.get(*output) != Some(&id) => self.report(
                        &location,
                        format!(
                            "claims to be output {output} of {}, which does not list it",
                            graph.describe_node(*node)
                        ),
                    ),
                    Some(_) => {}
                },
            }
        }
    }

    fn check_graph_io(&mut self) {
        let graph = self.graph;
        let mut seen = HashSet::new();
        for (i, &id) in graph.inputs().iter().enumerate() {
            match self.value(id) {
                None => self.report("", format!("graph input {i} refers to a missing value")),
                Some(v) => {
                    if !seen.insert(id) {
                        self.report(
                            format!("value {}", v.name),
                            "is listed twice as a graph input",
                        );
                    }
                    if v.def != ValueDef::Input {
                        self.report(
                            format!("value {}", v.name),
                            "is a graph input but not defined as an input",
                        );
                    }
                }
            }
        }
        for (i, &id) in graph.outputs().iter().enumerate() {
            if self.value(id).is_none() {
                self.report("", format!("graph output {i} refers to a missing value"));
            }
        }
    }

    fn check_nodes(&mut self) {
        let graph = self.graph;
        let pg = graph.petgraph();
        // Position of each node in the execution order.
        let mut position: HashMap<NodeId, usize> = HashMap::new();
        for (p, &id) in graph.node_order().iter().enumerate() {
            if pg.node_weight(id).is_none() {
                self.report(
                    "",
                    format!("the execution order lists a missing node {}", id.index()),
                );
            } else if position.insert(id, p).is_some() {
                self.report(
                    graph.describe_node(id),
                    "is listed twice in the execution order",
                );
            }
        }
        for id in pg.node_indices() {
            if !position.contains_key(&id) {
                self.report(graph.describe_node(id), "is not in the execution order");
            }
        }
        for (p, &id) in graph.node_order().iter().enumerate() {
            if position.get(&id) == Some(&p) {
                self.check_node(id, p, &position);
            }
        }
        if petgraph::algo::is_cyclic_directed(pg) {
            self.report("", "the graph has a cycle");
        }
    }

    fn check_node(&mut self, id: NodeId, p: usize, position: &HashMap<NodeId, usize>) {
        let graph = self.graph;
        let node = graph.node(id);
        let location = graph.describe_node(id);

        // Inputs: defined before this node; the edges they need.
        let mut inputs_ok = true;
        let mut expected_edges: HashMap<(NodeId, ValueId), usize> = HashMap::new();
        for (i, input) in node.inputs.iter().enumerate() {
            let Some(input) = *input else { continue };
            let Some(value) = self.value(input) else {
                self.report(&location, format!("input {i} refers to a missing value"));
                inputs_ok = false;
                continue;
            };
            if let ValueDef::Node { node: producer, .. } = value.def {
                *expected_edges.entry((producer, input)).or_default() += 1;
                if position.get(&producer).is_none_or(|&q| q >= p) {
                    self.report(
                        &location,
                        format!("input {i} reads {} before it is defined", value.name),
                    );
                }
            }
        }
        let mut actual_edges: HashMap<(NodeId, ValueId), usize> = HashMap::new();
        for edge in graph
            .petgraph()
            .edges_directed(id, petgraph::Direction::Incoming)
        {
            use petgraph::visit::EdgeRef;
            *actual_edges
                .entry((edge.source(), *edge.weight()))
                .or_default() += 1;
        }
        for (&(producer, value), &n) in &expected_edges {
            let have = actual_edges.get(&(producer, value)).copied().unwrap_or(0);
            if have < n {
                self.report(
                    &location,
                    format!(
                        "has no edge from {} for its input {}",
                        self.describe(producer),
                        self.value_name(value)
                    ),
                );
            }
        }
        for (&(source, value), &n) in &actual_edges {
            let want = expected_edges.get(&(source, value)).copied().unwrap_or(0);
            if n > want {
                self.report(
                    &location,
                    format!(
                        "has an edge from {} carrying {} that matches no input",
                        self.describe(source),
                        self.value_name(value)
                    ),
                );
            }
        }

        // Outputs: each defined by this node at its position.
        let mut outputs_ok = true;
        for (i, &out) in node.outputs.iter().enumerate() {
            match self.value(out) {
                None => {
                    self.report(&location, format!("output {i} refers to a missing value"));
                    outputs_ok = false;
                }
                Some(v)
                    if v.def
                        != (ValueDef::Node {
                            node: id,
                            output: i,
                        }) =>
                {
                    self.report(
                        &location,
                        format!("output {i} ({}) is not defined by this node", v.name),
                    );
                }
                Some(_) => {}
            }
        }

        // Arity.
        let input_arity = node.op.input_arity();
        let output_arity = node.op.output_arity();
        let mut arity_ok = true;
        if !input_arity.contains(&node.inputs.len()) {
            self.report(
                &location,
                format!(
                    "has {} inputs, the op takes {}",
                    node.inputs.len(),
                    arity_text(&input_arity)
                ),
            );
            arity_ok = false;
        }
        if !output_arity.contains(&node.outputs.len()) {
            self.report(
                &location,
                format!(
                    "has {} outputs, the op makes {}",
                    node.outputs.len(),
                    arity_text(&output_arity)
                ),
            );
            arity_ok = false;
        }
        if !(inputs_ok && outputs_ok && arity_ok) {
            return;
        }

        // Types, by shape inference.
        match graph.infer_node(&node.name, &node.op, &node.inputs, node.outputs.len()) {
            Err(e) => {
                let message = match e {
                    Error::Node { message, .. } => message,
                    other => other.to_string(),
                };
                self.report(&location, message);
            }
            Ok(types) => {
                for (&out, inferred) in node.outputs.iter().zip(&types) {
                    let Some(value) = self.value(out) else {
                        continue;
                    };
                    if !type_agrees(&value.ty, inferred) {
                        self.report(
                            &location,
                            format!(
                                "output {} has type {} but shape inference gives {inferred}",
                                value.name, value.ty
                            ),
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::op::{Binary, Unary};
    use crate::graph::{ConstInit, Op};
    use crate::tensor::{DType, Tensor};

    fn known(shape: &[usize]) -> TensorType {
        TensorType::known(DType::F32, shape)
    }

    fn diagnostics(graph: &Graph) -> Vec<String> {
        match verify(graph) {
            Ok(()) => Vec::new(),
            Err(Error::InvalidGraph { diagnostics }) => {
                diagnostics.iter().map(ToString::to_string).collect()
            }
            Err(other) => panic!("unexpected error {other}"),
        }
    }

    fn relu() -> Op {
        Op::Unary(Unary::Relu)
    }

    /// x: f32[N,4] -> relu -> add(bias) -> y
    fn good_graph() -> Graph {
        let mut g = Graph::new("good");
        let n = Dim::Sym("N".into());
        let x = g
            .add_input("x", TensorType::new(DType::F32, vec![n, Dim::Known(4)]))
            .unwrap();
        let b = g
            .add_const(
                "b",
                Tensor::from_f32(vec![4], vec![0.0; 4]).unwrap(),
                ConstInit::Fill { value: 0.0 },
            )
            .unwrap();
        let r = g
            .add_node("r", relu(), vec![Some(x)], vec!["r".into()])
            .unwrap();
        let y = g
            .add_node(
                "add",
                Op::Binary(Binary::Add),
                vec![Some(r[0]), Some(b)],
                vec!["y".into()],
            )
            .unwrap();
        g.set_outputs(y);
        g
    }

    #[test]
    fn a_good_graph_verifies() {
        assert_eq!(diagnostics(&good_graph()), Vec::<String>::new());
    }

    #[test]
    fn type_agreement_rules() {
        let sym = |s: &str| Dim::Sym(s.into());
        let t = |dims: Vec<Dim>| TensorType::new(DType::F32, dims);
        let inferred = t(vec![sym("N"), Dim::Known(3), Dim::Unknown]);
        assert!(type_agrees(
            &t(vec![sym("N"), Dim::Known(3), Dim::Known(7)]),
            &inferred
        ));
        assert!(type_agrees(
            &t(vec![sym("N"), Dim::Known(3), sym("W")]),
            &inferred
        ));
        assert!(!type_agrees(
            &t(vec![sym("M"), Dim::Known(3), Dim::Unknown]),
            &inferred
        ));
        assert!(!type_agrees(
            &t(vec![Dim::Known(1), Dim::Known(3), Dim::Unknown]),
            &inferred
        ));
        assert!(!type_agrees(
            &t(vec![sym("N"), Dim::Unknown, Dim::Unknown]),
            &inferred
        ));
        assert!(!type_agrees(&t(vec![sym("N"), Dim::Known(3)]), &inferred));
        let i64t = TensorType::new(DType::I64, inferred.shape.clone());
        assert!(!type_agrees(&i64t, &inferred));
    }

    #[test]
    fn every_problem_is_reported() {
        let mut g = Graph::new("bad");
        let x = g.add_input("x", known(&[2, 3])).unwrap();
        // Wrong output shape.
        let a = g
            .add_node_typed(
                "a",
                relu(),
                vec![Some(x)],
                vec![("a".into(), known(&[2, 4]))],
            )
            .unwrap();
        // Wrong output dtype.
        let b = g
            .add_node_typed(
                "b",
                relu(),
                vec![Some(a[0])],
                vec![("b".into(), TensorType::known(DType::I64, &[2, 3]))],
            )
            .unwrap();
        // Wrong arity.
        let c = g
            .add_node_typed(
                "c",
                relu(),
                vec![Some(x), Some(x)],
                vec![("c".into(), known(&[2, 3]))],
            )
            .unwrap();
        // Inputs that shape inference rejects.
        let y = g.add_input("y", known(&[5])).unwrap();
        let d = g
            .add_node_typed(
                "d",
                Op::Binary(Binary::Add),
                vec![Some(c[0]), Some(y)],
                vec![("d".into(), known(&[2, 3]))],
            )
            .unwrap();
        g.set_outputs(vec![b[0], d[0], ValueId(99)]);
        let found = diagnostics(&g);
        assert_eq!(
            found,
            vec![
                "graph output 2 refers to a missing value".to_string(),
                "node a (relu): output a has type f32[2,4] but shape inference gives f32[2,3]"
                    .to_string(),
                "node b (relu): output b has type i64[2,3] but shape inference gives f32[2,4]"
                    .to_string(),
                "node c (relu): has 2 inputs, the op takes 1".to_string(),
                "node d (add): cannot broadcast f32[2,3] with f32[5]".to_string(),
            ]
        );
        let err = verify(&g).unwrap_err();
        assert!(
            err.to_string().starts_with("invalid graph: 5 problem(s):"),
            "{err}"
        );
    }

    #[test]
    fn structural_problems_are_reported() {
        let mut g = good_graph();
        let order = g.node_order().to_vec();
        let (r, add) = (order[0], order[1]);
        let r_out = g.node(r).outputs[0];
        let y = g.node(add).outputs[0];
        // A back edge: a cycle, and an edge that matches no input.
        g.nodes.add_edge(add, r, y);
        // A node that is not in the execution order, and an input value that is not a graph
        // input.
        g.nodes.add_node(crate::graph::Node {
            name: "stray".into(),
            op: Op::Identity,
            inputs: vec![Some(r_out)],
            outputs: vec![],
        });
        g.inputs.clear();
        let found = diagnostics(&g);
        let expected = [
            "value x: is an input value but not a graph input",
            "node stray (identity): is not in the execution order",
            "node r (relu): has an edge from node add (add) carrying y that matches no input",
            "the graph has a cycle",
        ];
        for e in expected {
            assert!(found.iter().any(|f| f == e), "missing {e:?} in {found:#?}");
        }
        assert_eq!(found.len(), expected.len(), "{found:#?}");
    }

    #[test]
    fn a_missing_edge_is_reported() {
        let mut g = good_graph();
        let order = g.node_order().to_vec();
        let edge = g.nodes.find_edge(order[0], order[1]).unwrap();
        g.nodes.remove_edge(edge);
        assert_eq!(
            diagnostics(&g),
            vec!["node add (add): has no edge from node r (relu) for its input r".to_string()]
        );
    }

    #[test]
    fn reading_a_later_value_is_reported() {
        let mut g = good_graph();
        let order = g.node_order().to_vec();
        g.order = vec![order[1], order[0]];
        let found = diagnostics(&g);
        assert!(
            found.contains(&"node add (add): input 0 reads r before it is defined".to_string()),
            "{found:#?}"
        );
    }
}
