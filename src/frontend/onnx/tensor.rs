//! Decoding of ONNX `TensorProto`s (initializers, `Constant` values, test data) and of the
//! tensor types in `ValueInfoProto`s (graph inputs).
//!
//! Only FLOAT and INT64 map to Fovea dtypes directly; INT32 is widened to `i64` and DOUBLE
//! narrowed to `f32`. BOOL tensors can be read as flags (for Dropout's `training_mode`).
//! Every other dtype, external data and segmented tensors are refused with a message that
//! names the tensor and its dtype. Every length is checked before anything is allocated, so
//! that no input, however malformed, makes the decoder panic or allocate more than the
//! bytes it was given.

use onnx_protobuf::{TensorProto, ValueInfoProto, tensor_shape_proto, type_proto};

use crate::graph::types::{Dim, TensorType};
use crate::tensor::{DType, Tensor};

/// The ONNX dtype codes Fovea reads.
pub(super) mod code {
    /// 32-bit float.
    pub const FLOAT: i32 = 1;
    /// 32-bit signed integer (read as `i64`).
    pub const INT32: i32 = 6;
    /// 64-bit signed integer.
    pub const INT64: i32 = 7;
    /// Boolean (read only as flags).
    pub const BOOL: i32 = 9;
    /// 64-bit float (read as `f32`).
    pub const DOUBLE: i32 = 11;
}

/// Why a tensor could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum TensorError {
    /// The proto breaks the ONNX format (negative dims, data of the wrong length).
    Malformed(String),
    /// The proto is valid but uses a feature Fovea does not support (a dtype, external data).
    Unsupported(String),
}

/// The ONNX name of a dtype code, for messages.
pub(super) fn dtype_name(code: i32) -> String {
    let name = match code {
        0 => "UNDEFINED",
        1 => "FLOAT",
        2 => "UINT8",
        3 => "INT8",
        4 => "UINT16",
        5 => "INT16",
        6 => "INT32",
        7 => "INT64",
        8 => "STRING",
        9 => "BOOL",
        10 => "FLOAT16",
        11 => "DOUBLE",
        12 => "UINT32",
        13 => "UINT64",
        14 => "COMPLEX64",
        15 => "COMPLEX128",
        16 => "BFLOAT16",
        17 => "FLOAT8E4M3FN",
        18 => "FLOAT8E4M3FNUZ",
        19 => "FLOAT8E5M2",
        20 => "FLOAT8E5M2FNUZ",
        21 => "UINT4",
        22 => "INT4",
        23 => "FLOAT4E2M1",
        24 => "FLOAT8E8M0",
        25 => "UINT2",
        26 => "INT2",
        other => return format!("dtype code {other}"),
    };
    name.to_string()
}

/// How a tensor is named in messages: `tensor NAME`, or `tensor (unnamed)`.
fn label(t: &TensorProto) -> String {
    if t.name.is_empty() {
        "tensor (unnamed)".to_string()
    } else {
        format!("tensor {}", t.name)
    }
}

/// The shape of a tensor proto and its element count, checked for negative dims and overflow.
fn shape_of(t: &TensorProto) -> Result<(Vec<usize>, usize), TensorError> {
    let mut shape = Vec::with_capacity(t.dims.len());
    let mut count = 1usize;
    for &d in &t.dims {
        let d = usize::try_from(d).map_err(|_| {
            TensorError::Malformed(format!("{} has a negative dimension {d}", label(t)))
        })?;
        count = count.checked_mul(d).ok_or_else(|| {
            TensorError::Malformed(format!(
                "{} has dims {:?}, more elements than fit in memory",
                label(t),
                t.dims
            ))
        })?;
        shape.push(d);
    }
    Ok((shape, count))
}

/// Refuses data stored outside the proto and segmented tensors.
fn check_location(t: &TensorProto) -> Result<(), TensorError> {
    if t.data_location.value() != 0 || !t.external_data.is_empty() {
        return Err(TensorError::Unsupported(format!(
            "{} stores its data in an external file, which fovea does not support \
             (save the model with its weights inside)",
            label(t)
        )));
    }
    if t.segment.is_some() {
        return Err(TensorError::Unsupported(format!(
            "{} is segmented, which fovea does not support",
            label(t)
        )));
    }
    Ok(())
}

/// Reads `count` little-endian elements of `N` bytes each from `raw`, or from `typed` when
/// `raw` is empty, checking both lengths.
fn elements<T, U: Copy, const N: usize>(
    t: &TensorProto,
    count: usize,
    typed: &[U],
    from_bytes: impl Fn([u8; N]) -> T,
    from_typed: impl Fn(U) -> T,
) -> Result<Vec<T>, TensorError> {
    if !t.raw_data.is_empty() {
        let expected = count.saturating_mul(N);
        if t.raw_data.len() != expected {
            return Err(TensorError::Malformed(format!(
                "{} of shape {:?} needs {count} elements ({expected} bytes of raw data), got {} bytes",
                label(t),
                t.dims,
                t.raw_data.len()
            )));
        }
        return Ok(t
            .raw_data
            .chunks_exact(N)
            .map(|chunk| {
                let mut bytes = [0u8; N];
                bytes.copy_from_slice(chunk);
                from_bytes(bytes)
            })
            .collect());
    }
    if typed.len() != count {
        return Err(TensorError::Malformed(format!(
            "{} of shape {:?} needs {count} elements, got {}",
            label(t),
            t.dims,
            typed.len()
        )));
    }
    Ok(typed.iter().map(|&x| from_typed(x)).collect())
}

/// Decodes a tensor proto into a [`Tensor`].
pub(super) fn decode(t: &TensorProto) -> Result<Tensor, TensorError> {
    check_location(t)?;
    let (shape, count) = shape_of(t)?;
    let tensor = match t.data_type {
        code::FLOAT => Tensor::from_f32(
            shape,
            elements(t, count, &t.float_data, f32::from_le_bytes, |x| x)?,
        ),
        code::INT64 => Tensor::from_i64(
            shape,
            elements(t, count, &t.int64_data, i64::from_le_bytes, |x| x)?,
        ),
        code::INT32 => Tensor::from_i64(
            shape,
            elements(
                t,
                count,
                &t.int32_data,
                |b| i64::from(i32::from_le_bytes(b)),
                i64::from,
            )?,
        ),
        // Narrowing is the point: Fovea computes in f32.
        code::DOUBLE => Tensor::from_f32(
            shape,
            elements(
                t,
                count,
                &t.double_data,
                |b| f64::from_le_bytes(b) as f32,
                |x| x as f32,
            )?,
        ),
        other => {
            return Err(TensorError::Unsupported(format!(
                "{} has dtype {}, which fovea does not support (FLOAT and INT64; INT32 and \
                 DOUBLE are converted)",
                label(t),
                dtype_name(other)
            )));
        }
    };
    // The element count was checked above, so this cannot fail; report it as malformed
    // rather than trusting that.
    tensor.map_err(|e| TensorError::Malformed(format!("{}: {e}", label(t))))
}

/// Decodes a BOOL tensor proto into its flags.
pub(super) fn decode_bools(t: &TensorProto) -> Result<Vec<bool>, TensorError> {
    check_location(t)?;
    if t.data_type != code::BOOL {
        return Err(TensorError::Unsupported(format!(
            "{} has dtype {}, expected BOOL",
            label(t),
            dtype_name(t.data_type)
        )));
    }
    let (_, count) = shape_of(t)?;
    elements(t, count, &t.int32_data, |[b]: [u8; 1]| b != 0, |x| x != 0)
}

/// The tensor type declared by a `ValueInfoProto` (a graph input).
pub(super) fn value_type(v: &ValueInfoProto) -> Result<TensorType, TensorError> {
    let tensor = match v.type_.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => t,
        Some(_) => {
            return Err(TensorError::Unsupported(format!(
                "input {} is not a tensor (sequences, maps and optionals are not supported)",
                v.name
            )));
        }
        None => {
            return Err(TensorError::Malformed(format!(
                "input {} has no type",
                v.name
            )));
        }
    };
    let dtype = match tensor.elem_type {
        code::FLOAT => DType::F32,
        code::INT64 => DType::I64,
        other => {
            return Err(TensorError::Unsupported(format!(
                "input {} has dtype {}, which fovea does not support (FLOAT and INT64 only)",
                v.name,
                dtype_name(other)
            )));
        }
    };
    let shape = tensor.shape.as_ref().ok_or_else(|| {
        TensorError::Unsupported(format!(
            "input {} has no shape; fovea needs at least the rank of every input",
            v.name
        ))
    })?;
    let mut dims = Vec::with_capacity(shape.dim.len());
    for d in &shape.dim {
        dims.push(match &d.value {
            Some(tensor_shape_proto::dimension::Value::DimValue(n)) => {
                Dim::Known(usize::try_from(*n).map_err(|_| {
                    TensorError::Malformed(format!("input {} has a negative dimension {n}", v.name))
                })?)
            }
            Some(tensor_shape_proto::dimension::Value::DimParam(s)) if !s.is_empty() => {
                Dim::Sym(s.clone())
            }
            _ => Dim::Unknown,
        });
    }
    Ok(TensorType::new(dtype, dims))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proto(data_type: i32, dims: &[i64]) -> TensorProto {
        let mut t = TensorProto::new();
        t.name = "w".to_string();
        t.data_type = data_type;
        t.dims = dims.to_vec();
        t
    }

    #[test]
    fn float_from_raw_and_typed_data() {
        let mut t = proto(code::FLOAT, &[2]);
        t.raw_data = [1.5f32.to_le_bytes(), (-2.0f32).to_le_bytes()].concat();
        assert_eq!(
            decode(&t).unwrap(),
            Tensor::from_f32(vec![2], vec![1.5, -2.0]).unwrap()
        );
        let mut t = proto(code::FLOAT, &[2]);
        t.float_data = vec![3.0, 4.0];
        assert_eq!(decode(&t).unwrap().as_f32(), Some(&[3.0, 4.0][..]));
    }

    #[test]
    fn int32_and_double_are_converted() {
        let mut t = proto(code::INT32, &[2]);
        t.raw_data = [7i32.to_le_bytes(), (-1i32).to_le_bytes()].concat();
        assert_eq!(decode(&t).unwrap().as_i64(), Some(&[7, -1][..]));
        let mut t = proto(code::DOUBLE, &[]);
        t.double_data = vec![0.25];
        let d = decode(&t).unwrap();
        assert_eq!((d.shape(), d.as_f32()), (&[][..], Some(&[0.25f32][..])));
        let mut t = proto(code::INT64, &[1]);
        t.int64_data = vec![i64::MIN];
        assert_eq!(decode(&t).unwrap().as_i64(), Some(&[i64::MIN][..]));
    }

    #[test]
    fn bad_lengths_and_dims_are_malformed() {
        let mut t = proto(code::FLOAT, &[3]);
        t.raw_data = vec![0; 8];
        assert!(matches!(decode(&t), Err(TensorError::Malformed(m)) if m.contains("tensor w")));
        let mut t = proto(code::INT64, &[2]);
        t.int64_data = vec![1];
        assert!(matches!(decode(&t), Err(TensorError::Malformed(_))));
        let t = proto(code::FLOAT, &[-1]);
        assert!(matches!(decode(&t), Err(TensorError::Malformed(m)) if m.contains("negative")));
        let t = proto(code::FLOAT, &[i64::MAX, i64::MAX, 4]);
        assert!(matches!(decode(&t), Err(TensorError::Malformed(_))));
        // A huge claimed shape with no data fails without allocating.
        let t = proto(code::FLOAT, &[1 << 40]);
        assert!(matches!(decode(&t), Err(TensorError::Malformed(_))));
    }

    #[test]
    fn unsupported_dtype_and_external_data_are_named() {
        let t = proto(10, &[1]);
        let err = decode(&t).unwrap_err();
        assert!(
            matches!(&err, TensorError::Unsupported(m) if m.contains("tensor w has dtype FLOAT16")),
            "{err:?}"
        );
        let mut t = proto(code::FLOAT, &[1]);
        t.data_location = protobuf::EnumOrUnknown::from_i32(1);
        assert!(matches!(decode(&t), Err(TensorError::Unsupported(m)) if m.contains("external")));
    }

    #[test]
    fn bools_from_raw_data() {
        let mut t = proto(code::BOOL, &[3]);
        t.raw_data = vec![0, 1, 0];
        assert_eq!(decode_bools(&t).unwrap(), vec![false, true, false]);
    }
}
