//! ONNX import.

use crate::error::{Error, Result};
use crate::graph::Graph;

/// Imports an ONNX model from its serialized protobuf bytes.
pub fn import(bytes: &[u8]) -> Result<Graph> {
    let _ = bytes;
    Err(Error::Usage(
        "the ONNX importer is not written yet".to_string(),
    ))
}
