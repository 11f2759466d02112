"""The shards of a large prediction input, and which of them are already done.

    shards = plan_shards("test/*.csv", shard_rows=4096)   # a glob, a folder, or one file
    state = ShardState(Path("preds.csv"), model_sha256, with_probs=False)
    todo = [s for s in shards if not state.done(s)]

A shard is one pixel CSV, or up to `shard_rows` image files of one folder (sorted by name, the
order `foldwise predict` reads a folder in). Inputs: a glob (`'shards/*.csv'`,
`'test/part-*'`), a folder of pixel CSVs or of image sub-folders, a folder of images, or a
single pixel CSV. Finished shards are kept in `<output>.shards/` (each written atomically, with
a record of the input files' sizes and times and the model's hash), so a run started again
skips them; the folder is removed once the output is written.
"""
from __future__ import annotations

import glob
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from serve.atomic import write_bytes, write_json
from serve.errors import UserError
from serve.images import IMAGE_SUFFIXES, list_images

GLOB_CHARS = "*?["


@dataclass(frozen=True)
class Shard:
    index: int
    kind: str               # "csv" | "images"
    source: str             # the CSV file, or the folder the images are in (as the user named it)
    files: tuple[str, ...]  # the files to read (one CSV, or image files of `source`)

    def fingerprint(self) -> list:
        out = []
        for f in self.files:
            st = Path(f).stat()
            out.append([Path(f).name, st.st_size, st.st_mtime_ns])
        return out


def _images_in(folder: Path) -> list[Path]:
    """The folder's images in the order `foldwise predict` reads them (serve.images.list_images)."""
    return list_images(folder)


def _entries(spec: str) -> list[Path]:
    if any(c in spec for c in GLOB_CHARS):
        found = [Path(p) for p in sorted(glob.glob(spec))]
        if not found:
            raise UserError(f"--input {spec}: no file or folder matches")
        return found
    path = Path(spec)
    if not path.exists():
        raise UserError(f"--input {spec}: not found")
    if path.is_file():
        return [path]
    if _images_in(path):
        return [path]  # a folder of images
    found = sorted(p for p in path.iterdir() if p.suffix.lower() == ".csv" or p.is_dir())
    if not found:
        raise UserError(f"--input {spec}: no pixel CSVs, image files or image sub-folders in it")
    return found


def plan_shards(spec: str, shard_rows: int = 4096) -> list[Shard]:
    """The shards of `spec`, in output order."""
    if shard_rows < 1:
        raise UserError(f"--shard-rows must be at least 1, got {shard_rows}")
    shards: list[Shard] = []
    for entry in _entries(spec):
        if entry.is_dir():
            images = _images_in(entry)
            if not images:
                raise UserError(f"{entry}: no image files ({', '.join(IMAGE_SUFFIXES)})")
            for start in range(0, len(images), shard_rows):
                shards.append(Shard(len(shards), "images", str(entry),
                                    tuple(str(p) for p in images[start:start + shard_rows])))
        elif entry.suffix.lower() == ".csv":
            shards.append(Shard(len(shards), "csv", str(entry), (str(entry),)))
        else:
            raise UserError(f"{entry}: unsupported shard '{entry.suffix}' (pixel .csv files or folders of images; "
                            "for a .npy use `foldwise predict` with --ids)")
    return shards


class ShardState:
    """`<output>.shards/`: one labels file (and probabilities file) per finished shard, plus a record."""

    def __init__(self, output: Path, model_sha256: str, with_probs: bool) -> None:
        self.dir = output.with_name(output.name + ".shards")
        self.header = {"model_sha256": model_sha256, "probs": with_probs}
        manifest = self.dir / "manifest.json"
        if self.dir.exists():
            try:
                same = json.loads(manifest.read_text()) == self.header
            except (OSError, json.JSONDecodeError):
                same = False
            if not same:  # another model or other outputs: nothing there is reusable
                shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json(manifest, self.header)

    def paths(self, shard: Shard) -> list[Path]:
        names = [f"{shard.index:06d}.csv"] + ([f"{shard.index:06d}.probs.csv"] if self.header["probs"] else [])
        return [self.dir / n for n in names]

    def _record(self, shard: Shard) -> Path:
        return self.dir / f"{shard.index:06d}.json"

    def done(self, shard: Shard) -> bool:
        record = self._record(shard)
        try:
            saved = json.loads(record.read_text())
        except (OSError, json.JSONDecodeError):
            return False
        return (saved == {"source": shard.source, "files": shard.fingerprint()}
                and all(p.exists() for p in self.paths(shard)))

    def save(self, shard: Shard, texts: list[bytes]) -> None:
        for path, text in zip(self.paths(shard), texts):
            write_bytes(path, text)
        write_json(self._record(shard), {"source": shard.source, "files": shard.fingerprint()})

    def concatenate(self, shards: list[Shard], headers: list[bytes], partials: list[Path]) -> int:
        """Write header + every shard's rows, in shard order, to each partial file; returns the rows."""
        for head, partial, i in zip(headers, partials, range(len(headers))):
            with open(partial, "wb") as out:
                out.write(head)
                for shard in shards:
                    with open(self.paths(shard)[i], "rb") as fh:
                        shutil.copyfileobj(fh, out, 1 << 20)
        with open(partials[0], "rb") as fh:
            return sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 20), b"")) - 1

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def refuse_overwriting_shards(outputs: dict[str, Path | None], shards: list[Shard]) -> None:
    """UserError if an output (or its `.partial`/`.shards`) is one of the input files: CSVs are compared
    as files, image folders by folder and name (cheap however many images there are)."""
    from serve.paths import refuse_overwrite, same_file

    refuse_overwrite(outputs, {f"--input {s.source}": Path(s.source) for s in shards if s.kind == "csv"},
                     partial_suffixes=(".partial", ".partial.json", ".shards"))
    folders = {s.source for s in shards if s.kind == "images"}
    for label, out in outputs.items():
        if out is None:
            continue
        for folder in folders:
            if same_file(Path(out).parent, folder) and (Path(folder) / Path(out).name).exists():
                raise UserError(f"{label} {out} is an image of --input {folder}: refusing to overwrite an input "
                                "(choose another output path)")
