"""Fetch Debian's nvidia-detect for a driver version with apt (private config and state), extract its
/usr/share/nvidia/*.ids and write validator/data/idlists/<driver-version>.yaml."""

from __future__ import annotations

import hashlib
import logging
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

from validator import atomic, subp
from validator.errors import GpuforgeError, UserError
from validator.idlists import IDLISTS_DIR, IdListSet, build_set, dump_set

log = logging.getLogger("gpuforge.idlists")

DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SUITES = ("bookworm", "trixie")
DEFAULT_VERSIONS = ("535.261.03", "550.163.01")
COMPONENTS = "main contrib non-free non-free-firmware"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
PACKAGE = "nvidia-detect"
IDS_DIR = "usr/share/nvidia"

Runner = Callable[..., subp.CmdResult]


@dataclass(frozen=True)
class FetchSettings:
    mirror: str = DEFAULT_MIRROR
    suites: Tuple[str, ...] = DEFAULT_SUITES
    keyring: str = KEYRING
    arch: str = "amd64"


@dataclass(frozen=True)
class FetchResult:
    set: IdListSet
    path: Path
    seconds: float


def sources_list(s: FetchSettings) -> str:
    """One deb line per suite with every component nvidia-detect may live in (non-free) and its deps."""
    signed = f"[signed-by={s.keyring}] " if s.keyring else ""
    return "".join(f"deb {signed}{s.mirror} {suite} {COMPONENTS}\n" for suite in s.suites)


def apt_options(work: Path, s: FetchSettings) -> List[str]:
    """-o options that keep apt's lists, cache and sources inside `work`: the host's apt is never touched."""
    return [
        "-o", f"Dir::State={work}/state",
        "-o", f"Dir::State::status={work}/state/status",
        "-o", f"Dir::Cache={work}/cache",
        "-o", f"Dir::Etc::SourceList={work}/sources.list",
        "-o", f"Dir::Etc::SourceParts={work}/empty",
        "-o", f"Dir::Etc::PreferencesParts={work}/empty",
        "-o", f"Dir::Etc::Preferences={work}/empty/none",
        "-o", f"APT::Architecture={s.arch}",
        "-o", "Debug::NoLocking=1",
        "-o", "APT::Sandbox::User=root",
        "-o", "Acquire::Languages=none",
        "-o", "Acquire::Retries=3",
    ]


def prepare(work: Path, s: FetchSettings) -> None:
    for d in ("state/lists/partial", "cache/archives/partial", "empty", "deb", "x"):
        (work / d).mkdir(parents=True, exist_ok=True)
    (work / "state" / "status").touch()
    (work / "sources.list").write_text(sources_list(s))


_MADISON = re.compile(r"^\s*(\S+)\s*\|\s*(\S+)\s*\|\s*(\S+)\s+(\S+?)(?:/\S+)?\s+\S+\s+Packages\s*$")


def parse_madison(text: str) -> List[Tuple[str, str]]:
    """`apt-cache madison` lines -> [(package version, suite)]."""
    out = []
    for line in text.splitlines():
        m = _MADISON.match(line)
        if m:
            out.append((m.group(2), m.group(4)))
    return out


def pick_version(wanted: str, available: Sequence[Tuple[str, str]]) -> Tuple[str, str]:
    """Match '535.261.03' (upstream) or '535.261.03-1' (exact Debian version) against madison's answer."""
    for ver, suite in available:
        if ver == wanted or ver.split("-")[0].split(":")[-1] == wanted:
            return ver, suite
    have = ", ".join(f"{v} ({s})" for v, s in available) or "none"
    raise UserError(f"{PACKAGE} {wanted} is not in the archive", hint=f"available: {have}")


def upstream(pkg_version: str) -> str:
    return pkg_version.split(":")[-1].split("-")[0]


def read_ids(extracted: Path) -> dict:
    d = extracted / IDS_DIR
    files = {p.name: p.read_text() for p in sorted(d.glob("*.ids"))}
    if not files:
        raise GpuforgeError(f"no {IDS_DIR}/*.ids in the extracted {PACKAGE} package ({extracted})")
    return files


class Fetcher:
    """One apt session (one `apt-get update`) that can fetch several nvidia-detect versions."""

    def __init__(self, work: Path, settings: FetchSettings = FetchSettings(), run: Runner = subp.run):
        self.work = Path(work)
        self.s = settings
        self.run = run
        self.opts = apt_options(self.work, settings)
        self._available: Optional[List[Tuple[str, str]]] = None

    def update(self) -> None:
        prepare(self.work, self.s)
        self.run(["apt-get", *self.opts, "-q", "update"], timeout=600)

    def available(self) -> List[Tuple[str, str]]:
        if self._available is None:
            res = self.run(["apt-cache", *self.opts, "madison", PACKAGE], timeout=120)
            self._available = parse_madison(res.stdout)
        return self._available

    def fetch(self, wanted: str, out_dir: Path = IDLISTS_DIR) -> FetchResult:
        t0 = time.monotonic()
        pkg_version, suite = pick_version(wanted, self.available())
        deb_dir = self.work / "deb"
        self.run(["apt-get", *self.opts, "-q", "download", f"{PACKAGE}={pkg_version}"], cwd=str(deb_dir), timeout=600)
        debs = sorted(deb_dir.glob(f"{PACKAGE}_*{upstream(pkg_version)}*.deb"))
        if not debs:
            raise GpuforgeError(f"apt-get download left no {PACKAGE} .deb in {deb_dir}")
        deb = debs[-1]
        dest = self.work / "x" / pkg_version
        self.run(["dpkg-deb", "-x", str(deb), str(dest)], timeout=120)
        s = build_set(read_ids(dest), upstream(pkg_version), pkg_version, suite)
        extra = {
            "deb": deb.name,
            "deb_sha256": hashlib.sha256(deb.read_bytes()).hexdigest(),
            "mirror": self.s.mirror,
        }
        path = atomic.write_text(Path(out_dir) / f"{s.driver_version}.yaml", dump_set(s, extra))
        return FetchResult(s, path, time.monotonic() - t0)


def fetch_versions(
    versions: Sequence[str],
    out_dir: Path = IDLISTS_DIR,
    settings: FetchSettings = FetchSettings(),
    run: Runner = subp.run,
    work: Optional[Path] = None,
) -> List[FetchResult]:
    """Fetch each version's lists in one private apt session (a temp dir unless `work` is given)."""
    if work is not None:
        f = Fetcher(Path(work), settings, run)
        f.update()
        return [f.fetch(v, out_dir) for v in versions]
    with tempfile.TemporaryDirectory(prefix="gpuforge-idlists-") as tmp:
        f = Fetcher(Path(tmp), settings, run)
        f.update()
        return [f.fetch(v, out_dir) for v in versions]
