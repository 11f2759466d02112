"""Scaling out: folds across machines through DVC's run-cache, parallel folds and batch inference
on a real two-node Ray cluster (ray.cluster_utils.Cluster, CPU only, loopback).

One cluster serves the module (Ray start-up is slow). Every fold here is trained with one torch
thread in deterministic mode, so the run-cache clones (sequential `dvc repro`) and the Ray run
must give bit-identical fold outputs.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from helpers.cli import assert_one_line_error, run_cli
from helpers.data import write_zip
from helpers.project import dvc, make_project

pytestmark = pytest.mark.e2e
TRAIN = {"model": "foldwise_cnn", "model_kwargs": {"widths": [8, 16, 16]}, "epochs": 2, "batch_size": 32,
         "deterministic": True, "folds": [{"fold": 0, "seed": 0}, {"fold": 1, "seed": 1}]}
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # the sequential side's torch threads = the Ray side's --cpus-per-fold 1
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # Ray's node address: 127.0.0.1, not the host's interface


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=foldwise", "-c", "user.email=ci@foldwise", *args], cwd=cwd, check=True,
                   capture_output=True)


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def cluster():
    """A head node (2 CPUs) and a worker node (1 CPU) on this machine, reachable on 127.0.0.1 only.
    (Ray reads LOOPBACK when it is imported: this is the first import of ray in the test process.)"""
    saved = {k: os.environ.get(k) for k in LOOPBACK}
    os.environ.update(LOOPBACK)
    from ray.cluster_utils import Cluster  # the [ray] extra: `make test` installs it

    local = {"node_ip_address": "127.0.0.1"}
    c = Cluster(initialize_head=True, connect=False,
                head_node_args={"num_cpus": 2, "include_dashboard": False, **local})
    c.add_node(num_cpus=1, **local)
    c.wait_for_nodes()
    assert c.address.startswith("127.0.0.1:"), c.address
    yield c.address
    c.shutdown()
    for k, v in saved.items():
        os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


@pytest.fixture(scope="module")
def origin(tmp_path_factory, real_slice) -> Path:
    """A git repository of the project (2 folds, tiny CNN) whose default DVC remote is a local folder."""
    base = tmp_path_factory.mktemp("distributed")
    project = make_project(base / "origin", write_zip(base / "slice.zip", real_slice), train=TRAIN)
    ok(dvc(project, "remote", "add", "-d", "shared", str(base / "remote")))
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "project")
    return project


def clone(origin: Path, name: str) -> Path:
    dst = origin.parent / name
    git(origin.parent, "clone", "-q", str(origin), str(dst))
    return dst


@pytest.fixture(scope="module")
def run_cache_machines(origin: Path) -> dict:
    """Machine A builds train@0 and machine B train@1, each pushing its outputs and DVC's run-cache
    to the shared remote; then A, like any machine, runs `dvc repro --pull ensemble`."""
    a, b = clone(origin, "machine-a"), clone(origin, "machine-b")
    ok(dvc(a, "repro", "train@0", env=ONE_THREAD))
    ok(dvc(a, "push", "--run-cache"))
    built_b = ok(dvc(b, "repro", "--pull", "train@1", env=ONE_THREAD))
    ok(dvc(b, "push", "--run-cache"))
    return {"b_repro": built_b.stdout, "a": a,
            "a_repro": ok(dvc(a, "repro", "--pull", "ensemble", env=ONE_THREAD)).stdout}


def test_run_cache_recipe_folds_built_on_two_machines_train_nothing_again(run_cache_machines: dict) -> None:
    b_out = run_cache_machines["b_repro"]
    assert "Running stage 'train@1'" in b_out and "Running stage 'train@0'" not in b_out, b_out
    assert "Stage 'prepare' is cached - skipping run" in b_out  # B took A's prepared data from the remote
    out = run_cache_machines["a_repro"]
    assert "Running stage 'train@" not in out and "Running stage 'prepare'" not in out, out
    assert "Stage 'train@1' is cached - skipping run, checking out outputs" in out, out  # B's fold, not retrained
    assert "Running stage 'ensemble'" in out
    a = run_cache_machines["a"]
    stale = json.loads(ok(dvc(a, "status", "--json")).stdout or "{}").keys()
    assert stale <= {"distill", "export", "predict", "submit", "report"}
    assert set(json.loads((a / "metrics.json").read_text())["folds"]) == {"0", "1"}


@pytest.fixture(scope="module")
def parallel(origin: Path, cluster: str) -> tuple[Path, subprocess.CompletedProcess]:
    """A fresh clone whose folds are trained by `foldwise train --parallel` on the two-node cluster."""
    d = clone(origin, "machine-d")
    result = run_cli("train", "--parallel", "--address", cluster, "--cpus-per-fold", "1", cwd=d, env=LOOPBACK)
    return d, ok(result)


def test_parallel_folds_are_recorded_by_dvc_and_equal_the_sequential_ones(parallel, run_cache_machines) -> None:
    d, result = parallel
    nodes = {line.split(" on node ")[1].split()[0] for line in result.stdout.splitlines() if " on node " in line}
    assert len(nodes) == 2, result.stdout  # one fold per node (SPREAD over the two nodes)
    stale = set(json.loads(ok(dvc(d, "status", "--json")).stdout or "{}"))
    assert not any(s.startswith("train@") for s in stale) and "ensemble" in stale, stale
    ran = ok(dvc(d, "repro", "ensemble")).stdout
    assert "Running stage 'train@" not in ran and "Running stage 'ensemble'" in ran, ran
    sequential = run_cache_machines["a"]  # folds built by plain `dvc repro` on machines A and B
    for k in (0, 1):
        par, seq = d / f"models/folds/fold{k}", sequential / f"models/folds/fold{k}"
        assert np.array_equal(np.load(par / "oof_probs.npy"), np.load(seq / "oof_probs.npy")), k
        assert np.array_equal(np.load(par / "oof_rows.npy"), np.load(seq / "oof_rows.npy")), k
        pm, sm = json.loads((par / "metrics.json").read_text()), json.loads((seq / "metrics.json").read_text())
        assert pm["val_accuracy"] == sm["val_accuracy"] and pm["val_logloss"] == sm["val_logloss"], (pm, sm)
        pw, sw = (torch.load(f / "model.pt", map_location="cpu", weights_only=True)["state_dict"] for f in (par, seq))
        assert pw.keys() == sw.keys() and all(torch.equal(pw[key], sw[key]) for key in pw)


def test_only_folds_whose_params_changed_are_trained_again(parallel) -> None:
    """Last user of the parallel clone: it changes fold 1's seed."""
    d, _ = parallel
    params = yaml.safe_load((d / "params.yaml").read_text())
    params["train"]["folds"][1]["seed"] = 7
    (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = ok(run_cli("train", "--parallel", "--dry-run", cwd=d))
    assert "stale: train@1" in result.stdout and "up to date: train@0" in result.stdout, result.stdout


def _csv_shards(frames, folder: Path, parts: int) -> pd.DataFrame:
    test = frames["test.csv"]
    folder.mkdir(parents=True)
    for i, rows in enumerate(np.array_split(np.arange(len(test)), parts)):
        test.iloc[rows].to_csv(folder / f"part-{i}.csv", index=False)
    return test


def test_ray_predict_resumes_after_a_bad_shard_and_equals_predict(cluster: str, tiny_onnx: Path, real_slice,
                                                                 tmp_path: Path) -> None:
    """Two pixel CSVs and a folder of PNGs (split into shards of 10 images) on two CPU actors."""
    from PIL import Image

    test = real_slice["test.csv"]
    images = test.iloc[80:].sort_values("id", key=lambda ids: ids + ".png")  # a folder reads in file-name order
    pd.concat([test.iloc[:80], images]).to_csv(tmp_path / "all.csv", index=False)  # the same rows in one CSV
    _csv_shards({"test.csv": test.iloc[:80]}, tmp_path / "in", 2)
    (tmp_path / "in/part-2").mkdir()
    for i, img in zip(test["id"].iloc[80:], test.drop(columns="id").to_numpy().astype(np.uint8)[80:]):
        Image.fromarray(img.reshape(28, 28)).save(tmp_path / "in/part-2" / f"{i}.png")
    sample = tmp_path / "sample.csv"
    real_slice["sample_submission.csv"].iloc[::-1].to_csv(sample, index=False)  # an order of its own
    ok(run_cli("predict", "--model", str(tiny_onnx), "--input", str(tmp_path / "all.csv"), "--sample", str(sample),
               "--output", str(tmp_path / "one.csv"), "--probs", str(tmp_path / "one_probs.csv")))
    bad = tmp_path / "in/part-1.csv"
    good = bad.read_bytes()
    frame = pd.read_csv(bad, dtype=str)
    frame.loc[2, "pixel5"] = "abc"
    frame.to_csv(bad, index=False)
    args = ["predict", "--ray", "--address", cluster, "--model", str(tiny_onnx), "--input", str(tmp_path / "in/part-*"),
            "--shard-rows", "10", "--workers", "2", "--threads", "1", "--sample", str(sample),
            "--output", str(tmp_path / "ray.csv"), "--probs", str(tmp_path / "ray_probs.csv")]
    failed = run_cli(*args, env=LOOPBACK)
    line = assert_one_line_error(failed, f"{bad}: row 3 (line 4), column 'pixel5'", "5 of 6 shards done")
    assert "fix" in line and not (tmp_path / "ray.csv").exists()
    bad.write_bytes(good)
    result = ok(run_cli(*args, env=LOOPBACK))
    assert "from 6 shards (1 run now, 5 already done)" in result.stdout, result.stdout
    assert (tmp_path / "ray.csv").read_bytes() == (tmp_path / "one.csv").read_bytes()
    assert (tmp_path / "ray_probs.csv").read_bytes() == (tmp_path / "one_probs.csv").read_bytes()
    assert not (tmp_path / "ray.csv.shards").exists()
    # on the two-node cluster, through two onnxruntime actors; which actor takes which shard is Ray's
    # dispatch (a ready actor may take them all under load), so the nodes that did work are not counted
    assert ": 2 node(s), 3 CPUs" in failed.stderr and "6 shards on 2 CPU actors" in failed.stderr, failed.stderr


def test_shards_of_globs_folders_and_image_folders(tmp_path: Path, real_slice) -> None:
    from pipeline.distributed.shards import plan_shards, refuse_overwriting_shards
    from serve.errors import UserError

    _csv_shards(real_slice, tmp_path / "csvs", 3)
    by_glob = plan_shards(str(tmp_path / "csvs/part-*.csv"))
    assert [Path(s.source).name for s in by_glob] == ["part-0.csv", "part-1.csv", "part-2.csv"]
    assert plan_shards(str(tmp_path / "csvs")) == by_glob
    for sub in ("a", "b"):
        (tmp_path / "imgs" / sub).mkdir(parents=True)
        for i in range(5):
            (tmp_path / "imgs" / sub / f"{sub}{i}.png").write_bytes(b"")
    shards = plan_shards(str(tmp_path / "imgs"), shard_rows=2)  # two image sub-folders, 5 images each
    assert [len(s.files) for s in shards] == [2, 2, 1, 2, 2, 1] and {s.kind for s in shards} == {"images"}
    assert [Path(f).name for f in shards[0].files] == ["a0.png", "a1.png"]
    assert [len(s.files) for s in plan_shards(str(tmp_path / "imgs/a"), shard_rows=4)] == [4, 1]
    (tmp_path / "x.npy").write_bytes(b"")
    for spec, needle in ((str(tmp_path / "nothing-*.csv"), "no file or folder matches"),
                         (str(tmp_path / "x.npy"), "unsupported shard '.npy'")):
        with pytest.raises(UserError, match=needle):
            plan_shards(spec)
    for out in (tmp_path / "csvs/part-1.csv", tmp_path / "imgs/b/b3.png"):  # an output that is an input
        with pytest.raises(UserError, match="refusing to overwrite an input"):
            refuse_overwriting_shards({"--output": out}, by_glob + shards)
    refuse_overwriting_shards({"--output": tmp_path / "imgs/b/preds.csv"}, by_glob + shards)  # a new file: fine
