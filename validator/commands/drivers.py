"""gpu-validate drivers list|install|rollback: precompiled NVIDIA kmod packages for this node's kernel."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from validator import precompiled
from validator.catalog import load_catalog
from validator.detect import read_kernel
from validator.errors import UserError
from validator.pci import scan_gpus

_root = click.option("--root", type=click.Path(exists=True, file_okay=False, path_type=Path), default=Path("/"),
                     show_default=True, help="Node root (apt lists, dpkg status, sysfs are read under it).")
_kernel = click.option("--kernel", default=None, help="Kernel ABI (default: the running kernel, uname -r).")
_json = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _kernel_of(root: Path, kernel) -> str:
    k = kernel or read_kernel(root) or (os.uname().release if str(root) == "/" else None)
    if not k:
        raise UserError(f"cannot read the kernel release under {root}", hint="pass --kernel")
    return k


@click.group("drivers")
def command():
    """Precompiled NVIDIA driver packages: list, install (the one that fits), roll back."""


@command.command("list")
@_root
@_kernel
@click.option("--all-kernels", is_flag=True, help="List packages for every kernel, not only this one.")
@_json
def list_cmd(root, kernel, all_kernels, as_json):
    """Installed and offered kmod packages (* = installed)."""
    k = _kernel_of(root, kernel)
    inst = {(p.name, p.version) for p in precompiled.installed(root)}
    rows = [p for p in precompiled.available(root) if all_kernels or p.kernel == k]
    rows += [p for p in precompiled.installed(root) if (all_kernels or p.kernel == k)
             and (p.name, p.version) not in {(r.name, r.version) for r in rows}]
    data = [dict(p.to_dict(), installed=(p.name, p.version) in inst) for p in rows]
    if as_json:
        click.echo(json.dumps({"kernel": k, "packages": data}, indent=2))
        return
    if not data:
        click.echo(f"no precompiled NVIDIA packages for {k} (apt lists under {root / precompiled.APT_LISTS})")
        return
    for d in data:
        click.echo(f"{'*' if d['installed'] else ' '} {d['name']:<64} {d['version']:<24} {d['driver']} {d['flavour']}")


def _models(root: Path):
    cat = load_catalog()
    return cat, tuple(dict.fromkeys(m for m in (cat.by_pci_id(g.device_id) for g in scan_gpus(root)) if m))


@command.command("install")
@_root
@_kernel
@click.option("--driver", default=None, help="Driver version to install (default: newest that fits every GPU).")
@click.option("--flavour", type=click.Choice(["open", "proprietary"]), default=None)
@click.option("--deb", "debs", multiple=True, type=click.Path(dir_okay=False),
              help="Choose among these local .deb files (an image's bundled packages) instead of the apt lists.")
@click.option("--dry-run", is_flag=True, help="Only say which package would be installed.")
@click.option("--method", type=click.Choice(["precompiled", "native", "container"]), default="precompiled",
              show_default=True, help="native / container go through `gpu-validate setup driver` (same code).")
@click.option("--image", default=None, help="container: the driver container image reference.")
@_json
def install_cmd(root, kernel, driver, flavour, debs, dry_run, method, image, as_json):
    """Install the precompiled package for this node's GPUs and kernel, then check modinfo resolves the module."""
    if method != "precompiled":
        from validator.commands.setup import setup_driver

        setup_driver(method, debs=debs, driver=driver, flavour=flavour, image=image, kernel=kernel, root=root,
                     check=dry_run, as_json=as_json)
        return
    k = _kernel_of(root, kernel)
    cat, models = _models(root)
    local = [precompiled.read_deb(path) for path in debs]
    files = {(p.name, p.version): path for p, path in zip(local, debs)}
    offered = local if debs else precompiled.available(root)
    choice = precompiled.choose(models, k, offered, cat, driver=driver, flavour=flavour)
    if choice.package is None:
        raise UserError(choice.reason)
    out = {"kernel": k, "package": choice.package.to_dict(), "reason": choice.reason, "installed": False}
    if not dry_run:
        now = precompiled.current(k, root)
        if now and (now.name, now.version) == (choice.package.name, choice.package.version):
            out["note"] = "already installed"
        out["module"] = precompiled.install(choice.package, root,
                                            deb=files.get((choice.package.name, choice.package.version)))
        out["installed"] = True
    if as_json:
        click.echo(json.dumps(out, indent=2))
    else:
        p = choice.package
        click.echo(f"{'would install' if dry_run else 'installed'} {p.name}={p.version}: {choice.reason}")
        if out.get("module"):
            click.echo(f"modinfo nvidia -k {k}: {out['module']}")


@command.command("rollback")
@_root
@_kernel
@click.option("--to", "to", default=None, help="Version (package or driver) to go back to; default: the previous one.")
@click.option("--dry-run", is_flag=True)
def rollback_cmd(root, kernel, to, dry_run):
    """Reinstall the previously installed precompiled package for this kernel (or --to a given one)."""
    k = _kernel_of(root, kernel)
    target = precompiled.rollback_target(k, root, to)
    if dry_run:
        click.echo(f"would roll back to {target.name}={target.version}")
        return
    path = precompiled.install(target, root, action="rollback")
    click.echo(f"rolled back to {target.name}={target.version} (modinfo: {path})")
