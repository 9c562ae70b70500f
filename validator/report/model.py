"""The report of one validation run: plain data, JSON with schema_version, exit status decided here."""

from __future__ import annotations

import functools
import json
import math
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from validator import userfile
from validator.checks.base import GROUPS, LEVELS, STATUSES, CheckResult, Metric, worst
from validator.errors import UserError
from validator.schema import Reader

SCHEMA_VERSION = 1
_REPORT_TEXT = ("host", "level", "started", "root", "profile", "profile_sha256", "expect", "driver_version",
                "cuda_version", "tool_version")
_RESULT_TEXT = ("id", "group", "level", "status", "title", "observed", "expected", "remedy", "subject")
EXIT_PASS, EXIT_FAIL, EXIT_USAGE, EXIT_WARN = 0, 1, 2, 3


def exit_code_for(results: Sequence[CheckResult]) -> int:
    """0 all pass (skips allowed), 1 any fail, 3 warnings only."""
    st = {r.status for r in results}
    return EXIT_FAIL if "fail" in st else EXIT_WARN if "warn" in st else EXIT_PASS


@dataclass(frozen=True)
class Report:
    host: str
    level: str
    results: Tuple[CheckResult, ...]
    started: str = ""                 # ISO 8601 UTC
    duration_s: float = 0.0
    root: str = "/"
    live: bool = True
    profile: str = ""
    profile_sha256: str = ""         # of the profile's JSON form: which settings this node was judged against
    expect: str = ""
    driver_version: str = ""
    cuda_version: str = ""
    gpus: Tuple[dict, ...] = ()       # index, bus_id, name, uuid, memory_total_mib
    tool_version: str = ""
    bios_checklist: Tuple[str, ...] = ()
    # Measurements behind the results, for pictures: "bench" (suite runs with NCCL sweeps, burn telemetry series,
    # P2P figures; the topology). Free-form JSON, absent from older reports.
    data: Mapping = field(default_factory=dict)

    @property
    def summary(self) -> Dict[str, int]:
        c = Counter(r.status for r in self.results)
        return {s: c.get(s, 0) for s in STATUSES}

    @property
    def status(self) -> str:
        return {EXIT_FAIL: "fail", EXIT_WARN: "warn"}.get(exit_code_for(self.results), "pass")

    @property
    def exit_code(self) -> int:
        return exit_code_for(self.results)

    def groups(self) -> Dict[str, List[CheckResult]]:
        out: Dict[str, List[CheckResult]] = {g: [] for g in GROUPS}
        for r in self.results:
            out.setdefault(r.group, []).append(r)
        return out

    def group_status(self) -> Dict[str, str]:
        return {g: worst(r.status for r in rs) for g, rs in self.groups().items()}

    def to_dict(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "tool": "gpu-validate",
            "tool_version": self.tool_version,
            "host": self.host,
            "level": self.level,
            "started": self.started,
            "duration_s": round(self.duration_s, 4),
            "root": self.root,
            "live": self.live,
            "profile": self.profile,
            "profile_sha256": self.profile_sha256,
            "expect": self.expect,
            "driver_version": self.driver_version,
            "cuda_version": self.cuda_version,
            "gpus": list(self.gpus),
            "status": self.status,
            "exit_code": self.exit_code,
            "summary": self.summary,
            "groups": self.group_status(),
            "bios_checklist": list(self.bios_checklist),
            "results": [r.to_dict() for r in self.results],
            "data": dict(self.data),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def map_text(self, fn: Callable[[str], str]) -> "Report":
        """A copy with fn applied to every string (node-given text made safe for a terminal or for XML)."""
        def res(c: CheckResult) -> CheckResult:
            m = c.metric and replace(c.metric, name=fn(c.metric.name), unit=fn(c.metric.unit))
            return replace(c, **{k: fn(getattr(c, k)) for k in _RESULT_TEXT}, metric=m)

        return replace(
            self, results=tuple(res(c) for c in self.results), bios_checklist=tuple(fn(b) for b in self.bios_checklist),
            gpus=tuple({fn(str(k)): fn(v) if isinstance(v, str) else v for k, v in g.items()} for g in self.gpus),
            **{k: fn(getattr(self, k)) for k in _REPORT_TEXT},
        )

    @classmethod
    def from_dict(cls, d: Any, source: str = "<report>") -> "Report":
        """Schema-check a report's JSON form: wrong types, another tool's JSON, a list: ConfigError naming the field."""
        r = Reader(source, d)
        if not isinstance(d, Mapping):
            raise r.fail("a gpu-validate JSON report (a JSON object)", type(d).__name__)
        tool = d.get("tool", "gpu-validate")
        if tool != "gpu-validate":
            raise r.fail("a gpu-validate JSON report", f"tool {tool!r}", key="tool")
        sv = d.get("schema_version")
        if sv != SCHEMA_VERSION or isinstance(sv, bool):
            raise UserError(f"{source}: schema_version {sv!r}, expected {SCHEMA_VERSION}",
                            hint="a report written by `gpu-validate run --format json` of this version")
        level = _opt_str(r, "level", "quick")
        if level not in LEVELS:
            raise r.key("level").fail(f"one of {', '.join(LEVELS)}", level)
        return cls(
            host=_text(r.key("host")), level=level,
            results=tuple(_result(x) for x in r.key("results").list()),
            started=_opt_str(r, "started"), duration_s=_finite(r.key("duration_s", 0.0), lo=0.0),
            root=_opt_str(r, "root", "/"), live=_bool(r.key("live", True)), profile=_opt_str(r, "profile"),
            profile_sha256=_opt_str(r, "profile_sha256"), expect=_opt_str(r, "expect"),
            driver_version=_opt_str(r, "driver_version"), cuda_version=_opt_str(r, "cuda_version"),
            gpus=tuple(_gpu(g) for g in _opt_list(r, "gpus")), tool_version=_opt_str(r, "tool_version"),
            bios_checklist=tuple(_text(x, nonempty=False) for x in _opt_list(r, "bios_checklist")),
            data=_data(r.key("data", None)),
        )


# ---- the report's JSON schema (each reader names the field and what it expected) ----------------------------

_MAX_TEXT = 100_000  # a check's observed text is a line or a few; a megabyte of it is not a report


def _text(r: Reader, nonempty: bool = True) -> str:
    v = r.str(nonempty=nonempty)
    if len(v) > _MAX_TEXT:
        raise r.fail(f"a string of at most {_MAX_TEXT} characters", f"{len(v)} characters")
    return v


def _opt_str(r: Reader, key: str, default: str = "") -> str:
    v = r.key(key, None)
    return default if v.value is None else _text(v, nonempty=False)


def _opt_list(r: Reader, key: str) -> Iterator[Reader]:
    v = r.key(key, None)
    return iter(()) if v.value is None else v.list()


def _bool(r: Reader) -> bool:
    if not isinstance(r.value, bool):
        raise r.fail("true or false", r.value)
    return r.value


def _finite(r: Reader, lo: Optional[float] = None) -> float:
    v = r.number(lo=lo)
    if not math.isfinite(v):
        raise r.fail("a finite number", r.value)
    return v


_RESULT_KEYS = {"id", "group", "level", "status", "title", "observed", "expected", "remedy", "subject", "metric",
                "duration_ms"}
_METRIC_KEYS = {"name", "value", "expected", "unit", "higher_is_better"}
_GPU_SCALARS = (str, int, float, bool, type(None))


def _result(r: Reader) -> CheckResult:
    r.mapping(allowed=_RESULT_KEYS)
    cid = _text(r.key("id"))
    m = r.key("metric", None)
    metric = None
    if m.value is not None:
        m.mapping(allowed=_METRIC_KEYS)
        metric = Metric(name=_text(m.key("name")), value=_finite(m.key("value")), expected=_finite(m.key("expected")),
                        unit=_opt_str(m, "unit"), higher_is_better=_bool(m.key("higher_is_better", True)))
    return CheckResult(
        id=cid, group=_opt_str(r, "group", cid.split(".")[0]), level=_opt_str(r, "level", "quick"),
        status=r.key("status").str(choices=STATUSES), title=_opt_str(r, "title", cid),
        observed=_opt_str(r, "observed"), expected=_opt_str(r, "expected"), remedy=_opt_str(r, "remedy"),
        subject=_opt_str(r, "subject"), metric=metric, duration_ms=_finite(r.key("duration_ms", 0.0), lo=0.0),
    )


def _data(r: Reader) -> dict:
    """The measurements section: a JSON object (drawn in HTML, escaped there); absent in older reports."""
    if r.value is None:
        return {}
    r.mapping()
    return dict(r.value)


@functools.lru_cache(maxsize=1)
def _gpu_types() -> Dict[str, str]:
    """What each per-GPU key holds: the GpuInfo reading of the same name (str, int, float, bool), plus the
    catalog model name and the NVLink link count the runner adds."""
    import typing

    from validator.nvsmi import GpuInfo
    out = {"model": "str", "nvlink_active": "int"}
    for name, hint in typing.get_type_hints(GpuInfo).items():
        args = [a for a in getattr(hint, "__args__", (hint,)) if a is not type(None)]
        if len(args) == 1 and args[0] in (str, int, float, bool):
            out[name] = args[0].__name__
    return out


_GPU_KINDS = {"str": "a string or null", "int": "an integer or null", "float": "a finite number or null",
              "bool": "true, false or null"}


def _gpu_value_ok(kind: Optional[str], v: Any) -> bool:
    if v is None:
        return True
    if kind == "str":
        return isinstance(v, str) and len(v) <= 1000
    if kind == "bool":
        return isinstance(v, bool)
    if kind in ("int", "float"):
        return not isinstance(v, bool) and (isinstance(v, int) if kind == "int" else isinstance(v, (int, float))) \
            and math.isfinite(v) and abs(v) < 1e15
    return isinstance(v, _GPU_SCALARS) and not (isinstance(v, str) and len(v) > 1000)  # a key newer than this reader


def _gpu(r: Reader) -> dict:
    r.mapping()
    kinds = _gpu_types()
    out = {}
    for k, v in r.items():
        if not _gpu_value_ok(kinds.get(k), v.value):
            raise v.fail(_GPU_KINDS.get(kinds.get(k, ""), "a number, a short string or null"),
                         type(v.value).__name__ if isinstance(v.value, (dict, list)) else v.value)
        out[k] = v.value
    return out


def load_report(path: Union[str, Path]) -> Report:
    """Read a saved JSON report; UserError (exit 2) naming the file on anything unreadable."""
    path = Path(path)
    return Report.from_dict(userfile.load_json(path, "saved report (JSON)"), str(path))
