"""`foldwise bench stream`: the peak memory of `foldwise predict` on a generated N-image pixel CSV
(the streaming check: memory stays flat however large the input).

    foldwise bench stream --rows 1000000
"""
from __future__ import annotations

import logging
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline.core import paths
from pipeline.data.archive import CompetitionArchive
from serve.atomic import atomic_path
from serve.errors import UserError

_logger = logging.getLogger(__name__)


def write_big_csv(path: Path, rows: int, source_csv: Path) -> int:
    """A pixel CSV of `rows` real test images (the source's rows repeated under new ids); bytes written."""
    with open(source_csv) as fh:
        header = fh.readline()
        pixels = [line.split(",", 1)[1] for line in fh if line.strip()]
    with atomic_path(path) as tmp, open(tmp, "w") as out:
        out.write(header)
        for start in range(0, rows, len(pixels)):
            n = min(len(pixels), rows - start)
            out.write("".join(f"{start + i},{pixels[i]}" for i in range(n)))
    return path.stat().st_size


def bench_stream(rows: int = 1_000_000, model: Path = paths.graph("int8"),
                 workdir: Path = paths.BENCH, source_csv: Path | None = None, keep: bool = False) -> dict:
    """Generate a `rows`-image pixel CSV, run `foldwise predict` on it in a child process and
    report the child's peak resident memory (getrusage) next to the input's size."""
    workdir.mkdir(parents=True, exist_ok=True)
    big = workdir / f"stream_{rows}.csv"
    out = workdir / f"stream_{rows}_preds.csv"
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        if source_csv is None:
            source_csv = Path(tmp) / "test.csv"
            with CompetitionArchive(paths.ARCHIVE).open("test.csv") as src, open(source_csv, "wb") as dst:
                shutil.copyfileobj(src, dst)
        t0 = time.perf_counter()
        size = write_big_csv(big, rows, source_csv)
        gen_s = time.perf_counter() - t0
    _logger.info("wrote %s: %d rows, %.2f GB in %.0fs", big, rows, size / 1e9, gen_s)
    for p in (out, out.with_name(out.name + ".partial"), out.with_name(out.name + ".partial.json")):
        p.unlink(missing_ok=True)
    cmd = [str(Path(sys.executable).parent / "foldwise"), "predict", "--model", str(model), "--input", str(big),
           "--output", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise UserError(f"bench stream: foldwise predict failed: {proc.stderr.strip().splitlines()[-1:]}")
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    with open(out) as fh:
        written = sum(1 for _ in fh) - 1
    result = {"rows": rows, "input_bytes": size, "model": str(model), "seconds": seconds,
              "images_per_second": rows / seconds, "peak_rss_bytes": peak_kib * 1024, "rows_written": written}
    if not keep:
        big.unlink()
        out.unlink()
    return result
