"""Writes a ResNet-18 (ImageNet layout, batch 1, random weights) as ONNX, for timing
against ONNX Runtime: `python tools/gen_resnet18.py OUT.onnx`. Batch norms are folded
into the convolutions, as an exporter's optimised graph has them."""
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(0)
nodes, inits = [], []


def const(name, arr):
    inits.append(numpy_helper.from_array(arr.astype(np.float32), name))
    return name


def conv(x, name, cin, cout, k, stride, pad, relu):
    w = rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))
    b = rng.standard_normal(cout) * 0.01
    out = name + "_out"
    nodes.append(helper.make_node(
        "Conv", [x, const(name + ".w", w), const(name + ".b", b)], [out], name=name,
        kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4))
    if relu:
        nodes.append(helper.make_node("Relu", [out], [name + "_relu"], name=name + "_relu"))
        out = name + "_relu"
    return out


def block(x, name, cin, cout, stride):
    y = conv(x, name + ".conv1", cin, cout, 3, stride, 1, True)
    y = conv(y, name + ".conv2", cout, cout, 3, 1, 1, False)
    skip = x
    if stride != 1 or cin != cout:
        skip = conv(x, name + ".downsample", cin, cout, 1, stride, 0, False)
    nodes.append(helper.make_node("Add", [y, skip], [name + "_add"], name=name + "_add"))
    nodes.append(helper.make_node("Relu", [name + "_add"], [name + "_out"], name=name + "_relu"))
    return name + "_out"


x = conv("input", "conv1", 3, 64, 7, 2, 3, True)
nodes.append(helper.make_node("MaxPool", [x], ["pool"], name="maxpool",
                              kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4))
x, cin = "pool", 64
for i, cout in enumerate([64, 128, 256, 512]):
    for j in range(2):
        stride = 2 if (i > 0 and j == 0) else 1
        x = block(x, f"layer{i + 1}.{j}", cin, cout, stride)
        cin = cout
nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"], name="avgpool"))
nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="flatten", axis=1))
wfc = rng.standard_normal((1000, 512)) * np.sqrt(1.0 / 512)
nodes.append(helper.make_node("Gemm", ["flat", const("fc.w", wfc), const("fc.b", np.zeros(1000))],
                              ["output"], name="fc", transB=1))
graph = helper.make_graph(
    nodes, "resnet18", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 224, 224])],
    [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1000])], inits)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
onnx.checker.check_model(model)
onnx.save(model, sys.argv[1])
