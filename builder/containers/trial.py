"""Try a driver image on a booted node image under qemu (TCG): the image is attached as a raw disk (`docker save`
output), the guest loads it, runs `init` in the foreground like a node would, and leaves the evidence on the FAT
'out' disk. Used by the e2e test and `make bench-containers`."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from builder.images import qemu
from validator import userfile
from validator.errors import ConfigError

GUEST = """#cloud-config
runcmd:
  - - sh
    - -c
    - |
      mkdir -p /mnt/out && mount LABEL=GFOUT /mnt/out || exit 1
      exec > /mnt/out/guest.log 2>&1
      uname -r > /mnt/out/uname
      disk=$(ls /dev/vd? | tail -n 1)
      systemctl is-active docker || systemctl start docker
      docker load -i "$disk" > /mnt/out/load.txt 2>&1
      docker tag {local} {ref}
      docker run --rm --entrypoint modinfo {ref} -F vermagic nvidia-current > /mnt/out/vermagic
      date -u +%Y-%m-%dT%H:%M:%S.%NZ > /mnt/out/run-start
      {run_line}
      echo $? > /mnt/out/init.rc
      docker logs --timestamps gpuforge-driver > /mnt/out/init.log 2>&1
      docker rm -f gpuforge-driver
      cp /run/nvidia/gpuforge-driver.json /mnt/out/state.json
      ls -la /run/nvidia /run/nvidia/validations > /mnt/out/run-nvidia.txt 2>&1
      cat /proc/modules > /mnt/out/modules.txt
      cat /proc/self/mountinfo > /mnt/out/mountinfo.txt
      cat /sys/module/firmware_class/parameters/path > /mnt/out/fwpath
      dmesg | grep -i -E 'nvrm|nvidia' > /mnt/out/dmesg-nvidia.txt
      gpu-validate setup driver --method container --image {ref} --force --json > /mnt/out/install.json 2> /mnt/out/install.err
      echo $? > /mnt/out/install.rc
      docker ps -a --format '{{{{.Names}}}}' > /mnt/out/containers.txt
      exec > /dev/console 2>&1
      sync; umount /mnt/out
power_state:
  mode: poweroff
  delay: now
  condition: true
"""


@dataclass
class Trial:
    boot: qemu.BootResult
    out: Path

    def text(self, name: str) -> str:
        p = self.out / name
        return p.read_text(errors="replace") if p.exists() else ""

    @property
    def init_rc(self) -> Optional[int]:
        t = self.text("init.rc").strip()
        return int(t) if t.isdigit() else None

    @property
    def state(self) -> dict:
        try:
            state = userfile.parse_json(self.text("state.json"), str(self.out / "state.json"))
        except ConfigError:
            return {}
        return state if isinstance(state, dict) else {}

    def run_to_modprobe_s(self) -> Optional[float]:
        """Seconds from `docker run` (guest clock) to the entrypoint's `modprobe nvidia` (docker's log timestamp)."""
        start = self.text("run-start").strip()
        line = next((ln for ln in self.text("init.log").splitlines() if "gpuforge-driver: modprobe nvidia" in ln), "")
        if not start or not line:
            return None
        return (_ts(line.split()[0]) - _ts(start)).total_seconds()


def _ts(text: str) -> datetime.datetime:
    """RFC 3339 with nanoseconds (docker, date +%N) to a datetime (microseconds)."""
    head, _, frac = text.rstrip("Z").partition(".")
    return datetime.datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00")


def run(client, local: str, ref: str, node_qcow2: Path, work: Path, timeout: float = 900) -> Trial:
    """Boot node_qcow2 with `local` (an image the engine has) attached; in the guest it is tagged `ref` and run
    with the node's run line (validator.driver_container.run_argv, in the foreground)."""
    from validator.driver_container import run_argv

    work.mkdir(parents=True, exist_ok=True)
    saved = work / "image.tar"
    with open(saved, "wb") as f:
        for chunk in client.api.get_image(local):  # saved under exactly this name (save(named=True) takes tags[0])
            f.write(chunk)
    argv = [a for a in run_argv(ref) if a not in ("-d", "--restart=unless-stopped")]
    res = qemu.boot(work / "vm", qcow2=node_qcow2, timeout=timeout, memory_mb=2048, extra_drives=[saved],
                    user_data=GUEST.format(local=local, ref=ref, run_line=" ".join(argv)))
    saved.unlink()
    return Trial(res, res.out if res.out else work / "vm" / "out")
