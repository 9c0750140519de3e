"""`make` on a machine where `python3 -m venv` cannot work says so in one line."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# a python3 whose ensurepip is missing, as on Debian/Ubuntu without python3-venv
NO_ENSUREPIP = """#!/bin/sh
for a in "$@"; do case "$a" in *ensurepip*|venv)
  echo "Traceback (most recent call last):" >&2; echo "ModuleNotFoundError: No module named 'ensurepip'" >&2; exit 1;;
esac; done
exec python3 "$@"
"""


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize(("script", "expect"), [
    (NO_ENSUREPIP, "sudo apt-get install python3-venv"),
    ("#!/bin/sh\nexit 1\n", "is not Python 3.11 or newer"),
])
def test_make_without_a_working_venv_is_one_line(tmp_path: Path, script: str, expect: str) -> None:
    py = tmp_path / "python3"
    py.write_text(script)
    py.chmod(0o755)
    venv = tmp_path / "venv"
    # as a user types it: not a sub-make of `make test` (which would add "Entering directory" lines)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES")}
    r = subprocess.run(["make", "install", f"PY={py}", f"VENV={venv}"], cwd=REPO, capture_output=True, text=True,
                       timeout=60, env=env)
    assert r.returncode != 0
    lines = [line for line in (r.stdout + r.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and expect in lines[0], lines
    assert "Traceback" not in r.stderr and not venv.exists()
