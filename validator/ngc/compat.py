"""Which NGC releases a node runs: natively, only through CUDA forward compatibility, or not. Pure functions; each
verdict names the rule that decided it and the driver the release needs.

The thresholds come from cuda.yaml (CUDA X.Y -> minimum driver, lowest compute capability per CUDA major) and from
the release's own note (its stated minimum, its forward-compatible branches, its GPU floor) in data/ngc.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from validator.catalog import Catalog
from validator.ngc.catalog import Image, Release
from validator.selection import branch_of, vkey

NATIVE, FORWARD, NO = "native", "forward-compat", "no"

# Rule ids (stable strings: reports, tests and dashboards key on them).
R_NO_DRIVER = "ngc.no-driver"
R_GPU_ARCH = "ngc.gpu-arch"
R_NATIVE = "ngc.native"
R_MINOR = "ngc.minor-compat"
R_FORWARD = "ngc.forward-compat"
R_FORWARD_GEFORCE = "ngc.forward-compat-geforce"
R_FORWARD_NO_GPU = "ngc.forward-compat-unknown-gpu"
R_TOO_OLD = "ngc.driver-too-old"


@dataclass(frozen=True)
class GpuFacts:
    name: str
    compute_capability: Optional[str]  # None: a device the catalog does not know
    datacenter: Optional[bool]


@dataclass(frozen=True)
class NodeFacts:
    """What the rules need from a node: its loaded driver and its GPUs."""

    driver: Optional[str]
    gpus: Tuple[GpuFacts, ...] = ()
    source: str = ""

    def describe(self) -> str:
        names = {}
        for g in self.gpus:
            names[g.name] = names.get(g.name, 0) + 1
        gpus = ", ".join(f"{n}x {name}" for name, n in names.items()) or "no GPU"
        return f"driver {self.driver or 'not loaded'}, {gpus}"


@dataclass(frozen=True)
class Verdict:
    release: Release
    kind: str  # native | forward-compat | no
    rule: str
    reason: str
    needs: str  # the lowest driver that runs the release natively

    @property
    def ok(self) -> bool:
        return self.kind != NO

    def to_dict(self) -> dict:
        return {"image": self.release.image, "tag": self.release.tag, "cuda": self.release.cuda, "verdict": self.kind,
                "rule": self.rule, "reason": self.reason, "needs_driver": self.needs, "verified": self.release.verified}


def native_minimum(release: Release, catalog: Catalog) -> str:
    """The lowest driver that runs a release without forward compatibility.

    The release note's own minimum when it gives one (NVIDIA often names a branch below the toolkit's minimum and
    relies on minor-version compatibility), but never below the first driver of the CUDA major (cuda.yaml)."""
    if release.min_driver is None:
        return catalog.cuda_min_driver_for(release.cuda)
    return max(release.min_driver, major_floor(release.cuda, catalog), key=vkey)


def major_floor(cuda: str, catalog: Catalog) -> str:
    """Minor-version compatibility floor: the minimum of the oldest CUDA X.y that cuda.yaml lists for major X."""
    major = cuda.split(".")[0]
    same = [k for k in catalog.cuda_min_driver if k.split(".")[0] == major]
    return catalog.cuda_min_driver[min(same, key=vkey)]


def judge(release: Release, facts: NodeFacts, catalog: Catalog) -> Verdict:
    """Native, forward-compat or no, with the rule that decided (checked in this order: driver present, GPU
    architecture, CUDA's own minimum, the note's minimum, the note's forward-compatible branches)."""
    need = native_minimum(release, catalog)

    def v(kind: str, rule: str, reason: str) -> Verdict:
        return Verdict(release, kind, rule, reason, need)

    if not facts.driver:
        return v(NO, R_NO_DRIVER, f"no NVIDIA driver loaded ({facts.source or 'node'}); {release.ref} needs driver >= {need}")
    d = facts.driver
    arch = _arch_problem(release, facts, catalog)
    if arch:
        return v(NO, R_GPU_ARCH, arch)
    toolkit = catalog.cuda_min_driver_for(release.cuda)
    note_ok = release.min_driver is None or vkey(d) >= vkey(release.min_driver)
    if vkey(d) >= vkey(toolkit) and note_ok:
        stricter = f" and >= {release.min_driver} as the release note requires" \
            if release.min_driver and vkey(release.min_driver) > vkey(toolkit) else ""
        return v(NATIVE, R_NATIVE, f"driver {d} >= {toolkit}, the minimum for CUDA {release.cuda_key} (cuda.yaml){stricter}")
    if vkey(d) >= vkey(need):
        return v(NATIVE, R_MINOR, f"driver {d} >= {release.min_driver} as the release note requires; below CUDA "
                 f"{release.cuda_key}'s own minimum {toolkit}, so it runs through minor-version compatibility "
                 "(no JIT of newer PTX)")
    return _forward(release, facts, need, v)


def _arch_problem(release: Release, facts: NodeFacts, catalog: Catalog) -> Optional[str]:
    """The release note's GPU floor, else the CUDA major's (cuda.yaml: CUDA 13 drops Volta and older)."""
    major = release.cuda.split(".")[0]
    for floor, who in ((release.min_compute_capability, "release note"), (catalog.cuda_min_cc.get(major), f"CUDA {major}, cuda.yaml")):
        for g in facts.gpus:
            if floor and g.compute_capability and vkey(g.compute_capability) < vkey(floor):
                return f"{release.ref} needs compute capability >= {floor} ({who}); {g.name} is {g.compute_capability}"
    return None


def _forward(release: Release, facts: NodeFacts, need: str, v) -> Verdict:
    d = facts.driver or ""
    listed = ", ".join(fc_text(e) for e in release.forward_compat)
    entry = next((e for e in release.forward_compat if branch_of(e) == branch_of(d)), None)
    too_old = f"driver {d} is older than {need}, the minimum {release.ref} (CUDA {release.cuda}) needs"
    if entry is None:
        alt = f"; data-center GPUs may also use {listed} (forward compatibility)" if listed else \
            "; no forward-compatible branch is recorded for it"
        return v(NO, R_TOO_OLD, too_old + alt)
    if vkey(d) < vkey(entry):
        return v(NO, R_TOO_OLD, f"{too_old}; branch {branch_of(d)} runs it through forward compatibility only from {entry} on")
    if not facts.gpus or any(g.datacenter is None for g in facts.gpus):
        return v(NO, R_FORWARD_NO_GPU, f"{too_old}; branch {branch_of(d)} would run it through forward compatibility, "
                 "which needs data-center GPUs, and the GPUs here are not all known to the catalog")
    geforce = [g.name for g in facts.gpus if not g.datacenter]
    if geforce:
        return v(NO, R_FORWARD_GEFORCE, f"{too_old}; forward compatibility (branch {branch_of(d)}) is for data-center "
                 f"GPUs only, not {', '.join(sorted(set(geforce)))}")
    return v(FORWARD, R_FORWARD, f"driver {d} is below {need}, but branch {branch_of(d)} is forward-compatible "
             f"({fc_text(entry)}) on data-center GPUs: the cuda-compat libraries in the image run CUDA {release.cuda}")


def fc_text(entry: str) -> str:
    return f"{entry}+" if "." in entry else f"R{entry}"


def judge_all(images: Sequence[Image], facts: NodeFacts, catalog: Catalog, cuda: Optional[str] = None) -> Tuple[Verdict, ...]:
    """Every release of the given images (optionally only one CUDA major.minor), oldest first per image."""
    want = None if cuda is None else ".".join(cuda.split(".")[:2])
    return tuple(judge(r, facts, catalog) for img in images for r in img.releases if want is None or r.cuda_key == want)


def newest_compatible(image: Image, facts: NodeFacts, catalog: Catalog) -> Optional[Verdict]:
    """The newest release of an image this node runs (natively or through forward compatibility)."""
    for r in reversed(image.releases):
        verdict = judge(r, facts, catalog)
        if verdict.ok:
            return verdict
    return None
