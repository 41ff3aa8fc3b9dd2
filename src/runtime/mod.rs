//! The runtime: compiled models, their execution plans, the rayon executor and the kernel
//! cache.
//!
//! [`Compiler::compile`] turns a [`Model`] into a [`CompiledModel`]. A model whose inputs
//! all have concrete shapes is specialised, lowered and compiled right away; a model with a
//! symbolic dimension (or a shape-like input) compiles on the first run of each new input
//! signature. Either way the result is a [`Plan`]: the kernels in execution order, each with
//! the buffers it reads and writes. Kernels come from the process-wide kernel cache, keyed
//! by their loop IR and the CPU features, so a kernel is compiled once per process however
//! many layers, models or plans use it.
//!
//! A kernel's top-level parallel loop is split into chunks across the compiled model's rayon
//! pool (`threads` workers); small kernels run on the calling thread. Chunking never changes
//! results: iterations of a parallel loop are independent, so outputs are bit-identical for
//! any thread count.

pub mod cache;
pub mod fuse;
pub mod memory;
pub mod specialize;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rayon::prelude::*;

use crate::codegen::CompiledKernel;
pub use crate::codegen::OptLevel;
use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId, ValueDef, ValueId};
use crate::lower::{self, Arg, NodeInfo, Operand};
use crate::model::Model;
use crate::tensor::{DType, Tensor};

/// Compile options; `Compiler::new().threads(4).compile(&model)`.
#[derive(Clone, Debug)]
pub struct Compiler {
    threads: usize,
    kernel_cache: bool,
    opt_level: Option<OptLevel>,
    optimize: bool,
    fusion: bool,
}

impl Default for Compiler {
    fn default() -> Compiler {
        Compiler::new()
    }
}

impl Compiler {
    /// Default options: one worker thread per available core.
    pub fn new() -> Compiler {
        Compiler {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel_cache: true,
            opt_level: None,
            optimize: true,
            fusion: true,
        }
    }

    /// Number of worker threads kernels may use (at least 1).
    pub fn threads(mut self, threads: usize) -> Compiler {
        self.threads = threads.max(1);
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
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(self.threads)
            .thread_name(|i| format!("fovea-worker-{i}"))
            .build()
            .map_err(|e| {
                Error::internal(format!("starting {} worker threads: {e}", self.threads))
            })?;
        let compiled = CompiledModel {
            graph: Arc::new(model.graph().clone()),
            value_inputs: specialize::value_inputs(model.graph()),
            threads: self.threads,
            options: self.clone(),
            pool,
            plans: Mutex::new(HashMap::new()),
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
    /// Plans built (one per input signature seen).
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
}

/// Where a kernel buffer lives during a run.
#[derive(Clone, Debug)]
enum Slot {
    /// The `k`-th graph input.
    Input(usize),
    /// Constant data.
    Const(Arc<Tensor>),
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
    /// Elements the kernel writes, to decide whether splitting pays.
    work: usize,
}

/// An execution plan for one input signature.
#[derive(Debug)]
pub struct Plan {
    graph: Graph,
    slots: Vec<Slot>,
    steps: Vec<Step>,
    /// Slot and name of each graph output.
    outputs: Vec<(String, usize, Vec<usize>)>,
    /// The loop IR of every kernel launch, for dumps.
    kernels: Vec<lower::Kernel>,
    /// Where the temporaries live in the arena.
    memory: memory::MemoryPlan,
    /// For each slot, its arena offset in bytes (`None` for inputs, constants and
    /// temporaries no kernel touches).
    offsets: Vec<Option<usize>>,
}

impl Plan {
    /// The specialised graph the plan computes.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The loop IR of every kernel launch, in order.
    pub fn kernels(&self) -> &[lower::Kernel] {
        &self.kernels
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

/// A compiled model: call [`CompiledModel::run`] from any number of threads.
pub struct CompiledModel {
    graph: Arc<Graph>,
    /// Inputs the plans specialise on by value (shape-like inputs).
    value_inputs: Vec<ValueId>,
    threads: usize,
    options: Compiler,
    pool: rayon::ThreadPool,
    plans: Mutex<HashMap<PlanKey, Arc<Plan>>>,
    stats: Mutex<CompileStats>,
}

impl std::fmt::Debug for CompiledModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledModel")
            .field("model", &self.graph.name)
            .field("threads", &self.threads)
            .finish()
    }
}

/// Identifies a plan: the shape of every input and the values of shape-like inputs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PlanKey {
    shapes: Vec<Vec<usize>>,
    values: Vec<Vec<u64>>,
}

/// Pointers to a run's buffers, shared by the threads of one kernel launch.
struct BufferTable(Vec<*mut u8>);

// SAFETY: the pointers stay valid for the whole launch (the buffers outlive it), and the
// kernels' parallel iterations write disjoint elements (the loop IR's parallel contract).
unsafe impl Sync for BufferTable {}

/// Kernels writing fewer elements than this run on the calling thread.
const SERIAL_THRESHOLD: usize = 16 * 1024;

impl CompiledModel {
    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Compilation counters so far.
    pub fn stats(&self) -> CompileStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
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

    /// The plan for the static input shapes, or for the given ones.
    pub fn plan_for(&self, inputs: &[&Tensor]) -> Result<Arc<Plan>> {
        let key = PlanKey {
            shapes: inputs.iter().map(|t| t.shape().to_vec()).collect(),
            values: self
                .graph
                .inputs()
                .iter()
                .zip(inputs)
                .filter(|(id, _)| self.value_inputs.contains(id))
                .map(|(_, t)| t.to_f64_vec().iter().map(|v| v.to_bits()).collect())
                .collect(),
        };
        let mut plans = self
            .plans
            .lock()
            .map_err(|_| Error::internal("plan cache lock poisoned"))?;
        if let Some(plan) = plans.get(&key) {
            return Ok(plan.clone());
        }
        let start = Instant::now();
        let (plan, hits, misses) = build_plan(&self.graph, inputs, &self.options)?;
        let plan = Arc::new(plan);
        plans.insert(key, plan.clone());
        if let Ok(mut stats) = self.stats.lock() {
            stats.plans += 1;
            stats.kernels = plan.steps.len();
            stats.cache_hits += hits;
            stats.cache_misses += misses;
            stats.kernels_compiled += misses;
            stats.compile_ms += start.elapsed().as_secs_f64() * 1e3;
            stats.arena_bytes = plan.memory.arena_bytes;
            stats.arena_lower_bound_bytes = plan.memory.lower_bound_bytes;
            stats.arena_unshared_bytes = plan.memory.unshared_bytes;
        }
        Ok(plan)
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
    pub fn run(&self, inputs: &[(&str, Tensor)]) -> Result<Vec<(String, Tensor)>> {
        let ordered = order_inputs(&self.graph, inputs)?;
        let plan = self.plan_for(&ordered)?;
        self.execute(&plan, &ordered)
    }

    fn execute(&self, plan: &Plan, inputs: &[&Tensor]) -> Result<Vec<(String, Tensor)>> {
        let mut arena = memory::Arena::new(plan.memory.arena_bytes);
        self.execute_in(plan, inputs, arena.bytes_mut())
    }

    /// Runs a plan with its temporaries in `arena` (at least the plan's arena bytes; its
    /// contents on entry do not matter).
    fn execute_in(
        &self,
        plan: &Plan,
        inputs: &[&Tensor],
        arena: &mut [u8],
    ) -> Result<Vec<(String, Tensor)>> {
        if arena.len() < plan.memory.arena_bytes {
            return Err(Error::internal(format!(
                "arena of {} bytes for a plan that needs {}",
                arena.len(),
                plan.memory.arena_bytes
            )));
        }
        let base = arena.as_mut_ptr();
        let mut pointers: Vec<*mut u8> = Vec::with_capacity(plan.slots.len());
        for (slot, offset) in plan.slots.iter().zip(&plan.offsets) {
            let ptr = match slot {
                Slot::Input(k) => data_ptr(inputs[*k]),
                Slot::Const(t) => data_ptr(t),
                // In bounds: the planner placed every temporary inside the arena, and
                // `arena` is at least that long (checked above).
                Slot::Temp { .. } => base.wrapping_add(offset.unwrap_or(0)),
            };
            pointers.push(ptr);
        }
        for step in &plan.steps {
            let table = BufferTable(step.args.iter().map(|&s| pointers[s]).collect());
            run_step(&self.pool, self.threads, step, &table);
        }
        let mut outputs = Vec::with_capacity(plan.outputs.len());
        for (name, slot, shape) in &plan.outputs {
            let tensor = match &plan.slots[*slot] {
                Slot::Input(k) => inputs[*k].clone(),
                Slot::Const(t) => Tensor::clone(t),
                Slot::Temp { dtype, len } => {
                    let offset = plan.offsets[*slot]
                        .ok_or_else(|| Error::internal(format!("output {name} has no buffer")))?;
                    let bytes = arena
                        .get(offset..offset + len * dtype.size_bytes())
                        .ok_or_else(|| {
                            Error::internal(format!("output {name} lies outside the arena"))
                        })?;
                    tensor_from_bytes(*dtype, shape.clone(), bytes)?
                }
            };
            outputs.push((name.clone(), tensor));
        }
        Ok(outputs)
    }
}

/// A tensor holding a copy of native-endian element bytes.
fn tensor_from_bytes(dtype: DType, shape: Vec<usize>, bytes: &[u8]) -> Result<Tensor> {
    match dtype {
        DType::F32 => Tensor::from_f32(
            shape,
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        DType::I64 => Tensor::from_i64(
            shape,
            bytes
                .chunks_exact(8)
                .map(|c| i64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect(),
        ),
    }
}

fn data_ptr(t: &Tensor) -> *mut u8 {
    // Kernels never store to input or constant buffers (the loop verifier rejects stores
    // to anything but outputs), so handing out a mutable pointer to shared data is sound.
    match t.data() {
        crate::tensor::TensorData::F32(v) => v.as_ptr() as *mut u8,
        crate::tensor::TensorData::I64(v) => v.as_ptr() as *mut u8,
    }
}

fn run_step(pool: &rayon::ThreadPool, threads: usize, step: &Step, table: &BufferTable) {
    let call = |lo: i64, hi: i64| {
        // SAFETY: the kernel passed the loop verifier for exactly these buffer lengths, the
        // table holds one live pointer per kernel buffer, and `lo..hi` is a sub-range of the
        // kernel's parallel loop aligned to its step.
        unsafe { (step.kernel.func)(table.0.as_ptr(), lo, hi) }
    };
    match step.parallel {
        Some((start, end, stride)) if threads > 1 && step.work >= SERIAL_THRESHOLD => {
            let trips = ((end - start).max(0) + stride - 1) / stride;
            let chunks = trips.min(threads as i64 * 4).max(1);
            pool.install(|| {
                (0..chunks).into_par_iter().for_each(|c| {
                    let lo = start + trips * c / chunks * stride;
                    let hi = (start + trips * (c + 1) / chunks * stride).min(end);
                    call(lo, hi);
                });
            });
        }
        Some((start, end, _)) => call(start, end),
        None => call(0, 0),
    }
}

/// The inputs in graph order, checked against the declared types.
fn order_inputs<'t>(graph: &Graph, inputs: &'t [(&str, Tensor)]) -> Result<Vec<&'t Tensor>> {
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
            (Some((_, t)), None) => t,
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
    // Kernel fusion is one of the optimisations: without them every node is its own group.
    let groups = if options.optimize && options.fusion {
        fuse::fusion_groups(&concrete)
    } else {
        fuse::single_groups(&concrete)
    };
    for group in &groups {
        let node_id = group.anchor();
        let node = concrete.node(node_id);
        let info = node_info(&concrete, node_id)?;
        // The group writes the outputs of its last node (the anchor's, if alone); the
        // values inside a fused group are never stored.
        let last = concrete.node(group.last());
        let group_outputs = if group.nodes().len() == 1 {
            node.outputs.clone()
        } else {
            last.outputs.clone()
        };
        for &out in &group_outputs {
            let o = node_info_operand(&concrete, out)?;
            slot_of.insert(out, slots.len());
            slots.push(Slot::Temp {
                dtype: o.dtype,
                len: o.len(),
            });
        }
        let lowered = lower::lower_group(&info, group.epilogue())?;
        let scratch_base = slots.len();
        for &(dtype, len) in &lowered.scratch {
            slots.push(Slot::Temp { dtype, len });
        }
        for lk in lowered.kernels {
            let mut args = Vec::with_capacity(lk.args.len());
            for (buffer, arg) in lk.kernel.buffers.iter().zip(&lk.args) {
                let slot = match *arg {
                    Arg::Input(i) => node
                        .inputs
                        .get(i)
                        .copied()
                        .flatten()
                        .and_then(|id| slot_of.get(&id).copied()),
                    Arg::Output(i) => group_outputs.get(i).and_then(|id| slot_of.get(id).copied()),
                    Arg::Extra(i) => group
                        .extras()
                        .get(i)
                        .and_then(|id| slot_of.get(id).copied()),
                    Arg::Scratch(i) => (i < lowered.scratch.len()).then_some(scratch_base + i),
                    Arg::Const => match &buffer.kind {
                        lower::BufferKind::Const(t) => {
                            slots.push(Slot::Const(t.clone()));
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
            let opt = options
                .opt_level
                .unwrap_or_else(|| default_opt_level(&node.op));
            pending.push((lk.kernel, args, opt));
        }
    }

    let (compiled, hits, misses) = cache::get_or_compile(
        &pending
            .iter()
            .map(|(k, _, opt)| (k, *opt))
            .collect::<Vec<_>>(),
        options.kernel_cache,
    )?;
    let mut steps = Vec::with_capacity(pending.len());
    let mut kernels = Vec::with_capacity(pending.len());
    for ((kernel, args, _), compiled) in pending.into_iter().zip(compiled) {
        let work = kernel
            .buffers
            .iter()
            .filter(|b| b.kind == lower::BufferKind::Output)
            .map(|b| b.len)
            .sum();
        steps.push(Step {
            name: kernel.name.clone(),
            kernel: compiled,
            args,
            parallel: kernel.parallel_loop().map(|l| (l.start, l.end, l.step)),
            work,
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
    let (memory, offsets) = plan_memory(&concrete, &slots, &slot_of, &steps, &outputs)?;
    Ok((
        Plan {
            graph: concrete,
            slots,
            steps,
            outputs,
            kernels,
            memory,
            offsets,
        },
        hits,
        misses,
    ))
}

/// Liveness and arena offsets for the plan's temporaries (see [`memory`]). Returns the
/// memory plan and each slot's offset.
fn plan_memory(
    concrete: &Graph,
    slots: &[Slot],
    slot_of: &HashMap<ValueId, usize>,
    steps: &[Step],
    outputs: &[(String, usize, Vec<usize>)],
) -> Result<(memory::MemoryPlan, Vec<Option<usize>>)> {
    let touched: Vec<Vec<usize>> = steps.iter().map(|s| s.args.clone()).collect();
    let output_slots: Vec<usize> = outputs.iter().map(|(_, slot, _)| *slot).collect();
    let live = memory::liveness(slots.len(), &touched, &output_slots);
    let mut names: HashMap<usize, String> = slot_of
        .iter()
        .map(|(&id, &slot)| (slot, concrete.value(id).name.clone()))
        .collect();
    let mut named = Vec::new();
    let mut planned_slots = Vec::new();
    for (slot, (kind, range)) in slots.iter().zip(&live).enumerate() {
        let (Slot::Temp { dtype, len }, Some((first, last))) = (kind, *range) else {
            continue;
        };
        let bytes = len.checked_mul(dtype.size_bytes()).ok_or_else(|| {
            Error::internal(format!("temporary of {len} {dtype} elements is too large"))
        })?;
        let name = names.remove(&slot).unwrap_or_else(|| {
            let step = steps.get(first).map_or("?", |s| s.name.as_str());
            format!("scratch of {step}")
        });
        named.push((name, memory::Lifetime { bytes, first, last }));
        planned_slots.push(slot);
    }
    let plan = memory::MemoryPlan::new(named);
    let mut offsets = vec![None; slots.len()];
    for (&slot, buffer) in planned_slots.iter().zip(&plan.buffers) {
        offsets[slot] = Some(buffer.offset);
    }
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
