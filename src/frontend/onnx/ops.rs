//! ONNX nodes to IR ops: op names, attributes, and upgrades of older opset forms.
//!
//! The graph IR has one form per op, the newest ONNX one (see [`crate::graph::op`]). This
//! module maps an ONNX op type to its IR name, converts its attributes to generic
//! [`Attr`]s, and rewrites older forms into the newest:
//!
//! - attributes that later opsets turned into inputs become new constants ([`Arg::New`]):
//!   Clip < 11 `min`/`max`, Split < 13 `split`, Squeeze/Unsqueeze < 13 `axes`,
//!   ReduceMean < 18 `axes`, Pad < 11 `pads`/`value`, Slice < 10 `starts`/`ends`/`axes`,
//!   Upsample's `scales`;
//! - Softmax < 13 keeps its old meaning with `coerce_2d=1` and its old default axis 1;
//! - Resize 10 and Upsample become Resize with the asymmetric transformation (and `floor`
//!   rounding in nearest mode), as the ONNX version converter does;
//! - Dropout becomes `dropout(x)`, BatchNormalization loses `momentum`, Cast's `to` becomes
//!   an IR dtype; training forms (a Dropout mask, `training_mode=1`, BatchNormalization's
//!   running statistics) are refused.
//!
//! All op validation then happens in [`Op::from_parts`], the one path shared with the text IR.

use onnx_protobuf::{AttributeProto, NodeProto, TensorProto, attribute_proto::AttributeType};

use super::tensor::{self, TensorError, code, dtype_name};
use crate::error::{Error, Result};
use crate::graph::op::{Attr, Op};
use crate::tensor::Tensor;

/// The ONNX op types of the default domain that Fovea imports.
pub const OP_TYPES: &[&str] = &[
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Cast",
    "Clip",
    "Concat",
    "Constant",
    "Conv",
    "ConvTranspose",
    "Div",
    "Dropout",
    "Erf",
    "Exp",
    "Flatten",
    "Gather",
    "Gelu",
    "Gemm",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "LeakyRelu",
    "MatMul",
    "MaxPool",
    "Mul",
    "PRelu",
    "Pad",
    "Pow",
    "ReduceMean",
    "Relu",
    "Reshape",
    "Resize",
    "Shape",
    "Sigmoid",
    "Slice",
    "Softmax",
    "Split",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Tanh",
    "Transpose",
    "Unsqueeze",
    "Upsample",
];

/// What the importer knows about the values a node reads, for the few conversions that
/// depend on them.
pub(super) trait Env {
    /// The element count of `name` if it is a constant.
    fn const_len(&self, name: &str) -> Option<usize>;
    /// The flags of `name` if it is a BOOL constant.
    fn bool_const(&self, name: &str) -> Option<&[bool]>;
}

/// One input of a lowered node.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Arg {
    /// An absent optional input.
    Absent,
    /// A value of the model, by its ONNX name.
    Named(String),
    /// A constant made from an attribute of an older opset; `what` names it (`axes`).
    New {
        /// What the constant is, for its generated name.
        what: &'static str,
        /// Its value.
        tensor: Tensor,
    },
}

/// An ONNX node in the IR's terms.
#[derive(Debug)]
pub(super) enum Lowered {
    /// An IR op applied to arguments.
    Op {
        /// The op.
        op: Op,
        /// Its inputs, trailing absent ones removed.
        args: Vec<Arg>,
    },
    /// A `Constant` node's value.
    Const(Tensor),
    /// A `Constant` node whose dtype Fovea does not support. It is an error only if a node
    /// reads it; BOOL flags are kept for Dropout's `training_mode`.
    Unsupported {
        /// Why it cannot be used.
        message: String,
        /// The flags, if it is a BOOL tensor.
        bools: Option<Vec<bool>>,
    },
}

/// A node's attributes and inputs while they are rewritten.
struct Parts<'a> {
    name: &'a str,
    op_type: &'a str,
    opset: i64,
    attrs: Vec<(String, Attr)>,
    tensors: Vec<(String, &'a TensorProto)>,
    args: Vec<Arg>,
    n_outputs: usize,
}

impl Parts<'_> {
    fn error(&self, message: impl Into<String>) -> Error {
        Error::node(self.name, self.op_type, message)
    }

    fn take(&mut self, name: &str) -> Option<Attr> {
        let i = self.attrs.iter().position(|(n, _)| n == name)?;
        Some(self.attrs.remove(i).1)
    }

    fn set(&mut self, name: &str, value: Attr) {
        match self.attrs.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value,
            None => self.attrs.push((name.to_string(), value)),
        }
    }

    fn take_int(&mut self, name: &str) -> Result<Option<i64>> {
        match self.take(name) {
            None => Ok(None),
            Some(Attr::Int(v)) => Ok(Some(v)),
            Some(other) => Err(self.error(format!("attribute {name} must be an int, got {other}"))),
        }
    }

    fn take_float(&mut self, name: &str) -> Result<Option<f32>> {
        match self.take(name) {
            None => Ok(None),
            Some(Attr::Float(v)) => Ok(Some(v)),
            Some(Attr::Int(v)) => Ok(Some(v as f32)),
            Some(other) => {
                Err(self.error(format!("attribute {name} must be a float, got {other}")))
            }
        }
    }

    fn take_ints(&mut self, name: &str) -> Result<Option<Vec<i64>>> {
        match self.take(name) {
            None => Ok(None),
            Some(Attr::Ints(v)) => Ok(Some(v)),
            Some(Attr::Int(v)) => Ok(Some(vec![v])),
            Some(other) => Err(self.error(format!(
                "attribute {name} must be a list of ints, got {other}"
            ))),
        }
    }

    fn take_floats(&mut self, name: &str) -> Result<Option<Vec<f32>>> {
        match self.take(name) {
            None => Ok(None),
            Some(Attr::Floats(v)) => Ok(Some(v)),
            Some(Attr::Float(v)) => Ok(Some(vec![v])),
            Some(other) => Err(self.error(format!(
                "attribute {name} must be a list of floats, got {other}"
            ))),
        }
    }

    fn take_string(&mut self, name: &str) -> Result<Option<String>> {
        match self.take(name) {
            None => Ok(None),
            Some(Attr::Str(s)) => Ok(Some(s)),
            Some(other) => {
                Err(self.error(format!("attribute {name} must be a string, got {other}")))
            }
        }
    }

    /// Sets input `index`, padding with absent inputs.
    fn set_arg(&mut self, index: usize, arg: Arg) {
        if self.args.len() <= index {
            self.args.resize(index + 1, Arg::Absent);
        }
        self.args[index] = arg;
    }

    fn arg(&self, index: usize) -> &Arg {
        self.args.get(index).unwrap_or(&Arg::Absent)
    }

    /// Moves an optional list-of-ints attribute to input `index` as an `i64[k]` constant.
    fn ints_to_input(&mut self, name: &'static str, index: usize) -> Result<bool> {
        match self.take_ints(name)? {
            Some(v) => {
                self.set_arg(
                    index,
                    Arg::New {
                        what: name,
                        tensor: Tensor::vector_i64(v),
                    },
                );
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Like [`Parts::ints_to_input`], for an attribute the old opset requires.
    fn required_ints_to_input(&mut self, name: &'static str, index: usize) -> Result<()> {
        if self.ints_to_input(name, index)? {
            Ok(())
        } else {
            Err(self.error(format!(
                "attribute {name} is required in opset {}",
                self.opset
            )))
        }
    }

    /// Moves an optional float attribute to input `index` as an `f32` scalar constant.
    fn float_to_input(&mut self, name: &'static str, index: usize) -> Result<()> {
        if let Some(v) = self.take_float(name)? {
            self.set_arg(
                index,
                Arg::New {
                    what: name,
                    tensor: Tensor::scalar_f32(v),
                },
            );
        }
        Ok(())
    }
}

/// Converts one attribute; tensors are returned apart (only `Constant` takes one).
fn attribute(a: &AttributeProto) -> std::result::Result<AttrOrTensor<'_>, String> {
    if !a.ref_attr_name.is_empty() {
        return Err(format!(
            "attribute {} refers to a function attribute, which fovea does not support",
            a.name
        ));
    }
    let attr = match a.type_.enum_value() {
        Ok(AttributeType::FLOAT) => Attr::Float(a.f),
        Ok(AttributeType::INT) => Attr::Int(a.i),
        Ok(AttributeType::STRING) => Attr::Str(
            String::from_utf8(a.s.clone())
                .map_err(|_| format!("attribute {} is not valid UTF-8", a.name))?,
        ),
        Ok(AttributeType::FLOATS) => Attr::Floats(a.floats.clone()),
        Ok(AttributeType::INTS) => Attr::Ints(a.ints.clone()),
        Ok(AttributeType::TENSOR) => {
            return a
                .t
                .as_ref()
                .map(AttrOrTensor::Tensor)
                .ok_or_else(|| format!("attribute {} has no tensor", a.name));
        }
        Ok(AttributeType::UNDEFINED) => {
            return Err(format!("attribute {} has no type", a.name));
        }
        Ok(other) => {
            return Err(format!(
                "attribute {} has type {other:?}, which fovea does not support",
                a.name
            ));
        }
        Err(code) => {
            return Err(format!("attribute {} has unknown type code {code}", a.name));
        }
    };
    Ok(AttrOrTensor::Attr(attr))
}

enum AttrOrTensor<'a> {
    Attr(Attr),
    Tensor(&'a TensorProto),
}

/// Lowers an ONNX node of the default domain at `opset`, named `name`, with `n_outputs`
/// outputs (trailing unnamed outputs already dropped).
pub(super) fn lower(
    node: &NodeProto,
    name: &str,
    opset: i64,
    n_outputs: usize,
    env: &dyn Env,
) -> Result<Lowered> {
    let op_type = node.op_type.as_str();
    // Checked first, so that an unsupported op is reported as such, not by its attributes.
    if !OP_TYPES.contains(&op_type) {
        return Err(Error::UnsupportedOp {
            node: name.to_string(),
            op: op_type.to_string(),
            domain: String::new(),
            opset,
        });
    }
    let mut parts = Parts {
        name,
        op_type,
        opset,
        attrs: Vec::with_capacity(node.attribute.len()),
        tensors: Vec::new(),
        args: node
            .input
            .iter()
            .map(|i| {
                if i.is_empty() {
                    Arg::Absent
                } else {
                    Arg::Named(i.clone())
                }
            })
            .collect(),
        n_outputs,
    };
    for a in &node.attribute {
        let duplicate = parts.attrs.iter().any(|(n, _)| *n == a.name)
            || parts.tensors.iter().any(|(n, _)| *n == a.name);
        if duplicate {
            return Err(parts.error(format!("attribute {} is given twice", a.name)));
        }
        match attribute(a).map_err(|m| parts.error(m))? {
            AttrOrTensor::Attr(attr) => parts.attrs.push((a.name.clone(), attr)),
            AttrOrTensor::Tensor(t) => parts.tensors.push((a.name.clone(), t)),
        }
    }
    if op_type == "Constant" {
        return constant(&mut parts);
    }
    let Some(ir_name) = upgrade(&mut parts, env)? else {
        return Err(Error::internal(format!(
            "op type {op_type} is listed as supported but has no conversion"
        )));
    };
    if let Some((attr, _)) = parts.tensors.first() {
        return Err(parts.error(format!("unknown attribute(s) {attr}")));
    }
    let op = Op::from_parts(ir_name, &parts.attrs, name)?;
    let mut args = parts.args;
    while args.last() == Some(&Arg::Absent) {
        args.pop();
    }
    Ok(Lowered::Op { op, args })
}

/// Maps the op type to its IR name and rewrites older forms; `None` for unsupported ops.
fn upgrade(p: &mut Parts<'_>, env: &dyn Env) -> Result<Option<&'static str>> {
    let opset = p.opset;
    let ir_name = match p.op_type {
        "Conv" => "conv",
        "ConvTranspose" => "conv_transpose",
        "BatchNormalization" => {
            // Momentum only matters when training; `spatial` (opset < 9) must be the
            // per-channel form the IR implements.
            p.take("momentum");
            if let Some(spatial) = p.take_int("spatial")?
                && spatial != 1
            {
                return Err(p.error("spatial=0 (per-element statistics) is not supported"));
            }
            if p.take_int("training_mode")?.unwrap_or(0) != 0 {
                return Err(p.error("training_mode=1 is not supported (inference only)"));
            }
            if p.n_outputs > 1 {
                return Err(
                    p.error("the running mean and variance outputs (training) are not supported")
                );
            }
            "batch_norm"
        }
        "Relu" => "relu",
        "LeakyRelu" => "leaky_relu",
        "PRelu" => "prelu",
        "Sigmoid" => "sigmoid",
        "HardSigmoid" => "hard_sigmoid",
        "HardSwish" => "hard_swish",
        "Tanh" => "tanh",
        "Gelu" => "gelu",
        "Erf" => "erf",
        "Exp" => "exp",
        "Sqrt" => "sqrt",
        "Pow" => "pow",
        "Add" => "add",
        "Sub" => "sub",
        "Mul" => "mul",
        "Div" => "div",
        "Clip" => {
            if opset < 11 {
                p.args.truncate(1);
                p.float_to_input("min", 1)?;
                p.float_to_input("max", 2)?;
            }
            "clip"
        }
        "Softmax" => {
            if opset < 13 {
                let axis = p.take_int("axis")?.unwrap_or(1);
                p.set("axis", Attr::Int(axis));
                p.set("coerce_2d", Attr::Int(1));
            }
            "softmax"
        }
        "MaxPool" => "max_pool",
        "AveragePool" => "average_pool",
        "GlobalAveragePool" => "global_average_pool",
        "GlobalMaxPool" => "global_max_pool",
        "Gemm" => "gemm",
        "MatMul" => "matmul",
        "Flatten" => "flatten",
        "Reshape" => "reshape",
        "Transpose" => "transpose",
        "Concat" => "concat",
        "Split" => {
            if opset < 13 {
                p.args.truncate(1);
                p.ints_to_input("split", 1)?;
            }
            // Before opset 18 the output count alone asks for equal parts.
            if opset < 18 && *p.arg(1) == Arg::Absent {
                p.set("num_outputs", Attr::Int(p.n_outputs as i64));
            }
            "split"
        }
        "Slice" => {
            if opset < 10 {
                p.args.truncate(1);
                p.required_ints_to_input("starts", 1)?;
                p.required_ints_to_input("ends", 2)?;
                p.ints_to_input("axes", 3)?;
            }
            "slice"
        }
        "Pad" => {
            if opset < 11 {
                p.args.truncate(1);
                p.required_ints_to_input("pads", 1)?;
                p.float_to_input("value", 2)?;
            }
            "pad"
        }
        "Resize" => {
            if opset < 11 {
                // Resize-10 is (X, scales), asymmetric, flooring in nearest mode.
                if p.args.len() != 2 {
                    return Err(p.error(format!(
                        "expected 2 inputs (X, scales) in opset {opset}, got {}",
                        p.args.len()
                    )));
                }
                let scales = p.args.pop().unwrap_or(Arg::Absent);
                p.set_arg(2, scales);
                legacy_resize_attributes(p)?;
            } else {
                // Opsets 11 and 12 require roi and scales and pass empty tensors when they
                // are unused; the IR marks them absent instead.
                for i in 1..=3 {
                    let empty = matches!(p.arg(i), Arg::Named(n) if env.const_len(n) == Some(0));
                    if empty {
                        p.set_arg(i, Arg::Absent);
                    }
                }
            }
            "resize"
        }
        "Upsample" => {
            let scales = match p.take_floats("scales")? {
                Some(s) => Arg::New {
                    what: "scales",
                    tensor: Tensor::from_f32(vec![s.len()], s)
                        .map_err(|e| Error::internal(e.to_string()))?,
                },
                None => p.arg(1).clone(),
            };
            if scales == Arg::Absent {
                return Err(p.error("scales are required (as an input or attribute)"));
            }
            p.args.truncate(1);
            p.set_arg(2, scales);
            legacy_resize_attributes(p)?;
            "resize"
        }
        "Squeeze" => {
            if opset < 13 {
                p.args.truncate(1);
                p.ints_to_input("axes", 1)?;
            }
            "squeeze"
        }
        "Unsqueeze" => {
            if opset < 13 {
                p.args.truncate(1);
                p.required_ints_to_input("axes", 1)?;
            }
            "unsqueeze"
        }
        "ReduceMean" => {
            if opset < 18 {
                p.args.truncate(1);
                p.ints_to_input("axes", 1)?;
            }
            "reduce_mean"
        }
        "Identity" => "identity",
        "Dropout" => {
            dropout(p, env)?;
            "dropout"
        }
        "Shape" => "shape",
        "Gather" => "gather",
        "Cast" => {
            // `saturate` and `round_mode` only concern float8 and float4 targets.
            p.take("saturate");
            p.take("round_mode");
            let to = p
                .take_int("to")?
                .ok_or_else(|| p.error("attribute to is required"))?;
            let dtype = match i32::try_from(to) {
                Ok(code::FLOAT) => "f32",
                Ok(code::INT64) => "i64",
                _ => {
                    let name = i32::try_from(to)
                        .map(dtype_name)
                        .unwrap_or_else(|_| format!("dtype code {to}"));
                    return Err(p.error(format!(
                        "cast to {name} is not supported (FLOAT and INT64 only)"
                    )));
                }
            };
            p.set("to", Attr::Str(dtype.to_string()));
            "cast"
        }
        _ => return Ok(None),
    };
    Ok(Some(ir_name))
}

/// Resize-10 and Upsample: the mode attribute plus the asymmetric transformation.
fn legacy_resize_attributes(p: &mut Parts<'_>) -> Result<()> {
    let mode = p
        .take_string("mode")?
        .unwrap_or_else(|| "nearest".to_string());
    match mode.as_str() {
        "nearest" => {
            p.set("mode", Attr::Str("nearest".to_string()));
            p.set("nearest_mode", Attr::Str("floor".to_string()));
        }
        "linear" | "bilinear" => p.set("mode", Attr::Str("linear".to_string())),
        other => {
            return Err(p.error(format!("attribute mode has unsupported value {other:?}")));
        }
    }
    p.set(
        "coordinate_transformation_mode",
        Attr::Str("asymmetric".to_string()),
    );
    Ok(())
}

/// Dropout at inference is the identity: drop `ratio` and `seed`, refuse training.
fn dropout(p: &mut Parts<'_>, env: &dyn Env) -> Result<()> {
    p.take("ratio");
    p.take("seed");
    p.take("is_test");
    if p.n_outputs > 1 {
        return Err(p.error("the mask output (training) is not supported"));
    }
    if let Arg::Named(name) = p.arg(2) {
        match env.bool_const(name) {
            Some(flags) if flags.iter().all(|&f| !f) => {}
            Some(_) => return Err(p.error("training_mode=true is not supported (inference only)")),
            None => {
                return Err(p.error(format!(
                    "training_mode {name} must be a constant false (inference only)"
                )));
            }
        }
    }
    p.args.truncate(1);
    Ok(())
}

/// The `Constant` op: exactly one of its value attributes.
fn constant(p: &mut Parts<'_>) -> Result<Lowered> {
    let given = p.attrs.len() + p.tensors.len();
    if given != 1 {
        return Err(p.error(format!("expected exactly one value attribute, got {given}")));
    }
    if let Some((name, t)) = p.tensors.first() {
        if name != "value" {
            return Err(p.error(format!("unknown attribute(s) {name}")));
        }
        return match tensor::decode(t) {
            Ok(tensor) => Ok(Lowered::Const(tensor)),
            Err(TensorError::Unsupported(message)) => Ok(Lowered::Unsupported {
                bools: (t.data_type == code::BOOL)
                    .then(|| tensor::decode_bools(t).ok())
                    .flatten(),
                message,
            }),
            Err(TensorError::Malformed(message)) => Err(p.error(message)),
        };
    }
    let (name, attr) = p.attrs.remove(0);
    let tensor = match (name.as_str(), attr) {
        ("value_float", Attr::Float(v)) => Tensor::scalar_f32(v),
        ("value_int", Attr::Int(v)) => Tensor::scalar_i64(v),
        ("value_ints", Attr::Ints(v)) => Tensor::vector_i64(v),
        ("value_floats", Attr::Floats(v)) => {
            Tensor::from_f32(vec![v.len()], v).map_err(|e| Error::internal(e.to_string()))?
        }
        ("value_string" | "value_strings", _) => {
            return Ok(Lowered::Unsupported {
                message: format!(
                    "node {} (Constant) makes a string, which fovea does not support",
                    p.name
                ),
                bools: None,
            });
        }
        (name, attr) => {
            return Err(p.error(format!("unsupported value attribute {name} = {attr}")));
        }
    };
    Ok(Lowered::Const(tensor))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoEnv;

    impl Env for NoEnv {
        fn const_len(&self, _: &str) -> Option<usize> {
            None
        }
        fn bool_const(&self, _: &str) -> Option<&[bool]> {
            None
        }
    }

    #[test]
    fn every_listed_op_type_has_a_conversion() {
        for &op_type in OP_TYPES.iter().filter(|&&t| t != "Constant") {
            for opset in [9, 13, 25] {
                let mut parts = Parts {
                    name: "n",
                    op_type,
                    opset,
                    attrs: Vec::new(),
                    tensors: Vec::new(),
                    args: vec![Arg::Named("x".into()), Arg::Named("y".into())],
                    n_outputs: 1,
                };
                // Missing required attributes are errors; an unknown op would be `Ok(None)`.
                let result = upgrade(&mut parts, &NoEnv);
                assert!(!matches!(result, Ok(None)), "{op_type}");
            }
        }
    }
}
