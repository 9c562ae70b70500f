"""Child side of `bench bandwidth`: host<->device (pinned, pageable, both ways at once), device copy, P2P.

CUDA events around each copy, warm-up first, median of `reps`."""

from __future__ import annotations

import dataclasses
import time

from validator.bench import devinfo
from validator.bench.formulas import median
from validator.bench.results import BenchRun, Figure


def _warm(torch, fn, warmup: int, min_s: float = 0.3) -> None:
    """At least `warmup` calls and `min_s` seconds: an idle PCIe link sits at a low generation and
    needs a moment of traffic to train back up (seen: a first H2D median 11 % low on an H100)."""
    t0 = time.perf_counter()
    n = 0
    while n < warmup or time.perf_counter() - t0 < min_s:
        fn()
        torch.cuda.synchronize()
        n += 1


def _time_events(torch, fn, reps: int, warmup: int = 3, stream=None) -> float:
    """Median seconds of fn() measured with CUDA events on the current stream."""
    return median(_samples_events(torch, fn, reps, warmup, stream))


def _samples_events(torch, fn, reps: int, warmup: int = 3, stream=None) -> list:
    _warm(torch, fn, warmup)
    times = []
    for _ in range(reps):
        s = torch.cuda.Event(enable_timing=True)
        e = torch.cuda.Event(enable_timing=True)
        s.record(stream)
        fn()
        e.record(stream)
        e.synchronize()
        times.append(s.elapsed_time(e) / 1e3)
    return times


def _time_host(torch, fn, reps: int, warmup: int = 2) -> float:
    """Median seconds with a host clock and a device sync (pageable copies block the host anyway)."""
    _warm(torch, fn, warmup)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return median(times)


def host_device(torch, dev: int, nbytes: int, reps: int) -> list:
    figs = []
    torch.cuda.set_device(dev)
    d = torch.empty(nbytes, dtype=torch.uint8, device=dev)
    d2 = torch.empty(nbytes, dtype=torch.uint8, device=dev)
    for pinned in (True, False):
        h = torch.empty(nbytes, dtype=torch.uint8, pin_memory=pinned)
        h.fill_(7)  # touch every page before timing
        kind = "pinned" if pinned else "pageable"
        if pinned:
            # Three rounds, the directions taking turns: a host-side dip of a few hundred ms (seen on the
            # H100 guest: one 20-rep H2D round at 51.5 GB/s among rounds at 55) then moves only a third
            # of the samples, and the median of all 3 x reps stays the link's figure.
            up, down = [], []
            for _ in range(3):
                up += _samples_events(torch, lambda: d.copy_(h, non_blocking=True), reps)
                down += _samples_events(torch, lambda: h.copy_(d, non_blocking=True), reps)
            t_h2d, t_d2h = median(up), median(down)
            detail = f"median of {len(up)} (3 rounds x {reps})"
        else:
            t_h2d = _time_host(torch, lambda: d.copy_(h), reps)
            t_d2h = _time_host(torch, lambda: h.copy_(d), reps)
            detail = f"median of {reps}"
        figs.append(Figure("bandwidth", f"h2d_{kind}", nbytes / t_h2d / 1e9, "GB/s", dev, gate=pinned, detail=detail))
        figs.append(Figure("bandwidth", f"d2h_{kind}", nbytes / t_d2h / 1e9, "GB/s", dev, gate=pinned, detail=detail))
        if pinned:
            # Both directions at once on two streams: a full-duplex link carries nearly twice the bytes.
            h2 = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
            s1, s2 = torch.cuda.Stream(dev), torch.cuda.Stream(dev)

            def both():
                cur = torch.cuda.current_stream(dev)
                s1.wait_stream(cur)
                s2.wait_stream(cur)
                with torch.cuda.stream(s1):
                    d.copy_(h, non_blocking=True)
                with torch.cuda.stream(s2):
                    h2.copy_(d2, non_blocking=True)
                cur.wait_stream(s1)
                cur.wait_stream(s2)

            t_bi = _time_events(torch, both, reps)
            figs.append(Figure("bandwidth", "bidir_pinned", 2 * nbytes / t_bi / 1e9, "GB/s", dev, gate=False,
                               detail="H2D + D2H at once, bytes of both directions"))
            h2 = None
        h = None  # free the pinned buffer before the next one
    return figs


def device_copy(torch, dev: int, nbytes: int, reps: int) -> Figure:
    """A device-to-device copy counting bytes read + written (2 x size), as STREAM's copy does."""
    torch.cuda.set_device(dev)
    src = torch.empty(nbytes, dtype=torch.uint8, device=dev).random_(0, 255)
    dst = torch.empty_like(src)
    t = _time_events(torch, lambda: dst.copy_(src), reps)
    return Figure("bandwidth", "device_copy", 2 * nbytes / t / 1e9, "GB/s", dev, detail="read + write bytes")


def p2p(torch, a: int, b: int, nbytes: int, reps: int) -> list:
    """GPU a -> GPU b copy (unidirectional) and both ways at once; peer access if the driver allows it."""
    peer = torch.cuda.can_device_access_peer(a, b) and torch.cuda.can_device_access_peer(b, a)
    xa = torch.empty(nbytes, dtype=torch.uint8, device=a).random_(0, 255)
    xb = torch.empty(nbytes, dtype=torch.uint8, device=b)
    ya = torch.empty(nbytes, dtype=torch.uint8, device=a)
    yb = torch.empty(nbytes, dtype=torch.uint8, device=b).random_(0, 255)
    with torch.cuda.device(a):
        t = _time_events(torch, lambda: xb.copy_(xa, non_blocking=True), reps)
    sa, sb = torch.cuda.Stream(a), torch.cuda.Stream(b)

    def both():
        cur = torch.cuda.current_stream(a)
        sa.wait_stream(cur)
        sb.wait_stream(cur)
        with torch.cuda.stream(sa):
            xb.copy_(xa, non_blocking=True)
        with torch.cuda.stream(sb):
            ya.copy_(yb, non_blocking=True)
        torch.cuda.current_stream(a).wait_stream(sa)
        torch.cuda.current_stream(a).wait_stream(sb)

    with torch.cuda.device(a):
        tb = _time_events(torch, both, reps)
    detail = f"GPU{a}->GPU{b}, peer access {'on' if peer else 'off (staged through host)'}"
    meta = {"src": a, "dst": b, "peer": bool(peer)}
    return [
        Figure("bandwidth", f"p2p_{a}_{b}", nbytes / t / 1e9, "GB/s", a, detail=detail, meta=meta),
        Figure("bandwidth", f"p2p_bidir_{a}_{b}", 2 * nbytes / tb / 1e9, "GB/s", a, gate=False,
               detail=f"GPU{a}<->GPU{b} both ways at once", meta=meta),
    ]


def run(params: dict) -> BenchRun:
    import torch

    run = BenchRun("bandwidth")
    gpus = params.get("gpus") or list(range(torch.cuda.device_count()))
    nbytes = int(params.get("size_bytes", 1 << 30))
    reps = int(params.get("reps", 20))
    infos = {g.index: g for g in devinfo.gpu_infos(torch)}
    for dev in gpus:
        for part, fn in (("host<->device", lambda: host_device(torch, dev, nbytes, reps)),
                         ("device copy", lambda: [device_copy(torch, dev, max(nbytes, 1 << 30), reps)])):
            try:
                run.figures.extend(fn())
            except Exception as e:  # one failing part never hides the others
                run.errors.append(f"GPU{dev} {part}: {type(e).__name__}: {e}")
            finally:
                torch.cuda.empty_cache()
        # The link drops to a low generation when idle: read it right after the transfers.
        gen, width, gmax, wmax = devinfo.pcie_link(dev)
        if dev in infos and gen:
            infos[dev] = dataclasses.replace(infos[dev], pcie_gen=gen, pcie_width=width,
                                             pcie_gen_max=gmax or infos[dev].pcie_gen_max,
                                             pcie_width_max=wmax or infos[dev].pcie_width_max)
    p2p_bytes = min(nbytes, 1 << 30)
    for a in gpus:
        for b in gpus:
            if a == b:
                continue
            try:
                run.figures.extend(p2p(torch, a, b, p2p_bytes, reps))
            except Exception as e:
                run.errors.append(f"P2P GPU{a}->GPU{b}: {type(e).__name__}: {e}")
            finally:
                torch.cuda.empty_cache()
    run.gpus = [infos[i] for i in sorted(infos)]
    run.info = {"size_bytes": nbytes, "reps": reps, "torch": torch.__version__}
    return run
