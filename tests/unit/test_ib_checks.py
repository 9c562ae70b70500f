"""pcie.ib_* on node trees built from the kernel's InfiniBand sysfs layout (tests/unit/ib_tree.py), faults injected."""

import os
from pathlib import Path

import pytest

import ib_tree
from validator.runner import validate

FIXTURE = Path(__file__).parents[1] / "fixtures/nodes/h100x8-ndr-cx7-sysfs"
H100 = Path(__file__).parents[1] / "fixtures/nodes/h100-sxm5-80gb-kvm-guest"


def _ib(root, expect=None, profile=None):
    rep = validate(root=str(root), level="quick", expect=expect, profile=profile, groups=["pcie"])
    out = {}
    for r in rep.results:
        if r.id.startswith("pcie.ib_"):
            out.setdefault(r.id, {})[r.subject] = r
    return out


@pytest.fixture
def node(tmp_path):
    return ib_tree.build(tmp_path / "node")


def _profile(tmp_path, **fabric):
    from validator.tuning import packaged_profile

    d = packaged_profile().to_dict()
    d.pop("schema_version")
    d["fabric"] = fabric
    p = tmp_path / "profile.json"
    import yaml

    p.write_text(yaml.safe_dump(d))
    return str(p)


def _tree(root: Path) -> dict:
    """Every entry under root: a file's bytes, a link's target text, or a folder. Links are read, never followed:
    each RDMA device's `device` link loops back to its PCI function (as in sysfs), and a walk through them only
    ends where the kernel gives up (ELOOP, after 40 links), at a depth that depends on the path above root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):  # followlinks=False: a link to a folder is not entered
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = str(p.relative_to(root))
            out[rel] = ("link", os.readlink(p)) if p.is_symlink() else ("dir",) if p.is_dir() else ("file", p.read_bytes())
    out.pop("README.md", None)
    return out


def test_the_fixture_is_the_generators_tree(tmp_path):
    fresh, shipped = _tree(ib_tree.build(tmp_path / "fresh")), _tree(FIXTURE)
    assert sorted(fresh) == sorted(shipped)
    assert [k for k in fresh if fresh[k] != shipped[k]] == []
    assert shipped["sys/class/infiniband/mlx5_3"] == ("link", "../../devices/pci0000:59/0000:59:01.0/0000:5a:00.0/"
                                                      "0000:5b:01.0/0000:5d:00.0/infiniband/mlx5_3")
    assert sum(v[0] == "link" for v in shipped.values()) == 8 * 4  # bus links (GPU, HCA), class link, device link


def test_healthy_8x_ndr_node_passes_every_ib_check():
    got = _ib(FIXTURE, expect="8xH100,8xNDR")
    ports = got["pcie.ib_ports"]
    assert len(ports) == 9 and all(r.status == "pass" for r in ports.values())
    assert "ACTIVE / LinkUp, 400 Gb/sec (4X NDR), InfiniBand (MT4129, fw 28.39.2048, 0000:19:00.0)" == \
        ports["mlx5_0:1"].observed
    assert ports["ports"].observed == "8 of 8 port(s) up on 8 HCA(s)" and "--expect" in ports["ports"].expected
    assert all(r.status == "pass" for r in got["pcie.ib_errors"].values())
    aff = got["pcie.ib_affinity"]
    assert len(aff) == 8 and all(r.status == "pass" and "(PXB)" in r.observed for r in aff.values())
    assert "nearest HCA mlx5_4 (PXB)" in aff["GPU 0000:9a:00.0"].observed
    assert got["pcie.ib_gpudirect"][""].status == "pass"


def test_no_hca_is_a_skip_with_the_reason_unless_ports_are_expected():
    got = _ib(H100)
    assert {k: v[""].status for k, v in got.items()} == {
        "pcie.ib_ports": "skip", "pcie.ib_errors": "skip", "pcie.ib_affinity": "skip", "pcie.ib_gpudirect": "skip"}
    assert "no InfiniBand/RoCE HCA" in got["pcie.ib_ports"][""].observed
    got = _ib(H100, expect="1xH100,8xNDR")
    assert got["pcie.ib_ports"][""].status == "fail" and "8 HCA port(s) (--expect)" in got["pcie.ib_ports"][""].expected
    assert got["pcie.ib_errors"][""].status == "skip"  # one fault, one failing check


@pytest.mark.parametrize("state,phys,says", [("1: DOWN", "2: Polling", "no peer or cable"),
                                             ("1: DOWN", "3: Disabled", "disabled"),
                                             ("2: INIT", "5: LinkUp", "no subnet manager")])
def test_an_hca_port_down_fails_and_says_why(node, state, phys, says):
    ib_tree.port_file(node, 3, "state").write_text(state + "\n")
    ib_tree.port_file(node, 3, "phys_state").write_text(phys + "\n")
    got = _ib(node, expect="8xH100,8xNDR")
    r = got["pcie.ib_ports"]["mlx5_3:1"]
    assert r.status == "fail" and says in r.observed and r.remedy
    assert got["pcie.ib_ports"]["ports"].status == "fail" and "7 of 8" in got["pcie.ib_ports"]["ports"].observed
    # The affinity check uses the HCAs that are up: GPU 3 now reaches another pair's HCA through the host.
    assert "mlx5_3" not in got["pcie.ib_affinity"]["GPU 0000:5c:00.0"].observed


def test_a_port_trained_below_the_expected_rate_fails(node, tmp_path):
    ib_tree.port_file(node, 6, "rate").write_text("200 Gb/sec (4X HDR)\n")
    r = _ib(node, profile=_profile(tmp_path, rate_gbps=400))["pcie.ib_ports"]["mlx5_6:1"]
    assert r.status == "fail" and "slower than expected" in r.observed and r.metric.value == 200
    # Without an expectation the rate is reported, not judged.
    assert _ib(node)["pcie.ib_ports"]["mlx5_6:1"].status == "pass"


def test_roce_port_where_infiniband_is_expected_fails(tmp_path):
    root = ib_tree.build(tmp_path / "roce", pairs=2, layer="Ethernet", rate="200 Gb/sec (4X HDR)")
    got = _ib(root, profile=_profile(tmp_path, link_layer="InfiniBand"))
    assert got["pcie.ib_ports"]["mlx5_0:1"].status == "fail" and "Ethernet" in got["pcie.ib_ports"]["mlx5_0:1"].observed


@pytest.mark.parametrize("counters,status,says", [
    ({"link_downed": 5}, "fail", "flapping"),
    ({"link_downed": 1}, "warn", "went down 1 time"),
    ({"link_error_recovery": 2}, "warn", "2 link error recoveries"),
    ({"symbol_error": 10000}, "warn", "symbol_error 10000 = 6.9/min"),
    ({"symbol_error": 65535}, "warn", "saturated"),
    ({"symbol_error": 5, "port_rcv_errors": 3}, "pass", "symbol_error 5"),
])
def test_link_flapping_and_error_counters(node, counters, status, says):
    for name, v in counters.items():
        ib_tree.port_file(node, 2, f"counters/{name}").write_text(f"{v}\n")
    r = _ib(node)["pcie.ib_errors"]["mlx5_2:1"]
    assert r.status == status and says in r.observed
    assert "uptime 24.0 h" in r.observed


def test_gpus_without_an_hca_on_their_numa_node_warn(tmp_path):
    root = ib_tree.build(tmp_path / "n")
    for i in range(4):  # take out the HCAs of NUMA node 0
        link = root / f"sys/class/infiniband/mlx5_{i}"
        link.unlink()
    aff = _ib(root)["pcie.ib_affinity"]
    assert [aff[f"GPU {a}"].status for a in ("0000:18:00.0", "0000:9a:00.0")] == ["warn", "pass"]
    assert "(SYS)" in aff["GPU 0000:18:00.0"].observed and aff["GPU 0000:18:00.0"].remedy


def test_gpudirect_needs_peermem_or_dma_buf(tmp_path):
    root = ib_tree.build(tmp_path / "n", modules=("nvidia_uvm", "nvidia", "mlx5_ib", "mlx5_core"))
    assert _ib(root)["pcie.ib_gpudirect"][""].status == "warn"
    assert _ib(root, profile=_profile(tmp_path, gpudirect=True))["pcie.ib_gpudirect"][""].status == "fail"
    assert _ib(root, profile=_profile(tmp_path, gpudirect=False))["pcie.ib_gpudirect"][""].status == "skip"
    (root / "proc/driver/nvidia/version").write_text(
        "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.86.15  Release Build\n")
    r = _ib(root)["pcie.ib_gpudirect"][""]
    assert r.status == "pass" and "DMA-BUF" in r.observed


def test_profile_fabric_section_is_schema_checked(tmp_path):
    from validator.errors import ConfigError
    from validator.tuning import load_profile

    with pytest.raises(ConfigError, match="fabric.link_layer"):
        load_profile(_profile(tmp_path, link_layer="Myrinet"))
    with pytest.raises(ConfigError, match="fabric.hca_ports"):
        load_profile(_profile(tmp_path, hca_ports="eight"))
    assert load_profile(_profile(tmp_path, hca_ports=8, rate_gbps=400)).fabric.rate_gbps == 400


def test_expect_names_ports_by_speed_or_rate():
    from validator.checks.context import Expectation

    e = Expectation.parse("8xH100,8xNDR")
    assert e.items == ((8, "H100"),) and e.fabric == ((8, 400.0),) and e.total == 8 and str(e) == "8xH100,8x400G"
    assert Expectation.parse("4x200Gb/s").fabric == ((4, 200.0),) and not Expectation.parse("4xHDR")


def test_capture_records_what_the_ib_checks_read(tmp_path):
    from validator.capture import capture

    src = ib_tree.build(tmp_path / "node")
    ib_tree.port_file(src, 5, "state").write_text("1: DOWN\n")
    ib_tree.port_file(src, 5, "phys_state").write_text("2: Polling\n")
    ib_tree.port_file(src, 1, "counters/link_downed").write_text("4\n")
    snap = capture(tmp_path / "snap", root=src, run_commands=False)
    assert os.readlink(snap / "sys/class/infiniband/mlx5_0") == os.readlink(src / "sys/class/infiniband/mlx5_0")

    def statuses(root):
        return {(k, s): r.status for k, v in _ib(root, expect="8xH100,8xNDR").items() for s, r in v.items()}

    assert statuses(snap) == statuses(src)
    assert statuses(snap)[("pcie.ib_ports", "mlx5_5:1")] == "fail"
    assert statuses(snap)[("pcie.ib_errors", "mlx5_1:1")] == "fail"
