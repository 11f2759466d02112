"""`foldwise serve`: the HTTP service over a foldwise ONNX ensemble (onnxruntime; never torch).

    foldwise serve --model models/ensemble.onnx --port 8000
    foldwise bench serve --model models/ensemble.onnx

Modules: config (settings), app (FastAPI app and endpoints), protocol (Open Inference Protocol /
KServe v2), batcher (dynamic batching), simple (/predict), jobs (resumable batch jobs), security
(bearer token, body caps, paths under --data-root), metrics (Prometheus, access log), errors
(JSON errors), server (start-up), loadgen and bench (`foldwise bench serve`).
"""
