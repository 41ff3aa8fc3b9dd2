//! Graphviz DOT output of a graph: `fovea dump-ir --format dot`.
//!
//! Ops are boxes labelled with the node name and op; graph inputs and outputs are ellipses;
//! each edge is labelled with the type of the tensor it carries. Constants are not drawn
//! (weights would swamp the picture); a node lists how many constant inputs it has.
//! [`to_dot_clustered`] also draws groups of nodes (fused kernels) as labelled boxes around
//! their nodes.

use std::fmt::Write;

use super::{Graph, NodeId, ValueDef};

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

/// The graph as a DOT digraph with each cluster of nodes (a label and its nodes, such as one
/// fused kernel) drawn as a box around them. Clusters of one node are drawn as plain nodes.
pub fn to_dot_clustered(graph: &Graph, clusters: &[(String, Vec<NodeId>)]) -> String {
    let mut out = to_dot(graph);
    // Drop the closing brace, add the clusters, close again. A node declared at the top
    // level and named again inside a cluster is drawn inside it.
    if out.ends_with("}\n") {
        out.truncate(out.len() - 2);
    }
    for (k, (label, nodes)) in clusters.iter().enumerate() {
        if nodes.len() < 2 {
            continue;
        }
        let _ = writeln!(out, "  subgraph cluster_{k} {{");
        let _ = writeln!(
            out,
            "    label={}; style=\"rounded,filled\"; fillcolor=\"#eef3fb\"; fontname=\"monospace\"; fontsize=9;",
            quote(label)
        );
        for node in nodes {
            let _ = writeln!(out, "    n{};", node.index());
        }
        out.push_str("  }\n");
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clusters_of_two_or_more_nodes_become_boxes() {
        let graph = crate::graph::text::parse(
            "graph g(x: f32[2]) -> (z: f32[2]) {
               y: f32[2] = relu(x)
               z: f32[2] = sigmoid(y)
             }",
        )
        .expect("parses");
        let order = graph.node_order().to_vec();
        let clusters = vec![
            ("kernel k0".to_string(), order.clone()),
            ("alone".to_string(), order[..1].to_vec()),
        ];
        let dot = to_dot_clustered(&graph, &clusters);
        assert!(dot.starts_with(&to_dot(&graph)[..to_dot(&graph).len() - 2]));
        assert!(dot.contains("subgraph cluster_0 {"), "{dot}");
        assert!(dot.contains("label=\"kernel k0\""), "{dot}");
        assert!(
            !dot.contains("alone"),
            "one-node clusters are not drawn: {dot}"
        );
        assert!(dot.ends_with("  }\n}\n"), "{dot}");
    }
}
