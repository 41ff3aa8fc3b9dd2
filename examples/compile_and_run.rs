//! Load a model, compile it, run it on an image, and print the top-5 classes and timing.
//!
//! ```sh
//! cargo run --release --example compile_and_run                      # ir/resnet18.fovea, seeded input
//! cargo run --release --example compile_and_run -- model.onnx --input image.npy --threads 4
//! cargo run --release --example compile_and_run -- ir/dynamic_batch.fovea --shape 2x3x32x32
//! ```
//!
//! The model is an `.onnx` file or a text-IR file (`ir/*.fovea`). Its first input gets the
//! `.npy` file given with `--input`, or seeded standard-normal data (of the shape given with
//! `--shape` when the model's is not fixed). The first output is read as class scores of
//! the first image in the batch; it goes through a softmax unless it already is a
//! probability distribution.

use std::error::Error;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use fovea::bench::{self, ShapeOverrides};
use fovea::{Compiler, ErrorKind, Model, Tensor};

/// The example's command line.
#[derive(Debug, Parser)]
#[command(about = "Compile a model with Fovea, run it, print the top-5 classes and timing")]
pub struct Args {
    /// An .onnx file or a text-IR file.
    #[arg(default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/ir/resnet18.fovea"))]
    pub model: PathBuf,
    /// An .npy file for the model's first input (default: seeded random data).
    #[arg(long, value_name = "FILE.npy")]
    pub input: Option<PathBuf>,
    /// The first input's shape, as 1x3x224x224, when the model's has a symbolic dim.
    #[arg(long, value_name = "SHAPE")]
    pub shape: Option<String>,
    /// Threads for the kernels (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Timed runs after the first.
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// Seed of the generated input.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            let internal = error
                .downcast_ref::<fovea::Error>()
                .is_some_and(|e| e.kind() == ErrorKind::Internal);
            if internal {
                eprintln!("note: this is a bug in fovea; `--interpret` in `fovea run` avoids it");
            }
            ExitCode::FAILURE
        }
    }
}

/// Loads, compiles and runs the model as `args` says, writing the report to `out`.
pub fn run(args: &Args, out: &mut dyn Write) -> Result<(), Box<dyn Error>> {
    let start = Instant::now();
    let model = Model::load(&args.model)?;
    let load_ms = ms_since(start);
    let Some(&(input_name, input_type)) = model.inputs().first() else {
        return Err("the model has no inputs".into());
    };
    writeln!(
        out,
        "model      {} ({}): {input_name} {input_type}",
        args.model.display(),
        model.name()
    )?;
    writeln!(out, "load       {load_ms:.1} ms")?;

    let mut given = Vec::new();
    if let Some(file) = &args.input {
        given.push((input_name.to_string(), fovea::npy::read(file)?));
    }
    let mut shapes = ShapeOverrides::new();
    if let Some(shape) = &args.shape {
        shapes.insert(input_name.to_string(), bench::parse_shape(shape)?);
    } else if given.is_empty() && input_type.known_shape().is_none() {
        return Err(format!(
            "input {input_name} has type {input_type}: give its shape with --shape, as 1x3x224x224"
        )
        .into());
    }
    let inputs = bench::seeded_inputs(&model, &shapes, given, args.seed)?;
    let inputs: Vec<(&str, Tensor)> = inputs
        .iter()
        .map(|(n, t)| (n.as_str(), t.clone()))
        .collect();

    let mut compiler = Compiler::new();
    if let Some(threads) = args.threads {
        compiler = compiler.threads(threads);
    }
    let start = Instant::now();
    let compiled = compiler.compile(&model)?;
    let compile_ms = ms_since(start);
    if compiled.stats().plans == 0 {
        writeln!(
            out,
            "compile    {compile_ms:.1} ms (the input shape is not fixed: the first run compiles)"
        )?;
    } else {
        writeln!(out, "compile    {compile_ms:.1} ms")?;
    }
    let start = Instant::now();
    let outputs = compiled.run(&inputs)?;
    let first_ms = ms_since(start);
    writeln!(out, "first run  {first_ms:.2} ms")?;
    let stats = compiled.stats();
    writeln!(
        out,
        "kernels    {} launches, {} compiled, {} from the kernel cache, {:.1} ms specialising, lowering and compiling",
        stats.kernels, stats.kernels_compiled, stats.cache_hits, stats.compile_ms
    )?;
    if args.runs > 0 {
        let latency = bench::measure(0, args.runs, || compiled.run(&inputs))?;
        writeln!(
            out,
            "run        median {:.2} ms, min {:.2} ms over {} runs ({} thread(s))",
            latency.median_ms,
            latency.min_ms,
            latency.iters,
            compiled.threads()
        )?;
    }

    let Some((output_name, output)) = outputs.first() else {
        return Err("the model has no outputs".into());
    };
    let scores = first_item_scores(output);
    let (scores, kind) = if is_distribution(&scores) {
        (scores, "probabilities")
    } else {
        (softmax(&scores), "softmax of the scores")
    };
    writeln!(
        out,
        "top-5 of {output_name} {:?}, first image ({kind}):",
        output.shape()
    )?;
    for (rank, (class, p)) in top_k(&scores, 5).into_iter().enumerate() {
        writeln!(out, "  {}. class {class:>4}  {p:.4}", rank + 1)?;
    }
    Ok(())
}

fn ms_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}

/// The scores of the first item of the batch: the output's elements divided evenly among
/// the batch (its first dim), or all of them for a rank-0 or rank-1 output.
fn first_item_scores(output: &Tensor) -> Vec<f64> {
    let values = output.to_f64_vec();
    let batch = match output.shape() {
        [batch, _, ..] if *batch > 0 => *batch,
        _ => 1,
    };
    let per_item = values.len() / batch;
    values.into_iter().take(per_item).collect()
}

/// Whether the scores are already probabilities: none negative, summing to 1.
fn is_distribution(scores: &[f64]) -> bool {
    scores.iter().all(|&p| (0.0..=1.0).contains(&p))
        && (scores.iter().sum::<f64>() - 1.0).abs() < 1e-3
}

fn softmax(scores: &[f64]) -> Vec<f64> {
    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = scores.iter().map(|&s| (s - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// The `k` highest scores with their indices, highest first.
fn top_k(scores: &[f64], k: usize) -> Vec<(usize, f64)> {
    let mut order: Vec<(usize, f64)> = scores.iter().copied().enumerate().collect();
    order.sort_by(|a, b| b.1.total_cmp(&a.1));
    order.truncate(k);
    order
}
