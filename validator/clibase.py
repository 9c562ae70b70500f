"""Shared CLI plumbing: typed errors become a message and an exit code; tracebacks only with --debug."""

from __future__ import annotations

import logging
import sys

import click

from validator import textsafe
from validator.errors import GpuforgeError


class ErrorHandlingGroup(click.Group):
    """A click group that prints GpuforgeError as 'error: ...' and exits with its code."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except GpuforgeError as e:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"error: {textsafe.lines(e)}", err=True)  # names and values from files reach a terminal
            sys.exit(e.exit_code)


class LazyGroup(ErrorHandlingGroup):
    """Imports a subcommand's module only when that subcommand runs: a node CLI call pays for one module."""

    def __init__(self, *args, lazy_package: str = "", lazy_names=(), **kwargs):
        super().__init__(*args, **kwargs)
        self._lazy_package = lazy_package
        self._lazy_names = list(lazy_names)

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self._lazy_names))

    def get_command(self, ctx, name):
        if name in self._lazy_names and name not in self.commands:
            import importlib

            self.add_command(importlib.import_module(f"{self._lazy_package}.{name}").command, name)
        return super().get_command(ctx, name)


def setup_logging(debug: bool, verbose: bool = False) -> None:
    level = logging.DEBUG if debug else (logging.INFO if verbose else logging.WARNING)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def root_options(f):
    """--debug / --verbose on a root group, stored in ctx.obj."""
    f = click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")(f)
    f = click.option("-v", "--verbose", is_flag=True, help="Log progress to stderr.")(f)
    return f
