"""pcie group: each GPU's link speed/width against its maximum, AER counters, replay counter, ACS."""

from __future__ import annotations

import re

from validator.checks.base import Metric, Unavailable, check, fail, ok, skip, warn
from validator.checks.context import CMD_LSPCI_VVV, Context
from validator.errors import CommandError, ToolMissing
from validator.node import NotCaptured
from validator.nvsmi import PCIE_WIDTHS
from validator.parse import GEN_SPEED, parse_float, parse_int, parse_link_speed, speed_to_gen

REPLAY_WARN_PER_MIN = 31  # facts.md: warn above ~31/min at Gen5 x16


def _driver_gpu(ctx: Context, address: str):
    try:
        return ctx.gpu_data.by_bus_id(address)
    except Unavailable:
        return None


@check("pcie.link", "pcie", "quick", "PCIe link speed and width", remedy="reseat the GPU/riser, check BIOS PCIe settings")
def link(ctx: Context):
    out = []
    addresses = [p.address for p in ctx.pci_gpus]
    if not addresses:  # sysfs without the PCI tree (a partial capture): the driver's view alone
        try:
            addresses = [g.bus_id for g in ctx.gpus if g.bus_id]
        except Unavailable:
            pass
    for address in addresses:
        rel = ctx.pci_rel(address)
        cur_s = parse_link_speed(ctx.text_or(f"{rel}/current_link_speed")) if rel else None
        max_s = parse_link_speed(ctx.text_or(f"{rel}/max_link_speed")) if rel else None
        cur_w = parse_int(ctx.text_or(f"{rel}/current_link_width")) if rel else None
        max_w = parse_int(ctx.text_or(f"{rel}/max_link_width")) if rel else None
        g = _driver_gpu(ctx, address)
        src = "sysfs"
        if None in (cur_s, max_s, cur_w, max_w) and g is not None:  # sysfs hides it: the driver's view
            src = "driver"
            broken = g.broken("pcie_gen", "pcie_gen_max", "pcie_width", "pcie_width_max")
            if broken:
                out.append(fail("reading out of physical range: " + "; ".join(broken), "a PCIe generation and width",
                                "the driver reports impossible link values: check `nvidia-smi -q -d PCI`",
                                subject=address))
                continue
            cur_s = GEN_SPEED.get(g.pcie_gen) if g.pcie_gen else None
            max_s = GEN_SPEED.get(g.pcie_gen_max) if g.pcie_gen_max else None
            cur_w, max_w = g.pcie_width, g.pcie_width_max
        if None in (cur_s, max_s, cur_w, max_w):
            out.append(skip("link speed/width not readable (sysfs and driver)", subject=address))
            continue
        cg, mg = speed_to_gen(cur_s), speed_to_gen(max_s)
        odd = [f"{k} {v}" for k, v, good in (("speed", f"{cur_s:g} GT/s", cg), ("max speed", f"{max_s:g} GT/s", mg),
                                             ("width", f"x{cur_w}", cur_w in PCIE_WIDTHS),
                                             ("max width", f"x{max_w}", max_w in PCIE_WIDTHS)) if not good]
        if odd:  # 999 GT/s or x0 is a broken reading, never a link that "runs at its maximum"
            out.append(fail(f"reading out of physical range ({src}): " + ", ".join(odd),
                            "a PCIe generation's speed and a link width (x1..x32)",
                            "the link attributes are garbage: check `lspci -vv` for this device", subject=address))
            continue
        observed = f"Gen{cg or '?'} x{cur_w} ({cur_s:g} GT/s, {src})"
        expected = f"Gen{mg or '?'} x{max_w}"
        metric = Metric("pcie_link_width", float(cur_w), float(max_w), "lanes")
        idle = g is not None and "gpu_idle" in g.clock_events
        if cur_w < max_w:
            out.append(fail(observed, expected, "link trained below its width: reseat the GPU, check the riser/slot",
                            subject=address, metric=metric))
        elif cur_s < max_s and idle:
            out.append(warn(observed + ", GPU idle", expected,
                            "an idle GPU may lower link speed to save power; rerun under load to confirm",
                            subject=address, metric=metric))
        elif cur_s < max_s:
            out.append(fail(observed, expected, "link trained below its speed: check slot/riser and BIOS PCIe Gen setting",
                            subject=address, metric=metric))
        else:
            out.append(ok(observed, expected, subject=address, metric=metric))
    return out or skip("no NVIDIA GPU on the PCI bus")


@check("pcie.aer", "pcie", "quick", "PCIe AER error counters")
def aer(ctx: Context):
    out = []
    for p in ctx.pci_gpus:
        rel = ctx.pci_rel(p.address)
        totals, garbage = {}, []
        for kind in ("fatal", "nonfatal", "correctable"):
            text = ctx.text_or(f"{rel}/aer_dev_{kind}")
            if text is not None:
                # lines are "NAME COUNT"; TOTAL_ERR_* carries the sum
                counts = {}
                for line in text.splitlines()[:256]:
                    parts = line.split()
                    if len(parts) == 2 and parts[1].isdigit():
                        counts[parts[0]] = int(parts[1])
                    elif parts:  # a negative count or a stray word: the attribute is garbage, not "0 errors"
                        garbage.append(f"aer_dev_{kind}: {line.strip()[:60]!r}")
                if not counts and text.strip() and not garbage:
                    garbage.append(f"aer_dev_{kind}: {text.strip()[:60]!r}")
                totals[kind] = next((v for k, v in counts.items() if k.startswith("TOTAL")), sum(counts.values()))
        if garbage:
            out.append(fail("reading out of physical range: " + "; ".join(garbage[:3]), "NAME COUNT lines, counts >= 0",
                            "the AER attributes are unreadable: check `lspci -vv` for this device", subject=p.address))
            continue
        if not totals:
            why = "AER counters not exposed (no AER capability, or a VM guest)" if ctx.is_vm else \
                "AER counters not exposed (no AER capability or kernel without AER)"
            out.append(skip(why, subject=p.address))
            continue
        observed = ", ".join(f"{k} {v}" for k, v in totals.items())
        if totals.get("fatal", 0) > 0:
            out.append(fail(observed, "no fatal errors", "check the slot/riser; reseat; see dmesg for AER reports",
                            subject=p.address))
        elif totals.get("nonfatal", 0) > 0 or totals.get("correctable", 0) > 100:
            out.append(warn(observed, "no uncorrectable errors, few correctable",
                            "watch the counters; frequent errors point to a marginal link", subject=p.address))
        else:
            out.append(ok(observed, "no uncorrectable errors", subject=p.address))
    return out or skip("no NVIDIA GPU on the PCI bus")


@check("pcie.replay", "pcie", "quick", "PCIe replay counter")
def replay(ctx: Context):
    uptime = parse_float((ctx.text_or("/proc/uptime") or "").strip())
    out = []
    for g in ctx.gpus:
        broken = g.broken("replay_count", "replay_rollover")
        if broken:
            out.append(fail("reading out of physical range: " + "; ".join(broken), "a replay count >= 0",
                            "the driver reports impossible counters: check `nvidia-smi -q -d PCI`",
                            subject=g.bus_id or f"GPU{g.index}"))
            continue
        if g.replay_count is None:
            out.append(skip("replay counter not reported", subject=g.bus_id or f"GPU{g.index}"))
            continue
        subj = g.bus_id or f"GPU{g.index}"
        roll = g.replay_rollover or 0
        if uptime and uptime > 60:
            rate = g.replay_count / (uptime / 60.0)
            observed = f"{g.replay_count} replays ({rate:.2f}/min since boot), rollovers {roll}"
            high = rate > REPLAY_WARN_PER_MIN
        else:
            observed = f"{g.replay_count} replays, rollovers {roll} (uptime unknown)"
            high = g.replay_count > 1000
        if high or roll > 0:
            out.append(warn(observed, f"<= {REPLAY_WARN_PER_MIN}/min",
                            "frequent replays mean a marginal link: reseat, check riser/cable", subject=subj))
        else:
            out.append(ok(observed, f"<= {REPLAY_WARN_PER_MIN}/min", subject=subj))
    return out or skip("no GPU reported by the driver")


def parse_acs(text: str):
    """lspci -vvv -> {bdf: 'ACSCtl line'} for functions whose ACS redirects P2P (SrcValid+/ReqRedir+/CmpltRedir+)."""
    cur, found, denied = None, {}, False
    for line in text.splitlines():
        m = re.match(r"^([0-9a-fA-F]{2,4}:[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2})?\.[0-7])\s", line)
        if m:
            cur = m.group(1)
            continue
        if "<access denied>" in line:
            denied = True
        if "ACSCtl:" in line and cur and re.search(r"(SrcValid|ReqRedir|CmpltRedir)\+", line):
            found[cur] = line.strip()
    return found, denied


@check("pcie.acs", "pcie", "quick", "PCIe ACS (P2P redirect)")
def acs(ctx: Context):
    if not ctx.pci_gpus:
        return skip("no NVIDIA GPU on the PCI bus")
    name, argv = CMD_LSPCI_VVV
    try:
        res = ctx.node.cmd(name, argv, timeout=30)
    except NotCaptured:
        return skip(f"{name} not captured")
    except ToolMissing:
        return skip("tool missing: lspci (install pciutils)")
    except CommandError as e:
        return skip(e.message.splitlines()[0])
    if res.returncode != 0:
        return skip(f"lspci exit {res.returncode}")
    found, denied = parse_acs(res.stdout)
    if not found and denied:
        return skip("lspci could not read capabilities (needs root)")
    if found:
        return warn(f"ACS redirect on {len(found)} function(s): {', '.join(sorted(found)[:6])}",
                    "ACS off on bridges between GPUs/NICs (bare metal)",
                    "disable ACS in BIOS (or setpci ECAP_ACS+6.w=0) so GPU P2P/GPUDirect is not routed via the root complex")
    return ok("no ACS redirect enabled", "ACS off between GPUs/NICs")
