"""Parsers: exact values on known input; hypothesis fuzz: no input crashes them (nor the validator)."""

from __future__ import annotations

import string

from hypothesis import HealthCheck, given, settings, strategies as st

from validator.checks.pcie import parse_acs
from validator.nvsmi import NvsmiParseError, parse_nvsmi_xml
from validator.parse import (cmdline_has, normalize_bus_id, parse_bracketed, parse_cmdline, parse_cpulist, parse_float,
                             parse_int, parse_link_speed, parse_meminfo_kb, parse_sysctl_dump, parse_xids,
                             speed_to_gen, sysctl_equal)

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_values():
    assert parse_int("0x10de\n") == 0x10DE and parse_int("-1\n") == -1 and parse_int("010") == 10
    assert parse_int("N/A") is None and parse_float("70.33 W") == 70.33 and parse_float("N/A") is None
    assert parse_cpulist("0-3,8,10-11") == (0, 1, 2, 3, 8, 10, 11) and parse_cpulist("") == ()
    assert parse_cpulist("3-1") is None and parse_cpulist("a") is None
    assert parse_bracketed("always [madvise] never") == "madvise" and parse_bracketed("never") == "never"
    assert parse_link_speed("32.0 GT/s PCIe") == 32.0 and speed_to_gen(32.0) == 5 and parse_link_speed("Unknown") is None
    assert normalize_bus_id("00000000:00:06.0") == "0000:00:06.0" and normalize_bus_id("0A:00.1") == "0000:0a:00.1"
    assert normalize_bus_id("zz") is None
    assert parse_sysctl_dump("vm.swappiness = 60\nfs.x = 1\t2\n") == {"vm.swappiness": "60", "fs.x": "1\t2"}
    assert parse_meminfo_kb("SwapTotal:  12 kB\n", "SwapTotal") == 12
    assert sysctl_equal("60", 60) and not sysctl_equal("60", "1") and sysctl_equal("a  b", "a b")


def test_cmdline():
    p = parse_cmdline('BOOT_IMAGE=/vmlinuz quiet iommu=pt "acpi_osi=Linux x" iommu=off')
    assert ("quiet", None) in p and cmdline_has(p, "quiet") and cmdline_has(p, "acpi_osi=Linux x")
    assert not cmdline_has(p, "iommu=pt")  # the last occurrence wins
    assert not cmdline_has(p, "pcie_aspm=off")


def test_xids():
    log = ("[  12.3] NVRM: Xid (PCI:0000:3b:00): 79, pid=1, GPU has fallen off the bus.\n"
           "NVRM: Xid (PCI:0000:00:06.0): 48, pid='<unknown>', name=<unknown>, An uncorrectable DBE\n"
           "NVRM: GPU at PCI:0000:00:06.0: GPU-xyz\n")
    ev = parse_xids(log)
    assert [(e.xid, e.bus_id) for e in ev] == [(79, "0000:3b:00"), (48, "0000:00:06.0")]


def test_acs():
    text = ("00:01.0 PCI bridge: Intel\n\t\tACSCtl:\tSrcValid+ TransBlk- ReqRedir+ CmpltRedir+\n"
            "00:02.0 PCI bridge: Intel\n\t\tACSCtl:\tSrcValid- TransBlk- ReqRedir- CmpltRedir-\n")
    found, denied = parse_acs(text)
    assert list(found) == ["00:01.0"] and not denied


@FUZZ
@given(st.text())
def test_fuzz_scalar_parsers(s):
    for fn in (parse_int, parse_float, parse_cpulist, parse_bracketed, parse_link_speed, normalize_bus_id):
        fn(s)
    parse_cmdline(s)
    cmdline_has(parse_cmdline(s), "iommu=pt")
    parse_sysctl_dump(s)
    parse_meminfo_kb(s, "SwapTotal")
    parse_acs(s)
    sysctl_equal(s, "1")


_LINE = st.builds(
    lambda pre, bus, xid, tail: f"{pre}NVRM: Xid (PCI:{bus}): {xid}, {tail}",
    st.text(max_size=20), st.text(alphabet=string.hexdigits + ":.", max_size=16),
    st.one_of(st.integers(-5, 10**9).map(str), st.text(max_size=5)), st.text(max_size=40))


@FUZZ
@given(st.lists(st.one_of(_LINE, st.text(max_size=80)), max_size=20))
def test_fuzz_kernel_log(lines):
    for e in parse_xids("\n".join(lines)):
        assert isinstance(e.xid, int) and 0 <= e.xid <= 1_000_000


@FUZZ
@given(st.text())
def test_fuzz_nvsmi_garbage(s):
    try:
        parse_nvsmi_xml(s)
    except NvsmiParseError:
        pass


_FIELDS = ["persistence_mode", "ecc_mode/current_ecc", "ecc_errors/volatile/dram_uncorrectable",
           "ecc_errors/aggregate/dram_uncorrectable", "remapped_rows/remapped_row_pending",
           "temperature/gpu_temp", "gpu_power_readings/current_power_limit",
           "pci/pci_gpu_link_info/link_widths/current_link_width", "pci/pci_device_id", "pci/replay_counter",
           "clocks_event_reasons/clocks_event_reason_hw_slowdown", "retired_pages/pending_retirement"]
_VALUE = st.one_of(st.sampled_from(["N/A", "Enabled", "Disabled", "Yes", "No", "Active", "16x", "0x233010DE", "",
                                    "-5 C", "1e309", "700.00 W"]),
                   st.integers(-10**12, 10**12).map(str),
                   st.text(alphabet=string.printable.replace("<", "").replace("&", ""), max_size=12))


def _xml(values) -> str:
    def el(path, v):
        parts = path.split("/")
        return "".join(f"<{p}>" for p in parts) + v + "".join(f"</{p}>" for p in reversed(parts))
    gpus = "".join(f'<gpu id="{bid}">' + "".join(el(f, v) for f, v in zip(_FIELDS, vals)) + "</gpu>"
                   for bid, vals in values)
    return f'<?xml version="1.0" ?>\n<!DOCTYPE nvidia_smi_log SYSTEM "x.dtd">\n<nvidia_smi_log>{gpus}</nvidia_smi_log>'


@FUZZ
@given(st.lists(st.tuples(st.text(alphabet=string.hexdigits + ":.", max_size=16),
                          st.lists(_VALUE, min_size=len(_FIELDS), max_size=len(_FIELDS))), max_size=3))
def test_fuzz_nvsmi_structured(values):
    data = parse_nvsmi_xml(_xml(values))
    assert len(data.gpus) == len(values)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.text(alphabet=string.hexdigits + ":.", max_size=16),
                          st.lists(_VALUE, min_size=len(_FIELDS), max_size=len(_FIELDS))), max_size=2),
       st.text(max_size=60), st.text(max_size=30), st.lists(st.text(max_size=40), min_size=9, max_size=9))
def test_fuzz_whole_validator_never_crashes(tmp_path_factory, values, cmdline, swappiness, more):
    """Fuzzed nvidia-smi XML, cmdline, sysfs/procfs values and kernel log through every check: no 'check crashed'."""
    import shutil
    from pathlib import Path
    from validator.runner import validate
    src = Path(__file__).parents[1] / "fixtures/nodes/h100-sxm5-80gb-kvm-guest"
    root = tmp_path_factory.mktemp("fz") / "node"
    shutil.copytree(src, root)
    (root / "cmd/nvidia-smi-q.xml").write_text(_xml(values))
    (root / "proc/cmdline").write_text(cmdline)
    (root / "proc/sys/vm/swappiness").write_text(swappiness)
    (root / "sys/devices/pci0000:00/0000:00:06.0/current_link_width").write_text(swappiness)
    files = ["sys/devices/pci0000:00/0000:00:06.0/numa_node", "sys/devices/pci0000:00/0000:00:06.0/local_cpulist",
             "sys/devices/pci0000:00/0000:00:06.0/current_link_speed", "proc/modules", "proc/meminfo",
             "sys/kernel/mm/transparent_hugepage/enabled", "sys/devices/system/cpu/cpuidle/current_driver",
             "sys/devices/system/node/node0/cpulist", "cmd/dmesg.txt"]
    for rel, text in zip(files, more):
        p = root / rel
        if p.exists():
            p.chmod(0o644)
        p.write_text(text)
    (root / "cmd/cuda-probe.json").write_text(more[0])
    rep = validate(root=root, level="standard")
    crashed = [(r.id, r.observed) for r in rep.results if "check crashed" in r.observed]
    assert crashed == []
