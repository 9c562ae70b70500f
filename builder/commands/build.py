"""`gpuforge build <target>`: one group; each target lives in builder/commands/build_<target>.py (exposes `command`)."""

from __future__ import annotations

import importlib

import click

# Targets in the order `make images` runs them.
BUILD_TARGETS = ["drivers", "containers", "images", "packer"]


@click.group(name="build")
def command():
    """Build artifacts: precompiled driver packages (drivers), golden OS images (images), Packer bundles (packer)."""


for _target in BUILD_TARGETS:
    command.add_command(importlib.import_module(f"builder.commands.build_{_target}").command, _target)
