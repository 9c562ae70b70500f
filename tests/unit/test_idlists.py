"""nvidia-detect ID lists: parser, YAML round trip, lookup per driver, the apt fetcher with a fake runner."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.idlists import FetchSettings, Fetcher, apt_options, parse_madison, pick_version, sources_list
from validator import subp
from validator.errors import ConfigError, UserError
from validator.idlists import build_set, classify, dump_set, lists_for_driver, load_all, parse_ids, read_set

TINY = "10DE2330\n10de20b0\n\n# a comment\n10DE27B8  \n"


def test_parse_tiny():
    assert parse_ids(TINY) == {0x2330, 0x20B0, 0x27B8}


def test_parse_bad_line_names_file_and_line():
    with pytest.raises(ConfigError) as e:
        parse_ids("10DE2330\nnot-an-id\n", source="nvidia.ids")
    assert "nvidia.ids" in str(e.value) and "line 2" in str(e.value)


def test_parse_skips_other_vendors():
    assert parse_ids("10DE2330\n80861234\n") == {0x2330}


@pytest.mark.parametrize(
    "name,branch,flavour",
    [("nvidia", 535, "proprietary"), ("nvidia-open", 535, "open"), ("nvidia-tesla-470", 470, "proprietary"),
     ("nvidia-legacy-390xx", 390, "proprietary"), ("nvidia-legacy-390xx-amd64", 390, "proprietary"),
     ("something-else", None, "proprietary")],
)
def test_classify(name, branch, flavour):
    assert classify(name, 535) == (branch, flavour)


def _tiny_set():
    return build_set(
        {"nvidia.ids": TINY, "nvidia-open.ids": "10DE20B0\n10DE27B8\n", "nvidia-tesla-470.ids": "10DE20B0\n"},
        "535.261.03", "535.261.03-1", "bookworm",
    )


def test_roundtrip(tmp_path):
    s = _tiny_set()
    p = tmp_path / "535.261.03.yaml"
    p.write_text(dump_set(s, {"mirror": "http://m"}))
    back = read_set(p)
    assert back.lists == s.lists and back.driver_version == "535.261.03" and back.suite == "bookworm"


def test_read_set_bad_id(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text(dump_set(_tiny_set()).replace('"2330"', '"23300"'))
    with pytest.raises(ConfigError, match=r"lists\.nvidia\.ids\[\d\]"):
        read_set(p)


def test_lists_for_driver_tiny():
    sets = (_tiny_set(),)
    own = lists_for_driver("535.261.03", sets)
    assert 0x2330 in own.proprietary and 0x2330 not in own.open
    tesla = lists_for_driver("470.256.02", sets)
    assert tesla.proprietary.name == "nvidia-tesla-470" and tesla.open is None
    assert lists_for_driver("580.159.04", sets) is None


# ------------------------------------------------------------ the shipped data (real lists)


def test_shipped_facts():
    versions = [s.driver_version for s in load_all()]
    assert {"535.261.03", "550.163.01"} <= set(versions)
    d535 = lists_for_driver("535.261.03")
    assert 0x2330 in d535.proprietary and 0x2330 not in d535.open
    assert {0x20B0, 0x20B2, 0x27B8} <= d535.open.ids
    for lst in [d535.proprietary, d535.open, lists_for_driver("535.216.03").proprietary,
                lists_for_driver("470.256.02").proprietary]:
        assert 0x2335 not in lst and 0x2901 not in lst
    assert lists_for_driver("535.216.03").proprietary.name == "nvidia-tesla-535"
    assert 0x2330 in lists_for_driver("535.216.03").proprietary
    d550 = lists_for_driver("550.163.01")
    assert 0x2330 in d550.open and 0x2335 in d550.proprietary and 0x2335 not in d550.open


# ------------------------------------------------------------ fetcher, with a fake apt


MADISON = """nvidia-detect | 550.163.01-2 | http://deb.debian.org/debian trixie/non-free amd64 Packages
nvidia-detect | 535.261.03-1 | http://deb.debian.org/debian bookworm/non-free amd64 Packages
"""


def test_parse_madison_and_pick():
    av = parse_madison(MADISON)
    assert av == [("550.163.01-2", "trixie"), ("535.261.03-1", "bookworm")]
    assert pick_version("535.261.03", av) == ("535.261.03-1", "bookworm")
    assert pick_version("550.163.01-2", av) == ("550.163.01-2", "trixie")
    with pytest.raises(UserError) as e:
        pick_version("999.1", av)
    assert "535.261.03-1 (bookworm)" in e.value.hint


def test_sources_list_has_nonfree_components():
    text = sources_list(FetchSettings(mirror="http://mirror.local/debian"))
    assert "http://mirror.local/debian bookworm main contrib non-free non-free-firmware" in text
    assert "trixie" in text


def test_apt_options_are_private(tmp_path):
    opts = " ".join(apt_options(tmp_path, FetchSettings()))
    assert f"Dir::State={tmp_path}/state" in opts and f"Dir::Etc::SourceList={tmp_path}/sources.list" in opts


def test_fetcher_with_fake_runner(tmp_path):
    calls = []

    def fake(argv, **kw):
        calls.append(argv)
        if argv[0] == "apt-cache":
            return subp.CmdResult(tuple(argv), 0, MADISON, "")
        if argv[-1].startswith("nvidia-detect="):
            (Path(kw["cwd"]) / "nvidia-detect_535.261.03-1_amd64.deb").write_bytes(b"deb")
        if argv[0] == "dpkg-deb":
            d = Path(argv[-1]) / "usr/share/nvidia"
            d.mkdir(parents=True)
            (d / "nvidia.ids").write_text(TINY)
            (d / "nvidia-open.ids").write_text("10DE20B0\n")
        return subp.CmdResult(tuple(argv), 0, "", "")

    f = Fetcher(tmp_path / "work", FetchSettings(), run=fake)
    f.update()
    r = f.fetch("535.261.03", out_dir=tmp_path / "out")
    assert r.path == tmp_path / "out" / "535.261.03.yaml"
    back = read_set(r.path)
    assert back.get("nvidia").ids == {0x2330, 0x20B0, 0x27B8} and back.package_version == "535.261.03-1"
    assert [c[0] for c in calls] == ["apt-get", "apt-cache", "apt-get", "dpkg-deb"]


def test_arch_supplement_merged():
    s = build_set({"nvidia-legacy-390xx.ids": "10DE1234\n", "nvidia-legacy-390xx-amd64.ids": "10DE1DB1\n"},
                  "535.261.03", "535.261.03-1", "bookworm")
    dl = lists_for_driver("390.157", (s,))
    assert dl.proprietary.name == "nvidia-legacy-390xx" and dl.proprietary.ids == {0x1234, 0x1DB1}


def test_shipped_390_has_volta():
    assert 0x1DB1 in lists_for_driver("390.157").proprietary


def test_idlists_check_cli():
    from click.testing import CliRunner

    from builder.cli import main

    r = CliRunner().invoke(main, ["idlists", "check"])
    assert r.exit_code == 0
    assert any("535.261.03" in ln and "nvidia-open.ids" in ln and "H100 SXM5 80GB" in ln for ln in r.output.splitlines())
    assert "the lists win" in r.output


def test_idlists_list_and_show_cli():
    from click.testing import CliRunner

    from builder.cli import main

    r = CliRunner().invoke(main, ["idlists", "list"])
    assert r.exit_code == 0 and "535.261.03" in r.output and "550.163.01" in r.output
    r = CliRunner().invoke(main, ["idlists", "show", "535.261.03", "nvidia-open"])
    assert r.exit_code == 0 and "10de:20b0" in r.output and "10de:2330" not in r.output
    r = CliRunner().invoke(main, ["idlists", "show", "999.1.1"])
    assert r.exit_code == 2 and "gpuforge idlists fetch 999.1.1" in r.output
