"""The tuning profile: schema, JSON round-trip, packaged copies = kernels/tuning, resolution order."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from validator.errors import ConfigError, UserError
from validator.tuning import (PACKAGED_DIR, TuningProfile, load_profile, packaged_profile, packaged_profiles,
                              resolve_profile)

REPO = Path(__file__).resolve().parents[2]


def test_packaged_profiles_are_the_kernels_tuning_files():
    src = sorted(p.name for p in (REPO / "kernels/tuning").glob("*.yaml"))
    assert src and sorted(p.name for p in PACKAGED_DIR.glob("*.yaml")) == src
    for name in src:
        assert (PACKAGED_DIR / name).read_bytes() == (REPO / "kernels/tuning" / name).read_bytes()


@pytest.mark.parametrize("name", sorted(packaged_profiles()))
def test_every_profile_loads_and_round_trips(name):
    p = packaged_profile(name)
    assert TuningProfile.from_json(p.to_json()) == p
    assert TuningProfile.from_dict(p.to_dict()) == p


def test_default_profile_content():
    p = packaged_profile()
    for flag in ("intel_iommu=on", "amd_iommu=on", "iommu=pt", "pcie_aspm=off", "processor.max_cstate=1",
                 "intel_idle.max_cstate=1"):
        assert flag in p.cmdline
    assert p.sysctl_map["vm.swappiness"] == "1" and p.sysctl_map["kernel.numa_balancing"] == "0"
    assert p.cpu.governor == "performance" and p.cpu.max_cstate == 1 and p.memory.transparent_hugepage == "madvise"
    assert "vm.swappiness = 1" in p.sysctl_conf() and "iommu=pt" in p.cmdline_string()
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.name = "x"  # frozen


@pytest.mark.parametrize("text,key", [
    ("name: x\nsysctl: [1]\n", "sysctl"),
    ("name: x\ncpu:\n  governor: turbo\n", "cpu.governor"),
    ("name: x\ncpu:\n  gov: performance\n", "cpu.gov"),
    ("name: x\nmemory:\n  transparent_hugepage: sometimes\n", "memory.transparent_hugepage"),
    ("name: x\ncmdline: ['a b']\n", "cmdline[0]"),
    ("name: x\nschema_version: 9\n", "schema_version"),
    ("name: ''\n", "name"),
    ("name: x\nenforce: maybe\n", "enforce"),
    ("name: x\nfrob: 1\n", "frob"),
    ("name: x\nmemory:\n  hugepages_2m: -1\n", "memory.hugepages_2m"),
    ("- a\n", "(top)"),
    ("name: [\n", "(yaml)"),
])
def test_schema_errors_name_file_and_key(tmp_path, text, key):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_profile(f)
    assert e.value.key == key and str(f) in str(e.value) and e.value.exit_code == 2


def test_resolution_order(tmp_path):
    assert resolve_profile(tmp_path).name == "gpu-performance"
    (tmp_path / "etc/gpuforge").mkdir(parents=True)
    (tmp_path / "etc/gpuforge/tuning.yaml").write_text("name: baked\n")
    assert resolve_profile(tmp_path).name == "baked"
    other = tmp_path / "o.yaml"
    other.write_text("name: explicit\n")
    assert resolve_profile(tmp_path, other).name == "explicit"
    assert resolve_profile(tmp_path, "gpu-performance").name == "gpu-performance"
    with pytest.raises(UserError, match="no packaged tuning profile"):
        resolve_profile(tmp_path, "nope")
    with pytest.raises(UserError, match="cannot read"):
        resolve_profile(tmp_path, "/nonexistent/x.yaml")
