"""Hostile invocations of both CLIs, in-process (click's CliRunner): exit 2 (or the documented status), a message
that names the file or field, no traceback, and nothing half-written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from builder.cli import main as gpuforge
from validator.cli import main as gpu_validate

FIXTURES = Path(__file__).parents[1] / "fixtures"
H100 = FIXTURES / "nodes" / "h100-sxm5-80gb-kvm-guest"


def invoke(cli, args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_clean(res, code: int = 2, names=()):
    """Exit code as documented, the message names what is wrong, no traceback escaped the CLI."""
    out = res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), (
        f"uncaught {type(res.exception).__name__}: {res.exception}\n{out}")
    assert res.exit_code == code, f"exit {res.exit_code}, wanted {code}:\n{out}"
    assert "Traceback" not in out
    for n in names:
        assert str(n) in out, f"{n!r} not named in:\n{out}"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One saved JSON report of the H100 capture (for report/fleet cases)."""
    d = tmp_path_factory.mktemp("saved")
    res = invoke(gpu_validate, ["run", "--root", H100, "--format", "json", "-o", d / "r.json"])
    assert res.exit_code in (0, 1, 3)
    return d / "r.json"


@pytest.fixture
def afile(tmp_path):
    f = tmp_path / "plain-file"
    f.write_text("x")
    return f


# ---- output paths ------------------------------------------------------------------------------------

OUTPUT_CASES = [
    # (id, argv builder(tmp, afile, saved), path that must be named)
    ("run -o /sys", lambda t, f, s: ["run", "--root", H100, "-o", "/sys/x.json"], "/sys/x.json"),
    ("run -o FILE/x", lambda t, f, s: ["run", "--root", H100, "-o", f / "x.json"], "FILE"),
    ("run -o FILE/a/b/x", lambda t, f, s: ["run", "--root", H100, "-o", f / "a/b/x.json"], "FILE"),
    ("run --save /proc", lambda t, f, s: ["run", "--root", H100, "--save", "/proc/x.json"], "/proc/x.json"),
    ("run -o /dev/full", lambda t, f, s: ["run", "--root", H100, "-o", "/dev/full"], "/dev/full"),
    ("run -o /dev/null", lambda t, f, s: ["run", "--root", H100, "-o", "/dev/null"], "/dev/null"),
    ("run -o folder/", lambda t, f, s: ["run", "--root", H100, "-o", "/tmp/"], "/tmp"),
    ("run --save FILE/x.html", lambda t, f, s: ["run", "--root", H100, "--save", t / "ok.json", "--save", f / "x.html"], "FILE"),
    ("report -o /sys", lambda t, f, s: ["report", s, "-o", "/sys/r.html"], "/sys/r.html"),
    ("report -o FILE/x", lambda t, f, s: ["report", s, "--format", "html", "-o", f / "r.html"], "FILE"),
    ("fleet -o /proc", lambda t, f, s: ["fleet", s.parent, "-o", "/proc/fleet.txt"], "/proc/fleet.txt"),
    ("fleet --html FILE/x", lambda t, f, s: ["fleet", s.parent, "--html", f / "fleet.html"], "FILE"),
    ("capture /sys/x", lambda t, f, s: ["capture", "--no-commands", "/sys/snap"], "/sys/snap"),
    ("capture /proc/x", lambda t, f, s: ["capture", "--no-commands", "/proc/snap"], "/proc/snap"),
    ("capture FILE/x", lambda t, f, s: ["capture", "--no-commands", f / "snap"], "FILE"),
    ("capture existing", lambda t, f, s: ["capture", "--no-commands", f], "FILE"),
    ("bench -o /sys", lambda t, f, s: ["bench", "bandwidth", "-o", "/sys/b.json"], "/sys/b.json"),
    ("bench --out-dir FILE", lambda t, f, s: ["bench", "bandwidth", "--out-dir", f / "d"], "FILE"),
    ("bench --save /proc", lambda t, f, s: ["bench", "gemm", "--save", "/proc/b.html"], "/proc/b.html"),
]


@pytest.mark.parametrize("case,argv,named", OUTPUT_CASES, ids=[c[0] for c in OUTPUT_CASES])
def test_unwritable_output_is_exit_2_before_any_work(tmp_path, afile, saved, case, argv, named):
    before = sorted(p.name for p in tmp_path.iterdir())
    res = invoke(gpu_validate, argv(tmp_path, afile, saved))
    assert_clean(res, 2, [afile if named == "FILE" else named])
    assert any(w in res.output for w in ("cannot write", "already exists", "is a directory"))
    # nothing written next to it: not the good --save either (the paths are checked before the run)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert afile.read_text() == "x"


def test_output_through_a_symlink_writes_the_target(tmp_path, saved):
    real = tmp_path / "real.txt"
    real.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    res = invoke(gpu_validate, ["report", saved, "--format", "text", "-o", link])
    assert_clean(res, 3)  # report exits with the saved report's verdict (warnings), as run does
    assert link.is_symlink() and "gpu." in real.read_text()


def test_missing_parent_folders_are_created(tmp_path, saved):
    out = tmp_path / "a" / "b" / "r.json"
    res = invoke(gpu_validate, ["report", saved, "--format", "json", "-o", out])
    assert_clean(res, 3)
    assert json.loads(out.read_text())["schema_version"] == 1


# ---- files given to either CLI: every hostile content, every reader ------------------------------------------

from test_hostile_files import HOSTILE_CONTENT  # noqa: E402  (one corpus of contents for loaders and CLIs)

FILE_COMMANDS = [
    # (id, cli, argv with {f} for the hostile file, documented exit status when the file is bad)
    ("gpuforge matrix --config", gpuforge, ["matrix", "--config", "{f}"]),
    ("gpuforge build drivers --config", gpuforge, ["build", "drivers", "--config", "{f}", "--only", "no-such-cell"]),
    ("gpuforge build images DEF", gpuforge, ["build", "images", "{f}"]),
    ("gpuforge compat --catalog", gpuforge, ["compat", "--gpu", "H100", "--catalog", "{f}"]),
    ("gpu-validate run --profile", gpu_validate, ["run", "--root", H100, "--profile", "{f}"]),
    ("gpu-validate report", gpu_validate, ["report", "{f}"]),
    ("gpu-validate detect --catalog", gpu_validate, ["detect", "--root", H100, "--catalog", "{f}"]),
    ("gpu-validate baselines --catalog", gpu_validate, ["baselines", "list", "--catalog", "{f}"]),
]


MAY_LOAD = {"crlf-cr-only"}


def _argv(argv, f):
    return [str(a).replace("{f}", str(f)) for a in argv]


@pytest.mark.parametrize("cmd,cli,argv", FILE_COMMANDS, ids=[c[0] for c in FILE_COMMANDS])
@pytest.mark.parametrize("case,content", HOSTILE_CONTENT, ids=[c for c, _ in HOSTILE_CONTENT])
def test_hostile_file_to_cli_is_exit_2(tmp_path, cmd, cli, argv, case, content):
    f = tmp_path / f"{case}.yaml"
    f.write_bytes(content)
    res = invoke(cli, _argv(argv, f))
    if case in MAY_LOAD and res.exit_code != 2:  # a well-formed file after all (old Mac line ends are YAML)
        assert_clean(res, res.exit_code)
        return
    assert_clean(res, 2, [f.name])


# ---- odd arguments: exit 2 with a message that says what is wrong -------------------------------------------

USAGE_CASES = [
    # (id, cli, argv ({t} = a temp folder holding 'f' (a file), 'fifo', 'bad.yaml', 'list.yaml'), text in output)
    ("run --root FILE", gpu_validate, ["run", "--root", "{t}/f"], "is a file"),
    ("run --expect ,", gpu_validate, ["run", "--root", H100, "--expect", ","], "COUNTxMODEL"),
    ("run --expect huge", gpu_validate, ["run", "--root", H100, "--expect", "99999999999999999999xH100"], "out of range"),
    ("run --expect 8x", gpu_validate, ["run", "--root", H100, "--expect", "8x"], "known GPUs"),
    ("run --expect escape", gpu_validate, ["run", "--root", H100, "--expect", "\x1b[2J"], "known GPUs"),
    ("run --profile NUL", gpu_validate, ["run", "--root", H100, "--profile", "gpu-performance\x00"], "known"),
    ("run --profile FIFO", gpu_validate, ["run", "--root", H100, "--profile", "{t}/fifo"], "FIFO"),
    ("run --profile DIR", gpu_validate, ["run", "--root", H100, "--profile", "{t}"], "directory"),
    ("run --save empty", gpu_validate, ["run", "--root", H100, "--save", ""], "cannot tell the format"),
    ("run --save FILE/x.json", gpu_validate, ["run", "--root", H100, "--save", "{t}/f/x.json"], "not a folder"),
    ("run --check [", gpu_validate, ["run", "--root", H100, "--check", "["], "no check has this id"),
    ("run --check other group", gpu_validate, ["run", "--root", H100, "--group", "cpu", "--check", "gpu.count"],
     "not in --group"),
    ("detect --catalog bad", gpu_validate, ["detect", "--root", H100, "--catalog", "{t}/bad.yaml"], "UTF-8"),
    ("detect --catalog FIFO", gpu_validate, ["detect", "--root", H100, "--catalog", "{t}/fifo"], "FIFO"),
    ("detect --cuda abc", gpu_validate, ["detect", "--root", H100, "--cuda", "abc"], "known"),
    ("report FIFO", gpu_validate, ["report", "{t}/fifo"], "FIFO"),
    ("report DIR", gpu_validate, ["report", "{t}"], "directory"),
    ("fleet FILE", gpu_validate, ["fleet", "{t}/f"], "is a file"),
    ("fleet FIFO", gpu_validate, ["fleet", "{t}/fifo"], "not a directory"),
    ("fleet empty", gpu_validate, ["fleet", "{t}/empty"], "no *.json reports"),
    ("baselines --catalog list", gpu_validate, ["baselines", "list", "--catalog", "{t}/list.yaml"], "mapping"),
    ("baselines info typo", gpu_validate, ["baselines", "info", "H1000"], "did you mean"),
    ("drivers rollback --to escape", gpu_validate,
     ["drivers", "rollback", "--root", H100, "--kernel", "6.1.0-54-cloud-amd64", "--to", "\x1b", "--dry-run"],
     "drivers list"),
    ("bench nccl --ops", gpu_validate, ["bench", "nccl", "--ops", "nonsense"], "unknown nonsense"),
    ("bench nccl --min-bytes 1Z", gpu_validate, ["bench", "nccl", "--min-bytes", "1Z"], "not a size"),
    ("matrix --config FIFO", gpuforge, ["matrix", "--config", "{t}/fifo"], "/fifo"),
    ("matrix --config list", gpuforge, ["matrix", "--config", "{t}/list.yaml"], "mapping"),
    ("compat --gpu empty", gpuforge, ["compat", "--gpu", ""], "known GPUs"),
    ("compat --cuda x.y", gpuforge, ["compat", "--gpu", "H100", "--cuda", "x.y"], "known"),
    ("compat --gpu escape", gpuforge, ["compat", "--gpu", "\x1b[2J"], "known GPUs"),
    ("compat --catalog DIR", gpuforge, ["compat", "--gpu", "H100", "--catalog", "{t}"], "gpus.yaml"),
    ("build images list", gpuforge, ["build", "images", "{t}/list.yaml"], "mapping"),
    ("build images empty name", gpuforge, ["build", "images", ""], "known images"),
    ("build images path escape", gpuforge, ["build", "images", "../../etc/passwd"], "known images"),
    ("build drivers --shard", gpuforge, ["build", "drivers", "--shard", "0/0"], "--shard"),
    ("build drivers bad config", gpuforge, ["build", "drivers", "--config", "{t}/bad.yaml"], "UTF-8"),
    ("bench nccl --min-bytes -5", gpu_validate, ["bench", "nccl", "--min-bytes", "-5"], "--min-bytes"),
    ("bench nccl --min-bytes 0", gpu_validate, ["bench", "nccl", "--min-bytes", "0"], "--min-bytes"),
    ("bench nccl --min-bytes infG", gpu_validate, ["bench", "nccl", "--min-bytes", "infG"], "not a size"),
    ("bench nccl min > max", gpu_validate, ["bench", "nccl", "--min-bytes", "1G", "--max-bytes", "1M"],
     "--min-bytes 1 GiB is above --max-bytes 1 MiB"),
    ("bench nccl min > default max", gpu_validate, ["bench", "nccl", "--min-bytes", "64G"], "above --max-bytes 8 GiB"),
    ("bench nccl --short min > max", gpu_validate, ["bench", "nccl", "--short", "--min-bytes", "16G"], "--max-bytes"),
]

# Every option naming an input file: a FIFO is named as one (never opened: it would block), not "missing".
FIFO_CASES = [
    ("matrix --config", gpuforge, ["matrix", "--config", "{fifo}"]),
    ("build drivers --config", gpuforge, ["build", "drivers", "--config", "{fifo}"]),
    ("build containers --config", gpuforge, ["build", "containers", "--config", "{fifo}"]),
    ("publish --config", gpuforge, ["publish", "--dist", "{t}/empty", "--config", "{fifo}"]),
    ("slurm render --config", gpuforge, ["slurm", "render", "--shards", "2", "--dist", "{t}/empty", "--config", "{fifo}"]),
    ("build images DEF", gpuforge, ["build", "images", "{fifo}"]),
    ("compat --catalog", gpuforge, ["compat", "--gpu", "H100", "--catalog", "{fifo}"]),
    ("run --profile", gpu_validate, ["run", "--root", H100, "--profile", "{fifo}"]),
    ("detect --catalog", gpu_validate, ["detect", "--root", H100, "--catalog", "{fifo}"]),
    ("baselines list --catalog", gpu_validate, ["baselines", "list", "--catalog", "{fifo}"]),
    ("report FILE", gpu_validate, ["report", "{fifo}"]),
    ("drivers install --deb", gpu_validate, ["drivers", "install", "--dry-run", "--method", "precompiled", "--deb",
                                             "{fifo}"]),
]


@pytest.mark.parametrize("case,cli,argv", FIFO_CASES, ids=[c[0] for c in FIFO_CASES])
def test_a_fifo_as_an_input_file_is_named_as_one(odd_dir, case, cli, argv):
    fifo = odd_dir / "pipe.yaml"  # a YAML name: `build images` takes any other name for an image's name
    os.mkfifo(fifo)
    res = invoke(cli, [str(a).replace("{fifo}", str(fifo)).replace("{t}", str(odd_dir)) for a in argv])
    assert_clean(res, 2, [str(fifo), "FIFO"])
    assert "does not exist" not in res.output


@pytest.mark.parametrize("what", ["fifo", "empty"])
def test_gpuforge_config_env_naming_a_fifo_or_folder(odd_dir, monkeypatch, what):
    monkeypatch.chdir(odd_dir / "empty")  # no ./matrix.yaml to take first
    res = CliRunner(env={"GPUFORGE_CONFIG": str(odd_dir / what)}).invoke(gpuforge, ["matrix"])
    assert_clean(res, 2, ["$GPUFORGE_CONFIG", str(odd_dir / what), "FIFO" if what == "fifo" else "directory"])


@pytest.fixture
def odd_dir(tmp_path):
    import os
    (tmp_path / "f").write_text("x")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "bad.yaml").write_bytes(b"\xff\xfe")
    (tmp_path / "list.yaml").write_text("- a\n")
    (tmp_path / "empty").mkdir()
    return tmp_path


@pytest.mark.parametrize("case,cli,argv,says", USAGE_CASES, ids=[c[0] for c in USAGE_CASES])
def test_odd_arguments_are_exit_2(odd_dir, case, cli, argv, says):
    res = invoke(cli, [str(a).replace("{t}", str(odd_dir)) for a in argv])
    assert_clean(res, 2, [says])
    assert "\x1b[2J" not in res.output  # a value echoed back is escaped


# ---- numbers on the command line: one bounded, finite type for every numeric option ------------------------

import click  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from validator.clibase import ByteSize, FloatIn, IntIn  # noqa: E402


def _commands(cli, path=()):
    ctx = click.Context(cli)
    for name in cli.list_commands(ctx):
        cmd = cli.get_command(ctx, name)
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, path + (name,))
        else:
            yield path + (name,), cmd


def _numeric_options():
    """(cli, subcommand path, option) for every option of both CLIs that takes a number or a byte size."""
    out = []
    for cli in (gpuforge, gpu_validate):
        for path, cmd in _commands(cli):
            for p in cmd.params:
                if isinstance(p, click.Option) and isinstance(p.type, (click.types.IntParamType,
                                                                        click.types.FloatParamType, ByteSize)):
                    out.append((cli, path, p))
    return out


NUMERIC = _numeric_options()


def test_every_numeric_option_uses_the_bounded_finite_types():
    assert len(NUMERIC) >= 25  # both CLIs' counts, timeouts, ports and sizes were found
    loose = [f"{' '.join(path)} {p.opts[-1]}: {p.type!r}" for _, path, p in NUMERIC
             if not isinstance(p.type, (FloatIn, IntIn, ByteSize)) or p.type.min is None or p.type.max is None]
    assert loose == []


def _bad_values(t) -> list:
    if isinstance(t, ByteSize):
        return ["-5", "0", str(t.max + 1), "nanM", "infG", "1e3", "", "2Z"]
    if isinstance(t, FloatIn):
        return ["nan", "NaN", "inf", "-inf", "1e999", str(t.min - 1), str(t.max + 1), "", "x"]
    return [str(t.min - 1), str(t.max + 1), "nan", "inf", "1.5", "1e3", "9" * 5000, ""]


@pytest.mark.parametrize("cli,path,opt", NUMERIC, ids=[f"{' '.join(p)} {o.opts[-1]}" for _, p, o in NUMERIC])
def test_out_of_range_or_non_finite_numbers_are_exit_2_naming_the_option(cli, path, opt):
    for value in _bad_values(opt.type):
        res = invoke(cli, [*path, opt.opts[-1], value])
        assert_clean(res, 2, [opt.opts[-1]])
        assert "Invalid value" in res.output, (value, res.output)


def test_cuda_timeout_nan_is_refused():
    for value in ("nan", "inf", "-1", "0"):
        res = invoke(gpu_validate, ["run", "--root", H100, "--cuda-timeout", value])
        assert_clean(res, 2, ["--cuda-timeout"])


@settings(max_examples=200, deadline=None)
@given(x=st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12).map(lambda s: s))
def test_float_type_returns_a_finite_value_in_range_or_fails_cleanly(x):
    t = FloatIn(1, 3600)
    try:
        v = t.convert(str(x), None, None)
    except click.BadParameter:
        return
    assert isinstance(v, float) and 1 <= v <= 3600


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=12) | st.from_regex(r"-?[0-9]{0,20}(\.[0-9]{0,3})?[kKmMgGtT]?(i?[bB])?", fullmatch=True))
def test_size_type_returns_bytes_in_range_or_fails_cleanly(text):
    t = ByteSize(1, 1 << 40)
    try:
        v = t.convert(text, None, None)
    except click.BadParameter:
        return
    assert isinstance(v, int) and 1 <= v <= 1 << 40
