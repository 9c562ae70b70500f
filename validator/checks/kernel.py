"""kernel group: the profile's command-line flags and sysctls in effect, the NVIDIA modules loaded."""

from __future__ import annotations

from validator.checks.base import Unavailable, bad, check, fail, ok, skip, warn
from validator.checks.context import Context
from validator.checks.iommu import IOMMU_KEYS, cmdline_flags_outcome
from validator.checks.memory import OWNED_SYSCTLS
from validator.parse import sysctl_equal

# Sysctls checked by another group's check: each setting is judged by exactly one check.
_OWNED_ELSEWHERE = set(OWNED_SYSCTLS) | {"kernel.numa_balancing"}


@check("kernel.cmdline", "kernel", "quick", "Kernel command line (tuning profile)")
def cmdline(ctx: Context):
    return cmdline_flags_outcome(ctx, lambda key: key not in IOMMU_KEYS, "other kernel parameters")


@check("kernel.sysctl", "kernel", "quick", "Sysctls (tuning profile)")
def sysctl(ctx: Context):
    items = [(k, v) for k, v in ctx.profile.sysctl if k not in _OWNED_ELSEWHERE]
    if not items:
        return skip("not checked: the tuning profile sets no other sysctls")
    obs, wrong, unreadable = [], [], []
    for k, v in items:
        try:
            cur = ctx.sysctl(k)
        except Unavailable as e:  # this kernel has no such sysctl
            unreadable.append(f"{k} ({e})")
            continue
        obs.append(f"{k} = {cur}")
        if not sysctl_equal(cur, v):
            wrong.append(k)
    exp = ", ".join(f"{k} = {v}" for k, v in items)
    if wrong:
        want = dict(items)
        return bad(ctx.profile.enforce, ", ".join(obs), exp,
                   "sysctl -w " + " ".join(f"{k}={want[k]}" for k in wrong) + " (persist in /etc/sysctl.d)")
    if unreadable and not obs:
        return skip("not readable: " + "; ".join(unreadable), exp)
    return ok(", ".join(obs) + (f"; not on this kernel: {', '.join(unreadable)}" if unreadable else ""), exp)


def _no_nvidia_gpu(ctx: Context) -> bool:
    try:
        return len(ctx.pci_gpus) == 0
    except Unavailable:
        return False


@check("kernel.modules", "kernel", "quick", "NVIDIA kernel modules loaded")
def modules(ctx: Context):
    mods = ctx.modules
    want = list(ctx.profile.modules)  # nvidia_peermem for GPUDirect RDMA is judged by pcie.ib_gpudirect
    missing = [m for m in want if m not in mods]
    loaded = [m for m in want if m in mods]
    observed = "loaded: " + (" ".join(loaded) or "none") + (f"; missing: {' '.join(missing)}" if missing else "")
    exp = " ".join(want)
    if "nvidia" in missing and not ctx.expect and _no_nvidia_gpu(ctx):
        return skip("no NVIDIA GPU on PCI: " + observed, exp)
    if "nvidia" in missing:
        return fail(observed, exp, "modprobe nvidia (install the precompiled driver for this kernel)")
    if missing:
        return warn(observed, exp, "modprobe " + " ".join(missing))
    return ok(observed, exp)
