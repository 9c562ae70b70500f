"""drivers/*.yaml, kernels/*.yaml, matrix.yaml: the shipped files load; bad fields name file + key path (exit 2)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from builder.cli import main
from builder.config import load_driver, load_kernel, load_matrix, repo_root
from validator.errors import ConfigError

ROOT = repo_root()


def test_shipped_definitions_load():
    for f in sorted((ROOT / "drivers").glob("*.yaml")):
        d = load_driver(f)
        assert d.version.startswith(str(d.branch))
    for f in sorted((ROOT / "kernels").glob("*.yaml")):
        k = load_kernel(f)
        assert k.abi == f.stem
    cfg = load_matrix(ROOT / "matrix.yaml")
    assert [k.abi for k in cfg.kernels] == ["6.1.0-54-cloud-amd64"]
    assert cfg.drivers[0].flavours["open"].source.pin() == "nvidia-open-kernel-source=535.261.03-1"
    load_matrix(ROOT / "matrix-full.yaml")


@pytest.fixture
def tree(tmp_path):
    """A copy of matrix.yaml + drivers/ + kernels/ to break."""
    for d in ("drivers", "kernels"):
        shutil.copytree(ROOT / d, tmp_path / d, ignore=shutil.ignore_patterns("tuning"))
    shutil.copy(ROOT / "matrix.yaml", tmp_path / "matrix.yaml")
    return tmp_path


def _edit(path: Path, old: str, new: str):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize("file,old,new,key,expected", [
    ("matrix.yaml", "  - 6.1.0-54-cloud-amd64", "  - 6.1.0-99-cloud-amd64", "kernels[0]", "a kernel defined in"),
    ("matrix.yaml", "  - 535.261.03", "  - 999.1.1", "drivers[0]", "a driver defined in"),
    ("matrix.yaml", "flavours: [proprietary, open]", "flavours: [proprietary, opne]", "flavours[1]", "one of"),
    ("matrix.yaml", "  jobs: 1 ", "  jobs: zero ", "settings.jobs", "an integer"),
    ("matrix.yaml", "exclude: []", "exclude: [{kernal: x}]", "exclude[0].kernal", "one of the keys"),
    ("drivers/535.261.03.yaml", "version: 535.261.03-1}", "version: 535 261}", "flavours.proprietary.source.version", "exact Debian version"),
    ("drivers/535.261.03.yaml", "branch: 535", "branch: 550", "branch", "the branch of version"),
    ("drivers/535.261.03.yaml", "  - nvidia-smi (= 535.261.03-1)", "  - nvidia-smi = 535", "userspace[0]", "Debian relation"),
    ("drivers/535.261.03.yaml", "  open:\n", "  opne:\n", "flavours.opne", "a flavour name"),
    ("kernels/6.1.0-54-cloud-amd64.yaml", "abi: 6.1.0-54-cloud-amd64", "abi: cloud", "abi", "kernel ABI"),
    ("kernels/6.1.0-54-cloud-amd64.yaml", "version: 6.1.190-1", "version: latest", "version", "exact Debian version"),
])
def test_bad_field_names_file_and_key(tree, file, old, new, key, expected):
    _edit(tree / file, old, new)
    with pytest.raises(ConfigError) as e:
        load_matrix(tree / "matrix.yaml")
    assert e.value.key == key
    assert e.value.path.endswith(file)
    assert expected in str(e.value)


def test_malformed_yaml_and_cli_exit_2(tree):
    (tree / "matrix.yaml").write_text("fleet: [H100\nkernels: :\n")
    res = CliRunner().invoke(main, ["matrix", "--config", str(tree / "matrix.yaml")])
    assert res.exit_code == 2
    assert "matrix.yaml" in res.output and "valid YAML" in res.output
    assert "Traceback" not in res.output


def test_unknown_fleet_gpu_is_a_config_error(tree):
    _edit(tree / "matrix.yaml", "  - L4\n", "  - Z9000\n")
    res = CliRunner().invoke(main, ["matrix", "--config", str(tree / "matrix.yaml")])
    assert res.exit_code == 2
    assert "fleet[2]" in res.output


def test_matrix_cli_json_and_text():
    res = CliRunner().invoke(main, ["matrix", "--json"])
    assert res.exit_code == 0, res.output
    import json
    plan = json.loads(res.output)
    assert [c["flavour"] for c in plan["cells"]] == ["proprietary", "open"]
    res = CliRunner().invoke(main, ["matrix", "--config", str(ROOT / "matrix-full.yaml")])
    assert res.exit_code == 0 and "skipped" in res.output
