//! One compiled model, run at several batch sizes: a plan is built for each new batch size,
//! its kernels come from the cache when an earlier plan compiled them, and a batch size
//! seen before reuses its plan.
//!
//! ```sh
//! cargo run --release --example dynamic_batch                         # ir/dynamic_batch.fovea at 1,4,1,8,4
//! cargo run --release --example dynamic_batch -- --batches 2,16,2 --threads 2
//! ```
//!
//! Every run's outputs are checked against the reference interpreter (`Model::interpret`)
//! and the largest difference is printed; the example fails if it is above `--tolerance`.

use std::error::Error;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use fovea::bench::{self, ShapeOverrides};
use fovea::graph::Dim;
use fovea::{Compiler, Model, Tensor};

/// The example's command line.
#[derive(Debug, Parser)]
#[command(about = "Run one compiled model at several batch sizes, checked against the interpreter")]
pub struct Args {
    /// A model whose first input has a symbolic first dim (the batch).
    #[arg(default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/ir/dynamic_batch.fovea"))]
    pub model: PathBuf,
    /// Batch sizes to run, in order.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 4, 1, 8, 4])]
    pub batches: Vec<usize>,
    /// Threads for the kernels.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Largest difference from the interpreter allowed, relative to the output's largest
    /// magnitude (at least 1).
    #[arg(long, default_value_t = 1e-4)]
    pub tolerance: f64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the model at each batch size of `args`, writing one line per run to `out`.
pub fn run(args: &Args, out: &mut dyn Write) -> Result<(), Box<dyn Error>> {
    let model = Model::load(&args.model)?;
    let Some(&(input_name, input_type)) = model.inputs().first() else {
        return Err("the model has no inputs".into());
    };
    if !matches!(input_type.shape.first(), Some(Dim::Sym(_))) {
        return Err(format!(
            "input {input_name} has type {input_type}: its first dim is not symbolic, so the batch cannot vary"
        )
        .into());
    }
    let compiled = Compiler::new().threads(args.threads).compile(&model)?;
    writeln!(
        out,
        "model {} ({input_name}: {input_type}), {} thread(s)",
        args.model.display(),
        compiled.threads()
    )?;
    writeln!(
        out,
        "batch  plan      kernels compiled  cache hits  run ms    max error"
    )?;
    let mut worst = 0.0f64;
    for (i, &batch) in args.batches.iter().enumerate() {
        let mut shape: Vec<usize> = Vec::with_capacity(input_type.rank());
        for dim in &input_type.shape {
            match dim {
                Dim::Known(n) => shape.push(*n),
                _ if shape.is_empty() => shape.push(batch),
                _ => {
                    return Err(format!(
                        "input {input_name} ({input_type}) has a symbolic dim besides the batch"
                    )
                    .into());
                }
            }
        }
        let shapes = ShapeOverrides::from([(input_name.to_string(), shape)]);
        let inputs = bench::seeded_inputs(&model, &shapes, Vec::new(), i as u64)?;
        let inputs: Vec<(&str, Tensor)> = inputs
            .iter()
            .map(|(n, t)| (n.as_str(), t.clone()))
            .collect();

        let before = compiled.stats();
        let start = Instant::now();
        let outputs = compiled.run(&inputs)?;
        let run_ms = start.elapsed().as_secs_f64() * 1e3;
        let after = compiled.stats();

        let reference = model.interpret(&inputs)?;
        let error = max_error(&outputs, &reference)?;
        worst = worst.max(error);
        let plan = if after.plans > before.plans {
            "built"
        } else {
            "reused"
        };
        writeln!(
            out,
            "{batch:>5}  {plan:<8}  {:>16}  {:>10}  {run_ms:>6.2}  {error:>11.2e}",
            after
                .kernels_compiled
                .saturating_sub(before.kernels_compiled),
            after.cache_hits.saturating_sub(before.cache_hits),
        )?;
    }
    let stats = compiled.stats();
    writeln!(
        out,
        "{} runs, {} plans, {} kernels compiled, largest error {worst:.2e}",
        args.batches.len(),
        stats.plans,
        stats.kernels_compiled
    )?;
    if worst > args.tolerance {
        return Err(format!(
            "compiled outputs differ from the interpreter's by {worst:.2e} (tolerance {:.0e})",
            args.tolerance
        )
        .into());
    }
    Ok(())
}

/// The largest difference between two runs' outputs, relative to each output's largest
/// magnitude when that is above 1.
fn max_error(
    outputs: &[(String, Tensor)],
    reference: &[(String, Tensor)],
) -> Result<f64, Box<dyn Error>> {
    let mut worst = 0.0f64;
    for ((name, got), (_, want)) in outputs.iter().zip(reference) {
        if got.shape() != want.shape() {
            return Err(format!(
                "output {name}: shape {:?}, the interpreter's {:?}",
                got.shape(),
                want.shape()
            )
            .into());
        }
        let (got, want) = (got.to_f64_vec(), want.to_f64_vec());
        let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        for (a, b) in got.iter().zip(&want) {
            worst = worst.max((a - b).abs() / scale);
        }
    }
    Ok(worst)
}
