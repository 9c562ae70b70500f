"""Child side of `bench gemm`: sustained GEMM per dtype on every GPU at once, gpu-burn style error check.

Every GPU multiplies the same A @ B into `slots` result buffers, over and over; at the end every slot
must equal slot 0 bit for bit (a deterministic cuBLAS gives identical bits; a flaky SM or HBM does not)."""

from __future__ import annotations

import time

from validator.bench import devinfo, telemetry
from validator.bench.formulas import gemm_flops, median
from validator.bench.results import BenchRun, Figure

DTYPES = ("bf16", "fp16", "tf32", "fp32", "fp64")


def _set_tf32(torch, on: bool):
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def _torch_dtype(torch, name: str):
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "tf32": torch.float32,
            "fp32": torch.float32, "fp64": torch.float64}[name]


class _Gpu:
    """Buffers and timing windows of one GPU for one dtype."""

    def __init__(self, torch, dev: int, dtype, n: int, slots: int, seed: int):
        self.torch, self.dev, self.n = torch, dev, n
        g = torch.Generator(device=f"cuda:{dev}").manual_seed(seed + dev)
        with torch.cuda.device(dev):
            # Random data scaled so sums stay well inside fp16 range: zeros would run faster and hide faults.
            self.a = torch.randn(n, n, device=dev, dtype=torch.float32, generator=g).div_(n ** 0.5).to(dtype)
            self.b = torch.randn(n, n, device=dev, dtype=torch.float32, generator=g).to(dtype)
            self.c = [torch.empty(n, n, device=dev, dtype=dtype) for _ in range(slots)]
        self.k = 0
        self.windows = []  # (start event, end event, gemms)

    def one(self):
        self.torch.matmul(self.a, self.b, out=self.c[self.k % len(self.c)])
        self.k += 1

    def window(self, count: int):
        torch = self.torch
        with torch.cuda.device(self.dev):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            for _ in range(count):
                self.one()
            e.record()
        self.windows.append((s, e, count))
        return e

    def tflops(self) -> list:
        f = gemm_flops(self.n, self.n, self.n)
        return [w * f / (s.elapsed_time(e) / 1e3) / 1e12 for s, e, w in self.windows]

    def mismatches(self) -> int:
        """Elements of any slot that differ from slot 0 (bit for bit); slots never written are skipped."""
        torch = self.torch
        written = min(self.k, len(self.c))
        bad = 0
        with torch.cuda.device(self.dev):
            ref = self.c[0].view(torch.int16 if self.c[0].element_size() == 2 else
                                 torch.int32 if self.c[0].element_size() == 4 else torch.int64)
            for c in self.c[1:written]:
                bits = c.view(ref.dtype)
                bad += int((bits != ref).sum().item())
            if not torch.isfinite(self.c[0]).all():
                bad += int((~torch.isfinite(self.c[0])).sum().item())
        return bad


def peak_dtype(torch, gpus: list, name: str, n: int, reps: int = 20) -> dict:
    """Short-burst TFLOP/s per GPU: warm-up, then `reps` single GEMMs timed with events, median.

    Measured before any sustained load, on a cool GPU, as the reference figures were."""
    _set_tf32(torch, name == "tf32")
    out = {}
    for d in gpus:
        g = _Gpu(torch, d, _torch_dtype(torch, name), n, 2, seed=4321)
        for _ in range(5):
            g.one()
        g.windows.clear()
        for _ in range(reps):
            g.window(1)
        with torch.cuda.device(d):
            torch.cuda.synchronize()
        out[d] = median(g.tflops())
        del g
    torch.cuda.empty_cache()
    _set_tf32(torch, False)
    return out


def run_dtype(torch, gpus: list, name: str, n: int, seconds: float, slots: int) -> dict:
    """Sustained GEMMs for `seconds` on all `gpus` at once -> {gpu: (tflops list, mismatches)}."""
    _set_tf32(torch, name == "tf32")
    state = [_Gpu(torch, d, _torch_dtype(torch, name), n, slots, seed=1234) for d in gpus]
    # Calibrate on warm handles: a window is ~100 ms of GEMMs, so launch gaps and events stay negligible.
    for _ in range(2):
        for g in state:
            g.window(3)
        for g in state:
            g.windows[-1][1].synchronize()
    per = max(g.tflops()[-1] for g in state)
    count = max(2, int(0.1 * per * 1e12 / gemm_flops(n, n, n)))
    for g in state:
        g.windows.clear()
    t_end = time.perf_counter() + seconds
    inflight = []
    while time.perf_counter() < t_end:
        inflight.append([g.window(count) for g in state])
        if len(inflight) > 2:  # keep two windows queued per GPU, no more
            for e in inflight.pop(0):
                e.synchronize()
    for evs in inflight:
        for e in evs:
            e.synchronize()
    out = {g.dev: (g.tflops(), g.mismatches()) for g in state}
    del state
    torch.cuda.empty_cache()
    _set_tf32(torch, False)
    return out


def run(params: dict) -> BenchRun:
    import torch

    run = BenchRun("gemm")
    gpus = params.get("gpus") or list(range(torch.cuda.device_count()))
    dtypes = params.get("dtypes") or list(DTYPES)
    n = int(params.get("size", 8192))
    seconds = float(params.get("seconds", 10.0))
    slots = int(params.get("slots", 8))
    run.gpus = devinfo.gpu_infos(torch)
    sampler = telemetry.Sampler(telemetry.nvml_reader(), interval=float(params.get("sample_interval", 0.5)))
    errors_by_gpu = {d: 0 for d in gpus}
    t0 = time.perf_counter()
    with sampler:
        for name in dtypes:
            try:
                for dev, tf in peak_dtype(torch, gpus, name, n).items():
                    run.figures.append(Figure("gemm", name, tf, "TFLOP/s", dev,
                                              detail=f"{n}^3, median of 20 on a cool GPU", meta={"n": n}))
            except Exception as e:
                run.errors.append(f"GEMM {name} peak: {type(e).__name__}: {e}")
                torch.cuda.empty_cache()
        for name in dtypes:
            try:
                res = run_dtype(torch, gpus, name, n, seconds, slots)
            except Exception as e:
                run.errors.append(f"GEMM {name}: {type(e).__name__}: {e}")
                torch.cuda.empty_cache()
                continue
            for dev, (tf, bad) in res.items():
                errors_by_gpu[dev] += bad
                if not tf:
                    run.errors.append(f"GEMM {name} GPU{dev}: no timing window finished")
                    continue
                meta = {"min": round(min(tf), 1), "max": round(max(tf), 1), "first": round(tf[0], 1),
                        "last": round(tf[-1], 1), "windows": len(tf), "mismatches": bad, "n": n}
                run.figures.append(Figure("gemm", f"{name}_sustained", median(tf), "TFLOP/s", dev,
                                          detail=f"{n}^3, median of {len(tf)} windows over {seconds:g} s, "
                                                 f"min {min(tf):.0f}", meta=meta))
    for dev, bad in errors_by_gpu.items():
        run.figures.append(Figure("gemm", "burn_mismatches", float(bad), "elements", dev,
                                  detail="result slots differing from slot 0, all dtypes",
                                  meta={"slots": slots}))
    run.telemetry = sampler.summary()
    run.info = {"size": n, "seconds_per_dtype": seconds, "slots": slots, "torch": torch.__version__,
                "wall_s": round(time.perf_counter() - t0, 1)}
    return run
