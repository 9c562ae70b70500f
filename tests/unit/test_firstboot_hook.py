"""The first-boot hook's states, run for real with fake gpu-validate and modprobe on PATH (no root, no GPU needed)."""

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
# fake gpu-validate: behaviour from FAKE_DETECT_RC / FAKE_DETECT_ERR / FAKE_GPUS / FAKE_SETUP_RC / FAKE_RUN_RC
case "$1" in
  detect)
    [ "${FAKE_DETECT_RC:-0}" = 0 ] || { printf '%s\\n' "${FAKE_DETECT_ERR:-detect exploded}" >&2; exit "$FAKE_DETECT_RC"; }
    if [ "${FAKE_GPUS:-0}" = 0 ]; then echo '{"gpus": [], "kernel": "6.1.0-54-cloud-amd64", "recommendation": null}'
    elif [ "${FAKE_FITS:-0}" = 1 ]; then echo '{"gpus": [{"name": "H100"}], "kernel": "6.1.0-54-cloud-amd64", "current_driver_fits": true}'
    else echo '{"gpus": [{"name": "H100"}], "kernel": "6.1.0-54-cloud-amd64"}'
    fi ;;
  setup)
    echo "$@" >> "$GPUFORGE_LOG_DIR/setup-args"
    if [ "$2" = driver ] && [ "${FAKE_SETUP_RC:-0}" != 0 ]; then
      echo "error: no precompiled package for kernel 6.1.0-54-cloud-amd64 in the apt lists" >&2; exit "$FAKE_SETUP_RC"
    fi
    echo '{"changed": false}' ;;
  run)
    echo "$@" > "$GPUFORGE_LOG_DIR/run-args"
    while [ $# -gt 0 ]; do [ "$1" = --save ] && { echo '{"results": []}' > "$2"; shift; }; shift; done
    exit "${FAKE_RUN_RC:-0}" ;;
esac
"""
FAKE_MODPROBE = """#!/bin/sh
echo "$@" >> "$GPUFORGE_LOG_DIR/modprobe-args"
exit "${FAKE_MODPROBE_RC:-0}"
"""


def _run(tmp_path, etc=None, **env):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (("gpu-validate", FAKE), ("modprobe", FAKE_MODPROBE)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (tmp_path / "etc").mkdir(exist_ok=True)
    for name, text in (etc or {}).items():
        (tmp_path / "etc" / name).write_text(text)
    e = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", GPUFORGE_LOG_DIR=str(tmp_path / "log"),
             GPUFORGE_STATE_DIR=str(tmp_path / "lib"), GPUFORGE_ETC=str(tmp_path / "etc"), **env)
    r = subprocess.run(["sh", str(HOOK)], env=e, capture_output=True, text=True, timeout=60)
    state = json.loads((tmp_path / "lib" / "firstboot.json").read_text())
    return r, state, tmp_path / "log"


def test_no_gpu_pass_writes_reports_and_ready(tmp_path):
    r, state, log = _run(tmp_path, etc={"expect": "8xH100\n"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert state["state"] == "done"
    assert json.loads((log / "ready").read_text())["result"] == "pass"
    assert (log / "report.json").exists() and (log / "report.html").exists()
    assert "--expect 8xH100" in (log / "run-args").read_text()
    assert "no NVIDIA GPU" in r.stdout and not (log / "setup-args").exists()


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


@pytest.mark.parametrize("msg", ['tab\there "quoted" back\\slash', "cr\rline\nnext", "esc \x1b[31mred\x1b[0m", "ünïcode ☃"])
def test_state_json_stays_valid_whatever_the_message(tmp_path, msg):
    r, state, log = _run(tmp_path, FAKE_DETECT_RC="3", FAKE_DETECT_ERR=msg)
    assert r.returncode == 1 and state["state"] == "failed"
    # json.loads above succeeded; the message is carried byte for byte (the last line of the error output).
    assert msg.splitlines()[-1].rstrip("\r") in state["message"] or msg in state["message"]
    assert "\x1b" not in (log / "failed").read_text()


def test_gpu_driver_through_the_node_setup_then_settings(tmp_path):
    r, state, log = _run(tmp_path, FAKE_GPUS="1")
    assert r.returncode == 0, r.stdout + r.stderr
    calls = (log / "setup-args").read_text().splitlines()
    assert calls[0] == "setup driver --method precompiled --json"
    assert calls[1] == "setup gpu-settings --json"
    assert (log / "modprobe-args").read_text().splitlines()[0] == "nvidia"


def test_driver_method_and_image_from_user_data(tmp_path):
    r, state, log = _run(tmp_path, FAKE_GPUS="1",
                         etc={"driver-method": "container\n", "driver-image": "127.0.0.1:5000/gpuforge/driver:535\n"})
    assert r.returncode == 0, r.stdout + r.stderr
    first = (log / "setup-args").read_text().splitlines()[0]
    assert first == "setup driver --method container --json --image 127.0.0.1:5000/gpuforge/driver:535"
    assert not (log / "modprobe-args").exists()  # the driver container loads the modules
    assert json.loads((log / "ready").read_text())["driver_method"] == "container"


def test_driver_setup_failure_is_a_failed_state_with_the_reason(tmp_path):
    r, state, log = _run(tmp_path, FAKE_GPUS="1", FAKE_SETUP_RC="2")
    assert r.returncode == 1 and state["state"] == "failed" and state["step"] == "driver"
    assert "no precompiled package for kernel" in state["message"]


def test_carried_packages_go_to_the_node_setup(tmp_path):
    debs = tmp_path / "lib" / "debs"
    debs.mkdir(parents=True)
    for n in ("gpuforge-nvidia-kmod-open-550.163.01-x_1_amd64.deb", "gpuforge-nvidia-kmod-proprietary-535.261.03-x_1_amd64.deb"):
        (debs / n).write_bytes(b"")
    r, state, log = _run(tmp_path, FAKE_GPUS="1", FAKE_MODPROBE_RC="1")
    args = (log / "setup-args").read_text().splitlines()[0]
    assert args.startswith("setup driver --method precompiled --json --deb ") and args.count(".deb") == 2
    # modprobe fails here: the hook stops with a clear state, no reboot.
    assert r.returncode == 1 and state["state"] == "failed" and state["step"] == "modprobe"


def test_loaded_driver_that_fits_is_kept(tmp_path):
    """detect says the running driver supports the GPUs: no driver set-up over it (even with carried packages)."""
    debs = tmp_path / "lib" / "debs"
    debs.mkdir(parents=True)
    (debs / "gpuforge-nvidia-kmod-open-550.163.01-x_1_amd64.deb").write_bytes(b"")
    r, state, log = _run(tmp_path, FAKE_GPUS="1", FAKE_FITS="1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "the loaded driver supports these GPUs: nothing installed" in r.stdout
    assert (log / "setup-args").read_text().splitlines() == ["setup gpu-settings --json"]
