"""gpuforge compat: exit 0 yes / 1 no / 2 bad input, the deciding rule printed, no traceback."""

from __future__ import annotations

import json
import shutil

import yaml
from click.testing import CliRunner

from builder.cli import main
from validator.catalog import DATA_DIR


def _run(*args):
    return CliRunner().invoke(main, ["compat", *args])


def test_yes():
    r = _run("--gpu", "H100", "--cuda", "12.4")
    assert r.exit_code == 0, r.output
    assert "YES with driver 550.163.01 (open)" in r.output


def test_no_with_rule():
    r = _run("--gpu", "H100", "--cuda", "12.4", "--driver", "535.261.03")
    assert r.exit_code == 1
    assert "NO [cuda-min-driver]" in r.output and "550.54.14" in r.output


def test_open_not_in_535_list():
    r = _run("--gpu", "H100", "--driver", "535.261.03", "--flavour", "open")
    assert r.exit_code == 1 and "nvidia-open.ids" in r.output


def test_json():
    r = _run("--gpu", "B200", "--json")
    assert r.exit_code == 1
    data = json.loads(r.output)
    assert data["ok"] is False and data["rule"] == "id-list"


def test_unknown_gpu_suggests():
    r = _run("--gpu", "H1OO", "--cuda", "12.4")
    assert r.exit_code == 2
    assert "unknown GPU 'H1OO'" in r.output and "did you mean: H100" in r.output
    assert "Traceback" not in r.output


def test_unknown_cuda():
    r = _run("--gpu", "H100", "--cuda", "99.1")
    assert r.exit_code == 2 and "known: 11.8" in r.output


def test_bad_catalog_copy(tmp_path):
    for f in ("gpus.yaml", "cuda.yaml", "baselines.yaml"):
        shutil.copy(DATA_DIR / f, tmp_path / f)
    data = yaml.safe_load((tmp_path / "gpus.yaml").read_text())
    data["gpus"][3]["peak_tflops"]["bf16"] = "lots"
    (tmp_path / "gpus.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    r = _run("--gpu", "H100", "--catalog", str(tmp_path / "gpus.yaml"))
    assert r.exit_code == 2
    assert str(tmp_path / "gpus.yaml") in r.output and "gpus[3].peak_tflops.bf16" in r.output
    assert "expected a number" in r.output and "Traceback" not in r.output
