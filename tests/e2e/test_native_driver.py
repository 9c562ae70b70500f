"""The native driver method for real: in a Debian bookworm container, `gpu-validate setup driver` installs the
precompiled kmod, switches to native (Debian's DKMS packages compile the module for the installed kernel's headers),
then back; each switch purges the other method's packages. Timings are printed (bench/bench_fleet.py keeps them)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fleet_env import native_vs_precompiled

pytestmark = pytest.mark.e2e
KERNEL = "6.1.0-54-cloud-amd64"


def _kmod_deb(dist: Path) -> Path:
    hits = sorted((dist / "apt").rglob(f"gpuforge-nvidia-kmod-proprietary-*-{KERNEL}_*.deb"))
    assert hits, f"the session's driver build made no proprietary kmod for {KERNEL} in {dist}/apt"
    return hits[-1]


def test_native_dkms_vs_precompiled_and_switching_back(drivers_build):
    r = native_vs_precompiled(_kmod_deb(drivers_build.dist), KERNEL)
    print(f"\nprecompiled install: {r['precompiled']}; native (DKMS): {r['native']}; back: {r['back_to_precompiled']}")
    assert r["precompiled_module"] == f"/lib/modules/{KERNEL}/updates/gpuforge/nvidia-current.ko"
    assert r["native_module"].startswith(f"/lib/modules/{KERNEL}/updates/dkms/nvidia-current.ko"), r
    assert r["native_kmods_left"] == "0"  # the switch purged the precompiled package
    assert "nvidia-current" in r["dkms_status"] and KERNEL in r["dkms_status"] and "installed" in r["dkms_status"]
    assert r["back_module"] == r["precompiled_module"] and r["dkms_left"] == "0"
    # The point of precompiling: the node does a small fraction of the work DKMS does.
    assert r["precompiled"]["cpu_s"] < r["native"]["cpu_s"] / 3, r
