//! Generated code never reads or writes outside its buffers: every kernel of every model in
//! `ir/`, the small ONNX models and the ONNX node tests runs with each buffer placed flush
//! against an inaccessible guard page, once at the buffer's end and once at its start. An
//! access one element out of bounds would fault and kill the test.

use std::path::{Path, PathBuf};

use fovea::codegen::{self, OptLevel};
use fovea::lower::{self, BufferKind, Kernel};
use fovea::runtime::{node_info, specialize::specialize};
use fovea::{Model, Tensor};

mod common;

/// A buffer of `len` bytes between two `PROT_NONE` pages, flush against one of them.
struct Guarded {
    base: *mut libc::c_void,
    total: usize,
    data: *mut u8,
}

impl Guarded {
    fn new(len: usize, flush_end: bool) -> Guarded {
        // SAFETY: plain anonymous mappings and protection changes on memory we own.
        unsafe {
            let page = libc::sysconf(libc::_SC_PAGESIZE) as usize;
            let pages = len.div_ceil(page).max(1);
            let total = (pages + 2) * page;
            let base = libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(base, libc::MAP_FAILED, "mmap failed");
            let bytes = base.cast::<u8>();
            assert_eq!(libc::mprotect(base, page, libc::PROT_NONE), 0);
            assert_eq!(
                libc::mprotect(bytes.add((pages + 1) * page).cast(), page, libc::PROT_NONE),
                0
            );
            let data = if flush_end {
                bytes.add((pages + 1) * page - len)
            } else {
                bytes.add(page)
            };
            Guarded { base, total, data }
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping made in `new`.
        unsafe { libc::munmap(self.base, self.total) };
    }
}

fn run_guarded(kernel: &Kernel, flush_end: bool) {
    let compiled = codegen::compile(&[(kernel, OptLevel::Speed)]).unwrap();
    let buffers: Vec<Guarded> = kernel
        .buffers
        .iter()
        .map(|b| {
            let bytes = b.len * b.dtype.size_bytes();
            let g = Guarded::new(bytes, flush_end);
            if let BufferKind::Const(t) = &b.kind {
                let src: &[u8] = match t.data() {
                    fovea::tensor::TensorData::F32(v) => unsafe {
                        std::slice::from_raw_parts(v.as_ptr().cast(), bytes)
                    },
                    fovea::tensor::TensorData::I64(v) => unsafe {
                        std::slice::from_raw_parts(v.as_ptr().cast(), bytes)
                    },
                };
                // SAFETY: `g.data` has room for `bytes` bytes.
                unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), g.data, bytes) };
            }
            g
        })
        .collect();
    let pointers: Vec<*mut u8> = buffers.iter().map(|g| g.data).collect();
    let (lo, hi) = kernel.parallel_loop().map_or((0, 0), |l| (l.start, l.end));
    // SAFETY: one pointer per kernel buffer, each with the declared length.
    unsafe { (compiled[0].func)(pointers.as_ptr(), lo, hi) };
}

/// Lowers every node of `model` specialised to `inputs` and runs each kernel guarded.
fn check(name: &str, model: &Model, inputs: &[Tensor]) -> usize {
    check_with(
        name,
        model,
        inputs,
        lower::LowerOptions::default(),
        lower::Blocked::default(),
    )
    .len()
}

/// [`check`] with the given lowering options, and convolutions with their tensors in
/// blocks of 8 channels as `blocked` says; the schedules of the kernels that ran.
fn check_with(
    name: &str,
    model: &Model,
    inputs: &[Tensor],
    options: lower::LowerOptions,
    blocked: lower::Blocked,
) -> Vec<Option<String>> {
    let refs: Vec<&Tensor> = inputs.iter().collect();
    let graph = specialize(model.graph(), &refs).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut schedules = Vec::new();
    for &node in graph.node_order() {
        let mut info = node_info(&graph, node).unwrap();
        info.options = options;
        if matches!(info.op, fovea::graph::Op::Conv(_)) {
            info.blocked = blocked;
        }
        let lowered = lower::lower_node(&info).unwrap_or_else(|e| panic!("{name}: {e}"));
        for lk in &lowered.kernels {
            run_guarded(&lk.kernel, true);
            run_guarded(&lk.kernel, false);
            schedules.push(lk.kernel.schedule.clone());
        }
    }
    schedules
}

fn zeros_for(model: &Model) -> Vec<Tensor> {
    model
        .inputs()
        .iter()
        .map(|(_, ty)| {
            let shape = ty.shape.iter().map(|d| d.known().unwrap_or(2)).collect();
            Tensor::zeros(ty.dtype, shape).unwrap()
        })
        .collect()
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn ir_models_and_small_onnx_models_stay_in_bounds() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("ir"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "fovea"))
        .collect();
    files.sort();
    for name in ["conv_bn_relu", "resblock", "mbv2_block", "tiny_cnn"] {
        files.push(root().join(format!("tests/data/models/{name}.onnx")));
    }
    for file in files {
        let model = Model::load(&file).unwrap();
        let kernels = check(&file.display().to_string(), &model, &zeros_for(&model));
        println!(
            "{}: {kernels} kernels ran against guard pages",
            file.display()
        );
    }
}

#[test]
fn node_tests_stay_in_bounds() {
    let dir = root().join("tests/data/onnx-node");
    let list = std::fs::read_to_string(dir.join("in-scope.txt")).unwrap();
    let mut kernels = 0;
    for name in list.lines().map(str::trim).filter(|n| !n.is_empty()) {
        let test = dir.join(name);
        let model = Model::load(test.join("model.onnx")).unwrap();
        let inputs: Vec<Tensor> = (0..model.inputs().len())
            .map(|i| {
                let bytes =
                    std::fs::read(test.join(format!("test_data_set_0/input_{i}.pb"))).unwrap();
                fovea::frontend::onnx::tensor_from_proto_bytes(&bytes).unwrap()
            })
            .collect();
        kernels += check(name, &model, &inputs);
    }
    println!("{kernels} node-test kernels ran against guard pages");
}

/// Both Winograd variants on shapes with tiles hanging over the right and bottom edges,
/// every padding up to 2, bands of one and of several tile rows, a batch of 2, and 1 to 3
/// threads' scratch slots (on several threads some layers transform their input in a
/// kernel of their own).
#[test]
fn winograd_kernels_stay_in_bounds() {
    // (input [N, C, H, W], output channels, pads [top, left, bottom, right])
    // The last two have weights too large for cache: transformed at run time.
    let cases: [([usize; 4], usize, [usize; 4]); 7] = [
        ([2, 5, 13, 11], 16, [1, 1, 1, 1]),
        ([1, 136, 7, 7], 136, [1, 1, 1, 1]),
        ([1, 96, 9, 10], 128, [1, 0, 2, 1]),
        ([1, 3, 12, 10], 8, [1, 0, 0, 1]),
        ([1, 4, 9, 9], 8, [2, 2, 2, 2]),
        ([1, 7, 7, 7], 24, [1, 1, 1, 1]),
        ([2, 9, 6, 21], 8, [0, 2, 1, 0]),
    ];
    let mut ran = 0;
    let mut runtime_weights = 0;
    let mut split_input = 0;
    for ([n, c, h, w], m, [top, left, bottom, right]) in cases {
        let (oh, ow) = (h + top + bottom - 2, w + left + right - 2);
        let text = format!(
            "graph w(x: f32[{n},{c},{h},{w}]) -> (y: f32[{n},{m},{oh},{ow}]) {{
  const w: f32[{m},{c},3,3] = normal(seed=1, std=0.3)
  const b: f32[{m}] = normal(seed=2, std=0.1)
  y: f32[{n},{m},{oh},{ow}] = conv(x, w, b) {{kernel_shape=[3, 3], pads=[{top}, {left}, {bottom}, {right}]}}
}}"
        );
        let model = Model::parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        for winograd in [lower::Winograd::F2x2, lower::Winograd::F4x4] {
            for threads in 1..=3 {
                let options = lower::LowerOptions { winograd, threads };
                let name = format!("{text} ({winograd:?}, {threads} threads)");
                let inputs = zeros_for(&model);
                let schedules =
                    check_with(&name, &model, &inputs, options, lower::Blocked::default());
                // One kernel, or the input transform's and the products'.
                let main = match &schedules[..] {
                    [Some(main)] => main,
                    [Some(input), Some(main)] if input.contains("input transform:") => {
                        split_input += 1;
                        main
                    }
                    _ => panic!("{name}: {schedules:?}"),
                };
                assert!(main.starts_with("winograd"), "{name}: {schedules:?}");
                runtime_weights += usize::from(main.contains("run time"));
                ran += 1;
            }
        }
    }
    println!(
        "{ran} Winograd layers ran against guard pages, {runtime_weights} transforming \
         their weights at run time, {split_input} with the input transform in a kernel of \
         its own"
    );
    assert!(
        split_input >= 4,
        "split input transforms exercised: {split_input}"
    );
    // 136 -> 136: both variants; 96 -> 128: F(4x4) only (its F(2x2) weights fit in cache).
    assert_eq!(
        runtime_weights,
        3 * 3,
        "run-time weight transforms exercised"
    );
}

/// Depthwise convolutions computed flat (small planes as one run of vectors across rows:
/// stride 1 and 2, "same" and "valid" padding, 3×3 and 5×5 kernels, runs of rows looped)
/// and row by row, with
/// vectors whose taps reach past the first and last element of a plane, a batch of 2.
#[test]
fn depthwise_kernels_stay_in_bounds() {
    // (input [N, C, H, W], [kernel, stride], pads [top, left, bottom, right], flat)
    type Case = ([usize; 4], [usize; 2], [usize; 4], bool);
    let cases: [Case; 10] = [
        ([1, 3, 7, 7], [3, 1], [1, 1, 1, 1], true),
        ([1, 2, 112, 112], [3, 2], [1, 1, 1, 1], true),
        ([1, 2, 28, 28], [3, 1], [1, 1, 1, 1], true),
        ([2, 2, 14, 14], [3, 1], [1, 1, 1, 1], true),
        ([1, 2, 9, 6], [3, 1], [0, 0, 0, 0], true),
        ([1, 2, 28, 28], [3, 2], [1, 1, 1, 1], true),
        ([1, 2, 14, 14], [5, 1], [2, 2, 2, 2], true),
        ([1, 2, 14, 14], [3, 2], [1, 1, 1, 1], false),
        ([1, 2, 40, 40], [3, 1], [1, 1, 1, 1], false),
        ([1, 2, 11, 13], [5, 1], [0, 2, 1, 0], true),
    ];
    for ([n, c, h, w], [k, s], [top, left, bottom, right], flat) in cases {
        let (oh, ow) = (
            (h + top + bottom - k) / s + 1,
            (w + left + right - k) / s + 1,
        );
        let text = format!(
            "graph d(x: f32[{n},{c},{h},{w}]) -> (y: f32[{n},{c},{oh},{ow}]) {{
  const w: f32[{c},1,{k},{k}] = normal(seed=1, std=0.3)
  const b: f32[{c}] = normal(seed=2, std=0.1)
  y: f32[{n},{c},{oh},{ow}] = conv(x, w, b) {{kernel_shape=[{k}, {k}], pads=[{top}, {left}, {bottom}, {right}], strides=[{s}, {s}], group={c}}}
}}"
        );
        let model = Model::parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let options = lower::LowerOptions::default();
        let schedules = check_with(
            &text,
            &model,
            &zeros_for(&model),
            options,
            lower::Blocked::default(),
        );
        let schedule: Vec<String> = schedules.into_iter().flatten().collect();
        let schedule = schedule.join("; ");
        assert_eq!(schedule.contains("flat"), flat, "{text}: {schedule}");
        assert!(schedule.starts_with("depthwise"), "{text}: {schedule}");
    }
}

/// The kernels computing a 1×1 expansion and the depthwise convolution reading it band by
/// band (`lower::lower_banded`, [`common::BANDED_CASES`]), with one and three scratch
/// slots.
#[test]
fn banded_kernels_stay_in_bounds() {
    if !codegen::wide_vectors() {
        return;
    }
    for (n, c, m, side, k, s, p) in common::BANDED_CASES {
        let out = (side + 2 * p - k) / s + 1;
        let text = format!(
            "graph b(x: f32[{n},{c},{side},{side}]) -> (y: f32[{n},{m},{out},{out}]) {{
  const we: f32[{m},{c},1,1] = normal(seed=1, std=0.3)
  const wd: f32[{m},1,{k},{k}] = normal(seed=2, std=0.3)
  e: f32[{n},{m},{side},{side}] = conv(x, we) {{kernel_shape=[1, 1]}}
  y: f32[{n},{m},{out},{out}] = conv(e, wd) {{kernel_shape=[{k}, {k}], pads=[{p}, {p}, {p}, {p}], strides=[{s}, {s}], group={m}}}
}}"
        );
        let model = Model::parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let inputs = zeros_for(&model);
        let refs: Vec<&Tensor> = inputs.iter().collect();
        let graph = specialize(model.graph(), &refs).unwrap();
        let [expand, depthwise] = graph.node_order()[..] else {
            panic!("{text}: two nodes expected");
        };
        for threads in [1, 3] {
            let options = lower::LowerOptions {
                threads,
                ..Default::default()
            };
            let mut e = node_info(&graph, expand).unwrap();
            e.options = options;
            let mut d = node_info(&graph, depthwise).unwrap();
            d.options = options;
            let none = lower::Epilogue::empty();
            let lowered = lower::lower_banded(&e, &none, &d, &none)
                .unwrap()
                .unwrap_or_else(|| panic!("{text}: not banded"));
            for lk in &lowered.kernels {
                run_guarded(&lk.kernel, true);
                run_guarded(&lk.kernel, false);
            }
        }
    }
}

/// 1×1 layers that read a copy of their input in blocks of 8 channels (many output-channel
/// blocks, long sums): the copy's kernel and the convolution's, with planes that end in a
/// partial tile (13×13, 5×5) and a batch of 2.
#[test]
fn blocked_input_kernels_stay_in_bounds() {
    // (batch, input channels, output channels, side)
    let cases = [(1, 512, 1000, 13), (2, 384, 1000, 5)];
    let mut blocked = 0;
    for (n, c, m, side) in cases {
        let text = format!(
            "graph p(x: f32[{n},{c},{side},{side}]) -> (y: f32[{n},{m},{side},{side}]) {{
  const w: f32[{m},{c},1,1] = normal(seed=1, std=0.3)
  const b: f32[{m}] = normal(seed=2, std=0.1)
  y: f32[{n},{m},{side},{side}] = conv(x, w, b) {{kernel_shape=[1, 1]}}
}}"
        );
        let model = Model::parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let inputs = zeros_for(&model);
        let schedules = check_with(
            &text,
            &model,
            &inputs,
            lower::LowerOptions::default(),
            lower::Blocked::default(),
        );
        blocked += usize::from(
            schedules
                .iter()
                .flatten()
                .any(|s| s.starts_with("input into blocks")),
        );
    }
    if codegen::wide_vectors() {
        assert_eq!(blocked, cases.len(), "blocked inputs exercised");
    }
}

/// Convolutions storing their output in blocks of 8 channels (the direct kernel over flat
/// rows and by rows, Winograd F(2×2), F(4×4) and F(7×7), batches of 1 and 2, planes of
/// partial tiles) and 1×1 ones loading their input so, every kernel flush against guard
/// pages.
#[test]
fn blocked_tensor_kernels_stay_in_bounds() {
    if !codegen::wide_vectors() {
        return;
    }
    // (batch, input channels, output channels, side, kernel, winograd, input blocked)
    let cases = [
        (1, 16, 32, 13, 1, lower::Winograd::Off, false),
        (2, 16, 48, 7, 3, lower::Winograd::Off, false),
        (1, 24, 16, 10, 3, lower::Winograd::F2x2, false),
        (2, 8, 32, 9, 3, lower::Winograd::F4x4, false),
        (1, 16, 16, 14, 3, lower::Winograd::F7x7, false),
        (1, 64, 16, 13, 1, lower::Winograd::Off, true),
        (2, 128, 24, 5, 1, lower::Winograd::Off, true),
    ];
    for (n, c, m, side, k, winograd, input) in cases {
        let pad = k / 2;
        let text = format!(
            "graph p(x: f32[{n},{c},{side},{side}]) -> (y: f32[{n},{m},{side},{side}]) {{
  const w: f32[{m},{c},{k},{k}] = normal(seed=1, std=0.3)
  const b: f32[{m}] = normal(seed=2, std=0.1)
  y: f32[{n},{m},{side},{side}] = conv(x, w, b) {{kernel_shape=[{k}, {k}], pads=[{pad}, {pad}, {pad}, {pad}]}}
}}"
        );
        let model = Model::parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let inputs = zeros_for(&model);
        let blocked = lower::Blocked {
            input,
            output: !input,
        };
        let options = lower::LowerOptions {
            winograd,
            threads: 2,
        };
        let schedules = check_with(&text, &model, &inputs, options, blocked);
        let word = if input {
            "input in blocks"
        } else {
            "output in blocks"
        };
        assert!(
            schedules.iter().flatten().any(|s| s.contains(word)),
            "{text}: {schedules:?}"
        );
    }
}

/// [`check_with`] on 1 and 2 threads with Winograd as `winograd` says and no tensors in
/// blocks; per thread count, how many of the kernels that ran say `phrase` in their
/// schedule.
fn schedules_saying(text: &str, winograd: lower::Winograd, phrase: &str) -> [usize; 2] {
    let model = Model::parse(text).unwrap();
    [1, 2].map(|threads| {
        let options = lower::LowerOptions { winograd, threads };
        let inputs = zeros_for(&model);
        let schedules = check_with(text, &model, &inputs, options, lower::Blocked::default());
        schedules
            .iter()
            .flatten()
            .filter(|s| s.contains(phrase))
            .count()
    })
}

/// Winograd's run-time weights transformed a chunk of input channels at a time (512
/// channels of F(4×4) points on 7×7), on 1 and 2 threads, flush against guard pages.
#[test]
fn chunked_run_time_winograd_weights_stay_in_bounds() {
    let text = "graph w(x: f32[1,512,7,7]) -> (y: f32[1,16,7,7]) {
  const w: f32[16,512,3,3] = normal(seed=1, std=0.3)
  const b: f32[16] = normal(seed=2, std=0.1)
  y: f32[1,16,7,7] = conv(x, w, b) {kernel_shape=[3, 3], pads=[1, 1, 1, 1]}
}";
    let chunked = schedules_saying(text, lower::Winograd::F4x4, "input channels at a time");
    assert_eq!(chunked, [1, 1], "kernels in chunks on 1 and 2 threads");
}

/// Direct kernels that read the next block's weights ahead (over 1 MB of weights on a
/// 7×7 output: a stride-2 3×3 layer and a 1×1 one over flat rows) keep those reads inside
/// the weights, the last block's included; so does a first layer reading its input ahead.
#[test]
fn read_ahead_kernels_stay_in_bounds() {
    let text = "graph r(x: f32[1,256,14,14]) -> (y: f32[1,128,7,7], z: f32[1,2560,7,7]) {
  const w: f32[128,256,3,3] = normal(seed=1, std=0.3)
  const b: f32[128] = normal(seed=2, std=0.1)
  y: f32[1,128,7,7] = conv(x, w, b) {kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]}
  const v: f32[2560,128,1,1] = normal(seed=3, std=0.3)
  const c: f32[2560] = normal(seed=4, std=0.1)
  z: f32[1,2560,7,7] = conv(y, v, c) {kernel_shape=[1, 1]}
}";
    let ahead = schedules_saying(text, lower::Winograd::Off, "weights read ahead");
    assert_eq!(
        ahead,
        [2, 2],
        "kernels reading weights ahead on 1 and 2 threads"
    );
    // A first layer reading the next row's input ahead, the last row's reads included.
    let text = "graph s(x: f32[1,3,224,224]) -> (y: f32[1,32,112,112]) {
  const w: f32[32,3,3,3] = normal(seed=1, std=0.3)
  const b: f32[32] = normal(seed=2, std=0.1)
  y: f32[1,32,112,112] = conv(x, w, b) {kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]}
}";
    let ahead = schedules_saying(text, lower::Winograd::Off, "input read ahead");
    assert_eq!(
        ahead,
        [1, 1],
        "kernels reading input ahead on 1 and 2 threads"
    );
}
