"""`gpu-validate run`: validate this node (or a snapshot with --root) at a level; report; exit 0/1/3."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from validator.atomic import check_writable, write_text
from validator.checks.base import GROUPS, LEVELS
from validator.errors import UserError
from validator.report.render import FORMATS, render, summary_line, want_colour

_EXT_FORMAT = {".json": "json", ".html": "html", ".htm": "html", ".xml": "junit", ".prom": "prom", ".txt": "text"}


def format_for_path(path: str) -> str:
    ext = Path(path).suffix.lower()
    if ext not in _EXT_FORMAT:
        raise UserError(f"--save {path}: cannot tell the format from {ext or 'no extension'}",
                        hint="use .json, .html, .xml (JUnit), .prom or .txt")
    return _EXT_FORMAT[ext]


@click.command(name="run")
@click.option("--level", type=click.Choice(LEVELS), default="quick", show_default=True,
              help="quick: no GPU load; standard: + CUDA test, memory bandwidth, container, DCGM r1; full: + benchmarks.")
@click.option("--root", type=click.Path(exists=True, file_okay=False), default="/", show_default=True,
              help="Node root: / for this node, or a captured snapshot folder (its cmd/ is replayed).")
@click.option("--profile", "profile", metavar="FILE|NAME",
              help="Tuning profile (default: <root>/etc/gpuforge/tuning.yaml, else the packaged gpu-performance).")
@click.option("--expect", metavar="NxMODEL", help='Expected GPU inventory, e.g. "8xH100" or "2xH200,1xL4".')
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="term", show_default=True,
              help="Output format (term: coloured on a TTY, plain otherwise).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the output here (atomically).")
@click.option("--save", multiple=True, type=click.Path(dir_okay=False), metavar="FILE",
              help="Also write the report here, format from the extension (.json .html .xml .prom .txt); repeatable.")
@click.option("--group", "groups", multiple=True, type=click.Choice(GROUPS), help="Only these groups (repeatable).")
@click.option("--check", "ids", multiple=True, metavar="ID", help="Only these check ids or prefixes (repeatable).")
@click.option("--no-nvml", is_flag=True, help="Read GPUs through nvidia-smi even when NVML loads.")
@click.option("--cuda-timeout", type=click.FloatRange(1, 3600), default=120, show_default=True,
              help="Seconds the CUDA child may take (standard level).")
@click.option("--docker-image", metavar="IMAGE", help="Image for the `docker run --gpus all` check (default: a local CUDA image).")
@click.option("--no-color", is_flag=True, help="No ANSI colours even on a TTY.")
@click.option("--list-checks", is_flag=True, help="List the checks the level runs (id, group, level, title) and exit.")
def command(level, root, profile, expect, fmt, output, save, groups, ids, no_nvml, cuda_timeout, docker_image, no_color,
            list_checks):
    """Validate a GPU node in 8 groups (cpu numa iommu pcie gpu memory kernel container).

    Exit status: 0 all pass, 1 any check failed, 3 warnings only, 2 usage error.
    """
    from validator.runner import load_full_level_modules, specs_for, validate

    if list_checks:
        if level == "full":
            load_full_level_modules()
        for s in specs_for(level, groups or None, ids or None):
            click.echo(f"{s.id:<28} {s.group:<9} {s.level:<8} {s.title}")
        return

    save_fmts = [(p, format_for_path(p)) for p in save]  # bad extension: usage error before any work
    for p in (*save, *([output] if output else [])):  # an unwritable path too, not after minutes of checks
        check_writable(p)
    from validator.progress import RunProgress, is_tty
    progress = RunProgress(sys.stderr, colour=not no_color and want_colour(sys.stderr)) if is_tty(sys.stderr) else None
    report = validate(root=root, level=level, profile=profile, expect=expect, groups=groups or None,
                      ids=ids or None, use_nvml=False if no_nvml else None, cuda_timeout=cuda_timeout,
                      docker_image=docker_image, progress=progress)
    for path, f in save_fmts:
        write_text(path, render(report, f))
    if output:
        write_text(output, render(report, fmt, colour=False))
        click.echo(summary_line(report), err=True)
    else:
        click.echo(render(report, fmt, colour=fmt == "term" and not no_color and want_colour(sys.stdout)), nl=False)
    sys.exit(report.exit_code)
