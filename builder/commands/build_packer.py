"""`gpuforge build packer [NAME...]`: render Packer bundles (qemu from our base disk, amazon-ebs) and validate them."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import click

from builder.images import build, packer
from builder.commands.build_images import definitions_dir
from builder.images.definition import find_image, image_paths, load_image_file
from builder.commands._common import writable_dist
from validator import userfile
from validator.schema import Reader

REPO = Path(__file__).resolve().parents[2]


def render_bundle(image, dist: Path, out: Path, apt_dir: Path) -> Path:
    """Stage (tuning, validator .deb, provision.sh) + template; the qemu source starts from dist/images/NAME/NAME.qcow2."""
    ctx = build.Context(repo=REPO, dist=dist, apt_dir=apt_dir)
    res = build.resolve(image, ctx)
    base = dist / "images" / image.name / f"{image.name}.qcow2"
    checksum = base_checksum(base)
    with tempfile.TemporaryDirectory(prefix="gf-packer-") as tmp:
        st = build.make_stage(res, ctx, Path(tmp))
        return packer.render(out, name=image.name, kernel=image.kernel, tuning=image.tuning, suite=image.suite,
                             disk_size=image.disk_size, stage_dir=st, base_image=str(base.resolve()),
                             base_checksum=checksum, base_packages=build.BASE_PACKAGES + (
                                 f"{res.kernel.image_package}={res.kernel.version}",) + image.packages)


def base_checksum(base: Path) -> str:
    """sha256:... of the base disk from its image manifest; "none" before `gpuforge build images` made one
    (validate still works; a real qemu build needs the disk). A corrupt manifest is a ConfigError naming it."""
    path = base.parent / "manifest.json"
    if not os.path.lexists(path):
        return "none"
    files = Reader(str(path), userfile.load_json(path, "image manifest", top=dict)).key("files", {}).mapping()
    if base.name not in files.value:
        return "none"
    return "sha256:" + files.key(base.name).key("sha256").str()


@click.command(name="packer")
@click.argument("names", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every images/*.yaml definition.")
@click.option("--dist", type=click.Path(file_okay=False), callback=writable_dist, default=None, help="Output root (default: ./dist).")
@click.option("--no-validate", is_flag=True, help="Skip `packer validate`.")
def command(names, all_, dist, no_validate):
    """Render dist/packer/NAME/NAME.pkr.hcl (+ stage/, http/) and run `packer validate` on it."""
    images_dir = definitions_dir()
    defs = [load_image_file(p) for p in image_paths(images_dir)] if all_ else \
        [find_image(images_dir, n) for n in (names or ("default",))]
    dist_p = Path(dist) if dist else Path.cwd() / "dist"
    for d in defs:
        out = dist_p / "packer" / d.name
        t = render_bundle(d, dist_p, out, dist_p / "apt")
        if not no_validate:
            packer.validate(t)
        click.echo(f"{d.name}: {t}" + ("" if no_validate else " (packer validate: ok)"))
