//! Load a model (ONNX or text IR), run it in the reference interpreter on a seeded input,
//! and print each output's shape and its largest entries.
//!
//! `cargo run --release --example interpret -- [MODEL]` (default: ir/tiny_cnn.fovea).

use std::error::Error;
use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use fovea::bench::{ShapeOverrides, seeded_inputs};

fn main() -> ExitCode {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/ir/tiny_cnn.fovea").to_string());
    match run(&path, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Interprets the model at `path` on a seeded input, writing the report to `out`.
pub fn run(path: &str, out: &mut dyn Write) -> Result<(), Box<dyn Error>> {
    let model = fovea::Model::load(path)?;
    for (name, ty) in model.inputs() {
        writeln!(out, "input  {name}: {ty}")?;
    }
    let inputs = seeded_inputs(&model, &ShapeOverrides::new(), Vec::new(), 42)?;
    let refs: Vec<(&str, fovea::Tensor)> = inputs
        .iter()
        .map(|(n, t)| (n.as_str(), t.clone()))
        .collect();
    let start = Instant::now();
    let outputs = model.interpret(&refs)?;
    writeln!(
        out,
        "ran {} nodes in {:.2} ms",
        model.graph().node_count(),
        start.elapsed().as_secs_f64() * 1e3
    )?;
    for (name, tensor) in &outputs {
        let values = tensor.to_f64_vec();
        let mut order: Vec<usize> = (0..values.len()).collect();
        order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
        let top: Vec<String> = order
            .iter()
            .take(5)
            .map(|&i| format!("{i}: {:.4}", values[i]))
            .collect();
        writeln!(
            out,
            "output {name}: {:?}, largest [{}]",
            tensor.shape(),
            top.join(", ")
        )?;
    }
    Ok(())
}
