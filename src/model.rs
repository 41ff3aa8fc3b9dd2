//! [`Model`]: a verified graph, loaded from a file, parsed from text or built in code.

use std::path::Path;

use crate::error::{Error, Result};
use crate::graph::{Graph, TensorType};
use crate::tensor::Tensor;

/// A model ready to run: a graph that passed the verifier.
#[derive(Clone, Debug)]
pub struct Model {
    graph: Graph,
}

impl Model {
    /// Loads a model file: `.onnx` is read as ONNX, anything else as the text IR. Errors name
    /// the file.
    pub fn load(path: impl AsRef<Path>) -> Result<Model> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let is_onnx = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("onnx"));
        let result = if is_onnx {
            Model::from_onnx_bytes(&bytes)
        } else {
            match String::from_utf8(bytes) {
                Ok(text) => Model::parse(&text),
                Err(_) => Err(Error::Usage(
                    "not valid UTF-8 text (text IR expected; ONNX files must end in .onnx)"
                        .to_string(),
                )),
            }
        };
        result.map_err(|e| e.in_file(path))
    }

    /// Imports a serialized ONNX model.
    pub fn from_onnx_bytes(bytes: &[u8]) -> Result<Model> {
        Model::from_graph(crate::frontend::onnx::import(bytes)?)
    }

    /// Parses a model written in the text IR.
    pub fn parse(text: &str) -> Result<Model> {
        Model::from_graph(crate::graph::text::parse(text)?)
    }

    /// Wraps a graph built in code, after verifying it.
    pub fn from_graph(graph: Graph) -> Result<Model> {
        graph.verify()?;
        Ok(Model { graph })
    }

    /// The graph IR.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The model's name.
    pub fn name(&self) -> &str {
        &self.graph.name
    }

    /// The inputs, in order, with their types.
    pub fn inputs(&self) -> Vec<(&str, &TensorType)> {
        self.io(self.graph.inputs())
    }

    /// The outputs, in order, with their types.
    pub fn outputs(&self) -> Vec<(&str, &TensorType)> {
        self.io(self.graph.outputs())
    }

    fn io(&self, ids: &[crate::graph::ValueId]) -> Vec<(&str, &TensorType)> {
        ids.iter()
            .map(|&id| {
                let v = self.graph.value(id);
                (v.name.as_str(), &v.ty)
            })
            .collect()
    }

    /// Runs the model with the reference interpreter. Returns the outputs in order, each with
    /// its name.
    pub fn interpret(&self, inputs: &[(&str, Tensor)]) -> Result<Vec<(String, Tensor)>> {
        crate::interp::run(&self.graph, inputs)
    }
}
