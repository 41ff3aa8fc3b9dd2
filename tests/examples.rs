//! The examples `compile_and_run`, `dynamic_batch` and `interpret`, run in a small
//! configuration with their output checked.
//!
//! Each example is a thin `main` around a `run(args, out)` function; this file includes the
//! example's source as a module and calls `run` with arguments parsed as its command line
//! would parse them, so the test runs exactly the example's code.

use clap::Parser;

#[allow(dead_code)]
#[path = "../examples/compile_and_run.rs"]
mod compile_and_run;

#[allow(dead_code)]
#[path = "../examples/dynamic_batch.rs"]
mod dynamic_batch;

#[allow(dead_code)]
#[path = "../examples/interpret.rs"]
mod interpret;

const TINY_CNN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/ir/tiny_cnn.fovea");
const DYNAMIC_BATCH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/ir/dynamic_batch.fovea");

fn compile_and_run(args: &[&str]) -> Result<String, String> {
    let args = compile_and_run::Args::try_parse_from(
        std::iter::once("compile_and_run").chain(args.iter().copied()),
    )
    .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    compile_and_run::run(&args, &mut out).map_err(|e| e.to_string())?;
    String::from_utf8(out).map_err(|e| e.to_string())
}

fn dynamic_batch(args: &[&str]) -> Result<String, String> {
    let args = dynamic_batch::Args::try_parse_from(
        std::iter::once("dynamic_batch").chain(args.iter().copied()),
    )
    .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    dynamic_batch::run(&args, &mut out).map_err(|e| e.to_string())?;
    String::from_utf8(out).map_err(|e| e.to_string())
}

/// The `(class, probability)` pairs of the top-5 lines.
fn top5(text: &str) -> Vec<(usize, f64)> {
    text.lines()
        .filter_map(|line| {
            let rest = line.trim().split_once(". class ")?.1;
            let mut fields = rest.split_whitespace();
            Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
        })
        .collect()
}

#[test]
fn compile_and_run_prints_timing_and_the_top_5_classes() {
    let text = compile_and_run(&[TINY_CNN, "--runs", "3", "--threads", "2"]).expect("runs");
    for heading in [
        "model ",
        "load ",
        "compile ",
        "first run ",
        "kernels ",
        "run ",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(heading)),
            "no {heading:?} line in:\n{text}"
        );
    }
    assert!(text.contains("over 3 runs (2 thread(s))"), "{text}");
    assert!(text.contains("top-5 of logits [1, 10]"), "{text}");
    let top = top5(&text);
    assert_eq!(top.len(), 5, "{text}");
    assert!(
        top.windows(2).all(|w| w[0].1 >= w[1].1),
        "not sorted: {top:?}"
    );
    assert!(
        top.iter()
            .all(|&(class, p)| class < 10 && (0.0..=1.0).contains(&p))
    );
}

#[test]
fn compile_and_run_reads_an_npy_input_and_agrees_with_the_interpreter() {
    let model = fovea::Model::load(TINY_CNN).expect("model");
    let input = fovea::tensor_gen::normal(vec![1, 3, 32, 32], 11, 0.0, 1.0).expect("input");
    let dir = std::env::temp_dir().join(format!("fovea-examples-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("image.npy");
    fovea::npy::write(&file, &input).expect("write npy");

    let text =
        compile_and_run(&[TINY_CNN, "--input", file.to_str().expect("utf-8 path")]).expect("runs");
    let _ = std::fs::remove_dir_all(&dir);

    // The interpreter's best class is the example's first.
    let reference = model.interpret(&[("input", input)]).expect("interprets");
    let logits = reference[0].1.as_f32().expect("f32 logits");
    let best = (0..logits.len()).max_by(|&a, &b| logits[a].total_cmp(&logits[b]));
    assert_eq!(top5(&text).first().map(|&(class, _)| class), best, "{text}");
}

#[test]
fn compile_and_run_takes_a_shape_for_symbolic_dims_and_asks_for_one() {
    let text =
        compile_and_run(&[DYNAMIC_BATCH, "--shape", "2x3x32x32", "--runs", "1"]).expect("runs");
    assert!(text.contains("the first run compiles"), "{text}");
    assert!(text.contains("top-5 of logits [2, 4]"), "{text}");
    assert_eq!(top5(&text).len(), 4, "only 4 classes: {text}");

    let error = compile_and_run(&[DYNAMIC_BATCH]).expect_err("no shape for N");
    assert!(error.contains("--shape"), "{error}");
    let error = compile_and_run(&["no/such/model.onnx"]).expect_err("no file");
    assert!(error.contains("no/such/model.onnx"), "{error}");
}

#[test]
fn dynamic_batch_builds_one_plan_per_batch_size_and_matches_the_interpreter() {
    let text =
        dynamic_batch(&[DYNAMIC_BATCH, "--batches", "1,4,1,8,4", "--threads", "2"]).expect("runs");
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|fields| {
            fields.len() == 6 && fields.first().is_some_and(|f| f.parse::<usize>().is_ok())
        })
        .collect();
    let batches: Vec<&str> = rows.iter().map(|r| r[0]).collect();
    assert_eq!(batches, ["1", "4", "1", "8", "4"], "{text}");
    let plans: Vec<&str> = rows.iter().map(|r| r[1]).collect();
    assert_eq!(
        plans,
        ["built", "built", "reused", "built", "reused"],
        "{text}"
    );
    // A reused plan compiles nothing.
    for row in rows.iter().filter(|r| r[1] == "reused") {
        assert_eq!(row[2], "0", "{text}");
    }
    for row in &rows {
        let error: f64 = row[5].parse().expect("an error figure");
        assert!(error <= 1e-4, "{text}");
    }
    assert!(text.contains("5 runs, 3 plans"), "{text}");
}

#[test]
fn dynamic_batch_rejects_a_model_without_a_batch_dim() {
    let error = dynamic_batch(&[TINY_CNN]).expect_err("tiny_cnn has a fixed batch");
    assert!(error.contains("not symbolic"), "{error}");
}

#[test]
fn interpret_prints_inputs_node_count_and_largest_outputs() {
    let mut out = Vec::new();
    interpret::run(TINY_CNN, &mut out).expect("runs");
    let text = String::from_utf8(out).expect("utf-8");
    assert!(text.contains("input  input: f32[1,3,32,32]"), "{text}");
    assert!(text.contains("ran 6 nodes in "), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("output logits: [1, 10], largest ["))
        .unwrap_or_else(|| panic!("no output line in:\n{text}"));
    assert_eq!(line.matches(": ").count(), 1 + 5, "five entries: {line}");
}
