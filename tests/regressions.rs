//! Cases found by fuzzing or review, each a former panic or internal error.

use fovea::{DType, Model, Tensor};

/// Squeeze with an empty `axes` input squeezes every size-1 axis in both shape inference and
/// the interpreter (they once disagreed, an internal error).
#[test]
fn squeeze_with_empty_runtime_axes() {
    let text = "graph g(x: f32[1,3,1], axes: i64[0]) -> (y) {\n  y = squeeze(x, axes)\n}\n";
    let model = Model::parse(text).unwrap();
    let x = Tensor::zeros(DType::F32, vec![1, 3, 1]).unwrap();
    let axes = Tensor::from_i64(vec![0], vec![]).unwrap();
    let y = model.interpret(&[("x", x), ("axes", axes)]).unwrap();
    assert_eq!(y[0].1.shape(), &[3]);
}
