"""dpkg-deb packaging, the apt repo (Packages/Release/InRelease), the dist lock and cache hits, with tiny inputs."""

from __future__ import annotations

import json

import pytest

from builder.digest import sha256_file
from builder import aptrepo, debpkg, drivers, kmod
from builder.config import load_matrix, repo_root
from builder.matrix import Cell
from validator import subp
from validator.errors import UserError

CFG = load_matrix(repo_root() / "matrix.yaml")
PROP = Cell(CFG.kernels[0], CFG.drivers[0], "proprietary", ())
ABI = CFG.kernels[0].abi


def _tiny_deb(tmp_path):
    root = tmp_path / "root"
    mod = root / "lib" / "modules" / ABI / debpkg.MODULE_SUBDIR / "nvidia.ko"
    mod.parent.mkdir(parents=True)
    mod.write_bytes(b"\x7fELF not really a module")
    ctl = debpkg.control(PROP, debpkg.installed_kib(root), "k" * 64, "sha256:img")
    out = tmp_path / "out"
    out.mkdir()
    return debpkg.build_deb(root, ctl, ABI, out), ctl


@pytest.mark.subprocess
def test_deb_builds_publishes_and_repo_is_signed(tmp_path):
    deb, ctl = _tiny_deb(tmp_path)
    assert subp.run(["dpkg-deb", "-f", str(deb), "Package"]).stdout.strip() == ctl.get("Package")
    dist = tmp_path / "dist"
    rel = kmod.publish(deb, dist, ctl)
    assert (dist / rel).is_file() and rel.startswith("apt/pool/main/g/gpuforge-nvidia-kmod-proprietary-535.261.03-")
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    uid = "unit test <unit@gpuforge.invalid>"
    subp.run(["gpg", "--homedir", str(home), "--batch", "--passphrase", "", "--quick-gen-key", uid, "rsa2048",
              "sign", "1d"], timeout=300)
    info = aptrepo.publish_repo(dist / "apt", "gpuforge", uid, str(home))
    assert info.packages == 1 and info.signed
    suite = dist / "apt" / "dists" / "gpuforge"
    packages = (suite / "main/binary-amd64/Packages").read_text()
    assert f"Filename: {rel[len('apt/'):]}" in packages and "Gpuforge-Flavour: proprietary" in packages
    release = (suite / "Release").read_text()
    assert "Components: main" in release and "main/binary-amd64/Packages" in release
    keyring = aptrepo.export_public_key(uid, str(home), dist / "apt" / "key.gpg")
    subp.run(["gpgv", "--keyring", str(keyring), str(suite / "InRelease")])
    assert info.sources_line(keyring=str(keyring)) == f"deb [signed-by={keyring}] file:{dist / 'apt'} gpuforge main"
    # Republishing swaps the index folder in one rename; no leftovers.
    aptrepo.publish_repo(dist / "apt", "gpuforge")
    assert not list((dist / "apt").glob(".dists.*")) and not (suite / "InRelease").exists()


def test_dist_lock_refuses_a_second_holder(tmp_path):
    with drivers.DistLock(tmp_path):
        with pytest.raises(UserError, match="locked by another build"):
            with drivers.DistLock(tmp_path, wait=False):
                pass
    with drivers.DistLock(tmp_path, wait=False):
        pass


def test_cache_hit_needs_key_and_intact_deb(tmp_path):
    dist = tmp_path
    deb = dist / "apt/pool/x.deb"
    deb.parent.mkdir(parents=True)
    deb.write_bytes(b"deb bytes")
    st = deb.stat()
    entry = {"name": PROP.id, "key": "K", "artifacts": [{"path": "apt/pool/x.deb", "size": st.st_size,
                                                         "mtime_ns": st.st_mtime_ns, "sha256": sha256_file(deb)}]}
    (dist / "cache").mkdir()
    f = dist / "cache" / f"{kmod.safe_name(PROP.id)}.json"
    f.write_text(json.dumps(entry))
    assert drivers.cache_hit(dist, PROP, "K").artifact.path == "apt/pool/x.deb"
    assert drivers.cache_hit(dist, PROP, "other") is None
    deb.write_bytes(b"DEB BYTES")  # same size, new mtime: the sha256 decides
    assert drivers.cache_hit(dist, PROP, "K") is None
    deb.write_bytes(b"deb bytes")
    assert drivers.cache_hit(dist, PROP, "K") is not None  # content back: sha256 matches again
    deb.write_bytes(b"cut")  # a different size: never trusted
    assert drivers.cache_hit(dist, PROP, "K") is None
    deb.unlink()
    assert drivers.cache_hit(dist, PROP, "K") is None
    f.write_text(json.dumps({"name": PROP.id, "key": "K", "status": "failed", "step": "compile", "error": "e"}))
    assert drivers.cache_hit(dist, PROP, "K").status == "failed"
