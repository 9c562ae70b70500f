"""NVML samples during a run (temperature, power, clocks, clock-event reasons), summarised per GPU."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

# nvmlClocksEventReasons bits (nvml.h; nvidia-smi -q "Clocks Event Reasons").
CLOCK_EVENT_REASONS = {
    0x1: "idle",
    0x2: "applications clocks setting",
    0x4: "SW power cap",
    0x8: "HW slowdown",
    0x10: "sync boost",
    0x20: "SW thermal slowdown",
    0x40: "HW thermal slowdown",
    0x80: "HW power brake slowdown",
    0x100: "display clock setting",
}
# Reasons that mean the GPU ran slower than it could under load (idle and sync boost do not).
THROTTLE_BITS = 0x4 | 0x8 | 0x20 | 0x40 | 0x80


def decode_reasons(mask: int) -> List[str]:
    """Bitmask -> names, lowest bit first; unknown bits come back as hex."""
    out = [name for bit, name in CLOCK_EVENT_REASONS.items() if mask & bit]
    rest = mask & ~sum(CLOCK_EVENT_REASONS)
    if rest:
        out.append(hex(rest))
    return out


@dataclass(frozen=True)
class Sample:
    """One reading of one GPU. temp_c = temperature.gpu, power_w = power.draw, sm_mhz = clocks.sm,
    mem_mhz = clocks.mem, reasons = clocks_event_reasons.active (nvidia-smi --query-gpu names)."""

    t: float
    gpu: int
    temp_c: Optional[float]
    power_w: Optional[float]
    sm_mhz: Optional[float]
    mem_mhz: Optional[float]
    reasons: int


def summarise(samples: List[Sample]) -> Dict[str, dict]:
    """Per GPU: count, max temp, mean/max power, min/median SM clock, throttle reasons seen (named)."""
    by_gpu: Dict[int, List[Sample]] = {}
    for s in samples:
        by_gpu.setdefault(s.gpu, []).append(s)
    out = {}
    for gpu, ss in sorted(by_gpu.items()):
        temps = [s.temp_c for s in ss if s.temp_c is not None]
        pw = [s.power_w for s in ss if s.power_w is not None]
        sm = sorted(s.sm_mhz for s in ss if s.sm_mhz is not None)
        seen = 0
        throttled = 0
        for s in ss:
            seen |= s.reasons
            throttled += 1 if s.reasons & THROTTLE_BITS else 0
        out[str(gpu)] = {
            "samples": len(ss),
            "temp_max_c": max(temps) if temps else None,
            "power_mean_w": round(sum(pw) / len(pw), 1) if pw else None,
            "power_max_w": max(pw) if pw else None,
            "sm_mhz_min": sm[0] if sm else None,
            "sm_mhz_median": sm[len(sm) // 2] if sm else None,
            "reasons_seen": decode_reasons(seen),
            "throttle_reasons": decode_reasons(seen & THROTTLE_BITS),
            "throttled_fraction": round(throttled / len(ss), 3) if ss else 0.0,
            "series": series(ss),
        }
    return out


def series(samples: List[Sample], max_points: int = 400) -> Dict[str, list]:
    """One GPU's readings over time for plots: t (s from the first sample), temp_c, power_w, sm_mhz; evenly thinned
    to at most max_points."""
    if not samples:
        return {"t": [], "temp_c": [], "power_w": [], "sm_mhz": []}
    step = max(1, -(-len(samples) // max_points))
    kept = samples[::step]
    t0 = samples[0].t
    return {"t": [round(s.t - t0, 2) for s in kept], "temp_c": [s.temp_c for s in kept],
            "power_w": [None if s.power_w is None else round(s.power_w, 1) for s in kept],
            "sm_mhz": [s.sm_mhz for s in kept]}


def nvml_reader() -> Optional[Callable[[], List[Sample]]]:
    """A function reading every GPU once through pynvml, or None when NVML is not usable here."""
    try:
        import pynvml  # nvidia-ml-py

        pynvml.nvmlInit()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception:
        return None

    def _get(fn, *a):
        try:
            return fn(*a)
        except Exception:
            return None

    reasons_fn = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or pynvml.nvmlDeviceGetCurrentClocksThrottleReasons

    def read() -> List[Sample]:
        now = time.time()
        out = []
        for i, h in enumerate(handles):
            p = _get(pynvml.nvmlDeviceGetPowerUsage, h)
            out.append(
                Sample(
                    t=now,
                    gpu=i,
                    temp_c=_get(pynvml.nvmlDeviceGetTemperature, h, pynvml.NVML_TEMPERATURE_GPU),
                    power_w=None if p is None else p / 1000.0,
                    sm_mhz=_get(pynvml.nvmlDeviceGetClockInfo, h, pynvml.NVML_CLOCK_SM),
                    mem_mhz=_get(pynvml.nvmlDeviceGetClockInfo, h, pynvml.NVML_CLOCK_MEM),
                    reasons=_get(reasons_fn, h) or 0,
                )
            )
        return out

    return read


class Sampler:
    """Reads `read()` every `interval` seconds in a thread between start() and stop()."""

    def __init__(self, read: Optional[Callable[[], List[Sample]]], interval: float = 0.5):
        self.read = read
        self.interval = interval
        self.samples: List[Sample] = []
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _loop(self):
        while not self._stop.is_set():
            try:
                self.samples.extend(self.read())
            except Exception:
                pass  # a missed sample is not a failed benchmark
            self._stop.wait(self.interval)

    def __enter__(self):
        if self.read is not None:
            self._thread = threading.Thread(target=self._loop, name="nvml-sampler", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        return False

    def summary(self) -> Dict[str, dict]:
        return summarise(self.samples)
