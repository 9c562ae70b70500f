"""The default matrix's kmod build, shared by every e2e test that needs it (built once per session, see conftest):
535.261.03 proprietary + open for 6.1.0-54-cloud-amd64, modules signed with a throwaway key, repo signed with a
throwaway gpg key. The open cell fails on purpose (pci_resize_resource, facts.md)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Tuple

from validator import subp

ROOT = Path(__file__).resolve().parents[2]
ABI = "6.1.0-54-cloud-amd64"
PROP = f"535.261.03-proprietary@{ABI}"
OPEN = f"535.261.03-open@{ABI}"
PKG = f"gpuforge-nvidia-kmod-proprietary-535.261.03-{ABI}"
GPG_UID = "gpuforge test repo <repo@gpuforge.invalid>"


def gpuforge(*args, timeout=2400):
    """The installed console script, from the repository root (as `make images` runs it)."""
    return subp.run([str(Path(sys.executable).parent / "gpuforge"), *args], cwd=str(ROOT), timeout=timeout, check=False)


@dataclass
class DriversBuild:
    res: subp.CmdResult
    report: dict
    dist: Path
    elapsed: float
    keys: Tuple[Path, Path]  # (folder with signing.key/.crt, GNUPGHOME)

    def as_tuple(self):
        return self.res, self.report, self.dist, self.elapsed, self.keys


def workdir():
    """Outside pytest's basetemp (other sessions on this machine rotate it). GPUFORGE_E2E_DIR keeps it (and its
    cache) between runs when iterating; otherwise a fresh folder, removed afterwards."""
    keep = os.environ.get("GPUFORGE_E2E_DIR")
    d = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="gpuforge-e2e-", dir="/var/tmp"))
    d.mkdir(parents=True, exist_ok=True)
    yield d
    if not keep:
        shutil.rmtree(d, ignore_errors=True)


def keys(d: Path) -> Tuple[Path, Path]:
    """A throwaway module-signing key/cert and a throwaway gpg key for the repo (reused within the work folder)."""
    d = d / "keys"
    home = d / "gnupg"
    if not (d / "signing.crt").is_file():
        d.mkdir(exist_ok=True)
        subp.run(["openssl", "req", "-new", "-nodes", "-utf8", "-sha256", "-days", "2", "-batch", "-x509",
                  "-subj", "/CN=gpuforge test module signing/", "-newkey", "rsa:2048",
                  "-keyout", str(d / "signing.key"), "-out", str(d / "signing.crt")], timeout=120)
        home.mkdir(mode=0o700, exist_ok=True)
        subp.run(["gpg", "--homedir", str(home), "--batch", "--passphrase", "", "--quick-gen-key", GPG_UID,
                  "rsa2048", "sign", "2d"], timeout=300)
    return d, home


def build(work: Path) -> DriversBuild:
    kd, home = keys(work)
    dist = work / "dist"
    t0 = time.monotonic()
    res = gpuforge("build", "drivers", "--dist", str(dist), "--sign-key", str(kd / "signing.key"),
                   "--sign-cert", str(kd / "signing.crt"), "--gpg-key", GPG_UID, "--gpg-home", str(home), "--json")
    elapsed = time.monotonic() - t0
    report = json.loads(res.stdout) if res.stdout.strip().startswith("{") else None
    assert report is not None, f"no JSON report (rc {res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return DriversBuild(res, report, dist, elapsed, (kd, home))
