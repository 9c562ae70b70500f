"""The builder's content-addressed cache: one key function, one 'what changed' shape, one frozen CacheEntry.

A step's inputs are a named mapping (recipe hash, exact package pins, base image id, ...); its key is the sha256
of that mapping. An entry records the key, the inputs, and the artifacts with size + sha256, so a later run trusts
an artifact only while it is there unchanged. Used by driver cells (dist/cache/<cell>.json) and golden images.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

from builder.digest import sha256_file
from validator import atomic, userfile
from validator.errors import ConfigError

log = logging.getLogger("gpuforge.cache")

# An entry is a few KiB (inputs, one artifact, step timings): anything near this is not one the builder wrote.
MAX_ENTRY_BYTES = 4 << 20


class CacheStatus(str, enum.Enum):
    """What an entry remembers: a built artifact, or a failure that the same inputs repeat."""

    BUILT = "built"
    FAILED = "failed"


def cache_key(inputs: Mapping[str, Any]) -> str:
    """sha256 over the inputs (sorted JSON): same inputs, same key."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def _short(value: Any, width: int = 72) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def changed_inputs(old: Optional[Mapping[str, Any]], new: Mapping[str, Any]) -> Tuple[str, ...]:
    """'name: old -> new' for each input that differs (mkosi-style 'why did this rebuild')."""
    if not old:
        return ("no previous build",)
    return tuple(f"{k}: {_short(old.get(k))} -> {_short(new.get(k))}"
                 for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k))


@dataclass(frozen=True)
class Artifact:
    """One output file, relative to the store's root, as it was when recorded."""

    path: str
    size: int
    sha256: str
    mtime_ns: int = 0

    @classmethod
    def record(cls, root: Path, rel: str) -> "Artifact":
        st = (root / rel).stat()
        return cls(rel, st.st_size, sha256_file(root / rel), st.st_mtime_ns)

    def intact(self, root: Path, deep: bool = True) -> bool:
        """There with the recorded size; and (deep) the recorded sha256, re-hashed only when the mtime moved."""
        p = root / self.path
        try:
            st = p.stat()
        except OSError:
            return False
        if st.st_size != self.size:
            return False
        if not deep or (self.mtime_ns and st.st_mtime_ns == self.mtime_ns):
            return True  # untouched since recorded: keeps a no-op run instant
        return sha256_file(p) == self.sha256


@dataclass(frozen=True)
class CacheEntry:
    """A step's remembered outcome under one key."""

    name: str  # cell id, image name
    key: str
    inputs: Mapping[str, Any] = field(compare=False)
    status: CacheStatus = CacheStatus.BUILT
    artifacts: Tuple[Artifact, ...] = ()
    step: str = ""  # the failed step (status failed)
    error: str = ""  # its first error line
    log: str = ""  # log file, relative to the store's root
    seconds: float = 0.0
    steps: Tuple[Tuple[str, float], ...] = ()
    built_at: str = ""

    @property
    def failed(self) -> bool:
        return self.status is CacheStatus.FAILED

    @property
    def artifact(self) -> Optional[Artifact]:
        return self.artifacts[0] if self.artifacts else None

    def intact(self, root: Path, deep: bool = True) -> bool:
        return all(a.intact(root, deep) for a in self.artifacts)

    def to_dict(self) -> dict:
        return {"name": self.name, "key": self.key, "inputs": dict(self.inputs), "status": self.status.value,
                "artifacts": [a.__dict__ for a in self.artifacts], "step": self.step, "error": self.error,
                "log": self.log, "seconds": self.seconds, "steps": dict(self.steps), "built_at": self.built_at}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CacheEntry":
        """Raises KeyError/TypeError/ValueError on a malformed entry (the caller treats it as a miss)."""
        return cls(name=str(d["name"]), key=str(d["key"]), inputs=dict(d.get("inputs") or {}),
                   status=CacheStatus(d.get("status", "built")),
                   artifacts=tuple(Artifact(_inside(a["path"]), int(a["size"]), str(a["sha256"]), int(a.get("mtime_ns", 0)))
                                   for a in d.get("artifacts") or ()),
                   step=str(d.get("step", "")), error=str(d.get("error", "")), log=_inside(d.get("log", "")),
                   seconds=_finite(d.get("seconds", 0.0)), steps=tuple((str(k), _finite(v)) for k, v in (d.get("steps") or {}).items()),
                   built_at=str(d.get("built_at", "")))

    def stamped(self) -> "CacheEntry":
        return replace(self, built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def _inside(rel: Any) -> str:
    """A path relative to the store that stays inside it (an entry from another host must not name /etc/...)."""
    p = str(rel)
    if p.startswith("/") or ".." in Path(p).parts:
        raise ValueError(f"path {p!r} leaves the store")
    return p


def _finite(v: Any) -> float:
    f = float(v)
    if not math.isfinite(f):
        raise ValueError(f"{v!r} is not a finite number")
    return f


def safe_name(name: str) -> str:
    """A file name for an entry (cell ids carry '@' and '+')."""
    return re.sub(r"[^A-Za-z0-9.+-]", "_", name)


class Store:
    """Entries as <root>/cache/<name>.json; artifact paths are relative to root."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, name: str) -> Path:
        return self.root / "cache" / f"{safe_name(name)}.json"

    def read(self, name: str) -> Optional[CacheEntry]:
        """The entry, or None (a miss) when absent or, with a warning, unreadable: the step is simply built again."""
        return self.read_file(self.path(name))

    def load(self, name: str) -> Optional[CacheEntry]:
        """The entry, None when absent; an unreadable or malformed one is a ConfigError naming its file."""
        return load_entry(self.path(name))

    def write(self, entry: CacheEntry) -> None:
        atomic.write_text(self.path(entry.name), json.dumps(entry.to_dict(), indent=2, sort_keys=True) + "\n")

    def hit(self, name: str, key: str) -> Optional[CacheEntry]:
        """The entry when its key matches and (for a build) every artifact is intact; failures match on key alone."""
        entry = self.read(name)
        if entry is None or entry.key != key:
            return None
        if entry.failed or entry.intact(self.root):
            return entry
        return None

    def entries(self) -> Iterable[CacheEntry]:
        for f in sorted((self.root / "cache").glob("*.json")) if (self.root / "cache").is_dir() else ():
            e = self.read_file(f)
            if e is not None:
                yield e

    @staticmethod
    def read_file(f: Path) -> Optional[CacheEntry]:
        try:
            return load_entry(f)
        except ConfigError as e:
            log.warning("%s; treated as a cache miss (built again)", e.message)
            return None


def load_entry(f: Path) -> Optional[CacheEntry]:
    """The entry in file f (bounded read, a JSON object of the entry's fields); None when there is no file."""
    if not os.path.lexists(f):
        return None
    d = userfile.load_json(f, "cache entry", MAX_ENTRY_BYTES, top=dict)
    try:
        return CacheEntry.from_dict(d)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:
        raise ConfigError(str(f), "(entry)", "a cache entry as the builder writes it",
                          f"{type(e).__name__}: {e}") from None


def entries_by_name(stores: Iterable[Store]) -> Dict[str, Tuple[Store, CacheEntry]]:
    """name -> (store, entry) over several stores (first store wins)."""
    out: Dict[str, Tuple[Store, CacheEntry]] = {}
    for s in stores:
        for e in s.entries():
            out.setdefault(e.name, (s, e))
    return out
