"""Render the provisioning stage: the overlay files that bake the tuning profile, plus provision.env.

The stage is what images/provision/provision.sh consumes, in the native chroot build and in Packer alike.
"""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path
from typing import Optional

from builder.images.definition import ImageDef
from builder.images.refs import Tuning
from validator.atomic import write_text
from validator.setup.nodefiles import NOUVEAU_BLACKLIST, NOUVEAU_PATH, TUNING_UNIT_NAME, tuning_files

NETBOOT_SCRIPT = r"""# initramfs-tools boot script for boot=gpuforge (netboot): the root is a squashfs that iPXE put into the
# initramfs as /gpuforge-root.squashfs; mount it read-only under a tmpfs overlay. Written by gpuforge.
mountroot() {
	sq=/gpuforge-root.squashfs
	[ -f "$sq" ] || panic "gpuforge netboot: $sq missing (boot.ipxe must load the root squashfs)"
	modprobe -q squashfs; modprobe -q overlay; modprobe -q loop
	mkdir -p /run/gpuforge/lower /run/gpuforge/rw
	dev=$(losetup -f --show -r "$sq") || panic "gpuforge netboot: losetup failed"
	mount -t squashfs -o ro "$dev" /run/gpuforge/lower || panic "gpuforge netboot: cannot mount $sq"
	mount -t tmpfs -o mode=0755 tmpfs /run/gpuforge/rw
	mkdir -p /run/gpuforge/rw/upper /run/gpuforge/rw/work
	mount -t overlay -o lowerdir=/run/gpuforge/lower,upperdir=/run/gpuforge/rw/upper,workdir=/run/gpuforge/rw/work overlay "${rootmnt}" \
		|| panic "gpuforge netboot: overlay mount failed"
}
"""

INITRAMFS_HOOK = r"""#!/bin/sh
# Put what boot=gpuforge needs into the initramfs: losetup and the squashfs/overlay/loop modules.
PREREQ=""
prereqs() { echo "$PREREQ"; }
case "$1" in prereqs) prereqs; exit 0;; esac
. /usr/share/initramfs-tools/hook-functions
copy_exec /usr/sbin/losetup /sbin/losetup
manual_add_modules squashfs overlay loop
"""

CLOUD_CFG = """# gpuforge: cloud-init settings baked into the image (users and keys come only from instance data).
ssh_pwauth: false
disable_root: true
# ed25519/ecdsa only: RSA key generation is slow and not needed.
ssh_genkeytypes: [ed25519, ecdsa]
# C.UTF-8 is built into glibc: no locales package, no locale-gen at first boot.
locale: C.UTF-8
"""

def kernel_cmdline(image: ImageDef, t: Tuning) -> tuple:
    """Console first (serial for farm/qemu logs), then the profile's flags, then the image's extras."""
    return ("console=tty0", "console=ttyS0,115200n8") + t.cmdline + image.cmdline_extra


def nvidia_pin(versions: list) -> str:
    """Hold the whole NVIDIA user space at the kmod's version: apt alone would pick the newest nvidia-alternative,
    libnvidia-ml1, ... from -security and fail on the '=' dependencies of the pinned packages."""
    blocks = [f"# gpuforge: NVIDIA user space matches the precompiled kernel module ({v})\n"
              f"Package: /nvidia|^libcuda|^libnvcuvid|^libnvoptix|^libnvidia/\nPin: version {v}\nPin-Priority: 1001\n"
              for v in versions]
    return "\n".join(blocks)


def render_stage(stage: Path, repo: Path, image: ImageDef, t: Tuning, *, packages: tuple, userspace: tuple,
                 install_debs: tuple, carry_debs: tuple, image_info: str, extra_files: Optional[dict] = None,
                 extra_units: tuple = ()) -> Path:
    """Fill stage/ (files/, provision.env, provision.sh); debs/ is filled by the caller. extra_files (path -> text)
    join the overlay and extra_units are enabled (the NGC image loader)."""
    files = stage / "files"
    cmdline = " ".join(kernel_cmdline(image, t))
    out = {
        "etc/gpuforge/image.json": image_info,
        NOUVEAU_PATH.lstrip("/"): NOUVEAU_BLACKLIST,
        "etc/default/grub.d/90-gpuforge.cfg": f'# gpuforge tuning profile {t.name}\nGRUB_CMDLINE_LINUX="{cmdline}"\nGRUB_TIMEOUT=1\n',
        "etc/gpuforge/cmdline": cmdline + "\n",
        "etc/cloud/cloud.cfg.d/90-gpuforge.cfg": CLOUD_CFG,
        "etc/initramfs-tools/scripts/gpuforge": NETBOOT_SCRIPT,
        "etc/initramfs-tools/hooks/gpuforge": INITRAMFS_HOOK,
        "usr/libexec/gpuforge/gpuforge-firstboot": (repo / "cloud-init" / "gpuforge-firstboot.sh").read_text(),
    }
    if t.profile is not None:  # `tuning: none` bakes nothing: the node keeps the distribution's defaults
        # The same files `gpu-validate setup tuning` writes on a live node (validator.setup.nodefiles).
        out.update({path.lstrip("/"): text for path, (text, _) in tuning_files(t.profile, t.text, t.sha256).items()})
    versions = sorted({u.split("=", 1)[1] for u in userspace if "=" in u})
    if versions:
        out["etc/apt/preferences.d/gpuforge-nvidia.pref"] = nvidia_pin(versions)
    out.update(extra_files or {})
    for rel, text in out.items():
        mode = 0o755 if rel.startswith(("usr/libexec", "etc/initramfs-tools/hooks")) else 0o644
        write_text(files / rel, text, mode)
    enable = ([TUNING_UNIT_NAME] if t.profile is not None else []) + (["nvidia-persistenced.service"] if (install_debs or carry_debs) and userspace else [])
    enable += list(extra_units)
    env = {
        "PACKAGES": " ".join(packages),
        "USERSPACE": " ".join(userspace),
        "INSTALL_DEBS": " ".join(install_debs),
        "CARRY_DEBS": " ".join(carry_debs),
        "ENABLE_UNITS": " ".join(enable),
        "MASK_UNITS": " ".join(image.disable_services),
        "SKIP_UPDATE_GRUB": "1",
    }
    write_text(stage / "provision.env", "".join(f"{k}={shlex.quote(v)}\n" for k, v in env.items()))
    shutil.copy2(repo / "images" / "provision" / "provision.sh", stage / "provision.sh")
    return stage
