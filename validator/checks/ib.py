"""pcie group, InfiniBand / RoCE HCAs (PCIe devices too): port state and rate, link flapping and error counters,
HCA-to-GPU PCIe/NUMA affinity, GPUDirect RDMA (nvidia_peermem or DMA-BUF). Read from /sys/class/infiniband
(validator/fabric.py); no HCA is a skip with the reason, an HCA port down is a fail."""

from __future__ import annotations

import re
from typing import List, Optional, Tuple

from validator import fabric
from validator.checks.base import Metric, Unavailable, check, fail, ok, skip, warn
from validator.checks.context import Context

# Error counters (PMA PortCounters, cumulative since the HCA came up). The thresholds are ours: a link that went
# down and came back (link_downed) has flapped; three times is a flapping link. Symbol and receive errors are
# judged as a rate over the uptime, like pcie.replay: a few over days are noise, one a minute is a bad cable
# or transceiver. A 16-bit counter at 65535 has saturated (the rate is then a lower bound).
FLAPS_FAIL = 3
ERRORS_PER_MIN_WARN = 1.0
_SATURATED = {"symbol_error": 0xFFFF, "link_error_recovery": 0xFF, "link_downed": 0xFF, "port_rcv_errors": 0xFFFF,
              "local_link_integrity_errors": 0xF, "excessive_buffer_overrun_errors": 0xF}
_RATE_COUNTERS = ("symbol_error", "port_rcv_errors", "local_link_integrity_errors", "excessive_buffer_overrun_errors")


def _hcas(ctx: Context) -> List[fabric.Hca]:
    return ctx.memo("ib:hcas", lambda: fabric.read_hcas(ctx.node))


def _expected(ctx: Context) -> Tuple[Optional[int], Optional[float], str]:
    """(ports, Gb/s, where from): --expect's port item first ("8xNDR"), else the profile's fabric section."""
    if ctx.expect is not None and ctx.expect.fabric:
        n, rate = ctx.expect.fabric[0]
        return n, rate, "--expect"
    fp = ctx.profile.fabric
    return fp.hca_ports, fp.rate_gbps, "profile"


def _no_hca(ctx: Context):
    n, rate, src = _expected(ctx)
    if n:
        return fail(f"no RDMA device in {fabric.IB_CLASS}", f"{n} HCA port(s) ({src})",
                    "check the HCAs are seated and seen on PCI (lspci -d 15b3:), load mlx5_core/mlx5_ib (or the "
                    "vendor's driver), install rdma-core")
    return skip(f"no InfiniBand/RoCE HCA: {fabric.IB_CLASS} is empty or absent (RDMA drivers not loaded, or no HCA)")


@check("pcie.ib_ports", "pcie", "quick", "InfiniBand/RoCE HCA ports: state, rate, count",
       remedy="check the cable and the switch port (ibstat), the subnet manager for INIT/ARMED, and mlxlink")
def ports(ctx: Context):
    hcas = _hcas(ctx)
    if not hcas:
        return _no_hca(ctx)
    want_n, want_rate, src = _expected(ctx)
    want_layer = ctx.profile.fabric.link_layer
    out, up = [], 0
    for h in hcas:
        if not h.ports:
            out.append(skip(f"{h.name}: no ports listed under {fabric.IB_CLASS}/{h.name}/ports", subject=h.name))
            continue
        for p in h.ports:
            obs = (f"{p.state or '?'} / {p.phys_state or '?'}, {p.rate_text or 'rate ?'}, {p.link_layer or '?'}"
                   f" ({h.hca_type or h.node_type or 'HCA'}{', fw ' + h.fw_ver if h.fw_ver else ''}"
                   f"{', ' + h.pci_address if h.pci_address else ''})")
            exp = "ACTIVE / LinkUp" + (f", {want_rate:g} Gb/s ({src})" if want_rate else "") + \
                  (f", {want_layer}" if want_layer else "")
            metric = Metric("ib_port_rate", p.rate_gbps, want_rate, "Gb/s") if want_rate and p.rate_gbps else None
            if not p.state and not p.phys_state:
                out.append(skip(f"{p.name}: state not readable", exp, subject=p.name))
            elif not p.up:
                why = "no peer or cable (Polling)" if p.phys_state == "Polling" else \
                    "disabled" if p.phys_state == "Disabled" else \
                    "link up but not ACTIVE: no subnet manager has configured it" if p.phys_state == "LinkUp" else \
                    "link down"
                out.append(fail(f"{obs}: {why}", exp, subject=p.name))
            elif want_layer and p.link_layer != want_layer:
                out.append(fail(obs, exp, f"the port runs {p.link_layer}: set the port type (mlxconfig LINK_TYPE_P1)",
                                subject=p.name))
            elif want_rate and (p.rate_gbps is None or p.rate_gbps < want_rate):
                up += 1
                out.append(fail(obs + ": slower than expected", exp, "a link trained below its rate: check the "
                                "cable/transceiver and the switch port (mlxlink -d DEV -m)", subject=p.name,
                                metric=metric))
            else:
                up += 1
                out.append(ok(obs, exp, subject=p.name, metric=metric))
    if want_n is not None:
        exp = f"{want_n} port(s) ACTIVE/LinkUp ({src})"
        obs = f"{up} of {sum(len(h.ports) for h in hcas)} port(s) up on {len(hcas)} HCA(s)"
        metric = Metric("ib_ports_up", float(up), float(want_n), "ports")
        out.append(ok(obs, exp, subject="ports", metric=metric) if up >= want_n else
                   fail(obs, exp, "an HCA or its link is missing: lspci -d 15b3:, ibstat", subject="ports",
                        metric=metric))
    return out


def _uptime_min(ctx: Context) -> Optional[float]:
    text = ctx.text_or("/proc/uptime")
    try:
        return float(text.split()[0]) / 60 if text else None
    except (ValueError, IndexError):
        return None


@check("pcie.ib_errors", "pcie", "quick", "InfiniBand/RoCE link flapping and error counters",
       remedy="reseat or replace the cable/transceiver, check the switch port; clear the counters (perfquery -x) "
              "and watch them again")
def errors(ctx: Context):
    hcas = _hcas(ctx)
    if not hcas:
        return skip(f"no InfiniBand/RoCE HCA in {fabric.IB_CLASS} (pcie.ib_ports judges whether one is expected)")
    minutes = _uptime_min(ctx)
    out = []
    for h in hcas:
        for p in h.ports:
            c = {k: v for k, v in p.counters.items() if v is not None}
            if not c:
                out.append(skip(f"{p.name}: no counters under ports/{p.port}/counters", subject=p.name))
                continue
            shown = ", ".join(f"{k} {c[k]}" for k in ("link_downed", "link_error_recovery", "symbol_error",
                                                        "port_rcv_errors") if k in c)
            exp = (f"link_downed < {FLAPS_FAIL} (none: pass), link_error_recovery 0, "
                   f"error counters < {ERRORS_PER_MIN_WARN:g}/min since boot")
            downs = c.get("link_downed", 0)
            notes, status = [], "pass"
            if downs >= FLAPS_FAIL:
                status = "fail"
                notes.append(f"link went down {downs} times: flapping")
            elif downs:
                status = "warn"
                notes.append(f"link went down {downs} time(s)")
            if c.get("link_error_recovery", 0):
                status = "warn" if status == "pass" else status
                notes.append(f"{c['link_error_recovery']} link error recoveries")
            for k in _RATE_COUNTERS:
                v = c.get(k, 0)
                if not v:
                    continue
                sat = v >= _SATURATED.get(k, 1 << 62)
                rate = v / minutes if minutes else None
                if sat or (rate is not None and rate >= ERRORS_PER_MIN_WARN):
                    status = "warn" if status == "pass" else status
                    notes.append(f"{k} {v}" + (" (counter saturated)" if sat else f" = {rate:.1f}/min"))
            obs = shown + (f"; {'; '.join(notes)}" if notes else "") + \
                (f" (uptime {minutes / 60:.1f} h)" if minutes else "")
            metric = Metric("ib_link_downed", float(downs), 0.0, "", higher_is_better=False)
            out.append(ok(obs, exp, subject=p.name, metric=metric) if status == "pass" else
                       warn(obs, exp, subject=p.name, metric=metric) if status == "warn" else
                       fail(obs, exp, subject=p.name, metric=metric))
    return out or skip("no HCA ports")


def _gpu_paths(ctx: Context):
    out = []
    for g in ctx.pci_gpus:
        comps = fabric.pci_components(ctx.node, g.sysfs_path) if g.sysfs_path else ()
        out.append((g, comps))
    return out


@check("pcie.ib_affinity", "pcie", "quick", "HCA to GPU affinity (PCIe switch / NUMA node)",
       remedy="GPUDirect RDMA across the CPU interconnect halves its bandwidth: use the HCA on the GPU's PCIe "
              "switch or NUMA node (NCCL_IB_HCA order, the rail layout), check the riser/slot population")
def affinity(ctx: Context):
    hcas = [h for h in _hcas(ctx) if any(p.up for p in h.ports)]
    if not _hcas(ctx):
        return skip(f"no InfiniBand/RoCE HCA in {fabric.IB_CLASS} (pcie.ib_ports judges whether one is expected)")
    if not hcas:
        return skip("no HCA port is up (pcie.ib_ports says why)")
    gpus = _gpu_paths(ctx)
    if not gpus:
        return skip("no NVIDIA GPU on the PCI bus")
    out = []
    for g, comps in gpus:
        ranked = sorted(((fabric.pci_relation(comps, g.numa_node, h.pci_path, h.numa_node), h.name) for h in hcas),
                        key=lambda x: (fabric.RELATION_RANK[x[0]], x[1]))
        rel, best = ranked[0]
        near = [n for r, n in ranked if r == rel]
        subject = f"GPU {g.address}"
        obs = f"nearest HCA {', '.join(near)} ({rel}); GPU NUMA {g.numa_node if g.numa_node is not None else '?'}"
        exp = "an HCA on the GPU's PCIe switch (PXB) or at least its NUMA node"
        if rel == "SYS":
            out.append(warn(obs, exp, subject=subject))
        elif rel == "?":
            out.append(skip(f"{obs}: PCIe path and NUMA node not readable", exp, subject=subject))
        else:
            out.append(ok(obs, exp, subject=subject))
    return out


_OPEN_RE = re.compile(r"Open Kernel Module", re.I)


def _kernel_at_least(ctx: Context, major: int, minor: int) -> Optional[bool]:
    m = re.search(r"Linux version (\d+)\.(\d+)", ctx.text_or("/proc/version") or "")
    return None if not m else (int(m.group(1)), int(m.group(2))) >= (major, minor)


@check("pcie.ib_gpudirect", "pcie", "quick", "GPUDirect RDMA (nvidia_peermem or DMA-BUF)",
       remedy="modprobe nvidia_peermem (ships with the driver; load it after the HCA driver), or use the open "
              "kernel modules on Linux >= 5.12 for DMA-BUF")
def gpudirect(ctx: Context):
    want = ctx.profile.fabric.gpudirect
    if want is False:
        return skip("not checked: the tuning profile sets fabric.gpudirect: false")
    hcas = _hcas(ctx)
    up = [p.name for h in hcas for p in h.ports if p.up]
    try:
        gpus = len(ctx.pci_gpus)
    except Unavailable:
        gpus = 0
    if want is None and not (up and gpus):
        why = "no HCA port up" if not up else "no NVIDIA GPU"
        return skip(f"not expected: {why} (set fabric.gpudirect: true in the profile to require it)")
    mods = ctx.modules
    exp = "nvidia_peermem loaded, or DMA-BUF (open kernel modules, Linux >= 5.12)" + \
        (" (profile fabric.gpudirect)" if want else f" (HCA ports up: {len(up)}, GPUs: {gpus})")
    if "nvidia_peermem" in mods:
        return ok(f"nvidia_peermem loaded ({mods['nvidia_peermem']})", exp)
    version = ctx.text_or("/proc/driver/nvidia/version") or ""
    if _OPEN_RE.search(version) and _kernel_at_least(ctx, 5, 12):
        return ok("nvidia_peermem not loaded; open kernel modules on Linux >= 5.12: GPUDirect RDMA through DMA-BUF "
                  "(NCCL >= 2.19 uses it)", exp)
    obs = "nvidia_peermem not loaded" + ("" if "nvidia" in mods else "; the nvidia module is not loaded either")
    return fail(obs, exp) if want else warn(obs, exp)
