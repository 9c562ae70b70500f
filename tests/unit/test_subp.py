import pytest

from validator import atomic, subp
from validator.errors import CommandError, ToolMissing


@pytest.mark.subprocess
def test_run_captures_output_and_rc():
    r = subp.run(["sh", "-c", "echo out; echo err >&2; exit 3"], ok_codes=(3,))
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")


@pytest.mark.subprocess
def test_failure_carries_command_status_and_stderr_tail():
    with pytest.raises(CommandError) as ei:
        subp.run(["sh", "-c", "echo boom >&2; exit 4"])
    e = ei.value
    assert e.returncode == 4 and "boom" in str(e) and "sh -c" in str(e)


@pytest.mark.subprocess
def test_missing_tool_is_its_own_error():
    with pytest.raises(ToolMissing):
        subp.run(["/nonexistent/gpuforge-tool"])


@pytest.mark.subprocess
def test_timeout_raises_command_error():
    with pytest.raises(CommandError, match="timed out"):
        subp.run(["sleep", "5"], timeout=0.2)


def test_unit_tests_cannot_spawn():
    with pytest.raises(AssertionError, match="spawn a process"):
        subp.run(["true"])


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    p = tmp_path / "a" / "f.txt"
    atomic.write_text(p, "one")
    atomic.write_text(p, "two")
    assert p.read_text() == "two"
    assert [x.name for x in p.parent.iterdir()] == ["f.txt"]
