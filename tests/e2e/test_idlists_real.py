"""Download the real nvidia-detect with apt and prove the parser on it (needs deb.debian.org)."""

from __future__ import annotations

import pytest

from builder.idlists import fetch_versions
from validator.idlists import lists_for_driver, read_set

pytestmark = pytest.mark.e2e


def test_real_nvidia_detect_535(tmp_path):
    (r,) = fetch_versions(["535.261.03"], out_dir=tmp_path)
    s = read_set(r.path)
    assert s.package_version.startswith("535.261.03") and s.suite == "bookworm"
    dl = lists_for_driver("535.261.03", (s,))
    assert 0x2330 in dl.proprietary and 0x2330 in s.get("nvidia-tesla-535")
    assert 0x2330 not in dl.open
    assert {0x20B0, 0x20B2, 0x27B8} <= dl.open.ids
    for lst in s.lists:
        assert 0x2335 not in lst and 0x2901 not in lst, lst.name
    assert len(dl.proprietary.ids) > 300 and s.get("nvidia-tesla-470") is not None


def test_shipped_data_matches_archive(tmp_path):
    """The lists in validator/data/idlists are exactly what the archive's packages hold."""
    from validator.idlists import IDLISTS_DIR

    for r in fetch_versions(["535.261.03", "550.163.01"], out_dir=tmp_path):
        assert read_set(r.path).lists == read_set(IDLISTS_DIR / r.path.name).lists
