"""Find NVIDIA GPUs in sysfs under a root directory (`/` live, a node capture in tests)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from validator import userfile
from validator.errors import ConfigError

NVIDIA_VENDOR_ID = 0x10DE
DISPLAY_CLASS = 0x03  # PCI base class 0x03: VGA (0x0300), XGA, 3D controller (0x0302), other display
BRIDGE_OTHER_CLASS = 0x0680  # NVSwitch chips on HGX boards show as NVIDIA "Bridge [0680]" functions
_BDF = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")


@dataclass(frozen=True)
class PciGpu:
    """One NVIDIA display/3D function as sysfs shows it; device_id is kept even when no catalog knows it."""

    address: str  # 0000:00:06.0
    vendor_id: int
    device_id: int
    class_code: int
    subsystem_vendor_id: Optional[int] = None
    subsystem_device_id: Optional[int] = None
    numa_node: Optional[int] = None
    sysfs_path: str = ""

    @property
    def pci_id(self) -> str:
        return f"{self.vendor_id:04x}:{self.device_id:04x}"


def _read_attr(path: Path) -> Optional[str]:
    """One sysfs attribute: a few bytes; a FIFO or a huge file in a snapshot is 'unreadable', never a hang."""
    try:
        return userfile.read_bytes(path, "sysfs attribute", 4096).decode("ascii", errors="replace")
    except ConfigError:
        return None


def _read_hex(path: Path) -> Optional[int]:
    try:
        return int((_read_attr(path) or "").strip(), 16)
    except ValueError:
        return None


def _read_int(path: Path) -> Optional[int]:
    try:
        return int((_read_attr(path) or "").strip())
    except ValueError:
        return None


def _device_dirs(root: Path) -> Dict[str, Path]:
    """PCI function folders by address: /sys/bus/pci/devices links if present, else a walk of /sys/devices/pci*."""
    found: Dict[str, Path] = {}
    bus = root / "sys" / "bus" / "pci" / "devices"
    if bus.is_dir():
        for entry in bus.iterdir():
            if _BDF.match(entry.name):
                # A live /sys link is absolute (/sys/devices/...): re-anchor it under root.
                target = entry
                if entry.is_symlink():
                    link = Path(os.readlink(entry))
                    target = root / link.relative_to("/") if link.is_absolute() else entry.parent / link
                found[entry.name] = target
    devices = root / "sys" / "devices"
    if not found and devices.is_dir():  # captures carry the tree without the bus links
        for host in devices.glob("pci*"):
            for vendor in host.rglob("vendor"):
                d = vendor.parent
                if _BDF.match(d.name) and d.name not in found:
                    found[d.name] = d
    return found


def scan_gpus(root: Path = Path("/")) -> List[PciGpu]:
    """NVIDIA functions of PCI class 0x03xxxx under root, sorted by address (unknown device IDs included)."""
    return _scan(Path(root), lambda cls: (cls >> 16) == DISPLAY_CLASS)


def scan_nvswitches(root: Path = Path("/")) -> List[PciGpu]:
    """NVIDIA functions of PCI class 0x0680xx (NVSwitch) under root, sorted by address."""
    return _scan(Path(root), lambda cls: (cls >> 8) == BRIDGE_OTHER_CLASS)


def _scan(root: Path, wanted_class) -> List[PciGpu]:
    gpus = []
    for addr, d in sorted(_device_dirs(root).items()):
        vendor = _read_hex(d / "vendor")
        cls = _read_hex(d / "class")
        device = _read_hex(d / "device")
        if vendor != NVIDIA_VENDOR_ID or cls is None or device is None or not wanted_class(cls):
            continue
        gpus.append(
            PciGpu(
                address=addr,
                vendor_id=vendor,
                device_id=device,
                class_code=cls,
                subsystem_vendor_id=_read_hex(d / "subsystem_vendor"),
                subsystem_device_id=_read_hex(d / "subsystem_device"),
                numa_node=_read_int(d / "numa_node"),
                sysfs_path=str(d),
            )
        )
    return gpus
