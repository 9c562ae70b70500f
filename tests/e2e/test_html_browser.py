"""The HTML report in a real headless browser (Debian chromium): the DOM it builds and a screenshot, kept under the
test's tmp folder (the path is printed). The NCCL curve comes from a real sweep: two gloo ranks in the benchmark
child, as `gpu-validate bench nccl --backend gloo` runs them on a machine without GPUs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reportdemo import demo_report, dom
from validator.bench.results import BenchRun
from validator.report.render import render

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _browser(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp / 'profile'}"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=180,
                          stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def real_sweep(tmp_path_factory) -> BenchRun:
    pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    p = subprocess.run([sys.executable, "-m", "validator", "bench", "nccl", "--backend", "gloo", "--engine", "torch",
                        "--ops", "all_reduce,all_gather", "--min-bytes", "64K", "--max-bytes", "16M", "--factor", "4",
                        "--save", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert p.returncode in (0, 3), p.stdout + p.stderr
    return BenchRun.from_dict(json.loads(out.read_text())["data"]["bench"]["benchmarks"][0])


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (scripts/host-deps.sh installs it)")
def test_report_in_a_headless_browser(tmp_path, real_sweep):
    rep = demo_report(tmp_path, nccl_run=real_sweep)
    page_file = tmp_path / "report.html"
    page_file.write_text(render(rep, "html"))

    res = _browser(tmp_path, "--dump-dom", page_file.as_uri())
    assert res.returncode == 0 and "</html>" in res.stdout, res.stderr[-2000:]
    page = dom(res.stdout)
    # failures first: the first section is the problems list, fails before warnings, each a link to its row
    assert [s.attrs.get("id") for s in page.find_all("section")][0] == "problems"
    kinds = [li.attrs["class"] for li in page.find("section", id="problems").find_all("li")]
    assert kinds and kinds == sorted(kinds, key=lambda k: k != "p-fail") and kinds[0] == "p-fail"
    for li in page.find("section", id="problems").find_all("li"):
        assert page.find("tr", id=li.find("a").attrs["href"][1:]) is not None
    # one row per GPU
    assert len(page.find("table", class_="gpus").find_all("tr", class_="gpu")) == 2
    # the curve: one line per collective, a point per measured size (64 KiB .. 16 MiB in steps of 4)
    svg = page.find("svg", class_="nccl")
    lines = {g.attrs["data-series"].split(" (")[0]: g.find("polyline") for g in svg.find_all("g", class_="series")}
    assert set(lines) == {"all_reduce", "all_gather"}
    assert all(len(pl.attrs["points"].split()) == 5 for pl in lines.values())
    assert len(page.find("section", id="burn").find_all("svg")) == 3 and page.find("table", class_="p2p")

    shot = tmp_path / "report.png"
    res = _browser(tmp_path, f"--screenshot={shot}", "--window-size=1280,3200", "--hide-scrollbars",
                   page_file.as_uri())
    assert res.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    print(f"\nHTML report screenshot: {shot}")
