"""cpu group: frequency driver, governor, turbo, C-states, SMT."""

from __future__ import annotations

import re

from validator.checks.base import Outcome, bad, check, ok, skip, warn
from validator.checks.context import Context
from validator.parse import parse_int

CPU = "/sys/devices/system/cpu"
_NO_CPUFREQ_VM = "no cpufreq driver: a VM guest, the host controls CPU frequency"


def _freq_driver(ctx: Context):
    for rel in (f"{CPU}/cpufreq/policy0/scaling_driver", f"{CPU}/cpu0/cpufreq/scaling_driver"):
        t = ctx.text_or(rel)
        if t and t.strip():
            return t.strip()
    return None


def _no_cpufreq(ctx: Context) -> Outcome:
    if ctx.is_vm:
        return skip(_NO_CPUFREQ_VM)
    return warn("no cpufreq driver loaded", "a frequency driver (intel_pstate, amd-pstate, acpi-cpufreq)",
                "enable P-state control in BIOS (OS control) and load intel_pstate/amd-pstate/acpi-cpufreq")


@check("cpu.freq_driver", "cpu", "quick", "CPU frequency driver present")
def freq_driver(ctx: Context):
    drv = _freq_driver(ctx)
    return ok(drv, "a cpufreq driver") if drv else _no_cpufreq(ctx)


@check("cpu.governor", "cpu", "quick", "CPU frequency governor")
def governor(ctx: Context):
    want = ctx.profile.cpu.governor
    if want is None:
        return skip("not checked: the tuning profile sets no governor")
    if not _freq_driver(ctx):
        return _no_cpufreq(ctx)
    govs = {}
    for d in ctx.node.glob(f"{CPU}/cpufreq/policy*/scaling_governor") or ctx.node.glob(f"{CPU}/cpu[0-9]*/cpufreq/scaling_governor"):
        g = ctx.text_or(d)
        if g:
            govs.setdefault(g.strip(), []).append(d.split("/")[-2])
    if not govs:
        return skip("scaling_governor not readable")
    observed = ", ".join(f"{g} ({len(v)} policies)" for g, v in sorted(govs.items()))
    if set(govs) == {want}:
        return ok(observed, want)
    return bad(ctx.profile.enforce, observed, want, f"cpupower frequency-set -g {want} (gpuforge images set it at boot)")


@check("cpu.turbo", "cpu", "quick", "Turbo / boost")
def turbo(ctx: Context):
    want = ctx.profile.cpu.turbo
    if want is None:
        return skip("not checked: the tuning profile does not set turbo")
    no_turbo = parse_int(ctx.text_or(f"{CPU}/intel_pstate/no_turbo"))
    boost = parse_int(ctx.text_or(f"{CPU}/cpufreq/boost"))
    if no_turbo is None and boost is None:
        if not _freq_driver(ctx):
            return _no_cpufreq(ctx)
        return skip("no turbo control exposed (intel_pstate/no_turbo, cpufreq/boost)")
    on = (no_turbo == 0) if no_turbo is not None else bool(boost)
    src = "intel_pstate/no_turbo=%s" % no_turbo if no_turbo is not None else "cpufreq/boost=%s" % boost
    exp = "on" if want else "off"
    if on == want:
        return ok(f"{'on' if on else 'off'} ({src})", exp)
    return bad(ctx.profile.enforce, f"{'on' if on else 'off'} ({src})", exp,
               "enable turbo in BIOS and write 0 to intel_pstate/no_turbo (or 1 to cpufreq/boost)")


@check("cpu.cstates", "cpu", "quick", "C-states limited")
def cstates(ctx: Context):
    limit = ctx.profile.cpu.max_cstate
    if limit is None:
        return skip("not checked: the tuning profile sets no C-state limit")
    driver = (ctx.text_or(f"{CPU}/cpuidle/current_driver") or "").strip()
    if not driver or driver == "none":
        why = "no cpuidle driver: the guest kernel enters no C-states it could limit; the host decides" if ctx.is_vm \
            else "no cpuidle driver: C-states are not visible to the kernel"
        return skip(why, f"C-states deeper than C{limit} disabled")
    deep = []
    seen = []
    for d in ctx.node.glob(f"{CPU}/cpu0/cpuidle/state*"):
        name = (ctx.text_or(f"{d}/name") or "").strip()
        disabled = parse_int(ctx.text_or(f"{d}/disable")) == 1
        seen.append(f"{name}{'(off)' if disabled else ''}")
        m = re.match(r"C(\d+)", name)
        if m and int(m.group(1)) > limit and not disabled:
            deep.append(name)
    observed = f"{driver}: {' '.join(seen) or 'no states'}"
    if deep:
        return bad(ctx.profile.enforce, observed, f"nothing deeper than C{limit} enabled",
                   f"boot with processor.max_cstate={limit} intel_idle.max_cstate={limit} "
                   "(or disable states via cpuidle/state*/disable)")
    return ok(observed, f"nothing deeper than C{limit} enabled")


@check("cpu.smt", "cpu", "quick", "SMT (hyper-threading) state")
def smt(ctx: Context):
    active = parse_int(ctx.text_or(f"{CPU}/smt/active"))
    control = (ctx.text_or(f"{CPU}/smt/control") or "").strip()
    if active is None and not control:
        return skip("SMT state not exposed (/sys/devices/system/cpu/smt)")
    state = "on" if active == 1 else "off"
    observed = f"{state}" + (f" (control: {control})" if control else "")
    want = ctx.profile.cpu.smt
    if want == "any" or want == state:
        return ok(observed, want if want != "any" else "any (not enforced)")
    return bad(ctx.profile.enforce, observed, want, f"set SMT {want} in BIOS or echo {want} > /sys/devices/system/cpu/smt/control")
