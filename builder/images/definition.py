"""Golden image definitions (images/*.yaml): a frozen dataclass, loaded and schema-checked before any work starts."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from validator.errors import ConfigError, UserError
from validator.schema import load_yaml

SUITES = ("bookworm", "trixie")
FORMATS = ("raw", "qcow2", "netboot")
# One kernel command-line token: no shell or GRUB/iPXE metacharacters, no spaces (it lands in grub.cfg and boot.ipxe).
CMDLINE_TOKEN = re.compile(r"^[A-Za-z0-9_.,:=/+@-]+$")
PACKAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:-]+)?$")
IMAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
SIZE = re.compile(r"^([0-9]{1,7})([MG])$")
DISK_MIN, DISK_MAX = 1 << 30, 4096 << 30  # 1G .. 4096G: a golden image, not a disk farm
NGC_REF = re.compile(r"^[a-z0-9][a-z0-9._/-]*:[A-Za-z0-9._-]+$")  # name:tag (a tag is required: builds are pinned)


@dataclass(frozen=True)
class ImageDef:
    """What an image is made of; the cache key is computed from this plus the files it names."""

    name: str
    suite: str
    kernel: str  # kernel ABI, e.g. 6.1.0-54-cloud-amd64, defined in kernels/*.yaml
    tuning: str  # profile name: kernels/tuning/<tuning>.yaml
    drivers: tuple = ()  # driver ids from drivers/*.yaml
    packages: tuple = ()  # extra Debian packages
    formats: tuple = FORMATS
    disk_size: str = "3G"
    cmdline_extra: tuple = ()  # extra kernel args beyond the tuning profile's (console etc.)
    disable_services: tuple = ()  # units masked in the image (lean first boot)
    ngc_images: tuple = ()  # NGC images pre-pulled into the image, "pytorch:24.01-py3" (validator/data/ngc.yaml)
    path: str = field(default="", compare=False)

    def to_json(self) -> str:
        d = asdict(self)
        d.pop("path")
        if not d["ngc_images"]:  # an image without NGC images keeps the JSON (and cache key) it had before the field
            d.pop("ngc_images")
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ImageDef":
        d = json.loads(text)
        for k in ("drivers", "packages", "formats", "cmdline_extra", "disable_services", "ngc_images"):
            d[k] = tuple(d.get(k, ()))
        return cls(**d)

    @property
    def disk_bytes(self) -> int:
        m = SIZE.fullmatch(self.disk_size)
        if not m:
            raise ValueError(f"disk_size {self.disk_size!r} is not a size like 3G")
        n = int(m.group(1))
        return n * (1 << 30 if m.group(2) == "G" else 1 << 20)


def check_cmdline(tokens, path: str, key: str) -> tuple:
    """Each token must be a plain kernel parameter: shell metacharacters are refused (they would reach grub.cfg/iPXE)."""
    if isinstance(tokens, str):
        tokens = tokens.split()
    if not isinstance(tokens, (list, tuple)):
        raise ConfigError(path, key, "a list of kernel parameters", tokens)
    out = []
    for i, t in enumerate(tokens):
        if not isinstance(t, str) or not CMDLINE_TOKEN.fullmatch(t):
            raise ConfigError(
                path, f"{key}[{i}]", "a kernel parameter of letters, digits and _.,:=/+@- only (no spaces or shell metacharacters)", t
            )
        out.append(t)
    return tuple(out)


def _str_list(raw: dict, key: str, path: str, pattern: Optional[re.Pattern] = None, what: str = "a list of strings") -> tuple:
    v = raw.get(key, [])
    if v is None:
        v = []
    if not isinstance(v, list):
        raise ConfigError(path, key, what, v)
    for i, x in enumerate(v):
        if not isinstance(x, str) or (pattern is not None and not pattern.fullmatch(x)):
            raise ConfigError(path, f"{key}[{i}]", what, x)
    return tuple(v)


def parse_image(raw: object, path: str) -> ImageDef:
    """Check every field of one definition (types and shapes only; references are checked by resolve())."""
    if not isinstance(raw, dict):
        raise ConfigError(path, "<top>", "a mapping of image fields", type(raw).__name__)
    known = {"name", "suite", "kernel", "tuning", "drivers", "packages", "formats", "disk_size", "cmdline_extra", "disable_services", "description",
             "ngc_images"}
    for k in raw:
        if k not in known:
            raise ConfigError(path, str(k), "one of " + ", ".join(sorted(known)), k)
    name = raw.get("name", Path(path).stem)
    if not isinstance(name, str) or not IMAGE_NAME.fullmatch(name):
        raise ConfigError(path, "name", "lowercase letters, digits, _ . -", name)
    suite = raw.get("suite", "bookworm")
    if suite not in SUITES:
        raise ConfigError(path, "suite", "one of " + ", ".join(SUITES), suite)
    for k in ("kernel", "tuning"):
        if not isinstance(raw.get(k), str) or not raw.get(k):
            raise ConfigError(path, k, "a non-empty string", raw.get(k))
    formats = _str_list(raw, "formats", path, what="a list of " + "/".join(FORMATS)) or FORMATS
    for i, f in enumerate(formats):
        if f not in FORMATS:
            raise ConfigError(path, f"formats[{i}]", "one of " + ", ".join(FORMATS), f)
    size = str(raw.get("disk_size", "3G"))
    m = SIZE.fullmatch(size)
    nbytes = int(m.group(1)) << (30 if m.group(2) == "G" else 20) if m else 0
    if not m or not DISK_MIN <= nbytes <= DISK_MAX:
        raise ConfigError(path, "disk_size", "a size like 3G or 2048M, from 1G to 4096G", raw.get("disk_size"))
    return ImageDef(
        name=name,
        suite=suite,
        kernel=raw["kernel"],
        tuning=raw["tuning"],
        drivers=_str_list(raw, "drivers", path),
        packages=_str_list(raw, "packages", path, PACKAGE_NAME, "a list of Debian package names (name or name=version)"),
        formats=formats,
        disk_size=size,
        cmdline_extra=check_cmdline(raw.get("cmdline_extra", []) or [], path, "cmdline_extra"),
        disable_services=_str_list(raw, "disable_services", path, re.compile(r"^[A-Za-z0-9@_.-]+$"), "a list of systemd unit names"),
        ngc_images=_str_list(raw, "ngc_images", path, NGC_REF, "a list of NGC images as name:tag (e.g. pytorch:24.01-py3)"),
        path=path,
    )


def load_image_file(path: Path) -> ImageDef:
    if not Path(path).exists():
        raise UserError(f"{path}: no such image definition")
    return parse_image(load_yaml(path, mapping=False, what="image definition"), str(path))


def image_paths(images_dir: Path) -> list:
    return sorted(p for p in Path(images_dir).glob("*.yaml") if not p.name.startswith("."))


def find_image(images_dir: Path, name: str) -> ImageDef:
    """An image by name (or a path to a YAML file); a wrong name lists the ones that exist."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return load_image_file(p)
    names = []
    for path in image_paths(images_dir):
        d = load_image_file(path)
        if d.name == name:
            return d
        names.append(d.name)
    raise UserError(f"no image named {name!r} in {images_dir}", hint="known images: " + (", ".join(names) or "none"))
