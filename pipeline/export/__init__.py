"""Export: the ensemble as ONNX graphs (fp32, int8, fp16), the parity gate, speed, the choice of graph."""
