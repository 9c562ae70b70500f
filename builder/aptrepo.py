"""dist/apt: a signed-or-not apt repository (dists/<codename>/main/binary-amd64) over dist/apt/pool.

Index files are generated into a fresh folder and swapped in, so apt never reads a half-written index.
Node sources line: `deb [signed-by=KEYRING] file:/path/to/dist/apt gpuforge main` (or http:// where served).
"""

from __future__ import annotations

import gzip
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from validator import atomic, subp

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


def publish_repo(root: Path, codename: str = "gpuforge", gpg_key: Optional[str] = None,
                 gpg_home: Optional[str] = None) -> RepoInfo:
    """(Re)generate Packages, Release and, with a gpg key, InRelease + Release.gpg for everything in pool/."""
    root = Path(root)
    (root / "pool").mkdir(parents=True, exist_ok=True)
    new = root / f".dists.new.{os.getpid()}"
    shutil.rmtree(new, ignore_errors=True)
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
