"""What a benchmark returns: figures with units, plus what the node was; JSON round-trips."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Optional


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as the benchmark child saw it (torch + NVML)."""

    index: int
    name: str
    pci_device_id: Optional[int] = None  # 0x2330 for an H100 SXM5 (the device half of 0x233010DE)
    bus_id: str = ""
    memory_gib: float = 0.0
    pcie_gen: Optional[int] = None  # negotiated now
    pcie_width: Optional[int] = None
    pcie_gen_max: Optional[int] = None  # what this GPU in this slot can do
    pcie_width_max: Optional[int] = None

    @classmethod
    def from_dict(cls, d: dict) -> "GpuInfo":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class Figure:
    """One measured number, e.g. bandwidth / h2d_pinned on GPU 0 = 55.1 GB/s."""

    bench: str
    name: str
    value: float
    unit: str
    gpu: Optional[int] = None  # None: the whole node (NCCL, multi-GPU training)
    detail: str = ""
    gate: bool = True  # compared with an expected value; False: informational
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> str:
        where = "node" if self.gpu is None else f"gpu{self.gpu}"
        return f"{self.bench}.{self.name}.{where}"

    @classmethod
    def from_dict(cls, d: dict) -> "Figure":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class _Figures(list):
    """The figures of a run; each one added is also a progress event (validator.events), so a terminal can show
    per-test lines while a benchmark runs."""

    def append(self, fig) -> None:
        super().append(fig)
        from validator import events
        events.emit("figure", **asdict(fig))

    def extend(self, figs) -> None:
        for fig in figs:
            self.append(fig)


@dataclass
class BenchRun:
    """The outcome of one suite: figures, the GPUs, samples, errors (one failing part never hides the rest)."""

    suite: str
    figures: list = field(default_factory=_Figures)
    gpus: list = field(default_factory=list)
    telemetry: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    errors: list = field(default_factory=list)
    skipped: Optional[str] = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "BenchRun":
        return cls(
            suite=d["suite"],
            figures=[Figure.from_dict(x) for x in d.get("figures", [])],
            gpus=[GpuInfo.from_dict(x) for x in d.get("gpus", [])],
            telemetry=dict(d.get("telemetry", {})),
            info=dict(d.get("info", {})),
            errors=list(d.get("errors", [])),
            skipped=d.get("skipped"),
            seconds=float(d.get("seconds", 0.0)),
        )
