//! Fuzz target `onnx_load`: any bytes as an ONNX model. Loading must fail with a user error
//! or give a verified model; a model whose every value has a concrete, small shape is then
//! compiled with the JIT (one thread, no shared kernel cache, so each model's code is freed)
//! and run once on zero inputs, next to the interpreter. Neither may panic or report an
//! internal error.

#![no_main]

use fovea::{Compiler, ErrorKind, Model, Result, Tensor};
use libfuzzer_sys::fuzz_target;

/// Models with a value of more elements than this are only loaded, not run.
const MAX_ELEMENTS: usize = 1 << 16;

fn user_error_only<T>(result: Result<T>, what: &str) -> Option<T> {
    match result {
        Ok(v) => Some(v),
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::User, "{what}: internal error: {e}");
            None
        }
    }
}

/// Zero inputs of the declared shapes, if every value of the model is small and concrete.
fn zero_inputs(model: &Model) -> Option<Vec<(String, Tensor)>> {
    for (_, value) in model.graph().values() {
        let shape = value.ty.known_shape()?;
        let elements = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))?;
        if elements > MAX_ELEMENTS {
            return None;
        }
    }
    model
        .inputs()
        .into_iter()
        .map(|(name, ty)| {
            let tensor = Tensor::zeros(ty.dtype, ty.known_shape()?).ok()?;
            Some((name.to_string(), tensor))
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some(model) = user_error_only(Model::from_onnx_bytes(data), "load") else {
        return;
    };
    let Some(inputs) = zero_inputs(&model) else {
        return;
    };
    let named: Vec<(&str, Tensor)> = inputs
        .iter()
        .map(|(n, t)| (n.as_str(), t.clone()))
        .collect();
    user_error_only(model.interpret(&named), "interpret");
    let compiler = Compiler::new().threads(1).kernel_cache(false);
    if let Some(compiled) = user_error_only(compiler.compile(&model), "compile") {
        user_error_only(compiled.run(&named), "run");
    }
});
