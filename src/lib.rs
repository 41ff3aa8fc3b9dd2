//! Fovea: a JIT compiler for convolutional perception models on CPUs.
//!
//! A host program hands Fovea a model (an ONNX file, the text IR, or a graph built in code);
//! Fovea lowers it to its graph IR and runs it. Today the reference interpreter runs every
//! model; the JIT builds on the same IR.
//!
//! ```no_run
//! # fn main() -> fovea::Result<()> {
//! let model = fovea::Model::load("ir/tiny_cnn.fovea")?;
//! let input = fovea::Tensor::zeros(fovea::DType::F32, vec![1, 3, 32, 32])?;
//! let outputs = model.interpret(&[("input", input)])?;
//! println!("{} -> {:?}", outputs[0].0, outputs[0].1.shape());
//! # Ok(())
//! # }
//! ```
//!
//! Pipeline, one module per stage: [`frontend`] (ONNX → graph), [`graph`] (IR, shape
//! inference, verifier, text IR), [`interp`] (the reference interpreter).

#![warn(missing_docs)]

pub mod error;
pub mod frontend;
pub mod graph;
pub mod interp;
pub mod lower;
pub mod npy;
pub mod tensor;
pub mod tensor_gen;

pub mod bench;
pub mod codegen;
mod model;
pub mod runtime;

pub use error::{Error, ErrorKind, Result};
pub use graph::Graph;
pub use model::Model;
pub use runtime::{CompiledModel, Compiler};
pub use tensor::{DType, Tensor};
