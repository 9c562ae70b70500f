"""Capture a live node into a snapshot folder (the layout of tests/fixtures/nodes/*) that `run --root` replays."""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path
from typing import Iterable, List, Sequence, Tuple

from validator import userfile
from validator.atomic import OutputError, make_dirs
from validator.checks.nvlink import COMMANDS as NVLINK_COMMANDS
from validator.errors import CommandError, ConfigError, ToolMissing, UserError
from validator.node import Node
from validator import subp

# Files and globs the checks read (relative to /); absent ones are simply not captured.
FILES = [
    "proc/cmdline", "proc/modules", "proc/meminfo", "proc/cpuinfo", "proc/uptime", "proc/version",
    "proc/driver/nvidia/version", "proc/driver/nvidia/params", "proc/driver/nvidia/gpus/*/information",
    "proc/sys/vm/*", "proc/sys/kernel/numa_balancing", "proc/sys/kernel/pid_max", "proc/sys/kernel/nmi_watchdog",
    "proc/sys/net/core/rmem_max", "proc/sys/net/core/wmem_max",
    "sys/devices/system/cpu/online", "sys/devices/system/cpu/possible", "sys/devices/system/cpu/smt/*",
    "sys/devices/system/cpu/cpufreq/boost", "sys/devices/system/cpu/cpufreq/policy*/scaling_*",
    "sys/devices/system/cpu/cpu0/cpufreq/scaling_*", "sys/devices/system/cpu/intel_pstate/*",
    "sys/devices/system/cpu/cpuidle/current_driver", "sys/devices/system/cpu/cpu0/cpuidle/state*/name",
    "sys/devices/system/cpu/cpu0/cpuidle/state*/disable",
    "sys/devices/system/node/node*/cpulist", "sys/devices/system/node/node*/distance",
    "sys/kernel/iommu_groups/*/type", "sys/kernel/mm/transparent_hugepage/enabled",
    "sys/kernel/mm/transparent_hugepage/defrag", "sys/module/nvidia/version", "sys/module/pcie_aspm/parameters/policy",
    "etc/os-release", "etc/hostname", "etc/docker/daemon.json", "etc/containerd/config.toml", "etc/cdi/nvidia.*",
    "var/run/cdi/nvidia.*", "etc/gpuforge/tuning.yaml",
]
PCI_ATTRS = ["vendor", "device", "class", "subsystem_vendor", "subsystem_device", "revision", "numa_node",
             "local_cpulist", "local_cpus", "current_link_speed", "current_link_width", "max_link_speed",
             "max_link_width", "aer_dev_fatal", "aer_dev_nonfatal", "aer_dev_correctable", "uevent", "enable"]
COMMANDS: List[Tuple[str, Sequence[str]]] = [
    ("nvidia-smi-q.xml", ["nvidia-smi", "-q", "-x"]),
    ("nvidia-smi-topo.txt", ["nvidia-smi", "topo", "-m"]),
    ("sysctl.txt", ["sysctl", "-a"]),
    ("dmesg.txt", ["dmesg", "--notime"]),
    ("journal-k.txt", ["journalctl", "-k", "-b", "--no-pager", "-o", "cat"]),
    ("lspci-vvv.txt", ["lspci", "-vvv"]),
    ("nvcc.txt", ["nvcc", "--version"]),
    ("uname.txt", ["uname", "-a"]),
]
COMMANDS += [c for c in NVLINK_COMMANDS if c[0] not in {n for n, _ in COMMANDS}]  # links, errors, fabric manager
TOOLS = ["dcgmi", "nv-hostengine", "nvbandwidth", "all_reduce_perf", "gpu_burn", "ib_write_bw", "numactl", "lspci",
         "docker", "containerd", "podman", "nvidia-ctk", "nvidia-container-cli", "nvidia-container-runtime", "nvcc",
         "nv-fabricmanager", "systemctl"]


def _copy_file(src: Path, dst: Path) -> None:
    try:
        data = userfile.read_bytes(src, "node file")
    except ConfigError:
        return  # unreadable (permissions, write-only sysfs attribute, a FIFO, gigabytes): not captured
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data)


# What pcie.ib_* and the NCCL settings read under /sys/class/infiniband/<dev> (validator/fabric.py).
IB_ATTRS = ["node_type", "node_guid", "sys_image_guid", "node_desc", "fw_ver", "hca_type", "board_id", "hw_rev"]
IB_PORT_ATTRS = ["state", "phys_state", "rate", "link_layer", "lid", "sm_lid", "cap_mask", "counters/*",
                 "gid_attrs/types/[0-9]", "gid_attrs/types/1[0-5]", "gids/[0-9]", "gids/1[0-5]"]


def _capture_ib(root: Path, tmp: Path) -> None:
    """Each RDMA device as the kernel lays it out: its folder under the PCI function (attributes, ports, counters,
    the first 16 GIDs), the `device` link back to the function, and the /sys/class/infiniband link to it."""
    for link in sorted((root / "sys/class/infiniband").glob("*")):
        real = link.resolve()
        try:
            rel = real.relative_to(root.resolve())
        except ValueError:
            continue
        dst = tmp / rel
        dst.mkdir(parents=True, exist_ok=True)
        for attr in IB_ATTRS:
            _copy_file(real / attr, dst / attr)
        for port in sorted((real / "ports").glob("*")):
            for pattern in IB_PORT_ATTRS:
                for src in sorted(port.glob(pattern)):
                    if src.is_file():
                        _copy_file(src, dst / "ports" / port.name / src.relative_to(port))
        if (real / "device").is_symlink():
            os.symlink(os.readlink(real / "device"), dst / "device")
        cls = tmp / "sys/class/infiniband" / link.name
        cls.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(dst, cls.parent), cls)


def _pci_functions(root: Path) -> Iterable[Tuple[str, Path]]:
    bus = root / "sys/bus/pci/devices"
    for link in sorted(bus.glob("*")) if bus.is_dir() else []:
        yield link.name, link.resolve()


def capture(dest, root: Path = Path("/"), run_commands: bool = True) -> Path:
    """Snapshot the node at root into dest (a new folder, created atomically). Returns dest."""
    dest = Path(dest)
    if os.path.lexists(dest):
        raise UserError(f"{dest}: already exists", hint="capture into a new folder")
    root = Path(root)
    try:
        make_dirs(dest.parent)
    except OutputError as e:
        raise OutputError(dest, e.reason) from None
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=str(dest.parent.resolve())))
    except OSError as e:
        raise OutputError(dest, e.strerror or str(e)) from None
    try:
        for pattern in FILES:
            for src in root.glob(pattern):
                if src.is_file():
                    _copy_file(src, tmp / src.relative_to(root))
        links = []
        for addr, real in _pci_functions(root):
            rel = real.relative_to(root.resolve()) if str(real).startswith(str(root.resolve())) else None
            if rel is None:
                continue
            for attr in PCI_ATTRS:
                _copy_file(real / attr, tmp / rel / attr)
            grp = real / "iommu_group"
            if grp.is_symlink():
                target = tmp / rel / "iommu_group"
                target.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(os.path.relpath(tmp / "sys/kernel/iommu_groups" / Path(os.readlink(grp)).name, target.parent),
                           target)
            links.append(f"{addr} -> /{rel}")
        (tmp / "cmd").mkdir(parents=True, exist_ok=True)
        (tmp / "cmd/pci_links.txt").write_text("\n".join(links) + "\n")
        _capture_ib(root, tmp)
        if (root / "sys/kernel/iommu_groups").is_dir():  # an empty folder says "no groups", absence says "unknown"
            (tmp / "sys/kernel/iommu_groups").mkdir(parents=True, exist_ok=True)
        for g in sorted((root / "sys/kernel/iommu_groups").glob("*")):
            (tmp / "sys/kernel/iommu_groups" / g.name / "devices").mkdir(parents=True, exist_ok=True)
        if run_commands:
            for name, argv in COMMANDS:
                try:
                    res = subp.run(argv, timeout=60, check=False)
                    out, rc = res.stdout, res.returncode
                except ToolMissing:
                    out, rc = f"failed to run command '{argv[0]}': No such file or directory\n", 127
                except CommandError as e:
                    out, rc = e.message + "\n", 124
                (tmp / "cmd" / name).write_text(out)
                (tmp / "cmd" / f"{name}.rc").write_text(f"rc={rc}\n")
        live = Node.open(root)  # another root answers from its own cmd/ (never from this host's tools)
        (tmp / "cmd/which.txt").write_text("".join(f"{t}: {live.which(t) or 'missing'}\n" for t in TOOLS))
        (tmp / "cmd/which.txt.rc").write_text("rc=0\n")
        (tmp / "README.md").write_text(f"# Node snapshot captured by gpu-validate capture\n\nReplay: "
                                       f"`gpu-validate run --root {dest.name}`. Python {sys.version.split()[0]}.\n")
        for p in tmp.rglob("*"):  # a snapshot is data: readable, not executable
            if p.is_file() and not p.is_symlink():
                p.chmod(stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)
        os.rename(tmp, dest)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):  # disk full, a folder that became read-only: nothing half-written is left
            raise OutputError(dest, f"{e.strerror or e}" + (f" ({e.filename})" if e.filename else "")) from None
        raise
    return dest
