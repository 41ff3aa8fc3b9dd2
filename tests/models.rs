//! Whole-model tests: ONNX models imported and run with the reference interpreter, compared
//! with ONNX Runtime's outputs (`NAME.output.npy` for the fixed input `NAME.input.npy`).
//!
//! The error is relative to the output's range: `max|a - b| / max|b|`, at most 1e-4.
//! The four small models live in `tests/data/models`; the two full networks are read from
//! `$FOVEA_SHARED_MODELS` (default `../shared/models`) by an ignored test that `.ci/run`
//! runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fovea::{Graph, Model, npy};

const SMALL_MODELS: [&str; 4] = ["conv_bn_relu", "resblock", "mbv2_block", "tiny_cnn"];
const FULL_NETWORKS: [&str; 2] = ["squeezenet1_1", "mobilenet_v2"];
const MAX_RELATIVE_ERROR: f64 = 1e-4;

fn small_models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/models")
}

fn shared_models_dir() -> PathBuf {
    std::env::var_os("FOVEA_SHARED_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/models"))
}

/// Runs `dir/NAME.onnx` on its input and returns the relative error against its output.
fn relative_error(dir: &Path, name: &str) -> (Model, f64) {
    let model = Model::load(dir.join(format!("{name}.onnx")))
        .unwrap_or_else(|e| panic!("{name}: load: {e}"));
    let input =
        npy::read(dir.join(format!("{name}.input.npy"))).unwrap_or_else(|e| panic!("{name}: {e}"));
    let expected =
        npy::read(dir.join(format!("{name}.output.npy"))).unwrap_or_else(|e| panic!("{name}: {e}"));
    let inputs = model.inputs();
    assert_eq!(inputs.len(), 1, "{name}: expected one graph input");
    let input_name = inputs[0].0.to_string();
    let outputs = model
        .interpret(&[(input_name.as_str(), input)])
        .unwrap_or_else(|e| panic!("{name}: interpret: {e}"));
    assert_eq!(outputs.len(), 1, "{name}: expected one output");
    let actual = &outputs[0].1;
    assert_eq!(actual.dtype(), expected.dtype(), "{name}: output dtype");
    assert_eq!(actual.shape(), expected.shape(), "{name}: output shape");
    let a = actual.to_f64_vec();
    let b = expected.to_f64_vec();
    let scale = b.iter().fold(0f64, |m, x| m.max(x.abs()));
    let max_diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f64, |m, d| if d.is_nan() || d > m { d } else { m });
    let error = if scale > 0.0 {
        max_diff / scale
    } else {
        max_diff
    };
    (model, error)
}

fn op_histogram(graph: &Graph) -> BTreeMap<&'static str, usize> {
    let mut ops = BTreeMap::new();
    for &id in graph.node_order() {
        *ops.entry(graph.node(id).op.name()).or_default() += 1;
    }
    ops
}

#[test]
fn small_models_match_onnx_runtime() {
    let dir = small_models_dir();
    let mut failed = Vec::new();
    for name in SMALL_MODELS {
        let (_, error) = relative_error(&dir, name);
        println!("{name:<16} max relative error {error:.2e}");
        if error.is_nan() || error > MAX_RELATIVE_ERROR {
            failed.push(name);
        }
    }
    assert!(failed.is_empty(), "too large an error: {failed:?}");
}

#[test]
#[ignore = "needs the full networks in ../shared/models (not in the repo); .ci/run runs it"]
fn full_networks_match_onnx_runtime() {
    let dir = shared_models_dir();
    let mut failed = Vec::new();
    for name in FULL_NETWORKS {
        let (model, error) = relative_error(&dir, name);
        let graph = model.graph();
        let ops = op_histogram(graph);
        println!(
            "{name:<16} max relative error {error:.2e}, {} nodes: {ops:?}",
            graph.node_count()
        );
        assert!(
            !ops.contains_key("shape"),
            "{name}: shape subgraphs were not folded: {ops:?}"
        );
        if error.is_nan() || error > MAX_RELATIVE_ERROR {
            failed.push(name);
        }
    }
    assert!(failed.is_empty(), "too large an error: {failed:?}");
}

#[test]
fn imported_models_verify() {
    let small = small_models_dir();
    let shared = shared_models_dir();
    let mut paths: Vec<PathBuf> = SMALL_MODELS
        .iter()
        .map(|n| small.join(format!("{n}.onnx")))
        .collect();
    // The full networks are checked too when they are present.
    paths.extend(
        FULL_NETWORKS
            .iter()
            .map(|n| shared.join(format!("{n}.onnx")))
            .filter(|p| p.exists()),
    );
    for path in paths {
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let graph = fovea::frontend::onnx::import(&bytes)
            .unwrap_or_else(|e| panic!("{}: import: {e}", path.display()));
        graph
            .verify()
            .unwrap_or_else(|e| panic!("{}: verify: {e}", path.display()));
    }
}
