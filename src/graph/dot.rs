//! Graphviz DOT output of a graph: `fovea dump-ir --format dot`.
//!
//! Ops are boxes labelled with the node name and op; graph inputs and outputs are ellipses;
//! each edge is labelled with the type of the tensor it carries. Constants are not drawn
//! (weights would swamp the picture); a node lists how many constant inputs it has.

use std::fmt::Write;

use super::{Graph, ValueDef};

fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The graph as a DOT digraph.
pub fn to_dot(graph: &Graph) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", quote(&graph.name));
    out.push_str("  rankdir=TB;\n  node [fontname=\"monospace\", fontsize=10];\n  edge [fontname=\"monospace\", fontsize=8];\n");
    for &id in graph.inputs() {
        let v = graph.value(id);
        let _ = writeln!(
            out,
            "  {} [shape=ellipse, label={}];",
            quote(&format!("in:{}", v.name)),
            quote(&format!("{}\n{}", v.name, v.ty))
        );
    }
    for &node_id in graph.node_order() {
        let node = graph.node(node_id);
        let consts = node
            .inputs
            .iter()
            .flatten()
            .filter(|id| matches!(graph.value(**id).def, ValueDef::Const(_)))
            .count();
        let mut label = format!("{}\n{}", node.name, node.op.name());
        if consts > 0 {
            let _ = write!(label, " (+{consts} const)");
        }
        let _ = writeln!(
            out,
            "  n{} [shape=box, label={}];",
            node_id.index(),
            quote(&label)
        );
        for id in node.inputs.iter().flatten() {
            let v = graph.value(*id);
            let source = match v.def {
                ValueDef::Input => quote(&format!("in:{}", v.name)),
                ValueDef::Node { node, .. } => format!("n{}", node.index()),
                ValueDef::Const(_) => continue,
            };
            let _ = writeln!(
                out,
                "  {source} -> n{} [label={}];",
                node_id.index(),
                quote(&v.ty.to_string())
            );
        }
    }
    for &id in graph.outputs() {
        let v = graph.value(id);
        let target = quote(&format!("out:{}", v.name));
        let _ = writeln!(
            out,
            "  {target} [shape=ellipse, label={}];",
            quote(&format!("{}\n{}", v.name, v.ty))
        );
        let source = match v.def {
            ValueDef::Input => quote(&format!("in:{}", v.name)),
            ValueDef::Node { node, .. } => format!("n{}", node.index()),
            ValueDef::Const(_) => continue,
        };
        let _ = writeln!(out, "  {source} -> {target};");
    }
    out.push_str("}\n");
    out
}
