"""Figures against the catalog baselines: expectations, pass/warn/fail margins, MFU, errors, reports."""

import pytest

from validator.bench import evaluate, expect, report_out, telemetry
from validator.bench.launch import Launch, LaunchError, detect, rendezvous_env
from validator.bench.parsers import Topology
from validator.bench.results import BenchRun, Figure, GpuInfo
from validator.catalog import load_catalog

H100 = GpuInfo(0, "NVIDIA H100 80GB HBM3", 0x2330, "0000:00:06.0", 79.2, 5, 16, 5, 16)


@pytest.fixture(scope="module")
def cat():
    return load_catalog()


def _run(suite, *figs, gpus=(H100,), **kw):
    return BenchRun(suite, figures=list(figs), gpus=list(gpus), **kw)


def _one(run, cat, key, topo=None):
    return evaluate.outcomes(run, cat, topo)[key]


def test_lookup_by_pci_id_then_name(cat):
    model, base = expect.lookup(cat, H100)
    assert model.name == "H100 SXM5 80GB" and base.pcie_h2d_gbs == 55.0
    by_name = GpuInfo(0, "NVIDIA H100 SXM5 80GB")
    assert expect.lookup(cat, by_name)[0].name == "H100 SXM5 80GB"
    assert expect.lookup(cat, GpuInfo(0, "Mystery GPU")) == (None, None)
    assert expect.lookup(None, H100) == (None, None)


def test_host_copy_at_target_passes_and_low_fails(cat):
    out = _one(_run("bandwidth", Figure("bandwidth", "h2d_pinned", 55.0, "GB/s", 0),
                    Figure("bandwidth", "d2h_pinned", 30.0, "GB/s", 0)), cat, "host_copy")
    assert [o.status for o in out] == ["pass", "fail"]
    assert out[0].metric.expected == 55.0 and "100 % of expected" in out[0].observed
    assert out[1].remedy and "PCIe" in out[1].remedy


def test_host_copy_expected_follows_the_negotiated_link(cat):
    gen4 = GpuInfo(0, "NVIDIA H100 80GB HBM3", 0x2330, "", 80, 4, 16, 5, 16)
    (o,) = _one(_run("bandwidth", Figure("bandwidth", "h2d_pinned", 27.0, "GB/s", 0), gpus=(gen4,)), cat, "host_copy")
    # 31.5 x 0.87 = 27.4 expected for Gen4 x16; 98 % of that, but the link is below its max: warn.
    assert o.metric.expected == pytest.approx(27.4) and o.status == "warn"
    assert "below max Gen5 x16" in o.observed


def test_informational_figures_have_no_expectation(cat):
    (o,) = _one(_run("bandwidth", Figure("bandwidth", "h2d_pageable", 7.3, "GB/s", 0, gate=False)), cat, "host_copy")
    assert o.status == "pass" and o.expected == "informational" and o.metric is None


def test_device_copy_uses_measured_baseline(cat):
    (o,) = _one(_run("bandwidth", Figure("bandwidth", "device_copy", 2600.0, "GB/s", 0)), cat, "mem_copy")
    assert o.metric.expected == 2921 and o.status == "warn"  # 89 %


def test_p2p_over_nvlink_against_baseline(cat):
    topo = Topology(gpus=["GPU0", "GPU1"], links={(0, 1): "NV18", (1, 0): "NV18"})
    fig = Figure("bandwidth", "p2p_0_1", 380.0, "GB/s", 0, meta={"src": 0, "dst": 1})
    (o,) = _one(_run("bandwidth", fig), cat, "p2p", topo)
    assert o.metric.expected == 335 and o.status == "pass"


def test_gemm_peak_and_sustained_margins(cat):
    run = _run("gemm", Figure("gemm", "bf16", 760.0, "TFLOP/s", 0),
               Figure("gemm", "bf16_sustained", 640.0, "TFLOP/s", 0),
               Figure("gemm", "fp16", 600.0, "TFLOP/s", 0),
               Figure("gemm", "burn_mismatches", 0.0, "elements", 0))
    res = evaluate.outcomes(run, cat)
    assert [o.status for o in res["gemm"]] == ["pass", "pass", "warn"]  # 742 expected; 640 = 86 % sustained ok
    assert res["gemm"][0].metric.expected == 742
    assert res["burn"][0].status == "pass"


def test_burn_mismatch_fails(cat):
    (o,) = _one(_run("gemm", Figure("gemm", "burn_mismatches", 3.0, "elements", 0)), cat, "burn")
    assert o.status == "fail" and "RMA" in o.remedy


def test_clock_events_named(cat):
    tel = {"0": {"temp_max_c": 88, "power_mean_w": 650, "power_max_w": 700, "sm_mhz_min": 1200,
                 "sm_mhz_median": 1400, "reasons_seen": ["SW power cap", "HW thermal slowdown"],
                 "throttle_reasons": ["SW power cap", "HW thermal slowdown"]},
           "1": {"reasons_seen": ["SW power cap"], "throttle_reasons": ["SW power cap"]}}
    out = _one(_run("gemm", telemetry=tel), cat, "clocks")
    assert [o.status for o in out] == ["warn", "pass"]
    assert "HW thermal slowdown" in out[0].observed


def test_train_adds_mfu_against_dense_peak(cat):
    fig = Figure("train", "gpt-1.2b_tflops", 457.0, "TFLOP/s", 0, meta={"ranks": 1})
    run = _run("train", fig)
    out = _one(run, cat, "train")
    names = [f.name for f in run.figures]
    assert names == ["gpt-1.2b_tflops", "gpt-1.2b_mfu"]
    assert run.figures[1].value == pytest.approx(457 / 989)
    assert [o.status for o in out] == ["pass", "pass"]
    assert out[0].metric.expected == 178 and out[1].metric.expected == 0.18
    assert "46.2 %" in out[1].observed


def test_nccl_two_ranks_nvlink_and_single_rank(cat):
    topo = Topology(gpus=["GPU0", "GPU1"], links={(0, 1): "NV18", (1, 0): "NV18"})
    two = Figure("nccl", "all_reduce", 300.0, "GB/s", None, meta={"ranks": 2})
    (o,) = _one(_run("nccl", two), cat, "nccl", topo)
    assert o.metric.expected == round(335 * 0.75) and o.status == "pass"
    eight = Figure("nccl", "all_reduce", 300.0, "GB/s", None, meta={"ranks": 8})
    (o,) = _one(_run("nccl", eight), cat, "nccl", topo)
    assert o.metric.expected == 460 and o.status == "fail"  # 65 % of the Azure threshold
    one = Figure("nccl", "all_reduce", 0.0, "GB/s", None, gate=False, meta={"ranks": 1})
    (o,) = _one(_run("nccl", one), cat, "nccl")
    assert o.status == "pass" and o.expected == "informational"


def test_errors_fail_and_skips_skip(cat):
    res = evaluate.outcomes(BenchRun("bandwidth", errors=["GPU0 device copy: RuntimeError: boom"]), cat)
    assert res["host_copy"][0].status == "fail" and "boom" in res["host_copy"][0].observed
    assert res["mem_copy"][0].status == "skip"
    one = evaluate.outcomes(_run("bandwidth", Figure("bandwidth", "device_copy", 2950.0, "GB/s", 0)), cat)
    assert one["p2p"][0].status == "skip" and "one GPU" in one["p2p"][0].observed
    res = evaluate.outcomes(BenchRun("train", skipped="gpt-175b needs >= 64 GPUs"), cat)
    assert res["train"][0].status == "skip" and "64 GPUs" in res["train"][0].observed


def test_to_results_and_report_formats(cat, tmp_path):
    run = _run("bandwidth", Figure("bandwidth", "h2d_pinned", 20.0, "GB/s", 0),
               Figure("bandwidth", "device_copy", 2950.0, "GB/s", 0))
    results = evaluate.to_results(run, cat, duration_ms=1500)
    assert {(r.id, r.level, r.status) for r in results} >= {
        ("pcie.bench_host_copy", "full", "fail"), ("gpu.bench_mem_copy", "full", "pass")}
    report = report_out.make_report(results, [run], 0.0, 1.5)
    assert report.exit_code == 1 and report.gpus[0]["name"] == "NVIDIA H100 80GB HBM3"
    files = report_out.write(str(tmp_path), report, {"benchmarks": [run.to_dict()]})
    assert sorted(p.split("/")[-1] for p in files) == ["bench.json", "report.html", "report.json", "report.prom",
                                                        "report.txt", "report.xml"]
    assert "pcie.bench_host_copy" in (tmp_path / "report.xml").read_text()
    assert 'gpuforge_check_measured_bytes_per_second{host="vm",check="gpu.bench_mem_copy"' in \
        (tmp_path / "report.prom").read_text() and "} 2.95e+12" in (tmp_path / "report.prom").read_text()  # 2950 GB/s
    html = (tmp_path / "report.html").read_text()
    assert "<svg" in html and "gpu.bench_mem_copy" in html


def test_decode_and_summarise_clock_events():
    assert telemetry.decode_reasons(0x4 | 0x40) == ["SW power cap", "HW thermal slowdown"]
    assert telemetry.decode_reasons(0x1000) == ["0x1000"]
    s = [telemetry.Sample(0, 0, 60, 500, 1980, 2619, 0x1), telemetry.Sample(1, 0, 70, 700, 1400, 2619, 0x4)]
    out = telemetry.summarise(s)["0"]
    assert out["temp_max_c"] == 70 and out["power_mean_w"] == 600 and out["sm_mhz_min"] == 1400
    assert out["throttle_reasons"] == ["SW power cap"] and out["throttled_fraction"] == 0.5


def test_launchers_from_environment():
    assert detect({}) is None
    assert detect({"RANK": "3", "WORLD_SIZE": "16", "LOCAL_RANK": "3"}) == Launch(3, 16, 3, "torchrun")
    assert detect({"SLURM_PROCID": "9", "SLURM_NTASKS": "16", "SLURM_LOCALID": "1"}) == Launch(9, 16, 1, "slurm")
    assert detect({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) is None  # an allocation, not a launch
    assert detect({"OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_SIZE": "8",
                   "OMPI_COMM_WORLD_LOCAL_RANK": "2"}) == Launch(2, 8, 2, "mpi")
    env = rendezvous_env(Launch(1, 2, 1, "slurm"), {"MASTER_ADDR": "127.0.0.1"})
    assert env == {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
                   "MASTER_PORT": "29500"}
    with pytest.raises(LaunchError, match="MASTER_ADDR"):
        rendezvous_env(Launch(1, 2, 1, "mpi"), {})


def test_bench_run_json_round_trip():
    run = _run("nccl", Figure("nccl", "all_gather", 299.0, "GB/s", None, meta={"ranks": 2, "sweep": [[1, 2, 3, 4]]}),
               telemetry={"0": {"samples": 3}}, errors=["x"], seconds=1.5)
    back = BenchRun.from_dict(__import__("json").loads(run.to_json()))
    assert back == run and back.figures[0].key == "nccl.all_gather.node"


def test_full_level_checks_skip_on_a_snapshot():
    from validator.bench import checks
    from validator.checks.base import REGISTRY

    ids = {s.id for s in REGISTRY if s.level == "full"}
    assert {"pcie.bench_host_copy", "gpu.bench_gemm", "gpu.bench_nccl", "gpu.bench_train"} <= ids

    class Snap:
        class node:
            live = False

    out = checks._outcomes(Snap(), "gemm")
    assert out.status == "skip" and "live node" in out.observed


def test_bench_gpu_table_marks_the_issue_targets(cat):
    import importlib.util
    from pathlib import Path

    from validator.bench.suite import SuiteReport

    path = Path(__file__).parents[2] / "bench" / "bench_gpu.py"
    spec = importlib.util.spec_from_file_location("bench_gpu", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rep = SuiteReport(runs=[
        _run("bandwidth", Figure("bandwidth", "h2d_pinned", 54.9, "GB/s", 0)),
        _run("gemm", Figure("gemm", "bf16", 700.0, "TFLOP/s", 0)),
        _run("train", Figure("train", "gpt-1.2b_tflops", 465.0, "TFLOP/s", 0, meta={"ranks": 1})),
        BenchRun("nccl", errors=["boom"]),
    ])
    text = mod.table(rep, cat)
    lines = {l.split()[1]: l for l in text.splitlines()[1:]}
    assert "met (>= 52.2)" in lines["h2d_pinned"]
    assert "MISSED (>= 708.7)" in lines["bf16"]
    assert "47.0 %" in lines["gpt-1.2b_mfu"] and "met (>= 40.0)" in lines["gpt-1.2b_mfu"]
    assert "boom" in lines["ERROR"] and "fail" in lines["ERROR"]


NV2 = Topology(gpus=["GPU0", "GPU1"], links={(0, 1): "NV18", (1, 0): "NV18"})
PCIE2 = Topology(gpus=["GPU0", "GPU1"], links={(0, 1): "SYS", (1, 0): "SYS"})


def _scaling(value, ranks=2, nodes=1):
    return Figure("train", "gpt-1.2b_scaling", value, "fraction", None,
                  meta={"ranks": ranks, "nodes": nodes, "tokens_per_s_1gpu": 60861.0})


@pytest.mark.parametrize("value,status", [(0.942, "pass"), (0.86, "warn"), (0.60, "fail")])
def test_scaling_over_nvlink_against_95_percent_per_doubling(cat, value, status):
    (o,) = [x for x in _one(_run("train", _scaling(value)), cat, "train", NV2) if "scaling" in x.subject]
    assert o.status == status and o.metric.expected == 0.95 and "per doubling" in o.expected


def test_scaling_per_doubling_for_eight_gpus_and_informational_without_nvlink(cat):
    assert expect.expected_for(_scaling(0.8, ranks=8), None, None, None,
                               Topology(gpus=[f"GPU{i}" for i in range(8)],
                                        links={(a, b): "NV18" for a in range(8) for b in range(8) if a != b})
                               ).value == pytest.approx(0.95 ** 3, abs=1e-4)
    assert expect.expected_for(_scaling(0.5), None, None, None, PCIE2) is None
    assert expect.expected_for(_scaling(0.5, nodes=2), None, None, None, NV2) is None
    assert expect.expected_for(_scaling(0.5), None, None, None, None) is None


def test_multi_node_nccl_is_gated_only_over_infiniband(cat):
    sock = Figure("nccl", "all_reduce", 3.5, "GB/s", None, meta={"ranks": 2, "nodes": 2, "transport": ["NET/Socket"]})
    ib = Figure("nccl", "all_reduce", 300.0, "GB/s", None,
                meta={"ranks": 16, "nodes": 2, "transport": ["NET/IB", "P2P/CUMEM"], "ib_line_gbps": 3200.0})
    # Between nodes NVLink does not set the pace: no NVLink expectation for sockets, line rate x 0.8 over IB.
    assert expect.expected_for(sock, H100, None, None, NV2) is None
    exp = expect.expected_for(ib, H100, None, None, NV2)
    assert exp.value == 320.0 and "HCA ports" in exp.source
