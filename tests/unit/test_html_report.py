"""The HTML report an operator reads: failures first with a jump list, a per-GPU table, the NCCL curve, the burn
telemetry, the P2P matrix; one offline file. Parsed here with the stdlib; tests/e2e renders it in a browser."""

from __future__ import annotations

import json
import re

import pytest

from reportdemo import ALLREDUCE, demo_report, dom
from validator.report.charts import nice_ticks, round_num
from validator.report.model import Report
from validator.report.render import render
from validator.runner import validate


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return demo_report(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def page(demo):
    return dom(render(demo, "html"))


def test_failures_first_with_a_jump_list(demo, page):
    sections = [s.attrs.get("id") for s in page.find_all("section")]
    assert sections[0] == "problems"
    items = page.find("section", id="problems").find_all("li")
    kinds = [li.attrs["class"] for li in items]
    assert kinds == ["p-fail"] * 2 + ["p-warn"] * 4
    first = items[0].find("a")
    assert first.all_text() == "gpu.nvlink_links [GPU1 0000:00:07.0]"
    row = page.find("tr", id=first.attrs["href"][1:])  # the jump target is the result's row
    assert row is not None and "row-fail" in row.attrs["class"] and "17 active" in row.all_text()
    for li in items:
        assert page.find("tr", id=li.find("a").attrs["href"][1:]) is not None


def test_per_gpu_table(page):
    rows = page.find("table", class_="gpus").find_all("tr", class_="gpu")
    assert len(rows) == 2
    cells = [[c.all_text().strip() for c in r.find_all("td")] for r in rows]
    assert cells[0][:3] == ["0", "H200 SXM 141GB", "0000:00:06.0"]
    assert cells[0][3].startswith("33 °C") and cells[0][4] == "80.6 W / 700 W" and cells[0][5] == "345 / 1980 MHz"
    assert cells[0][6] == "on, DBE 0" and cells[0][7] == "Gen5 x16" and cells[1][8] == "17 links"
    assert cells[1][9].endswith("fail")  # GPU1's link is down


def test_nccl_curve_from_the_kept_sweep(demo, page):
    svg = page.find("svg", class_="nccl")
    line = svg.find("polyline")
    assert len(line.attrs["points"].split()) == len(ALLREDUCE)
    ys = [float(p.split(",")[1]) for p in line.attrs["points"].split()]
    assert ys == sorted(ys, reverse=True)  # busbw grows with the size (SVG y grows downwards)
    labels = [t.all_text() for t in svg.find_all("text")]
    assert {"1 MiB", "64 MiB", "1 GiB", "8 GiB"} <= set(labels) and "busbw (GB/s)" in labels
    sweep = demo.data["bench"]["benchmarks"][0]["figures"][0]["meta"]["sweep"]
    assert [row[0] for row in sweep] == sorted(ALLREDUCE)  # the measured sweep is in the report data


def test_burn_telemetry_and_p2p(page):
    charts = page.find("section", id="burn").find_all("svg")
    assert [c.attrs["class"].split()[-1] for c in charts] == ["burn-temp_c", "burn-power_w", "burn-sm_mhz"]
    for c in charts:
        assert [g.attrs["data-series"] for g in c.find_all("g", class_="series")] == ["GPU0", "GPU1"]
    table = page.find("table", class_="p2p")
    cells = [td.all_text().strip() for td in table.find_all("td")]
    assert cells == ["–", "393NV18", "391NV18", "–"]


def test_offline_single_file(demo):
    html = render(demo, "html")
    assert "<script" not in html and not re.search(r"""(src|href)=["']?(https?:|//)""", html)
    assert "@import" not in html and "url(" not in html


def test_quick_report_without_measurements(h100_node):
    rep = validate(root=h100_node)
    page = dom(render(rep, "html"))
    assert page.find("section", id="nccl") is None and page.find("section", id="burn") is None
    assert page.find("section", id="p2p") is None
    assert len(page.find("table", class_="gpus").find_all("tr", class_="gpu")) == 1
    ok = dom(render(Report("h", "quick", ()), "html"))
    assert "no check failed or warned" in ok.find("section", id="problems").all_text()


def test_saved_report_redraws_the_same(demo, tmp_path):
    from click.testing import CliRunner
    from validator.cli import main
    saved = tmp_path / "r.json"
    saved.write_text(demo.to_json())
    res = CliRunner().invoke(main, ["report", str(saved), "-o", str(tmp_path / "r.html")])
    assert res.exit_code == 1
    assert (tmp_path / "r.html").read_text() == render(Report.from_dict(json.loads(demo.to_json())), "html")
    assert 'class="chart nccl"' in (tmp_path / "r.html").read_text()


def test_hostile_names_are_escaped(demo):
    import dataclasses
    bad = dataclasses.replace(demo, data={"bench": {"benchmarks": [{"suite": "nccl", "figures": [
        {"name": "<script>x</script>", "meta": {"sweep": [[1024, 1, 1, 1], [2048, 1, 2, 2]]}}]}]}})
    html = render(bad, "html")
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_numbers_rounded_to_what_matters():
    assert [round_num(v) for v in (344.21, 55.237, 3.14159, 0.04812, 16.0, 700.0)] == \
        ["344", "55.2", "3.14", "0.0481", "16", "700"]
    assert round_num(None) == "–" and round_num(float("nan")) == "–" and round_num(55.2, "GB/s") == "55.2 GB/s"
    assert nice_ticks(0, 344) == [0, 100, 200, 300, 400] and nice_ticks(0, 1980) == [0, 500, 1000, 1500, 2000]
