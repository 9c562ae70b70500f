"""gpu-validate setup driver|cuda|runtime|gpu-settings|tuning: what a node does to itself, planned then applied.

Every verb reads the node, plans the changes (nothing when the node is already as wanted), and applies them;
--check prints the plan and changes nothing; --json is what the Ansible roles and the first-boot hook read.
Exit 0 done (or nothing to do), 1 a step failed, 2 bad input (refused before any change).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import click

from validator.errors import UserError
from validator.setup import plan as planmod
from validator.setup.plan import Host, Plan

_root = click.option("--root", type=click.Path(exists=True, file_okay=False, path_type=Path), default=Path("/"),
                     show_default=True, help="Node root to read (a snapshot folder works with --check only).")
_check = click.option("--check", is_flag=True, help="Print what would change; change nothing.")
_json = click.option("--json", "as_json", is_flag=True, help="Print the plan/result as JSON.")


def _finish(plan: Plan, root: Path, check: bool, as_json: bool) -> None:
    """Apply unless --check, then report; the only place this command changes the node."""
    if not check and plan.actions:
        if root.resolve() != Path("/"):
            raise UserError(f"--root {root}: changes are only applied to the live node (/); add --check to plan")
        if os.geteuid() != 0:
            raise UserError("changing the node needs root", hint="run with sudo, or add --check to see the plan")
        planmod.apply(plan, Host(root))
    applied = not check
    if as_json:
        click.echo(planmod.to_json([plan], applied))
    else:
        click.echo(planmod.render(plan, applied))


@click.group("setup")
def command():
    """Set this node up: driver (native | precompiled | container), CUDA, container runtime, GPU settings, tuning."""


@command.command("tuning")
@click.option("--profile", "profile", default=None,
              help="Tuning profile name or file (default: /etc/gpuforge/tuning.yaml, else gpu-performance).")
@_root
@_check
@_json
def tuning_cmd(profile, root, check, as_json):
    """Apply the tuning profile the images bake: sysctl.d, the tuning unit, GRUB command line (reboot reported)."""
    from validator.setup import livetuning

    host = Host(root)
    p = livetuning.load_for_setup(host, profile)
    _finish(livetuning.plan_tuning(host, p, livetuning.profile_text(p)), root, check, as_json)


def _gpus(root: Path):
    """GPUs as the driver reports them (nvidia-smi -q -x, replayed under a snapshot root); () when none."""
    from validator.errors import ToolMissing
    from validator.node import Node
    from validator.nvsmi import NvsmiParseError, parse_nvsmi_xml

    node = Node.open(root)
    try:
        res = node.cmd("nvidia-smi-q.xml", ["nvidia-smi", "-q", "-x"], timeout=60)
    except ToolMissing:
        return ()
    if res.returncode != 0:
        return ()
    try:
        return parse_nvsmi_xml(res.stdout).gpus
    except NvsmiParseError:
        return ()


@command.command("gpu-settings")
@click.option("--profile", "profile", default=None, help="Tuning profile whose gpu: section is used.")
@click.option("--persistence", type=click.Choice(["on", "off"]), default=None, help="Override the profile.")
@click.option("--power-limit", default=None, help="Override the profile: 90% (of the default limit) or 350W.")
@_root
@_check
@_json
def gpu_settings_cmd(profile, persistence, power_limit, root, check, as_json):
    """Persistence mode and power limit on every GPU; a limit outside a GPU's min..max is refused (exit 2)."""
    from validator.pci import scan_gpus
    from validator.setup import gpusettings, livetuning

    p = livetuning.load_for_setup(Host(root), profile)
    wants = gpusettings.wants_from(p.gpu, None if persistence is None else persistence == "on", power_limit)
    pci = scan_gpus(root)
    gpus = _gpus(root) if pci else ()
    _finish(gpusettings.plan_gpu_settings(gpus, wants, len(pci)), root, check, as_json)


@command.command("runtime")
@click.option("--toolkit", type=click.Choice(["auto", "yes", "no"]), default="auto", show_default=True,
              help="NVIDIA Container Toolkit: auto = when an NVIDIA GPU is on PCI.")
@click.option("--default-runtime", is_flag=True, help="Make nvidia docker's default runtime.")
@_root
@_check
@_json
def runtime_cmd(toolkit, default_runtime, root, check, as_json):
    """Docker, the NVIDIA Container Toolkit (NVIDIA's repository) and the nvidia runtime in daemon.json."""
    from validator.pci import scan_gpus
    from validator.setup import apt, runtime

    n = len(scan_gpus(root))
    want = toolkit == "yes" or (toolkit == "auto" and n > 0)
    _finish(runtime.plan_runtime(Host(root), apt.load_repos(), toolkit=want, set_default=default_runtime,
                                 gpus_on_pci=n), root, check, as_json)


@command.command("cuda")
@click.option("--source", type=click.Choice(["debian", "nvidia"]), default="debian", show_default=True,
              help="debian: nvidia-cuda-toolkit from the Debian mirror (works offline); nvidia: NVIDIA's repository.")
@click.option("--cuda", "cuda", default=None, help="CUDA version (nvidia source; default: newest the loaded driver runs).")
@_root
@_check
@_json
def cuda_cmd(source, cuda, root, check, as_json):
    """The CUDA toolkit."""
    from validator.catalog import load_catalog
    from validator.detect import read_loaded_driver
    from validator.setup import apt
    from validator.setup import cuda as cudamod

    drv = read_loaded_driver(root).version
    _finish(cudamod.plan_cuda(Host(root), apt.load_repos(), load_catalog(), source=source, driver=drv, wanted=cuda),
            root, check, as_json)


@command.command("driver")
@click.option("--method", "method", required=True, help="native | precompiled | container")
@click.option("--package", "package_set", default="nvidia-driver", show_default=True,
              help="native: nvidia-driver | nvidia-tesla-535-driver | nvidia-tesla-470-driver.")
@click.option("--deb", "debs", multiple=True, type=click.Path(dir_okay=False),
              help="precompiled: choose among these local .deb files instead of the apt lists.")
@click.option("--driver", "driver", default=None, help="precompiled: driver version.")
@click.option("--flavour", type=click.Choice(["open", "proprietary"]), default=None, help="precompiled: module flavour.")
@click.option("--image", default=None, help="container: the driver container image reference.")
@click.option("--kernel", default=None, help="Kernel ABI (default: the running kernel).")
@click.option("--force", is_flag=True, help="Install even when no NVIDIA GPU is on PCI.")
@_root
@_check
@_json
def driver_cmd(method, package_set, debs, driver, flavour, image, kernel, force, root, check, as_json):
    """Install the NVIDIA driver by one method; switching method purges the other's packages first."""
    setup_driver(method, package_set=package_set, debs=debs, driver=driver, flavour=flavour, image=image,
                 kernel=kernel, force=force, root=root, check=check, as_json=as_json)


def setup_driver(method: str, *, package_set: str = "nvidia-driver", debs=(), driver=None, flavour=None, image=None,
                 kernel=None, force: bool = False, root: Path = Path("/"), check: bool = False, as_json: bool = False):
    """One path for `setup driver` and `drivers install --method`: validate, read the node, plan, apply, report."""
    from validator.catalog import load_catalog
    from validator.setup import apt
    from validator.setup import driver as drv

    repos = apt.load_repos()
    req = drv.DriverRequest(method, _kernel(root, kernel), package_set, tuple(debs), driver, flavour, image, force)
    drv.check_request(req, repos)  # bad input: exit 2 before the node is even read
    catalog = load_catalog()
    host = Host(root)
    _finish(drv.plan_driver(host, req, drv.read_state(host, req, catalog), repos, catalog), root, check, as_json)


def _kernel(root: Path, kernel: Optional[str]) -> str:
    from validator.detect import read_kernel

    k = kernel or read_kernel(root) or (os.uname().release if str(root) == "/" else None)
    if not k:
        raise UserError(f"cannot read the kernel release under {root}", hint="pass --kernel")
    return k

