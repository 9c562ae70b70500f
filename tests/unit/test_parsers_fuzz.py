"""Fuzz the small parsers of this area: bad input is a typed error or None, never a crash."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from validator.catalog import load_catalog
from validator.errors import ConfigError, UserError
from validator.idlists import parse_ids


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_parse_ids_never_crashes(text):
    try:
        ids = parse_ids(text)
    except ConfigError:
        return
    assert all(0 <= i <= 0xFFFF for i in ids)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_find_is_a_model_or_a_user_error(name):
    cat = load_catalog()
    try:
        assert cat.find(name) in cat.models
    except UserError as e:
        assert e.exit_code == 2 and e.hint


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_nvrm_line_never_crashes(tmp_path_factory, text):
    from validator.detect import read_loaded_driver

    root = tmp_path_factory.mktemp("n")
    (root / "proc/driver/nvidia").mkdir(parents=True)
    (root / "proc/driver/nvidia/version").write_text(text, errors="replace")
    d = read_loaded_driver(root)
    assert d.version is None or d.version[:3].isdigit()
