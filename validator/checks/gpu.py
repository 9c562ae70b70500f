"""gpu group: inventory, driver/CUDA versions, settings (persistence, ECC), health (DBE, retired pages,
row remapping, XIDs, temperature, power, clock events), nouveau."""

from __future__ import annotations

import re
from collections import Counter
from typing import List, Optional

from validator.checks.base import Metric, Outcome, ReadingFailed, Unavailable, bad, check, fail, ok, skip, warn
from validator.checks.context import CMD_NVCC, Context, gpu_label
from validator.errors import CommandError, GpuforgeError, ToolMissing
from validator.node import NotCaptured
from validator.parse import parse_xids

# facts.md: XIDs that mean a broken GPU/link (fail) and ones worth a look (warn).
XID_FATAL = frozenset({48, 74, 79, 95, 119, 120, 140})
XID_WARN = frozenset({63, 94})
RETIRED_PAGES_FAIL = 63  # facts.md: retired pages >= 63 fail
TEMP_MARGIN_WARN_C = 5.0


def _vkey(v: str):
    return tuple(int(x) for x in re.findall(r"\d+", v or "")[:4])


# "NVRM version: NVIDIA UNIX [Open ]Kernel Module for x86_64  580.95.05  Release Build ..." (both flavours)
_NVRM_LINE = re.compile(r"^NVRM version:.{0,200}?\b(Open )?Kernel Module\b.{0,200}?\s(\d+\.\d+(?:\.\d+)?)\s")


def _module_version(ctx: Context) -> Optional[str]:
    t = ctx.text_or("/sys/module/nvidia/version")
    if t and t.strip():
        return t.strip()
    m = re.search(r"Kernel Module(?: for \S+)?\s+(\d+\.\d+(?:\.\d+)?)", ctx.text_or("/proc/driver/nvidia/version") or "")
    return m.group(1) if m else None


@check("gpu.driver_loaded", "gpu", "quick", "NVIDIA kernel driver loaded")
def driver_loaded(ctx: Context):
    ver = ctx.text_or("/proc/driver/nvidia/version")
    if ver and ver.strip():
        flavour = _loaded_flavour(ctx) or "unknown"  # an unreadable version line says nothing about the flavour
        return ok(f"nvidia {_module_version(ctx) or 'version unknown'} ({flavour} kernel module)", "nvidia module loaded")
    try:
        pci = ctx.pci_gpus
    except Unavailable:
        pci = []
    if not pci:
        return skip("no NVIDIA GPU on the PCI bus and no driver loaded")
    return fail(f"{len(pci)} NVIDIA GPU(s) on PCI, /proc/driver/nvidia missing", "nvidia module loaded",
                "install the gpuforge precompiled driver for this kernel and `modprobe nvidia`; see dmesg for errors")


def _pci_tree(ctx: Context) -> bool:
    """The node shows its PCI tree (a live /sys, a full capture): an empty scan then means no GPU, not unknown."""
    return ctx.node.exists("/sys/bus/pci/devices") or bool(ctx.node.glob("/sys/devices/pci*"))


@check("gpu.count", "gpu", "quick", "GPU count")
def count(ctx: Context):
    try:
        pci = ctx.pci_gpus if _pci_tree(ctx) else None
    except Unavailable:
        pci = None
    driver_n, why, broke = None, "", False
    dup: tuple = ()
    try:
        driver_n = len(ctx.gpus)
        dup = ctx.gpu_data.duplicates
    except Unavailable as e:
        why, broke = str(e), isinstance(e, ReadingFailed)
    want = ctx.expect.total if ctx.expect else None
    exp = f"{want} ({ctx.expect})" if ctx.expect else "every PCI GPU visible to the driver"
    if pci is None and driver_n is None:
        return skip(f"neither PCI nor driver view readable: {why}", exp)
    parts = []
    if pci is not None:
        parts.append(f"{len(pci)} on PCI")
    parts.append(f"{driver_n} seen by the driver" if driver_n is not None else f"driver view unavailable ({why})")
    observed = ", ".join(parts)
    if broke:
        return fail(observed, exp, "the driver does not answer for the GPUs on the bus: check `nvidia-smi`, dmesg "
                    "for XIDs; reload the driver or reset the GPUs")
    if dup:
        return fail(f"{observed}; the driver lists {', '.join(dup)} more than once", exp,
                    "one GPU reported twice is not two GPUs: check `nvidia-smi -L`; reload the driver")
    if pci is not None and driver_n is not None and driver_n < len(pci):
        return fail(observed, exp, "a GPU is on the bus but not usable: check dmesg for XID 79/RmInitAdapter errors, "
                    "reset or reseat it")
    seen = driver_n if driver_n is not None else len(pci or [])
    if want is not None:
        if seen != want:
            return fail(observed, exp, "a GPU is missing: check power/seating, BIOS, dmesg")
        return ok(observed, exp)
    if seen == 0:
        # A GPU validator never passes a node without GPUs. Without an expected inventory it may be meant
        # (a CPU node booted from the same image): warn; --expect / the profile's gpu.expect makes it a fail.
        return warn("no NVIDIA GPU (" + observed + ")", "at least one GPU",
                    "give --expect (or gpu.expect in the profile) to make a GPU-less node fail; check BIOS/seating "
                    "if this node should have GPUs")
    return ok(observed, exp)


def _model_matches(ctx: Context, g, want: str) -> bool:
    try:
        cat = ctx.catalog
    except Unavailable:
        cat = None
    if cat is not None and g.pci_device_id is not None:
        try:
            exp = cat.find(want)
        except GpuforgeError:
            exp = None
        model = cat.by_pci_id(g.pci_device_id)
        if exp is not None and model is not None:
            is_family = want.strip().lower() == exp.family.lower()
            return model.family == exp.family if is_family else model.name == exp.name
    tokens = [t for t in re.split(r"[\s_-]+", want.lower()) if t]
    return bool(g.name) and all(t in g.name.lower() for t in tokens)


@check("gpu.model", "gpu", "quick", "GPU model")
def model(ctx: Context):
    gpus = ctx.gpus
    if not gpus:
        return skip("no GPU reported by the driver")
    names = Counter()
    unknown = []
    for g in gpus:
        m = ctx.model_of(g)
        names[m.name if m else (g.name or f"10de:{g.pci_device_id or 0:04x}")] += 1
        if m is None:
            unknown.append(g)
    observed = ", ".join(f"{n}x {k}" for k, n in names.items())
    dup = ctx.gpu_data.duplicates
    if dup:
        return fail(f"{observed}; the driver lists {', '.join(dup)} more than once",
                    str(ctx.expect) if ctx.expect else "each GPU once", "check `nvidia-smi -L`; reload the driver")
    if ctx.expect:
        wrong = []
        free = list(gpus)
        for n, want in ctx.expect.items:
            hits = [g for g in free if _model_matches(ctx, g, want)][:n]
            for g in hits:
                free.remove(g)
            if len(hits) < n:
                wrong.append(f"{n}x{want} (found {len(hits)})")
        if wrong or free:
            extra = f"; unexpected: {', '.join(g.name or '?' for g in free)}" if free else ""
            return fail(observed + extra, str(ctx.expect), "wrong GPU model for this node's role: check the inventory")
        return ok(observed, str(ctx.expect))
    if unknown:
        return warn(observed, "models known to the gpuforge catalog",
                    "add the GPU (PCI ID %s) to validator/data/gpus.yaml" % ", ".join(
                        f"10de:{g.pci_device_id or 0:04x}" for g in unknown))
    return ok(observed, "any catalog model (no --expect given)")


@check("gpu.driver_version", "gpu", "quick", "Driver version vs catalog")
def driver_version(ctx: Context):
    data = ctx.gpu_data
    user = data.driver_version
    kmod = _module_version(ctx)
    if not user:
        return skip("driver version not reported")
    if kmod and kmod != user:
        return fail(f"kernel module {kmod}, user space {user}", "the same version",
                    "driver/library version mismatch: reboot or reload the nvidia modules after a driver update")
    branch = int(_vkey(user)[0]) if _vkey(user) else None
    flavour = _loaded_flavour(ctx)
    problems, notes, seen = [], [], []
    for g in data.gpus:
        m = ctx.model_of(g)
        if m is None or m.name in seen:
            continue
        seen.append(m.name)
        ok_, why = _driver_fits(ctx, m, user, flavour)
        (notes if ok_ else problems).append(why)
    exp = "a driver the catalog/ID lists support for every GPU" + (f" ({', '.join(seen)})" if seen else "")
    flav = f", {flavour} modules" if flavour else ""
    if problems:
        return fail(f"driver {user} (branch {branch}{flav}): " + "; ".join(problems), exp,
                    "install a supported driver: `gpu-validate detect` names the matching package")
    if not seen:
        return skip(f"driver {user}: no GPU model known to the catalog to compare with", exp)
    return ok(f"driver {user} (branch {branch}{flav}): " + "; ".join(notes), exp)


def _loaded_flavour(ctx: Context) -> Optional[str]:
    """open / proprietary from the NVRM version line; None when that line is missing or unreadable."""
    first = (ctx.text_or("/proc/driver/nvidia/version") or "").splitlines()[:1]
    m = _NVRM_LINE.search(first[0][:4096]) if first else None
    if not m:
        return None
    return "open" if m.group(1) else "proprietary"


def _driver_fits(ctx: Context, model, driver: str, flavour: Optional[str]):
    """(ok, reason) from the selection rules (driver ID lists, flavour rules); the catalog's branch range without them."""
    try:
        from validator.idlists import lists_for_driver
        from validator.selection import branch_supports, flavour_allowed
    except ImportError:
        b = int(_vkey(driver)[0])
        hi = model.max_branch if model.max_branch is not None else 10_000
        ok_ = model.min_branch <= b <= hi
        return ok_, f"{model.name}: branch {b} {'within' if ok_ else 'outside'} {model.min_branch}..{model.max_branch or 'latest'}"
    try:
        lists = lists_for_driver(driver)
    except Exception:  # unreadable shipped lists: the catalog range decides
        lists = None
    d = branch_supports(model, driver, lists)
    if d.ok and flavour:
        d = flavour_allowed(model, flavour, driver, lists)
    return d.ok, d.reason


@check("gpu.cuda_version", "gpu", "quick", "CUDA driver/toolkit compatibility")
def cuda_version(ctx: Context):
    data = ctx.gpu_data
    drv_cuda, driver = data.cuda_version, data.driver_version
    if not drv_cuda or not driver:
        return skip("driver CUDA version not reported")
    name, argv = CMD_NVCC
    try:
        res = ctx.node.cmd(name, argv)
        m = re.search(r"release (\d+\.\d+)", res.stdout) if res.returncode == 0 else None
    except (NotCaptured, ToolMissing, CommandError):
        m = None
    if not m:
        return ok(f"driver {driver} supports CUDA up to {drv_cuda}; no CUDA toolkit (nvcc) found", "")
    tk = m.group(1)
    try:
        need = ctx.catalog.cuda_min_driver_for(tk)
    except (Unavailable, GpuforgeError):
        need = None
    observed = f"toolkit CUDA {tk}, driver {driver} (supports CUDA {drv_cuda})"
    if _vkey(tk) <= _vkey(drv_cuda):
        return ok(observed, f"driver >= {need}" if need else f"driver CUDA >= {tk}")
    if _vkey(tk)[:1] == _vkey(drv_cuda)[:1]:
        return warn(observed, f"driver >= {need or '?'} for CUDA {tk}",
                    "minor-version compatibility only (no PTX JIT of newer code): upgrade the driver")
    return fail(observed, f"driver >= {need or '?'} for CUDA {tk}", "upgrade the driver or use an older CUDA toolkit")


def _per_gpu(ctx: Context, fn, readings: tuple = ()) -> List[Outcome]:
    """fn(g) for every GPU; a GPU whose `readings` (GpuInfo fields) were out of physical range fails instead."""
    gpus = ctx.gpus
    if not gpus:
        return [skip("no GPU reported by the driver")]
    out = []
    for g in gpus:
        broken = g.broken(*readings)
        r = fn(g) if not broken else fail(
            "reading out of physical range: " + "; ".join(broken), "readings within their physical range",
            "the driver reports impossible values: check `nvidia-smi -q`, reload the driver or reset the GPU")
        out.append(Outcome(r.status, r.observed, r.expected, r.remedy, gpu_label(g), r.metric))
    return out


@check("gpu.persistence", "gpu", "quick", "Persistence mode")
def persistence(ctx: Context):
    want = ctx.profile.gpu.persistence

    def one(g):
        if g.persistence is None:
            return skip("persistence mode not reported")
        if not want or g.persistence:
            return ok("enabled" if g.persistence else "disabled", "enabled" if want else "any")
        return bad(ctx.profile.enforce, "disabled", "enabled",
                   "nvidia-smi -pm 1, or enable nvidia-persistenced.service (gpuforge first boot does it)")
    return _per_gpu(ctx, one)


@check("gpu.ecc_mode", "gpu", "quick", "ECC mode")
def ecc_mode(ctx: Context):
    want = ctx.profile.gpu.ecc

    def one(g):
        if g.ecc_enabled is None:
            return skip("ECC not supported on this GPU")
        if g.ecc_pending is not None and g.ecc_pending != g.ecc_enabled:
            return warn(f"{'on' if g.ecc_enabled else 'off'}, pending {'on' if g.ecc_pending else 'off'}",
                        "on" if want else "any", "reset the GPU or reboot to apply the pending ECC mode")
        if want and not g.ecc_enabled:
            return fail("off", "on", "nvidia-smi -e 1, then reset the GPU / reboot")
        return ok("on" if g.ecc_enabled else "off", "on" if want else "any")
    return _per_gpu(ctx, one)


@check("gpu.ecc_errors", "gpu", "quick", "Uncorrectable ECC (DBE) errors")
def ecc_errors(ctx: Context):
    def one(g):
        if g.dbe_volatile is None and g.dbe_aggregate is None:
            return skip("ECC error counters not reported")
        vol, agg = g.dbe_volatile or 0, g.dbe_aggregate or 0
        observed = f"volatile DBE {vol}, aggregate DBE {agg}"
        if vol > 0:
            return fail(observed, "volatile DBE 0",
                        "uncorrectable memory errors since the last reset: drain the node, reset the GPU, "
                        "run `dcgmi diag -r 3`; RMA if they recur")
        if agg > 0:
            # A lifetime count the row remapper (or page retirement) already handled is a healthy GPU.
            if (g.remap_unc or 0) > 0 and not g.remap_pending and not g.remap_failure:
                return ok(observed + f"; handled: {g.remap_unc} uncorrectable row(s) remapped, none pending",
                          "volatile DBE 0; lifetime errors remapped")
            if (g.retired_dbe or 0) > 0 and not g.retired_pending:
                return ok(observed + f"; handled: {g.retired_dbe} page(s) retired", "volatile DBE 0; lifetime errors retired")
            if g.remap_pending or g.retired_pending:
                return ok(observed + "; remapping/retirement pending (see gpu.row_remap / gpu.retired_pages)",
                          "volatile DBE 0")
            return warn(observed + "; no remap/retirement record", "lifetime errors handled by remapping or retirement",
                        "check `nvidia-smi -q -d ROW_REMAPPER,PAGE_RETIREMENT`; run `dcgmi diag -r 3`")
        return ok(observed, "volatile DBE 0")
    return _per_gpu(ctx, one, ("dbe_volatile", "dbe_aggregate", "remap_unc", "retired_dbe"))


@check("gpu.retired_pages", "gpu", "quick", "Retired pages")
def retired_pages(ctx: Context):
    def one(g):
        if g.retired_sbe is None and g.retired_dbe is None:
            if g.remap_unc is not None or g.remap_pending is not None:
                return skip("not applicable: this GPU uses row remapping (see gpu.row_remap)")
            return skip("retired pages not reported")
        total = (g.retired_sbe or 0) + (g.retired_dbe or 0)
        observed = f"{total} retired (sbe {g.retired_sbe or 0}, dbe {g.retired_dbe or 0})" + \
            (", retirement pending" if g.retired_pending else "")
        if total >= RETIRED_PAGES_FAIL:
            return fail(observed, f"< {RETIRED_PAGES_FAIL}", "retirement table nearly full: RMA the GPU")
        if g.retired_pending:
            return warn(observed, "nothing pending", "reset the GPU or reboot to retire the pending pages")
        return ok(observed, f"< {RETIRED_PAGES_FAIL}, nothing pending")
    return _per_gpu(ctx, one, ("retired_sbe", "retired_dbe"))


@check("gpu.row_remap", "gpu", "quick", "Row remapping")
def row_remap(ctx: Context):
    def one(g):
        if g.remap_pending is None and g.remap_failure is None:
            return skip("row remapping not supported (pre-Ampere: see gpu.retired_pages)")
        observed = f"remapped rows: correctable {g.remap_corr or 0}, uncorrectable {g.remap_unc or 0}; " \
                   f"pending {'yes' if g.remap_pending else 'no'}, failure {'yes' if g.remap_failure else 'no'}"
        if g.remap_failure:
            return fail(observed, "no remap failure", "a bank ran out of spare rows: RMA the GPU")
        if g.remap_pending:
            return warn(observed, "nothing pending", "reset the GPU (nvidia-smi -r) or reboot to apply the remap")
        return ok(observed, "nothing pending, no failure")
    return _per_gpu(ctx, one, ("remap_corr", "remap_unc"))


@check("gpu.xid", "gpu", "quick", "XID errors in the kernel log")
def xid(ctx: Context):
    events = parse_xids(ctx.kernel_log)
    exp = f"no fatal XID ({', '.join(map(str, sorted(XID_FATAL)))})"
    if not events:
        return ok("no XID events since boot", exp)
    counts = Counter((e.bus_id, e.xid) for e in events)
    desc = "; ".join(f"XID {x} on {b} x{n}" for (b, x), n in sorted(counts.items()))
    fatal = sorted({e.xid for e in events if e.xid in XID_FATAL})
    warns = sorted({e.xid for e in events if e.xid in XID_WARN})
    if fatal:
        return fail(desc, exp, f"fatal XID {', '.join(map(str, fatal))}: drain the node, reset the GPU, check "
                    "power/cooling/seating; RMA if it recurs")
    if warns:
        return warn(desc, exp, f"XID {', '.join(map(str, warns))}: ECC page retirement/row remap event: "
                    "reset the GPU when idle, watch gpu.row_remap")
    return ok(desc + " (application-level XIDs)", exp)


@check("gpu.temperature", "gpu", "quick", "GPU temperature")
def temperature(ctx: Context):
    limit = ctx.profile.gpu.max_temp_c

    def one(g):
        if g.temp_c is None:
            return skip("temperature not reported")
        t = g.temp_c
        if g.temp_headroom_c is not None:  # newer drivers: degrees left before slowdown
            head = g.temp_headroom_c
            metric = Metric("gpu_temp_c", t, t + head, "C", higher_is_better=False)
            observed = f"{t:g} C ({head:g} C below the slowdown limit)"
            if head <= 0:
                return fail(observed, "below the slowdown limit", "GPU is throttling: check airflow/cooling", metric=metric)
            if head <= TEMP_MARGIN_WARN_C:
                return warn(observed, f"> {TEMP_MARGIN_WARN_C:g} C headroom", "check airflow/cooling", metric=metric)
            return ok(observed, f"> {TEMP_MARGIN_WARN_C:g} C headroom", metric=metric)
        if g.temp_shutdown_c is not None and t >= g.temp_shutdown_c:
            return fail(f"{t:g} C", f"< {g.temp_shutdown_c:g} C (shutdown)", "GPU at shutdown temperature: check cooling")
        slow = g.temp_slowdown_c if g.temp_slowdown_c is not None else limit
        metric = Metric("gpu_temp_c", t, slow, "C", higher_is_better=False)
        if t >= slow:
            return fail(f"{t:g} C", f"< {slow:g} C", "GPU throttling: check airflow/cooling", metric=metric)
        if t >= slow - TEMP_MARGIN_WARN_C:
            return warn(f"{t:g} C", f"< {slow - TEMP_MARGIN_WARN_C:g} C", "check airflow/cooling", metric=metric)
        return ok(f"{t:g} C", f"< {slow - TEMP_MARGIN_WARN_C:g} C", metric=metric)
    return _per_gpu(ctx, one, ("temp_c", "temp_headroom_c", "temp_slowdown_c", "temp_shutdown_c"))


@check("gpu.power_limit", "gpu", "quick", "Power limit")
def power_limit(ctx: Context):
    def one(g):
        if g.power_limit_w is None:
            return skip("power limit not reported")
        ref = g.power_default_w or g.power_max_w
        observed = f"{g.power_limit_w:g} W" + (f" (default {g.power_default_w:g} W, max {g.power_max_w:g} W)"
                                               if g.power_default_w and g.power_max_w else "")
        metric = Metric("gpu_power_limit_w", g.power_limit_w, ref, "W") if ref else None
        if ref and g.power_limit_w < ref - 1:
            return warn(observed, f"{ref:g} W (default)", f"nvidia-smi -pl {ref:g} (power capped below default)",
                        metric=metric)
        return ok(observed, f"{ref:g} W (default)" if ref else "", metric=metric)
    return _per_gpu(ctx, one, ("power_limit_w", "power_default_w", "power_max_w", "power_draw_w"))


_EVENT_FAIL = ("hw_slowdown", "hw_thermal_slowdown", "hw_power_brake")
_EVENT_WARN = ("sw_thermal_slowdown", "sw_power_cap")


@check("gpu.clock_events", "gpu", "quick", "Clock event (throttle) reasons")
def clock_events(ctx: Context):
    def one(g):
        active = list(g.clock_events)
        observed = ", ".join(active) if active else "none active"
        f = [e for e in active if e in _EVENT_FAIL]
        w = [e for e in active if e in _EVENT_WARN]
        if f:
            return fail(observed, "no hardware slowdown", "hardware slowdown/power brake: check PSU, cooling and "
                        "the power-brake signal; run `nvidia-smi -q -d PERFORMANCE`")
        if w:
            return warn(observed, "no software thermal/power capping", "check cooling and the power limit")
        return ok(observed, "no slowdown reasons")
    return _per_gpu(ctx, one)


@check("gpu.nouveau", "gpu", "quick", "nouveau not loaded")
def nouveau(ctx: Context):
    mods = ctx.modules
    if "nouveau" in mods:
        return fail("nouveau loaded", "nouveau not loaded",
                    "blacklist nouveau (modprobe.d: blacklist nouveau, options nouveau modeset=0), update-initramfs, reboot")
    return ok("nouveau not loaded", "nouveau not loaded")
