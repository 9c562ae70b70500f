"""The name of a precompiled NVIDIA kernel-module package: one scheme shared by the builder and the node."""

from __future__ import annotations

import re

from validator.errors import UserError

PREFIX = "gpuforge-nvidia-kmod"
FLAVOURS = ("open", "proprietary")
_DRIVER = re.compile(r"^\d{3}\.\d+(\.\d+)?$")
_ABI = re.compile(r"^[a-z0-9][a-z0-9+.\-]*$")


def kmod_package_name(driver_version: str, flavour: str, kernel_abi: str) -> str:
    """gpuforge-nvidia-kmod-<flavour>-<driver-version>-<kernel-abi>, lowercased, e.g.
    gpuforge-nvidia-kmod-proprietary-535.261.03-6.1.0-54-cloud-amd64. UserError on a part Debian would refuse."""
    flavour = flavour.strip().lower()
    driver_version = driver_version.strip()
    abi = kernel_abi.strip().lower()
    if flavour not in FLAVOURS:
        raise UserError(f"kernel-module flavour {flavour!r} is not one of {', '.join(FLAVOURS)}")
    if not _DRIVER.match(driver_version):
        raise UserError(f"driver version {driver_version!r} is not like 535.261.03")
    if not _ABI.match(abi):
        raise UserError(f"kernel ABI {kernel_abi!r} has characters a Debian package name cannot carry",
                        hint="expected lowercase letters, digits, '.', '+', '-' (as `uname -r` prints)")
    return f"{PREFIX}-{flavour}-{driver_version}-{abi}"
