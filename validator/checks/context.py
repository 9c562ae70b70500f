"""What checks read: a Context over a Node with memoised facts; a fact that cannot be read raises Unavailable."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from validator.checks.base import ReadingFailed, Unavailable
from validator.errors import CommandError, GpuforgeError, ToolMissing, UserError
from validator.node import Node, NodeReadError, NotCaptured
from validator.nvsmi import GpuData, GpuInfo, NvsmiParseError, parse_nvsmi_xml
from validator.parse import parse_cmdline, parse_sysctl_dump, sysctl_path
from validator.tuning import TuningProfile

log = logging.getLogger("gpuforge.checks")

# Command names (= snapshot file names under cmd/) and the argv each stands for on a live node.
CMD_NVSMI_XML = ("nvidia-smi-q.xml", ["nvidia-smi", "-q", "-x"])
CMD_SYSCTL = ("sysctl.txt", ["sysctl", "-a"])
CMD_DMESG = ("dmesg.txt", ["dmesg", "--notime"])
CMD_JOURNAL_K = ("journal-k.txt", ["journalctl", "-k", "-b", "--no-pager", "-o", "cat"])
CMD_LSPCI_VVV = ("lspci-vvv.txt", ["lspci", "-vvv"])
CMD_NVCC = ("nvcc.txt", ["nvcc", "--version"])


# Kernel parameters that only act on one CPU vendor.
_VENDOR_PREFIXES = {"intel": ("intel_iommu=", "intel_idle.", "intel_pstate="), "amd": ("amd_iommu=", "amd_pstate=")}


# InfiniBand port speeds (4X link rates, Gb/s) a --expect item may name instead of a GPU model: "8xNDR", "8x400G".
IB_RATES = {"SDR": 10, "DDR": 20, "QDR": 40, "FDR10": 40, "FDR": 56, "EDR": 100, "HDR": 200, "NDR": 400, "XDR": 800}
_RATE_ITEM = re.compile(r"^(?:(?P<name>[A-Za-z]+\d*)|(?P<gbps>\d+(?:\.\d+)?)\s*G(?:b(?:/?s)?)?)$", re.I)


def _ib_rate(name: str) -> Optional[float]:
    """'NDR' -> 400, '400G' / '400Gb/s' -> 400; None for anything else (a GPU model)."""
    m = _RATE_ITEM.match(name.strip())
    if not m:
        return None
    if m.group("gbps"):
        return float(m.group("gbps"))
    return float(IB_RATES[m.group("name").upper()]) if m.group("name").upper() in IB_RATES else None


@dataclass(frozen=True)
class Expectation:
    """--expect "8xH100" (or "2xH200,1xL4", or "8xH100,8xNDR" with the HCA ports): GPUs of which model/family,
    and optionally how many InfiniBand/RoCE ports at which rate."""

    items: Tuple[Tuple[int, str], ...]
    fabric: Tuple[Tuple[int, float], ...] = ()  # (ports, Gb/s)

    @property
    def total(self) -> int:
        return sum(n for n, _ in self.items)

    def __bool__(self) -> bool:
        """True when GPUs are expected (what the GPU checks ask); ports alone ("8xNDR") are for pcie.ib_* only."""
        return bool(self.items)

    def __str__(self) -> str:
        return ",".join([f"{n}x{m}" for n, m in self.items] + [f"{n}x{r:g}G" for n, r in self.fabric])

    @classmethod
    def parse(cls, text: str) -> "Expectation":
        items, fabric = [], []
        for part in text.split(","):
            part = part.strip()
            m = re.fullmatch(r"(?:(\d+)\s*[xX*]\s*)?(.+)", part)
            if not part or not m or not m.group(2).strip():
                raise UserError(f"--expect {text!r}: expected COUNTxMODEL[,COUNTxMODEL...], e.g. 8xH100 or 8xH100,8xNDR")
            n = int(m.group(1)) if m.group(1) else 1
            if n < 1 or n > 1024:
                raise UserError(f"--expect {text!r}: GPU count {n} out of range 1..1024")
            rate = _ib_rate(m.group(2))
            if rate is not None:
                fabric.append((n, rate))
            else:
                items.append((n, m.group(2).strip()))
        return cls(tuple(items), tuple(fabric))


def gpu_label(g: GpuInfo) -> str:
    return f"GPU{g.index} {g.bus_id or '?'}"


class Context:
    """Facts about one node for one run; each fact is read once, failures are remembered as Unavailable."""

    def __init__(self, node: Node, profile: TuningProfile, expect: Optional[Expectation] = None,
                 level: str = "quick", catalog: Any = None, use_nvml: Optional[bool] = None,
                 cuda_timeout: float = 120.0, docker_image: Optional[str] = None):
        self.node = node
        self.profile = profile
        self.expect = expect
        self.level = level
        self._catalog = catalog
        self.use_nvml = node.live if use_nvml is None else use_nvml
        self.cuda_timeout = cuda_timeout
        self.docker_image = docker_image
        self._memo: Dict[str, Any] = {}

    # ---- memo helper: a fact is a value or the Unavailable it raised ----------------------
    def _get(self, key: str, fn: Callable[[], Any]) -> Any:
        if key not in self._memo:
            try:
                self._memo[key] = ("ok", fn())
            except Unavailable as e:
                self._memo[key] = ("err", e)
            except NotCaptured as e:
                self._memo[key] = ("err", Unavailable(str(e)))
            except ToolMissing as e:
                self._memo[key] = ("err", Unavailable(f"tool missing: {e.argv[0]}"))
            except NodeReadError as e:
                self._memo[key] = ("err", Unavailable(f"{e.path}: {e.reason}"))
            except CommandError as e:
                self._memo[key] = ("err", Unavailable(e.message.splitlines()[0]))
        kind, val = self._memo[key]
        if kind == "err":
            raise val
        return val

    def fact(self, key: str) -> Any:
        """A fact a check already read (None when not read or not readable): for reports, never a new read."""
        kind, val = self._memo.get(key, ("err", None))
        return val if kind == "ok" else None

    def facts(self, prefix: str) -> Dict[str, Any]:
        """Every fact already read whose key starts with prefix (the benchmark runs: 'bench:')."""
        return {k: v for k, (kind, v) in self._memo.items() if k.startswith(prefix) and kind == "ok"}

    def memo(self, key: str, fn: Callable[[], Any]) -> Any:
        """Compute a fact once per run (e.g. a benchmark suite shared by several checks); Unavailable is remembered."""
        return self._get(key, fn)

    # ---- files ------------------------------------------------------------------------------
    def text(self, rel: str) -> str:
        return self._get("file:" + rel, lambda: self.node.read_text(rel))

    def text_or(self, rel: str, default: Optional[str] = None) -> Optional[str]:
        try:
            return self.text(rel)
        except Unavailable:
            return default

    # ---- catalog ------------------------------------------------------------------------------
    @property
    def catalog(self):
        def load():
            if self._catalog is not None:
                return self._catalog
            try:
                from validator.catalog import load_catalog
            except ImportError as e:  # catalog module not installed with this build
                raise Unavailable(f"GPU catalog not available ({e})") from None
            try:
                return load_catalog()
            except GpuforgeError as e:
                raise Unavailable(f"GPU catalog not loadable: {e}") from None
        return self._get("catalog", load)

    def model_of(self, g: GpuInfo):
        """Catalog model of a driver-reported GPU (by PCI device ID), or None."""
        try:
            cat = self.catalog
        except Unavailable:
            return None
        return cat.by_pci_id(g.pci_device_id) if g.pci_device_id is not None else None

    # ---- GPUs -----------------------------------------------------------------------------------
    @property
    def gpu_data(self) -> GpuData:
        """NVML on a live node when it loads, else `nvidia-smi -q -x`; Unavailable says why neither worked."""
        def read() -> GpuData:
            nvml_reason = ""
            if self.use_nvml:
                from validator.nvml import NvmlUnavailable, read_nvml
                try:
                    return read_nvml()
                except NvmlUnavailable as e:
                    nvml_reason = f"{e}; "
                    log.info("NVML unavailable (%s); using nvidia-smi", e)
            name, argv = CMD_NVSMI_XML
            try:
                res = self.node.cmd(name, argv, timeout=60)
            except NotCaptured as e:
                raise Unavailable(f"{nvml_reason}{e}") from None
            except ToolMissing:
                raise Unavailable(f"{nvml_reason}tool missing: nvidia-smi (driver user space not installed?)") from None
            if res.returncode != 0:
                tail = (res.stdout + res.stderr).strip().splitlines()[-1:] or [""]
                raise self._driver_broke(f"nvidia-smi failed (exit {res.returncode}): {tail[0][:160]}")
            try:
                return parse_nvsmi_xml(res.stdout)
            except NvsmiParseError as e:
                raise self._driver_broke(str(e)) from None
        return self._get("gpu_data", read)

    def _driver_broke(self, why: str) -> Unavailable:
        """nvidia-smi ran and failed: a failed reading when NVIDIA GPUs are on the bus, else only unavailable."""
        try:
            n = len(self.pci_gpus)
        except Unavailable:
            n = 0
        if n:
            return ReadingFailed(f"{why}; {n} NVIDIA GPU(s) on the PCI bus")
        return Unavailable(why)

    @property
    def gpus(self) -> Tuple[GpuInfo, ...]:
        return self.gpu_data.gpus

    @property
    def pci_gpus(self) -> list:
        """NVIDIA GPUs in sysfs (validator.pci): independent of the driver, so a dead driver still shows GPUs."""
        def read():
            from validator.pci import scan_gpus
            return scan_gpus(self.node.root)
        return self._get("pci_gpus", read)

    def pci_rel(self, address: str) -> str:
        """sysfs folder of a PCI function relative to the node root ('' when not found)."""
        for p in self.pci_gpus:
            if p.address == address:
                try:
                    return "/" + str(Path(p.sysfs_path).relative_to(self.node.root))
                except ValueError:
                    return p.sysfs_path
        return ""

    # ---- kernel -------------------------------------------------------------------------------
    @property
    def cmdline(self) -> List[Tuple[str, Optional[str]]]:
        return self._get("cmdline", lambda: parse_cmdline(self.text("/proc/cmdline")))

    @property
    def modules(self) -> Dict[str, str]:
        """Loaded modules from /proc/modules: name -> state."""
        def read():
            out = {}
            for line in self.text("/proc/modules").splitlines():
                parts = line.split()
                if len(parts) >= 5:
                    out[parts[0]] = parts[4]
                elif parts:
                    out[parts[0]] = "Live"
            return out
        return self._get("modules", read)

    def sysctl(self, name: str) -> str:
        """A sysctl value from /proc/sys, else from a `sysctl -a` dump; Unavailable when neither has it."""
        def read():
            if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name) or ".." in name:
                raise Unavailable(f"bad sysctl name {name!r}")
            text = self.text_or(sysctl_path(name))
            if text is not None:
                return " ".join(text.split())
            dump = self._get("sysctl_dump", lambda: parse_sysctl_dump(self.node.cmd_ok(*CMD_SYSCTL)))
            if name in dump:
                return " ".join(dump[name].split())
            raise Unavailable(f"sysctl {name} not present on this kernel")
        return self._get("sysctl:" + name, read)

    @property
    def kernel_log(self) -> str:
        """Kernel ring buffer (dmesg), else the boot's kernel journal; Unavailable when neither is readable."""
        def read():
            reasons = []
            for name, argv in (CMD_DMESG, CMD_JOURNAL_K):
                try:
                    res = self.node.cmd(name, argv, timeout=30)
                except NotCaptured:
                    reasons.append(f"{name} not captured")
                    continue
                except (ToolMissing, CommandError) as e:
                    reasons.append(str(e).splitlines()[0])
                    continue
                if res.returncode == 0:
                    return res.stdout
                reasons.append(f"{argv[0]} exit {res.returncode}: {(res.stderr or res.stdout).strip()[:100]}")
            raise Unavailable("kernel log not readable (" + "; ".join(reasons) + ")")
        return self._get("kernel_log", read)

    # ---- CPU --------------------------------------------------------------------------------------
    @property
    def cpuinfo_flags(self) -> Tuple[str, ...]:
        def read():
            for line in self.text("/proc/cpuinfo").splitlines():
                if line.startswith("flags"):
                    return tuple(line.partition(":")[2].split())
            return ()
        return self._get("cpuflags", read)

    @property
    def is_vm(self) -> bool:
        """A guest: the CPU says so (cpuinfo 'hypervisor' flag)."""
        try:
            return "hypervisor" in self.cpuinfo_flags
        except Unavailable:
            return False

    @property
    def cpu_vendor(self) -> str:
        """'intel', 'amd' or '' (from /proc/cpuinfo vendor_id)."""
        text = self.text_or("/proc/cpuinfo", "") or ""
        m = re.search(r"^vendor_id\s*:\s*(\S+)", text, re.M)
        v = (m.group(1) if m else "").lower()
        return "intel" if "intel" in v else "amd" if "amd" in v else ""

    def vendor_flags(self, flags: Sequence[str]) -> List[str]:
        """Drop the other CPU vendor's kernel parameters: the image carries both, only this CPU's matter."""
        vendor = self.cpu_vendor
        if not vendor:
            return list(flags)
        other = "amd" if vendor == "intel" else "intel"
        return [f for f in flags if not any(f.startswith(p) for p in _VENDOR_PREFIXES[other])]

    def which(self, tool: str) -> Optional[str]:
        return self.node.which(tool)
