"""End to end, for real: `gpuforge build drivers` on the default matrix (535.261.03 proprietary + open for
6.1.0-54-cloud-amd64), signed modules, signed apt repo, then apt-get install in a clean Debian container.

One build is shared by every e2e test that needs it (session fixture drivers_build, tests/e2e/conftest.py): the
proprietary cell compiles (~2-5 min on 2 cores), the open cell fails on purpose (pci_resize_resource, facts.md).
"""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest
from e2e_drivers import ABI, GPG_UID, OPEN, PKG, PROP, ROOT, gpuforge

from validator import subp

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def build(drivers_build):
    """The session's shared build (tests/e2e/conftest.py): the driver-container tests reuse the same kmod."""
    return drivers_build.as_tuple()


def _result(report, cell_id):
    return next(r for r in report["results"] if r["cell_id"] == cell_id)


def test_open_cell_fails_with_the_compiler_error_and_proprietary_builds(build):
    res, report, dist, elapsed, _ = build
    print(f"cold build: {elapsed:.0f}s; steps {_result(report, PROP)['steps']}")
    prop, opn = _result(report, PROP), _result(report, OPEN)
    assert prop["status"] in (("built", "cached") if os.environ.get("GPUFORGE_E2E_DIR") else ("built",)), prop
    assert opn["status"] == "failed" and opn["step"] == "compile"
    # matrix.yaml lists this cell under expected_failures: reported, but `make images` goes on (exit 0).
    assert opn["expected"] and res.returncode == 0, res.stderr[-2000:]
    assert "pci_resize_resource" in opn["error"] and "error:" in opn["error"]
    assert (dist / opn["log"]).is_file() and "pci_resize_resource" in (dist / opn["log"]).read_text()


def test_package_control_and_contents(build):
    _, report, dist, _, _ = build
    deb = dist / _result(report, PROP)["deb"]
    f = lambda field: subp.run(["dpkg-deb", "-f", str(deb), field]).stdout.strip()  # noqa: E731
    assert f("Package") == PKG
    assert f("Version") == "535.261.03-1+gpuforge1"
    assert f("Depends").startswith(f"linux-image-{ABI} | linux-image-{ABI}-unsigned")
    assert "nvidia-smi (= 535.261.03-1)" in f("Depends")
    assert "nvidia-kernel-dkms" in f("Conflicts")
    listing = subp.run(["dpkg-deb", "-c", str(deb)]).stdout
    mods = {line.split()[-1].rsplit("/", 1)[-1]: int(line.split()[2]) for line in listing.splitlines() if line.endswith(".ko")}
    # Debian's file names, which nvidia-kernel-support's modprobe.d maps `modprobe nvidia` to.
    assert {"nvidia-current.ko", "nvidia-current-uvm.ko", "nvidia-current-modeset.ko", "nvidia-current-drm.ko"} <= set(mods), mods
    assert all(f"lib/modules/{ABI}/updates/gpuforge/" in ln for ln in listing.splitlines() if ln.endswith(".ko"))
    assert mods["nvidia-current.ko"] < 76_000_000  # debug info stripped (unstripped: ~76 MB)
    info = subp.run(["dpkg-deb", "-I", str(deb)]).stdout
    assert "postinst" in info and "postrm" in info


def test_repo_is_indexed_and_signed(build):
    _, _, dist, _, _ = build
    suite = dist / "apt" / "dists" / "gpuforge"
    packages = (suite / "main" / "binary-amd64" / "Packages").read_text()
    assert f"Package: {PKG}" in packages and f"Gpuforge-Kernel: {ABI}" in packages
    assert "Codename: gpuforge" in (suite / "Release").read_text()
    keyring = dist / "apt" / "gpuforge-archive-keyring.gpg"
    assert keyring.is_file()
    subp.run(["gpgv", "--keyring", str(keyring), str(suite / "InRelease")], timeout=60)
    manifest = json.loads((dist / "apt" / "manifest.json").read_text())
    assert manifest["kmods"][PROP]["sha256"] and manifest["kmods"][OPEN]["status"] == "failed"


def test_second_run_is_a_cache_hit(build):
    _, _, dist, _, (kd, home) = build
    t0 = time.monotonic()
    res = gpuforge("build", "drivers", "--dist", str(dist), "--sign-key", str(kd / "signing.key"),
                   "--sign-cert", str(kd / "signing.crt"), "--gpg-key", GPG_UID, "--gpg-home", str(home), "--json")
    elapsed = time.monotonic() - t0
    report = json.loads(res.stdout)
    print(f"cached rebuild: {elapsed:.2f}s")
    assert _result(report, PROP)["status"] == "cached"
    assert _result(report, OPEN)["status"] == "failed" and _result(report, OPEN)["cached"] is True
    assert res.returncode == 0
    assert elapsed < 15


def test_apt_install_in_clean_container_then_modinfo_resolves(build):
    """A clean Debian bookworm (our minbase image) installs the package from the repo by file: source, signed-by."""
    import docker

    from builder.buildenv import BaseImageSpec, ensure_base_image

    _, _, dist, _, _ = build
    client = docker.from_env(timeout=900)
    image = ensure_base_image(BaseImageSpec(suite="bookworm"), client)
    c = client.containers.run(
        image.id, ["sleep", "infinity"], detach=True, network_mode="host",
        volumes={str(dist / "apt"): {"bind": "/srv/gpuforge-apt", "mode": "ro"},
                 str(ROOT): {"bind": "/src", "mode": "ro"}},
        environment={"DEBIAN_FRONTEND": "noninteractive", "PYTHONDONTWRITEBYTECODE": "1"},
    )

    def sh(script, ok=True):
        r = c.exec_run(["bash", "-c", script])
        out = r.output.decode(errors="replace")
        if ok:
            assert r.exit_code == 0, f"{script}\n{out[-4000:]}"
        return out

    try:
        sh("echo 'deb [signed-by=/srv/gpuforge-apt/gpuforge-archive-keyring.gpg] file:/srv/gpuforge-apt gpuforge main'"
           " > /etc/apt/sources.list.d/gpuforge.list && apt-get update -q")
        sh("apt-get install -y -q --no-install-recommends python3 python3-click python3-yaml python3-jinja2 >/dev/null")
        t0 = time.monotonic()
        out = sh(f"cd /src && python3 -m validator drivers install --kernel {ABI} --json")
        install_s = time.monotonic() - t0
        print(f"node install (apt + depmod, incl. downloads of linux-image and user space): {install_s:.0f}s")
        got = json.loads(out[out.index("{"):])
        assert got["installed"] and got["package"]["name"] == PKG
        assert f"/lib/modules/{ABI}/updates/gpuforge/" in got["module"]
        assert sh(f"modinfo -k {ABI} -F vermagic nvidia-current").split()[0] == ABI
        assert sh(f"modinfo -k {ABI} -F name nvidia-current").strip() == "nvidia"  # upstream's internal name
        assert "gpuforge test module signing" in sh(f"modinfo -k {ABI} -F signer nvidia-current")
        # `modprobe nvidia` goes through Debian's modprobe.d to our file (can't load it in a container: dry run)
        assert "nvidia-current" in sh(f"modprobe -S {ABI} -n -v nvidia 2>&1 || true", ok=False)
        assert "updates/gpuforge/nvidia-current-uvm.ko" in sh(f"grep nvidia-current-uvm /lib/modules/{ABI}/modules.dep")
        assert PKG in sh(f"cd /src && python3 -m validator drivers list --kernel {ABI}")
        assert "535.261.03-1" in sh("dpkg-query -W nvidia-smi libcuda1")
        # An image's bundled .deb (what the first-boot hook has): chosen and installed from the file.
        deb = "/srv/gpuforge-apt/" + _result(build[1], PROP)["deb"][len("apt/"):]
        got = json.loads(sh(f"cd /src && python3 -m validator drivers install --kernel {ABI} --deb {deb} --json"))
        assert got["installed"] and got["package"]["name"] == PKG
        # The node-side figure: the kmod .deb alone (dpkg unpack + postinst depmod), user space already there.
        t0 = time.monotonic()
        sh(f"dpkg -i /srv/gpuforge-apt/{_result(build[1], PROP)['deb'][len('apt/'):]}")
        print(f"kmod .deb install + depmod: {time.monotonic() - t0:.1f}s "
              f"(the same modules' compile, i.e. what DKMS does at boot: {_result(build[1], PROP)['steps'].get('compile')}s)")
    finally:
        c.remove(force=True)


def test_driver_version_not_in_the_archive_is_exit_2(tmp_path):
    """A definition pinning a version Debian does not carry: apt says so, gpuforge names file + key, exit 2."""
    for d in ("drivers", "kernels"):
        shutil.copytree(ROOT / d, tmp_path / d, ignore=shutil.ignore_patterns("tuning"))
    (tmp_path / "matrix.yaml").write_text((ROOT / "matrix.yaml").read_text())
    f = tmp_path / "drivers" / "535.261.03.yaml"
    f.write_text(f.read_text().replace("{package: nvidia-kernel-source, version: 535.261.03-1}",
                                       "{package: nvidia-kernel-source, version: 535.999.01-1}"))
    res = gpuforge("build", "drivers", "--config", str(tmp_path / "matrix.yaml"), "--dist", str(tmp_path / "dist"),
                   "--only", "proprietary", timeout=900)
    assert res.returncode == 2, res.stdout + res.stderr
    assert ("535.261.03.yaml: flavours.proprietary.source.version: nvidia-kernel-source=535.999.01-1 "
            "is not in the archive") in res.stderr
