"""`gpuforge k8s render`: the driver build as a Kubernetes Indexed Job (one pod per shard) plus the publish Job."""

from __future__ import annotations

from pathlib import Path

import click

from builder.commands._common import choose_matrix
from builder.scaleout import FarmJob, k8s_manifests
from validator import atomic
from validator.errors import UserError
from validator.clibase import IntIn


@click.group(name="k8s")
def command():
    """Kubernetes manifests for the driver build farm."""


@command.command(name="render")
@click.option("--config", default=None, help="Matrix file as the pods see it (default: the one `build drivers` would use).")
@click.option("--dist", required=True, help="Where the shared store (the claim) is mounted in every pod (absolute).")
@click.option("--shards", type=IntIn(1, 10000), required=True, help="Indexes of the Job (shards of the plan).")
@click.option("--image", required=True, help="Container image with gpuforge and the docker CLI.")
@click.option("--pvc", required=True, help="ReadWriteMany PersistentVolumeClaim holding the store.")
@click.option("--namespace", default="default", show_default=True)
@click.option("--jobs", type=IntIn(1, 64), default=1, show_default=True, help="Cells at once per pod.")
@click.option("--cpus", type=IntIn(1, 1024), default=2, show_default=True, help="CPU request per pod.")
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False), default=None, help="Write here instead of stdout.")
def render(config, dist, shards, image, pvc, namespace, jobs, cpus, out):
    """Print (or write) the Indexed Job and the publish Job as YAML."""
    if not Path(dist).is_absolute():
        raise UserError(f"--dist {dist}: the mount path must be absolute")
    cfg = config or str(choose_matrix(None, quiet=True).path)
    job = FarmJob(gpuforge="gpuforge", config=cfg, dist=dist, shards=shards, jobs=jobs, cpus=cpus)
    text = k8s_manifests(job, image, pvc, namespace)
    if out:
        atomic.write_text(Path(out), text)
        click.echo(out)
    else:
        click.echo(text, nl=False)
