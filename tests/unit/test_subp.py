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


@pytest.mark.subprocess
def test_timeout_never_waits_on_a_child_that_outlives_the_kill(monkeypatch):
    # a grandchild keeps the pipes open after the child is killed (as a process blocked in a hung driver
    # outlives SIGKILL): run() gives up after the grace period instead of waiting for it
    monkeypatch.setattr(subp, "KILL_GRACE_S", 0.2)
    with pytest.raises(CommandError, match="still running after SIGKILL"):
        subp.run(["sh", "-c", "sleep 2 & sleep 2"], timeout=0.2)


@pytest.mark.subprocess
def test_a_program_that_cannot_start_is_a_command_error(tmp_path):
    tool = tmp_path / "not-executable"
    tool.write_text("#!/bin/sh\n")
    with pytest.raises(CommandError, match="cannot start"):
        subp.run([str(tool)])


def test_unit_tests_cannot_spawn():
    with pytest.raises(AssertionError, match="spawn a process"):
        subp.run(["true"])


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    p = tmp_path / "a" / "f.txt"
    atomic.write_text(p, "one")
    atomic.write_text(p, "two")
    assert p.read_text() == "two"
    assert [x.name for x in p.parent.iterdir()] == ["f.txt"]
