"""Benchmark `gpu-validate run --level quick`: median wall time on the H100 capture and on this machine.

Two figures per target: the validation itself in-process (fresh Node and Context each run: what a long-lived
agent pays) and the whole CLI as a process (interpreter start, imports, run, JSON written: what first boot pays).
Goal: under 1 s.  Usage: python bench/bench_validator.py [--runs N] [--cli-runs M] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from validator import subp  # noqa: E402
from validator.runner import validate  # noqa: E402

H100 = REPO / "tests/fixtures/nodes/h100-sxm5-80gb-kvm-guest"


def in_process(root: Path, runs: int) -> dict:
    validate(root=root)  # warm: imports, catalog cache, first file reads
    times, rep = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        rep = validate(root=root)
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "runs": runs,
            "checks": len(rep.results), "status": rep.status, "summary": rep.summary}


def cli(root: Path, runs: int) -> dict:
    times = []
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "r.json"
        for _ in range(runs):
            t0 = time.perf_counter()
            subp.run([sys.executable, "-m", "validator", "run", "--root", str(root), "--format", "json", "-o", str(out)],
                     ok_codes=(0, 1, 3), cwd=str(REPO), timeout=120)
            times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "runs": runs}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--cli-runs", type=int, default=5)
    ap.add_argument("--json", help="also write the figures here")
    a = ap.parse_args()
    machine = f"{platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()})"
    rows = {}
    for name, root in (("H100 capture (replay)", H100), ("this machine (live /)", Path("/"))):
        rows[name] = {"in_process": in_process(root, a.runs), "cli": cli(root, a.cli_runs)}
    print(f"gpu-validate run --level quick, median wall time; machine: {machine}")
    print(f"{'target':<24} {'in-process':>12} {'(min-max)':>18} {'CLI process':>12} {'(min-max)':>18}  checks  status")
    for name, r in rows.items():
        ip, c = r["in_process"], r["cli"]
        print(f"{name:<24} {ip['median_s'] * 1000:>9.1f} ms {ip['min_s'] * 1000:>7.1f}-{ip['max_s'] * 1000:<7.1f} ms "
              f"{c['median_s'] * 1000:>9.1f} ms {c['min_s'] * 1000:>7.1f}-{c['max_s'] * 1000:<7.1f} ms "
              f"{ip['checks']:>6}  {ip['status']}")
    print(f"(in-process: {a.runs} runs after one warm-up; CLI: {a.cli_runs} runs of python -m validator run ... -o r.json)")
    if a.json:
        from validator.atomic import write_text
        write_text(a.json, json.dumps({"machine": machine, "results": rows}, indent=2) + "\n")
    goal = all(r["in_process"]["median_s"] < 1.0 for r in rows.values())
    print("goal < 1 s (in-process):", "met" if goal else "NOT met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
