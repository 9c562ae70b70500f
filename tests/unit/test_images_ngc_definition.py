"""Image definitions' ngc_images: parsed and checked against ngc.yaml before any build; the loader unit staged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.images import ngc as ngc_images
from builder.images import stage
from builder.images.definition import ImageDef, parse_image
from validator.errors import ConfigError, UserError

REPO = Path(__file__).resolve().parents[2]
BASE = {"name": "t", "kernel": "6.1.0-54-cloud-amd64", "tuning": "gpu-performance"}


def test_ngc_images_parse_and_round_trip():
    d = parse_image(dict(BASE, ngc_images=["pytorch:24.01-py3", "rapidsai/base:26.02-cuda12-py3.13"]), "images/t.yaml")
    assert d.ngc_images == ("pytorch:24.01-py3", "rapidsai/base:26.02-cuda12-py3.13")
    assert ImageDef.from_json(d.to_json()) == d
    plain = parse_image(dict(BASE), "images/t.yaml")
    assert "ngc_images" not in json.loads(plain.to_json())  # images without it keep their cache key
    assert ImageDef.from_json(plain.to_json()) == plain


@pytest.mark.parametrize("bad", ["pytorch", "pytorch:", "PyTorch:24.01-py3", "pytorch:24.01 py3", 7])
def test_ngc_images_shape(bad):
    with pytest.raises(ConfigError) as e:
        parse_image(dict(BASE, ngc_images=[bad]), "images/t.yaml")
    assert "images/t.yaml: ngc_images[0]: expected a list of NGC images as name:tag" in str(e.value)


def test_resolve_checks_names_and_tags_with_hints():
    d = parse_image(dict(BASE, ngc_images=["cuda:12.4.1-devel-ubuntu22.04", "pytorch:24.01-py3"]), "images/t.yaml")
    plans = ngc_images.resolve(d, "127.0.0.1:5000")
    assert [p.ref for p in plans] == ["cuda:12.4.1-devel-ubuntu22.04", "pytorch:24.01-py3"]
    assert plans[1].source.pull_ref == "127.0.0.1:5000/nvidia/pytorch:24.01-py3"
    assert plans[1].source.canonical == "nvcr.io/nvidia/pytorch:24.01-py3"
    assert plans[0].tarball == "cuda_12.4.1-devel-ubuntu22.04.tar"
    with pytest.raises(UserError) as e:
        ngc_images.resolve(parse_image(dict(BASE, ngc_images=["pytorch:24.01-py3", "pytorch:24.1-py3"]), "images/t.yaml"), None)
    assert "images/t.yaml: ngc_images[1]: unknown tag '24.1-py3'" in str(e.value) and "pytorch:24.01-py3" in str(e.value)
    with pytest.raises(UserError) as e:
        ngc_images.resolve(parse_image(dict(BASE, ngc_images=["tensorflo:24.01-tf2-py3"]), "images/t.yaml"), None)
    assert "ngc_images[0]: unknown NGC image 'tensorflo'" in str(e.value) and "tensorflow" in str(e.value)


def test_stage_carries_the_loader_unit(tmp_path):
    from builder.images import refs

    d = parse_image(dict(BASE, ngc_images=["pytorch:24.01-py3"]), "images/t.yaml")
    tuning = refs.load_tuning(REPO / "kernels" / "tuning", "gpu-performance")
    stage.render_stage(tmp_path, REPO, d, tuning, packages=(), userspace=(), install_debs=(), carry_debs=(),
                       image_info="{}\n", extra_files=ngc_images.stage_files(), extra_units=(ngc_images.LOAD_UNIT,))
    unit = (tmp_path / "files/etc/systemd/system/gpuforge-ngc-load.service").read_text()
    assert "After=docker.service" in unit and "ConditionPathExists=!/var/lib/gpuforge/ngc/.loaded" in unit
    script = tmp_path / "files/usr/libexec/gpuforge/ngc-load"
    assert "docker load -i" in script.read_text() and script.stat().st_mode & 0o111
    assert "gpuforge-ngc-load.service" in (tmp_path / "provision.env").read_text()
