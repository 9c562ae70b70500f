"""Boot a built image in qemu (TCG) with a NoCloud seed and read results back from a FAT 'out' disk.

Used by the e2e tests and bench/bench_images.py; KVM hangs on the farm's machines, so the accelerator is TCG.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from validator import subp
from validator.atomic import write_text
from validator.errors import CommandError

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")

# Test/bench user-data: after the first-boot hook (per-instance scripts run before runcmd), copy the evidence
# to the disk labelled GFOUT and power off, so qemu exits on its own.
COLLECT_USER_DATA = """#cloud-config
runcmd:
  - - sh
    - -c
    - |
      mkdir -p /mnt/out && mount LABEL=GFOUT /mnt/out || exit 1
      cp /proc/cmdline /mnt/out/cmdline
      sysctl -a > /mnt/out/sysctl.txt 2>/dev/null
      cat /sys/kernel/mm/transparent_hugepage/enabled > /mnt/out/thp
      systemctl is-active gpuforge-tuning.service > /mnt/out/tuning-unit 2>&1
      cloud-init status --long > /mnt/out/cloud-init-status 2>&1
      cp /var/lib/gpuforge/firstboot.json /mnt/out/ 2>/dev/null
      mkdir -p /mnt/out/gpuforge && cp /var/log/gpuforge/* /mnt/out/gpuforge/ 2>/dev/null
      cat /proc/uptime > /mnt/out/uptime
      systemd-analyze > /mnt/out/analyze 2>&1; systemd-analyze blame > /mnt/out/blame 2>&1
      lsmod > /mnt/out/lsmod.txt
      grep -c nouveau /proc/modules > /mnt/out/nouveau 2>&1
      cat /etc/shadow | cut -d: -f1,2 > /mnt/out/shadow-users
      findmnt -n -o SOURCE,FSTYPE / > /mnt/out/rootmnt
      sync; umount /mnt/out
power_state:
  mode: poweroff
  delay: now
  condition: true
"""


def fat_image(path: Path, label: str, files: dict, size_mb: int = 16) -> Path:
    """A FAT image made without mounting (mkfs.fat + mcopy)."""
    path.unlink(missing_ok=True)
    subp.run(["mkfs.fat", "-n", label, "-C", str(path), str(size_mb * 1024)], timeout=60)
    for name, text in files.items():
        src = path.parent / f".{label}.{name}"
        write_text(src, text)
        subp.run(["mcopy", "-i", str(path), str(src), f"::/{name}"], timeout=60)
        src.unlink()
    return path


def nocloud_seed(path: Path, user_data: str, instance_id: str = "gpuforge-test-1", hostname: str = "gpuforge-node") -> Path:
    return fat_image(path, "CIDATA", {"user-data": user_data,
                                      "meta-data": f"instance-id: {instance_id}\nlocal-hostname: {hostname}\n"})


def read_fat(path: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    subp.run(["mcopy", "-s", "-n", "-i", str(path), "::/*", str(dest)], timeout=60, ok_codes=(0, 1))
    return dest


@dataclass
class BootResult:
    seconds: float
    serial: str
    timed_out: bool
    out: Optional[Path]


def boot(work: Path, *, qcow2: Optional[Path] = None, netboot_dir: Optional[Path] = None, uefi: bool = False,
         user_data: str = COLLECT_USER_DATA, timeout: float = 600, memory_mb: int = 1536, smp: int = 2,
         extra_drives: Sequence[Path] = ()) -> BootResult:
    """Boot a disk (through a throwaway overlay) or a netboot bundle (iPXE + TFTP); wait for poweroff or timeout.
    extra_drives: raw files attached read-only after the seed and out disks (/dev/vdd, ... on a disk boot)."""
    work.mkdir(parents=True, exist_ok=True)
    seed = nocloud_seed(work / "seed.img", user_data)
    out = fat_image(work / "out.img", "GFOUT", {}, 32)
    serial = work / "serial.log"
    argv = ["qemu-system-x86_64", "-accel", "tcg", "-m", str(memory_mb), "-smp", str(smp), "-no-reboot",
            "-nographic", "-monitor", "none", "-serial", f"file:{serial}"]
    if uefi:
        vars_fd = work / "OVMF_VARS.fd"
        shutil.copy2(OVMF_VARS, vars_fd)
        argv += ["-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}", "-drive", f"if=pflash,format=raw,file={vars_fd}"]
    if qcow2 is not None:
        overlay = work / "overlay.qcow2"
        overlay.unlink(missing_ok=True)
        subp.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(Path(qcow2).resolve()), str(overlay)], timeout=60)
        argv += ["-drive", f"file={overlay},format=qcow2,if=virtio", "-nic", "none"]
    elif netboot_dir is not None:
        argv += ["-boot", "n", "-nic", f"user,model=virtio-net-pci,tftp={Path(netboot_dir).resolve()},bootfile=boot.ipxe"]
    argv += ["-drive", f"file={seed},format=raw,if=virtio", "-drive", f"file={out},format=raw,if=virtio"]
    for extra in extra_drives:
        argv += ["-drive", f"file={Path(extra).resolve()},format=raw,if=virtio,readonly=on"]
    t0 = time.monotonic()
    timed_out = False
    try:
        subp.run(argv, timeout=timeout, capture=True)
    except CommandError as e:
        if e.returncode is not None:
            raise
        timed_out = True
    secs = time.monotonic() - t0
    text = serial.read_text(errors="replace") if serial.exists() else ""
    return BootResult(secs, text, timed_out, read_fat(out, work / "out"))


# ------------------------------------------------------------------------------------------- a guest you SSH into


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now (the host-side end of the SSH forward)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Guest:
    """A booted image reachable over SSH on 127.0.0.1:ssh_port (qemu user networking, TCG); reboots stay inside qemu."""

    name: str
    work: Path
    ssh_port: int
    proc: Optional[subp.Background] = None

    @property
    def serial(self) -> Path:
        return self.work / "serial.log"

    def stop(self, timeout: float = 30) -> None:
        if self.proc is not None:
            self.proc.stop(grace=timeout)


def start_guest(work: Path, qcow2: Path, user_data: str, *, name: str, ssh_port: Optional[int] = None,
                memory_mb: int = 1024, smp: int = 1) -> Guest:
    """Boot the image in the background through a throwaway overlay, with user data and an SSH forward on 127.0.0.1."""
    work.mkdir(parents=True, exist_ok=True)
    port = ssh_port or free_port()
    seed = nocloud_seed(work / "seed.img", user_data, instance_id=f"gpuforge-{name}", hostname=name)
    overlay = work / "overlay.qcow2"
    overlay.unlink(missing_ok=True)
    subp.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(Path(qcow2).resolve()), str(overlay)], timeout=60)
    argv = ["qemu-system-x86_64", "-accel", "tcg", "-m", str(memory_mb), "-smp", str(smp), "-nographic",
            "-monitor", "none", "-serial", f"file:{work / 'serial.log'}",
            "-drive", f"file={overlay},format=qcow2,if=virtio", "-drive", f"file={seed},format=raw,if=virtio",
            "-nic", f"user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:{port}-:22"]
    g = Guest(name, work, port)
    g.proc = subp.Background(argv)
    return g


def ssh_argv(g: Guest, key: Path, user: str = "gpuforge") -> list:
    return ["ssh", "-i", str(key), "-p", str(g.ssh_port), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10", f"{user}@127.0.0.1"]


def wait_for_ssh(g: Guest, key: Path, timeout: float = 900, user: str = "gpuforge") -> float:
    """Seconds until `ssh ... true` works (cloud-init made the account and the host keys); CommandError on timeout."""
    t0 = time.monotonic()
    last = None
    while time.monotonic() - t0 < timeout:
        if g.proc is not None and not g.proc.running():
            res = g.proc.stop()
            raise CommandError(["qemu-system-x86_64"], res.returncode, res.stdout, g.serial.read_text(errors="replace")[-2000:],
                               reason=f"{g.name}: qemu exited")
        r = subp.run(ssh_argv(g, key, user) + ["true"], timeout=30, check=False)
        if r.ok:
            return time.monotonic() - t0
        last = r
        time.sleep(5)
    tail = g.serial.read_text(errors="replace")[-2000:] if g.serial.exists() else ""
    raise CommandError(ssh_argv(g, key, user), last.returncode if last else None, "", tail,
                       reason=f"{g.name}: no SSH on 127.0.0.1:{g.ssh_port} after {timeout:.0f}s")
