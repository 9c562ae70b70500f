"""Read what an image definition names: kernel ABIs (kernels/*.yaml), driver releases (drivers/*.yaml), tuning profiles.

These files belong to the builder (kernels, drivers) and the validator (tuning); this module only looks names up,
tolerating both a single mapping per file and a list under a top-level key, so the image build never keeps a second list.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from validator.errors import ConfigError, UserError


def _entries(path: Path, list_key: str) -> list:
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(str(path), "<yaml>", "valid YAML", str(e).splitlines()[0]) from None
    if isinstance(raw, dict) and isinstance(raw.get(list_key), list):
        return [e for e in raw[list_key] if isinstance(e, dict)]
    if isinstance(raw, list):
        return [e for e in raw if isinstance(e, dict)]
    return [raw] if isinstance(raw, dict) else []


@dataclass(frozen=True)
class KernelRef:
    abi: str
    image_package: str
    version: str  # exact Debian version of the image package ("" = whatever the suite has)
    suite: str
    source: str  # file it came from


def _builder_config():
    try:
        from builder import config
        return config if hasattr(config, "load_kernel") and hasattr(config, "load_driver") else None
    except ImportError:
        return None


def load_kernels(kernels_dir: Path) -> dict:
    """abi -> KernelRef for every kernel the farm defines (the builder's loader when present; tuning/ is skipped)."""
    out = {}
    cfg = _builder_config()
    for p in sorted(Path(kernels_dir).glob("*.y*ml")):
        if cfg is not None:
            k = cfg.load_kernel(p)
            out[k.abi] = KernelRef(k.abi, k.image, k.version, k.suite, str(p))
            continue
        for e in _entries(p, "kernels"):
            abi = e.get("abi")
            if isinstance(abi, str):
                img = e.get("image") if isinstance(e.get("image"), str) else f"linux-image-{abi}"
                out[abi] = KernelRef(abi, img, str(e.get("version", "")), str(e.get("suite", "")), str(p))
    return out


@dataclass(frozen=True)
class DriverRef:
    id: str  # drivers/<id>.yaml
    version: str
    flavours: tuple
    userspace: tuple  # Debian relations of the user space of the same version (nvidia-smi (= 535.261.03-1), ...)
    source: str


def load_drivers(drivers_dir: Path) -> dict:
    """id (file stem) -> DriverRef (the builder's loader when present)."""
    out = {}
    cfg = _builder_config()
    for p in sorted(Path(drivers_dir).glob("*.y*ml")):
        if cfg is not None:
            d = cfg.load_driver(p)
            out[d.id] = DriverRef(d.id, d.version, tuple(d.flavours), tuple(d.userspace), str(p))
            continue
        for e in _entries(p, "drivers"):
            if "version" in e:
                fl = e.get("flavours") or {"proprietary": {}}
                out[p.stem] = DriverRef(p.stem, str(e["version"]), tuple(fl), tuple(str(x) for x in e.get("userspace") or ()), str(p))
    return out


def split_driver_ref(ref: str) -> tuple:
    """"535.261.03" or "535.261.03/open" -> (id, flavour); proprietary is the default flavour."""
    did, _, flavour = ref.partition("/")
    return did, (flavour or "proprietary")


@dataclass(frozen=True)
class Tuning:
    """The parts of a tuning profile an image bakes; `text` is the file itself, copied verbatim to /etc/gpuforge/."""

    name: str
    path: str
    text: str
    cmdline: tuple
    sysctl: tuple  # ((key, value), ...) in file order
    governor: Optional[str]
    thp: Optional[str]
    thp_defrag: Optional[str]
    max_cstate: Optional[int]
    turbo: Optional[bool]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def _pick(d: dict, *keys):
    for k in keys:
        cur = d
        ok = True
        for part in k.split("."):
            if isinstance(cur, dict) and part in cur:
                cur = cur[part]
            else:
                ok = False
                break
        if ok:
            return cur
    return None


def load_tuning(tuning_dir: Path, name: str) -> Tuning:
    """Read kernels/tuning/<name>.yaml (the validator's file) and pull out what is baked; cmdline tokens are checked."""
    from builder.images.definition import check_cmdline

    path = Path(tuning_dir) / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in Path(tuning_dir).glob("*.yaml"))
        raise UserError(f"tuning profile {name!r} not found: no {path}", hint="known profiles: " + (", ".join(known) or "none"))
    text = path.read_text()
    try:
        from validator.tuning import load_profile  # the validator's schema is the one that counts
    except ImportError:
        load_profile = None
    if load_profile is not None:
        prof = load_profile(path)
        return Tuning(
            name=name, path=str(path), text=text,
            cmdline=check_cmdline(list(prof.cmdline), str(path), "cmdline"),
            sysctl=tuple((str(k), str(v)) for k, v in prof.sysctl),
            governor=prof.cpu.governor, thp=prof.memory.transparent_hugepage, thp_defrag=None,
            max_cstate=prof.cpu.max_cstate, turbo=prof.cpu.turbo,
        )
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(str(path), "<yaml>", "valid YAML", str(e).splitlines()[0]) from None
    if not isinstance(raw, dict):
        raise ConfigError(str(path), "<top>", "a mapping", type(raw).__name__)
    cmd = _pick(raw, "cmdline", "kernel.cmdline", "kernel_cmdline", "cmdline_flags") or []
    if isinstance(cmd, dict):  # {flag: value} form
        cmd = [k if v in (None, True, "") else f"{k}={v}" for k, v in cmd.items()]
    cmdline = check_cmdline(cmd, str(path), "cmdline")
    sc = _pick(raw, "sysctl", "sysctls", "kernel.sysctl") or {}
    if not isinstance(sc, dict):
        raise ConfigError(str(path), "sysctl", "a mapping of sysctl key to value", sc)
    for k, v in sc.items():
        if not isinstance(k, str) or not all(c.isalnum() or c in "._-/" for c in k) or "\n" in str(v):
            raise ConfigError(str(path), f"sysctl.{k}", "a sysctl key and a one-line value", v)
    gov = _pick(raw, "cpu.governor", "governor")
    thp = _pick(raw, "memory.thp", "memory.transparent_hugepage", "thp", "transparent_hugepage")
    thp_defrag = _pick(raw, "memory.thp_defrag", "thp_defrag")
    if isinstance(thp, dict):
        thp_defrag = thp.get("defrag", thp_defrag)
        thp = thp.get("enabled")
    cst = _pick(raw, "cpu.max_cstate", "cpu.cstate_limit", "max_cstate", "cstate_limit", "cpu.c_state_limit")
    if isinstance(cst, str) and cst.upper().startswith("C"):
        cst = cst[1:]
    turbo = _pick(raw, "cpu.turbo", "turbo", "cpu.boost")
    word = ("powersave", "performance", "ondemand", "schedutil", "conservative", "userspace", None)
    if gov not in word:
        raise ConfigError(str(path), "cpu.governor", "a cpufreq governor name", gov)
    for key, val in (("thp", thp), ("thp_defrag", thp_defrag)):
        if val is not None and str(val) not in ("always", "madvise", "never", "defer", "defer+madvise"):
            raise ConfigError(str(path), key, "always, madvise or never", val)
    return Tuning(
        name=name,
        path=str(path),
        text=text,
        cmdline=cmdline,
        sysctl=tuple((str(k), str(v)) for k, v in sc.items()),
        governor=gov,
        thp=None if thp is None else str(thp),
        thp_defrag=None if thp_defrag is None else str(thp_defrag),
        max_cstate=None if cst is None else int(cst),
        turbo=None if turbo is None else bool(turbo),
    )
