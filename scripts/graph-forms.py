"""The screening CNN's context architecture written four ways, for the `tract_graph_forms` example:
`conv.onnx`, four 3x3 stride-2 convolutions (by default 8, 16, 32, 64 channels) as the shipped
graph is written, and `patch.onnx`, four 2x2 patch merges of the same widths written as reshapes and
matrix products over channels-first pixels in bit-reversed Morton order (the two pixels' lowest
bits most significant, so that merging each 2x2 block into channels is a reshape, not a copy),
input [3, 4096]; `separable.onnx` and `space_to_depth.onnx` (see their functions). Widths from
GRAPH_FORMS_CHANNELS (default 8,16,32,64). Random weights: the timing does not depend on the
values. Written with onnx's helpers by the Python `scripts/bench-peers` makes. Usage: graph-forms.py DIR"""
import os
import pathlib
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CHANNELS = [int(c) for c in os.environ.get("GRAPH_FORMS_CHANNELS", "8,16,32,64").split(",")]
# Each layer halves the tile's side: four layers take 64 px to 4 x 4 cells.
if len(CHANNELS) != 4 or min(CHANNELS) < 1:
    sys.exit(f"GRAPH_FORMS_CHANNELS names four widths, not {CHANNELS}")
SIZE = 64
CLASSES = 6
rng = np.random.default_rng(1)


def floats(name, array):
    return numpy_helper.from_array(array.astype(np.float32), name)


def ints(name, values):
    return numpy_helper.from_array(np.array(values, dtype=np.int64), name)


def save(path, nodes, initialisers, input_shape):
    graph = helper.make_graph(
        nodes, "screening", [helper.make_tensor_value_info("tiles", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, CLASSES])], initialisers)
    # IR version 8: onnxruntime 1.20 reads up to 10.
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), path)


def head(nodes, initialisers, pooled, width):
    initialisers += [floats("head_w", rng.standard_normal((CLASSES, width)) * 0.1),
                     floats("head_b", np.zeros(CLASSES))]
    nodes.append(helper.make_node("Gemm", [pooled, "head_w", "head_b"], ["logits"], transB=1))


def conv3x3(nodes, initialisers, i, x, inputs, out):
    """Layer `i`: a 3x3 stride-2 convolution of `x` (`inputs` channels) to `out`, and its ReLU,
    output `r{i}`."""
    initialisers += [floats(f"w{i}", rng.standard_normal((out, inputs, 3, 3)) * (2 / (9 * inputs)) ** 0.5),
                     floats(f"b{i}", rng.standard_normal(out) * 0.1)]
    nodes += [helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], kernel_shape=[3, 3],
                               strides=[2, 2], pads=[1, 1, 1, 1]),
              helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]


def pool_head_and_save(path, nodes, initialisers, x, inputs):
    """Global average pooling of image `x`, the classes' head, and the graph written to `path`
    with the shipped input shape."""
    nodes += [helper.make_node("GlobalAveragePool", [x], ["pool"]),
              helper.make_node("Flatten", ["pool"], ["pooled"])]
    head(nodes, initialisers, "pooled", inputs)
    save(path, nodes, initialisers, [1, 3, SIZE, SIZE])


def conv(path):
    nodes, initialisers, x, inputs = [], [], "tiles", 3
    for i, out in enumerate(CHANNELS):
        conv3x3(nodes, initialisers, i, x, inputs, out)
        x, inputs = f"r{i}", out
    pool_head_and_save(path, nodes, initialisers, x, inputs)


def patch(path):
    nodes, initialisers, x, inputs, columns = [], [], "tiles", 3, SIZE * SIZE
    for i, out in enumerate(CHANNELS):
        columns //= 4
        initialisers += [ints(f"s{i}", [4 * inputs, columns]),
                         floats(f"w{i}", rng.standard_normal((out, 4 * inputs)) * (2 / (4 * inputs)) ** 0.5),
                         floats(f"b{i}", rng.standard_normal((out, 1)) * 0.1)]
        nodes += [helper.make_node("Reshape", [x, f"s{i}"], [f"m{i}"]),
                  helper.make_node("MatMul", [f"w{i}", f"m{i}"], [f"p{i}"]),
                  helper.make_node("Add", [f"p{i}", f"b{i}"], [f"a{i}"]),
                  helper.make_node("Relu", [f"a{i}"], [f"r{i}"])]
        x, inputs = f"r{i}", out
    # [channels, cells] -> mean over the cells -> [1, channels].
    nodes += [helper.make_node("ReduceMean", [x], ["mean"], axes=[1], keepdims=1),
              helper.make_node("Transpose", ["mean"], ["pooled"], perm=[1, 0])]
    head(nodes, initialisers, "pooled", inputs)
    save(path, nodes, initialisers, [3, SIZE * SIZE])


def separable(path):
    """MobileNet's form: a full 3x3 stride-2 convolution first (three input channels), then
    each layer a depthwise 3x3 stride-2 convolution (one filter per channel, `group`) and a
    pointwise 1x1 one, each with its ReLU."""
    nodes, initialisers, x, inputs = [], [], "tiles", 3
    for i, out in enumerate(CHANNELS):
        if i == 0:
            conv3x3(nodes, initialisers, i, x, inputs, out)
        else:
            initialisers += [floats(f"d{i}", rng.standard_normal((inputs, 1, 3, 3)) * 0.3),
                             floats(f"db{i}", rng.standard_normal(inputs) * 0.1),
                             floats(f"w{i}", rng.standard_normal((out, inputs, 1, 1)) * (2 / inputs) ** 0.5),
                             floats(f"b{i}", rng.standard_normal(out) * 0.1)]
            nodes += [helper.make_node("Conv", [x, f"d{i}", f"db{i}"], [f"dc{i}"], kernel_shape=[3, 3],
                                       strides=[2, 2], pads=[1, 1, 1, 1], group=inputs),
                      helper.make_node("Relu", [f"dc{i}"], [f"dr{i}"]),
                      helper.make_node("Conv", [f"dr{i}", f"w{i}", f"b{i}"], [f"c{i}"], kernel_shape=[1, 1]),
                      helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        x, inputs = f"r{i}", out
    pool_head_and_save(path, nodes, initialisers, x, inputs)


def space_to_depth(path):
    """The patch merges as convolution operators on an image: `SpaceToDepth` (each 2x2 block
    into channels) and a 1x1 convolution, input as the shipped graph takes it."""
    nodes, initialisers, x, inputs = [], [], "tiles", 3
    for i, out in enumerate(CHANNELS):
        initialisers += [floats(f"w{i}", rng.standard_normal((out, 4 * inputs, 1, 1)) * (2 / (4 * inputs)) ** 0.5),
                         floats(f"b{i}", rng.standard_normal(out) * 0.1)]
        nodes += [helper.make_node("SpaceToDepth", [x], [f"s{i}"], blocksize=2),
                  helper.make_node("Conv", [f"s{i}", f"w{i}", f"b{i}"], [f"c{i}"], kernel_shape=[1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        x, inputs = f"r{i}", out
    pool_head_and_save(path, nodes, initialisers, x, inputs)


out = pathlib.Path(sys.argv[1])
conv(out / "conv.onnx")
patch(out / "patch.onnx")
separable(out / "separable.onnx")
space_to_depth(out / "space_to_depth.onnx")
