"""`gpu-validate setup driver --method native|precompiled|container`: one interface, three ways to get the module.

- native: Debian's packages (nvidia-driver or nvidia-tesla-NNN-driver), DKMS compiles the module on the node.
- precompiled: gpuforge's kmod package for this kernel (validator.precompiled: choose + install).
- container: a driver container loads the modules (validator.driver_container, when this validator ships it).

Switching method purges the other methods' packages (or stops their container) first; nouveau is blacklisted and
the initramfs regenerated whenever the module packages or the blacklist changed.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from validator import precompiled
from validator.detect import LoadedDriver
from validator.errors import UserError
from validator.setup import apt
from validator.setup.nodefiles import NOUVEAU_BLACKLIST, NOUVEAU_PATH
from validator.setup.plan import Action, Host, Plan, call, remove, run, write

METHODS = ("native", "precompiled", "container")
CONTAINER_NAME = "gpuforge-driver"


@dataclass(frozen=True)
class DriverRequest:
    method: str
    kernel: str
    package_set: str = "nvidia-driver"  # native: a key of repos.yaml native.package_sets
    debs: Tuple[str, ...] = ()  # precompiled: choose among these local .debs instead of the apt lists
    driver: Optional[str] = None  # precompiled: driver version
    flavour: Optional[str] = None  # precompiled: open | proprietary
    image: Optional[str] = None  # container: image reference
    force: bool = False  # install even with no NVIDIA GPU on PCI (image builds, tests)


@dataclass(frozen=True)
class NodeState:
    """What the planner needs to know about the node, read once (see read_state)."""

    packages: Dict[str, str]
    gpus_on_pci: int
    models: tuple  # catalog models of the GPUs on PCI
    loaded: LoadedDriver
    nouveau_loaded: bool
    container: Optional[dict] = None  # the driver container's state file, when one ran
    offered: Tuple[precompiled.KmodPackage, ...] = ()
    deb_files: Dict[Tuple[str, str], str] = field(default_factory=dict)


def container_module():
    """validator.driver_container, or None while this validator does not ship the container method."""
    try:
        mod = importlib.import_module("validator.driver_container")
    except ImportError:
        return None
    return mod if hasattr(mod, "install") else None


def check_request(req: DriverRequest, repos: apt.Repos) -> None:
    """Bad input is refused before anything is read or changed (exit 2)."""
    if req.method not in METHODS:
        raise UserError(f"unknown driver method {req.method!r}", hint="one of: " + ", ".join(METHODS))
    if req.method == "native" and req.package_set not in repos.native_sets:
        raise UserError(f"unknown native package set {req.package_set!r}",
                        hint="one of: " + ", ".join(repos.native_sets) + f" ({repos.source})")
    if req.method == "container":
        if not req.image:
            raise UserError("the container method needs --image REF (a driver container built by gpuforge build containers)")
        if container_module() is None:
            raise UserError("driver method 'container' is not available yet in this validator",
                            hint="use --method precompiled or native")
    if req.method != "precompiled" and (req.debs or req.driver or req.flavour):
        raise UserError("--deb/--driver/--flavour belong to --method precompiled")


def owned_by_others(req: DriverRequest, st: NodeState, repos: apt.Repos) -> Tuple[List[str], List[str]]:
    """(packages to purge, why) for the methods other than the requested one."""
    purge, why = [], []
    kmods = apt.matching(st.packages, [precompiled.PREFIX + "*"])
    if req.method != "precompiled" and kmods:
        purge += kmods
        why.append("precompiled kmod packages")
    native = apt.matching(st.packages, repos.native_owned)
    if req.method != "native" and native:
        purge += native
        why.append("native (DKMS) packages")
    return purge, why


def _initramfs(host: Host, kernel: str) -> Optional[Action]:
    if apt.first_present(host, ("/usr/sbin/update-initramfs", "/sbin/update-initramfs")):
        return run(["update-initramfs", "-u", "-k", kernel], "nouveau blacklist and module changes in the initramfs", 900)
    if apt.first_present(host, ("/usr/bin/dracut", "/usr/sbin/dracut")):
        return run(["dracut", "-f", "--kver", kernel], "nouveau blacklist and module changes in the initramfs", 900)
    return None


def _plan_native(host: Host, req: DriverRequest, st: NodeState, repos: apt.Repos) -> List[Action]:
    pset = repos.native_sets[req.package_set]
    wanted = [repos.native_headers.format(kernel=req.kernel), *pset.packages]
    todo = apt.missing(st.packages, wanted)
    if not todo:
        return []
    actions = apt.plan_components(host, repos.native_components)
    actions += [apt.apt_update(), apt.apt_install(todo, "DKMS builds the module for " + req.kernel)]
    actions.append(run(["modinfo", "-k", req.kernel, "-F", "filename", pset.module], "DKMS built the module", 60))
    return actions


def _plan_precompiled(host: Host, req: DriverRequest, st: NodeState, catalog) -> Tuple[List[Action], Optional[str]]:
    choice = precompiled.choose(st.models, req.kernel, st.offered, catalog, driver=req.driver, flavour=req.flavour)
    if choice.package is None:
        raise UserError(choice.reason)
    pkg = choice.package
    now = precompiled.current(req.kernel, host.root)
    if now and (now.name, now.version) == (pkg.name, pkg.version) and host.read("/" + precompiled.PIN_FILE) == precompiled.pin_text(pkg):
        return [], f"{pkg.name}={pkg.version} already installed ({choice.reason})"
    deb = st.deb_files.get((pkg.name, pkg.version))
    return [call(lambda h: precompiled.install(pkg, h.root, run=h.run, deb=deb),
                 f"install {pkg.name}={pkg.version}: pin its user space, apt-get install, depmod, modinfo ({choice.reason})")], pkg.driver


def _plan_container(req: DriverRequest, st: NodeState) -> Tuple[List[Action], Optional[str]]:
    mod = container_module()
    assert mod is not None  # check_request refused the method otherwise
    cur = st.container or {}
    if cur.get("image") == req.image and cur.get("ready"):
        return [], f"driver container {req.image} already running and ready"
    image = req.image
    return [call(lambda h: mod.install(image, root=h.root, run=h.run),
                 f"run driver container {image} (pull, check the kernel label, load the modules)")], None


def plan_driver(host: Host, req: DriverRequest, st: NodeState, repos: apt.Repos, catalog) -> Plan:
    """Remove the other methods' parts, blacklist nouveau, install by the requested method, regenerate the initramfs."""
    check_request(req, repos)
    if st.gpus_on_pci == 0 and not req.force:
        return Plan("driver", skipped="no NVIDIA GPU on PCI: driver steps skipped (--force installs anyway)")
    actions: List[Action] = []
    notes: List[str] = []
    reboot: List[str] = []
    purge, why = owned_by_others(req, st, repos)
    if purge:
        actions.append(apt_purge_action(purge, "switching to " + req.method + ": " + ", ".join(why)))
        if req.method != "precompiled" and host.read("/" + precompiled.PIN_FILE) is not None:
            actions.append(remove("/" + precompiled.PIN_FILE, "the precompiled method's user-space pin"))
    if req.method != "container" and st.container:
        actions.append(run(["docker", "rm", "-f", CONTAINER_NAME], "switching away from the driver container", 300))
    blacklist_changed = host.read(NOUVEAU_PATH) != NOUVEAU_BLACKLIST
    if blacklist_changed:
        actions.append(write(NOUVEAU_PATH, NOUVEAU_BLACKLIST, why="nouveau must not bind the GPUs"))
    new_driver: Optional[str] = None
    if req.method == "native":
        install = _plan_native(host, req, st, repos)
        if not install:
            notes.append(f"native packages ({req.package_set}) already installed for {req.kernel}")
    elif req.method == "precompiled":
        install, info = _plan_precompiled(host, req, st, catalog)
        new_driver = info if install else None
        if not install and info:
            notes.append(info)
    else:
        install, info = _plan_container(req, st)
        if info:
            notes.append(info)
    actions += install
    if purge or blacklist_changed or (install and req.method != "container"):
        step = _initramfs(host, req.kernel)
        if step:
            actions.append(step)
        else:
            notes.append("no initramfs tool found: regenerate the initramfs by hand")
    if st.nouveau_loaded:
        reboot.append("nouveau is loaded: it is blacklisted now and gone after a reboot")
    if st.loaded.loaded and new_driver and st.loaded.version != new_driver:
        reboot.append(f"driver {st.loaded.version} is loaded, {new_driver} installed")
    return Plan("driver", tuple(actions), tuple(reboot), tuple(notes))


def apt_purge_action(packages: Sequence[str], why: str) -> Action:
    return apt.apt_purge(list(packages), why)


def read_state(host: Host, req: DriverRequest, catalog) -> NodeState:
    """Read what the planner needs: dpkg, PCI GPUs, loaded modules, offered precompiled packages."""
    from validator.detect import read_loaded_driver
    from validator.pci import scan_gpus

    pci = scan_gpus(host.root)
    models = tuple(dict.fromkeys(m for m in (catalog.by_pci_id(g.device_id) for g in pci) if m))
    offered: Tuple[precompiled.KmodPackage, ...] = ()
    files: Dict[Tuple[str, str], str] = {}
    if req.method == "precompiled" and (pci or req.force):
        if req.debs:
            local = [precompiled.read_deb(p, run=host.run) for p in req.debs]
            files = {(p.name, p.version): str(Path(d)) for p, d in zip(local, req.debs)}
            offered = tuple(local)
        else:
            # What apt offers plus what dpkg has (an image's lists are emptied; its installed kmod still counts).
            seen = {(p.name, p.version): p for p in precompiled.installed(host.root) + precompiled.available(host.root)}
            offered = tuple(seen.values())
    mod = container_module()
    state = mod.read_state(host.root) if mod is not None and hasattr(mod, "read_state") else None
    return NodeState(apt.installed(host), len(pci), models, read_loaded_driver(host.root),
                     host.path("/sys/module/nouveau").exists(), state if isinstance(state, dict) else None,
                     offered, files)
