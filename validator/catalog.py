"""The GPU catalog: models, CUDA -> minimum driver, performance baselines (validator/data/*.yaml, schema-checked)."""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, Mapping, Optional, Tuple, Union

from validator.errors import ConfigError, UserError
from validator.schema import Reader, load_yaml

DATA_DIR = Path(__file__).parent / "data"
GPUS_FILE = "gpus.yaml"
CUDA_FILE = "cuda.yaml"
BASELINES_FILE = "baselines.yaml"

NVIDIA_VENDOR_ID = 0x10DE
PRECISIONS = ("bf16", "fp16", "tf32", "fp32", "fp64")
FLAVOURS = ("open", "proprietary")
# Oldest first: the order decides "Turing and newer" in the selection rules.
ARCHITECTURES = ("Volta", "Turing", "Ampere", "Ada", "Hopper", "Blackwell")
# Bidirectional GB/s of one NVLink link per generation (NVIDIA NVLink page: V100 6 links 300 GB/s, A100 12 links
# 600 GB/s, H100 18 links 900 GB/s, B200 18 links 1.8 TB/s): the catalog's link counts must agree with them.
NVLINK_LINK_BIDIR_GBS = {2: 50.0, 3: 50.0, 4: 50.0, 5: 100.0}


class FrozenMap(Mapping):
    """A read-only, hashable dict (frozen dataclasses stay hashable with a mapping inside)."""

    def __init__(self, data: Mapping = ()):
        self._items = tuple(dict(data).items())
        self._d = dict(self._items)

    def __getitem__(self, k):
        return self._d[k]

    def __iter__(self) -> Iterator:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __hash__(self) -> int:
        return hash(self._items)

    def __eq__(self, other) -> bool:
        return isinstance(other, Mapping) and dict(self._d) == dict(other)

    def __repr__(self) -> str:
        return f"FrozenMap({self._d!r})"


@dataclass(frozen=True)
class GpuModel:
    """One GPU variant as the catalog knows it (see the header of validator/data/gpus.yaml for units)."""

    name: str
    family: str
    pci_ids: Tuple[int, ...]
    arch: str
    compute_capability: str
    memory_gb: float
    mem_bw_gbs: float
    nvlink_gen: int
    nvlink_bw_gbs: float
    pcie_gen: int
    peak_tflops: FrozenMap  # bf16, fp16, tf32, fp32, fp64 dense; None = no such path
    tdp_w: float
    flavours: Tuple[str, ...]
    min_branch: int
    max_branch: Optional[int]
    source: str = ""
    nvlink_links: Optional[int] = None  # NVLink links of one GPU (None: not known); 0 = no NVLink
    nvlink_bridge: bool = False  # the links exist only with an NVLink bridge fitted (PCIe cards)
    datacenter: bool = True  # False for GeForce: CUDA forward compatibility is for data-center GPUs only

    @property
    def nvlink_link_gbs(self) -> Optional[float]:
        """Datasheet bandwidth of one link, one direction (GB/s): nvlink_bw_gbs / 2 / nvlink_links."""
        if not self.nvlink_links or not self.nvlink_bw_gbs:
            return None
        return self.nvlink_bw_gbs / 2.0 / self.nvlink_links

    @property
    def arch_rank(self) -> int:
        return ARCHITECTURES.index(self.arch)

    @property
    def pci_id_strs(self) -> Tuple[str, ...]:
        return tuple(f"10de:{i:04x}" for i in self.pci_ids)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "family": self.family,
            "pci_ids": list(self.pci_id_strs),
            "arch": self.arch,
            "compute_capability": self.compute_capability,
            "memory_gb": self.memory_gb,
            "mem_bw_gbs": self.mem_bw_gbs,
            "nvlink_gen": self.nvlink_gen,
            "nvlink_bw_gbs": self.nvlink_bw_gbs,
            "pcie_gen": self.pcie_gen,
            "peak_tflops": dict(self.peak_tflops),
            "tdp_w": self.tdp_w,
            "flavours": list(self.flavours),
            "min_branch": self.min_branch,
            "max_branch": self.max_branch,
            "source": self.source,
            "nvlink_links": self.nvlink_links,
            "nvlink_bridge": self.nvlink_bridge,
            "datacenter": self.datacenter,
        }


BASELINE_FIELDS = (
    "mem_bw_gbs",
    "nvlink_gbs",
    "pcie_h2d_gbs",
    "allreduce_busbw_gbs",
    "gpt_tflops",
    "gpt_mfu",
    "gpt_samples_per_s",
    "rdma_gdr_gbps",
)


@dataclass(frozen=True)
class Baseline:
    """Expected performance for a model (or a whole family); None where no trustworthy figure exists."""

    model: str  # the key in baselines.yaml: a model name or a family
    family: str
    mem_bw_gbs: Optional[float] = None
    nvlink_gbs: Optional[float] = None
    pcie_h2d_gbs: Optional[float] = None
    allreduce_busbw_gbs: Optional[float] = None  # 8 GPUs of one node
    gpt_tflops: Optional[float] = None  # GPT-1.2B, per GPU
    gpt_mfu: Optional[float] = None  # fraction of dense bf16 peak
    gpt_samples_per_s: Optional[float] = None
    rdma_gdr_gbps: Optional[float] = None  # ib_write_bw GPUDirect per NDR (400 Gb/s) HCA port, Gb/s
    sources: FrozenMap = field(default_factory=FrozenMap)  # field name -> where the number comes from

    def to_dict(self) -> dict:
        d = {"model": self.model, "family": self.family}
        d.update({f: getattr(self, f) for f in BASELINE_FIELDS})
        d["sources"] = dict(self.sources)
        return d


def _norm(s: str) -> str:
    """Case, spaces, dashes and underscores do not matter in names ('h100-sxm5' == 'H100 SXM5')."""
    return re.sub(r"[\s_\-]+", " ", s.strip().lower())


@dataclass(frozen=True)
class Catalog:
    models: Tuple[GpuModel, ...]
    cuda_min_driver: FrozenMap  # "12.4" -> "550.54.14"
    cuda_min_cc: FrozenMap  # CUDA major "13" -> lowest compute capability "7.5"
    baselines: Tuple[Baseline, ...] = ()
    files: Tuple[str, ...] = ()

    @property
    def names(self) -> Tuple[str, ...]:
        return tuple(m.name for m in self.models)

    @property
    def families(self) -> Tuple[str, ...]:
        return tuple(dict.fromkeys(m.family for m in self.models))

    def by_pci_id(self, device_id: int) -> Optional[GpuModel]:
        for m in self.models:
            if device_id in m.pci_ids:
                return m
        return None

    def find(self, name: str) -> GpuModel:
        """A model by name, family (first variant), or PCI ID ('2330', '0x2330', '10de:2330'); UserError with the nearest names."""
        q = _norm(name)
        for m in self.models:
            if _norm(m.name) == q:
                return m
        for m in self.models:
            if _norm(m.family) == q:
                return m
        pid = _parse_pci_id(q)
        if pid is not None and self.by_pci_id(pid) is not None:
            return self.by_pci_id(pid)
        # Every word of the query in the name: 'h100 pcie' -> 'H100 PCIe 80GB'.
        words = q.split()
        hits = [m for m in self.models if words and all(w in _norm(m.name).split() for w in words)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise UserError(
                f"GPU name {name!r} is ambiguous: {', '.join(m.name for m in hits)}",
                hint="give the full model name",
            )
        raise UserError(f"unknown GPU {name!r}", hint=self.suggest(name))

    def suggest(self, name: str) -> str:
        """'did you mean ...' from difflib over names and families; the family list when nothing is close."""
        keys = {}
        for m in self.models:
            keys.setdefault(_norm(m.family), m.family)
            keys.setdefault(_norm(m.name), m.name)
        close = difflib.get_close_matches(_norm(name), list(keys), n=4, cutoff=0.5)
        if close:
            return "did you mean: " + ", ".join(keys[c] for c in close)
        return "known GPUs: " + ", ".join(self.families)

    def baseline(self, model_name: str) -> Optional[Baseline]:
        """The baseline for a model: its own entry, else its family's; None when neither exists."""
        by_key = {_norm(b.model): b for b in self.baselines}
        q = _norm(model_name)
        if q in by_key and q not in {_norm(f) for f in self.families}:
            return by_key[q]
        model = self.find(model_name)
        return by_key.get(_norm(model.name)) or by_key.get(_norm(model.family))

    def cuda_min_driver_for(self, cuda: str) -> str:
        """Minimum driver for a CUDA version ('12.4' or '12.4.1'); UserError listing the known ones."""
        key = ".".join(str(cuda).strip().split(".")[:2])
        if key not in self.cuda_min_driver:
            raise UserError(
                f"unknown CUDA version {cuda!r}", hint="known: " + ", ".join(sorted(self.cuda_min_driver, key=_vkey))
            )
        return self.cuda_min_driver[key]


def _vkey(v: str) -> Tuple[int, ...]:
    return tuple(int(p) if p.isdigit() else 0 for p in re.split(r"[.\-]", v))


def _parse_pci_id(q: str) -> Optional[int]:
    m = re.fullmatch(r"(?:10de:|0x)?([0-9a-f]{4})", q)
    return int(m.group(1), 16) if m else None


# ---------------------------------------------------------------- loading


def _read_model(r: Reader) -> GpuModel:
    allowed = set(GpuModel.__dataclass_fields__)
    r.mapping(allowed)
    peaks_r = r.key("peak_tflops").mapping(PRECISIONS)
    peaks = {}
    for p in PRECISIONS:
        v = peaks_r.key(p, default=None)
        peaks[p] = None if v.value is None else v.number(lo=0)
    pci_ids = []
    for pr in r.key("pci_ids").list(nonempty=True):
        pci_ids.append(pr.int(lo=0, hi=0xFFFF))
    flavours = tuple(f.str(choices=FLAVOURS) for f in r.key("flavours").list(nonempty=True))
    cc = r.key("compute_capability")
    if not isinstance(cc.value, str) or not re.fullmatch(r"\d+\.\d+", cc.value):
        raise cc.fail('a quoted "major.minor" string such as "9.0"', cc.value)
    max_r = r.key("max_branch", default=None).optional()
    links_r = r.key("nvlink_links", default=None).optional()
    model = GpuModel(
        name=r.key("name").str(),
        family=r.key("family").str(),
        pci_ids=tuple(pci_ids),
        arch=r.key("arch").str(choices=ARCHITECTURES),
        compute_capability=cc.value,
        memory_gb=r.key("memory_gb").number(lo=1),
        mem_bw_gbs=r.key("mem_bw_gbs").number(lo=1),
        nvlink_gen=r.key("nvlink_gen").int(lo=0, hi=6),
        nvlink_bw_gbs=r.key("nvlink_bw_gbs").number(lo=0),
        pcie_gen=r.key("pcie_gen").int(lo=1, hi=6),
        peak_tflops=FrozenMap(peaks),
        tdp_w=r.key("tdp_w").number(lo=1),
        flavours=flavours,
        min_branch=r.key("min_branch").int(lo=100, hi=9999),
        max_branch=None if max_r is None else max_r.int(lo=100, hi=9999),
        source=r.key("source").str(),
        nvlink_links=None if links_r is None else links_r.int(lo=0, hi=36),
        nvlink_bridge=r.key("nvlink_bridge", default=False).bool(),
        datacenter=r.key("datacenter", default=True).bool(),
    )
    # Cross-field rules: the facts an entry must not contradict.
    if (model.nvlink_gen == 0) != (model.nvlink_bw_gbs == 0):
        raise r.key("nvlink_bw_gbs").fail("0 exactly when nvlink_gen is 0", model.nvlink_bw_gbs)
    if model.nvlink_links is not None and (model.nvlink_links == 0) != (model.nvlink_gen == 0):
        raise r.key("nvlink_links").fail("0 exactly when nvlink_gen is 0", model.nvlink_links)
    per_link = NVLINK_LINK_BIDIR_GBS.get(model.nvlink_gen)
    if model.nvlink_links and per_link and model.nvlink_bw_gbs != model.nvlink_links * per_link:
        raise r.key("nvlink_links").fail(
            f"nvlink_bw_gbs / {per_link:g} GB/s a link (NVLink {model.nvlink_gen}): "
            f"{model.nvlink_bw_gbs / per_link:g}", model.nvlink_links)
    if model.max_branch is not None and model.max_branch < model.min_branch:
        raise r.key("max_branch").fail(f"null or >= min_branch ({model.min_branch})", model.max_branch)
    if model.arch == "Volta" and "open" in model.flavours:
        raise r.key("flavours").fail("[proprietary] for Volta (open modules need Turing or newer)", list(flavours))
    if model.arch == "Blackwell" and model.flavours != ("open",):
        raise r.key("flavours").fail("[open] for Blackwell (open modules are required)", list(flavours))
    return model


def _read_models(path: Path) -> Tuple[GpuModel, ...]:
    root = Reader(str(path), load_yaml(path)).mapping({"gpus"})
    models = []
    seen_names: Dict[str, str] = {}
    seen_ids: Dict[int, str] = {}
    for mr in root.key("gpus").list(nonempty=True):
        m = _read_model(mr)
        if _norm(m.name) in seen_names:
            raise mr.key("name").fail("a unique model name", m.name)
        seen_names[_norm(m.name)] = m.name
        for pid in m.pci_ids:
            if pid in seen_ids:
                raise mr.key("pci_ids").fail(f"PCI IDs not already used by {seen_ids[pid]}", f"0x{pid:04x}")
            seen_ids[pid] = m.name
        models.append(m)
    return tuple(models)


def _read_cuda(path: Path) -> Tuple[FrozenMap, FrozenMap]:
    root = Reader(str(path), load_yaml(path)).mapping({"source", "min_driver", "min_compute_capability"})
    table = {}
    for k, v in root.key("min_driver").items():
        if not re.fullmatch(r"\d+\.\d+", k):
            raise v.fail('CUDA versions as quoted "major.minor" keys', k, key=v.path)
        drv = v.str()
        if not re.fullmatch(r"\d+\.\d+(\.\d+)?", drv):
            raise v.fail("a driver version such as 550.54.14", drv)
        table[k] = drv
    cc = {}
    for k, v in root.key("min_compute_capability", default={}).items():
        val = v.str()
        if not re.fullmatch(r"\d+\.\d+", val):
            raise v.fail('a compute capability such as "7.5"', val)
        cc[k] = val
    return FrozenMap(table), FrozenMap(cc)


def _read_baselines(path: Path, models: Tuple[GpuModel, ...]) -> Tuple[Baseline, ...]:
    root = Reader(str(path), load_yaml(path)).mapping({"baselines"})
    known = {_norm(m.name): m.family for m in models}
    known.update({_norm(m.family): m.family for m in models})
    out = []
    for br in root.key("baselines").list():
        br.mapping({"model", "sources", *BASELINE_FIELDS})
        key_r = br.key("model")
        key = key_r.str()
        if _norm(key) not in known:
            raise key_r.fail("a model name or family from gpus.yaml", key)
        vals = {}
        for f in BASELINE_FIELDS:
            fr = br.key(f, default=None).optional()
            vals[f] = None if fr is None else fr.number(lo=0)
        sources = {}
        for sk, sr in br.key("sources", default={}).items():
            if sk not in BASELINE_FIELDS:
                raise sr.fail(f"one of {', '.join(BASELINE_FIELDS)}", sk, key=sr.path)
            sources[sk] = sr.str()
        for f, v in vals.items():
            if v is not None and f not in sources:
                raise br.key("sources").fail(f"a source for {f} (every figure says where it comes from)", key=f"{br.path}.sources.{f}")
        out.append(Baseline(model=key, family=known[_norm(key)], sources=FrozenMap(sources), **vals))
    return tuple(out)


def _sibling(gpus_path: Path, name: str) -> Path:
    """cuda.yaml / baselines.yaml next to the given gpus.yaml, else the packaged one."""
    p = gpus_path.parent / name
    return p if p.exists() else DATA_DIR / name


@functools.lru_cache(maxsize=8)
def _load(gpus_path: Path) -> Catalog:
    models = _read_models(gpus_path)
    cuda_path = _sibling(gpus_path, CUDA_FILE)
    base_path = _sibling(gpus_path, BASELINES_FILE)
    cuda, cc = _read_cuda(cuda_path)
    baselines = _read_baselines(base_path, models)
    return Catalog(models, cuda, cc, baselines, (str(gpus_path), str(cuda_path), str(base_path)))


def load_catalog(path: Union[str, Path, None] = None) -> Catalog:
    """Load (cached) the catalog: a gpus.yaml path or a folder holding it; None = the packaged data."""
    p = Path(path) if path is not None else DATA_DIR / GPUS_FILE
    if p.is_dir():
        p = p / GPUS_FILE
    if not p.exists():
        raise ConfigError(str(p), "(file)", "an existing GPU catalog YAML file")
    return _load(p.resolve())
