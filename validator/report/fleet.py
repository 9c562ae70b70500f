"""Merge many hosts' JSON reports into one host x check table (terminal/text/JSON/HTML)."""

from __future__ import annotations

import os
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

from validator import textsafe
from validator.checks.base import worst
from validator.errors import UserError
from validator.report.model import EXIT_FAIL, EXIT_PASS, EXIT_WARN, Report, load_report
from validator.report.render import COLOUR, SYMBOL, _env
from validator.termtext import WIDTH, fit_all


@dataclass(frozen=True)
class Fleet:
    reports: Tuple[Tuple[str, Report], ...]   # (file, report), sorted by host
    errors: Tuple[str, ...]

    @property
    def check_ids(self) -> List[str]:
        ids: Dict[str, None] = {}
        for _, r in self.reports:
            for c in r.results:
                ids.setdefault(c.id, None)
        return list(ids)

    def cell(self, report: Report, check_id: str) -> Tuple[str, str]:
        """Worst status of a check on one host (all its subjects) and the observed text of that worst result."""
        rs = [c for c in report.results if c.id == check_id]
        if not rs:
            return "", ""
        st = worst(c.status for c in rs)
        obs = "; ".join(f"{c.subject + ': ' if c.subject else ''}{c.observed}" for c in rs if c.status == st)
        return st, obs[:400]

    @property
    def duplicate_hosts(self) -> Dict[str, List[str]]:
        """host -> its report files, for every host name that more than one report claims."""
        files: Dict[str, List[str]] = {}
        for f, r in self.reports:
            files.setdefault(r.host, []).append(f)
        return {h: fs for h, fs in files.items() if len(fs) > 1}

    def labels(self) -> List[str]:
        """One column name a report: the host, with its file where two reports claim the same host."""
        dup = self.duplicate_hosts
        return [f"{r.host} ({f})" if r.host in dup else r.host for f, r in self.reports]

    def map_text(self, fn) -> "Fleet":
        """A copy with fn applied to every string (for a terminal)."""
        return Fleet(tuple((fn(f), r.map_text(fn)) for f, r in self.reports), tuple(fn(e) for e in self.errors))

    @property
    def exit_code(self) -> int:
        st = {r.status for _, r in self.reports}
        if "fail" in st or self.errors:
            return EXIT_FAIL
        return EXIT_WARN if "warn" in st else EXIT_PASS

    def to_dict(self) -> dict:
        return {
            "schema_version": 1,
            "hosts": [{"host": r.host, "file": f, "status": r.status, "summary": r.summary, "level": r.level}
                      for f, r in self.reports],
            "checks": {cid: {label: self.cell(r, cid)[0] or None for label, (_, r) in zip(self.labels(), self.reports)}
                       for cid in self.check_ids},
            "errors": list(self.errors),
            "duplicate_hosts": self.duplicate_hosts,
        }


def _json_files(d: Path, errors: list):
    """*.json files under d, symlinked folders not followed (no loops); an unreadable folder is listed in errors."""
    def unreadable(e: OSError) -> None:
        errors.append(f"{e.filename}: cannot list: {e.strerror or e}")

    for root, dirs, files in os.walk(d, onerror=unreadable):
        dirs.sort()
        yield from (Path(root) / f for f in sorted(files) if f.endswith(".json"))


def load_fleet(directory) -> Fleet:
    """Every *.json report under directory (recursively); unreadable files are listed, not fatal."""
    d = Path(directory)
    if not d.is_dir():
        raise UserError(f"{d}: not a directory of JSON reports")
    reports, errors = [], []
    for p in _json_files(d, errors):
        try:
            reports.append((str(p.relative_to(d)), load_report(p)))
        except UserError as e:  # corrupt, another tool's JSON, a FIFO, ...: listed with why, the rest still shown
            msg = str(e).splitlines()[0]
            errors.append(msg if msg.startswith(str(p)) else f"{p}: {msg}")
    if not reports and not errors:
        raise UserError(f"{d}: no *.json reports found", hint="collect `gpu-validate run --format json -o HOST.json` files")
    reports.sort(key=lambda fr: (fr[1].host, fr[0]))
    return Fleet(tuple(reports), tuple(errors))


FLEET_FORMATS = ("text", "json", "html")
PROBLEMS = ("fail", "warn")


def _shown(fleet: Fleet, problems: bool):
    """(label, file, report) of each host a human view shows: all, or with --problems those that warn or fail."""
    rows = [(label, f, r) for label, (f, r) in zip(fleet.labels(), fleet.reports)]
    return [x for x in rows if x[2].status in PROBLEMS] if problems else rows


def render_fleet_text(fleet: Fleet, symbols=SYMBOL, problems: bool = False) -> str:
    fleet = fleet.map_text(textsafe.term)  # host names and file names from the reports reach a terminal
    shown = _shown(fleet, problems)
    hosts = [label for label, _, _ in shown]
    width = max([len(c) for c in fleet.check_ids] + [7])
    hw = min(max([len(h) for h in hosts] + [4]), 80)
    lines = [f" #  {'host':<{hw}}  status  pass warn fail skip"]
    for i, (label, _f, r) in enumerate(shown):
        s = r.summary
        lines.append(f"{i:>2}  {label[:hw]:<{hw}}  {symbols[r.status]} {r.status:<4}  "
                     f"{s['pass']:>4} {s['warn']:>4} {s['fail']:>4} {s['skip']:>4}")
    rows = []
    for cid in fleet.check_ids:
        cells = [fleet.cell(r, cid)[0] for _, _, r in shown]
        quiet = all(c in ("pass", "skip", "") for c in cells)
        if quiet and (len(hosts) > 1 or problems):
            continue  # the table shows what differs or is wrong; all-green rows are summarised below
        rows.append((cid, cells))
    per_block = max(1, (WIDTH - width - 2) // 3)  # host columns that fit in 120 characters
    for start in range(0, len(hosts), per_block) if rows else ():
        block = range(start, min(start + per_block, len(hosts)))
        lines += ["", f"{'check':<{width}}  " + " ".join(f"{i:>2}" for i in block) + "  <- host #"]
        for cid, cells in rows:
            lines.append(f"{cid:<{width}}  " + " ".join(f"{symbols[cells[i]] if cells[i] else ' ':>2}" for i in block))
    ok_rows = sum(all(fleet.cell(r, cid)[0] in ("pass", "skip", "") for _, r in fleet.reports) for cid in fleet.check_ids)
    if len(fleet.reports) > 1:
        lines.append(f"({ok_rows} checks pass or skip on every host)")
    if problems and not shown:
        lines.append("no host warns or fails")
    for e in fleet.errors:
        lines.append(f"unreadable: {e}")
    for h, files in fleet.duplicate_hosts.items():
        lines.append(f"duplicate host: {h} has {len(files)} reports ({', '.join(files)}); each is shown as its own column")
    c = Counter(r.status for _, r in fleet.reports)
    lines.append(f"{len(fleet.reports)} hosts: {c.get('pass', 0)} pass, {c.get('warn', 0)} warn, {c.get('fail', 0)} fail"
                 + (f", {len(fleet.errors)} unreadable reports" if fleet.errors else ""))
    return "\n".join(fit_all(lines)) + "\n"


def render_fleet_html(fleet: Fleet, problems: bool = False) -> str:
    shown = _shown(fleet, problems)
    hosts = [{"host": label, "file": f, "status": r.status,
              "summary": ", ".join(f"{v} {k}" for k, v in r.summary.items())} for label, f, r in shown]
    rows = []
    for cid in fleet.check_ids:
        cells = [dict(zip(("status", "observed"), fleet.cell(r, cid))) for _, _, r in shown]
        if problems and not any(c["status"] in PROBLEMS for c in cells):
            continue
        rows.append({"id": cid, "cells": cells})
    totals = Counter(r.status for _, r in fleet.reports)
    n = max(1, len(fleet.reports))
    bar, x = [], 0.0
    for st in ("fail", "warn", "pass"):
        if totals.get(st):
            w = 100.0 * totals[st] / n
            bar.append({"x": x, "w": w, "n": totals[st], "status": st, "colour": COLOUR[st]})
            x += w
    return _env().get_template("fleet.html.j2").render(hosts=hosts, rows=rows, totals=dict(totals), host_bar=bar,
                                                       errors=fleet.errors, duplicates=fleet.duplicate_hosts,
                                                       colour=COLOUR, symbol=SYMBOL)


def render_fleet(fleet: Fleet, fmt: str, problems: bool = False) -> str:
    """text / json / html; `problems` keeps the hosts and checks that warn or fail (text, html; JSON stays whole)."""
    if fmt == "html":
        return render_fleet_html(fleet, problems)
    if fmt == "json":
        return json.dumps(fleet.to_dict(), indent=2) + "\n"
    return render_fleet_text(fleet, problems=problems)
