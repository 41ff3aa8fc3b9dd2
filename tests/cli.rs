//! The command line: `run` on the models against ONNX Runtime's outputs, `bench --json`
//! fields, and `dump-ir` snapshots of every model in `ir/` (re-bless with
//! `INSTA_UPDATE=always cargo test --test cli`).

use std::path::{Path, PathBuf};

mod common;
use common::{fovea, manifest_dir, relative_error, temp_dir};

/// Runs `fovea run` (the JIT with 2 threads, and the interpreter) on `dir/NAME.onnx` with
/// `NAME.input.npy` and compares the single output with `NAME.output.npy`.
fn run_model_via_cli(dir: &Path, name: &str) {
    for engine in [&["--threads", "2"][..], &["--interpret"][..]] {
        run_model_via_cli_with(dir, name, engine);
    }
}

fn run_model_via_cli_with(dir: &Path, name: &str, engine: &[&str]) {
    let model = dir.join(format!("{name}.onnx"));
    let loaded = fovea::Model::load(&model).unwrap();
    let input_name = loaded.inputs()[0].0.to_string();
    let out_dir = temp_dir(name);
    let (code, stdout, stderr) = fovea(&[
        "run",
        model.to_str().unwrap(),
        "--input",
        &format!(
            "{input_name}={}",
            dir.join(format!("{name}.input.npy")).display()
        ),
        "--output-dir",
        out_dir.to_str().unwrap(),
        "--interpret",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let written: Vec<&str> = stdout.lines().collect();
    assert_eq!(written.len(), 1, "one output file expected: {stdout}");
    let actual = fovea::npy::read(written[0]).unwrap();
    let expected = fovea::npy::read(dir.join(format!("{name}.output.npy"))).unwrap();
    let error = relative_error(&actual, &expected);
    println!(
        "{name}: fovea run {} max relative error {error:.3e}",
        engine.join(" ")
    );
    assert!(error <= 1e-4, "{name}: relative error {error}");
}

#[test]
fn run_matches_onnx_runtime_on_the_small_models() {
    let dir = manifest_dir().join("tests/data/models");
    for name in ["conv_bn_relu", "resblock", "mbv2_block", "tiny_cnn"] {
        run_model_via_cli(&dir, name);
    }
}

#[test]
#[ignore = "needs the full networks in ../shared/models (not in the repo); .ci/run runs it"]
fn run_matches_onnx_runtime_on_the_full_networks() {
    let dir = std::env::var_os("FOVEA_SHARED_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir().join("../shared/models"));
    for name in ["squeezenet1_1", "mobilenet_v2"] {
        run_model_via_cli(&dir, name);
    }
}

#[test]
fn output_file_names_are_sanitized() {
    let text =
        "graph g(x: f32[2]) -> (\"out/put:0\": f32[2]) {\n  \"out/put:0\": f32[2] = relu(x)\n}\n";
    let dir = temp_dir("sanitize");
    let model = dir.join("g.fovea");
    std::fs::write(&model, text).unwrap();
    let (code, stdout, stderr) = fovea(&[
        "run",
        model.to_str().unwrap(),
        "--output-dir",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.trim().ends_with("out_put_0.npy"), "{stdout}");
}

#[test]
fn bench_json_has_the_documented_fields() {
    let model = manifest_dir().join("ir/tiny_cnn.fovea");
    let (code, stdout, stderr) = fovea(&[
        "bench",
        model.to_str().unwrap(),
        "--interpret",
        "--iters",
        "3",
        "--json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    for field in [
        "model",
        "mode",
        "threads",
        "iters",
        "compile_ms",
        "median_ms",
        "min_ms",
    ] {
        assert!(json.get(field).is_some(), "missing {field}: {json}");
    }
    assert_eq!(json["mode"], "interpret");
    assert_eq!(json["iters"], 3);
    assert!(json["median_ms"].as_f64().unwrap() >= json["min_ms"].as_f64().unwrap());
}

#[test]
fn bench_takes_the_workers_spin() {
    let model = manifest_dir().join("ir/mbv2_block.fovea");
    for spin in ["0", "1000"] {
        let args = ["bench", model.to_str().unwrap(), "--threads", "2"];
        let (code, stdout, stderr) =
            fovea(&[&args[..], &["--iters", "3", "--spin-us", spin]].concat());
        assert_eq!(code, 0, "--spin-us {spin}: {stderr}");
        assert!(stdout.contains("2 thread(s)"), "{stdout}");
    }
    let (code, _, stderr) = fovea(&["bench", "--spin-us", "soon"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--spin-us"), "{stderr}");
}

#[test]
fn run_without_a_model_uses_the_built_in_resnet18() {
    let (code, stdout, stderr) = fovea(&["run", "--interpret"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("resnet18"), "{stdout}");
    assert!(stdout.contains("top-5"), "{stdout}");
}

#[test]
fn dump_ir_parsed_snapshots() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(manifest_dir().join("ir"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "fovea"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "ir/ should hold the models");
    for file in files {
        let (code, stdout, stderr) =
            fovea(&["dump-ir", file.to_str().unwrap(), "--stage", "parsed"]);
        assert_eq!(code, 0, "{}: {stderr}", file.display());
        let name = file.file_stem().unwrap().to_string_lossy().into_owned();
        insta::assert_snapshot!(format!("dump_ir_parsed_{name}"), stdout);
    }
}

#[test]
fn dump_ir_onnx_snapshot() {
    let model = manifest_dir().join("tests/data/models/conv_bn_relu.onnx");
    let (code, stdout, stderr) = fovea(&["dump-ir", model.to_str().unwrap(), "--stage", "parsed"]);
    assert_eq!(code, 0, "{stderr}");
    insta::assert_snapshot!("dump_ir_parsed_conv_bn_relu_onnx", stdout);
}

#[test]
fn dump_ir_dot_draws_every_node() {
    let model = manifest_dir().join("ir/tiny_cnn.fovea");
    let (code, stdout, stderr) = fovea(&["dump-ir", model.to_str().unwrap(), "--format", "dot"]);
    assert_eq!(code, 0, "{stderr}");
    let parsed = fovea::Model::load(&model).unwrap();
    assert!(stdout.starts_with("digraph"));
    assert_eq!(
        stdout.matches("shape=box").count(),
        parsed.graph().node_count()
    );
}

#[test]
fn dump_ir_fused_marks_the_kernel_groups() {
    let model = manifest_dir().join("ir/tiny_cnn.fovea");
    let (code, stdout, stderr) = fovea(&["dump-ir", model.to_str().unwrap(), "--stage", "fused"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("# kernel k0: conv + relu\n"), "{stdout}");
}

#[test]
fn dump_ir_loops_and_clif_show_every_kernel() {
    let model = manifest_dir().join("ir/tiny_cnn.fovea");
    let (code, loops, stderr) = fovea(&["dump-ir", model.to_str().unwrap(), "--stage", "loops"]);
    assert_eq!(code, 0, "{stderr}");
    let kernels = loops.matches("\nkernel ").count() + usize::from(loops.starts_with("kernel "));
    assert!(kernels >= 3, "{loops}");
    assert!(loops.contains("parallel for"), "{loops}");
    let (code, clif, stderr) = fovea(&["dump-ir", model.to_str().unwrap(), "--stage", "clif"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        clif.matches("; kernel ").count(),
        kernels,
        "one function per kernel"
    );
    assert!(clif.contains("function"), "{clif}");
    let (code, asm, stderr) = fovea(&["dump-ir", model.to_str().unwrap(), "--stage", "asm"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        asm.matches("; kernel ").count(),
        kernels,
        "one listing per kernel"
    );
    // The convolution is register-blocked: compiled without the optimiser, with FMAs.
    assert!(asm.contains("; kernel conv (opt_level None)"), "{asm}");
    assert!(asm.contains("vfmadd") || !fovea::codegen::cpu_features().contains("has_fma"));
}

/// `dump-ir --threads N` prints the kernels as scheduled for N threads (work splits depend
/// on the thread count).
#[test]
fn dump_ir_loops_schedules_for_the_given_threads() {
    let model = manifest_dir().join("ir/resnet18.fovea");
    let model = model.to_str().unwrap();
    for threads in ["1", "2"] {
        let (code, loops, stderr) =
            fovea(&["dump-ir", model, "--stage", "loops", "--threads", threads]);
        assert_eq!(code, 0, "{stderr}");
        let winograd = loops
            .lines()
            .find(|l| l.contains("schedule: winograd F(4x4,3x3)"))
            .unwrap_or_else(|| panic!("no Winograd schedule:\n{loops}"));
        assert!(
            winograd.contains(&format!("on {threads} threads")),
            "{winograd}"
        );
    }
}

/// Output piped into a reader that stops early (`fovea dump-ir ... | head`) ends the
/// process quietly: no panic message, no backtrace.
#[test]
fn a_closed_output_pipe_is_not_a_panic() {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_fovea"))
        .args(["dump-ir", "--stage", "loops"])
        .arg(manifest_dir().join("ir/resnet18.fovea"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 64];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // The read end is closed here; the rest of the output has nowhere to go.
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        first.starts_with(b"kernel "),
        "{}",
        String::from_utf8_lossy(&first)
    );
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
}

/// `bench --profile` times every kernel launch and counts the convolution's and the
/// Gemm's floating-point operations from their shapes.
#[test]
fn bench_profile_lists_every_kernel_with_its_flops() {
    let model = manifest_dir().join("ir/tiny_cnn.fovea");
    let args = [
        "bench",
        model.to_str().unwrap(),
        "--iters",
        "2",
        "--profile",
        "--json",
    ];
    let (code, stdout, stderr) = fovea(&args);
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let profile = report["profile"].as_array().unwrap();
    assert_eq!(profile.len() as u64, report["kernels"].as_u64().unwrap());
    let conv = profile.iter().find(|k| k["kernel"] == "conv").unwrap();
    // 8 output channels × 32 × 32 outputs, each 3 input channels × 3 × 3 taps.
    assert_eq!(
        conv["flops"].as_f64().unwrap(),
        2.0 * (8 * 32 * 32 * 27) as f64
    );
    assert_eq!(conv["ops"], "conv+relu");
    let gemm = profile.iter().find(|k| k["ops"] == "gemm").unwrap();
    assert_eq!(gemm["flops"].as_f64().unwrap(), 2.0 * 10.0 * 8.0);
    assert!(profile.iter().all(|k| k["ms"].as_f64().unwrap() >= 0.0));
    let (code, _, stderr) = fovea(&["bench", model.to_str().unwrap(), "--profile", "--interpret"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("--profile"), "{stderr}");
}
