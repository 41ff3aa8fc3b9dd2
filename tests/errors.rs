//! Bad input of every kind: each case checks the error kind (user, not internal), the
//! variant, and that the message names the culprit (file, node, op, input, shape).

use std::path::{Path, PathBuf};

use fovea::{DType, Error, ErrorKind, Model, Tensor};
use onnx_protobuf::{Message, ModelProto};

mod common;
use common::fovea;

fn data(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(path)
}

fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fovea-errors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Asserts a user error whose message contains every needle.
fn assert_user_error(err: &Error, needles: &[&str]) {
    assert_eq!(
        err.kind(),
        ErrorKind::User,
        "expected a user error, got: {err}"
    );
    let message = err.to_string();
    for needle in needles {
        assert!(
            message.contains(needle),
            "message {message:?} does not mention {needle:?}"
        );
    }
}

fn relu_model_bytes() -> Vec<u8> {
    std::fs::read(data("onnx-node/test_relu/model.onnx")).unwrap()
}

fn edit_onnx(edit: impl FnOnce(&mut ModelProto)) -> Vec<u8> {
    let mut model = ModelProto::parse_from_bytes(&relu_model_bytes()).unwrap();
    edit(&mut model);
    model.write_to_bytes().unwrap()
}

const TINY: &str =
    "graph tiny(x: f32[1,2,4,4]) -> (y: f32[1,2,4,4]) {\n  y: f32[1,2,4,4] = relu(x)\n}\n";

#[test]
fn truncated_onnx_names_the_file() {
    let bytes = std::fs::read(data("models/tiny_cnn.onnx")).unwrap();
    let path = temp_file("truncated.onnx", &bytes[..bytes.len() / 2]);
    let err = Model::load(&path).unwrap_err();
    assert!(matches!(err.root(), Error::Decode { .. }), "{err:?}");
    assert_user_error(&err, &["truncated.onnx", "not a valid ONNX model"]);
}

#[test]
fn garbage_onnx_is_a_decode_error() {
    let path = temp_file(
        "garbage.onnx",
        b"\xff\xfe this is not a protobuf \x00\x01\x02\x03",
    );
    let err = Model::load(&path).unwrap_err();
    assert!(matches!(err.root(), Error::Decode { .. }), "{err:?}");
    assert_user_error(&err, &["garbage.onnx"]);
}

#[test]
fn empty_onnx_is_a_decode_error() {
    let err = Model::from_onnx_bytes(&[]).unwrap_err();
    assert!(matches!(err.root(), Error::Decode { .. }), "{err:?}");
    assert_user_error(&err, &[]);
}

#[test]
fn unknown_op_names_node_and_op() {
    let bytes = edit_onnx(|m| {
        let node = &mut m.graph.as_mut().unwrap().node[0];
        node.op_type = "FrobnicateV2".to_string();
        node.name = "frob_node".to_string();
    });
    let err = Model::from_onnx_bytes(&bytes).unwrap_err();
    assert!(matches!(err.root(), Error::UnsupportedOp { .. }), "{err:?}");
    assert_user_error(&err, &["frob_node", "FrobnicateV2"]);
}

#[test]
fn op_from_another_domain_is_unsupported() {
    let bytes = edit_onnx(|m| {
        let node = &mut m.graph.as_mut().unwrap().node[0];
        node.domain = "com.example".to_string();
        node.name = "custom".to_string();
    });
    let err = Model::from_onnx_bytes(&bytes).unwrap_err();
    assert_user_error(&err, &["custom", "com.example"]);
}

#[test]
fn wrong_arity_names_the_node() {
    let bytes = edit_onnx(|m| {
        let node = &mut m.graph.as_mut().unwrap().node[0];
        let first = node.input[0].clone();
        node.input.push(first);
        node.name = "relu_twice".to_string();
    });
    let err = Model::from_onnx_bytes(&bytes).unwrap_err();
    assert_user_error(&err, &["relu_twice", "Relu"]);
}

#[test]
fn undefined_value_in_onnx_names_it() {
    let bytes = edit_onnx(|m| {
        let node = &mut m.graph.as_mut().unwrap().node[0];
        node.input[0] = "nowhere".to_string();
    });
    let err = Model::from_onnx_bytes(&bytes).unwrap_err();
    assert_user_error(&err, &["nowhere"]);
}

#[test]
fn wrong_input_shape_names_input_and_shapes() {
    let model = Model::parse(TINY).unwrap();
    let x = Tensor::zeros(DType::F32, vec![1, 3, 4, 4]).unwrap();
    let err = model.interpret(&[("x", x)]).unwrap_err();
    assert!(matches!(err, Error::Input { .. }), "{err:?}");
    assert_user_error(&err, &["input x", "f32[1,2,4,4]", "[1,3,4,4]"]);
}

#[test]
fn wrong_input_dtype_names_input_and_dtypes() {
    let model = Model::parse(TINY).unwrap();
    let x = Tensor::zeros(DType::I64, vec![1, 2, 4, 4]).unwrap();
    let err = model.interpret(&[("x", x)]).unwrap_err();
    assert_user_error(&err, &["input x", "f32", "i64"]);
}

#[test]
fn missing_input_is_named() {
    let model = Model::parse(TINY).unwrap();
    let err = model.interpret(&[]).unwrap_err();
    assert_user_error(&err, &["input x", "missing"]);
}

#[test]
fn unknown_input_name_lists_the_real_ones() {
    let model = Model::parse(TINY).unwrap();
    let x = Tensor::zeros(DType::F32, vec![1, 2, 4, 4]).unwrap();
    let err = model.interpret(&[("x", x.clone()), ("z", x)]).unwrap_err();
    assert_user_error(&err, &["input z", "x"]);
}

#[test]
fn symbolic_dim_bound_twice_inconsistently() {
    let text =
        "graph g(a: f32[N,2], b: f32[N,2]) -> (y: f32[N,2]) {\n  y: f32[N,2] = add(a, b)\n}\n";
    let model = Model::parse(text).unwrap();
    let a = Tensor::zeros(DType::F32, vec![3, 2]).unwrap();
    let b = Tensor::zeros(DType::F32, vec![4, 2]).unwrap();
    let err = model.interpret(&[("a", a), ("b", b)]).unwrap_err();
    assert_user_error(&err, &["input b", "N"]);
}

#[test]
fn malformed_text_ir_gives_line_and_column() {
    let text = "graph g(x: f32[2]) -> (y: f32[2]) {\n  y = relu(x\n}\n";
    let err = Model::parse(text).unwrap_err();
    assert!(matches!(err, Error::Parse { .. }), "{err:?}");
    // Lists may span lines, so the missing `)` is noticed at the `}` on line 3.
    assert_user_error(&err, &["line 3, column 1", "expected `)`"]);
}

#[test]
fn cyclic_text_ir_names_the_nodes() {
    let text =
        "graph g(x: f32[2]) -> (y: f32[2]) {\n  a = add(x, b)\n  b = relu(a)\n  y = relu(b)\n}\n";
    let err = Model::parse(text).unwrap_err();
    assert_user_error(&err, &["cycle", "a", "b"]);
}

#[test]
fn overflowing_dimensions_are_an_error() {
    let text = "graph g() -> (y: f32[4294967296,4294967296,4294967296]) {\n  const y: f32[4294967296,4294967296,4294967296] = zeros\n}\n";
    let err = Model::parse(text).unwrap_err();
    assert_user_error(&err, &["4294967296"]);
}

#[test]
fn conv_channel_mismatch_names_node_and_shapes() {
    let text = "graph g(x: f32[1,3,8,8]) -> (y) {\n  const w: f32[4,2,3,3] = zeros\n  y = conv(x, w, _) {kernel_shape=[3, 3]}\n}\n";
    let err = Model::parse(text).unwrap_err();
    assert_user_error(&err, &["conv", "[4,2,3,3]"]);
}

#[test]
fn missing_file_names_the_file() {
    let err = Model::load("no/such/model.onnx").unwrap_err();
    assert!(matches!(err.root(), Error::Io { .. }), "{err:?}");
    assert_user_error(&err, &["no/such/model.onnx"]);
}

#[test]
fn binary_file_without_onnx_extension_is_rejected_as_text() {
    let path = temp_file("weights.bin", &[0xff, 0x00, 0xfe, 0x01]);
    let err = Model::load(&path).unwrap_err();
    assert_user_error(&err, &["weights.bin", "UTF-8"]);
}

#[test]
fn cli_missing_model_exits_1_naming_the_file() {
    let (code, _, stderr) = fovea(&["run", "missing-model.onnx", "--interpret"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains("missing-model.onnx"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn cli_bad_input_flag_is_explained() {
    let model = temp_file("tiny.fovea", TINY.as_bytes());
    let (code, _, stderr) = fovea(&[
        "run",
        model.to_str().unwrap(),
        "--input",
        "x",
        "--interpret",
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("NAME=VALUE"), "{stderr}");
}

#[test]
fn cli_missing_npy_names_the_file() {
    let model = temp_file("tiny2.fovea", TINY.as_bytes());
    let (code, _, stderr) = fovea(&[
        "run",
        model.to_str().unwrap(),
        "--input",
        "x=absent.npy",
        "--interpret",
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("absent.npy"), "{stderr}");
}

#[test]
fn cli_wrong_input_shape_names_input() {
    let model = temp_file("tiny3.fovea", TINY.as_bytes());
    let npy = temp_file(
        "x.npy",
        &fovea::npy::to_bytes(&Tensor::zeros(DType::F32, vec![2, 2]).unwrap()).unwrap(),
    );
    let (code, _, stderr) = fovea(&[
        "run",
        model.to_str().unwrap(),
        "--input",
        &format!("x={}", npy.display()),
        "--interpret",
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("input x") && stderr.contains("[2,2]"),
        "{stderr}"
    );
}

#[test]
fn cli_garbage_npy_names_the_file() {
    let model = temp_file("tiny4.fovea", TINY.as_bytes());
    let npy = temp_file("garbage.npy", b"garbage");
    let (code, _, stderr) = fovea(&[
        "run",
        model.to_str().unwrap(),
        "--input",
        &format!("x={}", npy.display()),
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("garbage.npy"), "{stderr}");
}

#[test]
fn cli_unknown_subcommand_exits_2() {
    let (code, _, stderr) = fovea(&["frobnicate"]);
    assert_eq!(code, 2, "{stderr}");
}
