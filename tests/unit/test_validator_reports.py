"""Reports: every format from one replayed run, JSON round trip, exit codes, CLI run/report/fleet (in-process)."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner

from validator.checks.base import CheckResult, Metric
from validator.cli import main
from validator.report.fleet import load_fleet, render_fleet
from validator.report.model import Report, exit_code_for
from validator.report.render import render
from validator.runner import validate
from validator.errors import UserError


@pytest.fixture(scope="module")
def report(request):
    from pathlib import Path
    return validate(root=Path(__file__).parents[1] / "fixtures/nodes/h100-sxm5-80gb-kvm-guest")


def _r(status, id="gpu.x", **kw):
    return CheckResult(id, id.split(".")[0], "quick", status, "t", **kw)


def test_exit_codes():
    assert exit_code_for([_r("pass"), _r("skip")]) == 0
    assert exit_code_for([_r("pass"), _r("warn")]) == 3
    assert exit_code_for([_r("warn"), _r("fail")]) == 1
    assert exit_code_for([]) == 0


def test_json_round_trip(report):
    d = json.loads(render(report, "json"))
    assert d["schema_version"] == 1 and d["status"] == "warn" and d["exit_code"] == 3
    assert d["summary"]["warn"] == 4 and d["groups"]["container"] == "skip"
    again = Report.from_dict(d)
    assert again.results == report.results and again.to_dict() == d


def test_term_plain_and_colour(report):
    plain = render(report, "term")
    assert "\033[" not in plain and "⚠ warn memory.swappiness" in plain
    assert plain.rstrip().splitlines()[-1].startswith("WARN: 25 passed, 4 warnings, 0 failed, 22 skipped")
    assert "\033[33m" in render(report, "term", colour=True)


def test_text(report):
    t = render(report, "text")
    assert "BIOS checklist" in t and "expected vm.swappiness = 1" in t and t.rstrip().splitlines()[-1].startswith("WARN")


def test_junit(report):
    root = ET.fromstring(render(report, "junit"))
    cases = root.findall(".//testcase")
    assert len(cases) == len(report.results)
    # The 4 warnings are visible to CI: failures of type "warning" (run exits 3 on them); no check failed.
    assert root.get("failures") == "4" and int(root.get("skipped")) == 22
    warned = [f for f in root.iter("failure") if f.get("type") == "warning"]
    assert len(warned) == 4 and all(f.get("message").startswith("WARN: ") for f in warned)
    assert not [f for f in root.iter("failure") if f.get("type") == "fail"]
    assert {s.get("name") for s in root.findall("testsuite")} >= {"gpu-validate.gpu", "gpu-validate.memory"}


def test_prom(report):
    text = render(report, "prom")
    line = re.compile(r'^[a-z_]+\{([a-z_]+="([^"\\]|\\.)*",?)*\} -?[0-9.e+]+$')
    for ln in text.splitlines():
        assert ln.startswith("# ") or line.match(ln), ln
    assert 'gpuforge_check_status{host="h100-sxm5-80gb-kvm-guest",check="memory.swappiness",group="memory",subject=""} 1' in text
    assert "gpuforge_check_measured" in text and "gpuforge_validation_status" in text


def test_html_self_contained(report):
    html = render(report, "html")
    assert html.startswith("<!DOCTYPE html>") and html.count("<svg") == 2
    assert not re.search(r"(src|href)=\"?https?:", html) and "<script" not in html
    assert "memory.swappiness" in html and "gpu_temp_c" not in html or "gpu.temperature" in html


def test_html_escapes(report):
    evil = Report(host="<b>x</b>", level="quick", results=(_r("fail", observed="<script>alert(1)</script>",
                                                                metric=Metric("m", 1.0, 2.0, "GB/s")),))
    html = render(evil, "html")
    assert "<script>alert" not in html and "&lt;script&gt;" in html


def test_cli_run_formats_and_exit(h100_node, tmp_path):
    runner = CliRunner()
    out = tmp_path / "r.json"
    res = runner.invoke(main, ["run", "--root", str(h100_node), "--format", "json", "-o", str(out),
                               "--save", str(tmp_path / "r.html"), "--save", str(tmp_path / "r.xml")])
    assert res.exit_code == 3, res.output
    assert json.loads(out.read_text())["host"] == "h100-sxm5-80gb-kvm-guest"
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")
    ET.parse(tmp_path / "r.xml")
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temp file
    res = runner.invoke(main, ["run", "--root", str(h100_node), "--expect", "8xH100"])
    assert res.exit_code == 1 and "✗ fail gpu.count" in res.output
    res = runner.invoke(main, ["run", "--root", str(h100_node), "--group", "numa"])
    assert res.exit_code == 0 and "PASS: 3 passed" in res.output


@pytest.mark.parametrize("args,msg", [
    (["--level", "ultra"], "Invalid value for '--level'"),
    (["--expect", "0xH100"], "out of range"),
    (["--save", "r.docx"], "cannot tell the format"),
    (["--profile", "/nonexistent.yaml"], "cannot read"),
    (["--expect", "8xH1000"], "did you mean: H100"),
])
def test_cli_run_usage_errors_exit_2(h100_node, args, msg):
    res = CliRunner().invoke(main, ["run", "--root", str(h100_node)] + args)
    assert res.exit_code == 2 and msg in res.output and "Traceback" not in res.output


def test_cli_report_rerender(h100_node, tmp_path):
    runner = CliRunner()
    j = tmp_path / "r.json"
    runner.invoke(main, ["run", "--root", str(h100_node), "--format", "json", "-o", str(j)])
    res = runner.invoke(main, ["report", str(j), "--format", "html", "-o", str(tmp_path / "r.html")])
    # report exits with the verdict as run does (warnings only: 3); --exit-status is still accepted
    assert res.exit_code == 3 and "<svg" in (tmp_path / "r.html").read_text()
    res = runner.invoke(main, ["report", str(j), "--format", "text", "--exit-status"])
    assert res.exit_code == 3 and "BIOS checklist" in res.output
    (tmp_path / "bad.json").write_text('{"schema_version": 99}')
    res = runner.invoke(main, ["report", str(tmp_path / "bad.json")])
    assert res.exit_code == 2 and "schema_version 99, expected 1" in res.output


def test_fleet(h100_node, h100_copy, tmp_path):
    from validator_helpers import FAULTS, tune
    d = tmp_path / "reports"
    d.mkdir()
    runner = CliRunner()
    runner.invoke(main, ["run", "--root", str(h100_node), "--format", "json", "-o", str(d / "a.json")])
    tune(h100_copy)
    FAULTS["xid_79"][0](h100_copy)
    runner.invoke(main, ["run", "--root", str(h100_copy), "--format", "json", "-o", str(d / "b" / "node.json")])
    (d / "junk.json").write_text("not json")
    fleet = load_fleet(d)
    assert [r.host for _, r in fleet.reports] == ["h100-sxm5-80gb-kvm-guest", "node"]
    assert len(fleet.errors) == 1 and fleet.exit_code == 1
    text = render_fleet(fleet, "text")
    assert "gpu.xid" in text and "2 hosts: 0 pass, 1 warn, 1 fail, 1 unreadable reports" in text
    res = runner.invoke(main, ["fleet", str(d), "--html", str(tmp_path / "fleet.html")])
    assert res.exit_code == 1
    html = (tmp_path / "fleet.html").read_text()
    assert html.count('class="host"') == 2 and "gpu.xid" in html and "<svg" in html
    assert json.loads(render_fleet(fleet, "json"))["checks"]["gpu.xid"] == {"h100-sxm5-80gb-kvm-guest": "skip",
                                                                            "node": "fail"}
    with pytest.raises(UserError):
        load_fleet(tmp_path / "nope")
