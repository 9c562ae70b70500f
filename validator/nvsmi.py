"""GPU facts as typed data, parsed from `nvidia-smi -q -x` (the fallback when NVML does not load)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Dict, Optional, Tuple

from validator.errors import GpuforgeError
from validator.parse import normalize_bus_id, parse_float, parse_int

# nvidia-smi XML tag of each clock-event reason -> our short name (bits from facts.md)
CLOCK_EVENT_TAGS = {
    "clocks_event_reason_gpu_idle": "gpu_idle",
    "clocks_event_reason_applications_clocks_setting": "applications_clocks",
    "clocks_event_reason_sw_power_cap": "sw_power_cap",
    "clocks_event_reason_hw_slowdown": "hw_slowdown",
    "clocks_event_reason_hw_thermal_slowdown": "hw_thermal_slowdown",
    "clocks_event_reason_hw_power_brake_slowdown": "hw_power_brake",
    "clocks_event_reason_sync_boost": "sync_boost",
    "clocks_event_reason_sw_thermal_slowdown": "sw_thermal_slowdown",
    "clocks_event_reason_display_clocks_setting": "display_clocks",
}


class NvsmiParseError(GpuforgeError):
    """nvidia-smi printed something that is not its XML report."""


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as the driver sees it; None = not reported (N/A) by this GPU/driver."""

    index: int
    bus_id: Optional[str] = None            # 0000:00:06.0  (nvidia-smi: pci.bus_id)
    name: Optional[str] = None              # product_name
    uuid: Optional[str] = None
    pci_device_id: Optional[int] = None     # 0x2330 (nvidia-smi: pci.device_id high 16 bits)
    architecture: Optional[str] = None
    vbios: Optional[str] = None
    persistence: Optional[bool] = None      # persistence_mode
    mig_enabled: Optional[bool] = None
    virtualization: Optional[str] = None    # "Pass-Through", "None", ...
    ecc_enabled: Optional[bool] = None      # ecc.mode.current
    ecc_pending: Optional[bool] = None      # ecc.mode.pending
    dbe_volatile: Optional[int] = None      # ecc.errors.uncorrected.volatile.dram (+sram)
    dbe_aggregate: Optional[int] = None     # ecc.errors.uncorrected.aggregate.dram (+sram)
    sbe_volatile: Optional[int] = None
    retired_sbe: Optional[int] = None       # retired_pages.sbe
    retired_dbe: Optional[int] = None       # retired_pages.dbe
    retired_pending: Optional[bool] = None  # retired_pages.pending
    remap_corr: Optional[int] = None        # remapped_rows.correctable
    remap_unc: Optional[int] = None         # remapped_rows.uncorrectable
    remap_pending: Optional[bool] = None    # remapped_rows.pending
    remap_failure: Optional[bool] = None    # remapped_rows.failure
    temp_c: Optional[float] = None          # temperature.gpu
    temp_headroom_c: Optional[float] = None  # gpu_temp_tlimit: degrees left before slowdown
    temp_slowdown_c: Optional[float] = None  # gpu_temp_slow_threshold (older GPUs)
    temp_shutdown_c: Optional[float] = None  # gpu_temp_max_threshold
    power_draw_w: Optional[float] = None    # power.draw
    power_limit_w: Optional[float] = None   # power.limit (current)
    power_default_w: Optional[float] = None  # power.default_limit
    power_max_w: Optional[float] = None     # power.max_limit
    power_min_w: Optional[float] = None     # power.min_limit
    clock_events: Tuple[str, ...] = ()      # active clocks_event_reasons (short names)
    pcie_gen: Optional[int] = None          # pcie.link.gen.current
    pcie_gen_max: Optional[int] = None      # pcie.link.gen.max
    pcie_width: Optional[int] = None        # pcie.link.width.current
    pcie_width_max: Optional[int] = None    # pcie.link.width.max
    replay_count: Optional[int] = None      # pci.replay_counter
    replay_rollover: Optional[int] = None
    memory_total_mib: Optional[int] = None  # memory.total
    sm_clock_mhz: Optional[int] = None
    sm_clock_max_mhz: Optional[int] = None
    # Hopper and later memory health (None: this driver/GPU does not report the field)
    sram_threshold_exceeded: Optional[bool] = None  # ecc_errors.aggregate.sram_threshold_exceeded
    unrepairable_memory: Optional[bool] = None      # ecc_errors.unrepairable_memory
    channel_repair_pending: Optional[bool] = None   # ecc_errors.channel_repair_pending
    tpc_repair_pending: Optional[bool] = None       # ecc_errors.tpc_repair_pending
    # NVSwitch / NVLink fabric registration (None: not an NVSwitch system or not reported)
    fabric_state: Optional[str] = None              # fabric.state: Not Started / In Progress / Completed
    fabric_status: Optional[str] = None             # fabric.status: Success or the error
    fabric_health: Optional[str] = None             # fabric.health.summary: Healthy / Unhealthy / ...
    # Readings outside their physical range, set to None above: (field, what was read and the valid range)
    invalid: Tuple[Tuple[str, str], ...] = ()

    def to_dict(self) -> dict:
        d = asdict(self)
        d["clock_events"] = list(self.clock_events)
        d["invalid"] = [list(x) for x in self.invalid]
        return d

    def broken(self, *fields: str) -> Tuple[str, ...]:
        """Why each of these readings is out of its physical range (empty: all plausible or not reported)."""
        return tuple(why for f, why in self.invalid if f in fields)


_COUNTER = (0, 2 ** 64 - 1)
# Physical range of each numeric reading: (nvidia-smi field, low, high, unit). A value outside is a broken
# reading (a driver returning garbage, a corrupt capture), reported as such and never judged as a fact.
RANGES: Dict[str, Tuple[str, float, float, str]] = {
    "temp_c": ("temperature.gpu", -40, 150, "C"),
    "temp_headroom_c": ("temperature.gpu.tlimit", -150, 200, "C"),
    "temp_slowdown_c": ("temperature.gpu_slowdown", 1, 250, "C"),
    "temp_shutdown_c": ("temperature.gpu_shutdown", 1, 250, "C"),
    "power_draw_w": ("power.draw", 0, 5000, "W"),
    "power_limit_w": ("power.limit", 1, 5000, "W"),
    "power_default_w": ("power.default_limit", 1, 5000, "W"),
    "power_max_w": ("power.max_limit", 1, 5000, "W"),
    "dbe_volatile": ("ecc.errors.uncorrected.volatile", *_COUNTER, ""),
    "dbe_aggregate": ("ecc.errors.uncorrected.aggregate", *_COUNTER, ""),
    "sbe_volatile": ("ecc.errors.corrected.volatile", *_COUNTER, ""),
    "retired_sbe": ("retired_pages.sbe", *_COUNTER, ""),
    "retired_dbe": ("retired_pages.dbe", *_COUNTER, ""),
    "remap_corr": ("remapped_rows.correctable", *_COUNTER, ""),
    "remap_unc": ("remapped_rows.uncorrectable", *_COUNTER, ""),
    "replay_count": ("pci.replay_counter", *_COUNTER, ""),
    "replay_rollover": ("pci.replay_rollover_counter", *_COUNTER, ""),
    "pcie_gen": ("pcie.link.gen.current", 1, 7, ""),
    "pcie_gen_max": ("pcie.link.gen.max", 1, 7, ""),
    "pcie_width": ("pcie.link.width.current", 1, 32, ""),
    "pcie_width_max": ("pcie.link.width.max", 1, 32, ""),
    "memory_total_mib": ("memory.total", 1, 1 << 22, "MiB"),
    "sm_clock_mhz": ("clocks.sm", 0, 10_000, "MHz"),
    "sm_clock_max_mhz": ("clocks.max.sm", 1, 10_000, "MHz"),
}
PCIE_WIDTHS = (1, 2, 4, 8, 12, 16, 32)
# A GPU never draws more than twice its board power limit (the sustained maximum); more is a broken sensor.
POWER_DRAW_MAX_FACTOR = 2.0


def _out_of_range(field_name: str, v) -> Optional[str]:
    name, lo, hi, unit = RANGES[field_name]
    u = f" {unit}" if unit else ""
    if isinstance(v, float) and not math.isfinite(v) or not lo <= v <= hi:
        return f"{name} {v:g}{u} outside {lo:g}..{hi:g}{u}"
    if field_name in ("pcie_width", "pcie_width_max") and v not in PCIE_WIDTHS:
        return f"{name} x{v:g} is no PCIe link width ({', '.join(f'x{w}' for w in PCIE_WIDTHS)})"
    return None


def checked(g: GpuInfo) -> GpuInfo:
    """g with every reading outside its physical range set to None and listed in g.invalid."""
    bad = []
    for f in RANGES:
        v = getattr(g, f)
        why = _out_of_range(f, v) if v is not None else None
        if why:
            bad.append((f, why))
    tdp = next((w for w in (g.power_max_w, g.power_default_w, g.power_limit_w) if w and 0 < w <= 5000), None)
    if tdp and g.power_draw_w is not None and g.power_draw_w > POWER_DRAW_MAX_FACTOR * tdp and \
            "power_draw_w" not in dict(bad):
        bad.append(("power_draw_w", f"power.draw {g.power_draw_w:g} W above {POWER_DRAW_MAX_FACTOR:g}x the board "
                                    f"limit {tdp:g} W"))
    if not bad:
        return g
    return replace(g, invalid=tuple(bad), **{f: None for f, _ in bad})


@dataclass(frozen=True)
class GpuData:
    """What the driver reports for the whole node, and where it came from (nvml / nvidia-smi)."""

    source: str
    driver_version: Optional[str] = None
    cuda_version: Optional[str] = None
    gpus: Tuple[GpuInfo, ...] = field(default_factory=tuple)

    def by_bus_id(self, bus_id: str) -> Optional[GpuInfo]:
        return next((g for g in self.gpus if g.bus_id == bus_id), None)

    @property
    def duplicates(self) -> Tuple[str, ...]:
        """Bus ids (or UUIDs) the driver lists more than once: one GPU counted twice is never two GPUs."""
        seen, dup = set(), []
        for g in self.gpus:
            for key in (g.bus_id, g.uuid):
                if key and key in seen and key not in dup:
                    dup.append(key)
                if key:
                    seen.add(key)
        return tuple(dup)


def _text(el: Optional[ET.Element], path: str) -> Optional[str]:
    if el is None:
        return None
    node = el.find(path)
    if node is None or node.text is None:
        return None
    t = node.text.strip()
    return None if t in ("", "N/A", "[N/A]", "Unknown Error", "Not Supported", "[Not Supported]") else t


def _int(el, path) -> Optional[int]:
    return parse_int(_text(el, path))


def _float(el, path) -> Optional[float]:
    return parse_float(_text(el, path))


def _bool(el, path, true=("enabled", "yes", "active"), false=("disabled", "no", "not active")) -> Optional[bool]:
    t = _text(el, path)
    if t is None:
        return None
    t = t.lower()
    return True if t in true else False if t in false else None


def _sum(*vals: Optional[int]) -> Optional[int]:
    got = [v for v in vals if v is not None]
    return sum(got) if got else None


def _first(*vals):
    return next((v for v in vals if v is not None), None)


def _gpu(index: int, g: ET.Element) -> GpuInfo:
    dev = _text(g, "pci/pci_device_id")
    dev_id = None
    if dev:
        v = parse_int("0x" + dev) if not dev.lower().startswith("0x") else parse_int(dev)
        dev_id = (v >> 16) & 0xFFFF if v is not None and v > 0xFFFF else v
    ecc = g.find("ecc_errors")
    vol = ecc.find("volatile") if ecc is not None else None
    agg = ecc.find("aggregate") if ecc is not None else None
    # Newer drivers split dram/sram; older ones have <double_bit><total>.
    dbe_vol = _sum(_int(vol, "dram_uncorrectable"), _int(vol, "sram_uncorrectable"),
                   _int(vol, "sram_uncorrectable_parity"), _int(vol, "sram_uncorrectable_secded"),
                   _int(vol, "double_bit/total"))
    dbe_agg = _sum(_int(agg, "dram_uncorrectable"), _int(agg, "sram_uncorrectable"),
                   _int(agg, "sram_uncorrectable_parity"), _int(agg, "sram_uncorrectable_secded"),
                   _int(agg, "double_bit/total"))
    sbe_vol = _sum(_int(vol, "dram_correctable"), _int(vol, "sram_correctable"), _int(vol, "single_bit/total"))
    events = []
    cer = g.find("clocks_event_reasons")
    if cer is None:
        cer = g.find("clocks_throttle_reasons")  # drivers before 535
    if cer is not None:
        for child in cer:
            tag = child.tag.replace("clocks_throttle_reason_", "clocks_event_reason_")
            if (child.text or "").strip().lower() == "active" and tag in CLOCK_EVENT_TAGS:
                events.append(CLOCK_EVENT_TAGS[tag])
    width = _text(g, "pci/pci_gpu_link_info/link_widths/current_link_width")
    width_max = _text(g, "pci/pci_gpu_link_info/link_widths/max_link_width")
    power = g.find("gpu_power_readings")
    if power is None:
        power = g.find("power_readings")
    return checked(GpuInfo(
        index=index,
        bus_id=normalize_bus_id(g.get("id") or _text(g, "pci/pci_bus_id")),
        name=_text(g, "product_name"),
        uuid=_text(g, "uuid"),
        pci_device_id=dev_id,
        architecture=_text(g, "product_architecture"),
        vbios=_text(g, "vbios_version"),
        persistence=_bool(g, "persistence_mode"),
        mig_enabled=_bool(g, "mig_mode/current_mig"),
        virtualization=_text(g, "gpu_virtualization_mode/virtualization_mode"),
        ecc_enabled=_bool(g, "ecc_mode/current_ecc"),
        ecc_pending=_bool(g, "ecc_mode/pending_ecc"),
        dbe_volatile=dbe_vol,
        dbe_aggregate=dbe_agg,
        sbe_volatile=sbe_vol,
        retired_sbe=_int(g, "retired_pages/multiple_single_bit_retirement/retired_count"),
        retired_dbe=_int(g, "retired_pages/double_bit_retirement/retired_count"),
        retired_pending=_bool(g, "retired_pages/pending_retirement"),
        remap_corr=_int(g, "remapped_rows/remapped_row_corr"),
        remap_unc=_int(g, "remapped_rows/remapped_row_unc"),
        remap_pending=_bool(g, "remapped_rows/remapped_row_pending"),
        remap_failure=_bool(g, "remapped_rows/remapped_row_failure"),
        temp_c=_float(g, "temperature/gpu_temp"),
        temp_headroom_c=_float(g, "temperature/gpu_temp_tlimit"),
        temp_slowdown_c=_float(g, "temperature/gpu_temp_slow_threshold"),
        temp_shutdown_c=_float(g, "temperature/gpu_temp_max_threshold"),
        power_draw_w=_first(_float(power, "average_power_draw"), _float(power, "power_draw"),
                            _float(power, "instant_power_draw")),
        power_limit_w=_first(_float(power, "current_power_limit"), _float(power, "power_limit")),
        power_default_w=_float(power, "default_power_limit"),
        power_max_w=_float(power, "max_power_limit"),
        power_min_w=_float(power, "min_power_limit"),
        clock_events=tuple(events),
        pcie_gen=_int(g, "pci/pci_gpu_link_info/pcie_gen/current_link_gen"),
        pcie_gen_max=_int(g, "pci/pci_gpu_link_info/pcie_gen/max_link_gen"),
        pcie_width=parse_int(width),
        pcie_width_max=parse_int(width_max),
        replay_count=_int(g, "pci/replay_counter"),
        replay_rollover=_int(g, "pci/replay_rollover_counter"),
        memory_total_mib=_int(g, "fb_memory_usage/total"),
        sm_clock_mhz=_int(g, "clocks/sm_clock"),
        sm_clock_max_mhz=_int(g, "max_clocks/sm_clock"),
        sram_threshold_exceeded=_bool(agg, "sram_threshold_exceeded"),
        unrepairable_memory=_bool(ecc, "unrepairable_memory"),
        channel_repair_pending=_bool(ecc, "channel_repair_pending"),
        tpc_repair_pending=_bool(ecc, "tpc_repair_pending"),
        fabric_state=_text(g, "fabric/state"),
        fabric_status=_text(g, "fabric/status"),
        fabric_health=_text(g, "fabric/health/summary"),
    ))


def parse_nvsmi_xml(text: str) -> GpuData:
    """Parse `nvidia-smi -q -x`; raises NvsmiParseError (never anything else) on bad input."""
    try:
        # Drop the DOCTYPE line: it names an external DTD that must never be fetched or resolved.
        body = "\n".join(l for l in (text or "").splitlines() if not l.lstrip().startswith("<!DOCTYPE"))
        root = ET.fromstring(body)
    except (ET.ParseError, ValueError, RecursionError) as e:
        raise NvsmiParseError(f"nvidia-smi XML: not readable ({e.__class__.__name__}: {str(e)[:80]})") from None
    if root.tag != "nvidia_smi_log":
        raise NvsmiParseError(f"nvidia-smi XML: root element is <{root.tag[:40]}>, expected <nvidia_smi_log>")
    try:
        gpus = tuple(_gpu(i, g) for i, g in enumerate(root.findall("gpu")))
    except RecursionError:
        raise NvsmiParseError("nvidia-smi XML: nested too deeply") from None
    attached = _int(root, "attached_gpus")
    if attached is not None and attached != len(gpus):  # a truncated or spliced report
        raise NvsmiParseError(f"nvidia-smi XML: attached_gpus says {attached}, the report lists {len(gpus)} GPU(s)")
    return GpuData("nvidia-smi", _text(root, "driver_version"), _text(root, "cuda_version"), gpus)
