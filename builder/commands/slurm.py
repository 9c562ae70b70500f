"""`gpuforge slurm render|submit`: the driver build as a Slurm job array plus a publish job that waits for it."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import click

from builder.commands._common import choose_matrix
from builder.scaleout import FarmJob, sbatch_array, sbatch_publish
from validator import atomic, subp
from validator.errors import UserError
from validator.clibase import IntIn


def _job(config, dist, shards, jobs, cpus, time_limit, partition, gpuforge, only) -> FarmJob:
    if not Path(dist).is_absolute():
        raise UserError(f"--dist {dist}: the shared store must be an absolute path every node mounts the same way")
    exe = gpuforge or shutil.which("gpuforge") or str(Path(sys.argv[0]).resolve())
    cfg = str(choose_matrix(config).path.resolve())
    return FarmJob(gpuforge=exe, config=cfg, dist=dist, shards=shards, jobs=jobs, cpus=cpus, time_limit=time_limit,
                   partition=partition, extra=(("--only", only) if only else ()))


def _options(f):
    for opt in reversed([
        click.option("--config", default=None, type=click.Path(dir_okay=False), help="Matrix file (as `build drivers`)."),
        click.option("--dist", required=True, help="Shared store (absolute path, the same on every node)."),
        click.option("--shards", type=IntIn(1, 10000), required=True, help="Array tasks (shards of the plan)."),
        click.option("--jobs", type=IntIn(1, 64), default=1, show_default=True, help="Cells at once per task."),
        click.option("--cpus", type=IntIn(1, 1024), default=2, show_default=True, help="CPUs per task."),
        click.option("--time", "time_limit", default="04:00:00", show_default=True, help="Time limit per task."),
        click.option("--partition", default=None, help="Slurm partition."),
        click.option("--gpuforge", default=None, help="gpuforge executable on the nodes (default: this one)."),
        click.option("--only", default=None, help="Only cells matching (as `build drivers --only`)."),
    ]):
        f = opt(f)
    return f


@click.group(name="slurm")
def command():
    """Run the driver build on Slurm: one array task per shard, then `gpuforge publish`."""


def _write(job: FarmJob, out: Path) -> tuple:
    array = atomic.write_text(out / "build-drivers.sbatch", sbatch_array(job), 0o755)
    pub = atomic.write_text(out / "publish.sbatch", sbatch_publish(job), 0o755)
    (Path(job.dist) / "logs").mkdir(parents=True, exist_ok=True)
    return array, pub


@command.command(name="render")
@_options
@click.option("-o", "--output", "out", type=click.Path(file_okay=False), default=None,
              help="Folder for the two scripts (default: DIST/slurm).")
def render(config, dist, shards, jobs, cpus, time_limit, partition, gpuforge, only, out):
    """Write build-drivers.sbatch (the array) and publish.sbatch; submit them yourself with a dependency."""
    job = _job(config, dist, shards, jobs, cpus, time_limit, partition, gpuforge, only)
    array, pub = _write(job, Path(out) if out else Path(dist) / "slurm")
    click.echo(f"{array}\n{pub}\nsubmit: jid=$(sbatch --parsable {array}) && sbatch --dependency=afterany:$jid {pub}")


@command.command(name="submit")
@_options
def submit(config, dist, shards, jobs, cpus, time_limit, partition, gpuforge, only):
    """Submit the array and a publish job that starts when every task has ended (afterany; it checks the shards)."""
    job = _job(config, dist, shards, jobs, cpus, time_limit, partition, gpuforge, only)
    array, pub = _write(job, Path(dist) / "slurm")
    jid = subp.run(["sbatch", "--parsable", str(array)], timeout=120).stdout.strip().split(";")[0]
    pid = subp.run(["sbatch", "--parsable", f"--dependency=afterany:{jid}", str(pub)], timeout=120).stdout.strip().split(";")[0]
    click.echo(f"array job {jid} ({shards} task(s)); publish job {pid} after it")
