"""Helpers for the validator tests: edit a node capture copy into a tuned node and into fault variants."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, Tuple

from validator.runner import validate
from validator.tuning import packaged_profile

XML = "cmd/nvidia-smi-q.xml"
GPU_DIR = "sys/devices/pci0000:00/0000:00:06.0"
XID79 = ("[ 5123.456789] NVRM: Xid (PCI:0000:00:06.0): 79, pid=1234, name=python3, "
         "GPU has fallen off the bus.\n")


def write(root: Path, rel: str, text: str) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.exists():
        p.chmod(0o644)
    p.write_text(text)


def sub(root: Path, rel: str, pattern: str, repl: str, count: int = 0) -> None:
    p = root / rel
    text = p.read_text()
    new, n = re.subn(pattern, repl, text, count=count)
    assert n > 0, f"{pattern!r} not found in {rel}"
    p.chmod(0o644)
    p.write_text(new)


def tune(root: Path) -> Path:
    """Make a capture copy look like a node running the gpuforge tuning profile (what the image bakes)."""
    prof = packaged_profile()
    cmdline = (root / "proc/cmdline").read_text().strip()
    write(root, "proc/cmdline", cmdline + " " + prof.cmdline_string() + "\n")
    for k, v in prof.sysctl:
        write(root, "proc/sys/" + k.replace(".", "/"), f"{v}\n")
        sub(root, "cmd/sysctl.txt", rf"(?m)^{re.escape(k)} = .*$", f"{k} = {v}")
    # a bare-metal-like cpufreq view: intel_pstate, performance governor, turbo on
    for pol in range(2):
        write(root, f"sys/devices/system/cpu/cpufreq/policy{pol}/scaling_driver", "intel_pstate\n")
        write(root, f"sys/devices/system/cpu/cpufreq/policy{pol}/scaling_governor", "performance\n")
    write(root, "sys/devices/system/cpu/intel_pstate/no_turbo", "0\n")
    write(root, "cmd/dmesg.txt", "[    0.000000] Linux version 6.18.44\n[    3.1] nvidia: loading out-of-tree module\n")
    write(root, "cmd/dmesg.txt.rc", "rc=0\n")
    return root


# fault name -> (edit function, the (check id, subject) that must change, its new status)
def _link(root):
    write(root, f"{GPU_DIR}/current_link_speed", "8.0 GT/s PCIe\n")
    write(root, f"{GPU_DIR}/current_link_width", "8\n")
    sub(root, XML, r"<current_link_gen>5<", "<current_link_gen>3<")
    sub(root, XML, r"<current_link_width>16x<", "<current_link_width>8x<")


def _dbe(root):
    sub(root, XML, r"(?s)(<volatile>.*?<dram_uncorrectable>)0(<)", r"\g<1>2\g<2>", count=1)


def _remap(root):
    sub(root, XML, r"<remapped_row_pending>No<", "<remapped_row_pending>Yes<")


def _governor(root):
    for pol in range(2):
        write(root, f"sys/devices/system/cpu/cpufreq/policy{pol}/scaling_governor", "powersave\n")


def _xid(root):
    with open(root / "cmd/dmesg.txt", "a") as f:
        f.write(XID79)


def _persistence(root):
    sub(root, XML, r"<persistence_mode>Enabled<", "<persistence_mode>Disabled<")


def _swappiness(root):
    write(root, "proc/sys/vm/swappiness", "60\n")
    sub(root, "cmd/sysctl.txt", r"(?m)^vm\.swappiness = .*$", "vm.swappiness = 60")


def _cmdline(root):
    sub(root, "proc/cmdline", r" iommu=pt", "")


GPU0 = "GPU0 0000:00:06.0"
FAULTS: Dict[str, Tuple] = {
    "link_gen3_x8": (_link, ("pcie.link", "0000:00:06.0"), "fail"),
    "dbe_volatile_2": (_dbe, ("gpu.ecc_errors", GPU0), "fail"),
    "remap_pending": (_remap, ("gpu.row_remap", GPU0), "warn"),
    "governor_powersave": (_governor, ("cpu.governor", ""), "warn"),
    "xid_79": (_xid, ("gpu.xid", ""), "fail"),
    "persistence_off": (_persistence, ("gpu.persistence", GPU0), "warn"),
    "swappiness_60": (_swappiness, ("memory.swappiness", ""), "warn"),
    "cmdline_no_iommu_pt": (_cmdline, ("iommu.cmdline", ""), "warn"),
}


def statuses(root: Path, **kw) -> Dict[Tuple[str, str], str]:
    rep = validate(root=root, **kw)
    return {(r.id, r.subject): r.status for r in rep.results}
