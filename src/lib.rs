//! Fovea: a JIT compiler for convolutional perception models on CPUs.
//!
//! A host program hands Fovea a model (an ONNX file, the text IR, or a graph built in code);
//! Fovea specialises it to concrete shapes, lowers every node to loop nests, compiles them
//! with Cranelift and runs them across a rayon pool. The reference interpreter runs the same
//! graph op by op and is the oracle for every compiled result.
//!
//! ```
//! # fn main() -> fovea::Result<()> {
//! let model = fovea::Model::load("ir/tiny_cnn.fovea")?;
//! let compiled = fovea::Compiler::new().threads(2).compile(&model)?;
//! let input = fovea::Tensor::zeros(fovea::DType::F32, vec![1, 3, 32, 32])?;
//! let outputs = compiled.run(&[("input", input.clone())])?;
//! let reference = model.interpret(&[("input", input)])?;
//! assert_eq!(outputs[0].1.shape(), reference[0].1.shape());
//! # Ok(())
//! # }
//! ```
//!
//! Pipeline, one module per stage: [`frontend`] (ONNX → graph), [`graph`] (IR, shape
//! inference, verifier, text IR), [`runtime::specialize`] (concrete shapes), [`lower`] (loop
//! nests), [`codegen`] (Cranelift), [`runtime`] (plans, executor, kernel cache); [`interp`]
//! is the reference interpreter.

#![warn(missing_docs)]

pub mod error;
pub mod frontend;
pub mod graph;
pub mod interp;
pub mod lower;
pub mod npy;
pub mod passes;
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
