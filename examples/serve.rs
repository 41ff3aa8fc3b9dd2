//! Serving one compiled model to many host threads: each caller pushes a stream of generated
//! images through a shared `Arc<CompiledModel>` with `run_into`, and the example prints the
//! throughput (inferences/s) and the latency percentiles for each number of callers and each
//! concurrency policy.
//!
//! ```sh
//! cargo run --release --example serve -- ir/resnet18.fovea --callers 1,2,4,8 --runs 20
//! cargo run --release --example serve -- --policy shared-pool --threads 2
//! ```

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use clap::Parser;
use fovea::bench::{ShapeOverrides, seeded_inputs};
use fovea::runtime::Concurrency;
use fovea::{Compiler, Model, Tensor};

/// Throughput and latency of one compiled model under concurrent callers.
#[derive(Parser)]
struct Args {
    /// The model (`.onnx` or text IR).
    #[arg(default_value = "ir/tiny_cnn.fovea")]
    model: String,
    /// Numbers of concurrent callers to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2, 4, 8])]
    callers: Vec<usize>,
    /// Timed runs per caller.
    #[arg(long, default_value_t = 50)]
    runs: usize,
    /// Threads of the compiled model (`Compiler::threads`; default: every core).
    #[arg(long)]
    threads: Option<usize>,
    /// The concurrency policy: serial-when-busy, shared-pool, or both.
    #[arg(long, default_value = "both")]
    policy: String,
    /// Distinct generated images each caller cycles through.
    #[arg(long, default_value_t = 4)]
    images: usize,
}

fn main() -> fovea::Result<()> {
    let args = Args::parse();
    let policies = match args.policy.as_str() {
        "serial-when-busy" => vec![Concurrency::SerialWhenBusy],
        "shared-pool" => vec![Concurrency::SharedPool],
        "both" => vec![Concurrency::SerialWhenBusy, Concurrency::SharedPool],
        other => {
            return Err(fovea::Error::Usage(format!(
                "unknown policy {other}: give serial-when-busy, shared-pool or both"
            )));
        }
    };
    let model = Model::load(&args.model)?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let compiler = Compiler::new().threads(threads);
    let runs = args.runs.max(1);
    // The images: seeded, generated before timing starts.
    let images: Vec<Vec<(String, Tensor)>> = (0..args.images.max(1) as u64)
        .map(|seed| seeded_inputs(&model, &ShapeOverrides::new(), Vec::new(), seed))
        .collect::<fovea::Result<_>>()?;
    let images = Arc::new(images);
    println!(
        "{}: {} thread(s), {} timed runs per caller",
        args.model, threads, runs
    );
    println!(
        "{:<18} {:>7} {:>13} {:>9} {:>9} {:>9}",
        "policy", "callers", "inferences/s", "p50 ms", "p90 ms", "p99 ms"
    );
    for &policy in &policies {
        let compiled = Arc::new(compiler.clone().concurrency(policy).compile(&model)?);
        for &callers in &args.callers {
            let callers = callers.max(1);
            let barrier = Arc::new(Barrier::new(callers + 1));
            let handles: Vec<_> = (0..callers)
                .map(|caller| {
                    let (compiled, images, barrier) =
                        (compiled.clone(), images.clone(), barrier.clone());
                    std::thread::spawn(move || -> fovea::Result<Vec<Duration>> {
                        let named = |i: usize| -> Vec<(&str, &Tensor)> {
                            images[i % images.len()]
                                .iter()
                                .map(|(n, t)| (n.as_str(), t))
                                .collect()
                        };
                        let mut outputs = compiled.output_tensors(&named(0))?;
                        // Warm up: compiles the plan once and fills the arena pool.
                        compiled.run_into(&named(caller), &mut outputs)?;
                        barrier.wait();
                        let mut latencies = Vec::with_capacity(runs);
                        for run in 0..runs {
                            let inputs = named(caller + run);
                            let start = Instant::now();
                            compiled.run_into(&inputs, &mut outputs)?;
                            latencies.push(start.elapsed());
                        }
                        Ok(latencies)
                    })
                })
                .collect();
            barrier.wait();
            let start = Instant::now();
            let mut latencies = Vec::new();
            for handle in handles {
                let caller = handle
                    .join()
                    .map_err(|_| fovea::Error::internal("a caller thread panicked"))??;
                latencies.extend(caller);
            }
            let wall = start.elapsed().as_secs_f64();
            latencies.sort();
            let ms = |q: f64| {
                let i = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len());
                latencies[i - 1].as_secs_f64() * 1e3
            };
            println!(
                "{:<18} {:>7} {:>13.1} {:>9.2} {:>9.2} {:>9.2}",
                format!("{policy:?}"),
                callers,
                latencies.len() as f64 / wall,
                ms(0.50),
                ms(0.90),
                ms(0.99)
            );
        }
    }
    Ok(())
}
