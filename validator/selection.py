"""Driver branch, module flavour and CUDA selection: pure functions, each answer names the rule that decided.

Rules: a branch is offered for a GPU only if the driver's ID list has it; the open flavour only for
Turing and newer and where the branch's open list has the ID; Blackwell only open; a CUDA version only if the
driver meets its minimum (and the architecture is still in that CUDA). Where a driver has no shipped ID list,
the catalog's min/max branch decides, and the reason says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from validator.catalog import ARCHITECTURES, Catalog, GpuModel
from validator.idlists import DriverLists

FLAVOUR_PREFERENCE = ("open", "proprietary")  # open first: NVIDIA's default from branch 560, required on Blackwell

# Rule ids (stable strings: reports and tests key on them).
R_ID_LIST = "id-list"
R_CATALOG_RANGE = "catalog-branch-range"
R_OPEN_NEEDS_TURING = "open-needs-turing"
R_BLACKWELL_OPEN_ONLY = "blackwell-open-only"
R_NO_OPEN_LIST = "no-open-list"
R_CUDA_MIN_DRIVER = "cuda-min-driver"
R_CUDA_ARCH = "cuda-arch"
R_NO_DRIVER = "no-offered-driver"


@dataclass(frozen=True)
class Decision:
    """One yes/no with the rule that decided it and a sentence a person can act on."""

    ok: bool
    rule: str
    reason: str

    def to_dict(self) -> dict:
        return {"ok": self.ok, "rule": self.rule, "reason": self.reason}


def vkey(version: str) -> Tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version))


def branch_of(driver_version: str) -> int:
    return int(driver_version.split(".")[0])


def _gpu(model: GpuModel) -> str:
    return f"{model.name} ({model.pci_id_strs[0]})"


def branch_supports(model: GpuModel, driver_version: str, lists: Optional[DriverLists]) -> Decision:
    """Is the GPU in the driver's ID list (any flavour)? Without a list: the catalog's branch range."""
    if lists is not None and (lists.proprietary is not None or lists.open is not None):
        for lst in (lists.proprietary, lists.open):
            if lst is not None and any(i in lst for i in model.pci_ids):
                return Decision(True, R_ID_LIST, f"{_gpu(model)} is in {lst.name}.ids of {lists.origin}")
        names = " / ".join(f"{x.name}.ids" for x in (lists.proprietary, lists.open) if x is not None)
        return Decision(False, R_ID_LIST, f"{_gpu(model)} is not in {names} of {lists.origin}: driver {driver_version} does not support it")
    b = branch_of(driver_version)
    hi = "" if model.max_branch is None else f"..{model.max_branch}"
    span = f"catalog: branches {model.min_branch}{hi or '+'}; no ID list shipped for {driver_version}"
    if b < model.min_branch or (model.max_branch is not None and b > model.max_branch):
        return Decision(False, R_CATALOG_RANGE, f"branch {b} is outside {model.name}'s {span}")
    return Decision(True, R_CATALOG_RANGE, f"branch {b} is within {model.name}'s {span}")


def flavour_allowed(model: GpuModel, flavour: str, driver_version: str, lists: Optional[DriverLists]) -> Decision:
    """May this module flavour drive this GPU with this driver?"""
    rank = ARCHITECTURES.index(model.arch)
    if flavour == "proprietary" and model.arch == "Blackwell":
        return Decision(False, R_BLACKWELL_OPEN_ONLY, f"{model.name} is Blackwell: only the open kernel modules support it")
    if flavour == "open" and rank < ARCHITECTURES.index("Turing"):
        return Decision(False, R_OPEN_NEEDS_TURING, f"{model.name} is {model.arch}: open kernel modules need Turing or newer")
    if lists is not None and (lists.proprietary is not None or lists.open is not None):
        lst = lists.for_flavour(flavour)
        if lst is None:
            return Decision(False, R_NO_OPEN_LIST, f"driver {driver_version} ships no {flavour} ID list ({lists.origin}): no {flavour} modules for it")
        if any(i in lst for i in model.pci_ids):
            return Decision(True, R_ID_LIST, f"{_gpu(model)} is in {lst.name}.ids of {lists.origin}")
        return Decision(False, R_ID_LIST, f"{_gpu(model)} is not in {lst.name}.ids of {lists.origin}: the {flavour} modules of {driver_version} do not support it")
    d = branch_supports(model, driver_version, None)
    return Decision(d.ok, d.rule, f"{flavour}: {d.reason}")


def cuda_allowed(cuda: str, driver_version: str, catalog: Catalog, model: Optional[GpuModel] = None) -> Decision:
    """Does the driver meet the CUDA version's minimum, and is the GPU's architecture still in that CUDA?"""
    key = ".".join(cuda.split(".")[:2])
    need = catalog.cuda_min_driver_for(cuda)
    if model is not None:
        lowest = catalog.cuda_min_cc.get(key.split(".")[0])
        if lowest is not None and vkey(model.compute_capability) < vkey(lowest):
            return Decision(False, R_CUDA_ARCH, f"CUDA {key} needs compute capability >= {lowest}; {model.name} is {model.compute_capability}")
    if vkey(driver_version) < vkey(need):
        return Decision(False, R_CUDA_MIN_DRIVER, f"CUDA {key} needs driver >= {need}; {driver_version} is older")
    return Decision(True, R_CUDA_MIN_DRIVER, f"CUDA {key} needs driver >= {need}; {driver_version} meets it")


def max_cuda(driver_version: str, catalog: Catalog, model: Optional[GpuModel] = None) -> Optional[str]:
    """The newest CUDA in the table that this driver (and GPU) can run; None if none."""
    ok = [c for c in catalog.cuda_min_driver if cuda_allowed(c, driver_version, catalog, model).ok]
    return max(ok, key=vkey) if ok else None


@dataclass(frozen=True)
class DriverChoice:
    """The verdict for one driver version: the branch decision, one per flavour tried, and CUDA's."""

    driver_version: str
    branch_decision: Decision
    flavour_decisions: Tuple[Tuple[str, Decision], ...]
    cuda_decision: Optional[Decision] = None

    @property
    def branch(self) -> int:
        return branch_of(self.driver_version)

    @property
    def flavours(self) -> Tuple[str, ...]:
        """Every flavour that works, preferred first (empty when the branch itself says no)."""
        if not self.branch_decision.ok:
            return ()
        return tuple(f for f, d in self.flavour_decisions if d.ok)

    @property
    def flavour(self) -> Optional[str]:
        return self.flavours[0] if self.flavours else None

    @property
    def ok(self) -> bool:
        return bool(self.flavours) and (self.cuda_decision is None or self.cuda_decision.ok)

    @property
    def decisions(self) -> Tuple[Decision, ...]:
        """Every decision in order; flavour lines are left out when the branch already said no."""
        out = [self.branch_decision]
        if self.branch_decision.ok:
            out += [d for _, d in self.flavour_decisions]
        if self.cuda_decision is not None:
            out.append(self.cuda_decision)
        return tuple(out)

    @property
    def deciding(self) -> Decision:
        """The rule that decided: the blocking one for a no; for a yes, the chosen flavour's (or CUDA's)."""
        if not self.branch_decision.ok:
            return self.branch_decision
        if not self.flavours:
            return self.flavour_decisions[0][1]
        if self.cuda_decision is not None and not self.cuda_decision.ok:
            return self.cuda_decision
        return dict(self.flavour_decisions)[self.flavour]

    def to_dict(self) -> dict:
        return {
            "driver_version": self.driver_version,
            "branch": self.branch,
            "ok": self.ok,
            "flavour": self.flavour,
            "flavours": list(self.flavours),
            "rule": self.deciding.rule,
            "reason": self.deciding.reason,
            "decisions": [d.to_dict() for d in self.decisions],
        }


def evaluate_driver(
    model: GpuModel,
    driver_version: str,
    lists: Optional[DriverLists],
    catalog: Catalog,
    cuda: Optional[str] = None,
    flavour: Optional[str] = None,
) -> DriverChoice:
    """Branch, then each flavour (or the one asked), then CUDA; ok when a flavour works and CUDA fits."""
    fl_decisions = []
    for fl in (flavour,) if flavour else FLAVOUR_PREFERENCE:
        d = flavour_allowed(model, fl, driver_version, lists)
        fl_decisions.append((fl, Decision(d.ok, d.rule, d.reason if d.reason.startswith(f"{fl}:") else f"{fl}: {d.reason}")))
    c = cuda_allowed(cuda, driver_version, catalog, model) if cuda is not None else None
    return DriverChoice(driver_version, branch_supports(model, driver_version, lists), tuple(fl_decisions), c)


@dataclass(frozen=True)
class Recommendation:
    """What a node with this GPU should run among the offered drivers (newest that works)."""

    model: GpuModel
    ok: bool
    driver_version: Optional[str]
    flavour: Optional[str]
    cuda: Optional[str]  # the requested CUDA, else the newest the chosen driver runs
    choices: Tuple[DriverChoice, ...]  # every offered driver, newest first
    reason: Decision

    @property
    def branch(self) -> Optional[int]:
        return None if self.driver_version is None else branch_of(self.driver_version)

    def to_dict(self) -> dict:
        return {
            "model": self.model.name,
            "ok": self.ok,
            "driver_version": self.driver_version,
            "branch": self.branch,
            "flavour": self.flavour,
            "cuda": self.cuda,
            "rule": self.reason.rule,
            "reason": self.reason.reason,
            "choices": [c.to_dict() for c in self.choices],
        }


def recommend(
    model: GpuModel,
    offered: Sequence[Tuple[str, Optional[DriverLists]]],
    catalog: Catalog,
    cuda: Optional[str] = None,
    flavour: Optional[str] = None,
) -> Recommendation:
    """Pick the newest offered driver (version, its lists) that supports the GPU (and CUDA, and flavour)."""
    ordered = sorted(offered, key=lambda o: vkey(o[0]), reverse=True)
    choices = tuple(evaluate_driver(model, v, lists, catalog, cuda, flavour) for v, lists in ordered)
    for c in choices:
        if c.ok:
            use_cuda = cuda or max_cuda(c.driver_version, catalog, model)
            return Recommendation(model, True, c.driver_version, c.flavour, use_cuda, choices, c.deciding)
    if not choices:
        why = Decision(False, R_NO_DRIVER, "no driver is offered")
    else:
        versions = ", ".join(c.driver_version for c in choices)
        first = choices[0].deciding
        why = Decision(False, first.rule, f"none of the offered drivers ({versions}) fits; newest: {first.reason}")
        if all(c.branch_decision.rule == R_ID_LIST and not c.branch_decision.ok for c in choices):
            why = Decision(False, R_ID_LIST, f"{_gpu(model)} is in no offered driver's ID list ({versions}); the catalog says branch {model.min_branch}+ supports it")
    return Recommendation(model, False, None, None, cuda, choices, why)


@dataclass(frozen=True)
class Disagreement:
    """A shipped ID list and the catalog's branch range/flavours disagree about a model (the list wins)."""

    driver_version: str  # the nvidia-detect set it comes from
    list_name: str
    branch: int
    flavour: str
    model: str
    catalog_says: bool
    list_says: bool


def catalog_vs_lists(catalog: Catalog, sets) -> Tuple[Disagreement, ...]:
    """Every (list, model) where the catalog's min/max branch + flavours would answer otherwise than the list."""
    out = []
    from validator.idlists import merged_lists

    for s in sets:
        for lst in merged_lists(s):
            if lst.branch is None:
                continue
            for m in catalog.models:
                in_range = lst.branch >= m.min_branch and (m.max_branch is None or lst.branch <= m.max_branch)
                claims = in_range and lst.flavour in m.flavours
                has = any(i in lst for i in m.pci_ids)
                if claims != has:
                    out.append(Disagreement(s.driver_version, lst.name, lst.branch, lst.flavour, m.name, claims, has))
    return tuple(out)
