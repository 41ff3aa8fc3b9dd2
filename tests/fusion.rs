//! Kernel fusion: snapshots of the fusion groups (`dump-ir --stage fused`) on small text-IR
//! graphs, including the cases that must not fuse, and the fused plans computing what the
//! unfused ones and the interpreter compute.
//! Re-bless with `INSTA_UPDATE=always cargo test --test fusion`.

use fovea::Model;
use fovea::runtime::Compiler;
use fovea::runtime::fuse::{fusion_groups, print_groups};
use fovea::{CompiledModel, Winograd};

mod common;
use common::{bits, inputs, named, relative_error};

/// The fusion groups of `text` as `--stage fused` prints them. Also runs the model fused
/// and unfused (with two threads) and checks both against the interpreter, and that fusion
/// launches no more kernels.
fn fused(text: &str) -> String {
    let model = Model::parse(text).unwrap();
    let groups = fusion_groups(model.graph());
    let printed = print_groups(model.graph(), &groups);

    let inputs = inputs(&model);
    let refs = named(&inputs);
    let expected = model.interpret(&refs).unwrap();
    let with = Compiler::new().threads(2).compile(&model).unwrap();
    let without = Compiler::new()
        .threads(2)
        .optimize(false)
        .compile(&model)
        .unwrap();
    for compiled in [&with, &without] {
        let got = compiled.run(&refs).unwrap();
        for ((name, a), (_, b)) in got.iter().zip(&expected) {
            assert_eq!(a.shape(), b.shape(), "{name}");
            let e = relative_error(a, b);
            assert!(e <= 1e-4, "{name}: relative error {e}");
        }
    }
    assert!(with.stats().kernels <= without.stats().kernels);
    printed
}

#[test]
fn conv_bias_relu_fuses() {
    insta::assert_snapshot!(fused(
        "graph g(x: f32[1,3,9,9]) -> (y: f32[1,8,9,9]) {
  const w: f32[8,3,3,3] = normal(seed=1, std=0.3)
  const b: f32[8] = normal(seed=2, std=0.1)
  conv: f32[1,8,9,9] = conv(x, w, b) {kernel_shape=[3, 3], pads=[1, 1, 1, 1]}
  y: f32[1,8,9,9] = relu(conv)
}"
    ));
}

#[test]
fn conv_then_channel_bias_then_clip_fuses() {
    insta::assert_snapshot!(fused(
        "graph g(x: f32[1,3,9,7]) -> (y: f32[1,8,9,7]) {
  const w: f32[8,3,3,3] = normal(seed=1, std=0.3)
  const b: f32[8,1,1] = normal(seed=2, std=0.5)
  const lo: f32[] = zeros
  const hi: f32[] = fill(0.5)
  conv: f32[1,8,9,7] = conv(x, w) {kernel_shape=[3, 3], pads=[1, 1, 1, 1]}
  bias: f32[1,8,9,7] = add(b, conv)
  y: f32[1,8,9,7] = clip(bias, lo, hi)
}"
    ));
}

#[test]
fn conv_residual_add_relu_fuses() {
    insta::assert_snapshot!(fused(
        "graph g(x: f32[1,8,10,10]) -> (y: f32[1,8,10,10]) {
  const w: f32[8,8,3,3] = normal(seed=1, std=0.1)
  const b: f32[8] = normal(seed=2, std=0.1)
  conv: f32[1,8,10,10] = conv(x, w, b) {kernel_shape=[3, 3], pads=[1, 1, 1, 1]}
  sum: f32[1,8,10,10] = add(conv, x)
  y: f32[1,8,10,10] = relu(sum)
}"
    ));
}

#[test]
fn strided_conv_with_scalar_operands_fuses() {
    // The general (strided) convolution kernel, scalar stores included (rows of 3).
    insta::assert_snapshot!(fused(
        "graph g(x: f32[1,2,7,7]) -> (y: f32[1,4,3,3]) {
  const w: f32[4,2,3,3] = normal(seed=1, std=0.3)
  const s: f32[] = fill(0.5)
  conv: f32[1,4,3,3] = conv(x, w) {kernel_shape=[3, 3], strides=[2, 2]}
  half: f32[1,4,3,3] = mul(conv, s)
  y: f32[1,4,3,3] = sub(s, half)
}"
    ));
}

#[test]
fn a_value_read_twice_does_not_fuse() {
    // conv is read by sigmoid and mul: conv stays alone; sigmoid + mul fuse, reading conv.
    insta::assert_snapshot!(fused(
        "graph g(x: f32[1,3,8,8]) -> (y: f32[1,4,8,8]) {
  const w: f32[4,3,1,1] = normal(seed=1, std=0.3)
  conv: f32[1,4,8,8] = conv(x, w) {kernel_shape=[1, 1]}
  gate: f32[1,4,8,8] = sigmoid(conv)
  y: f32[1,4,8,8] = mul(conv, gate)
}"
    ));
}

#[test]
fn a_graph_output_does_not_fuse() {
    insta::assert_snapshot!(fused(
        "graph g(x: f32[1,3,8,8]) -> (conv: f32[1,4,8,8], y: f32[1,4,8,8]) {
  const w: f32[4,3,3,3] = normal(seed=1, std=0.3)
  conv: f32[1,4,8,8] = conv(x, w) {kernel_shape=[3, 3], pads=[1, 1, 1, 1]}
  y: f32[1,4,8,8] = relu(conv)
}"
    ));
}

#[test]
fn elementwise_chains_fuse() {
    insta::assert_snapshot!(fused(
        "graph g(a: f32[2,3,5,7], b: f32[2,3,5,7]) -> (y: f32[2,3,5,7]) {
  const k: f32[3,1,1] = normal(seed=1, std=1.0)
  sum: f32[2,3,5,7] = add(a, b)
  scaled: f32[2,3,5,7] = mul(sum, k)
  act: f32[2,3,5,7] = tanh(scaled)
  y: f32[2,3,5,7] = div(act, a)
}"
    ));
}

#[test]
fn broadcasting_up_and_other_ops_do_not_fuse() {
    // relu's output [1,4,1,1] is broadcast up by add: not fused. max_pool takes no epilogue.
    insta::assert_snapshot!(fused(
        "graph g(x: f32[1,4,1,1], z: f32[1,4,6,6]) -> (y: f32[1,4,3,3]) {
  r: f32[1,4,1,1] = relu(x)
  s: f32[1,4,6,6] = add(r, z)
  p: f32[1,4,3,3] = max_pool(s) {kernel_shape=[2, 2], strides=[2, 2]}
  y: f32[1,4,3,3] = relu(p)
}"
    ));
}

/// Fusion removes kernel launches from the real networks without changing their results
/// (latency before and after: `fovea bench MODEL --no-optimize` against `fovea bench MODEL`).
#[test]
fn fusion_removes_launches_from_the_networks() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ir");
    for name in ["resnet18", "mobilenet_v2"] {
        let model = Model::load(dir.join(format!("{name}.fovea"))).unwrap();
        let inputs = inputs(&model);
        let refs = named(&inputs);
        let mut results = Vec::new();
        let mut kernels = Vec::new();
        for fusion in [false, true] {
            let compiled = Compiler::new()
                .threads(1)
                .fusion(fusion)
                .compile(&model)
                .unwrap();
            results.push(compiled.run(&refs).unwrap());
            kernels.push(compiled.stats().kernels);
        }
        println!(
            "{name}: {} kernel launches unfused, {} fused",
            kernels[0], kernels[1]
        );
        assert!(kernels[1] < kernels[0], "{name}: {kernels:?}");
        for ((n, a), (_, b)) in results[1].iter().zip(&results[0]) {
            let e = relative_error(a, b);
            assert!(e <= 1e-4, "{name} {n}: relative error {e}");
        }
    }
}

/// A strided convolution whose rows (7 or 14 outputs) end in a tile overlapping the one
/// before it, with a residual add and a ReLU fused: the last tile computes only its new
/// pixels and is stored first, the tile before it overwriting its other lanes. Both with
/// all input channels at once and in chunks (128 channels of a 3×3 kernel), on 1 and 2
/// threads, against the interpreter.
#[test]
fn strided_conv_with_a_partial_last_tile_and_a_residual_add() {
    for (c, h) in [(16, 14), (16, 28), (128, 14), (128, 28)] {
        let o = h / 2;
        let text = format!(
            "graph g(x: f32[1,{c},{h},{h}], r: f32[1,16,{o},{o}]) -> (y: f32[1,16,{o},{o}]) {{
  const w: f32[16,{c},3,3] = normal(seed=1, std=0.1)
  const b: f32[16] = normal(seed=2, std=0.1)
  conv: f32[1,16,{o},{o}] = conv(x, w, b) {{kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]}}
  sum: f32[1,16,{o},{o}] = add(conv, r)
  y: f32[1,16,{o},{o}] = relu(sum)
}}"
        );
        matches_the_interpreter(
            &text,
            Winograd::Auto,
            &format!("{c} channels, {h}x{h}"),
            |compiled| {
                assert_eq!(
                    compiled.stats().kernels,
                    1,
                    "conv, add and relu in one kernel"
                )
            },
        );
    }
}

/// Stride-2 convolutions computed by Winograd over their input's four phases (a
/// space-to-depth kernel, then a stride-1 convolution with ⌈K/2⌉ taps a side): every kernel
/// size that maps to 2, 3 or 4 taps, batches of 1 and 2, odd and even planes, padding on
/// both sides, a fused residual add and ReLU, 1 and 2 threads, against the interpreter.
#[test]
fn stride_two_convs_run_over_their_phases() {
    // (batch, taps, pad, input channels, output channels, rows, columns)
    let cases = [
        (1, 7, 3, 3, 64, 32, 32),
        (1, 7, 3, 3, 16, 37, 30),
        (2, 7, 3, 3, 16, 21, 19),
        (1, 8, 3, 3, 16, 30, 31),
        (1, 5, 2, 8, 16, 29, 29),
        (2, 5, 2, 8, 8, 17, 16),
        (1, 6, 2, 4, 8, 24, 26),
        (1, 3, 1, 16, 32, 28, 28),
        (1, 3, 1, 8, 16, 15, 17),
        (1, 4, 1, 8, 16, 20, 22),
    ];
    for (n, k, pad, c, m, h, w) in cases {
        let out = |len: usize| (len + 2 * pad - k) / 2 + 1;
        let (oh, ow) = (out(h), out(w));
        let text = format!(
            "graph g(x: f32[{n},{c},{h},{w}], r: f32[{n},{m},{oh},{ow}]) -> (y: f32[{n},{m},{oh},{ow}]) {{
  const w: f32[{m},{c},{k},{k}] = normal(seed=1, std=0.1)
  const b: f32[{m}] = normal(seed=2, std=0.1)
  conv: f32[{n},{m},{oh},{ow}] = conv(x, w, b) {{kernel_shape=[{k}, {k}], pads=[{pad}, {pad}, {pad}, {pad}], strides=[2, 2]}}
  sum: f32[{n},{m},{oh},{ow}] = add(conv, r)
  y: f32[{n},{m},{oh},{ow}] = relu(sum)
}}"
        );
        let r = k.div_ceil(2);
        matches_the_interpreter(
            &text,
            Winograd::F4x4,
            &format!("{k}x{k} stride 2, batch {n}, {c} channels, {h}x{w}"),
            |compiled| {
                let schedules = schedules(compiled);
                assert!(
                    schedules[0].starts_with("space-to-depth")
                        && schedules[1].contains(&format!("F(4x4,{r}x{r})")),
                    "{k}x{k} stride 2: {schedules:?}"
                );
            },
        );
    }
}

/// Stride-1 2×2 and 4×4 convolutions on Winograd F(4×4, r×r) (Toom–Cook matrices), with
/// symmetric and asymmetric padding, against the interpreter.
#[test]
fn even_kernels_take_toom_cook_winograd() {
    // (taps, pads top/left/bottom/right, input channels, output channels, rows, columns)
    let cases = [
        (4, [1, 1, 2, 2], 8, 16, 20, 21),
        (4, [3, 3, 3, 3], 4, 8, 9, 12),
        (4, [0, 0, 0, 0], 16, 8, 13, 11),
        (2, [0, 0, 1, 1], 8, 16, 17, 18),
        (2, [1, 1, 0, 0], 4, 8, 8, 9),
    ];
    for (k, [pt, pl, pb, pr], c, m, h, w) in cases {
        let (oh, ow) = (h + pt + pb - k + 1, w + pl + pr - k + 1);
        let text = format!(
            "graph g(x: f32[1,{c},{h},{w}]) -> (y: f32[1,{m},{oh},{ow}]) {{
  const w: f32[{m},{c},{k},{k}] = normal(seed=1, std=0.1)
  const b: f32[{m}] = normal(seed=2, std=0.1)
  conv: f32[1,{m},{oh},{ow}] = conv(x, w, b) {{kernel_shape=[{k}, {k}], pads=[{pt}, {pl}, {pb}, {pr}]}}
  y: f32[1,{m},{oh},{ow}] = relu(conv)
}}"
        );
        matches_the_interpreter(
            &text,
            Winograd::F4x4,
            &format!("{k}x{k} pads {:?}, {h}x{w}", [pt, pl, pb, pr]),
            |compiled| {
                let schedule = &schedules(compiled)[0];
                assert!(
                    schedule.contains(&format!("F(4x4,{k}x{k})")),
                    "{k}x{k}: {schedule}"
                );
            },
        );
    }
}

/// 3×3 stride-1 convolutions on F(7×7, 3×3): planes that split into whole 7×7 tiles and
/// planes that do not (partial tiles at the right and bottom), asymmetric padding,
/// batches of 2, weights transformed at compile time (few channels) and at run time (many),
/// a fused residual add and ReLU, against the interpreter. Its 81 points give it a larger
/// rounding error than F(4×4)'s (about 6× on random layers), hence the wider tolerance.
#[test]
fn seven_by_seven_winograd_tiles() {
    // (batch, pads top/left/bottom/right, input channels, output channels, rows, columns)
    let cases = [
        (1, [1, 1, 1, 1], 16, 16, 14, 14),
        (2, [1, 1, 1, 1], 8, 16, 7, 7),
        (1, [1, 1, 1, 1], 8, 8, 13, 20),
        (1, [0, 2, 1, 0], 16, 8, 23, 17),
        (2, [2, 2, 2, 2], 8, 16, 9, 10),
        (1, [1, 1, 1, 1], 128, 128, 14, 14),
        (1, [1, 1, 1, 1], 64, 64, 28, 28),
    ];
    let mut weights = Vec::new();
    for (n, [pt, pl, pb, pr], c, m, h, w) in cases {
        let (oh, ow) = (h + pt + pb - 2, w + pl + pr - 2);
        let text = format!(
            "graph g(x: f32[{n},{c},{h},{w}], r: f32[{n},{m},{oh},{ow}]) -> (y: f32[{n},{m},{oh},{ow}]) {{
  const w: f32[{m},{c},3,3] = normal(seed=1, std=0.1)
  const b: f32[{m}] = normal(seed=2, std=0.1)
  conv: f32[{n},{m},{oh},{ow}] = conv(x, w, b) {{kernel_shape=[3, 3], pads=[{pt}, {pl}, {pb}, {pr}]}}
  sum: f32[{n},{m},{oh},{ow}] = add(conv, r)
  y: f32[{n},{m},{oh},{ow}] = relu(sum)
}}"
        );
        let what = format!(
            "batch {n}, {c} channels, pads {:?}, {h}x{w}",
            [pt, pl, pb, pr]
        );
        matches_within(&text, Winograd::F7x7, &what, 1e-4, |compiled| {
            let schedule = &schedules(compiled)[0];
            assert!(schedule.contains("F(7x7,3x3)"), "{what}: {schedule}");
            weights.push(schedule.contains("at run time"));
        });
    }
    assert!(
        weights.contains(&true) && weights.contains(&false),
        "weights transformed both at compile time and at run time"
    );
}

/// Stride-2 3×3 and 4×4 convolutions as 2×2 ones over their input's four phases on
/// F(7×7, 2×2): output planes that split into whole 7×7 tiles and planes that do not,
/// padding 0 and 1, a batch of 2, weights transformed at compile time (few channels) and
/// at run time (many: the 2×2 phase taps through `G g Gᵀ`), against the interpreter.
#[test]
fn strided_convolutions_take_seven_by_seven_winograd_over_their_phases() {
    // (batch, taps, pad, input channels, output channels, input side)
    let cases = [
        (1, 3, 1, 8, 16, 28),
        (2, 3, 1, 8, 8, 17),
        (1, 3, 0, 16, 8, 31),
        (1, 4, 1, 8, 16, 30),
        (1, 3, 1, 64, 64, 56),
        (1, 4, 1, 64, 32, 28),
    ];
    let mut weights = Vec::new();
    for (n, k, pad, c, m, side) in cases {
        let text = conv_relu(n, [c, m], side, [k, pad, 2], 0.1);
        let what = format!("batch {n}, {k}x{k} pad {pad}, {c} -> {m} channels, {side}x{side}");
        matches_within(&text, Winograd::F7x7, &what, 1e-4, |compiled| {
            let schedule = &schedules(compiled);
            assert!(
                schedule[0].starts_with("space-to-depth"),
                "{what}: {schedule:?}"
            );
            // The products' kernel is the last (on 2 threads the input transform may have
            // a kernel of its own before it).
            let last = schedule.last().unwrap();
            assert!(last.contains("F(7x7,2x2)"), "{what}: {schedule:?}");
            weights.push(last.contains("at run time"));
        });
    }
    assert!(
        weights.contains(&true) && weights.contains(&false),
        "weights transformed both at compile time and at run time"
    );
}

/// On several threads, a Winograd layer whose tasks would each repeat the input transform
/// (few bands, output channels split into groups) gives it a kernel of its own, split over
/// bands and chunks of input channels, and its products one over bands and output-channel
/// groups of any size: the outputs are one thread's, bit for bit, at 2, 3, 4 and 16
/// threads, and the interpreter's within 1e-4 of the largest output. (The stride-2 case
/// forces F(7×7, 2×2) over its phases: the model may find the direct kernel cheaper.)
#[test]
fn winograd_input_transforms_split_across_threads() {
    // (batch, input channels, output channels, input side, stride, algorithm)
    let cases = [
        (1, 64, 64, 56, 1, Winograd::Auto),
        (1, 128, 128, 28, 1, Winograd::Auto),
        (1, 256, 256, 14, 1, Winograd::Auto),
        (1, 512, 512, 7, 1, Winograd::Auto),
        (1, 64, 128, 56, 2, Winograd::F7x7),
        (2, 9, 16, 13, 1, Winograd::F2x2),
        (1, 20, 24, 30, 1, Winograd::F4x4),
    ];
    let mut split = Vec::new();
    for (n, c, m, side, stride, winograd) in cases {
        let text = conv_relu(n, [c, m], side, [3, 1, stride], 0.05);
        let what = format!("batch {n}, {c} -> {m} channels, {side}x{side}, stride {stride}");
        let model = Model::parse(&text).unwrap();
        let inputs = inputs(&model);
        let refs = named(&inputs);
        let compile = |threads| {
            Compiler::new()
                .threads(threads)
                .winograd(winograd)
                .compile(&model)
                .unwrap()
        };
        let one = compile(1);
        assert!(
            schedules(&one).iter().any(|s| s.starts_with("winograd")),
            "{what}: {:?}",
            schedules(&one)
        );
        let expected = one.run(&refs).unwrap();
        let interpreted = model.interpret(&refs).unwrap();
        let e = relative_error(&expected[0].1, &interpreted[0].1);
        assert!(e <= 1e-4, "{what}: error {e} against the interpreter");
        for threads in [2, 3, 4, 16] {
            let compiled = compile(threads);
            let schedule = schedules(&compiled);
            if let [.., input, products] = &schedule[..]
                && input.contains("input transform:")
            {
                assert!(
                    products.contains("kernel of its own"),
                    "{what}: {schedule:?}"
                );
                split.push((what.clone(), threads));
            }
            assert_eq!(
                bits(&compiled.run(&refs).unwrap()),
                bits(&expected),
                "{what}, {threads} threads"
            );
        }
    }
    // ResNet-18's layers 2 and 3 on 16 threads split: one band each (the cost model decides
    // elsewhere; the 56×56 layer has 7 bands, and with 256-bit products its repeated input
    // transform may cost less than the split's launch and shared reads).
    println!("input transforms split: {split:?}");
    for side in [28, 14] {
        assert!(
            split
                .iter()
                .any(|(what, t)| *t == 16 && what.contains(&format!(", {side}x{side}, stride 1"))),
            "{side}x{side} on 16 threads: {split:?}"
        );
    }
}

/// A square `k × k` convolution (`[taps, pad, stride]`, the same on both axes) with bias
/// and ReLU from `c` to `m` channels on a batch of `n` `side × side` planes, its weights
/// drawn with standard deviation `std`, as text IR.
fn conv_relu(
    n: usize,
    [c, m]: [usize; 2],
    side: usize,
    [k, pad, stride]: [usize; 3],
    std: f64,
) -> String {
    let out = (side + 2 * pad - k) / stride + 1;
    format!(
        "graph g(x: f32[{n},{c},{side},{side}]) -> (y: f32[{n},{m},{out},{out}]) {{
  const w: f32[{m},{c},{k},{k}] = normal(seed=1, std={std})
  const b: f32[{m}] = normal(seed=2, std=0.1)
  conv: f32[{n},{m},{out},{out}] = conv(x, w, b) {{kernel_shape=[{k}, {k}], pads=[{pad}, {pad}, {pad}, {pad}], strides=[{stride}, {stride}]}}
  y: f32[{n},{m},{out},{out}] = relu(conv)
}}"
    )
}

/// Compiles `text` for 1 and 2 threads with `winograd`, shows each compiled model to
/// `inspect`, runs it on seeded inputs and checks its output against the interpreter's
/// within 1e-5 of the largest magnitude; `what` names the case in failures.
fn matches_the_interpreter(
    text: &str,
    winograd: Winograd,
    what: &str,
    inspect: impl FnMut(&CompiledModel),
) {
    matches_within(text, winograd, what, 1e-5, inspect);
}

/// [`matches_the_interpreter`] within `tolerance`.
fn matches_within(
    text: &str,
    winograd: Winograd,
    what: &str,
    tolerance: f64,
    mut inspect: impl FnMut(&CompiledModel),
) {
    let model = Model::parse(text).unwrap();
    let inputs = inputs(&model);
    let refs = named(&inputs);
    let expected = model.interpret(&refs).unwrap();
    for threads in [1, 2] {
        let compiled = Compiler::new()
            .threads(threads)
            .winograd(winograd)
            .compile(&model)
            .unwrap();
        inspect(&compiled);
        let got = compiled.run(&refs).unwrap();
        let e = relative_error(&got[0].1, &expected[0].1);
        assert!(e <= tolerance, "{what}, {threads} threads: error {e}");
    }
}

/// The schedule lines of a compiled model's kernels, in launch order.
fn schedules(compiled: &CompiledModel) -> Vec<String> {
    compiled
        .static_plan()
        .unwrap()
        .kernels()
        .iter()
        .filter_map(|k| k.schedule.clone())
        .collect()
}

/// Depthwise convolutions with MobileNetV2's fused clip and with a residual add and ReLU,
/// computed flat (small planes as one run of vectors across rows, including "valid"
/// padding and stride 2; the runs of rows that read alike looped where there are enough of
/// them) and row by row, against the interpreter.
#[test]
fn depthwise_planes_flat_and_by_rows() {
    // (batch, channels, side, kernel, stride, pad, flat, looped)
    let cases = [
        (1, 6, 7, 3, 1, 1, true, false),
        (2, 5, 14, 3, 1, 1, true, true),
        (1, 4, 28, 3, 1, 1, true, true),
        (1, 4, 28, 3, 2, 1, true, true),
        (1, 3, 10, 3, 1, 0, true, true),
        (1, 4, 14, 5, 1, 2, true, true),
        (1, 3, 14, 3, 2, 1, false, false),
        (1, 2, 112, 3, 2, 1, true, true),
        (1, 2, 112, 3, 1, 1, false, false),
        (2, 3, 48, 3, 1, 1, false, false),
        // Stride 2 with 5 taps a row: two tap pairs sharing their loads, a last even tap.
        (1, 3, 20, 5, 2, 2, true, true),
        (1, 2, 64, 5, 2, 2, true, true),
        (1, 3, 30, 5, 2, 2, false, false),
    ];
    for (n, c, side, k, stride, pad, flat, looped) in cases {
        let out = (side + 2 * pad - k) / stride + 1;
        let shape = format!("{n},{c},{out},{out}");
        let head = format!(
            "  const w: f32[{c},1,{k},{k}] = normal(seed=1, std=0.3)
  const b: f32[{c}] = normal(seed=2, std=0.1)
  const lo: f32[] = zeros
  const hi: f32[] = fill(6.0)
  conv: f32[{shape}] = conv(x, w, b) {{kernel_shape=[{k}, {k}], pads=[{pad}, {pad}, {pad}, {pad}], strides=[{stride}, {stride}], group={c}}}"
        );
        let clip = format!(
            "graph g(x: f32[{n},{c},{side},{side}]) -> (y: f32[{shape}]) {{
{head}
  y: f32[{shape}] = clip(conv, lo, hi)
}}"
        );
        let residual = format!(
            "graph g(x: f32[{n},{c},{side},{side}], r: f32[{shape}]) -> (y: f32[{shape}]) {{
{head}
  sum: f32[{shape}] = add(conv, r)
  y: f32[{shape}] = relu(sum)
}}"
        );
        for text in [clip, residual] {
            let what = format!("{n}x{c}x{side}x{side}, {k}x{k} stride {stride} pad {pad}");
            matches_the_interpreter(&text, Winograd::Auto, &what, |compiled| {
                let schedule = &schedules(compiled)[0];
                assert!(schedule.starts_with("depthwise"), "{what}: {schedule}");
                assert_eq!(schedule.contains("flat"), flat, "{what}: {schedule}");
                assert_eq!(schedule.contains("looped"), looped, "{what}: {schedule}");
                // With 256-bit vectors, the row interiors of "same"-padded stride-1 planes
                // of 14 and more pair their vectors into `f32x8`.
                if fovea::codegen::wide_vectors() && flat && stride == 1 && pad == 1 && side >= 14 {
                    assert!(schedule.contains("as f32x8"), "{what}: {schedule}");
                }
            });
        }
    }
}

/// With 256-bit vectors, 16-channel blocks whose sums have 256 terms or more take 6-pixel
/// tiles (12 accumulators): 1×1 layers on flat planes (169 pixels: 28 tiles and an
/// overlapping last one), rows of 27, a padded 3×3 (border tiles, rows of 11 and 7 ending
/// in overlapping tiles), batch 2, with a residual add; shorter sums keep 4-pixel tiles.
/// Every output equals the interpreter's on 1 and 2 threads.
#[test]
fn six_pixel_tiles_for_long_sums() {
    // (batch, input channels, output channels, side, [kernel, pad, stride], six pixels)
    let cases = [
        (1, 512, 64, 13, [1, 0, 1], true),
        (2, 256, 32, 27, [1, 0, 1], true),
        (1, 64, 32, 11, [3, 1, 1], true),
        (1, 48, 32, 14, [3, 1, 2], true),
        (1, 192, 32, 28, [1, 0, 1], false),
        (1, 3, 64, 33, [3, 0, 2], false),
    ];
    for (n, c, m, side, geometry, six) in cases {
        let what = format!("{n}x{c} -> {m}, {side}x{side}, {geometry:?}");
        let [k, pad, stride] = geometry;
        let out = (side + 2 * pad - k) / stride + 1;
        let shape = format!("{n},{m},{out},{out}");
        let residual = format!(
            "graph g(x: f32[{n},{c},{side},{side}], r: f32[{shape}]) -> (y: f32[{shape}]) {{
  const w: f32[{m},{c},{k},{k}] = normal(seed=1, std=0.05)
  const b: f32[{m}] = normal(seed=2, std=0.1)
  conv: f32[{shape}] = conv(x, w, b) {{kernel_shape=[{k}, {k}], pads=[{pad}, {pad}, {pad}, {pad}], strides=[{stride}, {stride}]}}
  sum: f32[{shape}] = add(conv, r)
  y: f32[{shape}] = relu(sum)
}}"
        );
        for text in [conv_relu(n, [c, m], side, geometry, 0.05), residual] {
            matches_the_interpreter(&text, Winograd::Off, &what, |compiled| {
                let schedule = &schedules(compiled)[0];
                if fovea::codegen::wide_vectors() {
                    let tile = if six {
                        "tile 6 pixels x"
                    } else {
                        "tile 4 pixels x"
                    };
                    assert!(schedule.contains(tile), "{what}: {schedule}");
                }
            });
        }
    }
}

/// With 256-bit vectors, ungrouped convolutions whose output channels are not a multiple of
/// 16 or 24 (a 1000-class 1×1 classifier, 88, 100 or 200 channels), and multiples of 16
/// with long sums (160 or 256 channels), take the direct kernel with the channels padded to
/// whole 16- or 24-channel blocks; every output equals the interpreter's
/// within 1e-4 of the largest, the padding's clamped stores included (the last channel is
/// stored after them), on 1 and 2 threads.
#[test]
fn padded_output_channels_take_the_direct_kernel() {
    // (input channels, output channels, side, [kernel, pad, stride])
    let cases = [
        (64, 1000, 13, [1, 0, 1]),
        (16, 88, 9, [3, 1, 1]),
        (8, 100, 10, [3, 1, 2]),
        (24, 200, 7, [1, 0, 1]),
        // 16-channel multiples padded to 24-channel blocks (at most 6% more, sums of 256+
        // terms): MobileNetV2's 7×7 projections, a strided 3×3.
        (320, 160, 7, [1, 0, 1]),
        (32, 256, 9, [3, 1, 2]),
    ];
    for (c, m, side, geometry) in cases {
        let text = conv_relu(1, [c, m], side, geometry, 0.1);
        let what = format!("{c} -> {m} channels, {side}x{side}, {geometry:?}");
        let model = Model::parse(&text).unwrap();
        let inputs = inputs(&model);
        let refs = named(&inputs);
        let interpreted = model.interpret(&refs).unwrap();
        for threads in [1, 2] {
            let compiled = Compiler::new()
                .threads(threads)
                .winograd(Winograd::Off)
                .compile(&model)
                .unwrap();
            if fovea::codegen::wide_vectors() {
                let schedule = schedules(&compiled);
                assert!(
                    schedule[0].starts_with("direct, tile ")
                        && schedule[0].contains("f32x8 accumulators"),
                    "{what}: {schedule:?}"
                );
                if m % 16 == 0 {
                    assert!(
                        schedule[0].contains("x 24 channels"),
                        "{what}: {schedule:?}"
                    );
                }
            }
            let out = compiled.run(&refs).unwrap();
            let e = relative_error(&out[0].1, &interpreted[0].1);
            assert!(e <= 1e-4, "{what}, {threads} threads: error {e}");
        }
    }
}

/// With 256-bit vectors, 1×1 layers with many output-channel blocks and long sums (a
/// 1000-class classifier) read a copy of their input in blocks of 8 channels, made by a
/// kernel of its own: planes whose pixels are whole tiles and ones with a partial last tile
/// (25 and 13×13 pixels), batches of 1 and 2; layers with few blocks read the input as it
/// is. Against the interpreter, 1 and 2 threads.
#[test]
fn wide_classifiers_read_their_input_in_channel_blocks() {
    // (batch, input channels, output channels, side, blocked)
    let cases = [
        (1, 512, 1000, 13, true),
        (2, 384, 1000, 5, true),
        (1, 256, 400, 6, false),
        (1, 512, 64, 13, false),
    ];
    for (n, c, m, side, blocked) in cases {
        let text = conv_relu(n, [c, m], side, [1, 0, 1], 0.05);
        let what = format!("batch {n}, {c} -> {m} channels, {side}x{side}");
        matches_within(&text, Winograd::Auto, &what, 1e-4, |compiled| {
            let schedule = schedules(compiled);
            let copies = schedule
                .iter()
                .filter(|s| s.starts_with("input into blocks"))
                .count();
            let reads = schedule
                .iter()
                .filter(|s| s.contains("input in blocks of 8"))
                .count();
            let expected = usize::from(blocked && fovea::codegen::wide_vectors());
            assert_eq!(
                (copies, reads),
                (expected, expected),
                "{what}: {schedule:?}"
            );
        });
    }
}

/// With 256-bit vectors, layers whose output planes start at few offsets within a page
/// (112×112) take 16-channel tiles where 24 would divide (56×56 keeps 24); the sums match
/// the interpreter either way, on 1 and 2 threads.
#[test]
fn aliased_output_planes_take_narrower_tiles() {
    // 96 input channels: fewer would take the pointwise kernel on 56×56.
    for (side, wide_tile) in [(112, "x 16 channels"), (56, "x 24 channels")] {
        let text = conv_relu(1, [96, 96], side, [1, 0, 1], 0.1);
        let what = format!("96 -> 96 channels, {side}x{side}");
        matches_within(&text, Winograd::Auto, &what, 1e-4, |compiled| {
            let schedule = schedules(compiled);
            if fovea::codegen::wide_vectors() {
                assert!(schedule[0].contains(wide_tile), "{what}: {schedule:?}");
            }
        });
    }
}

/// 1×1 layers on small planes (7×7: MobileNetV2's last stage) visit their input channels
/// in chunks whose inputs and weights together stay in L1, and so do layers whose planes
/// start at few offsets within a page (112×112: at most 16 channels a chunk), summing
/// through the scratch rows; the sums still match the interpreter.
#[test]
fn small_plane_pointwise_layers_sum_in_chunks() {
    // (input channels, output channels, side)
    for (c, m, side) in [(320, 1280, 7), (960, 160, 7), (160, 96, 5), (32, 16, 112)] {
        let text = conv_relu(1, [c, m], side, [1, 0, 1], 0.05);
        let what = format!("{c} -> {m} channels, {side}x{side}");
        matches_within(&text, Winograd::Auto, &what, 1e-4, |compiled| {
            let schedule = schedules(compiled);
            // The convolution's (after the copy of its input in channel blocks, if any).
            let chunk: usize = schedule
                .last()
                .unwrap_or_else(|| panic!("{what}: no kernels"))
                .rsplit("chunks of ")
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{what}: {schedule:?}"));
            assert!(chunk < c && c % chunk == 0, "{what}: {schedule:?}");
            assert!(side != 112 || chunk <= 16, "{what}: {schedule:?}");
        });
    }
}

/// 1×1 layers with few input channels on planes of 512 pixels or more take the pointwise
/// kernel (pixel vectors, 6 × 16 or 4 × 24 tiles): planes that are whole tiles and planes
/// whose last tile overlaps the one before, batches of 1 and 2, with a bias and ReLU and
/// with MobileNetV2's clip or a residual add fused; 112×112 planes (few page offsets) and
/// planes under 512 pixels keep the direct kernel. Against the interpreter, 1 and 2
/// threads.
#[test]
fn pointwise_layers_vectorise_along_the_pixels() {
    // (batch, input channels, output channels, side, pointwise)
    let cases = [
        (1, 16, 96, 56, true),
        (2, 24, 16, 27, true),
        (1, 32, 20, 23, true),
        (1, 64, 36, 25, true),
        (2, 8, 12, 24, true),
        (1, 16, 96, 112, false),
        (1, 32, 192, 14, false),
        (1, 96, 24, 28, false),
    ];
    for (n, c, m, side, pointwise) in cases {
        let text = conv_relu(n, [c, m], side, [1, 0, 1], 0.1);
        let what = format!("batch {n}, {c} -> {m} channels, {side}x{side}");
        matches_within(&text, Winograd::Auto, &what, 1e-5, |compiled| {
            let schedule = schedules(compiled);
            // (With 128-bit vectors a layer of 20 channels has no register-blocked kernel.)
            let takes = schedule.first().is_some_and(|s| s.starts_with("pointwise"));
            assert_eq!(
                takes,
                pointwise && fovea::codegen::wide_vectors(),
                "{what}: {schedule:?}"
            );
        });
    }
    for (c, m, side) in [(24, 144, 28), (16, 24, 23)] {
        let residual = format!(
            "graph g(x: f32[1,{c},{side},{side}], r: f32[1,{m},{side},{side}]) -> (y: f32[1,{m},{side},{side}]) {{
  const w: f32[{m},{c},1,1] = normal(seed=1, std=0.1)
  const b: f32[{m}] = normal(seed=2, std=0.1)
  const lo: f32[] = fill(0.0)
  const hi: f32[] = fill(6.0)
  conv: f32[1,{m},{side},{side}] = conv(x, w, b) {{kernel_shape=[1, 1]}}
  sum: f32[1,{m},{side},{side}] = add(r, conv)
  y: f32[1,{m},{side},{side}] = clip(sum, lo, hi)
}}"
        );
        let what = format!("{c} -> {m} channels, {side}x{side}, residual add and clip");
        matches_the_interpreter(&residual, Winograd::Auto, &what, |compiled| {
            assert_eq!(compiled.stats().kernels, 1, "{what}: one kernel");
            let schedule = schedules(compiled);
            if fovea::codegen::wide_vectors() {
                assert!(schedule[0].starts_with("pointwise"), "{what}: {schedule:?}");
            }
        });
    }
}

/// The epilogues that run on whole `f32x8` accumulators (clip, ReLU, hard swish, a
/// per-channel multiply, a residual add) and one that runs on their halves (sigmoid), in
/// the pointwise and the depthwise kernels, against the interpreter.
#[test]
fn wide_and_halved_epilogues_match_the_interpreter() {
    let epilogues = [
        ("sigmoid", "y: f32[1,48,28,28] = sigmoid(conv)"),
        ("hard_swish", "y: f32[1,48,28,28] = hard_swish(conv)"),
        ("mul", "y: f32[1,48,28,28] = mul(conv, s)"),
        (
            "add_relu",
            "sum: f32[1,48,28,28] = add(conv, r)\n  y: f32[1,48,28,28] = relu(sum)",
        ),
    ];
    let convs = [
        (
            "pointwise",
            "const w: f32[48,24,1,1] = normal(seed=1, std=0.1)",
            "{kernel_shape=[1, 1]}",
            24,
        ),
        (
            "depthwise",
            "const w: f32[48,1,3,3] = normal(seed=1, std=0.3)",
            "{kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=48}",
            48,
        ),
    ];
    for (kind, weights, attrs, c) in convs {
        for (name, tail) in epilogues {
            let text = format!(
                "graph g(x: f32[1,{c},28,28], r: f32[1,48,28,28]) -> (y: f32[1,48,28,28]) {{
  {weights}
  const b: f32[48] = normal(seed=2, std=0.1)
  const s: f32[48,1,1] = normal(seed=3, std=1.0)
  conv: f32[1,48,28,28] = conv(x, w, b) {attrs}
  {tail}
}}"
            );
            let what = format!("{kind} convolution with {name}");
            matches_the_interpreter(&text, Winograd::Auto, &what, |compiled| {
                assert_eq!(compiled.stats().kernels, 1, "{what}: one kernel");
            });
        }
    }
}

/// Winograd layers give the same bits on any thread count: the bands (whose tile count
/// sets the order in which the products are summed) are the ones one thread takes, and
/// only the output-channel groups follow the threads (SqueezeNet's 55×55 and 27×27 3×3
/// layers, whose 2- and 16-thread plans took other bands before).
#[test]
fn winograd_bits_do_not_depend_on_threads() {
    for (c, m, side) in [(16, 64, 55), (32, 128, 27), (48, 192, 13)] {
        let text = conv_relu(1, [c, m], side, [3, 1, 1], 0.1);
        let model = Model::parse(&text).unwrap();
        let inputs = inputs(&model);
        let refs = named(&inputs);
        let runs: Vec<_> = [1, 2, 3, 4, 16]
            .into_iter()
            .map(|threads| {
                let compiled = Compiler::new()
                    .threads(threads)
                    .winograd(Winograd::Auto)
                    .compile(&model)
                    .unwrap();
                assert!(
                    schedules(&compiled)
                        .iter()
                        .any(|s| s.starts_with("winograd")),
                    "{c} -> {m} on {side}x{side}, {threads} threads"
                );
                (threads, bits(&compiled.run(&refs).unwrap()))
            })
            .collect();
        for (threads, run) in &runs[1..] {
            assert_eq!(
                run, &runs[0].1,
                "{c} -> {m} on {side}x{side}: 1 and {threads} threads differ"
            );
        }
    }
}

/// A 1×1 expansion read only by a depthwise convolution, with an expanded tensor of 4 MiB
/// or more, runs inside the depthwise's kernel band by band ([`common::BANDED_CASES`],
/// each also with a residual add after the depthwise): every output matches the
/// interpreter's, bit-identical on 1, 2 and 3 threads, with one kernel fewer and a smaller
/// arena than the unfused plan. An expansion that is also a graph output is not fused.
#[test]
fn expansions_run_in_bands_inside_the_depthwise() {
    for (n, c, m, side, k, stride, pad) in common::BANDED_CASES {
        let what = format!("{n}x{c} -> {m}, {side}x{side}, {k}x{k} stride {stride} pad {pad}");
        let out = (side + 2 * pad - k) / stride + 1;
        let (wide, shape) = (
            format!("{n},{m},{side},{side}"),
            format!("{n},{m},{out},{out}"),
        );
        let body = |tail: &str, outputs: &str, extra: &str| {
            format!(
                "graph g(x: f32[{n},{c},{side},{side}]{extra}) -> ({outputs}) {{
  const we: f32[{m},{c},1,1] = normal(seed=1, std=0.3)
  const be: f32[{m}] = normal(seed=2, std=0.1)
  const wd: f32[{m},1,{k},{k}] = normal(seed=3, std=0.3)
  const bd: f32[{m}] = normal(seed=4, std=0.1)
  const lo: f32[] = zeros
  const hi: f32[] = fill(6.0)
  e: f32[{wide}] = conv(x, we, be) {{kernel_shape=[1, 1]}}
  er: f32[{wide}] = clip(e, lo, hi)
  d: f32[{shape}] = conv(er, wd, bd) {{kernel_shape=[{k}, {k}], pads=[{pad}, {pad}, {pad}, {pad}], strides=[{stride}, {stride}], group={m}}}
{tail}
}}"
            )
        };
        let clip = body(
            &format!("  y: f32[{shape}] = clip(d, lo, hi)"),
            &format!("y: f32[{shape}]"),
            "",
        );
        let residual = body(
            &format!("  s: f32[{shape}] = add(d, r)\n  y: f32[{shape}] = relu(s)"),
            &format!("y: f32[{shape}]"),
            &format!(", r: f32[{shape}]"),
        );
        for text in [clip, residual] {
            let mut outputs = Vec::new();
            matches_the_interpreter(&text, Winograd::Auto, &what, |compiled| {
                let schedule = &schedules(compiled)[0];
                if fovea::codegen::wide_vectors() {
                    assert!(
                        schedule.starts_with("expansion and depthwise in bands"),
                        "{what}: {schedule}"
                    );
                }
                let model = Model::parse(&text).unwrap();
                let inputs = inputs(&model);
                outputs.push(bits(&compiled.run(&named(&inputs)).unwrap()));
            });
            let model = Model::parse(&text).unwrap();
            let inputs = inputs(&model);
            let three = Compiler::new().threads(3).compile(&model).unwrap();
            outputs.push(bits(&three.run(&named(&inputs)).unwrap()));
            assert!(outputs.windows(2).all(|w| w[0] == w[1]), "{what}");
            if fovea::codegen::wide_vectors() {
                let unfused = Compiler::new().fusion(false).compile(&model).unwrap();
                let fused = Compiler::new().compile(&model).unwrap();
                for c in [&fused, &unfused] {
                    c.run(&named(&inputs)).unwrap();
                }
                let (f, u) = (fused.stats(), unfused.stats());
                assert!(f.kernels < u.kernels, "{what}");
                assert!(f.arena_bytes < u.arena_bytes, "{what}");
            }
        }
    }
    // The expansion is an output too: computed and stored on its own.
    let text = "graph g(x: f32[1,16,112,112]) -> (er: f32[1,96,112,112], y: f32[1,96,56,56]) {
  const we: f32[96,16,1,1] = normal(seed=1, std=0.3)
  const wd: f32[96,1,3,3] = normal(seed=3, std=0.3)
  const lo: f32[] = zeros
  const hi: f32[] = fill(6.0)
  e: f32[1,96,112,112] = conv(x, we) {kernel_shape=[1, 1]}
  er: f32[1,96,112,112] = clip(e, lo, hi)
  y: f32[1,96,56,56] = conv(er, wd) {kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2], group=96}
}";
    matches_the_interpreter(text, Winograd::Auto, "expansion as an output", |compiled| {
        let s = schedules(compiled);
        assert!(s.iter().all(|s| !s.starts_with("expansion")), "{s:?}");
    });
}

/// A fire module (SqueezeNet): a 1×1 and a 3×3 expansion of `x`, concatenated, and a 1×1
/// squeeze of the concat; `tail` follows (text-IR lines reading `s`, writing `y`).
fn fire(n: usize, [c, e, s]: [usize; 3], side: usize, tail: &str, out: usize) -> String {
    format!(
        "graph fire(x: f32[{n},{c},{side},{side}]) -> (y: f32[{n},{out},{side},{side}]) {{
  const w1: f32[{e},{c},1,1] = normal(seed=1, std=0.2)
  const b1: f32[{e}] = normal(seed=2, std=0.1)
  const w3: f32[{e},{c},3,3] = normal(seed=3, std=0.1)
  const b3: f32[{e}] = normal(seed=4, std=0.1)
  const ws: f32[{s},{},1,1] = normal(seed=5, std=0.1)
  const bs: f32[{s}] = normal(seed=6, std=0.1)
  const lo: f32[] = zeros
  const hi: f32[] = fill(6.0)
  e1: f32[{n},{e},{side},{side}] = conv(x, w1, b1) {{kernel_shape=[1, 1]}}
  r1: f32[{n},{e},{side},{side}] = relu(e1)
  e3: f32[{n},{e},{side},{side}] = conv(x, w3, b3) {{kernel_shape=[3, 3], pads=[1, 1, 1, 1]}}
  r3: f32[{n},{e},{side},{side}] = clip(e3, lo, hi)
  c: f32[{n},{},{side},{side}] = concat(r1, r3) {{axis=1}}
  s: f32[{n},{s},{side},{side}] = conv(c, ws, bs) {{kernel_shape=[1, 1]}}
{tail}
}}",
        2 * e,
        2 * e,
    )
}

/// With 256-bit vectors, a concat of two convolutions that only 1×1 convolutions read is
/// stored in blocks of 8 channels: its writers (the direct kernel over flat rows and by
/// rows, Winograd F(2×2), F(4×4) and F(7×7)) store it so, the 1×1 squeeze loads it so (and
/// reads no copy of it). Planes of whole and partial tiles, several sizes; against the
/// interpreter on 1 and 2 threads.
#[test]
fn concats_read_only_by_1x1_convolutions_are_stored_in_channel_blocks() {
    let tail = "  y: f32[1,16,{side},{side}] = relu(s)";
    let cases = [
        ([16, 32, 16], 13, Winograd::Auto),
        ([16, 64, 16], 27, Winograd::Auto),
        ([24, 48, 16], 10, Winograd::F2x2),
        ([24, 48, 16], 9, Winograd::F4x4),
        ([16, 32, 16], 14, Winograd::F7x7),
        ([8, 24, 16], 11, Winograd::Off),
    ];
    for (channels, side, winograd) in cases {
        let text = fire(
            1,
            channels,
            side,
            &tail.replace("{side}", &side.to_string()),
            16,
        );
        let what = format!("{channels:?} on {side}x{side}, {winograd:?}");
        matches_within(&text, winograd, &what, 1e-4, |compiled| {
            if !fovea::codegen::wide_vectors() {
                return;
            }
            let schedule = schedules(compiled);
            let writes = schedule
                .iter()
                .filter(|s| s.contains("output in blocks of 8"))
                .count();
            let reads = schedule
                .iter()
                .filter(|s| s.contains("input in blocks of 8"))
                .count();
            let copies = schedule
                .iter()
                .filter(|s| s.starts_with("input into"))
                .count();
            assert_eq!((writes, reads, copies), (2, 1, 0), "{what}: {schedule:?}");
        });
    }
}

/// Tensors stay in planes where a reader or writer cannot take blocks of 8 channels: the
/// concat is also a graph output, read by a 3×3 convolution, read as a residual, or has
/// channels not a multiple of 8; the results match the interpreter either way.
#[test]
fn tensors_others_read_stay_in_planes() {
    let side = 9;
    let cases = [
        (
            "a graph output",
            [16, 32, 16],
            "  y: f32[1,16,9,9] = relu(s)".to_string(),
            16,
        ),
        (
            "a 3x3 reader",
            [16, 32, 16],
            "  const w9: f32[16,64,3,3] = normal(seed=7, std=0.1)
  t: f32[1,16,9,9] = conv(c, w9) {kernel_shape=[3, 3], pads=[1, 1, 1, 1]}
  y: f32[1,16,9,9] = add(s, t)"
                .to_string(),
            16,
        ),
        (
            "a residual",
            [16, 32, 64],
            "  y: f32[1,64,9,9] = add(s, c)".to_string(),
            64,
        ),
        (
            "12-channel parts",
            [16, 12, 16],
            "  y: f32[1,16,9,9] = relu(s)".to_string(),
            16,
        ),
    ];
    for (what, channels, tail, out) in cases {
        let mut text = fire(1, channels, side, &tail, out);
        if what == "a graph output" {
            let y = format!("-> (y: f32[1,{out},{side},{side}])");
            let yc = format!("-> (y: f32[1,{out},{side},{side}], c: f32[1,64,{side},{side}])");
            text = text.replacen(&y, &yc, 1);
        }
        let model = Model::parse(&text).unwrap_or_else(|e| panic!("{what}: {e}\n{text}"));
        let refs = inputs(&model);
        let refs = named(&refs);
        let expected = model.interpret(&refs).unwrap();
        let compiled = Compiler::new().threads(2).compile(&model).unwrap();
        let schedule = schedules(&compiled);
        assert!(
            !schedule
                .iter()
                .any(|s| s.contains("blocks of 8 channels,") && !s.starts_with("input into")),
            "{what}: {schedule:?}"
        );
        let got = compiled.run(&refs).unwrap();
        for ((_, g), (_, e)) in got.iter().zip(&expected) {
            let err = relative_error(g, e);
            assert!(err <= 1e-4, "{what}: error {err}");
        }
    }
}

/// A convolution whose output only 1×1 convolutions read stores it in blocks of 8
/// channels in batches of 2 as well (no concat), through MobileNetV2's clip.
#[test]
fn blocked_tensors_in_batches() {
    let text = "graph b(x: f32[2,16,12,12]) -> (y: f32[2,24,12,12], z: f32[2,16,12,12]) {
  const w: f32[32,16,3,3] = normal(seed=1, std=0.2)
  const wa: f32[24,32,1,1] = normal(seed=2, std=0.2)
  const wb: f32[16,32,1,1] = normal(seed=3, std=0.2)
  const lo: f32[] = zeros
  const hi: f32[] = fill(6.0)
  c: f32[2,32,12,12] = conv(x, w) {kernel_shape=[3, 3], pads=[1, 1, 1, 1]}
  r: f32[2,32,12,12] = clip(c, lo, hi)
  y: f32[2,24,12,12] = conv(r, wa) {kernel_shape=[1, 1]}
  z: f32[2,16,12,12] = conv(r, wb) {kernel_shape=[1, 1]}
}";
    for winograd in [Winograd::Off, Winograd::F4x4] {
        matches_within(text, winograd, &format!("{winograd:?}"), 1e-4, |compiled| {
            if fovea::codegen::wide_vectors() {
                let schedule = schedules(compiled);
                let writes = schedule
                    .iter()
                    .filter(|s| s.contains("output in blocks"))
                    .count();
                let reads = schedule
                    .iter()
                    .filter(|s| s.contains("input in blocks"))
                    .count();
                assert_eq!((writes, reads), (1, 2), "{winograd:?}: {schedule:?}");
            }
        });
    }
}

/// Winograd layers whose weights are transformed at run time and would leave L2 a block at
/// a time (512 channels of F(4×4) points, ResNet-18's 7×7 layers) transform and multiply
/// them a chunk of input channels at a time, summing the chunks' products (reading the next
/// chunk's weights ahead, across chunks and blocks, up to the last); with a residual
/// add and ReLU, against the interpreter on 1 and 2 threads.
#[test]
fn large_run_time_winograd_weights_are_transformed_in_chunks() {
    let text = "graph g(x: f32[1,512,7,7], r: f32[1,16,7,7]) -> (y: f32[1,16,7,7]) {
  const w: f32[16,512,3,3] = normal(seed=1, std=0.02)
  const b: f32[16] = normal(seed=2, std=0.1)
  conv: f32[1,16,7,7] = conv(x, w, b) {kernel_shape=[3, 3], pads=[1, 1, 1, 1]}
  sum: f32[1,16,7,7] = add(conv, r)
  y: f32[1,16,7,7] = relu(sum)
}";
    let mut chunked = 0;
    matches_within(
        text,
        Winograd::F4x4,
        "512 channels on 7x7",
        1e-4,
        |compiled| {
            // The products' kernel (on 2 threads the input transform has one of its own).
            let schedules = schedules(compiled);
            let schedule = schedules.last().expect("a kernel");
            assert!(schedule.contains("F(4x4,3x3)"), "{schedule}");
            chunked += usize::from(schedule.contains("input channels at a time"));
            // With 8-lane products, the next chunk's weights are read ahead during them.
            if schedule.contains("f32x8") {
                assert!(schedule.contains("next read ahead"), "{schedule}");
            }
        },
    );
    assert_eq!(chunked, 2, "run-time weights in chunks on 1 and 2 threads");
}

/// Bands of a single group of 4 tiles (7×7 planes under F(4×4)) multiply two blocks of
/// output channels at a time with 8-lane vectors: with weights transformed at compile time
/// (few channels) and at run time (many, in chunks), an even number of blocks and, in a
/// batch of 2, with a residual; an odd number of blocks keeps one at a time. Against the
/// interpreter on 1 and 2 threads.
#[test]
fn single_group_bands_multiply_blocks_in_pairs() {
    let cases = [
        (1, 16, 32, true),
        (2, 32, 16, true),
        (1, 512, 32, true),
        (1, 16, 24, false),
    ];
    for (n, c, m, even) in cases {
        let text = format!(
            "graph g(x: f32[{n},{c},7,7], r: f32[{n},{m},7,7]) -> (y: f32[{n},{m},7,7]) {{
  const w: f32[{m},{c},3,3] = normal(seed=1, std=0.05)
  const b: f32[{m}] = normal(seed=2, std=0.1)
  conv: f32[{n},{m},7,7] = conv(x, w, b) {{kernel_shape=[3, 3], pads=[1, 1, 1, 1]}}
  sum: f32[{n},{m},7,7] = add(conv, r)
  y: f32[{n},{m},7,7] = relu(sum)
}}"
        );
        let what = format!("{n}x{c}x7x7 -> {m} channels");
        matches_within(&text, Winograd::F4x4, &what, 1e-4, |compiled| {
            let schedules = schedules(compiled);
            let schedule = schedules.last().expect("a kernel");
            assert!(schedule.contains("F(4x4,3x3)"), "{what}: {schedule}");
            if schedule.contains("f32x8") {
                let paired = schedule.contains("of 2 blocks");
                assert_eq!(paired, even, "{what}: {schedule}");
            }
        });
    }
}

/// Direct kernels with over 1 MB of weights on 7×7 outputs read the next block's weights
/// ahead (a stride-2 3×3 layer, a 3×3 one and a 1×1 one over flat rows, with ReLU and a
/// residual add); on 13×13 they do not. Against the interpreter on 1 and 2 threads.
#[test]
fn direct_kernels_read_large_weights_ahead() {
    // (input channels, output channels, input side, kernel, stride, reads ahead)
    let cases = [
        (256, 128, 14, 3, 2, true),
        (128, 256, 7, 3, 1, true),
        (320, 1280, 7, 1, 1, true),
        (512, 1000, 13, 1, 1, false),
    ];
    for (c, m, side, kernel, stride, ahead) in cases {
        let out = (side + 2 * (kernel / 2) - kernel) / stride + 1;
        let pad = kernel / 2;
        let text = format!(
            "graph g(x: f32[1,{c},{side},{side}], r: f32[1,{m},{out},{out}]) -> (y: f32[1,{m},{out},{out}]) {{
  const w: f32[{m},{c},{kernel},{kernel}] = normal(seed=1, std=0.05)
  const b: f32[{m}] = normal(seed=2, std=0.1)
  conv: f32[1,{m},{out},{out}] = conv(x, w, b) {{kernel_shape=[{kernel}, {kernel}], pads=[{pad}, {pad}, {pad}, {pad}], strides=[{stride}, {stride}]}}
  sum: f32[1,{m},{out},{out}] = add(conv, r)
  y: f32[1,{m},{out},{out}] = relu(sum)
}}"
        );
        let what = format!("{c} -> {m} channels, {kernel}x{kernel} stride {stride} on {side}");
        matches_within(&text, Winograd::Off, &what, 1e-4, |compiled| {
            let schedules = schedules(compiled);
            let schedule = schedules.last().expect("a kernel");
            assert!(schedule.starts_with("direct"), "{what}: {schedule}");
            let reads = schedule.contains("weights read ahead");
            assert_eq!(reads, ahead, "{what}: {schedule}");
        });
    }
}

/// Direct kernels over large inputs whose parallel loop runs over rows (a network's first
/// layer: 3 channels of 224×224, 3×3 at stride 2, padded as MobileNetV2's or not as
/// SqueezeNet's, batches of 1 and 2) read the next output row's input rows ahead; against
/// the interpreter on 1 and 2 threads.
#[test]
fn first_layers_read_the_next_rows_ahead() {
    for (n, m, pad) in [(1, 32, 1), (1, 64, 0), (2, 16, 1)] {
        let out = (224 + 2 * pad - 3) / 2 + 1;
        let text = format!(
            "graph g(x: f32[{n},3,224,224]) -> (y: f32[{n},{m},{out},{out}]) {{
  const w: f32[{m},3,3,3] = normal(seed=1, std=0.2)
  const b: f32[{m}] = normal(seed=2, std=0.1)
  conv: f32[{n},{m},{out},{out}] = conv(x, w, b) {{kernel_shape=[3, 3], pads=[{pad}, {pad}, {pad}, {pad}], strides=[2, 2]}}
  y: f32[{n},{m},{out},{out}] = relu(conv)
}}"
        );
        let what = format!("{n}x3x224x224 -> {m} channels, padding {pad}");
        matches_within(&text, Winograd::Off, &what, 1e-5, |compiled| {
            let schedules = schedules(compiled);
            let schedule = schedules.last().expect("a kernel");
            assert!(
                schedule.contains("next row's input read ahead"),
                "{what}: {schedule}"
            );
        });
    }
}
