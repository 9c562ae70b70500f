"""`gpu-validate setup gpu-settings`: persistence mode and power limit per GPU, from the tuning profile's `gpu:`.

The limits come from the node (nvidia-smi/NVML min, default, max): a wanted limit outside min..max is refused
before anything changes, and a node whose readings are absurd (min > max, a limit of 0 W) is a failed reading.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from validator.errors import GpuforgeError, UserError
from validator.nvsmi import GpuInfo
from validator.setup.plan import Plan, run
from validator.tuning import parse_power_limit

MAX_PLAUSIBLE_W = 5000.0  # no GPU board draws more; a larger reading is a failed reading


@dataclass(frozen=True)
class GpuWants:
    persistence: Optional[bool]  # None = leave as is
    power_limit: Optional[Tuple[str, float]]  # ("percent"|"watts", value) or None


def wants_from(profile_gpu, persistence: Optional[bool], power_limit: Optional[str]) -> GpuWants:
    """Flags win over the profile's gpu: section; a bad --power-limit is bad input (exit 2)."""
    raw = power_limit if power_limit is not None else getattr(profile_gpu, "power_limit", None)
    try:
        pl = parse_power_limit(raw)
    except ValueError as e:
        raise UserError(f"power limit {raw!r}: expected {e}") from None
    return GpuWants(profile_gpu.persistence if persistence is None else persistence, pl)


def _label(g: GpuInfo) -> str:
    return f"GPU{g.index} {g.bus_id or '?'}"


def target_watts(g: GpuInfo, want: Tuple[str, float]) -> float:
    """The wanted limit in watts for this GPU; refuses a value outside the GPU's own min..max."""
    lo, hi, default = g.power_min_w, g.power_max_w, g.power_default_w
    for name, v in (("min", lo), ("max", hi), ("default", default)):
        if v is None:
            raise GpuforgeError(f"{_label(g)}: the driver does not report its {name} power limit: refusing to set one")
        if not (0 < v <= MAX_PLAUSIBLE_W):
            raise GpuforgeError(f"{_label(g)}: {name} power limit reads {v:g} W, outside any real GPU (failed reading)")
    if lo > hi:
        raise GpuforgeError(f"{_label(g)}: min power limit {lo:g} W above max {hi:g} W (failed reading)")
    kind, n = want
    watts = round(default * n / 100.0) if kind == "percent" else n
    if not lo <= watts <= hi:
        what = f"{n:g}% of the default {default:g} W = {watts:g} W" if kind == "percent" else f"{watts:g} W"
        raise UserError(f"{_label(g)}: power limit {what} is outside this GPU's range {lo:g}-{hi:g} W")
    return watts


def plan_gpu_settings(gpus: Sequence[GpuInfo], wants: GpuWants, pci_count: int) -> Plan:
    """One nvidia-smi call per GPU and setting that differs; every limit is checked before any change."""
    if not gpus:
        why = ("no NVIDIA GPU on PCI" if pci_count == 0
               else f"{pci_count} NVIDIA GPU(s) on PCI but the driver reports none (install the driver first)")
        return Plan("gpu-settings", skipped=why)
    targets = {g.index: target_watts(g, wants.power_limit) for g in gpus} if wants.power_limit else {}
    actions, notes = [], []
    for g in gpus:
        sel = ["-i", g.bus_id or str(g.index)]
        if wants.persistence is not None:
            if g.persistence is None:
                notes.append(f"{_label(g)}: persistence mode not reported; left as is")
            elif g.persistence != wants.persistence:
                actions.append(run(["nvidia-smi", *sel, "-pm", "1" if wants.persistence else "0"],
                                   f"{_label(g)} persistence {'on' if wants.persistence else 'off'}", 60))
        if g.index in targets:
            w = targets[g.index]
            if g.power_limit_w is None or abs(g.power_limit_w - w) >= 0.5:
                cur = "unknown" if g.power_limit_w is None else f"{g.power_limit_w:g} W"
                actions.append(run(["nvidia-smi", *sel, "-pl", f"{w:g}"], f"{_label(g)} power limit {cur} -> {w:g} W", 60))
    if targets:
        notes.append("power limits do not survive a reboot or driver reload: the first-boot hook and the fleet "
                     "playbooks apply them again")
    return Plan("gpu-settings", tuple(actions), (), tuple(notes))
