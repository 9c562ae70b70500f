"""Standard-level GPU checks: CUDA functional test and device memory bandwidth (child process), DCGM diag r1."""

from __future__ import annotations

import sys

from validator.checks.base import Metric, Unavailable, check, fail, ok, skip, warn
from validator.checks.context import Context
from validator.errors import CommandError, ConfigError, ToolMissing
from validator.node import NotCaptured
from validator.userfile import parse_json

MEMBW_FRACTION = 0.75  # facts.md: DCGM thresholds are 0.75 x a measured value


def cuda_probe(ctx: Context) -> dict:
    """Run validator.cudaprobe in a child with a timeout (replayed from cmd/cuda-probe.json in a snapshot)."""
    def run():
        argv = [sys.executable, "-m", "validator.cudaprobe"]
        try:
            res = ctx.node.cmd("cuda-probe.json", argv, timeout=ctx.cuda_timeout)
        except NotCaptured:
            raise Unavailable("not a live node: cuda-probe.json not captured") from None
        except CommandError as e:  # timeout: a hung CUDA context is a failed GPU, not a missing fact
            return {"crashed": True, "rc": e.returncode, "error": e.message.splitlines()[0][:200], "devices": []}
        lines = [l for l in res.stdout.splitlines() if l.strip().startswith("{")]
        if res.returncode != 0 or not lines:
            tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or [""]
            return {"crashed": True, "rc": res.returncode, "error": tail[0][:200], "devices": []}
        try:
            probe = parse_json(lines[-1], "cuda probe output")
        except ConfigError:
            probe = None
        if not isinstance(probe, dict) or not isinstance(probe.get("devices", []), list):
            return {"crashed": True, "rc": res.returncode, "error": "unreadable output", "devices": []}
        return probe
    return ctx._get("cuda_probe", run)


def _result_for(ctx: Context):
    probe = cuda_probe(ctx)
    if probe.get("crashed"):
        return probe, None
    if not probe.get("backend"):
        raise Unavailable("no CUDA Python backend usable: " + "; ".join(probe.get("errors") or []))
    return probe, {d.get("index"): d for d in probe.get("devices") or []}


def _pci_or_driver_gpus(ctx) -> bool:
    try:
        if ctx.pci_gpus:
            return True
    except Unavailable:
        pass
    return bool(_gpus_or_none(ctx))


def _gpus_or_none(ctx):
    try:
        return ctx.gpus
    except Unavailable:
        return None


@check("gpu.cuda_functional", "gpu", "standard", "CUDA functional test (child process)")
def cuda_functional(ctx: Context):
    if not _pci_or_driver_gpus(ctx):
        return skip("no NVIDIA GPU on this node")
    if not ctx.node.live and not ctx.node.exists("/cmd/cuda-probe.json"):
        return skip("not a live node: CUDA cannot run on a snapshot")
    probe, devs = _result_for(ctx)
    if devs is None:
        return fail(f"CUDA child crashed or hung (exit {probe.get('rc')}): {probe.get('error')}",
                    "every GPU computes correctly",
                    "run `nvidia-smi`, check dmesg for XIDs, reset the GPU")
    gpus = _gpus_or_none(ctx)
    want = len(gpus) if gpus is not None else None
    out = []
    for i, d in sorted(devs.items(), key=lambda kv: kv[0] or 0):
        label = f"GPU{i}" + (f" {gpus[i].bus_id}" if gpus and i is not None and i < len(gpus) else "")
        if d.get("ok"):
            out.append(ok(f"{probe['backend']}: computed correctly on {d.get('name') or '?'}", "correct results", subject=label))
        else:
            out.append(fail(f"{probe['backend']}: {d.get('error') or 'failed'}", "correct results",
                            "reset the GPU; run `dcgmi diag -r 2`; check dmesg for XIDs", subject=label))
    if want is not None and len(devs) != want:
        out.append(fail(f"CUDA sees {len(devs)} GPU(s), the driver {want}", f"{want} GPU(s)",
                        "check CUDA_VISIBLE_DEVICES and dmesg"))
    return out or fail(f"{probe['backend']}: no CUDA device", "at least one GPU", "check the driver and dmesg")


@check("gpu.memory_bandwidth", "gpu", "standard", "Device memory bandwidth")
def memory_bandwidth(ctx: Context):
    if not _pci_or_driver_gpus(ctx):
        return skip("no NVIDIA GPU on this node")
    if not ctx.node.live and not ctx.node.exists("/cmd/cuda-probe.json"):
        return skip("not a live node: CUDA cannot run on a snapshot")
    probe, devs = _result_for(ctx)
    if devs is None:
        return skip("CUDA child crashed (see gpu.cuda_functional)")
    gpus = _gpus_or_none(ctx) or ()
    out = []
    for i, d in sorted(devs.items(), key=lambda kv: kv[0] or 0):
        g = gpus[i] if i is not None and i < len(gpus) else None
        label = f"GPU{i}" + (f" {g.bus_id}" if g else "")
        bw = d.get("d2d_gbs")
        if bw is None:
            out.append(skip(f"not measured: {d.get('error') or 'no figure'}", subject=label))
            continue
        model = ctx.model_of(g) if g else None
        ref, src = None, ""
        if model is not None:
            try:
                base = ctx.catalog.baseline(model.name)
            except Exception:
                base = None
            if base is not None and base.mem_bw_gbs:
                ref, src = base.mem_bw_gbs, "baseline"
            elif model.mem_bw_gbs:
                ref, src = model.mem_bw_gbs, "datasheet"
        observed = f"{bw:.0f} GB/s device copy (read+write, {probe['backend'].split()[0]})"
        if ref is None:
            out.append(ok(observed, "no baseline for this model", subject=label))
            continue
        floor = MEMBW_FRACTION * ref
        metric = Metric("gpu_mem_bw_gbs", round(bw, 1), float(ref), "GB/s")
        exp = f">= {floor:.0f} GB/s ({MEMBW_FRACTION:g} x {src} {ref:g})"
        if bw < floor:
            out.append(fail(observed, exp, "check clocks/throttling (gpu.clock_events), power limit, ECC; "
                            "run `dcgmi diag -r 3`", subject=label, metric=metric))
        else:
            out.append(ok(observed, exp, subject=label, metric=metric))
    return out or skip("no device measured")


@check("gpu.dcgm_diag", "gpu", "standard", "DCGM diagnostics (dcgmi diag -r 1)")
def dcgm_diag(ctx: Context):
    if not ctx.which("dcgmi"):
        return skip("dcgmi not installed (DCGM is optional)")
    try:
        res = ctx.node.cmd("dcgmi-diag-r1.json", ["dcgmi", "diag", "-r", "1", "-j"], timeout=300)
    except (NotCaptured, ToolMissing) as e:
        return skip(str(e))
    except CommandError as e:
        return fail(e.message.splitlines()[0], "all tests pass", "check nv-hostengine is running")
    try:
        data = parse_json(res.stdout[res.stdout.find("{"):], "dcgmi diag output")  # bounded depth: walk() recurses
    except ConfigError:
        return fail(f"dcgmi exit {res.returncode}, output not JSON: {res.stdout.strip()[:160]}", "all tests pass",
                    "start nv-hostengine (systemctl start nvidia-dcgm)")
    results = []

    def walk(o, name=""):
        if isinstance(o, dict):
            nm = o.get("name") or o.get("test_name") or name
            st = o.get("status") or o.get("result")
            if isinstance(st, str):
                results.append((str(nm), st))
            for v in o.values():
                walk(v, nm)
        elif isinstance(o, list):
            for v in o:
                walk(v, name)
    walk(data)
    failed = sorted({n for n, s in results if s.lower() in ("fail", "failed")})
    warned = sorted({n for n, s in results if s.lower() in ("warn", "warning")})
    observed = f"{len(results)} results" + (f"; failed: {', '.join(failed)}" if failed else "") + \
        (f"; warnings: {', '.join(warned)}" if warned else "")
    if failed or res.returncode not in (0,):
        return fail(observed + (f" (exit {res.returncode})" if res.returncode else ""), "all tests pass",
                    "run `dcgmi diag -r 2` for details")
    if warned:
        return warn(observed, "all tests pass", "see `dcgmi diag -r 1` output")
    return ok(observed, "all tests pass")
