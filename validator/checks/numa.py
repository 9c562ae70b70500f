"""numa group: nodes, each GPU's NUMA node and local CPUs, automatic NUMA balancing."""

from __future__ import annotations

import re

from validator.checks.base import bad, check, ok, skip, warn
from validator.checks.context import Context
from validator.parse import parse_cpulist, parse_int

NODE = "/sys/devices/system/node"


def _nodes(ctx: Context):
    names = [n for n in ctx.node.listdir(NODE, []) if re.fullmatch(r"node\d+", n)]
    return {int(n[4:]): parse_cpulist(ctx.text_or(f"{NODE}/{n}/cpulist")) for n in names}


def _short(cpus) -> str:
    if cpus is None:
        return "?"
    if not cpus:
        return "none"
    out, start, prev = [], cpus[0], cpus[0]
    for c in list(cpus[1:]) + [None]:
        if c is not None and c == prev + 1:
            prev = c
            continue
        out.append(f"{start}-{prev}" if prev != start else f"{start}")
        if c is not None:
            start = prev = c
    return ",".join(out)


@check("numa.nodes", "numa", "quick", "NUMA nodes")
def nodes(ctx: Context):
    ns = _nodes(ctx)
    if not ns:
        return skip("no NUMA topology exposed (/sys/devices/system/node)")
    observed = f"{len(ns)} node(s): " + "; ".join(f"node{i} cpus {_short(c)}" for i, c in sorted(ns.items()))
    empty = [i for i, c in ns.items() if c == ()]
    if empty and len(ns) > 1:
        return ok(observed + f" (memory-only nodes: {', '.join(map(str, empty))})")
    return ok(observed)


@check("numa.gpu_affinity", "numa", "quick", "GPU NUMA node and local CPUs")
def gpu_affinity(ctx: Context):
    pci = ctx.pci_gpus
    if not pci:
        return skip("no NVIDIA GPU on the PCI bus")
    ns = _nodes(ctx)
    out = []
    for p in pci:
        rel = ctx.pci_rel(p.address)
        node = parse_int(ctx.text_or(f"{rel}/numa_node"))
        cpus = parse_cpulist(ctx.text_or(f"{rel}/local_cpulist"))
        subj = p.address
        observed = f"numa_node {node if node is not None else '?'}, local CPUs {_short(cpus)}"
        if node is None and cpus is None:
            out.append(skip("numa_node/local_cpulist not readable", subject=subj))
        elif len(ns) <= 1:
            out.append(ok(observed + " (single NUMA node: nothing to pin)", "GPU local to its CPUs", subject=subj))
        elif node is None or node < 0:
            out.append(warn(observed, "a NUMA node >= 0", "firmware reports no NUMA node for this GPU: enable "
                            "ACPI SRAT/NUMA in BIOS, pin jobs by hand (numactl --cpunodebind)", subject=subj))
        elif not cpus:
            out.append(warn(observed, "a non-empty local_cpulist", "check BIOS NUMA settings", subject=subj))
        else:
            out.append(ok(observed, "GPU local to its CPUs", subject=subj))
    return out


@check("numa.balancing", "numa", "quick", "Automatic NUMA balancing")
def balancing(ctx: Context):
    want = ctx.profile.sysctl_map.get("kernel.numa_balancing")
    if want is None:
        return skip("not checked: the tuning profile does not set kernel.numa_balancing")
    val = ctx.sysctl("kernel.numa_balancing")
    if val.strip() == str(want):
        return ok(f"kernel.numa_balancing = {val}", want)
    return bad(ctx.profile.enforce, f"kernel.numa_balancing = {val}", want,
               f"sysctl -w kernel.numa_balancing={want} (gpuforge images set it in /etc/sysctl.d)")
