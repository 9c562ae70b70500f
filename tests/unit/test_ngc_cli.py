"""gpu-validate ngc list/compatible and the refusals of pull/run/test that come before any Docker call."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from validator.cli import main

NODES = Path(__file__).resolve().parents[1] / "fixtures" / "nodes"
H100 = str(NODES / "h100-sxm5-80gb-kvm-guest")
H200X2 = str(NODES / "h200x2-nvlink-kvm-guest")


def ngc(*args, env=None):
    return CliRunner().invoke(main, ["ngc", *args], env=env)


def test_list_all_and_filters():
    r = ngc("list")
    assert r.exit_code == 0, r.output
    for name in ("pytorch", "nemo", "tritonserver", "tensorflow", "tensorrt", "cuda", "rapidsai/base", "deepstream"):
        assert f"\n{name} " in r.output
    r = ngc("list", "--cuda", "12.4", "--json")
    rows = json.loads(r.output)["releases"]
    assert rows and all(x["cuda"].startswith("12.4") for x in rows)
    assert {x["image"] for x in rows} >= {"pytorch", "tritonserver", "cuda"}
    r = ngc("list", "--image", "pytorch", "--json")
    r0 = next(x for x in json.loads(r.output)["releases"] if x["tag"] == "24.01-py3")
    assert r0["native_minimum"] == "545" and r0["source"].startswith("https://docs.nvidia.com/")


def test_list_bad_input():
    r = ngc("list", "--cuda", "12.7")
    assert r.exit_code == 2 and "unknown CUDA version '12.7'" in r.output and "12.8" in r.output
    r = ngc("list", "--image", "pytroch")
    assert r.exit_code == 2 and "did you mean: pytorch" in r.output and "Traceback" not in r.output


def test_compatible_on_the_captures():
    for root in (H100, H200X2):
        r = ngc("compatible", "--root", root, "--json")
        assert r.exit_code == 0, r.output
        d = json.loads(r.output)
        assert d["node"]["driver"] == "580.159.04"
        assert {x["verdict"] for x in d["releases"]} == {"native"}
        assert d["newest"]["pytorch"] == "25.10-py3"
    r = ngc("compatible", "--root", H200X2, "--image", "pytorch")
    assert "Node: driver 580.159.04, 2x H200 SXM 141GB" in r.output
    assert "newest that runs here: 25.10-py3 (native)" in r.output


def test_compatible_synthetic_driver_text_names_rules():
    r = ngc("compatible", "--root", H100, "--driver", "535.261.03", "--image", "pytorch")
    assert r.exit_code == 0
    assert "newest that runs here: 25.06-py3 (forward-compat)" in r.output
    line = next(l for l in r.output.splitlines() if l.strip().startswith("24.01-py3"))
    assert "forward-compat" in line and "[ngc.forward-compat]" in line
    line = next(l for l in r.output.splitlines() if l.strip().startswith("25.08-py3"))
    assert "[ngc.driver-too-old]" in line and "580.65.06" in line


def test_pull_refuses_a_release_the_driver_cannot_run():
    r = ngc("pull", "pytorch:25.08-py3", "--root", H100, "--driver", "550.163.01")
    assert r.exit_code == 2
    assert "pytorch:25.08-py3 cannot run here" in r.output and "needs driver >= 580.65.06" in r.output
    assert "--force" in r.output and "Traceback" not in r.output


def test_pull_unknown_tag_and_image():
    r = ngc("pull", "pytorch:24.13-py3", "--root", H100)
    assert r.exit_code == 2 and "unknown tag '24.13-py3'" in r.output and "did you mean" in r.output
    r = ngc("pull", "tensorflw", "--root", H100)
    assert r.exit_code == 2 and "did you mean: tensorflow" in r.output


def test_pull_without_tag_needs_a_driver(tmp_path):
    r = ngc("pull", "pytorch", "--root", str(tmp_path))
    assert r.exit_code == 2 and "no NVIDIA driver loaded" in r.output and "--driver" in r.output


def test_run_and_test_refuse_before_docker():
    r = ngc("run", "tritonserver:25.10-py3", "--root", H100, "--driver", "570.86.15", "--", "true")
    assert r.exit_code == 2 and "needs driver >= 580.65.06" in r.output
    r = ngc("test", "cuda:13.0.0-base-ubuntu24.04", "--root", H100, "--gpu", "V100 SXM2 32GB")
    assert r.exit_code == 2 and "compute capability" in r.output
    r = ngc("run", "pytorch:24.01-py3", "--root", H100, "-e", "NOEQUALS", "--", "true")
    assert r.exit_code == 2 and "--env 'NOEQUALS'" in r.output
    r = ngc("test", "pytorch:24.01-py3", "--root", H100, "--save", "report.doc")
    assert r.exit_code == 2 and "cannot tell the format" in r.output


def test_bad_driver_and_mirror_values():
    r = ngc("compatible", "--root", H100, "--driver", "latest")
    assert r.exit_code == 2 and "--driver 'latest' is not a driver version" in r.output
    r = ngc("pull", "pytorch:24.01-py3", "--root", H100, "--mirror", "http://bad host/")
    assert r.exit_code == 2 and "is not a registry address" in r.output
