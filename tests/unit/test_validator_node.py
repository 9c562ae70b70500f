"""validator.node: files under a root, commands replayed from cmd/, tool missing != no GPU."""

from __future__ import annotations

import pytest

from validator.errors import ToolMissing
from validator.node import Node, NodeReadError, NotCaptured, ReplayRunner


def test_open_snapshot_replays(h100_node):
    n = Node.open(h100_node)
    assert not n.live and isinstance(n.runner, ReplayRunner)
    assert n.read_text("/proc/sys/vm/swappiness").strip() == "60"
    assert n.read_int("proc/sys/vm/swappiness") == 60
    assert n.read_int("/sys/devices/pci0000:00/0000:00:06.0/vendor") == 0x10DE
    assert n.exists("/proc/cmdline") and not n.exists("/proc/nope")
    assert "0000:00:06.0" in n.listdir("/sys/devices/pci0000:00")
    assert n.read_text("/nope", "x") == "x" and n.read_int("/proc/cmdline", -1) == -1 and n.listdir("/nope", []) == []


def test_read_errors_name_the_file(h100_node):
    n = Node.open(h100_node)
    with pytest.raises(NodeReadError, match="/proc/nope: not present"):
        n.read_text("/proc/nope")
    with pytest.raises(NodeReadError, match="expected an integer"):
        n.read_int("/proc/cmdline")


def test_cmd_replay_rc_and_tool_missing(h100_node):
    n = Node.open(h100_node)
    res = n.cmd("nvidia-smi-q.xml", ["nvidia-smi", "-q", "-x"])
    assert res.returncode == 0 and "<nvidia_smi_log>" in res.stdout
    with pytest.raises(ToolMissing):  # cmd/lspci.txt: rc=127 "failed to run command"
        n.cmd("lspci.txt", ["lspci"])
    with pytest.raises(NotCaptured, match="dcgmi.txt not captured"):
        n.cmd("dcgmi.txt", ["dcgmi", "diag"])
    assert n.cmd_ok("iommu_groups.txt", ["ls"]).startswith("total 0")  # no .rc file: rc 0


def test_which_from_snapshot(h100_node):
    n = Node.open(h100_node)
    assert n.which("numactl") == "/usr/bin/numactl"
    assert n.which("docker") is None and n.which_known("docker")
    assert n.which("frobnicate") is None and not n.which_known("frobnicate")


def test_nonzero_rc_is_returned_not_raised(tmp_path):
    (tmp_path / "cmd").mkdir()
    (tmp_path / "cmd" / "x.txt").write_text("boom\n")
    (tmp_path / "cmd" / "x.txt.rc").write_text("3\n")
    res = Node.open(tmp_path).cmd("x.txt", ["x"])
    assert res.returncode == 3 and res.stdout == "boom\n"


@pytest.mark.subprocess
def test_live_runner_missing_tool():
    n = Node("/")
    assert n.live
    with pytest.raises(ToolMissing):
        n.cmd("nope.txt", ["gpuforge-no-such-tool-xyz"])
    assert n.cmd("true.txt", ["true"]).returncode == 0


def test_foreign_root_without_cmd_runs_no_command(tmp_path):
    """A mounted image (no cmd/) must not run the host's tools: that would describe the host."""
    (tmp_path / "proc").mkdir()
    n = Node.open(tmp_path)
    assert not n.live
    with pytest.raises(NotCaptured):
        n.cmd("nvidia-smi-q.xml", ["nvidia-smi", "-q", "-x"])
    assert n.which("docker") is None and not n.which_known("docker")
