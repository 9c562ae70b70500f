"""Corrupt local state (kmod-history.json, the apt pin file, apt lists): install and rollback refuse cleanly
BEFORE apt runs, never crash after it; a FIFO among apt's lists never blocks."""

from __future__ import annotations

import json
import os
import re

import pytest
from click.testing import CliRunner

from test_precompiled import ABI, FakeRun, node  # noqa: F401  (the fixture node with apt lists and dpkg status)
from validator import precompiled
from validator.cli import main
from validator.errors import GpuforgeError

HISTORY_CASES = [
    ("object", b"{}"),
    ("string", b'"install"'),
    ("number", b"7"),
    ("null", b"null"),
    ("list of ints", b"[1, 2]"),
    ("list of lists", b"[[\"gpuforge-nvidia-kmod\", \"1\"]]"),
    ("package int", json.dumps([{"package": 1, "version": "1", "kernel": ABI}]).encode()),
    ("no package", json.dumps([{"version": "1", "kernel": ABI}]).encode()),
    ("no kernel", json.dumps([{"package": "p", "version": "1"}]).encode()),
    ("kernel list", json.dumps([{"package": "p", "version": "1", "kernel": [ABI]}]).encode()),
    ("action dict", json.dumps([{"package": "p", "version": "1", "kernel": ABI, "action": {}}]).encode()),
    ("truncated", b'[{"package": "p", "vers'),
    ("nan", b'[{"package": "p", "version": NaN}]'),
    ("binary", bytes(range(256))),
    ("empty", b""),
    ("deep", b"[" * 50000 + b"]" * 50000),
]


def _history(node, data):  # noqa: F811
    p = node / precompiled.HISTORY
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def _packages(node):  # noqa: F811
    av = precompiled.available(node)
    return next(p for p in av if p.driver == "550.163.01")


@pytest.mark.parametrize("case,data", HISTORY_CASES, ids=[c for c, _ in HISTORY_CASES])
def test_corrupt_history_refuses_install_and_rollback_before_apt(node, case, data):  # noqa: F811
    path = _history(node, data)
    run = FakeRun()
    with pytest.raises(GpuforgeError) as e:
        precompiled.install(_packages(node), node, run)
    assert e.value.exit_code == 2 and str(path) in str(e.value) and "mv " in str(e.value)
    assert run.calls == []  # apt never ran
    assert not (node / precompiled.PIN_FILE).exists()  # nothing changed on the node
    with pytest.raises(GpuforgeError) as e:
        precompiled.rollback_target(ABI, node)
    assert e.value.exit_code == 2 and str(path) in str(e.value)
    assert path.read_bytes() == data  # the corrupt file is kept for the operator to look at
    res = CliRunner().invoke(main, ["drivers", "rollback", "--root", str(node), "--kernel", ABI])
    assert res.exit_code == 2 and str(path) in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("kind", ["fifo", "directory", "symlink-loop"])
def test_history_or_pin_of_the_wrong_file_type_refuses_before_apt(node, kind):  # noqa: F811
    for rel in (precompiled.HISTORY, precompiled.PIN_FILE):
        p = node / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if kind == "fifo":
            os.mkfifo(p)
        elif kind == "directory":
            p.mkdir()
        else:
            p.symlink_to(p)
        run = FakeRun()
        with pytest.raises(GpuforgeError) as e:
            precompiled.install(_packages(node), node, run)
        assert e.value.exit_code == 2 and run.calls == [], str(e.value)
        if p.is_dir() and not p.is_symlink():
            p.rmdir()
        else:
            p.unlink()


def test_unwritable_history_folder_refuses_before_apt(node):  # noqa: F811
    blocker = node / os.path.dirname(precompiled.HISTORY)
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("a file where the state folder should be")
    run = FakeRun()
    with pytest.raises(GpuforgeError, match="not a folder"):
        precompiled.install(_packages(node), node, run)
    assert run.calls == []


def test_good_history_still_works(node):  # noqa: F811
    pkg = _packages(node)
    _history(node, json.dumps([{"package": pkg.name, "version": "0", "kernel": ABI, "extra": "kept"}]).encode())
    run = FakeRun()
    precompiled.install(pkg, node, run)
    hist = json.loads((node / precompiled.HISTORY).read_text())
    assert [h["package"] for h in hist] == [pkg.name, pkg.name] and run.calls


def test_fifo_among_apt_lists_does_not_block(node):  # noqa: F811
    os.mkfifo(node / precompiled.APT_LISTS / "evil_Packages")
    assert any(p.driver == "550.163.01" for p in precompiled.available(node))
    status = node / "var/lib/dpkg/status"
    status.unlink()
    os.mkfifo(status)
    assert precompiled.installed(node) == []


EVIL_STANZAS = [
    ("option as version", {"Version": "--allow-unauthenticated"}),
    ("option as name", {"Package": "gpuforge-nvidia-kmod--o=APT::Get::AllowUnauthenticated=1"}),
    ("continued version", {"Version": "1\n Pin-Priority: 1001"}),
    ("space in kernel", {"Gpuforge-Kernel": "6.1.0 -k /tmp/evil"}),
    ("dash kernel", {"Gpuforge-Kernel": "-a"}),
    ("bad flavour", {"Gpuforge-Flavour": "open;rm"}),
    ("bad driver", {"Gpuforge-Driver": "550.163.01 --purge"}),
    ("escape in module", {"Gpuforge-Module": "nvidia\x1b[2J"}),
]


@pytest.mark.parametrize("case,fields", EVIL_STANZAS, ids=[c for c, _ in EVIL_STANZAS])
def test_malformed_apt_stanza_never_reaches_apt(node, case, fields):  # noqa: F811
    base = {"Package": "gpuforge-nvidia-kmod-proprietary-999.1.1-" + ABI, "Version": "999.1.1-1",
            "Gpuforge-Driver": "999.1.1", "Gpuforge-Flavour": "proprietary", "Gpuforge-Kernel": ABI}
    base.update(fields)
    stanza = "".join(f"{k}: {v}\n" for k, v in base.items())
    (node / precompiled.APT_LISTS / "evil_Packages").write_text(stanza)
    names = [p.name for p in precompiled.available(node)]
    assert base["Package"] not in names and not any("999" in n for n in names)


def test_hand_made_package_with_an_option_as_name_is_refused_before_apt(node):  # noqa: F811
    bad = precompiled.KmodPackage("-o", "1", "550.163.01", "proprietary", ABI)
    run = FakeRun()
    with pytest.raises(GpuforgeError, match="malformed name"):
        precompiled.install(bad, node, run)
    assert run.calls == []


@pytest.mark.parametrize("release", ["-a", "6.1 --evil", "\x1b]0;x\x07", "", "a" * 300])
def test_kernel_release_that_no_kernel_prints_is_unknown(node, release):  # noqa: F811
    from validator.detect import read_kernel
    (node / "proc/sys/kernel").mkdir(parents=True, exist_ok=True)
    (node / "proc/sys/kernel/osrelease").write_text(release + "\n")
    (node / "proc/version").write_text(f"Linux version {release} (gcc)\n")
    got = read_kernel(node)
    assert got != release and (got is None or re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}", got)), got


@pytest.mark.parametrize("kind", ["text", "fifo", "dir", "missing", "empty", "elf"])
def test_deb_that_is_no_deb_is_exit_2_without_running_dpkg(node, tmp_path, kind):  # noqa: F811
    deb = tmp_path / "x.deb"
    if kind == "text":
        deb.write_text("not a package\n")
    elif kind == "fifo":
        os.mkfifo(deb)
    elif kind == "dir":
        deb.mkdir()
    elif kind == "empty":
        deb.write_bytes(b"")
    elif kind == "elf":
        deb.write_bytes(b"\x7fELF" + bytes(100))
    res = CliRunner().invoke(main, ["drivers", "install", "--root", str(node), "--kernel", ABI, "--deb", str(deb),
                                    "--dry-run"])
    assert res.exit_code == 2 and str(deb) in res.output and "Traceback" not in res.output, res.output


@pytest.mark.parametrize("kind", ["fifo", "dir", "huge"])
def test_setup_reads_a_special_node_file_as_absent_never_blocking(tmp_path, kind):
    from validator.setup.plan import Host

    p = tmp_path / "etc/docker/daemon.json"
    p.parent.mkdir(parents=True)
    if kind == "fifo":
        os.mkfifo(p)  # a blocking open would hang here for ever
    elif kind == "dir":
        p.mkdir()
    else:
        p.write_bytes(b"{}")
        os.truncate(p, 1 << 30)
    assert Host(tmp_path).read("/etc/docker/daemon.json") is None
    (tmp_path / "etc/docker/ok.json").write_bytes(b'{"a": "\xff"}')
    assert Host(tmp_path).read("/etc/docker/ok.json") == '{"a": "\ufffd"}'
