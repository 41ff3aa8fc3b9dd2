//! The text IR: printer and parser.

use crate::error::{Error, Result};
use crate::graph::Graph;

/// Prints a graph in the text IR.
pub fn print(graph: &Graph) -> String {
    format!("graph {} {{}}\n", graph.name)
}

/// Parses the text IR.
pub fn parse(source: &str) -> Result<Graph> {
    let _ = source;
    Err(Error::Usage(
        "the text IR parser is not written yet".to_string(),
    ))
}
