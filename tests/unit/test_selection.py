"""Selection rules, table-tested on tiny hand-made lists and on the shipped (real) lists."""

from __future__ import annotations

import pytest

from validator.catalog import load_catalog
from validator.idlists import DriverLists, IdList, lists_for_driver, offered
from validator.selection import (
    R_BLACKWELL_OPEN_ONLY, R_CATALOG_RANGE, R_CUDA_ARCH, R_CUDA_MIN_DRIVER, R_ID_LIST, R_NO_OPEN_LIST,
    R_OPEN_NEEDS_TURING, branch_supports, cuda_allowed, evaluate_driver, flavour_allowed, max_cuda, recommend,
)

CAT = load_catalog()


def _lists(prop=(), opn=None):
    return DriverLists(
        "999.1.2",
        IdList("nvidia", 999, "proprietary", frozenset(prop)),
        None if opn is None else IdList("nvidia-open", 999, "open", frozenset(opn)),
        "test lists",
    )


@pytest.mark.parametrize(
    "gpu,lists,ok,rule",
    [
        ("H100", _lists([0x2330]), True, R_ID_LIST),
        ("H100", _lists([0x2331], [0x2330]), True, R_ID_LIST),  # the open list alone is enough
        ("H200", _lists([0x2330]), False, R_ID_LIST),
        ("B200", None, True, R_CATALOG_RANGE),  # 999 >= 570, no list
    ],
)
def test_branch_supports(gpu, lists, ok, rule):
    d = branch_supports(CAT.find(gpu), "999.1.2", lists)
    assert (d.ok, d.rule) == (ok, rule) and d.reason


@pytest.mark.parametrize(
    "gpu,flavour,lists,ok,rule",
    [
        ("V100", "open", _lists([0x1DB1], [0x1DB1]), False, R_OPEN_NEEDS_TURING),  # even if a list said so
        ("V100", "proprietary", _lists([0x1DB1]), True, R_ID_LIST),
        ("T4", "open", _lists([0x1EB8], [0x1EB8]), True, R_ID_LIST),
        ("H100", "open", _lists([0x2330], []), False, R_ID_LIST),
        ("H100", "open", _lists([0x2330], None), False, R_NO_OPEN_LIST),
        ("B200", "proprietary", _lists([0x2901], [0x2901]), False, R_BLACKWELL_OPEN_ONLY),
        ("B200", "open", _lists([0x2901], [0x2901]), True, R_ID_LIST),
        ("H100", "open", None, True, R_CATALOG_RANGE),
    ],
)
def test_flavour_allowed(gpu, flavour, lists, ok, rule):
    d = flavour_allowed(CAT.find(gpu), flavour, "999.1.2", lists)
    assert (d.ok, d.rule) == (ok, rule)


@pytest.mark.parametrize(
    "cuda,driver,gpu,ok,rule",
    [
        ("12.4", "550.54.14", "H100", True, R_CUDA_MIN_DRIVER),
        ("12.4", "550.54.13", "H100", False, R_CUDA_MIN_DRIVER),
        ("12.4", "535.261.03", None, False, R_CUDA_MIN_DRIVER),
        ("12.2", "535.261.03", None, True, R_CUDA_MIN_DRIVER),
        ("12.8", "570.26", None, True, R_CUDA_MIN_DRIVER),
        ("13.0", "580.159.04", "V100", False, R_CUDA_ARCH),
        ("13.0", "580.159.04", "T4", True, R_CUDA_MIN_DRIVER),
    ],
)
def test_cuda_allowed(cuda, driver, gpu, ok, rule):
    d = cuda_allowed(cuda, driver, CAT, CAT.find(gpu) if gpu else None)
    assert (d.ok, d.rule) == (ok, rule)


def test_max_cuda():
    assert max_cuda("535.261.03", CAT) == "12.2"
    assert max_cuda("580.159.04", CAT, CAT.find("H100")) == "13.0"
    assert max_cuda("580.159.04", CAT, CAT.find("V100")) == "12.9"
    assert max_cuda("470.256.02", CAT) is None


# ------------------------------------------------------------ on the real shipped lists (facts.md)


@pytest.mark.parametrize(
    "gpu,driver,cuda,ok,flavours,rule",
    [
        ("H100", "535.261.03", None, True, ("proprietary",), R_ID_LIST),  # 2330 not in 535's open list
        ("H100", "550.163.01", None, True, ("open", "proprietary"), R_ID_LIST),
        ("H100", "535.261.03", "12.4", False, ("proprietary",), R_CUDA_MIN_DRIVER),
        ("A100 SXM4 80GB", "535.261.03", None, True, ("open", "proprietary"), R_ID_LIST),
        ("L4", "535.261.03", None, True, ("open", "proprietary"), R_ID_LIST),
        ("H200", "535.261.03", None, False, (), R_ID_LIST),
        ("H200", "550.163.01", None, True, ("proprietary",), R_ID_LIST),
        ("B200", "550.163.01", None, False, (), R_ID_LIST),
        ("V100", "535.216.03", None, True, ("proprietary",), R_ID_LIST),  # tesla-535 list, no open list
        ("T4", "535.216.03", None, True, ("proprietary",), R_ID_LIST),
        ("H100", "470.256.02", None, False, (), R_ID_LIST),  # tesla-470 has no Hopper
        ("H100", "580.159.04", "13.0", True, ("open", "proprietary"), R_CATALOG_RANGE),  # no list: catalog
        ("V100", "590.1.1", None, False, (), R_CATALOG_RANGE),  # past Volta's last branch (580)
    ],
)
def test_evaluate_driver_real_lists(gpu, driver, cuda, ok, flavours, rule):
    c = evaluate_driver(CAT.find(gpu), driver, lists_for_driver(driver), CAT, cuda)
    assert (c.ok, c.flavours, c.deciding.rule) == (ok, flavours, rule), c.decisions


@pytest.mark.parametrize(
    "gpu,cuda,flavour,driver,chosen_flavour,cuda_out",
    [
        ("H100", None, None, "550.163.01", "open", "12.4"),
        ("H100", "12.2", "proprietary", "550.163.01", "proprietary", "12.2"),
        ("H200", None, None, "550.163.01", "proprietary", "12.4"),
        ("V100", None, None, "550.163.01", "proprietary", "12.4"),
        ("A800", None, None, "550.163.01", "proprietary", "12.4"),
    ],
)
def test_recommend(gpu, cuda, flavour, driver, chosen_flavour, cuda_out):
    r = recommend(CAT.find(gpu), offered(), CAT, cuda, flavour)
    assert (r.ok, r.driver_version, r.flavour, r.cuda) == (True, driver, chosen_flavour, cuda_out)


@pytest.mark.parametrize(
    "gpu,cuda,rule",
    [("B200", None, R_ID_LIST), ("H100", "13.0", R_CUDA_MIN_DRIVER), ("V100", "13.0", R_CUDA_ARCH)],
)
def test_recommend_none(gpu, cuda, rule):
    r = recommend(CAT.find(gpu), offered(), CAT, cuda)
    assert not r.ok and r.driver_version is None and r.reason.rule == rule
    assert r.to_dict()["rule"] == rule
