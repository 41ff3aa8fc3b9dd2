//! Cases found by fuzzing or review, each a former panic or internal error.

use fovea::{DType, ErrorKind, Model, Tensor};

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

/// Shape inference accepted a global pool of a rank-2 tensor that the interpreter rejects
/// (fuzz target `jit_vs_interp`); it is now an error naming the node at verification.
#[test]
fn global_pool_of_a_rank_2_tensor() {
    for op in ["global_max_pool", "global_average_pool"] {
        let text = format!("graph g(x: f32[2,16]) -> (y) {{\n  y = {op}(x)\n}}\n");
        let err = Model::parse(&text).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::User, "{err}");
        let message = err.to_string();
        assert!(message.contains(&format!("node y ({op})")), "{message}");
        assert!(message.contains("f32[2,16]"), "{message}");
    }
}
