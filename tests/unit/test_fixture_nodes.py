"""Every recorded node under tests/fixtures/nodes (and every saved full-level report under tests/fixtures/reports)
replays cleanly: no check crashes, every skip says why, a command the capture holds is used (never skipped as
'not captured'), and a saved report draws its pictures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from validator.report.model import Report
from validator.report.render import render
from validator.runner import validate

FIXTURES = Path(__file__).parents[1] / "fixtures"
NODES = sorted(p for p in (FIXTURES / "nodes").iterdir() if (p / "cmd").is_dir())
REPORTS = sorted((FIXTURES / "reports").glob("*.json")) if (FIXTURES / "reports").is_dir() else []


@pytest.mark.parametrize("node", NODES, ids=[p.name for p in NODES])
def test_recorded_node_replays_cleanly(node):
    rep = validate(root=node, level="quick")
    assert not [r for r in rep.results if "check crashed" in r.observed]
    assert all(r.observed for r in rep.results if r.status == "skip")
    captured = {p.name for p in (node / "cmd").iterdir()}
    for r in rep.results:
        if r.status == "skip" and "not captured" in r.observed:
            name = r.observed.split(" not captured")[0].split()[-1]
            assert name not in captured, f"{r.id}: {name} is in the capture but was not read"
    if "nvidia-smi-nvlink-e.txt" in captured and len(rep.gpus) > 1:
        assert {r.status for r in rep.results if r.id == "gpu.nvlink_errors"} <= {"pass", "warn", "fail"}


@pytest.mark.parametrize("path", REPORTS, ids=[p.name for p in REPORTS])
def test_saved_full_report_draws_its_measurements(path):
    from reportdemo import dom
    rep = Report.from_dict(json.loads(path.read_text()), str(path))
    page = dom(render(rep, "html"))
    assert page.find("table", class_="gpus") is not None
    suites = {b.get("suite") for b in rep.data.get("bench", {}).get("benchmarks", [])}
    if "nccl" in suites:
        assert page.find("svg", class_="nccl") is not None
    if "gemm" in suites:
        assert len(page.find("section", id="burn").find_all("svg")) == 3
    if "bandwidth" in suites and len(rep.gpus) > 1:
        assert page.find("table", class_="p2p") is not None


def test_h200x2_capture_replays_the_live_run_check_by_check():
    """The 2xH200 node was validated live and captured in the same minute: the replay gives every check and
    subject the status the live run gave, and its NVLink checks all read (18 links, no errors, NV18, fabric)."""
    live = json.loads((FIXTURES / "reports" / "h200x2-live-quick.json").read_text())
    rep = validate(root=FIXTURES / "nodes" / "h200x2-nvlink-node", level="quick", expect="2xH200")
    replay = {(r.id, r.subject): r.status for r in rep.results}
    want = {(r["id"], r.get("subject", "")): r["status"] for r in live["results"]}
    # Checks newer than the capture can only skip on it (no driver container ran on that node).
    newer = {k: v for k, v in replay.items() if k not in want}
    assert newer == {("container.driver_container", ""): "skip"}
    assert {k: v for k, v in replay.items() if k in want} == want
    nvlink = [r for r in rep.results if r.id.startswith("gpu.nvlink")]
    assert {r.id for r in nvlink} == {"gpu.nvlink_links", "gpu.nvlink_errors", "gpu.nvlink_topology",
                                      "gpu.nvlink_fabric"}
    assert all(r.status == "pass" for r in nvlink), [(r.id, r.status, r.observed) for r in nvlink]
    assert not [r for r in rep.results if r.status == "fail"]
