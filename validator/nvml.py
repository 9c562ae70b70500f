"""The one NVML wrapper: GPU facts through pynvml as typed GpuInfo (each field = the nvidia-smi one named in GpuInfo)."""

from __future__ import annotations

import ctypes
import logging
from typing import Any, Callable, Optional

from validator.nvsmi import GpuData, GpuInfo, checked
from validator.parse import normalize_bus_id

log = logging.getLogger("gpuforge.nvml")

# NVML clock-event bits (facts.md) -> the short names nvsmi.py uses
_EVENT_BITS = {
    0x1: "gpu_idle", 0x2: "applications_clocks", 0x4: "sw_power_cap", 0x8: "hw_slowdown",
    0x10: "sync_boost", 0x20: "sw_thermal_slowdown", 0x40: "hw_thermal_slowdown", 0x80: "hw_power_brake",
    0x100: "display_clocks",
}


# nvmlGpuFabricState_t / health summary -> the words nvidia-smi -q prints (0 = not supported: None)
_FABRIC_STATES = {1: "Not Started", 2: "In Progress", 3: "Completed"}
_FABRIC_HEALTH = {1: "Healthy", 2: "Unhealthy", 3: "Limited Capacity"}


class NvmlUnavailable(Exception):
    """pynvml is not installed or libnvidia-ml does not load: fall back to nvidia-smi."""


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _fabric(N, h, q) -> tuple:
    """(state, status, health summary) as nvidia-smi words; Nones when the GPU is not in an NVSwitch fabric."""
    info = None
    for struct, fn in (("c_nvmlGpuFabricInfo_v3_t", "nvmlDeviceGetGpuFabricInfoV"),
                       ("c_nvmlGpuFabricInfo_t", "nvmlDeviceGetGpuFabricInfo")):
        if hasattr(N, struct) and hasattr(N, fn):
            candidate = getattr(N, struct)()
            if q(getattr(N, fn), h, ctypes.byref(candidate)) is not None:
                info = candidate
                break
    state = _FABRIC_STATES.get(getattr(info, "state", 0)) if info is not None else None
    if state is None:
        return None, None, None
    status = "Success" if info.status == 0 else f"NVML error {info.status}"
    return state, status, _FABRIC_HEALTH.get(getattr(info, "healthSummary", 0))


def _memory_health(N, h, q) -> tuple:
    """(sram threshold exceeded, unrepairable memory, channel repair pending, tpc repair pending); None = N/A."""
    sram = None
    if hasattr(N, "c_nvmlEccSramErrorStatus_v1_t"):
        st = N.c_nvmlEccSramErrorStatus_v1_t()
        if q(N.nvmlDeviceGetSramEccErrorStatus, h, ctypes.byref(st)) is not None:
            sram = bool(st.bThresholdExceeded)
    unrep = q(getattr(N, "nvmlDeviceGetUnrepairableMemoryFlag_v1", None), h, conv=bool)
    repair = q(getattr(N, "nvmlDeviceGetRepairStatus", None), h)  # [channel, tpc]
    return sram, unrep, bool(repair[0]) if repair else None, bool(repair[1]) if repair else None


def read_nvml() -> GpuData:
    """All GPUs through NVML; raises NvmlUnavailable when the library cannot be used."""
    try:
        import pynvml as N  # nvidia-ml-py
    except Exception as e:  # ImportError, or a broken install
        raise NvmlUnavailable(f"pynvml not importable: {e}") from None
    try:
        N.nvmlInit()
    except Exception as e:
        raise NvmlUnavailable(f"NVML init failed: {e}") from None
    try:
        def q(fn: Callable, *a, conv: Callable = lambda x: x) -> Optional[Any]:
            try:
                return conv(fn(*a))
            except Exception:  # NVMLError_NotSupported and friends: that field is N/A on this GPU
                return None

        driver = q(N.nvmlSystemGetDriverVersion, conv=_s)
        cuda = q(N.nvmlSystemGetCudaDriverVersion_v2, conv=lambda v: f"{v // 1000}.{(v % 1000) // 10}")
        gpus = []
        for i in range(N.nvmlDeviceGetCount()):
            h = N.nvmlDeviceGetHandleByIndex(i)
            pci = q(N.nvmlDeviceGetPciInfo, h)
            ecc = q(N.nvmlDeviceGetEccMode, h)  # (current, pending)
            remap = q(N.nvmlDeviceGetRemappedRows, h)  # (corr, unc, pending, failure)
            reasons = q(N.nvmlDeviceGetCurrentClocksEventReasons, h)
            if reasons is None:
                reasons = q(N.nvmlDeviceGetCurrentClocksThrottleReasons, h)
            unc = N.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
            cor = N.NVML_MEMORY_ERROR_TYPE_CORRECTED
            mw = lambda v: v / 1000.0  # noqa: E731  NVML reports milliwatts
            fab_state, fab_status, fab_health = _fabric(N, h, q)
            sram, unrep, ch_rep, tpc_rep = _memory_health(N, h, q)
            gpus.append(checked(GpuInfo(
                index=i,
                bus_id=normalize_bus_id(_s(pci.busId)) if pci is not None else None,
                name=q(N.nvmlDeviceGetName, h, conv=_s),
                uuid=q(N.nvmlDeviceGetUUID, h, conv=_s),
                pci_device_id=(pci.pciDeviceId >> 16) & 0xFFFF if pci is not None else None,
                vbios=q(N.nvmlDeviceGetVbiosVersion, h, conv=_s),
                persistence=q(N.nvmlDeviceGetPersistenceMode, h, conv=bool),
                mig_enabled=q(N.nvmlDeviceGetMigMode, h, conv=lambda m: bool(m[0])),
                ecc_enabled=bool(ecc[0]) if ecc else None,
                ecc_pending=bool(ecc[1]) if ecc else None,
                dbe_volatile=q(N.nvmlDeviceGetTotalEccErrors, h, unc, N.NVML_VOLATILE_ECC),
                dbe_aggregate=q(N.nvmlDeviceGetTotalEccErrors, h, unc, N.NVML_AGGREGATE_ECC),
                sbe_volatile=q(N.nvmlDeviceGetTotalEccErrors, h, cor, N.NVML_VOLATILE_ECC),
                retired_sbe=q(N.nvmlDeviceGetRetiredPages, h, N.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS, conv=len),
                retired_dbe=q(N.nvmlDeviceGetRetiredPages, h, N.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR, conv=len),
                retired_pending=q(N.nvmlDeviceGetRetiredPagesPendingStatus, h, conv=bool),
                remap_corr=remap[0] if remap else None,
                remap_unc=remap[1] if remap else None,
                remap_pending=bool(remap[2]) if remap else None,
                remap_failure=bool(remap[3]) if remap else None,
                temp_c=q(N.nvmlDeviceGetTemperature, h, N.NVML_TEMPERATURE_GPU, conv=float),
                temp_slowdown_c=q(N.nvmlDeviceGetTemperatureThreshold, h, N.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN, conv=float),
                temp_shutdown_c=q(N.nvmlDeviceGetTemperatureThreshold, h, N.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN, conv=float),
                power_draw_w=q(N.nvmlDeviceGetPowerUsage, h, conv=mw),
                power_limit_w=q(N.nvmlDeviceGetEnforcedPowerLimit, h, conv=mw),
                power_default_w=q(N.nvmlDeviceGetPowerManagementDefaultLimit, h, conv=mw),
                power_max_w=q(N.nvmlDeviceGetPowerManagementLimitConstraints, h, conv=lambda c: c[1] / 1000.0),
                power_min_w=q(N.nvmlDeviceGetPowerManagementLimitConstraints, h, conv=lambda c: c[0] / 1000.0),
                clock_events=tuple(n for b, n in _EVENT_BITS.items() if reasons and reasons & b),
                pcie_gen=q(N.nvmlDeviceGetCurrPcieLinkGeneration, h),
                pcie_gen_max=q(N.nvmlDeviceGetMaxPcieLinkGeneration, h),
                pcie_width=q(N.nvmlDeviceGetCurrPcieLinkWidth, h),
                pcie_width_max=q(N.nvmlDeviceGetMaxPcieLinkWidth, h),
                replay_count=q(N.nvmlDeviceGetPcieReplayCounter, h),
                memory_total_mib=q(N.nvmlDeviceGetMemoryInfo, h, conv=lambda m: m.total // (1 << 20)),
                sm_clock_mhz=q(N.nvmlDeviceGetClockInfo, h, N.NVML_CLOCK_SM),
                sm_clock_max_mhz=q(N.nvmlDeviceGetMaxClockInfo, h, N.NVML_CLOCK_SM),
                sram_threshold_exceeded=sram, unrepairable_memory=unrep,
                channel_repair_pending=ch_rep, tpc_repair_pending=tpc_rep,
                fabric_state=fab_state, fabric_status=fab_status, fabric_health=fab_health,
            )))
        return GpuData("nvml", driver, cuda, tuple(gpus))
    except NvmlUnavailable:
        raise
    except Exception as e:  # a GPU that NVML cannot enumerate: let nvidia-smi give its own view
        raise NvmlUnavailable(f"NVML query failed: {e}") from None
    finally:
        try:
            N.nvmlShutdown()
        except Exception:
            pass
