"""The first-boot hook's states, run for real with a fake gpu-validate on PATH (no root, no GPU needed)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HOOK = REPO / "cloud-init" / "gpuforge-firstboot.sh"
pytestmark = pytest.mark.subprocess

FAKE = """#!/bin/sh
# fake gpu-validate: behaviour from FAKE_DETECT_RC / FAKE_GPUS / FAKE_RUN_RC
case "$1" in
  detect)
    [ "${FAKE_DETECT_RC:-0}" = 0 ] || { echo "detect exploded" >&2; exit "$FAKE_DETECT_RC"; }
    if [ "${FAKE_GPUS:-0}" = 0 ]; then echo '{"gpus": [], "kernel": "6.1.0-54-cloud-amd64", "recommendation": null}'
    elif [ "${FAKE_FITS:-0}" = 1 ]; then echo '{"gpus": [{"name": "H100"}], "kernel": "6.1.0-54-cloud-amd64", "current_driver_fits": true, "recommendation": {"package": null, "per_model": {"H100": [{"ok": true, "driver_version": "550.163.01", "flavours": ["open"]}]}}}'
    else echo '{"gpus": [{"name": "H100"}], "kernel": "6.1.0-54-cloud-amd64", "recommendation": {"package": "gpuforge-nvidia-kmod-open-550.163.01-6.1.0-54-cloud-amd64", "per_model": {"H100": [{"ok": true, "driver_version": "535.261.03", "flavours": ["proprietary"]}]}}}'
    fi ;;
  drivers)
    echo "$@" > "$GPUFORGE_LOG_DIR/drivers-args"; exit 0 ;;
  run)
    echo "$@" > "$GPUFORGE_LOG_DIR/run-args"
    while [ $# -gt 0 ]; do [ "$1" = --save ] && { echo '{"results": []}' > "$2"; shift; }; shift; done
    exit "${FAKE_RUN_RC:-0}" ;;
esac
"""


def _run(tmp_path, **env):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "gpu-validate"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    e = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", GPUFORGE_LOG_DIR=str(tmp_path / "log"),
             GPUFORGE_STATE_DIR=str(tmp_path / "lib"), GPUFORGE_ETC=str(tmp_path / "etc"), **env)
    r = subprocess.run(["sh", str(HOOK)], env=e, capture_output=True, text=True, timeout=60)
    state = json.loads((tmp_path / "lib" / "firstboot.json").read_text())
    return r, state, tmp_path / "log"


def test_no_gpu_pass_writes_reports_and_ready(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "expect").write_text("8xH100\n")
    r, state, log = _run(tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert state["state"] == "done"
    assert json.loads((log / "ready").read_text())["result"] == "pass"
    assert (log / "report.json").exists() and (log / "report.html").exists()
    assert "--expect 8xH100" in (log / "run-args").read_text()
    assert "no NVIDIA GPU" in r.stdout


def test_failing_checks_are_degraded_not_an_error(tmp_path):
    r, state, log = _run(tmp_path, FAKE_RUN_RC="1")
    assert r.returncode == 0 and state["state"] == "degraded" and (log / "ready").exists()
    assert not (log / "failed").exists()


def test_detect_failure_leaves_failed_state(tmp_path):
    r, state, log = _run(tmp_path, FAKE_DETECT_RC="3")
    assert r.returncode == 1
    assert state["state"] == "failed" and state["step"] == "detect" and "detect exploded" in state["message"]
    assert "step=detect" in (log / "failed").read_text()
    assert not (log / "ready").exists()


def test_gpu_without_a_fitting_package_fails_clearly(tmp_path):
    r, state, log = _run(tmp_path, FAKE_GPUS="1")
    assert r.returncode == 1 and state["state"] == "failed" and state["step"] == "driver"
    # The recommendation first, then the other candidates the ID lists allow.
    assert "gpuforge-nvidia-kmod-open-550.163.01-6.1.0-54-cloud-amd64" in state["message"]
    assert "gpuforge-nvidia-kmod-proprietary-535.261.03-6.1.0-54-cloud-amd64" in state["message"]


def test_carried_packages_go_through_the_validator_installer(tmp_path):
    debs = tmp_path / "lib" / "debs"
    debs.mkdir(parents=True)
    for n in ("gpuforge-nvidia-kmod-open-550.163.01-x_1_amd64.deb", "gpuforge-nvidia-kmod-proprietary-535.261.03-x_1_amd64.deb"):
        (debs / n).write_bytes(b"")
    r, state, log = _run(tmp_path, FAKE_GPUS="1")
    args = (log / "drivers-args").read_text()
    assert args.startswith("drivers install --deb ") and args.count(".deb") == 2
    # This host has no nvidia module: the hook stops at modprobe with a clear state, no reboot.
    assert r.returncode == 1 and state["state"] == "failed" and state["step"] == "modprobe"


def test_loaded_driver_that_fits_is_kept(tmp_path):
    """detect says the running driver supports the GPUs: no package is installed over it, even if carried."""
    debs = tmp_path / "lib" / "debs"
    debs.mkdir(parents=True)
    (debs / "gpuforge-nvidia-kmod-open-550.163.01-x_1_amd64.deb").write_bytes(b"")
    r, state, log = _run(tmp_path, FAKE_GPUS="1", FAKE_FITS="1")
    assert "the loaded driver supports these GPUs: nothing installed" in r.stdout
    assert not (log / "drivers-args").exists()
