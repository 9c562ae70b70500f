"""The precompiled kmod .deb: control fields and maintainer scripts (pure), and dpkg-deb to build it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Tuple

from builder.matrix import Cell
from validator import subp

# Bump when the package layout changes: it is part of the package version and of every cache key.
PACKAGING_REVISION = 1
MODULE_SUBDIR = "updates/gpuforge"  # under /lib/modules/<abi>/; "updates" wins over the in-tree search order


def package_name(cell: Cell) -> str:
    """The kmod package name; the catalog side's validator.pkgname owns the scheme so the node agrees."""
    from validator.pkgname import kmod_package_name

    return kmod_package_name(cell.driver.version, cell.flavour, cell.kernel.abi)


def package_version(cell: Cell) -> str:
    """Source package version + our revision: 535.261.03-1+gpuforge1."""
    return f"{cell.flavour_def.source.version}+gpuforge{PACKAGING_REVISION}"


def slot_name(abi: str) -> str:
    """Virtual package every kmod for one ABI provides and conflicts with: one nvidia.ko per kernel at a time."""
    return f"gpuforge-kmod-slot-{abi}"


@dataclass(frozen=True)
class ControlInfo:
    fields: Tuple[Tuple[str, str], ...]

    def text(self) -> str:
        out = []
        for k, v in self.fields:
            lines = v.split("\n")
            out.append(f"{k}: {lines[0]}")
            out += [(" " + ln) if ln.strip() else " ." for ln in lines[1:]]
        return "\n".join(out) + "\n"

    def get(self, key: str) -> str:
        return dict(self.fields)[key]


def control(cell: Cell, installed_kib: int, cache_key: str = "", base_image: str = "") -> ControlInfo:
    """Control fields: exact ABI image dependency, user space of the same version, DKMS conflicts."""
    k, d, f = cell.kernel, cell.driver, cell.flavour_def
    depends = [f"{k.image} | {k.image}-unsigned", "kmod"] + list(f.depends) + list(d.userspace)
    conflicts = list(dict.fromkeys(list(d.conflicts) + [slot_name(k.abi)]))
    section = "non-free/kernel" if cell.flavour == "proprietary" else "contrib/kernel"
    desc = (f"NVIDIA {cell.flavour} kernel modules {d.version} for Linux {k.abi}\n"
            f"Precompiled by gpuforge from {f.source.pin()} against {k.headers}={k.version},\n"
            f"so a node installs its driver without DKMS. Modules: /lib/modules/{k.abi}/{MODULE_SUBDIR}/.")
    fields = [
        ("Package", package_name(cell)),
        ("Version", package_version(cell)),
        ("Architecture", "amd64"),
        ("Maintainer", "gpuforge build farm <gpuforge@localhost>"),
        ("Section", section),
        ("Priority", "optional"),
        ("Installed-Size", str(max(1, installed_kib))),
        ("Depends", ", ".join(depends)),
        ("Provides", f"{f.provides}, {slot_name(k.abi)}"),
        ("Conflicts", ", ".join(conflicts)),
        ("Replaces", slot_name(k.abi)),
        # Our own fields travel into the apt Packages index: the node side picks packages by them.
        ("Gpuforge-Driver", d.version),
        ("Gpuforge-Flavour", cell.flavour),
        ("Gpuforge-Kernel", k.abi),
        ("Gpuforge-Module", f.module_prefix),  # the file name `modinfo -k <abi>` resolves (nvidia-current)
        ("Gpuforge-Source", f.source.pin()),
        ("Gpuforge-Headers", f"{k.headers}={k.version}"),
    ]
    if cache_key:
        fields.append(("Gpuforge-Cache-Key", cache_key))
    if base_image:
        fields.append(("Gpuforge-Base-Image", base_image))
    fields.append(("Description", desc))
    return ControlInfo(tuple(fields))


def maintainer_scripts(abi: str) -> Dict[str, str]:
    """postinst/postrm rebuild modules.dep for that ABI (only if that kernel's tree is there)."""
    body = (f'if [ -d /lib/modules/{abi} ] && command -v depmod >/dev/null; then\n'
            f'    depmod -a {abi} || true\nfi\n')
    return {
        "postinst": f'#!/bin/sh\nset -e\nif [ "$1" = configure ]; then\n{body}fi\nexit 0\n',
        "postrm": f'#!/bin/sh\nset -e\ncase "$1" in remove|purge|upgrade|abort-install)\n{body};;\nesac\nexit 0\n',
    }


def installed_kib(root: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        if "DEBIAN" in Path(dirpath).parts:
            continue
        total += sum(os.lstat(os.path.join(dirpath, f)).st_size for f in files)
    return (total + 1023) // 1024


def build_deb(root: Path, ctl: ControlInfo, abi: str, out_dir: Path) -> Path:
    """Write DEBIAN/ into root and run dpkg-deb; returns the .deb path in out_dir (not yet published)."""
    deb_dir = root / "DEBIAN"
    deb_dir.mkdir(parents=True, exist_ok=True)
    (deb_dir / "control").write_text(ctl.text())
    for name, text in maintainer_scripts(abi).items():
        p = deb_dir / name
        p.write_text(text)
        p.chmod(0o755)
    out = out_dir / f"{ctl.get('Package')}_{ctl.get('Version')}_amd64.deb"
    # gzip -1: every dpkg reads it; on 40 MB of stripped modules it is ~4x faster than -6 for a few % more bytes.
    subp.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "--build", str(root), str(out)], timeout=900)
    return out
