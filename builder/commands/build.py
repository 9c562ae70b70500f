"""`gpuforge build <target>`: one group; each target lives in builder/commands/build_<target>.py (exposes `command`)."""

from __future__ import annotations

import importlib

import click

# Targets in the order `make images` runs them; a target whose module is not there yet is simply absent.
BUILD_TARGETS = ["drivers", "images", "packer"]


@click.group(name="build")
def command():
    """Build artifacts: precompiled driver packages (drivers), golden OS images (images)."""


for _target in BUILD_TARGETS:
    _modname = f"builder.commands.build_{_target}"
    try:
        _mod = importlib.import_module(_modname)
    except ModuleNotFoundError as _e:
        if _e.name != _modname:
            raise
        continue
    command.add_command(_mod.command, _target)
