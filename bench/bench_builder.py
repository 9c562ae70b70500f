"""Builder benchmarks (issue 4): per-cell wall vs the raw `make` in the same container, and the no-op rebuild.

Runs `gpuforge build drivers` on the default matrix into a fresh dist (cold: compiles), then again (cached).
The compile step IS the raw `make -j2 KERNEL_UNAME=<abi> modules` in the cell's container, so
wall / compile is the builder's overhead factor (goal <= 1.10). Goal for the no-op rebuild: <= 2 s.
Usage: python bench/bench_builder.py [--dist DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from validator import subp  # noqa: E402


def run(dist: Path) -> tuple:
    t0 = time.monotonic()
    res = subp.run([str(Path(sys.executable).parent / "gpuforge"), "build", "drivers", "--dist", str(dist), "--json"],
                   cwd=str(ROOT), timeout=3600, check=False)
    return time.monotonic() - t0, json.loads(res.stdout)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dist", type=Path, default=None)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    dist = a.dist or Path(tempfile.mkdtemp(prefix="gpuforge-bench-"))
    try:
        cold_s, cold = run(dist)
        warm_s, warm = run(dist)
    finally:
        if not a.keep and a.dist is None:
            shutil.rmtree(dist, ignore_errors=True)
    print(f"cold `gpuforge build drivers` (default matrix): {cold_s:.1f} s wall")
    for r in cold["results"]:
        comp = r["steps"].get("compile")
        ratio = f"{r['seconds'] / comp:.2f}x of raw make ({comp:.0f} s)" if comp else "no compile step"
        print(f"  {r['cell_id']}: {r['status']} in {r['seconds']:.1f} s; {ratio}; steps {r['steps']}")
    print(f"no-op rebuild: {warm_s:.2f} s wall (goal <= 2 s); " +
          ", ".join(f"{r['cell_id']}={r['status']}{' (cached)' if r.get('cached') else ''}" for r in warm["results"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
