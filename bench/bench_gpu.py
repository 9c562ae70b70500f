#!/usr/bin/env python3
"""`make bench-gpu`: run every GPU benchmark on this node, print one table against the catalog and the
issue's H100 targets, and optionally time `gpu-validate run` at the quick and standard levels.

    python3 bench/bench_gpu.py [--short] [--out DIR] [--validate] [--snapshot FILE.tar.gz]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tarfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from validator import subp  # noqa: E402
from validator.bench import evaluate, report_out, suite  # noqa: E402
from validator.errors import GpuforgeError  # noqa: E402

# Targets on one H100 80GB HBM3: 95 % of the figures measured on the same device (fixture README).
H100_TARGETS = {
    "bandwidth.h2d_pinned": 0.95 * 55.0, "bandwidth.d2h_pinned": 0.95 * 54.9,
    "bandwidth.device_copy": 0.95 * 2921, "gemm.bf16": 0.95 * 746, "train.gpt-1.2b_mfu": 0.40,
}


def _catalog():
    try:
        from validator.catalog import load_catalog

        return load_catalog()
    except Exception:
        return None


def table(rep: suite.SuiteReport, catalog) -> str:
    rows = [("suite", "figure", "where", "value", "expected", "%", "status", "target")]
    for run in rep.runs:
        if run.suite == "train":
            evaluate.add_mfu(run, catalog)
        for fig in run.figures:
            o = evaluate.figure_outcome(fig, run, catalog, rep.topology)
            m = o.metric
            unit = "%" if fig.unit == "fraction" else fig.unit
            val = fig.value * 100 if fig.unit == "fraction" else fig.value
            exp = "" if m is None else f"{m.expected * (100 if fig.unit == 'fraction' else 1):.1f}"
            pct = "" if m is None or not m.expected else f"{fig.value / m.expected * 100:.0f}"
            tgt = H100_TARGETS.get(f"{fig.bench}.{fig.name}")
            is_h100 = any("H100" in g.name for g in run.gpus)
            tgt_s = "" if tgt is None or not is_h100 else (
                f"{'met' if fig.value >= tgt else 'MISSED'} (>= {tgt * (100 if fig.unit == 'fraction' else 1):.1f})")
            where = "node" if fig.gpu is None else f"GPU{fig.gpu}"
            rows.append((run.suite, fig.name, where, f"{val:.1f} {unit}", exp, pct, o.status, tgt_s))
        for e in run.errors:
            rows.append((run.suite, "ERROR", "", e[:100], "", "", "fail", ""))
        if run.skipped:
            rows.append((run.suite, "skipped", "", run.skipped[:100], "", "", "skip", ""))
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip() for r in rows)


def validate(level: str, out_dir: str) -> str:
    """`gpu-validate run --level L` in a child, timed; its JSON (and HTML for standard) saved in out_dir."""
    saves = [os.path.join(out_dir, f"validate-{level}.json")]
    if level == "standard":
        saves.append(os.path.join(out_dir, f"validate-{level}.html"))
    argv = [sys.executable, "-m", "validator", "run", "--level", level, "--format", "text"]
    for s in saves:
        argv += ["--save", s]
    t0 = time.perf_counter()
    r = subp.run(argv, timeout=900, ok_codes=(0, 1, 3), cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    dt = time.perf_counter() - t0
    summary = json.load(open(saves[0]))
    return (f"gpu-validate run --level {level}: {dt:.1f} s, exit {r.returncode}, status {summary.get('status')}, "
            f"{summary.get('summary')}\n" + r.stdout)


SNAPSHOT_CMDS = {
    "nvidia-smi.txt": ["nvidia-smi"], "nvidia-smi-q.txt": ["nvidia-smi", "-q"],
    "nvidia-smi-q.xml": ["nvidia-smi", "-q", "-x"], "nvidia-smi-topo.txt": ["nvidia-smi", "topo", "-m"],
    "nvidia-smi-nvlink.txt": ["nvidia-smi", "nvlink", "-s"], "uname.txt": ["uname", "-a"],
    "nvidia-smi-query.csv": ["nvidia-smi", "--query-gpu=index,name,pci.bus_id,pci.device_id,driver_version,"
                             "vbios_version,persistence_mode,temperature.gpu,power.draw,power.limit,clocks.current.sm,"
                             "clocks.max.sm,memory.total,ecc.mode.current,pcie.link.gen.current,pcie.link.gen.max,"
                             "pcie.link.width.current,pcie.link.width.max", "--format=csv"],
}
SNAPSHOT_FILES = ("/proc/driver/nvidia/version", "/proc/cmdline", "/proc/meminfo", "/etc/os-release")


def snapshot(path: str) -> None:
    """cmd/NAME + cmd/NAME.rc and a few files, in the layout of tests/fixtures/nodes (a tar.gz)."""
    with tarfile.open(path, "w:gz") as tar:
        def add(name: str, data: str):
            b = data.encode()
            info = tarfile.TarInfo(name)
            info.size = len(b)
            tar.addfile(info, io.BytesIO(b))

        for name, argv in SNAPSHOT_CMDS.items():
            try:
                r = subp.run(argv, timeout=60, check=False)
                add(f"node/cmd/{name}", r.stdout + r.stderr)
                add(f"node/cmd/{name}.rc", f"{r.returncode}\n")
            except GpuforgeError as e:
                add(f"node/cmd/{name}", str(e))
                add(f"node/cmd/{name}.rc", "127\n")
        for f in SNAPSHOT_FILES:
            try:
                add("node" + f, open(f).read())
            except OSError:
                pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--short", action="store_true", help="the short version (validation level full)")
    ap.add_argument("--suites", default=",".join(suite.SUITES))
    ap.add_argument("--out", help="folder for report.{json,html} and bench.json")
    ap.add_argument("--validate", action="store_true", help="also time gpu-validate run --level quick/standard")
    ap.add_argument("--snapshot", help="write a node snapshot (tar.gz) here")
    a = ap.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    out = a.out or os.getcwd()
    notes = []
    if a.snapshot:
        snapshot(a.snapshot)
    if a.validate:
        for level in ("quick", "standard"):
            try:
                notes.append(validate(level, out))
            except GpuforgeError as e:
                notes.append(f"gpu-validate run --level {level}: {e}")
            print(notes[-1], flush=True)
    names = [s for s in a.suites.split(",") if s]
    o = suite.Options.short() if a.short else suite.Options()
    started, t0 = time.time(), time.perf_counter()
    rep = suite.SuiteReport(topology=suite.topology())
    for name in names:
        t = time.perf_counter()
        run = suite.RUNNERS[name](o)
        run.seconds = round(time.perf_counter() - t, 1)
        rep.runs.append(run)
        print(f"# {name}: {run.seconds} s", flush=True)
    catalog = _catalog()
    results = [r for run in rep.runs for r in evaluate.to_results(run, catalog, rep.topology)]
    if a.out:
        report = report_out.make_report(results, rep.runs, started, time.perf_counter() - t0)
        doc = {"benchmarks": [r.to_dict() for r in rep.runs], "results": [r.to_dict() for r in results]}
        os.makedirs(a.out, exist_ok=True)
        from validator.atomic import write_text

        write_text(os.path.join(a.out, "bench.json"), json.dumps(doc, indent=2, sort_keys=True))
        report_out.save(os.path.join(a.out, "report.json"), report, "json")
        report_out.save(os.path.join(a.out, "report.html"), report, "html")
    print(table(rep, catalog))
    print(f"# total {time.perf_counter() - t0:.1f} s; " + ", ".join(f"{r.suite} {r.seconds} s" for r in rep.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
