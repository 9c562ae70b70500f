"""Hostile files given to every loader of user-named YAML/JSON: each ends as an exit-2 error naming the file.

Never a traceback (an exception other than GpuforgeError), never a hang on a FIFO, never memory blown by aliases.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from validator import userfile
from validator.errors import GpuforgeError

_counter = itertools.count()


def _laughs(levels: int = 9) -> bytes:
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return ("\n".join(lines) + "\n").encode()


# (id, content): bytes no loader may choke on
HOSTILE_CONTENT = [
    ("utf16-bom", b"\xff\xfe"),
    ("latin1", "name: caf\xe9\n".encode("latin-1")),
    ("nul-bytes", b"name: x\x00\x00\n"),
    ("elf-header", b"\x7fELF\x02\x01\x01" + bytes(range(256))),
    ("empty", b""),
    ("only-comment", b"# nothing\n"),
    ("top-list", b"- a\n- b\n"),
    ("top-int", b"42\n"),
    ("top-string", b"just a sentence\n"),
    ("top-null", b"~\n"),
    ("syntax", b"name: [\n"),
    ("tab-indent", b"a:\n\tb: 1\n"),
    ("bad-date", b"a: 2020-13-45\n"),
    ("unhashable-key", b"{[1, 2]: 3}\n"),
    ("python-tag", b"!!python/object/apply:os.system ['true']\n"),
    ("unknown-tag", b"a: !vault abc\n"),
    ("binary-tag", b"a: !!binary AAAA\n"),
    ("inf", b"a: .inf\nb: 1e999\n"),
    ("flow-deep", b"[" * 5000 + b"]" * 5000),
    ("block-deep", "".join("  " * i + "a:\n" for i in range(300)).encode() + b"  " * 300 + b"1\n"),
    ("self-alias", b"&a [*a]\n"),
    ("self-alias-map", b"&a {b: *a}\n"),
    ("billion-laughs", _laughs()),
    ("undefined-alias", b"a: *nope\n"),
    ("merge-non-map", b"a: &a 3\nb:\n  <<: *a\n"),
    ("duplicate-anchor-json", b'{"a": 1, "a": [1, 2, {"b": NaN}]}'),
    ("json-deep", b"[" * 200000 + b"]" * 200000),
    ("json-nan", b'{"schema_version": 1, "duration_s": NaN}'),
    ("json-bigint", b'{"a": ' + b"9" * 5000 + b"}"),
    ("crlf-cr-only", b"name: x\rsysctl:\r  a.b: 1\r"),
    ("long-line", b"name: " + b"x" * 300000 + b"\n"),
    ("bom-utf8", b"\xef\xbb\xbf- a\n"),
    ("surrogate", b"name: \xed\xa0\x80\n"),
]


def _loaders(tmp: Path):
    """(id, function(path)) for every loader of a file a user can name."""
    from builder import config as bconfig
    from builder.images import definition, refs
    from validator import catalog, idlists, schema, tuning
    from validator.report import model

    def tuning_via_refs(p: Path):
        d = p.parent
        return refs.load_tuning(d, p.stem)

    return [
        ("schema.load_yaml", schema.load_yaml),
        ("tuning.load_profile", tuning.load_profile),
        ("catalog.load_catalog", catalog.load_catalog),
        ("idlists.read_set", idlists.read_set),
        ("builder.load_matrix", bconfig.load_matrix),
        ("builder.load_driver", bconfig.load_driver),
        ("builder.load_kernel", bconfig.load_kernel),
        ("images.load_image_file", definition.load_image_file),
        ("images.refs.load_tuning", tuning_via_refs),
        ("report.load_report", model.load_report),
        ("userfile.load_json", userfile.load_json),
    ]


LOADER_IDS = [name for name, _ in _loaders(Path("/"))]


def _loader(name: str, tmp: Path):
    return dict(_loaders(tmp))[name]


def _unique(tmp: Path, suffix: str = ".yaml") -> Path:
    # a unique name per case: the catalog loader caches by path
    d = tmp / f"case{next(_counter)}"
    d.mkdir()
    return d / f"f{suffix}"


def assert_clean_error(fn, path: Path):
    """fn(path) either loads or raises an exit-2 GpuforgeError naming the file; nothing else escapes."""
    try:
        fn(path)
    except GpuforgeError as e:
        assert e.exit_code == 2, f"{type(e).__name__} exit {e.exit_code}: {e}"
        assert str(path) in str(e) or str(path.resolve()) in str(e), f"error does not name {path}: {e}"
        assert "Traceback" not in str(e)
        return e
    return None


@pytest.mark.parametrize("loader", LOADER_IDS)
@pytest.mark.parametrize("case,content", HOSTILE_CONTENT, ids=[c for c, _ in HOSTILE_CONTENT])
def test_hostile_content_is_a_clean_error(tmp_path, loader, case, content):
    p = _unique(tmp_path)
    p.write_bytes(content)
    err = assert_clean_error(_loader(loader, tmp_path), p)
    if case in ("utf16-bom", "latin1", "nul-bytes", "elf-header", "billion-laughs", "self-alias", "flow-deep",
                "json-deep", "surrogate"):
        assert err is not None, f"{loader} accepted {case}"


def _special_files(tmp: Path):
    fifo = tmp / "fifo.yaml"
    os.mkfifo(fifo)
    loop = tmp / "loop.yaml"
    os.symlink(loop, loop)
    dangling = tmp / "dangling.yaml"
    os.symlink(tmp / "nowhere", dangling)
    sub = tmp / "dir.yaml"
    sub.mkdir()
    (sub / "gpus.yaml").mkdir()  # the catalog accepts a folder holding gpus.yaml: make that one a folder too
    return {"fifo": fifo, "symlink-loop": loop, "dangling-symlink": dangling, "directory": sub,
            "missing": tmp / "missing.yaml", "dev-null": Path("/dev/null"), "dev-zero": Path("/dev/zero"),
            "proc-dir": Path("/proc/self"), "nul-in-name": Path(str(tmp / "a") + "\0b.yaml")}


SPECIAL = ["fifo", "symlink-loop", "dangling-symlink", "directory", "missing", "dev-null", "dev-zero", "proc-dir",
           "nul-in-name"]


@pytest.mark.parametrize("loader", LOADER_IDS)
@pytest.mark.parametrize("kind", SPECIAL)
def test_special_files_never_block_or_crash(tmp_path, loader, kind):
    p = _special_files(tmp_path)[kind]
    fn = _loader(loader, tmp_path)
    try:
        fn(p)
    except GpuforgeError as e:
        assert e.exit_code == 2
        if kind != "nul-in-name":
            assert str(p) in str(e) or "gpus.yaml" in str(e) or "no such" in str(e) or "not found" in str(e), str(e)
        return
    except ValueError as e:  # only os.stat-style calls before ours may say "embedded null byte"
        pytest.fail(f"{loader} on {kind}: {type(e).__name__}: {e}")
    pytest.fail(f"{loader} accepted {kind}")


def test_size_cap_counts_bytes_read_not_the_size_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(userfile, "MAX_BYTES", 1000)
    big = tmp_path / "big.yaml"
    big.write_bytes(b"a: " + b"x" * 2000 + b"\n")
    with pytest.raises(userfile.UnreadableFile, match="at most 1000 bytes"):
        userfile.read_text(big)
    # /proc files report st_size 0: the cap still holds while reading
    with pytest.raises(userfile.UnreadableFile, match="holds more"):
        userfile.read_bytes("/proc/self/maps", max_bytes=10)


def test_unreadable_file_names_reason(tmp_path):
    p = tmp_path / "secret.yaml"
    p.write_text("a: 1\n")
    p.chmod(0)
    if os.access(p, os.R_OK):
        pytest.skip("running as root: permissions do not stop reads")
    with pytest.raises(userfile.UnreadableFile, match="Permission denied"):
        userfile.read_text(p)


def test_shapes_that_real_files_have_still_load(tmp_path):
    from validator.schema import load_yaml
    p = tmp_path / "ok.yaml"
    p.write_bytes(b"\xef\xbb\xbfbase: &b {x: 1}\nuse: *b\nlist: [*b, *b]\n")
    assert load_yaml(p) == {"base": {"x": 1}, "use": {"x": 1}, "list": [{"x": 1}, {"x": 1}]}
    # every shipped YAML file loads under the bounds
    repo = Path(__file__).resolve().parents[2]
    shipped = [f for d in ("validator/data", "kernels", "drivers", "images") for f in (repo / d).rglob("*.yaml")]
    shipped += [repo / "matrix.yaml", repo / "matrix-full.yaml"]
    assert len(shipped) > 10
    for f in shipped:
        load_yaml(f, mapping=False)


def test_fifo_read_returns_at_once(tmp_path):
    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    with pytest.raises(userfile.UnreadableFile, match="a FIFO"):
        userfile.read_bytes(fifo)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400), loader=st.sampled_from(LOADER_IDS))
def test_random_bytes_never_escape(tmp_path, data, loader):
    p = _unique(tmp_path)
    p.write_bytes(data)
    assert_clean_error(_loader(loader, tmp_path), p)


_yamlish = st.lists(st.sampled_from(
    ["a", ":", " ", "\n", "  ", "- ", "[", "]", "{", "}", ",", "&x ", "*x", "!!str ", "!!int ", "'", '"', "#", "|",
     ">", "? ", "name", "sysctl", "version", "1", "-1", "1e9", ".nan", "~", "true", "2020-13-01", "\t", "\\", "%YAML 1.1\n",
     "---\n", "...\n", "<<: ", "\x1b[31m", "\u2028"]), max_size=60).map("".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=_yamlish, loader=st.sampled_from(LOADER_IDS))
def test_random_yaml_like_text_never_escapes(tmp_path, text, loader):
    p = _unique(tmp_path)
    p.write_text(text, encoding="utf-8")
    assert_clean_error(_loader(loader, tmp_path), p)


# ---- numbers read from YAML: finite, everywhere ----------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(v=st.floats(allow_nan=True, allow_infinity=True) | st.integers() | st.booleans() | st.text(max_size=4),
       lo=st.none() | st.floats(-1e6, 0), hi=st.none() | st.floats(1, 1e6))
def test_reader_number_is_finite_in_range_or_names_file_and_key(v, lo, hi):
    from validator.schema import Reader

    r = Reader("cat.yaml", {"x": {"y": v}}).key("x").key("y")
    try:
        n = r.number(lo, hi)
    except GpuforgeError as e:
        assert e.exit_code == 2 and "cat.yaml" in str(e) and "x.y" in str(e)
        return
    assert math.isfinite(n) and (lo is None or n >= lo) and (hi is None or n <= hi)


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", ".NaN", "+.Inf"])
def test_non_finite_yaml_numbers_are_refused_in_the_catalog(tmp_path, value):
    from validator.catalog import DATA_DIR, load_catalog

    for f in ("gpus.yaml", "cuda.yaml", "baselines.yaml"):
        (tmp_path / f).write_bytes((DATA_DIR / f).read_bytes())
    text = (tmp_path / "gpus.yaml").read_text()
    field = re.search(r"^(\s+)tdp_w: [0-9.]+$", text, re.M)
    (tmp_path / "gpus.yaml").write_text(text[:field.start()] + f"{field.group(1)}tdp_w: {value}" + text[field.end():])
    with pytest.raises(GpuforgeError) as e:
        load_catalog(tmp_path / "gpus.yaml")
    assert "tdp_w" in str(e.value) and "finite" in str(e.value) and str(tmp_path / "gpus.yaml") in str(e.value)


@pytest.mark.parametrize("value", [".inf", ".nan", "-.inf"])
def test_non_finite_yaml_numbers_are_refused_in_a_tuning_profile(tmp_path, value):
    from validator.tuning import load_profile

    p = tmp_path / "p.yaml"
    p.write_text(f"name: p\ngpu:\n  max_temp_c: {value}\n")
    with pytest.raises(GpuforgeError) as e:
        load_profile(str(p))
    assert "gpu.max_temp_c" in str(e.value) and "finite" in str(e.value) and str(p) in str(e.value)


@pytest.mark.parametrize("content,top,says", [(b"[1]", dict, "a JSON array"), (b'{"a": 1}', list, "a JSON object"),
                                              (b"null", dict, "JSON null"), (b'"x"', list, "a JSON string"),
                                              (b"true", dict, "a JSON boolean"), (b"7", dict, "a JSON number")])
def test_load_json_checks_the_top_level_type(tmp_path, content, top, says):
    p = tmp_path / "state.json"
    p.write_bytes(content)
    with pytest.raises(GpuforgeError) as e:
        userfile.load_json(p, "state file", top=top)
    assert e.value.exit_code == 2 and str(p) in str(e.value) and says in str(e.value) and "state file" in str(e.value)


def test_kind_never_opens_what_it_names(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "f").write_text("x")
    assert [userfile.kind(tmp_path / n) for n in ("fifo", "f", "none")] + [userfile.kind(tmp_path)] == [
        "a FIFO", "a regular file", None, "a directory"]
