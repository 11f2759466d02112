"""Safe access to a competition archive (a Kaggle zip, or a folder with the same files).

Members are read straight from the zip, never extracted, and names are checked first: an
absolute path, a `..` component or a symlink entry is refused, as is a member whose
compression ratio marks a zip bomb. Kaggle often zips big files inside the archive
(`train.csv.zip`); such a member is opened transparently under its inner name.
"""
from __future__ import annotations

import io
import logging
import os
import stat
import zipfile
from pathlib import Path, PurePosixPath
from typing import IO

from serve.errors import UserError

_logger = logging.getLogger(__name__)
MAX_RATIO = 200  # uncompressed/compressed; a CSV of pixels is ~4x, a zip bomb ~1000x


def check_member_name(archive: str, name: str) -> None:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (len(name) > 1 and name[1] == ":"):
        raise UserError(f"{archive}: unsafe member name '{name}' (absolute or '..'); refusing the archive")


class CompetitionArchive:
    """Find and open competition files by name in a zip or a folder."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise UserError(f"{self.path}: not found (run the download stage first)")
        self._zip: zipfile.ZipFile | None = None
        if self.path.is_dir():
            self.names = sorted(str(p.relative_to(self.path)) for p in self.path.rglob("*") if p.is_file())
            return
        try:
            self._zip = zipfile.ZipFile(self.path)
        except zipfile.BadZipFile:
            raise UserError(f"{self.path}: not a zip archive") from None
        for info in self._zip.infolist():
            check_member_name(str(self.path), info.filename)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise UserError(f"{self.path}: member '{info.filename}' is a symlink; refusing the archive")
            if info.compress_size and info.file_size / info.compress_size > MAX_RATIO and info.file_size > 1 << 24:
                raise UserError(f"{self.path}: member '{info.filename}' expands {info.file_size // info.compress_size}x "
                                "(a zip bomb?); refusing the archive")
        self.names = sorted(i.filename for i in self._zip.infolist() if not i.is_dir())

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
        if self._zip is None:
            fh: IO[bytes] = open(self.path / found, "rb")
        else:
            fh = self._zip.open(found)
        if found.endswith(".zip") and not name.endswith(".zip"):
            inner = CompetitionArchive.__new__(CompetitionArchive)
            inner.path = Path(f"{self.path}/{found}")
            data = io.BytesIO(fh.read())
            fh.close()
            inner_zip = zipfile.ZipFile(data)
            for info in inner_zip.infolist():
                check_member_name(str(inner.path), info.filename)
            members = [i.filename for i in inner_zip.infolist() if PurePosixPath(i.filename).name == name]
            if len(members) != 1:
                raise UserError(f"{inner.path}: expected one '{name}' inside, found {len(members)}")
            return inner_zip.open(members[0])
        return fh

    def label(self, name: str) -> str:
        """How to name member `name` in messages: `archive.zip:train.csv`."""
        return f"{self.path}:{self._find(name) or name}"
