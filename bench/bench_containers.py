"""make bench-containers: driver-container build time (cold, cached) per image, image size against the kmod + user
space it carries, and the node time from `docker run` to the entrypoint's `modprobe nvidia` in a qemu (TCG) guest.

Cold = `--rebuild` (base image by mmdebstrap, runtime layer, the image); the per-image figure is the image step
alone. Needs `gpuforge build drivers` output (built here for the default matrix's proprietary cell when absent).
Results: stdout and dist/bench/containers.json.
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

from builder.buildenv import docker_client  # noqa: E402
from builder.containers import trial  # noqa: E402
from builder.containers.build import build_containers, find_kmod  # noqa: E402
from builder.images.build import Context, build_image  # noqa: E402
from builder.images.definition import find_image  # noqa: E402
from builder.plan import load_plan  # noqa: E402
from validator import subp  # noqa: E402

NODE_IMAGE = REPO / "tests" / "fixtures" / "images" / "docker-node.yaml"


def main() -> int:
    dist = Path(os.environ.get("GPUFORGE_BENCH_DIST", REPO / ".cache" / "bench-dist"))
    cfg, plan = load_plan()
    cells = [c for c in plan.select("proprietary") if not c.expect_fail]
    if not all(find_kmod(c, dist) for c in cells):
        subp.run([str(Path(sys.executable).parent / "gpuforge"), "build", "drivers", "--dist", str(dist), "--only",
                  "proprietary"], timeout=7200, capture=False)
    t0 = time.monotonic()
    cold = build_containers(cells, cfg.settings, dist, rebuild=True)
    cold_s = time.monotonic() - t0
    t0 = time.monotonic()
    cached = build_containers(cells, cfg.settings, dist)
    cached_s = time.monotonic() - t0
    assert all(r.status == "cached" for r in cached.results), [r.status for r in cached.results]
    images = []
    for r in cold.results:
        carried = r.payload_kib * 1024
        images.append({
            "cell": r.cell_id, "ref": r.refs[0], "image_cold_s": r.seconds, "image_steps_s": r.steps,
            "cached_s": next(c.seconds for c in cached.results if c.cell_id == r.cell_id),
            "size_bytes": r.size, "compressed_bytes": r.compressed, "own_layer_bytes": r.layer,
            "carried_installed_bytes": carried, "ratio_to_carried": round(r.size / carried, 3) if carried else None,
            "ratio_to_own_layer": round(r.size / r.layer, 3) if r.layer else None,
        })
    # The node image is the e2e test's (same folder, so either one's build is the other's cache hit).
    node_dist = Path(os.environ.get("GPUFORGE_E2E_DIST", REPO / ".cache" / "e2e-dist"))
    t0 = time.monotonic()
    node = build_image(find_image(REPO / "images", str(NODE_IMAGE)), Context(repo=REPO, dist=node_dist, apt_dir=None))
    node_build_s = time.monotonic() - t0
    client = docker_client()
    first = images[0]
    with tempfile.TemporaryDirectory(prefix="gf-bench-ctr-") as tmp:
        t = trial.run(client, first["ref"], "127.0.0.1:5000/gpuforge/nvidia-driver:" + first["ref"].split(":", 1)[1],
                      node_dist / "images" / "docker-node" / "docker-node.qcow2", Path(tmp), timeout=1800)
        node_run = {"docker_run_to_modprobe_s": t.run_to_modprobe_s(), "init_exit": t.init_rc,
                    "state": t.state.get("state"), "boot_to_poweroff_s": round(t.boot.seconds, 1),
                    "timed_out": t.boot.timed_out}
    result = {
        "machine": f"{platform.node()} {os.cpu_count()} cpu, {platform.machine()}, qemu TCG",
        "build_cold_s": round(cold_s, 1), "build_cold_steps_s": cold.steps, "build_cached_s": round(cached_s, 2),
        "images": images, "node_image": {"cached": bool(node.get("cached")), "seconds": round(node_build_s, 1)},
        "node": node_run,
    }
    print(json.dumps(result, indent=2))
    dest = REPO / "dist" / "bench" / "containers.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(result, indent=2) + "\n")
    for i in images:
        print(f"\n{i['ref']}: cold {cold_s:.0f}s (image step {i['image_cold_s']:.0f}s), cached {cached_s:.1f}s; "
              f"{i['size_bytes'] / 1e6:.0f} MB ({i['compressed_bytes'] / 1e6:.0f} MB compressed) for "
              f"{i['carried_installed_bytes'] / 1e6:.0f} MB of kmod + user space = {i['ratio_to_carried']}x")
    mp = node_run["docker_run_to_modprobe_s"]
    print(f"node (qemu TCG): docker run -> modprobe nvidia {mp:.1f}s, init exit {node_run['init_exit']} "
          f"({node_run['state']})" if mp is not None else f"node: no modprobe line ({node_run})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
