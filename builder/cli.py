"""gpuforge: the build-farm CLI (matrix, compat, idlists, build drivers/images)."""

from __future__ import annotations

import click

from validator import __version__
from validator.clibase import LazyGroup, root_options, setup_logging

# Each subcommand lives in builder/commands/<module>.py and exposes `command`.
SUBCOMMANDS: list = [
    "build",
    "idlists",
    "compat",
    "matrix",
    "publish",
    "slurm",
    "k8s",
    "user-data",
]


@click.group(
    cls=LazyGroup,
    lazy_package="builder.commands",
    lazy_names=SUBCOMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@root_options
@click.version_option(__version__, prog_name="gpuforge")
@click.pass_context
def main(ctx, debug, verbose):
    """Build precompiled NVIDIA driver packages, driver containers and golden GPU images."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    setup_logging(debug, verbose)

