"""Render a Report: coloured terminal, text, JSON, HTML (self-contained, inline SVG), JUnit XML, Prometheus textfile."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence
from xml.sax.saxutils import escape as xml_escape, quoteattr

import textwrap

from validator import textsafe
from validator.checks.base import CheckResult, worst
from validator.report.model import Report
from validator.termtext import WIDTH, fit, fit_all

FORMATS = ("term", "text", "json", "html", "junit", "prom")
SYMBOL = {"pass": "✓", "warn": "⚠", "fail": "✗", "skip": "-"}
ASCII_SYMBOL = {"pass": "+", "warn": "!", "fail": "x", "skip": "-"}
ANSI = {"pass": "\033[32m", "warn": "\033[33m", "fail": "\033[31m", "skip": "\033[2m", "bold": "\033[1m", "end": "\033[0m"}
COLOUR = {"pass": "#2e9d4a", "warn": "#e0a400", "fail": "#d33a2c", "skip": "#a0a4a8"}
TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
_SAFE_TEXT = {"term": textsafe.term, "text": textsafe.term, "junit": textsafe.xml, "prom": textsafe.term}


def want_colour(stream=None) -> bool:
    """Colour only on a TTY, and never with NO_COLOR set (no-color.org)."""
    stream = stream or sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)()) and "NO_COLOR" not in os.environ and \
        os.environ.get("TERM") != "dumb"


def _symbols(stream=None) -> Dict[str, str]:
    enc = (getattr(stream or sys.stdout, "encoding", None) or "ascii").lower()
    try:
        "✓⚠✗".encode(enc)
        return SYMBOL
    except (UnicodeEncodeError, LookupError):
        return ASCII_SYMBOL


def summary_line(report: Report) -> str:
    s = report.summary
    return (f"{report.status.upper()}: {s['pass']} passed, {s['warn']} warnings, {s['fail']} failed, "
            f"{s['skip']} skipped ({len(report.results)} checks, level {report.level}, {report.duration_s:.2f} s)")


PROBLEMS = ("fail", "warn")


def shown_groups(report: Report, problems: bool = False) -> Dict[str, List[CheckResult]]:
    """Results by group as a human view shows them: every one, or with --problems only warn/fail."""
    groups = report.groups()
    if problems:
        groups = {g: [r for r in rs if r.status in PROBLEMS] for g, rs in groups.items()}
    return groups


def _name(r: CheckResult) -> str:
    return r.id + (f" [{r.subject}]" if r.subject else "")


def render_term(report: Report, colour: bool = False, verbose: bool = False, symbols: Optional[Dict[str, str]] = None,
                problems: bool = False) -> str:
    """One line a check, grouped, summary last; remedies under warn/fail lines; colour only when asked; every line
    within 120 columns (long text wraps under itself)."""
    sym = symbols or SYMBOL
    c = (lambda k: ANSI[k]) if colour else (lambda k: "")
    head = fit(f"gpu-validate {report.level} on {report.host}  driver {report.driver_version or '?'}  "
               f"CUDA {report.cuda_version or '?'}  profile {report.profile or '?'}"
               + (f"  expect {report.expect}" if report.expect else ""))
    lines = [f"{c('bold')}{h}{c('end')}" for h in head]
    groups = shown_groups(report, problems)
    shown = [r for rs in groups.values() for r in rs]
    name_w = min(max((len(_name(r)) for r in shown), default=20), 44)
    indent = 2 + 1 + 1 + 4 + 1 + name_w + 2
    for group, rs in report.groups().items():
        if not rs or not groups[group]:
            continue
        gs = worst(r.status for r in rs)  # a group's status is of all its results, also under --problems
        lines.append(f"{c('bold')}{group}{c('end')} {c(gs)}{sym[gs]}{c('end')}")
        for r in groups[group]:
            exp = f"  (expected {r.expected})" if r.expected and (verbose or r.status in PROBLEMS) else ""
            text = textwrap.wrap(r.observed + exp, WIDTH - indent, break_on_hyphens=False) or [""]
            name = _name(r)
            if len(name) > name_w:  # a long name gets its own line, the text starts under the others'
                lines.append(f"  {c(r.status)}{sym[r.status]} {r.status:<4}{c('end')} {name}")
                lines += [" " * indent + t for t in text]
            else:
                lines.append(f"  {c(r.status)}{sym[r.status]} {r.status:<4}{c('end')} {name:<{name_w}}  {text[0]}")
                lines += [" " * indent + t for t in text[1:]]
            if r.remedy and r.status in PROBLEMS:
                lines += [" " * indent + t for t in textwrap.wrap("-> " + r.remedy, WIDTH - indent,
                                                                  break_on_hyphens=False)]
    if problems and not shown:
        lines.append("no warnings or failures")
    lines.append(f"{c('bold')}{c(report.status)}{summary_line(report)}{c('end')}")
    return "\n".join(lines) + "\n"


def render_text(report: Report, problems: bool = False) -> str:
    """Readable plain text: every check with observed/expected/remedy, the BIOS checklist, summary last."""
    head = fit_all([f"gpu-validate report: host {report.host}, level {report.level}, started {report.started or '?'}",
                    f"root {report.root} ({'live node' if report.live else 'snapshot'}), profile {report.profile or '?'}, "
                    f"expect {report.expect or '-'}",
                    f"driver {report.driver_version or '?'}, CUDA {report.cuda_version or '?'}, GPUs: " +
                    (", ".join(f"{g.get('index')}:{g.get('name')} {g.get('bus_id')}" for g in report.gpus)
                     or "none reported")]) + [""]
    body = render_term(report, colour=False, verbose=True, symbols=ASCII_SYMBOL, problems=problems).splitlines()
    body = body[len(fit(body[0])):-1] if body else []
    body = [line for line in body if not line.startswith("gpu-validate ")]
    tail = [""]
    if report.bios_checklist:
        tail += ["BIOS checklist (cannot be checked from the OS):"] + \
            fit_all(f"  [ ] {b}" for b in report.bios_checklist) + [""]
    tail.append(summary_line(report))
    return "\n".join(head + body + tail) + "\n"


def render_json(report: Report) -> str:
    return report.to_json()


# ---- JUnit --------------------------------------------------------------------------------------

def render_junit(report: Report) -> str:
    """One testsuite a group, one testcase a check result. A warning is a <failure type="warning"> (message
    'WARN: ...'): CI shows it and counts it, as `run` exits 3 on warnings; a fail is type="fail"; skip is <skipped>."""
    out = ['<?xml version="1.0" encoding="UTF-8"?>']
    s = report.summary
    out.append(f'<testsuites name={quoteattr("gpu-validate " + report.host)} tests="{len(report.results)}" '
               f'failures="{s["fail"] + s["warn"]}" skipped="{s["skip"]}" time="{report.duration_s:.3f}">')
    for group, rs in report.groups().items():
        if not rs:
            continue
        f = sum(r.status in PROBLEMS for r in rs)
        sk = sum(r.status == "skip" for r in rs)
        t = sum(r.duration_ms for r in rs) / 1000.0
        out.append(f'  <testsuite name={quoteattr("gpu-validate." + group)} tests="{len(rs)}" failures="{f}" '
                   f'errors="0" skipped="{sk}" time="{t:.3f}" hostname={quoteattr(report.host)}>')
        for r in rs:
            name = r.id + (f"[{r.subject}]" if r.subject else "")
            out.append(f'    <testcase classname={quoteattr("gpu-validate." + group)} name={quoteattr(name)} '
                       f'time="{r.duration_ms / 1000.0:.4f}">')
            detail = f"observed: {r.observed}\nexpected: {r.expected}\nremedy: {r.remedy}"
            if r.status == "fail":
                out.append(f'      <failure message={quoteattr(r.observed[:500])} type="fail">{xml_escape(detail)}</failure>')
            elif r.status == "warn":
                out.append(f'      <failure message={quoteattr(("WARN: " + r.observed)[:500])} type="warning">'
                           f'{xml_escape("WARN " + detail)}</failure>')
                out.append(f'      <system-out>{xml_escape("WARN " + detail)}</system-out>')
            elif r.status == "skip":
                out.append(f'      <skipped message={quoteattr(r.observed[:500])}/>')
            out.append("    </testcase>")
        out.append("  </testsuite>")
    out.append("</testsuites>")
    return "\n".join(out) + "\n"


# ---- Prometheus textfile -----------------------------------------------------------------------

def _lv(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**kw) -> str:
    return "{" + ",".join(f'{k}="{_lv(v)}"' for k, v in kw.items()) + "}"


STATUS_VALUE = {"pass": 0, "warn": 1, "fail": 2, "skip": -1}
# A figure's unit -> (metric name suffix in Prometheus base units, factor to that unit).
PROM_UNITS = {"GB/s": ("bytes_per_second", 1e9), "C": ("celsius", 1.0), "W": ("watts", 1.0),
              "TFLOP/s": ("flop_per_second", 1e12), "tokens/s": ("tokens_per_second", 1.0),
              "fraction": ("ratio", 1.0), "lanes": ("lanes", 1.0), "elements": ("elements", 1.0),
              "MHz": ("hertz", 1e6), "s": ("seconds", 1.0)}


def _prom_unit(unit: str):
    if unit in PROM_UNITS:
        return PROM_UNITS[unit]
    clean = "".join(ch if ch.isalnum() else "_" for ch in unit.lower()).strip("_")
    return (clean or "value"), 1.0


def _epoch(iso: str) -> Optional[float]:
    import datetime
    try:
        t = datetime.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.timezone.utc)
    return t.timestamp()


def render_prom(report: Report) -> str:
    """node_exporter textfile collector format (write it atomically into the collector's folder). Statuses:
    0 pass, 1 warn, 2 fail, -1 skip; figures in base units with the unit in the metric name."""
    L: List[str] = []
    h = report.host
    L += ["# HELP gpuforge_validation_status Overall result of the last run: 0 pass, 1 warn, 2 fail.",
          "# TYPE gpuforge_validation_status gauge",
          f"gpuforge_validation_status{_labels(host=h, level=report.level)} {STATUS_VALUE[report.status]}",
          "# HELP gpuforge_validation_checks Number of check results by status (pass, warn, fail, skip).",
          "# TYPE gpuforge_validation_checks gauge"]
    for st, n in report.summary.items():
        L.append(f"gpuforge_validation_checks{_labels(host=h, level=report.level, status=st)} {n}")
    L += ["# HELP gpuforge_validation_duration_seconds Wall time of the last run.",
          "# TYPE gpuforge_validation_duration_seconds gauge",
          f"gpuforge_validation_duration_seconds{_labels(host=h, level=report.level)} {report.duration_s:.4f}"]
    started = _epoch(report.started)
    if started is not None:
        L += ["# HELP gpuforge_validation_last_run_timestamp_seconds When the last run ended (Unix time): alert "
              "when it is too old.",
              "# TYPE gpuforge_validation_last_run_timestamp_seconds gauge",
              f"gpuforge_validation_last_run_timestamp_seconds{_labels(host=h, level=report.level)} "
              f"{started + report.duration_s:.3f}"]
    L += ["# HELP gpuforge_check_status Status of one check result: 0 pass, 1 warn, 2 fail, -1 skip.",
          "# TYPE gpuforge_check_status gauge"]
    for r in report.results:
        L.append(f"gpuforge_check_status{_labels(host=h, check=r.id, group=r.group, subject=r.subject)} "
                 f"{STATUS_VALUE[r.status]}")
    families: Dict[str, List[str]] = {}
    for r in report.results:
        if not r.metric:
            continue
        suffix, factor = _prom_unit(r.metric.unit)
        lab = _labels(host=h, check=r.id, subject=r.subject, name=r.metric.name)
        families.setdefault(suffix, []).extend([
            f"gpuforge_check_measured_{suffix}{lab} {r.metric.value * factor:g}",
            f"gpuforge_check_expected_{suffix}{lab} {r.metric.expected * factor:g}"])
    for suffix, lines in families.items():
        for kind, what in (("measured", "A figure a check measured"), ("expected", "What that figure was expected to be")):
            L += [f"# HELP gpuforge_check_{kind}_{suffix} {what}, in {suffix.replace('_', ' ')}.",
                  f"# TYPE gpuforge_check_{kind}_{suffix} gauge"]
            L += [ln for ln in lines if ln.startswith(f"gpuforge_check_{kind}_{suffix}{{")]
    return "\n".join(L) + "\n"


# ---- HTML --------------------------------------------------------------------------------------

def _env():
    import jinja2
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                              trim_blocks=True, lstrip_blocks=True)


def group_bars(report: Report) -> List[dict]:
    """Per-group stacked bar segments (x, width, colour, count) in a 0..100 coordinate space."""
    bars = []
    for group, rs in report.groups().items():
        if not rs:
            continue
        total, x, segs = len(rs), 0.0, []
        for st in ("fail", "warn", "pass", "skip"):
            n = sum(r.status == st for r in rs)
            if n:
                w = 100.0 * n / total
                segs.append({"x": round(x, 2), "w": round(w, 2), "colour": COLOUR[st], "n": n, "status": st})
                x += w
        bars.append({"group": group, "status": worst(r.status for r in rs), "segments": segs, "total": total})
    return bars


def metric_bars(results: Sequence[CheckResult]) -> List[dict]:
    """Measured-vs-expected bars: the bar is the measured figure, the tick the expected one, on a shared scale."""
    out = []
    for r in results:
        m = r.metric
        if not m or not all(math.isfinite(v) for v in (m.value, m.expected)) or max(m.value, m.expected) <= 0:
            continue
        top = max(m.value, m.expected) * 1.1
        out.append({"label": f"{r.id}" + (f" [{r.subject}]" if r.subject else ""), "name": m.name, "unit": m.unit,
                    "value": m.value, "expected": m.expected, "w": round(100.0 * max(m.value, 0) / top, 2),
                    "tick": round(100.0 * m.expected / top, 2), "colour": COLOUR[r.status], "status": r.status,
                    "higher_is_better": m.higher_is_better})
    return out


def render_html(report: Report, problems: bool = False) -> str:
    """One self-contained HTML file: no scripts, no fonts, no network; pictures are inline SVG. Failures and
    warnings first (a jump list to their rows), then the GPUs, the measurements, the results by group."""
    from validator.report import pictures
    from validator.report.charts import round_num

    ids = pictures.anchors(report)
    env = _env()
    env.filters["num"] = round_num
    return env.get_template("report.html.j2").render(
        r=report, summary=report.summary, groups=shown_groups(report, problems), bars=group_bars(report),
        metrics=metric_bars(report.results), colour=COLOUR, symbol=SYMBOL, summary_line=summary_line(report),
        problems=pictures.problems(report), anchor=lambda res: ids.get(id(res), ""), gpu_rows=pictures.gpu_rows(report),
        nccl_chart=pictures.nccl_chart(report), burn_charts=pictures.burn_charts(report),
        p2p=pictures.p2p_matrix(report))


def render(report: Report, fmt: str, colour: bool = False, problems: bool = False) -> str:
    """The report in one format; `problems` keeps only warn/fail results in the human views (term, text, html)."""
    if fmt in _SAFE_TEXT:  # node-given text (hostname, GPU names, log lines) never reaches a terminal or XML raw
        report = report.map_text(_SAFE_TEXT[fmt])
    if fmt == "term":
        return render_term(report, colour=colour, symbols=SYMBOL if colour else _symbols(), problems=problems)
    if fmt == "text":
        return render_text(report, problems=problems)
    if fmt == "html":
        return render_html(report, problems=problems)
    return {"json": render_json, "junit": render_junit, "prom": render_prom}[fmt](report)
