"""pipeline/export/unfold.py: grayscale stems as 1x1 convs over one shared patch tensor (before INT8)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from pipeline.export.oof import fold_outputs
from pipeline.export.unfold import PATCHES_CONV, unfold_narrow_stems


def _run(model: onnx.ModelProto, feed: dict) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)


def test_the_folds_stems_share_one_patch_tensor_and_the_outputs_are_unchanged(tiny_onnx: Path, tmp_path: Path) -> None:
    model = onnx.load(str(tiny_onnx))
    x = np.random.default_rng(0).integers(0, 256, (6, 1, 28, 28), dtype=np.uint8)
    before = _run(model, {"images": x})
    assert unfold_narrow_stems(model) == 2                  # one stem per fold model
    onnx.checker.check_model(model, full_check=True)
    after = _run(model, {"images": x})
    for b, a in zip(before, after):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    assert sum(n.name.endswith(PATCHES_CONV) for n in model.graph.node) == 1  # the patches are cut once for both folds
    stems = [n for n in model.graph.node if n.op_type == "Conv" and n.input[0].endswith("_patches")]
    assert len(stems) == 2 and all(helper.get_attribute_value(a) == [1, 1] for n in stems for a in n.attribute
                                   if a.name == "kernel_shape")
    inits = {t.name: t for t in model.graph.initializer}
    assert {tuple(inits[n.input[1]].dims[1:]) for n in stems} == {(12, 1, 1)}  # 9 taps + 3 zero channels (ALIGN)
    path = tmp_path / "unfolded.onnx"
    onnx.save(model, str(path))
    assert fold_outputs(path, 2) == fold_outputs(tiny_onnx, 2)  # still scored fold by fold


def test_convs_it_cannot_rewrite_exactly_are_left_alone() -> None:
    rng = np.random.default_rng(1)
    w1 = numpy_helper.from_array(rng.normal(size=(4, 1, 3, 3)).astype(np.float32), "w1")    # strided
    w2 = numpy_helper.from_array(rng.normal(size=(4, 1, 5, 5)).astype(np.float32), "w2")    # 25 > MAX_PATCH
    w3 = numpy_helper.from_array(rng.normal(size=(4, 1, 3, 3)).astype(np.float32), "w3")    # valid (no pads)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "w2"], ["b"], pads=[2, 2, 2, 2]),
             helper.make_node("Conv", ["x", "w3"], ["c"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 1, 9, 9])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in "abc"],
                              [w1, w2, w3])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    x = rng.normal(size=(2, 1, 9, 9)).astype(np.float32)
    before = _run(model, {"x": x})
    assert unfold_narrow_stems(model) == 1                  # only the unpadded 3x3 one
    after = _run(model, {"x": x})
    assert [a.shape for a in after] == [(2, 4, 5, 5), (2, 4, 9, 9), (2, 4, 7, 7)]
    for b, a in zip(before, after):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_the_int8_graph_cuts_the_patches_once_with_an_fp32_conv_onnxruntime_runs_as_nchwc(tiny_onnx: Path,
                                                                                         tmp_path: Path) -> None:
    from pipeline.export.variants import quantize_int8

    x = np.random.default_rng(2).integers(0, 256, (64, 1, 28, 28), dtype=np.uint8)
    quantize_int8(tiny_onnx, tmp_path / "int8.onnx", x)
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(str(tmp_path / "int8.onnx"), options, providers=["CPUExecutionProvider"])
    nodes = onnx.load(str(tmp_path / "optimised.onnx")).graph.node
    first = [n.op_type for n in nodes].index("QLinearConv")
    convs = [(n.op_type, n.domain) for n in nodes[:first] if "Conv" in n.op_type]
    assert convs == [("Conv", "com.microsoft.nchwc")]  # one patch conv for both folds, left in FP32 (not quantised)
