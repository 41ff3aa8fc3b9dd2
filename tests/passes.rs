//! Graph passes: before/after snapshots on small text-IR graphs, including the cases a pass
//! must leave alone, and the rewritten graph computing what the original computes.
//! Re-bless with `INSTA_UPDATE=always cargo test --test passes`.

use fovea::bench::{ShapeOverrides, seeded_inputs};
use fovea::passes::Pipeline;
use fovea::{Model, Tensor};

/// Runs the standard pipeline on `text`; returns the printed result and checks that the
/// interpreter gives the same outputs before and after (within 1e-4 relative).
fn optimize(text: &str) -> String {
    let model = Model::parse(text).unwrap();
    let (graph, _) = Pipeline::standard().run(model.graph(), None).unwrap();
    let optimized = Model::from_graph(graph).unwrap();
    let mut shapes = ShapeOverrides::new();
    for (name, ty) in model.inputs() {
        shapes.insert(
            name.to_string(),
            ty.shape.iter().map(|d| d.known().unwrap_or(2)).collect(),
        );
    }
    let inputs = seeded_inputs(&model, &shapes, Vec::new(), 11).unwrap();
    let refs: Vec<(&str, Tensor)> = inputs
        .iter()
        .map(|(n, t)| (n.as_str(), t.clone()))
        .collect();
    let before = model.interpret(&refs).unwrap();
    let after = optimized.interpret(&refs).unwrap();
    for ((name, a), (_, b)) in after.iter().zip(&before) {
        assert_eq!(a.shape(), b.shape(), "{name}");
        let (a, b) = (a.to_f64_vec(), b.to_f64_vec());
        let diff = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        let scale = b.iter().map(|y| y.abs()).fold(0.0, f64::max).max(1e-30);
        assert!(
            diff / scale <= 1e-4,
            "{name}: relative error {}",
            diff / scale
        );
    }
    fovea::graph::text::print(optimized.graph())
}

const CONV_BN: &str = "graph conv_bn(x: f32[1,3,8,8]) -> (y: f32[1,4,8,8]) {
  const w: f32[4,3,3,3] = normal(seed=1, std=0.2)
  const s: f32[4] = uniform(seed=2, low=0.5, high=1.5)
  const o: f32[4] = normal(seed=3, std=0.1)
  const m: f32[4] = normal(seed=4, std=0.1)
  const v: f32[4] = uniform(seed=5, low=0.5, high=1.5)
  c: f32[1,4,8,8] = conv(x, w, _) {kernel_shape=[3, 3], pads=[1, 1, 1, 1]}
  y: f32[1,4,8,8] = batch_norm(c, s, o, m, v)
}
";

#[test]
fn batch_norm_folds_into_the_convolution() {
    insta::assert_snapshot!(optimize(CONV_BN));
}

#[test]
fn batch_norm_is_not_folded_when_the_convolution_output_is_read_twice() {
    let text = CONV_BN
        .replace(
            "-> (y: f32[1,4,8,8])",
            "-> (y: f32[1,4,8,8], z: f32[1,4,8,8])",
        )
        .replace(
            "  y: f32[1,4,8,8] = batch_norm",
            "  z: f32[1,4,8,8] = relu(c)\n  y: f32[1,4,8,8] = batch_norm",
        );
    let out = optimize(&text);
    assert!(out.contains("batch_norm"), "{out}");
    insta::assert_snapshot!(out);
}

#[test]
fn batch_norm_is_not_folded_when_the_convolution_output_is_a_graph_output() {
    let text = CONV_BN.replace(
        "-> (y: f32[1,4,8,8])",
        "-> (y: f32[1,4,8,8], c: f32[1,4,8,8])",
    );
    let out = optimize(&text);
    assert!(out.contains("batch_norm"), "{out}");
}

#[test]
fn identity_and_dropout_disappear_but_graph_outputs_keep_their_names() {
    let text = "graph g(x: f32[2,3]) -> (y: f32[2,3], d: f32[2,3]) {
  a: f32[2,3] = identity(x)
  b: f32[2,3] = dropout(a)
  y: f32[2,3] = relu(b)
  d: f32[2,3] = dropout(y)
}
";
    let out = optimize(text);
    insta::assert_snapshot!(out);
}

#[test]
fn constant_subgraphs_are_evaluated() {
    let text = "graph g(x: f32[2,3]) -> (y: f32[2,3]) {
  const a: f32[3] = [1.0, 2.0, 3.0]
  const b: f32[3] = fill(0.5)
  s: f32[3] = mul(a, b)
  e: f32[3] = exp(s)
  y: f32[2,3] = add(x, e)
}
";
    insta::assert_snapshot!(optimize(text));
}

#[test]
fn every_ir_model_survives_the_pipeline() {
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/ir")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "fovea") {
            let text = std::fs::read_to_string(&path).unwrap();
            optimize(&text);
        }
    }
}

#[test]
fn unknown_stop_after_pass_is_a_usage_error() {
    let model = Model::parse(CONV_BN).unwrap();
    let err = Pipeline::standard()
        .run(model.graph(), Some("fuse_everything"))
        .unwrap_err();
    assert!(err.to_string().contains("fold_constants"), "{err}");
}
