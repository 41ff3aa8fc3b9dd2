//! The `fovea` command line: a thin layer over the library.
//!
//! Exit status: 0 on success, 1 for a user error (bad model, bad input, bad flag value),
//! 2 for a malformed command line, 3 for an internal error (a bug in Fovea).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};

use fovea::bench::{self, Latency, ShapeOverrides};
use fovea::passes::Pipeline;
use fovea::runtime::{CompileStats, OptLevel};
use fovea::{Compiler, Error, ErrorKind, Model, Result, Tensor, Winograd};

/// The model `run` and `bench` use when none is given: ResNet-18 from `ir/`, built in.
const DEFAULT_MODEL_NAME: &str = "ir/resnet18.fovea (built in)";
const DEFAULT_MODEL_TEXT: &str = include_str!("../ir/resnet18.fovea");

#[derive(Parser)]
#[command(
    name = "fovea",
    version,
    about = "A JIT compiler for convolutional perception models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a model once and write (or summarise) its outputs.
    Run {
        /// An .onnx file or a text-IR file (default: the built-in ir/resnet18.fovea).
        model: Option<PathBuf>,
        /// An input as NAME=FILE.npy (repeatable). Inputs not given get seeded random data.
        #[arg(long = "input", value_name = "NAME=FILE.npy")]
        inputs: Vec<String>,
        /// Concrete shape for an input with symbolic dims, as NAME=1x3x224x224 (repeatable).
        #[arg(long = "shape", value_name = "NAME=SHAPE")]
        shapes: Vec<String>,
        /// Write DIR/<output name>.npy for every output instead of printing a summary.
        #[arg(long, value_name = "DIR")]
        output_dir: Option<PathBuf>,
        /// Worker threads for the JIT (the interpreter runs on one).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Use the reference interpreter instead of the JIT.
        #[arg(long)]
        interpret: bool,
        /// Algorithm for the convolutions Winograd applies to.
        #[arg(long, value_enum, default_value_t = WinogradChoice::Auto)]
        winograd: WinogradChoice,
    },
    /// Measure a model's latency on seeded random inputs.
    Bench {
        /// An .onnx file or a text-IR file (default: the built-in ir/resnet18.fovea).
        model: Option<PathBuf>,
        /// Worker threads for the JIT (the interpreter runs on one).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Timed runs.
        #[arg(long, default_value_t = 10)]
        iters: usize,
        /// Untimed runs before timing.
        #[arg(long, default_value_t = 1)]
        warmup: usize,
        /// Use the reference interpreter instead of the JIT.
        #[arg(long)]
        interpret: bool,
        /// An input as NAME=FILE.npy (repeatable); others get seeded random data.
        #[arg(long = "input", value_name = "NAME=FILE.npy")]
        inputs: Vec<String>,
        /// Concrete shape for an input with symbolic dims, as NAME=1x3x224x224 (repeatable).
        #[arg(long = "shape", value_name = "NAME=SHAPE")]
        shapes: Vec<String>,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Cranelift optimisation level for every kernel (default: chosen per kernel kind).
        #[arg(long, value_enum, default_value_t = OptChoice::Auto)]
        opt_level: OptChoice,
        /// Skip the graph passes and fusion: every node runs as its own kernels.
        #[arg(long)]
        no_optimize: bool,
        /// Algorithm for the convolutions Winograd applies to.
        #[arg(long, value_enum, default_value_t = WinogradChoice::Auto)]
        winograd: WinogradChoice,
        /// Also time every kernel launch over the timed runs: name, fused ops, shape,
        /// time, GFLOP/s and share of the total (JIT only).
        #[arg(long)]
        profile: bool,
        /// How long idle worker threads spin, waiting for the next kernel, before they
        /// sleep, in microseconds (0: sleep at once).
        #[arg(long, value_name = "MICROSECONDS", default_value_t = 1000)]
        spin_us: u64,
    },
    /// Print the IR of a model at a stage of the pipeline.
    DumpIr {
        /// An .onnx file or a text-IR file.
        model: PathBuf,
        /// The stage to print.
        #[arg(long, value_enum, default_value_t = Stage::Parsed)]
        stage: Stage,
        /// Text IR or a Graphviz DOT graph (DOT: stages parsed, optimized and fused).
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Concrete shape for an input with symbolic dims (stages loops, clif and asm).
        #[arg(long = "shape", value_name = "NAME=SHAPE")]
        shapes: Vec<String>,
        /// With --stage optimized: stop after this pass.
        #[arg(long, value_name = "PASS")]
        stop_after: Option<String>,
        /// Algorithm for the convolutions Winograd applies to (stages loops, clif and asm).
        #[arg(long, value_enum, default_value_t = WinogradChoice::Auto)]
        winograd: WinogradChoice,
        /// Threads the kernels are scheduled for (stages loops, clif and asm): work splits
        /// and schedules depend on it.
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Stage {
    /// The graph as imported or parsed.
    Parsed,
    /// After the optimisation passes.
    Optimized,
    /// Kernel groups after fusion.
    Fused,
    /// Buffers placed in the activation arena.
    Planned,
    /// The loop-nest IR of every kernel.
    Loops,
    /// The Cranelift IR of every kernel.
    Clif,
    /// The machine code of every kernel, at the optimisation level the runtime uses.
    Asm,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OptChoice {
    /// Chosen per kernel kind, by measurement.
    Auto,
    /// No optimisation (fastest compile).
    None,
    /// Optimise for speed.
    Speed,
}

impl OptChoice {
    fn apply(self, compiler: Compiler) -> Compiler {
        match self {
            OptChoice::Auto => compiler,
            OptChoice::None => compiler.opt_level(OptLevel::None),
            OptChoice::Speed => compiler.opt_level(OptLevel::Speed),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum WinogradChoice {
    /// Per layer, by cost model: F(4x4), F(2x2), F(7x7) or the direct kernel.
    Auto,
    /// The direct kernel everywhere.
    Off,
    /// F(2x2, 3x3) wherever it applies.
    F2x2,
    /// F(4x4, r x r) wherever it applies.
    F4x4,
    /// F(7x7, 3x3) wherever it applies; F(7x7, 2x2) for 2x2 kernels and stride-2 3x3 and 4x4
    /// ones.
    F7x7,
}

impl WinogradChoice {
    fn apply(self, compiler: Compiler) -> Compiler {
        compiler.winograd(match self {
            WinogradChoice::Auto => Winograd::Auto,
            WinogradChoice::Off => Winograd::Off,
            WinogradChoice::F2x2 => Winograd::F2x2,
            WinogradChoice::F4x4 => Winograd::F4x4,
            WinogradChoice::F7x7 => Winograd::F7x7,
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// The text IR.
    Text,
    /// Graphviz DOT.
    Dot,
}

fn main() -> ExitCode {
    // Rust ignores SIGPIPE, so printing into a closed pipe (`fovea dump-ir ... | head`)
    // would panic; the default action ends the process quietly, as other CLI tools do.
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    match execute(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            if e.kind() == ErrorKind::Internal {
                eprintln!(
                    "note: this is a bug in fovea; please report it with the model that triggers it"
                );
                ExitCode::from(3)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

fn execute(command: Command) -> Result<()> {
    match command {
        Command::Run {
            model,
            inputs,
            shapes,
            output_dir,
            threads,
            interpret,
            winograd,
        } => run(
            model.as_deref(),
            &inputs,
            &shapes,
            output_dir.as_deref(),
            threads,
            interpret,
            winograd,
        ),
        Command::Bench {
            model,
            threads,
            iters,
            warmup,
            interpret,
            inputs,
            shapes,
            json,
            opt_level,
            no_optimize,
            profile,
            winograd,
            spin_us,
        } => bench(
            model.as_deref(),
            BenchOptions {
                threads,
                iters,
                warmup,
                interpret,
                profile,
            },
            &inputs,
            &shapes,
            json,
            winograd.apply(
                opt_level.apply(
                    Compiler::new()
                        .threads(threads)
                        .spin(std::time::Duration::from_micros(spin_us)),
                ),
            ),
            no_optimize,
        ),
        Command::DumpIr {
            model,
            stage,
            format,
            shapes,
            stop_after,
            winograd,
            threads,
        } => dump_ir(
            &model,
            stage,
            format,
            &shapes,
            stop_after.as_deref(),
            winograd.apply(Compiler::new().threads(threads)),
        ),
    }
}

/// Loads the model at `path`, or the built-in default; returns it with a display name.
fn load(path: Option<&Path>) -> Result<(Model, String)> {
    match path {
        Some(p) => Ok((Model::load(p)?, p.display().to_string())),
        None => Ok((
            Model::parse(DEFAULT_MODEL_TEXT).map_err(|e| e.in_file(DEFAULT_MODEL_NAME))?,
            DEFAULT_MODEL_NAME.to_string(),
        )),
    }
}

fn split_assignment<'a>(flag: &str, text: &'a str) -> Result<(&'a str, &'a str)> {
    text.split_once('=')
        .filter(|(name, value)| !name.is_empty() && !value.is_empty())
        .ok_or_else(|| Error::Usage(format!("--{flag} {text:?}: expected NAME=VALUE")))
}

fn read_inputs(specs: &[String]) -> Result<Vec<(String, Tensor)>> {
    specs
        .iter()
        .map(|spec| {
            let (name, file) = split_assignment("input", spec)?;
            Ok((name.to_string(), fovea::npy::read(file)?))
        })
        .collect()
}

fn read_shapes(specs: &[String]) -> Result<ShapeOverrides> {
    let mut shapes = HashMap::new();
    for spec in specs {
        let (name, shape) = split_assignment("shape", spec)?;
        shapes.insert(name.to_string(), bench::parse_shape(shape)?);
    }
    Ok(shapes)
}

fn run(
    path: Option<&Path>,
    input_specs: &[String],
    shape_specs: &[String],
    output_dir: Option<&Path>,
    threads: usize,
    interpret: bool,
    winograd: WinogradChoice,
) -> Result<()> {
    let (model, name) = load(path)?;
    let given = read_inputs(input_specs)?;
    let inputs = bench::seeded_inputs(&model, &read_shapes(shape_specs)?, given, 0)?;
    let refs: Vec<(&str, Tensor)> = inputs
        .iter()
        .map(|(n, t)| (n.as_str(), t.clone()))
        .collect();
    let start = Instant::now();
    let (outputs, engine) = if interpret {
        (model.interpret(&refs)?, "reference interpreter".to_string())
    } else {
        let compiled = winograd
            .apply(Compiler::new().threads(threads))
            .compile(&model)?;
        let outputs = compiled.run(&refs)?;
        let stats = compiled.stats();
        let engine = format!(
            "jit, {threads} thread(s), {} kernels, compile {:.1} ms",
            stats.kernels, stats.compile_ms
        );
        (outputs, engine)
    };
    let elapsed = start.elapsed();
    match output_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                path: dir.to_path_buf(),
                source,
            })?;
            for (out_name, tensor) in &outputs {
                let file = dir.join(format!("{}.npy", file_stem(out_name)));
                fovea::npy::write(&file, tensor)?;
                println!("{}", file.display());
            }
        }
        None => {
            println!(
                "{name}: ran in {:.1} ms ({engine})",
                elapsed.as_secs_f64() * 1e3
            );
            for (out_name, tensor) in &outputs {
                println!("{}", summarize(out_name, tensor));
            }
        }
    }
    Ok(())
}

/// An output name as a file name: every character other than letters, digits, `.`, `_` and
/// `-` becomes `_`.
fn file_stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// One line per output: shape, range, and the top-5 entries of a vector of scores.
fn summarize(name: &str, tensor: &Tensor) -> String {
    let values = tensor.to_f64_vec();
    let shape = fovea::graph::types::format_shape(tensor.shape());
    if values.is_empty() {
        return format!("{name}: {}{shape} (empty)", tensor.dtype());
    }
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let mut line = format!(
        "{name}: {}{shape} min {min:.4} max {max:.4} mean {mean:.4}",
        tensor.dtype()
    );
    let rows = tensor.shape().first().copied().unwrap_or(1);
    if tensor.rank() == 2 && rows == 1 && values.len() > 1 {
        let mut order: Vec<usize> = (0..values.len()).collect();
        order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
        let top: Vec<String> = order
            .iter()
            .take(5)
            .map(|&i| format!("{i} ({:.4})", values[i]))
            .collect();
        line.push_str(&format!("\n  top-5: {}", top.join(", ")));
    }
    line
}

#[allow(clippy::too_many_arguments)]
/// How `fovea bench` runs.
struct BenchOptions {
    threads: usize,
    iters: usize,
    warmup: usize,
    interpret: bool,
    profile: bool,
}

fn bench(
    path: Option<&Path>,
    options: BenchOptions,
    input_specs: &[String],
    shape_specs: &[String],
    json: bool,
    compiler: Compiler,
    no_optimize: bool,
) -> Result<()> {
    let BenchOptions {
        threads,
        iters,
        warmup,
        interpret,
        profile,
    } = options;
    if iters == 0 {
        return Err(Error::Usage("--iters must be at least 1".to_string()));
    }
    if profile && interpret {
        return Err(Error::Usage(
            "--profile times compiled kernels: it cannot be used with --interpret".to_string(),
        ));
    }
    let load_start = Instant::now();
    let (model, name) = load(path)?;
    let load_ms = load_start.elapsed().as_secs_f64() * 1e3;
    let given = read_inputs(input_specs)?;
    let inputs = bench::seeded_inputs(&model, &read_shapes(shape_specs)?, given, 0)?;
    let refs: Vec<(&str, Tensor)> = inputs
        .iter()
        .map(|(n, t)| (n.as_str(), t.clone()))
        .collect();
    let mut progress = ProgressLine::new();
    let report = if interpret {
        let latency = bench::measure_with_progress(
            warmup,
            iters,
            || model.interpret(&refs),
            |p| progress.update(p),
        )?;
        BenchReport {
            name,
            mode: "interpret",
            threads: 1,
            load_ms,
            warmup,
            latency,
            nodes: model.graph().node_count(),
            stats: None,
            profile: None,
        }
    } else {
        progress.show(&format!("compiling {name}"));
        let compiled = compiler.optimize(!no_optimize).compile(&model)?;
        // The first run compiles models with symbolic shapes; it belongs to compile time.
        compiled.run(&refs)?;
        let latency = bench::measure_with_progress(
            warmup,
            iters,
            || compiled.run(&refs),
            |p| progress.update(p),
        )?;
        BenchReport {
            name,
            mode: "jit",
            threads,
            load_ms,
            warmup,
            latency,
            nodes: model.graph().node_count(),
            stats: Some(compiled.stats()),
            profile: if profile {
                let named: Vec<(&str, &Tensor)> = refs.iter().map(|(n, t)| (*n, t)).collect();
                Some(compiled.profile(&named, iters)?)
            } else {
                None
            },
        }
    };
    progress.clear();
    if json {
        println!("{}", report.json());
    } else {
        report.print_table();
    }
    Ok(())
}

/// One line of progress on stderr for long commands, shown only when stderr is a terminal
/// (never in output a script reads, `--json` included), redrawn at most ten times a second
/// and erased when the command prints its result.
struct ProgressLine {
    enabled: bool,
    last_drawn: Option<Instant>,
}

impl ProgressLine {
    fn new() -> ProgressLine {
        ProgressLine {
            enabled: std::io::stderr().is_terminal(),
            last_drawn: None,
        }
    }

    /// Draws `text` now.
    fn show(&mut self, text: &str) {
        if self.enabled {
            eprint!("\r\x1b[2K{text}");
            self.last_drawn = Some(Instant::now());
        }
    }

    /// Draws the runs done so far, unless the line was drawn less than 100 ms ago.
    fn update(&mut self, progress: bench::Progress) {
        let recent = self
            .last_drawn
            .is_some_and(|t| t.elapsed() < Duration::from_millis(100));
        if !self.enabled || recent {
            return;
        }
        let text = match progress {
            bench::Progress::Warmup { done, total } => format!("warm-up run {done}/{total}"),
            bench::Progress::Timed { done, total } => format!("timed run {done}/{total}"),
        };
        self.show(&text);
    }

    /// Erases the line.
    fn clear(&mut self) {
        if self.enabled && self.last_drawn.is_some() {
            eprint!("\r\x1b[2K");
            self.last_drawn = None;
        }
    }
}

/// What `fovea bench` measured.
struct BenchReport {
    name: String,
    mode: &'static str,
    threads: usize,
    load_ms: f64,
    warmup: usize,
    latency: Latency,
    nodes: usize,
    stats: Option<CompileStats>,
    profile: Option<Vec<fovea::runtime::KernelTime>>,
}

impl BenchReport {
    fn json(&self) -> serde_json::Value {
        let stats = self.stats.clone().unwrap_or_default();
        serde_json::json!({
            "model": self.name,
            "mode": self.mode,
            "threads": self.threads,
            "iters": self.latency.iters,
            "warmup": self.warmup,
            "load_ms": self.load_ms,
            "compile_ms": stats.compile_ms,
            "median_ms": self.latency.median_ms,
            "min_ms": self.latency.min_ms,
            "mean_ms": self.latency.mean_ms,
            "max_ms": self.latency.max_ms,
            "nodes": self.nodes,
            "kernels": stats.kernels,
            "kernels_compiled": stats.kernels_compiled,
            "cache_hits": stats.cache_hits,
            "cache_misses": stats.cache_misses,
            "arena_bytes": stats.arena_bytes,
            "arena_lower_bound_bytes": stats.arena_lower_bound_bytes,
            "arena_unshared_bytes": stats.arena_unshared_bytes,
            "constant_pool_bytes": stats.constant_pool_bytes,
            "profile": self.profile.as_ref().map(|kernels| {
                kernels
                    .iter()
                    .map(|k| serde_json::json!({
                        "kernel": k.name,
                        "ops": k.about.ops,
                        "shape": k.about.shape,
                        "ms": k.ms,
                        "flops": k.about.flops,
                        "gflop_per_s": if k.ms > 0.0 { k.about.flops / (k.ms * 1e6) } else { 0.0 },
                    }))
                    .collect::<Vec<_>>()
            }),
        })
    }

    fn print_table(&self) {
        println!("model     {}", self.name);
        println!("mode      {} ({} thread(s))", self.mode, self.threads);
        println!("nodes     {}", self.nodes);
        println!("load      {:.1} ms", self.load_ms);
        if let Some(stats) = &self.stats {
            println!(
                "compile   {:.1} ms   {} kernels, {} compiled, {} cache hits",
                stats.compile_ms, stats.kernels, stats.kernels_compiled, stats.cache_hits
            );
        }
        let l = &self.latency;
        println!(
            "latency   median {:.2} ms   min {:.2} ms   mean {:.2} ms   max {:.2} ms   ({} runs)",
            l.median_ms, l.min_ms, l.mean_ms, l.max_ms, l.iters
        );
        if let Some(kernels) = &self.profile {
            print_profile(kernels);
        }
    }
}

/// The per-kernel table of `fovea bench --profile`, in launch order.
fn print_profile(kernels: &[fovea::runtime::KernelTime]) {
    let total: f64 = kernels.iter().map(|k| k.ms).sum();
    println!();
    println!(
        "{:<32} {:<24} {:<18} {:>9} {:>8} {:>6}",
        "kernel", "ops", "shape", "ms", "GFLOP/s", "share"
    );
    let clip = |s: &str, n: usize| -> String {
        if s.chars().count() <= n {
            s.to_string()
        } else {
            let tail: String = s
                .chars()
                .rev()
                .take(n - 1)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            format!("…{tail}")
        }
    };
    for k in kernels {
        let shape = k
            .about
            .shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("x");
        let rate = if k.about.flops > 0.0 && k.ms > 0.0 {
            format!("{:.1}", k.about.flops / (k.ms * 1e6))
        } else {
            "-".to_string()
        };
        println!(
            "{:<32} {:<24} {:<18} {:>9.3} {:>8} {:>5.1}%",
            clip(&k.name, 32),
            clip(&k.about.ops, 24),
            shape,
            k.ms,
            rate,
            100.0 * k.ms / total.max(f64::MIN_POSITIVE)
        );
    }
    println!("{:<76} {:>9.3}", "total (kernels only)", total);
}

fn dump_ir(
    path: &Path,
    stage: Stage,
    format: Format,
    shape_specs: &[String],
    stop_after: Option<&str>,
    compiler: Compiler,
) -> Result<()> {
    let model = Model::load(path)?;
    if matches!(stage, Stage::Parsed | Stage::Optimized) {
        let graph = if stage == Stage::Optimized {
            let (graph, reports) = Pipeline::standard().run(model.graph(), stop_after)?;
            for r in &reports {
                eprintln!(
                    "pass {:<16} {:<9} {:>4} nodes  {:.2} ms",
                    r.name,
                    if r.changed { "changed" } else { "unchanged" },
                    r.nodes,
                    r.ms
                );
            }
            graph
        } else {
            model.graph().clone()
        };
        match format {
            Format::Text => print!("{}", fovea::graph::text::print(&graph)),
            Format::Dot => print!("{}", fovea::graph::dot::to_dot(&graph)),
        }
        return Ok(());
    }
    if format == Format::Dot && stage != Stage::Fused {
        return Err(Error::Usage(
            "--format dot draws graphs: use it with --stage parsed, optimized or fused".to_string(),
        ));
    }
    let compiled = compiler.compile(&model)?;
    let inputs = bench::seeded_inputs(&model, &read_shapes(shape_specs)?, Vec::new(), 0)?;
    let tensors: Vec<&Tensor> = model
        .inputs()
        .iter()
        .filter_map(|(n, _)| inputs.iter().find(|(m, _)| m == n).map(|(_, t)| t))
        .collect();
    let plan = compiled.plan_for(&tensors)?;
    if stage == Stage::Fused {
        let groups = plan.groups();
        if format == Format::Dot {
            let clusters: Vec<(String, Vec<_>)> = groups
                .iter()
                .enumerate()
                .map(|(k, g)| (format!("kernel k{k}"), g.nodes().to_vec()))
                .collect();
            print!(
                "{}",
                fovea::graph::dot::to_dot_clustered(plan.graph(), &clusters)
            );
        } else {
            print!(
                "{}",
                fovea::runtime::fuse::print_groups(plan.graph(), groups)
            );
        }
        return Ok(());
    }
    if stage == Stage::Planned {
        print!("{}", plan.memory().dump());
        return Ok(());
    }
    for (kernel, opt) in plan.kernels().iter().zip(plan.opt_levels()) {
        match stage {
            Stage::Clif => {
                println!("; kernel {}", kernel.name);
                print!("{}", fovea::codegen::clif_text(kernel)?);
            }
            Stage::Asm => {
                println!("; kernel {} (opt_level {opt:?})", kernel.name);
                print!("{}", fovea::codegen::asm_text(kernel, opt)?);
            }
            _ => print!("{kernel}"),
        }
        println!();
    }
    Ok(())
}
