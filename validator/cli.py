"""gpu-validate: the node-side CLI (detect, run, report, fleet, baselines, bench)."""

from __future__ import annotations

import click

from validator import __version__
from validator.clibase import LazyGroup, root_options, setup_logging

# Each subcommand lives in validator/commands/<module>.py and exposes `command`.
SUBCOMMANDS: list = [
    "bench",
    "detect",
    "baselines",
    "run",
    "report",
    "fleet",
    "capture",
    "drivers",
    "ngc",
    "setup",
]


@click.group(
    cls=LazyGroup,
    lazy_package="validator.commands",
    lazy_names=SUBCOMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@root_options
@click.version_option(__version__, prog_name="gpu-validate")
@click.pass_context
def main(ctx, debug, verbose):
    """Check a GPU node: detection, validation in 8 groups, benchmarks, reports."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    setup_logging(debug, verbose)

