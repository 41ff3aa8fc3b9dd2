//! Conversions between [`Tensor`] and [`ndarray`] arrays (cargo feature `ndarray`).
//!
//! Both sides hold row-major data in a `Vec`, so conversions move the `Vec` instead of
//! copying it wherever the layout allows:
//!
//! - [`Tensor::from_ndarray`] (and `TryFrom<ArrayD<f32>>`, `TryFrom<ArrayD<i64>>`) takes the array's
//!   buffer as it is when the array is in standard (C) layout and starts at the beginning of
//!   its buffer; a transposed, strided or sliced array is copied in logical order.
//! - [`Tensor::into_ndarray`] (and `TryFrom<Tensor>`) always moves the buffer.
//! - [`Tensor::view_ndarray`] borrows the tensor's elements as an `ArrayViewD`, no copy.
//!
//! ```
//! use ndarray::{ArrayD, IxDyn};
//! # fn main() -> fovea::Result<()> {
//! let image = ArrayD::<f32>::zeros(IxDyn(&[1, 3, 32, 32]));
//! let model = fovea::Model::load("ir/tiny_cnn.fovea")?;
//! let compiled = fovea::Compiler::new().threads(1).compile(&model)?;
//! let outputs = compiled.run(&[("input", fovea::Tensor::from_ndarray(image)?)])?;
//! let logits: ArrayD<f32> = outputs[0].1.clone().into_ndarray()?;
//! assert_eq!(logits.ndim(), 2);
//! # Ok(())
//! # }
//! ```

use ndarray::{ArrayD, ArrayViewD, IxDyn};

use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor, TensorData};

/// The elements of `array` in row-major order, moving its buffer when the layout allows.
fn row_major_vec<T: Copy>(array: ArrayD<T>) -> Vec<T> {
    if !array.is_standard_layout() {
        return array.iter().copied().collect();
    }
    let len = array.len();
    let (mut data, offset) = array.into_raw_vec_and_offset();
    // A standard-layout array owns `len` consecutive elements starting at `offset`; the buffer
    // can hold more when the array was sliced after it was built.
    let start = offset.unwrap_or(0);
    if start != 0 || data.len() != len {
        data.truncate(start + len);
        data.drain(..start);
    }
    data
}

impl Tensor {
    /// An `f32` tensor from an ndarray array. Moves the array's buffer when the array is in
    /// standard (row-major) layout; copies otherwise. Fails only where [`Tensor::new`] would
    /// (an ndarray array always has as many elements as its shape says).
    pub fn from_ndarray(array: ArrayD<f32>) -> Result<Tensor> {
        Tensor::try_from(array)
    }

    /// The tensor as an `f32` ndarray array, moving its buffer (no copy). Fails for an `i64`
    /// tensor: use `ArrayD::<i64>::try_from` for those.
    pub fn into_ndarray(self) -> Result<ArrayD<f32>> {
        ArrayD::try_from(self)
    }

    /// A borrowed ndarray view of an `f32` tensor's elements (no copy). Fails for an `i64`
    /// tensor.
    pub fn view_ndarray(&self) -> Result<ArrayViewD<'_, f32>> {
        let data = self.as_f32().ok_or_else(|| wrong_dtype(self, DType::F32))?;
        ArrayViewD::from_shape(IxDyn(self.shape()), data)
            .map_err(|e| Error::internal(format!("tensor {:?} as ndarray view: {e}", self.shape())))
    }
}

impl TryFrom<ArrayD<f32>> for Tensor {
    type Error = Error;

    /// See [`Tensor::from_ndarray`].
    fn try_from(array: ArrayD<f32>) -> Result<Tensor> {
        let shape = array.shape().to_vec();
        Tensor::new(shape, TensorData::F32(row_major_vec(array)))
    }
}

impl TryFrom<ArrayD<i64>> for Tensor {
    type Error = Error;

    /// An `i64` tensor, moving the array's buffer when the layout allows (as
    /// [`Tensor::from_ndarray`] does for `f32`).
    fn try_from(array: ArrayD<i64>) -> Result<Tensor> {
        let shape = array.shape().to_vec();
        Tensor::new(shape, TensorData::I64(row_major_vec(array)))
    }
}

impl TryFrom<Tensor> for ArrayD<f32> {
    type Error = Error;

    /// Moves an `f32` tensor's buffer into an array; fails for an `i64` tensor.
    fn try_from(tensor: Tensor) -> Result<ArrayD<f32>> {
        if tensor.dtype() != DType::F32 {
            return Err(wrong_dtype(&tensor, DType::F32));
        }
        match tensor.into_parts() {
            (shape, TensorData::F32(data)) => from_shape_vec(shape, data),
            (shape, _) => Err(Error::internal(format!(
                "tensor {shape:?} changed dtype during conversion"
            ))),
        }
    }
}

impl TryFrom<Tensor> for ArrayD<i64> {
    type Error = Error;

    /// Moves an `i64` tensor's buffer into an array; fails for an `f32` tensor.
    fn try_from(tensor: Tensor) -> Result<ArrayD<i64>> {
        if tensor.dtype() != DType::I64 {
            return Err(wrong_dtype(&tensor, DType::I64));
        }
        match tensor.into_parts() {
            (shape, TensorData::I64(data)) => from_shape_vec(shape, data),
            (shape, _) => Err(Error::internal(format!(
                "tensor {shape:?} changed dtype during conversion"
            ))),
        }
    }
}

fn from_shape_vec<T>(shape: Vec<usize>, data: Vec<T>) -> Result<ArrayD<T>> {
    let described = format!("{shape:?}");
    ArrayD::from_shape_vec(IxDyn(&shape), data)
        .map_err(|e| Error::internal(format!("tensor {described} as ndarray array: {e}")))
}

fn wrong_dtype(tensor: &Tensor, wanted: DType) -> Error {
    Error::Usage(format!(
        "tensor {}{:?} cannot become an ndarray array of {wanted}",
        tensor.dtype(),
        tensor.shape()
    ))
}

#[cfg(test)]
mod tests {
    use ndarray::{Axis, s};

    use super::*;

    fn counting(shape: &[usize]) -> ArrayD<f32> {
        let n: usize = shape.iter().product();
        ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(|i| i as f32).collect())
            .expect("shape matches the element count")
    }

    fn tensor_of<T>(array: ArrayD<T>) -> Tensor
    where
        Tensor: TryFrom<ArrayD<T>, Error = Error>,
    {
        Tensor::try_from(array).expect("an ndarray array converts")
    }

    #[test]
    fn ndarray_standard_layout_moves_the_buffer() {
        let array = counting(&[2, 3, 4]);
        let pointer = array.as_ptr();
        let tensor = Tensor::from_ndarray(array).expect("f32 array");
        assert_eq!(tensor.shape(), &[2, 3, 4]);
        assert_eq!(tensor.as_f32().map(<[f32]>::as_ptr), Some(pointer));
        let back = tensor.into_ndarray().expect("f32 tensor");
        assert_eq!(back.as_ptr(), pointer);
        assert_eq!(back, counting(&[2, 3, 4]));
    }

    #[test]
    fn ndarray_transposed_array_is_copied_in_logical_order() {
        let array = counting(&[2, 3]).reversed_axes();
        let expected: Vec<f32> = array.iter().copied().collect();
        assert_eq!(expected, vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        let tensor = tensor_of(array);
        assert_eq!(tensor.shape(), &[3, 2]);
        assert_eq!(tensor.as_f32(), Some(expected.as_slice()));
    }

    #[test]
    fn ndarray_sliced_arrays_keep_only_their_elements() {
        // Rows 1.. of a 3x4 array: standard layout, starting one row into the buffer.
        let mut rows = counting(&[3, 4]);
        rows.slice_collapse(s![1.., ..]);
        let tensor = tensor_of(rows);
        assert_eq!(tensor.shape(), &[2, 4]);
        let expected: Vec<f32> = (4..12).map(|i| i as f32).collect();
        assert_eq!(tensor.as_f32(), Some(expected.as_slice()));

        // Every other column: not contiguous, copied.
        let mut columns = counting(&[2, 4]);
        columns.slice_collapse(s![.., ..;2]);
        let tensor = tensor_of(columns);
        assert_eq!(tensor.as_f32(), Some([0.0, 2.0, 4.0, 6.0].as_slice()));

        // The first row only: a prefix of the buffer.
        let mut first = counting(&[3, 2]);
        first.slice_collapse(s![..1, ..]);
        let tensor = tensor_of(first.remove_axis(Axis(0)));
        assert_eq!(tensor.as_f32(), Some([0.0, 1.0].as_slice()));
    }

    #[test]
    fn ndarray_scalars_empty_arrays_and_i64() {
        let scalar = tensor_of(ArrayD::from_elem(IxDyn(&[]), 2.5f32));
        assert_eq!(scalar.shape(), &[] as &[usize]);
        assert_eq!(scalar.as_f32(), Some([2.5].as_slice()));

        let empty = tensor_of(ArrayD::<f32>::zeros(IxDyn(&[0, 3])));
        assert_eq!(empty.shape(), &[0, 3]);
        assert!(empty.is_empty());

        let ints = ArrayD::from_shape_vec(IxDyn(&[3]), vec![4i64, -1, 7]).expect("shape");
        let tensor = tensor_of(ints.clone());
        assert_eq!(tensor.dtype(), DType::I64);
        assert_eq!(ArrayD::<i64>::try_from(tensor).expect("i64 tensor"), ints);
    }

    #[test]
    fn ndarray_views_borrow_and_wrong_dtypes_are_user_errors() {
        let tensor = tensor_of(counting(&[2, 2]));
        let view = tensor.view_ndarray().expect("f32 tensor");
        assert_eq!(view[[1, 0]], 2.0);
        assert_eq!(
            view.as_ptr(),
            tensor.as_f32().map_or(std::ptr::null(), <[f32]>::as_ptr)
        );

        let ints = Tensor::vector_i64(vec![1, 2]);
        let error = ints.clone().into_ndarray().expect_err("i64 is not f32");
        assert_eq!(error.kind(), crate::ErrorKind::User);
        assert!(error.to_string().contains("i64"), "{error}");
        assert!(ints.view_ndarray().is_err());
        assert!(ArrayD::<i64>::try_from(Tensor::scalar_f32(1.0)).is_err());
    }
}
