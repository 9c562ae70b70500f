"""`gpuforge build containers`: driver images (kmod + NVIDIA user space + gpuforge-driver) for the built cells."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import click

from builder.containers.build import build_containers, summary_table
from builder.plan import load_plan
from builder.commands._common import writable_dist
from validator.errors import UserError


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@click.command(name="containers")
@click.option("--config", "config", type=click.Path(dir_okay=False), default=None, help="Matrix file (default matrix.yaml).")
@click.option("--only", default=None, help="Only cells whose id matches this glob or substring.")
@click.option("--dist", "dist", type=click.Path(file_okay=False), callback=writable_dist, default=None,
              help="Folder `gpuforge build drivers` wrote (default: settings.dist).")
@click.option("--registry", default=None, help="OCI registry to tag for (and push to with --push): HOST[:PORT][/NAMESPACE].")
@click.option("--push", is_flag=True, help="Push every tag whose digest the registry does not have yet.")
@click.option("--k8s", "k8s_dir", type=click.Path(file_okay=False), default=None,
              help="Write one DaemonSet per kernel ABI into this folder.")
@click.option("--rebuild", is_flag=True, help="Ignore the cache.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
def command(config, only, dist, registry, push, k8s_dir, rebuild, as_json):
    """Build one driver container per built kmod cell (after `gpuforge build drivers`)."""
    cfg, plan = load_plan(config)
    cells = plan.select(only, None)
    if not cells:
        raise UserError(f"no cell matches --only {only!r}", hint="see `gpuforge matrix` for the cell ids")
    s = cfg.settings
    dist_dir = Path(dist) if dist else (Path(s.dist) if Path(s.dist).is_absolute() else Path.cwd() / s.dist)
    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so build containers are removed on the way out.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    report = build_containers(cells, s, dist_dir, registry=registry, push=push, rebuild=rebuild,
                              k8s_dir=Path(k8s_dir) if k8s_dir else None)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(summary_table(report))
        for path in report.k8s:
            click.echo(f"DaemonSet: {path}")
    if report.failed:
        raise SystemExit(1)
