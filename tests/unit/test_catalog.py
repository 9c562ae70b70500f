"""The GPU catalog: contents the other parts rely on, lookups, and schema errors that name file and key path."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from validator.catalog import DATA_DIR, load_catalog
from validator.errors import ConfigError, UserError

REQUIRED = [
    "V100 SXM2 16GB", "V100 SXM2 32GB", "V100 PCIe 16GB",
    "A100 SXM4 40GB", "A100 SXM4 80GB", "A100 PCIe 40GB", "A100 PCIe 80GB", "A800 SXM4 80GB",
    "H100 SXM5 80GB", "H100 PCIe 80GB", "H100 NVL 94GB", "H800 SXM5 80GB", "H200 SXM 141GB",
    "GH200 96GB", "L40S", "L40", "L4", "T4", "A10", "RTX 3090", "RTX 4090", "B200",
]


@pytest.fixture(scope="module")
def cat():
    return load_catalog()


def test_every_required_model_present(cat):
    assert set(REQUIRED) <= set(cat.names)


@pytest.mark.parametrize(
    "pci_id,name",
    [
        (0x2330, "H100 SXM5 80GB"), (0x2331, "H100 PCIe 80GB"), (0x2321, "H100 NVL 94GB"),
        (0x2335, "H200 SXM 141GB"), (0x2901, "B200"), (0x20B0, "A100 SXM4 40GB"),
        (0x20B2, "A100 SXM4 80GB"), (0x20F1, "A100 PCIe 40GB"), (0x20B5, "A100 PCIe 80GB"),
        (0x27B8, "L4"), (0x1EB8, "T4"), (0x1DB1, "V100 SXM2 16GB"), (0x1DB5, "V100 SXM2 32GB"),
        (0x1DB4, "V100 PCIe 16GB"), (0x20F3, "A800 SXM4 80GB"), (0x2324, "H800 SXM5 80GB"),
        (0x2342, "GH200 96GB"), (0x26B9, "L40S"), (0x26B5, "L40"), (0x2236, "A10"),
        (0x2204, "RTX 3090"), (0x2684, "RTX 4090"),
    ],
)
def test_pci_ids(cat, pci_id, name):
    assert cat.by_pci_id(pci_id).name == name


def test_unknown_pci_id(cat):
    assert cat.by_pci_id(0xFFFF) is None


def test_h100_facts(cat):
    m = cat.find("H100")
    assert (m.name, m.arch, m.compute_capability) == ("H100 SXM5 80GB", "Hopper", "9.0")
    assert m.peak_tflops["bf16"] == 989 and m.mem_bw_gbs == 3350 and m.nvlink_gen == 4
    assert set(m.flavours) == {"open", "proprietary"}
    assert hash(m)  # frozen and hashable, peak_tflops included


def test_arch_rules(cat):
    for m in cat.models:
        assert m.source
        if m.arch == "Volta":
            assert m.flavours == ("proprietary",) and m.max_branch == 580
        if m.arch == "Blackwell":
            assert m.flavours == ("open",)
    assert cat.find("V100").peak_tflops["bf16"] is None


@pytest.mark.parametrize(
    "query,name",
    [("h100", "H100 SXM5 80GB"), ("H100 PCIe", "H100 PCIe 80GB"), ("h100-nvl", "H100 NVL 94GB"),
     ("0x2335", "H200 SXM 141GB"), ("10de:2901", "B200"), ("a100 sxm4 80gb", "A100 SXM4 80GB"),
     ("rtx_4090", "RTX 4090")],
)
def test_find(cat, query, name):
    assert cat.find(query).name == name


def test_find_unknown_suggests(cat):
    with pytest.raises(UserError) as e:
        cat.find("H1000")
    assert e.value.exit_code == 2 and "H100" in e.value.hint


def test_find_ambiguous(cat):
    with pytest.raises(UserError, match="ambiguous"):
        cat.find("A100 80GB")


def test_cuda_table(cat):
    assert cat.cuda_min_driver["12.4"] == "550.54.14"
    assert cat.cuda_min_driver["13.0"] == "580.65.06"
    assert cat.cuda_min_driver_for("12.4.1") == "550.54.14"
    with pytest.raises(UserError):
        cat.cuda_min_driver_for("9.9")


def test_baselines(cat):
    b = cat.baseline("H100")
    assert b.model == "H100 SXM5 80GB" and b.gpt_tflops == 178 and b.pcie_h2d_gbs == 55.0
    assert "seed" in b.sources["gpt_tflops"]
    assert cat.baseline("V100 PCIe 16GB").mem_bw_gbs == 900  # family entry
    assert cat.baseline("A100 SXM4 80GB").mem_bw_gbs == 2039
    assert cat.baseline("T4") is None


# ------------------------------------------------------------ bad input


def _copy(tmp_path: Path) -> Path:
    for f in ("gpus.yaml", "cuda.yaml", "baselines.yaml"):
        shutil.copy(DATA_DIR / f, tmp_path / f)
    return tmp_path / "gpus.yaml"


def _edit(path: Path, fn) -> None:
    data = yaml.safe_load(path.read_text())
    fn(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.mark.parametrize(
    "mutate,key,expected",
    [
        (lambda d: d["gpus"][3]["peak_tflops"].__setitem__("bf16", "fast"), "gpus[3].peak_tflops.bf16", "a number"),
        (lambda d: d["gpus"][0].pop("arch"), "gpus[0].arch", "present"),
        (lambda d: d["gpus"][1].__setitem__("arch", "Kepler"), "gpus[1].arch", "one of"),
        (lambda d: d["gpus"][2].__setitem__("compute_capability", 7.0), "gpus[2].compute_capability", "major.minor"),
        (lambda d: d["gpus"][0].__setitem__("flavours", ["open"]), "gpus[0].flavours", "Volta"),
        (lambda d: d["gpus"][5].__setitem__("pci_ids", [0x1DB1]), "gpus[5].pci_ids", "already used"),
        (lambda d: d["gpus"][5].__setitem__("memroy_gb", 3), "gpus[5].memroy_gb", "one of the keys"),
        (lambda d: d["gpus"][5].__setitem__("pci_ids", []), "gpus[5].pci_ids", "non-empty list"),
        (lambda d: d["gpus"][5].__setitem__("tdp_w", True), "gpus[5].tdp_w", "a number"),
    ],
)
def test_bad_field_names_file_and_key(tmp_path, mutate, key, expected):
    path = _copy(tmp_path)
    _edit(path, mutate)
    with pytest.raises(ConfigError) as e:
        load_catalog(path)
    msg = str(e.value)
    assert str(path) in msg and key in msg and expected in msg, msg
    assert e.value.exit_code == 2


def test_broken_yaml(tmp_path):
    path = _copy(tmp_path)
    path.write_text("gpus: [\n")
    with pytest.raises(ConfigError, match="valid YAML"):
        load_catalog(path)


def test_bad_cuda_table(tmp_path):
    path = _copy(tmp_path)
    (tmp_path / "cuda.yaml").write_text('min_driver:\n  "12.4": latest\n')
    with pytest.raises(ConfigError) as e:
        load_catalog(path)
    assert "cuda.yaml" in str(e.value) and "min_driver.12.4" in str(e.value)


def test_baseline_needs_source(tmp_path):
    path = _copy(tmp_path)
    _edit(tmp_path / "baselines.yaml", lambda d: d["baselines"][0]["sources"].clear())
    with pytest.raises(ConfigError, match=r"baselines\[0\]\.sources\.mem_bw_gbs"):
        load_catalog(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="existing"):
        load_catalog(tmp_path / "nope.yaml")
