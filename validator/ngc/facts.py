"""Read what the NGC rules need from a node (live `/` or a captured snapshot): the loaded driver and the GPUs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

from validator.catalog import Catalog, GpuModel
from validator.detect import read_loaded_driver
from validator.errors import UserError
from validator.ngc.compat import GpuFacts, NodeFacts
from validator.node import Node
from validator.pci import scan_gpus


def gpu_facts(model: Optional[GpuModel], pci_id: str = "") -> GpuFacts:
    if model is None:
        return GpuFacts(f"unknown NVIDIA device {pci_id}", None, None)
    return GpuFacts(model.name, model.compute_capability, model.datacenter)


def read_facts(root: Union[str, Path], catalog: Catalog, driver: Optional[str] = None,
               gpus: Sequence[str] = ()) -> NodeFacts:
    """The node's driver (/proc/driver/nvidia/version) and GPUs (PCI scan named by the catalog) under root;
    `driver` and `gpus` (catalog names) replace what was read, for planning ('would 535 run it on H100s?')."""
    node = Node.open(root)
    where = "this node" if node.live else f"snapshot {node.root}"
    if driver is not None and not all(p.isdigit() for p in driver.split(".")):
        raise UserError(f"--driver {driver!r} is not a driver version", hint="like 550.163.01 or 535")
    if gpus:
        found = tuple(gpu_facts(catalog.find(name)) for name in gpus)
    else:
        found = tuple(gpu_facts(catalog.by_pci_id(p.device_id), p.pci_id) for p in scan_gpus(node.root))
    loaded = read_loaded_driver(node.root)
    source = f"--driver {driver}" if driver else (f"{loaded.source} on {where}" if loaded.loaded else where)
    return NodeFacts(driver or loaded.version, found, source)
