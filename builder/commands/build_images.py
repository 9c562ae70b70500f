"""`gpuforge build images [NAME...]`: golden OS images (raw, qcow2, netboot) from images/*.yaml."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from builder.images.build import DEFAULT_MIRROR, DEFAULT_SECURITY_MIRROR, Context, build_image
from builder.images.definition import find_image, image_paths, load_image_file
from builder.steps import say
from builder.commands._common import writable_dist

REPO = Path(__file__).resolve().parents[2]


def definitions_dir() -> Path:
    """./images when the current folder has definitions, else the packaged ones; said on stderr either way."""
    local = Path.cwd() / "images"
    chosen = local if any(local.glob("*.yaml")) else REPO / "images"
    say("image definitions: %s (%s)", chosen, "./images" if chosen == local else "packaged default")
    return chosen


@click.command(name="images")
@click.argument("names", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Build every images/*.yaml definition.")
@click.option("--dist", type=click.Path(file_okay=False), callback=writable_dist, default=None, help="Output root (default: ./dist).")
@click.option("--mirror", default=lambda: os.environ.get("GPUFORGE_MIRROR", DEFAULT_MIRROR), show_default="$GPUFORGE_MIRROR or deb.debian.org",
              help="Debian archive mirror URL.")
@click.option("--security-mirror", default=lambda: os.environ.get("GPUFORGE_SECURITY_MIRROR", DEFAULT_SECURITY_MIRROR),
              show_default="$GPUFORGE_SECURITY_MIRROR or deb.debian.org/debian-security")
@click.option("--apt-dir", type=click.Path(file_okay=False), default=None, help="Builder apt repo with kmod .debs (default: <dist>/apt).")
@click.option("--ngc-mirror", envvar="GPUFORGE_NGC_MIRROR", default=None, metavar="HOST[/PATH]",
              help="Pull the definitions' ngc_images from HOST/nvidia/X instead of nvcr.io/nvidia/X ($GPUFORGE_NGC_MIRROR).")
@click.option("--rebuild", "force", is_flag=True, help="Ignore the cache: build even when the key matches.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifests as JSON.")
def command(names, all_, dist, mirror, security_mirror, apt_dir, ngc_mirror, force, as_json):
    """Build golden images (default: the image named 'default'). An unchanged definition is not rebuilt."""
    images_dir = definitions_dir()
    if all_:
        defs = [load_image_file(p) for p in image_paths(images_dir)]
    else:
        defs = [find_image(images_dir, n) for n in (names or ("default",))]
    dist_p = Path(dist) if dist else Path.cwd() / "dist"
    ctx = Context(repo=REPO, dist=dist_p, mirror=mirror, security_mirror=security_mirror,
                  apt_dir=Path(apt_dir) if apt_dir else dist_p / "apt", ngc_mirror=ngc_mirror, force=force)
    results = []
    for d in defs:
        ctx.timings = {}
        m = build_image(d, ctx)
        results.append(m)
        if not as_json:
            state = "cached" if m.get("cached") else f"built in {m['build_seconds']}s"
            click.echo(f"{d.name}: {state} -> {ctx.images_dir / d.name}")
            for name, info in m["files"].items():
                click.echo(f"  {name:<24} {info['size'] / 1e6:9.1f} MB  sha256 {info['sha256'][:16]}")
            for n in m.get("ngc_images") or []:
                click.echo(f"  ngc {n['image']:<40} {n['digest']}  {n['tar_size'] / 1e6:9.1f} MB")
            if m.get("drivers_note"):
                click.echo(f"  NOTE: {m['drivers_note']}")
    if as_json:
        click.echo(json.dumps(results, indent=2))
