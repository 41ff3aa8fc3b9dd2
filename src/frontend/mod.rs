//! Frontends: model formats into the graph IR.

pub mod onnx;
