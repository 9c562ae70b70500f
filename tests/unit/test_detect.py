"""gpu-validate detect on the real node captures and on edited copies (unknown IDs, no driver, proprietary)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from validator.catalog import load_catalog
from validator.cli import main
from validator.commands.detect import render_text
from validator.detect import detect, read_kernel, read_loaded_driver
from validator.idlists import offered

CAT = load_catalog()


def _cli(*args):
    return CliRunner().invoke(main, ["detect", *args])


def test_h100_capture_text(h100_node):
    r = _cli("--root", str(h100_node))
    assert r.exit_code == 0, r.output
    for s in ("H100 SXM5 80GB", "Hopper", "compute capability 9.0", "580.159.04 open", "6.18.44-fc-v657-gpu",
              "CUDA up to 13.0", "gpuforge-nvidia-kmod-open-550.163.01-6.18.44-fc-v657-gpu"):
        assert s in r.output, s


def test_h100_capture_json(h100_node):
    r = _cli("--root", str(h100_node), "--json")
    d = json.loads(r.output)
    assert d["driver"] == {**d["driver"], "version": "580.159.04", "flavour": "open", "loaded": True}
    (g,) = d["gpus"]
    assert (g["name"], g["arch"], g["compute_capability"], g["pci_id"]) == ("H100 SXM5 80GB", "Hopper", "9.0", "10de:2330")
    # The loaded 580 supports the H100: keep it (never a downgrade to an offered 550); the offers are listed.
    rec = d["recommendation"]
    assert d["current_driver_fits"] is True and rec["rule"] == "current-driver-fits"
    assert (rec["driver_version"], rec["branch"], rec["flavour"], rec["cuda"], rec["package"]) == \
        ("580.159.04", 580, "open", "13.0", None)
    assert [(o["driver_version"], o["flavours"]) for o in d["offered"]] == \
        [("550.163.01", ["open", "proprietary"]), ("535.261.03", ["proprietary"])]
    assert d["offered"][0]["packages"][0] == "gpuforge-nvidia-kmod-open-550.163.01-6.18.44-fc-v657-gpu"


def test_h200_capture(h100_node):
    d = detect(h100_node.parent / "h200x2-nvlink-kvm-guest", CAT, offered())
    assert [g.name for g in d.gpus] == ["H200 SXM 141GB"] * 2
    # The loaded 580 open fits: kept. Of the offers, 2335 is in 550's nvidia.ids only (not open, not 535 at all).
    assert d.current_fits and (d.plan.driver_version, d.plan.flavour) == ("580.159.04", "open")
    assert [(o.driver_version, o.flavours) for o in d.offers] == [("550.163.01", ("proprietary",))]


def test_loaded_driver_too_old_gets_a_recommendation(h100_node):
    """535 is loaded on the H200s: it does not support them, so detect names the offered driver that does."""
    import shutil
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "node"
        shutil.copytree(h100_node.parent / "h200x2-nvlink-kvm-guest", root, symlinks=True)
        (root / "proc/driver/nvidia/version").write_text(
            "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.261.03  Release Build  (dvs-builder@U16)\n")
        d = detect(root, CAT, offered())
    assert not d.current_fits and not d.driver_check[0][1].ok
    assert (d.plan.driver_version, d.plan.flavour, d.plan.reason.rule) == ("550.163.01", "proprietary", "id-list")


def test_only_535_offered(h100_node):
    r = _cli("--root", str(h100_node), "--offer", "535.261.03", "--json")
    d = json.loads(r.output)
    assert d["recommendation"]["driver_version"] == "580.159.04"  # the loaded driver fits: kept
    assert d["offered"] == [{"driver_version": "535.261.03", "flavours": ["proprietary"],
                             "packages": ["gpuforge-nvidia-kmod-proprietary-535.261.03-6.18.44-fc-v657-gpu"]}]


def test_cuda_not_reachable(h100_copy):
    # 535 loaded (CUDA 12.2 at most): neither it nor any offered driver runs CUDA 13.0
    (h100_copy / "proc/driver/nvidia/version").write_text(
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.261.03  Release Build  (dvs-builder@U16)\n")
    r = _cli("--root", str(h100_copy), "--cuda", "13.0")
    assert r.exit_code == 0 and "cuda-min-driver" in r.output  # detection worked: the hook reads the JSON
    assert _cli("--root", str(h100_copy), "--cuda", "13.0", "--strict").exit_code == 1
    assert _cli("--root", str(h100_copy), "--cuda", "12.2", "--strict").exit_code == 0


def test_unknown_device_reported(h100_copy):
    (h100_copy / "sys/devices/pci0000:00/0000:00:06.0/device").write_text("0x2bff\n")
    r = _cli("--root", str(h100_copy), "--json", "--strict")
    d = json.loads(r.output)
    assert r.exit_code == 1
    assert d["gpus"][0]["name"] == "unknown NVIDIA device 10de:2bff" and d["gpus"][0]["known"] is False
    assert d["recommendation"] is None and "10de:2bff" in d["notes"][0]


def test_proprietary_driver_and_osrelease(h100_copy):
    (h100_copy / "proc/driver/nvidia/version").write_text(
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.261.03  Release Build  (dvs-builder@U16)\n"
    )
    (h100_copy / "proc/sys/kernel/osrelease").write_text("6.1.0-54-cloud-amd64\n")
    d = detect(h100_copy, CAT, offered())
    assert (d.driver.version, d.driver.flavour) == ("535.261.03", "proprietary")
    assert d.kernel == "6.1.0-54-cloud-amd64"
    assert d.driver_check[0][1].ok and d.driver_check[0][1].rule == "id-list"
    # 535 supports the H100: kept; the newer 550 (open too) is listed as an offer, not pushed.
    assert d.current_fits and d.plan.package is None and d.plan.driver_version == "535.261.03"
    assert d.offers[0].packages[0] == "gpuforge-nvidia-kmod-open-550.163.01-6.1.0-54-cloud-amd64"
    assert "550.163.01 open, proprietary (upgrade)" in render_text(d)


def test_sys_module_fallback(h100_copy):
    (h100_copy / "proc/driver/nvidia/version").unlink()
    drv = read_loaded_driver(h100_copy)
    assert (drv.version, drv.flavour, drv.source) == ("580.159.04", None, "/sys/module/nvidia/version")


def test_nothing_readable(tmp_path):
    assert not read_loaded_driver(tmp_path).loaded and read_kernel(tmp_path) is None
    r = _cli("--root", str(tmp_path))
    assert r.exit_code == 0 and "no NVIDIA GPU" in r.output and "not loaded" in r.output


def test_bad_catalog_exit_2(tmp_path, h100_node):
    bad = tmp_path / "gpus.yaml"
    bad.write_text("gpus:\n  - name: X\n")
    r = _cli("--root", str(h100_node), "--catalog", str(bad))
    assert r.exit_code == 2 and str(bad) in r.output and "gpus[0]" in r.output and "Traceback" not in r.output


@pytest.mark.subprocess
def test_python_m_validator(h100_node):
    """The real entry point (python3 -m validator), as the first-boot hook runs it."""
    import sys

    from validator import subp

    out = subp.run([sys.executable, "-m", "validator", "detect", "--root", str(h100_node), "--json"], timeout=60).stdout
    assert json.loads(out)["gpus"][0]["name"] == "H100 SXM5 80GB"
