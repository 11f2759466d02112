"""Guards for the files a command writes: never one of the files it reads.

    refuse_overwrite({"--output": out, "--probs": probs}, {"--input": inp, "--model": model})

Two paths are the same file when they resolve to one place (symlinks followed) or, for files
that exist, share device and inode (hard links). Checked before anything is read or written, so
a command can never replace its own input; `<output>.partial` files are covered too.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Optional

from serve.errors import UserError

PathLike = Optional["str | os.PathLike[str]"]


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when `a` and `b` name one file: equal resolved paths, or the same inode (hard links)."""
    pa, pb = Path(a), Path(b)
    if pa.resolve() == pb.resolve():
        return True
    try:
        return os.path.samefile(pa, pb)
    except OSError:  # one of them does not exist yet
        return False


def inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """True when `path` (resolved) lies under `folder` (resolved)."""
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
    except ValueError:
        return False
    return True


def _name(label: str, path: Path) -> str:
    return label if label == str(path) else f"{label} {path}"


def refuse_overwrite(outputs: Mapping[str, PathLike], inputs: Mapping[str, PathLike],
                     partial_suffixes: tuple[str, ...] = ()) -> None:
    """UserError if an output (or `output + suffix`) is one of the inputs, or if two outputs are one
    file. Labels name the option or role (`--output x.csv`)."""
    outs = {label: Path(p) for label, p in outputs.items() if p is not None}
    ins = {label: Path(p) for label, p in inputs.items() if p is not None}
    for out_label, out in outs.items():
        targets = [out, *(out.with_name(out.name + s) for s in partial_suffixes)]
        for in_label, inp in ins.items():
            for target in targets:
                if same_file(target, inp):
                    raise UserError(f"{_name(out_label, out)} is the same file as {_name(in_label, inp)}: refusing to "
                                    "overwrite an input (choose another output path)")
    labels = list(outs)
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            if same_file(outs[a], outs[b]):
                raise UserError(f"{a} and {b} are the same file ({outs[a]}): give each output its own path")
