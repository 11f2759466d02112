"""`foldwise bench decode`: image decoding for prepare and predict (serve.images): one thread against
one thread per core against one process per core, side by side in one run.

    foldwise bench decode --images 600
"""
from __future__ import annotations

import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from serve.images import ImageSpec, default_workers, load_images


def bench_decode(images: int = 600, side: int = 500, target: int = 224, rounds: int = 2,
                 workdir: Path | None = None) -> dict:
    """images/s of serve.images.load_images on generated photo-sized JPEGs: 1 thread vs one per
    core, and one process per core (concurrent.futures), side by side, alternating the order."""
    spec = ImageSpec(target, target, 3)
    workers = default_workers()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        paths = []
        base = rng.integers(0, 256, (side * 3 // 4 // 8, side // 8, 3), dtype=np.uint8)
        for i in range(images):
            im = Image.fromarray(np.roll(base, i, axis=1)).resize((side, side * 3 // 4), Image.Resampling.BILINEAR)
            paths.append(Path(tmp) / f"{i}.jpg")
            im.save(paths[-1], quality=90)

        def threads(n: int) -> float:
            t0 = time.perf_counter()
            load_images(paths, spec, workers=n)
            return images / (time.perf_counter() - t0)

        def processes() -> float:
            t0 = time.perf_counter()
            chunks = [paths[i::workers] for i in range(workers)]
            with ProcessPoolExecutor(max_workers=workers) as pool:
                list(pool.map(load_images, chunks, [spec] * workers, [1] * workers))
            return images / (time.perf_counter() - t0)

        runs: dict[str, list[float]] = {"1 thread": [], f"{workers} threads": [], f"{workers} processes": []}
        for r in range(rounds):
            order = list(runs) if r % 2 == 0 else list(runs)[::-1]
            for name in order:
                runs[name].append(threads(1) if name == "1 thread" else processes() if "process" in name
                                  else threads(workers))
    rates = {k: float(np.median(v)) for k, v in runs.items()}
    return {"images": images, "source": f"{side}x{side * 3 // 4} JPEG", "target": f"{target}x{target}x3",
            "workers": workers, "rates": rates}
