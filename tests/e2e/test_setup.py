"""The README's commands set the machine up themselves: `make test` installs the browser and the PDF
renderer it needs.

`make browser` (a prerequisite of `make test`) is run with a PATH where chromium, chromedriver and
pdftoppm are missing and `apt-get` is a recording stand-in (the system's package manager, not our
code): it must be asked for Debian's chromium, chromium-driver and poppler-utils, as a fresh CI
machine needs.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from helpers.cli import ROOT

RECORDER = """#!/bin/sh
echo "$@" >> "{log}"
"""


def test_make_test_installs_chromium_when_missing(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "apt.log"
    (bin_dir / "apt-get").write_text(RECORDER.format(log=log))
    (bin_dir / "apt-get").chmod(0o755)
    for tool in ("id", "sudo"):
        if shutil.which(tool):
            (bin_dir / tool).symlink_to(shutil.which(tool))
    make = shutil.which("make")
    assert make, "make is needed"
    dry = subprocess.run([make, "-n", "-C", str(ROOT), "test"], capture_output=True, text=True)
    assert dry.returncode == 0 and "pytest" in dry.stdout
    result = subprocess.run([make, "-s", "-C", str(ROOT), "browser"], env={**os.environ, "PATH": str(bin_dir)},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    if os.geteuid() == 0:
        calls = log.read_text().splitlines()
        assert calls[0] == "update -qq" and calls[1] == "install -y -qq chromium chromium-driver poppler-utils", calls
        assert "installing Debian's chromium, chromium-driver and poppler-utils" in result.stdout
    else:
        assert "chromium/chromedriver/pdftoppm missing" in result.stderr or log.exists()
