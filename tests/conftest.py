"""Shared fixtures. Unit tests may not spawn processes unless marked e2e or subprocess."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
H100_NODE = FIXTURES / "nodes" / "h100-sxm5-80gb-kvm-guest"
H200X2_NODE = FIXTURES / "nodes" / "h200x2-nvlink-kvm-guest"


@pytest.fixture(autouse=True)
def _no_processes_unless_marked(request, monkeypatch):
    """Fail any process spawn from a test not marked e2e/subprocess: unit tests stay pure (cloud-init style)."""
    if request.node.get_closest_marker("e2e") or request.node.get_closest_marker("subprocess"):
        return

    def _refuse(self, args, *a, **kw):
        raise AssertionError(f"unit test tried to spawn a process: {args!r}; mark it e2e or subprocess")

    monkeypatch.setattr(subprocess.Popen, "__init__", _refuse)


@pytest.fixture
def h100_node() -> Path:
    return H100_NODE


@pytest.fixture
def h100_copy(tmp_path) -> Path:
    """A writable copy of the H100 capture, for fault variants."""
    dst = tmp_path / "node"
    shutil.copytree(H100_NODE, dst, symlinks=True)
    return dst
