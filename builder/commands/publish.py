"""`gpuforge publish`: merge every shard of a farm run (DIST/shards/*) into one apt repository, one Release."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click

from builder.commands._common import checked_override, choose_matrix, config_option, writable_dist
from builder.config import load_matrix
from builder.publish import publish_shards
from validator.clibase import IntIn


@click.command(name="publish")
@config_option
@click.option("--dist", "dist", type=click.Path(file_okay=False), callback=writable_dist, required=True, help="The shared store the shards built into.")
@click.option("--shards", type=IntIn(1, 100000), default=None, help="How many shards to expect (default: as recorded).")
@click.option("--gpg-key", default=None, help="gpg key id that signs the Release (default: settings.gpg_key).")
@click.option("--gpg-home", default=None, help="GNUPGHOME holding --gpg-key.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def command(config, dist, shards, gpg_key, gpg_home, as_json):
    """Check every shard finished and none overlaps, then publish DIST/apt (nothing is published on a refusal)."""
    cfg = load_matrix(choose_matrix(config).path)
    over = {k: checked_override(f"--{k.replace('_', '-')}", k, v) for k, v in (("gpg_key", gpg_key), ("gpg_home", gpg_home)) if v}
    s = dataclasses.replace(cfg.settings, **over)
    rep = publish_shards(Path(dist), s, shards)
    if as_json:
        click.echo(json.dumps({"shards": rep.shards, "packages": rep.packages, "failed": rep.failed,
                               "signed": bool(rep.repo and rep.repo.signed)}, indent=2))
    else:
        click.echo(f"{rep.shards} shard(s), {len(rep.packages)} package(s) published in {Path(dist) / 'apt'}"
                   + (" (signed)" if rep.repo and rep.repo.signed else " (unsigned)"))
        for c in rep.failed:
            click.echo(f"  FAILED in its shard: {c}")
        if rep.repo:
            ring = rep.repo.root / "gpuforge-archive-keyring.gpg"
            click.echo(f"apt repo: {rep.repo.sources_line(keyring=str(ring) if rep.repo.signed else None)}")
    if rep.failed:
        raise SystemExit(1)
