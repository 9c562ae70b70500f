"""Live progress on a terminal: `run` shows each group's result as it finishes (one line a group, like dcgmi
diag), `bench` one line per measured test and per NCCL message size (like nccl-tests). Nothing when the stream
is not a TTY: logs stay clean."""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import Dict, List, Optional, Sequence, TextIO

from validator import textsafe
from validator.bench.formulas import human_bytes
from validator.report.render import ANSI, SYMBOL
from validator.termtext import WIDTH

_CLEAR = "\r\033[K"


def is_tty(stream: TextIO) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)())


class NoProgress:
    """What the runner calls; every method does nothing (pipes, logs, tests)."""

    def start(self, level: str, specs: Sequence) -> None: ...
    def check_started(self, spec) -> None: ...
    def check_done(self, spec, results: Sequence) -> None: ...
    def group_done(self, group: str, results: Sequence, seconds: float) -> None: ...
    def event(self, ev: dict) -> None: ...
    def close(self) -> None: ...


class RunProgress(NoProgress):
    """A ticker line while a check runs (benchmark events update it), a permanent line when a group is done."""

    def __init__(self, stream: TextIO = sys.stderr, colour: bool = True):
        self.stream, self.colour = stream, colour
        self.current = ""
        self.t0 = time.perf_counter()

    def _c(self, key: str) -> str:
        return ANSI[key] if self.colour else ""

    def _ticker(self, text: str) -> None:
        self.stream.write(_CLEAR + textsafe.term(text)[:WIDTH - 1])  # benchmark events carry GPU names
        self.stream.flush()

    def start(self, level: str, specs: Sequence) -> None:
        groups = list(dict.fromkeys(s.group for s in specs))
        self.stream.write(f"{self._c('bold')}gpu-validate {level}: {len(specs)} checks in {len(groups)} groups"
                          f"{self._c('end')}\n")
        self.stream.flush()

    def check_started(self, spec) -> None:
        self.current = spec.id
        self._ticker(f"  … {spec.id}: {spec.title}")

    def event(self, ev: dict) -> None:
        text = describe(ev)
        if text and self.current:
            self._ticker(f"  … {self.current}: {text}")

    def group_done(self, group: str, results: Sequence, seconds: float) -> None:
        from validator.checks.base import worst
        st = worst(r.status for r in results)
        n = Counter(r.status for r in results)
        counts = ", ".join(f"{n[s]} {s}" for s in ("fail", "warn", "pass", "skip") if n[s])
        self.stream.write(f"{_CLEAR}  {group:<10} {self._c(st)}{SYMBOL[st]} {st.upper():<4}{self._c('end')}  "
                          f"{counts:<40} {seconds:7.2f} s\n")
        self.stream.flush()

    def close(self) -> None:
        self.stream.write(_CLEAR)
        self.stream.flush()


def describe(ev: dict) -> str:
    """One short line for a benchmark event ('' for events not worth a line)."""
    kind = ev.get("event")
    if kind == "nccl_size":
        return (f"{ev.get('op')} {human_bytes(int(ev.get('size') or 0))}: busbw {float(ev.get('busbw') or 0):.1f} "
                f"GB/s")
    if kind == "figure":
        where = f"GPU{ev['gpu']}" if ev.get("gpu") is not None else "node"
        return f"{ev.get('bench')} {ev.get('name')} {where}: {_num(ev.get('value'))} {ev.get('unit', '')}"
    if kind == "suite":
        return f"{ev.get('suite')} benchmark starting"
    return ""


def _num(v) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return f"{f:.0f}" if abs(f) >= 100 else f"{f:.1f}" if abs(f) >= 10 else f"{f:.2f}"


class BenchProgress:
    """`gpu-validate bench` on a terminal: a header per suite, one line per test, NCCL sizes as nccl-tests does."""

    NCCL_HEAD = f"  {'op':<15}{'size':>10}{'time (us)':>12}{'algbw GB/s':>12}{'busbw GB/s':>12}{'ranks':>7}"

    def __init__(self, stream: TextIO = sys.stderr):
        self.stream = stream
        self.last_op: Optional[str] = None
        self.sizes: Dict[str, List[float]] = {}

    def __call__(self, ev: dict) -> None:
        kind = ev.get("event")
        if kind == "suite":
            self._line(f"# {ev.get('suite')}")
            self.last_op = None
        elif kind == "nccl_size":
            if ev.get("op") != self.last_op:
                self._line(self.NCCL_HEAD)
                self.last_op = ev.get("op")
            self._line(f"  {str(ev.get('op')):<15}{human_bytes(int(ev.get('size') or 0)):>10}"
                       f"{float(ev.get('time_us') or 0):>12.1f}{float(ev.get('algbw') or 0):>12.2f}"
                       f"{float(ev.get('busbw') or 0):>12.2f}{ev.get('ranks', ''):>7}")
        elif kind == "figure" and ev.get("bench") != "nccl":
            where = f"GPU{ev['gpu']}" if ev.get("gpu") is not None else "node"
            detail = f"  ({ev['detail']})" if ev.get("detail") else ""
            self._line(f"  {ev.get('bench', ''):<10} {ev.get('name', ''):<24} {where:<6} "
                       f"{_num(ev.get('value')):>8} {ev.get('unit', '')}{detail}")

    def _line(self, text: str) -> None:
        self.stream.write(textsafe.term(text)[:WIDTH] + "\n")
        self.stream.flush()
