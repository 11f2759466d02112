"""serve/: streaming prediction, kill-and-resume byte-identity, flat memory, clear errors."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest

from helpers.cli import BIN, assert_one_line_error, run_cli
from serve.predict import predict_file


def big_csv(path: Path, frames, rows: int) -> Path:
    """A pixel CSV of `rows` real test images (the slice repeated), ids 0..rows-1."""
    test = frames["test.csv"]
    reps = -(-rows // len(test))
    df = pd.concat([test] * reps, ignore_index=True).iloc[:rows].copy()
    df["id"] = [str(i) for i in range(rows)]
    df.to_csv(path, index=False)
    return path


def test_predict_streams_a_csv_in_input_order(tiny_onnx: Path, real_slice, tmp_path: Path) -> None:
    csv = big_csv(tmp_path / "in.csv", real_slice, 1000)
    result = predict_file(tiny_onnx, csv, tmp_path / "out.csv", probs_output=tmp_path / "p.csv", chunk_rows=300)
    assert result.rows == 1000 and result.provider == "CPUExecutionProvider" and result.resumed_rows == 0
    out = pd.read_csv(tmp_path / "out.csv", dtype=str)
    assert list(out.columns) == ["id", "label"] and out["id"].tolist() == [str(i) for i in range(1000)]
    probs = pd.read_csv(tmp_path / "p.csv")
    assert np.allclose(probs.iloc[:, 1:].sum(axis=1), 1, atol=1e-4)
    assert (probs.iloc[:, 1:].to_numpy().argmax(1).astype(str) == out["label"].to_numpy()).all()
    assert not list(tmp_path.glob("*.partial*"))


def test_npy_and_image_folder_inputs_agree_with_the_csv(tiny_onnx: Path, real_slice, tmp_path: Path) -> None:
    from PIL import Image

    test = real_slice["test.csv"].iloc[:20]
    images = test.drop(columns="id").to_numpy().astype(np.uint8).reshape(-1, 28, 28)
    test.to_csv(tmp_path / "t.csv", index=False)
    np.save(tmp_path / "t.npy", images)
    (tmp_path / "imgs").mkdir()
    for i, img in zip(test["id"], images):
        Image.fromarray(img).save(tmp_path / "imgs" / f"{i}.png")
    predict_file(tiny_onnx, tmp_path / "t.csv", tmp_path / "a.csv")
    pd.DataFrame({"id": test["id"]}).to_csv(tmp_path / "ids.csv", index=False)
    predict_file(tiny_onnx, tmp_path / "t.npy", tmp_path / "b.csv", ids_path=tmp_path / "ids.csv")
    predict_file(tiny_onnx, tmp_path / "imgs", tmp_path / "c.csv")
    a = pd.read_csv(tmp_path / "a.csv", dtype=str)
    assert a.equals(pd.read_csv(tmp_path / "b.csv", dtype=str))
    c = pd.read_csv(tmp_path / "c.csv", dtype=str).sort_values("id").reset_index(drop=True)
    assert c.equals(a.sort_values("id").reset_index(drop=True))


def test_sigkill_then_rerun_gives_a_byte_identical_output(tiny_onnx: Path, real_slice, tmp_path: Path) -> None:
    csv = big_csv(tmp_path / "in.csv", real_slice, 12000)
    args = ["predict", "--model", str(tiny_onnx), "--input", str(csv), "--chunk-rows", "250", "--threads", "1"]
    clean = run_cli(*args, "--output", str(tmp_path / "clean.csv"), "--probs", str(tmp_path / "clean_p.csv"))
    assert clean.returncode == 0, clean.stderr
    out, probs = tmp_path / "killed.csv", tmp_path / "killed_p.csv"
    state = tmp_path / "killed.csv.partial.json"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.Popen([str(BIN / "foldwise"), *args, "--output", str(out), "--probs", str(probs)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    chunks = 0
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            chunks = json.loads(state.read_text())["chunks"]
        except (FileNotFoundError, json.JSONDecodeError):
            chunks = 0
        if chunks >= 3:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 3 <= chunks < 48 and not out.exists(), "the run was not killed mid-way"
    again = run_cli(*args, "--output", str(out), "--probs", str(probs))
    assert again.returncode == 0, again.stderr
    assert "(resumed after" in again.stdout
    assert out.read_bytes() == (tmp_path / "clean.csv").read_bytes()
    assert probs.read_bytes() == (tmp_path / "clean_p.csv").read_bytes()
    assert not state.exists()


PEAK_RSS = ("import resource, sys\n"
            "from serve.predict import predict_file\n"
            "predict_file(sys.argv[1], sys.argv[2], sys.argv[3], chunk_rows=500, threads=1)\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")


def test_memory_stays_flat_as_the_input_grows(tiny_onnx: Path, real_slice, tmp_path: Path) -> None:
    peaks = {}
    for rows in (2000, 10000):
        csv = big_csv(tmp_path / f"in{rows}.csv", real_slice, rows)
        result = subprocess.run([sys.executable, "-c", PEAK_RSS, str(tiny_onnx), str(csv), str(tmp_path / "o.csv")],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        peaks[rows] = int(result.stdout.split()[-1]) / 1024  # MiB
    # loading the 8,000 extra rows at once would take >= 48 MiB (int64 pixels); streaming takes ~none
    assert peaks[10000] - peaks[2000] < 12, peaks


def test_require_gpu_fails_on_a_cpu_only_machine(tiny_onnx: Path, tmp_path: Path, real_slice) -> None:
    real_slice["test.csv"].iloc[:5].to_csv(tmp_path / "t.csv", index=False)
    result = run_cli("predict", "--model", str(tiny_onnx), "--input", str(tmp_path / "t.csv"),
                     "--output", str(tmp_path / "o.csv"), "--require-gpu")
    assert_one_line_error(result, "--require-gpu", "CPUExecutionProvider, not CUDA")
    assert not (tmp_path / "o.csv").exists()


def _bad_model(tmp_path: Path, tiny_onnx: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.onnx"
    if kind == "corrupt":
        path.write_bytes(tiny_onnx.read_bytes()[:5000])
    elif kind == "no-metadata":
        proto = onnx.load(str(tiny_onnx))
        del proto.metadata_props[:]
        onnx.save(proto, str(path))
    elif kind == "wrong-shape":
        proto = onnx.load(str(tiny_onnx))
        meta = {p.key: p for p in proto.metadata_props}
        meta["image_shape"].value = "[32, 32, 3]"
        onnx.save(proto, str(path))
    return path


@pytest.mark.parametrize("kind, needle", [("corrupt", "not a valid ONNX model"),
                                          ("no-metadata", "missing foldwise metadata"),
                                          ("wrong-shape", "expected uint8 [N, 3, 32, 32]")])
def test_bad_models_are_one_line_errors(kind: str, needle: str, tiny_onnx: Path, tmp_path: Path, real_slice) -> None:
    model = _bad_model(tmp_path, tiny_onnx, kind)
    real_slice["test.csv"].iloc[:5].to_csv(tmp_path / "t.csv", index=False)
    result = run_cli("predict", "--model", str(model), "--input", str(tmp_path / "t.csv"),
                     "--output", str(tmp_path / "o.csv"))
    assert_one_line_error(result, f"{model.name}", needle)


def test_bad_inputs_are_one_line_errors_naming_the_file(tiny_onnx: Path, tmp_path: Path, real_slice) -> None:
    test = real_slice["test.csv"].iloc[:30].copy()
    cases = {}
    small = test.iloc[:, :701]
    small.to_csv(tmp_path / "small.csv", index=False)
    cases["small.csv"] = ["small.csv", "700 pixel columns, expected 784"]
    bad = test.astype(object)
    bad.loc[17, "pixel100"] = "x7"
    bad.to_csv(tmp_path / "nonnumeric.csv", index=False)
    cases["nonnumeric.csv"] = ["nonnumeric.csv: row 18 (line 19), column 'pixel100'", "'x7' is not an integer"]
    np.save(tmp_path / "rgb.npy", np.zeros((4, 28, 28, 3), np.uint8))
    cases["rgb.npy"] = ["rgb.npy: images of shape (28, 28, 3), the model expects (28, 28, 1)"]
    np.save(tmp_path / "float.npy", np.zeros((4, 28, 28), np.float32))
    cases["float.npy"] = ["float.npy: dtype float32, expected uint8"]
    for name, needles in cases.items():
        out = tmp_path / f"out-{name}.csv"
        result = run_cli("predict", "--model", str(tiny_onnx), "--input", str(tmp_path / name), "--output", str(out))
        assert_one_line_error(result, *needles)
        assert not out.exists() and not list(tmp_path.glob("out-*.partial*")), name




def test_an_empty_input_gives_an_empty_valid_output(tiny_onnx: Path, real_slice, tmp_path: Path) -> None:
    """A pixel CSV with a header and no rows (or an .npy of no images) -> the header alone, exit 0."""
    real_slice["test.csv"].iloc[:0].to_csv(tmp_path / "empty.csv", index=False)
    result = run_cli("predict", "--model", str(tiny_onnx), "--input", str(tmp_path / "empty.csv"),
                     "--output", str(tmp_path / "o.csv"), "--probs", str(tmp_path / "p.csv"))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "wrote" in result.stdout and ": 0 rows" in result.stdout
    assert (tmp_path / "o.csv").read_text() == "id,label\n"
    assert (tmp_path / "p.csv").read_text() == "id," + ",".join(str(i) for i in range(10)) + "\n"
    np.save(tmp_path / "empty.npy", np.zeros((0, 28, 28), np.uint8))
    predict_file(tiny_onnx, tmp_path / "empty.npy", tmp_path / "n.csv")
    assert (tmp_path / "n.csv").read_text() == "id,label\n"
    assert not list(tmp_path.glob("*.partial*"))
