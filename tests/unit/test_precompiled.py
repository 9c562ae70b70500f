"""Node side: offered/installed kmod packages, choosing one for the GPUs + kernel, install and rollback (fake runner)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from validator import precompiled
from validator.catalog import load_catalog
from validator.cli import main
from validator.errors import UserError
from validator.subp import CmdResult

ABI = "6.1.0-54-cloud-amd64"


def stanza(driver, flavour, kernel=ABI, version=None, status=None):
    name = f"gpuforge-nvidia-kmod-{flavour}-{driver}-{kernel}"
    lines = [f"Package: {name}", f"Version: {version or driver + '-1+gpuforge1'}", "Architecture: amd64"]
    if status:
        lines.append(f"Status: {status}")
    lines += [f"Depends: linux-image-{kernel}, nvidia-smi (= {driver}-1), libcuda1 (= {driver}-1), nvidia-persistenced (>= 535)",
              f"Gpuforge-Driver: {driver}", f"Gpuforge-Flavour: {flavour}", f"Gpuforge-Kernel: {kernel}",
              "Description: NVIDIA kernel modules", " Precompiled by gpuforge."]
    return "\n".join(lines) + "\n"


@pytest.fixture
def node(h100_copy):
    lists = h100_copy / "var/lib/apt/lists"
    lists.mkdir(parents=True)
    (lists / "file:_srv_apt_dists_gpuforge_main_binary-amd64_Packages").write_text("\n".join([
        stanza("535.261.03", "proprietary"), stanza("535.261.03", "open"), stanza("550.163.01", "proprietary"),
        stanza("535.261.03", "proprietary", kernel="6.1.0-53-cloud-amd64"),
        "Package: nvidia-smi\nVersion: 535.261.03-1\n"]))
    (h100_copy / "var/lib/dpkg").mkdir(parents=True)
    (h100_copy / "var/lib/dpkg/status").write_text(
        stanza("535.261.03", "proprietary", status="install ok installed") + "\n" + "Package: bash\nStatus: install ok installed\n")
    return h100_copy


class FakeRun:
    def __init__(self):
        self.calls = []

    def __call__(self, argv, **kw):
        self.calls.append(list(argv))
        if argv[0] == "modinfo":
            return CmdResult(tuple(argv), 0, f"/lib/modules/{ABI}/updates/gpuforge/{argv[-1]}.ko\n", "")
        return CmdResult(tuple(argv), 0, "", "")


def test_available_and_installed(node):
    av = precompiled.available(node)
    assert [(p.driver, p.flavour, p.kernel) for p in av if p.kernel == ABI] == [
        ("535.261.03", "open", ABI), ("535.261.03", "proprietary", ABI), ("550.163.01", "proprietary", ABI)]
    [inst] = precompiled.installed(node)
    assert inst.installed and inst.driver == "535.261.03" and precompiled.current(ABI, node) == inst


def test_choose_follows_the_id_lists():
    cat = load_catalog()
    h100, a100 = cat.find("H100 SXM5 80GB"), cat.find("A100 SXM4 80GB")
    pk = [precompiled.KmodPackage(f"p-{d}-{f}", d + "-1", d, f, ABI) for d, f in
          (("535.261.03", "open"), ("535.261.03", "proprietary"))]
    c = precompiled.choose([h100], ABI, pk, cat)
    assert c.package.flavour == "proprietary"  # 535's nvidia-open.ids lacks the H100 (facts.md)
    c = precompiled.choose([a100], ABI, pk, cat)
    assert c.package.flavour == "open"  # open first where the list has the GPU
    c = precompiled.choose([h100], "6.12.1-x", pk, cat)
    assert c.package is None and "no precompiled package for kernel 6.12.1-x" in c.reason
    c = precompiled.choose([h100], ABI, pk[:1], cat)
    assert c.package is None and "nvidia-open.ids" in c.reason


def test_install_records_history_and_rollback_goes_back(node):
    run = FakeRun()
    av = precompiled.available(node)
    new = next(p for p in av if p.driver == "550.163.01")
    old = next(p for p in av if p.driver == "535.261.03" and p.flavour == "proprietary" and p.kernel == ABI)
    precompiled._record(node, old, "install")
    path = precompiled.install(new, node, run)
    assert path.endswith("updates/gpuforge/nvidia-current.ko")
    assert run.calls[0][:3] == ["apt-get", "install", "-y"] and run.calls[0][-1] == f"{new.name}={new.version}"
    assert ["depmod", "-a", ABI] in run.calls
    assert "--allow-downgrades" in run.calls[0]
    pin = (node / precompiled.PIN_FILE).read_text()
    assert "Pin: version 550.163.01-1\nPin-Priority: 1001" in pin and "535" not in pin.split("\n", 1)[1]
    # dpkg now has the 550 package
    status = node / "var/lib/dpkg/status"
    status.write_text(stanza("550.163.01", "proprietary", status="install ok installed"))
    assert precompiled.rollback_target(ABI, node) == old
    assert precompiled.rollback_target(ABI, node, to="535.261.03").driver == "535.261.03"
    with pytest.raises(UserError):
        precompiled.rollback_target(ABI, node, to="999.1.1")
    hist = json.loads((node / precompiled.HISTORY).read_text())
    assert [h["driver"] for h in hist] == ["535.261.03", "550.163.01"]


def test_rollback_without_history_is_a_user_error(node):
    with pytest.raises(UserError, match="nothing to roll back"):
        precompiled.rollback_target(ABI, node, offered=[])


def test_cli_list_and_dry_run(node):
    r = CliRunner().invoke(main, ["drivers", "list", "--root", str(node), "--kernel", ABI])
    assert r.exit_code == 0, r.output
    assert any(ln.startswith("* gpuforge-nvidia-kmod-proprietary-535.261.03") for ln in r.output.splitlines())
    r = CliRunner().invoke(main, ["drivers", "install", "--root", str(node), "--kernel", ABI, "--dry-run", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["package"]["driver"] == "550.163.01" and out["installed"] is False
    r = CliRunner().invoke(main, ["drivers", "install", "--root", str(node), "--kernel", "9.9.9-x", "--dry-run"])
    assert r.exit_code == 2 and "no precompiled package" in r.output


def test_package_from_control_and_pin_text():
    p = precompiled.package_from_control(stanza("535.261.03", "proprietary"))
    assert p.exact == ("535.261.03-1",) and p.module == "nvidia-current"
    assert precompiled.pin_text(p).endswith(f"Package: {precompiled.PIN_PACKAGES}\nPin: version 535.261.03-1\nPin-Priority: 1001\n")
    with pytest.raises(UserError):
        precompiled.package_from_control("Package: bash\nVersion: 5\n")


def test_cli_install_from_local_debs(node, monkeypatch):
    """--deb: choose among local files (read with dpkg-deb -f) and hand apt the file path."""
    calls = []

    def fake_read(path, run=None):
        return precompiled.package_from_control(stanza("535.261.03", "proprietary"))

    def fake_install(pkg, root, run=None, action="install", deb=None):
        calls.append((pkg.name, deb))
        return "/lib/modules/x/updates/gpuforge/nvidia-current.ko"

    monkeypatch.setattr(precompiled, "read_deb", fake_read)
    monkeypatch.setattr(precompiled, "install", fake_install)
    r = CliRunner().invoke(main, ["drivers", "install", "--root", str(node), "--kernel", ABI, "--deb", "/x/k.deb", "--json"])
    assert r.exit_code == 0, r.output
    assert calls == [(f"gpuforge-nvidia-kmod-proprietary-535.261.03-{ABI}", "/x/k.deb")]
