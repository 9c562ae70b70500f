"""InfiniBand / RoCE HCAs as sysfs shows them, read through a Node (live `/` or a snapshot).

Layout and value formats: the kernel's Documentation/ABI/stable/sysfs-class-infiniband and
drivers/infiniband/core/sysfs.c (`state` "4: ACTIVE", `phys_state` "5: LinkUp", `rate` "400 Gb/sec (4X NDR)",
`link_layer` "InfiniBand" or "Ethernet"); `device` links to the HCA's PCI function."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from validator.node import Node

IB_CLASS = "/sys/class/infiniband"
# PMA PortCounters the checks read (the ABI file lists them; all are cumulative since the HCA's last reset).
COUNTERS = ("link_downed", "symbol_error", "link_error_recovery", "port_rcv_errors", "local_link_integrity_errors",
            "excessive_buffer_overrun_errors", "port_xmit_discards", "port_rcv_remote_physical_errors")
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*Gb/sec(?:\s*\((\d+)X\s*([A-Z0-9]*)\))?")


@dataclass(frozen=True)
class IbPort:
    hca: str
    port: int
    state: str  # DOWN, INIT, ARMED, ACTIVE, ACTIVE_DEFER ("" when unreadable)
    phys_state: str  # Sleep, Polling, Disabled, PortConfigurationTraining, LinkUp, LinkErrorRecovery, Phy Test
    rate_gbps: Optional[float]
    rate_text: str  # "400 Gb/sec (4X NDR)"
    link_layer: str  # InfiniBand | Ethernet
    counters: Dict[str, Optional[int]] = field(default_factory=dict, compare=False, hash=False)

    @property
    def name(self) -> str:
        return f"{self.hca}:{self.port}"

    @property
    def up(self) -> bool:
        return self.state == "ACTIVE" and self.phys_state == "LinkUp"


@dataclass(frozen=True)
class Hca:
    name: str  # mlx5_0
    pci_address: Optional[str]  # 0000:1a:00.0
    pci_path: Tuple[str, ...]  # sysfs PCI path components below /sys/devices, e.g. ("pci0000:15", "0000:15:01.0", ...)
    numa_node: Optional[int]  # None: unknown or -1
    node_type: str = ""  # "1: CA"
    fw_ver: str = ""
    hca_type: str = ""
    board_id: str = ""
    ports: Tuple[IbPort, ...] = ()


def _state(text: str) -> str:
    """'4: ACTIVE' -> 'ACTIVE'; '5: LinkUp' -> 'LinkUp'."""
    return text.strip().split(":", 1)[-1].strip()


def parse_rate(text: str) -> Optional[float]:
    """'400 Gb/sec (4X NDR)' -> 400.0; '2.5 Gb/sec (1X SDR)' -> 2.5; None when unreadable."""
    m = _RATE.match(text or "")
    return float(m.group(1)) if m else None


def _pci_components(node: Node, rel: str) -> Tuple[Optional[str], Tuple[str, ...]]:
    """The PCI function a sysfs link points to: (address, path components below sys/devices)."""
    p = node.path(rel)
    try:
        real = Path(os.path.realpath(p))
        parts = real.relative_to(node.root.resolve()).parts
    except (OSError, ValueError):
        return None, ()
    if "devices" not in parts:
        return None, ()
    comps = tuple(parts[parts.index("devices") + 1:])
    addr = next((c for c in reversed(comps) if re.fullmatch(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]", c)), None)
    # Keep the path up to the PCI function itself (a link may point into its infiniband/ subfolder).
    if addr is not None:
        comps = comps[:comps.index(addr) + 1]
    return addr, comps


def read_port(node: Node, hca: str, port: int) -> IbPort:
    base = f"{IB_CLASS}/{hca}/ports/{port}"
    rate_text = node.read_text(f"{base}/rate", "").strip()
    counters = {c: node.read_int(f"{base}/counters/{c}", None) for c in COUNTERS}
    return IbPort(hca, port, _state(node.read_text(f"{base}/state", "")), _state(node.read_text(f"{base}/phys_state", "")),
                  parse_rate(rate_text), rate_text, node.read_text(f"{base}/link_layer", "").strip(), counters)


def read_hcas(node: Node) -> List[Hca]:
    """Every RDMA device under /sys/class/infiniband with its ports; [] when there is none (or no such class)."""
    out = []
    for name in node.listdir(IB_CLASS, []):
        base = f"{IB_CLASS}/{name}"
        addr, comps = _pci_components(node, f"{base}/device")
        numa = node.read_int(f"{base}/device/numa_node", None)
        ports = []
        for p in node.listdir(f"{base}/ports", []):
            if p.isdigit():
                ports.append(read_port(node, name, int(p)))
        out.append(Hca(name, addr, comps, numa if numa is not None and numa >= 0 else None,
                       node.read_text(f"{base}/node_type", "").strip(), node.read_text(f"{base}/fw_ver", "").strip(),
                       node.read_text(f"{base}/hca_type", "").strip(), node.read_text(f"{base}/board_id", "").strip(),
                       tuple(sorted(ports, key=lambda x: x.port))))
    return out


def pci_components(node: Node, sysfs_path: str) -> Tuple[str, ...]:
    """Components below sys/devices of a PCI function folder given as a path under the node's root."""
    rel = os.path.relpath(sysfs_path, str(node.root)) if os.path.isabs(sysfs_path) else sysfs_path
    return _pci_components(node, rel)[1]


def pci_relation(a: Tuple[str, ...], a_numa: Optional[int], b: Tuple[str, ...], b_numa: Optional[int]) -> str:
    """How two PCI functions reach each other, in `nvidia-smi topo -m` words: PXB (below one root port, through
    PCIe switches), PHB (one host bridge), NODE (same NUMA node, different host bridges), SYS (across NUMA
    nodes), or '?' when neither path nor NUMA node says."""
    if a and b:
        common = 0
        for x, y in zip(a[:-1], b[:-1]):  # the functions themselves differ
            if x != y:
                break
            common += 1
        if common >= 2:
            return "PXB"
        if common == 1:
            return "PHB"
    if a_numa is not None and b_numa is not None:
        return "NODE" if a_numa == b_numa else "SYS"
    return "?"


RELATION_RANK = {"PXB": 0, "PHB": 1, "NODE": 2, "SYS": 3, "?": 4}
