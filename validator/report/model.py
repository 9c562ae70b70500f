"""The report of one validation run: plain data, JSON with schema_version, exit status decided here."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

from validator import userfile
from validator.checks.base import GROUPS, STATUSES, CheckResult, worst
from validator.errors import UserError

SCHEMA_VERSION = 1
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
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, d: dict, source: str = "<report>") -> "Report":
        if not isinstance(d, dict):
            raise UserError(f"{source}: not a gpu-validate JSON report (top level is {type(d).__name__})")
        sv = d.get("schema_version")
        if sv != SCHEMA_VERSION:
            raise UserError(f"{source}: schema_version {sv!r}, expected {SCHEMA_VERSION}",
                            hint="re-run `gpu-validate run --format json` with this version")
        try:
            results = tuple(CheckResult.from_dict(r) for r in d.get("results") or [])
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"{source}: results: malformed entry ({type(e).__name__}: {e})") from None
        for r in results:
            if r.status not in STATUSES:
                raise UserError(f"{source}: results[{r.id}].status: expected one of {', '.join(STATUSES)}, got {r.status!r}")
        return cls(
            host=str(d.get("host", "?")), level=str(d.get("level", "quick")), results=results,
            started=str(d.get("started", "")), duration_s=float(d.get("duration_s") or 0.0), root=str(d.get("root", "/")),
            live=bool(d.get("live", True)), profile=str(d.get("profile", "")),
            profile_sha256=str(d.get("profile_sha256", "") or ""), expect=str(d.get("expect", "") or ""),
            driver_version=str(d.get("driver_version", "") or ""), cuda_version=str(d.get("cuda_version", "") or ""),
            gpus=tuple(g for g in d.get("gpus") or [] if isinstance(g, dict)), tool_version=str(d.get("tool_version", "")),
            bios_checklist=tuple(str(x) for x in d.get("bios_checklist") or []),
        )


def load_report(path: Union[str, Path]) -> Report:
    """Read a saved JSON report; UserError (exit 2) naming the file on anything unreadable."""
    path = Path(path)
    return Report.from_dict(userfile.load_json(path, "saved report (JSON)"), str(path))
