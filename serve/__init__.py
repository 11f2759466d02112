"""foldwise batch inference: onnxruntime + numpy only (never torch, timm or pipeline/).

The base layer of foldwise and the wheel a code competition's notebook installs offline. Besides
the ONNX engine, readers, predict and the HTTP server (serve/http/), it holds what pipeline/ shares
with it: the user-error type (errors.py), atomic file output (atomic.py), the one image decode and
resize (images.py), CSV and submission checks, safe output paths (paths.py) and the log format (logs.py).
"""
