"""Read what an image definition names: kernel ABIs (kernels/*.yaml), driver releases (drivers/*.yaml), tuning profiles.

These files belong to the builder (kernels, drivers: builder.config) and the validator (tuning: validator.tuning);
this module only looks names up through their loaders, so the image build never keeps a second parser.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from builder import config
from validator import userfile
from validator.errors import UserError
from validator.tuning import TuningProfile, load_profile


@dataclass(frozen=True)
class KernelRef:
    abi: str
    image_package: str
    version: str  # exact Debian version of the image package ("" = whatever the suite has)
    suite: str
    source: str  # file it came from


def load_kernels(kernels_dir: Path) -> dict:
    """abi -> KernelRef for every kernel the farm defines (builder.config's schema; tuning/ is skipped)."""
    out = {}
    for p in sorted(Path(kernels_dir).glob("*.y*ml")):
        k = config.load_kernel(p)
        out[k.abi] = KernelRef(k.abi, k.image, k.version, k.suite, str(p))
    return out


@dataclass(frozen=True)
class DriverRef:
    id: str  # drivers/<id>.yaml
    version: str
    flavours: tuple
    userspace: tuple  # Debian relations of the user space of the same version (nvidia-smi (= 535.261.03-1), ...)
    source: str


def load_drivers(drivers_dir: Path) -> dict:
    """id (file stem) -> DriverRef (builder.config's schema)."""
    out = {}
    for p in sorted(Path(drivers_dir).glob("*.y*ml")):
        d = config.load_driver(p)
        out[d.id] = DriverRef(d.id, d.version, tuple(d.flavours), tuple(d.userspace), str(p))
    return out


def split_driver_ref(ref: str) -> tuple:
    """"535.261.03" or "535.261.03/open" -> (id, flavour); proprietary is the default flavour."""
    did, _, flavour = ref.partition("/")
    return did, (flavour or "proprietary")


@dataclass(frozen=True)
class Tuning:
    """The parts of a tuning profile an image bakes; `text` is the file itself, copied verbatim to /etc/gpuforge/.
    `profile` is None for `tuning: none` (an image that keeps the distribution's defaults)."""

    name: str
    path: str
    text: str
    cmdline: tuple
    sysctl: tuple  # ((key, value), ...) in file order
    governor: Optional[str]
    thp: Optional[str]
    max_cstate: Optional[int]
    turbo: Optional[bool]
    profile: Optional[TuningProfile] = field(default=None, compare=False)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


NO_TUNING_NAME = "none"
NO_TUNING = Tuning(name=NO_TUNING_NAME, path="", text="", cmdline=(), sysctl=(), governor=None, thp=None,
                   max_cstate=None, turbo=None, profile=None)


def load_tuning(tuning_dir: Path, name: str) -> Tuning:
    """Read kernels/tuning/<name>.yaml (the validator's file) and pull out what is baked; cmdline tokens are checked.
    `none` bakes no tuning at all."""
    from builder.images.definition import check_cmdline

    if name == NO_TUNING_NAME:
        return NO_TUNING
    path = Path(tuning_dir) / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in Path(tuning_dir).glob("*.yaml"))
        raise UserError(f"tuning profile {name!r} not found: no {path}",
                        hint="known profiles: " + ", ".join(known + [NO_TUNING_NAME]))
    text = userfile.read_text(path, "tuning profile")
    prof = load_profile(path)  # the validator's schema: one parser for the file both sides read
    return Tuning(
        name=name, path=str(path), text=text,
        cmdline=check_cmdline(list(prof.cmdline), str(path), "cmdline"),
        sysctl=tuple((str(k), str(v)) for k, v in prof.sysctl),
        governor=prof.cpu.governor, thp=prof.memory.transparent_hugepage,
        max_cstate=prof.cpu.max_cstate, turbo=prof.cpu.turbo, profile=prof,
    )
