"""The NGC registry data: the shipped file loads, anchors hold, and every bad field names file + key path."""

from __future__ import annotations

import copy

import pytest
import yaml

from validator.catalog import DATA_DIR, load_catalog
from validator.errors import ConfigError, UserError
from validator.ngc.catalog import load_ngc, parse_ref
from validator.ngc.compat import native_minimum

CAT = load_catalog()
NGC = load_ngc(catalog=CAT)
RAW = yaml.safe_load((DATA_DIR / "ngc.yaml").read_text())
IMAGES = ("pytorch", "nemo", "tritonserver", "tensorflow", "tensorrt", "cuda", "rapidsai/base", "deepstream")


def test_every_asked_image_is_there_with_sources():
    assert set(IMAGES) <= set(NGC.names)
    for img in NGC.images:
        assert img.releases, img.name
        for r in img.releases:
            assert r.source.startswith("https://"), r.ref
            assert r.cuda_key in CAT.cuda_min_driver, r.ref  # one CUDA -> driver table: cuda.yaml
            assert r.verified or r.note, r.ref


def test_checked_anchors_from_facts():
    r = NGC.release("pytorch", "24.01-py3")
    assert (r.cuda, r.min_driver, r.forward_compat) == ("12.3.2", "545", ("470.57", "525.85", "535.86", "545.23"))
    assert r.verified
    r = NGC.release("pytorch", "25.08-py3")
    assert r.cuda.startswith("13.0") and r.min_driver == "575"
    # The note's 575 is below CUDA 13.0's own minimum (cuda.yaml): the stricter one decides.
    assert native_minimum(r, CAT) == "580.65.06"
    assert r.forward_compat == ()


def test_triton_rows_match_what_the_release_notes_say():
    t = NGC.release("tritonserver", "24.03-py3")
    assert (t.cuda, t.min_driver, native_minimum(t, CAT)) == ("12.4.0", "545", "545")
    assert "minor-version" in t.note
    assert NGC.release("tritonserver", "25.01-py3").min_compute_capability == "7.5"


def test_based_on_takes_the_base_figures_and_its_verified_flag():
    nemo = NGC.release("nemo", "24.05")
    base = NGC.release("pytorch", "24.02-py3")
    assert (nemo.cuda, nemo.min_driver, nemo.forward_compat) == (base.cuda, base.min_driver, base.forward_compat)
    assert nemo.based_on == "pytorch:24.02-py3"
    assert nemo.verified is False  # the statement is verified, the base row's figures are not


def test_release_key_maps_flavours_to_one_row():
    r = NGC.release("cuda", "12.4.1-devel-ubuntu22.04")
    assert r.tag == "12.4.1-devel-ubuntu22.04" and r.cuda == "12.4.1" and r.forward_compat == ("470", "525", "535")


def test_unknown_names_and_tags_suggest_the_nearest():
    with pytest.raises(UserError) as e:
        NGC.image("pytorh")
    assert "did you mean: pytorch" in str(e.value)
    with pytest.raises(UserError) as e:
        NGC.release("pytorch", "24.1-py3")
    assert "unknown tag '24.1-py3'" in str(e.value) and "pytorch:24.01-py3" in str(e.value)
    with pytest.raises(UserError) as e:
        NGC.image("quantum")
    assert "known images: pytorch" in str(e.value)


@pytest.mark.parametrize("text, want", [
    ("pytorch", ("pytorch", None)),
    ("pytorch:24.01-py3", ("pytorch", "24.01-py3")),
    ("nvcr.io/nvidia/pytorch:24.01-py3", ("pytorch", "24.01-py3")),
    ("nvidia/rapidsai/base:26.02-cuda12-py3.13", ("rapidsai/base", "26.02-cuda12-py3.13")),
    ("rapidsai/base", ("rapidsai/base", None)),
])
def test_parse_ref(text, want):
    assert parse_ref(text) == want


@pytest.mark.parametrize("text", ["", "pytorch:", "py torch", "pytorch@sha256:abc", "PyTorch!:1"])
def test_parse_ref_refuses(text):
    with pytest.raises(UserError):
        parse_ref(text)


def _bad(tmp_path, mutate):
    data = copy.deepcopy(RAW)
    mutate(data)
    p = tmp_path / "ngc.yaml"
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError) as e:
        load_ngc(p, CAT)
    return str(e.value)


def _rel(data, image, i):
    return next(x for x in data["images"] if x["name"] == image)["releases"][i]


def test_cuda_not_in_cuda_yaml(tmp_path):
    msg = _bad(tmp_path, lambda d: _rel(d, "pytorch", 0).update(cuda="12.7.0"))
    assert "ngc.yaml: images[0].releases[0].cuda: expected a CUDA version whose major.minor is in cuda.yaml" in msg
    assert "'12.7.0'" in msg


def test_unverified_row_needs_a_note(tmp_path):
    msg = _bad(tmp_path, lambda d: _rel(d, "pytorch", 0).pop("note"))
    assert "images[0].releases[0].note: expected a note saying which figure was not read" in msg


def test_tag_must_match_the_scheme(tmp_path):
    msg = _bad(tmp_path, lambda d: _rel(d, "pytorch", 1).update(tag="23.05"))
    assert "images[0].releases[1].tag: expected a tag matching" in msg


def test_typo_key_is_refused(tmp_path):
    msg = _bad(tmp_path, lambda d: _rel(d, "pytorch", 2).update(min_drivr="535"))
    assert "images[0].releases[2].min_drivr: expected one of the keys" in msg


def test_releases_oldest_first(tmp_path):
    def swap(d):
        rels = d["images"][0]["releases"]
        rels[0], rels[1] = rels[1], rels[0]
    msg = _bad(tmp_path, swap)
    assert "images[0].releases[1].tag: expected releases listed oldest first" in msg


def test_based_on_must_exist(tmp_path):
    msg = _bad(tmp_path, lambda d: _rel(d, "nemo", 0).update(based_on="pytorch:99.99-py3"))
    assert "based_on: expected an image:tag listed in this file" in msg


def test_bad_driver_and_source_and_bool(tmp_path):
    assert "min_driver: expected a driver branch or version" in _bad(tmp_path, lambda d: _rel(d, "pytorch", 0).update(min_driver="latest"))
    assert "source: expected the https:// address" in _bad(tmp_path, lambda d: _rel(d, "pytorch", 0).update(source="facts.md"))
    assert "verified: expected true or false" in _bad(tmp_path, lambda d: _rel(d, "pytorch", 0).update(verified="yes"))
    assert "forward_compat: expected one entry per driver branch" in _bad(
        tmp_path, lambda d: _rel(d, "pytorch", 0).update(forward_compat=["535.86", "535.104"]))
