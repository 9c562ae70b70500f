"""make bench-images: golden image build time (cold, cached), image sizes, and boot-to-report time under qemu TCG.

Boot-to-report = guest uptime when the first-boot hook wrote /var/log/gpuforge/ready (kernel start to report),
plus the host wall time from qemu start to that point's poweroff. Results: stdout and dist/bench/images.json.
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

from builder.images import qemu  # noqa: E402
from builder.images.build import Context, build_image  # noqa: E402
from builder.images.definition import find_image  # noqa: E402


def _boot(kind: str, out_dir: Path, work: Path) -> dict:
    kw = {"qcow2": out_dir / "default.qcow2"} if kind == "qcow2" else {"netboot_dir": out_dir, "memory_mb": 2048}
    res = qemu.boot(work / kind, timeout=900, **kw)
    ready = res.out / "gpuforge" / "ready" if res.out else None
    info = json.loads(ready.read_text()) if ready and ready.exists() else {}
    return {"wall_to_poweroff_s": round(res.seconds, 1), "guest_uptime_at_report_s": float(info.get("uptime", "nan")),
            "hook_seconds": info.get("seconds"), "result": info.get("result"), "timed_out": res.timed_out}


def main() -> int:
    dist = Path(os.environ.get("GPUFORGE_BENCH_DIST", REPO / ".cache" / "bench-dist"))
    image = find_image(REPO / "images", "default")
    ctx = Context(repo=REPO, dist=dist, apt_dir=REPO / "dist" / "apt", force=True)
    t0 = time.monotonic()
    m = build_image(image, ctx)
    cold = time.monotonic() - t0
    ctx.force = False
    t0 = time.monotonic()
    m2 = build_image(image, ctx)
    cached = time.monotonic() - t0
    assert m2.get("cached"), "second build was not a cache hit"
    out_dir = dist / "images" / image.name
    sizes = {name: info["size"] for name, info in m["files"].items()}
    alloc = {name: (out_dir / name).stat().st_blocks * 512 for name in m["files"]}
    with tempfile.TemporaryDirectory(prefix="gf-bench-") as tmp:
        boots = {kind: _boot(kind, out_dir, Path(tmp)) for kind in ("qcow2", "netboot")}
    result = {
        "machine": f"{platform.node()} {os.cpu_count()} cpu, {platform.machine()}, qemu TCG",
        "image": image.name, "kernel": image.kernel,
        "build_cold_s": round(cold, 1), "build_cached_s": round(cached, 2), "build_steps_s": m.get("steps"),
        "sizes_bytes": sizes, "allocated_bytes": alloc, "packages": len(m["packages"]),
        "boot": boots,
    }
    print(json.dumps(result, indent=2))
    dest = REPO / "dist" / "bench" / "images.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\ncold build {cold:.0f}s, cached {cached:.2f}s; qcow2 {sizes.get('default.qcow2', 0) / 1e6:.0f} MB, "
          f"squashfs {sizes.get('root.squashfs', 0) / 1e6:.0f} MB; boot-to-report (guest uptime) "
          + ", ".join(f"{k} {v['guest_uptime_at_report_s']:.0f}s" for k, v in boots.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
