"""make bench-fleet: wall time of ansible/deploy.yml on two qemu (TCG) guests booted from the untuned image, first
run (tuning + reboot + validation) and idempotent re-run; and native (DKMS) vs precompiled driver install on the same
Debian node (a container), wall and CPU seconds. Results: stdout and dist/bench/fleet.json.

GPUFORGE_FLEET_IMAGE=path.qcow2 reuses a built untuned image; GPUFORGE_BENCH_SKIP=fleet|native skips one half;
GPUFORGE_BENCH_DIST names the store with the kmod (default .cache/bench-dist, built there when absent).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "e2e"))

from fleet_env import boot_fleet, native_vs_precompiled, untuned_image  # noqa: E402

from validator import subp  # noqa: E402

KERNEL = "6.1.0-54-cloud-amd64"
DRIVER = "535.261.03"  # the default matrix's: its user space is in bookworm, what the native method installs


def bench_deploy() -> dict:
    t0 = time.monotonic()
    image = untuned_image()
    build = time.monotonic() - t0
    with tempfile.TemporaryDirectory(prefix="gf-bench-fleet-") as tmp:
        t0 = time.monotonic()
        fleet = boot_fleet(Path(tmp), image)
        boot = time.monotonic() - t0
        try:
            first = fleet.playbook("deploy.yml")
            again = fleet.playbook("deploy.yml")
        finally:
            fleet.stop()
    for name, r in (("first", first), ("again", again)):
        if r.rc != 0:
            raise SystemExit(f"deploy.yml ({name}) exited {r.rc}:\n{r.output[-3000:]}")
    return {"hosts": len(first.hosts), "image_build_or_cache_s": round(build, 1), "boot_to_ssh_s": round(boot, 1),
            "deploy_first_s": round(first.seconds, 1), "deploy_rerun_s": round(again.seconds, 1),
            "changed_first": {h: v["changed"] for h, v in first.hosts.items()},
            "changed_rerun": {h: v["changed"] for h, v in again.hosts.items()}}


def _kmod_deb(dist: Path) -> list:
    return sorted((dist / "apt").rglob(f"gpuforge-nvidia-kmod-proprietary-{DRIVER}-{KERNEL}_*.deb"))


def bench_native() -> dict:
    # The same store as make bench-containers: built here (the default matrix's proprietary cell) when absent.
    dist = Path(os.environ.get("GPUFORGE_BENCH_DIST", REPO / ".cache" / "bench-dist"))
    if not _kmod_deb(dist):
        subp.run([str(Path(sys.executable).parent / "gpuforge"), "build", "drivers", "--dist", str(dist), "--only",
                  "proprietary"], timeout=7200, capture=False)
    r = native_vs_precompiled(_kmod_deb(dist)[-1], KERNEL)
    r["precompiled_cpu_saving_pct"] = round(100 * (1 - r["precompiled"]["cpu_s"] / r["native"]["cpu_s"]), 1)
    return r


def main() -> int:
    skip = os.environ.get("GPUFORGE_BENCH_SKIP", "")
    result = {"machine": f"{platform.node()} {os.cpu_count()} cpu, {platform.machine()}, qemu TCG, shared host"}
    if skip != "native":
        result["native_vs_precompiled"] = bench_native()
    if skip != "fleet":
        result["deploy"] = bench_deploy()
    print(json.dumps(result, indent=2))
    dest = REPO / "dist" / "bench" / "fleet.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
