"""Debian packages and sources for the node set-up: what dpkg has, which archive components are on, repositories
as data (validator/data/repos.yaml), and the apt actions that change them."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from validator.precompiled import parse_stanzas
from validator.schema import Reader, load_yaml
from validator.setup.plan import Action, Host, fetch, run, write

REPOS_FILE = Path(__file__).resolve().parents[1] / "data" / "repos.yaml"
SOURCES_LIST = "/etc/apt/sources.list"
DEB822_SOURCES = "/etc/apt/sources.list.d/debian.sources"
PKG_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")


@dataclass(frozen=True)
class AptRepo:
    """A third-party apt repository: where it is, its key, and the files that enable it on a node."""

    name: str
    url: str
    suite: str
    key_url: str
    keyring: str
    list_file: str

    def source_line(self) -> str:
        return f"deb [signed-by={self.keyring}] {self.url} {self.suite}\n"


@dataclass(frozen=True)
class PackageSet:
    packages: Tuple[str, ...]
    module: str


@dataclass(frozen=True)
class Repos:
    native_components: Tuple[str, ...]
    native_headers: str
    native_sets: Dict[str, PackageSet]
    native_owned: Tuple[str, ...]
    cuda_debian_packages: Tuple[str, ...]
    cuda_debian_version: str
    cuda_nvidia: dict  # raw fields; formatted per node by cuda_repo()
    docker_packages: Tuple[str, ...]
    toolkit: dict
    runtime_path: str
    daemon_json: str
    source: str


def _pkgs(r: Reader) -> Tuple[str, ...]:
    out = []
    for x in r.list(nonempty=True):
        out.append(x.str())
        if not PKG_NAME.match(out[-1]):
            raise x.fail("a Debian package name", out[-1])
    return tuple(out)


def load_repos(path: Path = REPOS_FILE) -> Repos:
    """Schema-checked repos data; a bad field names the file and key (exit 2)."""
    r = Reader(str(path), load_yaml(path)).mapping({"schema_version", "native", "cuda", "container"})
    n = r.key("native").mapping({"components", "headers", "package_sets", "owned"})
    sets = {}
    for name, s in n.key("package_sets").items():
        s.mapping({"packages", "module"})
        sets[name] = PackageSet(_pkgs(s.key("packages")), s.key("module").str())
    c = r.key("cuda").mapping({"debian", "nvidia"})
    nv = c.key("nvidia").mapping({"url", "suite", "key_url", "keyring", "list", "package", "distros"})
    ct = r.key("container").mapping({"docker_packages", "toolkit", "runtime_path", "daemon_json"})
    tk = ct.key("toolkit").mapping({"url", "suite", "key_url", "keyring", "list", "packages"})
    for reader in (nv, tk):
        for k in ("url", "key_url", "keyring", "list", "suite"):
            reader.key(k).str()
    return Repos(
        native_components=tuple(x.str() for x in n.key("components").list(nonempty=True)),
        native_headers=n.key("headers").str(),
        native_sets=sets,
        native_owned=tuple(x.str() for x in n.key("owned").list(nonempty=True)),
        cuda_debian_packages=_pkgs(c.key("debian").key("packages")),
        cuda_debian_version=c.key("debian").key("version").str(),
        cuda_nvidia=dict(nv.value),
        docker_packages=_pkgs(ct.key("docker_packages")),
        toolkit=dict(tk.value),
        runtime_path=ct.key("runtime_path").str(),
        daemon_json=ct.key("daemon_json").str(),
        source=str(path),
    )


# ------------------------------------------------------------------------------------------ reading the node


def installed(host: Host) -> Dict[str, str]:
    """package -> version of everything dpkg has installed."""
    out = {}
    for s in parse_stanzas(host.read("/var/lib/dpkg/status") or ""):
        if s.get("Status", "").endswith(" installed") and "Package" in s:
            out[s["Package"]] = s.get("Version", "")
    return out


def matching(installed_pkgs: Dict[str, str], patterns: Sequence[str]) -> List[str]:
    return sorted(p for p in installed_pkgs if any(fnmatch.fnmatchcase(p, pat) for pat in patterns))


def os_release(host: Host) -> Dict[str, str]:
    out = {}
    for line in (host.read("/etc/os-release") or "").splitlines():
        k, _, v = line.partition("=")
        if k.strip():
            out[k.strip()] = v.strip().strip('"')
    return out


def codename(host: Host) -> str:
    return os_release(host).get("VERSION_CODENAME", "")


def enable_components(text: str, components: Sequence[str], deb822: bool) -> str:
    """Sources text with the Debian archive entries carrying every component (others' lines untouched)."""
    out = []
    if deb822:
        for line in text.splitlines():
            if line.startswith("Components:"):
                have = line.split(":", 1)[1].split()
                line = "Components: " + " ".join(have + [c for c in components if c not in have])
            out.append(line)
        return "\n".join(out) + "\n"
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] in ("deb", "deb-src") and ("debian" in line and "nvidia" not in line):
            extra = [c for c in components if c not in parts[3:]]
            line = line.rstrip() + ("" if not extra else " " + " ".join(extra))
        out.append(line)
    return "\n".join(out) + "\n"


def plan_components(host: Host, components: Sequence[str]) -> List[Action]:
    """contrib/non-free/non-free-firmware on the Debian entries (deb822 debian.sources or sources.list)."""
    actions = []
    for path, deb822 in ((DEB822_SOURCES, True), (SOURCES_LIST, False)):
        text = host.read(path)
        if text is None or not text.strip():
            continue
        new = enable_components(text, components, deb822)
        if new != text:
            actions.append(write(path, new, why="enable " + " ".join(components)))
    return actions


def repo_from(raw: dict, name: str, **fields) -> AptRepo:
    f = {k: str(raw[k]).format(**fields) for k in ("url", "suite", "key_url", "keyring", "list") if k in raw}
    return AptRepo(name, f["url"], f.get("suite", "/"), f["key_url"], f["keyring"], f["list"])


def plan_repo(host: Host, repo: AptRepo) -> List[Action]:
    """Keyring + sources entry (then apt-get update); the keyring download comes first, so an unreachable
    repository fails before anything on the node changed."""
    actions: List[Action] = []
    if host.read(repo.keyring) is None:
        actions.append(fetch(repo.key_url, repo.keyring, f"{repo.name} signing key"))
    if host.read(repo.list_file) != repo.source_line():
        actions.append(write(repo.list_file, repo.source_line(), why=f"{repo.name} repository"))
    if actions:
        actions.append(apt_update())
    return actions


def apt_update() -> Action:
    return run(["apt-get", "update", "-q"], "refresh package lists", 900, apt=True)


def apt_install(packages: Sequence[str], why: str = "") -> Action:
    return run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "-o", "Dpkg::Options::=--force-confold",
                *packages], why, 3600, apt=True)


def apt_purge(packages: Sequence[str], why: str = "") -> Action:
    return run(["apt-get", "purge", "-y", "-q", *packages], why, 1800, apt=True)


def missing(host_pkgs: Dict[str, str], wanted: Sequence[str]) -> List[str]:
    return [p for p in wanted if p.split("=", 1)[0] not in host_pkgs]


def first_present(host: Host, paths: Sequence[str]) -> Optional[str]:
    return next((p for p in paths if host.path(p).exists()), None)
