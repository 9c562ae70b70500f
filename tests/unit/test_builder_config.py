"""drivers/*.yaml, kernels/*.yaml, matrix.yaml: the shipped files load; bad fields name file + key path (exit 2); the matrix
file comes from where the user stands."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from builder.cli import main
from builder.config import find_matrix, load_driver, load_kernel, load_matrix, repo_root
from builder.images.definition import parse_image
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


# ---------------------------------------------------------------- values that reach commands and paths


@pytest.mark.parametrize("file,old,new,key,expected", [
    ("kernels/6.1.0-54-cloud-amd64.yaml", "build_suite: bookworm", "build_suite: Bookworm!", "build_suite", "a Debian release"),
    ("kernels/6.1.0-54-cloud-amd64.yaml", "build_suite: bookworm", "build_suite: bookworm-security", "build_suite",
     "a Debian release"),
    ("matrix.yaml", "  mirror: http://deb.debian.org/debian", "  mirror: \"http://x/debian main\\ndeb http://evil\"",
     "settings.mirror", "mirror URL"),
    ("matrix.yaml", "  dist: dist", "  dist: \"dist\\n\"", "settings.dist", "folder path"),
    ("matrix.yaml", "  gpg_key: null", "  gpg_key: \"k\\u001b[2J\"", "settings.gpg_key", "gpg key id"),
    ("matrix.yaml", "  - 6.1.0-54-cloud-amd64", "  - 6.1.0-54-cloud-amd64\n  - 6.1.0-54-cloud-amd64", "kernels[1]",
     "not listed before (6.1.0-54-cloud-amd64 is already kernels[0])"),
    ("matrix.yaml", "  - 535.261.03", "  - 535.261.03\n  - 535.261.03", "drivers[1]", "a driver not listed before"),
    ("matrix.yaml", "  - L4\n", "  - L4\n  - L4\n", "fleet[3]", "a GPU model not listed before"),
    ("matrix.yaml", "flavours: [proprietary, open]", "flavours: [open, open]", "flavours[1]", "a flavour not listed before"),
])
def test_bad_builder_input_names_file_and_key(tree, file, old, new, key, expected):
    _edit(tree / file, old, new)
    with pytest.raises(ConfigError) as e:
        load_matrix(tree / "matrix.yaml")
    assert e.value.key == key and e.value.path.endswith(file) and expected in str(e.value)
    r = CliRunner().invoke(main, ["matrix", "--config", str(tree / "matrix.yaml")])
    assert r.exit_code == 2 and key in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("size,ok", [("3G", True), ("1024M", True), ("4096G", True), ("1023M", False), ("0G", False),
                                     ("99999999999999G", False), ("4097G", False), (".inf", False), ("3T", False)])
def test_disk_size_range(size, ok):
    raw = {"name": "x", "kernel": "k", "tuning": "t", "disk_size": size}
    if ok:
        assert parse_image(raw, "images/x.yaml").disk_size == size
    else:
        with pytest.raises(ConfigError, match="from 1G to 4096G"):
            parse_image(raw, "images/x.yaml")


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_any_setting_string_is_accepted_or_a_config_error(value):
    from builder.config import check_setting

    for key in ("mirror", "dist", "gpg_key", "repo_codename"):
        try:
            v = check_setting("m.yaml", key, value)
        except ConfigError as e:
            assert e.key == f"settings.{key}"
        else:
            assert v == value and "\n" not in v and "\x00" not in v


def test_cli_overrides_are_checked_like_yaml(tmp_path):
    r = CliRunner().invoke(main, ["build", "drivers", "--dist", "bad\npath"])
    assert r.exit_code == 2 and "--dist" in r.output and "Traceback" not in r.output


def test_matrix_file_from_where_the_user_stands(tmp_path, monkeypatch):
    env = {}
    assert find_matrix(None, cwd=tmp_path, env=env).origin == "packaged default"
    other = tmp_path / "elsewhere.yaml"
    other.write_text("x")
    assert find_matrix(None, cwd=tmp_path, env={"GPUFORGE_CONFIG": str(other)}).path == other
    with pytest.raises(ConfigError, match="GPUFORGE_CONFIG"):
        find_matrix(None, cwd=tmp_path, env={"GPUFORGE_CONFIG": str(tmp_path / "missing.yaml")})
    (tmp_path / "matrix.yaml").write_text("x")
    got = find_matrix(None, cwd=tmp_path, env={"GPUFORGE_CONFIG": str(other)})
    assert got.path == tmp_path / "matrix.yaml" and got.origin == "./matrix.yaml"  # ./matrix.yaml wins over the env
    assert find_matrix("given.yaml", cwd=tmp_path).origin == "--config"


def test_cli_says_which_matrix_it_used(tree, monkeypatch):
    monkeypatch.chdir(tree)
    r = CliRunner(mix_stderr=False).invoke(main, ["matrix"]) if "mix_stderr" in CliRunner.__init__.__code__.co_varnames \
        else CliRunner().invoke(main, ["matrix"])
    assert r.exit_code == 0
    err = getattr(r, "stderr", "") or r.output
    assert f"matrix: {tree / 'matrix.yaml'} (./matrix.yaml)" in err
    r = CliRunner().invoke(main, ["matrix", "--help"])
    assert "./matrix.yaml" in r.output and "GPUFORGE_CONFIG" in r.output


def test_a_trailing_newline_is_not_a_valid_name():
    """Python's `$` matches before a final newline: every form is a full match, so 'quiet\\n' cannot reach grub.cfg."""
    with pytest.raises(ConfigError, match="cmdline_extra"):
        parse_image({"name": "x", "kernel": "k", "tuning": "t", "cmdline_extra": ["quiet\n"]}, "images/x.yaml")
    with pytest.raises(ConfigError, match="name"):
        parse_image({"name": "x\n", "kernel": "k", "tuning": "t"}, "images/x.yaml")


def test_driver_package_with_newline_is_refused(tree):
    _edit(tree / "drivers/535.261.03.yaml", "{package: nvidia-kernel-source, version: 535.261.03-1}",
          '{package: "nvidia-kernel-source\\n", version: 535.261.03-1}')
    with pytest.raises(ConfigError) as e:
        load_matrix(tree / "matrix.yaml")
    assert e.value.key == "flavours.proprietary.source.package"
