"""Corrupt builder state (cache entries, shard records, the apt repo's state marker, image manifests): a cache
entry or marker the builder wrote itself is a miss with a warning (built again); a shard record, or an entry a
shard claims, is an exit-2 error naming the file before anything is published. A FIFO never blocks a read."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builder import aptrepo, publish
from builder.cache import Artifact, CacheEntry, CacheStatus, Store
from builder.cli import main as gpuforge
from builder.commands.build_packer import base_checksum
from builder.images import build as image_build
from builder.shard import Shard
from test_builder_scaleout import _shard
from test_hostile_files import HOSTILE_CONTENT
from validator import driver_container
from validator.errors import ConfigError, GpuforgeError

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)

# Entries of the right shape with one field wrong: each must be refused, never half-trusted.
ENTRY = {"name": "c", "key": "K", "inputs": {}, "status": "built",
         "artifacts": [{"path": "apt/pool/c.deb", "size": 1, "sha256": "0" * 64}]}
BAD_ENTRIES = [
    ("no key", {k: v for k, v in ENTRY.items() if k != "key"}),
    ("status unknown", dict(ENTRY, status="maybe")),
    ("artifacts not a list of objects", dict(ENTRY, artifacts=["apt/pool/c.deb"])),
    ("size a word", dict(ENTRY, artifacts=[dict(ENTRY["artifacts"][0], size="big")])),
    ("absolute artifact path", dict(ENTRY, artifacts=[dict(ENTRY["artifacts"][0], path="/etc/shadow")])),
    ("artifact path leaves the store", dict(ENTRY, artifacts=[dict(ENTRY["artifacts"][0], path="../../x.deb")])),
    ("log path leaves the store", dict(ENTRY, log="../../../etc/passwd")),
    ("steps a list", dict(ENTRY, steps=[1, 2])),
    ("seconds infinite", dict(ENTRY, seconds="inf")),
    ("inputs a number", dict(ENTRY, inputs=7)),
]


def _special(path: Path, kind: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dir":
        path.mkdir()
    else:  # a sparse gigabyte: over every cap, refused by its size before a byte is read
        path.write_bytes(b"{}")
        os.truncate(path, 1 << 30)
    return path


# ---- cache entries: a miss with a warning ---------------------------------------------------------------------

@pytest.mark.parametrize("case,content", HOSTILE_CONTENT + [(c, json.dumps(d).encode()) for c, d in BAD_ENTRIES],
                         ids=[c for c, _ in HOSTILE_CONTENT] + [c for c, _ in BAD_ENTRIES])
def test_corrupt_cache_entry_is_a_miss_with_a_warning(tmp_path, caplog, case, content):
    store = Store(tmp_path)
    store.path("c").parent.mkdir(parents=True)
    store.path("c").write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="gpuforge.cache"):
        assert store.read("c") is None and store.hit("c", "K") is None and list(store.entries()) == []
    assert str(store.path("c")) in caplog.text and "cache miss" in caplog.text
    with pytest.raises(ConfigError) as e:
        store.load("c")
    assert e.value.exit_code == 2 and str(store.path("c")) in str(e.value)


@pytest.mark.parametrize("kind", ["fifo", "dir", "huge"])
def test_special_cache_entry_never_blocks(tmp_path, caplog, kind):
    store = Store(tmp_path)
    _special(store.path("c"), kind)
    with caplog.at_level(logging.WARNING, logger="gpuforge.cache"):
        assert store.read("c") is None
    assert str(store.path("c")) in caplog.text


def test_absent_entry_is_a_quiet_miss_and_a_written_one_reads_back(tmp_path, caplog):
    store = Store(tmp_path)
    with caplog.at_level(logging.WARNING):
        assert store.read("c") is None and store.load("c") is None
    assert caplog.text == ""
    (tmp_path / "apt/pool").mkdir(parents=True)
    (tmp_path / "apt/pool/c.deb").write_bytes(b"x")
    entry = CacheEntry("c", "K", {"a": 1}, CacheStatus.BUILT, (Artifact.record(tmp_path, "apt/pool/c.deb"),))
    store.write(entry)
    assert store.read("c") == entry and store.hit("c", "K") == entry


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=JSON_VALUES)
def test_any_json_as_a_cache_entry_is_an_entry_or_a_miss(tmp_path, value):
    store = Store(tmp_path)
    store.path("c").parent.mkdir(parents=True, exist_ok=True)
    store.path("c").write_text(json.dumps(value))
    e = store.read("c")
    assert e is None or isinstance(e, CacheEntry)
    if e is not None:  # whatever was accepted stays inside the store
        assert all(not a.path.startswith("/") and ".." not in Path(a.path).parts for a in e.artifacts)


# ---- shard records and the entries they claim: exit 2 before anything is published ---------------------------

def _record_path(dist: Path, i: int = 1, n: int = 1) -> Path:
    return publish.shard_dir(dist, Shard(i, n, "t")) / publish.RECORD


BAD_RECORDS = [
    ("index 0", {"index": 0, "count": 1, "plan": "P", "cells": [], "failed": []}, "index"),
    ("index above count", {"index": 3, "count": 2, "plan": "P", "cells": [], "failed": []}, "index"),
    ("count a word", {"index": 1, "count": "one", "plan": "P", "cells": [], "failed": []}, "count"),
    ("cells a string", {"index": 1, "count": 1, "plan": "P", "cells": "a,b", "failed": []}, "cells"),
    ("cell a number", {"index": 1, "count": 1, "plan": "P", "cells": [1], "failed": []}, "cells[0]"),
    ("no plan", {"index": 1, "count": 1, "cells": [], "failed": []}, "plan"),
    ("host a list", {"index": 1, "count": 1, "plan": "P", "cells": [], "failed": [], "host": []}, "host"),
]


@pytest.mark.parametrize("case,content", HOSTILE_CONTENT + [(c, json.dumps(d).encode()) for c, d, _ in BAD_RECORDS],
                         ids=[c for c, _ in HOSTILE_CONTENT] + [c for c, _, _ in BAD_RECORDS])
def test_corrupt_shard_record_is_exit_2_naming_it(tmp_path, case, content):
    rec = _record_path(tmp_path)
    rec.parent.mkdir(parents=True)
    rec.write_bytes(content)
    with pytest.raises(GpuforgeError) as e:
        publish.collect(tmp_path)
    assert e.value.exit_code == 2 and str(rec) in str(e.value)
    key = dict((c, k) for c, _, k in BAD_RECORDS).get(case)
    assert key is None or key in str(e.value)
    assert not (tmp_path / "apt").exists()


@pytest.mark.parametrize("kind,says", [("fifo", "FIFO"), ("dir", "directory")])
def test_special_shard_record_is_named_not_taken_for_unfinished(tmp_path, kind, says):
    rec = _special(_record_path(tmp_path), kind)
    with pytest.raises(GpuforgeError, match=says) as e:
        publish.collect(tmp_path)
    assert str(rec) in str(e.value)


@pytest.mark.parametrize("content", [b"{", b"[]", json.dumps(BAD_ENTRIES[4][1]).encode()], ids=["syntax", "list", "abs-path"])
def test_corrupt_entry_a_shard_claims_stops_the_merge(tmp_path, content):
    _shard(tmp_path, 1, 1, {"a": b"A"})
    f = Store(publish.shard_dir(tmp_path, Shard(1, 1, "t"))).path("a")
    f.write_bytes(content)
    with pytest.raises(ConfigError) as e:
        publish.collect(tmp_path)
    assert str(f) in str(e.value)


def test_publish_cli_with_a_corrupt_record_is_exit_2(tmp_path):
    rec = _record_path(tmp_path)
    rec.parent.mkdir(parents=True)
    rec.write_text('{"index": 1, "count": 1, "plan": "P", "cells": {}, "failed": []}')
    res = CliRunner().invoke(gpuforge, ["publish", "--dist", str(tmp_path)])
    assert res.exit_code == 2 and str(rec) in res.output and "cells" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "apt").exists()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=JSON_VALUES)
def test_any_json_as_a_shard_record_is_a_record_or_exit_2(tmp_path, value):
    rec = _record_path(tmp_path)
    rec.parent.mkdir(parents=True, exist_ok=True)
    rec.write_text(json.dumps(value))
    try:
        r = publish.ShardRecord.read(rec)
    except ConfigError as e:
        assert str(rec) in str(e)
    else:
        assert 1 <= r.index <= r.count and all(isinstance(c, str) for c in r.cells + r.failed)


# ---- the apt repo's state marker and image manifests: rebuilt, with a warning ---------------------------------

@pytest.mark.parametrize("case,content", HOSTILE_CONTENT[:12] + [("list", b"[]"), ("huge", None), ("fifo", None)],
                         ids=[c for c, _ in HOSTILE_CONTENT[:12]] + ["list", "huge", "fifo"])
def test_corrupt_repo_state_republishes_with_a_warning(tmp_path, caplog, case, content):
    state = tmp_path / "dists" / aptrepo.STATE_FILE
    if content is None:
        _special(state, case)
    else:
        state.parent.mkdir(parents=True)
        state.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="gpuforge.aptrepo"):
        assert aptrepo.is_current(tmp_path, "gpuforge", None) is False
    assert str(state) in caplog.text


def test_repo_state_as_published_is_current(tmp_path):
    (tmp_path / "dists/gpuforge").mkdir(parents=True)
    (tmp_path / "dists/gpuforge/Release").write_text("x")
    (tmp_path / "dists" / aptrepo.STATE_FILE).write_text(json.dumps(aptrepo.desired_state(tmp_path, None)))
    assert aptrepo.is_current(tmp_path, "gpuforge", None) is True


@pytest.mark.parametrize("content", [b"\xff\xfe", b"[1]", b'{"files": "x"}', b'{"image": NaN}', None],
                         ids=["binary", "list", "files-string", "nan", "fifo"])
def test_corrupt_image_manifest(tmp_path, caplog, content):
    m = tmp_path / "images/default/manifest.json"
    if content is None:
        _special(m, "fifo")
    else:
        m.parent.mkdir(parents=True)
        m.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="gpuforge.images"):
        entry = image_build.manifest_entry(m.parent)
    assert entry is None  # the image is built again
    if content != b'{"files": "x"}':  # an object of the wrong fields is a plain miss
        assert str(m) in caplog.text
    # packer's base checksum refuses to guess from a manifest it cannot read
    if content in (b"\xff\xfe", b"[1]", b'{"files": "x"}', None):
        with pytest.raises(ConfigError) as e:
            base_checksum(m.parent / "default.qcow2")
        assert str(m) in str(e.value)


def test_packer_base_checksum_from_a_good_manifest(tmp_path):
    base = tmp_path / "images/default/default.qcow2"
    assert base_checksum(base) == "none"  # no image built yet
    base.parent.mkdir(parents=True)
    (base.parent / "manifest.json").write_text(json.dumps({"files": {"default.qcow2": {"sha256": "ab" * 32}}}))
    assert base_checksum(base) == "sha256:" + "ab" * 32
    (base.parent / "manifest.json").write_text(json.dumps({"files": {"default.raw": {"sha256": "ab" * 32}}}))
    assert base_checksum(base) == "none"  # only another format was built


@pytest.mark.parametrize("content", [b"[]", b"{", b"\x00", None], ids=["list", "syntax", "nul", "fifo"])
def test_driver_container_state_unreadable_is_none(tmp_path, content):
    p = tmp_path / driver_container.STATE
    if content is None:
        _special(p, "fifo")
    else:
        p.parent.mkdir(parents=True)
        p.write_bytes(content)
    assert driver_container.read_state(tmp_path) is None
