"""`gpu-validate setup cuda`: the CUDA toolkit from Debian (offline from the mirror) or NVIDIA's repository.

NVIDIA's repository is data (validator/data/repos.yaml); the version is the newest the loaded driver runs (the
CUDA -> minimum driver table, validator/data/cuda.yaml) unless --cuda names one, which the driver must meet.
"""

from __future__ import annotations

from typing import Optional

from validator.catalog import Catalog
from validator.errors import UserError
from validator.selection import cuda_allowed, max_cuda
from validator.setup import apt
from validator.setup.plan import Host, Plan

SOURCES = ("debian", "nvidia")


def choose_cuda(catalog: Catalog, driver: Optional[str], wanted: Optional[str]) -> str:
    """--cuda checked against the loaded driver, else the newest CUDA that driver runs."""
    if wanted:
        catalog.cuda_min_driver_for(wanted)  # unknown version: UserError listing the known ones
        if driver:
            d = cuda_allowed(wanted, driver, catalog)
            if not d.ok:
                raise UserError(f"CUDA {wanted} does not run on the loaded driver: {d.reason}",
                                hint="upgrade the driver first, or pick an older --cuda")
        return ".".join(wanted.split(".")[:2])
    if not driver:
        raise UserError("no NVIDIA driver is loaded, so no CUDA version can be chosen from it",
                        hint="pass --cuda VERSION (e.g. 12.2), or --source debian")
    best = max_cuda(driver, catalog)
    if best is None:
        raise UserError(f"driver {driver} is older than every CUDA in the table", hint="upgrade the driver")
    return best


def plan_cuda(host: Host, repos: apt.Repos, catalog: Catalog, *, source: str, driver: Optional[str],
              wanted: Optional[str]) -> Plan:
    if source not in SOURCES:
        raise UserError(f"unknown CUDA source {source!r}", hint="one of: " + ", ".join(SOURCES))
    have = apt.installed(host)
    if source == "debian":
        if wanted and ".".join(wanted.split(".")[:2]) != repos.cuda_debian_version:
            raise UserError(f"Debian's toolkit is CUDA {repos.cuda_debian_version}, not {wanted}",
                            hint="use --source nvidia for other versions")
        todo = apt.missing(have, repos.cuda_debian_packages)
        if not todo:
            return Plan("cuda", notes=(f"Debian's CUDA {repos.cuda_debian_version} toolkit already installed",))
        actions = apt.plan_components(host, repos.native_components)
        return Plan("cuda", tuple(actions + [apt.apt_update(), apt.apt_install(todo, f"CUDA {repos.cuda_debian_version}")]))
    version = choose_cuda(catalog, driver, wanted)
    major, minor = version.split(".")[:2]
    nv = repos.cuda_nvidia
    code = apt.codename(host)
    distro = (nv.get("distros") or {}).get(code)
    if not distro:
        raise UserError(f"NVIDIA's CUDA repository has no entry for this OS ({code or 'unknown release'})",
                        hint=f"known: {', '.join(sorted(nv.get('distros') or {}))} ({repos.source}: cuda.nvidia.distros)")
    package = nv["package"].format(cuda_major=major, cuda_minor=minor)
    if package in have:
        return Plan("cuda", notes=(f"{package} already installed",))
    repo = apt.repo_from(nv, "NVIDIA CUDA", distro=distro)
    actions = apt.plan_repo(host, repo) + [apt.apt_install([package], f"CUDA {version} (driver {driver or 'not loaded'})")]
    return Plan("cuda", tuple(actions), notes=(f"CUDA {version}: newest the driver runs" if not wanted else f"CUDA {version}",))
