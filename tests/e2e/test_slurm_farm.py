"""Scale-out for real: a one-host Slurm cluster (munged, slurmctld, slurmd in the foreground), `gpuforge slurm submit`
of a 2-task array over the default matrix plus the dependent publish job, then the merged repo installs in a clean
Debian container. The open cell fails on purpose (expected_failures), the proprietary one builds."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

from slurm_cluster import slurm_cluster, wait_idle
from validator import subp

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ABI = "6.1.0-54-cloud-amd64"
PKG = f"gpuforge-nvidia-kmod-proprietary-535.261.03-{ABI}"
GPUFORGE = str(Path(sys.executable).parent / "gpuforge")


@pytest.fixture(scope="module")
def farm():
    """Submit the array + publish on a fresh store; yields (store, env, wall seconds until the queue drained)."""
    if not shutil.which("slurmctld") or not shutil.which("munged"):
        pytest.fail("slurm-wlm and munge are not installed (scripts/host-deps.sh installs them)")
    store = Path(tempfile.mkdtemp(prefix="gf-farm-", dir="/var/tmp"))
    try:
        with slurm_cluster(cpus=2) as env:
            t0 = time.monotonic()
            res = subp.run([GPUFORGE, "slurm", "submit", "--config", str(ROOT / "matrix.yaml"), "--dist", str(store),
                            "--shards", "2", "--cpus", "1", "--gpuforge", GPUFORGE], env=env, cwd=str(ROOT), timeout=120)
            assert "array job" in res.stdout and "publish job" in res.stdout, res.stdout + res.stderr
            # Two cells on 2 cores take minutes; a machine shared with other builds may need GPUFORGE_E2E_SLURM_WAIT.
            wait_idle(env, float(os.environ.get("GPUFORGE_E2E_SLURM_WAIT", "3000")))
            yield store, env, time.monotonic() - t0
    finally:
        shutil.rmtree(store, ignore_errors=True)


def _logs(store: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted((store / "logs").glob("slurm-*")))


def test_each_task_built_its_shard(farm):
    store, _, wall = farm
    print(f"2-task array + publish: {wall:.0f}s wall")
    recs = {p.parent.name: json.loads(p.read_text()) for p in (store / "shards").glob("*/shard.json")}
    assert sorted(recs) == ["1-of-2", "2-of-2"], _logs(store)
    assert recs["1-of-2"]["cells"] == [f"535.261.03-open@{ABI}"] and recs["2-of-2"]["cells"] == [f"535.261.03-proprietary@{ABI}"]
    assert recs["1-of-2"]["failed"] == [] and recs["2-of-2"]["failed"] == []  # the open cell's failure is expected
    assert recs["1-of-2"]["plan"] == recs["2-of-2"]["plan"]


def test_publish_job_merged_one_repo(farm):
    store, _, _ = farm
    packages = (store / "apt/dists/gpuforge/main/binary-amd64/Packages").read_text()
    assert packages.count("Package: ") == 1 and f"Package: {PKG}" in packages, _logs(store)
    manifest = json.loads((store / "apt/manifest.json").read_text())["kmods"]
    assert manifest[f"535.261.03-proprietary@{ABI}"]["status"] == "built"
    assert "published in" in (next((store / "logs").glob("slurm-publish-*.out"))).read_text()


def test_publish_again_refuses_a_missing_shard(farm):
    store, env, _ = farm
    rec = store / "shards/2-of-2/shard.json"
    saved = rec.read_text()
    rec.unlink()
    try:
        r = subp.run([GPUFORGE, "publish", "--dist", str(store)], env=env, cwd=str(ROOT), timeout=120, check=False)
        assert r.returncode == 2 and "2/2 not finished" in r.stderr, r.stderr
    finally:
        rec.write_text(saved)


def test_merged_repo_installs_in_a_clean_container(farm):
    import docker

    from builder.buildenv import BaseImageSpec, ensure_base_image

    store, _, _ = farm
    client = docker.from_env(timeout=900)
    image = ensure_base_image(BaseImageSpec(suite="bookworm"), client)
    c = client.containers.run(image.id, ["sleep", "infinity"], detach=True, network_mode="host",
                              volumes={str(store / "apt"): {"bind": "/srv/repo", "mode": "ro"},
                                       str(ROOT): {"bind": "/src", "mode": "ro"}},
                              environment={"DEBIAN_FRONTEND": "noninteractive", "PYTHONDONTWRITEBYTECODE": "1"})
    try:
        # The node's installer pins the driver's user space (plain apt would take bookworm-security's newer one).
        script = ("echo 'deb [trusted=yes] file:/srv/repo gpuforge main' > /etc/apt/sources.list.d/gf.list && "
                  "apt-get update -q && apt-get install -y -q --no-install-recommends python3 python3-click python3-yaml "
                  f"python3-jinja2 && cd /src && python3 -m validator drivers install --kernel {ABI} --json && "
                  f"modinfo -k {ABI} -F vermagic nvidia-current")
        r = c.exec_run(["bash", "-c", script])
        out = r.output.decode(errors="replace")
        assert r.exit_code == 0, out[-4000:]
        assert out.strip().splitlines()[-1].split()[0] == ABI
    finally:
        c.remove(force=True)
