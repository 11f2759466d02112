"""foldwise batch inference: onnxruntime + numpy only (never torch or timm).

The base layer of foldwise: user-error type, atomic file output, submission checks and the
ONNX inference engine. `pipeline/` (training) builds on it, never the other way round.
"""
