//! `.npy` files in and out, for the command line and tests.
//!
//! Reads `f32`, `f64` (narrowed to `f32`), `i64` and `i32` (widened to `i64`) arrays in C or
//! Fortran order; writes `f32` and `i64` arrays in C order.

use std::path::Path;

use npyz::WriterBuilder;

use crate::error::{Error, Result};
use crate::tensor::{Tensor, TensorData};

fn decode_error(message: impl std::fmt::Display) -> Error {
    Error::Usage(format!("not a readable .npy array: {message}"))
}

/// Parses the bytes of an `.npy` file into a tensor.
pub fn from_bytes(bytes: &[u8]) -> Result<Tensor> {
    let npy = npyz::NpyFile::new(bytes).map_err(decode_error)?;
    let shape: Vec<usize> = npy
        .shape()
        .iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| decode_error(format!("dimension {d} is too large")))
        })
        .collect::<Result<_>>()?;
    let fortran = npy.order() == npyz::Order::Fortran;
    let type_str = npy.dtype().descr();
    let data = match type_str
        .trim_matches('\'')
        .trim_start_matches(['<', '|', '='])
    {
        "f4" => TensorData::F32(npy.into_vec::<f32>().map_err(decode_error)?),
        "f8" => TensorData::F32(
            npy.into_vec::<f64>()
                .map_err(decode_error)?
                .into_iter()
                .map(|x| x as f32)
                .collect(),
        ),
        "i8" => TensorData::I64(npy.into_vec::<i64>().map_err(decode_error)?),
        "i4" => TensorData::I64(
            npy.into_vec::<i32>()
                .map_err(decode_error)?
                .into_iter()
                .map(i64::from)
                .collect(),
        ),
        _ => {
            return Err(decode_error(format!(
                "dtype {type_str} is not supported (use float32, float64, int64 or int32)"
            )));
        }
    };
    let tensor = Tensor::new(shape.clone(), data)?;
    if fortran && shape.len() > 1 {
        Ok(fortran_to_c(tensor))
    } else {
        Ok(tensor)
    }
}

/// Reorders a tensor whose data is in Fortran (column-major) order into C order.
fn fortran_to_c(tensor: Tensor) -> Tensor {
    let (shape, data) = tensor.into_parts();
    let n: usize = shape.iter().product();
    // The element at C index `i` lives at the Fortran offset computed from its coordinates.
    let fortran_offset = |mut i: usize| {
        let mut offset = 0;
        let mut stride = 1;
        let mut coords = vec![0; shape.len()];
        for (axis, &d) in shape.iter().enumerate().rev() {
            coords[axis] = i % d;
            i /= d;
        }
        for (axis, &d) in shape.iter().enumerate() {
            offset += coords[axis] * stride;
            stride *= d;
        }
        offset
    };
    let data = match data {
        TensorData::F32(v) => TensorData::F32((0..n).map(|i| v[fortran_offset(i)]).collect()),
        TensorData::I64(v) => TensorData::I64((0..n).map(|i| v[fortran_offset(i)]).collect()),
    };
    Tensor::new(shape, data).expect("reordering keeps the element count")
}

/// Reads an `.npy` file. Errors name the file.
pub fn read(path: impl AsRef<Path>) -> Result<Tensor> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    from_bytes(&bytes).map_err(|e| e.in_file(path))
}

/// Serializes a tensor as the bytes of an `.npy` file.
pub fn to_bytes(tensor: &Tensor) -> Result<Vec<u8>> {
    let shape: Vec<u64> = tensor.shape().iter().map(|&d| d as u64).collect();
    let mut bytes = Vec::new();
    let result = match tensor.data() {
        TensorData::F32(v) => write_all(&mut bytes, &shape, v),
        TensorData::I64(v) => write_all(&mut bytes, &shape, v),
    };
    result.map_err(|e| Error::internal(format!("writing .npy data: {e}")))?;
    Ok(bytes)
}

fn write_all<T: npyz::AutoSerialize + Copy>(
    out: &mut Vec<u8>,
    shape: &[u64],
    data: &[T],
) -> std::io::Result<()> {
    let mut writer = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(std::io::Cursor::new(out))
        .begin_nd()?;
    writer.extend(data.iter().copied())?;
    writer.finish()
}

/// Writes a tensor to an `.npy` file. Errors name the file.
pub fn write(path: impl AsRef<Path>, tensor: &Tensor) -> Result<()> {
    let path = path.as_ref();
    let bytes = to_bytes(tensor)?;
    std::fs::write(path, bytes).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_f32_and_i64() {
        for t in [
            Tensor::from_f32(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, f32::NAN]).unwrap(),
            Tensor::from_i64(vec![3], vec![-1, 0, i64::MAX]).unwrap(),
            Tensor::scalar_f32(0.5),
            Tensor::from_f32(vec![0, 4], vec![]).unwrap(),
        ] {
            let back = from_bytes(&to_bytes(&t).unwrap()).unwrap();
            assert_eq!(back.shape(), t.shape());
            assert_eq!(
                back.to_f64_vec()
                    .iter()
                    .map(|x| x.to_bits())
                    .collect::<Vec<_>>(),
                t.to_f64_vec()
                    .iter()
                    .map(|x| x.to_bits())
                    .collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(from_bytes(b"not an npy file").is_err());
        assert!(from_bytes(b"").is_err());
        let mut truncated = to_bytes(&Tensor::from_f32(vec![4], vec![1.0; 4]).unwrap()).unwrap();
        truncated.truncate(truncated.len() - 3);
        assert!(from_bytes(&truncated).is_err());
    }
}
