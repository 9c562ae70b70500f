"""NVLink as `nvidia-smi nvlink` prints it: link state and speed (-s), error counters (-e); typed, never raising."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

_GPU = re.compile(r"^GPU (\d+):\s*(.*?)(?:\s*\(UUID:\s*([^)]+)\))?\s*$")
_LINK = re.compile(r"^Link (\d+):\s*(.*)$")
_SPEED = re.compile(r"^([\d.]+)\s*GB/s$")
_COUNTER = re.compile(r"^(.*?):\s*(\d+)\s*$")


@dataclass(frozen=True)
class Link:
    """One link of one GPU: active with a speed (GB/s, one direction, as nvidia-smi prints it), or not."""

    link: int
    active: bool
    gbs: Optional[float] = None
    state: str = ""  # the raw text: "26.562 GB/s", "<inactive>", ...


@dataclass(frozen=True)
class GpuLinks:
    """What `nvidia-smi nvlink -s` says about one GPU (index in nvidia-smi order = PCI bus order)."""

    index: int
    name: str = ""
    uuid: Optional[str] = None
    links: Tuple[Link, ...] = ()

    @property
    def active(self) -> Tuple[Link, ...]:
        return tuple(l for l in self.links if l.active)


@dataclass(frozen=True)
class GpuLinkErrors:
    """`nvidia-smi nvlink -e` for one GPU: link -> counter name (lower case) -> count."""

    index: int
    counters: Dict[int, Dict[str, int]] = field(default_factory=dict)

    def total(self, word: str) -> int:
        """Sum over links of every counter whose name contains `word` ('replay', 'recovery', 'crc')."""
        return sum(v for per in self.counters.values() for k, v in per.items() if word in k)

    def links_with(self, word: str) -> Tuple[int, ...]:
        return tuple(sorted(l for l, per in self.counters.items() if any(word in k and v for k, v in per.items())))


def _lines(text: str):
    for raw in (text or "").splitlines():
        line = re.sub(r"\x1b\[[0-9;]*m", "", raw).strip()
        if line:
            yield line


def parse_nvlink_status(text: str) -> Dict[int, GpuLinks]:
    """'GPU 0: NAME (UUID: ...)' then 'Link N: 26.562 GB/s' or 'Link N: <inactive>' lines; other lines ignored."""
    out: Dict[int, GpuLinks] = {}
    cur: Optional[int] = None
    links: Dict[int, Dict[int, Link]] = {}
    for line in _lines(text):
        m = _GPU.match(line)
        if m:
            cur = int(m.group(1))
            out[cur] = GpuLinks(cur, m.group(2).strip(), m.group(3).strip() if m.group(3) else None)
            links[cur] = {}
            continue
        m = _LINK.match(line)
        if m and cur is not None:
            n, state = int(m.group(1)), m.group(2).strip()
            sp = _SPEED.match(state)
            gbs = float(sp.group(1)) if sp else None
            links[cur][n] = Link(n, gbs is not None and gbs > 0, gbs, state)
    return {i: GpuLinks(g.index, g.name, g.uuid, tuple(links[i][n] for n in sorted(links[i])))
            for i, g in out.items()}


def parse_nvlink_errors(text: str) -> Dict[int, GpuLinkErrors]:
    """Both layouts: 'Link 0: Replay Errors: 0' on one line, or 'Link 0:' followed by 'Replay Error: 0' lines."""
    out: Dict[int, Dict[int, Dict[str, int]]] = {}
    gpu: Optional[int] = None
    link: Optional[int] = None
    for line in _lines(text):
        m = _GPU.match(line)
        if m:
            gpu, link = int(m.group(1)), None
            out[gpu] = {}
            continue
        if gpu is None:
            continue
        m = _LINK.match(line)
        rest = line
        if m:
            link, rest = int(m.group(1)), m.group(2).strip()
            if not rest:
                continue
        c = _COUNTER.match(rest)
        if c and link is not None:
            out[gpu].setdefault(link, {})[c.group(1).strip().lower()] = int(c.group(2))
    return {i: GpuLinkErrors(i, per) for i, per in out.items()}
