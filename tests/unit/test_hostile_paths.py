"""Hostile folders handed to the farm commands' --dist and to `fleet`: a file, a FIFO, a symlink loop, a path
under a file, a virtual file system. Exit 2 naming the path before any work, never a traceback."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from builder.cli import main as gpuforge
from validator import atomic
from validator.cli import main as gpu_validate
from validator.clibase import ErrorHandlingGroup

REPORTS = Path(__file__).parents[1] / "fixtures" / "reports"
# One call per command that takes --dist; each must refuse before it reads a matrix or touches docker.
DIST_COMMANDS = [
    ["build", "drivers", "--only", "no-such-cell"],
    ["build", "containers"],
    ["build", "images"],
    ["build", "packer", "default"],
    ["publish"],
]


def _bad_folders(tmp: Path):
    (tmp / "afile").write_text("x")
    os.mkfifo(tmp / "fifo")
    (tmp / "loop").symlink_to(tmp / "loop")
    return {"a file": (tmp / "afile", "afile"), "a FIFO": (tmp / "fifo", "fifo"), "a symlink loop": (tmp / "loop", "loop"),
            "under a file": (tmp / "afile" / "sub", "afile"), "a device": (Path("/dev/zero"), "/dev/zero"),
            "/proc": (Path("/proc/gpuforge-x"), "/proc/gpuforge-x")}


@pytest.mark.parametrize("argv", DIST_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_dist_that_cannot_be_a_folder_is_exit_2_naming_it(argv, tmp_path):
    for what, (path, named) in _bad_folders(tmp_path).items():
        res = CliRunner().invoke(gpuforge, [*argv, "--dist", str(path)])
        assert res.exception is None or isinstance(res.exception, SystemExit), f"{what}: {res.exception!r}"
        assert res.exit_code == 2, f"{what}: exit {res.exit_code}\n{res.output}"
        assert named in res.output and "Traceback" not in res.output, f"{what}:\n{res.output}"
    assert not (tmp_path / "afile").is_dir() and (tmp_path / "afile").read_text() == "x"  # nothing replaced


def test_writable_dir_check_accepts_a_missing_folder_and_creates_nothing(tmp_path):
    atomic.check_writable_dir(tmp_path / "new" / "deeper")
    assert not (tmp_path / "new").exists() and list(tmp_path.iterdir()) == []


def test_fleet_skips_symlink_loops_and_lists_unreadable_folders(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "node.json").write_bytes((REPORTS / "h200x2-live-quick.json").read_bytes())
    (tmp_path / "r" / "loop").symlink_to(tmp_path / "r")  # walking it would never end
    res = CliRunner().invoke(gpu_validate, ["fleet", str(tmp_path), "--format", "json"])
    assert res.exit_code in (0, 1, 3) and "Traceback" not in res.output, res.output
    assert res.output.count('"gpu-node-03"') >= 1


def test_an_os_error_no_check_foresaw_is_a_message_not_a_traceback():
    @click.group(cls=ErrorHandlingGroup)
    def cli():
        pass

    @cli.command()
    def boom():
        raise NotADirectoryError(errno.ENOTDIR, "Not a directory", "/srv/x/y")

    res = CliRunner().invoke(cli, ["boom"])
    assert res.exit_code == 2 and "/srv/x/y: Not a directory" in res.output and "Traceback" not in res.output
