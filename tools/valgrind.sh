#!/usr/bin/env bash
# Runs small models' JIT-compiled kernels under valgrind memcheck and fails on any memory
# error or leak (see docs/fuzzing.md, "Memory safety").
#
# Usage: tools/valgrind.sh [MODEL...]   (default: a few small models, 1 and 2 threads)
#
# Each model is compiled and run once by the debug `fovea` binary under memcheck; its
# outputs must also be bit-identical to a run without valgrind. `--smc-check=all` makes
# valgrind notice the code the JIT writes at run time. The only suppression
# (tools/valgrind.supp) is the process-wide kernel cache, kept until exit by design.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

if ! command -v valgrind > /dev/null; then
    echo "valgrind not found (apt-get install valgrind)" >&2
    exit 2
fi

cargo build --quiet --bin fovea
fovea="$root/target/debug/fovea"

if [ "$#" -gt 0 ]; then
    runs=()
    for model in "$@"; do runs+=("$model:1"); done
else
    runs=(
        "ir/tiny_cnn.fovea:1"
        "ir/mbv2_block.fovea:2"
        "ir/pooling.fovea:2"
        "tests/data/models/conv_bn_relu.onnx:2"
    )
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

status=0
for entry in "${runs[@]}"; do
    model="${entry%:*}"
    threads="${entry##*:}"
    name="$(basename "$model")-t$threads"
    mkdir -p "$work/$name/valgrind" "$work/$name/plain"
    echo "== $model, $threads thread(s)"
    if valgrind --error-exitcode=1 --smc-check=all --leak-check=full \
        --suppressions="$root/tools/valgrind.supp" --log-file="$work/$name/memcheck.log" \
        "$fovea" run "$model" --threads "$threads" --output-dir "$work/$name/valgrind" \
        > /dev/null; then
        grep -E "ERROR SUMMARY|definitely lost|possibly lost" "$work/$name/memcheck.log" \
            | sed 's/^==[0-9]*== */   /'
    else
        echo "memcheck found errors:" >&2
        cat "$work/$name/memcheck.log" >&2
        status=1
        continue
    fi
    "$fovea" run "$model" --threads "$threads" --output-dir "$work/$name/plain" > /dev/null
    for out in "$work/$name/plain"/*.npy; do
        if ! cmp -s "$out" "$work/$name/valgrind/$(basename "$out")"; then
            echo "$model: output $(basename "$out") differs under valgrind" >&2
            status=1
        fi
    done
done
exit "$status"
