"""Report files for `gpu-validate bench --out-dir`: the validator's report writers when present, else
JSON + JUnit + Prometheus text written here."""

from __future__ import annotations

import json
import os
from xml.sax.saxutils import escape

from validator.atomic import write_text


def write(out_dir: str, results: list, doc: dict) -> list:
    os.makedirs(out_dir, exist_ok=True)
    write_text(os.path.join(out_dir, "bench.json"), json.dumps(doc, indent=2, sort_keys=True))
    written = [os.path.join(out_dir, "bench.json")]
    write_text(os.path.join(out_dir, "bench.junit.xml"), junit(results))
    write_text(os.path.join(out_dir, "bench.prom"), prom(results))
    written += [os.path.join(out_dir, "bench.junit.xml"), os.path.join(out_dir, "bench.prom")]
    return written


def junit(results: list) -> str:
    fails = sum(r.status == "fail" for r in results)
    skips = sum(r.status == "skip" for r in results)
    lines = [f'<?xml version="1.0" encoding="UTF-8"?>',
             f'<testsuite name="gpuforge-bench" tests="{len(results)}" failures="{fails}" skipped="{skips}">']
    for r in results:
        name = escape(f"{r.id}[{r.subject}]" if r.subject else r.id, {'"': "&quot;"})
        lines.append(f'  <testcase classname="{r.group}" name="{name}" time="{r.duration_ms / 1e3:.3f}">')
        if r.status == "fail":
            lines.append(f'    <failure message="{escape(r.observed, {chr(34): "&quot;"})}">'
                         f'{escape(r.expected)}; {escape(r.remedy)}</failure>')
        elif r.status == "skip":
            lines.append(f'    <skipped message="{escape(r.observed, {chr(34): "&quot;"})}"/>')
        lines.append(f"    <system-out>{escape(r.status + ': ' + r.observed)}</system-out>")
        lines.append("  </testcase>")
    lines.append("</testsuite>")
    return "\n".join(lines) + "\n"


def _label(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def prom(results: list) -> str:
    out = ["# HELP gpuforge_bench_value Benchmark figure (unit in the label).",
           "# TYPE gpuforge_bench_value gauge",
           "# HELP gpuforge_bench_expected What the figure should reach.",
           "# TYPE gpuforge_bench_expected gauge"]
    for r in results:
        if r.metric is None:
            continue
        lab = f'check="{_label(r.id)}",subject="{_label(r.subject)}",unit="{_label(r.metric.unit)}"'
        out.append(f"gpuforge_bench_value{{{lab}}} {r.metric.value}")
        out.append(f"gpuforge_bench_expected{{{lab}}} {r.metric.expected}")
    return "\n".join(out) + "\n"
