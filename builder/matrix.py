"""Resolve the GPU x kernel x driver matrix into a Plan: cells to build and skips with reasons. Pure, no I/O."""

from __future__ import annotations

import fnmatch
import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, List, Mapping, Optional, Sequence, Tuple

from builder.config import DriverDef, FlavourDef, KernelDef, MatrixConfig, Rule, series_key

if TYPE_CHECKING:
    from validator.idlists import DriverLists

# driver version -> its nvidia-detect ID lists, None where none is shipped.
IdLists = Mapping[str, Optional["DriverLists"]]


@dataclass(frozen=True)
class Cell:
    """One (kernel ABI, driver, flavour) to compile: the unit of build, cache and failure."""

    kernel: KernelDef
    driver: DriverDef
    flavour: str
    gpus: Tuple[str, ...]  # fleet models this cell serves
    why: str = ""  # set when an include rule forced it
    expect_fail: str = ""  # set when an expected_failures rule names it: its failure does not fail the run

    @property
    def id(self) -> str:
        return f"{self.driver.id}-{self.flavour}@{self.kernel.abi}"

    @property
    def flavour_def(self) -> FlavourDef:
        return self.driver.flavours[self.flavour]

    def to_dict(self) -> dict:
        return {"id": self.id, "kernel": self.kernel.abi, "driver": self.driver.id, "version": self.driver.version,
                "flavour": self.flavour, "source": self.flavour_def.source.pin(), "gpus": list(self.gpus),
                "why": self.why, "expect_fail": self.expect_fail}


@dataclass(frozen=True)
class Skip:
    kernel: str
    driver: str
    flavour: str
    reason: str
    details: Tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.driver}-{self.flavour}@{self.kernel}"

    def to_dict(self) -> dict:
        return {"id": self.id, "kernel": self.kernel, "driver": self.driver, "flavour": self.flavour,
                "reason": self.reason, "details": list(self.details)}


@dataclass(frozen=True)
class Uncovered:
    """A fleet GPU left without any driver cell on a kernel: the plan is incomplete for it."""

    kernel: str
    gpu: str
    reasons: Tuple[str, ...]

    def to_dict(self) -> dict:
        return {"kernel": self.kernel, "gpu": self.gpu, "reasons": list(self.reasons)}


@dataclass(frozen=True)
class Plan:
    cells: Tuple[Cell, ...]
    skips: Tuple[Skip, ...]
    uncovered: Tuple[Uncovered, ...] = ()
    notes: Tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"cells": [c.to_dict() for c in self.cells], "skips": [s.to_dict() for s in self.skips],
                "uncovered": [u.to_dict() for u in self.uncovered], "notes": list(self.notes)}

    def select(self, only: Optional[str] = None, shard: Optional[Tuple[int, int]] = None) -> Tuple[Cell, ...]:
        """Cells matching --only (glob on the cell id, or a substring) and in shard i of n (1-based, stable)."""
        cells = self.cells
        if only:
            pat = only if any(ch in only for ch in "*?[") else f"*{only}*"
            cells = tuple(c for c in cells if fnmatch.fnmatchcase(c.id, pat))
        if shard:
            i, n = shard
            cells = tuple(c for k, c in enumerate(sorted(cells, key=lambda c: c.id)) if k % n == i - 1)
        return cells


def _matches(rule: Rule, kernel: KernelDef, driver: DriverDef, flavour: str) -> bool:
    return (fnmatch.fnmatchcase(kernel.abi, rule.kernel) and fnmatch.fnmatchcase(driver.id, rule.driver)
            and fnmatch.fnmatchcase(flavour, rule.flavour))


def kernel_reason(kernel: KernelDef, driver: DriverDef) -> Optional[str]:
    """Why a driver cannot be built for this kernel series (None: no known limit applies)."""
    if driver.kernel_max and series_key(kernel.series) > series_key(driver.kernel_max):
        return f"kernel {kernel.series} too new for branch {driver.branch} ({driver.id} builds up to {driver.kernel_max})"
    if driver.kernel_min and series_key(kernel.series) < series_key(driver.kernel_min):
        return f"kernel {kernel.series} too old for branch {driver.branch} ({driver.id} needs {driver.kernel_min}+)"
    return None


def gpu_reason(model, driver: DriverDef, flavour: str, idlists: IdLists) -> Optional[str]:
    """Why this GPU model cannot use (driver, flavour); None when it can. The node's own selection rules decide
    (validator.selection: the driver's ID list wins, open needs Turing+, Blackwell is open-only)."""
    from validator.selection import flavour_allowed

    d = flavour_allowed(model, flavour, driver.version, idlists.get(driver.version))
    return None if d.ok else d.reason


def _expect(cell: Cell, rules: Sequence[Rule]) -> Cell:
    from dataclasses import replace

    for i, r in enumerate(rules):
        if _matches(r, cell.kernel, cell.driver, cell.flavour):
            return replace(cell, expect_fail=r.reason or f"expected_failures[{i}]")
    return cell


def resolve(cfg: MatrixConfig, models: Sequence, idlists: IdLists) -> Plan:
    """The plan: every (kernel, driver, flavour) of the config is either a cell (with the GPUs it serves) or a skip."""
    cells: List[Cell] = []
    skips: List[Skip] = []
    notes: List[str] = []
    for driver in cfg.drivers:
        if idlists.get(driver.version) is None:
            notes.append(f"no nvidia-detect ID list for {driver.version}: GPU support from the catalog's branch range")
    for kernel, driver, flavour in itertools.product(cfg.kernels, cfg.drivers, cfg.flavours):
        def skip(reason: str, details: Iterable[str] = ()) -> None:
            skips.append(Skip(kernel.abi, driver.id, flavour, reason, tuple(details)))

        if flavour not in driver.flavours:
            skip(f"{driver.id} has no {flavour} flavour")
            continue
        excl = next((i for i, r in enumerate(cfg.exclude) if _matches(r, kernel, driver, flavour)), None)
        if excl is not None:
            r = cfg.exclude[excl]
            skip(f"excluded by exclude[{excl}]" + (f": {r.reason}" if r.reason else ""))
            continue
        kr = kernel_reason(kernel, driver)
        if kr:
            skip(kr)
            continue
        served: List[str] = []
        reasons: List[str] = []
        for m in models:
            why = gpu_reason(m, driver, flavour, idlists)
            (reasons if why else served).append(why or m.name)
        incl = next((i for i, r in enumerate(cfg.include) if _matches(r, kernel, driver, flavour)), None)
        if served:
            cells.append(Cell(kernel, driver, flavour, tuple(served)))
        elif incl is not None:
            r = cfg.include[incl]
            cells.append(Cell(kernel, driver, flavour, (), f"included by include[{incl}]" + (f": {r.reason}" if r.reason else "")))
        else:
            skip("no fleet GPU can use it", reasons)
    cells = [_expect(c, cfg.expected_failures) for c in cells]
    uncovered = []
    for kernel in cfg.kernels:
        have = {g for c in cells if c.kernel.abi == kernel.abi for g in c.gpus}
        for m in models:
            if m.name not in have:
                whys = tuple(s for s in (gpu_reason(m, d, f, idlists) or kernel_reason(kernel, d)
                                         for d in cfg.drivers for f in d.flavours if f in cfg.flavours) if s)
                uncovered.append(Uncovered(kernel.abi, m.name, whys))
    return Plan(tuple(cells), tuple(skips), tuple(uncovered), tuple(dict.fromkeys(notes)))
