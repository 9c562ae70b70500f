"""Benchmark results in the validator's report formats (validator.report): JSON, HTML with measured-vs-
expected bars, JUnit, Prometheus, text; plus the raw figures (sweeps, samples) as bench.json."""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Sequence

from validator import __version__
from validator.atomic import make_dirs, write_text

FILES = {"report.json": "json", "report.html": "html", "report.xml": "junit", "report.prom": "prom",
         "report.txt": "text"}


def make_report(results: Sequence, runs: Sequence, started: float, duration_s: float, data=None):
    from validator.report.model import Report

    gpus = []
    for run in runs:
        for g in run.gpus:
            d = {"index": g.index, "bus_id": g.bus_id, "name": g.name, "memory_total_mib": int(g.memory_gib * 1024)}
            if d not in gpus:
                gpus.append(d)
    return Report(host=socket.gethostname(), level="full", results=tuple(results),
                  started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)), duration_s=duration_s,
                  gpus=tuple(gpus), tool_version=__version__, data=data or {})


def bench_data(runs: Sequence, topology=None, seconds: float = 0.0) -> dict:
    """The measurements behind the results (every figure with its sweep, telemetry series, the topology) as
    plain JSON: what `bench.json` holds and what the HTML report draws from (Report.data["bench"])."""
    topo = None if topology is None else {
        "gpus": list(topology.gpus), "links": {f"{a}-{b}": v for (a, b), v in topology.links.items()}}
    return {"benchmarks": [r.to_dict() for r in runs], "topology": topo, "seconds": round(seconds, 1)}


def save(path: str, report, fmt: str) -> None:
    from validator.report.render import render

    write_text(path, render(report, fmt))


def write(out_dir: str, report, doc: dict) -> list:
    """Every report format plus bench.json into out_dir; returns the paths written."""
    make_dirs(out_dir)
    paths = [os.path.join(out_dir, "bench.json")]
    write_text(paths[0], json.dumps(doc, indent=2, sort_keys=True))
    for name, fmt in FILES.items():
        save(os.path.join(out_dir, name), report, fmt)
        paths.append(os.path.join(out_dir, name))
    return paths
