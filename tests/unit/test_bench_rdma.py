"""`gpu-validate bench rdma`: ib_write_bw reports (tests/fixtures/perftest), what is tested where and how,
expectations, and Debian's perftest for real on a machine without RDMA devices."""

import shutil
from pathlib import Path

import pytest

import ib_tree
from validator.bench import evaluate, expect, rdma
from validator.bench.parsers import parse_ib_write_bw
from validator.bench.results import BenchRun, Figure, GpuInfo
from validator.catalog import load_catalog
from validator.node import Node

PERFTEST = Path(__file__).parents[1] / "fixtures" / "perftest"
DEBIAN_PERFTEST = shutil.which("ib_write_bw") is not None


def _text(name):
    return (PERFTEST / name).read_text()


@pytest.mark.parametrize("name,avg,peak,cuda,device,link", [
    ("ib_write_bw-ndr-host-client.txt", 392.68, 392.74, False, "mlx5_0", "IB"),
    ("ib_write_bw-ndr-gpudirect-client.txt", 385.97, 386.12, True, "mlx5_0", "IB"),
    # MB/sec (no --report_gbits): perftest's MB is 2^20 bytes, 11198.78 MB/s = 93.94 Gb/s
    ("ib_write_bw-roce-mbsec-client.txt", 93.94, 11234.25, False, "mlx5_2", "Ethernet"),
])
def test_ib_write_bw_reports(name, avg, peak, cuda, device, link):
    r = parse_ib_write_bw(_text(name))
    assert r.error is None and len(r.rows) == 1 and r.rows[0][:2] == (8388608, 5000)
    assert r.avg_gbps == pytest.approx(avg, abs=0.01) and r.rows[0][2] == peak
    assert (r.cuda, r.device, r.link_type) == (cuda, device, link)


@pytest.mark.parametrize("name,error", [
    ("debian-4.5-0.17-ib_write_bw-no-device.txt", "no RDMA device: Did not detect devices"),
    ("ib_write_bw-peer-unreachable.txt", "peer did not answer: Couldn't connect to 10.0.0.2:18515"),
])
def test_ib_write_bw_failures_say_why(name, error):
    r = parse_ib_write_bw(_text(name))
    assert r.rows == [] and r.avg_gbps is None and r.error == error


def test_debian_perftest_has_no_cuda():
    help_text = _text("debian-4.5-0.17-ib_write_bw-help.txt")
    assert "--report_gbits" in help_text and "--perform_warm_up" in help_text and "--use_cuda" not in help_text


@pytest.fixture
def node(tmp_path):
    return Node(ib_tree.build(tmp_path / "n"), runner=lambda *a: None, live=False)


def test_each_port_that_is_up_with_its_numa_node_and_nearest_gpu(node):
    ib_tree.port_file(node.root, 2, "state").write_text("1: DOWN\n")
    ts, notes = rdma.targets(node)
    assert [t.port.name for t in ts] == [f"mlx5_{i}:1" for i in (0, 1, 3, 4, 5, 6, 7)]
    assert notes == ["mlx5_2:1 left out: DOWN / LinkUp"]
    t = ts[3]  # mlx5_4: second NUMA node, its GPU on the same PCIe switch
    assert (t.numa, t.gpu.address, t.gpu_index, t.relation, t.index) == (1, "0000:9a:00.0", 4, "PXB", 3)
    only, _ = rdma.targets(node, ("mlx5_1", "mlx5_7:1"))
    assert [t.port.name for t in only] == ["mlx5_1:1", "mlx5_7:1"]


def test_command_lines_pinned_to_the_hca_numa_node(node):
    ts, _ = rdma.targets(node)
    caps = rdma.Caps(cuda=True, cuda_bus_id=True, numactl="/usr/bin/numactl")
    t = ts[5]
    assert rdma.argv(t, caps, 8 << 20, 18520, cuda=True, peer="10.0.0.2") == [
        "/usr/bin/numactl", "-N", "1", "-m", "1", "ib_write_bw", "-d", "mlx5_5", "-i", "1", "-s", "8388608", "-F",
        "--report_gbits", "--perform_warm_up", "-p", "18520", "--use_cuda_bus_id=0000:ba:00.0", "10.0.0.2"]
    old = rdma.Caps(cuda=True, cuda_bus_id=False, numactl=None)
    assert rdma.argv(t, old, 8 << 20, 18520, cuda=True)[-1] == "--use_cuda=5"
    assert "--use_cuda" not in " ".join(rdma.argv(t, old, 8 << 20, 18520, cuda=False))


def test_roce_port_gets_its_rocev2_gid_index(tmp_path):
    root = ib_tree.build(tmp_path / "n", pairs=1, layer="Ethernet", rate="200 Gb/sec (4X HDR)")
    port = ib_tree.hca_dir(root, 0) / "ports/1"
    for idx, (typ, gid) in enumerate([("IB/RoCE v1", "fe80:0000:0000:0000:0000:0000:0000:0001"),
                                      ("RoCE v2", "0000:0000:0000:0000:0000:ffff:0a00:0005")]):
        (port / "gid_attrs/types").mkdir(parents=True, exist_ok=True)
        (port / "gids").mkdir(exist_ok=True)
        (port / f"gid_attrs/types/{idx}").write_text(typ + "\n")
        (port / f"gids/{idx}").write_text(gid + "\n")
    (t,), _ = rdma.targets(Node(root, runner=lambda *a: None, live=False))
    assert t.gid_index == 1 and "-x" in rdma.argv(t, rdma.Caps(False, False, None), 1 << 20, 1, cuda=False)


@pytest.fixture(scope="module")
def cat():
    return load_catalog()


def _fig(value, memory, rate=400.0, gpu=None):
    return Figure("rdma", f"ib_write_bw_mlx5_0_1_{'gpudirect' if memory == 'cuda' else 'host'}", value, "Gb/s", gpu,
                  meta={"hca": "mlx5_0", "rate_gbps": rate, "memory": memory})


@pytest.mark.parametrize("device_id,value,status,expected", [
    (0x2330, 385.97, "pass", 380.0),   # H100 SXM5: Azure's 380 Gb/s per NDR port
    (0x2330, 350.0, "warn", 380.0),
    (0x2330, 300.0, "fail", 380.0),
    (0x2335, 365.0, "pass", 360.0),    # H200: 360
])
def test_gpudirect_against_the_catalog_per_gpu_model(cat, device_id, value, status, expected):
    run = BenchRun("rdma", figures=[_fig(value, "cuda", gpu=0)], gpus=[GpuInfo(0, "", device_id, "0000:18:00.0")])
    (o,) = evaluate.outcomes(run, cat)["rdma"]
    assert o.status == status and o.metric.expected == expected and "GPUDirect baseline" in o.expected


def test_host_memory_against_the_line_rate_and_hdr_scaling(cat):
    gpus = [GpuInfo(0, "", 0x2330, "0000:18:00.0")]
    assert expect.expected_for(_fig(392.7, "host"), gpus[0], *expect.lookup(cat, gpus[0])).value == 360.0
    hdr = expect.expected_for(_fig(190.0, "cuda", rate=200.0, gpu=0), gpus[0], *expect.lookup(cat, gpus[0]))
    assert hdr.value == 190.0 and "x 200/400" in hdr.source


@pytest.mark.subprocess
@pytest.mark.skipif(not DEBIAN_PERFTEST, reason="perftest not installed (scripts/host-deps.sh installs it)")
def test_real_perftest_without_rdma_devices_skips_with_its_own_words(tmp_path):
    from click.testing import CliRunner

    from validator.cli import main

    res = CliRunner().invoke(main, ["bench", "rdma", "--save", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    assert "SKIP" in res.output and "pcie.bench_rdma" in res.output
    assert "no InfiniBand/RoCE port is up" in res.output and "ib_write_bw: Did not detect devices" in res.output
    assert rdma.capabilities().cuda is False  # Debian builds perftest without CUDA


@pytest.mark.subprocess
@pytest.mark.skipif(not DEBIAN_PERFTEST, reason="perftest not installed (scripts/host-deps.sh installs it)")
@pytest.mark.parametrize("mode", ["loopback", "server"])
def test_ports_up_in_sysfs_but_no_verbs_device_is_an_error_per_port(node, mode):
    # sysfs says two ports are up, the real perftest finds no device (no /dev/infiniband, e.g. a container
    # without the RDMA devices passed in): every port fails with perftest's reason, nothing hangs.
    for i in range(2, 8):
        ib_tree.port_file(node.root, i, "state").write_text("1: DOWN\n")
    run = rdma.run(mode, node=node, test_timeout=30, peer_timeout=5)
    assert run.figures == [] and len(run.errors) == 2, run.errors
    assert all("no RDMA device: Did not detect devices" in e for e in run.errors)
    assert run.info["perftest_cuda"] is False and "GPUDirect not measured" in run.info["note"]


def test_client_mode_needs_a_peer_and_peer_needs_client_mode():
    from click.testing import CliRunner

    from validator.cli import main

    assert "needs --peer HOST" in CliRunner().invoke(main, ["bench", "rdma", "--mode", "client"]).output
    assert "--peer is for --mode client" in CliRunner().invoke(main, ["bench", "rdma", "--peer", "x"]).output
