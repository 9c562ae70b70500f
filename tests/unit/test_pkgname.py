"""The kmod package name scheme the builder and the node share."""

from __future__ import annotations

import re

import pytest

from validator.errors import UserError
from validator.pkgname import kmod_package_name


@pytest.mark.parametrize(
    "driver,flavour,abi,name",
    [
        ("535.261.03", "proprietary", "6.1.0-54-cloud-amd64", "gpuforge-nvidia-kmod-proprietary-535.261.03-6.1.0-54-cloud-amd64"),
        ("550.163.01", "open", "6.12.12+bpo-amd64", "gpuforge-nvidia-kmod-open-550.163.01-6.12.12+bpo-amd64"),
        ("580.159.04", "Open", "6.18.44-FC-v657-gpu", "gpuforge-nvidia-kmod-open-580.159.04-6.18.44-fc-v657-gpu"),
    ],
)
def test_names(driver, flavour, abi, name):
    got = kmod_package_name(driver, flavour, abi)
    assert got == name and re.fullmatch(r"[a-z0-9][a-z0-9+.-]+", got)  # a valid Debian package name


@pytest.mark.parametrize(
    "driver,flavour,abi",
    [("535.261.03", "closed", "6.1.0-54-amd64"), ("latest", "open", "6.1.0-54-amd64"),
     ("535.261.03", "open", "6.1.0 54"), ("535.261.03", "open", "6.1.0_54"), ("535.261.03", "open", "")],
)
def test_bad_parts(driver, flavour, abi):
    with pytest.raises(UserError):
        kmod_package_name(driver, flavour, abi)
