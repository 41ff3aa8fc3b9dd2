//! Shape-computing subgraphs fold to constants at import when the input shape is known.
//!
//! The model below is ShuffleNetV2's channel split and shuffle as torchvision exports it:
//! `Shape → Gather → Div → Unsqueeze → Concat → Reshape`, and a `Slice` whose bounds are
//! computed the same way. With a concrete input shape, no shape op may survive import; with
//! a symbolic batch, the shape chain stays and the interpreter evaluates it at run time.

use fovea::{DType, Model, Tensor};
use onnx_protobuf::{
    AttributeProto, GraphProto, Message, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, attribute_proto::AttributeType,
    tensor_proto::DataType, tensor_shape_proto, type_proto,
};

fn node(op: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: op.to_string(),
        name: format!("{op}_{}", outputs[0]),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: attrs,
        ..Default::default()
    }
}

fn ints_attr(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.to_string(),
        type_: AttributeType::INTS.into(),
        ints: values.to_vec(),
        ..Default::default()
    }
}

fn int_attr(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.to_string(),
        type_: AttributeType::INT.into(),
        i: value,
        ..Default::default()
    }
}

fn i64_const(name: &str, dims: &[i64], values: &[i64]) -> TensorProto {
    TensorProto {
        name: name.to_string(),
        dims: dims.to_vec(),
        data_type: DataType::INT64 as i32,
        int64_data: values.to_vec(),
        ..Default::default()
    }
}

fn value_info(name: &str, dims: &[Result<i64, &str>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d {
                Ok(n) => tensor_shape_proto::dimension::Value::DimValue(*n),
                Err(s) => tensor_shape_proto::dimension::Value::DimParam(s.to_string()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.to_string(),
        type_: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: DataType::FLOAT as i32,
                shape: Some(TensorShapeProto {
                    dim,
                    ..Default::default()
                })
                .into(),
                ..Default::default()
            })),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    }
}

/// Channel split (second half via Slice with computed bounds) and channel shuffle of
/// `x: [batch, 8, 2, 2]` with 2 groups; output `[batch, 4, 2, 2]`.
fn shuffle_model(batch: Result<i64, &str>) -> Vec<u8> {
    let nodes = vec![
        node("Shape", &["x"], &["shape"], vec![]),
        node(
            "Gather",
            &["shape", "zero"],
            &["n"],
            vec![int_attr("axis", 0)],
        ),
        node(
            "Gather",
            &["shape", "one"],
            &["c"],
            vec![int_attr("axis", 0)],
        ),
        node(
            "Gather",
            &["shape", "two"],
            &["h"],
            vec![int_attr("axis", 0)],
        ),
        node(
            "Gather",
            &["shape", "three"],
            &["w"],
            vec![int_attr("axis", 0)],
        ),
        // Second half of the channels: Slice(x, [c/2], [c], [1]).
        node("Div", &["c", "two"], &["half"], vec![]),
        node("Unsqueeze", &["half", "axes0"], &["half1"], vec![]),
        node("Unsqueeze", &["c", "axes0"], &["c1"], vec![]),
        node("Slice", &["x", "half1", "c1", "axes1"], &["branch"], vec![]),
        // Shuffle the 4 remaining channels in 2 groups of 2.
        node("Div", &["half", "two"], &["per_group"], vec![]),
        node("Unsqueeze", &["n", "axes0"], &["n1"], vec![]),
        node("Unsqueeze", &["per_group", "axes0"], &["g1"], vec![]),
        node("Unsqueeze", &["h", "axes0"], &["h1"], vec![]),
        node("Unsqueeze", &["w", "axes0"], &["w1"], vec![]),
        node(
            "Concat",
            &["n1", "two1", "g1", "h1", "w1"],
            &["grouped_shape"],
            vec![int_attr("axis", 0)],
        ),
        node(
            "Reshape",
            &["branch", "grouped_shape"],
            &["grouped"],
            vec![],
        ),
        node(
            "Transpose",
            &["grouped"],
            &["swapped"],
            vec![ints_attr("perm", &[0, 2, 1, 3, 4])],
        ),
        node(
            "Concat",
            &["n1", "minus1", "h1", "w1"],
            &["flat_shape"],
            vec![int_attr("axis", 0)],
        ),
        node("Reshape", &["swapped", "flat_shape"], &["y"], vec![]),
    ];
    let graph = GraphProto {
        name: "shuffle".to_string(),
        node: nodes,
        initializer: vec![
            i64_const("zero", &[], &[0]),
            i64_const("one", &[], &[1]),
            i64_const("two", &[], &[2]),
            i64_const("three", &[], &[3]),
            i64_const("axes0", &[1], &[0]),
            i64_const("axes1", &[1], &[1]),
            i64_const("two1", &[1], &[2]),
            i64_const("minus1", &[1], &[-1]),
        ],
        input: vec![value_info("x", &[batch, Ok(8), Ok(2), Ok(2)])],
        output: vec![value_info("y", &[batch, Ok(4), Ok(2), Ok(2)])],
        ..Default::default()
    };
    let model = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
            ..Default::default()
        }],
        graph: Some(graph).into(),
        ..Default::default()
    };
    model.write_to_bytes().unwrap()
}

/// The expected result: channels 4..8 of x, shuffled as [4, 6, 5, 7].
fn expected(x: &Tensor) -> Vec<f32> {
    let data = x.as_f32().unwrap();
    let batch = x.shape()[0];
    let mut out = Vec::new();
    for n in 0..batch {
        for c in [4, 6, 5, 7] {
            let start = (n * 8 + c) * 4;
            out.extend_from_slice(&data[start..start + 4]);
        }
    }
    out
}

fn input(batch: usize) -> Tensor {
    let n = batch * 8 * 4;
    Tensor::from_f32(vec![batch, 8, 2, 2], (0..n).map(|i| i as f32).collect()).unwrap()
}

fn ops(model: &Model) -> Vec<&'static str> {
    let graph = model.graph();
    graph
        .node_order()
        .iter()
        .map(|&id| graph.node(id).op.name())
        .collect()
}

#[test]
fn shape_chain_folds_away_with_a_known_shape() {
    let model = Model::from_onnx_bytes(&shuffle_model(Ok(1))).unwrap();
    assert_eq!(
        ops(&model),
        ["slice", "reshape", "transpose", "reshape"],
        "{}",
        model.graph()
    );
    // The folded bounds and shapes are constants of the graph now.
    let slice = model.graph().node(model.graph().node_order()[0]);
    for input in slice.inputs.iter().skip(1).flatten() {
        assert!(
            model.graph().constant(*input).is_some(),
            "slice operand not folded"
        );
    }
    let x = input(1);
    let y = model.interpret(&[("x", x.clone())]).unwrap();
    assert_eq!(y[0].1.shape(), &[1, 4, 2, 2]);
    assert_eq!(y[0].1.as_f32().unwrap(), expected(&x).as_slice());
}

#[test]
fn shape_chain_runs_at_run_time_with_a_symbolic_batch() {
    let model = Model::from_onnx_bytes(&shuffle_model(Err("N"))).unwrap();
    assert!(
        ops(&model).contains(&"shape"),
        "nothing to fold without the batch size"
    );
    for batch in [1, 3] {
        let x = input(batch);
        let y = model.interpret(&[("x", x.clone())]).unwrap();
        assert_eq!(y[0].1.shape(), &[batch, 4, 2, 2]);
        assert_eq!(y[0].1.as_f32().unwrap(), expected(&x).as_slice());
    }
    assert_eq!(model.inputs()[0].1.dtype, DType::F32);
}
