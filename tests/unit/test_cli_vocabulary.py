"""One vocabulary across both CLIs: -o/--output + --format wherever a report is written, --json = JSON on stdout,
--no-color on every command, --problems, exit with the verdict, lines within 120 columns; Prometheus units in
metric names and a last-run gauge; JUnit warnings visible to CI."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from builder.cli import main as gpuforge
from validator.cli import main as gpu_validate

NODES = Path(__file__).parents[1] / "fixtures/nodes"
H100, H200 = NODES / "h100-sxm5-80gb-kvm-guest", NODES / "h200x2-nvlink-kvm-guest"


def _walk(group, ctx_name, prefix=()):
    """Every command path of a CLI, lazy subcommands loaded."""
    ctx = click.Context(group, info_name=ctx_name)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if cmd is None:
            continue
        yield prefix + (name,), cmd
        if isinstance(cmd, click.Group):
            yield from _walk(cmd, name, prefix + (name,))


def _options(cmd) -> set:
    return {o for p in cmd.params for o in getattr(p, "opts", ())}


@pytest.mark.parametrize("cli,name", [(gpu_validate, "gpu-validate"), (gpuforge, "gpuforge")])
def test_every_command_takes_no_color(cli, name):
    paths = list(_walk(cli, name))
    assert len(paths) > 5
    for path, cmd in paths:
        assert "--no-color" in _options(cmd), path
    res = CliRunner().invoke(cli, ["--no-color", *paths[0][0], "--help"])
    assert res.exit_code == 0, res.output


def test_report_writers_share_output_options():
    want = {"--format", "-o", "--output", "--json", "--problems"}
    for path, cmd in _walk(gpu_validate, "gpu-validate"):
        if path[0] in ("run", "report", "fleet") or (path[0] == "bench" and len(path) == 2):
            assert want <= _options(cmd), (path, want - _options(cmd))
        if path[0] in ("detect", "bench", "run", "report", "fleet") and not isinstance(cmd, click.Group):
            assert {"--json", "-o", "--format"} <= _options(cmd), path
    # --json is a flag (JSON on stdout) everywhere it exists, never a file name
    for cli, name in ((gpu_validate, "gpu-validate"), (gpuforge, "gpuforge")):
        for path, cmd in _walk(cli, name):
            for p in cmd.params:
                if "--json" in getattr(p, "opts", ()):
                    assert p.is_flag, path


def test_no_color_lasts_for_the_command_only(tmp_path):
    assert "NO_COLOR" not in os.environ
    res = CliRunner().invoke(gpu_validate, ["run", "--root", str(H100), "--no-color", "-o", str(tmp_path / "r.json")])
    assert res.exit_code == 3 and "NO_COLOR" not in os.environ


def test_json_means_json_on_stdout(tmp_path):
    r = CliRunner()
    run = r.invoke(gpu_validate, ["run", "--root", str(H100), "--json"])
    doc = json.loads(run.output)
    assert run.exit_code == doc["exit_code"] == 3
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "a.json").write_text(run.output)
    rep = r.invoke(gpu_validate, ["report", str(tmp_path / "r" / "a.json"), "--json"])
    assert json.loads(rep.output) == doc and rep.exit_code == 3  # report exits with the verdict, as run
    fleet = r.invoke(gpu_validate, ["fleet", str(tmp_path / "r"), "--json"])
    assert json.loads(fleet.output)["hosts"][0]["status"] == "warn" and fleet.exit_code == 3
    det = r.invoke(gpu_validate, ["detect", "--root", str(H100), "--json"])
    assert json.loads(det.output)["current_driver_fits"] is True
    clash = r.invoke(gpu_validate, ["run", "--root", str(H100), "--json", "--format", "html"])
    assert clash.exit_code == 2 and "--json and --format html" in clash.output


def test_output_format_from_the_extension(tmp_path):
    r = CliRunner()
    for ext, probe in ((".html", "<!DOCTYPE html>"), (".json", '"schema_version"'), (".xml", "<testsuites"),
                       (".prom", "# HELP"), (".txt", "BIOS checklist")):
        out = tmp_path / f"r{ext}"
        res = r.invoke(gpu_validate, ["run", "--root", str(H100), "-o", str(out)])
        assert res.exit_code == 3 and probe in out.read_text(), ext
        assert res.output.strip().startswith("WARN: ")  # the summary line, on stderr
    det = tmp_path / "d.json"
    assert r.invoke(gpu_validate, ["detect", "--root", str(H100), "-o", str(det)]).exit_code == 0
    assert json.loads(det.read_text())["gpu_count"] == 1


def test_problems_filter(tmp_path):
    r = CliRunner()
    full = r.invoke(gpu_validate, ["run", "--root", str(H100)]).output
    only = r.invoke(gpu_validate, ["run", "--root", str(H100), "--problems"]).output
    assert "✓ pass" in full and "✓ pass" not in only and "- skip" not in only
    assert only.count("⚠ warn") == full.count("⚠ warn") == 4
    summary = re.compile(r", [0-9.]+ s\)$")  # the summary counts everything (its timing aside)
    assert summary.sub("", only.rstrip().splitlines()[-1]) == summary.sub("", full.rstrip().splitlines()[-1])
    html = r.invoke(gpu_validate, ["run", "--root", str(H100), "--problems", "--format", "html"]).output
    assert "memory.swappiness" in html and "gpu.persistence" not in html.split("<h2")[-1]
    d = tmp_path / "fleet"
    d.mkdir()
    r.invoke(gpu_validate, ["run", "--root", str(H100), "-o", str(d / "a.json")])
    r.invoke(gpu_validate, ["run", "--root", str(H200), "--group", "gpu", "-o", str(d / "b.json")])
    text = r.invoke(gpu_validate, ["fleet", str(d), "--problems"]).output
    assert "h100-sxm5-80gb-kvm-guest" in text and "gpu-node-02" not in text.split("\n\n")[0]
    assert "memory.swappiness" in text and "gpu.nvlink_links" not in text


def _lines(text: str):
    return [line for line in text.splitlines()]


def test_lines_fit_120_columns(tmp_path):
    r = CliRunner()
    outs = []
    for node in (H100, H200):
        for fmt in ("term", "text"):
            outs.append(r.invoke(gpu_validate, ["run", "--root", str(node), "--format", fmt]).output)
        outs.append(r.invoke(gpu_validate, ["run", "--root", str(node), "--level", "full", "--list-checks"]).output)
        outs.append(r.invoke(gpu_validate, ["detect", "--root", str(node)]).output)
    d = tmp_path / "fleet"
    d.mkdir()
    one = r.invoke(gpu_validate, ["run", "--root", str(H100), "--json"]).output
    for i in range(45):  # more hosts than one row of host columns holds
        (d / f"h{i}.json").write_text(one.replace('"host": "h100-sxm5-80gb-kvm-guest"', f'"host": "node-{i:03d}"'))
    outs.append(r.invoke(gpu_validate, ["fleet", str(d)]).output)
    assert "<- host #" in outs[-1] and outs[-1].count("<- host #") >= 2
    long = [(len(l), l) for out in outs for l in _lines(out) if len(l) > 120]
    assert long == []


def test_prometheus_units_in_names_and_last_run():
    text = CliRunner().invoke(gpu_validate, ["run", "--root", str(H100), "--format", "prom"]).output
    samples = [l for l in text.splitlines() if l and not l.startswith("#")]
    families = {re.match(r"[a-z_]+", l).group(0) for l in samples}
    for fam in families:  # every family documented and typed
        assert f"# HELP {fam} " in text and f"# TYPE {fam} gauge" in text, fam
    assert {"gpuforge_check_measured_celsius", "gpuforge_check_measured_watts",
            "gpuforge_validation_last_run_timestamp_seconds"} <= families
    assert not [f for f in families if f in ("gpuforge_check_measured", "gpuforge_check_expected")]
    assert "0 pass, 1 warn, 2 fail, -1 skip" in text and 'unit="' not in text
