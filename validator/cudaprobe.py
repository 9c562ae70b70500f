"""CUDA functional test + device-memory bandwidth, run in a CHILD process (`python -m validator.cudaprobe`).

A hung or crashed CUDA context takes only this child down; the parent enforces a timeout. Backends, first that
loads: PyTorch, CuPy, the CUDA driver API through ctypes. Prints one JSON object on stdout.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # device indices in nvidia-smi order

BW_BYTES = 1 << 30
BW_ITERS = 10


def _torch():
    import torch
    if not torch.cuda.is_available():
        raise RuntimeError("torch.cuda.is_available() is False")
    devs = []
    for i in range(torch.cuda.device_count()):
        d = {"index": i, "name": torch.cuda.get_device_name(i), "ok": False, "error": None, "d2d_gbs": None}
        try:
            with torch.cuda.device(i):
                n = 1 << 20
                a = torch.arange(n, device="cuda", dtype=torch.float64)
                s = float((a * 2 + 1).sum().item())
                want = float(n * (n - 1) + n)
                x = torch.randn(512, 512, device="cuda")
                eye = torch.eye(512, device="cuda")
                # loose tolerance: TF32 matmul (if a site enables it) rounds to ~1e-3 relative; garbage is far off
                mm_ok = bool(torch.allclose(x @ eye, x, rtol=1e-2, atol=1e-2))
                d["ok"] = (s == want) and mm_ok
                if not d["ok"]:
                    d["error"] = f"wrong result: sum {s} vs {want}, matmul {'ok' if mm_ok else 'mismatch'}"
                src = torch.empty(BW_BYTES, dtype=torch.uint8, device="cuda")
                dst = torch.empty_like(src)
                dst.copy_(src)
                torch.cuda.synchronize()
                times = []
                for _ in range(BW_ITERS):
                    st, en = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    st.record()
                    dst.copy_(src)
                    en.record()
                    en.synchronize()
                    times.append(st.elapsed_time(en) / 1000.0)
                d["d2d_gbs"] = 2 * BW_BYTES / statistics.median(times) / 1e9  # bytes read + written
                del src, dst
        except Exception as e:
            d["error"] = f"{type(e).__name__}: {e}"[:300]
        devs.append(d)
    return "torch " + torch.__version__, devs


def _cupy():
    import cupy as cp
    devs = []
    for i in range(cp.cuda.runtime.getDeviceCount()):
        d = {"index": i, "name": "", "ok": False, "error": None, "d2d_gbs": None}
        try:
            with cp.cuda.Device(i):
                d["name"] = cp.cuda.runtime.getDeviceProperties(i)["name"].decode(errors="replace")
                n = 1 << 20
                a = cp.arange(n, dtype=cp.float64)
                s = float((a * 2 + 1).sum())
                d["ok"] = s == float(n * (n - 1) + n)
                if not d["ok"]:
                    d["error"] = f"wrong result: sum {s}"
                src = cp.empty(BW_BYTES, dtype=cp.uint8)
                dst = cp.empty_like(src)
                dst[...] = src
                cp.cuda.Device(i).synchronize()
                times = []
                for _ in range(BW_ITERS):
                    st, en = cp.cuda.Event(), cp.cuda.Event()
                    st.record()
                    dst[...] = src
                    en.record()
                    en.synchronize()
                    times.append(cp.cuda.get_elapsed_time(st, en) / 1000.0)
                d["d2d_gbs"] = 2 * BW_BYTES / statistics.median(times) / 1e9
        except Exception as e:
            d["error"] = f"{type(e).__name__}: {e}"[:300]
        devs.append(d)
    return "cupy " + cp.__version__, devs


def _ctypes():
    import ctypes
    cu = ctypes.CDLL("libcuda.so.1")

    def ck(rc, what):
        if rc != 0:
            msg = ctypes.c_char_p()
            cu.cuGetErrorString(rc, ctypes.byref(msg))
            raise RuntimeError(f"{what}: CUDA error {rc} {msg.value.decode() if msg.value else ''}")

    ck(cu.cuInit(0), "cuInit")
    n = ctypes.c_int()
    ck(cu.cuDeviceGetCount(ctypes.byref(n)), "cuDeviceGetCount")
    devs = []
    for i in range(n.value):
        d = {"index": i, "name": "", "ok": False, "error": None, "d2d_gbs": None}
        ctx = ctypes.c_void_p()
        dev = ctypes.c_int()
        try:
            ck(cu.cuDeviceGet(ctypes.byref(dev), i), "cuDeviceGet")
            name = ctypes.create_string_buffer(256)
            cu.cuDeviceGetName(name, 256, dev)
            d["name"] = name.value.decode(errors="replace")
            ck(cu.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev), "cuDevicePrimaryCtxRetain")
            ck(cu.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")
            a, b = ctypes.c_uint64(), ctypes.c_uint64()
            ck(cu.cuMemAlloc_v2(ctypes.byref(a), ctypes.c_size_t(BW_BYTES)), "cuMemAlloc")
            ck(cu.cuMemAlloc_v2(ctypes.byref(b), ctypes.c_size_t(BW_BYTES)), "cuMemAlloc")
            words = BW_BYTES // 4
            ck(cu.cuMemsetD32_v2(a, ctypes.c_uint(0xA5A5A5A5), ctypes.c_size_t(words)), "cuMemsetD32")
            ck(cu.cuMemcpyDtoD_v2(b, a, ctypes.c_size_t(BW_BYTES)), "cuMemcpyDtoD")
            ck(cu.cuCtxSynchronize(), "cuCtxSynchronize")
            host = (ctypes.c_uint32 * 4096)()
            ck(cu.cuMemcpyDtoH_v2(host, ctypes.c_uint64(b.value + BW_BYTES - 4096 * 4), ctypes.c_size_t(4096 * 4)), "cuMemcpyDtoH")
            d["ok"] = all(v == 0xA5A5A5A5 for v in host)
            if not d["ok"]:
                d["error"] = "device memory read back wrong values"
            times = []
            for _ in range(BW_ITERS):
                t0 = time.perf_counter()
                ck(cu.cuMemcpyDtoD_v2(b, a, ctypes.c_size_t(BW_BYTES)), "cuMemcpyDtoD")
                ck(cu.cuCtxSynchronize(), "cuCtxSynchronize")
                times.append(time.perf_counter() - t0)
            d["d2d_gbs"] = 2 * BW_BYTES / statistics.median(times) / 1e9
            cu.cuMemFree_v2(a)
            cu.cuMemFree_v2(b)
        except Exception as e:
            d["error"] = f"{type(e).__name__}: {e}"[:300]
        finally:
            if ctx.value:
                cu.cuDevicePrimaryCtxRelease(dev)
        devs.append(d)
    return "cuda driver API (ctypes)", devs


def main() -> int:
    errors = []
    for name, fn in (("torch", _torch), ("cupy", _cupy), ("ctypes", _ctypes)):
        try:
            backend, devs = fn()
        except ImportError as e:
            errors.append(f"{name}: not installed ({e})")
            continue
        except Exception as e:
            errors.append(f"{name}: {type(e).__name__}: {e}"[:300])
            continue
        print(json.dumps({"backend": backend, "devices": devs, "errors": errors}))
        return 0
    print(json.dumps({"backend": None, "devices": [], "errors": errors}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
