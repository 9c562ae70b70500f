"""The check contract: metadata + one function from what was read to outcomes; the registry and its extension point."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Iterable, List, Optional, Sequence, Union

STATUSES = ("pass", "warn", "fail", "skip")
GROUPS = ("cpu", "numa", "iommu", "pcie", "gpu", "memory", "kernel", "container")
LEVELS = ("quick", "standard", "full")
# Worst first: a group's status is the worst of its checks (skip never hides a pass/warn/fail).
SEVERITY = {"fail": 3, "warn": 2, "pass": 1, "skip": 0}


class Unavailable(Exception):
    """A fact a check needs could not be read (tool missing, file absent, not captured): the check is `skip`."""


class ReadingFailed(Unavailable):
    """A reading that must exist broke: the tool ran and failed or printed garbage while the hardware it
    describes is there (nvidia-smi exit 9 with GPUs on the PCI bus). A check that needs it fails; code that
    can do without it (a fallback to sysfs) catches it as Unavailable."""


@dataclass(frozen=True)
class Metric:
    """A measured figure against what was expected, drawn as a bar in HTML and exported to Prometheus."""

    name: str
    value: float
    expected: float
    unit: str = ""
    higher_is_better: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Outcome:
    """What a check function returns; the runner adds the check's metadata."""

    status: str
    observed: str = ""
    expected: str = ""
    remedy: str = ""
    subject: str = ""          # e.g. "GPU0 0000:00:06.0" when one check yields a result per GPU
    metric: Optional[Metric] = None


def ok(observed: str, expected: str = "", **kw) -> Outcome:
    return Outcome("pass", observed, expected, **kw)


def warn(observed: str, expected: str = "", remedy: str = "", **kw) -> Outcome:
    return Outcome("warn", observed, expected, remedy, **kw)


def fail(observed: str, expected: str = "", remedy: str = "", **kw) -> Outcome:
    return Outcome("fail", observed, expected, remedy, **kw)


def skip(reason: str, expected: str = "", **kw) -> Outcome:
    return Outcome("skip", reason, expected, **kw)


def bad(status: str, observed: str, expected: str = "", remedy: str = "", **kw) -> Outcome:
    """A warn or fail chosen at run time (the profile's `enforce`)."""
    return Outcome(status, observed, expected, remedy, **kw)


CheckFn = Callable[..., Union[Outcome, Sequence[Outcome]]]


@dataclass(frozen=True)
class CheckSpec:
    id: str          # "<group>.<name>", stable: reports, tests and dashboards key on it
    group: str
    level: str
    title: str
    func: CheckFn
    remedy: str = ""  # default remedy when an outcome gives none

    def __post_init__(self):
        if self.group not in GROUPS:
            raise ValueError(f"check {self.id}: group {self.group!r} not in {GROUPS}")
        if self.level not in LEVELS:
            raise ValueError(f"check {self.id}: level {self.level!r} not in {LEVELS}")
        if not self.id.startswith(self.group + "."):
            raise ValueError(f"check {self.id}: id must start with its group '{self.group}.'")


@dataclass(frozen=True)
class CheckResult:
    id: str
    group: str
    level: str
    status: str
    title: str
    observed: str = ""
    expected: str = ""
    remedy: str = ""
    subject: str = ""
    metric: Optional[Metric] = None
    duration_ms: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["metric"] = self.metric.to_dict() if self.metric else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CheckResult":
        m = d.get("metric")
        return cls(
            id=str(d["id"]), group=str(d.get("group", "")), level=str(d.get("level", "quick")),
            status=str(d["status"]), title=str(d.get("title", d["id"])), observed=str(d.get("observed", "")),
            expected=str(d.get("expected", "")), remedy=str(d.get("remedy", "")), subject=str(d.get("subject", "")),
            metric=Metric(**m) if isinstance(m, dict) else None, duration_ms=float(d.get("duration_ms", 0.0)),
        )

    @property
    def key(self) -> str:
        return f"{self.id}[{self.subject}]" if self.subject else self.id


# ---- registry ----------------------------------------------------------------------------------

REGISTRY: List[CheckSpec] = []
# Extension point: callables returning more CheckSpecs (the benchmark suite adds its full-level checks here).
PROVIDERS: List[Callable[[], Iterable[CheckSpec]]] = []
# Modules imported at the full level so they can register themselves (missing module = no extra checks).
FULL_LEVEL_MODULES: List[str] = ["validator.bench.checks"]


def check(id: str, group: str, level: str, title: str, remedy: str = ""):
    """Decorator: register a check function under its fixed metadata (validated at import)."""

    def deco(fn: CheckFn) -> CheckFn:
        spec = CheckSpec(id, group, level, title, fn, remedy)
        if any(s.id == id for s in REGISTRY):
            raise ValueError(f"check id {id} registered twice")
        REGISTRY.append(spec)
        return fn

    return deco


def add_provider(fn: Callable[[], Iterable[CheckSpec]]) -> None:
    """Register a provider of extra checks (e.g. validator.bench at level full)."""
    if fn not in PROVIDERS:
        PROVIDERS.append(fn)


def level_includes(run_level: str, check_level: str) -> bool:
    return LEVELS.index(check_level) <= LEVELS.index(run_level)


def worst(statuses: Iterable[str]) -> str:
    st = list(statuses)
    return max(st, key=lambda s: SEVERITY.get(s, 0)) if st else "skip"
