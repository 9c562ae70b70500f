"""memory group: transparent huge pages, swappiness, dirty ratios, hugepages, swap."""

from __future__ import annotations

from validator.checks.base import bad, check, ok, skip
from validator.checks.context import Context
from validator.parse import parse_bracketed, parse_meminfo_kb, sysctl_equal

# Sysctls this group owns (kernel.sysctl checks the profile's others).
OWNED_SYSCTLS = ("vm.swappiness", "vm.dirty_ratio", "vm.dirty_background_ratio", "vm.nr_hugepages")


def _sysctls(ctx: Context, names, check_id_hint: str):
    want = ctx.profile.sysctl_map
    names = [n for n in names if n in want]
    if not names:
        return skip(f"not checked: the tuning profile sets none of {', '.join(names) or check_id_hint}")
    obs, wrong = [], []
    for n in names:
        v = ctx.sysctl(n)
        obs.append(f"{n} = {v}")
        if not sysctl_equal(v, want[n]):
            wrong.append(n)
    exp = ", ".join(f"{n} = {want[n]}" for n in names)
    if wrong:
        return bad(ctx.profile.enforce, ", ".join(obs), exp,
                   "sysctl -w " + " ".join(f"{n}={want[n]}" for n in wrong) + " (persist in /etc/sysctl.d)")
    return ok(", ".join(obs), exp)


@check("memory.thp", "memory", "quick", "Transparent huge pages")
def thp(ctx: Context):
    want = ctx.profile.memory.transparent_hugepage
    if want is None:
        return skip("not checked: the tuning profile does not set transparent_hugepage")
    cur = parse_bracketed(ctx.text("/sys/kernel/mm/transparent_hugepage/enabled"))
    if cur is None:
        return skip("THP setting not readable")
    if cur == want:
        return ok(cur, want)
    return bad(ctx.profile.enforce, cur, want,
               f"echo {want} > /sys/kernel/mm/transparent_hugepage/enabled (or boot with transparent_hugepage={want})")


@check("memory.swappiness", "memory", "quick", "vm.swappiness")
def swappiness(ctx: Context):
    return _sysctls(ctx, ["vm.swappiness"], "vm.swappiness")


@check("memory.dirty", "memory", "quick", "Dirty page ratios")
def dirty(ctx: Context):
    return _sysctls(ctx, ["vm.dirty_ratio", "vm.dirty_background_ratio"], "vm.dirty_ratio")


@check("memory.hugepages", "memory", "quick", "Reserved huge pages")
def hugepages(ctx: Context):
    want = ctx.profile.memory.hugepages_2m
    info = ctx.text("/proc/meminfo")
    total = parse_meminfo_kb(info, "HugePages_Total")
    size = parse_meminfo_kb(info, "Hugepagesize")
    if total is None:
        return skip("HugePages_Total not in /proc/meminfo")
    observed = f"{total} x {size or '?'} kB reserved"
    if total >= want:
        return ok(observed, f">= {want} x 2048 kB")
    return bad(ctx.profile.enforce, observed, f">= {want} x 2048 kB", f"sysctl -w vm.nr_hugepages={want}")


@check("memory.swap", "memory", "quick", "Swap")
def swap(ctx: Context):
    want = ctx.profile.memory.swap
    if want is None:
        return skip("not checked: the tuning profile does not set swap")
    total = parse_meminfo_kb(ctx.text("/proc/meminfo"), "SwapTotal")
    if total is None:
        return skip("SwapTotal not in /proc/meminfo")
    on = total > 0
    observed = f"{'on' if on else 'off'} (SwapTotal {total} kB)"
    if on == want:
        return ok(observed, "on" if want else "off")
    return bad(ctx.profile.enforce, observed, "on" if want else "off",
               "swapoff -a and remove swap from /etc/fstab" if not want else "add a swap device")
