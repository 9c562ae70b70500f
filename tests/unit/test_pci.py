"""PCI scan over sysfs under a root: NVIDIA display/3D functions only, unknown IDs kept."""

from __future__ import annotations

from pathlib import Path

from validator.pci import scan_gpus


def _fn(root: Path, addr: str, vendor: str, device: str, cls: str) -> None:
    d = root / "sys" / "devices" / "pci0000:00" / addr
    d.mkdir(parents=True)
    (d / "vendor").write_text(vendor + "\n")
    (d / "device").write_text(device + "\n")
    (d / "class").write_text(cls + "\n")


def test_h100_capture(h100_node):
    gpus = scan_gpus(h100_node)
    assert [(g.address, g.pci_id, g.class_code) for g in gpus] == [("0000:00:06.0", "10de:2330", 0x030200)]
    assert gpus[0].subsystem_device_id == 0x16C1


def test_h200_capture(h100_node):
    gpus = scan_gpus(h100_node.parent / "h200x2-nvlink-kvm-guest")
    assert [g.device_id for g in gpus] == [0x2335, 0x2335]


def test_filters_and_keeps_unknown(tmp_path):
    _fn(tmp_path, "0000:00:01.0", "0x10de", "0x2330", "0x030200")
    _fn(tmp_path, "0000:00:02.0", "0x10de", "0x1aef", "0x040300")  # NVIDIA HDMI audio: not a GPU
    _fn(tmp_path, "0000:00:03.0", "0x1af4", "0x1042", "0x030000")  # virtio VGA: not NVIDIA
    _fn(tmp_path, "0000:00:04.0", "0x10de", "0xbeef", "0x030000")  # unknown NVIDIA VGA: kept
    _fn(tmp_path, "0000:00:05.0", "0x10de", "garbage", "0x030000")  # unreadable: skipped, no crash
    assert [g.device_id for g in scan_gpus(tmp_path)] == [0x2330, 0xBEEF]


def test_bus_links_preferred(tmp_path):
    _fn(tmp_path, "0000:00:01.0", "0x10de", "0x2330", "0x030200")
    bus = tmp_path / "sys" / "bus" / "pci" / "devices"
    bus.mkdir(parents=True)
    (bus / "0000:00:01.0").symlink_to("/sys/devices/pci0000:00/0000:00:01.0")  # absolute, as on a live node
    assert [g.address for g in scan_gpus(tmp_path)] == ["0000:00:01.0"]


def test_empty_root(tmp_path):
    assert scan_gpus(tmp_path) == []


def test_relative_bus_links(tmp_path):
    """A live /sys links bus entries relatively (../../../devices/...): followed inside root."""
    _fn(tmp_path, "0000:00:01.0", "0x10de", "0x2331", "0x030200")
    bus = tmp_path / "sys" / "bus" / "pci" / "devices"
    bus.mkdir(parents=True)
    (bus / "0000:00:01.0").symlink_to("../../../devices/pci0000:00/0000:00:01.0")
    assert [g.device_id for g in scan_gpus(tmp_path)] == [0x2331]
