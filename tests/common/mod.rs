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

/// Expansions and the depthwise convolutions reading them that run as one banded kernel:
/// (batch, input channels, expanded channels, side, kernel, stride, pad) — MobileNetV2's
/// 16 → 96 on 112×112 at stride 2, stride 1, a 5×5 kernel, planes whose rows do not split
/// into bands of 8, batch 2 (each expanded tensor 4 MiB or more).
pub const BANDED_CASES: [(usize, usize, usize, usize, usize, usize, usize); 5] = [
    (1, 16, 96, 112, 3, 2, 1),
    (1, 8, 96, 112, 3, 1, 1),
    (1, 16, 84, 112, 5, 2, 2),
    (1, 12, 108, 100, 3, 1, 1),
    (2, 12, 48, 112, 3, 2, 1),
];
