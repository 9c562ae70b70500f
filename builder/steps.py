"""Runbook steps shared by every build (drivers, images, containers): `with step("Compiling ..."):` prints the
title, times the block into a timings dict, and on a TTY keeps a ticker (elapsed, ETA from the last run) on the
line while it runs. Not a TTY: two plain lines per step, nothing redrawn, so logs stay clean."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Dict, Iterator, Optional, TextIO


def say(fmt: str, *args, stream: Optional[TextIO] = None) -> None:
    """Progress for the operator on stderr (not a log warning)."""
    print("gpuforge: " + (fmt % args if args else fmt), file=stream or sys.stderr, flush=True)


def fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def eta_text(elapsed: float, expected: Optional[float]) -> str:
    """'1m05s' alone, or '1m05s of ~2m10s' / '2m30s (over ~2m10s)' when the last run's time is known."""
    if not expected:
        return fmt_seconds(elapsed)
    if elapsed <= expected:
        return f"{fmt_seconds(elapsed)} of ~{fmt_seconds(expected)}"
    return f"{fmt_seconds(elapsed)} (over ~{fmt_seconds(expected)})"


class Ticker:
    """Redraws '    <title> <elapsed> of ~<eta>' once a second on a TTY; does nothing otherwise."""

    def __init__(self, title: str, expected: Optional[float] = None, stream: Optional[TextIO] = None,
                 tty: Optional[bool] = None, interval: float = 1.0):
        self.title, self.expected, self.interval = title, expected, interval
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def line(self) -> str:
        return f"    {self.title} ... {eta_text(time.monotonic() - self.t0, self.expected)}"

    def __enter__(self) -> "Ticker":
        if self.tty:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.stream.write("\r\033[K" + self.line()[:160])
            self.stream.flush()

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self.stream.write("\r\033[K")
            self.stream.flush()


@contextlib.contextmanager
def step(title: str, timings: Optional[Dict[str, float]] = None, expected: Optional[float] = None,
         stream: Optional[TextIO] = None, tty: Optional[bool] = None, ticker: bool = True) -> Iterator[None]:
    """A timed, announced build step (mkosi style); its seconds land in timings[title].

    ticker=False when the step draws its own progress line (the driver build's per-cell bar)."""
    say("==> %s", title, stream=stream)
    t0 = time.monotonic()
    try:
        with Ticker(title, expected, stream, False if not ticker else tty):
            yield
    finally:
        dt = time.monotonic() - t0
        if timings is not None:
            timings[title] = round(dt, 1)
        say("    %s: %.1fs", title, dt, stream=stream)
