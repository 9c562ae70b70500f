"""Broken readings are failures, never passes: nvidia-smi failing or printing half a report while GPUs are on the
bus, impossible values (9999 C, negative counters, x3 links, 5 kW draw), a GPU listed twice, a `--check` typo,
an unreadable driver version."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from validator.cli import main as gpu_validate
from validator.nvsmi import RANGES, GpuInfo, checked, parse_nvsmi_xml
from validator.runner import validate

H100 = Path(__file__).parents[1] / "fixtures" / "nodes" / "h100-sxm5-80gb-kvm-guest"
XML = "cmd/nvidia-smi-q.xml"
GPU0 = "GPU0 0000:00:06.0"
BUS = "0000:00:06.0"
GPU_DIR = "sys/devices/pci0000:00/0000:00:06.0"
DRIVER_CHECKS = ("gpu.count", "gpu.model", "gpu.driver_version", "gpu.cuda_version", "gpu.persistence",
                 "gpu.ecc_mode", "gpu.ecc_errors", "gpu.temperature", "gpu.power_limit", "pcie.replay")


@pytest.fixture
def snap(tmp_path) -> Path:
    dst = tmp_path / "node"
    shutil.copytree(H100, dst, symlinks=True)
    for p in dst.rglob("*"):
        if p.is_file():
            p.chmod(0o644)
    return dst


def _sub(root: Path, rel: str, pattern: str, repl: str) -> None:
    p = root / rel
    new, n = re.subn(pattern, repl, p.read_text())
    assert n, f"{pattern!r} not in {rel}"
    p.write_text(new)


def _by_id(report):
    out = {}
    for r in report.results:
        out.setdefault(r.id, []).append(r)
    return out


# ---- nvidia-smi failing while GPUs are on the bus ---------------------------------------------------------

def _rc9(root):
    (root / XML).write_text("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
                            "Make sure that the latest NVIDIA driver is installed and running.\n")
    (root / (XML + ".rc")).write_text("rc=9\n")


def _empty(root):
    (root / XML).write_text("")


def _truncated(root):
    text = (root / XML).read_text()
    (root / XML).write_text(text[: len(text) // 2])


def _no_gpu_elements(root):
    _sub(root, XML, r"(?s)<gpu id=.*</gpu>", "")


def _not_xml(root):
    (root / XML).write_text("Segmentation fault (core dumped)\n")


def _other_root(root):
    (root / XML).write_text("<?xml version='1.0'?><html><body>proxy error</body></html>")


SMI_BROKEN = [("rc 9", _rc9), ("empty xml", _empty), ("truncated xml", _truncated),
              ("attached_gpus but no gpu", _no_gpu_elements), ("not xml", _not_xml), ("wrong root", _other_root)]


@pytest.mark.parametrize("case,broken", SMI_BROKEN, ids=[c for c, _ in SMI_BROKEN])
def test_nvidia_smi_broken_with_gpus_on_pci_fails_the_gpu_checks(snap, case, broken):
    broken(snap)
    rep = validate(root=snap)
    by = _by_id(rep)
    for cid in DRIVER_CHECKS:
        assert all(r.status == "fail" for r in by[cid]), (cid, [(r.status, r.observed) for r in by[cid]])
    assert "1 NVIDIA GPU(s) on the PCI bus" in by["gpu.temperature"][0].observed
    assert rep.exit_code == 1
    res = CliRunner().invoke(gpu_validate, ["run", "--root", str(snap)])
    assert res.exit_code == 1 and "Traceback" not in res.output


def test_nvidia_smi_broken_without_gpus_on_pci_is_only_unreadable(snap):
    _rc9(snap)
    shutil.rmtree(snap / GPU_DIR)
    rep = validate(root=snap)
    by = _by_id(rep)
    assert all(r.status == "skip" for r in by["gpu.temperature"])
    assert all(r.status != "pass" for r in by["gpu.count"])


# ---- values outside their physical range --------------------------------------------------------------------

ABSURD = [
    # (id, pattern in the XML, replacement, check that must fail)
    ("temp 9999", r"<gpu_temp>31 C<", "<gpu_temp>9999 C<", "gpu.temperature"),
    ("temp -300", r"<gpu_temp>31 C<", "<gpu_temp>-300 C<", "gpu.temperature"),
    ("tlimit 9999", r"<gpu_temp_tlimit>56 C<", "<gpu_temp_tlimit>9999 C<", "gpu.temperature"),
    ("dbe -1", r"<dram_uncorrectable>0<", "<dram_uncorrectable>-1<", "gpu.ecc_errors"),
    ("dbe aggregate -25", r"<dram_uncorrectable>25<", "<dram_uncorrectable>-25<", "gpu.ecc_errors"),
    ("remap unc -1", r"<remapped_row_unc>1<", "<remapped_row_unc>-1<", "gpu.row_remap"),
    ("remap corr -7", r"<remapped_row_corr>0<", "<remapped_row_corr>-7<", "gpu.row_remap"),
    ("retired -3", r"(<retired_count>)N/A(<)", r"\g<1>-3\2", "gpu.retired_pages"),
    ("replay -5", r"<replay_counter>0<", "<replay_counter>-5<", "pcie.replay"),
    ("power draw 5x", r"<average_power_draw>70.43 W<", "<average_power_draw>3500.00 W<", "gpu.power_limit"),
    ("power limit 0", r"<current_power_limit>700.00 W<", "<current_power_limit>0.00 W<", "gpu.power_limit"),
    ("power limit 1e9", r"<current_power_limit>700.00 W<", "<current_power_limit>1000000000 W<", "gpu.power_limit"),
]


@pytest.mark.parametrize("case,pattern,repl,check_id", ABSURD, ids=[c[0] for c in ABSURD])
def test_absurd_driver_value_fails_as_a_broken_reading(snap, case, pattern, repl, check_id):
    _sub(snap, XML, pattern, repl)
    by = _by_id(validate(root=snap))
    rs = by[check_id]
    assert rs and all(r.status == "fail" and "out of physical range" in r.observed for r in rs), \
        [(r.status, r.observed) for r in rs]


SYSFS_ABSURD = [
    ("width x0", "current_link_width", "0\n"),
    ("width x3", "current_link_width", "3\n"),
    ("width x999", "max_link_width", "999\n"),
    ("speed 999 GT/s", "current_link_speed", "999.0 GT/s PCIe\n"),
    ("max speed 3 GT/s", "max_link_speed", "3.0 GT/s PCIe\n"),
]


@pytest.mark.parametrize("case,attr,value", SYSFS_ABSURD, ids=[c[0] for c in SYSFS_ABSURD])
def test_absurd_sysfs_link_fails(snap, case, attr, value):
    (snap / GPU_DIR / attr).write_text(value)
    if attr.startswith("max"):  # make current equal, so only the range (not a downgrade) can fail it
        (snap / GPU_DIR / attr.replace("max", "current")).write_text(value)
    rs = _by_id(validate(root=snap))["pcie.link"]
    assert all(r.status == "fail" and "out of physical range" in r.observed for r in rs), rs


@pytest.mark.parametrize("content", ["TOTAL_ERR_FATAL -5\n", "garbage\n", "TOTAL_ERR_FATAL x\nA 1 2\n"])
def test_garbage_aer_counters_fail(snap, content):
    (snap / GPU_DIR / "aer_dev_fatal").write_text(content)
    rs = _by_id(validate(root=snap))["pcie.aer"]
    assert all(r.status == "fail" for r in rs), rs


_NUMERIC = sorted(RANGES)


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(_NUMERIC),
       value=st.one_of(st.integers(-10 ** 20, 10 ** 20), st.floats(allow_nan=True, allow_infinity=True)))
def test_reading_layer_never_lets_an_out_of_range_value_through(field, value):
    name, lo, hi, _ = RANGES[field]
    g = checked(GpuInfo(index=0, **{field: value}))
    v = getattr(g, field)
    if v is None:
        assert g.broken(field), (field, value)
    else:
        assert lo <= v <= hi and not g.broken(field)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(temp=st.one_of(st.integers(-1000, 100000), st.sampled_from(["N/A", "", "abc", "1e9", "-0", "nan C"])))
def test_random_temperature_text_never_passes_out_of_range(tmp_path, temp):
    snap = tmp_path / f"n{abs(hash(str(temp))) % 10 ** 9}"
    if not snap.exists():
        shutil.copytree(H100, snap, symlinks=True)
    xml = (H100 / XML).read_text()
    (snap / XML).chmod(0o644)
    (snap / XML).write_text(re.sub(r"<gpu_temp>31 C<", f"<gpu_temp>{temp} C<", xml))
    [r] = _by_id(validate(root=snap, ids=["gpu.temperature"]))["gpu.temperature"]
    value = float(temp) if re.fullmatch(r"-?\d+(\.\d+)?([eE]\d+)?", str(temp)) else None
    if value is not None and not -40 <= value <= 150:
        assert r.status == "fail" and "out of physical range" in r.observed
    if r.status == "pass":
        assert value is not None and -40 <= value <= 150


def test_parse_keeps_in_range_values():
    g = parse_nvsmi_xml((H100 / XML).read_text()).gpus[0]
    assert g.temp_c == 31 and g.power_limit_w == 700 and g.invalid == ()


# ---- a GPU listed twice -------------------------------------------------------------------------------------

def _twice(root):
    text = (root / XML).read_text()
    gpu = re.search(r"(?s)\t<gpu id=.*?</gpu>\n", text).group(0)
    text = text.replace(gpu, gpu + gpu).replace("<attached_gpus>1<", "<attached_gpus>2<")
    (root / XML).write_text(text)


@pytest.mark.parametrize("expect", [None, "2xH100", "1xH100"])
def test_gpu_listed_twice_never_passes_count_or_expect(snap, expect):
    _twice(snap)
    by = _by_id(validate(root=snap, expect=expect))
    assert [r.status for r in by["gpu.count"]] == ["fail"], by["gpu.count"]
    assert "more than once" in by["gpu.count"][0].observed
    assert [r.status for r in by["gpu.model"]] == ["fail"]


# ---- --check typos and the driver version line ---------------------------------------------------------------

@pytest.mark.parametrize("pattern,says", [
    ("gpu.tempreature", "did you mean: gpu.temperature"),
    ("gpu.xdi", "did you mean: gpu.xid"),
    ("nosuchcheck", "no check has this id"),
    ("gpu.dcgm_diag", "add --level standard"),
    ("*nothing*", "no check has this id"),
])
def test_check_typo_is_exit_2_with_suggestions(pattern, says):
    for extra in ([], ["--list-checks"]):
        res = CliRunner().invoke(gpu_validate, ["run", "--root", str(H100), "--check", pattern, *extra])
        assert res.exit_code == 2 and says in res.output and "Traceback" not in res.output, res.output


def test_check_globs_and_prefixes_still_select():
    res = CliRunner().invoke(gpu_validate, ["run", "--root", str(H100), "--check", "*temp*", "--check", "pcie."])
    assert res.exit_code in (0, 3) and "gpu.temperature" in res.output and "pcie.link" in res.output


@pytest.mark.parametrize("text,flavour", [
    ("garbage\n", "unknown"),
    ("NVRM version: \n", "unknown"),
    ("\x00\x00\x00", "unknown"),
    ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.261.03  Wed Jun 4 2025\n", "proprietary"),
    ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build\n", "open"),
])
def test_unreadable_driver_version_is_not_called_proprietary(snap, text, flavour):
    (snap / "proc/driver/nvidia/version").write_text(text)
    (snap / "sys/module/nvidia/version").unlink(missing_ok=True)
    [r] = _by_id(validate(root=snap, ids=["gpu.driver_loaded"]))["gpu.driver_loaded"]
    assert f"({flavour} kernel module)" in r.observed, r.observed


@pytest.mark.parametrize("text,flavour", [
    ("NVRM version: garbage 535.261.03 more\n", None),
    ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.261.03  Wed Jun 4 2025\n", "proprietary"),
    ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build\n", "open"),
    ("NVRM version: " * 20000 + "\n", None),
])
def test_detect_never_guesses_the_flavour(snap, text, flavour):
    from validator.detect import read_loaded_driver
    (snap / "proc/driver/nvidia/version").write_text(text)
    assert read_loaded_driver(snap).flavour == flavour
