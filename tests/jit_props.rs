//! Property tests: over random shapes, strides, pads, dilations, groups and broadcasts, the
//! JIT computes what the interpreter computes (conv, pooling, gemm, elementwise).

use fovea::graph::op::{Attr, Op};
use fovea::graph::{ConstInit, Graph, TensorType};
use fovea::{Compiler, DType, Model, Tensor, Winograd, tensor_gen};
use proptest::prelude::*;

fn attrs(pairs: &[(&str, Attr)]) -> Vec<(String, Attr)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn ints(v: &[usize]) -> Attr {
    Attr::Ints(v.iter().map(|&x| x as i64).collect())
}

/// Builds `op(x, consts...)` with `x` random of `shape`, runs interpreter and JIT, compares.
/// Returns a failure on disagreement, and rejects the case when shape inference finds the
/// combination invalid.
fn check(
    op: Op,
    x_shape: &[usize],
    consts: Vec<Option<Tensor>>,
    seed: u64,
) -> Result<(), TestCaseError> {
    check_with(
        op,
        x_shape,
        consts,
        seed,
        Compiler::new().winograd(Winograd::Off),
        false,
    )
}

/// [`check`] with `compiler`'s options (threads set to 2); with `normwise`, each element's
/// error is measured against the largest output magnitude (Winograd's rounding is relative
/// to the sums it transforms, not to each output).
fn check_with(
    op: Op,
    x_shape: &[usize],
    consts: Vec<Option<Tensor>>,
    seed: u64,
    compiler: Compiler,
    normwise: bool,
) -> Result<(), TestCaseError> {
    let mut graph = Graph::new("prop");
    let x = graph
        .add_input("x", TensorType::known(DType::F32, x_shape))
        .unwrap();
    let mut inputs = vec![Some(x)];
    for (i, c) in consts.into_iter().enumerate() {
        inputs.push(c.map(|t| {
            graph
                .add_const(format!("c{i}"), t, ConstInit::Literal)
                .unwrap()
        }));
    }
    let n_outputs = if matches!(op, Op::MaxPool(_)) { 2 } else { 1 };
    let names = (0..n_outputs).map(|i| format!("y{i}")).collect();
    let outputs = match graph.add_node("node", op, inputs, names) {
        Ok(o) => o,
        // The combination is invalid (e.g. the window does not fit): draw another.
        Err(e) => return Err(TestCaseError::reject(e.to_string())),
    };
    graph.set_outputs(outputs);
    let model = Model::from_graph(graph).unwrap();
    let input = tensor_gen::normal(x_shape.to_vec(), seed, 0.0, 1.0).unwrap();
    let reference = model.interpret(&[("x", input.clone())]).unwrap();
    let compiled = compiler
        .threads(2)
        .compile(&model)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let jit = compiled
        .run(&[("x", input)])
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    for ((name, a), (_, e)) in jit.iter().zip(&reference) {
        prop_assert_eq!(a.shape(), e.shape());
        let expected = e.to_f64_vec();
        let largest = expected.iter().fold(0f64, |m, y| m.max(y.abs()));
        for (i, (x, y)) in a.to_f64_vec().iter().zip(expected).enumerate() {
            let scale = if normwise { largest } else { y.abs() };
            let ok = (x - y).abs() <= 1e-5 + 1e-4 * scale || (x.is_nan() && y.is_nan()) || x == &y;
            prop_assert!(ok, "{} element {}: jit {} vs interpreter {}", name, i, x, y);
        }
    }
    Ok(())
}

fn weights(shape: Vec<usize>, seed: u64) -> Tensor {
    tensor_gen::normal(shape, seed, 0.0, 0.5).unwrap()
}

/// Layers whose transformed weights would not stay in cache take their weights as direct
/// taps and transform them at run time, per block of output channels: both variants, with
/// a bias, against the interpreter.
#[test]
fn winograd_with_weights_transformed_at_run_time_matches() {
    for (c, m, size) in [(136, 136, 7), (96, 128, 9)] {
        for variant in [Winograd::F2x2, Winograd::F4x4] {
            let op = Op::from_parts(
                "conv",
                &attrs(&[
                    ("kernel_shape", ints(&[3, 3])),
                    ("pads", ints(&[1, 1, 1, 1])),
                ]),
                "node",
            )
            .unwrap();
            let consts = vec![
                Some(weights(vec![m, c, 3, 3], 3)),
                Some(weights(vec![m], 4)),
            ];
            let compiler = Compiler::new().winograd(variant);
            if let Err(e) = check_with(op, &[1, c, size, size], consts, 5, compiler, true) {
                panic!("{c} -> {m} on {size}x{size}, {variant:?}: {e}");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn conv_matches(
        n in 1usize..3, groups in 1usize..4, c_per in 1usize..4, m_per in 1usize..4,
        h in 1usize..10, w in 1usize..10, kh in 1usize..4, kw in 1usize..4,
        sh in 1usize..3, sw in 1usize..3, dh in 1usize..3, dw in 1usize..3,
        pads in proptest::collection::vec(0usize..3, 4), bias in any::<bool>(), seed in 0u64..1000,
    ) {
        let (c, m) = (groups * c_per, groups * m_per);
        let op = Op::from_parts("conv", &attrs(&[
            ("kernel_shape", ints(&[kh, kw])), ("strides", ints(&[sh, sw])),
            ("dilations", ints(&[dh, dw])), ("pads", ints(&pads)), ("group", Attr::Int(groups as i64)),
        ]), "node").unwrap();
        let b = bias.then(|| weights(vec![m], seed + 1));
        check(op, &[n, c, h, w], vec![Some(weights(vec![m, c_per, kh, kw], seed)), b], seed)?;
    }

    /// Shapes the register-blocked direct kernel takes (output channels per group a
    /// multiple of 8, rows of at least 4 outputs), with every padding, stride and
    /// dilation combination and epilogue-free bias or none.
    #[test]
    fn direct_conv_matches(
        n in 1usize..3, groups in 1usize..3, c_per in 1usize..5, blocks in 1usize..4, wide in any::<bool>(),
        h in 1usize..12, w in 4usize..14, kh in 1usize..4, kw in 1usize..4,
        sh in 1usize..3, sw in 1usize..3, dh in 1usize..3, dw in 1usize..3,
        pads in proptest::collection::vec(0usize..3, 4), bias in any::<bool>(), seed in 0u64..1000,
    ) {
        let m_per = blocks * if wide { 12 } else { 8 };
        let (c, m) = (groups * c_per, groups * m_per);
        let op = Op::from_parts("conv", &attrs(&[
            ("kernel_shape", ints(&[kh, kw])), ("strides", ints(&[sh, sw])),
            ("dilations", ints(&[dh, dw])), ("pads", ints(&pads)), ("group", Attr::Int(groups as i64)),
        ]), "node").unwrap();
        let b = bias.then(|| weights(vec![m], seed + 1));
        check(op, &[n, c, h, w], vec![Some(weights(vec![m, c_per, kh, kw], seed)), b], seed)?;
    }

    /// Many input channels: the direct kernel sums them chunk by chunk through its
    /// scratch rows. Sums of 72–1,440 products cancel to outputs far below their terms, so
    /// the error is measured against the largest output (an output of 0.014 among ones of
    /// ~20 once differed from the interpreter by 1.2e-5, its rounding).
    #[test]
    fn chunked_direct_conv_matches(
        c in prop::sample::select(vec![72usize, 128, 160]), blocks in 1usize..3, wide in any::<bool>(),
        h in 1usize..7, w in 4usize..11, k in 1usize..4, s in 1usize..3,
        pad in 0usize..2, seed in 0u64..1000,
    ) {
        let pad = pad.min(k - 1);
        let op = Op::from_parts("conv", &attrs(&[
            ("kernel_shape", ints(&[k, k])), ("strides", ints(&[s, s])),
            ("pads", ints(&[pad; 4])),
        ]), "node").unwrap();
        let m = blocks * if wide { 12 } else { 8 };
        let consts = vec![Some(weights(vec![m, c, k, k], seed)), Some(weights(vec![m], seed + 1))];
        check_with(op, &[1, c, h, w], consts, seed, Compiler::new().winograd(Winograd::Off), true)?;
    }

    /// 3×3 stride-1 convolutions on the Winograd kernels, F(2×2) and F(4×4) (output channels a multiple of 8,
    /// every padding up to 2, odd and even sizes, bands of one and of several tile rows,
    /// a batch of 2), against the interpreter within 1e-4 of the largest output.
    #[test]
    fn winograd_conv_matches(
        n in 1usize..3, c in 1usize..40, blocks in 1usize..4,
        h in 1usize..24, w in 4usize..30, f4 in any::<bool>(),
        pads in proptest::collection::vec(0usize..3, 4), bias in any::<bool>(), seed in 0u64..1000,
    ) {
        let variant = if f4 { Winograd::F4x4 } else { Winograd::F2x2 };
        let op = Op::from_parts("conv", &attrs(&[
            ("kernel_shape", ints(&[3, 3])), ("pads", ints(&pads)),
        ]), "node").unwrap();
        let m = 8 * blocks;
        let b = bias.then(|| weights(vec![m], seed + 1));
        check_with(op, &[n, c, h, w], vec![Some(weights(vec![m, c, 3, 3], seed)), b], seed,
            Compiler::new().winograd(variant), true)?;
    }

    /// Depthwise convolutions (one channel per group) with rows long enough for the
    /// vectorised depthwise kernel, strides 1 and 2, and a fused epilogue-free bias: small
    /// planes (computed flat, as one run of vectors across rows) and tall ones (row by row).
    #[test]
    fn depthwise_conv_matches(
        n in 1usize..3, c in 1usize..6, h in prop_oneof![1usize..9, 60usize..90],
        w in 4usize..40, k in 1usize..6,
        s in 1usize..3, d in 1usize..3, pads in proptest::collection::vec(0usize..3, 4),
        bias in any::<bool>(), seed in 0u64..1000,
    ) {
        let op = Op::from_parts("conv", &attrs(&[
            ("kernel_shape", ints(&[k, k])), ("strides", ints(&[s, s])),
            ("dilations", ints(&[d, d])), ("pads", ints(&pads)), ("group", Attr::Int(c as i64)),
        ]), "node").unwrap();
        let b = bias.then(|| weights(vec![c], seed + 1));
        check(op, &[n, c, h, w], vec![Some(weights(vec![c, 1, k, k], seed)), b], seed)?;
    }

    #[test]
    fn conv_1d_and_3d_match(
        rank in 1usize..4, c in 1usize..4, m in 1usize..4, size in 2usize..7, k in 1usize..3,
        stride in 1usize..3, pad in 0usize..2, seed in 0u64..1000,
    ) {
        let op = Op::from_parts("conv", &attrs(&[
            ("kernel_shape", ints(&vec![k; rank])), ("strides", ints(&vec![stride; rank])),
            ("pads", ints(&vec![pad; 2 * rank])),
        ]), "node").unwrap();
        let mut x = vec![1, c];
        x.extend(vec![size; rank]);
        let mut w = vec![m, c];
        w.extend(vec![k; rank]);
        check(op, &x, vec![Some(weights(w, seed)), None], seed)?;
    }

    #[test]
    fn pooling_matches(
        max in any::<bool>(), c in 1usize..4, h in 1usize..10, w in 1usize..10,
        kh in 1usize..4, kw in 1usize..4, sh in 1usize..3, sw in 1usize..3,
        pads in proptest::collection::vec(0usize..2, 4), ceil in any::<bool>(), include_pad in any::<bool>(),
        dilation in 1usize..3, seed in 0u64..1000,
    ) {
        // Padding must be smaller than the kernel, as ONNX requires.
        let pads: Vec<usize> = pads.iter().enumerate().map(|(i, &p)| p.min(if i % 2 == 0 { kh - 1 } else { kw - 1 })).collect();
        let mut a = vec![
            ("kernel_shape", ints(&[kh, kw])), ("strides", ints(&[sh, sw])), ("pads", ints(&pads)),
            ("ceil_mode", Attr::Int(ceil as i64)), ("dilations", ints(&[dilation, dilation])),
        ];
        if !max {
            a.push(("count_include_pad", Attr::Int(include_pad as i64)));
        }
        let op = Op::from_parts(if max { "max_pool" } else { "average_pool" }, &attrs(&a), "node").unwrap();
        check(op, &[1, c, h, w], vec![], seed)?;
    }

    #[test]
    fn gemm_matches(
        m in 1usize..12, k in 1usize..12, n in prop_oneof![1usize..12, 30usize..80],
        trans_a in any::<bool>(), trans_b in any::<bool>(),
        c_kind in 0usize..5, alpha in -2.0f32..2.0, beta in -2.0f32..2.0, seed in 0u64..1000,
    ) {
        let op = Op::from_parts("gemm", &attrs(&[
            ("alpha", Attr::Float(alpha)), ("beta", Attr::Float(beta)),
            ("transA", Attr::Int(trans_a as i64)), ("transB", Attr::Int(trans_b as i64)),
        ]), "node").unwrap();
        let a_shape = if trans_a { [k, m] } else { [m, k] };
        let b_shape = if trans_b { vec![n, k] } else { vec![k, n] };
        let c = match c_kind {
            0 => None,
            1 => Some(weights(vec![], seed + 2)),
            2 => Some(weights(vec![n], seed + 2)),
            3 => Some(weights(vec![m, 1], seed + 2)),
            _ => Some(weights(vec![m, n], seed + 2)),
        };
        check(op, &a_shape, vec![Some(weights(b_shape, seed + 1)), c], seed)?;
    }

    #[test]
    fn binary_broadcast_matches(
        op_index in 0usize..6, dims in proptest::collection::vec(1usize..6, 1..5),
        mask in proptest::collection::vec(any::<bool>(), 4), drop in 0usize..3, seed in 0u64..1000,
    ) {
        let name = ["add", "sub", "mul", "div", "pow", "prelu"][op_index];
        let op = Op::from_parts(name, &[], "node").unwrap();
        // The second operand: some dims set to 1, some leading dims dropped.
        let drop = drop.min(dims.len() - 1);
        let other: Vec<usize> = dims.iter().enumerate().skip(drop).map(|(i, &d)| if mask[i % 4] { 1 } else { d }).collect();
        let mut y = weights(other, seed + 1);
        if name == "pow" {
            // Positive bases keep pow real; the exponent is the constant.
            let v: Vec<f32> = y.as_f32().unwrap().iter().map(|v| v.abs() + 0.5).collect();
            y = Tensor::from_f32(y.shape().to_vec(), v).unwrap();
        }
        check(op, &dims, vec![Some(y)], seed)?;
    }

    #[test]
    fn unary_matches(op_index in 0usize..11, dims in proptest::collection::vec(1usize..9, 1..4), seed in 0u64..1000) {
        let name = ["relu", "leaky_relu", "sigmoid", "hard_sigmoid", "hard_swish", "tanh", "gelu", "erf", "exp", "sqrt", "relu"][op_index];
        let op = Op::from_parts(name, &[], "node").unwrap();
        check(op, &dims, vec![], seed)?;
    }
}
