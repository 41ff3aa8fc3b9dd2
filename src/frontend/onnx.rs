//! ONNX import: a serialized `ModelProto` into the graph IR.
//!
//! Fovea reads opsets 9 to 25 of the default domain (`""` or `"ai.onnx"`). The import runs
//! in one pass over the ONNX graph, whose nodes are topologically sorted:
//!
//! - **Initializers and `Constant` nodes** become constants ([`ConstInit::Literal`]).
//!   FLOAT and INT64 tensors are read as they are, INT32 widened to `i64` and DOUBLE
//!   narrowed to `f32`; a tensor of another dtype is an error only if a node reads it.
//! - **Graph inputs** are the declared inputs minus the initializers (older exporters list
//!   weights as inputs too). Their dims come from `dim_value` (known), `dim_param`
//!   (symbolic) or neither (unknown).
//! - **Nodes** of the op types in [`OP_TYPES`] get their IR op from the `ops` submodule,
//!   which also upgrades older opset forms to the IR's newest one; absent optional inputs
//!   (empty names) become `None`, trailing unnamed outputs are dropped, and unnamed nodes
//!   are called `OpType_INDEX`.
//! - **Constant folding.** A node whose inputs are all constants is evaluated with the
//!   reference interpreter ([`crate::interp::eval`]) and its outputs become constants under
//!   their own names; so does `Shape` of a value whose dims are all known. Shape-computing
//!   chains (ShuffleNet's Shape → Gather → Div → Concat → Reshape) thus fold away when the
//!   input shape is known. Folding is skipped when an output would exceed
//!   [`FOLD_LIMIT`] elements. Ops whose shape-like operands are graph inputs stay nodes.
//! - **Only what is used is kept.** A constant enters the graph when a node that stays (or
//!   a graph output) reads it, so initializers consumed only by folded nodes, and the
//!   constants of upgraded attributes, leave nothing behind.
//!
//! Errors: undecodable bytes and broken ONNX structure are [`Error::Decode`]; unsupported
//! ops and domains are [`Error::UnsupportedOp`]; problems with one node are
//! [`Error::Node`], naming the node and its ONNX op type; valid models that use features
//! Fovea lacks (another dtype, external data) are [`Error::Usage`] with a message that
//! names the tensor. No input, however malformed, makes the importer panic.

mod ops;
mod tensor;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use onnx_protobuf::{GraphProto, ModelProto, NodeProto, TensorProto};
use protobuf::Message;

use crate::error::{Error, Result};
use crate::graph::op::Op;
use crate::graph::types::TensorType;
use crate::graph::{ConstInit, Graph, ValueId};
use crate::passes::{Known, fold_node};
use crate::tensor::Tensor;

pub use ops::OP_TYPES;
use ops::{Arg, Env, Lowered};
use tensor::TensorError;

/// The oldest opset of the default domain Fovea imports.
pub const MIN_OPSET: i64 = 9;
/// The newest opset of the default domain Fovea imports.
pub const MAX_OPSET: i64 = 25;
/// Constant folding leaves a node in place when one of its outputs would have more
/// elements than this (64 MiB of `f32`).
pub use crate::passes::FOLD_LIMIT;

/// Imports an ONNX model from its serialized protobuf bytes.
pub fn import(bytes: &[u8]) -> Result<Graph> {
    let model = ModelProto::parse_from_bytes(bytes)
        .map_err(|e| decode_error(format!("cannot parse the protobuf: {e}")))?;
    let proto = model
        .graph
        .as_ref()
        .ok_or_else(|| decode_error("the model has no graph"))?;
    let mut importer = Importer::new(&model, proto);
    importer.initializers()?;
    importer.inputs()?;
    for (index, node) in proto.node.iter().enumerate() {
        importer.node(index, node)?;
    }
    importer.outputs()?;
    Ok(importer.graph)
}

/// Decodes a serialized `TensorProto` (the `input_N.pb` / `output_N.pb` files of the ONNX
/// backend tests) into a tensor.
pub fn tensor_from_proto_bytes(bytes: &[u8]) -> Result<Tensor> {
    let proto = TensorProto::parse_from_bytes(bytes)
        .map_err(|e| decode_error(format!("cannot parse the tensor protobuf: {e}")))?;
    tensor::decode(&proto).map_err(model_error)
}

/// A tensor error outside any node: malformed data is a decode error, an unsupported
/// feature a plain message naming the tensor.
fn model_error(e: TensorError) -> Error {
    match e {
        TensorError::Malformed(message) => Error::Decode { message },
        TensorError::Unsupported(message) => Error::Usage(message),
    }
}

fn decode_error(message: impl Into<String>) -> Error {
    Error::Decode {
        message: message.into(),
    }
}

/// What an ONNX value name stands for during import.
enum Slot {
    /// A value of the graph: an input, a constant already added, or a node output.
    Value(ValueId),
    /// A constant not (yet) in the graph: it is added when a node that stays reads it.
    Const(Arc<Tensor>),
    /// A tensor Fovea cannot represent; reading it is an error, except BOOL flags where an
    /// op accepts them (Dropout's `training_mode`).
    Unsupported {
        message: String,
        bools: Option<Vec<bool>>,
    },
}

struct Importer<'m> {
    model: &'m ModelProto,
    proto: &'m GraphProto,
    graph: Graph,
    /// Every ONNX value name, by what it stands for.
    env: HashMap<String, Slot>,
    /// Names that appear anywhere in the ONNX graph; generated names avoid them.
    reserved: HashSet<&'m str>,
    /// The default domain's opset, if the model imports it.
    opset: Option<i64>,
}

impl Env for Importer<'_> {
    fn const_len(&self, name: &str) -> Option<usize> {
        self.const_value(name).map(|t| t.len())
    }

    fn bool_const(&self, name: &str) -> Option<&[bool]> {
        match self.env.get(name) {
            Some(Slot::Unsupported {
                bools: Some(flags), ..
            }) => Some(flags),
            _ => None,
        }
    }
}

impl<'m> Importer<'m> {
    fn new(model: &'m ModelProto, proto: &'m GraphProto) -> Importer<'m> {
        let mut reserved = HashSet::new();
        reserved.extend(proto.initializer.iter().map(|t| t.name.as_str()));
        reserved.extend(proto.input.iter().map(|v| v.name.as_str()));
        reserved.extend(proto.output.iter().map(|v| v.name.as_str()));
        for node in &proto.node {
            reserved.extend(node.input.iter().map(String::as_str));
            reserved.extend(node.output.iter().map(String::as_str));
        }
        let opset = model
            .opset_import
            .iter()
            .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map(|o| o.version);
        let name = if proto.name.is_empty() {
            "model"
        } else {
            proto.name.as_str()
        };
        Importer {
            model,
            proto,
            graph: Graph::new(name),
            env: HashMap::new(),
            reserved,
            opset,
        }
    }

    /// Binds an ONNX name; `Err` carries a message if it is already bound.
    fn define(&mut self, name: &str, slot: Slot) -> std::result::Result<(), String> {
        if self.env.contains_key(name) {
            return Err(format!("value {name} is defined twice"));
        }
        self.env.insert(name.to_string(), slot);
        Ok(())
    }

    /// The value of `name` if it is a constant (in the graph or not).
    fn const_value(&self, name: &str) -> Option<Arc<Tensor>> {
        match self.env.get(name)? {
            Slot::Const(t) => Some(t.clone()),
            Slot::Value(id) => self.graph.constant(*id).map(|c| c.tensor.clone()),
            Slot::Unsupported { .. } => None,
        }
    }

    /// The graph value of `name`, adding it to the graph first if it is a pending constant.
    fn materialize(&mut self, name: &str) -> Result<ValueId> {
        match self.env.remove(name) {
            Some(Slot::Value(id)) => {
                self.env.insert(name.to_string(), Slot::Value(id));
                Ok(id)
            }
            Some(Slot::Const(tensor)) => {
                let id =
                    self.graph
                        .add_const(name, Arc::unwrap_or_clone(tensor), ConstInit::Literal)?;
                self.env.insert(name.to_string(), Slot::Value(id));
                Ok(id)
            }
            Some(Slot::Unsupported { message, bools }) => {
                let result = Err(Error::Usage(message.clone()));
                self.env
                    .insert(name.to_string(), Slot::Unsupported { message, bools });
                result
            }
            None => Err(Error::internal(format!("value {name} is not defined"))),
        }
    }

    /// A name for a constant made by the importer, unused by the model and so far.
    fn fresh_name(&self, base: &str) -> String {
        let taken = |n: &str| {
            self.reserved.contains(n)
                || self.env.contains_key(n)
                || self.graph.value_by_name(n).is_some()
        };
        if !taken(base) {
            return base.to_string();
        }
        (2usize..)
            .map(|i| format!("{base}_{i}"))
            .find(|n| !taken(n))
            .unwrap_or_else(|| base.to_string())
    }

    fn initializers(&mut self) -> Result<()> {
        for t in &self.proto.initializer {
            if t.name.is_empty() {
                return Err(decode_error("an initializer has no name"));
            }
            let slot = match tensor::decode(t) {
                Ok(tensor) => Slot::Const(Arc::new(tensor)),
                Err(TensorError::Malformed(message)) => return Err(decode_error(message)),
                Err(TensorError::Unsupported(message)) => Slot::Unsupported {
                    message,
                    bools: (t.data_type == tensor::code::BOOL)
                        .then(|| tensor::decode_bools(t).ok())
                        .flatten(),
                },
            };
            self.define(&t.name, slot)
                .map_err(|m| decode_error(format!("initializer: {m}")))?;
        }
        Ok(())
    }

    fn inputs(&mut self) -> Result<()> {
        let initializers: HashSet<&str> = self
            .proto
            .initializer
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        for input in &self.proto.input {
            if initializers.contains(input.name.as_str()) {
                continue;
            }
            if input.name.is_empty() {
                return Err(decode_error("a graph input has no name"));
            }
            if self.env.contains_key(&input.name) {
                return Err(decode_error(format!(
                    "graph input {} is declared twice",
                    input.name
                )));
            }
            let ty = tensor::value_type(input).map_err(model_error)?;
            let id = self.graph.add_input(&input.name, ty)?;
            self.env.insert(input.name.clone(), Slot::Value(id));
        }
        Ok(())
    }

    fn outputs(&mut self) -> Result<()> {
        if self.proto.output.is_empty() {
            return Err(decode_error("the graph declares no outputs"));
        }
        let mut ids = Vec::with_capacity(self.proto.output.len());
        for output in &self.proto.output {
            if !self.env.contains_key(&output.name) {
                return Err(decode_error(format!(
                    "graph output {:?} is not produced by any node, input or initializer",
                    output.name
                )));
            }
            ids.push(self.materialize(&output.name)?);
        }
        self.graph.set_outputs(ids);
        Ok(())
    }

    /// Imports node `index` of the ONNX graph.
    fn node(&mut self, index: usize, node: &NodeProto) -> Result<()> {
        let name = if node.name.is_empty() {
            format!("{}_{index}", node.op_type)
        } else {
            node.name.clone()
        };
        self.node_inner(&name, node)
            .map_err(|e| name_node(e, &name, &node.op_type))
    }

    fn node_inner(&mut self, name: &str, node: &NodeProto) -> Result<()> {
        let opset = self.node_opset(name, node)?;
        let mut outputs: &[String] = &node.output;
        while let [rest @ .., last] = outputs {
            if !last.is_empty() {
                break;
            }
            outputs = rest;
        }
        if outputs.is_empty() {
            return Err(Error::node(name, &node.op_type, "the node has no outputs"));
        }
        if let Some(i) = outputs.iter().position(String::is_empty) {
            return Err(Error::node(
                name,
                &node.op_type,
                format!("output {i} has an empty name (only trailing outputs may be omitted)"),
            ));
        }
        for out in outputs {
            if self.env.contains_key(out) {
                return Err(Error::node(
                    name,
                    &node.op_type,
                    format!("output {out} is already defined"),
                ));
            }
        }
        match ops::lower(node, name, opset, outputs.len(), self)? {
            Lowered::Const(tensor) => {
                self.define_constant_output(name, outputs, Slot::Const(Arc::new(tensor)))
            }
            Lowered::Unsupported { message, bools } => {
                self.define_constant_output(name, outputs, Slot::Unsupported { message, bools })
            }
            Lowered::Op { op, args } => self.apply(name, op, args, outputs),
        }
    }

    fn define_constant_output(&mut self, name: &str, outputs: &[String], slot: Slot) -> Result<()> {
        match outputs {
            [out] => self
                .define(out, slot)
                .map_err(|m| Error::node(name, "Constant", m)),
            _ => Err(Error::node(
                name,
                "Constant",
                format!("expected 1 output, got {}", outputs.len()),
            )),
        }
    }

    /// The opset a node is read at; errors for other domains and opsets out of range.
    fn node_opset(&self, name: &str, node: &NodeProto) -> Result<i64> {
        let unsupported = |domain: &str, opset: i64| Error::UnsupportedOp {
            node: name.to_string(),
            op: node.op_type.clone(),
            domain: domain.to_string(),
            opset,
        };
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            let opset = self
                .model
                .opset_import
                .iter()
                .find(|o| o.domain == node.domain)
                .map_or(0, |o| o.version);
            return Err(unsupported(&node.domain, opset));
        }
        let opset = self.opset.ok_or_else(|| {
            decode_error("the model does not import an opset of the default ONNX domain")
        })?;
        if !(MIN_OPSET..=MAX_OPSET).contains(&opset) {
            return Err(unsupported("", opset));
        }
        Ok(opset)
    }

    /// Adds a lowered node, or folds it into constants.
    fn apply(&mut self, name: &str, op: Op, args: Vec<Arg>, outputs: &[String]) -> Result<()> {
        let mut inputs: Vec<Option<String>> = Vec::with_capacity(args.len());
        for (i, arg) in args.into_iter().enumerate() {
            inputs.push(match arg {
                Arg::Absent => None,
                Arg::Named(n) => {
                    match self.env.get(&n) {
                        None => {
                            return Err(Error::node(
                                name,
                                op.name(),
                                format!(
                                    "input {i} ({n}) is not defined by a graph input, \
                                     initializer or earlier node"
                                ),
                            ));
                        }
                        Some(Slot::Unsupported { message, .. }) => {
                            return Err(Error::node(
                                name,
                                op.name(),
                                format!("input {i} ({n}): {message}"),
                            ));
                        }
                        Some(_) => {}
                    }
                    Some(n)
                }
                Arg::New { what, tensor } => {
                    let n = self.fresh_name(&format!("{name}_{what}"));
                    self.define(&n, Slot::Const(Arc::new(tensor)))
                        .map_err(Error::internal)?;
                    Some(n)
                }
            });
        }

        if self.try_fold(name, &op, &inputs, outputs)? {
            return Ok(());
        }
        let mut ids = Vec::with_capacity(inputs.len());
        for input in &inputs {
            ids.push(match input {
                Some(n) => Some(self.materialize(n)?),
                None => None,
            });
        }
        let out_ids = self.graph.add_node(name, op, ids, outputs.to_vec())?;
        for (out, id) in outputs.iter().zip(out_ids) {
            self.define(out, Slot::Value(id)).map_err(Error::internal)?;
        }
        Ok(())
    }

    /// Evaluates a node at import time if it can be: all inputs constant, or `Shape` of a
    /// value of known shape. Returns whether it did.
    fn try_fold(
        &mut self,
        name: &str,
        op: &Op,
        inputs: &[Option<String>],
        outputs: &[String],
    ) -> Result<bool> {
        // What is known of each input: owned here, borrowed by `Known` below.
        enum Have {
            Absent,
            Const(Arc<Tensor>),
            Value(TensorType),
        }
        let mut have = Vec::with_capacity(inputs.len());
        for input in inputs {
            have.push(match input {
                None => Have::Absent,
                Some(n) => match (self.const_value(n), self.env.get(n.as_str())) {
                    (Some(t), _) => Have::Const(t),
                    (None, Some(Slot::Value(id))) => Have::Value(self.graph.value(*id).ty.clone()),
                    (None, _) => return Ok(false),
                },
            });
        }
        let known: Vec<Known<'_>> = have
            .iter()
            .map(|h| match h {
                Have::Absent => Known::Absent,
                Have::Const(t) => Known::Const(t),
                Have::Value(ty) => Known::Value(ty),
            })
            .collect();
        match fold_node(op, name, &known, outputs.len())? {
            Some(results) => self.fold_outputs(name, op, outputs, results),
            None => Ok(false),
        }
    }

    fn fold_outputs(
        &mut self,
        name: &str,
        op: &Op,
        outputs: &[String],
        results: Vec<Tensor>,
    ) -> Result<bool> {
        if results.len() != outputs.len() {
            return Err(Error::internal(format!(
                "node {name} ({}) folded into {} values, expected {}",
                op.name(),
                results.len(),
                outputs.len()
            )));
        }
        for (out, tensor) in outputs.iter().zip(results) {
            self.define(out, Slot::Const(Arc::new(tensor)))
                .map_err(Error::internal)?;
        }
        Ok(true)
    }
}

/// Makes a node error name the node and its ONNX op type; other errors that do not name
/// the node are wrapped in a node error.
fn name_node(e: Error, name: &str, op_type: &str) -> Error {
    match e {
        Error::Node { node, message, .. } if node == name => Error::Node {
            node,
            op: op_type.to_string(),
            message,
        },
        e @ (Error::Node { .. }
        | Error::UnsupportedOp { .. }
        | Error::Decode { .. }
        | Error::Internal(_)) => e,
        other => Error::node(name, op_type, other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use onnx_protobuf::attribute_proto::AttributeType;
    use onnx_protobuf::{
        AttributeProto, OperatorSetIdProto, TensorShapeProto, TypeProto, ValueInfoProto,
        tensor_shape_proto, type_proto,
    };
    use protobuf::{EnumOrUnknown, MessageField};

    use super::*;
    use crate::graph::Attr;
    use crate::graph::types::Dim;
    use crate::tensor::DType;

    fn node(op: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<AttributeProto>) -> NodeProto {
        let mut n = NodeProto::new();
        n.op_type = op.to_string();
        n.input = inputs.iter().map(|s| s.to_string()).collect();
        n.output = outputs.iter().map(|s| s.to_string()).collect();
        n.attribute = attrs;
        n
    }

    fn named(mut n: NodeProto, name: &str) -> NodeProto {
        n.name = name.to_string();
        n
    }

    fn attr(
        name: &str,
        ty: AttributeType,
        fill: impl FnOnce(&mut AttributeProto),
    ) -> AttributeProto {
        let mut a = AttributeProto::new();
        a.name = name.to_string();
        a.type_ = EnumOrUnknown::new(ty);
        fill(&mut a);
        a
    }

    fn ints(name: &str, v: &[i64]) -> AttributeProto {
        attr(name, AttributeType::INTS, |a| a.ints = v.to_vec())
    }

    fn int(name: &str, v: i64) -> AttributeProto {
        attr(name, AttributeType::INT, |a| a.i = v)
    }

    fn float(name: &str, v: f32) -> AttributeProto {
        attr(name, AttributeType::FLOAT, |a| a.f = v)
    }

    fn string(name: &str, v: &str) -> AttributeProto {
        attr(name, AttributeType::STRING, |a| a.s = v.as_bytes().to_vec())
    }

    /// A graph input; dims > 0 are known, -1 unknown, and names symbolic.
    fn input(name: &str, elem_type: i32, dims: &[&str]) -> ValueInfoProto {
        let mut shape = TensorShapeProto::new();
        for d in dims {
            let mut dim = tensor_shape_proto::Dimension::new();
            dim.value = match d.parse::<i64>() {
                Ok(-1) => None,
                Ok(n) => Some(tensor_shape_proto::dimension::Value::DimValue(n)),
                Err(_) => Some(tensor_shape_proto::dimension::Value::DimParam(
                    d.to_string(),
                )),
            };
            shape.dim.push(dim);
        }
        let mut t = type_proto::Tensor::new();
        t.elem_type = elem_type;
        t.shape = MessageField::some(shape);
        let mut ty = TypeProto::new();
        ty.value = Some(type_proto::Value::TensorType(t));
        let mut v = ValueInfoProto::new();
        v.name = name.to_string();
        v.type_ = MessageField::some(ty);
        v
    }

    fn f32_input(name: &str, dims: &[&str]) -> ValueInfoProto {
        input(name, tensor::code::FLOAT, dims)
    }

    fn init_f32(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
        let mut t = TensorProto::new();
        t.name = name.to_string();
        t.data_type = tensor::code::FLOAT;
        t.dims = dims.to_vec();
        t.float_data = data.to_vec();
        t
    }

    fn init_i64(name: &str, data: &[i64]) -> TensorProto {
        let mut t = TensorProto::new();
        t.name = name.to_string();
        t.data_type = tensor::code::INT64;
        t.dims = vec![data.len() as i64];
        t.int64_data = data.to_vec();
        t
    }

    struct Model {
        opset: i64,
        nodes: Vec<NodeProto>,
        inputs: Vec<ValueInfoProto>,
        initializers: Vec<TensorProto>,
        outputs: Vec<&'static str>,
    }

    impl Model {
        fn new(opset: i64, nodes: Vec<NodeProto>, inputs: Vec<ValueInfoProto>) -> Model {
            let outputs = nodes
                .last()
                .map(|n| vec![n.output[0].clone().leak() as &'static str])
                .unwrap_or_default();
            Model {
                opset,
                nodes,
                inputs,
                initializers: Vec::new(),
                outputs,
            }
        }

        fn with_init(mut self, t: TensorProto) -> Model {
            self.initializers.push(t);
            self
        }

        fn bytes(&self) -> Vec<u8> {
            let mut g = GraphProto::new();
            g.name = "test".to_string();
            g.node = self.nodes.clone();
            g.input = self.inputs.clone();
            g.initializer = self.initializers.clone();
            g.output = self
                .outputs
                .iter()
                .map(|n| {
                    let mut v = ValueInfoProto::new();
                    v.name = n.to_string();
                    v
                })
                .collect();
            let mut opset = OperatorSetIdProto::new();
            opset.version = self.opset;
            let mut m = ModelProto::new();
            m.ir_version = 8;
            m.opset_import = vec![opset];
            m.graph = MessageField::some(g);
            m.write_to_bytes().unwrap()
        }

        fn import(&self) -> Result<Graph> {
            import(&self.bytes())
        }

        fn run(&self, inputs: &[(&str, Tensor)]) -> Vec<Tensor> {
            let graph = self.import().unwrap();
            crate::interp::run(&graph, inputs)
                .unwrap()
                .into_iter()
                .map(|(_, t)| t)
                .collect()
        }
    }

    fn ops(graph: &Graph) -> Vec<&'static str> {
        graph
            .node_order()
            .iter()
            .map(|&id| graph.node(id).op.name())
            .collect()
    }

    /// The constant read by input `i` of the only node.
    fn const_input(graph: &Graph, i: usize) -> Tensor {
        let node = graph.node(graph.node_order()[0]);
        let id = node.inputs[i].expect("input present");
        graph
            .constant(id)
            .expect("a constant")
            .tensor
            .as_ref()
            .clone()
    }

    fn x(shape: Vec<usize>) -> Tensor {
        let n = shape.iter().product::<usize>();
        Tensor::from_f32(shape, (0..n).map(|v| v as f32).collect()).unwrap()
    }

    #[test]
    fn malformed_bytes_are_decode_errors() {
        for bytes in [
            &b"not a model at all"[..],
            &[0xff; 16][..],
            &[0x0a, 0x80][..],
        ] {
            let err = import(bytes).unwrap_err();
            assert!(matches!(err, Error::Decode { .. }), "{err}");
        }
        let err = import(&[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "not a valid ONNX model: the model has no graph"
        );
    }

    #[test]
    fn huge_length_claims_fail_without_allocating() {
        // raw_data (field 9), float_data (field 4, packed) and dims (field 1, packed), each
        // claiming about 4 GiB with a handful of bytes behind the claim.
        for field in [0x4a, 0x22, 0x0a] {
            let bytes = [field, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3];
            assert!(tensor_from_proto_bytes(&bytes).is_err(), "field {field:#x}");
        }
        // The graph field (7) of a model, likewise.
        let err = import(&[0x3a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0]).unwrap_err();
        assert!(matches!(err, Error::Decode { .. }), "{err}");
    }

    #[test]
    fn corrupted_models_never_panic() {
        let good = include_bytes!("../../tests/data/models/tiny_cnn.onnx");
        assert!(import(good).is_ok());
        for cut in (0..good.len()).step_by(61) {
            let _ = import(&good[..cut]);
        }
        // A fixed pseudo-random sequence of byte flips.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..300 {
            let mut bytes = good.to_vec();
            for _ in 0..4 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let at = (state % bytes.len() as u64) as usize;
                bytes[at] = (state >> 32) as u8;
            }
            let _ = import(&bytes);
        }
    }

    #[test]
    fn unsupported_ops_and_domains_name_the_node() {
        let m = Model::new(
            17,
            vec![node("Foo", &["x"], &["y"], vec![])],
            vec![f32_input("x", &["2"])],
        );
        let err = m.import().unwrap_err();
        assert_eq!(err.to_string(), "node Foo_0: unsupported op Foo (opset 17)");

        let mut n = named(node("Relu", &["x"], &["y"], vec![]), "r");
        n.domain = "com.example".to_string();
        let err = Model::new(17, vec![n], vec![f32_input("x", &["2"])])
            .import()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "node r: unsupported op Relu (domain com.example)"
        );

        let m = Model::new(
            7,
            vec![node("Relu", &["x"], &["y"], vec![])],
            vec![f32_input("x", &["2"])],
        );
        assert!(matches!(
            m.import().unwrap_err(),
            Error::UnsupportedOp { opset: 7, .. }
        ));
    }

    #[test]
    fn node_errors_name_the_onnx_op() {
        let m = Model::new(
            17,
            vec![named(node("Relu", &["nope"], &["y"], vec![]), "r1")],
            vec![],
        );
        let err = m.import().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("node r1 (Relu): input 0 (nope) is not defined"),
            "{err}"
        );
        let m = Model::new(
            17,
            vec![named(
                node("Relu", &["x"], &["y"], vec![float("alpha", 1.0)]),
                "r2",
            )],
            vec![f32_input("x", &["2"])],
        );
        assert_eq!(
            m.import().unwrap_err().to_string(),
            "node r2 (Relu): unknown attribute(s) alpha"
        );
        let m = Model::new(
            17,
            vec![
                node("Relu", &["x"], &["y"], vec![]),
                named(node("Relu", &["x"], &["y"], vec![]), "again"),
            ],
            vec![f32_input("x", &["2"])],
        );
        assert_eq!(
            m.import().unwrap_err().to_string(),
            "node again (Relu): output y is already defined"
        );
    }

    #[test]
    fn input_types_and_initializers() {
        let m = Model::new(
            17,
            vec![node("Add", &["x", "w"], &["y"], vec![])],
            vec![f32_input("x", &["N", "-1", "3"]), f32_input("w", &["3"])],
        )
        .with_init(init_f32("w", &[3], &[1.0, 2.0, 3.0]))
        .with_init(init_f32("unused", &[1], &[0.0]));
        let g = m.import().unwrap();
        assert_eq!(
            g.inputs().len(),
            1,
            "initializers listed as inputs are constants"
        );
        assert_eq!(
            g.value(g.inputs()[0]).ty.shape,
            vec![Dim::Sym("N".into()), Dim::Unknown, Dim::Known(3)]
        );
        assert!(
            g.value_by_name("unused").is_none(),
            "unused initializers are dropped"
        );
        assert!(g.constant(g.value_by_name("w").unwrap()).is_some());
    }

    #[test]
    fn unsupported_dtypes_fail_only_when_read() {
        let mut t = init_f32("u8", &[1], &[]);
        t.data_type = 2;
        t.raw_data = vec![7];
        let m = Model::new(
            17,
            vec![node("Relu", &["x"], &["y"], vec![])],
            vec![f32_input("x", &["1"])],
        )
        .with_init(t.clone());
        assert!(m.import().is_ok());
        let m = Model::new(
            17,
            vec![named(node("Relu", &["u8"], &["y"], vec![]), "r")],
            vec![],
        )
        .with_init(t);
        let err = m.import().unwrap_err().to_string();
        assert!(
            err.contains("node r (Relu): input 0 (u8): tensor u8 has dtype UINT8"),
            "{err}"
        );
        let m = Model::new(
            17,
            vec![node("Relu", &["x"], &["y"], vec![])],
            vec![input("x", 9, &["1"])],
        );
        let err = m.import().unwrap_err().to_string();
        assert!(err.contains("input x has dtype BOOL"), "{err}");
    }

    #[test]
    fn constants_and_folding() {
        // Constant nodes, and a shape chain on a known input: everything folds into the
        // Reshape's shape operand.
        let nodes = vec![
            node(
                "Constant",
                &[],
                &["two"],
                vec![attr("value_ints", AttributeType::INTS, |a| {
                    a.ints = vec![2]
                })],
            ),
            node("Shape", &["x"], &["s"], vec![]),
            node("Gather", &["s", "zero"], &["n"], vec![]),
            node("Unsqueeze", &["n", "zero1"], &["n1"], vec![]),
            node(
                "Concat",
                &["n1", "two", "minus1"],
                &["shape"],
                vec![int("axis", 0)],
            ),
            node("Reshape", &["x", "shape"], &["y"], vec![]),
        ];
        let mut zero = init_i64("zero", &[0]);
        zero.dims = vec![];
        let m = Model::new(17, nodes, vec![f32_input("x", &["1", "4", "3"])])
            .with_init(zero)
            .with_init(init_i64("zero1", &[0]))
            .with_init(init_i64("minus1", &[-1]));
        let g = m.import().unwrap();
        assert_eq!(ops(&g), vec!["reshape"]);
        assert_eq!(const_input(&g, 1).as_i64(), Some(&[1, 2, -1][..]));
        assert_eq!(m.run(&[("x", x(vec![1, 4, 3]))])[0].shape(), &[1, 2, 6]);

        // With a symbolic dim the Shape node stays.
        let nodes = vec![node("Shape", &["x"], &["s"], vec![int("start", 1)])];
        let g = Model::new(17, nodes, vec![f32_input("x", &["N", "4"])])
            .import()
            .unwrap();
        assert_eq!(ops(&g), vec!["shape"]);
        let nodes = vec![node("Shape", &["x"], &["s"], vec![int("start", -1)])];
        let g = Model::new(17, nodes, vec![f32_input("x", &["5", "4"])])
            .import()
            .unwrap();
        let s = g.constant(g.outputs()[0]).expect("folded");
        assert_eq!(s.tensor.as_i64(), Some(&[4][..]));

        let nodes = vec![node(
            "Constant",
            &[],
            &["c"],
            vec![attr("value_float", AttributeType::FLOAT, |a| a.f = 1.5)],
        )];
        let g = Model::new(17, nodes, vec![]).import().unwrap();
        assert_eq!(
            g.constant(g.outputs()[0]).unwrap().tensor.as_f32(),
            Some(&[1.5][..])
        );
    }

    #[test]
    fn clip_before_11_takes_attribute_bounds() {
        let m = Model::new(
            10,
            vec![node(
                "Clip",
                &["x"],
                &["y"],
                vec![float("min", 1.0), float("max", 2.5)],
            )],
            vec![f32_input("x", &["4"])],
        );
        let g = m.import().unwrap();
        assert_eq!(ops(&g), vec!["clip"]);
        assert_eq!(const_input(&g, 1), Tensor::scalar_f32(1.0));
        assert_eq!(const_input(&g, 2), Tensor::scalar_f32(2.5));
        let y = &m.run(&[("x", x(vec![4]))])[0];
        assert_eq!(y.as_f32(), Some(&[1.0, 1.0, 2.0, 2.5][..]));
        // Only a max: the min input is absent.
        let g = Model::new(
            10,
            vec![node("Clip", &["x"], &["y"], vec![float("max", 2.0)])],
            vec![f32_input("x", &["4"])],
        )
        .import()
        .unwrap();
        let n = g.node(g.node_order()[0]);
        assert!(n.inputs[1].is_none() && n.inputs[2].is_some());
    }

    #[test]
    fn axes_attributes_become_inputs() {
        for (opset, op, attrs, x_dims, out_shape) in [
            (
                11,
                "Squeeze",
                vec![ints("axes", &[0])],
                vec!["1", "3"],
                vec![3usize],
            ),
            (
                11,
                "Unsqueeze",
                vec![ints("axes", &[0, 2])],
                vec!["3"],
                vec![1, 3, 1],
            ),
            (
                13,
                "ReduceMean",
                vec![ints("axes", &[1]), int("keepdims", 0)],
                vec!["2", "3"],
                vec![2],
            ),
        ] {
            let m = Model::new(
                opset,
                vec![node(op, &["x"], &["y"], attrs)],
                vec![f32_input("x", &x_dims)],
            );
            let g = m.import().unwrap_or_else(|e| panic!("{op}: {e}"));
            assert_eq!(const_input(&g, 1).dtype(), DType::I64, "{op}");
            let shape: Vec<usize> = x_dims.iter().map(|d| d.parse().unwrap()).collect();
            assert_eq!(m.run(&[("x", x(shape))])[0].shape(), &out_shape[..], "{op}");
        }
        // Squeeze without axes keeps its input absent.
        let g = Model::new(
            11,
            vec![node("Squeeze", &["x"], &["y"], vec![])],
            vec![f32_input("x", &["1", "3"])],
        )
        .import()
        .unwrap();
        assert_eq!(g.node(g.node_order()[0]).inputs.len(), 1);
    }

    #[test]
    fn split_pad_slice_before_their_input_forms() {
        let m = Model::new(
            11,
            vec![node(
                "Split",
                &["x"],
                &["a", "b"],
                vec![ints("split", &[1, 3])],
            )],
            vec![f32_input("x", &["4"])],
        );
        let g = m.import().unwrap();
        assert_eq!(const_input(&g, 1).as_i64(), Some(&[1, 3][..]));

        let m = Model::new(
            12,
            vec![node("Split", &["x"], &["a", "b"], vec![int("axis", 0)])],
            vec![f32_input("x", &["4"])],
        );
        let g = m.import().unwrap();
        let split = g.node(g.node_order()[0]);
        assert!(
            split
                .op
                .attributes()
                .contains(&("num_outputs", Attr::Int(2)))
        );
        assert_eq!(
            m.run(&[("x", x(vec![4]))]).len(),
            1,
            "the model outputs a only"
        );

        let m = Model::new(
            10,
            vec![node(
                "Pad",
                &["x"],
                &["y"],
                vec![ints("pads", &[1, 2]), float("value", 9.0)],
            )],
            vec![f32_input("x", &["2"])],
        );
        assert_eq!(
            m.run(&[("x", x(vec![2]))])[0].as_f32(),
            Some(&[9.0, 0.0, 1.0, 9.0, 9.0][..])
        );

        let m = Model::new(
            9,
            vec![node(
                "Slice",
                &["x"],
                &["y"],
                vec![ints("starts", &[1]), ints("ends", &[3])],
            )],
            vec![f32_input("x", &["4"])],
        );
        assert_eq!(
            m.run(&[("x", x(vec![4]))])[0].as_f32(),
            Some(&[1.0, 2.0][..])
        );
    }

    #[test]
    fn softmax_before_13_coerces_to_2d() {
        let g = Model::new(
            11,
            vec![node("Softmax", &["x"], &["y"], vec![])],
            vec![f32_input("x", &["2", "3"])],
        )
        .import()
        .unwrap();
        let op = &g.node(g.node_order()[0]).op;
        assert_eq!(
            *op,
            Op::Softmax {
                axis: 1,
                coerce_2d: true
            }
        );
    }

    #[test]
    fn resize_10_and_upsample_are_asymmetric_floor() {
        let scales = init_f32("scales", &[2], &[1.0, 2.0]);
        for (opset, op) in [(10, "Resize"), (9, "Upsample")] {
            let m = Model::new(
                opset,
                vec![node(
                    op,
                    &["x", "scales"],
                    &["y"],
                    vec![string("mode", "nearest")],
                )],
                vec![f32_input("x", &["1", "2"])],
            )
            .with_init(scales.clone());
            let g = m.import().unwrap_or_else(|e| panic!("{op}: {e}"));
            let resize = g.node(g.node_order()[0]);
            assert!(resize.inputs[1].is_none(), "{op}: no roi");
            let attrs = resize.op.attributes();
            assert!(
                attrs.contains(&("nearest_mode", Attr::Str("floor".into()))),
                "{op}"
            );
            assert!(attrs.contains(&(
                "coordinate_transformation_mode",
                Attr::Str("asymmetric".into())
            )));
            assert_eq!(
                m.run(&[("x", x(vec![1, 2]))])[0].as_f32(),
                Some(&[0.0, 0.0, 1.0, 1.0][..])
            );
        }
    }

    #[test]
    fn training_forms_are_refused() {
        let m = Model::new(
            10,
            vec![named(node("Dropout", &["x"], &["y", "mask"], vec![]), "d")],
            vec![f32_input("x", &["2"])],
        );
        assert_eq!(
            m.import().unwrap_err().to_string(),
            "node d (Dropout): the mask output (training) is not supported"
        );
        // Dropout is the identity; a trailing unnamed output is dropped.
        let m = Model::new(
            10,
            vec![node(
                "Dropout",
                &["x"],
                &["y", ""],
                vec![float("ratio", 0.3)],
            )],
            vec![f32_input("x", &["2"])],
        );
        assert_eq!(ops(&m.import().unwrap()), vec!["dropout"]);
        let bn = named(
            node(
                "BatchNormalization",
                &["x", "s", "b", "m", "v"],
                &["y"],
                vec![int("training_mode", 1)],
            ),
            "bn",
        );
        let m = Model::new(15, vec![bn], vec![f32_input("x", &["1", "2"])]);
        assert!(
            m.import()
                .unwrap_err()
                .to_string()
                .contains("training_mode=1")
        );
        let m = Model::new(
            17,
            vec![node("Cast", &["x"], &["y"], vec![int("to", 6)])],
            vec![f32_input("x", &["2"])],
        );
        assert!(
            m.import()
                .unwrap_err()
                .to_string()
                .contains("cast to INT32 is not supported")
        );
    }

    #[test]
    fn generated_names_do_not_collide() {
        // The model already uses "u_axes"; the upgraded constant must pick another name.
        let m = Model::new(
            11,
            vec![
                named(
                    node("Unsqueeze", &["x"], &["u_axes"], vec![ints("axes", &[0])]),
                    "u",
                ),
                named(
                    node("Unsqueeze", &["u_axes"], &["y"], vec![ints("axes", &[0])]),
                    "u",
                ),
            ],
            vec![f32_input("x", &["3"])],
        );
        let g = m.import().unwrap();
        assert_eq!(ops(&g), vec!["unsqueeze", "unsqueeze"]);
        assert!(g.value_by_name("u_axes_2").is_some() && g.value_by_name("u_axes_3").is_some());
    }
}
