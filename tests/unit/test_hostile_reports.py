"""Corrupt saved reports: `report` exits 2 naming the file and field; `fleet` lists them as unreadable (with
why) and still renders the rest; duplicate hosts are said; node text never reaches a terminal or XML raw."""

from __future__ import annotations

import copy
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from validator.cli import main as gpu_validate
from validator.errors import GpuforgeError
from validator.report.fleet import load_fleet, render_fleet
from validator.report.model import Report, load_report
from validator.report.render import FORMATS, render

H100 = Path(__file__).parents[1] / "fixtures" / "nodes" / "h100-sxm5-80gb-kvm-guest"


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("good")
    res = CliRunner().invoke(gpu_validate, ["run", "--root", str(H100), "--format", "json", "-o", str(d / "r.json")])
    assert res.exit_code in (0, 1, 3), res.output
    return json.loads((d / "r.json").read_text())


def _set(doc: dict, path: str, value):
    """Set doc[a][b][0]... by a dotted path (numbers index lists); '-key' deletes the key."""
    parts = path.split(".")
    cur = doc
    for p in parts[:-1]:
        cur = cur[int(p)] if isinstance(cur, list) else cur[p]
    last = parts[-1]
    if last.startswith("-"):
        del cur[last[1:]]
    elif isinstance(cur, list):
        cur[int(last)] = value
    else:
        cur[last] = value
    return doc


_DEEP = 1
for _ in range(100):
    _DEEP = [_DEEP]

# (id, dotted path, bad value, text the message must hold)
CORRUPTIONS = [
    ("duration_s string", "duration_s", "fast", "duration_s"),
    ("duration_s negative", "duration_s", -1, "duration_s"),
    ("duration_s list", "duration_s", [1], "duration_s"),
    ("duration_s bool", "duration_s", True, "duration_s"),
    ("duration_s huge int", "duration_s", 10 ** 400, "duration_s"),
    ("duration_s 1e400", "duration_s", "__1e400__", "duration_s"),
    ("gpus string", "gpus", "8xH100", "gpus"),
    ("gpus list of lists", "gpus", [[1, 2]], "gpus[0]"),
    ("gpus nested dict", "gpus", [{"name": {"a": 1}}], "gpus[0].name"),
    ("gpus index string", "gpus", [{"index": "zero", "name": "H100"}], "gpus[0].index"),
    ("gpu name huge", "gpus", [{"name": "x" * 5000}], "gpus[0].name"),
    ("host missing", "-host", None, "host"),
    ("host number", "host", 42, "host"),
    ("host empty", "host", "", "host"),
    ("level unknown", "level", "ultra", "level"),
    ("live string", "live", "yes", "live"),
    ("results missing", "-results", None, "results"),
    ("results dict", "results", {"a": 1}, "results"),
    ("results of strings", "results", ["pass"], "results[0]"),
    ("result no id", "results.0.-id", None, "results[0].id"),
    ("result status bogus", "results.0.status", "great", "results[0].status"),
    ("result status list", "results.0.status", ["pass"], "results[0].status"),
    ("result observed dict", "results.0.observed", {"x": 1}, "results[0].observed"),
    ("result observed deep", "results.0.observed", _DEEP, "nesting"),
    ("result unknown key", "results.0.extra", 1, "results[0].extra"),
    ("result duration string", "results.0.duration_ms", "1ms", "results[0].duration_ms"),
    ("metric string", "results.0.metric", "1 GB/s", "results[0].metric"),
    ("metric value string", "results.0.metric", {"name": "bw", "value": "fast", "expected": 1}, "results[0].metric.value"),
    ("metric value null", "results.0.metric", {"name": "bw", "value": None, "expected": 1}, "results[0].metric.value"),
    ("metric missing expected", "results.0.metric", {"name": "bw", "value": 1}, "results[0].metric.expected"),
    ("metric extra key", "results.0.metric", {"name": "bw", "value": 1, "expected": 1, "x": 2}, "results[0].metric.x"),
    ("bios list of ints", "bios_checklist", [1, 2], "bios_checklist[0]"),
    ("bios string", "bios_checklist", "C-states off", "bios_checklist"),
    ("schema_version string", "schema_version", "1", "schema_version"),
    ("schema_version true", "schema_version", True, "schema_version"),
    ("schema_version missing", "-schema_version", None, "schema_version"),
    ("other tool", "tool", "nvidia-bug-report", "tool"),
]


def _write(path: Path, doc) -> Path:
    text = json.dumps(doc).replace('"__1e400__"', "1e400")
    path.write_text(text)
    return path


@pytest.mark.parametrize("case,where,value,says", CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS])
def test_corrupt_report_is_exit_2_naming_file_and_field(tmp_path, good, case, where, value, says):
    p = _write(tmp_path / "bad.json", _set(copy.deepcopy(good), where, value))
    with pytest.raises(GpuforgeError) as e:
        load_report(p)
    assert e.value.exit_code == 2 and str(p) in str(e.value) and says in str(e.value), str(e.value)
    res = CliRunner().invoke(gpu_validate, ["report", str(p), "--format", "html"])
    assert res.exit_code == 2 and str(p) in res.output and "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)


NOT_REPORTS = [
    ("json list", b"[1, 2, 3]"),
    ("json string", b'"hello"'),
    ("json null", b"null"),
    ("json number", b"42"),
    ("empty object", b"{}"),
    ("package.json", b'{"name": "x", "version": "1.0.0", "dependencies": {}}'),
    ("docker inspect", b'[{"Id": "abc", "State": {"Running": true}}]'),
    ("truncated", b'{"schema_version": 1, "host": "a", "results": [{"id": "gpu.x", "sta'),
    ("nan", b'{"schema_version": 1, "host": "a", "duration_s": NaN, "results": []}'),
    ("deep", b"[" * 100000 + b"]" * 100000),
    ("binary", bytes(range(256))),
    ("utf16", '{"schema_version": 1}'.encode("utf-16")),
    ("empty", b""),
]


@pytest.mark.parametrize("case,data", NOT_REPORTS, ids=[c[0] for c in NOT_REPORTS])
def test_not_a_report_is_exit_2(tmp_path, case, data):
    p = tmp_path / "x.json"
    p.write_bytes(data)
    res = CliRunner().invoke(gpu_validate, ["report", str(p)])
    assert res.exit_code == 2 and str(p) in res.output and "Traceback" not in res.output, res.output


def test_fleet_lists_every_bad_file_with_why_and_renders_the_rest(tmp_path, good):
    d = tmp_path / "fleet"
    d.mkdir()
    _write(d / "a.json", good)
    b = copy.deepcopy(good)
    b["host"] = "node-b"
    _write(d / "b.json", b)
    for i, (_case, where, value, _) in enumerate(CORRUPTIONS):
        _write(d / f"bad{i:02d}.json", _set(copy.deepcopy(good), where, value))
    for i, (_case, data) in enumerate(NOT_REPORTS):
        (d / f"not{i:02d}.json").write_bytes(data)
    os.mkfifo(d / "fifo.json")
    (d / "dir.json").mkdir()
    (d / "loop").symlink_to(d)  # a folder that contains itself
    fleet = load_fleet(d)
    assert [r.host for _, r in fleet.reports] == [good["host"], "node-b"]
    assert len(fleet.errors) == len(CORRUPTIONS) + len(NOT_REPORTS) + 1  # + the FIFO (dir.json is no file)
    assert any("fifo.json" in e and "FIFO" in e for e in fleet.errors)
    for fmt in ("text", "json", "html"):
        out = render_fleet(fleet, fmt)
        assert "bad00.json" in out and "node-b" in out
    res = CliRunner().invoke(gpu_validate, ["fleet", str(d)])
    assert res.exit_code == 1 and "unreadable:" in res.output and "Traceback" not in res.output
    assert res.output.count("unreadable:") == len(fleet.errors)


def test_fleet_says_duplicate_hosts(tmp_path, good):
    d = tmp_path / "fleet"
    (d / "rack1").mkdir(parents=True)
    _write(d / "a.json", good)
    _write(d / "rack1" / "a-again.json", good)
    fleet = load_fleet(d)
    assert fleet.duplicate_hosts == {good["host"]: ["a.json", "rack1/a-again.json"]}
    text = render_fleet(fleet, "text")
    assert f"duplicate host: {good['host']} has 2 reports" in text
    html = render_fleet(fleet, "html")
    assert "more than one report" in html and "rack1/a-again.json" in html
    data = json.loads(render_fleet(fleet, "json"))
    assert data["duplicate_hosts"] == {good["host"]: ["a.json", "rack1/a-again.json"]}
    some = next(iter(data["checks"].values()))
    assert len(some) == 2  # both reports keep their own column
    res = CliRunner().invoke(gpu_validate, ["fleet", str(d)])
    assert "duplicate host" in res.output


ESC = "\x1b]0;owned\x07\x1b[2J\x1b[32mPASS\r\u202e\x9b31m\x00"


def _hostile_report(good) -> Report:
    doc = copy.deepcopy(good)
    doc["host"] = "node" + ESC
    doc["driver_version"] = "535" + ESC
    doc["gpus"] = [{"index": 0, "name": "NVIDIA H100" + ESC, "bus_id": "0000:00:06.0"}]
    doc["results"][0]["observed"] = "Xid 79 " + ESC + "\ud800"
    doc["results"][0]["status"] = "fail"
    doc["results"][0]["subject"] = "GPU0" + ESC
    doc["bios_checklist"] = ["C-states" + ESC]
    return Report.from_dict(doc, "<test>")


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "html"])
def test_node_text_never_reaches_terminal_or_xml_raw(good, fmt):
    out = render(_hostile_report(good), fmt)
    if fmt in ("term", "text", "prom"):
        for c in "\x1b\x07\r\x00\x9b\u202e\ud800":
            assert c not in out, (fmt, repr(c))
        assert "\\x1b" in out
    if fmt == "junit":
        ET.fromstring(out.encode("utf-8", errors="strict"))  # well-formed XML 1.0
        assert "\\x1b" in out
    if fmt == "json":
        assert json.loads(out)["host"] == "node" + ESC  # JSON keeps the data exactly (escaped by json)


def test_hostile_text_in_fleet_and_errors(tmp_path, good):
    d = tmp_path / "fleet"
    d.mkdir()
    rep = _hostile_report(good)
    (d / "a.json").write_text(rep.to_json())
    (d / ("bad" + "\x1b[31m" + ".json")).write_text("[]")
    res = CliRunner().invoke(gpu_validate, ["fleet", str(d)])
    assert "\x1b" not in res.output and "\\x1b" in res.output
    bad = tmp_path / "x.yaml"
    bad.write_text("name: x\n\x1b]0;t\x07key: 1\n")
    res = CliRunner().invoke(gpu_validate, ["run", "--root", str(H100), "--profile", str(bad)])
    assert res.exit_code == 2 and "\x1b" not in res.output


# ---- property-based: random JSON shapes as a report ---------------------------------------------------------

_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
_json = st.recursive(_scalars, lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(st.text(max_size=8), c, max_size=4)),
                     max_leaves=25)
_FIELDS = ["schema_version", "host", "level", "results", "duration_s", "gpus", "live", "metric", "status", "observed",
           "bios_checklist", "tool", "started", "data"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_mutations_of_a_good_report(tmp_path, good, data):
    doc = copy.deepcopy(good)
    for _ in range(data.draw(st.integers(1, 3))):
        key = data.draw(st.sampled_from(_FIELDS))
        value = data.draw(_json)
        if key in ("metric", "status", "observed") and doc.get("results"):
            if isinstance(doc["results"], list) and doc["results"] and isinstance(doc["results"][0], dict):
                doc["results"][0][key] = value
        else:
            doc[key] = value
    _loads_and_renders_or_exit_2(tmp_path, doc)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=_json)
def test_random_json_documents(tmp_path, doc):
    _loads_and_renders_or_exit_2(tmp_path, doc)


def _loads_and_renders_or_exit_2(tmp_path, doc):
    p = tmp_path / "r.json"
    p.write_text(json.dumps(doc))
    try:
        rep = load_report(p)
    except GpuforgeError as e:
        assert e.exit_code == 2 and str(p) in str(e)
        return
    for fmt in FORMATS:  # whatever loads must render in every format
        render(rep, fmt)


# ---- the data section and the per-GPU facts that the HTML pictures draw ---------------------------------------

_num = st.one_of(st.integers(-10 ** 30, 10 ** 30), st.floats(allow_nan=False, allow_infinity=False),
                 st.sampled_from([0, -1, 1e308, -1e308, 5e-324]))
_leaf = st.one_of(st.none(), st.booleans(), _num, st.text(max_size=8))
_anyj = st.recursive(_leaf, lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(st.text(max_size=6), c,
                                                                                          max_size=4)), max_leaves=20)
_sweep = st.lists(st.lists(st.one_of(_num, _leaf), max_size=6), max_size=6)
_figure = st.fixed_dictionaries({"name": st.one_of(_leaf, st.sampled_from(["p2p_0_1", "p2p_1_0"])), "value": _leaf,
                                 "meta": st.one_of(_anyj, st.fixed_dictionaries({"sweep": st.one_of(_sweep, _anyj),
                                                                                 "ranks": _leaf}))})
_series = st.dictionaries(st.sampled_from(["t", "temp_c", "power_w", "sm_mhz"]),
                          st.one_of(st.lists(_num, max_size=8), _anyj), max_size=4)
_run = st.fixed_dictionaries({
    "suite": st.sampled_from(["nccl", "gemm", "bandwidth", "train"]),
    "figures": st.one_of(st.lists(_figure, max_size=3), _anyj),
    "telemetry": st.one_of(st.dictionaries(st.text(max_size=3), st.one_of(
        st.fixed_dictionaries({"series": _series}), _anyj), max_size=3), _anyj)})
_data = st.fixed_dictionaries({"bench": st.one_of(st.fixed_dictionaries({
    "benchmarks": st.one_of(st.lists(_run, max_size=3), _anyj),
    "topology": st.one_of(_anyj, st.fixed_dictionaries({"links": _anyj}))}), _anyj)})
_GPU_KEYS = ["index", "name", "bus_id", "model", "temp_c", "temp_headroom_c", "power_draw_w", "power_limit_w",
             "sm_clock_mhz", "sm_clock_max_mhz", "pcie_gen", "pcie_gen_max", "pcie_width", "pcie_width_max",
             "ecc_enabled", "dbe_volatile", "dbe_aggregate", "nvlink_active", "future_key"]
_gpu_dict = st.dictionaries(st.sampled_from(_GPU_KEYS), _leaf, max_size=10)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=_data, gpus=st.lists(_gpu_dict, max_size=3))
def test_random_data_section_and_gpu_facts_render_or_exit_2(tmp_path, good, data, gpus):
    doc = copy.deepcopy(good)
    doc["data"], doc["gpus"] = data, gpus
    _loads_and_renders_or_exit_2(tmp_path, doc)


@pytest.mark.parametrize("ys", [(1e308, -1e308), (5e-324, 5e-324), (0.0, 0.0), (1e15, -1e15)])
def test_charts_survive_extreme_figures(ys):
    from validator.report.charts import Series, line_chart
    for log2_x in (False, True):
        line_chart([Series("a", ((1, ys[0]), (2, ys[1])))], "t", "x", "y", log2_x=log2_x)
