//! The runtime: compiled models, their execution plans, the executor and the kernel cache.
//!
//! [`Compiler::compile`] turns a [`Model`] into a [`CompiledModel`]. A model whose inputs
//! all have concrete shapes is specialised, lowered and compiled right away; a model with a
//! symbolic dimension (or a shape-like input) compiles on the first run of each new input
//! signature. Either way the result is a [`Plan`]: the kernels in execution order, each with
//! the buffers it reads and writes. Kernels come from the process-wide kernel cache, keyed
//! by their loop IR and the CPU features, so a kernel is compiled once per process however
//! many layers, models or plans use it (while some plan uses it: see [`cache`]).
//!
//! Plans are cached by input signature, at most [`Compiler::plan_capacity`] of them, the
//! least recently used evicted first; an evicted plan's kernel code is freed once no other
//! plan uses it. Each plan keeps a pool of run workspaces ([`pool`]): a run takes one, runs
//! every kernel in it with no lock held, and gives it back, so one `CompiledModel` serves
//! any number of threads at once and a warm [`CompiledModel::run_into`] allocates nothing.
//!
//! A kernel's top-level parallel loop is split into chunks across the model's worker pool
//! ([`workers`]: `threads - 1` workers and the caller); small kernels run on the calling
//! thread, and so, by default, do all kernels of a run while as many runs as threads are in
//! flight ([`Concurrency`]). Chunking never changes results: iterations of a parallel loop are
//! independent, so outputs are bit-identical for any thread count.

pub mod alias;
pub mod cache;
pub mod fuse;
pub mod layout;
pub mod memory;
pub mod pages;
pub mod pool;
pub mod specialize;
pub mod workers;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::codegen::CompiledKernel;
pub use crate::codegen::OptLevel;
use crate::error::{Error, Result};
use crate::graph::types::format_shape;
use crate::graph::{Dim, Graph, NodeId, ValueDef, ValueId};
use crate::lower::{self, Arg, NodeInfo, Operand};
use crate::model::Model;
use crate::tensor::{DType, Tensor};
use pages::PageBuffer;

/// Compile options; `Compiler::new().threads(4).compile(&model)`.
///
/// # Threads and concurrent callers
///
/// `threads(n)` is the total number of threads one run's kernels use: the compiled model
/// starts `n - 1` worker threads and the caller of a run is the n-th. Any number of host
/// threads may call [`CompiledModel::run`] or [`CompiledModel::run_into`] on one compiled
/// model at once (share it with an `Arc`); each run takes its own arena from a pool.
/// [`Compiler::concurrency`] decides how concurrent runs share the cores; by default
/// ([`Concurrency::SerialWhenBusy`]) a run splits its kernels across the workers only while
/// fewer runs than `threads` are in flight, so callers enough to keep the cores busy never
/// have the workers' threads added to their own.
#[derive(Clone, Debug)]
pub struct Compiler {
    threads: usize,
    kernel_cache: bool,
    opt_level: Option<OptLevel>,
    winograd: lower::Winograd,
    optimize: bool,
    fusion: bool,
    concurrency: Concurrency,
    plan_capacity: usize,
    pooled_arenas: usize,
    spin: std::time::Duration,
}

/// How kernel parallelism and concurrent callers of one compiled model share the cores (see
/// ARCHITECTURE.md, "Concurrency", for measurements).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Concurrency {
    /// While fewer runs than `threads` are in flight, each splits its large kernels across
    /// the workers and its caller; once as many callers as `threads` are inside the model,
    /// each runs its kernels serially on its own thread, as the callers alone keep the cores
    /// busy (decided per kernel launch). Threads busy: `threads` for one caller, about the
    /// number of callers for more. The default (see ARCHITECTURE.md, "Concurrency").
    #[default]
    SerialWhenBusy,
    /// Every run splits its large kernels across the model's one pool of workers, whatever
    /// the number of callers: launches queue in order of arrival, the workers take chunks of
    /// the oldest, and each caller works on its own. Threads busy: the callers plus
    /// `threads - 1` workers.
    SharedPool,
}

/// Plans cached per compiled model by default ([`Compiler::plan_capacity`]).
pub const DEFAULT_PLAN_CAPACITY: usize = 16;

/// Idle arenas kept per plan by default ([`Compiler::pooled_arenas`]).
pub const DEFAULT_POOLED_ARENAS: usize = 16;

/// How long idle workers spin before sleeping by default ([`Compiler::spin`]): 1 ms.
pub const DEFAULT_SPIN: std::time::Duration = std::time::Duration::from_millis(1);

impl Default for Compiler {
    fn default() -> Compiler {
        Compiler::new()
    }
}

impl Compiler {
    /// Default options: one thread per available core, [`Concurrency::SerialWhenBusy`],
    /// [`DEFAULT_PLAN_CAPACITY`] plans, [`DEFAULT_POOLED_ARENAS`] idle arenas per plan.
    pub fn new() -> Compiler {
        Compiler {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel_cache: true,
            opt_level: None,
            winograd: lower::Winograd::Auto,
            optimize: true,
            fusion: true,
            concurrency: Concurrency::default(),
            plan_capacity: DEFAULT_PLAN_CAPACITY,
            pooled_arenas: DEFAULT_POOLED_ARENAS,
            spin: DEFAULT_SPIN,
        }
    }

    /// Total number of threads a run's kernels may use, the caller's included (at least 1):
    /// the compiled model starts `threads - 1` workers.
    pub fn threads(mut self, threads: usize) -> Compiler {
        self.threads = threads.max(1);
        self
    }

    /// How long an idle worker thread spins, waiting for the next kernel launch, before it
    /// sleeps — and how long a run's caller spins for the workers' last chunks (default
    /// [`DEFAULT_SPIN`]). Waking a sleeping thread takes tens of microseconds, as long as a
    /// small kernel's whole share, so back-to-back launches and runs go faster with a spin;
    /// the cost is up to this much CPU time per worker after a run's last launch. Zero:
    /// sleep at once.
    pub fn spin(mut self, spin: std::time::Duration) -> Compiler {
        self.spin = spin;
        self
    }

    /// How concurrent runs share the cores (default [`Concurrency::SerialWhenBusy`]).
    pub fn concurrency(mut self, concurrency: Concurrency) -> Compiler {
        self.concurrency = concurrency;
        self
    }

    /// How many input signatures' plans a compiled model keeps (at least 1; default
    /// [`DEFAULT_PLAN_CAPACITY`]). Beyond it the least recently used plan is evicted, and
    /// its kernels' code is freed unless another plan uses them; running its signature again
    /// compiles it again.
    pub fn plan_capacity(mut self, plans: usize) -> Compiler {
        self.plan_capacity = plans.max(1);
        self
    }

    /// How many idle arenas each plan keeps for later runs (at least 1; default
    /// [`DEFAULT_POOLED_ARENAS`]). A plan makes as many arenas as it has runs in flight at
    /// once; beyond this many, arenas of finished runs are freed.
    pub fn pooled_arenas(mut self, arenas: usize) -> Compiler {
        self.pooled_arenas = arenas.max(1);
        self
    }

    /// Whether to share compiled kernels through the process-wide cache (default true).
    /// Turning it off compiles every kernel afresh: for measuring cold compile time.
    pub fn kernel_cache(mut self, enabled: bool) -> Compiler {
        self.kernel_cache = enabled;
        self
    }

    /// Forces Cranelift's optimisation level for every kernel (by default it is chosen per
    /// kind of kernel, see [`default_opt_level`]).
    pub fn opt_level(mut self, level: OptLevel) -> Compiler {
        self.opt_level = Some(level);
        self
    }

    /// Which algorithm 3×3 stride-1 convolutions use (default [`Winograd::Auto`]: per layer,
    /// whichever of Winograd F(4×4, 3×3), F(2×2, 3×3) and the direct kernel a cost model
    /// finds fastest). [`Winograd::Off`] gives the direct kernel everywhere (for measuring,
    /// or for the direct method's rounding); the variants force one wherever it applies.
    ///
    /// [`Winograd::Auto`]: crate::Winograd::Auto
    /// [`Winograd::Off`]: crate::Winograd::Off
    pub fn winograd(mut self, choice: lower::Winograd) -> Compiler {
        self.winograd = choice;
        self
    }

    /// Whether to run the graph passes ([`crate::passes::Pipeline::standard`]) before
    /// lowering (default true); off, every node of the graph becomes its own kernels.
    pub fn optimize(mut self, enabled: bool) -> Compiler {
        self.optimize = enabled;
        self
    }

    /// Whether to fuse elementwise chains into their producers' kernels ([`fuse`]; default
    /// true; only with [`Compiler::optimize`] on). Off, every node is its own kernels.
    pub fn fusion(mut self, enabled: bool) -> Compiler {
        self.fusion = enabled;
        self
    }

    /// Compiles a model. Models with concrete input shapes are compiled now; others on the
    /// first run of each input signature.
    pub fn compile(&self, model: &Model) -> Result<CompiledModel> {
        let graph = model.graph();
        let value_inputs = specialize::value_inputs(graph);
        let value_positions = graph
            .inputs()
            .iter()
            .enumerate()
            .filter(|(_, id)| value_inputs.contains(id))
            .map(|(k, _)| k)
            .collect();
        let compiled = CompiledModel {
            graph: Arc::new(graph.clone()),
            value_inputs,
            value_positions,
            threads: self.threads,
            options: self.clone(),
            workers: workers::Workers::new(self.threads - 1, self.spin)?,
            plans: Mutex::new(PlanCache::new(self.plan_capacity)),
            building: Mutex::new(()),
            active: AtomicUsize::new(0),
            stats: Mutex::new(CompileStats::default()),
        };
        if let Some(inputs) = compiled.static_inputs()? {
            let refs: Vec<&Tensor> = inputs.iter().collect();
            compiled.plan_for(&refs)?;
        }
        Ok(compiled)
    }
}

/// Compilation counters of one compiled model.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CompileStats {
    /// Plans built (one per input signature seen, again after an eviction).
    pub plans: usize,
    /// Kernel launches in the most recent plan.
    pub kernels: usize,
    /// Kernels compiled (cache misses that were compiled).
    pub kernels_compiled: usize,
    /// Kernels found in the cache.
    pub cache_hits: usize,
    /// Kernels not in the cache.
    pub cache_misses: usize,
    /// Time spent specialising, lowering and compiling, in milliseconds.
    pub compile_ms: f64,
    /// Bytes of the activation arena of the most recent plan.
    pub arena_bytes: usize,
    /// The most recent plan's lower bound on the arena (largest total live at one step).
    pub arena_lower_bound_bytes: usize,
    /// The most recent plan's temporaries in total, as if none shared memory.
    pub arena_unshared_bytes: usize,
    /// Plans evicted from the bounded plan cache ([`Compiler::plan_capacity`]).
    pub plans_evicted: usize,
    /// Bytes of the most recent plan's constant pool: every constant its kernels' lowerings
    /// made (packed weights, tables) in one buffer, on huge pages when 1 MiB or more
    /// ([`pages`]), rounding included.
    pub constant_pool_bytes: usize,
}

/// Where a kernel buffer lives during a run.
#[derive(Clone, Debug)]
enum Slot {
    /// The `k`-th graph input.
    Input(usize),
    /// Constant data.
    Const(Arc<Tensor>),
    /// A constant a kernel's lowering made (packed weights, tables), at `offset` bytes in
    /// the plan's constant pool ([`Plan::constants`]).
    Pooled { offset: usize, bytes: usize },
    /// A buffer in the run's arena (see [`memory`]).
    Temp { dtype: DType, len: usize },
}

/// One kernel launch.
#[derive(Clone, Debug)]
struct Step {
    name: String,
    kernel: CompiledKernel,
    /// Slot of each kernel buffer.
    args: Vec<usize>,
    /// `(start, end, step)` of the top-level parallel loop, if any.
    parallel: Option<(i64, i64, i64)>,
    /// Elements the kernel writes or their equivalent in arithmetic, to decide whether
    /// splitting pays.
    work: usize,
    /// The optimisation level it was compiled at.
    opt: OptLevel,
    /// What it computes, for profiles.
    about: KernelAbout,
}

/// What one kernel launch computes, for profiles ([`CompiledModel::profile`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KernelAbout {
    /// The ops of its fusion group, in order (`conv+add+relu`).
    pub ops: String,
    /// The shape it writes (its group's output).
    pub shape: Vec<usize>,
    /// Floating-point operations of its anchor (multiply and add counted apart; 0 for
    /// kernels that only move or compare data, and for a group's helper kernels).
    pub flops: f64,
}

/// One kernel launch's share of a profiled run ([`CompiledModel::profile`]).
#[derive(Clone, Debug, PartialEq)]
pub struct KernelTime {
    /// The kernel's name (its anchor node's).
    pub name: String,
    /// What it computes.
    pub about: KernelAbout,
    /// Median time over the profiled runs, in milliseconds (a median, so that a run
    /// interrupted by another process does not skew the kernel it interrupted).
    pub ms: f64,
}

/// The floating-point operations of a node (the anchor of a group): 2 per multiply-add of
/// a convolution or matrix product, 0 for anything else.
fn anchor_flops(graph: &Graph, node_id: NodeId) -> f64 {
    let node = graph.node(node_id);
    let shape = |id: Option<&Option<ValueId>>| {
        id.copied()
            .flatten()
            .and_then(|v| graph.value(v).ty.known_shape())
    };
    let out = node
        .outputs
        .first()
        .and_then(|&v| graph.value(v).ty.known_shape());
    match (&node.op, out) {
        (crate::graph::op::Op::Conv(_), Some(out)) => {
            // Each output sums C/group × kernel taps products: the weight's shape after M.
            let per_output: usize =
                shape(node.inputs.get(1)).map_or(0, |w| w.iter().skip(1).product());
            2.0 * (out.iter().product::<usize>() * per_output) as f64
        }
        (crate::graph::op::Op::Gemm { trans_a, .. }, Some(out)) => {
            let a = shape(node.inputs.first()).unwrap_or_default();
            let k = if *trans_a { a.first() } else { a.last() };
            2.0 * (out.iter().product::<usize>() * k.copied().unwrap_or(0)) as f64
        }
        (crate::graph::op::Op::MatMul, Some(out)) => {
            let k = shape(node.inputs.first()).map_or(0, |a| a.last().copied().unwrap_or(0));
            2.0 * (out.iter().product::<usize>() * k) as f64
        }
        _ => 0.0,
    }
}

/// An execution plan for one input signature.
#[derive(Debug)]
pub struct Plan {
    graph: Graph,
    slots: Vec<Slot>,
    steps: Vec<Step>,
    /// Slot and name of each graph output.
    outputs: Vec<(String, usize, Vec<usize>)>,
    /// The loop IR of every kernel launch, for dumps (constants emptied, see
    /// [`Plan::kernels`]).
    kernels: Vec<lower::Kernel>,
    /// Every constant the kernels' lowerings made, back to back (each aligned to
    /// [`memory::ALIGN`]) in one buffer: on huge pages when 1 MiB or more ([`pages`]: a
    /// network's packed weights are streamed from memory on every run), with no per-buffer
    /// rounding.
    constants: PageBuffer,
    /// Where the temporaries live in the arena.
    memory: memory::MemoryPlan,
    /// The nodes each kernel group computes, in order (`dump-ir --stage fused`).
    groups: Vec<fuse::Group>,
    /// For each slot, its arena offset in bytes (`None` for inputs, constants and
    /// temporaries no kernel touches).
    offsets: Vec<Option<usize>>,
}

impl Plan {
    /// Bytes of the plan's constant pool ([`CompileStats::constant_pool_bytes`]).
    pub fn constant_pool_bytes(&self) -> usize {
        self.constants.allocated()
    }

    /// The specialised graph the plan computes.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The groups of nodes the plan computes as one kernel each (launches that copy or
    /// pad aside), in order: the fusion groups, with the prologues attached (see
    /// [`fuse::attach_prologues`]) when fusion is on, one node each otherwise.
    pub fn groups(&self) -> &[fuse::Group] {
        &self.groups
    }

    /// The loop IR of every kernel launch, in order, without the constant data: the plan
    /// holds it once, in its constant pool, and these kernels' [`lower::BufferKind::Const`]
    /// tensors are empty (the buffers keep their lengths).
    pub fn kernels(&self) -> &[lower::Kernel] {
        &self.kernels
    }

    /// The optimisation level each kernel launch was compiled at, in order.
    pub fn opt_levels(&self) -> impl Iterator<Item = OptLevel> + '_ {
        self.steps.iter().map(|s| s.opt)
    }

    /// Number of kernel launches.
    pub fn kernel_count(&self) -> usize {
        self.steps.len()
    }

    /// The name of every kernel launch, in order.
    pub fn kernel_names(&self) -> impl Iterator<Item = &str> {
        self.steps.iter().map(|s| s.name.as_str())
    }

    /// The arena layout of the plan's temporaries.
    pub fn memory(&self) -> &memory::MemoryPlan {
        &self.memory
    }
}

/// A compiled model: call [`CompiledModel::run`] or [`CompiledModel::run_into`] from any
/// number of threads at once (share it with an `Arc`).
pub struct CompiledModel {
    graph: Arc<Graph>,
    /// Inputs the plans specialise on by value (shape-like inputs).
    value_inputs: Vec<ValueId>,
    /// Their positions among the graph's inputs.
    value_positions: Vec<usize>,
    threads: usize,
    options: Compiler,
    workers: workers::Workers,
    plans: Mutex<PlanCache>,
    /// Held while a plan is built, so a signature is compiled once even when several callers
    /// bring it at the same time; runs of cached plans never wait for it.
    building: Mutex<()>,
    /// Runs in flight now.
    active: AtomicUsize,
    stats: Mutex<CompileStats>,
}

impl std::fmt::Debug for CompiledModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledModel")
            .field("model", &self.graph.name)
            .field("threads", &self.threads)
            .field("concurrency", &self.options.concurrency)
            .finish()
    }
}

/// A run's inputs, read in the graph's input order without copying or allocating.
#[derive(Clone, Copy)]
enum Inputs<'a> {
    /// Already in graph order.
    Ordered(&'a [&'a Tensor]),
    /// Named, each graph input bound exactly once (checked by [`bind_inputs`]).
    Named {
        graph: &'a Graph,
        given: &'a [(&'a str, &'a Tensor)],
    },
}

impl<'a> Inputs<'a> {
    /// The `k`-th graph input's tensor.
    fn get(&self, k: usize) -> Option<&'a Tensor> {
        match *self {
            Inputs::Ordered(tensors) => tensors.get(k).copied(),
            Inputs::Named { graph, given } => {
                let name = graph.value(*graph.inputs().get(k)?).name.as_str();
                // Inputs usually come in graph order.
                match given.get(k) {
                    Some(&(n, t)) if n == name => Some(t),
                    _ => given.iter().find(|(n, _)| *n == name).map(|&(_, t)| t),
                }
            }
        }
    }

    fn input(&self, k: usize) -> Result<&'a Tensor> {
        self.get(k)
            .ok_or_else(|| Error::internal(format!("graph input {k} is not bound")))
    }
}

/// Identifies a plan: the shape of every input and the values of shape-like inputs.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PlanKey {
    shapes: Vec<Vec<usize>>,
    /// The elements of each shape-like input, as `f64` bits.
    values: Vec<Vec<u64>>,
}

/// The bits of a tensor's elements as `f64`, as plan keys hold them.
fn element_bits(t: &Tensor) -> impl Iterator<Item = u64> + '_ {
    let (floats, ints) = match t.data() {
        crate::tensor::TensorData::F32(v) => (Some(v), None),
        crate::tensor::TensorData::I64(v) => (None, Some(v)),
    };
    let floats = floats
        .into_iter()
        .flatten()
        .map(|&x| f64::from(x).to_bits());
    let ints = ints.into_iter().flatten().map(|&x| (x as f64).to_bits());
    floats.chain(ints)
}

impl PlanKey {
    fn new(count: usize, value_positions: &[usize], inputs: Inputs) -> Result<PlanKey> {
        Ok(PlanKey {
            shapes: (0..count)
                .map(|k| inputs.input(k).map(|t| t.shape().to_vec()))
                .collect::<Result<_>>()?,
            values: value_positions
                .iter()
                .map(|&k| inputs.input(k).map(|t| element_bits(t).collect()))
                .collect::<Result<_>>()?,
        })
    }

    /// Whether `inputs` have this signature, compared in place (no allocation).
    fn matches(&self, value_positions: &[usize], inputs: Inputs) -> bool {
        let shapes_match = self
            .shapes
            .iter()
            .enumerate()
            .all(|(k, shape)| inputs.get(k).is_some_and(|t| t.shape() == shape.as_slice()));
        shapes_match
            && self.values.len() == value_positions.len()
            && self.values.iter().zip(value_positions).all(|(bits, &k)| {
                inputs.get(k).is_some_and(|t| {
                    t.len() == bits.len() && element_bits(t).eq(bits.iter().copied())
                })
            })
    }
}

/// A plan with the pool of workspaces its runs use.
struct Prepared {
    plan: Arc<Plan>,
    arenas: pool::ArenaPool,
}

/// A cached plan and when it was last used.
struct CachedPlan {
    key: PlanKey,
    prepared: Arc<Prepared>,
    used: u64,
}

/// The plans of one compiled model, bounded, the least recently used evicted first. Few
/// enough that a linear scan is the fastest lookup, and one that allocates nothing.
struct PlanCache {
    entries: Vec<CachedPlan>,
    capacity: usize,
    /// Lookups so far: the time stamp of `used`.
    clock: u64,
}

impl PlanCache {
    fn new(capacity: usize) -> PlanCache {
        let capacity = capacity.max(1);
        PlanCache {
            entries: Vec::with_capacity(capacity),
            capacity,
            clock: 0,
        }
    }

    /// The plan for `inputs`, if cached.
    fn get(&mut self, value_positions: &[usize], inputs: Inputs) -> Option<Arc<Prepared>> {
        self.clock += 1;
        let clock = self.clock;
        let entry = self
            .entries
            .iter_mut()
            .find(|e| e.key.matches(value_positions, inputs))?;
        entry.used = clock;
        Some(entry.prepared.clone())
    }

    /// Adds a plan; returns the one evicted to make room, if any (to drop, freeing its
    /// code, once the cache's lock is released).
    fn insert(&mut self, key: PlanKey, prepared: Arc<Prepared>) -> Option<Arc<Prepared>> {
        let evicted = if self.entries.len() >= self.capacity {
            let oldest = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.used)
                .map(|(i, _)| i);
            oldest.map(|i| self.entries.swap_remove(i).prepared)
        } else {
            None
        };
        self.clock += 1;
        self.entries.push(CachedPlan {
            key,
            prepared,
            used: self.clock,
        });
        evicted
    }
}

/// Counts a run in flight for as long as it lives.
struct Active<'a>(&'a AtomicUsize);

impl<'a> Active<'a> {
    fn enter(counter: &'a AtomicUsize) -> Active<'a> {
        counter.fetch_add(1, Ordering::Relaxed);
        Active(counter)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Kernels writing fewer elements than this (or doing less arithmetic than
/// [`FLOPS_PER_ELEMENT`] times it) run on the calling thread.
const SERIAL_THRESHOLD: usize = 16 * 1024;

/// The arithmetic that counts as one written element when deciding whether to split a
/// kernel: about what one element of an elementwise kernel costs in time at the
/// convolutions' rate.
const FLOPS_PER_ELEMENT: f64 = 8.0;

impl CompiledModel {
    /// Total number of threads a run may use (the caller's included).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// How concurrent runs share the cores.
    pub fn concurrency(&self) -> Concurrency {
        self.options.concurrency
    }

    /// Compilation counters so far.
    pub fn stats(&self) -> CompileStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Plans in the plan cache now (at most [`Compiler::plan_capacity`]).
    pub fn cached_plans(&self) -> usize {
        self.plans.lock().map_or(0, |p| p.entries.len())
    }

    /// Arenas idle in the pools of the cached plans now.
    pub fn idle_arenas(&self) -> usize {
        self.plans.lock().map_or(0, |p| {
            p.entries.iter().map(|e| e.prepared.arenas.idle()).sum()
        })
    }

    /// Zero tensors of the declared input shapes, if every input shape is concrete and no
    /// input is shape-like.
    fn static_inputs(&self) -> Result<Option<Vec<Tensor>>> {
        let mut inputs = Vec::new();
        for &id in self.graph.inputs() {
            let ty = &self.graph.value(id).ty;
            match ty.known_shape() {
                Some(shape) if !self.value_inputs.contains(&id) => {
                    inputs.push(Tensor::zeros(ty.dtype, shape)?)
                }
                _ => return Ok(None),
            }
        }
        Ok(Some(inputs))
    }

    /// The plan for the given inputs (in graph input order), building it if it is not
    /// cached.
    pub fn plan_for(&self, inputs: &[&Tensor]) -> Result<Arc<Plan>> {
        self.prepared(Inputs::Ordered(inputs))
            .map(|p| p.plan.clone())
    }

    fn lock_plans(&self) -> Result<std::sync::MutexGuard<'_, PlanCache>> {
        self.plans
            .lock()
            .map_err(|_| Error::internal("plan cache lock poisoned"))
    }

    /// The cached plan for `inputs`, or a new one. A hit allocates nothing.
    fn prepared(&self, inputs: Inputs) -> Result<Arc<Prepared>> {
        if let Some(p) = self.lock_plans()?.get(&self.value_positions, inputs) {
            return Ok(p);
        }
        let _building = self
            .building
            .lock()
            .map_err(|_| Error::internal("plan build lock poisoned"))?;
        // Another caller may have built it while this one waited.
        if let Some(p) = self.lock_plans()?.get(&self.value_positions, inputs) {
            return Ok(p);
        }
        let count = self.graph.inputs().len();
        let ordered = (0..count)
            .map(|k| inputs.input(k))
            .collect::<Result<Vec<_>>>()?;
        let key = PlanKey::new(count, &self.value_positions, inputs)?;
        let start = Instant::now();
        let (plan, hits, misses) = build_plan(&self.graph, &ordered, &self.options)?;
        let table_len = plan.steps.iter().map(|s| s.args.len()).sum();
        let prepared = Arc::new(Prepared {
            arenas: pool::ArenaPool::new(
                plan.memory.arena_bytes,
                table_len,
                self.options.pooled_arenas,
            ),
            plan: Arc::new(plan),
        });
        let evicted = self.lock_plans()?.insert(key, prepared.clone());
        if let Ok(mut stats) = self.stats.lock() {
            let plan = &prepared.plan;
            stats.plans += 1;
            stats.plans_evicted += usize::from(evicted.is_some());
            stats.kernels = plan.steps.len();
            stats.cache_hits += hits;
            stats.cache_misses += misses;
            stats.kernels_compiled += misses;
            stats.compile_ms += start.elapsed().as_secs_f64() * 1e3;
            stats.arena_bytes = plan.memory.arena_bytes;
            stats.arena_lower_bound_bytes = plan.memory.lower_bound_bytes;
            stats.arena_unshared_bytes = plan.memory.unshared_bytes;
            stats.constant_pool_bytes = plan.constant_pool_bytes();
        }
        // The evicted plan (and, unless other plans use them, its kernels' code) is freed
        // here, outside the locks, or when its last run in flight ends.
        drop(evicted);
        Ok(prepared)
    }

    /// The plan for the model's static input shapes (models with symbolic dims need
    /// `plan_for`).
    pub fn static_plan(&self) -> Result<Arc<Plan>> {
        match self.static_inputs()? {
            Some(inputs) => self.plan_for(&inputs.iter().collect::<Vec<_>>()),
            None => Err(Error::Usage(
                "the model has symbolic or value-dependent input shapes: give concrete shapes"
                    .to_string(),
            )),
        }
    }

    /// Runs the model on named inputs; returns the outputs in order with their names.
    ///
    /// The output tensors are allocated for each call; [`CompiledModel::run_into`] writes
    /// into tensors the caller keeps instead, and allocates nothing once warm.
    pub fn run(&self, inputs: &[(&str, Tensor)]) -> Result<Vec<(String, Tensor)>> {
        let named: Vec<(&str, &Tensor)> = inputs.iter().map(|(n, t)| (*n, t)).collect();
        let bound = bind_inputs(&self.graph, &named)?;
        let prepared = self.prepared(bound)?;
        let mut outputs = output_tensors(&prepared.plan)?;
        self.execute(&prepared, bound, &mut outputs)?;
        Ok(prepared
            .plan
            .outputs
            .iter()
            .map(|(name, _, _)| name.clone())
            .zip(outputs)
            .collect())
    }

    /// Runs the model on named inputs, writing the outputs, in the model's output order, into
    /// `outputs`: one tensor per output, each of the output's dtype and of its shape for these
    /// inputs (a user error otherwise; [`CompiledModel::output_tensors`] makes them).
    ///
    /// Once the inputs' signature has been run before (its plan cached and an arena idle in
    /// its pool), this allocates nothing: the plan is found by comparing shapes in place, the
    /// arena and kernel pointer table come from the plan's pool, and the outputs are copied
    /// into the given tensors.
    pub fn run_into(&self, inputs: &[(&str, &Tensor)], outputs: &mut [Tensor]) -> Result<()> {
        let bound = bind_inputs(&self.graph, inputs)?;
        let prepared = self.prepared(bound)?;
        self.execute(&prepared, bound, outputs)
    }

    /// Runs the model `runs` times on named inputs (after one warm-up run) timing every
    /// kernel launch; returns each launch's median time, in launch order (`fovea bench
    /// --profile`). The timing adds a clock read around each launch, nothing else.
    pub fn profile(&self, inputs: &[(&str, &Tensor)], runs: usize) -> Result<Vec<KernelTime>> {
        let bound = bind_inputs(&self.graph, inputs)?;
        let prepared = self.prepared(bound)?;
        let plan = &prepared.plan;
        let mut outputs = output_tensors(plan)?;
        self.execute(&prepared, bound, &mut outputs)?;
        let runs = runs.max(1);
        let mut samples = vec![Vec::with_capacity(runs); plan.steps.len()];
        let mut times = vec![0.0; plan.steps.len()];
        for _ in 0..runs {
            times.fill(0.0);
            let _active = Active::enter(&self.active);
            let mut workspace = prepared.arenas.take();
            let result =
                self.execute_in(plan, bound, &mut workspace, &mut outputs, Some(&mut times));
            prepared.arenas.give(workspace);
            result?;
            for (sample, &time) in samples.iter_mut().zip(&times) {
                sample.push(time);
            }
        }
        Ok(plan
            .steps
            .iter()
            .zip(samples)
            .map(|(step, mut sample)| {
                sample.sort_by(f64::total_cmp);
                KernelTime {
                    name: step.name.clone(),
                    about: step.about.clone(),
                    ms: sample[sample.len() / 2],
                }
            })
            .collect())
    }

    /// Zero tensors shaped for the outputs of a run on these inputs, in the model's output
    /// order, for [`CompiledModel::run_into`] (builds the inputs' plan if needed).
    pub fn output_tensors(&self, inputs: &[(&str, &Tensor)]) -> Result<Vec<Tensor>> {
        let bound = bind_inputs(&self.graph, inputs)?;
        output_tensors(&self.prepared(bound)?.plan)
    }

    /// Runs a plan with a workspace from its pool, writing its outputs into `outputs`.
    fn execute(&self, prepared: &Prepared, inputs: Inputs, outputs: &mut [Tensor]) -> Result<()> {
        let plan = &prepared.plan;
        check_outputs(plan, outputs)?;
        let _active = Active::enter(&self.active);
        let mut workspace = prepared.arenas.take();
        let result = self.execute_in(plan, inputs, &mut workspace, outputs, None);
        prepared.arenas.give(workspace);
        result
    }

    /// Runs a plan with its temporaries in `workspace` (an arena of at least the plan's bytes,
    /// whose contents on entry do not matter, and a table of every launch's buffers).
    fn execute_in(
        &self,
        plan: &Plan,
        inputs: Inputs,
        workspace: &mut pool::Workspace,
        outputs: &mut [Tensor],
        mut timings: Option<&mut [f64]>,
    ) -> Result<()> {
        let pool::Workspace { arena, table } = workspace;
        let arena = arena.bytes_mut();
        if arena.len() < plan.memory.arena_bytes {
            return Err(Error::internal(format!(
                "arena of {} bytes for a plan that needs {}",
                arena.len(),
                plan.memory.arena_bytes
            )));
        }
        let base = arena.as_mut_ptr();
        let mut entries = table.iter_mut();
        for step in &plan.steps {
            for &slot in &step.args {
                let entry = entries
                    .next()
                    .ok_or_else(|| Error::internal("pointer table too short for the plan"))?;
                *entry = slot_bytes(plan, slot, inputs, base)?.0;
            }
        }
        let mut at = 0;
        for (index, step) in plan.steps.iter().enumerate() {
            let end = at + step.args.len();
            let launch = table
                .get(at..end)
                .ok_or_else(|| Error::internal("pointer table too short for the plan"))?;
            at = end;
            let split = match self.options.concurrency {
                Concurrency::SharedPool => true,
                Concurrency::SerialWhenBusy => self.active.load(Ordering::Relaxed) < self.threads,
            };
            match timings.as_deref_mut().and_then(|t| t.get_mut(index)) {
                Some(total) => {
                    let start = Instant::now();
                    run_step(&self.workers, self.threads, step, launch, split);
                    *total += start.elapsed().as_secs_f64() * 1e3;
                }
                None => run_step(&self.workers, self.threads, step, launch, split),
            }
        }
        for ((name, slot, _), out) in plan.outputs.iter().zip(outputs.iter_mut()) {
            let (src, bytes) = slot_bytes(plan, *slot, inputs, base)?;
            let (dst, room) = tensor_bytes_mut(out);
            if room != bytes {
                return Err(Error::internal(format!(
                    "output {name}: {bytes} bytes computed for a tensor of {room}"
                )));
            }
            // SAFETY: `src` points at `bytes` readable bytes (an input, a constant, or a
            // temporary the planner placed inside the arena, checked long enough above);
            // `dst` is the output tensor's own storage of the same length, borrowed
            // exclusively, so the ranges do not overlap.
            unsafe { std::ptr::copy_nonoverlapping(src.cast_const(), dst, bytes) };
        }
        Ok(())
    }
}

/// The address and byte length of a slot's data for one run.
fn slot_bytes(plan: &Plan, slot: usize, inputs: Inputs, base: *mut u8) -> Result<(*mut u8, usize)> {
    match plan.slots.get(slot) {
        Some(Slot::Input(k)) => {
            let t = inputs.input(*k)?;
            Ok((data_ptr(t), t.len() * t.dtype().size_bytes()))
        }
        Some(Slot::Const(t)) => Ok((data_ptr(t), t.len() * t.dtype().size_bytes())),
        // Inside the pool by construction (`pool_constants`); kernels never store to
        // constants (see `data_ptr`).
        Some(Slot::Pooled { offset, bytes }) => Ok((
            plan.constants.as_ptr().wrapping_add(*offset).cast_mut(),
            *bytes,
        )),
        Some(Slot::Temp { dtype, len }) => {
            let offset = plan.offsets.get(slot).copied().flatten().unwrap_or(0);
            // In bounds: the planner placed every temporary inside the arena, and the
            // arena is at least that long (checked by the caller).
            Ok((base.wrapping_add(offset), len * dtype.size_bytes()))
        }
        None => Err(Error::internal(format!("slot {slot} is not in the plan"))),
    }
}

/// Zero tensors of a plan's output dtypes and shapes.
fn output_tensors(plan: &Plan) -> Result<Vec<Tensor>> {
    plan.outputs
        .iter()
        .enumerate()
        .map(|(i, (_, _, shape))| Tensor::zeros(output_dtype(plan, i)?, shape.clone()))
        .collect()
}

/// The dtype of a plan's `i`-th output.
fn output_dtype(plan: &Plan, i: usize) -> Result<DType> {
    plan.graph
        .outputs()
        .get(i)
        .map(|&id| plan.graph.value(id).ty.dtype)
        .ok_or_else(|| Error::internal(format!("plan output {i} is not a graph output")))
}

/// Checks that caller-provided output tensors fit the plan's outputs.
fn check_outputs(plan: &Plan, outputs: &[Tensor]) -> Result<()> {
    if outputs.len() != plan.outputs.len() {
        return Err(Error::Usage(format!(
            "{} output tensors given for a model with {} outputs",
            outputs.len(),
            plan.outputs.len()
        )));
    }
    for (i, ((name, _, shape), out)) in plan.outputs.iter().zip(outputs).enumerate() {
        let dtype = output_dtype(plan, i)?;
        if out.dtype() != dtype || out.shape() != shape.as_slice() {
            return Err(Error::Usage(format!(
                "output {name}: expected a {dtype}{} tensor, got {}{}",
                format_shape(shape),
                out.dtype(),
                format_shape(out.shape())
            )));
        }
    }
    Ok(())
}

/// The constant pool holding `constants` (each at its slot's offset; see
/// [`Plan::constants`]), `bytes` long.
fn pool_constants(bytes: usize, constants: &[(usize, Arc<Tensor>)]) -> PageBuffer {
    let mut pool = PageBuffer::filled(bytes, 0);
    let memory = pool.as_bytes_mut();
    for (offset, t) in constants {
        let len = t.len() * t.dtype().size_bytes();
        // SAFETY: `data_ptr` points at the tensor's `len` initialised bytes, alive while
        // `t` is borrowed.
        let data = unsafe { std::slice::from_raw_parts(data_ptr(t).cast_const(), len) };
        memory[*offset..*offset + len].copy_from_slice(data);
    }
    pool
}

fn data_ptr(t: &Tensor) -> *mut u8 {
    // Kernels never store to input or constant buffers (the loop verifier rejects stores
    // to anything but outputs), so handing out a mutable pointer to shared data is sound.
    match t.data() {
        crate::tensor::TensorData::F32(v) => v.as_ptr() as *mut u8,
        crate::tensor::TensorData::I64(v) => v.as_ptr() as *mut u8,
    }
}

/// A tensor's storage as a byte pointer and length, borrowed for writing.
fn tensor_bytes_mut(t: &mut Tensor) -> (*mut u8, usize) {
    if let Some(v) = t.as_f32_mut() {
        (v.as_mut_ptr().cast(), std::mem::size_of_val(v))
    } else if let Some(v) = t.as_i64_mut() {
        (v.as_mut_ptr().cast(), std::mem::size_of_val(v))
    } else {
        (std::ptr::null_mut(), 0)
    }
}

/// Runs one kernel launch: split across `workers` and the calling thread when `split`
/// allows it and the kernel is large enough to pay for it, else on the calling thread.
fn run_step(
    workers: &workers::Workers,
    threads: usize,
    step: &Step,
    table: &[*mut u8],
    split: bool,
) {
    match step.parallel {
        Some((start, end, stride)) if split && threads > 1 && step.work >= SERIAL_THRESHOLD => {
            let trips = ((end - start).max(0) + stride - 1) / stride.max(1);
            let chunks = trips.min(threads as i64 * 4).max(1) as usize;
            // SAFETY: the kernel passed the loop verifier for exactly these buffer lengths,
            // the table holds one live pointer per kernel buffer for the whole launch, and
            // `start..end` is the kernel's parallel loop, whose iterations are independent.
            unsafe {
                workers.launch(
                    step.kernel.func,
                    table.as_ptr(),
                    (start, end, stride),
                    chunks,
                )
            }
        }
        // SAFETY: as above; the whole loop (or a kernel without one) on this thread.
        Some((start, end, _)) => unsafe { (step.kernel.func)(table.as_ptr(), start, end) },
        None => unsafe { (step.kernel.func)(table.as_ptr(), 0, 0) },
    }
}

/// Checks named inputs against the graph's declared inputs (each given once, with the
/// declared dtype and a shape that fits the declared dims, symbolic dims bound
/// consistently) without allocating; on a mismatch, the error names the input.
fn bind_inputs<'a>(graph: &'a Graph, given: &'a [(&'a str, &'a Tensor)]) -> Result<Inputs<'a>> {
    let bound = Inputs::Named { graph, given };
    if inputs_fit(graph, bound, given) {
        return Ok(bound);
    }
    Err(match order_inputs(graph, given) {
        Err(e) => e,
        Ok(_) => Error::internal("inputs rejected without a reason"),
    })
}

/// Whether the named inputs bind every graph input exactly once with a fitting type.
fn inputs_fit(graph: &Graph, bound: Inputs, given: &[(&str, &Tensor)]) -> bool {
    let declared = graph.inputs();
    if given.len() != declared.len() {
        return false;
    }
    for (k, &id) in declared.iter().enumerate() {
        let value = graph.value(id);
        if given.iter().filter(|(n, _)| *n == value.name).count() != 1 {
            return false;
        }
        let Some(t) = bound.get(k) else {
            return false;
        };
        if t.dtype() != value.ty.dtype || t.rank() != value.ty.rank() {
            return false;
        }
        for (&actual, dim) in t.shape().iter().zip(&value.ty.shape) {
            let fits = match dim {
                Dim::Known(n) => *n == actual,
                // The first input dim with the symbol binds it.
                Dim::Sym(s) => symbol_size(graph, bound, s) == Some(actual),
                Dim::Unknown => true,
            };
            if !fits {
                return false;
            }
        }
    }
    true
}

/// The size a symbolic dim is bound to: that of the first input dim declared with it.
fn symbol_size(graph: &Graph, bound: Inputs, symbol: &str) -> Option<usize> {
    graph.inputs().iter().enumerate().find_map(|(k, &id)| {
        let declared = &graph.value(id).ty.shape;
        let d = declared
            .iter()
            .position(|dim| matches!(dim, Dim::Sym(s) if s == symbol))?;
        bound.get(k)?.shape().get(d).copied()
    })
}

/// The inputs in graph order, checked against the declared types (reports the first
/// mismatch, naming the input).
fn order_inputs<'t>(graph: &Graph, inputs: &[(&str, &'t Tensor)]) -> Result<Vec<&'t Tensor>> {
    let mut bindings = HashMap::new();
    let mut ordered = Vec::with_capacity(graph.inputs().len());
    for (name, _) in inputs {
        if !graph
            .inputs()
            .iter()
            .any(|&id| graph.value(id).name == *name)
        {
            return Err(Error::Input {
                name: name.to_string(),
                message: "the model has no input of this name".to_string(),
            });
        }
    }
    for &id in graph.inputs() {
        let value = graph.value(id);
        let mut matching = inputs.iter().filter(|(n, _)| *n == value.name);
        let tensor = match (matching.next(), matching.next()) {
            (Some(&(_, t)), None) => t,
            (Some(_), Some(_)) => {
                return Err(Error::Input {
                    name: value.name.clone(),
                    message: "given twice".to_string(),
                });
            }
            (None, _) => {
                return Err(Error::Input {
                    name: value.name.clone(),
                    message: format!("missing (type {})", value.ty),
                });
            }
        };
        crate::interp::check_type(tensor, &value.ty, &mut bindings).map_err(|message| {
            Error::Input {
                name: value.name.clone(),
                message,
            }
        })?;
        ordered.push(tensor);
    }
    Ok(ordered)
}

/// Specialises, lowers and compiles the graph for these inputs. Returns the plan and the
/// kernel-cache hits and misses.
fn build_plan(
    graph: &Graph,
    inputs: &[&Tensor],
    options: &Compiler,
) -> Result<(Plan, usize, usize)> {
    let concrete = specialize::specialize(graph, inputs)?;
    let concrete = if options.optimize {
        crate::passes::Pipeline::standard().run(&concrete, None)?.0
    } else {
        concrete
    };
    let mut slots: Vec<Slot> = Vec::new();
    let mut slot_of: HashMap<ValueId, usize> = HashMap::new();
    for (k, &id) in concrete.inputs().iter().enumerate() {
        slot_of.insert(id, slots.len());
        slots.push(Slot::Input(graph_input_index(graph, &concrete, id, k)));
    }
    for (id, value) in concrete.values() {
        if let ValueDef::Const(c) = &value.def {
            slot_of.insert(id, slots.len());
            slots.push(Slot::Const(c.tensor.clone()));
        }
    }
    let mut pending = Vec::new();
    // The lowerings' constants and their offsets in the pool.
    let mut constants: Vec<(usize, Arc<Tensor>)> = Vec::new();
    let mut constant_bytes = 0;
    // What the kept loop IR holds in their place.
    let empty = Arc::new(Tensor::from_f32(vec![0], Vec::new())?);
    // Kernel fusion is one of the optimisations: without them every node is its own group.
    // The banded kernels lowered while their pairs were accepted, by consumer anchor: each
    // is lowered once.
    let mut banded: HashMap<NodeId, lower::Lowered> = HashMap::new();
    let groups =
        if options.optimize && options.fusion {
            // Expansions read only by a depthwise convolution, where the banded kernel takes
            // the pair, are computed inside it.
            fuse::attach_prologues(&concrete, fuse::fusion_groups(&concrete), |p, c| {
                match lower_banded(&concrete, p, c, options) {
                    Ok(Some(lowered)) => {
                        banded.insert(c.anchor(), lowered);
                        true
                    }
                    _ => false,
                }
            })
        } else {
            fuse::single_groups(&concrete)
        };
    // Views, concats written in place and in-place elementwise kernels (see [`alias`]).
    let aliases = if options.optimize {
        alias::Aliases::plan(&concrete, &groups)
    } else {
        alias::Aliases::none(groups.len())
    };
    // Tensors stored in blocks of 8 channels, and the lowerings of their writers and readers.
    let mut blocked_lowerings = if options.optimize && options.fusion {
        layout::plan(&concrete, &groups, &aliases, |g, blocked| {
            let group = &groups[g];
            let mut info = node_info(&concrete, group.anchor()).ok()?;
            info.options = lower_options(options);
            info.blocked = blocked;
            lower::lower_group(&info, group.epilogue()).ok()
        })
    } else {
        HashMap::new()
    };
    for (g, group) in groups.iter().enumerate() {
        let node_id = group.anchor();
        let node = concrete.node(node_id);
        // The group writes the outputs of its last node (the anchor's, if alone); the
        // values inside a fused group are never stored.
        let group_outputs = concrete.node(group.last()).outputs.clone();
        for &out in &group_outputs {
            let slot = match aliases.home(out) {
                Some(alias::Home::Shared { of, .. }) => {
                    slot_of.get(&of).copied().ok_or_else(|| {
                        Error::internal(format!(
                            "value {} aliases {}, which has no buffer",
                            concrete.value(out).name,
                            concrete.value(of).name
                        ))
                    })?
                }
                _ => {
                    let o = node_info_operand(&concrete, out)?;
                    slots.push(Slot::Temp {
                        dtype: o.dtype,
                        len: o.len(),
                    });
                    slots.len() - 1
                }
            };
            slot_of.insert(out, slot);
        }
        if aliases.skips(g) {
            continue;
        }
        // A group with a prologue never stores or loads blocks (see `layout::plan`).
        let lowered = match (group.prologue(), blocked_lowerings.remove(&g)) {
            (None, Some(lowered)) => lowered,
            (Some(_), _) => banded.remove(&node_id).ok_or_else(|| {
                Error::internal(format!(
                    "group {}: its prologue was accepted but not lowered",
                    group.describe(&concrete)
                ))
            })?,
            (None, None) => {
                let mut info = node_info(&concrete, node_id)?;
                info.options = lower_options(options);
                lower::lower_group(&info, group.epilogue())?
            }
        };
        let prologue = group.prologue().map(|(p, _)| concrete.node(p));
        let in_place = group_outputs.iter().any(|&out| {
            matches!(
                aliases.home(out),
                Some(alias::Home::Shared {
                    how: alias::Sharing::InPlace,
                    ..
                })
            )
        });
        if in_place && (lowered.kernels.len() != 1 || !lowered.scratch.is_empty()) {
            return Err(Error::internal(format!(
                "node {} ({}): written in place but lowered to {} kernels",
                node.name,
                node.op.name(),
                lowered.kernels.len()
            )));
        }
        let scratch_base = slots.len();
        for &(dtype, len) in &lowered.scratch {
            slots.push(Slot::Temp { dtype, len });
        }
        let about = KernelAbout {
            ops: group
                .nodes()
                .iter()
                .map(|&n| concrete.node(n).op.name())
                .collect::<Vec<_>>()
                .join("+"),
            shape: group_outputs
                .first()
                .and_then(|&v| concrete.value(v).ty.known_shape())
                .unwrap_or_default(),
            flops: anchor_flops(&concrete, node_id)
                + group
                    .prologue()
                    .map_or(0.0, |(p, _)| anchor_flops(&concrete, p)),
        };
        let kernel_count = lowered.kernels.len();
        for (index, mut lk) in lowered.kernels.into_iter().enumerate() {
            // The group's work is counted on its last kernel (the others copy or pad).
            let about = if index + 1 == kernel_count {
                about.clone()
            } else {
                KernelAbout {
                    flops: 0.0,
                    ..about.clone()
                }
            };
            let mut args = Vec::with_capacity(lk.args.len());
            for (buffer, arg) in lk.kernel.buffers.iter_mut().zip(&lk.args) {
                let slot = match *arg {
                    Arg::Input(i) => node
                        .inputs
                        .get(i)
                        .copied()
                        .flatten()
                        .and_then(|id| slot_of.get(&id).copied()),
                    Arg::Output(i) => group_outputs.get(i).and_then(|id| slot_of.get(id).copied()),
                    Arg::Prologue(i) => prologue
                        .and_then(|p| p.inputs.get(i).copied().flatten())
                        .and_then(|id| slot_of.get(&id).copied()),
                    Arg::Extra(i) => group
                        .extras()
                        .get(i)
                        .and_then(|id| slot_of.get(id).copied()),
                    Arg::Scratch(i) => (i < lowered.scratch.len()).then_some(scratch_base + i),
                    Arg::Const => match &mut buffer.kind {
                        lower::BufferKind::Const(t) => {
                            // Into the pool; the plan keeps the loop IR for inspection only,
                            // so the data lives on in the pool, not twice.
                            let bytes = t.len() * t.dtype().size_bytes();
                            let offset = constant_bytes;
                            constant_bytes = memory::align_up(offset + bytes);
                            constants.push((offset, std::mem::replace(t, empty.clone())));
                            slots.push(Slot::Pooled { offset, bytes });
                            Some(slots.len() - 1)
                        }
                        _ => None,
                    },
                };
                let slot = slot.ok_or_else(|| {
                    Error::internal(format!(
                        "kernel {}: buffer {} has a bad binding {arg:?}",
                        lk.kernel.name, buffer.name
                    ))
                })?;
                args.push(slot);
            }
            let opt = options.opt_level.unwrap_or_else(|| {
                if lk.kernel.schedule.is_some() {
                    OptLevel::None
                } else {
                    default_opt_level(&node.op)
                }
            });
            pending.push((lk.kernel, args, opt, about));
        }
    }

    let (compiled, hits, misses) = cache::get_or_compile(
        &pending
            .iter()
            .map(|(k, _, opt, _)| (k, *opt))
            .collect::<Vec<_>>(),
        options.kernel_cache,
    )?;
    let mut steps = Vec::with_capacity(pending.len());
    let mut kernels = Vec::with_capacity(pending.len());
    for ((kernel, args, opt, about), compiled) in pending.into_iter().zip(compiled) {
        let written: usize = kernel
            .buffers
            .iter()
            .filter(|b| b.kind == lower::BufferKind::Output)
            .map(|b| b.len)
            .sum();
        // A convolution or product may write little and compute much (384 → 64 channels
        // on 14×14: 12.5 K outputs, 9.6 MFLOP): its arithmetic counts too.
        let work = written.max((about.flops / FLOPS_PER_ELEMENT) as usize);
        steps.push(Step {
            name: kernel.name.clone(),
            kernel: compiled,
            args,
            parallel: kernel.parallel_loop().map(|l| (l.start, l.end, l.step)),
            work,
            opt,
            about,
        });
        kernels.push(kernel);
    }
    let outputs = concrete
        .outputs()
        .iter()
        .map(|&id| {
            let value = concrete.value(id);
            let slot = slot_of
                .get(&id)
                .copied()
                .ok_or_else(|| Error::internal(format!("output {} has no buffer", value.name)))?;
            Ok((
                value.name.clone(),
                slot,
                value.ty.known_shape().unwrap_or_default(),
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let (memory, offsets) = plan_memory(&concrete, &slots, &slot_of, &steps, &outputs, &aliases)?;
    Ok((
        Plan {
            graph: concrete,
            slots,
            steps,
            outputs,
            kernels,
            constants: pool_constants(constant_bytes, &constants),
            memory,
            offsets,
            groups,
        },
        hits,
        misses,
    ))
}

/// The lowering options of a plan's compile options.
fn lower_options(options: &Compiler) -> lower::LowerOptions {
    lower::LowerOptions {
        winograd: options.winograd,
        threads: options.threads,
    }
}

/// The banded kernel of `consumer`'s anchor computing `producer`'s group as its prologue
/// ([`lower::lower_banded`]), or `None` where it does not apply, checked first by the
/// expanded tensor's size.
fn lower_banded(
    concrete: &Graph,
    producer: &fuse::Group,
    consumer: &fuse::Group,
    options: &Compiler,
) -> Result<Option<lower::Lowered>> {
    let bytes = concrete
        .node(consumer.anchor())
        .inputs
        .first()
        .copied()
        .flatten()
        .and_then(|v| concrete.value(v).ty.known_shape())
        .map_or(0, |s| s.iter().product::<usize>() * 4);
    if bytes < lower::BANDED_MIN_BYTES {
        return Ok(None);
    }
    let mut p_info = node_info(concrete, producer.anchor())?;
    p_info.options = lower_options(options);
    let mut info = node_info(concrete, consumer.anchor())?;
    info.options = lower_options(options);
    lower::lower_banded(&p_info, producer.epilogue(), &info, consumer.epilogue())
}

/// Liveness and arena offsets for the plan's temporaries (see [`memory`]). A slot holding
/// a concat part lies inside the concat's buffer ([`alias::Home::Inside`]); every other
/// temporary is a buffer of its own, live while any slot inside it is. Returns the memory
/// plan and each slot's offset.
fn plan_memory(
    concrete: &Graph,
    slots: &[Slot],
    slot_of: &HashMap<ValueId, usize>,
    steps: &[Step],
    outputs: &[(String, usize, Vec<usize>)],
    aliases: &alias::Aliases,
) -> Result<(memory::MemoryPlan, Vec<Option<usize>>)> {
    let touched: Vec<Vec<usize>> = steps.iter().map(|s| s.args.clone()).collect();
    let output_slots: Vec<usize> = outputs.iter().map(|(_, slot, _)| *slot).collect();
    let live = memory::liveness(slots.len(), &touched, &output_slots);
    let slot = |value: ValueId| -> Result<usize> {
        slot_of.get(&value).copied().ok_or_else(|| {
            Error::internal(format!(
                "value {} has no buffer",
                concrete.value(value).name
            ))
        })
    };
    let temp_bytes = |s: usize| -> Result<usize> {
        match slots.get(s) {
            Some(Slot::Temp { dtype, len }) => {
                len.checked_mul(dtype.size_bytes()).ok_or_else(|| {
                    Error::internal(format!("temporary of {len} {dtype} elements is too large"))
                })
            }
            _ => Err(Error::internal(format!("slot {s} is not a temporary"))),
        }
    };
    // The slot each concat part lies in, and where.
    let mut parent: Vec<Option<(usize, usize)>> = vec![None; slots.len()];
    for (value, home) in aliases.homes() {
        if let alias::Home::Inside { block, byte_offset } = home {
            let (part, block_slot) = (slot(value)?, slot(block)?);
            if byte_offset + temp_bytes(part)? > temp_bytes(block_slot)? {
                return Err(Error::internal(format!(
                    "{} does not fit in {} at +{byte_offset}",
                    concrete.value(value).name,
                    concrete.value(block).name
                )));
            }
            parent[part] = Some((block_slot, byte_offset));
        }
    }
    // Each slot's buffer (the slot at the end of the chain of parents) and offset in it.
    let mut within = Vec::with_capacity(slots.len());
    for start in 0..slots.len() {
        let (mut s, mut offset) = (start, 0);
        let mut hops = 0;
        while let Some((p, o)) = parent[s] {
            (s, offset, hops) = (p, offset + o, hops + 1);
            if hops > slots.len() {
                return Err(Error::internal("concat parts nest in a cycle"));
            }
        }
        within.push((s, offset));
    }
    // A buffer lives from the first step touching any slot in it to the last needing one.
    let mut span: Vec<Option<(usize, usize)>> = vec![None; slots.len()];
    for (&(buffer, _), range) in within.iter().zip(&live) {
        if let Some((first, last)) = *range {
            span[buffer] = Some(match span[buffer] {
                Some((f, l)) => (f.min(first), l.max(last)),
                None => (first, last),
            });
        }
    }
    // Buffers are named after the value that owns the slot (aliases share it).
    let mut names: HashMap<usize, String> = slot_of
        .iter()
        .filter(|&(&id, _)| !matches!(aliases.home(id), Some(alias::Home::Shared { .. })))
        .map(|(&id, &slot)| (slot, concrete.value(id).name.clone()))
        .collect();
    let mut named = Vec::new();
    let mut planned_slots = Vec::new();
    for (s, (kind, range)) in slots.iter().zip(&span).enumerate() {
        let (Slot::Temp { .. }, Some((first, last))) = (kind, *range) else {
            continue;
        };
        let bytes = temp_bytes(s)?;
        let name = names.remove(&s).unwrap_or_else(|| {
            let step = steps.get(first).map_or("?", |s| s.name.as_str());
            format!("scratch of {step}")
        });
        named.push((name, memory::Lifetime { bytes, first, last }));
        planned_slots.push(s);
    }
    let mut plan = memory::MemoryPlan::new(named);
    let mut buffer_offsets = vec![None; slots.len()];
    for (&s, buffer) in planned_slots.iter().zip(&plan.buffers) {
        buffer_offsets[s] = Some(buffer.offset);
    }
    let offsets: Vec<Option<usize>> = within
        .iter()
        .zip(slots)
        .map(|(&(buffer, offset), kind)| match kind {
            Slot::Temp { .. } => buffer_offsets[buffer].map(|o| o + offset),
            _ => None,
        })
        .collect();
    for (value, home) in aliases.homes() {
        let name = |v: ValueId| concrete.value(v).name.as_str();
        let how = match home {
            alias::Home::Shared {
                of,
                how: alias::Sharing::View,
            } => format!("view of {}", name(of)),
            alias::Home::Shared {
                of,
                how: alias::Sharing::InPlace,
            } => format!("in place of {}", name(of)),
            alias::Home::Inside { block, byte_offset } => {
                format!("in concat {} at +{byte_offset}", name(block))
            }
        };
        let s = slot(value)?;
        let ty = &concrete.value(value).ty;
        let len: usize = ty.known_shape().unwrap_or_default().iter().product();
        plan.aliases.push(memory::AliasedValue {
            name: name(value).to_string(),
            how,
            offset: offsets.get(s).copied().flatten(),
            bytes: len * ty.dtype.size_bytes(),
        });
    }
    plan.alias_counts = aliases.counts();
    Ok((plan, offsets))
}

/// Cranelift's optimisation level for the kernels of an op, chosen by measurement (see
/// ARCHITECTURE.md, "Code generation"): `speed` for kernels whose inner loops recompute
/// index arithmetic that the e-graph optimiser hoists and shares (convolution, pooling,
/// matrix products), `none` for the rest, which compile faster and run no slower.
pub fn default_opt_level(op: &crate::graph::op::Op) -> OptLevel {
    use crate::graph::op::Op;
    match op {
        Op::Conv(_)
        | Op::ConvTranspose(_)
        | Op::MaxPool(_)
        | Op::AveragePool(_)
        | Op::Gemm { .. }
        | Op::MatMul => OptLevel::Speed,
        _ => OptLevel::None,
    }
}

/// A value of a specialised graph as lowering sees it.
fn node_info_operand(concrete: &Graph, id: ValueId) -> Result<Operand> {
    let value = concrete.value(id);
    Ok(Operand {
        dtype: value.ty.dtype,
        shape: value.ty.known_shape().ok_or_else(|| {
            Error::internal(format!("value {} has no concrete shape", value.name))
        })?,
        value: concrete.constant(id).map(|c| c.tensor.clone()),
    })
}

/// A node of a specialised graph (every shape concrete) as lowering sees it.
pub fn node_info(concrete: &Graph, node_id: NodeId) -> Result<NodeInfo<'_>> {
    let node = concrete.node(node_id);
    let operand = |id: ValueId| -> Result<Operand> {
        let value = concrete.value(id);
        Ok(Operand {
            dtype: value.ty.dtype,
            shape: value.ty.known_shape().ok_or_else(|| {
                Error::internal(format!("value {} has no concrete shape", value.name))
            })?,
            value: concrete.constant(id).map(|c| c.tensor.clone()),
        })
    };
    Ok(NodeInfo {
        blocked: lower::Blocked::default(),
        name: &node.name,
        op: &node.op,
        inputs: node
            .inputs
            .iter()
            .map(|i| i.map(operand).transpose())
            .collect::<Result<_>>()?,
        outputs: node
            .outputs
            .iter()
            .map(|&o| operand(o))
            .collect::<Result<_>>()?,
        options: lower::LowerOptions::default(),
    })
}

/// The position among the original graph's inputs of the specialised graph's input `id`.
fn graph_input_index(original: &Graph, concrete: &Graph, id: ValueId, fallback: usize) -> usize {
    let name = &concrete.value(id).name;
    original
        .inputs()
        .iter()
        .position(|&o| &original.value(o).name == name)
        .unwrap_or(fallback)
}
