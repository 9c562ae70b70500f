"""The matrix plan: table tests over fake GPU models, drivers and kernels (pure, no I/O)."""

from __future__ import annotations

import pytest

from builder.config import DriverDef, FlavourDef, KernelDef, MatrixConfig, PackageRef, Rule, Settings
from builder.matrix import gpu_reason, kernel_reason, resolve
from validator.catalog import load_catalog
from validator.idlists import DriverLists, IdList


CAT = load_catalog()
V100, A100, H100, H200, B200 = (CAT.find(n) for n in ("V100 SXM2 32GB", "A100 SXM4 80GB", "H100 SXM5 80GB",
                                                     "H200 SXM 141GB", "B200"))


def driver(version="535.261.03", branch=535, flavours=("proprietary", "open"), kernel_max=None, did=None):
    fl = {f: FlavourDef(f, PackageRef("nvidia-kernel-source" if f == "proprietary" else "nvidia-open-kernel-source",
                                      version + "-1"), f"nvidia-kernel-{version}")
          for f in flavours}
    return DriverDef(id=did or version, version=version, branch=branch, suite="bookworm", flavours=fl,
                     userspace=(), conflicts=(), kernel_max=kernel_max)


def kernel(abi="6.1.0-54-cloud-amd64"):
    return KernelDef(abi=abi, version="6.1.190-1", suite="bookworm-security", build_suite="bookworm",
                     headers=f"linux-headers-{abi}", image=f"linux-image-{abi}", kbuild="linux-kbuild-6.1")


# facts.md: in 535.261.03, H100 (2330) is in nvidia.ids but not nvidia-open.ids; A100/L4 are in both.
IDS = {"535.261.03": DriverLists("535.261.03", IdList("nvidia", 535, "proprietary", frozenset(V100.pci_ids + A100.pci_ids + H100.pci_ids)),
                                 IdList("nvidia-open", 535, "open", frozenset(A100.pci_ids)), "test lists")}


def cfg(kernels=None, drivers=None, flavours=("proprietary", "open"), include=(), exclude=()):
    return MatrixConfig("matrix.yaml", ("x",), tuple(kernels or [kernel()]), tuple(drivers or [driver()]),
                        tuple(flavours), tuple(include), tuple(exclude), Settings())


@pytest.mark.parametrize("gpu,flavour,expect", [
    (H100, "proprietary", None),
    (H100, "open", "not in nvidia-open.ids"),
    (A100, "open", None),
    (V100, "open", "open kernel modules need Turing or newer"),
    (V100, "proprietary", None),
    (H200, "proprietary", "not in nvidia.ids"),
    (B200, "proprietary", "only the open kernel modules"),
])
def test_gpu_reason(gpu, flavour, expect):
    why = gpu_reason(gpu, driver(), flavour, IDS)
    assert (why is None) if expect is None else (expect in why)


def test_newer_branch_than_last_is_refused():
    assert "outside V100 SXM2 32GB's catalog: branches 418..580" in gpu_reason(V100, driver("590.44.01", 590), "proprietary", {})


def test_missing_id_list_falls_back_to_catalog_range():
    assert gpu_reason(H100, driver(), "open", {}) is None


def test_default_like_plan_builds_both_flavours_for_the_gpus_they_serve():
    plan = resolve(cfg(), [H100, A100], IDS)
    assert [c.id for c in plan.cells] == ["535.261.03-proprietary@6.1.0-54-cloud-amd64",
                                          "535.261.03-open@6.1.0-54-cloud-amd64"]
    assert plan.cells[0].gpus == (H100.name, A100.name)
    assert plan.cells[1].gpus == (A100.name,)
    assert plan.skips == ()


def test_open_skipped_with_each_gpus_reason_when_no_gpu_can_use_it():
    plan = resolve(cfg(), [H100, V100], IDS)
    [skip] = plan.skips
    assert skip.id == "535.261.03-open@6.1.0-54-cloud-amd64"
    assert skip.reason == "no fleet GPU can use it"
    assert any("H100" in d and "nvidia-open.ids" in d for d in skip.details)
    assert any("Turing or newer" in d for d in skip.details)


def test_kernel_too_new_for_branch():
    k612 = kernel("6.12.117+deb13-cloud-amd64")
    plan = resolve(cfg(kernels=[kernel(), k612], drivers=[driver(kernel_max="6.8")], flavours=["proprietary"]), [H100], IDS)
    assert [c.kernel.abi for c in plan.cells] == ["6.1.0-54-cloud-amd64"]
    assert "kernel 6.12 too new for branch 535" in plan.skips[0].reason
    assert kernel_reason(k612, driver(kernel_max="6.12")) is None


def test_exclude_and_include_rules():
    plan = resolve(cfg(exclude=[Rule(flavour="open", reason="broken on 6.1.0-54")]), [H100, A100], IDS)
    assert [c.flavour for c in plan.cells] == ["proprietary"]
    assert plan.skips[0].reason == "excluded by exclude[0]: broken on 6.1.0-54"
    plan = resolve(cfg(include=[Rule(flavour="open")]), [H100], IDS)
    assert [c.flavour for c in plan.cells] == ["proprietary", "open"]
    assert plan.cells[1].why.startswith("included by include[0]")


def test_expected_failures_mark_cells():
    c = cfg()
    import dataclasses
    c = dataclasses.replace(c, expected_failures=(Rule(kernel="6.1.0-54-*", flavour="open", reason="pci_resize_resource"),))
    plan = resolve(c, [H100, A100], IDS)
    assert [(x.flavour, x.expect_fail) for x in plan.cells] == [("proprietary", ""), ("open", "pci_resize_resource")]


def test_driver_without_flavour_is_a_skip():
    plan = resolve(cfg(drivers=[driver(flavours=("proprietary",), did="tesla-535.216.03")]), [A100], IDS)
    assert plan.skips[0].reason == "tesla-535.216.03 has no open flavour"


def test_uncovered_gpu_is_reported_per_kernel():
    plan = resolve(cfg(), [H100, H200], IDS)
    [u] = plan.uncovered
    assert (u.kernel, u.gpu) == ("6.1.0-54-cloud-amd64", H200.name)
    assert any("not in nvidia.ids" in r for r in u.reasons)


def test_select_only_and_shards_partition_the_cells():
    plan = resolve(cfg(kernels=[kernel(), kernel("6.1.0-54-amd64")]), [H100, A100], IDS)
    assert len(plan.cells) == 4
    assert [c.id for c in plan.select("open")] == ["535.261.03-open@6.1.0-54-cloud-amd64", "535.261.03-open@6.1.0-54-amd64"]
    assert [c.id for c in plan.select("*proprietary@6.1.0-54-amd64")] == ["535.261.03-proprietary@6.1.0-54-amd64"]
    shards = [set(c.id for c in plan.select(shard=(i, 3))) for i in (1, 2, 3)]
    assert set().union(*shards) == {c.id for c in plan.cells}
    assert sum(len(s) for s in shards) == 4


def test_plan_json_roundtrip_shape():
    d = resolve(cfg(), [H100, A100], IDS).to_dict()
    assert d["cells"][0]["source"] == "nvidia-kernel-source=535.261.03-1"
    assert set(d) == {"cells", "skips", "uncovered", "notes"}
