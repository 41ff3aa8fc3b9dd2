//! The text IR end to end: every model in `ir/` is canonical, round-trips and runs in the
//! interpreter; printer and parser agree on odd names, every constant initializer,
//! multi-output nodes, absent inputs, node names and floats; every file in
//! `tests/ir_errors/` fails with the error its `# error:` comment names, on that line.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use fovea::graph::text::{parse, print};
use fovea::graph::{Dim, TensorType};
use fovea::{DType, Error, Model, Tensor};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The `.fovea` files of a folder, sorted.
fn fovea_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "fovea"))
        .collect();
    files.sort();
    files
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Parses (and verifies) a source, prints it, and checks the print is the source and
/// survives another round trip.
fn check_canonical(source: &str, what: &str) {
    let model = Model::parse(source).unwrap_or_else(|e| panic!("{what}: {e}"));
    let printed = print(model.graph());
    assert_eq!(
        printed, source,
        "{what}: print(parse(source)) differs from the source"
    );
    let again = parse(&printed).unwrap_or_else(|e| panic!("{what}: reparsing: {e}"));
    assert_eq!(
        print(&again),
        printed,
        "{what}: the second round trip differs"
    );
}

#[test]
fn every_ir_file_is_canonical_and_round_trips() {
    let files = fovea_files(&root().join("ir"));
    assert!(!files.is_empty());
    for path in files {
        check_canonical(&read(&path), &path.display().to_string());
    }
}

/// Seeded inputs for a model: normal f32 data, symbolic dims set to `batch`.
fn seeded_inputs(model: &Model, batch: usize) -> Vec<(String, Tensor)> {
    model
        .inputs()
        .iter()
        .enumerate()
        .map(|(i, (name, ty))| {
            let shape: Vec<usize> = ty
                .shape
                .iter()
                .map(|d| match d {
                    Dim::Known(n) => *n,
                    Dim::Sym(_) | Dim::Unknown => batch,
                })
                .collect();
            let tensor = match ty.dtype {
                DType::F32 => fovea::tensor_gen::normal(shape, 1000 + i as u64, 0.0, 1.0).unwrap(),
                DType::I64 => Tensor::zeros(DType::I64, shape).unwrap(),
            };
            (name.to_string(), tensor)
        })
        .collect()
}

/// Runs a model from `ir/` in the interpreter and checks every output is finite and not
/// astronomically large, with the declared rank. Returns the outputs.
fn interpret(model_name: &str, batch: usize) -> Vec<(String, Tensor)> {
    let path = root().join("ir").join(format!("{model_name}.fovea"));
    let model = Model::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let inputs = seeded_inputs(&model, batch);
    let named: Vec<(&str, Tensor)> = inputs
        .iter()
        .map(|(n, t)| (n.as_str(), t.clone()))
        .collect();
    let outputs = model
        .interpret(&named)
        .unwrap_or_else(|e| panic!("{model_name}: {e}"));
    assert_eq!(outputs.len(), model.outputs().len(), "{model_name}");
    for ((name, tensor), (_, ty)) in outputs.iter().zip(model.outputs()) {
        assert_eq!(tensor.rank(), ty.rank(), "{model_name}: output {name}");
        for v in tensor.to_f64_vec() {
            assert!(
                v.is_finite() && v.abs() < 1e6,
                "{model_name}: output {name} has value {v}"
            );
        }
    }
    outputs
}

/// One interpreter test per model in `ir/`; `every_ir_model_has_an_interpreter_test` keeps
/// this list and the folder in step.
macro_rules! interpret_tests {
    ($($name:ident),* $(,)?) => {
        const INTERPRETED: &[&str] = &[$(stringify!($name)),*];
        mod interprets {
            $(
                #[test]
                fn $name() {
                    super::interpret(stringify!($name), 2);
                }
            )*
        }
    };
}

interpret_tests!(
    classifier_head,
    conv_transpose,
    dynamic_batch,
    efficientnet_block,
    elementwise,
    mbv2_block,
    mobilenet_v2,
    pooling,
    resnet18,
    resnet18_dynamic,
    shapes,
    shufflenet_block,
    tiny_cnn,
);

#[test]
fn every_ir_model_has_an_interpreter_test() {
    let on_disk: BTreeSet<String> = fovea_files(&root().join("ir"))
        .iter()
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    let tested: BTreeSet<String> = INTERPRETED.iter().map(|s| s.to_string()).collect();
    assert_eq!(on_disk, tested);
}

#[test]
fn dynamic_batch_runs_at_several_batch_sizes() {
    for batch in [1, 3] {
        let outputs = interpret("dynamic_batch", batch);
        assert_eq!(outputs[0].1.shape(), &[batch, 4]);
    }
}

#[test]
fn odd_names_multi_output_nodes_absent_inputs_and_node_names_round_trip() {
    let source = "graph \"my model\"(\"0\": f32[B,2,4,4], onnx::Input_1: f32[2]) -> \
                  (\"out put\": f32[B,2,2,2], \"/pool/idx\": i64[B,2,2,2], c: f32[B,2,4,4]) {\n\
                  \x20 const \"const\": f32[] = fill(-1.5)\n\
                  \x20 const \"_\": f32[] = 0.25\n\
                  \x20 \"out put\": f32[B,2,2,2], \"/pool/idx\": i64[B,2,2,2] = max_pool(\"0\") \
                  {kernel_shape=[2, 2], strides=[2, 2]} @\"/pool/MaxPool\"\n\
                  \x20 c: f32[B,2,4,4] = clip(\"0\", _, \"_\") @\"\"\n\
                  }\n";
    check_canonical(source, "odd names");
    let graph = parse(source).unwrap();
    let pool = graph.node(graph.node_order()[0]);
    assert_eq!(pool.name, "/pool/MaxPool");
    assert_eq!(pool.outputs.len(), 2);
    let clip = graph.node(graph.node_order()[1]);
    assert_eq!(clip.name, "");
    assert_eq!(clip.inputs[1], None);
    assert!(clip.inputs[2].is_some());
}

#[test]
fn output_types_may_be_left_out_and_are_inferred() {
    let graph = parse(
        "graph g(x: f32[1,3,8,8]) -> (y) {\n  y = global_average_pool(r)\n  r = relu(x)\n}\n",
    )
    .unwrap();
    let y = graph.value(graph.value_by_name("y").unwrap());
    assert_eq!(
        y.ty,
        TensorType::known(DType::F32, &[1, 3, 1, 1]),
        "global_average_pool keeps the spatial axes as size 1"
    );
    // Nodes used before their line are added in dependency order, so the print reorders them.
    assert_eq!(
        print(&graph),
        "graph g(x: f32[1,3,8,8]) -> (y: f32[1,3,1,1]) {\n  r: f32[1,3,8,8] = relu(x)\n  \
         y: f32[1,3,1,1] = global_average_pool(r)\n}\n"
    );
}

#[test]
fn every_const_init_and_exact_floats_round_trip() {
    let source = "graph consts(x: f32[3]) -> (y: f32[3]) {\n\
                  \x20 const zeros: f32[3] = zeros\n\
                  \x20 const ones: i64[2] = ones\n\
                  \x20 const fill: f32[3] = fill(1e-7)\n\
                  \x20 const normal: f32[3] = normal(seed=7, std=0.0577)\n\
                  \x20 const shifted: f32[3] = normal(seed=8, mean=2.5, std=1.0)\n\
                  \x20 const uniform: f32[3] = uniform(seed=9, low=-0.5, high=0.5)\n\
                  \x20 const scalar: f32[] = 0.1\n\
                  \x20 const list: f32[3] = [0.1, 1.0000001, -3.4028235e38]\n\
                  \x20 const shape: i64[2] = [1, -1]\n\
                  \x20 y: f32[3] = leaky_relu(x) {alpha=0.30000004}\n\
                  }\n";
    check_canonical(source, "constants");
    let graph = parse(source).unwrap();
    let list = graph
        .constant(graph.value_by_name("list").unwrap())
        .unwrap();
    assert_eq!(
        list.tensor.as_f32().unwrap(),
        &[0.1f32, 1.000_000_1, -f32::MAX]
    );
    let y = graph.node(graph.node_order()[0]);
    assert_eq!(
        y.op.attributes()[0].1,
        fovea::graph::Attr::Float(0.300_000_04)
    );
}

#[test]
fn comments_blank_lines_and_wrapped_lists_parse() {
    let source = "# leading comment\n\n\
                  graph g(x: f32[2,2]) -> (y) {  # header comment\n\
                  \n\
                  \x20 const w: f32[2,2] = [\n\
                  \x20   1.0, 2.0,  # first row\n\
                  \x20   3.0, 4.0,\n\
                  \x20 ]\n\
                  \x20 y = matmul(x,\n\
                  \x20   w)\n\
                  }\n# trailing comment\n";
    let graph = parse(source).unwrap();
    assert_eq!(
        print(&graph),
        "graph g(x: f32[2,2]) -> (y: f32[2,2]) {\n  const w: f32[2,2] = [1.0, 2.0, 3.0, 4.0]\n  \
         y: f32[2,2] = matmul(x, w)\n}\n"
    );
}

/// The line (1-based) carrying `# error: ...` and the expected message substring.
fn expected_error(source: &str) -> Option<(usize, String)> {
    source.lines().enumerate().find_map(|(i, line)| {
        line.split_once("# error: ")
            .map(|(_, message)| (i + 1, message.trim().to_string()))
    })
}

#[test]
fn invalid_ir_files_fail_at_the_marked_line_with_the_marked_message() {
    let files = fovea_files(&root().join("tests/ir_errors"));
    assert!(files.len() >= 10, "only {} invalid-IR cases", files.len());
    let mut failures = Vec::new();
    for path in &files {
        let source = read(path);
        let (line, needle) = expected_error(&source)
            .unwrap_or_else(|| panic!("{}: no `# error:` comment", path.display()));
        match parse(&source) {
            Err(Error::Parse { location, message }) => {
                if location.line != line || !message.contains(&needle) {
                    failures.push(format!(
                        "{}: expected line {line} containing {needle:?}, got line {}: {message}",
                        path.display(),
                        location.line
                    ));
                }
            }
            Err(other) => failures.push(format!(
                "{}: expected a parse error, got {other}",
                path.display()
            )),
            Ok(_) => failures.push(format!("{}: parsed without error", path.display())),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn parse_errors_display_their_location() {
    let err = parse("graph g() -> () {\n  y = relu(\n").unwrap_err();
    assert!(err.to_string().starts_with("line 2, column "), "{err}");
}
