//! Serving one compiled model to many host threads: each caller pushes a stream of generated
//! images through a shared `Arc<CompiledModel>` with `run_into`, and the example prints the
//! throughput (inferences/s), the latency percentiles, and the process's CPU time per
//! inference (user + system, all threads, spinning included) for each number of callers and
//! each concurrency policy. On a machine shared with other work, CPU time per inference is
//! the steadier figure: with the cores saturated, throughput is cores / CPU time.
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
        "{:<18} {:>7} {:>13} {:>9} {:>9} {:>9} {:>12}",
        "policy", "callers", "inferences/s", "p50 ms", "p90 ms", "p99 ms", "cpu ms/inf"
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
            let cpu_start = cpu_time();
            let mut latencies = Vec::new();
            for handle in handles {
                let caller = handle
                    .join()
                    .map_err(|_| fovea::Error::internal("a caller thread panicked"))??;
                latencies.extend(caller);
            }
            let wall = start.elapsed().as_secs_f64();
            let cpu = cpu_time() - cpu_start;
            latencies.sort();
            let ms = |q: f64| {
                let i = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len());
                latencies[i - 1].as_secs_f64() * 1e3
            };
            println!(
                "{:<18} {:>7} {:>13.1} {:>9.2} {:>9.2} {:>9.2} {:>12.2}",
                format!("{policy:?}"),
                callers,
                latencies.len() as f64 / wall,
                ms(0.50),
                ms(0.90),
                ms(0.99),
                cpu * 1e3 / latencies.len() as f64
            );
        }
    }
    Ok(())
}

/// CPU time used by this process so far (all threads, user and system), in seconds.
fn cpu_time() -> f64 {
    // SAFETY: `getrusage` only writes the zeroed struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return 0.0;
        }
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}
