"""Grayscale stems as 1x1 convolutions over one shared patch tensor, before INT8 quantisation.

    n = unfold_narrow_stems(onnx.load("ensemble.onnx"))    # the convs rewritten (0: graph unchanged)

Every fold model's first conv reads the same one-channel image: a 3x3 kernel over 1 channel is a
matrix product with K = 9, which onnxruntime's INT8 convolution (im2col, then a u8s8 GEMM and a
requantisation per output) ran at a quarter of its FP32 speed: a quarter of the INT8 graph's time
for 0.7% of its operations (per-layer profile in docs/results.md, issue 25). Here the patches are
cut once for all folds, by one conv with one-hot kernels (channel (i*kw + j)*C + c holds input
channel c shifted by (i, j); each output is one input times 1.0 plus zeros, exact in FP32), and each
such stem becomes a 1x1 conv over them with the same weights reordered: the same sums, the same
outputs, and in INT8 a plain GEMM with no im2col of its own. The patch conv stays in FP32
(quantize_int8 leaves convs named *_patches_conv out; as a one-channel QLinearConv it would be the
slow case again); onnxruntime runs it with its NCHWc kernel, then quantises the patches and
transposes them (uint8) into the NHWC layout of the INT8 convs. The patch tensor gets zero channels
up to a multiple of ALIGN (zero weights: the same sums again): onnxruntime's symmetric INT8
convolution, which reads NHWC input directly, takes only convs whose input channels are a multiple
of 4 (9 was not). Earlier forms, each measured side by side on a VNNI CPU (docs/results.md, issue
25, 2026-12-04): Pad + 9 Slices + Concat in NCHW, and the same cut channels-last (no transpose
left, but an element-by-element Concat that took 5%): both slower than this.

Only convs with C*kh*kw <= MAX_PATCH (grayscale 3x3 stems), stride 1, dilation 1, group 1, explicit
or no padding, and weights stored as initializers are rewritten; the FP32 and FP16 graphs keep their
plain convs (FP32's direct NCHWc kernel is faster than this form there).
"""
from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np
import onnx
from onnx import helper, numpy_helper

_logger = logging.getLogger(__name__)
ALIGN = 4  # patch channels padded to a multiple of this: onnxruntime's symmetric INT8 conv (no im2col) needs it
PATCHES_CONV = "_patches_conv"  # name suffix of the convs that cut the patches (quantize_int8 leaves them in FP32)
MAX_PATCH = 9  # C * kh * kw: the one-channel 3x3 stem (measured); wider inputs keep onnxruntime's own im2col


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _unfoldable(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> tuple[int, int, int, list[int]] | None:
    """(C, kh, kw, pads) of a conv this pass rewrites, else None."""
    if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in inits or node.name.endswith(PATCHES_CONV):
        return None
    if len(node.input) == 3 and node.input[2] not in inits:
        return None
    w = inits[node.input[1]]
    if len(w.dims) != 4:
        return None
    _, c, kh, kw = w.dims
    a = _attrs(node)
    if (c * kh * kw > MAX_PATCH or kh * kw == 1 or a.get("group", 1) != 1 or a.get("auto_pad", b"NOTSET") != b"NOTSET"
            or any(s != 1 for s in a.get("strides", [1, 1])) or any(d != 1 for d in a.get("dilations", [1, 1]))):
        return None
    pads = list(a.get("pads", [0, 0, 0, 0]))
    return c, kh, kw, pads


def _channels(windows: int, c: int) -> int:
    """Channels of the patch tensor: `windows` windows of `c` channels, plus zero channels up to a multiple of ALIGN."""
    return -(-windows * c // ALIGN) * ALIGN



def _patch_nodes(src: str, c: int, kh: int, kw: int, pads: list[int], tag: str,
                 graph: onnx.GraphProto) -> tuple[list[onnx.NodeProto], str]:
    """One conv with one-hot kernels: `src` [N, C, H, W] -> patches [N, K, H', W'], channel (i*kw + j)*C + c
    holding input channel c shifted by (i, j), then zero channels up to K, a multiple of ALIGN."""
    k = _channels(kh * kw, c)
    onehot = np.zeros((k, c, kh, kw), np.float32)
    for ch in range(kh * kw * c):
        window, channel = divmod(ch, c)
        onehot[ch, channel, window // kw, window % kw] = 1.0
    graph.initializer.append(numpy_helper.from_array(onehot, f"{tag}_onehot"))
    node = helper.make_node("Conv", [src, f"{tag}_onehot"], [f"{tag}_patches"], name=f"{tag}{PATCHES_CONV}",
                            kernel_shape=[kh, kw], pads=pads)
    return [node], f"{tag}_patches"


def unfold_narrow_stems(model: onnx.ModelProto) -> int:
    """Rewrite `model` in place (see the module docstring); the number of convs rewritten."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    groups: dict[tuple, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        found = _unfoldable(node, inits)
        if found is not None:
            c, kh, kw, pads = found
            groups[(node.input[0], c, kh, kw, tuple(pads))].append(node)
    if not groups:
        return 0
    new_nodes: dict[int, list[onnx.NodeProto]] = {}
    replaced: dict[int, onnx.NodeProto] = {}
    for g, ((src, c, kh, kw, pads), convs) in enumerate(groups.items()):
        patch_nodes, patches = _patch_nodes(src, c, kh, kw, list(pads), f"unfold{g}", graph)
        new_nodes[id(convs[0])] = patch_nodes
        for conv in convs:
            w = numpy_helper.to_array(inits[conv.input[1]])
            name = f"{conv.input[1]}_unfolded"
            w = w.transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
            w = np.pad(w, ((0, 0), (0, _channels(kh * kw, c) - w.shape[1])))  # the zero channels: zero weights
            graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(w[:, :, None, None]), name))
            replaced[id(conv)] = helper.make_node("Conv", [patches, name, *conv.input[2:]], list(conv.output),
                                                  name=f"{conv.name}_1x1", kernel_shape=[1, 1])
    order = []
    for node in graph.node:
        order += new_nodes.get(id(node), [])
        order.append(replaced.get(id(node), node))
    del graph.node[:]
    graph.node.extend(order)
    used = {i for n in graph.node for i in n.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    n = len(replaced)
    _logger.info("INT8: %d grayscale stem conv(s) as 1x1 convs over %d shared patch tensor(s)", n, len(groups))
    return n
