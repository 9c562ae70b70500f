"""A fleet of qemu guests booted from an untuned golden image, reached by Ansible over SSH on 127.0.0.1 forwards.

Shared by tests/e2e/test_fleet.py and bench/bench_fleet.py (one way to boot, one way to run the playbooks).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import yaml

from builder.images import qemu
from builder.images.userdata import User, read_key_args, render_user_data
from validator import subp
from validator.atomic import write_text
from validator.errors import CommandError

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
BIN = Path(sys.executable).parent
RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def untuned_image(dist: Optional[Path] = None) -> Path:
    """images/untuned.yaml built once (cached by its inputs); $GPUFORGE_FLEET_IMAGE names a prebuilt qcow2 instead."""
    if os.environ.get("GPUFORGE_FLEET_IMAGE"):
        return Path(os.environ["GPUFORGE_FLEET_IMAGE"])
    from builder.images.build import Context, build_image
    from builder.images.definition import find_image

    dist = dist or Path(os.environ.get("GPUFORGE_E2E_DIST", REPO / ".cache" / "e2e-dist"))
    build_image(find_image(REPO / "images", "untuned"), Context(repo=REPO, dist=dist, apt_dir=REPO / "dist" / "apt"))
    return dist / "images" / "untuned" / "untuned.qcow2"


def validator_deb(out: Path) -> Path:
    """This tree's validator as the .deb the roles roll out (the image may carry an older one)."""
    from builder.images.validator_deb import build_validator_deb

    out.mkdir(parents=True, exist_ok=True)
    return build_validator_deb(REPO, out)


@dataclass
class Recap:
    rc: int
    seconds: float
    hosts: Dict[str, Dict[str, int]]
    output: str

    def changed(self, host: str) -> int:
        return self.hosts[host]["changed"]


@dataclass
class Fleet:
    work: Path
    key: Path
    guests: List[qemu.Guest]
    inventory: Path
    reports: Path
    boot_seconds: Dict[str, float] = field(default_factory=dict)

    def ssh(self, g: qemu.Guest, command: str, timeout: float = 120) -> str:
        return subp.run(qemu.ssh_argv(g, self.key) + [command], timeout=timeout).stdout

    def playbook(self, name: str, *args: str, inventory: Optional[Path] = None, timeout: float = 3600) -> Recap:
        env = {"ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"), "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
               "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCAL_TEMP": str(self.work / "ansible-tmp")}
        t0 = time.monotonic()
        r = subp.run([str(BIN / "ansible-playbook"), "-i", str(inventory or self.inventory), name, *args],
                     cwd=str(ANSIBLE_DIR), env=env, timeout=timeout, check=False)
        out = r.stdout + r.stderr
        write_text(self.work / f"{name}.{int(time.time())}.log", out)
        hosts = {m.group(1): {"ok": int(m.group(2)), "changed": int(m.group(3)), "unreachable": int(m.group(4)),
                              "failed": int(m.group(5))} for m in RECAP.finditer(out)}
        return Recap(r.returncode, time.monotonic() - t0, hosts, out)

    def report(self, host: str) -> dict:
        return json.loads((self.reports / f"{host}.json").read_text())

    def stop(self) -> None:
        for g in self.guests:
            g.stop()


def write_inventory(path: Path, guests: List[qemu.Guest], key: Path, reports: Path, deb: Optional[Path],
                    extra_hosts: Optional[Dict[str, int]] = None) -> Path:
    """The example inventory's shape, pointed at the guests' forwards; container runtime and packages off (TCG)."""
    ssh_args = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
    hosts = {g.name: {"ansible_host": "127.0.0.1", "ansible_port": g.ssh_port} for g in guests}
    for name, port in (extra_hosts or {}).items():
        hosts[name] = {"ansible_host": "127.0.0.1", "ansible_port": port}
    inv = {"all": {"children": {"gpu_nodes": {"hosts": hosts, "vars": {
        "ansible_user": "gpuforge", "ansible_become": True, "ansible_ssh_private_key_file": str(key),
        "ansible_ssh_common_args": ssh_args, "ansible_python_interpreter": "/usr/bin/python3",
        "gpu_baseline_validator_deb": str(deb) if deb else "",
        "gpu_baseline_container_runtime": False,  # docker in a TCG guest is minutes of apt; role tests cover it
        "benchmark_tools_packages": [],
        "cpu_optimization_profile": "gpu-performance",
        "gpu_validation_reports_dir": str(reports),
    }}}}}
    write_text(path, yaml.safe_dump(inv, sort_keys=False))
    return path


def wait_for_cloud_init(fleet: Fleet, g: qemu.Guest, timeout: float) -> None:
    """`cloud-init status --wait` over SSH; cloud-init restarts sshd while it configures the guest, so a dropped
    connection (ssh's exit 255) is asked again until the deadline, not taken as a failure."""
    deadline = time.monotonic() + timeout
    while True:
        r = subp.run(qemu.ssh_argv(g, fleet.key) + ["sudo cloud-init status --wait >/dev/null; true"],
                     timeout=timeout, check=False)
        if r.ok:
            return
        if r.returncode != 255 or time.monotonic() > deadline:
            raise CommandError(list(r.argv), r.returncode, r.stdout, r.stderr, reason=f"{g.name}: cloud-init did not finish")
        time.sleep(5)


def boot_fleet(work: Path, image: Path, names=("gpu-node-01", "gpu-node-02"), ssh_timeout: float = 1800) -> Fleet:
    """Throwaway key, user data from `gpuforge user-data`'s renderer, guests booted in parallel, SSH and cloud-init done."""
    work.mkdir(parents=True, exist_ok=True)
    key = work / "id_ed25519"
    if not key.exists():
        subp.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "gpuforge-fleet-test", "-f", str(key)], timeout=60)
    users = (User("gpuforge", read_key_args([str(key) + ".pub"])),)
    guests = []
    try:
        for n in names:
            guests.append(qemu.start_guest(work / n, image, render_user_data(users, hostname=n), name=n))
        fleet = Fleet(work, key, guests, work / "inventory.yml", work / "reports")
        for g in guests:
            fleet.boot_seconds[g.name] = qemu.wait_for_ssh(g, key, timeout=ssh_timeout)
            wait_for_cloud_init(fleet, g, ssh_timeout)
        write_inventory(fleet.inventory, guests, key, fleet.reports, validator_deb(work / "deb"))
        return fleet
    except BaseException:
        for g in guests:
            g.stop()
        raise


# ------------------------------------------------------------------------------------------ native vs precompiled

NODE_PACKAGES = ("python3", "python3-click", "python3-yaml", "python3-jinja2", "kmod", "procps", "ca-certificates")


def node_image():
    """A Debian bookworm 'node' (mmdebstrap + docker import, no registry): python3 and the validator's deps."""
    from builder.buildenv import BaseImageSpec, ensure_base_image

    return ensure_base_image(BaseImageSpec(suite="bookworm", packages=NODE_PACKAGES, repository="gpuforge/fleet-node"))


def sh(c, cmd: str, timeout_note: str = "") -> str:
    """Run in the container; raise with the output tail when it fails."""
    rc, out = c.exec_run(["bash", "-c", cmd])
    text = out.decode(errors="replace")
    if rc != 0:
        raise AssertionError(f"{cmd!r} exited {rc}{timeout_note}:\n{text[-4000:]}")
    return text


CPU_USAGE = ("cat /sys/fs/cgroup/cpu.stat 2>/dev/null | awk '/^usage_usec/ {print $2 * 1000}' | grep . "
             "|| cat /sys/fs/cgroup/cpuacct/cpuacct.usage")  # nanoseconds, cgroup v2 or v1


def timed(c, cmd: str) -> Dict[str, float]:
    """Wall seconds and the container's whole CPU time (its cgroup: DKMS and every helper process, even orphaned
    ones a shell's `time` would miss) for a command inside the container."""
    before = int(sh(c, CPU_USAGE).split()[-1])
    t0 = time.monotonic()
    sh(c, f"{{ {cmd} >/tmp/.out 2>/tmp/.err ; }} || {{ tail -c 3000 /tmp/.out /tmp/.err; exit 1; }}")
    wall = time.monotonic() - t0
    return {"wall_s": round(wall, 1), "cpu_s": round((int(sh(c, CPU_USAGE).split()[-1]) - before) / 1e9, 1)}


def native_vs_precompiled(kmod_deb: Path, kernel: str) -> Dict[str, object]:
    """In one Debian container: precompiled install, switch to native (DKMS compiles for `kernel`), switch back.
    Packages are downloaded before each timed step: the figures are the node's own work, not the mirror's."""
    from builder.buildenv import docker_client

    img = node_image()
    client = docker_client()
    c = client.containers.run(img.tag, ["sleep", "infinity"], detach=True, name=f"gpuforge-fleet-native-{os.getpid()}",
                              volumes={str(REPO): {"bind": "/src", "mode": "ro"},
                                       str(kmod_deb.parent): {"bind": "/debs", "mode": "ro"}},
                              environment={"PYTHONPATH": "/src", "DEBIAN_FRONTEND": "noninteractive"})
    gv = "python3 -m validator setup driver --force --json --kernel " + kernel
    deb = f"/debs/{kmod_deb.name}"
    user_space = "nvidia-kernel-dkms nvidia-smi libcuda1 nvidia-driver-bin nvidia-persistenced firmware-nvidia-gsp"
    out: Dict[str, object] = {"kernel": kernel, "kmod": kmod_deb.name}
    try:
        sh(c, "apt-get update -q")
        # The kmod's user-space pin first (what the precompiled install writes), then fetch what it will install.
        pin = "/etc/apt/preferences.d/gpuforge-nvidia.pref"
        sh(c, f"python3 -c 'import sys; from validator.precompiled import read_deb, pin_text; "
              f"open(sys.argv[2], \"w\").write(pin_text(read_deb(sys.argv[1])))' {deb} {pin}")
        sh(c, f"apt-get install -y -q --download-only {deb}")
        out["precompiled"] = timed(c, f"{gv} --method precompiled --deb {deb}")
        out["precompiled_module"] = sh(c, f"modinfo -k {kernel} -F filename nvidia-current").strip()
        # Native drops the pin (apt then takes the archive's newest 535 user space and DKMS source): fetch those.
        sh(c, f"mv {pin} /tmp/pin && apt-get install -y -q --download-only linux-headers-{kernel} {user_space}; "
              f"rc=$?; mv /tmp/pin {pin}; exit $rc")
        out["native"] = timed(c, f"{gv} --method native --package headless")
        out["native_module"] = sh(c, f"modinfo -k {kernel} -F filename nvidia-current").strip()
        out["native_kmods_left"] = sh(c, "dpkg-query -W -f='${Package} ${Status}\\n' 'gpuforge-nvidia-kmod-*' 2>/dev/null "
                                         "| grep -c ' installed' || true").strip()
        out["dkms_status"] = sh(c, "dkms status 2>&1 || true").strip()
        out["native_version"] = sh(c, "dpkg-query -W -f='${Version}' nvidia-kernel-dkms").strip()
        out["back_to_precompiled"] = timed(c, f"{gv} --method precompiled --deb {deb}")
        out["back_module"] = sh(c, f"modinfo -k {kernel} -F filename nvidia-current").strip()
        out["dkms_left"] = sh(c, "dpkg-query -W -f='${Package} ${Status}\\n' '*-dkms' 2>/dev/null | grep -c ' installed' || true").strip()
        return out
    finally:
        c.remove(force=True)
