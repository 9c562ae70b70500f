"""`gpu-validate run`: validate this node (or a snapshot with --root) at a level; report; exit 0/1/3."""

from __future__ import annotations

import sys

import click

from validator.atomic import check_writable, write_text
from validator.checks.base import GROUPS, LEVELS
from validator.clibase import FloatIn, format_for_path, output_options, pick_format
from validator.report.render import FORMATS, render, summary_line, want_colour

@click.command(name="run")
@click.option("--level", type=click.Choice(LEVELS), default="quick", show_default=True,
              help="quick: no GPU load; standard: + CUDA test, memory bandwidth, container, DCGM r1; full: + benchmarks.")
@click.option("--root", type=click.Path(exists=True, file_okay=False), default="/", show_default=True,
              help="Node root: / for this node, or a captured snapshot folder (its cmd/ is replayed).")
@click.option("--profile", "profile", metavar="FILE|NAME",
              help="Tuning profile (default: <root>/etc/gpuforge/tuning.yaml, else the packaged gpu-performance).")
@click.option("--expect", metavar="NxMODEL", help='Expected GPU inventory, e.g. "8xH100" or "2xH200,1xL4".')
@output_options(FORMATS, "term")
@click.option("--save", multiple=True, type=click.Path(dir_okay=False), metavar="FILE",
              help="Also write the report here, format from the extension (.json .html .xml .prom .txt); repeatable.")
@click.option("--group", "groups", multiple=True, type=click.Choice(GROUPS), help="Only these groups (repeatable).")
@click.option("--check", "ids", multiple=True, metavar="ID", help="Only these check ids or prefixes (repeatable).")
@click.option("--no-nvml", is_flag=True, help="Read GPUs through nvidia-smi even when NVML loads.")
@click.option("--cuda-timeout", type=FloatIn(1, 3600), default=120, show_default=True,
              help="Seconds the CUDA child may take (standard level).")
@click.option("--docker-image", metavar="IMAGE", help="Image for the `docker run --gpus all` check (default: a local CUDA image).")
@click.option("--list-checks", is_flag=True, help="List the checks the level runs (id, group, level, title) and exit.")
def command(level, root, profile, expect, fmt, output, as_json, problems, save, groups, ids, no_nvml, cuda_timeout,
            docker_image, list_checks):
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

    fmt = pick_format(fmt, as_json, output, FORMATS, "term")
    save_fmts = [(p, format_for_path(p)) for p in save]  # bad extension: usage error before any work
    for p in (*save, *([output] if output else [])):  # an unwritable path too, not after minutes of checks
        check_writable(p)
    from validator.progress import RunProgress, is_tty
    progress = RunProgress(sys.stderr, colour=want_colour(sys.stderr)) if is_tty(sys.stderr) else None
    report = validate(root=root, level=level, profile=profile, expect=expect, groups=groups or None,
                      ids=ids or None, use_nvml=False if no_nvml else None, cuda_timeout=cuda_timeout,
                      docker_image=docker_image, progress=progress)
    for path, f in save_fmts:
        write_text(path, render(report, f))
    if output:
        write_text(output, render(report, fmt, colour=False, problems=problems))
        click.echo(summary_line(report), err=True)
    else:
        click.echo(render(report, fmt, colour=fmt == "term" and want_colour(sys.stdout), problems=problems), nl=False)
    sys.exit(report.exit_code)
