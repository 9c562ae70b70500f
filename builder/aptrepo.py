"""dist/apt: a signed-or-not apt repository (dists/<codename>/main/binary-amd64) over dist/apt/pool.

Index files are generated into a fresh folder and swapped in, so apt never reads a half-written index.
Node sources line: `deb [signed-by=KEYRING] file:/path/to/dist/apt gpuforge main` (or http:// where served).
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from validator import atomic, subp, userfile
from validator.errors import ConfigError, UserError

log = logging.getLogger("gpuforge.aptrepo")

COMPONENT = "main"
ARCH = "amd64"


@dataclass(frozen=True)
class RepoInfo:
    root: Path  # dist/apt
    codename: str
    signed: bool
    packages: int

    def sources_line(self, uri: Optional[str] = None, keyring: Optional[str] = None) -> str:
        opts = f"[signed-by={keyring}] " if keyring else ("[trusted=yes] " if not self.signed else "")
        return f"deb {opts}{uri or 'file:' + str(self.root)} {self.codename} {COMPONENT}"


def release_conf(codename: str) -> list:
    """apt-ftparchive -o options that fill the Release header."""
    return [
        "-o", "APT::FTPArchive::Release::Origin=gpuforge",
        "-o", "APT::FTPArchive::Release::Label=gpuforge precompiled NVIDIA kernel modules",
        "-o", f"APT::FTPArchive::Release::Suite={codename}",
        "-o", f"APT::FTPArchive::Release::Codename={codename}",
        "-o", f"APT::FTPArchive::Release::Architectures={ARCH}",
        "-o", f"APT::FTPArchive::Release::Components={COMPONENT}",
        "-o", "APT::FTPArchive::Release::Description=gpuforge build farm",
    ]


STATE_FILE = ".gpuforge-state.json"  # in dists/: what the published index was made from


def gpg_fingerprint(key: str, home: Optional[str]) -> str:
    """The fingerprint of a secret key the repo can be signed with; an unknown key is the user's to fix (exit 2)."""
    if home and not Path(home).is_dir():
        raise UserError(f"gpg home {home} is not a directory", hint="--gpg-home / settings.gpg_home")
    argv = ["gpg", "--batch", "--with-colons"] + (["--homedir", home] if home else []) + ["--list-secret-keys", key]
    res = subp.run(argv, timeout=60, check=False)
    fprs = [ln.split(":")[9] for ln in res.stdout.splitlines() if ln.startswith("fpr:")]
    if res.returncode != 0 or not fprs:
        raise UserError(f"gpg key {key!r} has no secret key in {home or 'the default keyring'}: the repo cannot be signed",
                        hint="gpg --list-secret-keys; set --gpg-key/--gpg-home (or settings.gpg_key) to a key you hold")
    return fprs[0]


def pool_state(root: Path) -> list:
    """(path, size, mtime) of every package in pool/: the index is current while this is unchanged."""
    pool = Path(root) / "pool"
    return sorted([str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns]
                  for p in pool.rglob("*.deb")) if pool.is_dir() else []


def desired_state(root: Path, signer: Optional[str]) -> dict:
    return {"signer": signer, "pool": pool_state(root)}


def is_current(root: Path, codename: str, signer: Optional[str]) -> bool:
    """True when dists/ was published from exactly this pool with this signer (signing is checked every run)."""
    dists = Path(root) / "dists"
    path = dists / STATE_FILE
    if not os.path.lexists(path):
        return False
    try:
        state = userfile.load_json(path, "repo state file", top=dict)
    except ConfigError as e:  # only a marker: publishing again replaces it along with the whole dists/
        log.warning("%s; publishing the index again", e.message)
        return False
    if state != json.loads(json.dumps(desired_state(root, signer))):
        return False
    suite = dists / codename
    return (suite / "Release").is_file() and (signer is None or (suite / "InRelease").is_file())


def sweep_stale(root: Path) -> None:
    """Index folders of runs that died half way (a failed signing, a kill): never read by apt, only in the way."""
    for p in Path(root).glob(".dists.*"):
        shutil.rmtree(p, ignore_errors=True)


def publish_repo(root: Path, codename: str = "gpuforge", gpg_key: Optional[str] = None,
                 gpg_home: Optional[str] = None, signer: Optional[str] = None) -> RepoInfo:
    """(Re)generate Packages, Release and, with a gpg key, InRelease + Release.gpg for everything in pool/.

    The caller holds the dist lock; a failure leaves the published dists/ as it was and no temp folder behind.
    """
    root = Path(root)
    (root / "pool").mkdir(parents=True, exist_ok=True)
    sweep_stale(root)
    new = root / f".dists.new.{os.getpid()}"
    try:
        return _publish(root, new, codename, gpg_key, gpg_home, signer)
    finally:
        shutil.rmtree(new, ignore_errors=True)


def _publish(root: Path, new: Path, codename: str, gpg_key: Optional[str], gpg_home: Optional[str],
             signer: Optional[str]) -> RepoInfo:
    state = desired_state(root, (signer or gpg_key) if gpg_key else None)
    bindir = new / codename / COMPONENT / f"binary-{ARCH}"
    bindir.mkdir(parents=True)
    # Paths in Packages are relative to the repo root, so run from there.
    pk = subp.run(["apt-ftparchive", "packages", "pool"], cwd=str(root), timeout=600).stdout
    atomic.write_text(bindir / "Packages", pk)
    atomic.write_bytes(bindir / "Packages.gz", gzip.compress(pk.encode(), mtime=0))
    rel = subp.run(["apt-ftparchive", *release_conf(codename), "release", "."], cwd=str(new / codename),
                   timeout=120).stdout
    atomic.write_text(new / codename / "Release", rel)
    if gpg_key:
        sign_release(new / codename, gpg_key, gpg_home)
    atomic.write_text(new / STATE_FILE, json.dumps(state) + "\n")
    dists = root / "dists"
    old = root / f".dists.old.{os.getpid()}"
    if dists.exists():
        dists.rename(old)
    new.rename(dists)
    shutil.rmtree(old, ignore_errors=True)
    count = sum(1 for line in pk.splitlines() if line.startswith("Package: "))
    return RepoInfo(root, codename, bool(gpg_key), count)


def sign_release(suite_dir: Path, key: str, home: Optional[str]) -> None:
    base = ["gpg", "--batch", "--yes", "--pinentry-mode", "loopback", "--local-user", key]
    if home:
        base[1:1] = ["--homedir", home]
    subp.run(base + ["--clearsign", "-o", str(suite_dir / "InRelease"), str(suite_dir / "Release")], timeout=120)
    subp.run(base + ["--armor", "--detach-sign", "-o", str(suite_dir / "Release.gpg"), str(suite_dir / "Release")],
             timeout=120)


def export_public_key(key: str, home: Optional[str], dest: Path) -> Path:
    """The binary keyring a node puts in signed-by= (written to a temp name, then renamed)."""
    dest = Path(dest)
    tmp = dest.with_name(f".{dest.name}.tmp")
    argv = ["gpg", "--batch", "--yes"] + (["--homedir", home] if home else []) + ["--output", str(tmp), "--export", key]
    subp.run(argv, timeout=60)
    os.replace(tmp, dest)
    return dest
