"""Where an NGC image is pulled from (nvcr.io, or a farm's mirror) and the NGC key, which is never shown. Pure."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

from validator.errors import UserError

DEFAULT_REGISTRY = "nvcr.io"
NGC_USER = "$oauthtoken"  # NGC's fixed user name for API-key logins
ENV_KEY = "NGC_API_KEY"
ENV_MIRROR = "GPUFORGE_NGC_MIRROR"
ENV_REGISTRY = "GPUFORGE_NGC_REGISTRY"
_HOSTPATH = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[a-z0-9._-]+)*$")
MASK = "***"


class Secret:
    """A value that prints as *** (str, repr, format, f-strings): only reveal() hands it out."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return MASK

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        return MASK

    def __bool__(self) -> bool:
        return bool(self._value)


def redact(text: str, secrets: Iterable[Optional[Secret]]) -> str:
    """text with every secret's value replaced by ***."""
    for s in secrets:
        if s:
            text = text.replace(s.reveal(), MASK)
    return text


def key_from_env(env: Mapping[str, str] = os.environ) -> Optional[Secret]:
    v = env.get(ENV_KEY, "").strip()
    return Secret(v) if v else None


def normalise_host(value: str, what: str) -> str:
    """'http://mirror.farm:5000/' -> 'mirror.farm:5000' (a path prefix is kept: 'host:5000/ngc')."""
    v = re.sub(r"^[a-z]+://", "", value.strip()).rstrip("/")
    if not v or not _HOSTPATH.match(v):
        raise UserError(f"{what} {value!r} is not a registry address", hint="like 127.0.0.1:5000 or mirror.farm.example/ngc")
    return v


@dataclass(frozen=True)
class Source:
    """One image tag: its canonical NGC name (what the node keeps locally) and where it is pulled from."""

    canonical_repo: str  # nvcr.io/nvidia/pytorch
    pull_repo: str  # nvcr.io/nvidia/pytorch, or MIRROR/nvidia/pytorch
    tag: str
    via_mirror: bool

    @property
    def canonical(self) -> str:
        return f"{self.canonical_repo}:{self.tag}"

    @property
    def pull_ref(self) -> str:
        return f"{self.pull_repo}:{self.tag}"

    @property
    def pull_host(self) -> str:
        return self.pull_repo.split("/", 1)[0]


def source_for(repository: str, tag: str, registry: Optional[str] = None, mirror: Optional[str] = None) -> Source:
    """nvcr.io/nvidia/X maps to MIRROR/nvidia/X when a mirror is set; the local name stays nvcr.io/nvidia/X."""
    reg = normalise_host(registry, "--registry") if registry else DEFAULT_REGISTRY
    canonical = f"{reg}/{repository}"
    if mirror:
        return Source(canonical, f"{normalise_host(mirror, '--mirror')}/{repository}", tag, True)
    return Source(canonical, canonical, tag, False)
