#!/usr/bin/env bash
# Regenerates the pictures in docs/ from the current compiler: the DOT text (committed, and
# checked against the compiler by .ci/run) and its SVG rendering (needs Graphviz's `dot`:
# `apt-get install -y graphviz`). Run from anywhere: `bash docs/render.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --quiet --release -- dump-ir ir/mbv2_block.fovea --stage fused --format dot \
    > docs/mbv2_block_fused.dot
if command -v dot > /dev/null; then
    dot -Tsvg docs/mbv2_block_fused.dot -o docs/mbv2_block_fused.svg
else
    echo "graphviz is not installed: docs/mbv2_block_fused.svg was not redrawn" >&2
fi
