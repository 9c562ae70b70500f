"""Options and helpers shared by the farm-side commands: which matrix file, CLI overrides checked like YAML."""

from __future__ import annotations

import hashlib
import json
from typing import Optional

import click

from builder.config import CONFIG_ORDER, ConfigChoice, check_setting, find_matrix
from builder.steps import say
from validator import userfile
from validator.atomic import check_writable_dir
from validator.errors import ConfigError, UserError


def config_option(f):
    return click.option("--config", "config", type=click.Path(dir_okay=False), default=None,
                        help=f"Matrix file ({CONFIG_ORDER}; the one used is printed).")(f)


def choose_matrix(config: Optional[str], quiet: bool = False) -> ConfigChoice:
    """The matrix file, said on stderr so nobody builds from a file they did not mean."""
    choice = find_matrix(config)
    kind = userfile.kind(choice.path)
    if kind is None:
        raise UserError(f"no matrix file: {choice.describe()} does not exist", hint=f"looked for {CONFIG_ORDER}")
    if kind != "a regular file":  # a FIFO is never opened (it would block), a folder is no matrix
        raise UserError(f"{choice.describe()}: not a regular file: it is {kind}", hint="name a matrix.yaml file")
    if not quiet:
        say("matrix: %s", choice.describe())
    return choice


def checked_override(option: str, key: str, value: Optional[str]) -> Optional[str]:
    """A command-line value goes through the same form check as its settings.<key> in matrix.yaml."""
    try:
        return check_setting("(command line)", key, value)
    except ConfigError as e:
        raise ConfigError("(command line)", option, e.expected, value) from None


def plan_digest(cell_ids) -> str:
    """sha256 of the selected cells: every shard of one farm run must agree on it."""
    return hashlib.sha256(json.dumps(sorted(cell_ids)).encode()).hexdigest()


def writable_dist(ctx, param, value: Optional[str]) -> Optional[str]:
    """Click callback for --dist: the folder must take our files before an hour of work goes into it."""
    if value is not None:
        check_writable_dir(value)
    return value
