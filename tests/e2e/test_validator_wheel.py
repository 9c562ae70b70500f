"""The validator as a built package: the tuning profiles and templates ship as real files (symlinks resolved)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.e2e
def test_wheel_ships_profiles_and_templates(tmp_path):
    src = tmp_path / "src"  # build from a copy: setuptools writes build/ next to the sources
    shutil.copytree(REPO, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".hypothesis", ".pytest_cache", ".cache"))
    out = tmp_path / "whl"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(out)], check=True, timeout=600, cwd=tmp_path)
    whl = next(out.glob("gpuforge-*.whl"))
    with zipfile.ZipFile(whl) as z:
        names = set(z.namelist())
        for prof in (REPO / "kernels/tuning").glob("*.yaml"):
            assert z.read(f"validator/tuning/{prof.name}") == prof.read_bytes()
        assert {"validator/templates/report.html.j2", "validator/templates/fleet.html.j2",
                "validator/cudaprobe.py"} <= names
