"""Competition archives as Kaggle ships them: a zip, folders zipped inside it (`train.zip`), `.7z`.

    folder = extract_competition(Path("data/raw/competition.zip"), Path("data/.prepare-tmp"))

`extract_competition` unpacks the archive into a folder of ours and then every archive inside it
(`train.zip`, `train.csv.zip`, CIFAR-10's `train.7z`, through py7zr), so the layouts read plain
files. Every member of every archive is checked before anything is written: an absolute path, a
`..` component, a drive letter or a symlink is refused, as is a member whose compression ratio
marks a zip bomb and an archive that would not fit on the disk; each destination is verified to
lie inside the target. `CompetitionArchive` reads single members in place (no extraction) for
the few callers that need one CSV.
"""
from __future__ import annotations

import io
import logging
import os
import shutil
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from serve.errors import UserError

_logger = logging.getLogger(__name__)
MAX_RATIO = 200        # uncompressed/compressed; a CSV of pixels is ~4x, a zip bomb ~1000x
RATIO_FLOOR = 1 << 24  # members smaller than 16 MiB are never called bombs
MAX_DEPTH = 3          # archives inside archives inside archives
ARCHIVE_SUFFIXES = (".zip", ".7z")


def check_member_name(archive: str, name: str) -> None:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (len(name) > 1 and name[1] == ":"):
        raise UserError(f"{archive}: unsafe member name '{name}' (absolute or '..'); refusing the archive")


@dataclass(frozen=True)
class Member:
    name: str
    size: int        # uncompressed bytes
    compressed: int
    is_dir: bool


def _check_bomb(label: str, m: Member) -> None:
    if m.compressed and m.size / m.compressed > MAX_RATIO and m.size > RATIO_FLOOR:
        raise UserError(f"{label}: member '{m.name}' expands {m.size // m.compressed}x (a zip bomb?); "
                        "refusing the archive")


def _zip_members(path: Path, label: str) -> tuple[zipfile.ZipFile, list[Member]]:
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise UserError(f"{label}: not a zip archive") from None
    members = []
    for info in zf.infolist():
        check_member_name(label, info.filename)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UserError(f"{label}: member '{info.filename}' is a symlink; refusing the archive")
        m = Member(info.filename, info.file_size, info.compress_size, info.is_dir())
        _check_bomb(label, m)
        members.append(m)
    return zf, members


def _7z_members(path: Path, label: str):
    import py7zr  # a maintained 7z reader; CIFAR-10 ships train.7z

    try:
        sz = py7zr.SevenZipFile(path, "r")
    except (py7zr.exceptions.Bad7zFile, py7zr.exceptions.UnsupportedCompressionMethodError, EOFError) as exc:
        raise UserError(f"{label}: not a readable 7z archive ({exc})") from None
    if sz.needs_password():
        raise UserError(f"{label}: the 7z archive is encrypted; foldwise cannot open it")
    members = []
    total_packed = max(1, path.stat().st_size)
    for info in sz.list():
        check_member_name(label, info.filename)
        if info.is_symlink:
            raise UserError(f"{label}: member '{info.filename}' is a symlink; refusing the archive")
        members.append(Member(info.filename, int(info.uncompressed or 0), int(info.compressed or 0), info.is_directory))
    total = sum(m.size for m in members)
    if total / total_packed > MAX_RATIO and total > RATIO_FLOOR:  # solid archives: no per-member sizes
        raise UserError(f"{label}: expands {total // total_packed}x (a 7z bomb?); refusing the archive")
    return sz, members


def _destination(target: Path, name: str, label: str) -> Path:
    dest = (target / name).resolve()
    root = target.resolve()
    if dest != root and root not in dest.parents:
        raise UserError(f"{label}: member '{name}' would land outside {target}; refusing the archive")
    return dest


def _check_space(target: Path, members: list[Member], label: str) -> None:
    need = sum(m.size for m in members)
    free = shutil.disk_usage(target).free
    if need > free:
        raise UserError(f"{label}: needs {need / 2**30:.1f} GiB to unpack, {free / 2**30:.1f} GiB free in {target}")


def _unpack(path: Path, target: Path, label: str) -> int:
    """Unpack one archive into `target` (checked first); files already there are kept. Returns files written."""
    is_7z = path.suffix.lower() == ".7z"
    handle, members = _7z_members(path, label) if is_7z else _zip_members(path, label)
    files = [m for m in members if not m.is_dir]
    _check_space(target, files, label)
    for m in members:
        if m.is_dir:  # kept: an empty class folder must be seen (and reported), not vanish
            _destination(target, m.name, label).mkdir(parents=True, exist_ok=True)
    written = 0
    with handle:
        todo = []
        for m in files:
            dest = _destination(target, m.name, label)
            if dest.exists():
                _logger.debug("%s: %s already present; kept", label, m.name)
                continue
            todo.append((m, dest))
        if is_7z:
            staging = target / f".unpack-{path.name}"
            staging.mkdir()
            handle.extract(path=staging, targets=[m.name for m, _ in todo])
            for m, dest in todo:
                src = _destination(staging, m.name, label)
                if src.is_symlink() or not src.is_file():
                    raise UserError(f"{label}: member '{m.name}' did not unpack as a regular file")
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dest)
            shutil.rmtree(staging)
            return len(todo)
        for m, dest in todo:
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                with handle.open(m.name) as src, open(dest, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            except (zipfile.BadZipFile, EOFError, OSError) as exc:
                raise UserError(f"{label}: member '{m.name}' is damaged ({exc})") from None
            written += 1
    return written


def _inner_target(path: Path, label: str) -> Path:
    """Where a nested archive goes: beside it when it holds one file or one folder named like it
    (`train.zip` -> `train/...`), else into a folder named after it."""
    is_7z = path.suffix.lower() == ".7z"
    handle, members = _7z_members(path, label) if is_7z else _zip_members(path, label)
    handle.close()
    files = [m for m in members if not m.is_dir]
    stem = path.name[: -len(path.suffix)]
    tops = {PurePosixPath(m.name.replace("\\", "/")).parts[0] for m in files}
    if len(files) == 1 or tops == {stem}:
        return path.parent
    return path.parent / stem


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def extract_competition(archive: Path, target: Path) -> Path:
    """Unpack `archive` (a zip, a 7z, or a folder: linked or copied) and every archive inside it
    into `target`; return `target`."""
    archive, target = Path(archive), Path(target)
    if not archive.exists():
        raise UserError(f"{archive}: not found (run the download stage first)")
    if archive.is_dir():
        shutil.copytree(archive, target, copy_function=_link_or_copy, dirs_exist_ok=True)
        n = sum(1 for p in target.rglob("*") if p.is_file())
    else:
        target.mkdir(parents=True, exist_ok=True)
        n = _unpack(archive, target, str(archive))
    for depth in range(MAX_DEPTH + 1):
        inner = sorted(p for p in target.rglob("*") if p.is_file() and p.suffix.lower() in ARCHIVE_SUFFIXES)
        if not inner:
            break
        if depth == MAX_DEPTH:
            raise UserError(f"{archive}: archives nested deeper than {MAX_DEPTH} levels; refusing the archive")
        for path in inner:
            label = f"{archive}:{path.relative_to(target)}"
            dest = _inner_target(path, label)
            dest.mkdir(parents=True, exist_ok=True)
            n += _unpack(path, dest, label)
            path.unlink()  # our own copy (a hard link at most: unlinking never touches the user's file)
    _logger.info("%s: %d files unpacked into %s", archive, n, target)
    return target


class CompetitionArchive:
    """Find and open single files by name in a zip (or a folder), in place, without extraction."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise UserError(f"{self.path}: not found (run the download stage first)")
        self._zip: zipfile.ZipFile | None = None
        if self.path.is_dir():
            self.names = sorted(str(p.relative_to(self.path)) for p in self.path.rglob("*") if p.is_file())
            return
        self._zip, members = _zip_members(self.path, str(self.path))
        self.names = sorted(m.name for m in members if not m.is_dir)

    def _find(self, name: str) -> str | None:
        for cand in (name, f"{name}.zip"):
            hits = [n for n in self.names if n == cand or PurePosixPath(n).name == cand]
            if len(hits) > 1:
                raise UserError(f"{self.path}: '{cand}' is ambiguous ({', '.join(hits)})")
            if hits:
                return hits[0]
        return None

    def has(self, name: str) -> bool:
        return self._find(name) is not None

    def open(self, name: str) -> IO[bytes]:
        """A binary file object for member `name` (or `name.zip` holding it)."""
        found = self._find(name)
        if found is None:
            raise UserError(f"{self.path}: no file '{name}' (has: {', '.join(self.names[:10])})")
        fh: IO[bytes] = open(self.path / found, "rb") if self._zip is None else self._zip.open(found)
        if found.endswith(".zip") and not name.endswith(".zip"):
            label = f"{self.path}:{found}"
            data = io.BytesIO(fh.read())
            fh.close()
            try:
                inner = zipfile.ZipFile(data)
            except zipfile.BadZipFile:
                raise UserError(f"{label}: not a zip archive") from None
            for info in inner.infolist():
                check_member_name(label, info.filename)
            members = [i.filename for i in inner.infolist() if PurePosixPath(i.filename).name == name]
            if len(members) != 1:
                raise UserError(f"{label}: expected one '{name}' inside, found {len(members)}")
            return inner.open(members[0])
        return fh

    def label(self, name: str) -> str:
        """How to name member `name` in messages: `archive.zip:train.csv`."""
        return f"{self.path}:{self._find(name) or name}"
