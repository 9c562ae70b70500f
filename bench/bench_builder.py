"""Builder benchmarks: per-cell wall vs the raw `make` in the same container, the no-op rebuild, and (--slurm) a
2-task Slurm array against one worker on the same matrix.

Runs `gpuforge build drivers` on the default matrix into a fresh dist (cold: compiles), then again (cached).
The compile step IS the raw `make -j2 KERNEL_UNAME=<abi> modules` in the cell's container, so
cell wall / compile is the builder's overhead factor (goal <= 1.10; the per-ABI headers image is made once and
shown apart). Goal for the no-op rebuild: <= 2 s. With --slurm, a one-host Slurm cluster (munged, slurmctld,
slurmd) runs `gpuforge slurm submit --shards 2` on a fresh store and the wall until publish ended is compared.
Usage: python bench/bench_builder.py [--dist DIR] [--keep] [--slurm]
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
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from validator import subp  # noqa: E402

GPUFORGE = str(Path(sys.executable).parent / "gpuforge")


def run(dist: Path) -> tuple:
    t0 = time.monotonic()
    res = subp.run([GPUFORGE, "build", "drivers", "--dist", str(dist), "--json"], cwd=str(ROOT), timeout=7200, check=False)
    return time.monotonic() - t0, json.loads(res.stdout)


def slurm_array(shards: int) -> float:
    from slurm_cluster import slurm_cluster, wait_idle

    store = Path(tempfile.mkdtemp(prefix="gf-bench-store-", dir="/var/tmp"))
    try:
        with slurm_cluster(cpus=2) as env:
            t0 = time.monotonic()
            subp.run([GPUFORGE, "slurm", "submit", "--config", str(ROOT / "matrix.yaml"), "--dist", str(store),
                      "--shards", str(shards), "--cpus", "1", "--gpuforge", GPUFORGE], env=env, cwd=str(ROOT), timeout=120)
            wait_idle(env, 7200)
            wall = time.monotonic() - t0
        if not (store / "apt/dists/gpuforge/Release").is_file():
            raise RuntimeError(f"the array did not publish a repo in {store}")
        return wall
    finally:
        shutil.rmtree(store, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dist", type=Path, default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--slurm", action="store_true", help="also time a 2-task Slurm array on the same matrix")
    a = ap.parse_args()
    dist = a.dist or Path(tempfile.mkdtemp(prefix="gf-bench-", dir="/var/tmp"))
    try:
        cold_s, cold = run(dist)
        warm_s, warm = run(dist)
    finally:
        if not a.keep and a.dist is None:
            shutil.rmtree(dist, ignore_errors=True)
    print(f"cold `gpuforge build drivers` (default matrix): {cold_s:.1f} s wall; runbook steps {cold.get('steps')}")
    for r in cold["results"]:
        comp = r["steps"].get("compile")
        ratio = f"{r['seconds'] / comp:.2f}x of raw make ({comp:.0f} s)" if comp and r["status"] == "built" else \
            f"{r['status']} at {r.get('step')}"
        print(f"  {r['cell_id']}: {r['status']} in {r['seconds']:.1f} s; cell wall / raw make = {ratio}; steps {r['steps']}")
    print(f"no-op rebuild: {warm_s:.2f} s wall (goal <= 2 s); " +
          ", ".join(f"{r['cell_id']}={r['status']}{' (cached)' if r.get('cached') else ''}" for r in warm["results"]))
    if a.slurm:
        wall = slurm_array(2)
        print(f"2-task Slurm array + publish: {wall:.1f} s wall vs one worker {cold_s:.1f} s "
              f"({cold_s / wall:.2f}x faster) on the same matrix")
    return 0


if __name__ == "__main__":
    sys.exit(main())
