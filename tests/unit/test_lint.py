"""ruff over the tree and mypy over builder/ (configured in pyproject.toml), so a plain pytest run catches what
`make lint` would."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from validator import subp

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    exe = BIN / name if (BIN / name).exists() else shutil.which(name)
    if not exe:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return str(exe)


@pytest.mark.subprocess
def test_ruff_is_clean():
    r = subp.run([_tool("ruff"), "check", "--output-format", "concise", "."], cwd=str(ROOT), timeout=300, check=False)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


@pytest.mark.subprocess
def test_mypy_is_clean_on_builder():
    r = subp.run([_tool("mypy")], cwd=str(ROOT), timeout=600, check=False)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
