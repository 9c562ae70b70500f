#!/usr/bin/env python3
"""Experiment (device only): pinned host-copy variants. torch pin_memory vs mmap+MADV_HUGEPAGE registered
with cudaHostRegister, at several sizes; median of 20 with CUDA events after a 0.3 s warm-up."""

import mmap
import statistics
import time

import torch


def timed(fn, reps=20):
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 0.3:
        fn()
        torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        e.synchronize()
        ts.append(s.elapsed_time(e) / 1e3)
    return statistics.median(ts)


def host_buffers(n):
    yield "pin_memory", torch.empty(n, dtype=torch.uint8, pin_memory=True)
    m = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    m.madvise(mmap.MADV_HUGEPAGE)
    t = torch.frombuffer(m, dtype=torch.uint8)
    t.fill_(1)
    rc = torch.cuda.cudart().cudaHostRegister(t.data_ptr(), n, 0)
    yield f"mmap+THP+register(rc={int(rc)})", t
    torch.cuda.cudart().cudaHostUnregister(t.data_ptr())


for n in (256 << 20, 1 << 30, 2 << 30):
    d = torch.empty(n, dtype=torch.uint8, device="cuda")
    for name, h in host_buffers(n):
        h.fill_(3)
        up = n / timed(lambda d=d, h=h: d.copy_(h, non_blocking=True)) / 1e9
        down = n / timed(lambda d=d, h=h: h.copy_(d, non_blocking=True)) / 1e9
        print(f"{n >> 20:5d} MiB  {name:28s}  H2D {up:6.2f}  D2H {down:6.2f} GB/s", flush=True)
    del d
