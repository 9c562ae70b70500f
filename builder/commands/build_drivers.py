"""`gpuforge build drivers`: precompiled NVIDIA kmod packages for the matrix, published in dist/apt."""

from __future__ import annotations

import dataclasses
import json
import re
import signal
from pathlib import Path

import click

from builder.drivers import Progress, build_drivers, summary_table
from builder.plan import load_plan
from validator.errors import UserError


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _shard(value):
    if value is None:
        return None
    m = re.fullmatch(r"(\d+)/(\d+)", value)
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise click.BadParameter("expected i/N with 1 <= i <= N, e.g. 2/4")
    return int(m.group(1)), int(m.group(2))


@click.command(name="drivers")
@click.option("--config", "config", type=click.Path(dir_okay=False), default=None, help="Matrix file (default matrix.yaml).")
@click.option("--jobs", "-j", type=click.IntRange(1, 64), default=None, help="Cells built at once (default: settings.jobs).")
@click.option("--only", default=None, help="Only cells whose id matches this glob or substring.")
@click.option("--shard", default=None, callback=lambda c, p, v: _shard(v), help="Build shard i of N (1-based).")
@click.option("--dist", "dist", type=click.Path(file_okay=False), default=None, help="Output folder (default: settings.dist).")
@click.option("--rebuild", is_flag=True, help="Ignore the cache.")
@click.option("--retry-failed", is_flag=True, help="Build again cells whose failure is cached.")
@click.option("--sign-key", default=None, help="PEM private key: sign the modules with the kernel's sign-file.")
@click.option("--sign-cert", default=None, help="Certificate for --sign-key.")
@click.option("--gpg-key", default=None, help="gpg key id that signs the repo's InRelease.")
@click.option("--gpg-home", default=None, help="GNUPGHOME holding --gpg-key.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
def command(config, jobs, only, shard, dist, rebuild, retry_failed, sign_key, sign_cert, gpg_key, gpg_home, as_json):
    """Compile, verify and package the matrix's kernel modules; publish them in DIST/apt."""
    cfg, plan = load_plan(config)
    cells = plan.select(only, shard)
    if not cells:
        raise UserError(f"no cell matches (only={only!r}, shard={shard}); see `gpuforge matrix`")
    s = cfg.settings
    over = {k: v for k, v in (("sign_key", sign_key), ("sign_cert", sign_cert), ("gpg_key", gpg_key),
                              ("gpg_home", gpg_home)) if v}
    s = dataclasses.replace(s, **over)
    dist_dir = Path(dist) if dist else (Path(s.dist) if Path(s.dist).is_absolute() else Path.cwd() / s.dist)
    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so each cell's container is removed on the way out.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    report = build_drivers(cells, s, dist_dir, jobs or s.jobs, rebuild, Progress(len(cells)), retry_failed=retry_failed)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(summary_table(report.results))
        if report.repo:
            ring = report.repo.root / "gpuforge-archive-keyring.gpg"
            click.echo(f"apt repo: {report.repo.sources_line(keyring=str(ring) if report.repo.signed else None)}")
    bad = [r.bad_input for r in report.results if r.bad_input]
    if bad:  # a definition names what the archive does not have: the user's to fix (exit 2)
        raise ConfigMismatch("\n".join(bad))
    if report.failed:
        raise SystemExit(1)


class ConfigMismatch(UserError):
    """A driver/kernel definition pins a package or version the Debian archive does not carry."""
