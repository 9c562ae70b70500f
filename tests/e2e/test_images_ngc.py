"""A golden image with one NGC image pre-pulled (a stand-in from the local registry acting as the farm's mirror):
the build pins its digest into the cache key and records it in the manifest; under qemu (no network card at all)
first boot loads it into Docker and a container runs from it."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from builder.images import qemu
from builder.images.build import Context, build_image, cache_inputs, resolve
from builder.images.definition import parse_image
from validator.schema import load_yaml

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e
BOOT_TIMEOUT = float(os.environ.get("GPUFORGE_BOOT_TIMEOUT", "1500"))  # docker + a load under TCG on 2 busy cores
REF = "cuda:12.4.1-base-ubuntu22.04"
CANONICAL = "nvcr.io/nvidia/cuda:12.4.1-base-ubuntu22.04"

COLLECT = f"""#cloud-config
runcmd:
  - - sh
    - -c
    - |
      mkdir -p /mnt/out && mount LABEL=GFOUT /mnt/out || exit 1
      systemctl is-active gpuforge-ngc-load.service > /mnt/out/ngc-load 2>&1
      journalctl -b -u gpuforge-ngc-load.service --no-pager > /mnt/out/ngc-load.log 2>&1
      ls -l /var/lib/gpuforge/ngc > /mnt/out/ngc-dir.txt 2>&1
      docker image inspect --format '{{{{.Id}}}} {{{{json .RepoTags}}}}' {CANONICAL} > /mnt/out/inspect.txt 2>&1
      docker run --rm --network none --ulimit memlock=8388608 {CANONICAL} printenv CUDA_VERSION > /mnt/out/run.txt 2>&1
      gpu-validate ngc list --image cuda > /mnt/out/ngc-list.txt 2>&1
      ip -o link > /mnt/out/links.txt 2>&1
      sync; umount /mnt/out
power_state:
  mode: poweroff
  delay: now
  condition: true
"""


@pytest.fixture(scope="module")
def ngc_image(ngc_standins, tmp_path_factory):
    """The default image's recipe, no kmod (none needed here), plus one pre-pulled NGC stand-in; qcow2 only."""
    raw = load_yaml(REPO / "images" / "default.yaml")
    raw.update(name="ngc-e2e", drivers=[], formats=["qcow2"], disk_size="3G", ngc_images=[REF])
    image = parse_image(raw, str(REPO / "images" / "default.yaml"))
    dist = Path(os.environ.get("GPUFORGE_E2E_DIST", REPO / ".cache" / "e2e-dist"))
    ctx = Context(repo=REPO, dist=dist, apt_dir=REPO / "dist" / "apt", ngc_mirror=ngc_standins.mirror)
    t0 = time.monotonic()
    manifest = build_image(image, ctx)
    print(f"\nngc image: {'cached' if manifest.get('cached') else 'built'} in {time.monotonic() - t0:.0f}s")
    return image, ctx, manifest, dist / "images" / "ngc-e2e"


def test_manifest_records_the_pulled_image_and_the_key_pins_it(ngc_image, ngc_standins):
    image, ctx, m, _ = ngc_image
    (n,) = m["ngc_images"]
    assert n["ref"] == REF and n["image"] == CANONICAL
    assert n["pulled_from"] == f"{ngc_standins.mirror}/nvidia/cuda:12.4.1-base-ubuntu22.04"
    assert n["digest"] == ngc_standins.digests[REF]
    assert n["tarball"] == "/var/lib/gpuforge/ngc/cuda_12.4.1-base-ubuntu22.04.tar"
    assert n["size"] > 0 and n["tar_size"] > 0 and len(n["tar_sha256"]) == 64
    assert m["inputs"]["ngc_images"] == [{"ref": REF, "image": CANONICAL, "digest": ngc_standins.digests[REF]}]
    assert {"docker.io", "apparmor", "python3-docker"} <= set(m["packages"])
    # Another digest behind the same tag is another image: the cache key follows the registry.
    res = resolve(image, ctx)
    from dataclasses import replace

    other = replace(res, ngc=tuple(replace(p, digest="sha256:" + "0" * 64) for p in res.ngc))
    assert cache_inputs(other, ctx) != m["inputs"]


def test_first_boot_loads_the_image_offline(ngc_image, tmp_path):
    _, _, m, out_dir = ngc_image
    res = qemu.boot(tmp_path / "vm", qcow2=out_dir / "ngc-e2e.qcow2", user_data=COLLECT, timeout=BOOT_TIMEOUT,
                    memory_mb=2048)
    assert not res.timed_out, f"no poweroff within {BOOT_TIMEOUT}s; serial tail:\n{res.serial[-3000:]}"
    out = res.out
    assert (out / "links.txt").exists(), f"collector did not run; serial tail:\n{res.serial[-3000:]}"
    # No network card (only loopback and Docker's own bridge): whatever is in Docker came in the image.
    links = {line.split(":")[1].strip().split("@")[0] for line in (out / "links.txt").read_text().splitlines() if ":" in line}
    assert "lo" in links and links <= {"lo", "docker0"}, links
    assert (out / "ngc-load").read_text().strip() == "active", (out / "ngc-load.log").read_text()
    image_id, tags = (out / "inspect.txt").read_text().strip().split(" ", 1)
    assert image_id == m["ngc_images"][0]["id"] and CANONICAL in json.loads(tags)
    assert (out / "run.txt").read_text().strip() == "12.4.1"
    assert "cuda" in (out / "ngc-list.txt").read_text() and "12.4.1-base-ubuntu22.04" in (out / "ngc-list.txt").read_text()
    print(f"\nboot to loaded NGC image: {res.seconds:.0f}s wall")
