#!/usr/bin/env python3
"""Per-node times of ONNX Runtime on one model, to set beside `fovea bench MODEL --profile`.

    python tools/ort_profile.py MODEL.onnx [--threads N] [--runs R]

Runs the model R times (default 30) with ONNX Runtime's profiler on (CPU provider, all
graph optimisations, intra-op threads N), drops the first third of the runs as warm-up and
prints each node's median kernel time in milliseconds, in execution order, then their sum.
ONNX Runtime fuses and renames nodes (`..._nchwc` for its blocked-layout convolutions), so
match the rows to Fovea's kernels by order and shape. Needs `onnxruntime` and `numpy`;
the profile JSON is written under the system's temporary directory.
"""

import argparse
import collections
import json
import os
import tempfile

import numpy as np
import onnxruntime as ort


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(tempfile.gettempdir(), "ort_profile")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    feeds = {}
    for i in session.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in i.shape]
        feeds[i.name] = np.random.default_rng(7).random(shape, dtype=np.float32)
    for _ in range(args.runs):
        session.run(None, feeds)
    with open(session.end_profiling()) as f:
        events = json.load(f)

    times = collections.OrderedDict()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            name = e["name"][: -len("_kernel_time")]
            times.setdefault(name, (e["args"].get("op_name", "?"), []))[1].append(e["dur"])
    skip = args.runs // 3
    total = 0.0
    for name, (op, durations) in times.items():
        kept = sorted(durations[skip:]) or sorted(durations)
        median = kept[len(kept) // 2] / 1000.0
        total += median
        print(f"{name[-48:]:48s} {op:20s} {median:8.3f}")
    print(f"{'total (nodes only)':48s} {'':20s} {total:8.3f}")


if __name__ == "__main__":
    main()
