"""gpu group, NVLink and fabric: active links and their speed vs the catalog, link error counters, the topology
matrix, NVSwitch fabric registration (fabric manager). Quick level; every fact replays from a capture."""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Tuple

from validator.checks.base import Outcome, Unavailable, check, fail, ok, skip, warn
from validator.checks.context import Context, gpu_label
from validator.nvlink import GpuLinkErrors, GpuLinks, parse_nvlink_errors, parse_nvlink_status

# Command names (= snapshot files under cmd/) and the argv each stands for on a live node.
CMD_NVLINK_STATUS = ("nvidia-smi-nvlink.txt", ["nvidia-smi", "nvlink", "-s"])
CMD_NVLINK_ERRORS = ("nvidia-smi-nvlink-e.txt", ["nvidia-smi", "nvlink", "-e"])
CMD_TOPO = ("nvidia-smi-topo.txt", ["nvidia-smi", "topo", "-m"])
CMD_FM_ACTIVE = ("fabricmanager-status.txt", ["systemctl", "is-active", "nvidia-fabricmanager"])
CMD_FM_VERSION = ("fabricmanager-version.txt", ["nv-fabricmanager", "--version"])
COMMANDS = (CMD_NVLINK_STATUS, CMD_NVLINK_ERRORS, CMD_TOPO, CMD_FM_ACTIVE, CMD_FM_VERSION)

# DCGM hardware limits (dcgm_gpu_hardware_limits.h): NVLink replay/recovery errors matter from the first one,
# CRC errors only at 100+ per second.
CRC_FAIL_PER_S = 100.0
SLOW_LINK_FRACTION = 0.95  # a link below 95 % of the datasheet per-link rate trained down
FM_REMEDY = ("start the fabric manager: `systemctl enable --now nvidia-fabricmanager` (package "
             "nvidia-fabricmanager-<branch>, the same version as the driver); until the fabric is Completed "
             "CUDA init fails with error 802 (system not yet initialized)")


def _command(ctx: Context, cmd) -> str:
    """stdout of a command that must succeed (memoised); Unavailable says why not (not captured, missing, exit N)."""
    name, argv = cmd
    return ctx.memo("cmd:" + name, lambda: ctx.node.cmd_ok(name, argv, timeout=60))


def _status(ctx: Context) -> Dict[int, GpuLinks]:
    return ctx.memo("nvlink_status", lambda: parse_nvlink_status(_command(ctx, CMD_NVLINK_STATUS)))


def _models(ctx: Context) -> dict:
    """GPU index -> catalog model (None when unknown)."""
    return {g.index: ctx.model_of(g) for g in ctx.gpus}


def _links_expected(model) -> Tuple[Optional[int], str]:
    """(active links wanted or None, how the catalog says so)."""
    if model is None:
        return None, "model not in the catalog"
    if model.nvlink_links is None:
        return None, f"{model.name}: link count not in the catalog"
    if model.nvlink_bridge:
        return None, f"{model.name}: 0, or {model.nvlink_links} with an NVLink bridge"
    return model.nvlink_links, f"{model.nvlink_links} active ({model.name})"


@check("gpu.nvlink_links", "gpu", "quick", "NVLink links active and at speed",
       remedy="a link down or slow: drain the node, reset the GPU (nvidia-smi -r), reseat; RMA the board if it stays")
def nvlink_links(ctx: Context):
    gpus = ctx.gpus
    if not gpus:
        return skip("no GPU reported by the driver")
    status = _status(ctx)
    models = _models(ctx)
    if len(gpus) == 1 and not any(l.active for g in status.values() for l in g.links):
        return skip("one GPU and no active NVLink: no peer to connect (a single GPU passed to a VM shows none)")
    out: List[Outcome] = []
    for g in gpus:
        m = models.get(g.index)
        want, why = _links_expected(m)
        got = status.get(g.index, GpuLinks(g.index))
        active = got.active
        down = [l.link for l in got.links if not l.active]
        per_link = m.nvlink_link_gbs if m is not None else None
        slow = [l for l in active if per_link and l.gbs is not None and l.gbs < per_link * SLOW_LINK_FRACTION]
        speeds = sorted({l.gbs for l in active if l.gbs is not None})
        observed = f"{len(active)} active" + (f" at {'/'.join(f'{s:g}' for s in speeds)} GB/s" if speeds else "")
        if down:
            observed += f"; inactive: link {', '.join(map(str, down))}"
        expected = why + (f", >= {per_link * SLOW_LINK_FRACTION:.1f} GB/s a link" if per_link else "")
        subject = gpu_label(g)
        if m is not None and m.nvlink_links == 0:
            out.append(skip(f"{m.name} has no NVLink", subject=subject))
        elif want is not None and len(active) < want:
            out.append(fail(observed, expected, subject=subject))
        elif m is not None and m.nvlink_bridge and m.nvlink_links and 0 < len(active) < m.nvlink_links:
            out.append(warn(observed, expected, "an NVLink bridge is loose or missing: reseat all bridges of the pair",
                            subject=subject))
        elif slow:
            out.append(fail(observed + f"; slow: link {', '.join(str(l.link) for l in slow)}", expected,
                            subject=subject))
        elif want is None and not active and m is not None and not m.nvlink_bridge:
            out.append(skip(f"{observed}; {why}", subject=subject))
        else:
            out.append(ok(observed, expected, subject=subject))
    return out


def _uptime_s(ctx: Context) -> Optional[float]:
    try:
        return float((ctx.text_or("/proc/uptime") or "").split()[0])
    except (ValueError, IndexError):
        return None


@check("gpu.nvlink_errors", "gpu", "quick", "NVLink error counters (replay, recovery, CRC)")
def nvlink_errors(ctx: Context):
    gpus = ctx.gpus
    if not gpus:
        return skip("no GPU reported by the driver")
    errors: Dict[int, GpuLinkErrors] = ctx.memo(
        "nvlink_errors", lambda: parse_nvlink_errors(_command(ctx, CMD_NVLINK_ERRORS)))
    uptime = _uptime_s(ctx)
    out: List[Outcome] = []
    for g in gpus:
        subject = gpu_label(g)
        e = errors.get(g.index)
        if e is None or not e.counters:
            out.append(skip("no NVLink error counters reported (no active link)", subject=subject))
            continue
        replay, recovery, crc = e.total("replay"), e.total("recovery"), e.total("crc")
        rate = crc / uptime if uptime else None
        observed = f"replay {replay}, recovery {recovery}, CRC {crc}" + \
            (f" ({rate:.2f}/s since boot)" if rate is not None else "") + f" over {len(e.counters)} links"
        expected = f"no recovery or replay errors, CRC < {CRC_FAIL_PER_S:g}/s"
        if recovery:
            out.append(fail(observed + f"; recovery on link {', '.join(map(str, e.links_with('recovery')))}",
                            expected, "a link dropped and retrained: drain the node, reset the GPU and watch the "
                            "counters (nvidia-smi nvlink -e); a link that keeps recovering needs service (RMA)",
                            subject=subject))
        elif rate is not None and rate >= CRC_FAIL_PER_S:
            out.append(fail(observed, expected, "CRC errors at this rate mean a bad link: reseat, then RMA",
                            subject=subject))
        elif replay:
            out.append(warn(observed + f"; replay on link {', '.join(map(str, e.links_with('replay')))}", expected,
                            "replays are retransmissions on a marginal link: watch the counters, reset the GPU",
                            subject=subject))
        else:
            out.append(ok(observed, expected, subject=subject))
    return out


def _topology(ctx: Context):
    from validator.bench.parsers import parse_topo_matrix
    return ctx.memo("topology", lambda: parse_topo_matrix(_command(ctx, CMD_TOPO)))


def _nv_count(cell: str) -> int:
    m = re.fullmatch(r"NV(\d+)", cell or "")
    return int(m.group(1)) if m else 0


@check("gpu.nvlink_topology", "gpu", "quick", "GPU topology: every SXM pair over NVLink",
       remedy="GPUs of one NVLink board talk over PCIe: check links (nvidia-smi nvlink -s) and the fabric manager")
def nvlink_topology(ctx: Context):
    gpus = ctx.gpus
    if len(gpus) < 2:
        return skip("fewer than 2 GPUs: no pair to connect")
    topo = _topology(ctx)
    models = _models(ctx)
    board = [g.index for g in gpus if models.get(g.index) is not None and models[g.index].nvlink_links
             and not models[g.index].nvlink_bridge]
    pairs = {(a, b): topo.links.get((a, b), "?") for a in range(len(topo.gpus)) for b in range(len(topo.gpus)) if a < b}
    matrix = ", ".join(f"GPU{a}-GPU{b} {v}" for (a, b), v in sorted(pairs.items()))
    if len(topo.gpus) != len(gpus):
        return fail(f"topology lists {len(topo.gpus)} GPUs, the driver {len(gpus)}: {matrix}", "the same GPUs")
    if len(board) < 2:
        return ok(matrix, "any (not an NVLink board: PCIe GPUs, bridge pairs allowed)")
    want = [(a, b) for (a, b) in pairs if a in board and b in board]
    no_nv = [(a, b) for (a, b) in want if not _nv_count(pairs[(a, b)])]
    if _volta_cube_mesh(models, board):  # DGX-1 style: each V100 reaches 4 peers directly, not all 7
        short = [a for a in board if sum(1 for (x, y) in want if a in (x, y) and (x, y) not in no_nv) < 4]
        if short:
            return fail(matrix, "each V100 over NVLink to 4 peers (hybrid cube mesh)")
        return ok(matrix, "each V100 over NVLink to 4 peers (hybrid cube mesh)")
    expected = "NV# between every pair of NVLink-board GPUs"
    if no_nv:
        bad = ", ".join(f"GPU{a}-GPU{b} {pairs[(a, b)]}" for a, b in no_nv)
        return fail(f"not over NVLink: {bad}", expected)
    counts = {p: _nv_count(pairs[p]) for p in want}
    top = max(counts.values())
    fewer = [p for p, n in counts.items() if n < top]
    if fewer:
        return warn(f"fewer links than the other pairs (NV{top}): " +
                    ", ".join(f"GPU{a}-GPU{b} {pairs[(a, b)]}" for a, b in fewer), expected + f", all NV{top}",
                    "a link is down between these GPUs: see gpu.nvlink_links")
    return ok(matrix, expected)


def _volta_cube_mesh(models: dict, board: List[int]) -> bool:
    return len(board) > 4 and all(models[i].arch == "Volta" for i in board)


def _fm_active(ctx: Context) -> Optional[str]:
    """'active', 'inactive', 'failed', ... from systemctl; None when not known (not captured, no systemd)."""
    name, argv = CMD_FM_ACTIVE
    try:
        res = ctx.memo("cmd-rc:" + name, lambda: ctx.node.cmd(name, argv, timeout=30))
    except Unavailable:
        return None
    words = res.stdout.split()
    return words[0] if words else ("active" if res.returncode == 0 else None)


def _fm_version(ctx: Context) -> Optional[str]:
    try:
        m = re.search(r"(\d+\.\d+(?:\.\d+)?)", _command(ctx, CMD_FM_VERSION))
    except Unavailable:
        return None
    return m.group(1) if m else None


@check("gpu.nvlink_fabric", "gpu", "quick", "NVSwitch fabric registered (fabric manager)", remedy=FM_REMEDY)
def nvlink_fabric(ctx: Context):
    gpus = ctx.gpus
    try:
        from validator.pci import scan_nvswitches
        switches = ctx.memo("nvswitches", lambda: scan_nvswitches(ctx.node.root))
    except Unavailable:
        switches = []
    states = [(g, g.fabric_state) for g in gpus if g.fabric_state]
    if not switches and not states:
        return skip("not an NVSwitch system: no NVSwitch on PCI and the driver reports no fabric state")
    fm = _fm_active(ctx)
    fm_ver = _fm_version(ctx)
    driver = ctx.gpu_data.driver_version
    parts = []
    if switches:
        parts.append(f"{len(switches)} NVSwitch on PCI")
    if fm is not None:
        parts.append(f"nvidia-fabricmanager {fm}" + (f" ({fm_ver})" if fm_ver else ""))
    summary = sorted({f"{s}/{g.fabric_status or '?'}" for g, s in states})
    if states:
        parts.append(f"fabric {', '.join(summary)} on {len(states)} GPU(s)")
    observed = "; ".join(parts)
    expected = "fabric Completed/Success on every GPU" + ("; fabric manager active" if switches else "")
    pending = [(g, s) for g, s in states if s.lower() != "completed"]
    if pending:
        who = ", ".join(f"GPU{g.index} {s}" for g, s in pending)
        return fail(f"{observed}; not registered: {who}", expected)
    errs = [g for g, s in states if (g.fabric_status or "").lower() not in ("success", "")]
    if errs:
        return fail(f"{observed}; " + ", ".join(f"GPU{g.index} status {g.fabric_status}" for g in errs), expected,
                    "fabric registration failed: read the fabric manager log (/var/log/fabricmanager.log), "
                    "reset the GPUs, restart nvidia-fabricmanager")
    if switches and fm is not None and fm != "active":
        return fail(observed, expected)
    if switches and fm_ver and driver and fm_ver != driver:
        return fail(f"{observed}; driver {driver}", "fabric manager version = driver version",
                    f"install nvidia-fabricmanager {driver} (it refuses to run against another driver version)")
    unhealthy = [g for g, _ in states if (g.fabric_health or "").lower() == "unhealthy"]
    limited = [g for g, _ in states if (g.fabric_health or "").lower() == "limited capacity"]
    if unhealthy:
        return fail(f"{observed}; health Unhealthy on GPU{', GPU'.join(str(g.index) for g in unhealthy)}", expected,
                    "the NVLink fabric reports an unhealthy route: read the fabric manager log, reset the GPUs")
    if limited:
        return warn(f"{observed}; health Limited Capacity on GPU{', GPU'.join(str(g.index) for g in limited)}",
                    expected, "NVLink bandwidth is degraded: check links (gpu.nvlink_links)")
    if switches and fm is None and not states:  # an older driver reports no fabric state: nothing to go on
        return skip(f"{observed}: neither the fabric state (driver) nor the fabric manager's state is readable",
                    expected)
    return ok(observed + ("" if switches else " (fabric managed outside this OS, e.g. by the host of a VM)"),
              expected)
