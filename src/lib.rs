//! Fovea: a JIT compiler for convolutional perception models on CPUs.
//!
//! A host program hands Fovea a model (an ONNX file, the text IR, or a graph built in code);
//! Fovea specialises it to concrete shapes, lowers every node to loop nests, compiles them
//! with Cranelift and runs them across a pool of threads. The reference interpreter runs the
//! same graph op by op and is the oracle for every compiled result.
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
//! The rest of this page is a guide: loading, compiling, running, reading outputs, shapes
//! that change from run to run, and what to do about each error.
//!
//! # Loading a model
//!
//! [`Model::load`] reads a file: a name ending in `.onnx` is imported as ONNX (opsets 9 to
//! 25), anything else is parsed as the text IR (the `ir/*.fovea` files).
//! [`Model::from_onnx_bytes`] and [`Model::parse`] do the same from memory, and
//! [`Model::from_graph`] wraps a [`Graph`] built in code. Every model has passed the
//! verifier. [`Model::inputs`] and [`Model::outputs`] list the names and types the model
//! declares; a dim written as a name (`N`) is symbolic and takes any size at run time.
//!
//! ```
//! # fn main() -> fovea::Result<()> {
//! let model = fovea::Model::parse(
//!     "graph scale(x: f32[N,4]) -> (y: f32[N,4]) {
//!        const two: f32[] = fill(2.0)
//!        y: f32[N,4] = mul(x, two)
//!      }",
//! )?;
//! let (name, ty) = model.inputs()[0];
//! assert_eq!((name, ty.to_string().as_str()), ("x", "f32[N,4]"));
//! # Ok(())
//! # }
//! ```
//!
//! # Compiling
//!
//! [`Compiler`] holds the options; [`Compiler::compile`] returns a [`CompiledModel`]. The
//! options that matter most: [`Compiler::threads`] (threads a run's kernels may use; the
//! default is one per core), [`Compiler::optimize`] and [`Compiler::fusion`] (the graph
//! passes and kernel fusion, both on by default) and [`Compiler::opt_level`] (Cranelift's
//! optimisation level, chosen per kind of kernel by default).
//!
//! A model whose inputs all have concrete shapes is compiled by `compile` itself. A model
//! with a symbolic dim is compiled on the first run of each new input shape, and that
//! shape's plan (its kernels and memory layout) is kept for the next runs.
//! [`CompiledModel::stats`] counts plans, kernel launches, kernels compiled and found in the
//! process-wide kernel cache, and compile time:
//!
//! ```
//! # fn main() -> fovea::Result<()> {
//! use fovea::{Compiler, DType, Model, Tensor};
//!
//! let model = Model::load("ir/dynamic_batch.fovea")?; // input: f32[N,3,32,32]
//! let compiled = Compiler::new().threads(1).compile(&model)?;
//! assert_eq!(compiled.stats().plans, 0); // nothing to compile before N is known
//! for batch in [1, 4, 1] {
//!     let input = Tensor::zeros(DType::F32, vec![batch, 3, 32, 32])?;
//!     let outputs = compiled.run(&[("input", input)])?;
//!     assert_eq!(outputs[0].1.shape(), &[batch, 4]);
//! }
//! assert_eq!(compiled.stats().plans, 2); // batch 1 and batch 4; the second batch-1 run reused
//! # Ok(())
//! # }
//! ```
//!
//! # Running and reading outputs
//!
//! [`CompiledModel::run`] takes the inputs by name and returns every output, in the model's
//! order, with its name. A [`Tensor`] is a dense row-major array of `f32` (activations) or
//! `i64` (shape-like values): read it with [`Tensor::shape`] and [`Tensor::as_f32`], or
//! take its data with [`Tensor::into_parts`]. [`npy`] reads and writes NumPy `.npy` files,
//! and with the cargo feature `ndarray` tensors convert from and into `ndarray::ArrayD`
//! without copying where the layout allows (`Tensor::from_ndarray`, `Tensor::into_ndarray`,
//! `Tensor::view_ndarray`: see the `ndarray_interop` module).
//!
//! A `CompiledModel` is `Send + Sync`: share one (in an `Arc`, or by reference in scoped
//! threads) between host threads that each call `run`; runs do not block each other.
//!
//! ```
//! # fn main() -> fovea::Result<()> {
//! use fovea::{Compiler, Model, tensor_gen};
//!
//! let model = Model::load("ir/tiny_cnn.fovea")?;
//! let compiled = Compiler::new().threads(1).compile(&model)?;
//! let image = tensor_gen::normal(vec![1, 3, 32, 32], 7, 0.0, 1.0)?; // seeded N(0, 1)
//! let outputs = std::thread::scope(|scope| {
//!     let runs: Vec<_> = (0..2)
//!         .map(|_| scope.spawn(|| compiled.run(&[("input", image.clone())])))
//!         .collect();
//!     runs.into_iter().map(|run| run.join().expect("no panic")).collect::<Vec<_>>()
//! });
//! for result in outputs {
//!     let outputs = result?;
//!     let (name, logits) = &outputs[0];
//!     let scores = logits.as_f32().unwrap_or_default();
//!     let best = (0..scores.len()).max_by(|&a, &b| scores[a].total_cmp(&scores[b]));
//!     println!("{name} {:?}: class {best:?}", logits.shape());
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Checking results
//!
//! [`Model::interpret`] runs the same model with the reference interpreter: plain Rust, one
//! op at a time, slow and obviously right. Compare against it when a result looks wrong;
//! the JIT's results agree with it to floating-point rounding, and are bit-identical for any
//! thread count.
//!
//! # Errors
//!
//! Every fallible function returns [`Result`] with [`Error`]. [`Error::kind`] tells whose
//! problem it is: [`ErrorKind::User`] (something in the model, the inputs or the arguments
//! to fix) or [`ErrorKind::Internal`] (a bug in Fovea). Messages name the file, node, op and
//! shapes involved; [`Error::root`] unwraps the file an error happened in.
//!
//! | variant | means | what to do |
//! | --- | --- | --- |
//! | [`Error::Io`] | a file could not be read or written | check the path and permissions |
//! | [`Error::Decode`] | not a valid ONNX protobuf | check the file is a whole ONNX model; export it again |
//! | [`Error::Parse`] | the text IR does not parse | fix the source at the line and column given |
//! | [`Error::Node`] | a node has a bad arity, attribute or input type | fix the named node; try another export opset |
//! | [`Error::UnsupportedOp`] | an op Fovea does not implement | replace or decompose the op (see the README's op list) |
//! | [`Error::InvalidGraph`] | the graph breaks a structural rule | fix each listed node or value |
//! | [`Error::Input`] | run inputs do not match the model | give every declared input with its dtype and shape |
//! | [`Error::Usage`] | a bad argument | fix the argument named in the message |
//! | [`Error::InFile`] | another error, with the file it happened in | see its `source` ([`Error::root`]) |
//! | [`Error::Internal`] | a bug in Fovea | report it with the model; use [`Model::interpret`] meanwhile |
//!
//! ```
//! use fovea::{DType, Error, ErrorKind, Model, Tensor};
//!
//! # fn main() -> fovea::Result<()> {
//! let missing = Model::load("no/such/model.onnx").expect_err("the file does not exist");
//! assert!(matches!(missing, Error::Io { .. }));
//!
//! let model = Model::load("ir/tiny_cnn.fovea")?;
//! let compiled = fovea::Compiler::new().threads(1).compile(&model)?;
//! let wrong = Tensor::zeros(DType::F32, vec![1, 3, 16, 16])?; // the model wants 32x32
//! match compiled.run(&[("input", wrong)]) {
//!     Err(error @ Error::Input { .. }) => {
//!         assert_eq!(error.kind(), ErrorKind::User);
//!         println!("fix the input: {error}");
//!     }
//!     other => panic!("expected an input error, got {other:?}"),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Examples and the command line
//!
//! `examples/` has whole programs: `compile_and_run` (load, compile, run on an `.npy` or
//! seeded input, print the top-5 classes and timing), `dynamic_batch` (one model at several
//! batch sizes, with plan and kernel counts) and `serve` (many host threads sharing one
//! compiled model). Run them with `cargo run --release --example NAME`. The `fovea` binary
//! (`fovea run`, `fovea bench`, `fovea dump-ir`) is a thin layer over this library; the
//! README describes it.
//!
//! # Pipeline
//!
//! One module per stage: [`frontend`] (ONNX → graph), [`graph`] (IR, shape inference,
//! verifier, text IR), [`passes`] (constant folding), [`runtime::specialize`] (concrete
//! shapes), [`runtime::fuse`] (kernel fusion), [`lower`] (loop nests), [`codegen`]
//! (Cranelift), [`runtime`] (plans, memory planning, executor, kernel cache); [`interp`] is
//! the reference interpreter.

#![warn(missing_docs)]

pub mod error;
pub mod frontend;
pub mod graph;
pub mod interp;
pub mod lower;
#[cfg(feature = "ndarray")]
pub mod ndarray_interop;
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
pub use lower::Winograd;
pub use model::Model;
pub use runtime::{CompiledModel, Compiler};
pub use tensor::{DType, Tensor};

/// The README's Rust example, compiled and run as a doctest so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The `ndarray` crate this build converts to and from (feature `ndarray`), so callers can
/// name the same version.
#[cfg(feature = "ndarray")]
pub use ndarray;
