"""Driver, kernel and matrix definitions (drivers/*.yaml, kernels/*.yaml, matrix.yaml) as frozen dataclasses.

Each loader checks the schema and raises ConfigError(file, key path, expected) on a bad field.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from validator import userfile
from validator.errors import ConfigError
from validator.schema import Reader, load_yaml

FLAVOURS = ("proprietary", "open")
_DEB_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_DEB_VERSION = re.compile(r"^(\d+:)?[0-9][A-Za-z0-9.+~-]*$")
_RELATION = re.compile(r"^[a-z0-9][a-z0-9+.-]+( \((=|>=|<=|>>|<<) [0-9][A-Za-z0-9.+~:-]*\))?$")
_DRIVER_VERSION = re.compile(r"^\d{3}\.\d+(\.\d+)?$")
_ABI = re.compile(r"^(\d+)\.(\d+)[.\d]*[-+][A-Za-z0-9.+-]+$")
_SERIES = re.compile(r"^\d+\.\d+$")
_SUITE = re.compile(r"^[a-z]+(-[a-z]+)?$")
_BASE_SUITE = re.compile(r"^[a-z]+$")  # what a base image is made from: bookworm, trixie (no -security)
# Values that reach apt sources, docker tags, file names or shell scripts: no spaces, quotes or control characters.
_URL = re.compile(r"^(https?|file)://[A-Za-z0-9._~:/?#@!$&*+,;=%-]+$")
_CODENAME = re.compile(r"^[a-z0-9][a-z0-9.-]{0,63}$")
_KEY_ID = re.compile(r"^[^\x00-\x1f\x7f]{1,200}$")
_PATH = re.compile(r"^[^\x00-\x1f\x7f]{1,4096}$")


def series_key(series: str) -> Tuple[int, int]:
    major, minor = series.split(".")[:2]
    return int(major), int(minor)


@dataclass(frozen=True)
class PackageRef:
    """An exact Debian package: name and version (pinned, so the cache key is known before building)."""

    name: str
    version: str

    def pin(self) -> str:
        return f"{self.name}={self.version}"


@dataclass(frozen=True)
class FlavourDef:
    name: str  # proprietary | open
    source: PackageRef  # the module source package (ships /usr/src/<name>.tar.xz)
    provides: str  # virtual package the user-space Recommends (nvidia-kernel-535.261.03)
    # Debian renames the module files (nvidia.ko -> nvidia-current.ko ...) and its *-kernel-support package's
    # modprobe.d says `install nvidia modprobe -i nvidia-current`: we install under the same names.
    module_prefix: str = "nvidia-current"
    depends: Tuple[str, ...] = ()  # flavour-specific relations (nvidia-kernel-support vs nvidia-open-kernel-support)


@dataclass(frozen=True)
class DriverDef:
    id: str  # file stem: 535.261.03, tesla-535.216.03
    version: str  # upstream version: 535.261.03
    branch: int
    suite: str  # Debian suite the source comes from
    flavours: Dict[str, FlavourDef]
    userspace: Tuple[str, ...]  # Debian relations the kmod package Depends on
    conflicts: Tuple[str, ...]  # DKMS packages that would build the same modules
    kernel_min: Optional[str] = None  # oldest kernel series it builds for ("5.4"), None = no known limit
    kernel_max: Optional[str] = None  # newest kernel series it builds for ("6.8")
    file: str = ""

    def __hash__(self):
        return hash((self.id, self.version))


@dataclass(frozen=True)
class KernelDef:
    abi: str  # 6.1.0-54-cloud-amd64 (uname -r)
    version: str  # Debian package version of headers and image: 6.1.190-1
    suite: str  # where the packages are: bookworm-security
    build_suite: str  # base image suite to build in: bookworm
    headers: str  # linux-headers-<abi>
    image: str  # linux-image-<abi> (System.map + in-tree modules for the symbol check)
    kbuild: str  # linux-kbuild-<series> (sign-file)
    file: str = ""

    @property
    def series(self) -> str:
        m = _ABI.fullmatch(self.abi)
        if not m:  # load_kernel checked it; a hand-made KernelDef may not be
            raise ValueError(f"not a kernel ABI: {self.abi!r}")
        return f"{m.group(1)}.{m.group(2)}"


@dataclass(frozen=True)
class Rule:
    """An include/exclude entry: glob patterns on kernel ABI, driver id and flavour."""

    kernel: str = "*"
    driver: str = "*"
    flavour: str = "*"
    reason: str = ""


@dataclass(frozen=True)
class Settings:
    mirror: str = "http://deb.debian.org/debian"
    security_mirror: str = "http://deb.debian.org/debian-security"
    dist: str = "dist"
    jobs: int = 1
    make_jobs: int = 2
    sign_key: Optional[str] = None  # PEM private key for kernel sign-file (module signing)
    sign_cert: Optional[str] = None  # its X.509 certificate (PEM or DER)
    gpg_key: Optional[str] = None  # gpg key id/fingerprint that signs the apt repo's InRelease
    gpg_home: Optional[str] = None  # GNUPGHOME holding that key
    repo_codename: str = "gpuforge"


@dataclass(frozen=True)
class MatrixConfig:
    file: str
    fleet: Tuple[str, ...]  # GPU model names (catalog names or families)
    kernels: Tuple[KernelDef, ...]
    drivers: Tuple[DriverDef, ...]
    flavours: Tuple[str, ...]
    include: Tuple[Rule, ...]
    exclude: Tuple[Rule, ...]
    settings: Settings
    expected_failures: Tuple[Rule, ...] = ()  # cells known not to compile: reported, but not a failed run

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- loaders


def _relations(r: Reader) -> Tuple[str, ...]:
    out = []
    for item in r.list():
        s = item.str()
        if not _RELATION.fullmatch(s):
            raise item.fail("a Debian relation like 'nvidia-smi (= 535.261.03-1)'", s)
        out.append(s)
    return tuple(out)


def _package(r: Reader) -> PackageRef:
    r.mapping(allowed={"package", "version"})
    name = r.key("package").str()
    if not _DEB_NAME.fullmatch(name):
        raise r.key("package").fail("a Debian package name", name)
    version = r.key("version").str()
    if not _DEB_VERSION.fullmatch(str(version)):
        raise r.key("version").fail("an exact Debian version like 535.261.03-1", version)
    return PackageRef(name, version)


def _series(r: Reader) -> Optional[str]:
    if r.value is None:
        return None
    v = r.value  # a float would turn "6.10" into 6.1: demand a string
    if not isinstance(v, str) or not _SERIES.fullmatch(v):
        raise r.fail("a kernel series like \"6.8\" (quoted) or null", r.value)
    return v


def load_driver(path: Union[str, Path]) -> DriverDef:
    path = Path(path)
    r = Reader(str(path), load_yaml(path)).mapping(
        allowed={"version", "branch", "suite", "flavours", "userspace", "conflicts", "kernel_min", "kernel_max",
                 "notes"})
    version = r.key("version").str()
    if not _DRIVER_VERSION.fullmatch(version):
        raise r.key("version").fail("an NVIDIA driver version like 535.261.03", version)
    branch = r.key("branch").int(lo=100, hi=999)
    if not version.startswith(f"{branch}."):
        raise r.key("branch").fail(f"the branch of version {version} ({version.split('.')[0]})", branch)
    suite = r.key("suite").str()
    if not _SUITE.fullmatch(suite):
        raise r.key("suite").fail("a Debian suite like bookworm or bookworm-backports", suite)
    flavours = {}
    for name, fr in r.key("flavours").items():
        if name not in FLAVOURS:
            raise fr.fail(f"a flavour name ({', '.join(FLAVOURS)})", name)
        fr.mapping(allowed={"source", "provides", "module_prefix", "depends"})
        provides = fr.key("provides").str()
        if not _DEB_NAME.fullmatch(provides):
            raise fr.key("provides").fail("a Debian package name", provides)
        prefix = fr.key("module_prefix").str()
        if not re.fullmatch(r"nvidia[a-z0-9-]*", prefix):
            raise fr.key("module_prefix").fail("a module file prefix like nvidia-current", prefix)
        flavours[name] = FlavourDef(name, _package(fr.key("source")), provides, prefix, _relations(fr.key("depends", [])))
    if not flavours:
        raise r.key("flavours").fail("at least one flavour")
    return DriverDef(
        id=path.stem, version=version, branch=branch, suite=suite, flavours=flavours,
        userspace=_relations(r.key("userspace", [])), conflicts=_relations(r.key("conflicts", [])),
        kernel_min=_series(r.key("kernel_min", None)), kernel_max=_series(r.key("kernel_max", None)), file=str(path),
    )


def load_kernel(path: Union[str, Path]) -> KernelDef:
    path = Path(path)
    r = Reader(str(path), load_yaml(path)).mapping(
        allowed={"abi", "version", "suite", "build_suite", "headers", "image", "kbuild", "notes"})
    abi = r.key("abi").str()
    m = _ABI.fullmatch(abi)
    if not m:
        raise r.key("abi").fail("a kernel ABI (uname -r) like 6.1.0-54-cloud-amd64", abi)
    version = r.key("version").str()
    if not _DEB_VERSION.fullmatch(version):
        raise r.key("version").fail("the exact Debian version of the headers/image packages, like 6.1.190-1", version)
    suite = r.key("suite").str()
    if not _SUITE.fullmatch(suite):
        raise r.key("suite").fail("a Debian suite like bookworm-security", suite)
    build_suite = r.key("build_suite", suite.split("-")[0]).str()
    if not _BASE_SUITE.fullmatch(build_suite):
        raise r.key("build_suite").fail("a Debian release to build in, like bookworm or trixie", build_suite)
    series = f"{m.group(1)}.{m.group(2)}"
    names = {}
    for key, default in (("headers", f"linux-headers-{abi}"), ("image", f"linux-image-{abi}"),
                         ("kbuild", f"linux-kbuild-{series}")):
        v = r.key(key, default).str()
        if not _DEB_NAME.fullmatch(v):
            raise r.key(key).fail("a Debian package name", v)
        names[key] = v
    return KernelDef(abi=abi, version=version, suite=suite, build_suite=build_suite, file=str(path), **names)


def _rules(r: Reader) -> Tuple[Rule, ...]:
    out = []
    for item in r.list():
        item.mapping(allowed={"kernel", "driver", "flavour", "reason"})
        out.append(Rule(**{k: v.str() for k, v in item.items()}))
    return tuple(out)


_SETTING_FORMS = {
    "mirror": (_URL, "an http(s):// or file:// mirror URL without spaces or quotes"),
    "security_mirror": (_URL, "an http(s):// or file:// mirror URL without spaces or quotes"),
    "dist": (_PATH, "a folder path (no control characters)"),
    "sign_key": (_PATH, "a file path (no control characters)"),
    "sign_cert": (_PATH, "a file path (no control characters)"),
    "gpg_key": (_KEY_ID, "a gpg key id, fingerprint or user id (one line)"),
    "gpg_home": (_PATH, "a folder path (no control characters)"),
    "repo_codename": (_CODENAME, "an apt codename: lowercase letters, digits, '.', '-'"),
}


def check_setting(file: str, key: str, value: Any) -> Any:
    """One setting checked by its form (matrix.yaml or a CLI override): ConfigError naming settings.<key>."""
    if value is None or key not in _SETTING_FORMS:
        return value
    pattern, expected = _SETTING_FORMS[key]
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ConfigError(file, f"settings.{key}", expected, value)
    return value


def _settings(r: Reader) -> Settings:
    allowed = set(Settings.__dataclass_fields__)
    r.mapping(allowed=allowed)
    vals: Dict[str, Any] = {}
    for k, v in r.items():
        if k in ("jobs", "make_jobs"):
            vals[k] = v.int(lo=1, hi=64)
        elif v.value is None:
            vals[k] = None
        else:
            vals[k] = check_setting(r.file, k, v.str())
    return Settings(**vals)


def _unique(r: Reader, items: list, what: str) -> None:
    """A name listed twice would make duplicate cells: name the file, both indexes."""
    seen: Dict[str, int] = {}
    for i, name in enumerate(items):
        if name in seen:
            raise ConfigError(r.file, f"{r.path}[{i}]", f"a {what} not listed before ({name} is already {r.path}[{seen[name]}])",
                              name)
        seen[name] = i


def load_matrix(path: Union[str, Path, None] = None) -> MatrixConfig:
    """Load matrix.yaml and the driver/kernel definitions it names (from drivers/ and kernels/ next to it)."""
    path = Path(path) if path else default_matrix_path()
    r = Reader(str(path), load_yaml(path)).mapping(
        allowed={"fleet", "kernels", "drivers", "flavours", "include", "exclude", "expected_failures", "settings", "drivers_dir",
                 "kernels_dir"})
    base = path.parent
    ddir = base / r.key("drivers_dir", "drivers").str()
    kdir = base / r.key("kernels_dir", "kernels").str()
    fleet = tuple(x.str() for x in r.key("fleet").list(nonempty=True))
    _unique(r.key("fleet"), list(fleet), "GPU model")
    _unique(r.key("kernels"), [str(x.value) for x in r.key("kernels").list(nonempty=True)], "kernel")
    _unique(r.key("drivers"), [str(x.value) for x in r.key("drivers").list(nonempty=True)], "driver")
    kernels = []
    for item in r.key("kernels").list(nonempty=True):
        name = item.str()
        f = kdir / f"{name}.yaml"
        if not f.is_file():
            known = sorted(p.stem for p in kdir.glob("*.yaml"))
            raise item.fail(f"a kernel defined in {kdir}/ ({', '.join(known) or 'none'})", name)
        kernels.append(load_kernel(f))
    drivers = []
    for item in r.key("drivers").list(nonempty=True):
        name = str(item.value)
        f = ddir / f"{name}.yaml"
        if not f.is_file():
            known = sorted(p.stem for p in ddir.glob("*.yaml"))
            raise item.fail(f"a driver defined in {ddir}/ ({', '.join(known) or 'none'})", name)
        drivers.append(load_driver(f))
    flavours = tuple(x.str(choices=FLAVOURS) for x in r.key("flavours", list(FLAVOURS)).list(nonempty=True))
    _unique(r.key("flavours", list(FLAVOURS)), list(flavours), "flavour")
    return MatrixConfig(
        file=str(path), fleet=fleet, kernels=tuple(kernels), drivers=tuple(drivers), flavours=flavours,
        include=_rules(r.key("include", [])), exclude=_rules(r.key("exclude", [])),
        settings=_settings(r.key("settings", {})), expected_failures=_rules(r.key("expected_failures", [])),
    )


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def default_matrix_path() -> Path:
    """The matrix that ships with gpuforge (with its drivers/ and kernels/ next to it)."""
    return repo_root() / "matrix.yaml"


CONFIG_ENV = "GPUFORGE_CONFIG"
CONFIG_ORDER = "--config, else ./matrix.yaml, else $GPUFORGE_CONFIG, else the packaged default"


@dataclass(frozen=True)
class ConfigChoice:
    path: Path
    origin: str  # --config | ./matrix.yaml | $GPUFORGE_CONFIG | packaged default

    def describe(self) -> str:
        return f"{self.path} ({self.origin})"


def find_matrix(explicit: Union[str, Path, None] = None, cwd: Optional[Path] = None,
                env: Optional[Mapping[str, str]] = None) -> ConfigChoice:
    """The matrix file from where the user stands: --config, ./matrix.yaml, $GPUFORGE_CONFIG, the packaged default."""
    env = os.environ if env is None else env
    if explicit:
        return ConfigChoice(Path(explicit), "--config")
    local = (cwd or Path.cwd()) / "matrix.yaml"
    if local.is_file():
        return ConfigChoice(local, "./matrix.yaml")
    if env.get(CONFIG_ENV):
        p = Path(env[CONFIG_ENV])
        kind = userfile.kind(p)
        if kind != "a regular file":
            raise ConfigError(f"${CONFIG_ENV}", "(file)", "a matrix file that exists" if kind is None else
                              f"a regular matrix file, not {kind}", str(p))
        return ConfigChoice(p, f"${CONFIG_ENV}")
    return ConfigChoice(default_matrix_path(), "packaged default")
