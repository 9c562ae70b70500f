"""The validator on this machine, for real (no GPU here): the CLI and the CUDA child as processes; NVML via a fake."""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.subprocess
def test_cli_live_standard_json(tmp_path):
    out = tmp_path / "live.json"
    p = subprocess.run([sys.executable, "-m", "validator", "run", "--level", "standard", "--format", "json", "-o",
                        str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode in (0, 1, 3), p.stderr
    d = json.loads(out.read_text())
    assert d["live"] is True and d["level"] == "standard" and d["exit_code"] == p.returncode
    assert not [r for r in d["results"] if "check crashed" in r["observed"]]
    assert {r["id"] for r in d["results"]} >= {"gpu.cuda_functional", "gpu.memory_bandwidth", "container.gpu_run"}


@pytest.mark.subprocess
def test_cuda_child_without_gpu_reports_json():
    p = subprocess.run([sys.executable, "-m", "validator.cudaprobe"], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0
    d = json.loads(p.stdout.strip().splitlines()[-1])
    assert "devices" in d and "backend" in d


class _FakeNVML(types.ModuleType):
    """Just enough of pynvml for one H100; NotSupported for retired pages like a real Hopper."""

    NVML_MEMORY_ERROR_TYPE_UNCORRECTED, NVML_MEMORY_ERROR_TYPE_CORRECTED = 1, 0
    NVML_VOLATILE_ECC, NVML_AGGREGATE_ECC = 0, 1
    NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS, NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR = 0, 1
    NVML_TEMPERATURE_GPU, NVML_TEMPERATURE_THRESHOLD_SLOWDOWN, NVML_TEMPERATURE_THRESHOLD_SHUTDOWN = 0, 1, 0
    NVML_CLOCK_SM = 1

    class NVMLError(Exception):
        pass

    def __init__(self):
        super().__init__("pynvml")

    def _ns(self, *a):
        raise self.NVMLError("Not Supported")

    def __getattr__(self, name):
        if name.startswith("nvml"):
            return self._ns
        raise AttributeError(name)

    def nvmlInit(self): pass
    def nvmlShutdown(self): pass
    def nvmlSystemGetDriverVersion(self): return "580.159.04"
    def nvmlSystemGetCudaDriverVersion_v2(self): return 13000
    def nvmlDeviceGetCount(self): return 1
    def nvmlDeviceGetHandleByIndex(self, i): return object()
    def nvmlDeviceGetPciInfo(self, h): return types.SimpleNamespace(busId=b"00000000:00:06.0", pciDeviceId=0x233010DE)
    def nvmlDeviceGetName(self, h): return "NVIDIA H100 80GB HBM3"
    def nvmlDeviceGetPersistenceMode(self, h): return 1
    def nvmlDeviceGetEccMode(self, h): return (1, 1)
    def nvmlDeviceGetTotalEccErrors(self, h, kind, counter): return 25 if (kind, counter) == (1, 1) else 0
    def nvmlDeviceGetRemappedRows(self, h): return (0, 1, 0, 0)
    def nvmlDeviceGetTemperature(self, h, s): return 31
    def nvmlDeviceGetPowerUsage(self, h): return 70430
    def nvmlDeviceGetEnforcedPowerLimit(self, h): return 700000
    def nvmlDeviceGetPowerManagementDefaultLimit(self, h): return 700000
    def nvmlDeviceGetCurrentClocksEventReasons(self, h): return 0x1
    def nvmlDeviceGetCurrPcieLinkGeneration(self, h): return 5
    def nvmlDeviceGetMaxPcieLinkGeneration(self, h): return 5
    def nvmlDeviceGetCurrPcieLinkWidth(self, h): return 16
    def nvmlDeviceGetMaxPcieLinkWidth(self, h): return 16
    def nvmlDeviceGetPcieReplayCounter(self, h): return 0

    class c_nvmlEccSramErrorStatus_v1_t(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint), ("bThresholdExceeded", ctypes.c_uint)]

    def nvmlDeviceGetSramEccErrorStatus(self, h, ref): return 0
    def nvmlDeviceGetUnrepairableMemoryFlag_v1(self, h): return 0
    def nvmlDeviceGetRepairStatus(self, h): return [0, 0]


def test_nvml_path_matches_nvidia_smi_path(monkeypatch, h100_node):
    from validator.nvml import read_nvml
    from validator.runner import validate
    monkeypatch.setitem(sys.modules, "pynvml", _FakeNVML())
    data = read_nvml()
    g = data.gpus[0]
    assert data.source == "nvml" and data.cuda_version == "13.0" and g.bus_id == "0000:00:06.0"
    assert g.pci_device_id == 0x2330 and g.dbe_aggregate == 25 and g.retired_dbe is None and g.clock_events == ("gpu_idle",)
    via_nvml = validate(root=h100_node, use_nvml=True)
    via_smi = validate(root=h100_node, use_nvml=False)
    a = {(r.id, r.subject): r.status for r in via_nvml.results}
    b = {(r.id, r.subject): r.status for r in via_smi.results}
    assert a == b


def test_nvml_unavailable_falls_back_to_nvidia_smi(monkeypatch, h100_node):
    from validator.runner import validate
    broken = types.ModuleType("pynvml")
    monkeypatch.setitem(sys.modules, "pynvml", broken)  # no nvmlInit: NvmlUnavailable
    rep = validate(root=h100_node, use_nvml=True)
    assert {r.id: r.status for r in rep.results}["gpu.persistence"] == "pass"


@pytest.mark.subprocess
def test_cli_live_with_nvidia_smi_on_path(tmp_path, h100_node):
    """A live node whose only GPU tool is nvidia-smi (NVML off): the XML path runs for real."""
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\ncat '{h100_node / 'cmd/nvidia-smi-q.xml'}'\n")
    fake.chmod(0o755)
    out = tmp_path / "live.json"
    env = dict(__import__("os").environ, PATH=f"{fake.parent}:{__import__('os').environ['PATH']}")
    p = subprocess.run([sys.executable, "-m", "validator", "run", "--no-nvml", "--format", "json", "-o", str(out),
                        "--group", "gpu"], cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    d = json.loads(out.read_text())
    got = {(r["id"], r["subject"]): r for r in d["results"]}
    assert d["driver_version"] == "580.159.04" and d["gpus"][0]["bus_id"] == "0000:00:06.0"
    assert got[("gpu.ecc_errors", "GPU0 0000:00:06.0")]["status"] == "pass"
    assert got[("gpu.persistence", "GPU0 0000:00:06.0")]["status"] == "pass"
    assert p.returncode == d["exit_code"]


@pytest.mark.subprocess
def test_capture_this_node_replays_the_same(tmp_path):
    """`gpu-validate capture` then `run --root` gives the live run's statuses, check by check."""
    from validator.capture import capture
    from validator.runner import validate
    snap = capture(tmp_path / "snap")
    live = {(r.id, r.subject): r.status for r in validate(root="/").results}
    replay = {(r.id, r.subject): r.status for r in validate(root=snap).results}
    assert replay == live
    assert (snap / "cmd/which.txt").is_file() and not list(tmp_path.glob(".snap.*"))


def test_capture_refuses_existing_folder(tmp_path):
    from validator.capture import capture
    from validator.errors import UserError
    with pytest.raises(UserError, match="already exists"):
        capture(tmp_path)
