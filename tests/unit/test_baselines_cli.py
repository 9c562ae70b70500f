"""gpu-validate baselines list|info: figures with sources, family fallback, bad input exit 2."""

from __future__ import annotations

import json

from click.testing import CliRunner

from validator.cli import main


def _cli(*args):
    return CliRunner().invoke(main, ["baselines", *args])


def test_list():
    r = _cli("list")
    assert r.exit_code == 0
    assert "H100 SXM5 80GB" in r.output and "178" in r.output and "V100" in r.output


def test_list_json():
    data = json.loads(_cli("list", "--json").output)
    h100 = next(b for b in data if b["model"] == "H100 SXM5 80GB")
    assert h100["pcie_h2d_gbs"] == 55.0 and h100["gpt_tflops"] == 178 and "seed" in h100["sources"]["gpt_tflops"]


def test_info_family_and_sources():
    r = _cli("info", "H100")
    assert r.exit_code == 0
    assert "2921" in r.output and "measured here" in r.output and "dense TFLOP/s bf16 989" in r.output


def test_info_family_entry():
    r = _cli("info", "V100 PCIe 16GB")
    assert r.exit_code == 0 and "from the V100 entry" in r.output


def test_info_none():
    r = _cli("info", "T4")
    assert r.exit_code == 1 and "no baseline for T4" in r.output


def test_info_unknown_model():
    r = _cli("info", "H1O0")
    assert r.exit_code == 2 and "did you mean" in r.output and "Traceback" not in r.output
