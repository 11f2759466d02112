"""The layouts' shared ground: the same image files give identical pixels through prepare and through
predict's reader, and an image with no label row is left out with a counted warning."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def test_prepare_and_predict_give_identical_pixels_for_the_same_files(tmp_path: Path, tiny_onnx) -> None:
    """Images of several sizes and modes (RGBA, palette, 16-bit, EXIF-rotated JPEG, grayscale) through
    prepare's decode and through predict's reader: the same uint8 pixels, the same predictions."""
    from PIL import Image

    from pipeline.core.config import build as build_params
    from pipeline.data.prepare import PrepareParams, prepare
    from serve.engine import Engine
    from serve.predict import predict_file
    from serve.readers import ImageFolderReader

    rng = np.random.default_rng(0)
    folder = tmp_path / "comp"
    (folder / "train").mkdir(parents=True)
    (folder / "test").mkdir()
    base = (rng.random((40, 52)) * 255).astype(np.uint8)
    made = {
        "rgba.png": Image.fromarray(np.dstack([base, base[::-1], base[:, ::-1], (base > 60) * 255]).astype(np.uint8),
                                    "RGBA"),
        "palette.png": Image.fromarray(base, "L").convert("P"),
        "sixteen.png": Image.fromarray(base.astype(np.uint16) * 257),
        "gray.jpg": Image.fromarray(base[:30], "L"),
        "big.png": Image.fromarray(np.kron(base, np.ones((3, 3), np.uint8)), "L"),
    }
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 on display
    for name, im in made.items():
        im.save(folder / "test" / name, **({"exif": exif} if name.endswith(".jpg") else {}))
    for i in range(6):
        Image.fromarray(np.roll(base, i), "L").save(folder / "train" / f"t{i}.png")
    pd.DataFrame({"id": [f"t{i}" for i in range(6)], "label": ["a", "b"] * 3}).to_csv(folder / "labels.csv",
                                                                                     index=False)
    pd.DataFrame({"id": sorted(made), "label": "a"}).to_csv(folder / "sample_submission.csv", index=False)
    params = build_params(PrepareParams, {"n_folds": 2, "image_size": [28, 28], "channels": 1}, "prepare")
    meta = prepare(params, folder, tmp_path / "prepared")
    assert meta["layout"] == "labels_csv" and meta["id_form"] == "name"
    prepared = np.load(tmp_path / "prepared/test_images.npy")
    engine = Engine(tiny_onnx)  # a 28x28x1 model: its spec is prepare's (size, channels, resize)
    assert engine.info.image.shape == (28, 28, 1)
    reader = ImageFolderReader(folder / "test", engine.info.image, id_form="name")
    served = np.concatenate([c.images for c in reader.chunks(2)]).transpose(0, 2, 3, 1)
    ids = pd.read_csv(tmp_path / "prepared/test_ids.csv")["id"].tolist()
    assert ids == sorted(made) and [f.name for f in reader.files] == ids
    assert served.dtype == np.uint8 and np.array_equal(served, prepared)
    predict_file(tiny_onnx, folder / "test", tmp_path / "a.csv", probs_output=tmp_path / "pa.csv")
    predict_file(tiny_onnx, tmp_path / "prepared/test_images.npy", tmp_path / "b.csv",
                 ids_path=tmp_path / "prepared/test_ids.csv", probs_output=tmp_path / "pb.csv")
    pa, pb = (pd.read_csv(tmp_path / f, dtype=str) for f in ("pa.csv", "pb.csv"))
    assert pa["id"].tolist() == [Path(i).stem for i in ids] and pb["id"].tolist() == ids  # file order both
    assert pa.iloc[:, 1:].equals(pb.iloc[:, 1:])  # the same pixels: the same probabilities, to the digit


def test_an_image_without_a_label_row_is_left_out_with_a_counted_warning(tmp_path: Path, caplog) -> None:
    """Warn and count, not fail: Kaggle folders sometimes hold extra files, and refusing the whole
    competition for them would help nobody; the count says how many were left out."""
    from PIL import Image

    from pipeline.core.config import build as build_params
    from pipeline.data.prepare import PrepareParams, prepare

    folder = tmp_path / "comp"
    (folder / "train").mkdir(parents=True)
    (folder / "test").mkdir()
    for i in range(9):
        Image.fromarray(np.full((8, 8), i * 20, np.uint8)).save(folder / "train" / f"{i}.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "test" / "x.png")
    pd.DataFrame({"id": range(6), "label": ["a", "b"] * 3}).to_csv(folder / "labels.csv", index=False)
    pd.DataFrame({"id": ["x"], "label": ["a"]}).to_csv(folder / "sample_submission.csv", index=False)
    with caplog.at_level("WARNING"):
        meta = prepare(build_params(PrepareParams, {"n_folds": 2}, "prepare"), folder, tmp_path / "out")
    assert meta["n_train"] == 6 and meta["classes"] == ["a", "b"]
    assert any("3 image files have no row in" in r.getMessage() for r in caplog.records), caplog.text
    assert any("3 image files have no row in" in n for n in meta["notes"])
