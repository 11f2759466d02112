"""Does onnxruntime's AMX INT8 path beat its symmetric VNNI conv kernel on foldwise's narrow convs?

    .venv/bin/python docs/experiments/int8_weight_zero_point.py 32 64 14

onnxruntime's QLinearConv takes MlasConvSym (an AVX-512 VNNI kernel, no im2col) when every weight
zero point is 0, and otherwise im2col + MlasGemm u8s8, which MLAS runs on AMX tiles where the CPU has
amx_int8. This script quantises two 3x3 convs + ReLU with export's own `quantize_int8` (QDQ, uint8
activations, int8 per-channel 7-bit weights), then writes a second graph whose int8 weights and weight zero
points are both shifted by +1: w - zp is unchanged, so the outputs must match exactly, but the
non-zero zero point moves the convs to the other kernel. It prints the median of 5 timed runs at
batch 512 on 2 threads for FP32, INT8 (symmetric) and INT8 (shifted). Recorded in docs/results.md.
"""
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper

from pipeline.export.variants import quantize_int8

BATCH, THREADS, ROUNDS = 512, 2, 5


def _shift_weight_zero_points(model: onnx.ModelProto) -> int:
    """Adds 1 to every int8 conv weight and its zero point (the DequantizeLinear feeding a Conv)."""
    inits = {i.name: i for i in model.graph.initializer}
    conv_inputs = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    shifted = 0
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or node.output[0] not in conv_inputs:
            continue
        for name in (node.input[0], node.input[2]):
            arr = numpy_helper.to_array(inits[name]).astype(np.int16) + 1
            assert arr.max() <= 127, "7-bit weights leave room for the shift"
            inits[name].CopyFrom(numpy_helper.from_array(arr.astype(np.int8), name))
        shifted += 1
    return shifted


def _median_ms(path: Path, x: np.ndarray) -> tuple[float, np.ndarray]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    out = sess.run(None, {"images": x})[0]
    times = []
    for _ in range(ROUNDS):
        t = time.perf_counter()
        sess.run(None, {"images": x})
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times)), out


def main(cin: int, cout: int, hw: int) -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(cin, cout, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(cout, cout, 3, padding=1), torch.nn.ReLU()).eval()
    x = np.random.default_rng(0).standard_normal((BATCH, cin, hw, hw)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        fp32, sym, shifted = (Path(tmp) / f"{n}.onnx" for n in ("fp32", "sym", "shifted"))
        torch.onnx.export(net, torch.from_numpy(x[:1]), str(fp32), input_names=["images"],
                          dynamic_axes={"images": {0: "n"}}, dynamo=False)
        quantize_int8(fp32, sym, x[:256])  # float input here; export's graphs take uint8
        model = onnx.load(str(sym))
        assert _shift_weight_zero_points(model) == 2
        onnx.save(model, str(shifted))
        f_ms, _ = _median_ms(fp32, x)
        s_ms, s_out = _median_ms(sym, x)
        a_ms, a_out = _median_ms(shifted, x)
    print(f"{cin}->{cout} @{hw}px, batch {BATCH}, {THREADS} threads, median of {ROUNDS}: "
          f"FP32 {f_ms:.1f} ms, INT8 symmetric {s_ms:.1f} ms ({f_ms / s_ms:.2f}x), "
          f"INT8 shifted zero point {a_ms:.1f} ms ({f_ms / a_ms:.2f}x); "
          f"max |symmetric - shifted| {np.abs(s_out - a_out).max():.1f}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:4]))
