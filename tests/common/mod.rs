//! Helpers shared by the integration tests (each test file that needs them declares
//! `mod common;` and uses a subset, hence the `dead_code` allowance).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use fovea::bench::{ShapeOverrides, seeded_inputs};
use fovea::{Model, Tensor};

/// The crate's root folder.
pub fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the `fovea` binary; returns its exit code, stdout and stderr.
pub fn fovea(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fovea"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A fresh folder under the system's temporary folder, unique to this process and `name`.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fovea-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The models' error measure: max |a - b| / max |b|.
pub fn relative_error(actual: &Tensor, expected: &Tensor) -> f64 {
    assert_eq!(actual.shape(), expected.shape());
    let (a, b) = (actual.to_f64_vec(), expected.to_f64_vec());
    let max_diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    let max_ref = b.iter().map(|y| y.abs()).fold(0.0, f64::max);
    max_diff / max_ref.max(f64::MIN_POSITIVE)
}

/// The bit patterns of outputs, to check that two runs agree exactly.
pub fn bits(outputs: &[(String, Tensor)]) -> Vec<Vec<u64>> {
    outputs
        .iter()
        .map(|(_, t)| t.to_f64_vec().iter().map(|v| v.to_bits()).collect())
        .collect()
}

/// Seeded inputs for `model` (seed 7, its declared shapes), owned.
pub fn inputs(model: &Model) -> Vec<(String, Tensor)> {
    seeded_inputs(model, &ShapeOverrides::new(), Vec::new(), 7).unwrap()
}

/// `inputs` as the named tensors a run takes.
pub fn named(inputs: &[(String, Tensor)]) -> Vec<(&str, Tensor)> {
    inputs
        .iter()
        .map(|(n, t)| (n.as_str(), t.clone()))
        .collect()
}
