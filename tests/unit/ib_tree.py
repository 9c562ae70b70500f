"""Build a node tree with InfiniBand HCAs from the kernel's documented sysfs layout (no hardware needed).

Layout: Documentation/ABI/stable/sysfs-class-infiniband (ports/N/{state,phys_state,rate,link_layer,lid,
counters/*}, node_type, fw_ver, hca_type, board_id) with the value formats of drivers/infiniband/core/sysfs.c
("4: ACTIVE", "5: LinkUp", "400 Gb/sec (4X NDR)"); /sys/class/infiniband/<dev> links to the device folder under
its PCI function, whose `device` link points back to that function, and /sys/bus/pci/devices/<address> links to
each function's folder (as the kernel's device model does).
The default is an 8xH100 SXM5 node with one ConnectX-7 (NDR, 400 Gb/s) per GPU on the GPU's PCIe switch,
four GPU/HCA pairs per NUMA node. tests/fixtures/nodes/h100x8-ndr-cx7-sysfs is this tree, written by `main()`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# One host bridge per GPU/HCA pair: root port -> switch upstream -> two downstream ports -> GPU and HCA.
HOST_BRIDGES = (0x15, 0x37, 0x48, 0x59, 0x97, 0xB7, 0xC7, 0xD7)
COUNTERS = ("symbol_error", "port_rcv_errors", "port_rcv_remote_physical_errors", "port_rcv_switch_relay_errors",
            "link_error_recovery", "port_xmit_constraint_errors", "port_rcv_constraint_errors",
            "local_link_integrity_errors", "excessive_buffer_overrun_errors", "link_downed", "port_xmit_discards",
            "VL15_dropped")
MODULES = ("nvidia_peermem", "nvidia_uvm", "nvidia", "mlx5_ib", "ib_uverbs", "ib_core", "mlx5_core")


def _w(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text.endswith("\n") else text + "\n")


def pair_paths(i: int):
    """sysfs paths (relative to the root) of GPU i and HCA i."""
    hb = HOST_BRIDGES[i]
    top = f"sys/devices/pci0000:{hb:02x}/0000:{hb:02x}:01.0/0000:{hb + 1:02x}:00.0"
    gpu = f"{top}/0000:{hb + 2:02x}:00.0/0000:{hb + 3:02x}:00.0"
    hca = f"{top}/0000:{hb + 2:02x}:01.0/0000:{hb + 4:02x}:00.0"
    return gpu, hca


def _pci_function(d: Path, vendor: int, device: int, cls: int, numa: int, cpus: str) -> None:
    for name, val in (("vendor", f"0x{vendor:04x}"), ("device", f"0x{device:04x}"), ("class", f"0x{cls:06x}"),
                      ("numa_node", str(numa)), ("local_cpulist", cpus), ("current_link_speed", "32.0 GT/s PCIe"),
                      ("max_link_speed", "32.0 GT/s PCIe"), ("current_link_width", "16"), ("max_link_width", "16")):
        _w(d / name, val)


def add_port(hca_dir: Path, port: int = 1, state: str = "4: ACTIVE", phys: str = "5: LinkUp",
             rate: str = "400 Gb/sec (4X NDR)", layer: str = "InfiniBand", counters=None) -> Path:
    p = hca_dir / "ports" / str(port)
    for name, val in (("state", state), ("phys_state", phys), ("rate", rate), ("link_layer", layer),
                      ("lid", f"0x{0x10 + port:x}"), ("sm_lid", "0x1"), ("cap_mask", "0xa751e848")):
        _w(p / name, val)
    for c in COUNTERS:
        _w(p / "counters" / c, str((counters or {}).get(c, 0)))
    return p


def build(root: Path, pairs: int = 8, numa_nodes: int = 2, layer: str = "InfiniBand",
          rate: str = "400 Gb/sec (4X NDR)", modules=MODULES, uptime_s: float = 86400.0) -> Path:
    """Write the tree under root (a new or empty folder); returns root."""
    root = Path(root)
    if root.is_dir() and any(root.iterdir()):  # links over an old tree would point into it: never build twice
        raise FileExistsError(f"{root}: not empty; build a node tree into a new folder")
    per_node = max(1, pairs // numa_nodes)
    for i in range(pairs):
        numa = min(i // per_node, numa_nodes - 1)
        cpus = f"{numa * 56}-{numa * 56 + 55}"
        gpu, hca = pair_paths(i)
        _pci_function(root / gpu, 0x10DE, 0x2330, 0x030200, numa, cpus)  # H100 SXM5, 3D controller
        _pci_function(root / hca, 0x15B3, 0x1021, 0x020700, numa, cpus)  # ConnectX-7, InfiniBand controller
        for fn in (gpu, hca):  # /sys/bus/pci/devices/<address> -> the function's folder
            bus = root / "sys/bus/pci/devices" / Path(fn).name
            bus.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.relpath(root / fn, bus.parent), bus)
        dev = root / hca / "infiniband" / f"mlx5_{i}"
        for name, val in (("node_type", "1: CA"), ("node_guid", f"a088:c203:0042:{0x1a00 + i:04x}"),
                          ("sys_image_guid", f"a088:c203:0042:{0x1a00 + i:04x}"), ("fw_ver", "28.39.2048"),
                          ("hca_type", "MT4129"), ("board_id", "MT_0000000838"), ("hw_rev", "0x0"),
                          ("node_desc", f"h100-node-01 mlx5_{i}")):
            _w(dev / name, val)
        os.symlink(f"../../../{Path(hca).name}", dev / "device")
        add_port(dev, 1, rate=rate, layer=layer)
        link = root / "sys/class/infiniband" / f"mlx5_{i}"
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(dev, link.parent), link)
    for n in range(numa_nodes):
        _w(root / f"sys/devices/system/node/node{n}/cpulist", f"{n * 56}-{n * 56 + 55}")
    _w(root / "proc/modules", "".join(f"{m} 16384 0 - Live 0x0000000000000000\n" for m in modules))
    _w(root / "proc/uptime", f"{uptime_s:.2f} {uptime_s * 100:.2f}")
    _w(root / "proc/version", "Linux version 6.1.0-28-amd64 (debian-kernel@lists.debian.org) #1 SMP Debian 6.1.119-1")
    _w(root / "proc/driver/nvidia/version",
       "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.216.03  Fri Oct 25 2024\n"
       "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)")
    return root


def hca_dir(root: Path, i: int) -> Path:
    return Path(root) / pair_paths(i)[1] / "infiniband" / f"mlx5_{i}"


def port_file(root: Path, i: int, name: str, port: int = 1) -> Path:
    return hca_dir(root, i) / "ports" / str(port) / name


def main(argv=None) -> int:
    """python tests/unit/ib_tree.py DIR: write the default tree into DIR (must not exist)."""
    argv = sys.argv[1:] if argv is None else argv
    dest = Path(argv[0])
    dest.mkdir(parents=True)
    build(dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
