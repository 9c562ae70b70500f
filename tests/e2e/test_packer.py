"""Every image definition renders a Packer bundle that Debian's packer (1.6.6) accepts with `packer validate`."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.commands.build_packer import render_bundle
from builder.images import packer
from builder.images.definition import image_paths, load_image_file

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("path", image_paths(REPO / "images"), ids=lambda p: p.stem)
def test_rendered_template_validates(path, tmp_path):
    image = load_image_file(path)
    t = render_bundle(image, tmp_path / "dist", tmp_path / "packer" / image.name, tmp_path / "apt")
    packer.validate(t)
    text = t.read_text()
    assert 'source "qemu"' in text and 'source "amazon-ebs"' in text
    assert "provision.sh" in text
    stage = t.parent / "stage"
    assert (stage / "provision.sh").read_text() == (REPO / "images/provision/provision.sh").read_text()
    # an untuned image carries no profile: the node keeps the distribution's defaults until tuned live
    assert (stage / "files/etc/gpuforge/tuning.yaml").exists() == (image.tuning != "none")
    assert list((stage / "debs").glob("gpuforge-validator_*.deb"))
    assert "cloud-init" in (stage / "provision.env").read_text()  # a stock cloud AMI gets the base packages too
