"""`gpuforge build drivers`: precompiled NVIDIA kmod packages for the matrix, published in dist/apt.

Under a scheduler (or with --shard i/N) it builds its shard into DIST/shards/<i>-of-<N>/ and leaves publishing to
`gpuforge publish`, sharing every other shard's cache through DIST.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
from pathlib import Path

import click

from builder import publish
from builder.commands._common import checked_override, choose_matrix, config_option, plan_digest, writable_dist
from builder.drivers import Progress, build_drivers, summary_table
from builder.plan import load_plan
from builder.shard import resolve_shard
from builder.steps import say
from validator.errors import UserError
from validator.clibase import IntIn


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@click.command(name="drivers")
@config_option
@click.option("--jobs", "-j", type=IntIn(1, 64), default=None, help="Cells built at once (default: settings.jobs).")
@click.option("--only", default=None, help="Only cells whose id matches this glob or substring.")
@click.option("--shard", default=None,
              help="Build shard i of N (1-based) into DIST/shards/ (default: from SLURM_ARRAY_TASK_ID/COUNT or "
                   "JOB_COMPLETION_INDEX + GPUFORGE_SHARDS when set).")
@click.option("--dist", "dist", type=click.Path(file_okay=False), callback=writable_dist, default=None,
              help="Output folder, or the shared store of a sharded farm (default: settings.dist under the current folder).")
@click.option("--rebuild", is_flag=True, help="Ignore the cache.")
@click.option("--retry-failed", is_flag=True, help="Build again cells whose failure is cached.")
@click.option("--sign-key", default=None, help="PEM private key: sign the modules with the kernel's sign-file.")
@click.option("--sign-cert", default=None, help="Certificate for --sign-key.")
@click.option("--gpg-key", default=None, help="gpg key id that signs the repo's InRelease (checked before building).")
@click.option("--gpg-home", default=None, help="GNUPGHOME holding --gpg-key.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
def command(config, jobs, only, shard, dist, rebuild, retry_failed, sign_key, sign_cert, gpg_key, gpg_home, as_json):
    """Compile, verify and package the matrix's kernel modules; publish them in DIST/apt."""
    choice = choose_matrix(config)
    cfg, plan = load_plan(choice.path)
    which = resolve_shard(shard, os.environ)
    selected = plan.select(only)
    cells = plan.select(only, which.as_tuple() if which else None)
    if not selected:
        raise UserError(f"no cell matches (only={only!r}); see `gpuforge matrix`")
    over = {k: checked_override(f"--{k.replace('_', '-')}", k, v)
            for k, v in (("sign_key", sign_key), ("sign_cert", sign_cert), ("gpg_key", gpg_key), ("gpg_home", gpg_home),
                         ("dist", dist)) if v}
    s = dataclasses.replace(cfg.settings, **over)
    dist_dir = Path(s.dist) if Path(s.dist).is_absolute() else Path.cwd() / s.dist
    # SIGTERM (a CI timeout, `kill`, scancel) unwinds like Ctrl-C, so each cell's container is removed on the way out.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    if which:
        say("shard %d of %d (from %s): %d of %d cell(s)", which.index, which.count, which.source, len(cells), len(selected))
        publish.check_writable(dist_dir)
        publish.clear_record(dist_dir, which)
        report = build_drivers(cells, s, publish.shard_dir(dist_dir, which), jobs or s.jobs, rebuild,
                               Progress(len(cells), jobs=jobs or s.jobs), retry_failed=retry_failed, publish=False,
                               peers=publish.peer_dirs(dist_dir))
        publish.write_record(dist_dir, which, plan_digest(c.id for c in selected), [c.id for c in cells],
                             [r.cell_id for r in report.failed])
    else:
        report = build_drivers(cells, s, dist_dir, jobs or s.jobs, rebuild, Progress(len(cells), jobs=jobs or s.jobs),
                               retry_failed=retry_failed, peers=publish.peer_dirs(dist_dir))
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(summary_table(report.results))
        if report.repo:
            ring = report.repo.root / "gpuforge-archive-keyring.gpg"
            click.echo(f"apt repo: {report.repo.sources_line(keyring=str(ring) if report.repo.signed else None)}")
        elif which:
            click.echo(f"shard {which.index}/{which.count} done: `gpuforge publish --dist {dist_dir}` once every shard is")
    bad = [r.bad_input for r in report.results if r.bad_input]
    if bad:  # a definition names what the archive does not have: the user's to fix (exit 2)
        raise ConfigMismatch("\n".join(bad))
    if report.failed:
        raise SystemExit(1)


class ConfigMismatch(UserError):
    """A driver/kernel definition pins a package or version the Debian archive does not carry."""
