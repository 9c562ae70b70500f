"""NGC compatibility rules, table-tested on the two real captures (driver 580) and synthetic drivers 535/550/570."""

from __future__ import annotations

from pathlib import Path

import pytest

from validator.catalog import load_catalog
from validator.ngc import compat
from validator.ngc.catalog import load_ngc
from validator.ngc.compat import FORWARD, NATIVE, NO, judge, newest_compatible
from validator.ngc.facts import read_facts

NODES = Path(__file__).resolve().parents[1] / "fixtures" / "nodes"
H100_NODE, H200X2_NODE = NODES / "h100-sxm5-80gb-kvm-guest", NODES / "h200x2-nvlink-kvm-guest"
CAT = load_catalog()
NGC = load_ngc(catalog=CAT)


def facts(root=H100_NODE, driver=None, gpus=()):
    return read_facts(root, CAT, driver, gpus)


@pytest.mark.parametrize("root, count, model", [(H100_NODE, 1, "H100 SXM5 80GB"), (H200X2_NODE, 2, "H200 SXM 141GB")])
def test_captures_driver_580_runs_everything_natively(root, count, model):
    f = facts(root)
    assert f.driver == "580.159.04"
    assert [g.name for g in f.gpus] == [model] * count
    assert "/proc/driver/nvidia/version" in f.source
    verdicts = compat.judge_all(NGC.images, f, CAT)
    assert verdicts and all(v.kind == NATIVE and v.rule == compat.R_NATIVE for v in verdicts), \
        [(v.release.ref, v.reason) for v in verdicts if v.kind != NATIVE]
    assert newest_compatible(NGC.image("pytorch"), f, CAT).release.tag == "25.10-py3"
    assert newest_compatible(NGC.image("rapidsai/base"), f, CAT).release.tag == "26.02-cuda13-py3.13"


# (driver, image, tag) -> (verdict, rule): on the H100 capture's GPU with a synthetic driver.
TABLE = [
    ("535.261.03", "pytorch", "23.08-py3", NATIVE, compat.R_NATIVE),          # CUDA 12.2 needs 535.54.03
    ("535.261.03", "pytorch", "24.01-py3", FORWARD, compat.R_FORWARD),        # 545 needed; R535 from 535.86
    ("535.261.03", "tritonserver", "25.06-py3", FORWARD, compat.R_FORWARD),
    ("535.261.03", "pytorch", "25.08-py3", NO, compat.R_TOO_OLD),             # CUDA 13: 580.65.06, no FC branch
    ("535.261.03", "cuda", "12.4.1-runtime-ubuntu22.04", FORWARD, compat.R_FORWARD),  # NVIDIA_REQUIRE_CUDA: R535
    ("535.261.03", "cuda", "12.6.3-base-ubuntu24.04", FORWARD, compat.R_FORWARD),
    ("535.261.03", "rapidsai/base", "26.02-cuda12-py3.13", NATIVE, compat.R_MINOR),  # RAPIDS: 535+ via minor compat
    ("535.261.03", "deepstream", "7.1-triton-multiarch", NO, compat.R_TOO_OLD),
    ("550.163.01", "pytorch", "24.05-py3", NATIVE, compat.R_NATIVE),          # CUDA 12.4 needs 550.54.14
    ("550.163.01", "pytorch", "24.07-py3", NO, compat.R_TOO_OLD),             # 555 needed; R550 not listed
    ("550.163.01", "cuda", "12.6.3-base-ubuntu24.04", FORWARD, compat.R_FORWARD),  # but this image lists R550
    ("550.163.01", "tensorflow", "24.01-tf2-py3", NATIVE, compat.R_NATIVE),
    ("570.86.15", "tritonserver", "25.01-py3", NATIVE, compat.R_NATIVE),      # CUDA 12.8 needs 570.26
    ("570.86.15", "tritonserver", "25.04-py3", NO, compat.R_TOO_OLD),         # the note requires 575
    ("570.86.15", "rapidsai/base", "26.02-cuda13-py3.13", NO, compat.R_TOO_OLD),
    ("570.86.15", "cuda", "12.8.1-base-ubuntu22.04", NATIVE, compat.R_NATIVE),
]


@pytest.mark.parametrize("driver, image, tag, kind, rule", TABLE)
def test_synthetic_drivers_on_h100(driver, image, tag, kind, rule):
    v = judge(NGC.release(image, tag), facts(driver=driver), CAT)
    assert (v.kind, v.rule) == (kind, rule), v.reason


@pytest.mark.parametrize("driver, newest, kind", [
    ("535.261.03", "25.06-py3", FORWARD), ("550.163.01", "24.05-py3", NATIVE), ("570.86.15", "25.01-py3", NATIVE)])
def test_newest_pytorch_per_driver(driver, newest, kind):
    v = newest_compatible(NGC.image("pytorch"), facts(H200X2_NODE, driver=driver), CAT)
    assert (v.release.tag, v.kind) == (newest, kind)


def test_refusal_names_the_driver_it_needs():
    v = judge(NGC.release("pytorch", "25.08-py3"), facts(driver="550.163.01"), CAT)
    assert v.needs == "580.65.06" and "580.65.06" in v.reason and "550.163.01" in v.reason
    v = judge(NGC.release("pytorch", "24.07-py3"), facts(driver="550.163.01"), CAT)
    assert "470.57+, 525.85+, 535.86+" in v.reason  # the forward-compatible way out is named too


def test_minor_version_compat_when_the_note_asks_less_than_the_toolkit():
    v = judge(NGC.release("tritonserver", "24.03-py3"), facts(driver="545.23.06"), CAT)
    assert (v.kind, v.rule) == (NATIVE, compat.R_MINOR) and "550.54.14" in v.reason
    v = judge(NGC.release("tritonserver", "25.08-py3"), facts(driver="575.51.03"), CAT)  # note says 575, CUDA 13 says no
    assert (v.kind, v.rule) == (NO, compat.R_TOO_OLD) and v.needs == "580.65.06"


def test_a_note_stricter_than_the_toolkit_decides():
    ds = NGC.release("deepstream", "7.0-triton-multiarch")  # CUDA 12.2 (535.54.03), the note wants 535.161.08
    v = judge(ds, facts(driver="535.104.05"), CAT)
    assert (v.kind, v.rule, v.needs) == (NO, compat.R_TOO_OLD, "535.161.08")
    v = judge(ds, facts(driver="535.161.08"), CAT)
    assert (v.kind, v.rule) == (NATIVE, compat.R_NATIVE) and "as the release note requires" in v.reason


def test_forward_compat_needs_the_listed_version_within_the_branch():
    v = judge(NGC.release("pytorch", "24.01-py3"), facts(driver="535.54.03"), CAT)
    assert (v.kind, v.rule) == (NO, compat.R_TOO_OLD) and "from 535.86 on" in v.reason


def test_forward_compat_is_for_data_center_gpus_only():
    v = judge(NGC.release("pytorch", "24.01-py3"), facts(driver="535.261.03", gpus=["RTX 4090"]), CAT)
    assert (v.kind, v.rule) == (NO, compat.R_FORWARD_GEFORCE) and "RTX 4090" in v.reason
    unknown = compat.NodeFacts("535.261.03", (compat.GpuFacts("unknown NVIDIA device 10de:ffff", None, None),))
    v = judge(NGC.release("pytorch", "24.01-py3"), unknown, CAT)
    assert v.rule == compat.R_FORWARD_NO_GPU


def test_gpu_architecture_floor():
    v = judge(NGC.release("pytorch", "25.01-py3"), facts(driver="580.159.04", gpus=["V100 SXM2 32GB"]), CAT)
    assert (v.kind, v.rule) == (NO, compat.R_GPU_ARCH) and "7.5 (release note)" in v.reason
    v = judge(NGC.release("cuda", "13.0.0-base-ubuntu24.04"), facts(driver="580.159.04", gpus=["V100 SXM2 32GB"]), CAT)
    assert v.rule == compat.R_GPU_ARCH and "cuda.yaml" in v.reason  # CUDA 13 drops Volta
    v = judge(NGC.release("pytorch", "24.01-py3"), facts(driver="580.159.04", gpus=["V100 SXM2 32GB"]), CAT)
    assert v.kind == NATIVE


def test_no_driver(tmp_path):
    f = read_facts(tmp_path, CAT)
    assert f.driver is None and f.gpus == ()
    v = judge(NGC.release("pytorch", "24.01-py3"), f, CAT)
    assert (v.kind, v.rule) == (NO, compat.R_NO_DRIVER) and "545" in v.reason
    assert newest_compatible(NGC.image("pytorch"), f, CAT) is None


def test_cuda_filter():
    vs = compat.judge_all(NGC.images, facts(), CAT, cuda="12.4")
    assert vs and {v.release.cuda_key for v in vs} == {"12.4"}
