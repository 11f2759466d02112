"""foldwise: k-fold training of timm models with DVC (pipeline/) over an ONNX inference base (serve/)."""
