"""Shared CLI plumbing: typed errors become a message and an exit code; tracebacks only with --debug."""

from __future__ import annotations

import errno
import logging
import math
import os
import sys

import click

from validator import textsafe
from validator.errors import GpuforgeError, UserError


# OS errors that mean the path given was wrong (exit 2, bad input) rather than the machine failing (exit 1).
BAD_PATH_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ELOOP, errno.EEXIST, errno.EACCES,
                             errno.EPERM, errno.EROFS, errno.ENAMETOOLONG, errno.EINVAL})


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
        except OSError as e:  # a path no check foresaw: still the file and the reason, never a traceback
            if ctx.obj and ctx.obj.get("debug"):
                raise
            where = f"{e.filename}: " if e.filename else ""
            click.echo(f"error: {textsafe.lines(where + (e.strerror or str(e)))}", err=True)
            sys.exit(2 if e.errno in BAD_PATH_ERRNOS else 1)


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

            # A command named with a dash ("user-data") lives in a module with an underscore (user_data.py).
            cmd = importlib.import_module(f"{self._lazy_package}.{name.replace('-', '_')}").command
            _add_no_color(cmd)
            self.add_command(cmd, name)
        return super().get_command(ctx, name)


# ---- one vocabulary for every command ------------------------------------------------------------------------

def _no_color(ctx, param, value):
    """no-color.org: set NO_COLOR for this command's lifetime, so every colour decision (want_colour) honours it."""
    if not value or "NO_COLOR" in os.environ:
        return
    os.environ["NO_COLOR"] = "1"
    ctx.call_on_close(lambda: os.environ.pop("NO_COLOR", None))


def _add_no_color(cmd: click.Command) -> None:
    """Every command and subcommand accepts --no-color (also the roots: `gpuforge --no-color ...`)."""
    if not any("--no-color" in getattr(p, "opts", ()) for p in cmd.params):
        cmd.params.append(click.Option(["--no-color"], is_flag=True, expose_value=False, is_eager=True,
                                       callback=_no_color, help="No ANSI colours, even on a terminal (also NO_COLOR=1)."))
    for sub in getattr(cmd, "commands", {}).values():
        _add_no_color(sub)


# ---- numbers on the command line: always bounded and finite ----------------------------------------------------

class FloatIn(click.FloatRange):
    """A number option from lo to hi: nan (which compares false with any bound) and inf are refused too."""

    name = "number"

    def __init__(self, lo: float, hi: float):
        super().__init__(lo, hi)

    def convert(self, value, param, ctx):
        v = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(v):
            self.fail(f"{value!r} is not a finite number ({self._describe_range()})", param, ctx)
        return super().convert(v, param, ctx)


class IntIn(click.IntRange):
    """An integer option from lo to hi (both bounds: no count, port or size is unbounded)."""

    def __init__(self, lo: int, hi: int):
        super().__init__(lo, hi)


class ByteSize(click.ParamType):
    """A byte count like 1024, 64M or 8G (binary units, as nccl-tests take them) from lo to hi bytes."""

    name = "size"

    def __init__(self, lo: int, hi: int):
        self.min, self.max = lo, hi

    def convert(self, value, param, ctx):
        from validator.bench.formulas import human_bytes, parse_size

        try:
            n = value if isinstance(value, int) else parse_size(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)
        if not self.min <= n <= self.max:
            self.fail(f"{value!r} is not from {human_bytes(self.min)} to {human_bytes(self.max)}", param, ctx)
        return n


# Report formats by file extension, for -o/--save without --format.
REPORT_EXT = {".json": "json", ".html": "html", ".htm": "html", ".xml": "junit", ".prom": "prom", ".txt": "text"}


def format_for_path(path: str) -> str:
    """The report format a file name asks for (--save FILE.html); a usage error for an unknown extension."""
    import pathlib

    ext = pathlib.Path(path).suffix.lower()
    if ext not in REPORT_EXT:
        raise UserError(f"--save {path}: cannot tell the format from {ext or 'no extension'}",
                        hint="use .json, .html, .xml (JUnit), .prom or .txt")
    return REPORT_EXT[ext]


def output_options(formats, default: str, problems: bool = True):
    """--format, -o/--output, --json (and --problems where there are results to filter), meaning the same on every
    command that writes a report."""
    def deco(f):
        if problems:
            f = click.option("--problems", is_flag=True,
                             help="Show only warn/fail results (terminal, text, HTML; JSON/JUnit/Prometheus stay "
                                  "whole).")(f)
        f = click.option("--json", "as_json", is_flag=True, help="JSON (the same as --format json).")(f)
        f = click.option("-o", "--output", type=click.Path(dir_okay=False),
                         help="Write here (atomically) instead of stdout; format from --format, else the extension.")(f)
        f = click.option("--format", "fmt", type=click.Choice(formats), default=None,
                         help=f"Output format [default: {default}; with -o: from the file extension].")(f)
        return f
    return deco


def pick_format(fmt, as_json: bool, output, formats, default: str) -> str:
    """--json, else --format, else the extension of -o, else the default; contradictions are usage errors."""
    if as_json:
        if fmt not in (None, "json"):
            raise UserError(f"--json and --format {fmt} ask for two formats", hint="give one of them")
        return "json"
    if fmt:
        return fmt
    if output:
        import pathlib

        by_ext = REPORT_EXT.get(pathlib.Path(output).suffix.lower())
        if by_ext in formats:
            return by_ext
        return "text" if "text" in formats else default
    return default


def setup_logging(debug: bool, verbose: bool = False) -> None:
    level = logging.DEBUG if debug else (logging.INFO if verbose else logging.WARNING)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def root_options(f):
    """--debug / --verbose / --no-color on a root group (debug and verbose stored in ctx.obj)."""
    f = click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")(f)
    f = click.option("-v", "--verbose", is_flag=True, help="Log progress to stderr.")(f)
    f = click.option("--no-color", is_flag=True, expose_value=False, is_eager=True, callback=_no_color,
                     help="No ANSI colours, even on a terminal (also NO_COLOR=1).")(f)
    return f
