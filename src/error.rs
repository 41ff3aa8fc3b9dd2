//! Errors: every failure Fovea reports, split into the user's mistakes and Fovea's own bugs.
//!
//! A user error (bad file, unsupported op, wrong input) is something the caller can fix; its
//! message names the file, node, op and shape involved. An internal error is a broken
//! invariant inside Fovea (a verifier failure after a pass, say) and is always a bug.
//! Messages are lowercase with no trailing period.
//!
//! What to do about each error is in the doc of its [`Error`] variant. In short: check the
//! [`ErrorKind`] first. A [`ErrorKind::User`] error names what to fix (the file, node, op,
//! input or flag); [`Error::root`] gives the innermost error below the file it happened in.
//! An [`ErrorKind::Internal`] error is a bug: report it with the model that triggers it, and
//! use [`crate::Model::interpret`] (the reference interpreter) meanwhile.

use std::fmt;
use std::path::PathBuf;

/// Result with Fovea's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether an error is the caller's to fix or a bug in Fovea.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad input: a malformed file, an unsupported op, a wrong shape or dtype, a missing input.
    User,
    /// A broken invariant inside Fovea. Please report it.
    Internal,
}

/// One problem found by the graph verifier, pointing at the node (or value) it concerns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where: `node NAME (op)` or `value NAME`, or empty for graph-wide problems.
    pub location: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.location.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.location, self.message)
        }
    }
}

/// A position in a text-IR source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceLocation {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

/// Everything that can go wrong in Fovea.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    ///
    /// What to do: check that the path exists and is readable (or, for outputs, that its
    /// folder is writable); the operating system's reason is in `source`.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A file is not a valid ONNX protobuf, or its contents break the ONNX format.
    ///
    /// What to do: check that the file is a complete ONNX model (not truncated, not a Git
    /// LFS pointer, not an external-data file on its own), for example by loading it with
    /// `onnx.checker.check_model` in Python; re-export it from the training framework if not.
    #[error("not a valid ONNX model: {message}")]
    Decode {
        /// What is wrong.
        message: String,
    },
    /// A text-IR source does not parse.
    ///
    /// What to do: fix the source at the given line and column; `fovea dump-ir MODEL` prints
    /// any model in the text IR, which shows the expected syntax.
    #[error("line {}, column {}: {message}", location.line, location.column)]
    Parse {
        /// Where in the source.
        location: SourceLocation,
        /// What was expected or found.
        message: String,
    },
    /// A node is malformed: wrong arity, a bad attribute, or input types it cannot take.
    ///
    /// What to do: the message names the node, its op and the shapes involved. Fix the node
    /// in the model (attributes and input shapes follow the ONNX operator's specification);
    /// for an ONNX model, exporting again with another opset or running
    /// `onnxsim` (ONNX simplifier) on it often removes the odd form.
    #[error("node {node} ({op}): {message}")]
    Node {
        /// The node's name.
        node: String,
        /// The node's op.
        op: String,
        /// What is wrong, with the shapes involved.
        message: String,
    },
    /// An op Fovea does not implement.
    ///
    /// What to do: the supported ops are listed in the README; replace the op in the model
    /// (many exporters can decompose it into supported ones, and `onnxsim` folds ops that only
    /// compute shapes), or run the model with another engine.
    #[error("node {node}: unsupported op {op}{}", domain_suffix(domain, *opset))]
    UnsupportedOp {
        /// The node's name.
        node: String,
        /// The op type as named in the model.
        op: String,
        /// The op's domain (empty for the default ONNX domain).
        domain: String,
        /// The opset version the model imports for that domain.
        opset: i64,
    },
    /// A graph breaks a structural rule (cycle, undefined value, inconsistent types).
    ///
    /// What to do: every problem is listed, each pointing at a node or value; fix them in the
    /// model or in the code that built the graph. A graph that passed the verifier once and
    /// fails after a Fovea pass gives [`Error::Internal`] instead.
    #[error("invalid graph: {} problem(s):\n{}", diagnostics.len(), join_diagnostics(diagnostics))]
    InvalidGraph {
        /// Every problem the verifier found.
        diagnostics: Vec<Diagnostic>,
    },
    /// A run was given inputs that do not match the model.
    ///
    /// What to do: give every input the model declares, by name, with its dtype and a shape
    /// that fits its declared shape ([`crate::Model::inputs`] lists them; symbolic dims such
    /// as `N` take any size). On the command line, give it with `--input NAME=FILE.npy`, or
    /// the size of a symbolic dim with `--shape NAME=1x3x224x224`.
    #[error("input {name}: {message}")]
    Input {
        /// The input's name.
        name: String,
        /// What is wrong (missing, wrong dtype or shape).
        message: String,
    },
    /// A bad command-line or API argument.
    ///
    /// What to do: the message names the argument and what it expects (a shape written
    /// `1x3x224x224`, a tensor whose data length is the product of its shape, a model with
    /// concrete shapes for a call that needs them).
    #[error("{0}")]
    Usage(String),
    /// An error while handling a file, with the file named.
    ///
    /// What to do: look at `source` (or [`Error::root`]) for the error itself; this wrapper
    /// only adds which file it came from.
    #[error("{}: {source}", path.display())]
    InFile {
        /// The file being handled.
        path: PathBuf,
        /// The error itself.
        #[source]
        source: Box<Error>,
    },
    /// A broken invariant inside Fovea: a bug.
    ///
    /// What to do: nothing in the input is wrong as far as Fovea can tell. Please report it
    /// with the model (or `fovea dump-ir MODEL` output) that triggers it. As a workaround,
    /// [`crate::Model::interpret`] (or `fovea run --interpret`) runs the model with the
    /// reference interpreter, and [`crate::Compiler::optimize`] set to `false` skips the
    /// graph passes.
    #[error("internal error (a bug in fovea): {0}")]
    Internal(String),
}

fn domain_suffix(domain: &str, opset: i64) -> String {
    match (domain.is_empty(), opset > 0) {
        (true, true) => format!(" (opset {opset})"),
        (true, false) => String::new(),
        (false, true) => format!(" (domain {domain}, opset {opset})"),
        (false, false) => format!(" (domain {domain})"),
    }
}

fn join_diagnostics(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(|d| format!("  {d}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Error {
    /// Whether the caller can fix this error or it is a bug in Fovea.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Internal(_) => ErrorKind::Internal,
            Error::InFile { source, .. } => source.kind(),
            _ => ErrorKind::User,
        }
    }

    /// Attaches the file being handled to this error.
    pub fn in_file(self, path: impl Into<PathBuf>) -> Error {
        Error::InFile {
            path: path.into(),
            source: Box::new(self),
        }
    }

    /// The innermost error, below any [`Error::InFile`] wrappers.
    pub fn root(&self) -> &Error {
        match self {
            Error::InFile { source, .. } => source.root(),
            other => other,
        }
    }

    /// A node error.
    pub fn node(
        node: impl Into<String>,
        op: impl Into<String>,
        message: impl Into<String>,
    ) -> Error {
        Error::Node {
            node: node.into(),
            op: op.into(),
            message: message.into(),
        }
    }

    /// An internal error.
    pub fn internal(message: impl Into<String>) -> Error {
        Error::Internal(message.into())
    }
}
