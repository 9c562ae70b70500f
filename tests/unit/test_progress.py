"""Live progress: one line a group on a terminal (nothing on a pipe), benchmark events from a child to the
parent's terminal (per NCCL size, per test), and the measurements kept in the report for its pictures."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from validator import events
from validator.progress import BenchProgress, RunProgress
from validator.runner import validate

H200X2 = Path(__file__).parents[1] / "fixtures/nodes/h200x2-nvlink-kvm-guest"


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_run_progress_one_line_per_group_in_finishing_order():
    out = Tty()
    rep = validate(root=H200X2, progress=RunProgress(out, colour=False))
    text = out.getvalue()
    assert text.startswith("gpu-validate quick: 51 checks in 8 groups\n")
    # what stays on the screen: the part of each line after the last "clear line" (tickers are overwritten)
    lines = [seg for seg in (l.split("\r\033[K")[-1] for l in text.split("\n")[1:]) if seg.strip()]
    groups = [l.split()[0] for l in lines]
    assert groups == ["cpu", "numa", "iommu", "pcie", "gpu", "memory", "kernel", "container"]
    status = rep.group_status()
    for line in lines:
        g = line.split()[0]
        assert line.split()[2] == status[g].upper(), line
    gpu_line = next(l for l in lines if l.startswith("  gpu"))
    assert "26 pass, 4 skip" in gpu_line and len(gpu_line) <= 120
    assert "… gpu.nvlink_topology" in text  # the ticker named each check while it ran


def test_run_cli_is_quiet_off_a_terminal(tmp_path):
    from validator.cli import main
    res = CliRunner().invoke(main, ["run", "--root", str(H200X2), "--format", "json", "-o", str(tmp_path / "r.json")])
    assert "checks in 8 groups" not in res.output and "\r" not in res.output


def test_events_in_process_and_followed_from_a_file(tmp_path):
    got = []
    events.emit("figure", name="nobody listens")  # no listener: dropped silently
    with events.listening(got.append):
        events.emit("suite", suite="gemm")
        path = tmp_path / "ev.jsonl"
        with events.follow(str(path), interval=0.01) as env:
            assert env == {events.ENV: str(path)}
            with open(path, "a") as f:
                f.write(json.dumps({"event": "nccl_size", "size": 1}) + "\n" + '{"event": "nccl_si')
                f.flush()
                time.sleep(0.1)
                f.write('ze", "size": 2}\nnot json\n')
    assert got == [{"event": "suite", "suite": "gemm"}, {"event": "nccl_size", "size": 1},
                   {"event": "nccl_size", "size": 2}]
    with events.follow(str(tmp_path / "x")) as env:
        assert env is None  # nobody listens: the child records nothing


def test_bench_progress_lines_like_nccl_tests():
    out = io.StringIO()
    show = BenchProgress(out)
    show({"event": "suite", "suite": "nccl"})
    for size, bus in ((1 << 20, 11.0), (8 << 30, 344.2)):
        show({"event": "nccl_size", "op": "all_reduce", "size": size, "time_us": 95.3, "algbw": bus / 2,
              "busbw": bus, "ranks": 2})
    show({"event": "figure", "bench": "bandwidth", "name": "h2d_pinned", "gpu": 0, "value": 55.04, "unit": "GB/s",
          "detail": "1 GiB"})
    lines = out.getvalue().splitlines()
    assert lines[0] == "# nccl" and lines[1].split() == ["op", "size", "time", "(us)", "algbw", "GB/s", "busbw",
                                                          "GB/s", "ranks"]
    assert lines[2].split() == ["all_reduce", "1", "MiB", "95.3", "5.50", "11.00", "2"]
    assert lines[3].split()[:3] == ["all_reduce", "8", "GiB"] and "344.20" in lines[3]
    assert lines[4].split()[:5] == ["bandwidth", "h2d_pinned", "GPU0", "55.0", "GB/s"]


@pytest.mark.subprocess
def test_nccl_child_streams_every_size_to_the_parent():
    """Two gloo ranks in a real child: the parent hears each op x size while the child runs."""
    pytest.importorskip("torch")
    from validator.bench import suite
    got = []
    lock = threading.Lock()

    def listen(ev):
        with lock:
            got.append(ev)
    with events.listening(listen):
        run = suite.run_child("nccl", {"min_bytes": 1 << 16, "max_bytes": 1 << 18, "factor": 4,
                                       "ops": ["all_reduce", "all_gather"], "backend": "gloo"}, 300)
    assert run.errors == []
    sizes = [(e["op"], e["size"]) for e in got if e["event"] == "nccl_size"]
    assert sizes == [("all_reduce", 1 << 16), ("all_reduce", 1 << 18), ("all_gather", 1 << 16), ("all_gather", 1 << 18)]
    assert [e["name"] for e in got if e["event"] == "figure"] == ["all_reduce", "all_gather"]
    assert got[0] == {"event": "suite", "suite": "nccl"}


def test_telemetry_series_thinned_for_plots():
    from validator.bench import telemetry
    s = [telemetry.Sample(100 + i * 0.5, 0, 40 + i * 0.01, 500.0 + i, 1980, 2619, 0) for i in range(1000)]
    ser = telemetry.summarise(s)["0"]["series"]
    assert len(ser["t"]) == 334 and ser["t"][0] == 0 and ser["t"][1] == 1.5 and ser["power_w"][0] == 500.0
    assert set(ser) == {"t", "temp_c", "power_w", "sm_mhz"}


def test_report_keeps_measurements_and_gpu_facts():
    from validator.report.model import Report
    rep = validate(root=H200X2)
    g0 = rep.gpus[0]
    assert (g0["model"], g0["bus_id"], g0["pcie_gen"], g0["pcie_width"], g0["nvlink_active"]) == \
        ("H200 SXM 141GB", "0000:00:06.0", 5, 16, 18)
    assert g0["temp_c"] is not None and g0["ecc_enabled"] is True
    assert rep.data == {}  # nothing measured below the full level
    d = json.loads(rep.to_json())
    d["data"] = {"bench": {"benchmarks": [{"suite": "nccl"}]}}
    assert Report.from_dict(d).data["bench"]["benchmarks"][0]["suite"] == "nccl"
