"""NVLink, topology, fabric and memory-health checks: the real 2xH200 capture, and the same capture with one
defect injected (link down, errors counted, PCIe instead of NVLink, fabric manager stopped, health flags)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from validator_helpers import statuses, sub, write
from validator.nvlink import parse_nvlink_errors, parse_nvlink_status
from validator.runner import validate

H200X2 = Path(__file__).parents[1] / "fixtures/nodes/h200x2-nvlink-kvm-guest"
H100 = Path(__file__).parents[1] / "fixtures/nodes/h100-sxm5-80gb-kvm-guest"
XML = "cmd/nvidia-smi-q.xml"
G0, G1 = "GPU0 0000:00:06.0", "GPU1 0000:00:07.0"
NVSWITCH = "sys/devices/pci0000:00/0000:00:0{}.0"


@pytest.fixture
def h200(tmp_path) -> Path:
    dst = tmp_path / "node"
    shutil.copytree(H200X2, dst, symlinks=True)
    return dst


def _errors_text(counts=None) -> str:
    """`nvidia-smi nvlink -e` for both GPUs, 18 links each; counts {(gpu, link, name): n}."""
    counts = counts or {}
    lines = []
    for gpu in (0, 1):
        lines.append(f"GPU {gpu}: NVIDIA H200 (UUID: GPU-{gpu})")
        for link in range(18):
            for name in ("Replay Errors", "Recovery Errors", "CRC Errors"):
                lines.append(f"\t Link {link}: {name}: {counts.get((gpu, link, name), 0)}")
    return "\n".join(lines) + "\n"


def _nvswitch_board(root: Path, fm: str = "active", rc: int = 0) -> None:
    """Two NVSwitch functions on PCI (HGX: 10de:22a3, class 0x068000) and the fabric manager's systemd state."""
    for slot in (8, 9):
        d = NVSWITCH.format(slot)
        write(root, f"{d}/vendor", "0x10de\n")
        write(root, f"{d}/device", "0x22a3\n")
        write(root, f"{d}/class", "0x068000\n")
    write(root, "cmd/fabricmanager-status.txt", fm + "\n")
    write(root, "cmd/fabricmanager-status.txt.rc", f"rc={rc}\n")


def _nvlink(st):
    return {k: v for k, v in st.items() if k[0].startswith("gpu.nvlink") or k[0] == "gpu.memory_health"}


# ---- parsers -----------------------------------------------------------------------------------------------

def test_parse_status_of_the_real_capture():
    got = parse_nvlink_status((H200X2 / "cmd/nvidia-smi-nvlink.txt").read_text())
    assert sorted(got) == [0, 1]
    assert got[0].name == "NVIDIA H200" and got[0].uuid.startswith("GPU-5515289f")
    assert len(got[1].active) == 18 and {l.gbs for l in got[1].links} == {26.562}
    assert parse_nvlink_status((H100 / "cmd/nvidia-smi-nvlink.txt").read_text()) == {}


def test_parse_status_inactive_and_garbage():
    got = parse_nvlink_status("GPU 0: NVIDIA H100 (UUID: GPU-a)\n\t Link 0: 26.562 GB/s\n\t Link 1: <inactive>\n"
                              "noise\n\x1b[4mLink 2: 0 GB/s\x1b[0m\n")
    assert [(l.link, l.active) for l in got[0].links] == [(0, True), (1, False), (2, False)]
    assert parse_nvlink_status("Link 0: 26 GB/s\n") == {}  # a link before any GPU line is dropped


def test_parse_errors_both_layouts():
    one_line = parse_nvlink_errors(_errors_text({(1, 3, "Recovery Errors"): 2}))
    assert one_line[1].total("recovery") == 2 and one_line[1].links_with("recovery") == (3,)
    assert one_line[0].total("crc") == 0 and len(one_line[0].counters) == 18
    nested = parse_nvlink_errors("GPU 0: NVIDIA B200\n Link 0:\n  CRC Flit Error: 0\n  Replay Error: 2\n"
                                 " Link 1:\n  Replay Error: 0\n")
    assert nested[0].total("replay") == 2 and nested[0].links_with("replay") == (0,)


# ---- the real captures --------------------------------------------------------------------------------------

def test_h200x2_capture_nvlink_verdicts():
    got = {(r.id, r.subject): r for r in validate(root=H200X2).results}
    for gpu in (G0, G1):
        r = got[("gpu.nvlink_links", gpu)]
        assert r.status == "pass" and r.observed == "18 active at 26.562 GB/s", r.observed
        assert "18 active (H200 SXM 141GB)" in r.expected
        assert got[("gpu.memory_health", gpu)].status == "pass"
    # the capture predates `nvlink -e`: skip with the reason, never a pass
    assert got[("gpu.nvlink_errors", "")].status == "skip"
    assert "nvidia-smi-nvlink-e.txt not captured" in got[("gpu.nvlink_errors", "")].observed
    assert got[("gpu.nvlink_topology", "")].status == "pass" and got[("gpu.nvlink_topology", "")].observed == "GPU0-GPU1 NV18"
    fab = got[("gpu.nvlink_fabric", "")]
    assert fab.status == "pass" and "Completed/Success on 2 GPU(s)" in fab.observed


def test_h100_single_gpu_capture_skips_with_reasons():
    got = {(r.id, r.subject): r for r in validate(root=H100).results}
    assert got[("gpu.nvlink_links", "")].status == "skip" and "one GPU" in got[("gpu.nvlink_links", "")].observed
    assert got[("gpu.nvlink_topology", "")].status == "skip"
    assert got[("gpu.nvlink_fabric", "")].status == "skip" and "not an NVSwitch system" in got[("gpu.nvlink_fabric", "")].observed
    assert got[("gpu.memory_health", G0)].status == "pass"


# ---- injected faults: exactly the right id changes -----------------------------------------------------------

def _link_down(root):
    p = root / "cmd/nvidia-smi-nvlink.txt"
    text = p.read_text()
    head, gpu1 = text.split("GPU 1:")
    p.chmod(0o644)
    p.write_text(head + "GPU 1:" + gpu1.replace("Link 17: 26.562 GB/s", "Link 17: <inactive>"))


def _link_slow(root):
    p = root / "cmd/nvidia-smi-nvlink.txt"
    p.chmod(0o644)
    p.write_text(p.read_text().replace("Link 5: 26.562 GB/s", "Link 5: 13.281 GB/s", 1))


def _recovery_errors(root):
    write(root, "cmd/nvidia-smi-nvlink-e.txt", _errors_text({(0, 4, "Recovery Errors"): 3}))


def _replay_errors(root):
    write(root, "cmd/nvidia-smi-nvlink-e.txt", _errors_text({(1, 0, "Replay Errors"): 7}))


def _crc_storm(root):
    write(root, "proc/uptime", "100.0 100.0\n")
    write(root, "cmd/nvidia-smi-nvlink-e.txt", _errors_text({(1, 2, "CRC Errors"): 50_000}))


def _topo_phb(root):
    sub(root, "cmd/nvidia-smi-topo.txt", r"NV18", "PHB")


def _topo_sys(root):
    sub(root, "cmd/nvidia-smi-topo.txt", r"NV18", "SYS")


def _fm_stopped(root):
    _nvswitch_board(root, fm="inactive", rc=3)
    sub(root, XML, r"<state>Completed</state>", "<state>In Progress</state>")


def _fm_died_after_registration(root):
    _nvswitch_board(root, fm="failed", rc=3)


def _fm_version_mismatch(root):
    write(root, "cmd/fabricmanager-version.txt", "Fabric Manager version is : 570.86.15\n")


def _fabric_error(root):
    sub(root, XML, r"<status>Success</status>", "<status>NV_ERR_INSUFFICIENT_RESOURCES</status>", count=1)


def _sram_threshold(root):
    sub(root, XML, r"<sram_threshold_exceeded>No<", "<sram_threshold_exceeded>Yes<", count=1)


def _channel_repair(root):
    sub(root, XML, r"<channel_repair_pending>No<", "<channel_repair_pending>Yes<", count=1)


FAULTS = {
    "link_down": (_link_down, ("gpu.nvlink_links", G1), "fail"),
    "link_slow": (_link_slow, ("gpu.nvlink_links", G0), "fail"),
    "recovery_errors": (_recovery_errors, ("gpu.nvlink_errors", G0), "fail"),
    "replay_errors": (_replay_errors, ("gpu.nvlink_errors", G1), "warn"),
    "crc_storm": (_crc_storm, ("gpu.nvlink_errors", G1), "fail"),
    "topo_phb": (_topo_phb, ("gpu.nvlink_topology", ""), "fail"),
    "topo_sys": (_topo_sys, ("gpu.nvlink_topology", ""), "fail"),
    "fabric_manager_stopped": (_fm_stopped, ("gpu.nvlink_fabric", ""), "fail"),
    "fabric_manager_died": (_fm_died_after_registration, ("gpu.nvlink_fabric", ""), "fail"),
    "fabric_manager_version": (_fm_version_mismatch, ("gpu.nvlink_fabric", ""), "fail"),
    "fabric_status_error": (_fabric_error, ("gpu.nvlink_fabric", ""), "fail"),
    "sram_threshold": (_sram_threshold, ("gpu.memory_health", G0), "fail"),
    "channel_repair": (_channel_repair, ("gpu.memory_health", G0), "fail"),
}


def _healthy_nvswitch_board(root: Path) -> None:
    """What a healthy HGX looks like to these checks: error counters at 0, NVSwitches, fabric manager active."""
    write(root, "cmd/nvidia-smi-nvlink-e.txt", _errors_text())
    _nvswitch_board(root)
    write(root, "cmd/fabricmanager-version.txt", "Fabric Manager version is : 580.159.04\n")


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_fault_caught_by_its_check_only(h200, fault):
    _healthy_nvswitch_board(h200)
    base = statuses(h200)
    assert {k: v for k, v in _nvlink(base).items() if v != "pass"} == {}
    edit, key, want = FAULTS[fault]
    edit(h200)
    after = statuses(h200)
    changed = {k: (base[k], after[k]) for k in base if base[k] != after[k]}
    assert set(after) == set(base) and changed == {key: ("pass", want)}, changed


def test_fault_reasons_and_remedies(h200):
    _healthy_nvswitch_board(h200)
    _fm_stopped(h200)
    _sram_threshold(h200)
    _channel_repair(h200)
    _link_down(h200)
    got = {(r.id, r.subject): r for r in validate(root=h200).results}
    fab = got[("gpu.nvlink_fabric", "")]
    assert "2 NVSwitch on PCI" in fab.observed and "nvidia-fabricmanager inactive" in fab.observed
    assert "GPU0 In Progress" in fab.observed and "error 802" in fab.remedy
    mh = got[("gpu.memory_health", G0)]
    assert "SRAM uncorrectable errors above threshold" in mh.observed and "channel repair pending" in mh.observed
    assert "RMA" in mh.remedy and "nvidia-smi -r" in mh.remedy
    links = got[("gpu.nvlink_links", G1)]
    assert links.observed == "17 active at 26.562 GB/s; inactive: link 17" and "reset the GPU" in links.remedy


def test_memory_health_not_reported_is_skip(h200):
    for tag in ("sram_threshold_exceeded", "channel_repair_pending", "tpc_repair_pending", "unrepairable_memory"):
        sub(h200, XML, rf"<{tag}>No</{tag}>", "")
    got = {(r.id, r.subject): r for r in validate(root=h200).results}
    assert got[("gpu.memory_health", G0)].status == "skip"
    assert "not reported" in got[("gpu.memory_health", G0)].observed


def test_partially_reported_memory_health_says_which(h200):
    sub(h200, XML, r"<tpc_repair_pending>No</tpc_repair_pending>", "<tpc_repair_pending>N/A</tpc_repair_pending>")
    r = {(r.id, r.subject): r for r in validate(root=h200).results}[("gpu.memory_health", G0)]
    assert r.status == "pass" and r.observed == "none of 3 flags set (TPC repair pending: not reported)"


def test_pcie_cards_without_bridge_are_not_nvlink_boards(h200):
    """Two H100 PCIe (NVLink only with a bridge) talking over PHB, no links: nothing fails."""
    sub(h200, XML, r"<pci_device_id>233510DE<", "<pci_device_id>233110DE<")
    sub(h200, "cmd/nvidia-smi-topo.txt", r"NV18", "PHB")
    write(h200, "cmd/nvidia-smi-nvlink.txt", "")
    got = {(r.id, r.subject): r for r in validate(root=h200).results}
    assert got[("gpu.nvlink_topology", "")].status == "pass"
    assert {got[("gpu.nvlink_links", g)].status for g in (G0, G1)} == {"pass"}
    assert "with an NVLink bridge" in got[("gpu.nvlink_links", G0)].expected


def _four_gpus(root: Path, cells) -> None:
    """The capture's XML with 4 GPUs (the two real ones twice) and a topology matrix from {(a, b): cell}."""
    p = root / XML
    text = p.read_text()
    gpus = text[text.index("<gpu id="):text.rindex("</gpu>") + len("</gpu>")]
    more = gpus.replace("00000000:00:06.0", "00000000:00:08.0").replace("00000000:00:07.0", "00000000:00:09.0")
    p.chmod(0o644)
    p.write_text(text.replace(gpus, gpus + "\n" + more).replace("<attached_gpus>2<", "<attached_gpus>4<"))
    head = "\t" + "\t".join(f"GPU{i}" for i in range(4)) + "\tCPU Affinity\n"
    rows = [f"GPU{a}\t" + "\t".join(" X " if a == b else cells.get((min(a, b), max(a, b)), "NV18") for b in range(4))
            + "\t0-31" for a in range(4)]
    write(root, "cmd/nvidia-smi-topo.txt", head + "\n".join(rows) + "\n")


@pytest.mark.parametrize("cells,status,words", [
    ({}, "pass", "GPU2-GPU3 NV18"),
    ({(2, 3): "NV12"}, "warn", "fewer links than the other pairs (NV18): GPU2-GPU3 NV12"),
    ({(0, 3): "SYS", (1, 2): "NODE"}, "fail", "not over NVLink: GPU0-GPU3 SYS, GPU1-GPU2 NODE"),
])
def test_topology_of_a_four_gpu_board(h200, cells, status, words):
    _four_gpus(h200, cells)
    r = {(r.id, r.subject): r for r in validate(root=h200).results}[("gpu.nvlink_topology", "")]
    assert (r.status, words in r.observed) == (status, True), r.observed


def test_catalog_link_counts_agree_with_bandwidth(tmp_path):
    from validator.catalog import DATA_DIR, load_catalog
    from validator.errors import ConfigError
    cat = load_catalog()
    assert cat.find("H200").nvlink_links == 18 and cat.find("A100 SXM4 80GB").nvlink_links == 12
    assert cat.find("V100 SXM2 16GB").nvlink_links == 6 and cat.find("B200").nvlink_links == 18
    assert cat.find("H100 PCIe").nvlink_bridge and cat.find("L4").nvlink_links == 0
    assert cat.find("B200").nvlink_link_gbs == 50.0
    bad = tmp_path / "gpus.yaml"
    bad.write_text((DATA_DIR / "gpus.yaml").read_text().replace("nvlink_links: 18\n", "nvlink_links: 16\n", 1))
    with pytest.raises(ConfigError) as e:
        load_catalog(bad)
    assert "nvlink_links" in str(e.value)


def test_nvml_reads_fabric_and_memory_health(monkeypatch):
    """The NVML path gives the same typed fields as the XML: fabric state words, health flags."""
    import ctypes
    import sys
    from test_validator_live import _FakeNVML
    from validator.nvml import read_nvml

    class Hgx(_FakeNVML):
        class c_nvmlGpuFabricInfo_v3_t(ctypes.Structure):
            _fields_ = [("version", ctypes.c_uint), ("status", ctypes.c_int), ("state", ctypes.c_uint8),
                        ("healthSummary", ctypes.c_uint8)]

        def nvmlDeviceGetGpuFabricInfoV(self, h, ref):
            ref._obj.state, ref._obj.status, ref._obj.healthSummary = 2, 0, 1  # In Progress, success, Healthy
            return 0

        def nvmlDeviceGetSramEccErrorStatus(self, h, ref):
            ref._obj.bThresholdExceeded = 1
            return 0

        def nvmlDeviceGetRepairStatus(self, h):
            return [0, 1]

    monkeypatch.setitem(sys.modules, "pynvml", Hgx())
    g = read_nvml().gpus[0]
    assert (g.fabric_state, g.fabric_status, g.fabric_health) == ("In Progress", "Success", "Healthy")
    assert (g.sram_threshold_exceeded, g.unrepairable_memory, g.channel_repair_pending, g.tpc_repair_pending) == \
        (True, False, False, True)
    monkeypatch.setitem(sys.modules, "pynvml", _FakeNVML())
    g = read_nvml().gpus[0]
    assert g.fabric_state is None and g.sram_threshold_exceeded is False


def test_nvswitch_board_without_any_fabric_reading_is_skip(h200):
    """NVSwitches on PCI, a driver that reports no fabric state, fabric manager state not captured: unknown."""
    _nvswitch_board(h200)
    (h200 / "cmd/fabricmanager-status.txt").unlink()
    (h200 / "cmd/fabricmanager-status.txt.rc").unlink()
    sub(h200, XML, r"<state>Completed</state>", "<state>N/A</state>")
    r = {(r.id, r.subject): r for r in validate(root=h200).results}[("gpu.nvlink_fabric", "")]
    assert r.status == "skip" and "2 NVSwitch on PCI" in r.observed and "neither" in r.observed
    write(h200, "cmd/fabricmanager-status.txt", "active\n")
    assert statuses(h200)[("gpu.nvlink_fabric", "")] == "pass"
    write(h200, "cmd/fabricmanager-status.txt", "inactive\n")
    write(h200, "cmd/fabricmanager-status.txt.rc", "rc=3\n")
    assert statuses(h200)[("gpu.nvlink_fabric", "")] == "fail"
