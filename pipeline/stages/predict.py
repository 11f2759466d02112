"""Stage `predict`: the test images through the graph export chose (models/export.json: the fastest
within export.predict_tolerance OOF of the best full-precision graph) with onnxruntime, into a
submission validated against the sample submission. torch is never imported: this is serve/'s own `predict_file`.

    python -m pipeline.stages.predict        # what dvc.yaml runs; = foldwise predict --config params.yaml
                                             #   --model models/export.json --input data/prepared/test_images.npy
                                             #   --ids data/prepared/test_ids.csv --sample ... --output ...
"""
from __future__ import annotations

from pipeline.core import paths
from pipeline.core.config import load_section
from pipeline.core.console import run_stage
from pipeline.export.params import PredictParams
from serve.predict import PredictResult, predict_file


def main() -> PredictResult:
    """Predict data/prepared's test images as params.yaml `predict` says; write submissions/submission.csv."""
    params = load_section("predict", PredictParams)
    prepared = paths.Prepared()
    result = predict_file(paths.EXPORT_JSON, prepared.test_images, paths.SUBMISSION, ids_path=prepared.test_ids,
                          sample=prepared.sample_submission, batch_size=params.batch_size, provider=params.provider,
                          threads=params.threads)
    print(result.summary(paths.SUBMISSION))
    return result


if __name__ == "__main__":
    run_stage(main)
