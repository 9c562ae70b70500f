"""The builder's shared pieces: cache entries, the lock, steps, safe tar extraction, quoting, repo signing state."""

from __future__ import annotations

import dataclasses
import io
import json
import shlex
import tarfile
from pathlib import Path

import pytest

from builder import aptrepo, cache, debpkg, drivers, kmod, steps
from builder.config import Settings, load_matrix, repo_root
from builder.images import build as images_build
from builder.lock import FileLock
from builder.matrix import Cell
from validator import subp
from validator.errors import CommandError, UserError

CFG = load_matrix(repo_root() / "matrix.yaml")
PROP = Cell(CFG.kernels[0], CFG.drivers[0], "proprietary", ())
BS = kmod.BuildSettings("http://deb.debian.org/debian", "http://deb.debian.org/debian-security")


def test_cache_entry_round_trip_and_hit(tmp_path):
    art = tmp_path / "apt/pool/a.deb"
    art.parent.mkdir(parents=True)
    art.write_bytes(b"x" * 10)
    e = cache.CacheEntry("c@1", "K", {"source": "a=1"}, cache.CacheStatus.BUILT,
                         (cache.Artifact.record(tmp_path, "apt/pool/a.deb"),), seconds=3.5, steps=(("compile", 3.0),)).stamped()
    assert cache.CacheEntry.from_dict(json.loads(json.dumps(e.to_dict()))) == e
    store = cache.Store(tmp_path)
    store.write(e)
    assert store.hit("c@1", "K") == e and store.hit("c@1", "other") is None
    assert [x.name for x in store.entries()] == ["c@1"]
    store.path("c@1").write_text("{not json")
    assert store.read("c@1") is None and store.hit("c@1", "K") is None  # unreadable entry: a miss, not a crash
    store.path("c@1").write_text(json.dumps({"name": "c@1", "key": "K", "status": "exploded"}))
    assert store.read("c@1") is None


def test_changed_inputs_one_shape_for_drivers_and_images(tmp_path):
    assert cache.changed_inputs(None, {"a": 1}) == ("no previous build",)
    assert cache.changed_inputs({"a": 1, "b": "x" * 200}, {"a": 2, "b": "x" * 200}) == ("a: 1 -> 2",)
    long = cache.changed_inputs({"d": {"k": "v" * 100}}, {"d": {"k": "w"}})[0]
    assert long.startswith("d: {'k': 'vvv") and "..." in long and len(long) < 200
    # images: the same function behind their manifest
    assert images_build.changed_inputs(tmp_path / "none", {"a": 1}) == ("no previous build",)
    assert kmod.changed_inputs is cache.changed_inputs and kmod.cache_key is cache.cache_key


def test_lock_names_the_holder(tmp_path):
    with FileLock(tmp_path / ".lock", what="dist"):
        with pytest.raises(UserError, match=r"dist is locked by another build \(pid \d+\)"):
            with FileLock(tmp_path / ".lock", wait=False, what="dist"):
                pass
    with drivers.DistLock(tmp_path, wait=False):
        pass


def test_step_times_and_is_quiet_without_a_tty():
    buf, timings = io.StringIO(), {}
    with steps.step("compile things", timings, expected=120, stream=buf, tty=False):
        pass
    assert buf.getvalue().splitlines()[0] == "gpuforge: ==> compile things"
    assert "\r" not in buf.getvalue() and "compile things" in timings
    assert steps.eta_text(65, 130) == "1m05s of ~2m10s" and steps.eta_text(150, 130) == "2m30s (over ~2m10s)"
    t = steps.Ticker("x", 10, stream=buf, tty=True)
    assert t.line().startswith("    x ... 0s of ~10s")


def test_progress_eta_from_last_build_and_this_run():
    p = drivers.Progress(3, stream=io.StringIO(), tty=False, jobs=1)
    assert p.eta() is None
    p.expect("a", 100.0)
    assert p.eta() == pytest.approx(300.0)
    p.finish(kmod.CellResult("b", "built", 50.0))
    assert p.eta() == pytest.approx(100.0)  # two left at this run's mean


def _tar(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for m, data in members:
            tar.addfile(m, io.BytesIO(data) if data is not None else None)
    buf.seek(0)
    return buf


@pytest.mark.parametrize("member", [
    ("../escape.txt", tarfile.REGTYPE, ""),
    ("out/link", tarfile.SYMTYPE, "/etc/passwd"),
    ("out/up", tarfile.SYMTYPE, "../../../x"),
    ("out/hard", tarfile.LNKTYPE, "../../outside"),
])
def test_stage_extraction_refuses_members_that_escape(tmp_path, member):
    """A hostile container's /gf/out cannot write outside the temp folder (tarfile data filter)."""
    name, kind, target = member
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.linkname = target
    data = b"pwned" if kind == tarfile.REGTYPE else None
    ti.size = len(data) if data else 0
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(tarfile.FilterError):
        kmod.extract_tar(_tar([(ti, data)]), dest)
    assert not (tmp_path / "escape.txt").exists()


def test_stage_extraction_keeps_normal_members(tmp_path):
    ti = tarfile.TarInfo("out/lib/modules/x/nvidia.ko")
    ti.size = 3
    ab = tarfile.TarInfo("/abs.txt")  # an absolute name is taken relative to the destination
    ab.size = 1
    kmod.extract_tar(_tar([(ti, b"elf"), (ab, b"a")]), tmp_path)
    assert (tmp_path / "out/lib/modules/x/nvidia.ko").read_bytes() == b"elf"
    assert (tmp_path / "abs.txt").read_bytes() == b"a" and not Path("/abs.txt").exists()


def test_step_scripts_quote_every_value():
    k = dataclasses.replace(PROP.kernel, version="6.1.190-1~bpo12+1")
    cell = dataclasses.replace(PROP, kernel=k)
    hostile = dataclasses.replace(BS, mirror="http://m.example/debian; touch /tmp/pwned")
    text = kmod.render_headers(dataclasses.replace(cell, kernel=dataclasses.replace(k, suite="bookworm-backports")), hostile)
    assert "'linux-headers-6.1.0-54-cloud-amd64=6.1.190-1~bpo12+1'" in text
    assert "'deb http://m.example/debian; touch /tmp/pwned bookworm-backports main contrib non-free non-free-firmware'" in text
    bad = dataclasses.replace(cell, kernel=dataclasses.replace(k, abi='6.1.0-54"; reboot; "'))
    with pytest.raises(Exception, match="not a plain word"):
        kmod.render("compile", bad, BS)
    tag = kmod.headers_image_tag(dataclasses.replace(cell, kernel=dataclasses.replace(k, abi="6.12.95+deb12-cloud-amd64")),
                                 kmod.ImageRef("t", "sha256:b"), BS)
    assert tag.startswith("gpuforge/kmod-headers:6.12.95_deb12-cloud-amd64-")


def test_mmdebstrap_hooks_quote_the_dist_path(tmp_path, monkeypatch):
    """--dist with shell syntax lands in sh -c hooks quoted, as one word (it used to be pasted raw)."""
    work = tmp_path / "d $(touch pwned); x"
    seen = {}

    def fake_run(argv, **kw):
        seen["argv"] = argv
        raise RuntimeError("stop")

    monkeypatch.setattr(images_build.subp, "run", fake_run)
    res = images_build.Resolved(
        image=images_build.ImageDef(name="t", suite="bookworm", kernel=PROP.kernel.abi, tuning="gpu-performance"),
        kernel=images_build.refs.KernelRef(PROP.kernel.abi, PROP.kernel.image, PROP.kernel.version, "bookworm", ""),
        tuning=None, drivers=())
    with pytest.raises(RuntimeError):
        images_build.build_rootfs(res, images_build.Context(repo=tmp_path, dist=tmp_path), work / "stage", work / "rootfs", work)
    hooks = [a.split("=", 1)[1] for a in seen["argv"] if a.startswith("--customize-hook=")]
    tsv = next(h for h in hooks if "packages.tsv" in h)
    assert shlex.split(tsv)[-1] == str(work / "packages.tsv")  # one word, exactly the path
    assert shlex.split(next(h for h in hooks if h.startswith("copy-in")))[1] == str(work / "stage")


@pytest.mark.subprocess
def test_unknown_gpg_key_is_exit_2_before_building(tmp_path):
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    run = drivers.DriverRun([PROP], Settings(gpg_key="nobody@gpuforge.invalid", gpg_home=str(home)), tmp_path, 1, False,
                            False, drivers.Progress(1, stream=io.StringIO(), tty=False))
    with pytest.raises(UserError, match="has no secret key"):
        drivers.check_signing(run)
    run.settings = Settings(gpg_key="x", gpg_home=str(tmp_path / "missing"))
    with pytest.raises(UserError, match="not a directory"):
        drivers.check_signing(run)


def _pool_with_one_deb(root: Path) -> None:
    src = root.parent / "pkgroot"
    (src / "lib").mkdir(parents=True)
    (src / "lib" / "f").write_text("x")
    out = root.parent / "out"
    out.mkdir()
    ctl = debpkg.control(PROP, 1, "k" * 64)
    deb = debpkg.build_deb(src, ctl, PROP.kernel.abi, out)
    kmod.publish(deb, root.parent, ctl)


@pytest.mark.subprocess
def test_signing_is_a_property_of_the_published_repo(tmp_path):
    """Cached cells (nothing built) still end in a repo signed by the key asked for, and unsigned when not asked."""
    root = tmp_path / "apt"
    _pool_with_one_deb(root)
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    uid = "runbook test <runbook@gpuforge.invalid>"
    subp.run(["gpg", "--homedir", str(home), "--batch", "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "1d"],
             timeout=120)
    r = drivers.publish_pool(root, "gpuforge", None, None, None)
    assert not r.signed and not (root / "dists/gpuforge/InRelease").exists()
    assert aptrepo.is_current(root, "gpuforge", None)
    fpr = aptrepo.gpg_fingerprint(uid, str(home))
    assert not aptrepo.is_current(root, "gpuforge", fpr)  # the same pool, now with a key: republish
    r = drivers.publish_pool(root, "gpuforge", uid, str(home), fpr)
    assert r.signed and (root / "dists/gpuforge/InRelease").is_file() and (root / "gpuforge-archive-keyring.gpg").is_file()
    subp.run(["gpgv", "--keyring", str(root / "gpuforge-archive-keyring.gpg"), str(root / "dists/gpuforge/InRelease")])
    assert aptrepo.is_current(root, "gpuforge", fpr)
    r = drivers.publish_pool(root, "gpuforge", None, None, None)  # key dropped: the repo says so, no stale keyring
    assert not r.signed and not (root / "gpuforge-archive-keyring.gpg").exists()


@pytest.mark.subprocess
def test_failed_signing_leaves_no_temp_dir_and_stale_ones_are_swept(tmp_path):
    root = tmp_path / "apt"
    _pool_with_one_deb(root)
    (root / ".dists.new.99999").mkdir(parents=True)  # a killed run's leftover
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    with pytest.raises(CommandError):
        aptrepo.publish_repo(root, "gpuforge", "nobody@gpuforge.invalid", str(home))
    assert not list(root.glob(".dists.*"))
    assert not (root / "dists").exists()  # nothing half published
