"""Inside the benchmark child: which GPUs there are (torch + NVML), never imported by the validator itself."""

from __future__ import annotations

from typing import List

from validator.bench.results import GpuInfo


def _nvml_handles():
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml, [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception:
        return None, []


def pcie_link(index: int):
    """(current gen, current width, max gen, max width) of GPU `index` from NVML; Nones when unknown."""
    nv, hs = _nvml_handles()
    if nv is None or index >= len(hs):
        return None, None, None, None
    h = hs[index]

    def g(name):
        fn = getattr(nv, name, None)
        try:
            return fn(h) if fn else None
        except Exception:
            return None

    gen_max = g("nvmlDeviceGetGpuMaxPcieLinkGeneration") or g("nvmlDeviceGetMaxPcieLinkGeneration")
    return (
        g("nvmlDeviceGetCurrPcieLinkGeneration"),
        g("nvmlDeviceGetCurrPcieLinkWidth"),
        gen_max,
        g("nvmlDeviceGetMaxPcieLinkWidth"),
    )


def gpu_infos(torch) -> List[GpuInfo]:
    """Torch's view (name, memory) joined with NVML's (PCI id, link) by PCI bus id."""
    nv, hs = _nvml_handles()
    by_bus = {}
    for h in hs:
        try:
            pci = nv.nvmlDeviceGetPciInfo(h)
            bus = pci.busId.decode() if isinstance(pci.busId, bytes) else pci.busId
            by_bus[bus.lower()[-12:]] = (h, pci.pciDeviceId >> 16)
        except Exception:
            continue
    out = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        bus = f"{p.pci_domain_id:04x}:{p.pci_bus_id:02x}:{p.pci_device_id:02x}.0"
        hit = by_bus.get(bus.lower()[-12:])
        dev_id = hit[1] if hit else None
        nvml_index = hs.index(hit[0]) if hit else i
        gen, width, gmax, wmax = pcie_link(nvml_index)
        out.append(
            GpuInfo(
                index=i,
                name=p.name,
                pci_device_id=dev_id,
                bus_id=bus,
                memory_gib=round(p.total_memory / (1 << 30), 1),
                pcie_gen=gen,
                pcie_width=width,
                pcie_gen_max=gmax,
                pcie_width_max=wmax,
            )
        )
    return out
