"""iommu group: IOMMU enabled, passthrough mode, the GPUs' groups, the matching cmdline flags."""

from __future__ import annotations

import os

from validator.checks.base import Unavailable, bad, check, ok, skip, warn
from validator.checks.context import Context
from validator.node import NotCaptured
from validator.errors import ToolMissing
from validator.parse import cmdline_has

GROUPS_DIR = "/sys/kernel/iommu_groups"
# Kernel parameters this group owns (kernel.cmdline checks every other profile flag).
IOMMU_KEYS = ("intel_iommu", "amd_iommu", "iommu", "iommu.passthrough", "iommu.strict")


def iommu_groups(ctx: Context):
    """Group numbers; a snapshot without the folder may hold `ls -la` of it in cmd/iommu_groups.txt."""
    def read():
        names = ctx.node.listdir(GROUPS_DIR, None)
        if names is not None:
            return [n for n in names if n.isdigit()]
        if ctx.node.live:
            return []  # no folder on a live kernel: IOMMU support off
        try:
            res = ctx.node.cmd("iommu_groups.txt", ["ls", "-la", GROUPS_DIR])
        except (NotCaptured, ToolMissing):
            raise Unavailable(f"{GROUPS_DIR} not captured") from None
        # `ls -la` lines: skip "total N", keep entries whose name is a group number
        return [line.split()[-1] for line in res.stdout.splitlines()
                if line[:1] in ("d", "l") and line.split()[-1].isdigit()]
    return ctx._get("iommu_groups", read)


def _none_reason(ctx: Context) -> str:
    return ("no IOMMU groups: a VM guest without a virtual IOMMU (the host's IOMMU is not visible)" if ctx.is_vm
            else "no IOMMU groups: IOMMU off in BIOS or on the kernel command line")


def _profile_wants_iommu(ctx: Context) -> bool:
    return any(f.split("=")[0] in ("intel_iommu", "amd_iommu") for f in ctx.profile.cmdline)


@check("iommu.enabled", "iommu", "quick", "IOMMU enabled")
def enabled(ctx: Context):
    groups = iommu_groups(ctx)
    if groups:
        return ok(f"{len(groups)} IOMMU groups", "IOMMU on")
    if ctx.is_vm:
        return skip(_none_reason(ctx), "IOMMU on")
    if not _profile_wants_iommu(ctx):
        return ok("IOMMU off (the tuning profile does not ask for it)")
    return bad(ctx.profile.enforce, "IOMMU off (no groups)", "IOMMU on",
               "enable VT-d/AMD-Vi in BIOS and boot with intel_iommu=on / amd_iommu=on iommu=pt")


def _gpu_group(ctx: Context, address: str):
    rel = ctx.pci_rel(address)
    if not rel:
        return None
    try:
        return os.path.basename(os.readlink(ctx.node.path(f"{rel}/iommu_group")))
    except OSError:
        return None


@check("iommu.groups", "iommu", "quick", "GPU IOMMU groups")
def groups(ctx: Context):
    if not iommu_groups(ctx):
        return skip(_none_reason(ctx))
    out = []
    for p in ctx.pci_gpus:
        g = _gpu_group(ctx, p.address)
        if g is None:
            out.append(warn("GPU has no IOMMU group", "each GPU in a group", "check IOMMU/ACS settings", subject=p.address))
            continue
        members = [d for d in ctx.node.listdir(f"{GROUPS_DIR}/{g}/devices", [])]
        out.append(ok(f"group {g} ({len(members)} device(s): {' '.join(members[:6])})", subject=p.address))
    return out or skip("no NVIDIA GPU on the PCI bus")


@check("iommu.passthrough", "iommu", "quick", "IOMMU passthrough mode for GPUs")
def passthrough(ctx: Context):
    want_pt = any(f in ("iommu=pt", "iommu.passthrough=1") for f in ctx.profile.cmdline)
    if not iommu_groups(ctx):
        return skip(_none_reason(ctx), "identity (passthrough) domains" if want_pt else "")
    out = []
    for p in ctx.pci_gpus:
        g = _gpu_group(ctx, p.address)
        t = (ctx.text_or(f"{GROUPS_DIR}/{g}/type") or "").strip() if g else ""
        if not t:
            out.append(skip("IOMMU domain type not readable", subject=p.address))
        elif not want_pt or t == "identity":
            out.append(ok(f"domain type {t}", "identity" if want_pt else "", subject=p.address))
        else:
            out.append(bad(ctx.profile.enforce, f"domain type {t} (DMA translated)", "identity (iommu=pt)",
                           "boot with iommu=pt", subject=p.address))
    return out or skip("no NVIDIA GPU on the PCI bus")


@check("iommu.cmdline", "iommu", "quick", "IOMMU kernel parameters")
def cmdline(ctx: Context):
    return cmdline_flags_outcome(ctx, lambda key: key in IOMMU_KEYS, "IOMMU parameters")


def cmdline_flags_outcome(ctx: Context, wanted, what: str):
    """The profile's cmdline flags whose key `wanted(key)` accepts, each looked for in /proc/cmdline."""
    flags = ctx.vendor_flags([f for f in ctx.profile.cmdline if wanted(f.split("=")[0])])
    if not flags:
        return skip(f"not checked: the tuning profile sets no {what}")
    missing = [f for f in flags if not cmdline_has(ctx.cmdline, f)]
    if not missing:
        return ok(" ".join(flags), " ".join(flags))
    return bad(ctx.profile.enforce, "missing: " + " ".join(missing), " ".join(flags),
               "add them to GRUB_CMDLINE_LINUX and run update-grub (gpuforge images bake them)")
