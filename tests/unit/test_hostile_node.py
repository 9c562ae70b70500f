"""Hostile node snapshots: FIFOs, folders and huge files where a file should be, 200k-character kernel-log lines,
garbage in sysfs/procfs. `run --root` never blocks, never crashes, and a broken reading is never a pass."""

from __future__ import annotations

import os
import shutil
import signal
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from validator.cli import main as gpu_validate
from validator.parse import parse_cmdline, parse_xids
from validator.runner import validate

H100 = Path(__file__).parents[1] / "fixtures" / "nodes" / "h100-sxm5-80gb-kvm-guest"


@contextmanager
def no_hang(seconds: int = 60):
    """Fail (instead of blocking CI) if the body does not return: a guard against hangs, not a speed test."""
    def _alarm(signum, frame):
        raise AssertionError(f"still running after {seconds}s: a hang")
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture
def snap(tmp_path) -> Path:
    dst = tmp_path / "node"
    shutil.copytree(H100, dst, symlinks=True)
    return dst


def _replace(snap: Path, rel: str, kind: str) -> None:
    p = snap / rel
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif os.path.lexists(p):
        p.unlink()
    p.parent.mkdir(parents=True, exist_ok=True)
    if kind == "fifo":
        os.mkfifo(p)
    elif kind == "dir":
        p.mkdir()
    elif kind == "devzero":
        p.symlink_to("/dev/zero")
    elif kind == "loop":
        p.symlink_to(p.name)
    elif kind == "huge":
        with open(p, "wb") as f:  # sparse: 17 MiB of NULs past the cap, no disk used
            f.truncate(17 << 20)
    elif kind == "binary":
        p.write_bytes(bytes(range(256)) * 64)


def _vendor_file(snap: Path) -> str:
    return str(next(snap.rglob("vendor")).relative_to(snap))


NODE_FILES = [
    "cmd/nvidia-smi-q.xml", "cmd/nvidia-smi-q.xml.rc", "cmd/which.txt", "cmd/sysctl.txt", "cmd/dmesg.txt",
    "cmd/journal-k.txt", "cmd/lspci-vvv.txt", "proc/cmdline", "proc/modules", "proc/cpuinfo", "proc/meminfo",
    "proc/driver/nvidia/version", "etc/hostname", "etc/gpuforge/tuning.yaml", "etc/docker/daemon.json",
    "sys/module/nvidia/version", "sys/kernel/mm/transparent_hugepage/enabled", "VENDOR",
]
KINDS = ["fifo", "dir", "devzero", "loop", "huge", "binary"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rel", NODE_FILES)
def test_odd_file_anywhere_in_a_snapshot_never_blocks_or_crashes(snap, rel, kind):
    rel = _vendor_file(snap) if rel == "VENDOR" else rel
    _replace(snap, rel, kind)
    with no_hang():
        res = CliRunner().invoke(gpu_validate, ["run", "--root", str(snap), "--format", "json"])
    assert res.exception is None or isinstance(res.exception, SystemExit), res.output
    assert res.exit_code in (0, 1, 3) or (res.exit_code == 2 and "tuning.yaml" in res.output), res.output
    assert "Traceback" not in res.output


def test_every_snapshot_file_as_a_fifo_at_once(snap):
    files = [p for p in snap.rglob("*") if p.is_file() and not p.is_symlink()]
    for p in files:
        p.unlink()
        os.mkfifo(p)
    with no_hang():
        report = validate(root=snap)
    assert report.results and all(r.status != "pass" or r.id.startswith(("cpu.", "numa.", "iommu.", "memory."))
                                  for r in report.results)


LONG = 200_000


@pytest.mark.parametrize("line", [
    "NVRM: Xid (PCI:0000:00:06.0 " * (LONG // 28),
    "NVRM: Xid (PCI:" + "0" * LONG,
    "NVRM: Xid (PCI:0000:00:06.0): " + "9" * LONG,
    "NVRM: Xid (PCI:0000:00:06.0 " + " " * LONG + "x",
    "x" * LONG,
    "\x1b[31m" * (LONG // 5),
])
def test_long_kernel_log_lines_are_parsed_in_linear_time(snap, line):
    with no_hang(30):
        for _ in range(10):  # ten such lines: quadratic matching took >30 s for one of them
            parse_xids(line + "\n" + line)
        parse_cmdline(line)
    (snap / "cmd" / "dmesg.txt").write_text("NVRM: Xid (PCI:0000:00:06.0): 79, pid=1, fell off the bus\n"
                                            + (line + "\n") * 5)
    with no_hang(60):
        report = validate(root=snap)
    xid = [r for r in report.results if r.id == "gpu.xid"]
    assert xid and all(r.status == "fail" for r in xid)  # the real XID 79 is still found among the junk


def test_xid_parsing_keeps_its_answers():
    log = ("[ 1.0] NVRM: Xid (PCI:0000:3b:00.0): 79, pid=1, GPU has fallen off the bus.\n"
           "NVRM: Xid (PCI:0000:00:06 tag): 48, double-bit ECC\n"
           "junk NVRM: Xid (PCI:zz): x\n"
           "NVRM: Xid (PCI:0000:00:06.0): 99999999999, too big\n")
    ev = parse_xids(log)
    assert [(e.bus_id, e.xid) for e in ev] == [("0000:3b:00.0", 79), ("0000:00:06", 48)]


# ---- property-based: random values in sysfs/procfs files and command outputs --------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_FILES = sorted(str(p.relative_to(H100)) for p in H100.rglob("*") if p.is_file() and not p.is_symlink()
                and not p.name.endswith(".rc"))
_VALUES = st.one_of(
    st.sampled_from(["", "0", "-1", "-9999999999", "99999999999999999999999", "nan", "inf", "0x", "[", "[]",
                     "1-", "0-99999999", "always [never", "N/A", "\x00", "\xff", "x" * 5000, "\n\n\n", "  ",
                     "performance\nperformance", "16x", "-5 GT/s", "1e400"]),
    st.text(max_size=40),
    st.integers(-10 ** 12, 10 ** 12).map(str),
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.sampled_from(_FILES), _VALUES), min_size=1, max_size=4))
def test_random_node_values_never_crash_a_check(tmp_path_factory, edits):
    snap = tmp_path_factory.mktemp("fuzz") / "node"
    shutil.copytree(H100, snap, symlinks=True)
    for rel, value in edits:
        p = snap / rel
        p.chmod(0o644)
        p.write_text(value, errors="surrogateescape")
    with no_hang():
        report = validate(root=snap)
    crashed = [(r.id, r.observed) for r in report.results if "check crashed" in r.observed]
    assert not crashed, (edits, crashed)


@pytest.mark.parametrize("daemon", ["[" * 5000 + "]" * 5000, '{"runtimes": 5}', '{"runtimes": "nvidia"}', "[1]",
                                    '{"default-runtime": ["nvidia"]}', "\xff", '{"runtimes": {"nvidia": {}}}'])
def test_odd_docker_daemon_json_never_crashes(snap, daemon):
    (snap / "etc/docker").mkdir(parents=True, exist_ok=True)
    (snap / "etc/docker/daemon.json").write_text(daemon, errors="surrogateescape")
    report = validate(root=snap, groups=["container"])
    assert report.results and not [r for r in report.results if "check crashed" in r.observed]
