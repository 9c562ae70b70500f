"""Progress events from a benchmark child to whoever listens in the parent (a terminal ticker, a test).

The child appends one JSON object a line to the file named by $GPUFORGE_EVENTS (nothing when unset); the parent
names that file for the child and follows it in a thread while the child runs, handing each event to the
listeners registered with `listening`. Events are best effort: a lost one never changes a result."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from typing import Callable, Iterator, List, Optional

ENV = "GPUFORGE_EVENTS"
Listener = Callable[[dict], None]
_LISTENERS: List[Listener] = []
_LOCK = threading.Lock()
_MUTED = False


def mute() -> None:
    """This process does not report (a rank other than 0 of a multi-process benchmark): emit does nothing."""
    global _MUTED
    _MUTED = True


def emit(kind: str, **fields) -> None:
    """Record one event: to the parent's file in a child that was given one, else straight to this process's
    listeners (a no-op when nobody listens)."""
    if _MUTED:
        return
    event = {"event": kind, **fields}
    path = os.environ.get(ENV)
    if not path:
        if active():
            publish(event)
        return
    try:
        with open(path, "a") as f:
            f.write(json.dumps(event, default=str) + "\n")
    except OSError:
        pass


def publish(event: dict) -> None:
    """Parent side: hand one event to every listener; a failing listener is dropped from this event only."""
    with _LOCK:
        listeners = list(_LISTENERS)
    for fn in listeners:
        try:
            fn(event)
        except Exception:
            pass


@contextlib.contextmanager
def listening(fn: Listener) -> Iterator[None]:
    """Register a listener for the duration of a block."""
    with _LOCK:
        _LISTENERS.append(fn)
    try:
        yield
    finally:
        with _LOCK:
            if fn in _LISTENERS:
                _LISTENERS.remove(fn)


def active() -> bool:
    with _LOCK:
        return bool(_LISTENERS)


class _Follower:
    def __init__(self, path: str, interval: float):
        self.path, self.interval = path, interval
        self.stop = threading.Event()
        self.offset = 0
        self.thread = threading.Thread(target=self._loop, name="gpuforge-events", daemon=True)

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return
        done = data.rfind(b"\n") + 1  # a half-written last line waits for the next poll
        self.offset += done
        for line in data[:done].decode(errors="replace").splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if isinstance(ev, dict):
                publish(ev)

    def _loop(self) -> None:
        while not self.stop.wait(self.interval):
            self.poll()


@contextlib.contextmanager
def follow(path: str, interval: float = 0.2) -> Iterator[Optional[dict]]:
    """Parent side, around a child's run: yields the env ({ENV: path}) to give the child, or None when nobody
    listens (then the child records nothing); publishes the child's events as they arrive."""
    if not active():
        yield None
        return
    f = _Follower(path, interval)
    f.thread.start()
    try:
        yield {ENV: path}
    finally:
        f.stop.set()
        f.thread.join(timeout=5)
        f.poll()  # the events written just before the child exited
