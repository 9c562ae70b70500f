"""NCCL settings for a benchmark, derived from the node and overridable, plus where NCCL's INFO log goes.

Precedence: --nccl-env KEY=VALUE, then NCCL_* already in the environment, then what this node suggests:
NCCL_IB_HCA from the HCA ports that are up, NCCL_SOCKET_IFNAME from the interface of the default route
(multi-node runs only), NCCL_IB_GID_INDEX from a RoCE v2 GID. Every value says where it came from."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional

from validator import fabric
from validator.errors import UserError
from validator.node import Node

# Interfaces that never carry traffic between nodes.
_VIRTUAL_IF = re.compile(r"^(lo|docker\d*|virbr\d*|veth.*|br-.*|cni\d*|flannel.*|cali.*|tun\d*|tap\d*)$")
# Subsystems whose INFO lines name the network plugin and each channel's transport (net.cc/p2p.cc/shm.cc log
# "Channel xx/y : a[i] -> b[j] via ..." under NCCL_INIT, "Using network ..." under NCCL_INIT|NCCL_NET).
DEBUG_SUBSYS = "INIT,NET,ENV"


@dataclass(frozen=True)
class NcclEnv:
    values: Dict[str, str] = field(default_factory=dict)
    sources: Dict[str, str] = field(default_factory=dict)  # name -> "--nccl-env" | "environment" | "derived: why"
    hcas_up: tuple = ()  # "mlx5_0:1" ports that are ACTIVE/LinkUp on this node
    notes: tuple = ()

    def to_info(self) -> dict:
        return {"values": dict(self.values), "sources": dict(self.sources), "hcas_up": list(self.hcas_up),
                "notes": list(self.notes)}


def parse_overrides(items: Iterable[str]) -> Dict[str, str]:
    """--nccl-env KEY=VALUE pairs; a malformed one is a usage error naming it."""
    out = {}
    for it in items:
        key, sep, val = it.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Z][A-Z0-9_]*", key):
            raise UserError(f"--nccl-env {it!r}: expected KEY=VALUE with an upper-case variable name, "
                            "e.g. NCCL_SOCKET_IFNAME=eth0")
        out[key] = val
    return out


def default_route_iface(node: Node) -> Optional[str]:
    """The interface of the IPv4 default route (/proc/net/route, destination 00000000), if not a virtual one."""
    for line in node.read_text("/proc/net/route", "").splitlines()[1:]:
        f = line.split()
        if len(f) >= 2 and f[1] == "00000000" and not _VIRTUAL_IF.match(f[0]):
            return f[0]
    return None


def up_ifaces(node: Node) -> List[str]:
    """Physical-looking interfaces whose operstate is up, sorted."""
    return [n for n in node.listdir("/sys/class/net", []) if not _VIRTUAL_IF.match(n)
            and node.read_text(f"/sys/class/net/{n}/operstate", "").strip() == "up"]


def roce_gid_index(node: Node, port: fabric.IbPort) -> Optional[int]:
    """The first RoCE v2 GID index of an Ethernet-link-layer port with a non-link-local address."""
    base = f"{fabric.IB_CLASS}/{port.hca}/ports/{port.port}"
    for idx in sorted((int(i) for i in node.listdir(f"{base}/gid_attrs/types", []) if i.isdigit())):
        if node.read_text(f"{base}/gid_attrs/types/{idx}", "").strip() != "RoCE v2":
            continue
        gid = node.read_text(f"{base}/gids/{idx}", "").strip().lower()
        if gid and not gid.startswith("fe80:") and set(gid) - set("0:"):
            return idx
    return None


def derive(node: Node, env: Mapping[str, str], multi_node: bool, overrides: Optional[Mapping[str, str]] = None,
           hcas: Optional[List[fabric.Hca]] = None) -> NcclEnv:
    """The NCCL_* values to give the benchmark child, with their sources."""
    overrides = dict(overrides or {})
    hcas = fabric.read_hcas(node) if hcas is None else hcas
    up = [p for h in hcas for p in h.ports if p.up]
    derived: Dict[str, tuple] = {}
    notes = []
    if up:
        derived["NCCL_IB_HCA"] = ("=" + ",".join(p.name for p in up),
                                  f"derived: {len(up)} HCA port(s) ACTIVE/LinkUp in {fabric.IB_CLASS}")
        roce = [p for p in up if p.link_layer == "Ethernet"]
        if roce:
            idx = roce_gid_index(node, roce[0])
            if idx is not None:
                derived["NCCL_IB_GID_INDEX"] = (str(idx), f"derived: first RoCE v2 GID of {roce[0].name}")
    elif hcas:
        notes.append("HCAs present but no port is ACTIVE/LinkUp: " + ", ".join(
            f"{p.name} {p.state or '?'}/{p.phys_state or '?'}" for h in hcas for p in h.ports))
    if multi_node:
        iface = default_route_iface(node)
        if iface is None:
            ups = up_ifaces(node)
            iface = ups[0] if len(ups) == 1 else None
            why = "the only interface up"
        else:
            why = "the default route's interface"
        if iface:
            derived["NCCL_SOCKET_IFNAME"] = (iface, f"derived: {why}")
        else:
            notes.append("no interface for NCCL's sockets could be chosen (no default route, not exactly one "
                         "interface up): NCCL picks one itself; set NCCL_SOCKET_IFNAME")
    values, sources = {}, {}
    for k, (v, why) in derived.items():
        values[k], sources[k] = v, why
    for k, v in env.items():
        if k.startswith("NCCL_") and k not in ("NCCL_DEBUG_FILE",):
            values[k], sources[k] = v, "environment"
    for k, v in overrides.items():
        values[k], sources[k] = v, "--nccl-env"
    return NcclEnv(values, sources, tuple(p.name for p in up), tuple(notes))


def debug_env(env: Mapping[str, str], log_path: str) -> Dict[str, str]:
    """NCCL_DEBUG=INFO into our own file, so the transport can be read back; the operator's own settings win."""
    if env.get("NCCL_DEBUG_FILE"):
        return {}
    out = {"NCCL_DEBUG_FILE": log_path}
    if env.get("NCCL_DEBUG", "").upper() not in ("INFO", "TRACE"):
        out["NCCL_DEBUG"] = "INFO"
        out["NCCL_DEBUG_SUBSYS"] = DEBUG_SUBSYS
    return out
