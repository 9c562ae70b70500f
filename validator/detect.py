"""GPU detection: PCI scan + catalog names + loaded driver + kernel -> what this node should run.

Readers take a root directory (`/` live, a node capture in tests); `analyse` is pure.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from validator.catalog import Catalog, GpuModel
from validator.errors import ConfigError, UserError
from validator.idlists import DriverLists, lists_for_driver
from validator.node import read_bounded
from validator.pci import PciGpu, scan_gpus
from validator.pkgname import kmod_package_name
from validator.selection import (
    FLAVOUR_PREFERENCE, Decision, DriverChoice, R_NO_DRIVER, evaluate_driver, max_cuda, vkey,
)

SCHEMA_VERSION = 1
R_CURRENT_FITS = "current-driver-fits"
_NVRM = re.compile(r"NVRM version:.*?\s(\d{3}\.\d+(?:\.\d+)?)\s")
_VERSION = re.compile(r"^\d{3}\.\d+(?:\.\d+)?$")
_LINUX_VERSION = re.compile(r"^Linux version (\S+)")
_RELEASE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}$")  # what `uname -r` prints


@dataclass(frozen=True)
class LoadedDriver:
    """The NVIDIA kernel driver loaded on the node; version None when none is loaded (or readable)."""

    version: Optional[str] = None
    flavour: Optional[str] = None  # open | proprietary | None (only /sys/module/nvidia/version was readable)
    source: str = ""  # the file it was read from

    @property
    def loaded(self) -> bool:
        return self.version is not None


def _read(root: Path, rel: str) -> Optional[str]:
    try:
        return read_bounded(root / rel, 1 << 20)
    except ConfigError:
        return None


def read_loaded_driver(root: Path) -> LoadedDriver:
    """/proc/driver/nvidia/version (version + 'Open Kernel Module' => open), else /sys/module/nvidia/version."""
    text = _read(root, "proc/driver/nvidia/version")
    if text:
        for line in text.splitlines()[:64]:
            line = line[:4096]  # the real line is ~100 characters: no regex sees a hostile 1 MB one
            m = _NVRM.search(line + " ")
            if m:
                # the flavour only from a line that says which module it is; otherwise unknown, not "proprietary"
                flavour = "open" if "Open Kernel Module" in line else "proprietary" if "Kernel Module" in line else None
                return LoadedDriver(m.group(1), flavour, "/proc/driver/nvidia/version")
    text = _read(root, "sys/module/nvidia/version")
    if text and _VERSION.match(text.strip()):
        return LoadedDriver(text.strip(), None, "/sys/module/nvidia/version")
    return LoadedDriver()


def read_kernel(root: Path) -> Optional[str]:
    """The running kernel release (uname -r): proc/sys/kernel/osrelease, else the 'Linux version' line."""
    text = _read(root, "proc/sys/kernel/osrelease")
    if text and _RELEASE.match(text.strip()):
        return text.strip()
    text = _read(root, "proc/version")
    if text:
        m = _LINUX_VERSION.match(text.strip()[:4096])
        if m and _RELEASE.match(m.group(1)):
            return m.group(1)
    return None  # unreadable, or a release no kernel prints (it would reach apt and modinfo as an argument)


@dataclass(frozen=True)
class DetectedGpu:
    pci: PciGpu
    model: Optional[GpuModel]  # None: an NVIDIA device the catalog does not know (reported, never dropped)

    @property
    def name(self) -> str:
        return self.model.name if self.model else f"unknown NVIDIA device {self.pci.pci_id}"

    def to_dict(self) -> dict:
        m = self.model
        return {
            "address": self.pci.address,
            "pci_id": self.pci.pci_id,
            "subsystem_id": None
            if self.pci.subsystem_device_id is None
            else f"{self.pci.subsystem_vendor_id or 0:04x}:{self.pci.subsystem_device_id:04x}",
            "known": m is not None,
            "name": self.name,
            "family": m.family if m else None,
            "arch": m.arch if m else None,
            "compute_capability": m.compute_capability if m else None,
            "memory_gb": m.memory_gb if m else None,
            "numa_node": self.pci.numa_node,
        }


@dataclass(frozen=True)
class NodePlan:
    """The driver every known GPU of the node can use (newest offered), with a flavour common to all."""

    ok: bool
    driver_version: Optional[str]
    flavour: Optional[str]
    cuda: Optional[str]
    package: Optional[str]
    reason: Decision
    per_model: Tuple[Tuple[str, Tuple[DriverChoice, ...]], ...] = ()

    @property
    def branch(self) -> Optional[int]:
        return None if self.driver_version is None else int(self.driver_version.split(".")[0])

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "driver_version": self.driver_version,
            "branch": self.branch,
            "flavour": self.flavour,
            "cuda": self.cuda,
            "package": self.package,
            "rule": self.reason.rule,
            "reason": self.reason.reason,
            "per_model": {name: [c.to_dict() for c in choices] for name, choices in self.per_model},
        }


@dataclass(frozen=True)
class Offer:
    """One offered driver that fits every known GPU of the node, with the flavours all of them allow."""

    driver_version: str
    flavours: Tuple[str, ...]
    packages: Tuple[str, ...] = ()  # per flavour, when the kernel is known

    def to_dict(self) -> dict:
        return {"driver_version": self.driver_version, "flavours": list(self.flavours),
                "packages": list(self.packages)}


@dataclass(frozen=True)
class Detection:
    root: str
    kernel: Optional[str]
    driver: LoadedDriver
    gpus: Tuple[DetectedGpu, ...]
    plan: Optional[NodePlan]  # None when the node has no known GPU
    driver_check: Tuple[Tuple[str, Decision], ...] = ()  # loaded driver vs each model
    driver_max_cuda: Optional[str] = None
    notes: Tuple[str, ...] = field(default_factory=tuple)
    current_fits: bool = False  # the loaded driver supports every known GPU (and --cuda): keep it, install nothing
    offers: Tuple["Offer", ...] = ()  # what we offer that fits every known GPU, newest first

    @property
    def models(self) -> Tuple[GpuModel, ...]:
        return tuple(dict.fromkeys(g.model for g in self.gpus if g.model is not None))

    def to_dict(self) -> dict:
        counts = Counter(g.name for g in self.gpus)
        return {
            "schema_version": SCHEMA_VERSION,
            "root": self.root,
            "kernel": self.kernel,
            "driver": {
                "loaded": self.driver.loaded,
                "version": self.driver.version,
                "flavour": self.driver.flavour,
                "source": self.driver.source or None,
                "max_cuda": self.driver_max_cuda,
                "supports": {name: d.to_dict() for name, d in self.driver_check},
            },
            "gpu_count": len(self.gpus),
            "gpu_models": dict(counts),
            "gpus": [g.to_dict() for g in self.gpus],
            "current_driver_fits": self.current_fits,
            "recommendation": None if self.plan is None else self.plan.to_dict(),
            "offered": [o.to_dict() for o in self.offers],
            "notes": list(self.notes),
        }


def _per_model(models, ordered, catalog: Catalog, cuda: Optional[str]):
    return tuple((m.name, tuple(evaluate_driver(m, v, lists, catalog, cuda) for v, lists in ordered)) for m in models)


def _fitting(ordered, per_model):
    """(index, version, flavours every model allows) of each offered driver that fits all models, newest first."""
    for i, (version, _) in enumerate(ordered):
        choices = [pm[1][i] for pm in per_model]
        if not all(c.ok for c in choices):
            continue
        common = [f for f in FLAVOUR_PREFERENCE if all(f in c.flavours for c in choices)]
        if common:
            yield i, version, common


def _package(version: str, flavour: str, kernel: Optional[str]) -> Optional[str]:
    if not kernel:
        return None
    try:
        return kmod_package_name(version, flavour, kernel)
    except UserError:
        return None


def offers_for(models, offered, catalog: Catalog, kernel: Optional[str], cuda: Optional[str] = None):
    """Every offered driver that fits all models (newest first), with its flavours and package names."""
    ordered = sorted(offered, key=lambda o: vkey(o[0]), reverse=True)
    per_model = _per_model(models, ordered, catalog, cuda)
    return tuple(Offer(v, tuple(fl), tuple(p for p in (_package(v, f, kernel) for f in fl) if p))
                 for _, v, fl in _fitting(ordered, per_model))


def keep_current(driver: LoadedDriver, dmax: Optional[str], per_model) -> NodePlan:
    """The plan when the loaded driver already supports every GPU: keep it (never a downgrade), install nothing."""
    flav = f" ({driver.flavour} kernel modules)" if driver.flavour else ""
    reason = Decision(True, R_CURRENT_FITS, f"the loaded driver {driver.version}{flav} supports every GPU of this "
                                            f"node: keep it")
    return NodePlan(True, driver.version, driver.flavour, dmax, None, reason, per_model)


def plan_node(
    models: Sequence[GpuModel],
    offered: Sequence[Tuple[str, Optional[DriverLists]]],
    catalog: Catalog,
    kernel: Optional[str],
    cuda: Optional[str] = None,
) -> NodePlan:
    """Newest offered driver whose ID lists carry every model, with a flavour all of them allow (open first)."""
    ordered = sorted(offered, key=lambda o: vkey(o[0]), reverse=True)
    per_model = _per_model(models, ordered, catalog, cuda)
    for i, version, common in _fitting(ordered, per_model):
        flavour = common[0]
        use_cuda = cuda or min((max_cuda(version, catalog, m) or "0.0" for m in models), key=vkey)
        deciding = next(d for fl, d in per_model[0][1][i].flavour_decisions if fl == flavour)
        return NodePlan(True, version, flavour, use_cuda, _package(version, flavour, kernel), deciding, per_model)
    if not ordered:
        return NodePlan(False, None, None, cuda, None, Decision(False, R_NO_DRIVER, "no driver is offered"), per_model)
    # Nothing fits everything: say what blocked the newest driver for the first model it fails.
    for name, choices in per_model:
        if not choices[0].ok:
            d = choices[0].deciding
            versions = ", ".join(v for v, _ in ordered)
            return NodePlan(False, None, None, cuda, None,
                            Decision(False, d.rule, f"no offered driver ({versions}) fits {name}; newest: {d.reason}"), per_model)
    return NodePlan(False, None, None, cuda, None,
                    Decision(False, R_NO_DRIVER, "the GPUs of this node share no driver flavour"), per_model)


def analyse(
    root: str,
    pci: Sequence[PciGpu],
    driver: LoadedDriver,
    kernel: Optional[str],
    catalog: Catalog,
    offered: Sequence[Tuple[str, Optional[DriverLists]]],
    cuda: Optional[str] = None,
) -> Detection:
    """Pure: name the GPUs, judge the loaded driver, plan the driver/flavour/CUDA/package for the node."""
    gpus = tuple(DetectedGpu(p, catalog.by_pci_id(p.device_id)) for p in pci)
    models = tuple(dict.fromkeys(g.model for g in gpus if g.model is not None))
    notes = []
    unknown = sorted({g.pci.pci_id for g in gpus if g.model is None})
    if unknown:
        notes.append(f"unknown NVIDIA device(s) {', '.join(unknown)}: not in the catalog, left out of the plan")
    if not gpus:
        notes.append("no NVIDIA GPU on the PCI bus")
    if kernel is None:
        notes.append("running kernel not readable: no package name")
    checks: List[Tuple[str, Decision]] = []
    dmax = None
    if driver.version:
        lists = lists_for_driver(driver.version)
        for m in models:
            c = evaluate_driver(m, driver.version, lists, catalog, None, driver.flavour)
            checks.append((m.name, c.deciding))
        dmax = max_cuda(driver.version, catalog, models[0] if models else None)
    plan = plan_node(models, offered, catalog, kernel, cuda) if models else None
    fits = bool(models) and bool(checks) and all(d.ok for _, d in checks) and \
        (cuda is None or (dmax is not None and vkey(dmax) >= vkey(cuda)))
    if fits and plan is not None:
        plan = keep_current(driver, dmax, plan.per_model)
    offers = offers_for(models, offered, catalog, kernel, cuda) if models else ()
    return Detection(root, kernel, driver, gpus, plan, tuple(checks), dmax, tuple(notes), fits, offers)


def detect(root: Path, catalog: Catalog, offered, cuda: Optional[str] = None) -> Detection:
    """Read the node under root, then analyse it."""
    root = Path(root)
    return analyse(str(root), scan_gpus(root), read_loaded_driver(root), read_kernel(root), catalog, offered, cuda)
